//! One tray per user and config directory: an exclusive lock on
//! `tray.lock` in the config directory, held for the tray's lifetime. A
//! second start finds the lock taken and says that the tray already runs
//! (the OS drops the lock when the first one exits, even on a crash).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock file's name in the config directory.
pub const LOCK_FILE: &str = "tray.lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another tray holds it.
    #[error("clipmesh-tray is already running for this config directory")]
    AlreadyRunning,
    /// The lock file could not be opened or locked.
    #[error("cannot lock {LOCK_FILE}: {0}")]
    Io(#[from] std::io::Error),
}

/// The held lock; dropping it releases the instance.
#[derive(Debug)]
pub struct Instance {
    /// The locked file (the lock lives as long as this handle).
    _file: File,
}

impl Instance {
    /// Takes the lock in `dir` (created if missing), or says who has it.
    pub fn acquire(dir: &Path) -> Result<Self, InstanceError> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(InstanceError::AlreadyRunning),
            Err(TryLockError::Error(e)) => Err(InstanceError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_instance_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = Instance::acquire(dir.path()).unwrap();
        assert!(matches!(
            Instance::acquire(dir.path()),
            Err(InstanceError::AlreadyRunning)
        ));
        // Another config directory is another instance.
        let other = tempfile::tempdir().unwrap();
        let _other = Instance::acquire(other.path()).unwrap();
        drop(first);
        Instance::acquire(dir.path()).unwrap();
    }
}
