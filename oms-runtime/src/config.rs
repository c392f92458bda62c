//! Command line and environment configuration. Every flag can be set with its `OMS_…` variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The OMS runtime: an HTTP order API, a durable journal, matching and a read projection.
///
/// Without --kafka-bootstrap it serves in single-node mode: every role in one process, on an
/// embedded database in --data-dir; the first start creates an API key for the bootstrap
/// accounts and prints it once. With --kafka-bootstrap it runs the roles chosen by --role
/// against Kafka, Redis and MongoDB.
#[derive(Parser, Debug)]
#[command(name = "oms-runtime", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve(Box<ServeArgs>),
    /// Create an API key: add its hash to a keys file and print the key once.
    Keygen(KeygenArgs),
    /// Revoke an API key: remove it from a keys file. Running servers refuse it within seconds.
    Revoke(RevokeArgs),
}

/// `revoke` options.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// Id of the key to remove.
    #[arg(long)]
    pub id: String,
    /// Keys file to remove it from.
    #[arg(
        long,
        env = "OMS_API_KEYS_FILE",
        default_value = "oms-data/api-keys.json"
    )]
    pub keys_file: PathBuf,
}

/// `keygen` options.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Key id: names the principal in logs and scopes its idempotency keys.
    #[arg(long)]
    pub id: String,
    /// Accounts the key may trade, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub accounts: Vec<String>,
    /// What the key may do, comma separated: read (orders, fills, balances, ledger), trade
    /// (place and cancel), funds (deposits and withdrawals).
    #[arg(long, value_delimiter = ',', default_value = "read,trade")]
    pub scopes: Vec<crate::auth::Scope>,
    /// Writes per second for this key (default: the server's --rate-limit-writes).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub writes_per_second: Option<u32>,
    /// Reads per second for this key (default: the server's --rate-limit-reads).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub reads_per_second: Option<u32>,
    /// Also create credentials for the Binance-compatible API (/api/v3): an API key and an
    /// HMAC secret, printed after the key (see docs/binance.md).
    #[arg(long)]
    pub binance: bool,
    /// Keys file to add it to (created if missing).
    #[arg(
        long,
        env = "OMS_API_KEYS_FILE",
        default_value = "oms-data/api-keys.json"
    )]
    pub keys_file: PathBuf,
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which part of the system a process runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every role in one process (the only role of single-node mode).
    All,
    /// The HTTP API: validates, journals to Kafka, answers from MongoDB.
    Ingest,
    /// The matching stage: applies the funded commands of its shard's commands partitions to
    /// the books; writes events and settlements.
    Processor,
    /// The funds stage: holds, deposits, withdrawals and settlement for the accounts of its
    /// shard's accounts partitions; forwards order commands to the books.
    Funds,
    /// Folds events into the MongoDB read projection.
    Projector,
}

/// Kafka (distributed mode).
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers; setting it selects distributed mode.
    #[arg(long = "kafka-bootstrap", env = "OMS_KAFKA_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Prefix of the topics (<prefix>.accounts, .commands, .events, .ledger), consumer groups and
    /// transactional ids: one per order system.
    #[arg(
        long = "kafka-topic-prefix",
        env = "OMS_KAFKA_TOPIC_PREFIX",
        default_value = "oms"
    )]
    pub topic_prefix: String,
    /// Extra librdkafka properties (security.protocol, sasl.*, ssl.*): key=value, one per line
    /// (as in the `kafka.properties` key of an OrderSystem's Kafka Secret), or several on one
    /// line separated by commas; blank lines and `#` comments are ignored. Repeatable.
    #[arg(
        long = "kafka-property",
        env = "OMS_KAFKA_PROPERTIES",
        hide_env_values = true
    )]
    pub properties: Vec<String>,
    /// Create the topics if missing (development; in Kubernetes the operator creates them).
    #[arg(long = "kafka-create-topics", env = "OMS_KAFKA_CREATE_TOPICS")]
    pub create_topics: bool,
    /// Partitions of topics created with --kafka-create-topics.
    #[arg(
        long = "kafka-partitions",
        env = "OMS_KAFKA_PARTITIONS",
        default_value_t = 12
    )]
    pub partitions: u32,
    /// Replication factor of topics created with --kafka-create-topics.
    #[arg(
        long = "kafka-replication-factor",
        env = "OMS_KAFKA_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    pub replication_factor: u32,
}

