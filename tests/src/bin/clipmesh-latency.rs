//! `clipmesh-latency`: copy-to-paste latency between two X displays through
//! a local relay, and the idle cost of a daemon.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/clipmesh-latency [--copies 200] [--min-gap-ms 20] [--max-gap-ms 150] [--idle-secs 60] [--mode relay|auto|p2p]
//! ```
//!
//! `--wine` adds a third device, the Windows `clipmesh.exe` under Wine on
//! its own display (relay mode): Linux -> Linux, Linux -> Windows and
//! Windows -> Linux latency in the same run, their p50 ratios, and the idle
//! cost of a Linux daemon and of the Wine daemon (see `run_wine`).
//!
//! `--profile clipcascade` runs the clipcascade profile next to the native
//! protocol in the same run: two more devices of the same account log in
//! with `clipmesh login --profile clipcascade` (the account has ClipCascade
//! compatibility on), each on its own display, and every iteration times a
//! native copy (A -> B), a ClipCascade-profile copy (C -> D, STOMP through
//! the same relay) and the noise floor, so all three see the same load.
//! See `run_clipcascade`.
//!
//! `--mode` is passed to both daemons (`clipmesh run --mode`, default
//! `relay`); with `auto` or `p2p` the copies start once both report an open
//! direct link (bound to 127.0.0.1).
//!
//! Setup: a relay on 127.0.0.1:0, two devices of one user, each daemon on
//! its own Xvfb display (all release builds when run from target/release).
//!
//! Latency is timed from **outside** both daemons, by XFixes
//! selection-owner events on each display, each seen by its own watcher
//! thread in this process (one clock):
//!
//! - t0: this tool takes display A's CLIPBOARD (like an application that
//!   copies; with `--xclip`, an `xclip -i` process does) and A's watcher
//!   sees the owner change;
//! - t1: B's watcher sees B's owner change, i.e. B's daemon claimed the
//!   selection; the tool then reads B's clipboard and checks the text.
//!
//! The path measured is event → read → seal → relay → open → claim. Copies
//! are spaced by random gaps so they do not batch.
//!
//! Idle: after the copies, nothing happens for `--idle-secs`; the tool
//! samples B's daemon's CPU time (`/proc/PID/stat` utime + stime, and the
//! ns-resolution `/proc/PID/task/*/schedstat`, all threads), its context
//! switches (voluntary + involuntary, summed over
//! `/proc/PID/task/*/status`, i.e. wake-ups of every thread) and its memory
//! (VmRSS, VmHWM).

use anyhow::{bail, Context, Result};
use clipmesh_tests::bench::{report, LatencyArgs, RelayPair};
use clipmesh_tests::procstat::{cpu_pressure, idle_report, load_average};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xsel::{SelectionOwner, SelectionWatcher};
use clipmesh_tests::Xvfb;
use rand::Rng;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one copy may take before the run fails.
const COPY_TIMEOUT: Duration = Duration::from_secs(5);

/// `--help` text.
const USAGE: &str = "clipmesh-latency [--copies N] [--min-gap-ms MS] [--max-gap-ms MS] \
     [--idle-secs S] [--rust-log FILTER] [--keep (the logs)] [--xclip (copy with xclip)] \
     [--mode relay|auto|p2p] [--wine (also a Windows device under Wine)] \
     [--profile clipcascade (the ClipCascade profile next to the native protocol)]";

/// Owner changes of one display, timestamped by a dedicated thread.
fn spawn_watcher(display: String) -> Result<mpsc::Receiver<Instant>> {
    let mut w = SelectionWatcher::connect(&display)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        match w.next_change(Duration::from_secs(3600)) {
            Ok(Some(c)) => {
                if tx.send(c.at).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(_) => return,
        }
    });
    Ok(rx)
}

/// The noise floor, run side by side with the daemons: a thread that waits
/// for an owner change on display C and immediately takes display D's
/// CLIPBOARD. Its C→D latency is what the X servers, the watchers and the
/// scheduler cost on this machine right now, with no clipmesh code at all.
struct Baseline {
    owner_c: SelectionOwner,
    c_events: mpsc::Receiver<Instant>,
    d_events: mpsc::Receiver<Instant>,
    _xc: Xvfb,
    _xd: Xvfb,
}

