//! `clipmesh-latency`: copy-to-paste latency between two X displays through
//! a local relay, and the idle cost of a daemon.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/clipmesh-latency [--copies 200] [--min-gap-ms 20] [--max-gap-ms 150] [--idle-secs 60] [--mode relay|auto|p2p]
//! ```
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
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xsel::{SelectionOwner, SelectionWatcher};
use clipmesh_tests::{Device, Relay, Xvfb};
use rand::Rng;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one copy may take before the run fails.
const COPY_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    copies: usize,
    min_gap_ms: u64,
    max_gap_ms: u64,
    idle_secs: u64,
    rust_log: String,
    keep: bool,
    /// Copy with `xclip -i` (a new process per copy) instead of this tool's
    /// own selection owner.
    xclip: bool,
    /// `clipmesh run --mode` for both daemons.
    mode: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        copies: 200,
        min_gap_ms: 20,
        max_gap_ms: 150,
        idle_secs: 60,
        rust_log: "warn".into(),
        keep: false,
        xclip: false,
        mode: "relay".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().context("missing value");
        match flag.as_str() {
            "--copies" => a.copies = val()?.parse()?,
            "--min-gap-ms" => a.min_gap_ms = val()?.parse()?,
            "--max-gap-ms" => a.max_gap_ms = val()?.parse()?,
            "--idle-secs" => a.idle_secs = val()?.parse()?,
            "--rust-log" => a.rust_log = val()?,
            "--keep" => a.keep = true,
            "--xclip" => a.xclip = true,
            "--mode" => a.mode = val()?,
            "-h" | "--help" => {
                println!(
                    "clipmesh-latency [--copies N] [--min-gap-ms MS] [--max-gap-ms MS] \
                     [--idle-secs S] [--rust-log FILTER] [--keep (the logs)] [--xclip (copy with xclip)] \
                     [--mode relay|auto|p2p]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.max_gap_ms < a.min_gap_ms {
        bail!("--max-gap-ms must be at least --min-gap-ms");
    }
    Ok(a)
}

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

/// `some avg10` of /proc/pressure/cpu: % of time runnable tasks waited for a CPU.
fn cpu_pressure() -> String {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "n/a".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn summary(name: &str, lat: &mut [Duration]) {
    lat.sort();
    let mean = lat.iter().sum::<Duration>() / u32::try_from(lat.len().max(1)).unwrap_or(1);
    println!(
        "{name}: n={}  p50 {}  p90 {}  p99 {}  max {}  min {}  mean {}",
        lat.len(),
        ms(percentile(lat, 50.0)),
        ms(percentile(lat, 90.0)),
        ms(percentile(lat, 99.0)),
        ms(percentile(lat, 100.0)),
        ms(percentile(lat, 0.0)),
        ms(mean)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU ticks (utime + stime) of a process, all threads.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Nanoseconds on CPU, all threads (`/proc/PID/task/*/schedstat`, field 1).
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(entry?.path().join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// Context switches per thread: (thread name, voluntary + involuntary).
fn ctxt_switches(pid: u32) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = entry?.path();
        let status = std::fs::read_to_string(dir.join("status"))?;
        let name = std::fs::read_to_string(dir.join("comm"))?.trim().to_owned();
        let field = |k: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let tid = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((
            format!("{name} ({tid})"),
            field("voluntary_ctxt_switches:"),
            field("nonvoluntary_ctxt_switches:"),
        ));
    }
    out.sort();
    Ok(out)
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    clipmesh_tests::xvfb::require_xclip()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let data = tmp.path().join("relay-data");
    std::fs::create_dir_all(&data)?;
    let relay = Relay::start(&data, &logs.join("relay.log"), 0, &args.rust_log)?;
    let url = relay.url();
    let pw = "latency bench password";
    let dev_a = Device::new(tmp.path(), &logs, "a")?;
    dev_a.signup(&url, "bench", pw, &args.rust_log)?;
    let dev_b = Device::new(tmp.path(), &logs, "b")?;
    dev_b.login(&url, "bench", pw, &args.rust_log)?;
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
        for d in [&dev_a, &dev_b] {
            clipmesh_tests::wait::poll_until(
                "direct link open",
                STEP * 2,
                Duration::from_millis(100),
                || {
                    let s = d.status()?;
                    let open = s["peers"]
                        .as_array()
                        .is_some_and(|p| p.len() == 1 && p[0]["path"] == "p2p");
                    Ok(open.then_some(()))
                },
            )?;
        }
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
        if args.xclip {
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
    summary(&path, &mut lat);
    summary("noise floor (C -> D, no clipmesh)", &mut floor);
    let over =
        |v: &[Duration], ms: u64| v.iter().filter(|d| **d > Duration::from_millis(ms)).count();
    println!(
        "copies over 4 ms: clipmesh {}, floor {}; over 10 ms: clipmesh {}, floor {}",
        over(&lat, 4),
        over(&floor, 4),
        over(&lat, 10),
        over(&floor, 10)
    );

    if args.idle_secs > 0 {
        let pid = daemon_b.pid();
        // Let the last copy's echo read settle before sampling.
        while b_events.recv_timeout(Duration::from_millis(500)).is_ok() {}
        let cpu0 = cpu_ticks(pid)?;
        let ns0 = cpu_ns(pid)?;
        let sw0 = ctxt_switches(pid)?;
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(args.idle_secs));
        let elapsed = started.elapsed();
        let cpu1 = cpu_ticks(pid)?;
        let ns1 = cpu_ns(pid)?;
        let sw1 = ctxt_switches(pid)?;
        let rss = status_kib(pid, "VmRSS:")?;
        let hwm = status_kib(pid, "VmHWM:")?;
        let tick_ms = 10; // CLK_TCK = 100 on Linux
        println!(
            "## idle daemon over {:.1} s (pid {pid})",
            elapsed.as_secs_f64()
        );
        println!(
            "cpu: {} ms by utime+stime ticks, {:.3} ms by schedstat",
            (cpu1 - cpu0) * tick_ms,
            (ns1.saturating_sub(ns0)) as f64 / 1e6
        );
        let mut total = 0;
        for (name, v, n) in &sw1 {
            let (v0, n0) = sw0
                .iter()
                .find(|(m, _, _)| m == name)
                .map(|(_, v, n)| (*v, *n))
                .unwrap_or((0, 0));
            let d = (v - v0) + (n - n0);
            total += d;
            if d > 0 {
                println!("  {name}: {d} context switches");
            }
        }
        println!("wake-ups (context switches, all threads): {total}");
        println!(
            "memory: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    drop(relay);
    if args.keep {
        eprintln!("logs kept in {}", tmp.keep().join("logs").display());
    }
    Ok(())
}
