//! The abuse scenarios of `clipmesh-load hostile`, each a set of tasks that
//! run until their phase's cancellation token fires, from the attacker
//! source addresses, counting what the relay answered.

use super::{login, signup, HostileArgs};
use crate::device::{inbound, join, publish_bytes, Inbound};
use crate::http::post_json;
use crate::target::{ServerKind, Target, Ws};
use anyhow::Context;
use clipmesh_proto::api::LoginRequest;
use clipmesh_proto::{BlobId, BlobLayout};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Plaintext size of each stalled upload's blob.
const STALLED_BLOB: u64 = 1 << 20;
/// Pause before an attack task tries again after a refusal or an error.
const RETRY: Duration = Duration::from_millis(500);
/// Signups in flight while making the attackers' accounts.
const SETUP_CONCURRENCY: usize = 4;

/// One abuse scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// `PATCH` bodies that send a byte every few seconds (below the minimum
    /// rate), `--stalled` of them, from many accounts.
    StalledUploads,
    /// Request headers sent a line per second (slowloris).
    SlowlorisHeaders,
    /// A JSON body sent a byte per second.
    SlowlorisBodies,
    /// Signups as fast as answered.
    SignupFlood,
    /// Logins with wrong keys against the legitimate user's name.
    LoginFlood,
    /// WebSocket upgrades: without a token, and with one but no `Hello`.
    WsFlood,
    /// Devices publishing at the relay's publish rate limit.
    FrameFlood,
}

impl Attack {
    /// Every scenario, in the order they run.
    pub const ALL: [Attack; 7] = [
        Attack::StalledUploads,
        Attack::SlowlorisHeaders,
        Attack::SlowlorisBodies,
        Attack::SignupFlood,
        Attack::LoginFlood,
        Attack::WsFlood,
        Attack::FrameFlood,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Attack::StalledUploads => "stalled-uploads",
            Attack::SlowlorisHeaders => "slowloris-headers",
            Attack::SlowlorisBodies => "slowloris-bodies",
            Attack::SignupFlood => "signup-flood",
            Attack::LoginFlood => "login-flood",
            Attack::WsFlood => "ws-flood",
            Attack::FrameFlood => "frame-flood",
        }
    }
}

impl std::fmt::Display for Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an attack's requests got.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answers by HTTP status (101 for a WebSocket that opened) to the
    /// requests an attack makes and does not hold (a stalled upload's
    /// `POST` create, floods).
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// The answers that ended a held request (a stalled upload's `PATCH`, a
    /// slowloris request), by status: the relay's own limits at work, e.g.
    /// 400 for a `PATCH` below the minimum upload rate, 408 for a body past
    /// the request timeout.
    ended: Mutex<BTreeMap<u16, u64>>,
    /// Connections the relay closed without an answer (or refused).
    closed: AtomicU64,
    /// Connections held open right now (stalled requests, pending sockets).
    held: AtomicU64,
    /// Most held at once.
    held_peak: AtomicU64,
    /// Frames published (frame flood).
    published: AtomicU64,
    /// Frames delivered to the attackers' own receiving devices.
    delivered: AtomicU64,
}

impl Counters {
    fn status(&self, s: u16) {
        if let Ok(mut m) = self.statuses.lock() {
            *m.entry(s).or_insert(0) += 1;
        }
    }

    fn ended(&self, s: u16) {
        if let Ok(mut m) = self.ended.lock() {
            *m.entry(s).or_insert(0) += 1;
        }
    }

    fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    fn hold(&self) -> Held<'_> {
        let n = self.held.fetch_add(1, Ordering::Relaxed) + 1;
        self.held_peak.fetch_max(n, Ordering::Relaxed);
        Held(self)
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        let list = |m: &Mutex<BTreeMap<u16, u64>>| {
            m.lock()
                .map(|m| {
                    m.iter()
                        .map(|(s, n)| format!("{s}:{n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        let (statuses, ended) = (list(&self.statuses), list(&self.ended));
        format!(
            "answers {{{statuses}}} held requests ended by {{{ended}}} closed={} held_peak={} published={} delivered={}",
            self.closed.load(Ordering::Relaxed),
            self.held_peak.load(Ordering::Relaxed),
            self.published.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
        )
    }
}

/// A connection counted as held until dropped.
struct Held<'a>(&'a Counters);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accounts and addresses the attacks use, made before measuring.
pub struct Setup {
    /// Where attacks come from (127.0.0.2 and up).
    target: Arc<Target>,
    /// Stalled-upload accounts: bearer tokens.
    upload_tokens: Vec<String>,
    /// Frame-flood accounts: (publisher token, receiver token).
    publishers: Vec<(String, String)>,
    /// Tokens that open WebSockets without `Hello`.
    ws_tokens: Vec<String>,
}

impl Setup {
    /// Signs up what `scenarios` need, from 127.0.1.x (so the attackers'
    /// own addresses keep their signup budget for the signup flood).
    pub async fn new(
        target: Arc<Target>,
        args: &HostileArgs,
        scenarios: &[Attack],
    ) -> anyhow::Result<Self> {
        let makers = Arc::new(Target::with_sources(
            ServerKind::Relay,
            &args.target,
            Ipv4Addr::new(127, 0, 1, 1),
            250,
        )?);
        let uploads = if scenarios.contains(&Attack::StalledUploads) {
            args.stalled.div_ceil(args.transfers_per_user.max(1))
        } else {
            0
        };
        let pubs = if scenarios.contains(&Attack::FrameFlood) {
            args.publishers
        } else {
            0
        };
        let ws = if scenarios.contains(&Attack::WsFlood) {
            8
        } else {
            0
        };
        let started = Instant::now();
        let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        let tag: u32 = rand::random();
        for i in 0..uploads + pubs + ws {
            let (makers, permits) = (makers.clone(), permits.clone());
            let second = i >= uploads && i < uploads + pubs;
            tasks.spawn(async move {
                let _p = permits.acquire_owned().await?;
                let name = format!("atk{tag:08x}u{i}");
                let (key, first) = signup(&makers, &name).await?;
                let other = if second {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    Some(login(&makers, &name, &key, "rx", deadline).await?.token)
                } else {
                    None
                };
                Ok::<_, anyhow::Error>((i, first.token, other))
            });
        }
        let mut made = Vec::new();
        while let Some(r) = tasks.join_next().await {
            made.push(r.context("setup task panicked")??);
        }
        made.sort_by_key(|m| m.0);
        let mut s = Self {
            target,
            upload_tokens: Vec::new(),
            publishers: Vec::new(),
            ws_tokens: Vec::new(),
        };
        for (i, token, other) in made {
            if i < uploads {
                s.upload_tokens.push(token);
            } else if let Some(rx) = other {
                s.publishers.push((token, rx));
            } else {
                s.ws_tokens.push(token);
            }
        }
        tracing::info!(
            accounts = uploads + pubs + ws,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "attacker accounts made"
        );
        Ok(s)
    }
}

/// Starts `attack`'s tasks on `tasks`; they end when `stop` fires.
pub fn launch(
    attack: Attack,
    setup: &Setup,
    args: &HostileArgs,
    victim: &str,
    tasks: &TaskTracker,
    stop: CancellationToken,
    c: Arc<Counters>,
) {
    let t = setup.target.clone();
    match attack {
        Attack::StalledUploads => {
            let per = args.transfers_per_user.max(1);
            for i in 0..args.stalled {
                let Some(token) = setup.upload_tokens.get(i / per).cloned() else {
                    break;
                };
                tasks.spawn(until(
                    stop.clone(),
                    stalled_upload(t.clone(), token, c.clone()),
                ));
            }
        }
        Attack::SlowlorisHeaders | Attack::SlowlorisBodies => {
            let body = attack == Attack::SlowlorisBodies;
            for _ in 0..args.slowloris {
                tasks.spawn(until(stop.clone(), slowloris(t.clone(), body, c.clone())));
            }
        }
        Attack::SignupFlood => {
            for _ in 0..args.flood_concurrency {
                tasks.spawn(until(stop.clone(), signup_flood(t.clone(), c.clone())));
            }
        }
        Attack::LoginFlood => {
            for _ in 0..args.flood_concurrency {
                let v = victim.to_owned();
                tasks.spawn(until(stop.clone(), login_flood(t.clone(), v, c.clone())));
            }
        }
        Attack::WsFlood => {
            for i in 0..args.flood_concurrency {
                let token = (i % 2 == 1)
                    .then(|| setup.ws_tokens.get(i % setup.ws_tokens.len().max(1)))
                    .flatten()
                    .cloned();
                tasks.spawn(until(stop.clone(), ws_flood(t.clone(), token, c.clone())));
            }
        }
        Attack::FrameFlood => {
            for (tx, rx) in setup.publishers.clone() {
                let rate = args.publish_per_s;
                let c2 = c.clone();
                tasks.spawn(until(stop.clone(), frame_flood(t.clone(), tx, rate, c2)));
                tasks.spawn(until(stop.clone(), drain_device(t.clone(), rx, c.clone())));
            }
        }
    }
}

/// Runs `f` until `stop` fires.
async fn until(stop: CancellationToken, f: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = f => {}
    }
}

/// The status code of an HTTP answer's first bytes, if they are one.
fn status_of(head: &[u8]) -> Option<u16> {
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// Writes `step` every `every` until the relay answers or closes.
async fn trickle(s: TcpStream, step: &[u8], every: Duration) -> Option<u16> {
    let (mut rd, mut wr) = s.into_split();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if wr.write_all(step).await.is_err() {
                    return None;
                }
            }
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return status_of(&got),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.len() >= 12 {
                        return status_of(&got);
                    }
                }
            }
        }
    }
}

