//! `clipmesh-load hostile`: a legitimate client keeps logging in, joining
//! and syncing while one abuse scenario at a time runs against the same
//! relay; reports that client's success rate and login latency next to the
//! quiet phases measured just before and after, in the same run (issue 15's load-and-abuse
//! suite; the attacks are in `hostile/attacks.rs`).
//!
//! Quiet phases of the same length bracket every scenario, and its login
//! latency is compared with the mean of the two quiet medians around it
//! (a shared machine's background load drifts over a run).
//!
//! One legitimate *cycle*: log in a new device (`POST /api/v1/login`, timed:
//! the login latency), open its WebSocket (`Hello` → `Welcome`), publish a
//! clip, wait for its `Ack` and for the user's long-lived second device to
//! receive it, then revoke the new device. A cycle succeeds if every step
//! does within [`CYCLE_DEADLINE`]; a `503`/`429` answer is retried after its
//! `Retry-After`, as the client does, and the wait counts in the latency.
//!
//! The legitimate client connects from 127.0.0.1; attackers from 127.0.0.2
//! and up (`--attacker-ips`), so per-network limits tell them apart as they
//! would on the internet. Each scenario is reported against two targets:
//! ≥ 99 % success and a median login latency within 3× the quiet one.
//! With `--check` the run fails when a scenario misses the success target
//! (or no login completed). The latency target is a benchmark figure
//! (docs/benchmarks.md, "Hostile load") and is only reported: a timed
//! threshold would fail CI on a busy shared machine without a defect.
//!
//! **Invariant:** loopback only, every phase bounded in time; attack tasks
//! are owned by a tracker and cancelled at the end of their phase.

mod attacks;

use crate::device::{inbound, join, Inbound};
use crate::http::{post_json, send};
use crate::target::{ServerKind, Target, Ws};
use anyhow::{bail, Context};
use attacks::{Attack, Counters};
use clipmesh_proto::api::{LoginRequest, LoginResponse, SignupRequest};
use clipmesh_proto::keys::{KEY_LEN, SALT_LEN, WRAPPED_LEN};
use clipmesh_proto::{Frame, KdfParams};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest one legitimate cycle may take and still count as a success.
pub const CYCLE_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between legitimate cycles.
const CYCLE_GAP: Duration = Duration::from_millis(150);
/// Success rate every scenario must keep (`--check` fails below it).
pub const MIN_SUCCESS: f64 = 0.99;
/// Target for the median login latency, as a multiple of the quiet one
/// (reported, not checked).
pub const MAX_LATENCY_RATIO: f64 = 3.0;
/// Longest `Retry-After` the legitimate client honours within a cycle.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3);

/// Command line of `hostile`.
#[derive(Debug, clap::Args)]
pub struct HostileArgs {
    /// Relay URL, e.g. `http://127.0.0.1:8787` (loopback only). The relay
    /// must run with `signup = "open"`.
    #[arg(long)]
    target: String,
    /// Scenarios to run, comma-separated (default: all, in this order):
    /// stalled-uploads, slowloris-headers, slowloris-bodies, signup-flood,
    /// login-flood, ws-flood, frame-flood.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<Attack>,
    /// Seconds of legitimate cycles in the quiet phase and in each scenario.
    #[arg(long, default_value_t = 20)]
    measure_s: u64,
    /// Seconds an attack runs before measuring starts.
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Stalled `PATCH` connections the stalled-uploads attack keeps open.
    #[arg(long, default_value_t = 4096)]
    stalled: usize,
    /// Slow connections of each slowloris attack.
    #[arg(long, default_value_t = 1024)]
    slowloris: usize,
    /// Requests in flight in the signup, login and connect floods.
    #[arg(long, default_value_t = 64)]
    flood_concurrency: usize,
    /// Publishing devices in the frame flood (each at `--publish-per-s`).
    #[arg(long, default_value_t = 100)]
    publishers: usize,
    /// Rate of each frame-flood publisher: the relay's publish limit.
    #[arg(long, default_value_t = 20.0)]
    publish_per_s: f64,
    /// Loopback source addresses the attackers use (127.0.0.2 and up).
    #[arg(long, default_value_t = 16)]
    attacker_ips: u8,
    /// Blob transfers one user may run (the relay's
    /// `limits.blob_transfers_per_user`): attacker accounts for the stalled
    /// uploads are made so that together they can try `--stalled`.
    #[arg(long, default_value_t = 16)]
    transfers_per_user: usize,
    /// Fail unless every scenario meets the targets.
    #[arg(long)]
    check: bool,
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    /// Cycles started.
    cycles: usize,
    /// Cycles that completed in time.
    ok: usize,
    /// Login latencies of the cycles whose login succeeded, ms.
    login_ms: Vec<f64>,
    /// Why cycles failed (first few).
    failures: Vec<String>,
}

