//! Network edges: the accept loop (plain or TLS, HTTP/1.1 with upgrades,
//! header, request and write timeouts, caps on open HTTP connections in
//! total and per client network, a lingering close), and which client IP a
//! request counts as (trusted reverse proxies and `X-Forwarded-For`).
//!
//! The accept loop's pool of `max_connections` slots is shared by every
//! HTTP connection until it upgrades to a WebSocket. Three things keep one
//! client from taking all of it: slow headers and slow non-blob requests
//! end after their timeouts; one network (IPv4 address or IPv6 /64) holds
//! at most `max_per_net` connections (`caps`); and blob transfers, the
//! only long-lived requests, are capped per user and in total below the
//! pool's size (`blobs/slots.rs`), so the rest is reserved for logins, the
//! API and WebSocket joins.

mod caps;
mod sockio;

pub use caps::{NetSlot, PerNet, Refusals};
pub use sockio::{StallIo, LINGER_BYTES, LINGER_TIME};

use axum::http::HeaderMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest HTTP read buffer per connection (request line and headers).
pub const MAX_HTTP_BUFFER: usize = 64 * 1024;
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
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Set once the "forwarded header but no trusted proxy" warning is out.
    warned: Arc<std::sync::atomic::AtomicBool>,
}

impl TrustedProxies {
    /// Parses every entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, NetError> {
        entries
            .iter()
            .map(|e| IpNet::parse(e.as_ref()))
            .collect::<Result<_, _>>()
            .map(|nets| Self {
                nets,
                warned: Arc::default(),
            })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether `X-Forwarded-For` arrived although no proxy is trusted: then
    /// the relay is probably behind a proxy, every client counts as the
    /// proxy's address, and per-IP limits lump them all together. Returns
    /// true (and logs a warning) only the first time.
    pub fn warn_untrusted_forwarding(&self, headers: &HeaderMap) -> bool {
        use std::sync::atomic::Ordering;
        if !self.nets.is_empty()
            || !headers.contains_key("x-forwarded-for")
            || self.warned.swap(true, Ordering::Relaxed)
        {
            return false;
        }
        tracing::warn!(
            "requests carry X-Forwarded-For but no trusted proxy is set: every client \
             counts as the proxy's address for throttling; set --trusted-proxy"
        );
        true
    }

    /// The client IP of a request from `peer`. `X-Forwarded-For` is used
    /// only when `peer` is a trusted proxy; then the rightmost address that
    /// is not itself a trusted proxy is the client (entries further left
    /// can be forged by the client).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.warn_untrusted_forwarding(headers);
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

/// Settings of the HTTP accept loop.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// HTTP connections (before any WebSocket upgrade) open at once; more
    /// are closed on accept.
    pub max_connections: usize,
    /// HTTP connections open at once from one client network (IPv4 address
    /// or IPv6 /64); more are closed on accept. Trusted proxies are exempt
    /// (every client behind one shares its address).
    pub max_per_net: usize,
    /// Time one write to a client may stay blocked (a client that stops
    /// reading its response); then the connection ends.
    pub write_timeout: Duration,
    /// Refused requests (401, 429, 503) per second one client network may
    /// cause on average ([`Refusals`]); 0 turns the check off.
    pub refusals_per_s: f64,
    /// Refused requests one client network may cause at once.
    pub refusals_burst: f64,
    /// Time a client has to send complete request headers (slowloris).
    pub header_timeout: Duration,
    /// Time one request may take, body included; then 408.
    pub request_timeout: Duration,
}

