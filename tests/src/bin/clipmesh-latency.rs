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
     [--mode relay|auto|p2p]";

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

fn main() -> Result<()> {
    let mut keep = false;
    // Copy with `xclip -i` (a new process per copy) instead of this tool's
    // own selection owner.
    let mut xclip = false;
    let args = LatencyArgs::parse(USAGE, |flag| match flag {
        "--keep" => {
            keep = true;
            true
        }
        "--xclip" => {
            xclip = true;
            true
        }
        _ => false,
    })?;
    clipmesh_tests::xvfb::require_xclip()?;
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