impl Phase {
    fn success(&self) -> f64 {
        if self.cycles == 0 {
            return 0.0;
        }
        self.ok as f64 / self.cycles as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.login_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// The legitimate user: name, key, and the long-lived receiving device.
struct Legit {
    target: Arc<Target>,
    username: String,
    auth_key: String,
    /// Token of the receiving device (also used to revoke cycle devices).
    b_token: String,
    /// Envelopes the receiving device got.
    received: mpsc::Receiver<Vec<u8>>,
}

/// Runs each scenario after its quiet phase.
pub async fn run(args: HostileArgs) -> anyhow::Result<()> {
    // The legitimate client runs on its own runtime thread, so the attack
    // tasks of this process never delay its steps in a shared run queue.
    let legit_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("legit")
        .enable_all()
        .build()
        .context("building the legitimate client's runtime")?;
    let r = run_on(args, &legit_rt).await;
    // Not dropped here: a runtime cannot be dropped inside another one.
    legit_rt.shutdown_background();
    r
}

async fn run_on(args: HostileArgs, legit_rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let legit_target = Arc::new(Target::new(ServerKind::Relay, &args.target, 0)?);
    let attack_target = Arc::new(Target::new(
        ServerKind::Relay,
        &args.target,
        args.attacker_ips.max(1),
    )?);
    let scenarios = if args.scenarios.is_empty() {
        Attack::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let tracker = TaskTracker::new();
    let stop_all = CancellationToken::new();
    let (t2, s2) = (tracker.clone(), stop_all.clone());
    let mut legit = legit_rt
        .spawn(async move { Legit::start(legit_target, &t2, s2).await })
        .await
        .context("legitimate client task")??;
    let measure = Duration::from_secs(args.measure_s.max(1));
    let on_legit = |mut legit: Legit| {
        legit_rt.spawn(async move {
            let p = legit.measure(measure).await;
            (legit, p)
        })
    };

    // Accounts the attacks use, made before any measuring.
    let setup = attacks::Setup::new(attack_target.clone(), &args, &scenarios).await?;

    let mut failed = Vec::new();
    let mut slow = Vec::new();
    // Quiet phases bracket every attack: a shared machine's background load
    // drifts over a run, so each attack is compared with the mean of the
    // quiet medians just before and just after it.
    let (l, quiet) = on_legit(legit).await.context("legitimate client task")?;
    legit = l;
    report("quiet", &quiet, None, &Counters::default());
    let mut quiet_before = quiet.percentile(0.5);
    for scenario in scenarios {
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let attack_tasks = TaskTracker::new();
        attacks::launch(
            scenario,
            &setup,
            &args,
            &legit.username,
            &attack_tasks,
            stop.clone(),
            counters.clone(),
        );
        attack_tasks.close();
        tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
        let (l, phase) = on_legit(legit).await.context("legitimate client task")?;
        legit = l;
        stop.cancel();
        if tokio::time::timeout(Duration::from_secs(15), attack_tasks.wait())
            .await
            .is_err()
        {
            bail!("{scenario}: attack tasks did not stop within 15 s");
        }
        // Let the relay settle (closed sockets, lingering closes) before
        // the quiet phase after it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (l, quiet) = on_legit(legit).await.context("legitimate client task")?;
        legit = l;
        if quiet.success() < MIN_SUCCESS {
            failed.push(format!("quiet: success {:.1}%", quiet.success() * 100.0));
        }
        let quiet_after = quiet.percentile(0.5);
        let ratio = phase.percentile(0.5) / ((quiet_before + quiet_after) / 2.0);
        report(scenario.name(), &phase, Some(ratio), &counters);
        report("quiet", &quiet, None, &Counters::default());
        if phase.success() < MIN_SUCCESS || ratio.is_nan() {
            failed.push(format!(
                "{}: success {:.1}%, login p50 ratio {ratio:.2}",
                scenario.name(),
                phase.success() * 100.0
            ));
        } else if ratio > MAX_LATENCY_RATIO {
            slow.push(format!("{}: login p50 ratio {ratio:.2}", scenario.name()));
        }
        quiet_before = quiet_after;
    }
    stop_all.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    legit.received.close();
    drop(legit);
    if !slow.is_empty() {
        println!(
            "hostile: latency target (login p50 <= {MAX_LATENCY_RATIO}x quiet) missed: {}",
            slow.join("; ")
        );
    }
    if failed.is_empty() {
        println!("hostile: every scenario kept the legitimate client's success >= 99%");
    } else {
        println!("hostile: targets missed: {}", failed.join("; "));
        if args.check {
            bail!("targets missed: {}", failed.join("; "));
        }
    }
    Ok(())
}

fn report(name: &str, p: &Phase, ratio: Option<f64>, c: &Counters) {
    println!(
        "scenario={name} cycles={} ok={} success={:.1}% login_p50_ms={:.1} login_p95_ms={:.1} \
         ratio={} attack=[{}]{}",
        p.cycles,
        p.ok,
        p.success() * 100.0,
        p.percentile(0.5),
        p.percentile(0.95),
        ratio.map_or("-".into(), |r| format!("{r:.2}")),
        c.summary(),
        if p.failures.is_empty() {
            String::new()
        } else {
            format!(" failures={:?}", p.failures)
        }
    );
}

/// Signs a fresh account up and returns its name, auth key and token.
pub async fn signup(target: &Target, username: &str) -> anyhow::Result<(String, LoginResponse)> {
    // Random stand-ins: the relay only stores these, it never derives them.
    let auth_key = hex::encode(rand::random::<[u8; KEY_LEN]>());
    let wrapped: Vec<u8> = (0..WRAPPED_LEN).map(|_| rand::random::<u8>()).collect();
    let req = SignupRequest {
        username: username.to_owned(),
        salt: hex::encode(rand::random::<[u8; SALT_LEN]>()),
        kdf: KdfParams::default(),
        auth_key: auth_key.clone(),
        wrapped_data_key: hex::encode(wrapped),
        device_name: "hostile-0".to_owned(),
        setup_token: std::env::var(crate::sessions::ENV_SETUP_TOKEN)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let body = serde_json::to_vec(&req)?;
    // The relay hashes one signup at a time and answers 503 to the others.
    for _ in 0..100 {
        let r = post_json(target, "/api/v1/signup", &body).await?;
        match r.status {
            200 => return Ok((auth_key, serde_json::from_slice(&r.body)?)),
            429 | 503 => {
                tokio::time::sleep(Duration::from_secs(r.retry_after.unwrap_or(1).min(3))).await
            }
            s => bail!(
                "signup {username}: {s}: {}",
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
    bail!("signup {username}: still refused after 100 attempts")
}

/// Logs a new device of `username` in, retrying `429`/`503` after their
/// `Retry-After` (at most [`MAX_RETRY_WAIT`] each) until `deadline`.
pub async fn login(
    target: &Target,
    username: &str,
    auth_key: &str,
    device: &str,
    deadline: Instant,
) -> anyhow::Result<LoginResponse> {
    let body = serde_json::to_vec(&LoginRequest {
        username: username.to_owned(),
        auth_key: auth_key.to_owned(),
        device_name: device.to_owned(),
    })?;
    loop {
        let r = post_json(target, "/api/v1/login", &body).await?;
        match r.status {
            200 => return Ok(serde_json::from_slice(&r.body)?),
            429 | 503 => {
                let wait = Duration::from_secs(r.retry_after.unwrap_or(1)).min(MAX_RETRY_WAIT);
                if Instant::now() + wait >= deadline {
                    bail!("login: {} and no time left to retry", r.status);
                }
                tokio::time::sleep(wait).await;
            }
            s => bail!("login: {s}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
}

impl Legit {
    /// Signs the legitimate user up and connects its receiving device.
    async fn start(
        target: Arc<Target>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let username = format!("legit{:08x}", rand::random::<u32>());
        let (auth_key, first) = signup(&target, &username).await?;
        let (ws, _) = join(&target, Some(&first.token), "").await?;
        let (tx, received) = mpsc::channel(256);
        tracker.spawn(receiver(ws, target.clone(), first.token.clone(), tx, stop));
        Ok(Self {
            target,
            username,
            auth_key,
            b_token: first.token,
            received,
        })
    }

    /// Runs cycles for `span`.
    async fn measure(&mut self, span: Duration) -> Phase {
        let mut phase = Phase::default();
        let end = Instant::now() + span;
        while Instant::now() < end {
            phase.cycles += 1;
            let n = phase.cycles;
            match tokio::time::timeout(CYCLE_DEADLINE, self.cycle(n, &mut phase.login_ms)).await {
                Ok(Ok(())) => phase.ok += 1,
                Ok(Err(e)) => note(&mut phase.failures, format!("{e:#}")),
                Err(_) => note(&mut phase.failures, "cycle deadline".into()),
            }
            tokio::time::sleep(CYCLE_GAP).await;
        }
        phase
    }

    /// One cycle: login, join, publish, delivery to the other device, revoke.
    async fn cycle(&mut self, n: usize, login_ms: &mut Vec<f64>) -> anyhow::Result<()> {
        let deadline = Instant::now() + CYCLE_DEADLINE;
        let t0 = Instant::now();
        let me = login(
            &self.target,
            &self.username,
            &self.auth_key,
            &format!("cycle-{n}"),
            deadline,
        )
        .await?;
        login_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let result = async {
            let (mut ws, _) = join(&self.target, Some(&me.token), "").await?;
            let mark: [u8; 16] = rand::random();
            let mut envelope = crate::device::probe(64, me.device_id.0, n as u64, 0, 0);
            envelope[30..46].copy_from_slice(&mark);
            let publish = Frame::Publish {
                id: 1,
                envelope: envelope.clone(),
            };
            ws.send(Message::Binary(publish.encode().into()))
                .await
                .context("publishing")?;
            wait_ack(&mut ws).await?;
            while let Some(got) = self.received.recv().await {
                if got == envelope {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
            }
            bail!("the receiving device stopped")
        }
        .await;
        // Revoke the cycle's device whatever happened (devices must not pile
        // up across cycles).
        let path = format!("/api/v1/devices/{}", me.device_id.0);
        let auth = [format!("Authorization: Bearer {}", self.b_token)];
        let revoked = send(&self.target, "DELETE", &path, &auth, &[]).await;
        result?;
        match revoked {
            Ok(r) if r.status == 204 => Ok(()),
            Ok(r) => bail!("revoking the cycle's device: {}", r.status),
            Err(e) => Err(e.context("revoking the cycle's device")),
        }
    }
}

fn note(failures: &mut Vec<String>, why: String) {
    if failures.len() < 5 {
        failures.push(why);
    }
}

/// Waits for the `Ack` of the one publish in flight.
async fn wait_ack(ws: &mut Ws) -> anyhow::Result<()> {
    while let Some(m) = ws.next().await {
        if let Message::Binary(b) = m.context("reading Ack")? {
            match inbound(&b) {
                Inbound::Ack => return Ok(()),
                Inbound::Error(e) => bail!("publish refused: {e}"),
                _ => {}
            }
        }
    }
    bail!("socket ended before the Ack")
}

/// The receiving device: forwards every clip it gets, pings every 20 s,
/// and reconnects (with its token) if its socket ends.
async fn receiver(
    mut ws: Ws,
    target: Arc<Target>,
    token: String,
    tx: mpsc::Sender<Vec<u8>>,
    stop: CancellationToken,
) {
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return,
            _ = ping.tick() => {
                let p = Frame::Ping { nonce: 1 }.encode();
                let _ = ws.send(Message::Binary(p.into())).await;
                continue;
            }
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(Message::Binary(b))) => {
                if let Inbound::Clip(env) = inbound(&b) {
                    if tx.send(env).await.is_err() {
                        return;
                    }
                }
            }
            Some(Ok(_)) => {}
            _ => {
                tracing::warn!("the legitimate receiving device lost its socket; rejoining");
                let rejoined = tokio::select! {
                    () = stop.cancelled() => return,
                    r = async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        join(&target, Some(&token), "").await
                    } => r,
                };
                match rejoined {
                    Ok((w, _)) => ws = w,
                    Err(e) => tracing::warn!(error = %e, "rejoin failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_percentiles() {
        let p = Phase {
            cycles: 200,
            ok: 198,
            login_ms: vec![5.0, 1.0, 3.0, 2.0, 4.0],
            failures: Vec::new(),
        };
        assert!((p.success() - 0.99).abs() < 1e-9);
        assert_eq!(p.percentile(0.5), 3.0);
        assert_eq!(p.percentile(1.0), 5.0);
        assert!(Phase::default().percentile(0.5).is_nan());
        assert_eq!(Phase::default().success(), 0.0);
    }
}
