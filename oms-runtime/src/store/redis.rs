//! Idempotency keys in Redis (ElastiCache in production), and the book depth the processors
//! publish for the API.
//!
//! One Redis key per idempotency key, `<prefix>:idem:{<n>:<principal>/<key>}` where `n` is the
//! principal's length, so no two (principal, key) pairs share a record even if a principal id
//! held a `/` (ids are also checked, [`crate::auth::check_id`]). The braces are a Redis Cluster
//! hash tag, so everything about one key stays in one slot. Its value is
//! `I|<fingerprint>` while the request is in flight and `C|<fingerprint>|<status>|<body>` once
//! it completed. Each operation is one Lua script, so check-and-set is atomic across every
//! ingest process.
//!
//! # Leases
//! A reservation expires after a lease (several times the append timeout): an ingest process
//! that dies holding one cannot lock the key forever. If its command did reach the log, the
//! processor stores the acknowledgement under the key when it applies the command, so a retry
//! after the lease finds it and is not journaled twice.
//!
//! # Failure
//! Every call is bounded by the dependency timeout; Redis unreachable is an error, never a
//! silent pass: the API fails closed with 503.

use super::{Backend, IdempotencyStore, Origin, Reservation, Result, StoreError, StoredResponse};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use std::time::Duration;

const RESERVE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'I|' .. ARGV[1], 'PX', ARGV[2])
  return {'reserved'}
end
local fp_end = string.find(v, '|', 3, true)
local fp = fp_end and string.sub(v, 3, fp_end - 1) or string.sub(v, 3)
if fp ~= ARGV[1] then return {'mismatch'} end
if string.sub(v, 1, 1) == 'I' then return {'in_flight'} end
return {'completed', string.sub(v, fp_end + 1)}
";

const COMPLETE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local fp_end = string.find(v, '|', 3, true)
  local fp = fp_end and string.sub(v, 3, fp_end - 1) or string.sub(v, 3)
  if fp ~= ARGV[1] then return 0 end
  if ARGV[4] == 'if_absent' and string.sub(v, 1, 1) == 'C' then return 0 end
end
redis.call('SET', KEYS[1], 'C|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
";

const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and v == 'I|' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Claims the due members of the deadlines set, atomically: one process gets each.
const CLAIM_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], due[i]) end
return due
";

/// Removes a claimed deadline, unless it moved since.
const FINISH: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// Connection settings.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Password, if not in the URL (kept apart so it can come from a secret).
    pub password: Option<String>,
    /// Prefix of every key, one per order system.
    pub prefix: String,
    /// How long stored responses live.
    pub ttl: Duration,
    /// Bound on every call.
    pub timeout: Duration,
}

/// The Redis store: idempotency keys and published book depth.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    ttl: Duration,
    lease: Duration,
    reserve: Script,
    complete: Script,
    release: Script,
    claim_due: Script,
    finish: Script,
}

fn error(error: redis::RedisError) -> StoreError {
    StoreError::unavailable(Backend::Redis, error)
}

impl RedisStore {
    /// Connects (bounded by the timeout).
    pub async fn connect(config: RedisConfig) -> Result<RedisStore> {
        let mut info = config.url.as_str().into_connection_info().map_err(error)?;
        if let Some(password) = &config.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(error)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            config.timeout,
            ConnectionManager::new_with_config(client, manager),
        )
        .await
        .map_err(|_| StoreError::unavailable(Backend::Redis, "connect timed out"))?
        .map_err(error)?;
        Ok(RedisStore {
            connection,
            prefix: config.prefix,
            ttl: config.ttl,
            // Longer than any append can take, so a live request never loses its key.
            lease: (config.timeout * 10).max(Duration::from_secs(30)),
            reserve: Script::new(RESERVE),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            claim_due: Script::new(CLAIM_DUE),
            finish: Script::new(FINISH),
        })
    }

    /// The Redis key of an idempotency key (see the module doc).
    pub fn key(&self, origin: &Origin) -> String {
        format!(
            "{}:idem:{{{}:{}/{}}}",
            self.prefix,
            origin.principal.len(),
            origin.principal,
            origin.key
        )
    }

    /// Stores `response` unless the key already holds a completed response: what the
    /// processor calls for every command it applies (see the module doc).
    pub async fn complete_if_absent(
        &self,
        origin: &Origin,
        response: &StoredResponse,
    ) -> Result<()> {
        self.store(origin, response, "if_absent").await
    }

    async fn store(&self, origin: &Origin, response: &StoredResponse, mode: &str) -> Result<()> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .complete
            .key(self.key(origin))
            .arg(&origin.fingerprint)
            .arg(format!("{}|{}", response.status, response.body))
            .arg(self.ttl.as_millis() as u64)
            .arg(mode)
            .invoke_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(())
    }

    fn deadlines_key(&self) -> String {
        format!("{}:cancel-after", self.prefix)
    }

    fn depth_key(&self, symbol: &str) -> String {
        format!("{}:depth:{{{symbol}}}", self.prefix)
    }

    /// Publishes a book's depth and the highest price a market buy of it may trade at now (the
    /// matching stage does, after each committed batch), in one round trip. The ingest holds a
    /// market buy by quantity at that price.
    pub async fn publish_book(
        &self,
        symbol: &str,
        depth: &oms_core::Depth,
        buy_limit: Option<oms_core::Price>,
    ) -> Result<()> {
        let mut connection = self.connection.clone();
        let json = super::encode_json("depth", depth)?;
        let mut pipe = redis::pipe();
        pipe.set(self.depth_key(symbol), json).ignore();
        match buy_limit {
            Some(price) => pipe.set(self.limit_key(symbol), price.0).ignore(),
            None => pipe.del(self.limit_key(symbol)).ignore(),
        };
        let _: () = pipe.query_async(&mut connection).await.map_err(error)?;
        Ok(())
    }

    /// The last depth published for a book.
    pub async fn depth(&self, symbol: &str) -> Result<Option<oms_core::Depth>> {
        let mut connection = self.connection.clone();
        let json: Option<String> = redis::cmd("GET")
            .arg(self.depth_key(symbol))
            .query_async(&mut connection)
            .await
            .map_err(error)?;
        json.map(|json| {
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                table: "redis depth",
                message: e.to_string(),
            })
        })
        .transpose()
    }

    fn limit_key(&self, symbol: &str) -> String {
        format!("{}:buy-limit:{{{symbol}}}", self.prefix)
    }

    /// The last buy limit published for `symbol`; none if its book has none (or has not
    /// published one yet).
    pub async fn buy_limit(&self, symbol: &str) -> Result<Option<oms_core::Price>> {
        let mut connection = self.connection.clone();
        let limit: Option<u64> = redis::cmd("GET")
            .arg(self.limit_key(symbol))
            .query_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(limit.map(oms_core::Price))
    }

    /// A node id for order ids (0 to 1023) that no other process started recently holds: a
    /// shared counter, so up to 1024 ingest processes started in a row get distinct ids.
    pub async fn next_node_id(&self) -> Result<u16> {
        let mut connection = self.connection.clone();
        let n: u64 = redis::cmd("INCR")
            .arg(format!("{}:node-ids", self.prefix))
            .query_async(&mut connection)
            .await
            .map_err(error)?;
        Ok((n % 1024) as u16)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(())
    }
}

