//! `idle`: hold many authenticated, idle device connections and measure the
//! server's resident memory per connection.

use crate::device::join;
use crate::measure::{rss_kib, self_rss_kib};
use crate::sessions::Sessions;
use crate::target::{ServerKind, Target, Ws};
use crate::TargetArgs;
use anyhow::{bail, Context};
use clipmesh_proto::Frame;
use futures_util::{SinkExt, StreamExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of an idle run.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Devices per user (must not exceed the relay's per-user device limit).
    #[arg(long, default_value_t = 3)]
    devices: usize,
    /// Seconds to hold the connections after the last one joined.
    #[arg(long, default_value_t = 10)]
    hold_s: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Token cache for the relay (created on first use, reused after; it
    /// belongs to one relay data directory). Default:
    /// `clipmesh-load-sessions.json` in the temp directory.
    #[arg(long, default_value_os_t = crate::sessions::default_path())]
    sessions: PathBuf,
    /// Concurrent signup/login requests while creating sessions.
    #[arg(long, default_value_t = 16)]
    http_concurrency: usize,
    /// Give up on the connect phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    connect_timeout_s: u64,
}

/// Runs the idle benchmark and prints its figures.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let target = Arc::new(args.target.target()?);
    let devices = args.devices.max(1);
    let users = args.conns.div_ceil(devices);
    let cache = match target.kind {
        ServerKind::Relay => Some(args.sessions.clone()),
        ServerKind::Clipcascade => Some(crate::sessions::clipcascade_path(&args.sessions)),
        ServerKind::Baseline => None,
    };
    let sessions = match cache {
        Some(path) => {
            Some(Sessions::ensure(&target, &path, users, devices, args.http_concurrency).await?)
        }
        None => None,
    };
    let pid = args.target.server_pid;
    let before = pid.map(rss_kib).transpose()?;
    let tool_before = self_rss_kib()?;
    tracing::info!(conns = args.conns, ?before, "connecting");

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let alive = Arc::new(AtomicUsize::new(0));
    let (joined_tx, mut joined_rx) = mpsc::channel::<Result<(), String>>(1024);
    let started = Instant::now();
    for i in 0..args.conns {
        let (u, d) = (i / devices, i % devices);
        let token = sessions
            .as_ref()
            .and_then(|s| s.users.get(u))
            .and_then(|t| t.get(d))
            .cloned();
        if target.kind.is_relay() && token.is_none() {
            bail!("no session for user {u} device {d}");
        }
        let task = Device {
            target: Arc::clone(&target),
            token,
            group: format!("u{u}"),
            permits: Arc::clone(&permits),
            alive: Arc::clone(&alive),
            joined: joined_tx.clone(),
            cancel: cancel.clone(),
        };
        tracker.spawn(task.run());
    }
    drop(joined_tx);
    tracker.close();

    let mut ok = 0usize;
    let mut failed = 0usize;
    let mut first_error = None;
    let deadline = tokio::time::sleep(Duration::from_secs(args.connect_timeout_s));
    tokio::pin!(deadline);
    while ok + failed < args.conns {
        tokio::select! {
            r = joined_rx.recv() => match r {
                Some(Ok(())) => ok += 1,
                Some(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                None => break,
            },
            _ = &mut deadline => {
                tracing::warn!(ok, failed, "connect phase timed out");
                break;
            }
        }
        if (ok + failed) % 10_000 == 0 {
            tracing::info!(
                ok,
                failed,
                elapsed_s = started.elapsed().as_secs(),
                "joined"
            );
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    // Let the server finish the work the last joins triggered (presence
    // fan-out, allocator settling), then sample over the hold.
    let mut samples = Vec::new();
    let hold_end = Instant::now() + Duration::from_secs(args.hold_s.max(1));
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(pid) = pid {
            samples.push(rss_kib(pid)?);
        }
    }
    let still_alive = alive.load(Ordering::Relaxed);
    let after = samples.last().copied();
    // Whether the relay's rooms were still in memory or already evicted
    // (`room.evict_idle_s`) when `after` was read.
    let rooms_active = if target.kind.is_relay() {
        rooms_active(&target).await
    } else {
        None
    };
    let tool_after = self_rss_kib()?;
    cancel.cancel();
    tracker.wait().await;

    println!(
        "idle: server={:?} conns={} devices/user={devices}",
        target.kind, args.conns
    );
    println!(
        "  joined ok={ok} failed={failed} in {connect_s:.1}s; still open after {}s hold: {still_alive}",
        args.hold_s
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    if let (Some(b), Some(a)) = (before, after) {
        let per = (a.saturating_sub(b)) as f64 / ok.max(1) as f64;
        println!(
            "  server RSS before={:.1} MiB after={:.1} MiB; delta per connection {per:.2} KiB",
            b as f64 / 1024.0,
            a as f64 / 1024.0
        );
        println!(
            "RESULT {{\"mode\":\"idle\",\"server\":\"{:?}\",\"conns\":{},\"ok\":{ok},\"failed\":{failed},\"alive\":{still_alive},\"rss_before_kib\":{b},\"rss_after_kib\":{a},\"kib_per_conn\":{per:.3},\"rooms_active\":{},\"connect_s\":{connect_s:.1},\"tool_rss_kib\":{tool_after}}}",
            target.kind,
            args.conns,
            rooms_active.map_or("null".to_owned(), |n| n.to_string())
        );
    }
    if let Some(n) = rooms_active {
        println!("  relay rooms in memory at the end of the hold: {n}");
    }
    println!(
        "  load tool RSS before={:.1} MiB after={:.1} MiB",
        tool_before as f64 / 1024.0,
        tool_after as f64 / 1024.0
    );
    if failed > 0 || still_alive < ok {
        bail!(
            "{failed} connections failed, {} dropped during the hold",
            ok - still_alive
        );
    }
    Ok(())
}

/// The relay's `clipmesh_relay_rooms_active` gauge, or `None` if it cannot
/// be read (logged; the memory figures do not depend on it).
async fn rooms_active(target: &Target) -> Option<i64> {
    let r = match crate::http::get(target, "/metrics").await {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            tracing::warn!(status = r.status, "GET /metrics failed");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "GET /metrics failed");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&r.body);
    text.lines()
        .find_map(|l| l.strip_prefix("clipmesh_relay_rooms_active "))
        .and_then(|v| v.trim().parse().ok())
}

/// One idle device.
struct Device {
    /// Where to connect.
    target: Arc<Target>,
    /// Bearer token (relay only).
    token: Option<String>,
    /// Baseline group name.
    group: String,
    /// Bounds handshakes in flight.
    permits: Arc<Semaphore>,
    /// Devices joined and not yet closed.
    alive: Arc<AtomicUsize>,
    /// Reports the join result once.
    joined: mpsc::Sender<Result<(), String>>,
    /// Ends the hold.
    cancel: CancellationToken,
}

impl Device {
    async fn run(self) {
        let joined = {
            let Ok(_permit) = self.permits.acquire().await else {
                return;
            };
            tokio::select! {
                r = join(&self.target, self.token.as_deref(), &self.group) => r,
                _ = self.cancel.cancelled() => return,
            }
        };
        let (ws, info) = match joined {
            Ok(j) => j,
            Err(e) => {
                let _ = self.joined.send(Err(format!("{e:#}"))).await;
                return;
            }
        };
        self.alive.fetch_add(1, Ordering::Relaxed);
        let _ = self.joined.send(Ok(())).await;
        let result = hold(ws, info.ping_interval_s, &self.cancel).await;
        self.alive.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::debug!(error = %e, "idle connection ended");
        }
    }
}

/// Reads (and drops) whatever arrives and pings like a real client until
/// cancelled.
async fn hold(mut ws: Ws, ping_interval_s: u16, cancel: &CancellationToken) -> anyhow::Result<()> {
    let period = Duration::from_secs(u64::from(ping_interval_s.max(1)));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(frame))) => bail!("closed by server: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("read"),
                None => bail!("closed by server"),
            },
            _ = ping.tick(), if ping_interval_s > 0 => {
                nonce += 1;
                ws.send(Message::Binary(Frame::Ping { nonce }.encode().into()))
                    .await
                    .context("ping")?;
            }
            _ = cancel.cancelled() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        }
    }
}
