//! The native relay's OPAQUE state (protocol v2): the [`ServerSetup`],
//! kept in `<data-dir>/opaque-setup` (mode 0600, made at first start, never
//! in the database, so a database backup alone is not enough to test a
//! password guess), and the table of half-finished logins, in memory.
//!
//! The protocol logic is `clipmesh_room::opaque`, shared with the Worker
//! host; this module only owns the file and the lock.

use clipmesh_proto::opaque::ServerSetup;
use clipmesh_room::opaque::PendingLogins;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// File name of the OPAQUE setup in the data directory.
pub const OPAQUE_SETUP_FILE: &str = "opaque-setup";

/// The relay's OPAQUE secrets and half-finished logins.
pub struct OpaqueHost {
    /// The OPRF seed and 3DH key pairs; secret.
    pub setup: ServerSetup,
    pending: Mutex<PendingLogins>,
    /// Origin of the monotonic milliseconds the login table runs on.
    origin: Instant,
}

impl std::fmt::Debug for OpaqueHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueHost(<redacted>)")
    }
}

impl OpaqueHost {
    /// Loads the setup from `dir`, creating it (0600) on first start. A
    /// file that does not parse is an error, never silently replaced:
    /// replacing it would invalidate every v2 account.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(OPAQUE_SETUP_FILE);
        let setup = match std::fs::read(&path) {
            Ok(bytes) => ServerSetup::from_bytes(&bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not an OPAQUE setup (restore it from a backup; \
                         a new one would lock out every v2 account)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let setup = ServerSetup::generate(&mut rand::rngs::OsRng);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&path)?;
                f.write_all(&setup.to_bytes())?;
                f.sync_all()?;
                setup
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            setup,
            pending: Mutex::new(PendingLogins::new()),
            origin: Instant::now(),
        })
    }

    /// The login table (a poisoned lock still holds a consistent map: each
    /// operation is one insert or remove).
    pub fn pending(&self) -> MutexGuard<'_, PendingLogins> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Monotonic milliseconds for the login table.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_made_once_kept_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let a = OpaqueHost::open(dir.path()).unwrap();
        let b = OpaqueHost::open(dir.path()).unwrap();
        assert_eq!(a.setup.public_key(), b.setup.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(OPAQUE_SETUP_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(OPAQUE_SETUP_FILE), b"junk").unwrap();
        let e = OpaqueHost::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not an OPAQUE setup"), "{e}");
        assert_eq!(format!("{a:?}"), "OpaqueHost(<redacted>)");
    }
}
