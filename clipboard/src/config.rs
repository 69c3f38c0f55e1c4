//! [`ClipboardConfig`]: what a backend watches and how much it reads.

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
}

/// Items up to this size are always read (whatever `max_item_bytes` says),
/// so the daemon can refuse an oversized item with a message.
pub const DEFAULT_MAX_READ_BYTES: usize = 64 * 1024 * 1024;
/// The watcher never reads more than this for one item (it holds the item in
/// memory; a bitmap source also needs room for its decoded pixels).
pub const MAX_READ_BYTES: usize = 1024 * 1024 * 1024;

impl ClipboardConfig {
    /// The read bound that follows from [`ClipboardConfig::max_item_bytes`].
    pub fn max_read_bytes(&self) -> usize {
        usize::try_from(self.max_item_bytes)
            .unwrap_or(usize::MAX)
            .clamp(DEFAULT_MAX_READ_BYTES, MAX_READ_BYTES)
    }
}
