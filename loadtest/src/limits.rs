//! Process limits the load tool needs: many file descriptors.

use anyhow::Context;
use rlimit::Resource;

/// Raises `RLIMIT_NOFILE` as far as allowed (the hard limit, raised to the
/// kernel's `fs.nr_open` when running as root) and returns the new soft
/// limit.
pub fn raise_nofile() -> anyhow::Result<u64> {
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit")?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let want = nr_open.max(hard);
    if want > soft && Resource::NOFILE.set(want, want).is_ok() {
        return Ok(want);
    }
    // Not root: the hard limit is as far as we may go.
    if hard > soft {
        Resource::NOFILE.set(hard, hard).context("setrlimit")?;
        return Ok(hard);
    }
    Ok(soft)
}
