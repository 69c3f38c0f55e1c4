//! Recognising our own writes read back (sans-IO), and the hashes the
//! watchers stamp on what they read.
//!
//! The OS tells us "the clipboard changed" (an X11 owner change, a macOS
//! changeCount bump, a `WM_CLIPBOARDUPDATE`...). When the new content is an
//! item this backend just wrote for the device engine, the watcher must
//! not report it as a local copy. Only the backend can tell: it knows what
//! its write reads back as (a file list through a `text/uri-list` round
//! trip, an image through the platform's bitmap formats). So [`OwnWrites`]
//! remembers the hash of the read-back form of the last item written, and
//! a read with that hash is an [`Verdict::Echo`] until a different item is
//! read.
//!
//! Everything else (is this item new, a repeat of what the clipboard held,
//! or stale?) is the device engine's one decision (the client's
//! `sync.rs`), over the same content hash; the watcher reports every other
//! read.
//!
//! A write records its hash *before* the OS clipboard is claimed, so the
//! change event our own claim causes is always recognised.

use clipmesh_proto::{ClipContent, ContentHash, ContentHasher};

/// Hashes what a receiver would see of `content` (the one content hash,
/// [`clipmesh_proto::hash`]: type and every field; images and files by the
/// SHA-256 of their bytes).
pub(crate) fn content_hash(content: &ClipContent) -> ContentHash {
    ContentHash::of(content)
}

/// What one read of a selection found (either backend's watcher).
#[derive(Debug)]
pub(crate) enum ReadItem {
    /// Text, HTML or an image.
    Content(ClipContent),
    /// A file list (local paths).
    Files(Vec<std::path::PathBuf>),
}

impl ReadItem {
    /// Its dedupe hash, and the event for the daemon stamped `at_ms`.
    pub(crate) fn into_event(self, at_ms: u64) -> (ContentHash, crate::LocalEvent) {
        match self {
            Self::Content(content) => {
                tracing::trace!(
                    kind = content.kind_name(),
                    len = content.payload_len(),
                    "clipboard change"
                );
                (
                    content_hash(&content),
                    crate::LocalEvent::Clip(crate::LocalChange { content, at_ms }),
                )
            }
            Self::Files(paths) => {
                tracing::trace!(count = paths.len(), "clipboard change: file list");
                (
                    local_files_hash(&paths),
                    crate::LocalEvent::Files(crate::LocalFiles { paths, at_ms }),
                )
            }
        }
    }
}

/// Hashes a local file list (what [`crate::LocalFiles`] carries): the paths'
/// bytes in order, under their own domain. The device engine uses it too,
/// to tell a repeated file list from a new one.
pub fn local_files_hash(paths: &[std::path::PathBuf]) -> ContentHash {
    let mut h = ContentHasher::new("local files");
    h.u64(paths.len() as u64);
    for p in paths {
        h.bytes(p.as_os_str().as_encoded_bytes());
    }
    h.finish()
}

/// What to do with an observed clipboard item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not our own write: report it to the engine.
    Emit,
    /// The item this backend wrote last, read back: drop it.
    Echo,
}

/// How many of this backend's latest writes [`OwnWrites`] remembers.
const OWN_WRITES_KEPT: usize = 4;

/// Remembers the items this backend wrote lately, until something else is
/// read.
///
/// More than the last one: the engine can apply two items back to back
/// (a text, then an image), and the watcher may read the first one's
/// change only after the second was recorded but before it is on the
/// clipboard. With only the last write remembered, that read of the first
/// item looked like a copy and was sent back (seen in the ClipCascade
/// end-to-end test on a loaded machine).
#[derive(Debug, Default)]
pub(crate) struct OwnWrites {
    /// Hashes of the read-back forms of the latest writes, oldest first.
    recent: std::collections::VecDeque<ContentHash>,
}

impl OwnWrites {
    /// Records that we are about to put an item reading back as `h` on the
    /// clipboard.
    pub(crate) fn applied(&mut self, h: ContentHash) {
        if self.recent.len() == OWN_WRITES_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(h);
    }

