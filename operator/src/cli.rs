//! Command line: `run` the operator, print the `crd`, or `render` a manifest's children.

use clap::{Args, Parser, Subcommand};
use crds::OrderSystem;
use kube::CustomResourceExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The OrderSystem operator: turns each OrderSystem into OMS pods, Kafka topics and status.
#[derive(Parser, Debug)]
#[command(name = "oms-operator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (in a cluster or against the current kubeconfig).
    Run(Box<RunArgs>),
    /// Print the OrderSystem CustomResourceDefinition (YAML).
    Crd,
    /// Print every object the operator would create for an OrderSystem manifest, for review
    /// and GitOps diffs. Owner references need the object's uid and are left out without it.
    Render(RenderArgs),
}

/// `run` options.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "OMS_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Watch one namespace only (default: every namespace the service account may see).
    #[arg(long, env = "OMS_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only reconcile while holding the leader Lease (needed with more than one replica).
    #[arg(long, env = "OMS_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease; default: the pod's namespace (POD_NAMESPACE), else default.
    #[arg(long, env = "OMS_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "OMS_OPERATOR_LEASE_NAME", default_value = "oms-operator")]
    pub lease_name: String,
    /// Bound on each Kafka admin call.
    #[arg(long, env = "OMS_OPERATOR_KAFKA_TIMEOUT", default_value = "5s", value_parser = humantime_duration)]
    pub kafka_timeout: Duration,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?} is not a duration like 5s, 500ms or 1m")),
    }
}

/// `render` options.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The OrderSystem manifest (YAML); `-` for standard input.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
}

/// The CRD as YAML.
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(&OrderSystem::crd())?)
}

/// `oms-operator crd`.
pub fn print_crd() -> anyhow::Result<()> {
    print!("{}", crd_yaml()?);
    Ok(())
}

/// `oms-operator render -f file`.
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.file)?
    };
    let system: OrderSystem = serde_yaml::from_str(&text)?;
    print!("{}", crate::render(&system)?);
    Ok(())
}
