//! The server under test: where it listens, what it speaks, and how the load
//! tool opens WebSocket connections to it from a pool of loopback source
//! addresses.
//!
//! **Invariant:** every address this module connects to or binds is a
//! loopback address. A target that does not resolve to loopback is refused,
//! and source addresses are built inside 127.0.0.0/8.

use anyhow::{bail, Context};
use clap::ValueEnum;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// Read buffer of each load-tool socket. Small, because the tool holds as
/// many sockets as the server does; large enough for a 1 KiB frame.
pub const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// Time allowed for one TCP connect plus WebSocket handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Which protocol the target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// clipmesh-relay: bearer-token upgrade on `/api/v1/ws`, Hello/Welcome,
    /// Publish → Deliver.
    Relay,
    /// `clipmesh-load baseline-server`: no auth, group in the URL path, every
    /// binary message forwarded verbatim to the group's other sockets.
    Baseline,
    /// clipmesh-relay's ClipCascade surface: cookie login, STOMP on
    /// `/clipsocket` (`idle` only).
    Clipcascade,
}

impl ServerKind {
    /// Whether the target is clipmesh-relay (either protocol).
    pub fn is_relay(self) -> bool {
        matches!(self, Self::Relay | Self::Clipcascade)
    }
}

/// One connected WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// The server under test.
#[derive(Debug)]
pub struct Target {
    /// What it speaks.
    pub kind: ServerKind,
    /// Its listening address (always loopback).
    pub addr: SocketAddr,
    /// Source addresses to spread client sockets over (all loopback).
    sources: Vec<IpAddr>,
    /// Round-robin cursor into `sources`.
    next_source: AtomicUsize,
}

impl Target {
    /// Parses `http://127.0.0.1:PORT` (or `ws://…`, or a bare `HOST:PORT`).
    /// `source_ips` is how many loopback source addresses to use, starting at
    /// 127.0.0.2 (0 = let the kernel choose, which means 127.0.0.1).
    pub fn new(kind: ServerKind, url: &str, source_ips: u8) -> anyhow::Result<Self> {
        Self::with_sources(kind, url, Ipv4Addr::new(127, 0, 0, 2), source_ips)
    }

    /// Like [`Target::new`], with `source_ips` source addresses counting up
    /// from `first` (which must be a loopback address; the last octet must
    /// not wrap).
    pub fn with_sources(
        kind: ServerKind,
        url: &str,
        first: Ipv4Addr,
        source_ips: u8,
    ) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .unwrap_or(url);
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .with_context(|| format!("resolving target {hostport}"))?
            .next()
            .with_context(|| format!("target {hostport} has no address"))?;
        if !addr.ip().is_loopback() {
            bail!("target {addr} is not a loopback address; the load tool only runs on loopback");
        }
        let sources = if source_ips == 0 {
            Vec::new()
        } else {
            if !addr.is_ipv4() {
                bail!("--source-ips needs an IPv4 target");
            }
            let [a, b, c, d] = first.octets();
            if !first.is_loopback() || u16::from(d) + u16::from(source_ips) > 255 {
                bail!(
                    "source addresses from {first}: at most {} stay in loopback",
                    255 - d
                );
            }
            (0..source_ips)
                .map(|i| IpAddr::V4(Ipv4Addr::new(a, b, c, d + i)))
                .collect()
        };
        Ok(Self {
            kind,
            addr,
            sources,
            next_source: AtomicUsize::new(0),
        })
    }

    /// The next source address in round-robin order, if a pool is set.
    pub fn next_source(&self) -> Option<IpAddr> {
        if self.sources.is_empty() {
            return None;
        }
        let i = self.next_source.fetch_add(1, Ordering::Relaxed);
        self.sources.get(i % self.sources.len()).copied()
    }

    /// Opens a TCP connection from the next source address.
    pub async fn tcp(&self) -> anyhow::Result<TcpStream> {
        let socket = TcpSocket::new_v4().context("creating socket")?;
        if let Some(ip) = self.next_source() {
            debug_assert!(ip.is_loopback());
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding source {ip}"))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(stream)
    }

    /// Opens one WebSocket: for the relay with `token` as bearer, for a
    /// ClipCascade session with `token` as its `JSESSIONID` cookie, for the
    /// baseline into `group`.
    pub async fn connect(&self, token: Option<&str>, group: &str) -> anyhow::Result<Ws> {
        let fut = async {
            let stream = self.tcp().await?;
            let url = match self.kind {
                ServerKind::Relay => format!("ws://{}/api/v1/ws", self.addr),
                ServerKind::Baseline => format!("ws://{}/g/{group}", self.addr),
                ServerKind::Clipcascade => format!("ws://{}/clipsocket", self.addr),
            };
            let mut req = url.into_client_request().context("building request")?;
            if let Some(token) = token {
                let (name, value) = match self.kind {
                    ServerKind::Clipcascade => ("cookie", format!("JSESSIONID={token}")),
                    _ => ("authorization", format!("Bearer {token}")),
                };
                let value =
                    HeaderValue::from_str(&value).context("token is not a valid header value")?;
                req.headers_mut().insert(name, value);
            }
            let config = WebSocketConfig::default()
                .read_buffer_size(CLIENT_READ_BUFFER)
                .write_buffer_size(0);
            let (ws, _resp) =
                tokio_tungstenite::client_async_with_config(req, stream, Some(config))
                    .await
                    .context("websocket handshake")?;
            Ok::<_, anyhow::Error>(ws)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
            .await
            .context("connect timed out")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_targets() {
        assert!(Target::new(ServerKind::Relay, "http://192.0.2.1:80", 0).is_err());
        assert!(Target::new(ServerKind::Relay, "http://127.0.0.1:8080", 4).is_ok());
    }

    #[test]
    fn sources_stay_in_loopback_and_rotate() {
        let t = Target::new(ServerKind::Baseline, "127.0.0.1:9", 3).unwrap();
        let got: Vec<_> = (0..4).filter_map(|_| t.next_source()).collect();
        assert!(got.iter().all(|ip| ip.is_loopback()));
        assert_eq!(got[0], got[3]);
        assert_ne!(got[0], got[1]);
    }
}
