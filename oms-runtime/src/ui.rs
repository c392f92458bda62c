//! The web UI: the files `scripts/ui build` makes from `ui/` (an `index.html` and hashed
//! `assets/`), served at `/` on the API port next to the API, so one address is all a trader
//! opens. The UI talks to the same port: REST under `/v1`, streams at `/v1/ws`.

use crate::config::ServeArgs;
use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::map_response;
use axum::response::Response;
use std::path::Path;
use tower_http::services::{ServeDir, ServeFile};

/// Scripts only from this origin, connections only to it (the API and its WebSocket), and no
/// framing: the page holds an API key in its session storage.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `api` with the UI of `--ui-dir`, if one is given.
pub fn with_ui(api: Router, args: &ServeArgs) -> anyhow::Result<Router> {
    match &args.ui_dir {
        Some(dir) => Ok(api.merge(router(dir)?)),
        None => Ok(api),
    }
}

/// `/` (the page; revalidated on every load, so a new version shows at once) and `/assets/*`
/// (content-hashed names: cached for a year).
pub fn router(dir: &Path) -> anyhow::Result<Router> {
    let index = dir.join("index.html");
    anyhow::ensure!(
        index.is_file(),
        "--ui-dir {}: no index.html there (build the UI with scripts/ui build)",
        dir.display()
    );
    let assets = dir.join("assets");
    std::fs::metadata(&assets).with_context(|| format!("--ui-dir: no {}", assets.display()))?;
    let page = Router::new()
        .route_service("/", ServeFile::new(index))
        .layer(map_response(|response| cached(response, "no-cache")));
    let files = Router::new()
        .nest_service("/assets", ServeDir::new(assets))
        .layer(map_response(|response| {
            cached(response, "public, max-age=31536000, immutable")
        }));
    Ok(page.merge(files).layer(map_response(protected)))
}

async fn cached(mut response: Response, policy: &'static str) -> Response {
    if response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    response
}

async fn protected(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
