//! Command line and environment configuration. Every flag can be set with its `OMS_…` variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The OMS runtime: an HTTP order API, a durable journal, matching and a read projection.
///
/// Without a subcommand it serves in single-node mode: every role in one process, on an
/// embedded database in --data-dir. The first start creates an API key for the bootstrap
/// accounts and prints it once.
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
    Serve(ServeArgs),
    /// Create an API key: add its hash to a keys file and print the key once.
    Keygen(KeygenArgs),
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

/// `serve` options.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
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
    /// Accounts of the key created on the first start.
    #[arg(
        long,
        env = "OMS_BOOTSTRAP_ACCOUNTS",
        value_delimiter = ',',
        default_value = "alice,bob"
    )]
    pub bootstrap_accounts: Vec<String>,
    /// Pre-trade risk limits.
    #[command(flatten)]
    pub risk: RiskArgs,
    /// How long idempotency keys and their responses are kept.
    #[arg(long, env = "OMS_IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_ttl: Duration,
    /// Longest wait honoured for `Prefer: wait=N`.
    #[arg(long, env = "OMS_MAX_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// A dependency slower than this makes the request fail fast with 503.
    #[arg(long, env = "OMS_DEPENDENCY_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub dependency_timeout: Duration,
    /// Commands per book between snapshots; a restart replays at most this many per book.
    #[arg(long, env = "OMS_SNAPSHOT_EVERY", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// Node id (0 to 1023) embedded in order ids; unique per ingest process.
    #[arg(long, env = "OMS_NODE_ID", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1023))]
    pub node_id: u16,
    /// Log format; the level comes from OMS_LOG (default "info").
    #[arg(long, env = "OMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Pre-trade risk limits, for every instrument.
#[derive(Args, Debug, Clone)]
pub struct RiskArgs {
    /// Largest price × quantity of one order, in the quote asset.
    #[arg(long, env = "OMS_MAX_ORDER_NOTIONAL")]
    pub max_order_notional: Option<Decimal>,
    /// Prices must be within this percentage of the last trade (instruments may override).
    #[arg(long, env = "OMS_PRICE_BAND_PERCENT")]
    pub price_band_percent: Option<Decimal>,
    /// Most open orders of one account on one instrument.
    #[arg(long, env = "OMS_MAX_OPEN_ORDERS")]
    pub max_open_orders: Option<u32>,
}

impl RiskArgs {
    /// As core limits.
    pub fn limits(&self) -> oms_core::RiskLimits {
        oms_core::RiskLimits {
            max_order_notional: self.max_order_notional,
            price_band_percent: self.price_band_percent,
            max_open_orders: self.max_open_orders,
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
    }
}
