//! Process and machine figures for the benchmark tools: percentiles of
//! latencies, CPU time, context switches (wake-ups) and memory of a process
//! from `/proc`, and the machine's load.
//!
//! (`clipmesh-latency` and `clipmesh-wl-latency` use these.)

use anyhow::{Context, Result};
use std::time::Duration;

/// `some avg10` of /proc/pressure/cpu: % of time runnable tasks waited for a CPU.
pub fn cpu_pressure() -> String {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "n/a".into())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// Prints p50, p90, p99, max, min and mean of `lat` (sorted in place).
pub fn summary(name: &str, lat: &mut [Duration]) {
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

/// The `p`th percentile (nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU ticks (utime + stime) of a process, all threads.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
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
pub fn cpu_ns(pid: u32) -> Result<u64> {
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

/// Context switches per thread: (`name (tid)`, voluntary, involuntary).
/// A thread that ends while it is read is left out.
pub fn ctxt_switches(pid: u32) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = entry?.path();
        let (Ok(status), Ok(name)) = (
            std::fs::read_to_string(dir.join("status")),
            std::fs::read_to_string(dir.join("comm")),
        ) else {
            continue;
        };
        let name = name.trim();
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

/// The start times (since the call) of the wake-ups of `pid` over `span`:
/// see [`idle_report`].
pub fn sample_wakes(pid: u32, span: Duration) -> Result<Vec<Duration>> {
    let started = std::time::Instant::now();
    let counts = |v: Vec<(String, u64, u64)>| -> std::collections::HashMap<String, u64> {
        v.into_iter().map(|(k, a, b)| (k, a + b)).collect()
    };
    let mut prev = counts(ctxt_switches(pid)?);
    let mut busy = false;
    let mut wakes = Vec::new();
    // Bounded by `span`; sleeping between samples is the point here.
    while started.elapsed() < span {
        std::thread::sleep(WAKE_SAMPLE);
        let now = counts(ctxt_switches(pid)?);
        let grew = now.iter().any(|(k, n)| prev.get(k).is_none_or(|p| n > p));
        if grew && !busy {
            wakes.push(started.elapsed());
        }
        busy = grew;
        prev = now;
    }
    Ok(wakes)
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS:`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

/// How often [`idle_report`] samples the threads' context switches.
pub const WAKE_SAMPLE: Duration = Duration::from_millis(10);

/// Samples process `pid` for `secs` with nothing happening and prints its
/// CPU time (ticks and schedstat), its context switches per thread, its
/// wake-ups and its memory.
///
/// Wake-ups are counted as bursts: every [`WAKE_SAMPLE`] the tool reads each
/// thread's context switches, and a sample in which any thread's count grew
/// (or a new thread appeared), after one in which none did, is one wake-up.
/// One wake-up of a thread can be several context switches: under Wine
/// every call into wineserver blocks on a pipe and counts as one, so the
/// raw switch count is not comparable across platforms; the burst count is.
pub fn idle_report(pid: u32, secs: u64) -> Result<()> {
    let cpu0 = cpu_ticks(pid)?;
    let ns0 = cpu_ns(pid)?;
    let sw0 = ctxt_switches(pid)?;
    let started = std::time::Instant::now();
    let wakes = sample_wakes(pid, Duration::from_secs(secs))?;
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
    println!("context switches, all threads: {total}");
    let at: Vec<String> = wakes
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    println!(
        "wake-ups (bursts of context switches, sampled every {} ms): {} at [{}] s",
        WAKE_SAMPLE.as_millis(),
        wakes.len(),
        at.join(", ")
    );
    println!(
        "memory: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}
