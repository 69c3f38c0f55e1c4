//! [`ClipboardConfig`]: what a backend watches, how much it reads, and (on
//! macOS, where the pasteboard has no change event) how often it looks.

use std::time::Duration;

/// What to watch and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClipboardConfig {
    /// Also watch (and write) the X11 PRIMARY selection, not only CLIPBOARD.
    pub primary: bool,
    /// The largest item the daemon syncs (config `max_item_bytes`). The
    /// watcher reads items up to this size, and always up to
    /// [`DEFAULT_MAX_READ_BYTES`], never more than [`MAX_READ_BYTES`].
    pub max_item_bytes: u64,
    /// Windows: let Windows' own cloud clipboard upload the items clipmesh
    /// writes (config `windows_cloud_clipboard`). Off by default: written
    /// items carry `CanUploadToCloudClipboard` = 0.
    pub windows_cloud_clipboard: bool,
    /// How often the macOS backend reads the pasteboard's change count
    /// (config `poll_interval_ms`); `None` is [`DEFAULT_POLL_INTERVAL`].
    /// Clamped to [`MIN_POLL_INTERVAL`]..=[`MAX_POLL_INTERVAL`]. The other
    /// backends are event-driven and ignore it.
    pub poll_interval: Option<Duration>,
}

/// How often the macOS backend reads the change count by default: 4 cheap
/// calls a second (Hammerspoon's pasteboard watcher uses 250 ms, Maccy
/// 500 ms).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The shortest poll interval accepted.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The longest poll interval accepted.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Items up to this size are always read (whatever `max_item_bytes` says),
/// so the daemon can refuse an oversized item with a message.
pub const DEFAULT_MAX_READ_BYTES: usize = 64 * 1024 * 1024;
/// The watcher never reads more than this for one item (it holds the item in
/// memory; a bitmap source also needs room for its decoded pixels).
pub const MAX_READ_BYTES: usize = 1024 * 1024 * 1024;

impl ClipboardConfig {
    /// The poll interval in use: [`ClipboardConfig::poll_interval`] or the
    /// default, clamped.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
            .unwrap_or(DEFAULT_POLL_INTERVAL)
            .clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
    }

    /// The read bound that follows from [`ClipboardConfig::max_item_bytes`].
    pub fn max_read_bytes(&self) -> usize {
        usize::try_from(self.max_item_bytes)
            .unwrap_or(usize::MAX)
            .clamp(DEFAULT_MAX_READ_BYTES, MAX_READ_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_interval_defaults_and_clamps() {
        let mut c = ClipboardConfig::default();
        assert_eq!(c.poll_interval(), DEFAULT_POLL_INTERVAL);
        c.poll_interval = Some(Duration::from_millis(500));
        assert_eq!(c.poll_interval(), Duration::from_millis(500));
        c.poll_interval = Some(Duration::ZERO);
        assert_eq!(c.poll_interval(), MIN_POLL_INTERVAL);
        c.poll_interval = Some(Duration::from_secs(3600));
        assert_eq!(c.poll_interval(), MAX_POLL_INTERVAL);
    }
}