impl Baseline {
    fn start() -> Result<Self> {
        let xc = Xvfb::start()?;
        let xd = Xvfb::start()?;
        let c_events = spawn_watcher(xc.display())?;
        let d_events = spawn_watcher(xd.display())?;
        let owner_c = SelectionOwner::connect(&xc.display())?;
        // The forwarder: its own XFixes connection on C, an owner on D.
        let mut fwd_watch = SelectionWatcher::connect(&xc.display())?;
        let owner_d = SelectionOwner::connect(&xd.display())?;
        std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                match fwd_watch.next_change(Duration::from_secs(3600)) {
                    Ok(Some(_)) => {
                        n += 1;
                        if owner_d.set_text(&format!("forwarded {n}")).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Self {
            owner_c,
            c_events,
            d_events,
            _xc: xc,
            _xd: xd,
        })
    }

    fn probe(&self, i: usize) -> Result<Duration> {
        while self.c_events.try_recv().is_ok() {}
        while self.d_events.try_recv().is_ok() {}
        self.owner_c.set_text(&format!("baseline {i}"))?;
        let t0 = self
            .c_events
            .recv_timeout(COPY_TIMEOUT)
            .context("baseline: no change on C")?;
        let t1 = self
            .d_events
            .recv_timeout(COPY_TIMEOUT)
            .context("baseline: no change on D")?;
        Ok(t1.saturating_duration_since(t0))
    }
}

/// Copies on `src` (this tool's owner) timed to the owner changes of each
/// of `dsts`: (t1 - t0) per destination, after one warm-up copy.
fn timed_copies(
    args: &LatencyArgs,
    owner: &SelectionOwner,
    src: &mpsc::Receiver<Instant>,
    dsts: &[&mpsc::Receiver<Instant>],
) -> Result<Vec<Vec<Duration>>> {
    let mut rng = rand::thread_rng();
    let mut out = vec![Vec::with_capacity(args.copies); dsts.len()];
    for i in 0..=args.copies {
        let gap = rng.gen_range(args.min_gap_ms..=args.max_gap_ms);
        std::thread::sleep(Duration::from_millis(gap));
        while src.try_recv().is_ok() {}
        for d in dsts {
            while d.try_recv().is_ok() {}
        }
        owner.set_text(&format!("latency probe {i} {:016x}", rng.gen::<u64>()))?;
        let t0 = src
            .recv_timeout(COPY_TIMEOUT)
            .context("no owner change on the source")?;
        for (k, d) in dsts.iter().enumerate() {
            let t1 = d.recv_timeout(COPY_TIMEOUT).with_context(|| {
                format!("copy {i} did not reach destination {k} within {COPY_TIMEOUT:?}")
            })?;
            if i > 0 {
                out[k].push(t1.saturating_duration_since(t0));
            }
        }
    }
    Ok(out)
}

/// `--wine EXE`: a third device, the Windows `clipmesh.exe` under Wine on
/// its own display W, next to the two Linux devices A and B (one account,
/// relay mode). Copies on A are timed to B (Linux -> Linux) and to W
/// (Linux -> Windows); copies on W to A and B (Windows -> Linux). Then the
/// idle cost of the Linux daemon B and of the Wine daemon, one after the
/// other.
///
/// W's X selection does not change when the Windows clipboard does (Wine
/// keeps owning it), so arrivals on W are timed by `clipmesh-winmeter.exe`
/// (next to `clipmesh.exe`), a clipboard format listener under the same
/// Wine prefix: it prints the wall-clock time of each `WM_CLIPBOARDUPDATE`,
/// which Wine reads from the host's `CLOCK_REALTIME`, and this tool maps it
/// onto its own monotonic clock (see [`WinMeter`]).
fn run_wine(args: &LatencyArgs, exe: &std::path::Path) -> Result<()> {
    use clipmesh_tests::procstat::{percentile, summary};
    use clipmesh_tests::wine::WinePrefix;
    let pair = RelayPair::start(&args.rust_log)?;
    let xa = Xvfb::start()?;
    let xb = Xvfb::start()?;
    let xw = Xvfb::start()?;
    let prefix = WinePrefix::create(&pair.tmp.path().join("wine"), &xw.display())?;
    let dev_w =
        clipmesh_tests::Device::new_wine(pair.tmp.path(), &pair.logs, "w", prefix.exe(exe))?;
    dev_w.login(&pair.url, "bench", "latency bench password", &args.rust_log)?;
    let a_events = spawn_watcher(xa.display())?;
    let b_events = spawn_watcher(xb.display())?;
    let w_events = spawn_watcher(xw.display())?;
    let meter_exe = exe.with_file_name("clipmesh-winmeter.exe");
    let w_meter = WinMeter::start(&prefix.exe(&meter_exe), &xw.display())?;
    let _daemon_a = pair
        .dev_a
        .run_mode(&xa.display(), "relay", &args.rust_log)?;
    let daemon_b = pair
        .dev_b
        .run_mode(&xb.display(), "relay", &args.rust_log)?;
    let daemon_w = dev_w.run_mode(&xw.display(), "relay", &args.rust_log)?;
    pair.dev_a.wait_connected(STEP)?;
    pair.dev_b.wait_connected(STEP)?;
    dev_w.wait_connected(STEP * 3)?;
    println!(
        "load average at start: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    // A failed copy shows the end of the Wine daemon's log (the temporary
    // directory with all logs goes away when this returns).
    let w_log = pair.logs.join("w-run.log");
    let with_w_log = |e: anyhow::Error| {
        let log = std::fs::read_to_string(&w_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!("the Wine daemon's log ends:\n{}", tail.join("\n")))
    };
    let owner_a = SelectionOwner::connect(&xa.display())?;
    let mut from_a = timed_copies(args, &owner_a, &a_events, &[&b_events, &w_meter.events])
        .context("copies on Linux A (destinations: 0 = Linux B, 1 = Windows W)")
        .map_err(with_w_log)?;
    drop(owner_a);
    // The meter is a second clipboard reader on W: left running, it opens
    // the clipboard at every copy made on W, while the daemon does, and
    // Wine converts the X selection for each of them.
    drop(w_meter);
    let owner_w = SelectionOwner::connect(&xw.display())?;
    let mut from_w =
        timed_copies(args, &owner_w, &w_events, &[&a_events, &b_events]).map_err(with_w_log)?;
    drop(owner_w);
    println!(
        "load average at end: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    println!("## copy-to-paste latency, relay mode, same run");
    summary("Linux A -> Linux B", &mut from_a[0]);
    summary("Linux A -> Windows under Wine W", &mut from_a[1]);
    summary("Windows under Wine W -> Linux A", &mut from_w[0]);
    summary("Windows under Wine W -> Linux B", &mut from_w[1]);
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        percentile(v, 50.0).as_secs_f64()
    };
    let base = p50(&mut from_a[0]);
    if base > 0.0 {
        println!(
            "p50 ratio over Linux -> Linux: Linux -> Wine {:.2}x; Wine -> Linux {:.2}x (to A), {:.2}x (to B)",
            p50(&mut from_a[1]) / base,
            p50(&mut from_w[0]) / base,
            p50(&mut from_w[1]) / base
        );
    }
    if args.idle_secs > 0 {
        while w_events.recv_timeout(Duration::from_millis(500)).is_ok() {}
        println!("## idle: the Linux daemon B");
        idle_report(daemon_b.pid(), args.idle_secs)?;
        println!(
            "## idle: the Windows daemon under Wine (the wine64 process running clipmesh.exe)"
        );
        idle_report(daemon_w.pid(), args.idle_secs)?;
    }
    drop(daemon_w);
    drop(prefix);
    keep_logs(&pair.logs)?;
    Ok(())
}

/// `CLIPMESH_LATENCY_KEEP_LOGS=DIR`: copies the run's logs (relay and
/// daemons, at `--rust-log`'s level) into DIR before the temporary
/// directory goes away, to line a slow stage up with the daemons' own
/// timestamps.
fn keep_logs(logs: &std::path::Path) -> Result<()> {
    let Some(dir) = std::env::var_os("CLIPMESH_LATENCY_KEEP_LOGS") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for entry in std::fs::read_dir(logs)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.join(name))
                .with_context(|| format!("copy {}", path.display()))?;
        }
    }
    eprintln!("logs kept in {}", dir.display());
    Ok(())
}

