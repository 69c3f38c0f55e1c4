//! Peak memory of a process from `/proc` (Linux): the resident set now
//! (`VmRSS`), its peak (`VmHWM`), and resetting that peak so a test can
//! measure from "idle".

use anyhow::{Context, Result};

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Resident set size now, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    Ok(status_kib(pid, "VmRSS:")? * 1024)
}

/// Peak resident set size since start (or the last reset), bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    Ok(status_kib(pid, "VmHWM:")? * 1024)
}

/// Resets the peak to the current resident set (writes 5 to
/// `/proc/<pid>/clear_refs`, Linux ≥ 4.0, same user).
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// One process's memory over a measurement: resident at the start (after
/// resetting the peak) and the peak since.
#[derive(Clone, Copy, Debug)]
pub struct MemoryWindow {
    /// The process.
    pub pid: u32,
    /// Resident bytes at the start.
    pub idle: u64,
}

impl MemoryWindow {
    /// Resets the process's peak and records its resident set.
    pub fn start(pid: u32) -> Result<Self> {
        reset_peak(pid)?;
        Ok(Self {
            pid,
            idle: rss_bytes(pid)?,
        })
    }

    /// Peak resident bytes since [`MemoryWindow::start`].
    pub fn peak(&self) -> Result<u64> {
        peak_rss_bytes(self.pid)
    }

    /// How far the peak rose above the start, bytes.
    pub fn growth(&self) -> Result<u64> {
        Ok(self.peak()?.saturating_sub(self.idle))
    }
}
