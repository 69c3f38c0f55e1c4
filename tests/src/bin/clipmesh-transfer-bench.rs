//! `clipmesh-transfer-bench`: large items end to end through a local relay.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/clipmesh-transfer-bench [--runs 3] [--size-mib 100]
//! ```
//!
//! Setup: a relay on 127.0.0.1:0, two devices of one user, each daemon on
//! its own Xvfb display, files switched on, B's download folder in a temp
//! dir (all release builds when run from target/release).
//!
//! - **File throughput**: a file of random bytes is written first (not
//!   timed), then copied on A as a `text/uri-list` with `xclip`. Timed from
//!   just before xclip runs until the file appears under its final name in
//!   B's download folder (it is renamed into place only after its digest
//!   checked out), and until B's daemon claims B's CLIPBOARD (paste-ready,
//!   XFixes owner-change event). Throughput = size / time to the file.
//!   Before each run the peak RSS (`VmHWM`) of the relay and both daemons
//!   is reset and dirty pages are flushed (`sync`); the report gives idle
//!   RSS and the peak during the run.
//! - **Screenshot**: a 5 MiB PNG of random pixels is served on A (by this
//!   tool's selection owner, with INCR in 256 KiB pieces). Timed from taking
//!   A's CLIPBOARD until B's daemon claims B's CLIPBOARD, then B's image is
//!   read back and its pixels checked (not timed).
//!
//! Medians over `--runs` runs (at least 3).

use anyhow::{bail, Context, Result};
use clipmesh_tests::payload::{file_sha256, find_received, random_file, random_image};
use clipmesh_tests::procstat::{cpu_ticks, load_average};
use clipmesh_tests::rss::MemoryWindow;
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xsel::{SelectionOwner, SelectionWatcher};
use clipmesh_tests::xvfb::{xclip_offer, xclip_read};
use clipmesh_tests::{Device, Relay, Xvfb};
use image::ImageFormat;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest one large item may take.
const ITEM_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    runs: usize,
    size_mib: usize,
    rust_log: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 3,
        size_mib: 100,
        rust_log: "warn".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = val()?.parse()?,
            "--size-mib" => a.size_mib = val()?.parse()?,
            "--rust-log" => a.rust_log = val()?,
            "-h" | "--help" => {
                println!("clipmesh-transfer-bench [--runs 3] [--size-mib 100] [--rust-log warn]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if a.runs < 3 {
        bail!("--runs must be at least 3 (medians)");
    }
    Ok(a)
}

fn enable_files(dev: &Device, dl: &Path) -> Result<()> {
    let path = dev.config_dir.join("config.toml");
    let mut cfg = std::fs::read_to_string(&path)?;
    // `login` writes every [sync] key; replace the one we change.
    cfg = cfg
        .lines()
        .filter(|l| !l.starts_with("files =") && !l.starts_with("download_dir ="))
        .collect::<Vec<_>>()
        .join("\n");
    let lines = format!("files = true\ndownload_dir = \"{}\"\n", dl.display());
    // (The header comment also mentions "[sync]": match the table line.)
    if cfg.contains("\n[sync]\n") {
        cfg = cfg.replacen("\n[sync]\n", &format!("\n[sync]\n{lines}"), 1);
    } else {
        cfg.push_str(&format!("\n[sync]\n{lines}"));
    }
    std::fs::write(&path, cfg)?;
    Ok(())
}

