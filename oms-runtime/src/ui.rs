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

/// The UI of `--ui-dir`, if one is given; checked at start, before anything else runs, so a
/// folder without a built UI is an exit with the fix, not a server that fails later.
pub fn of(args: &ServeArgs) -> anyhow::Result<Option<Router>> {
    args.ui_dir.as_deref().map(router).transpose()
}

/// `api`, with `ui` beside it if there is one.
pub fn beside(api: Router, ui: Option<Router>) -> Router {
    match ui {
        Some(ui) => api.merge(ui),
        None => api,
    }
}

/// Where a browser on this machine finds the UI of a server listening on `addr`.
pub fn url(addr: std::net::SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("http://{host}:{}/", addr.port())
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

#[cfg(test)]
mod tests {
    use super::{router, url};
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    async fn get(app: &axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into(),
        )
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_next_to_the_api() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>desk</html>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/app-1234.js"), "console.log(1)").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "not served").unwrap();
        let api = axum::Router::new()
            .route("/v1/time", axum::routing::get(|| async { "now" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "json 404") });
        let app = api.merge(router(dir.path()).unwrap());

        let (status, headers, body) = get(&app, "/").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "<html>desk</html>")
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let (status, headers, body) = get(&app, "/assets/app-1234.js").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains("javascript")
        );
        // Only the page and the assets: nothing else of the folder, nothing above it.
        assert_eq!(get(&app, "/secret.txt").await.2, "json 404");
        assert_eq!(
            get(&app, "/assets/../secret.txt").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&app, "/assets/%2e%2e/secret.txt").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(get(&app, "/v1/time").await.2, "now");
        assert_eq!(get(&app, "/v1/nope").await.2, "json 404");
    }

    #[test]
    fn a_folder_without_a_built_ui_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let error = router(dir.path()).unwrap_err().to_string();
        assert!(error.contains("scripts/ui build"), "{error}");
    }

    #[test]
    fn the_url_names_an_address_a_browser_can_open() {
        assert_eq!(
            url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(url("0.0.0.0:80".parse().unwrap()), "http://127.0.0.1:80/");
        assert_eq!(url("[::1]:8080".parse().unwrap()), "http://[::1]:8080/");
    }
}
