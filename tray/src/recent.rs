//! The last synced items, as the tray's "Recent" submenu shows them: a short
//! redacted preview ("text, 42 chars", "image 1280×720", "3 files") and,
//! for items small enough to keep, what it takes to put the item on the
//! clipboard again.
//!
//! Previews never contain clipboard contents: only the kind, a count and
//! for images the size in pixels. Payloads stay in memory only and are
//! bounded: [`RECENT_LEN`] items, each kept only up to [`KEEP_MAX_BYTES`].

use clipmesh_proto::ClipContent;
use std::collections::VecDeque;
use std::path::PathBuf;

/// How many items the submenu lists.
pub const RECENT_LEN: usize = 10;

/// Largest item whose content is kept for "put on the clipboard again";
/// larger ones are listed without it (10 × 8 MiB bounds the memory).
pub const KEEP_MAX_BYTES: u64 = 8 << 20;

/// Which way an item went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Copied on this device and sent.
    Sent,
    /// Received from another device.
    Received,
}

/// What putting an item on the clipboard again takes.
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// Text, HTML or an image, as it was.
    Content(ClipContent),
    /// Local files (copied here, or received into the download folder).
    Files(Vec<PathBuf>),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Clipboard contents and file names never reach a log.
        match self {
            Payload::Content(_) => f.write_str("Payload::Content(..)"),
            Payload::Files(p) => write!(f, "Payload::Files({} paths)", p.len()),
        }
    }
}

/// One listed item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentItem {
    /// Stable id for the menu (counts up, never reused).
    pub id: u64,
    /// Sent or received.
    pub direction: Direction,
    /// The redacted preview.
    pub preview: String,
    /// `None` when the item was too large to keep.
    pub payload: Option<Payload>,
}

impl RecentItem {
    /// The menu label: an arrow for the direction, then the preview.
    pub fn label(&self) -> String {
        let arrow = match self.direction {
            Direction::Sent => "↑",
            Direction::Received => "↓",
        };
        match self.payload {
            Some(_) => format!("{arrow} {}", self.preview),
            None => format!("{arrow} {} (too large to keep)", self.preview),
        }
    }
}

/// The redacted preview of a clip: kind and size, never the content.
pub fn preview(content: &ClipContent) -> String {
    match content {
        ClipContent::Text(t) => format!("text, {}", chars(t)),
        ClipContent::Html { alt_text, .. } => format!("HTML, {}", chars(alt_text)),
        ClipContent::Image { width, height, .. } | ClipContent::ImageBlob { width, height, .. } => {
            format!("image {width}×{height}")
        }
        ClipContent::Files(f) => files(f.len()),
    }
}

/// The preview of a clip and, when it is small enough to keep, its
/// payload. The payload is `None` for blob references (the content is on
/// the relay, not here) and for items over [`KEEP_MAX_BYTES`].
pub fn entry(content: &ClipContent) -> (String, Option<Payload>) {
    let size = clipmesh::config::item_size(content);
    let keep = size <= KEEP_MAX_BYTES && !matches!(content, ClipContent::ImageBlob { .. });
    (
        preview(content),
        keep.then(|| Payload::Content(content.clone())),
    )
}

/// "1 file", "3 files".
pub fn files(n: usize) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

fn chars(s: &str) -> String {
    let n = s.chars().count();
    if n == 1 {
        "1 char".into()
    } else {
        format!("{n} chars")
    }
}

/// The ring of recent items, newest first.
#[derive(Debug, Default, Clone)]
pub struct Recent {
    items: VecDeque<RecentItem>,
    next_id: u64,
}

impl Recent {
    /// Records a clip (text, HTML, image) that was sent or received.
    pub fn push_content(&mut self, direction: Direction, content: &ClipContent) {
        let (preview, payload) = entry(content);
        self.push(direction, preview, payload);
    }

    /// Records a list of local files (copied here, or received).
    pub fn push_files(&mut self, direction: Direction, paths: Vec<PathBuf>) {
        let label = files(paths.len());
        self.push(direction, label, Some(Payload::Files(paths)));
    }

    /// Records an item from its preview and payload (see [`entry`]).
    pub fn push(&mut self, direction: Direction, preview: String, payload: Option<Payload>) {
        // The same item again (re-applied from this menu, or echoed) moves
        // to the top instead of appearing twice.
        if let Some(p) = &payload {
            self.items.retain(|i| i.payload.as_ref() != Some(p));
        }
        self.next_id += 1;
        self.items.push_front(RecentItem {
            id: self.next_id,
            direction,
            preview,
            payload,
        });
        self.items.truncate(RECENT_LEN);
    }

    /// The items, newest first.
    pub fn items(&self) -> impl Iterator<Item = &RecentItem> {
        self.items.iter()
    }

    /// The item with this id, if it is still listed.
    pub fn get(&self, id: u64) -> Option<&RecentItem> {
        self.items.iter().find(|i| i.id == id)
    }

    /// Forgets everything (log out).
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_redacted() {
        let secret = "hunter2 is my password";
        let t = ClipContent::Text(secret.into());
        assert_eq!(preview(&t), "text, 22 chars");
        let h = ClipContent::Html {
            html: "<b>x</b>".into(),
            alt_text: "x".into(),
        };
        assert_eq!(preview(&h), "HTML, 1 char");
        let i = ClipContent::Image {
            width: 1280,
            height: 720,
            png: vec![0; 10],
        };
        assert_eq!(preview(&i), "image 1280×720");
        let mut r = Recent::default();
        r.push_content(Direction::Received, &t);
        let item = r.items().next().unwrap();
        assert_eq!(item.label(), "↓ text, 22 chars");
        assert!(!format!("{item:?}").contains("hunter2"));
    }

    #[test]
    fn keeps_ten_newest_first_and_dedupes() {
        let mut r = Recent::default();
        for n in 0..15 {
            r.push_content(Direction::Sent, &ClipContent::Text("x".repeat(n + 1)));
        }
        let labels: Vec<_> = r.items().map(|i| i.preview.clone()).collect();
        assert_eq!(labels.len(), RECENT_LEN);
        assert_eq!(labels[0], "text, 15 chars");
        assert_eq!(labels[9], "text, 6 chars");
        // The same text again moves to the top, once.
        r.push_content(Direction::Received, &ClipContent::Text("x".repeat(8)));
        let labels: Vec<_> = r.items().map(|i| i.preview.clone()).collect();
        assert_eq!(labels.len(), RECENT_LEN);
        assert_eq!(labels[0], "text, 8 chars");
        assert_eq!(labels.iter().filter(|l| *l == "text, 8 chars").count(), 1);
    }

    #[test]
    fn large_items_are_listed_without_content() {
        let mut r = Recent::default();
        let big = ClipContent::Image {
            width: 4000,
            height: 3000,
            png: vec![0; (KEEP_MAX_BYTES + 1) as usize],
        };
        r.push_content(Direction::Received, &big);
        r.push_files(Direction::Sent, vec!["/tmp/a".into(), "/tmp/b".into()]);
        let items: Vec<_> = r.items().cloned().collect();
        assert_eq!(items[0].label(), "↑ 2 files");
        assert_eq!(items[1].label(), "↓ image 4000×3000 (too large to keep)");
        assert!(items[1].payload.is_none());
        assert_eq!(r.get(items[0].id), Some(&items[0]));
        r.clear();
        assert_eq!(r.items().count(), 0);
    }
}
