//! Deciding what to send and what to apply: dedupe, echo suppression and
//! "newest wins".
//!
//! Sans-IO. The daemon asks [`SyncEngine::on_local`] before publishing a
//! local clipboard change and [`SyncEngine::on_remote`] before applying a
//! received one.
//!
//! - Per origin device, the highest envelope `seq` seen: a clip delivered
//!   twice (replay after reconnect, re-publish after a lost ack) is dropped.
//! - Clips this device sealed itself are never applied (echo).
//! - The hash and [`ClipMeta`] of the clipboard's newest item (whether it
//!   was copied here or applied from elsewhere), and the hash of the last
//!   item seen on the local clipboard. A local change with either hash is
//!   not a change (the watcher re-reading our own write, an application
//!   re-asserting the same data, PRIMARY mirroring CLIPBOARD, the user
//!   copying the same thing again); a remote item with the same hash as the
//!   newest is not applied again. The clipboard backends only drop reads of
//!   their own writes (they alone know what a write reads back as); every
//!   other "is this new?" answer is this one. With three devices this stops every loop: a device
//!   only publishes content that differs from what it last had.
//! - A remote item is applied only if its [`ClipMeta`] is newer than the
//!   clipboard's current item.
//! - A local change read before the last remote item was applied (by this
//!   device's own clock) is stale: the clipboard now holds the remote item,
//!   so publishing the older read would make devices disagree.
//! - Replay protection across restarts: the per-origin sequences and the
//!   newest applied [`ClipMeta`] are restored from [`crate::replay`], and a
//!   remote item is never applied unless it is newer than that floor, nor
//!   when its sealed timestamp is older than the clip TTL.

use clipmesh_proto::content::ClipMeta;
use clipmesh_proto::{ClipContent, DeviceId};
use std::collections::HashMap;

pub use clipmesh_clipboard::local_files_hash;
pub use clipmesh_proto::ContentHash;

/// Hashes a clip's content for dedupe (the one content hash,
/// [`clipmesh_proto::hash`]).
pub fn content_hash(content: &ClipContent) -> ContentHash {
    ContentHash::of(content)
}

/// What to do with a local clipboard change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDecision {
    /// Publish it.
    Send,
    /// Same content as the clipboard already had: nothing to send.
    Unchanged,
    /// Read before a remote item replaced it on the clipboard.
    Stale,
}

/// What to do with a received clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteDecision {
    /// Put it on the clipboard.
    Apply,
    /// Already seen (same origin, sequence not higher).
    Duplicate,
    /// Sealed by this device.
    Echo,
    /// The clipboard already holds exactly this content.
    SameContent,
    /// The clipboard holds something newer, or something newer was applied
    /// before the last restart.
    Older,
    /// Sealed longer ago than the clip TTL: never applied.
    Expired,
}

/// The clipboard's current item as this engine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Current {
    hash: ContentHash,
    meta: ClipMeta,
}

/// Dedupe and ordering state for one device.
#[derive(Debug)]
pub struct SyncEngine {
    /// This device (its own clips are echoes).
    device: DeviceId,
    /// Highest envelope sequence seen per origin device.
    highest: HashMap<DeviceId, u64>,
    /// What is on the clipboard now, if known.
    current: Option<Current>,
    /// When (this device's clock, ms) a remote item was last accepted for
    /// the clipboard.
    applied_at_ms: u64,
    /// Newest item applied from elsewhere, kept across restarts: nothing
    /// that is not newer is applied again.
    newest_applied: Option<ClipMeta>,
    /// Received items sealed longer ago than this are never applied.
    ttl_ms: u64,
    /// Hash of the last item seen on the local clipboard: read by the
    /// watcher, or put there by this device. Reading it again (an
    /// application re-asserting the same data, PRIMARY mirroring
    /// CLIPBOARD, our own write read back) is not a change.
    seen: Option<ContentHash>,
}

