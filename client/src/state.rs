//! Small persistent state: the per-device envelope sequence counter and the
//! newest room sequence this device has seen.
//!
//! **Invariant:** a device never seals two envelopes with the same `seq`,
//! across restarts and crashes. Sequence numbers are reserved in blocks of
//! [`SEQ_BLOCK`]: the file records the top of the reserved block before any
//! number in it is used, and a restart starts above it. At most one block
//! of numbers is skipped per restart.
//!
//! Each new block also starts at the current time in milliseconds or above.
//! That keeps the invariant when the state file is lost, and it keeps a
//! device's numbers above those of an earlier device that had the same
//! relay-assigned id (receivers drop a clip whose sequence number is not
//! above the highest they saw from that id).
//!
//! Several processes may share a config directory (`run` and a standalone
//! `send`); every save merges with what is on disk by taking maxima, so
//! neither can move a counter backwards.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the state file.
pub const STATE_FILE: &str = "state.json";
/// How many sequence numbers are reserved per write.
pub const SEQ_BLOCK: u64 = 64;

/// On-disk form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct OnDisk {
    /// Highest envelope sequence number reserved (possibly used).
    seq_reserved: u64,
    /// Newest room sequence seen.
    last_seen: u64,
}

/// The state file of one config directory.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    disk: OnDisk,
    /// Last sequence number handed out.
    seq: u64,
}

impl State {
    /// Loads the state (missing file: fresh state) and starts the counter
    /// above everything reserved before.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(STATE_FILE);
        let disk = read(&path)?;
        Ok(Self {
            path,
            seq: disk.seq_reserved,
            disk,
        })
    }

    /// The next envelope sequence number, reserving a new block on disk
    /// first when needed. A new block starts above anything reserved on
    /// disk, by this process or another one, and never below the current
    /// time in milliseconds (see the module docs).
    pub fn next_seq(&mut self) -> std::io::Result<u64> {
        self.next_seq_at(crate::clock::now_ms())
    }

    /// [`State::next_seq`] with the clock passed in.
    pub fn next_seq_at(&mut self, now_ms: u64) -> std::io::Result<u64> {
        let next = self.seq + 1;
        if next <= self.disk.seq_reserved {
            self.seq = next;
            return Ok(next);
        }
        let theirs = read(&self.path).unwrap_or_default();
        let start = next.max(theirs.seq_reserved + 1).max(now_ms);
        self.save(
            OnDisk {
                seq_reserved: start + SEQ_BLOCK - 1,
                last_seen: self.disk.last_seen.max(theirs.last_seen),
            },
            true,
        )?;
        self.seq = start;
        Ok(start)
    }

    /// Newest room sequence seen.
    pub fn last_seen(&self) -> u64 {
        self.disk.last_seen
    }

    /// Records a newer room sequence (no-op if not newer).
    pub fn set_last_seen(&mut self, seq: u64) -> std::io::Result<()> {
        if seq <= self.disk.last_seen {
            return Ok(());
        }
        let theirs = read(&self.path).unwrap_or_default();
        // Not flushed to the disk: losing it costs one replayed clip, which
        // newest-wins then ignores, and it is written once per clip.
        self.save(
            OnDisk {
                seq_reserved: self.disk.seq_reserved.max(theirs.seq_reserved),
                last_seen: seq.max(theirs.last_seen),
            },
            false,
        )
    }

    fn save(&mut self, d: OnDisk, durable: bool) -> std::io::Result<()> {
        let json = serde_json::to_vec(&d).map_err(std::io::Error::other)?;
        write_file(&self.path, &json, false, durable)?;
        self.disk = d;
        Ok(())
    }
}

fn read(path: &Path) -> std::io::Result<OnDisk> {
    match std::fs::read(path) {
        // A corrupt state file only costs a replay; never fail on it.
        Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OnDisk::default()),
        Err(e) => Err(e),
    }
}

