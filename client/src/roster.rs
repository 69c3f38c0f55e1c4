//! This device's pinned roster (protocol v2): the public keys of the
//! account's devices as this device first verified them, in `roster.json`
//! in the config directory (public keys only, no secret).
//!
//! The relay hands out the device list and keys, and a hostile relay could
//! swap a key. So a device trusts a key only when
//!
//! - its certificate verifies under the epoch key this device holds (only
//!   the account's devices can make one, never the relay), and
//! - for a device id it has seen before, it is the key pinned then (so not
//!   even another device of the account can swap a third device's key).
//!
//! [`Roster::review`] applies both rules to the relay's listing and pins
//! newly certified devices; `clipmesh devices` prints the result with each
//! device's safety number, and announces devices it had not seen.

use clipmesh_proto::api::v2::DeviceKeyRecord;
use clipmesh_proto::{DeviceId, DevicePublic, Epoch, EpochKey, Fingerprint};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the roster file in the config directory.
pub const ROSTER_FILE: &str = "roster.json";

/// The pinned keys of one config directory.
#[derive(Debug)]
pub struct Roster {
    path: PathBuf,
    /// Device id → public key hex, as first verified.
    map: BTreeMap<u64, String>,
}

/// What [`Roster::review`] concluded about one listed device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Certified and matching the pin.
    Known(Fingerprint),
    /// Certified and seen for the first time (now pinned): announce it.
    New(Fingerprint),
    /// The relay lists no key for it (a v1 device, or one that has not
    /// published yet).
    NoKey,
    /// Its certificate is of another epoch than the key this device holds.
    OtherEpoch(u32),
    /// The certificate does not verify: refused.
    BadCert,
    /// A different key than the one pinned for this id: refused.
    Swapped,
}

impl Trust {
    /// Whether the key is refused.
    pub fn refused(&self) -> bool {
        matches!(self, Self::BadCert | Self::Swapped)
    }
}

