//! Echo suppression and duplicate detection for clipboard changes (sans-IO).
//!
//! The OS tells us "the clipboard changed" (an X11 owner change, a macOS
//! changeCount bump, ...). That is only a hint: the new owner may be
//! ourselves (we just applied a remote item), an application re-asserting
//! ownership of the same data, or the PRIMARY selection echoing what was
//! just copied to CLIPBOARD. The watcher therefore re-reads the content,
//! hashes it, and asks the [`Deduper`] whether it is news.
//!
//! Rules, in order, for an observed hash `h`:
//!
//! 1. `h` equals the last thing seen on the clipboard (read or applied):
//!    not news. It is an [`Verdict::Echo`] if it is the item we applied
//!    last, else a [`Verdict::Duplicate`].
//! 2. Otherwise it is a new local item: [`Verdict::Emit`]. It becomes the
//!    last seen item and the "last applied" marker is forgotten, so copying
//!    an earlier remote item again later is synced like any other copy.
//!
//! Applying a remote item records it as both last applied and last seen
//! *before* the OS clipboard is claimed, so the owner-change event our own
//! claim causes is always recognised as an echo.

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
                    files_hash(&paths),
                    crate::LocalEvent::Files(crate::LocalFiles { paths, at_ms }),
                )
            }
        }
    }
}

/// Hashes a local file list (what [`crate::LocalFiles`] carries): the paths'
/// bytes in order, under their own domain.
pub(crate) fn files_hash(paths: &[std::path::PathBuf]) -> ContentHash {
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
    /// A new local item: send it.
    Emit,
    /// The item this device applied last, seen again: drop it.
    Echo,
    /// Same as the last item seen (owner re-asserted, PRIMARY mirror): drop it.
    Duplicate,
}

/// Remembers the last applied and last seen item.
#[derive(Debug, Default)]
pub(crate) struct Deduper {
    /// Hash of the last remote item put on the clipboard, until a different
    /// item is seen.
    last_applied: Option<ContentHash>,
    /// Hash of the last item on the clipboard, whoever put it there.
    last_seen: Option<ContentHash>,
}

impl Deduper {
    /// Records that we are about to put `h` on the clipboard.
    pub(crate) fn applied(&mut self, h: ContentHash) {
        self.last_applied = Some(h);
        self.last_seen = Some(h);
    }

    /// Classifies an item read from the clipboard after a change hint.
    pub(crate) fn observe(&mut self, h: ContentHash) -> Verdict {
        if self.last_seen == Some(h) {
            return if self.last_applied == Some(h) {
                Verdict::Echo
            } else {
                Verdict::Duplicate
            };
        }
        self.last_applied = None;
        self.last_seen = Some(h);
        Verdict::Emit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ContentHash {
        content_hash(&ClipContent::Text(s.into()))
    }

    #[test]
    fn new_items_are_emitted_once() {
        let mut d = Deduper::default();
        assert_eq!(d.observe(text("a")), Verdict::Emit);
        assert_eq!(d.observe(text("a")), Verdict::Duplicate);
        assert_eq!(d.observe(text("b")), Verdict::Emit);
        assert_eq!(d.observe(text("a")), Verdict::Emit);
    }

    #[test]
    fn applied_item_is_an_echo_however_often_it_is_seen() {
        let mut d = Deduper::default();
        d.applied(text("remote"));
        assert_eq!(d.observe(text("remote")), Verdict::Echo);
        assert_eq!(d.observe(text("remote")), Verdict::Echo);
    }

    #[test]
    fn echo_suppression_ends_when_something_else_is_copied() {
        let mut d = Deduper::default();
        d.applied(text("remote"));
        assert_eq!(d.observe(text("local")), Verdict::Emit);
        // The user copies the earlier remote item again: that is a real copy.
        assert_eq!(d.observe(text("remote")), Verdict::Emit);
    }

    #[test]
    fn applying_over_an_unseen_echo_still_suppresses_it() {
        // Two remote items applied back to back; the owner-change event of the
        // first is only handled after the second was applied, so the read
        // returns the second item.
        let mut d = Deduper::default();
        d.applied(text("one"));
        d.applied(text("two"));
        assert_eq!(d.observe(text("two")), Verdict::Echo);
        assert_eq!(d.observe(text("two")), Verdict::Echo);
    }

    #[test]
    fn local_copy_of_same_text_after_apply_of_other_is_emitted() {
        let mut d = Deduper::default();
        assert_eq!(d.observe(text("x")), Verdict::Emit);
        d.applied(text("y"));
        assert_eq!(d.observe(text("x")), Verdict::Emit);
    }

    #[test]
    fn file_lists_hash_by_paths_and_apart_from_text() {
        use std::path::PathBuf;
        let l1 = vec![PathBuf::from("/a"), PathBuf::from("/b")];
        let l2 = vec![PathBuf::from("/b"), PathBuf::from("/a")];
        assert_eq!(files_hash(&l1), files_hash(&l1.clone()));
        assert_ne!(files_hash(&l1), files_hash(&l2));
        assert_ne!(
            files_hash(&[PathBuf::from("/a")]),
            content_hash(&ClipContent::Text("/a".into()))
        );
        let mut d = Deduper::default();
        d.applied(files_hash(&l1));
        assert_eq!(d.observe(files_hash(&l1)), Verdict::Echo);
        assert_eq!(d.observe(files_hash(&l2)), Verdict::Emit);
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