/// `clipmesh-winmeter.exe` under Wine: each clipboard update on the Windows
/// side whose text is a latency probe, as an `Instant` of this process.
/// Wine reports the time on the host's wall clock; it is mapped onto the
/// monotonic clock through one (`Instant`, `SystemTime`) pair taken at
/// start (drift over one run is far below the figures measured).
struct WinMeter {
    child: std::process::Child,
    events: mpsc::Receiver<Instant>,
}

impl WinMeter {
    fn start(exe: &clipmesh_tests::wine::WineExe, display: &str) -> Result<Self> {
        use std::io::BufRead;
        use std::time::{SystemTime, UNIX_EPOCH};
        let mut child = exe
            .command()
            .env("DISPLAY", display)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {} under Wine", exe.exe.display()))?;
        let stdout = child.stdout.take().context("meter stdout")?;
        let (mono0, wall0) = (Instant::now(), SystemTime::now());
        let wall0 = wall0.duration_since(UNIX_EPOCH)?.as_nanos();
        // CLIPMESH_WINMETER_DEBUG=1 echoes every line of the meter.
        let debug = std::env::var_os("CLIPMESH_WINMETER_DEBUG").is_some();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line == "ready" {
                    let _ = ready_tx.send(());
                    continue;
                }
                if debug {
                    eprintln!("clipmesh-winmeter: {line}");
                }
                let Some((at, text)) = line.split_once(' ') else {
                    continue;
                };
                let Ok(at) = at.parse::<u128>() else { continue };
                if !text.starts_with("latency probe ") {
                    continue;
                }
                let mono = if at >= wall0 {
                    mono0.checked_add(Duration::from_nanos((at - wall0) as u64))
                } else {
                    mono0.checked_sub(Duration::from_nanos((wall0 - at) as u64))
                };
                if let Some(t) = mono {
                    if tx.send(t).is_err() {
                        return;
                    }
                }
            }
        });
        let mut this = Self { child, events };
        if ready_rx.recv_timeout(STEP * 3).is_err() {
            this.stop();
            bail!("clipmesh-winmeter.exe did not register its clipboard listener (build it with scripts/build-windows)");
        }
        Ok(this)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WinMeter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `--profile clipcascade`: native devices A and B and ClipCascade-profile