/// Deadlines are one sorted set, `<prefix>:cancel-after`, account → deadline in milliseconds.
#[async_trait]
impl super::Deadlines for RedisStore {
    async fn set_deadline(&self, account: &str, deadline_ms: Option<u64>) -> Result<()> {
        let mut connection = self.connection.clone();
        let key = self.deadlines_key();
        let mut command = match deadline_ms {
            Some(deadline) => {
                let mut command = redis::cmd("ZADD");
                command.arg(key).arg(deadline);
                command
            }
            None => {
                let mut command = redis::cmd("ZREM");
                command.arg(key);
                command
            }
        };
        command.arg(account);
        let _: i64 = command.query_async(&mut connection).await.map_err(error)?;
        Ok(())
    }

    async fn deadline(&self, account: &str) -> Result<Option<u64>> {
        let mut connection = self.connection.clone();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.deadlines_key())
            .arg(account)
            .query_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(score.map(|score| score as u64))
    }

    async fn claim_due(
        &self,
        now_ms: u64,
        claimed_until_ms: u64,
        max: usize,
    ) -> Result<Vec<(String, u64)>> {
        let mut connection = self.connection.clone();
        let due: Vec<String> = self
            .claim_due
            .key(self.deadlines_key())
            .arg(now_ms)
            .arg(claimed_until_ms)
            .arg(max)
            .invoke_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(due
            .chunks(2)
            .filter_map(|pair| match pair {
                [account, score] => Some((account.clone(), score.parse::<f64>().ok()? as u64)),
                _ => None,
            })
            .collect())
    }

    async fn finish(&self, account: &str, claimed_until_ms: u64) -> Result<()> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .finish
            .key(self.deadlines_key())
            .arg(account)
            .arg(claimed_until_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(())
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn reserve(&self, origin: &Origin) -> Result<Reservation> {
        let mut connection = self.connection.clone();
        let answer: Vec<String> = self
            .reserve
            .key(self.key(origin))
            .arg(&origin.fingerprint)
            .arg(self.lease.as_millis() as u64)
            .invoke_async(&mut connection)
            .await
            .map_err(error)?;
        match answer.first().map(String::as_str) {
            Some("reserved") => Ok(Reservation::Reserved),
            Some("in_flight") => Ok(Reservation::InFlight),
            Some("mismatch") => Ok(Reservation::Mismatch),
            Some("completed") => {
                let stored = answer.get(1).map(String::as_str).unwrap_or_default();
                let (status, body) = stored.split_once('|').unwrap_or(("200", ""));
                Ok(Reservation::Completed(StoredResponse {
                    status: status.parse().unwrap_or(200),
                    body: body.to_string(),
                }))
            }
            other => Err(StoreError::Corrupt {
                table: "redis idempotency",
                message: format!("unexpected answer {other:?}"),
            }),
        }
    }

    async fn complete(&self, origin: &Origin, response: &StoredResponse) -> Result<()> {
        self.store(origin, response, "always").await
    }

    async fn release(&self, origin: &Origin) -> Result<()> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .release
            .key(self.key(origin))
            .arg(&origin.fingerprint)
            .invoke_async(&mut connection)
            .await
            .map_err(error)?;
        Ok(())
    }
}