/// Accepts TCP connections until `shutdown`, serving each (after a TLS
/// handshake when `tls` is set) as HTTP/1.1 with upgrades on its own task.
///
/// Every connection task belongs to `tracker`. A connection that upgrades to
/// a WebSocket leaves this loop's accounting; WebSockets are limited by
/// `limits.max_connections` in `ws.rs`. A connection that ends without an
/// upgrade gets a lingering close (`sockio::linger`) while it still holds its
/// slots.
pub async fn accept_loop(
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: HttpLimits,
    trusted: TrustedProxies,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: tokio_util::task::TaskTracker,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_net = PerNet::new(limits.max_per_net);
    let refusals = Arc::new(Refusals::new(limits.refusals_per_s, limits.refusals_burst));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tcp.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let trusted_peer = trusted.trusts(peer.ip());
        if !trusted_peer && !refusals.allows(peer.ip(), std::time::Instant::now()) {
            tracing::debug!(%peer, "network refused too often; closing");
            continue;
        }
        let net_slot = if trusted_peer {
            None
        } else {
            match per_net.try_take(peer.ip()) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(%peer, "too many HTTP connections from one network; closing");
                    continue;
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many HTTP connections; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (stream, dup) = match sockio::duplicate(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "socket unusable; closing");
                continue;
            }
        };
        let (app, tls, shutdown) = (app.clone(), tls.clone(), shutdown.clone());
        let charge = (!trusted_peer).then(|| refusals.clone());
        tracker.spawn(async move {
            let _slots = (permit, net_slot);
            let upgraded = match tls {
                None => serve_connection(stream, peer, app, limits, charge, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_connection(s, peer, app, limits, charge, shutdown).await,
                        _ => {
                            tracing::debug!(%peer, "tls handshake failed");
                            false
                        }
                    }
                }
            };
            // An upgraded socket now belongs to its WebSocket: the duplicate
            // is closed without touching it.
            if let (false, Some(dup)) = (upgraded, dup) {
                sockio::linger(dup).await;
            }
        });
    }
}

/// Serves one connection; true if it was upgraded (the socket now belongs
/// to a WebSocket task). Each 401, 429 or 503 answer is charged to the
/// peer's network in `refusals` (`None` for a trusted proxy).
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: axum::Router,
    limits: HttpLimits,
    refusals: Option<Arc<Refusals>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> bool
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;
    let upgraded = Arc::new(AtomicBool::new(false));
    let up = upgraded.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let (app, up, refusals) = (app.clone(), up.clone(), refusals.clone());
        async move {
            // A blob upload streams its body for as long as it makes
            // progress; the blob store ends it when it falls below its
            // minimum rate instead.
            let r = if crate::blobs::exempt_from_request_timeout(req.method(), req.uri().path()) {
                app.oneshot(req).await
            } else {
                match tokio::time::timeout(limits.request_timeout, app.oneshot(req)).await {
                    Ok(r) => r,
                    Err(_) => Ok(crate::error::ApiError::new(
                        axum::http::StatusCode::REQUEST_TIMEOUT,
                        clipmesh_proto::ApiErrorCode::BadRequest,
                        "request took too long",
                    )
                    .into_response()),
                }
            };
            if let Ok(resp) = &r {
                use axum::http::StatusCode;
                match resp.status() {
                    StatusCode::SWITCHING_PROTOCOLS => up.store(true, Ordering::Relaxed),
                    StatusCode::UNAUTHORIZED
                    | StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::SERVICE_UNAVAILABLE => {
                        if let Some(r) = &refusals {
                            r.charge(peer.ip(), std::time::Instant::now());
                        }
                    }
                    _ => {}
                }
            }
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HTTP_BUFFER);
    let io = StallIo::new(io, limits.write_timeout, upgraded.clone());
    let conn = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(%peer, error = %e, "http connection ended");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
    upgraded.load(Ordering::Relaxed)
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
    fn forwarded_header_without_trusted_proxy_warns_once() {
        let none = TrustedProxies::parse::<&str>(&[]).unwrap();
        assert!(!none.warn_untrusted_forwarding(&HeaderMap::new()));
        assert!(none.warn_untrusted_forwarding(&hm(&["198.51.100.7"])));
        assert!(!none.warn_untrusted_forwarding(&hm(&["198.51.100.7"])));
        let some = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        assert!(!some.warn_untrusted_forwarding(&hm(&["198.51.100.7"])));
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
