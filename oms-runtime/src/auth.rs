//! API keys: who may call the API and which accounts they may trade.
//!
//! A key is `oms_` followed by 64 hex digits (256 random bits). Only its SHA-256 is stored or
//! kept in memory; a slow password hash is not needed for keys this long. Keys are never logged.
//!
//! The keys file is a JSON array of `{"id", "sha256", "accounts", "scopes"}`; `oms-runtime
//! keygen` adds entries to it and prints the new key once. In single-node mode, a first start
//! without a keys file creates one with a key bound to the bootstrap accounts (every scope) and
//! prints that key once.
//!
//! Scopes: `read` (orders, fills, balances, the ledger), `trade` (place and cancel), `funds`
//! (deposits and withdrawals). An entry without `scopes` (a file from before they existed) has
//! `read` and `trade`. An entry may set its own `rate_limits`.
//!
//! The server watches the keys file ([`KeyRing::watch`]): `keygen` and `revoke` (or an updated
//! Kubernetes Secret) take effect within seconds, without a restart.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A keys-file problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("keys file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid keys file.
    #[error("keys file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No randomness from the operating system.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// One entry of the keys file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Principal id; scopes idempotency keys and appears in logs.
    pub id: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    /// Accounts the key may trade and read.
    pub accounts: Vec<String>,
    /// What the key may do; absent means `read` and `trade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// Requests per second the key may make; absent means the server's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// Credentials for the Binance-compatible API (`keygen --binance`); absent means the key
    /// cannot be used there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binance: Option<BinanceCredentials>,
}

/// A key's credentials for the Binance-compatible API (`/api/v3`, see `crate::binance`).
///
/// HMAC-SHA256 signatures can only be checked with the secret itself, so unlike the key (of
/// which only a hash is kept) the secret is stored as it is: the keys file is readable by its
/// owner only, and in Kubernetes it is a Secret (encrypted at rest with KMS by the project's
/// Terraform). Whoever can read the keys file can sign as the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinanceCredentials {
    /// Sent in `X-MBX-APIKEY`: names the key; not a secret on its own.
    pub api_key: String,
    /// Signs requests.
    pub secret: String,
}

impl BinanceCredentials {
    /// New random credentials: 64 letters and digits each, as Binance issues them.
    pub fn generate() -> Result<BinanceCredentials, Error> {
        Ok(BinanceCredentials {
            api_key: alphanumeric(64)?,
            secret: alphanumeric(64)?,
        })
    }

    fn check(&self) -> Result<(), String> {
        let alnum = |text: &str| text.bytes().all(|b| b.is_ascii_alphanumeric());
        if !(16..=64).contains(&self.api_key.len()) || !alnum(&self.api_key) {
            return Err("binance.api_key must be 16 to 64 ASCII letters and digits".into());
        }
        if !(32..=128).contains(&self.secret.len()) || !alnum(&self.secret) {
            return Err("binance.secret must be 32 to 128 ASCII letters and digits".into());
        }
        Ok(())
    }
}

/// `len` random ASCII letters and digits.
fn alphanumeric(len: usize) -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes).map_err(|error| Error::Random(error.to_string()))?;
        // 248 = 4 × 62: bytes at or above it are skipped, so every character is equally likely.
        for b in bytes.into_iter().filter(|b| *b < 248) {
            if out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Requests per second of one key, writes and reads counted apart (see [`crate::api::limits`]).
/// A value left out is the server's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Writes (POST, PATCH, DELETE) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_per_second: Option<u32>,
    /// Reads (GET) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_per_second: Option<u32>,
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read orders, fills, balances and the ledger of its accounts.
    Read,
    /// Place and cancel orders.
    Trade,
    /// Deposit and withdraw.
    Funds,
}

impl Scope {
    /// The scopes of a key whose entry names none.
    pub const DEFAULT: [Scope; 2] = [Scope::Read, Scope::Trade];

