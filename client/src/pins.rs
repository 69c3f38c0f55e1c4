//! Key-derivation parameters pinned per account after the first login.
//!
//! A relay hands the client the account's KDF parameters at every login. A
//! hostile relay could hand out weaker ones, so the client keeps the
//! strongest it has seen per (relay, username) in `kdf_pins.json` and refuses
//! anything with less memory or fewer passes
//! ([`clipmesh_proto::KdfParams::check_pinned`]). The file holds parameters
//! only (no secret), and it survives `logout`, so logging in again on the
//! same device keeps the pin. A second entry per account records that it
//! logged in with protocol v2 ([`Pins::get_v2`]): from then on this device
//! never falls back to v1 login for it.

use clipmesh_proto::KdfParams;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the pin file in the config directory.
pub const PINS_FILE: &str = "kdf_pins.json";

/// The pin file of one config directory.
#[derive(Debug)]
pub struct Pins {
    path: PathBuf,
    map: BTreeMap<String, KdfParams>,
}

fn key(server: &str, username: &str) -> String {
    format!("{username} @ {server}")
}

fn key_v2(server: &str, username: &str) -> String {
    format!("v2: {username} @ {server}")
}

impl Pins {
    /// Loads the pins of `dir`. A missing file means no pins; a corrupt one
    /// is an error, so a damaged file never silently drops a pin.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(PINS_FILE);
        let map = crate::state::load_json(
            &path,
            &format!("{PINS_FILE} is corrupt; delete it to pin again at the next login"),
        )?;
        Ok(Self { path, map })
    }

    /// The pinned parameters of an account, if any.
    pub fn get(&self, server: &str, username: &str) -> Option<KdfParams> {
        self.map.get(&key(server, username)).copied()
    }

    /// The parameters pinned for an account's v2 (OPAQUE) login. Once an
    /// account has logged in with v2 on this device it is pinned to v2: the
    /// client never falls back to v1 login for it (a relay cannot downgrade
    /// it to a login that puts `auth_key` on the wire).
    pub fn get_v2(&self, server: &str, username: &str) -> Option<KdfParams> {
        self.map.get(&key_v2(server, username)).copied()
    }

    /// Pins an account to v2 with its record's parameters.
    pub fn pin_v2(
        &mut self,
        server: &str,
        username: &str,
        params: KdfParams,
    ) -> std::io::Result<()> {
        self.map.insert(key_v2(server, username), params);
        self.save()
    }

    /// Pins `params` for an account after a successful login or signup
    /// (they passed [`KdfParams::check_pinned`], so they only go up).
    pub fn pin(&mut self, server: &str, username: &str, params: KdfParams) -> std::io::Result<()> {
        self.map.insert(key(server, username), params);
        self.save()
    }

    fn save(&self) -> std::io::Result<()> {
        crate::config::ensure_dir(self.path.parent().unwrap_or(Path::new(".")))
            .map_err(std::io::Error::other)?;
        crate::state::save_json(&self.path, &self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::keys::KdfError;

    #[test]
    fn pins_persist_per_account_and_refuse_a_downgrade() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pins::load(dir.path()).unwrap();
        assert_eq!(p.get("https://r", "ann"), None);
        let strong = KdfParams {
            m_kib: 256 * 1024,
            ..KdfParams::default()
        };
        p.pin("https://r", "ann", strong).unwrap();
        let p = Pins::load(dir.path()).unwrap();
        let pin = p.get("https://r", "ann");
        assert_eq!(pin, Some(strong));
        assert_eq!(p.get("https://r", "bob"), None);
        assert_eq!(
            KdfParams::default().check_pinned(pin.as_ref()),
            Err(KdfError::BelowPinned)
        );
        // The v2 pin is separate from the v1 one.
        let mut p = Pins::load(dir.path()).unwrap();
        assert_eq!(p.get_v2("https://r", "ann"), None);
        p.pin_v2("https://r", "ann", KdfParams::default()).unwrap();
        let p = Pins::load(dir.path()).unwrap();
        assert_eq!(p.get_v2("https://r", "ann"), Some(KdfParams::default()));
        assert_eq!(p.get("https://r", "ann"), Some(strong));
        std::fs::write(dir.path().join(PINS_FILE), b"[").unwrap();
        assert!(Pins::load(dir.path()).is_err());
    }
}
