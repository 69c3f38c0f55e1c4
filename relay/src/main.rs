//! `clipmesh-relay`: run the relay, or administer its accounts.

use anyhow::Context;
use clap::Parser;
use clipmesh_relay::cli::{run_user_command, Cli, Command};
use clipmesh_relay::config::ENV_LOG;
use clipmesh_relay::{Config, Relay};
use std::io::{IsTerminal, Write};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Dependencies whose trace-level events print whole frames (payload bytes)
/// and handshake headers: dropped whatever `RUST_LOG` says.
const NO_TRACE_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Keeps an event unless it is a trace event of [`NO_TRACE_TARGETS`]. A cap
/// written as an `EnvFilter` directive (`tungstenite=debug`) would instead
/// *raise* those targets to debug when `RUST_LOG` asks for less.
fn not_dependency_trace(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() != tracing::Level::TRACE
        || !NO_TRACE_TARGETS
            .iter()
            .any(|t| meta.target().starts_with(t))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env(ENV_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter_fn(not_dependency_trace)),
        )
        .init();
    let config = cli.load_config()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(serve(config)),
        Command::User(cmd) => run_user_command(&config, cmd),
        Command::Health => health(&config),
    }
}

/// `clipmesh-relay health`: `GET /healthz` from the relay on this machine
/// (its listen port, on loopback), plain HTTP, bounded by [`HEALTH_TIMEOUT`].
fn health(config: &Config) -> anyhow::Result<()> {
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    if config.tls_cert.is_some() {
        anyhow::bail!("health speaks plain HTTP; this relay serves TLS (check /healthz with curl)");
    }
    let ip = match config.listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, config.listen.port());
    let mut s = TcpStream::connect_timeout(&addr, HEALTH_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(HEALTH_TIMEOUT))?;
    s.set_write_timeout(Some(HEALTH_TIMEOUT))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    s.take(4096).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status_ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    if status_ok && text.trim_end().ends_with("ok") {
        println!("ok");
        Ok(())
    } else {
        let first = text.lines().next().unwrap_or("no answer");
        anyhow::bail!("{addr}/healthz: {first}")
    }
}

/// How long `clipmesh-relay health` waits for each step.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    if let Some(token) = relay.setup_token() {
        // For the operator only: the first account (the admin) needs it.
        let hint = format!(
            "no account yet: create the first (admin) account with\n  \
             clipmesh signup --server {} --username NAME --setup-token {token}\n\
             (the token is also in the data directory's setup-token file)",
            local_url(&relay)
        );
        // A closed stdout or stderr (nobody reading) must not stop the relay.
        let _ = writeln!(std::io::stdout(), "{hint}");
        let _ = std::io::stdout().flush();
        let _ = writeln!(std::io::stderr(), "{hint}");
    }
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

/// The relay's URL as seen from this machine: a wildcard listen address
/// becomes the loopback one, which the client accepts over plain HTTP.
fn local_url(relay: &clipmesh_relay::RelayHandle) -> String {
    let mut addr = relay.local_addr();
    if addr.ip().is_unspecified() {
        let lo: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(lo);
    }
    let scheme = if relay.url().starts_with("https") {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{addr}")
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
