//! `clipmesh-load`: the load tool behind the relay figures in
//! `docs/benchmarks.md`.
//!
//! - `baseline-server`: a plain broadcast WebSocket server, the reference the
//!   relay's figures are quoted against.
//! - `idle`: hold N authenticated idle device connections (native, or
//!   ClipCascade STOMP sessions with `--server clipcascade`); report the
//!   server's RSS per connection.
//! - `fanout`: publish at a fixed rate to users with several devices; report
//!   the relay-hop latency.
//! - `max`: closed-loop publishing; report the maximum delivered frames/s.
//! - `hostile`: abuse scenarios against the relay while a legitimate client
//!   logs in, joins and syncs; report its success rate and login latency.
//!
//! **Invariant:** all traffic is loopback (see [`target`]), and every phase
//! is bounded in time, so the tool always stops by itself.

mod baseline;
mod device;
mod fanout;
mod hostile;
mod http;
mod idle;
mod limits;
mod measure;
mod sessions;
mod target;

use anyhow::Context;
use clap::{Parser, Subcommand};
use target::{ServerKind, Target};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "clipmesh-load",
    version,
    about = "clipmesh relay load tool (loopback only)"
)]
struct Cli {
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the plain broadcast WebSocket server used as the reference.
    BaselineServer(baseline::BaselineArgs),
    /// Hold idle authenticated connections and measure server memory.
    Idle(idle::IdleArgs),
    /// Publish at a fixed rate and measure the hop latency.
    Fanout(fanout::FanoutArgs),
    /// Publish as fast as a bounded window allows; measure delivered frames/s.
    Max(fanout::FanoutArgs),
    /// Abuse scenarios while a legitimate client keeps syncing.
    Hostile(hostile::HostileArgs),
}

/// Where the server under test is.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Server URL, e.g. `http://127.0.0.1:8080` (loopback only).
    #[arg(long)]
    target: String,
    /// What the target is.
    #[arg(long, value_enum, default_value = "relay")]
    server: ServerKind,
    /// Loopback source addresses to spread sockets over (127.0.0.2 and up);
    /// each gives one ephemeral port range.
    #[arg(long, default_value_t = 8)]
    source_ips: u8,
    /// Server process id, to read its RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        Target::new(self.server, &self.target, self.source_ips)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let nofile = limits::raise_nofile().context("raising the open-file limit")?;
    tracing::info!(nofile, "open-file limit");
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("building runtime")?;
    // Start the shared clock before any task reads it.
    measure::now_ns();
    rt.block_on(async move {
        match cli.command {
            Command::BaselineServer(a) => baseline::run(a).await,
            Command::Idle(a) => idle::run(a).await,
            Command::Fanout(a) => fanout::run(a, fanout::Mode::Rate).await,
            Command::Max(a) => fanout::run(a, fanout::Mode::Max).await,
            Command::Hostile(a) => hostile::run(a).await,
        }
    })
}