impl KafkaArgs {
    /// The properties as pairs, parsed as the operator parses its Secret
    /// ([`oms_core::properties`]).
    pub fn property_pairs(
        &self,
    ) -> Result<Vec<(String, String)>, oms_core::properties::PropertiesError> {
        let mut pairs = Vec::new();
        for text in &self.properties {
            pairs.extend(oms_core::properties::parse_properties(text)?);
        }
        Ok(pairs)
    }
}

/// Redis (distributed mode): idempotency keys and published depth.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// redis://[user:password@]host:port[/db], or rediss:// for TLS.
    #[arg(id = "redis_url", long = "redis-url", env = "OMS_REDIS_URL")]
    pub url: Option<String>,
    /// Redis AUTH password, if not in the URL.
    #[arg(
        id = "redis_password",
        long = "redis-password",
        env = "OMS_REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

/// MongoDB or DocumentDB (distributed mode): the read projection and processor snapshots.
#[derive(Args, Debug, Clone)]
pub struct MongoArgs {
    /// Connection string; use retryWrites=false for DocumentDB.
    #[arg(
        id = "mongo_url",
        long = "mongo-url",
        env = "OMS_MONGO_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// Database name.
    #[arg(
        id = "mongo_database",
        long = "mongo-database",
        env = "OMS_MONGO_DATABASE",
        default_value = "oms"
    )]
    pub database: String,
}

/// Which input partitions a processor or funds process owns: partition p belongs to shard
/// p mod shards (of its own role).
#[derive(Args, Debug, Clone)]
pub struct ShardArgs {
    /// This processor's shard; default: the number at the end of the host name (the
    /// StatefulSet ordinal), else 0.
    #[arg(long, env = "OMS_SHARD")]
    pub shard: Option<u32>,
    /// Number of shards of this process's role (1 to the partition count).
    #[arg(long, env = "OMS_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: u32,
}

impl ShardArgs {
    /// The shard, from the flag or the host name.
    pub fn shard(&self) -> u32 {
        self.shard.unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .and_then(|host| host.rsplit('-').next()?.parse().ok())
                .unwrap_or(0)
        })
    }
}

