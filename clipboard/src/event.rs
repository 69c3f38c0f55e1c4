//! What a backend reports: one [`LocalEvent`] per new local copy.

use clipmesh_proto::ClipContent;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new item copied on this device.
#[derive(Clone, Debug)]
pub struct LocalChange {
    /// What was copied.
    pub content: ClipContent,
    /// When the change was seen, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A file list copied on this device (in a file manager): local paths whose
/// contents the daemon reads, and sends, itself.
#[derive(Clone)]
pub struct LocalFiles {
    /// Absolute local paths, files or directories, in the order offered.
    pub paths: Vec<PathBuf>,
    /// When the change was seen, in ms since the Unix epoch.
    pub at_ms: u64,
}

impl std::fmt::Debug for LocalFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // File names are clipboard contents: count only.
        write!(
            f,
            "LocalFiles {{ paths: {}, at_ms: {} }}",
            self.paths.len(),
            self.at_ms
        )
    }
}

/// What the watcher reports: one item per new local copy.
#[derive(Clone, Debug)]
pub enum LocalEvent {
    /// Content that travels as it is (text, HTML, an image as PNG).
    Clip(LocalChange),
    /// A copied file list.
    Files(LocalFiles),
}

impl From<LocalChange> for LocalEvent {
    fn from(c: LocalChange) -> Self {
        Self::Clip(c)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970): the
/// `at_ms` a watcher stamps on what it read.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
