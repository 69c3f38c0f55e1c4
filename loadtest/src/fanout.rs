//! `fanout` and `max`: publishers send probe clips, receivers time their
//! arrival.
//!
//! Each user has `devices` devices: device 0 publishes, the others receive,
//! so every publish is `devices - 1` deliveries. `fanout` publishes at a
//! fixed aggregate rate (open loop) and reports the hop latency; `max` keeps
//! a bounded window of undelivered frames per user (closed loop, the same
//! for the relay and the baseline) and reports delivered frames per second.
//! Only frames sent inside the measurement window (after a warm-up) count.

use crate::device::{
    inbound, join, probe, probe_sent_ns, publish_bytes, Inbound, Joined, MIN_PROBE,
};
use crate::measure::{cpu_s, latency_histogram, median, now_ns, us};
use crate::sessions::Sessions;
use crate::target::{ServerKind, Target, Ws};
use crate::TargetArgs;
use anyhow::{bail, Context};
use clipmesh_proto::Frame;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// A `max` publisher whose window stays full this long counts one stall
/// (one per wait, however long it lasts). Nothing is assumed lost: the
/// window is never widened, so the loop stays the same for every server.
const STALL: Duration = Duration::from_secs(1);
/// Longest the receivers get after the last publish to drain.
const DRAIN: Duration = Duration::from_secs(3);

/// Open loop at a fixed rate, or closed loop for the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fixed aggregate publish rate; report latency.
    Rate,
    /// Bounded window per user; report the maximum delivered rate.
    Max,
}

/// Settings of a fan-out run.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Users (one publisher each).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Devices per user: 1 publisher + (devices - 1) receivers.
    #[arg(long, default_value_t = 3)]
    devices: usize,
    /// Aggregate publish rate, frames/s (`fanout` only).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Envelope size, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Measurement window, seconds (accepts a trailing `s`).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    duration: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    warmup: f64,
    /// Measurement runs on the same connections; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Undelivered publishes allowed per user (`max` only).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Token cache for the relay (created on first use, reused after; it
    /// belongs to one relay data directory). Default:
    /// `clipmesh-load-sessions.json` in the temp directory.
    #[arg(long, default_value_os_t = crate::sessions::default_path())]
    sessions: PathBuf,
    /// Concurrent signup/login requests while creating sessions.
    #[arg(long, default_value_t = 16)]
    http_concurrency: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("{s}: {e}"))?;
    if !(0.0..=3600.0).contains(&v) {
        return Err(format!("{s}: between 0 and 3600 seconds"));
    }
    Ok(v)
}

/// Counters shared by the tasks of one run.
struct Counters {
    /// Publishes sent inside the window.
    published: AtomicU64,
    /// Publishes sent in total this run.
    published_total: AtomicU64,
    /// Probe deliveries of window frames.
    delivered: AtomicU64,
    /// Probe deliveries of this run in total.
    delivered_total: AtomicU64,
    /// Acks received.
    acks: AtomicU64,
    /// Error frames received.
    errors: AtomicU64,
    /// `max` waits for a full window that lasted [`STALL`] or longer.
    stalls: AtomicU64,
    /// Longest `max` wait for a full window, µs.
    longest_wait_us: AtomicU64,
    /// Window deliveries per user, for the spread of service between users.
    per_user: Vec<AtomicU64>,
}