/// Reads a JSON state file that must not be lost: a missing file is
/// `T::default()`, one that does not parse is an `InvalidData` error whose
/// message is `corrupt` (so damage never silently drops what it held).
pub fn load_json<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    corrupt: &str,
) -> std::io::Result<T> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, corrupt.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// Writes `value` as pretty JSON to `path` with [`write_atomic`] (not
/// private). The directory must exist: callers create it with
/// `config::ensure_dir` (this module stays below `config`).
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &json, false)
}

/// Writes `data` to `path` through a temporary file and a rename, so
/// readers see the old or the new file, never half of one, and flushes it
/// to the disk before the rename. With `private` the file is created 0600
/// on Unix.
pub fn write_atomic(path: &Path, data: &[u8], private: bool) -> std::io::Result<()> {
    write_file(path, data, private, true)
}

fn write_file(path: &Path, data: &[u8], private: bool, durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A fresh, unguessable name opened with O_EXCL (`create_new`): a file or
    // symlink someone planted at the temporary path is never followed or
    // reused, so secrets cannot be written through it.
    let mut attempt = 0;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        match opts.open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    f.write_all(data)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink planted where the old code put its temporary file (a name
    /// anyone could predict from the pid) is not followed.
    #[cfg(unix)]
    #[test]
    fn write_atomic_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("stolen");
        let planted = dir
            .path()
            .join(format!(".secrets.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        write_atomic(&dir.path().join("secrets.json"), b"secret", true).unwrap();
        assert!(!target.exists(), "secrets written through the planted link");
        assert_eq!(
            std::fs::read(dir.path().join("secrets.json")).unwrap(),
            b"secret"
        );
    }

    #[test]
    fn restart_never_reuses_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        let a: Vec<u64> = (0..3).map(|_| s.next_seq_at(0).unwrap()).collect();
        assert_eq!(a, vec![1, 2, 3]);
        drop(s); // "crash": nothing else written
        let mut s = State::load(dir.path()).unwrap();
        let b = s.next_seq_at(0).unwrap();
        assert!(b > 3, "got {b}");
        assert_eq!(b, SEQ_BLOCK + 1);
    }

    #[test]
    fn lost_state_file_or_reused_device_id_still_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        let first = s.next_seq_at(1_000_000).unwrap();
        assert_eq!(first, 1_000_000);
        // The file is lost; a later start still numbers above.
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        let mut s = State::load(dir.path()).unwrap();
        let second = s.next_seq_at(1_000_500).unwrap();
        assert!(second > first);
        // The wall clock going backwards does not move the counter back.
        let mut s = State::load(dir.path()).unwrap();
        assert!(s.next_seq_at(5).unwrap() > second);
    }

    #[test]
    fn block_boundaries_are_crossed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        let mut last = 0;
        for _ in 0..(3 * SEQ_BLOCK) {
            let n = s.next_seq_at(0).unwrap();
            assert_eq!(n, last + 1);
            last = n;
        }
        let mut s2 = State::load(dir.path()).unwrap();
        assert!(s2.next_seq().unwrap() > last);
    }

    #[test]
    fn two_processes_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = State::load(dir.path()).unwrap();
        let mut b = State::load(dir.path()).unwrap();
        let x = a.next_seq().unwrap(); // reserves 1..=64
        let y = b.next_seq().unwrap(); // sees a's block, continues above
        assert_ne!(x, y);
        assert!(y > SEQ_BLOCK);
    }

    #[test]
    fn last_seen_only_moves_forward_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        s.set_last_seen(10).unwrap();
        s.set_last_seen(5).unwrap();
        assert_eq!(State::load(dir.path()).unwrap().last_seen(), 10);
    }

    #[test]
    fn corrupt_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{nope").unwrap();
        let mut s = State::load(dir.path()).unwrap();
        assert_eq!(s.next_seq_at(0).unwrap(), 1);
    }
}