/// CPU time (user + system) a process has used so far, in ms (0 if
/// unreadable; 100 clock ticks a second on Linux).
fn cpu_ms(pid: u32) -> u64 {
    cpu_ticks(pid).map_or(0, |t| t * 10)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn main() -> Result<()> {
    let args = parse_args()?;
    clipmesh_tests::xvfb::require_xclip()?;
    let tmp = tempfile::tempdir()?;
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let data = tmp.path().join("relay-data");
    std::fs::create_dir_all(&data)?;
    let dl = tmp.path().join("b-downloads");
    let src_dir = tmp.path().join("a-files");
    std::fs::create_dir_all(&src_dir)?;
    let relay = Relay::start(&data, &logs.join("relay.log"), 0, &args.rust_log)?;
    let url = relay.url();
    let pw = "transfer bench password";
    let dev_a = Device::new(tmp.path(), &logs, "a")?;
    dev_a.signup(&url, "bench", pw, &args.rust_log)?;
    let dev_b = Device::new(tmp.path(), &logs, "b")?;
    dev_b.login(&url, "bench", pw, &args.rust_log)?;
    enable_files(&dev_a, &tmp.path().join("a-downloads"))?;
    enable_files(&dev_b, &dl)?;
    let xa = Xvfb::start()?;
    let xb = Xvfb::start()?;
    let mut b_events = SelectionWatcher::connect(&xb.display())?;
    let daemon_a = dev_a.run(&xa.display(), &args.rust_log)?;
    let daemon_b = dev_b.run(&xb.display(), &args.rust_log)?;
    for (dev, d) in [(&dev_a, &daemon_a), (&dev_b, &daemon_b)] {
        if let Err(e) = dev.wait_connected(STEP) {
            let log = std::fs::read_to_string(&d.log).unwrap_or_default();
            bail!("{e:#}; daemon log:\n{log}");
        }
    }
    let pids = [
        ("relay", relay.pid()),
        ("client A", daemon_a.pid()),
        ("client B", daemon_b.pid()),
    ];
    println!("load average at start: {}", load_average());

    let size = args.size_mib << 20;
    let mut tput = Vec::new();
    let mut to_file = Vec::new();
    let mut to_paste = Vec::new();
    let mut peaks: Vec<Vec<(u64, u64)>> = vec![Vec::new(); pids.len()];
    for run in 0..args.runs {
        let name = format!("run{run}.bin");
        let src = src_dir.join(&name);
        let want = random_file(&src, size)?;
        let windows = pids
            .iter()
            .map(|&(_, pid)| MemoryWindow::start(pid))
            .collect::<Result<Vec<_>>>()?;
        // Flush the previous run's received and relay-side bytes to disk
        // first, so their writeback does not run inside this run.
        let _ = std::process::Command::new("sync").status();
        let cpu0: Vec<u64> = pids.iter().map(|&(_, pid)| cpu_ms(pid)).collect();
        b_events.drain()?;
        let t0 = Instant::now();
        xclip_offer(
            &xa.display(),
            "text/uri-list",
            format!("file://{}\r\n", src.display()).as_bytes(),
        )?;
        let got = poll_until(
            "the file on B",
            ITEM_TIMEOUT,
            Duration::from_millis(2),
            || find_received(&dl, &name),
        )?;
        let t_file = t0.elapsed();
        let t_paste = match b_events.next_change(ITEM_TIMEOUT)? {
            Some(c) => c.at.saturating_duration_since(t0),
            None => bail!("B never claimed its clipboard after the file arrived"),
        };
        let cpu: Vec<String> = pids
            .iter()
            .zip(&cpu0)
            .map(|(&(who, pid), c0)| format!("{who} {} ms", cpu_ms(pid).saturating_sub(*c0)))
            .collect();
        if file_sha256(&got)? != want {
            bail!("run {run}: SHA-256 of the received file differs");
        }
        for (i, w) in windows.iter().enumerate() {
            peaks[i].push((w.idle, w.peak()?));
        }
        let secs = t_file.as_secs_f64();
        tput.push(args.size_mib as f64 / secs);
        to_file.push(secs * 1000.0);
        to_paste.push(t_paste.as_secs_f64() * 1000.0);
        println!(
            "file run {run}: {:.0} ms to the file ({:.0} MiB/s), {:.0} ms to paste-ready; CPU {}; peaks {}",
            secs * 1000.0,
            args.size_mib as f64 / secs,
            t_paste.as_secs_f64() * 1000.0,
            cpu.join(", "),
            windows
                .iter()
                .zip(&pids)
                .map(|(w, (who, _))| format!(
                    "{who} {:.0}->{:.0} MiB",
                    mib(w.idle),
                    mib(w.peak().unwrap_or(0))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::fs::remove_file(&src)?;
        if let Some(folder) = got.parent() {
            std::fs::remove_dir_all(folder)?;
        }
    }

    let owner = SelectionOwner::connect(&xa.display())?;
    owner.set_incr_chunk(Some(256 << 10));
    let mut shot = Vec::new();
    let mut png_len = 0;
    for run in 0..args.runs {
        let (img, png) = random_image()?;
        png_len = png.len();
        b_events.drain()?;
        let t0 = Instant::now();
        owner.set(&[("image/png", &png)])?;
        let t1 = match b_events.next_change(ITEM_TIMEOUT)? {
            Some(c) => c.at.saturating_duration_since(t0),
            None => bail!("run {run}: the screenshot never reached B"),
        };
        let back = xclip_read(&xb.display(), "image/png")?.context("B serves no image/png")?;
        let back = image::load_from_memory_with_format(&back, ImageFormat::Png)?;
        if back.to_rgba8() != img {
            bail!("run {run}: B's image has different pixels");
        }
        shot.push(t1.as_secs_f64() * 1000.0);
        println!(
            "screenshot run {run}: {:.0} ms copy to paste-ready ({} bytes PNG)",
            t1.as_secs_f64() * 1000.0,
            png.len()
        );
    }

    println!("load average at end: {}", load_average());
    println!();
    println!("| measure ({} runs, median) | value |", args.runs);
    println!("|---|---|");
    println!(
        "| {} MiB file: copy on A to verified file on B | {:.0} ms |",
        args.size_mib,
        median(&mut to_file)
    );
    println!(
        "| {} MiB file: end-to-end throughput | {:.0} MiB/s |",
        args.size_mib,
        median(&mut tput)
    );
    println!(
        "| {} MiB file: copy on A to paste-ready on B | {:.0} ms |",
        args.size_mib,
        median(&mut to_paste)
    );
    for (i, (who, _)) in pids.iter().enumerate() {
        let mut idle: Vec<f64> = peaks[i].iter().map(|p| mib(p.0)).collect();
        let mut peak: Vec<f64> = peaks[i].iter().map(|p| mib(p.1)).collect();
        println!(
            "| {who}: idle RSS / peak RSS during the file | {:.1} / {:.1} MiB |",
            median(&mut idle),
            median(&mut peak)
        );
    }
    println!(
        "| {:.1} MiB screenshot: copy on A to paste-ready on B | {:.0} ms |",
        mib(png_len as u64),
        median(&mut shot)
    );
    Ok(())
}