impl Counters {
    fn new(users: usize) -> Self {
        Self {
            published: AtomicU64::new(0),
            published_total: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            delivered_total: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            longest_wait_us: AtomicU64::new(0),
            per_user: (0..users).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// How evenly the users were served: per-user window deliveries.
#[derive(Clone, Copy)]
struct Spread {
    /// Jain's fairness index, 1 = every user got the same.
    jain: f64,
    /// Fewest deliveries of one user, and the 1st percentile, as fractions
    /// of the median user's.
    min_rel: f64,
    p1_rel: f64,
    /// Most deliveries of one user, as a fraction of the median user's.
    max_rel: f64,
}

fn spread(per_user: &[AtomicU64]) -> Spread {
    let mut v: Vec<f64> = per_user
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64)
        .collect();
    v.sort_by(f64::total_cmp);
    let sum: f64 = v.iter().sum();
    let sq: f64 = v.iter().map(|x| x * x).sum();
    let med = median(&v);
    let rel = |x: Option<&f64>| match (x, med > 0.0) {
        (Some(x), true) => x / med,
        _ => f64::NAN,
    };
    let p1 = v.len().saturating_sub(1) / 100;
    Spread {
        jain: if sq > 0.0 {
            sum * sum / (v.len() as f64 * sq)
        } else {
            f64::NAN
        },
        min_rel: rel(v.first()),
        p1_rel: rel(v.get(p1)),
        max_rel: rel(v.last()),
    }
}

/// One run's timing.
#[derive(Clone, Copy)]
struct Plan {
    mode: Mode,
    run: u32,
    /// When publishing starts.
    start: Instant,
    /// Window bounds on the [`now_ns`] clock.
    window_start_ns: u64,
    window_end_ns: u64,
    /// When the measurement window opens.
    window_start: Instant,
    /// When publishing stops.
    end: Instant,
    size: usize,
    devices: usize,
    window: usize,
}

/// One run's figures.
struct RunResult {
    delivered_per_s: f64,
    published_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    lost: u64,
    /// `Ack`s the publishers received, and the run's publishes (warm-up
    /// included): the baseline server sends none.
    acks: u64,
    published_total: u64,
    errors: u64,
    stalls: u64,
    /// Longest wait of one `max` publisher for its window, ms.
    longest_wait_ms: f64,
    spread: Spread,
    /// Server CPU use over the window, in cores (NaN without a pid).
    server_cpu: f64,
    /// Load tool CPU use over the window, in cores.
    tool_cpu: f64,
}

/// Runs `fanout` or `max` and prints per-run figures and their medians.
pub async fn run(args: FanoutArgs, mode: Mode) -> anyhow::Result<()> {
    anyhow::ensure!(args.devices >= 2, "--devices must be at least 2");
    anyhow::ensure!(
        args.size >= MIN_PROBE,
        "--size must be at least {MIN_PROBE}"
    );
    anyhow::ensure!(
        args.users >= 1 && args.runs >= 1,
        "--users and --runs must be ≥ 1"
    );
    let target = Arc::new(args.target.target()?);
    let sessions = match target.kind {
        ServerKind::Clipcascade => {
            anyhow::bail!("fanout and max measure the native protocol: use --server relay")
        }
        ServerKind::Relay => Some(
            Sessions::ensure(
                &target,
                &args.sessions,
                args.users,
                args.devices,
                args.http_concurrency,
            )
            .await?,
        ),
        ServerKind::Baseline => None,
    };
    let mut groups = connect_all(
        &target,
        sessions.as_ref(),
        args.users,
        args.devices,
        args.connect_concurrency,
    )
    .await?;
    let ping_s = groups
        .first()
        .and_then(|g| g.first())
        .map(|(_, j)| j.ping_interval_s)
        .unwrap_or(0);
    println!(
        "{}: server={:?} users={} devices={} size={} rate={} window={} duration={}s warmup={}s",
        if mode == Mode::Rate { "fanout" } else { "max" },
        target.kind,
        args.users,
        args.devices,
        args.size,
        args.rate,
        args.window,
        args.duration,
        args.warmup
    );
    let mut results = Vec::new();
    for r in 0..args.runs {
        let now = Instant::now() + Duration::from_millis(200);
        let base_ns = now_ns() + 200_000_000;
        let warm = Duration::from_secs_f64(args.warmup);
        let dur = Duration::from_secs_f64(args.duration);
        let plan = Plan {
            mode,
            run: rand::random(),
            start: now,
            window_start_ns: base_ns + warm.as_nanos() as u64,
            window_end_ns: base_ns + (warm + dur).as_nanos() as u64,
            window_start: now + warm,
            end: now + warm + dur,
            size: args.size,
            devices: args.devices,
            window: args.window.max(1),
        };
        let (back, res) = run_once(
            groups,
            plan,
            args.rate,
            args.duration,
            ping_s,
            args.target.server_pid,
        )
        .await?;
        groups = back;
        println!(
            "  run {}: published {:.0}/s delivered {:.0}/s  p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs  lost {} acked {}/{} errors {} stalls {} (longest wait {:.0} ms)  per-user spread: jain {:.3} min {:.2} p1 {:.2} max {:.2} of median  cpu server {:.2} tool {:.2}",
            r + 1,
            res.published_per_s,
            res.delivered_per_s,
            res.p50_us,
            res.p99_us,
            res.p999_us,
            res.max_us,
            res.lost,
            res.acks,
            res.published_total,
            res.errors,
            res.stalls,
            res.longest_wait_ms,
            res.spread.jain,
            res.spread.min_rel,
            res.spread.p1_rel,
            res.spread.max_rel,
            res.server_cpu,
            res.tool_cpu
        );
        results.push(res);
    }
    let m = |f: fn(&RunResult) -> f64| median(&results.iter().map(f).collect::<Vec<_>>());
    println!(
        "  median of {}: published {:.0}/s delivered {:.0}/s p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs",
        results.len(),
        m(|r| r.published_per_s),
        m(|r| r.delivered_per_s),
        m(|r| r.p50_us),
        m(|r| r.p99_us),
        m(|r| r.p999_us)
    );
    println!(
        "RESULT {{\"mode\":\"{}\",\"server\":\"{:?}\",\"users\":{},\"devices\":{},\"size\":{},\"rate\":{},\"runs\":{},\"published_per_s\":{:.0},\"delivered_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"lost\":{},\"errors\":{},\"server_cpu\":{:.2},\"tool_cpu\":{:.2},\"stalls\":{},\"jain\":{:.3}}}",
        if mode == Mode::Rate { "fanout" } else { "max" },
        target.kind,
        args.users,
        args.devices,
        args.size,
        args.rate,
        results.len(),
        m(|r| r.published_per_s),
        m(|r| r.delivered_per_s),
        m(|r| r.p50_us),
        m(|r| r.p99_us),
        m(|r| r.p999_us),
        results.iter().map(|r| r.lost).sum::<u64>(),
        results.iter().map(|r| r.errors).sum::<u64>(),
        m(|r| r.server_cpu),
        m(|r| r.tool_cpu),
        results.iter().map(|r| r.stalls).sum::<u64>(),
        m(|r| r.spread.jain)
    );
    for group in groups {
        for (mut ws, _) in group {
            let _ = ws.close(None).await;
        }
    }
    Ok(())
}

type Group = Vec<(Ws, Joined)>;

async fn connect_all(
    target: &Arc<Target>,
    sessions: Option<&Sessions>,
    users: usize,
    devices: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Group>> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for u in 0..users {
        for d in 0..devices {
            let token = match sessions {
                Some(s) => Some(
                    s.users
                        .get(u)
                        .and_then(|t| t.get(d))
                        .cloned()
                        .with_context(|| format!("no session for user {u} device {d}"))?,
                ),
                None => None,
            };
            let target = Arc::clone(target);
            let permits = Arc::clone(&permits);
            set.spawn(async move {
                let _p = permits.acquire().await.context("semaphore closed")?;
                let (ws, j) = join(&target, token.as_deref(), &format!("u{u}")).await?;
                Ok::<_, anyhow::Error>((u, d, ws, j))
            });
        }
    }
    let mut slots: Vec<Vec<Option<(Ws, Joined)>>> = (0..users)
        .map(|_| (0..devices).map(|_| None).collect())
        .collect();
    while let Some(joined) = set.join_next().await {
        let (u, d, ws, j) = joined.context("connect task panicked")??;
        if let Some(slot) = slots.get_mut(u).and_then(|g| g.get_mut(d)) {
            *slot = Some((ws, j));
        }
    }
    slots
        .into_iter()
        .map(|g| {
            g.into_iter()
                .collect::<Option<Vec<_>>>()
                .context("missing device")
        })
        .collect()
}

async fn run_once(
    groups: Vec<Group>,
    plan: Plan,
    rate: u64,
    duration_s: f64,
    ping_s: u16,
    server_pid: Option<u32>,
) -> anyhow::Result<(Vec<Group>, RunResult)> {
    let users = groups.len();
    let counters = Arc::new(Counters::new(users));
    let hist = Arc::new(Mutex::new(latency_histogram()?));
    let stop = CancellationToken::new();
    let mut publishers = JoinSet::new();
    let mut receivers = JoinSet::new();
    let period = Duration::from_secs_f64(users as f64 / rate.max(1) as f64);
    for (u, group) in groups.into_iter().enumerate() {
        let window = Arc::new(Semaphore::new(plan.window * (plan.devices - 1)));
        for (d, (ws, joined)) in group.into_iter().enumerate() {
            let ctx = DeviceCtx {
                u,
                d,
                plan,
                counters: Arc::clone(&counters),
                hist: Arc::clone(&hist),
                window: Arc::clone(&window),
                stop: stop.clone(),
                ping_s,
            };
            if d == 0 {
                let offset = period.mul_f64(u as f64 / users as f64);
                publishers.spawn(async move {
                    let mut joined = joined;
                    let ws = ctx.publish(ws, offset, period, &mut joined.last_sent).await;
                    (u, d, ws, joined)
                });
            } else {
                receivers.spawn(async move {
                    let mut joined = joined;
                    let ws = ctx.receive(ws, &mut joined.last_sent).await;
                    (u, d, ws, joined)
                });
            }
        }
    }
    let mut slots: Vec<Vec<Option<(Ws, Joined)>>> = (0..users)
        .map(|_| (0..plan.devices).map(|_| None).collect())
        .collect();
    let mut put = |u: usize, d: usize, ws: anyhow::Result<Ws>, j: Joined| -> anyhow::Result<()> {
        let ws = ws.with_context(|| format!("user {u} device {d}"))?;
        if let Some(slot) = slots.get_mut(u).and_then(|g| g.get_mut(d)) {
            *slot = Some((ws, j));
        }
        Ok(())
    };
    // CPU use of both processes over the measurement window.
    tokio::time::sleep_until(plan.window_start).await;
    let cpu0 = (
        server_pid.map(|p| cpu_s(Some(p))).transpose()?,
        cpu_s(None)?,
    );
    tokio::time::sleep_until(plan.end).await;
    let cpu1 = (
        server_pid.map(|p| cpu_s(Some(p))).transpose()?,
        cpu_s(None)?,
    );
    let server_cpu = match (cpu0.0, cpu1.0) {
        (Some(a), Some(b)) => (b - a) / duration_s,
        _ => f64::NAN,
    };
    let tool_cpu = (cpu1.1 - cpu0.1) / duration_s;
    while let Some(done) = publishers.join_next().await {
        let (u, d, ws, j) = done.context("publisher panicked")?;
        put(u, d, ws, j)?;
    }
    // Drain: wait until every publish of this run arrived everywhere, or
    // DRAIN passed.
    let drain_end = Instant::now() + DRAIN;
    let expected = counters.published_total.load(Ordering::Relaxed) * (plan.devices as u64 - 1);
    while Instant::now() < drain_end && counters.delivered_total.load(Ordering::Relaxed) < expected
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    while let Some(done) = receivers.join_next().await {
        let (u, d, ws, j) = done.context("receiver panicked")?;
        put(u, d, ws, j)?;
    }
    let groups = slots
        .into_iter()
        .map(|g| {
            g.into_iter()
                .collect::<Option<Vec<_>>>()
                .context("device lost")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let hist = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    let published = counters.published.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let expected_window = published * (plan.devices as u64 - 1);
    let res = RunResult {
        delivered_per_s: delivered as f64 / duration_s,
        published_per_s: published as f64 / duration_s,
        p50_us: us(hist.value_at_quantile(0.50)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
        lost: expected_window.saturating_sub(delivered),
        acks: counters.acks.load(Ordering::Relaxed),
        published_total: counters.published_total.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        stalls: counters.stalls.load(Ordering::Relaxed),
        longest_wait_ms: counters.longest_wait_us.load(Ordering::Relaxed) as f64 / 1000.0,
        spread: spread(&counters.per_user),
        server_cpu,
        tool_cpu,
    };
    Ok((groups, res))
}

/// What one device task needs.
struct DeviceCtx {
    u: usize,
    d: usize,
    plan: Plan,
    counters: Arc<Counters>,
    hist: Arc<Mutex<Histogram<u64>>>,
    /// This user's window of undelivered frames (`max`), in deliveries.
    window: Arc<Semaphore>,
    stop: CancellationToken,
    ping_s: u16,
}

impl DeviceCtx {
    /// Pings at half the relay's interval, counted from the device's last
    /// ping, so runs back to back never leave a receiver silent for the
    /// relay's idle timeout.
    fn ping_timer(&self, last_sent: Instant) -> tokio::time::Interval {
        let p = Duration::from_secs(u64::from(self.ping_s.max(2)) / 2);
        tokio::time::interval_at(last_sent + p, p)
    }

    async fn publish(
        &self,
        mut ws: Ws,
        offset: Duration,
        period: Duration,
        last_sent: &mut Instant,
    ) -> anyhow::Result<Ws> {
        let plan = self.plan;
        let fan = plan.devices as u32 - 1;
        let mut tick = tokio::time::interval_at(plan.start + offset, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut ping = self.ping_timer(*last_sent);
        let mut seq = 0u64;
        let end = tokio::time::sleep_until(plan.end);
        tokio::pin!(end);
        let start = tokio::time::sleep_until(plan.start);
        tokio::pin!(start);
        let mut started = false;
        // `max`: when the window was found full, and whether this wait was
        // already counted as a stall. Acks and pings do not restart it.
        let mut full_since: Option<Instant> = None;
        let mut stall_counted = false;
        loop {
            let waiting = plan.mode == Mode::Max && started;
            if waiting && full_since.is_none() && self.window.available_permits() < fan as usize {
                full_since = Some(Instant::now());
            }
            let stall_at = full_since.map_or(plan.end, |t| t + STALL);
            let go = tokio::select! {
                _ = tick.tick(), if plan.mode == Mode::Rate => true,
                permit = self.window.acquire_many(fan), if waiting => {
                    permit.context("window closed")?.forget();
                    if let Some(t) = full_since.take() {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        self.counters.longest_wait_us.fetch_max(us, Ordering::Relaxed);
                    }
                    stall_counted = false;
                    true
                }
                _ = &mut start, if !started => { started = true; false }
                _ = tokio::time::sleep_until(stall_at), if waiting && full_since.is_some() && !stall_counted => {
                    self.counters.stalls.fetch_add(1, Ordering::Relaxed);
                    stall_counted = true;
                    false
                }
                msg = ws.next() => { self.count_inbound(msg)?; false }
                _ = ping.tick(), if self.ping_s > 0 => {
                    ws.send(Message::Binary(Frame::Ping { nonce: seq }.encode().into())).await.context("ping")?;
                    *last_sent = Instant::now();
                    false
                }
                _ = &mut end => break,
            };
            if !go {
                continue;
            }
            seq += 1;
            let sent = now_ns();
            let env = probe(plan.size, self.u as u64, seq, sent, plan.run);
            let id = u32::try_from(seq).unwrap_or(u32::MAX);
            ws.send(Message::Binary(publish_bytes(id, env).into()))
                .await
                .context("publish")?;
            self.counters
                .published_total
                .fetch_add(1, Ordering::Relaxed);
            if (plan.window_start_ns..plan.window_end_ns).contains(&sent) {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Keep reading Acks until the receivers are done, so the server
        // never sees this socket as a slow reader.
        loop {
            tokio::select! {
                msg = ws.next() => self.count_inbound(msg)?,
                _ = tokio::time::sleep(DRAIN) => break,
            }
        }
        Ok(ws)
    }

    fn count_inbound(
        &self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> anyhow::Result<()> {
        match msg {
            Some(Ok(Message::Binary(b))) => match inbound(&b) {
                Inbound::Ack => {
                    self.counters.acks.fetch_add(1, Ordering::Relaxed);
                }
                Inbound::Error(e) => {
                    if self.counters.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(user = self.u, device = self.d, error = %e, "server error frame");
                    }
                }
                Inbound::Clip(_) | Inbound::Other => {}
            },
            Some(Ok(Message::Close(f))) => bail!("closed by server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("read"),
            None => bail!("closed by server"),
        }
        Ok(())
    }

    async fn receive(&self, mut ws: Ws, last_sent: &mut Instant) -> anyhow::Result<Ws> {
        let plan = self.plan;
        let mut ping = self.ping_timer(*last_sent);
        loop {
            tokio::select! {
                msg = ws.next() => {
                    let Some(Ok(Message::Binary(b))) = msg else {
                        self.count_inbound(msg)?;
                        continue;
                    };
                    let now = now_ns();
                    let env = match inbound(&b) {
                        Inbound::Clip(env) => env,
                        other => {
                            if let Inbound::Error(e) = other {
                                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(user = self.u, device = self.d, error = %e, "server error frame");
                            }
                            continue;
                        }
                    };
                    let Some(sent) = probe_sent_ns(&env, plan.run) else { continue };
                    self.counters.delivered_total.fetch_add(1, Ordering::Relaxed);
                    if plan.mode == Mode::Max {
                        self.window.add_permits(1);
                    }
                    if (plan.window_start_ns..plan.window_end_ns).contains(&sent) {
                        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                        if let Some(c) = self.counters.per_user.get(self.u) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        let lat = now.saturating_sub(sent).max(1_000);
                        if let Ok(mut h) = self.hist.lock() {
                            let _ = h.record(lat);
                        }
                    }
                }
                _ = ping.tick(), if self.ping_s > 0 => {
                    ws.send(Message::Binary(Frame::Ping { nonce: 0 }.encode().into())).await.context("ping")?;
                    *last_sent = Instant::now();
                }
                _ = self.stop.cancelled() => break,
            }
        }
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[u64]) -> Vec<AtomicU64> {
        v.iter().map(|&n| AtomicU64::new(n)).collect()
    }

    #[test]
    fn spread_of_even_and_uneven_service() {
        let even = spread(&counts(&[10, 10, 10, 10]));
        assert!((even.jain - 1.0).abs() < 1e-9);
        assert!((even.min_rel - 1.0).abs() < 1e-9 && (even.max_rel - 1.0).abs() < 1e-9);
        // One user of four served, the others starved: Jain = 1/4.
        let one = spread(&counts(&[0, 0, 0, 40]));
        assert!((one.jain - 0.25).abs() < 1e-9);
        // Median of 0,10,10,20 is 10: min 0, max 2 of the median.
        let s = spread(&counts(&[20, 0, 10, 10]));
        assert_eq!((s.min_rel, s.p1_rel, s.max_rel), (0.0, 0.0, 2.0));
        assert!(spread(&counts(&[0, 0])).jain.is_nan());
    }
}
