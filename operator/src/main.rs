//! `oms-operator`: see `oms-operator --help`.

use clap::Parser;
use operator::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => operator::cli::print_crd(),
        Command::Render(args) => operator::cli::render(&args),
        Command::Run(args) => {
            // Two TLS stacks reach rustls through the dependencies; name the one to use.
            let _ = rustls::crypto::ring::default_provider().install_default();
            operator::init_tracing();
            operator::run(*args).await
        }
    }
}
