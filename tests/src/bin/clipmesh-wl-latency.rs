//! `clipmesh-wl-latency`: copy-to-paste latency between two headless Wayland
//! compositors (sway) through a local relay, with the daemons on the native
//! Wayland (data-control) backend, and the idle cost of such a daemon. The
//! Wayland counterpart of `clipmesh-latency`.
//!
//! ```text
//! cargo build --release -p clipmesh -p clipmesh-relay -p clipmesh-tests --bins
//! target/release/clipmesh-wl-latency [--copies 200] [--min-gap-ms 20] [--max-gap-ms 150] [--idle-secs 60] [--mode relay|auto]
//! ```
//!
//! `--mode` is passed to both daemons (`clipmesh run --mode`, default
//! `relay`, like `clipmesh-latency`).
//!
//! Setup: a relay on 127.0.0.1:0, two devices of one user, each daemon on
//! its own sway (`tests/src/sway.rs`; needs sway and wl-clipboard).
//!
//! Latency is timed from **outside** both daemons, by data-control
//! `selection` events on each compositor, each seen by its own watcher
//! thread in this process (one clock):
//!
//! - t0: this tool's owner sets A's clipboard (a new data source, like an
//!   application that copies) and A's watcher sees the selection event;
//! - t1: B's watcher sees B's selection event, i.e. B's daemon set its data
//!   source; the tool then pastes B's clipboard (`wl-paste`) and checks it.
//!
//! The path measured is event → read through a pipe → seal → relay → open →
//! set the selection. Copies are spaced by random gaps. A **noise floor** is
//! measured interleaved: on two more compositors C and D without clipmesh,
//! a thread waits for a selection event on C and at once sets D's clipboard.
//!
//! Idle: after the copies, nothing happens for `--idle-secs`; the tool
//! samples B's daemon's CPU time, its context switches per thread and its
//! memory (`clipmesh_tests::procstat::idle_report`).

use anyhow::{bail, Context, Result};
use clipmesh_tests::bench::{report, LatencyArgs, RelayPair};
use clipmesh_tests::procstat::{cpu_pressure, idle_report, load_average};
use clipmesh_tests::sway::{require_wayland_tools, Sway};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::wloffer::WlOwner;
use clipmesh_tests::wlwatch::WlWatcher;
use rand::Rng;
use std::time::Duration;

/// How long one copy may take before the run fails.
const COPY_TIMEOUT: Duration = Duration::from_secs(5);

/// `--help` text.
const USAGE: &str = "clipmesh-wl-latency [--copies N] [--min-gap-ms MS] [--max-gap-ms MS] \
     [--idle-secs S] [--rust-log FILTER] [--mode relay|auto]\n\
     Copy-to-paste latency between two headless sway compositors through a \
     local relay (native Wayland backend), and the idle cost of a daemon.";

/// Text items as Wayland applications offer them.
fn text_item(text: &str) -> [(&'static str, &[u8]); 2] {
    [
        ("text/plain;charset=utf-8", text.as_bytes()),
        ("UTF8_STRING", text.as_bytes()),
    ]
}

/// The noise floor: compositors C and D, and a forwarder thread that sets
/// D's clipboard as soon as C's changes.
struct Baseline {
    owner_c: WlOwner,
    watch_c: WlWatcher,
    watch_d: WlWatcher,
    _forwarder: std::thread::JoinHandle<()>,
    _c: Sway,
    _d: Sway,
}

impl Baseline {
    fn start() -> Result<Self> {
        let c = Sway::start()?;
        let d = Sway::start()?;
        let watch_c = WlWatcher::connect(&c)?;
        let watch_d = WlWatcher::connect(&d)?;
        let owner_c = WlOwner::connect(&c, false)?;
        let fwd_watch = WlWatcher::connect(&c)?;
        let owner_d = WlOwner::connect(&d, false)?;
        let forwarder = std::thread::spawn(move || {
            for n in 0u64.. {
                if fwd_watch.next(Duration::from_secs(3600)).is_none() {
                    return;
                }
                let text = format!("forwarded {n}");
                if owner_d.offer(&text_item(&text)).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            owner_c,
            watch_c,
            watch_d,
            _forwarder: forwarder,
            _c: c,
            _d: d,
        })
    }

    fn probe(&self, i: usize) -> Result<Duration> {
        self.watch_c.drain();
        self.watch_d.drain();
        self.owner_c.offer(&text_item(&format!("baseline {i}")))?;
        let t0 = self
            .watch_c
            .next(COPY_TIMEOUT)
            .context("baseline: no change on C")?;
        let t1 = self
            .watch_d
            .next(COPY_TIMEOUT)
            .context("baseline: no change on D")?;
        Ok(t1.saturating_duration_since(t0))
    }
}

fn main() -> Result<()> {
    let args = LatencyArgs::parse(USAGE, |_| false)?;
    require_wayland_tools()?;
    let RelayPair {
        relay,
        url,
        dev_a,
        dev_b,
        tmp: _tmp,
        ..
    } = RelayPair::start(&args.rust_log)?;
    let sa = Sway::start()?;
    let sb = Sway::start()?;
    let watch_a = WlWatcher::connect(&sa)?;
    let watch_b = WlWatcher::connect(&sb)?;
    let _daemon_a = dev_a.run_env_mode(&sa.env(), &args.mode, &args.rust_log)?;
    let daemon_b = dev_b.run_env_mode(&sb.env(), &args.mode, &args.rust_log)?;
    dev_a.wait_connected(STEP)?;
    dev_b.wait_connected(STEP)?;
    let owner = WlOwner::connect(&sa, false)?;
    let baseline = Baseline::start()?;

    eprintln!(
        "relay {url}; {} copies, gaps {}..{} ms",
        args.copies, args.min_gap_ms, args.max_gap_ms
    );
    let mut rng = rand::thread_rng();
    let mut lat = Vec::with_capacity(args.copies);
    let mut floor = Vec::with_capacity(args.copies);
    println!(
        "load average at start: {}, cpu pressure {}",
        load_average(),
        cpu_pressure()
    );
    // One warm-up copy (first reads, page faults).
    for i in 0..=args.copies {
        let gap = rng.gen_range(args.min_gap_ms..=args.max_gap_ms);
        std::thread::sleep(Duration::from_millis(gap));
        watch_a.drain();
        watch_b.drain();
        let text = format!("latency probe {i} {:016x}", rng.gen::<u64>());
        owner.offer(&text_item(&text))?;
        let t0 = watch_a
            .next(COPY_TIMEOUT)
            .context("no selection event on A")?;
        let t1 = watch_b
            .next(COPY_TIMEOUT)
            .with_context(|| format!("copy {i} did not reach B within {COPY_TIMEOUT:?}"))?;
        let got = sb.wl_paste(None)?;
        if got.as_deref() != Some(text.as_bytes()) {
            bail!(
                "copy {i}: B holds {:?}, expected {text:?}",
                got.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
        if i > 0 {
            lat.push(t1.saturating_duration_since(t0));
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
    println!("## copy-to-paste latency (A selection event -> B selection event)");
    report(
        "clipmesh on Wayland (A -> relay -> B)",
        &mut lat,
        &mut floor,
    );
    drop(owner);

    if args.idle_secs > 0 {
        // Let the last copy's echo read settle before sampling.
        while watch_b.next(Duration::from_millis(500)).is_some() {}
        idle_report(daemon_b.pid(), args.idle_secs)?;
    }
    drop(relay);
    Ok(())
}
