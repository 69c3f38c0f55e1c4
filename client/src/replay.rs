//! Replay state that survives restarts: per origin device, the highest
//! envelope sequence accepted, and the newest clip applied to the clipboard.
//!
//! Without it a daemon starts with an empty map, and a hostile relay can
//! replay a weeks-old envelope (a copied password) right after a restart.
//! With it, a replayed envelope is a duplicate whatever the relay does, and
//! [`crate::sync::SyncEngine`] never applies a clip that is not newer than
//! the newest one applied before the restart, nor one older than the clip
//! TTL (`sync.clip_ttl_s`, default one day).
//!
//! The file holds device ids, sequence numbers and timestamps only: no
//! content and no content hash (a hash of a short secret would let anyone
//! who reads the disk test guesses). Saves merge with what is on disk by
//! taking maxima, so two processes on one config directory never move it
//! backwards. A corrupt file is reported and treated as empty.

use clipmesh_proto::content::ClipMeta;
use clipmesh_proto::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the replay state file in the config directory.
pub const REPLAY_FILE: &str = "replay.json";

/// The newest applied clip, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct MetaOnDisk {
    origin: u64,
    seq: u64,
    timestamp_ms: u64,
}

impl From<ClipMeta> for MetaOnDisk {
    fn from(m: ClipMeta) -> Self {
        Self {
            origin: m.origin.0,
            seq: m.seq,
            timestamp_ms: m.timestamp_ms,
        }
    }
}

impl From<MetaOnDisk> for ClipMeta {
    fn from(m: MetaOnDisk) -> Self {
        Self {
            origin: DeviceId(m.origin),
            seq: m.seq,
            timestamp_ms: m.timestamp_ms,
        }
    }
}

/// On-disk form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct OnDisk {
    /// Highest accepted sequence per origin device id (keys are decimal
    /// strings in JSON).
    highest: BTreeMap<u64, u64>,
    /// Newest clip applied to the clipboard.
    newest_applied: Option<MetaOnDisk>,
}

/// The replay state of one config directory, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Highest accepted sequence per origin device.
    pub highest: BTreeMap<DeviceId, u64>,
    /// Newest clip applied to the clipboard.
    pub newest_applied: Option<ClipMeta>,
}

impl Replay {
    /// Merges `other` in, keeping the maximum of everything.
    pub fn merge(&mut self, other: &Replay) {
        for (d, s) in &other.highest {
            let e = self.highest.entry(*d).or_insert(0);
            *e = (*e).max(*s);
        }
        self.newest_applied = match (self.newest_applied, other.newest_applied) {
            (Some(a), Some(b)) => Some(if b.is_newer_than(&a) { b } else { a }),
            (a, b) => a.or(b),
        };
    }

    fn to_disk(&self) -> OnDisk {
        OnDisk {
            highest: self.highest.iter().map(|(d, s)| (d.0, *s)).collect(),
            newest_applied: self.newest_applied.map(Into::into),
        }
    }

    fn from_disk(d: OnDisk) -> Self {
        Self {
            highest: d
                .highest
                .into_iter()
                .map(|(d, s)| (DeviceId(d), s))
                .collect(),
            newest_applied: d.newest_applied.map(Into::into),
        }
    }
}

/// Reads and writes [`REPLAY_FILE`].
#[derive(Debug)]
pub struct ReplayFile {
    path: PathBuf,
}

impl ReplayFile {
    /// The replay file of config directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(REPLAY_FILE),
        }
    }

    /// Loads the state. A missing file is an empty state; a corrupt one is
    /// an error the caller reports before starting empty.
    pub fn load(&self) -> std::io::Result<Replay> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice::<OnDisk>(&b)
                .map(Replay::from_disk)
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "replay state is corrupt")
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Replay::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves `state` merged with what is on disk (maxima), atomically and
    /// flushed, and returns the merged state.
    pub fn save(&self, state: &Replay) -> std::io::Result<Replay> {
        let mut merged = state.clone();
        if let Ok(theirs) = self.load() {
            merged.merge(&theirs);
        }
        let json = serde_json::to_vec(&merged.to_disk()).map_err(std::io::Error::other)?;
        crate::state::write_atomic(&self.path, &json, false)?;
        Ok(merged)
    }

    /// Deletes the file (a new login starts a new account view).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(origin: u64, seq: u64, ts: u64) -> ClipMeta {
        ClipMeta {
            origin: DeviceId(origin),
            seq,
            timestamp_ms: ts,
        }
    }

    #[test]
    fn roundtrip_and_merge_take_maxima() {
        let dir = tempfile::tempdir().unwrap();
        let f = ReplayFile::new(dir.path());
        assert_eq!(f.load().unwrap(), Replay::default());
        let mut a = Replay::default();
        a.highest.insert(DeviceId(1), 10);
        a.highest.insert(DeviceId(2), 5);
        a.newest_applied = Some(meta(1, 10, 1000));
        f.save(&a).unwrap();
        // Another process with an older view cannot move anything back.
        let mut b = Replay::default();
        b.highest.insert(DeviceId(1), 3);
        b.highest.insert(DeviceId(3), 7);
        b.newest_applied = Some(meta(3, 7, 500));
        let merged = f.save(&b).unwrap();
        assert_eq!(merged.highest[&DeviceId(1)], 10);
        assert_eq!(merged.highest[&DeviceId(2)], 5);
        assert_eq!(merged.highest[&DeviceId(3)], 7);
        assert_eq!(merged.newest_applied, Some(meta(1, 10, 1000)));
        assert_eq!(f.load().unwrap(), merged);
    }

    #[test]
    fn corrupt_file_is_an_error_and_holds_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = ReplayFile::new(dir.path());
        std::fs::write(dir.path().join(REPLAY_FILE), b"{not json").unwrap();
        assert!(f.load().is_err());
        let mut a = Replay::default();
        a.highest.insert(DeviceId(4), 2);
        f.save(&a).unwrap();
        let text = std::fs::read_to_string(dir.path().join(REPLAY_FILE)).unwrap();
        assert_eq!(text, r#"{"highest":{"4":2},"newest_applied":null}"#);
    }
}