    /// As written in the keys file and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trade => "trade",
            Scope::Funds => "funds",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        match text {
            "read" => Ok(Scope::Read),
            "trade" => Ok(Scope::Trade),
            "funds" => Ok(Scope::Funds),
            other => Err(format!("unknown scope {other:?}: read, trade or funds")),
        }
    }
}

/// Longest principal (key) id.
pub const MAX_ID_LENGTH: usize = 64;

/// Checks a principal id: 1 to 64 ASCII letters, digits, `.`, `_` or `-`. Ids scope idempotency
/// keys in every store, so none may hold a separator those stores use (`/`, control characters).
pub fn check_id(id: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if id.is_empty() || id.len() > MAX_ID_LENGTH || !id.bytes().all(allowed) {
        return Err(format!(
            "key id {id:?} must be 1 to {MAX_ID_LENGTH} ASCII letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub id: String,
    /// Accounts it may use.
    pub accounts: Vec<String>,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Its own rate limits, where its entry sets them.
    pub rate_limits: RateLimits,
}

impl Principal {
    /// Whether it may use `account`.
    pub fn may_use(&self, account: &str) -> bool {
        self.accounts.iter().any(|a| a == account)
    }

    /// Whether it has `scope`.
    pub fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The known keys, by hash, and their Binance credentials by API key.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    by_hash: HashMap<String, Principal>,
    by_binance_key: HashMap<String, (Principal, String)>,
    by_listen_key: HashMap<String, Principal>,
}

/// SHA-256 of a key, hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Keys from entries; duplicate ids or hashes are an error.
    pub fn new(entries: Vec<KeyEntry>, source: &str) -> Result<ApiKeys, Error> {
        let invalid = |message: String| Error::Invalid {
            path: source.to_string(),
            message,
        };
        let mut by_hash = HashMap::new();
        let mut by_binance_key = HashMap::new();
        let mut by_listen_key = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for entry in entries {
            if entry.sha256.len() != 64 || hex::decode(&entry.sha256).is_err() {
                return Err(invalid(format!(
                    "key {}: sha256 must be 64 hex digits",
                    entry.id
                )));
            }
            check_id(&entry.id).map_err(invalid)?;
            if entry.accounts.is_empty() {
                return Err(invalid(format!(
                    "key {} needs at least one account",
                    entry.id
                )));
            }
            if !ids.insert(entry.id.clone()) {
                return Err(invalid(format!("key id {} appears twice", entry.id)));
            }
            let mut scopes = entry.scopes.unwrap_or_else(|| Scope::DEFAULT.to_vec());
            scopes.sort();
            scopes.dedup();
            if scopes.is_empty() {
                return Err(invalid(format!("key {} has no scopes", entry.id)));
            }
            let rate_limits = entry.rate_limits.unwrap_or_default();
            if rate_limits.writes_per_second == Some(0) || rate_limits.reads_per_second == Some(0) {
                return Err(invalid(format!(
                    "key {}: a rate limit must be at least 1 per second (revoke a key to stop it)",
                    entry.id
                )));
            }
            let principal = Principal {
                id: entry.id,
                accounts: entry.accounts,
                scopes,
                rate_limits,
            };
            if let Some(binance) = entry.binance {
                binance
                    .check()
                    .map_err(|message| invalid(format!("key {}: {message}", principal.id)))?;
                let secret = binance.secret;
                by_listen_key.insert(
                    crate::binance::stream::listen_key(&binance.api_key, &secret),
                    principal.clone(),
                );
                if by_binance_key
                    .insert(binance.api_key, (principal.clone(), secret))
                    .is_some()
                {
                    return Err(invalid("the same binance.api_key appears twice".into()));
                }
            }
            if by_hash
                .insert(entry.sha256.to_lowercase(), principal)
                .is_some()
            {
                return Err(invalid("the same key appears twice".into()));
            }
        }
        Ok(ApiKeys {
            by_hash,
            by_binance_key,
            by_listen_key,
        })
    }

    /// Reads a keys file.
    pub fn load(path: &Path) -> Result<ApiKeys, Error> {
        ApiKeys::new(read_entries(path)?, &path.display().to_string())
    }

    /// The principal a presented key belongs to.
    pub fn authenticate(&self, key: &str) -> Option<&Principal> {
        self.by_hash.get(&hash_key(key))
    }

    /// The principal and secret of a Binance API key.
    pub fn binance(&self, api_key: &str) -> Option<&(Principal, String)> {
        self.by_binance_key.get(api_key)
    }

    /// The principal of a user data stream's listen key.
    pub fn listen_key(&self, listen_key: &str) -> Option<&Principal> {
        self.by_listen_key.get(listen_key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

fn read_entries(path: &Path) -> Result<Vec<KeyEntry>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|error| Error::Invalid {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}

/// A new random key.
pub fn generate_key() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| Error::Random(error.to_string()))?;
    Ok(format!("oms_{}", hex::encode(bytes)))
}

/// Creates a key for `accounts` with `scopes` (and its own rate limits, if given), adds its hash
/// to the keys file (creating the file, readable by its owner only), and returns the key. Fails
/// if `id` is already in the file.
pub fn add_key(
    path: &Path,
    id: &str,
    accounts: Vec<String>,
    scopes: Vec<Scope>,
    rate_limits: Option<RateLimits>,
) -> Result<String, Error> {
    let mut entries = if path.exists() {
        read_entries(path)?
    } else {
        Vec::new()
    };
    if entries.iter().any(|entry| entry.id == id) {
        return Err(Error::Invalid {
            path: path.display().to_string(),
            message: format!("key id {id} already exists"),
        });
    }
    let key = generate_key()?;
    entries.push(KeyEntry {
        id: id.to_string(),
        sha256: hash_key(&key),
        accounts,
        scopes: Some(scopes),
        rate_limits,
        binance: None,
    });
    ApiKeys::new(entries.clone(), &path.display().to_string())?;
    write_entries(path, &entries)?;
    Ok(key)
}

/// Gives the key `id` new Binance credentials (replacing any it had) and returns them.
pub fn add_binance(path: &Path, id: &str) -> Result<BinanceCredentials, Error> {
    let mut entries = read_entries(path)?;
    let Some(entry) = entries.iter_mut().find(|entry| entry.id == id) else {
        return Err(Error::Invalid {
            path: path.display().to_string(),
            message: format!("no key with id {id:?}"),
        });
    };
    let credentials = BinanceCredentials::generate()?;
    entry.binance = Some(credentials.clone());
    ApiKeys::new(entries.clone(), &path.display().to_string())?;
    write_entries(path, &entries)?;
    Ok(credentials)
}

/// Removes the key `id` from the keys file. A server that watches the file (every server does)
/// refuses the key within seconds, without a restart.
pub fn revoke_key(path: &Path, id: &str) -> Result<(), Error> {
    let mut entries = read_entries(path)?;
    let before = entries.len();
    entries.retain(|entry| entry.id != id);
    if entries.len() == before {
        return Err(Error::Invalid {
            path: path.display().to_string(),
            message: format!("no key with id {id:?}"),
        });
    }
    write_entries(path, &entries)
}

/// The keys in use: replaced whole when the keys file changes, so a revoked key stops working
/// and a new one starts without a restart.
#[derive(Debug, Default)]
pub struct KeyRing {
    current: std::sync::RwLock<std::sync::Arc<ApiKeys>>,
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: ApiKeys) -> KeyRing {
        KeyRing {
            current: std::sync::RwLock::new(std::sync::Arc::new(keys)),
        }
    }

    /// The principal a presented key belongs to, in the keys of the moment.
    pub fn authenticate(&self, key: &str) -> Option<Principal> {
        self.keys().authenticate(key).cloned()
    }

    /// The principal and secret of a Binance API key, in the keys of the moment.
    pub fn binance(&self, api_key: &str) -> Option<(Principal, String)> {
        self.keys().binance(api_key).cloned()
    }

    /// The keys of the moment.
    pub fn keys(&self) -> std::sync::Arc<ApiKeys> {
        match self.current.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `keys` in place of the current ones.
    pub fn replace(&self, keys: ApiKeys) {
        let keys = std::sync::Arc::new(keys);
        match self.current.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// Reads `path` every `every` and takes its keys when its content changes. A file that does
    /// not read or parse is logged and the keys in use stay (a half-written Secret update must
    /// not lock everyone out). Kubernetes updates a mounted Secret by swapping a symlink, so the
    /// content is compared, not the modification time.
    pub fn watch(
        self: std::sync::Arc<Self>,
        path: std::path::PathBuf,
        every: std::time::Duration,
        reloads: prometheus_client::metrics::family::Family<
            crate::metrics::OutcomeLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let fingerprint = |bytes: &[u8]| Sha256::digest(bytes).to_vec();
            let mut seen = std::fs::read(&path).ok().map(|bytes| fingerprint(&bytes));
            let mut every = tokio::time::interval(every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Ok(bytes) = tokio::fs::read(&path).await else {
                    continue;
                };
                let now = Some(fingerprint(&bytes));
                if now == seen {
                    continue;
                }
                seen = now;
                let parsed = serde_json::from_slice::<Vec<KeyEntry>>(&bytes)
                    .map_err(|error| error.to_string())
                    .and_then(|entries| {
                        ApiKeys::new(entries, &path.display().to_string())
                            .map_err(|error| error.to_string())
                    });
                let outcome = match parsed {
                    Ok(keys) => {
                        tracing::info!(keys = keys.len(), path = %path.display(), "API keys reloaded");
                        self.replace(keys);
                        "reloaded"
                    }
                    Err(error) => {
                        tracing::error!(%error, "the changed keys file is invalid; the keys in use stay");
                        "invalid"
                    }
                };
                reloads
                    .get_or_create(&crate::metrics::OutcomeLabels { outcome })
                    .inc();
            }
        })
    }
}

fn write_entries(path: &Path, entries: &[KeyEntry]) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    let json = serde_json::to_string_pretty(entries).unwrap_or_default();
    file.write_all(json.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let key = add_key(
            &path,
            "alice",
            vec!["acc-1".into()],
            vec![Scope::Read],
            None,
        )
        .unwrap();
        assert!(key.starts_with("oms_") && key.len() == 68);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key), "the key itself must not be stored");
        let keys = ApiKeys::load(&path).unwrap();
        let principal = keys.authenticate(&key).unwrap();
        assert_eq!(principal.id, "alice");
        assert!(principal.may_use("acc-1") && !principal.may_use("acc-2"));
        assert!(principal.can(Scope::Read) && !principal.can(Scope::Trade));
        assert!(keys.authenticate("oms_wrong").is_none());
        assert!(add_key(&path, "alice", vec!["x".into()], vec![Scope::Read], None).is_err());
        // revoked: gone from the file, and a second revoke says so
        revoke_key(&path, "alice").unwrap();
        assert!(ApiKeys::load(&path).unwrap().authenticate(&key).is_none());
        assert!(revoke_key(&path, "alice").is_err());
    }

    #[test]
    fn binance_credentials_name_the_key_and_its_listen_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        add_key(
            &path,
            "bot",
            vec!["acc-1".into()],
            Scope::DEFAULT.to_vec(),
            None,
        )
        .unwrap();
        let credentials = add_binance(&path, "bot").unwrap();
        assert_eq!(credentials.api_key.len(), 64);
        assert!(
            credentials
                .secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_ne!(credentials.api_key, credentials.secret);
        let keys = ApiKeys::load(&path).unwrap();
        let (principal, secret) = keys.binance(&credentials.api_key).unwrap();
        assert_eq!(
            (principal.id.as_str(), secret),
            ("bot", &credentials.secret)
        );
        assert!(keys.binance(&credentials.secret).is_none());
        let listen = crate::binance::stream::listen_key(&credentials.api_key, secret);
        assert_eq!(keys.listen_key(&listen).unwrap().id, "bot");
        assert!(add_binance(&path, "nobody").is_err());
        // new credentials replace the old ones
        let renewed = add_binance(&path, "bot").unwrap();
        let keys = ApiKeys::load(&path).unwrap();
        assert!(keys.binance(&credentials.api_key).is_none());
        assert!(keys.binance(&renewed.api_key).is_some());
        assert!(keys.listen_key(&listen).is_none());
    }

    #[test]
    fn malformed_or_shared_binance_credentials_are_refused() {
        let entry = |id: &str, api_key: &str, secret: &str| KeyEntry {
            id: id.into(),
            sha256: hash_key(id),
            accounts: vec!["a".into()],
            scopes: None,
            rate_limits: None,
            binance: Some(BinanceCredentials {
                api_key: api_key.into(),
                secret: secret.into(),
            }),
        };
        let good = "k".repeat(64);
        let secret = "s".repeat(64);
        assert!(ApiKeys::new(vec![entry("a", &good, &secret)], "test").is_ok());
        for (api_key, secret) in [
            ("short", secret.as_str()),
            (good.as_str(), "short"),
            ("k-y".repeat(20).as_str(), secret.as_str()),
        ] {
            assert!(
                ApiKeys::new(vec![entry("a", api_key, secret)], "test").is_err(),
                "{api_key} {secret}"
            );
        }
        let twice = vec![entry("a", &good, &secret), entry("b", &good, &secret)];
        assert!(ApiKeys::new(twice, "test").is_err());
    }

    #[test]
    fn a_key_without_scopes_reads_and_trades() {
        let hash = hash_key("k");
        let entries: Vec<KeyEntry> = serde_json::from_str(&format!(
            r#"[{{"id":"old","sha256":"{hash}","accounts":["a"]}}]"#
        ))
        .unwrap();
        let keys = ApiKeys::new(entries, "test").unwrap();
        let principal = keys.authenticate("k").unwrap();
        assert_eq!(principal.scopes, [Scope::Read, Scope::Trade]);
        let entries: Vec<KeyEntry> = serde_json::from_str(&format!(
            r#"[{{"id":"none","sha256":"{hash}","accounts":["a"],"scopes":[]}}]"#
        ))
        .unwrap();
        assert!(
            ApiKeys::new(entries, "test").is_err(),
            "a key that can do nothing"
        );
        assert!("fund".parse::<Scope>().is_err());
    }

    #[test]
    fn invalid_keys_files_are_refused() {
        let bad = |json: &str| {
            let entries: Vec<KeyEntry> = serde_json::from_str(json).unwrap();
            ApiKeys::new(entries, "test").is_err()
        };
        assert!(bad(r#"[{"id":"a","sha256":"xyz","accounts":["a"]}]"#));
        let hash = hash_key("k");
        assert!(bad(&format!(
            r#"[{{"id":"a","sha256":"{hash}","accounts":[]}}]"#
        )));
        assert!(bad(&format!(
            r#"[{{"id":"a","sha256":"{hash}","accounts":["x"]}},{{"id":"a","sha256":"{hash}","accounts":["x"]}}]"#
        )));
        // ids that could blur into an idempotency key: separators, control characters, empty
        for id in ["a/b", "a\\u001fb", "", "a b", &"x".repeat(65)] {
            assert!(
                bad(&format!(
                    r#"[{{"id":"{id}","sha256":"{hash}","accounts":["x"]}}]"#
                )),
                "{id:?} accepted"
            );
        }
        assert!(!bad(&format!(
            r#"[{{"id":"desk-1.eu_2","sha256":"{hash}","accounts":["x"]}}]"#
        )));
        let dir = tempfile::tempdir().unwrap();
        assert!(
            add_key(
                &dir.path().join("k.json"),
                "a/b",
                vec!["x".into()],
                Scope::DEFAULT.to_vec(),
                None
            )
            .is_err()
        );
    }
}