/// `serve` options.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// What this process runs.
    #[arg(long, env = "OMS_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Redis.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// MongoDB.
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Processor sharding.
    #[command(flatten)]
    pub sharding: ShardArgs,
    /// Address of the order API.
    #[arg(long, env = "OMS_API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OMS_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Directory of the embedded database and the generated keys file.
    #[arg(long, env = "OMS_DATA_DIR", default_value = "oms-data")]
    pub data_dir: PathBuf,
    /// JSON array of instruments (symbol, base, quote, tick_size, lot_size, min_quantity,
    /// max_quantity, min_notional, ...). Default: BTC-USDT and ETH-USDT.
    #[arg(long, env = "OMS_INSTRUMENTS_FILE")]
    pub instruments_file: Option<PathBuf>,
    /// API keys file (see `keygen`). Default: <data-dir>/api-keys.json, created with a
    /// bootstrap key on the first start.
    #[arg(long, env = "OMS_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// The built web UI (`scripts/ui build` writes it to ui/dist), served at `/` on the API
    /// port. Without it the API port serves the API only.
    #[arg(long, env = "OMS_UI_DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Accounts of the key created on the first start.
    #[arg(
        long,
        env = "OMS_BOOTSTRAP_ACCOUNTS",
        value_delimiter = ',',
        default_value = "alice,bob"
    )]
    pub bootstrap_accounts: Vec<String>,
    /// Demo funds deposited into each bootstrap account on the first start (when the keys file
    /// is created), as ASSET=AMOUNT pairs, comma separated; `none` for none.
    #[arg(
        long,
        env = "OMS_BOOTSTRAP_DEPOSIT",
        value_delimiter = ',',
        default_value = "USDT=100000,BTC=10,ETH=100"
    )]
    pub bootstrap_deposit: Vec<String>,
    /// Pre-trade risk limits.
    #[command(flatten)]
    pub risk: RiskArgs,
    /// Connection limits and timeouts.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// WebSocket stream limits.
    #[command(flatten)]
    pub streams: StreamArgs,
    /// How long idempotency keys and their responses are kept.
    #[arg(long, env = "OMS_IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_ttl: Duration,
    /// Serve the Binance-compatible API (/api/v3 and its user data stream, docs/binance.md) on
    /// the API port: true or false. Only keys with Binance credentials can use it.
    #[arg(long, env = "OMS_BINANCE_API", default_value_t = true, action = clap::ArgAction::Set)]
    pub binance_api: bool,
    /// Longest wait honoured for `Prefer: wait=N`.
    #[arg(long, env = "OMS_MAX_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// Writes (POST, PATCH, DELETE) per second of an API key whose entry in the keys file sets
    /// no `rate_limits` of its own; counted per process (see docs/api.md).
    #[arg(long, env = "OMS_RATE_LIMIT_WRITES", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_writes: u32,
    /// Reads (GET) per second of such a key.
    #[arg(long, env = "OMS_RATE_LIMIT_READS", default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_reads: u32,
    /// How often the API keys file is read for changes (new and revoked keys).
    #[arg(long, env = "OMS_KEYS_RELOAD_EVERY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub keys_reload_every: Duration,
    /// A dependency slower than this makes the request fail fast with 503.
    #[arg(long, env = "OMS_DEPENDENCY_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub dependency_timeout: Duration,
    /// Commands between engine snapshots, at least. Once the state holds more records
    /// (accounts, holds, resting orders) than this, a snapshot follows every as many commands
    /// as it holds, so snapshots cost about one record per command whatever the book's size. A
    /// restart replays at most the larger of the two.
    #[arg(long, env = "OMS_SNAPSHOT_EVERY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// Memory for the single-node projection's page cache, in MiB: the orders, trades and
    /// balances read most stay in memory up to this size, the rest are read from the file.
    /// (The database's own default, 1024, lets the process grow by that much.)
    #[arg(long, env = "OMS_PROJECTION_CACHE_MIB", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub projection_cache_mib: usize,
    /// Fault injection for tests: nothing is written to the projection (so a test can kill the
    /// process between the journal and the projection and see a restart rebuild it).
    #[arg(long, hide = true)]
    pub fault_hold_projection: bool,
    /// Node id (0 to 1023) embedded in order ids; unique per ingest process.
    #[arg(long, env = "OMS_NODE_ID", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub node_id: u16,
    /// Log format; the level comes from OMS_LOG (default "info").
    #[arg(long, env = "OMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// `--bootstrap-deposit` as (asset, amount) pairs.
    pub fn bootstrap_deposits(&self) -> anyhow::Result<Vec<(String, Decimal)>> {
        if self.bootstrap_deposit.len() == 1 && self.bootstrap_deposit[0] == "none" {
            return Ok(Vec::new());
        }
        self.bootstrap_deposit
            .iter()
            .map(|pair| {
                let (asset, amount) = pair.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--bootstrap-deposit {pair:?}: expected ASSET=AMOUNT")
                })?;
                let amount = amount.trim().parse::<Decimal>().map_err(|_| {
                    anyhow::anyhow!("--bootstrap-deposit {pair:?}: {amount:?} is not a number")
                })?;
                Ok((asset.trim().to_string(), amount))
            })
            .collect()
    }
}