impl Roster {
    /// Loads the roster of `dir` (missing file: empty). A corrupt file is an
    /// error, so damage never silently drops a pin.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(ROSTER_FILE);
        let map = crate::state::load_json(
            &path,
            &format!("{ROSTER_FILE} is corrupt; delete it to pin device keys again"),
        )?;
        Ok(Self { path, map })
    }

    /// The key pinned for `id`.
    pub fn get(&self, id: DeviceId) -> Option<DevicePublic> {
        self.map.get(&id.0).and_then(|h| DevicePublic::from_hex(h))
    }

    /// Every pinned key.
    pub fn pins(&self) -> std::collections::HashMap<DeviceId, DevicePublic> {
        self.map
            .iter()
            .filter_map(|(id, h)| Some((DeviceId(*id), DevicePublic::from_hex(h)?)))
            .collect()
    }

    /// Pins `public` for `id` (replacing nothing: a different key for a
    /// pinned id is refused by [`Roster::review`] before it gets here).
    pub fn pin(&mut self, id: DeviceId, public: &DevicePublic) -> std::io::Result<()> {
        self.map.insert(id.0, public.to_hex());
        self.save()
    }

    /// Keeps only the pins `keep` accepts (a new epoch: the devices
    /// certified in it), and saves if anything was dropped.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(DeviceId, &DevicePublic) -> bool,
    ) -> std::io::Result<()> {
        let before = self.map.len();
        self.map
            .retain(|id, hex| DevicePublic::from_hex(hex).is_some_and(|p| keep(DeviceId(*id), &p)));
        if self.map.len() != before {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> std::io::Result<()> {
        crate::config::ensure_dir(self.path.parent().unwrap_or(Path::new(".")))
            .map_err(std::io::Error::other)?;
        crate::state::save_json(&self.path, &self.map)
    }

    /// Judges the relay's listing against the epoch key this device holds
    /// and the pins, pins newly certified devices, and returns one verdict
    /// per listed device, in the listing's order.
    pub fn review(
        &mut self,
        epoch_key: &EpochKey,
        epoch: u32,
        listing: &[DeviceKeyRecord],
    ) -> std::io::Result<Vec<Trust>> {
        let mut out = Vec::with_capacity(listing.len());
        let mut changed = false;
        for d in listing {
            let (Some(pk), Some(cert), Some(cert_epoch)) = (&d.public_key, &d.cert, d.epoch) else {
                out.push(Trust::NoKey);
                continue;
            };
            let (Some(public), Ok(cert)) = (DevicePublic::from_hex(pk), hex::decode(cert)) else {
                out.push(Trust::BadCert);
                continue;
            };
            if let Some(pinned) = self.get(d.id) {
                out.push(if pinned == public {
                    Trust::Known(public.fingerprint())
                } else {
                    tracing::warn!(
                        device = d.id.0,
                        "relay lists a different key for a pinned device; refused"
                    );
                    Trust::Swapped
                });
                continue;
            }
            if cert_epoch != epoch {
                out.push(Trust::OtherEpoch(cert_epoch));
                continue;
            }
            if epoch_key
                .verify_cert(Epoch(epoch), d.id, &public, &cert)
                .is_err()
            {
                tracing::warn!(
                    device = d.id.0,
                    "device key without a valid certificate; refused"
                );
                out.push(Trust::BadCert);
                continue;
            }
            self.map.insert(d.id.0, public.to_hex());
            changed = true;
            tracing::info!(device = d.id.0, name = %d.name, fingerprint = %public.fingerprint(), "new device in the account");
            out.push(Trust::New(public.fingerprint()));
        }
        if changed {
            self.save()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::DeviceSecrets;
    use rand::rngs::OsRng;

    fn rec(id: u64, key: &EpochKey, epoch: u32, public: &DevicePublic) -> DeviceKeyRecord {
        DeviceKeyRecord {
            id: DeviceId(id),
            name: format!("d{id}"),
            public_key: Some(public.to_hex()),
            epoch: Some(epoch),
            cert: Some(hex::encode(key.certify(Epoch(epoch), DeviceId(id), public))),
        }
    }

    #[test]
    fn certified_keys_are_pinned_and_swaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = EpochKey::generate(&mut OsRng);
        let (a, b) = (
            DeviceSecrets::generate(&mut OsRng).public(),
            DeviceSecrets::generate(&mut OsRng).public(),
        );
        let mut r = Roster::load(dir.path()).unwrap();
        r.pin(DeviceId(1), &a).unwrap();
        let listing = vec![rec(1, &key, 1, &a), rec(2, &key, 1, &b)];
        let v = r.review(&key, 1, &listing).unwrap();
        assert_eq!(v[0], Trust::Known(a.fingerprint()));
        assert_eq!(v[1], Trust::New(b.fingerprint()));
        // Pinned across loads: the second time device 2 is known.
        let mut r = Roster::load(dir.path()).unwrap();
        assert_eq!(
            r.review(&key, 1, &listing).unwrap()[1],
            Trust::Known(b.fingerprint())
        );

        // A relay swapping device 2's key, even with a valid certificate
        // (as another device of the account could make), is refused.
        let evil = DeviceSecrets::generate(&mut OsRng).public();
        let swapped = vec![rec(2, &key, 1, &evil)];
        let v = r.review(&key, 1, &swapped).unwrap();
        assert_eq!(v, vec![Trust::Swapped]);
        assert!(v[0].refused());
        // A new id with a certificate the relay made up is refused too.
        let forged = EpochKey::generate(&mut OsRng);
        let v = r.review(&key, 1, &[rec(3, &forged, 1, &evil)]).unwrap();
        assert_eq!(v, vec![Trust::BadCert]);
        assert_eq!(r.get(DeviceId(3)), None);
        // Other epochs and missing keys are reported, not trusted.
        let v = r
            .review(
                &key,
                1,
                &[
                    rec(4, &key, 2, &evil),
                    DeviceKeyRecord {
                        id: DeviceId(5),
                        name: "v1".into(),
                        public_key: None,
                        epoch: None,
                        cert: None,
                    },
                ],
            )
            .unwrap();
        assert_eq!(v, vec![Trust::OtherEpoch(2), Trust::NoKey]);
        std::fs::write(dir.path().join(ROSTER_FILE), b"{").unwrap();
        assert!(Roster::load(dir.path()).is_err());
    }
}
