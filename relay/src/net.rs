//! Network edges: which client IP a request counts as (trusted reverse
//! proxies and `X-Forwarded-For`), and the TLS listener used when the relay
//! terminates TLS itself.

use axum::http::HeaderMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// TLS handshakes in progress at once; more connections wait in the kernel
/// backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Time a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bad `trusted_proxies` entry or TLS file.
#[derive(Debug, Error)]
pub enum NetError {
    /// Not an IP or CIDR.
    #[error("invalid trusted proxy {0:?} (expected an IP or CIDR like 10.0.0.0/8)")]
    BadCidr(String),
    /// A TLS file could not be read or used.
    #[error("tls: {0}")]
    Tls(String),
}

/// One IP network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `"10.0.0.0/8"`, `"::1"` or `"192.168.1.5"`.
    pub fn parse(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadCidr(s.to_owned());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses match
    /// IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// The configured trusted proxies.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses every entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, NetError> {
        entries
            .iter()
            .map(|e| IpNet::parse(e.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client IP of a request from `peer`. `X-Forwarded-For` is used
    /// only when `peer` is a trusted proxy; then the rightmost address that
    /// is not itself a trusted proxy is the client (entries further left
    /// can be forged by the client).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer.ip();
        if !self.trusts(peer_ip) {
            return peer_ip;
        }
        let mut client = peer_ip;
        // Walk all entries right to left across repeated headers.
        let entries: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        for ip in entries.into_iter().rev() {
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// Builds a TLS acceptor from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, NetError> {
    let tls = |e: String| NetError::Tls(e);
    let certs = {
        let f = std::fs::File::open(cert).map_err(|e| tls(format!("{}: {e}", cert.display())))?;
        rustls_pemfile::certs(&mut io::BufReader::new(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(format!("{}: {e}", cert.display())))?
    };
    if certs.is_empty() {
        return Err(tls(format!("{}: no certificate found", cert.display())));
    }
    let key = {
        let f = std::fs::File::open(key).map_err(|e| tls(format!("{}: {e}", key.display())))?;
        rustls_pemfile::private_key(&mut io::BufReader::new(f))
            .map_err(|e| tls(format!("{}: {e}", key.display())))?
            .ok_or_else(|| tls(format!("{}: no private key found", key.display())))?
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener that completes TLS handshakes concurrently (so one slow
/// client cannot stall accepts) and yields finished TLS streams.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        Self {
            tcp,
            acceptor,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                res = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    match res {
                        Ok((stream, addr)) => {
                            let _ = stream.set_nodelay(true);
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => Some((s, addr)),
                                    _ => {
                                        tracing::debug!(%addr, "tls handshake failed");
                                        None
                                    }
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for x in v {
            h.append("x-forwarded-for", x.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidr_matching() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = IpNet::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("nope").is_err());
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let t = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let h = hm(&["1.1.1.1, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(
            t.client_ip(proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(t.client_ip(other, &h), other.ip());
        assert_eq!(t.client_ip(proxy, &HeaderMap::new()), proxy.ip());
        // Repeated headers are read in order.
        let h = hm(&["1.1.1.1", "198.51.100.8"]);
        assert_eq!(
            t.client_ip(proxy, &h),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
    }
}