/// devices C and D of one account (compatibility on), each daemon on its
/// own display, all through one relay. Each iteration copies on A (timed
/// to B), then on C (timed to D), then probes the noise floor; then the
/// profile daemon D's idle cost.
fn run_clipcascade(args: &LatencyArgs) -> Result<()> {
    use clipmesh_tests::procstat::{percentile, summary};
    use clipmesh_tests::Device;
    const PASSWORD: &str = "latency bench password";
    const SUBSCRIBED: &str = "subscribed to ClipCascade messages";
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let data = tmp.path().join("relay-data");
    std::fs::create_dir_all(&data)?;
    let relay = clipmesh_tests::Relay::start(&data, &logs.join("relay.log"), 0, &args.rust_log)?;
    let url = relay.url();
    let log = &args.rust_log;
    let dev_a = Device::new(tmp.path(), &logs, "a")?;
    dev_a.signup_clipcascade_compat(&url, "bench", PASSWORD, log)?;
    let dev_b = Device::new(tmp.path(), &logs, "b")?;
    dev_b.login(&url, "bench", PASSWORD, log)?;
    let dev_c = Device::new(tmp.path(), &logs, "c")?;
    dev_c.login_clipcascade(&url, "bench", PASSWORD, log)?;
    let dev_d = Device::new(tmp.path(), &logs, "d")?;
    dev_d.login_clipcascade(&url, "bench", PASSWORD, log)?;
    let (xa, xb, xc, xd) = (
        Xvfb::start()?,
        Xvfb::start()?,
        Xvfb::start()?,
        Xvfb::start()?,
    );
    let a_events = spawn_watcher(xa.display())?;
    let b_events = spawn_watcher(xb.display())?;
    let c_events = spawn_watcher(xc.display())?;
    let d_events = spawn_watcher(xd.display())?;
    let mut b_reader = SelectionWatcher::connect(&xb.display())?;
    let mut d_reader = SelectionWatcher::connect(&xd.display())?;
    // The profile always goes through the relay: so does the native pair.
    let _daemon_a = dev_a.run_mode(&xa.display(), "relay", log)?;
    let _daemon_b = dev_b.run_mode(&xb.display(), "relay", log)?;
    // The profile's lifecycle lines (not per item) say when it is live.
    let cc_log = format!("{log},clipmesh::clipcascade::daemon=info");
    let mut daemon_c = dev_c.run(&xc.display(), &cc_log)?;
    let mut daemon_d = dev_d.run(&xd.display(), &cc_log)?;
    dev_a.wait_connected(STEP)?;
    dev_b.wait_connected(STEP)?;
    daemon_c.wait_log(SUBSCRIBED, 1, STEP)?;
    daemon_d.wait_log(SUBSCRIBED, 1, STEP)?;
    let owner_a = SelectionOwner::connect(&xa.display())?;
    let owner_c = SelectionOwner::connect(&xc.display())?;
    let baseline = Baseline::start()?;
    eprintln!(
        "relay {url}; native A {} -> B {}, clipcascade profile C {} -> D {}; {} copies each",
        xa.display(),
        xb.display(),
        xc.display(),
        xd.display(),
        args.copies
    );
    println!(
        "load average at start: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    let mut rng = rand::thread_rng();
    let (mut native, mut cc, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=args.copies {
        for (owner, src, dst, reader, out) in [
            (&owner_a, &a_events, &b_events, &mut b_reader, &mut native),
            (&owner_c, &c_events, &d_events, &mut d_reader, &mut cc),
        ] {
            let gap = rng.gen_range(args.min_gap_ms..=args.max_gap_ms);
            std::thread::sleep(Duration::from_millis(gap));
            while src.try_recv().is_ok() {}
            while dst.try_recv().is_ok() {}
            let text = format!("latency probe {i} {:016x}", rng.gen::<u64>());
            owner.set_text(&text)?;
            let t0 = src
                .recv_timeout(COPY_TIMEOUT)
                .context("no owner change on the source")?;
            let t1 = dst.recv_timeout(COPY_TIMEOUT).with_context(|| {
                format!("copy {i} did not reach its destination within {COPY_TIMEOUT:?}")
            })?;
            let got = reader.read_text()?;
            if got.as_deref() != Some(text.as_str()) {
                bail!("copy {i}: the destination holds {got:?}, expected {text:?}");
            }
            if i > 0 {
                out.push(t1.saturating_duration_since(t0));
            }
        }
        let f = baseline.probe(i)?;
        if i > 0 {
            floor.push(f);
        }
    }
    println!(
        "load average at end: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    println!("## copy-to-paste latency through the relay, same run");
    summary("native clipmesh (A -> relay -> B)", &mut native);
    summary("clipcascade profile (C -> relay STOMP -> D)", &mut cc);
    summary("noise floor (no clipmesh)", &mut floor);
    let (n50, c50) = (percentile(&native, 50.0), percentile(&cc, 50.0));
    let (n99, c99) = (percentile(&native, 99.0), percentile(&cc, 99.0));
    if !n50.is_zero() && !n99.is_zero() {
        println!(
            "clipcascade / native: p50 {:.2}x, p99 {:.2}x",
            c50.as_secs_f64() / n50.as_secs_f64(),
            c99.as_secs_f64() / n99.as_secs_f64()
        );
    }
    drop((owner_a, owner_c));
    if args.idle_secs > 0 {
        while d_events.recv_timeout(Duration::from_millis(500)).is_ok() {}
        println!("## idle: the clipcascade-profile daemon D");
        idle_report(daemon_d.pid(), args.idle_secs)?;
    }
    daemon_c.check_running()?;
    daemon_d.check_running()?;
    drop(relay);
    Ok(())
}

fn main() -> Result<()> {
    let mut keep = false;
    // `--profile clipcascade`: see `run_clipcascade`.
    let mut profile_cc = false;
    let mut profile_next = false;
    // `--wine`: also a Windows device under Wine (see `run_wine`).
    let mut wine = false;
    // Copy with `xclip -i` (a new process per copy) instead of this tool's
    // own selection owner.
    let mut xclip = false;
    let args = LatencyArgs::parse(USAGE, |flag| match flag {
        _ if profile_next => {
            profile_next = false;
            profile_cc = flag == "clipcascade";
            // Only the two known profiles are accepted.
            profile_cc || flag == "clipmesh"
        }
        "--profile" => {
            profile_next = true;
            true
        }
        "--keep" => {
            keep = true;
            true
        }
        "--xclip" => {
            xclip = true;
            true
        }
        "--wine" => {
            wine = true;
            true
        }
        _ => false,
    })?;
    if profile_next {
        bail!("--profile needs a value: clipmesh or clipcascade");
    }
    clipmesh_tests::xvfb::require_xclip()?;
    if profile_cc {
        return run_clipcascade(&args);
    }
    if wine {
        let exe = clipmesh_tests::wine::windows_exe().context(
            "--wine needs the Windows clipmesh.exe: scripts/build-windows --no-msi, or CLIPMESH_WINDOWS_EXE",
        )?;
        return run_wine(&args, &exe);
    }
    let RelayPair {
        relay,
        url,
        dev_a,
        dev_b,
        tmp,
        ..
    } = RelayPair::start(&args.rust_log)?;
    let xa = Xvfb::start()?;
    let xb = Xvfb::start()?;
    let a_events = spawn_watcher(xa.display())?;
    let b_events = spawn_watcher(xb.display())?;
    let mut b_reader = SelectionWatcher::connect(&xb.display())?;
    let _daemon_a = dev_a.run_mode(&xa.display(), &args.mode, &args.rust_log)?;
    let daemon_b = dev_b.run_mode(&xb.display(), &args.mode, &args.rust_log)?;
    dev_a.wait_connected(STEP)?;
    dev_b.wait_connected(STEP)?;
    if args.mode != "relay" {
        dev_a.wait_link_open(STEP * 2)?;
        dev_b.wait_link_open(STEP * 2)?;
    }
    let owner = SelectionOwner::connect(&xa.display())?;
    let baseline = Baseline::start()?;

    eprintln!(
        "relay {url}, displays {} and {}; {} copies, gaps {}..{} ms",
        xa.display(),
        xb.display(),
        args.copies,
        args.min_gap_ms,
        args.max_gap_ms
    );
    let mut rng = rand::thread_rng();
    let mut lat = Vec::with_capacity(args.copies);
    let mut floor = Vec::with_capacity(args.copies);
    println!(
        "load average at start: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    // One warm-up copy (first connection to the owner, page faults).
    for i in 0..=args.copies {
        let gap = rng.gen_range(args.min_gap_ms..=args.max_gap_ms);
        std::thread::sleep(Duration::from_millis(gap));
        while a_events.try_recv().is_ok() {}
        while b_events.try_recv().is_ok() {}
        let text = format!("latency probe {i} {:016x}", rng.gen::<u64>());
        if xclip {
            clipmesh_tests::xvfb::xclip_set(&xa.display(), &text)?;
        } else {
            owner.set_text(&text)?;
        }
        let t0 = a_events
            .recv_timeout(COPY_TIMEOUT)
            .context("no owner change on A")?;
        let t1 = b_events
            .recv_timeout(COPY_TIMEOUT)
            .with_context(|| format!("copy {i} did not reach B within {COPY_TIMEOUT:?}"))?;
        let got = b_reader.read_text()?;
        if got.as_deref() != Some(text.as_str()) {
            bail!("copy {i}: B holds {got:?}, expected {text:?}");
        }
        if i > 0 {
            lat.push(t1.saturating_duration_since(t0));
        }
        // The noise floor, interleaved so both see the same machine load.
        let f = baseline.probe(i)?;
        if i > 0 {
            floor.push(f);
        }
    }
    drop(owner);
    println!(
        "load average at end: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    println!("## copy-to-paste latency (A owner change -> B owner change)");
    let path = match args.mode.as_str() {
        "relay" => "clipmesh (A -> relay -> B)".to_owned(),
        m => format!("clipmesh --mode {m} (A -> direct link -> B)"),
    };
    report(&path, &mut lat, &mut floor);

    if args.idle_secs > 0 {
        let pid = daemon_b.pid();
        // Let the last copy's echo read settle before sampling.
        while b_events.recv_timeout(Duration::from_millis(500)).is_ok() {}
        idle_report(pid, args.idle_secs)?;
    }
    drop(relay);
    if keep {
        eprintln!("logs kept in {}", tmp.keep().join("logs").display());
    }
    Ok(())
}