/// Pre-trade risk limits, for every instrument. They are on by default, as fat-finger guards;
/// each can be loosened, or turned off with `none`.
#[derive(Args, Debug, Clone)]
pub struct RiskArgs {
    /// Largest price × quantity of one order, in the quote asset, or `none`.
    #[arg(long, env = "OMS_MAX_ORDER_NOTIONAL", default_value = "1000000")]
    pub max_order_notional: Limit<Decimal>,
    /// Prices must be within this percentage of the last trade, and market orders trade no
    /// further from it (instruments may set their own), or `none`.
    #[arg(long, env = "OMS_PRICE_BAND_PERCENT", default_value = "10")]
    pub price_band_percent: Limit<Decimal>,
    /// Most open orders of one account on one instrument, or `none`.
    #[arg(long, env = "OMS_MAX_OPEN_ORDERS", default_value = "1000")]
    pub max_open_orders: Limit<u32>,
}

impl RiskArgs {
    /// As core limits.
    pub fn limits(&self) -> oms_core::RiskLimits {
        oms_core::RiskLimits {
            max_order_notional: self.max_order_notional.0,
            price_band_percent: self.price_band_percent.0,
            max_open_orders: self.max_open_orders.0,
        }
    }
}

/// A limit that can be turned off: a value, or `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<T>(pub Option<T>);

impl<T: std::str::FromStr> std::str::FromStr for Limit<T> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(Limit(None));
        }
        text.parse()
            .map(|value| Limit(Some(value)))
            .map_err(|_| format!("{text:?} is neither a number nor `none`"))
    }
}

/// Limits of the WebSocket streams (`GET /v1/ws`, see docs/api.md).
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// Messages queued for one stream connection; a client that falls this far behind is
    /// disconnected (close code 4001) instead of slowing anyone else.
    #[arg(long, env = "OMS_STREAM_QUEUE", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_queue: u32,
    /// Stream connections of one API key (per process).
    #[arg(long, env = "OMS_STREAM_CONNECTIONS_PER_KEY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_connections_per_key: u32,
    /// Subscriptions of one API key over its stream connections (per process).
    #[arg(long, env = "OMS_STREAM_SUBSCRIPTIONS_PER_KEY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_subscriptions_per_key: u32,
    /// Stream connections of the process.
    #[arg(long, env = "OMS_STREAM_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_connections: u32,
    /// Private updates kept for clients that reconnect and resume with a cursor.
    #[arg(long, env = "OMS_STREAM_REPLAY", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub stream_replay: u32,
    /// How often the server sends a heartbeat and a ping; a client silent for 4.5 times this
    /// is disconnected (close code 4000).
    #[arg(long, env = "OMS_STREAM_HEARTBEAT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub stream_heartbeat: Duration,
}

impl StreamArgs {
    /// The streams' limits.
    pub fn limits(&self) -> crate::streams::Limits {
        crate::streams::Limits {
            queue: self.stream_queue as usize,
            connections_per_key: self.stream_connections_per_key as usize,
            subscriptions_per_key: self.stream_subscriptions_per_key as usize,
            connections: self.stream_connections as usize,
            replay: self.stream_replay as usize,
            heartbeat: self.stream_heartbeat,
            idle_timeout: self.stream_heartbeat.mul_f64(4.5),
            ..crate::streams::Limits::default()
        }
    }
}

/// How the API port treats connections (the admin port has the same timeouts and a cap of
/// its own, so that probes answer while the API is full).
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Most open connections to the API; more are answered 503 and closed. Lowered at start
    /// to fit the open-files limit.
    #[arg(long, env = "OMS_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Longest time from the first byte of a request head to its end.
    #[arg(long, env = "OMS_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Longest time to receive a request body; a slower one gets 408.
    #[arg(long, env = "OMS_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// A kept-alive connection without a request for this long is closed, as is one whose
    /// client does not read its response. Longer than a load balancer's idle timeout (60 s on
    /// an AWS ALB), so that the balancer closes first.
    #[arg(long, env = "OMS_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// At SIGTERM, how long requests in flight may finish before their connections are
    /// closed. Keep it below the pod's termination grace period (30 s).
    #[arg(long, env = "OMS_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