/// Default clip TTL: one day.
pub const DEFAULT_CLIP_TTL_MS: u64 = 24 * 60 * 60 * 1000;

impl SyncEngine {
    /// A fresh engine for `device`.
    pub fn new(device: DeviceId) -> Self {
        Self {
            device,
            highest: HashMap::new(),
            current: None,
            applied_at_ms: 0,
            newest_applied: None,
            ttl_ms: DEFAULT_CLIP_TTL_MS,
            seen: None,
        }
    }

    /// Sets the clip TTL.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = ttl_ms;
        self
    }

    /// Restores what an earlier run persisted (see [`crate::replay`]).
    pub fn restore(&mut self, replay: &crate::replay::Replay) {
        for (d, s) in &replay.highest {
            let e = self.highest.entry(*d).or_insert(0);
            *e = (*e).max(*s);
        }
        if let Some(m) = replay.newest_applied {
            if self.newest_applied.is_none_or(|cur| m.is_newer_than(&cur)) {
                self.newest_applied = Some(m);
            }
        }
    }

    /// What must survive a restart.
    pub fn replay_state(&self) -> crate::replay::Replay {
        crate::replay::Replay {
            highest: self.highest.iter().map(|(d, s)| (*d, *s)).collect(),
            newest_applied: self.newest_applied,
        }
    }

    /// Decides about a local change read from the clipboard at
    /// `read_at_ms` (this device's clock) and remembers it as the last item
    /// seen there; does not record it as sent (see
    /// [`SyncEngine::record_sent`]).
    pub fn on_local(&mut self, content: &ClipContent, read_at_ms: u64) -> LocalDecision {
        let hash = content_hash(content);
        let repeat = self.seen.replace(hash) == Some(hash);
        match &self.current {
            _ if repeat => LocalDecision::Unchanged,
            Some(c) if c.hash == hash => LocalDecision::Unchanged,
            _ if read_at_ms < self.applied_at_ms => LocalDecision::Stale,
            _ => LocalDecision::Send,
        }
    }

    /// [`SyncEngine::on_local`] for a copied file list: unchanged when it
    /// repeats the last item seen (by its paths), else sent (a file list is
    /// never stale: it is read from the clipboard as it is now).
    pub fn on_local_files(&mut self, paths: &[std::path::PathBuf]) -> LocalDecision {
        let hash = local_files_hash(paths);
        if self.seen.replace(hash) == Some(hash) {
            LocalDecision::Unchanged
        } else {
            LocalDecision::Send
        }
    }

    /// Records that this device is putting an item with hash `hash` on the
    /// local clipboard (a received item, or received files by
    /// [`local_files_hash`]): the watcher reading it back is not a change.
    pub fn record_applied(&mut self, hash: ContentHash) {
        self.seen = Some(hash);
    }

    /// Records that a local change was sealed with `seq` and published: it
    /// is now the clipboard's current item.
    pub fn record_sent(&mut self, content: &ClipContent, seq: u64, timestamp_ms: u64) {
        self.current = Some(Current {
            hash: content_hash(content),
            meta: ClipMeta {
                origin: self.device,
                seq,
                timestamp_ms,
            },
        });
    }

    /// Records that a local item with content hash `hash`, read at
    /// `timestamp_ms`, is being published: it is now the clipboard's
    /// current item. Its sequence number is left at 0: "newest wins" only
    /// compares sequence numbers of items from the same origin, and this
    /// device's own items are only ever compared with other devices' items.
    pub fn record_sent_hash(&mut self, hash: ContentHash, timestamp_ms: u64) {
        self.current = Some(Current {
            hash,
            meta: ClipMeta {
                origin: self.device,
                seq: 0,
                timestamp_ms,
            },
        });
    }

    /// Records a local change that is not published (send-only switched
    /// off, type disabled, too large): it is still the clipboard's newest
    /// item, so an older remote item must not replace it.
    pub fn record_local_only(&mut self, content: &ClipContent, timestamp_ms: u64) {
        self.current = Some(Current {
            hash: content_hash(content),
            meta: ClipMeta {
                origin: self.device,
                seq: 0,
                timestamp_ms,
            },
        });
    }

    /// Accepts an origin sequence number for display-only consumers
    /// (`watch`): true the first time a given (origin, seq) or a higher one
    /// is seen.
    pub fn accept_seq(&mut self, meta: &ClipMeta) -> bool {
        let h = self.highest.entry(meta.origin).or_insert(0);
        if meta.seq <= *h {
            return false;
        }
        *h = meta.seq;
        true
    }

    /// Decides about a received clip at `now_ms` (this device's clock); on
    /// [`RemoteDecision::Apply`] it becomes the current item.
    pub fn on_remote(
        &mut self,
        meta: ClipMeta,
        content: &ClipContent,
        now_ms: u64,
    ) -> RemoteDecision {
        if meta.origin == self.device {
            return RemoteDecision::Echo;
        }
        if !self.accept_seq(&meta) {
            return RemoteDecision::Duplicate;
        }
        if meta.timestamp_ms.saturating_add(self.ttl_ms) < now_ms {
            return RemoteDecision::Expired;
        }
        if self.newest_applied.is_some_and(|n| !meta.is_newer_than(&n)) {
            return RemoteDecision::Older;
        }
        let hash = content_hash(content);
        if let Some(cur) = &mut self.current {
            if cur.hash == hash {
                if meta.is_newer_than(&cur.meta) {
                    cur.meta = meta;
                }
                return RemoteDecision::SameContent;
            }
            if !meta.is_newer_than(&cur.meta) {
                return RemoteDecision::Older;
            }
        }
        self.current = Some(Current { hash, meta });
        self.applied_at_ms = now_ms;
        self.newest_applied = Some(meta);
        RemoteDecision::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> ClipContent {
        ClipContent::Text(s.into())
    }

    fn meta(origin: u64, seq: u64, ts: u64) -> ClipMeta {
        ClipMeta {
            origin: DeviceId(origin),
            seq,
            timestamp_ms: ts,
        }
    }

    #[test]
    fn hash_depends_on_type_not_only_bytes() {
        let a = text("x");
        let b = ClipContent::Html {
            html: "x".into(),
            alt_text: String::new(),
        };
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_eq!(content_hash(&a), content_hash(&text("x")));
    }

    #[test]
    fn duplicates_and_echoes_are_dropped() {
        let mut e = SyncEngine::new(DeviceId(1));
        assert_eq!(
            e.on_remote(meta(2, 5, 100), &text("a"), 0),
            RemoteDecision::Apply
        );
        assert_eq!(
            e.on_remote(meta(2, 5, 100), &text("a"), 0),
            RemoteDecision::Duplicate
        );
        assert_eq!(
            e.on_remote(meta(2, 4, 200), &text("b"), 0),
            RemoteDecision::Duplicate
        );
        assert_eq!(
            e.on_remote(meta(1, 9, 300), &text("c"), 0),
            RemoteDecision::Echo
        );
    }

    #[test]
    fn applied_item_is_not_sent_back() {
        let mut e = SyncEngine::new(DeviceId(1));
        assert_eq!(
            e.on_remote(meta(2, 1, 100), &text("a"), 0),
            RemoteDecision::Apply
        );
        // The watcher reports our own write (if the clipboard module's
        // suppression missed it): not a change.
        assert_eq!(e.on_local(&text("a"), 0), LocalDecision::Unchanged);
        assert_eq!(e.on_local(&text("b"), 0), LocalDecision::Send);
    }

    #[test]
    fn newest_wins_against_local_clipboard() {
        let mut e = SyncEngine::new(DeviceId(1));
        e.record_sent(&text("mine"), 1, 1_000);
        // A replayed clip copied before our last local change: not applied.
        assert_eq!(
            e.on_remote(meta(2, 3, 900), &text("old"), 0),
            RemoteDecision::Older
        );
        assert_eq!(
            e.on_remote(meta(2, 4, 1_100), &text("new"), 0),
            RemoteDecision::Apply
        );
        // Copying the same thing again after something else was applied is
        // a real change.
        assert_eq!(e.on_local(&text("mine"), 0), LocalDecision::Send);
    }

    #[test]
    fn local_only_items_still_count_for_ordering() {
        let mut e = SyncEngine::new(DeviceId(1));
        e.record_local_only(&text("secret-ish but not sent"), 2_000);
        assert_eq!(
            e.on_remote(meta(2, 1, 1_500), &text("x"), 0),
            RemoteDecision::Older
        );
    }

    /// Three devices, each forwarding what it applies as a "local change"
    /// (the worst case: a clipboard watcher that misses its own writes).
    /// One copy must produce exactly one apply per other device and no
    /// further publishes.
    #[test]
    fn three_devices_do_not_loop() {
        let mut devs: Vec<SyncEngine> = (1..=3).map(|i| SyncEngine::new(DeviceId(i))).collect();
        let mut seqs = [0u64; 3];
        let mut applies = [0u32; 3];
        // (origin index, seq, ts, content)
        let mut wire: Vec<(usize, u64, u64, ClipContent)> = vec![];
        let c = text("hello");
        assert_eq!(devs[0].on_local(&c, 0), LocalDecision::Send);
        seqs[0] += 1;
        devs[0].record_sent(&c, seqs[0], 10);
        wire.push((0, seqs[0], 10, c));
        let mut rounds = 0;
        while let Some((from, seq, ts, content)) = wire.pop() {
            rounds += 1;
            assert!(rounds < 50, "loop detected");
            for i in 0..3 {
                if i == from {
                    continue;
                }
                let m = meta(from as u64 + 1, seq, ts);
                if devs[i].on_remote(m, &content, 0) == RemoteDecision::Apply {
                    applies[i] += 1;
                    // Watcher echo: the applied item comes back as local.
                    if devs[i].on_local(&content, 0) == LocalDecision::Send {
                        seqs[i] += 1;
                        devs[i].record_sent(&content, seqs[i], ts + 1);
                        wire.push((i, seqs[i], ts + 1, content.clone()));
                    }
                }
            }
        }
        assert_eq!(applies, [0, 1, 1]);
        assert_eq!(seqs, [1, 0, 0]);
    }

    #[test]
    fn the_same_local_item_read_again_is_not_a_change() {
        let mut e = SyncEngine::new(DeviceId(1));
        assert_eq!(e.on_local(&text("a"), 10), LocalDecision::Send);
        // Re-asserted by its application, or mirrored by PRIMARY.
        assert_eq!(e.on_local(&text("a"), 20), LocalDecision::Unchanged);
        assert_eq!(e.on_local(&text("b"), 30), LocalDecision::Send);
        // Copied again after something else: a real copy.
        assert_eq!(e.on_local(&text("a"), 40), LocalDecision::Send);
        // Something this device put on the clipboard, read back.
        e.record_applied(content_hash(&text("applied")));
        assert_eq!(e.on_local(&text("applied"), 50), LocalDecision::Unchanged);
        // File lists by their paths.
        let l1 = vec![
            std::path::PathBuf::from("/a"),
            std::path::PathBuf::from("/b"),
        ];
        let l2 = vec![std::path::PathBuf::from("/b")];
        assert_eq!(e.on_local_files(&l1), LocalDecision::Send);
        assert_eq!(e.on_local_files(&l1), LocalDecision::Unchanged);
        assert_eq!(e.on_local_files(&l2), LocalDecision::Send);
        e.record_applied(local_files_hash(&l1));
        assert_eq!(e.on_local_files(&l1), LocalDecision::Unchanged);
    }

    #[test]
    fn tie_on_timestamp_is_broken_the_same_everywhere() {
        let mut a = SyncEngine::new(DeviceId(1));
        let mut b = SyncEngine::new(DeviceId(2));
        a.record_sent(&text("from a"), 1, 500);
        b.record_sent(&text("from b"), 1, 500);
        let ra = a.on_remote(meta(2, 1, 500), &text("from b"), 0);
        let rb = b.on_remote(meta(1, 1, 500), &text("from a"), 0);
        // Device 2 wins the tie: a applies b's item, b keeps its own.
        assert_eq!(ra, RemoteDecision::Apply);
        assert_eq!(rb, RemoteDecision::Older);
    }

    #[test]
    fn local_read_before_a_remote_apply_is_stale() {
        let mut e = SyncEngine::new(DeviceId(1));
        // Remote item accepted at local time 2_000; its own stamp comes from
        // another clock and does not matter here.
        assert_eq!(
            e.on_remote(meta(2, 1, 9_999_999), &text("remote"), 2_000),
            RemoteDecision::Apply
        );
        // Read at 1_999, queued behind the apply: the clipboard no longer
        // holds it.
        assert_eq!(e.on_local(&text("older read"), 1_999), LocalDecision::Stale);
        // Read at or after the apply: a real copy.
        assert_eq!(e.on_local(&text("new copy"), 2_000), LocalDecision::Send);
        assert_eq!(e.on_local(&text("remote"), 1_000), LocalDecision::Unchanged);
    }

    #[test]
    fn replay_after_restart_is_refused() {
        // Before the restart: two clips from device 2 applied.
        let mut e = SyncEngine::new(DeviceId(1));
        assert_eq!(
            e.on_remote(meta(2, 5, 1_000), &text("old password"), 1_000),
            RemoteDecision::Apply
        );
        assert_eq!(
            e.on_remote(meta(2, 6, 2_000), &text("newer"), 2_000),
            RemoteDecision::Apply
        );
        let saved = e.replay_state();
        // After the restart, restored: the relay replays both.
        let mut e = SyncEngine::new(DeviceId(1));
        e.restore(&saved);
        assert_eq!(
            e.on_remote(meta(2, 5, 1_000), &text("old password"), 3_000),
            RemoteDecision::Duplicate
        );
        assert_eq!(
            e.on_remote(meta(2, 6, 2_000), &text("newer"), 3_000),
            RemoteDecision::Duplicate
        );
        // An unseen sequence from another device that is not newer than
        // what was applied is not applied either.
        assert_eq!(
            e.on_remote(meta(3, 1, 1_500), &text("x"), 3_000),
            RemoteDecision::Older
        );
        assert_eq!(
            e.on_remote(meta(3, 2, 2_500), &text("y"), 3_000),
            RemoteDecision::Apply
        );
        // Without the restored state the replay would have been applied.
        let mut fresh = SyncEngine::new(DeviceId(1));
        assert_eq!(
            fresh.on_remote(meta(2, 5, 1_000), &text("old password"), 3_000),
            RemoteDecision::Apply
        );
    }

    #[test]
    fn clips_older_than_the_ttl_are_never_applied() {
        let mut e = SyncEngine::new(DeviceId(1)).with_ttl_ms(1_000);
        assert_eq!(
            e.on_remote(meta(2, 1, 10_000), &text("a"), 11_001),
            RemoteDecision::Expired
        );
        assert_eq!(
            e.on_remote(meta(2, 2, 10_000), &text("a"), 11_000),
            RemoteDecision::Apply
        );
        let mut d = SyncEngine::new(DeviceId(1));
        let day = DEFAULT_CLIP_TTL_MS;
        assert_eq!(
            d.on_remote(meta(2, 1, 5), &text("b"), 5 + day + 1),
            RemoteDecision::Expired
        );
    }
}
