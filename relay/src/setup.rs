//! The one-time setup token that the first account (the admin) must show.
//!
//! Without it, whoever reaches a fresh relay first would become its admin: a
//! scanner can win that race. So while a relay has no account, it keeps a
//! random token in `<data-dir>/setup-token` (mode 0600, made at the first
//! start and reused across restarts until used) and prints it at start. A
//! signup that would create the first account must carry it; once the first
//! account exists the file is deleted and the token is forgotten.
//!
//! **Invariant:** the token is compared in constant time and never logged
//! except in the one start-up line meant for the operator.

use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File name of the setup token inside the data directory.
pub const SETUP_TOKEN_FILE: &str = "setup-token";

/// The pending setup token, if the relay has no account yet.
#[derive(Debug)]
pub struct SetupGate {
    path: PathBuf,
    token: Mutex<Option<String>>,
}

impl SetupGate {
    /// Prepares the gate for a relay whose data directory is `dir`. With no
    /// account yet, reads the existing token file or creates a new one; with
    /// accounts, removes a leftover file.
    pub fn open(dir: &Path, has_users: bool) -> std::io::Result<Self> {
        let path = dir.join(SETUP_TOKEN_FILE);
        let token = if has_users {
            remove_if_present(&path)?;
            None
        } else {
            Some(read_or_create(&path)?)
        };
        Ok(Self {
            path,
            token: Mutex::new(token),
        })
    }

    /// The token to print at start, while no account exists.
    pub fn pending(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Whether `presented` is the pending token. False when none is pending.
    pub fn matches(&self, presented: Option<&str>) -> bool {
        match (self.lock().as_deref(), presented) {
            (Some(t), Some(p)) => constant_time_eq(t.as_bytes(), p.as_bytes()),
            _ => false,
        }
    }

    /// The first account exists: forget the token and delete its file.
    pub fn consumed(&self) {
        if self.lock().take().is_some() {
            if let Err(e) = remove_if_present(&self.path) {
                tracing::warn!(error = %e, "could not delete the used setup token file");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Every update is one assignment, so a poisoned value is still whole.
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_or_create(path: &Path) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim();
        if crate::auth::token_shape_ok(s) {
            return Ok(s.to_owned());
        }
    }
    let mut raw = [0u8; crate::auth::TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    remove_if_present(path)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_kept_until_used_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let g = SetupGate::open(dir.path(), false).unwrap();
        let t = g.pending().unwrap();
        assert!(crate::auth::token_shape_ok(&t));
        // A restart before the first account reuses the same token.
        let g2 = SetupGate::open(dir.path(), false).unwrap();
        assert_eq!(g2.pending().as_deref(), Some(t.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SETUP_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(g2.matches(Some(&t)));
        assert!(!g2.matches(Some("nope")));
        assert!(!g2.matches(None));
        g2.consumed();
        assert!(!g2.matches(Some(&t)));
        assert!(!dir.path().join(SETUP_TOKEN_FILE).exists());
        // With accounts, a leftover file is removed and nothing is pending.
        std::fs::write(dir.path().join(SETUP_TOKEN_FILE), &t).unwrap();
        let g3 = SetupGate::open(dir.path(), true).unwrap();
        assert!(g3.pending().is_none());
        assert!(!dir.path().join(SETUP_TOKEN_FILE).exists());
    }
}