impl ConnectionArgs {
    /// The API port's limits, the cap lowered to fit `open_files`.
    pub fn limits(&self, open_files: Option<u64>) -> crate::server::Limits {
        let configured = self.max_connections as usize;
        let max_connections = match open_files {
            Some(open_files) => crate::server::connection_cap(configured, open_files),
            None => configured,
        };
        if max_connections < configured {
            tracing::warn!(
                configured,
                max_connections,
                open_files,
                "--max-connections lowered to fit the open-files limit"
            );
        }
        crate::server::Limits {
            max_connections,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            drain_timeout: self.drain_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::try_parse_from(["oms-runtime"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.idempotency_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(cli.serve.bootstrap_accounts, vec!["alice", "bob"]);
        let cli = Cli::try_parse_from(["oms-runtime", "keygen", "--id", "k", "--accounts", "a,b"])
            .unwrap();
        assert!(matches!(cli.command, Some(Command::Keygen(ref k)) if k.accounts == ["a", "b"]));
        assert!(Cli::try_parse_from(["oms-runtime", "--node-id", "2000"]).is_err());
        let limits = cli_limits(&[]);
        assert_eq!(limits.max_order_notional, Some(Decimal::from(1_000_000)));
        assert_eq!(limits.price_band_percent, Some(Decimal::from(10)));
        assert_eq!(limits.max_open_orders, Some(1000));
    }

    fn cli_limits(args: &[&str]) -> oms_core::RiskLimits {
        let cli = Cli::try_parse_from(std::iter::once("oms-runtime").chain(args.iter().copied()))
            .unwrap();
        cli.serve.risk.limits()
    }

    #[test]
    fn risk_limits_can_be_loosened_or_turned_off() {
        let limits = cli_limits(&[
            "--max-order-notional",
            "none",
            "--price-band-percent",
            "50",
            "--max-open-orders",
            "NONE",
        ]);
        assert_eq!(limits.max_order_notional, None);
        assert_eq!(limits.price_band_percent, Some(Decimal::from(50)));
        assert_eq!(limits.max_open_orders, None);
        let error = Cli::try_parse_from(["oms-runtime", "--max-open-orders", "lots"]).unwrap_err();
        assert!(
            error.to_string().contains("neither a number nor `none`"),
            "{error}"
        );
    }

    /// The Secret of the deployment example, as the operator hands it to a pod.
    #[test]
    fn kafka_properties_from_the_example_secret() {
        let example = include_str!("../../examples/ordersystems/secrets.example.yaml");
        let text = kafka_properties_of(example);
        let cli = Cli::try_parse_from(["oms-runtime", "--kafka-property", &text]).unwrap();
        let pairs = cli.serve.kafka.property_pairs().unwrap();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "security.protocol",
                "sasl.mechanisms",
                "sasl.username",
                "sasl.password"
            ]
        );
        assert_eq!(pairs[0].1, "SASL_SSL");
        let cli = Cli::try_parse_from(["oms-runtime", "--kafka-property", "a=1,b=2"]).unwrap();
        assert_eq!(cli.serve.kafka.property_pairs().unwrap().len(), 2);
        let cli =
            Cli::try_parse_from(["oms-runtime", "--kafka-property", "a=1\nnot-a-pair"]).unwrap();
        assert!(cli.serve.kafka.property_pairs().is_err());
    }

    /// The block under `kafka.properties: |` in a YAML text, unindented.
    pub(crate) fn kafka_properties_of(yaml: &str) -> String {
        let mut lines = yaml
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("kafka.properties: |"));
        let header = lines.next().expect("a kafka.properties block");
        let indent = header.len() - header.trim_start().len();
        lines
            .take_while(|l| l.len() - l.trim_start().len() > indent && !l.trim().is_empty())
            .map(|l| format!("{}\n", l.trim()))
            .collect()
    }
}
