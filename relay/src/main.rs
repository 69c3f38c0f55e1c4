//! `clipmesh-relay`: run the relay, or administer its accounts.

use anyhow::Context;
use clap::Parser;
use clipmesh_relay::cli::{run_user_command, Cli, Command};
use clipmesh_relay::config::ENV_LOG;
use clipmesh_relay::{Config, Relay};
use std::io::{IsTerminal, Write};
use tracing_subscriber::EnvFilter;

/// Log directives always applied, whatever `RUST_LOG` says.
const QUIET_DEPENDENCIES: &[&str] = &["tungstenite=debug", "tokio_tungstenite=debug"];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    // tungstenite prints whole frames (payload bytes) at trace level; cap it
    // so `RUST_LOG=trace` cannot put envelopes in the log.
    for d in QUIET_DEPENDENCIES {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let config = cli.load_config()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(serve(config)),
        Command::User(cmd) => run_user_command(&config, cmd),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Install the signal handlers before anything can observe the relay, so
    // a SIGTERM right after the "listening" line is never fatal.
    let mut stop = Signals::install().context("installing signal handlers")?;
    let relay = Relay::bind(config).await.context("starting the relay")?;
    // Tests and scripts parse this exact line (on stdout and stderr).
    let line = format!("clipmesh-relay listening on {}", relay.url());
    println!("{line}");
    let _ = std::io::stdout().flush();
    eprintln!("{line}");
    let token = relay.shutdown_token();
    tokio::select! {
        () = stop.recv() => {
            tracing::info!("shutting down: closing sockets with 1012");
            relay.shutdown();
        }
        () = token.cancelled() => {}
    }
    relay.wait().await;
    Ok(())
}

/// SIGTERM and Ctrl-C (SIGINT), registered when created.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGTERM or Ctrl-C.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
