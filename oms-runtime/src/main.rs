//! `oms-runtime`: see `oms-runtime --help`.

use clap::Parser;
use oms_runtime::config::{Cli, Command};

// glibc's allocator spent about a fifth of the runtime's CPU under load (the stream window frees
// its oldest entries in arrival order while new ones arrive); see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Keygen(keygen)) => {
            let limits = oms_runtime::auth::RateLimits {
                writes_per_second: keygen.writes_per_second,
                reads_per_second: keygen.reads_per_second,
            };
            let key = oms_runtime::auth::add_key(
                &keygen.keys_file,
                &keygen.id,
                keygen.accounts,
                keygen.scopes,
                (limits != Default::default()).then_some(limits),
            )?;
            eprintln!(
                "added key {:?} to {}; the key is shown once:",
                keygen.id,
                keygen.keys_file.display()
            );
            println!("{key}");
            if keygen.binance {
                let binance = oms_runtime::auth::add_binance(&keygen.keys_file, &keygen.id)?;
                eprintln!("Binance-compatible API key, then its secret:");
                println!("{}\n{}", binance.api_key, binance.secret);
            }
            return Ok(());
        }
        Some(Command::Revoke(revoke)) => {
            oms_runtime::auth::revoke_key(&revoke.keys_file, &revoke.id)?;
            eprintln!(
                "removed key {:?} from {}; servers watching the file refuse it within seconds",
                revoke.id,
                revoke.keys_file.display()
            );
            return Ok(());
        }
        Some(Command::Serve(args)) => *args,
        None => cli.serve,
    };
    oms_runtime::init_tracing(args.log_format);
    oms_runtime::serve(args).await
}