/// How a held request ended: the relay's answer, or a close without one.
fn record(c: &Counters, status: Option<u16>) {
    match status {
        Some(s) => c.ended(s),
        None => c.closed(),
    }
}

/// One stalled upload slot: create a blob, send the `PATCH` headers and a
/// byte, then a byte every 5 s; again when the relay ends it.
async fn stalled_upload(t: Arc<Target>, token: String, c: Arc<Counters>) {
    let Some(layout) = BlobLayout::new(STALLED_BLOB).ok() else {
        return;
    };
    let len = layout.sealed_len();
    loop {
        let id = BlobId::generate().to_string();
        let path = format!("/api/v1/blobs/{id}");
        let created = crate::http::send(
            &t,
            "POST",
            &path,
            &[
                format!("Authorization: Bearer {token}"),
                format!("Upload-Length: {len}"),
            ],
            &[],
        )
        .await;
        match created {
            Ok(r) if r.status == 201 => {}
            Ok(r) => {
                c.status(r.status);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                c.closed();
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        let Ok(mut s) = t.tcp().await else {
            c.closed();
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Upload-Offset: 0\r\nContent-Length: {len}\r\n\r\n\0",
            t.addr
        );
        if s.write_all(head.as_bytes()).await.is_err() {
            c.closed();
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let status = {
            let _held = c.hold();
            trickle(s, b"\0", Duration::from_secs(5)).await
        };
        record(&c, status);
        tokio::time::sleep(RETRY).await;
    }
}

/// One slowloris connection at a time: headers (or a JSON body) a piece a
/// second; again when the relay ends it.
async fn slowloris(t: Arc<Target>, body: bool, c: Arc<Counters>) {
    loop {
        let Ok(mut s) = t.tcp().await else {
            c.closed();
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let head = if body {
            format!(
                "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: 60000\r\n\r\n{{",
                t.addr
            )
        } else {
            format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", t.addr)
        };
        if s.write_all(head.as_bytes()).await.is_err() {
            c.closed();
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let step: &[u8] = if body { b" " } else { b"X-a: b\r\n" };
        let status = {
            let _held = c.hold();
            trickle(s, step, Duration::from_secs(1)).await
        };
        record(&c, status);
        tokio::time::sleep(RETRY).await;
    }
}

/// Signups with fresh names, one after another.
async fn signup_flood(t: Arc<Target>, c: Arc<Counters>) {
    loop {
        let name = format!("flood{:016x}", rand::random::<u64>());
        let body = serde_json::json!({
            "username": name,
            "salt": hex::encode(rand::random::<[u8; 16]>()),
            "kdf": clipmesh_proto::KdfParams::default(),
            "auth_key": hex::encode(rand::random::<[u8; 32]>()),
            "wrapped_data_key": hex::encode(vec![7u8; clipmesh_proto::keys::WRAPPED_LEN]),
            "device_name": "flood",
        });
        match post_json(&t, "/api/v1/signup", body.to_string().as_bytes()).await {
            Ok(r) => c.status(r.status),
            Err(_) => {
                c.closed();
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Logins with wrong keys against `victim`, one after another.
async fn login_flood(t: Arc<Target>, victim: String, c: Arc<Counters>) {
    loop {
        let req = LoginRequest {
            username: victim.clone(),
            auth_key: hex::encode(rand::random::<[u8; 32]>()),
            device_name: "flood".into(),
        };
        let Ok(body) = serde_json::to_vec(&req) else {
            return;
        };
        match post_json(&t, "/api/v1/login", &body).await {
            Ok(r) => c.status(r.status),
            Err(_) => {
                c.closed();
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// WebSocket upgrades one after another: without a token (refused at
/// once), or with one and never a `Hello` (held until the relay's hello
/// timeout).
async fn ws_flood(t: Arc<Target>, token: Option<String>, c: Arc<Counters>) {
    loop {
        match t.connect(token.as_deref(), "").await {
            Ok(mut ws) => {
                c.status(101);
                let _held = c.hold();
                while let Some(Ok(_)) = ws.next().await {}
            }
            Err(e) => {
                let text = format!("{e:#}");
                match ["401", "429", "503"].iter().find(|s| text.contains(*s)) {
                    Some(s) => c.status(s.parse().unwrap_or(0)),
                    None => {
                        c.closed();
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    }
}

/// A device publishing 1 KiB clips at `rate` per second, reading its acks
/// and errors; rejoins if closed.
async fn frame_flood(t: Arc<Target>, token: String, rate: f64, c: Arc<Counters>) {
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    loop {
        let Ok((ws, _)) = join(&t, Some(&token), "").await else {
            c.closed();
            tokio::time::sleep(RETRY).await;
            continue;
        };
        c.status(101);
        let (mut tx, mut rx) = ws.split();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut id = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    id = id.wrapping_add(1);
                    let env = crate::device::probe(1024, 0, u64::from(id), 0, 0);
                    if tx.send(Message::Binary(publish_bytes(id, env).into())).await.is_err() {
                        break;
                    }
                    c.published.fetch_add(1, Ordering::Relaxed);
                }
                m = rx.next() => match m {
                    Some(Ok(Message::Binary(b))) => {
                        if let Inbound::Error(_) = inbound(&b) {
                            c.status(429);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        }
        c.closed();
        tokio::time::sleep(RETRY).await;
    }
}

/// The frame flood's receiving device: reads and counts; rejoins if closed.
async fn drain_device(t: Arc<Target>, token: String, c: Arc<Counters>) {
    loop {
        let Ok((mut ws, _)) = join(&t, Some(&token), "").await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        drain_ws(&mut ws, &c).await;
        tokio::time::sleep(RETRY).await;
    }
}

async fn drain_ws(ws: &mut Ws, c: &Counters) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            if let Inbound::Clip(_) = inbound(&b) {
                c.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.1 2"), None);
        assert_eq!(status_of(b""), None);
    }

    #[test]
    fn every_scenario_has_a_distinct_name() {
        let mut names: Vec<_> = Attack::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Attack::ALL.len());
    }
}