    /// Classifies an item read from the clipboard after a change hint. An
    /// echo of a write also forgets the writes before it (the clipboard has
    /// moved past them); anything else forgets them all.
    pub(crate) fn observe(&mut self, h: ContentHash) -> Verdict {
        match self.recent.iter().rposition(|w| *w == h) {
            Some(i) => {
                self.recent.drain(..i);
                Verdict::Echo
            }
            None => {
                self.recent.clear();
                Verdict::Emit
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ContentHash {
        content_hash(&ClipContent::Text(s.into()))
    }

    #[test]
    fn reads_that_are_not_our_writes_are_all_reported() {
        // A repeat of the same item is the engine's to judge (sync.rs).
        let mut d = OwnWrites::default();
        assert_eq!(d.observe(text("a")), Verdict::Emit);
        assert_eq!(d.observe(text("a")), Verdict::Emit);
        assert_eq!(d.observe(text("b")), Verdict::Emit);
    }

    #[test]
    fn applied_item_is_an_echo_however_often_it_is_seen() {
        let mut d = OwnWrites::default();
        d.applied(text("remote"));
        assert_eq!(d.observe(text("remote")), Verdict::Echo);
        assert_eq!(d.observe(text("remote")), Verdict::Echo);
    }

    #[test]
    fn echo_suppression_ends_when_something_else_is_copied() {
        let mut d = OwnWrites::default();
        d.applied(text("remote"));
        assert_eq!(d.observe(text("local")), Verdict::Emit);
        // The user copies the earlier remote item again: that is a real copy.
        assert_eq!(d.observe(text("remote")), Verdict::Emit);
    }

    #[test]
    fn first_of_two_back_to_back_writes_read_late_is_still_an_echo() {
        // The first write's change is read after the second was recorded
        // but before it reached the clipboard: both reads are echoes.
        let mut d = OwnWrites::default();
        d.applied(text("one"));
        d.applied(text("two"));
        assert_eq!(d.observe(text("one")), Verdict::Echo);
        assert_eq!(d.observe(text("two")), Verdict::Echo);
        // The clipboard moved past "one": copying it again is a real copy.
        assert_eq!(d.observe(text("one")), Verdict::Emit);
    }

    #[test]
    fn only_the_latest_writes_are_remembered() {
        let mut d = OwnWrites::default();
        for i in 0..=OWN_WRITES_KEPT {
            d.applied(text(&format!("w{i}")));
        }
        assert_eq!(d.observe(text("w0")), Verdict::Emit);
    }

    #[test]
    fn applying_over_an_unseen_echo_still_suppresses_it() {
        // Two remote items applied back to back; the owner-change event of the
        // first is only handled after the second was applied, so the read
        // returns the second item.
        let mut d = OwnWrites::default();
        d.applied(text("one"));
        d.applied(text("two"));
        assert_eq!(d.observe(text("two")), Verdict::Echo);
        assert_eq!(d.observe(text("two")), Verdict::Echo);
    }

    #[test]
    fn local_copy_of_same_text_after_apply_of_other_is_emitted() {
        let mut d = OwnWrites::default();
        assert_eq!(d.observe(text("x")), Verdict::Emit);
        d.applied(text("y"));
        assert_eq!(d.observe(text("x")), Verdict::Emit);
    }

    #[test]
    fn file_lists_hash_by_paths_and_apart_from_text() {
        use std::path::PathBuf;
        let l1 = vec![PathBuf::from("/a"), PathBuf::from("/b")];
        let l2 = vec![PathBuf::from("/b"), PathBuf::from("/a")];
        assert_eq!(local_files_hash(&l1), local_files_hash(&l1.clone()));
        assert_ne!(local_files_hash(&l1), local_files_hash(&l2));
        assert_ne!(
            local_files_hash(&[PathBuf::from("/a")]),
            content_hash(&ClipContent::Text("/a".into()))
        );
        let mut d = OwnWrites::default();
        d.applied(local_files_hash(&l1));
        assert_eq!(d.observe(local_files_hash(&l1)), Verdict::Echo);
        assert_eq!(d.observe(local_files_hash(&l2)), Verdict::Emit);
    }

    #[test]
    fn hash_distinguishes_kind_and_fields() {
        let t = content_hash(&ClipContent::Text("a".into()));
        let h1 = content_hash(&ClipContent::Html {
            html: "a".into(),
            alt_text: String::new(),
        });
        let h2 = content_hash(&ClipContent::Html {
            html: String::new(),
            alt_text: "a".into(),
        });
        assert_ne!(t, h1);
        assert_ne!(h1, h2);
        assert_eq!(t, content_hash(&ClipContent::Text("a".into())));
    }
}
