//! What seals and opens this device's clips (`docs/crypto.md`, "The v2
//! envelope" and "Key epochs"; the acceptance rules are in
//! `docs/protocol.md`, "Envelope versions").
//!
//! - A v2 device seals every clip as a signed v2 envelope
//!   ([`SignedEnvelope`]) under the clip key of the newest epoch it holds.
//! - A received v2 envelope opens only if its sender is the device the
//!   relay says sent it, its signature verifies against the key *this*
//!   device pinned for that sender ([`Roster`]), and it is sealed under the
//!   epoch this device holds. An unknown sender or a newer epoch asks the
//!   driver for the relay's listing first ([`Opened::Refresh`]); after that
//!   it is refused with one line.
//! - A v1 (unsigned) envelope opens only while the account is at epoch 0
//!   (the v1 data key of an upgraded, or never-upgraded, account) and only
//!   from a device that has no pinned v2 key. From the first new epoch on,
//!   unsigned clips are refused.
//! - [`ClipKeys::refresh`] takes the relay's listing: the current epoch's
//!   key wrapped to this device (checked against the wrapping device's
//!   pinned key, or its certificate under the epoch this device holds),
//!   then the roster pruned to the devices certified in the new epoch (a
//!   revoked device drops out) and reviewed for new devices to announce.
//!
//! No network IO here except [`fetch_listing`] (blocking; async callers use
//! [`fetch_listing_until`], which runs it in a blocking thread; when the
//! daemon fetches is [`crate::keyfetch`]'s decision); the roster file is
//! written when it changes, and the caller persists a new epoch key
//! ([`Refreshed::moved_to`]).

use crate::keyfetch::Need;
use crate::roster::{Roster, Trust};
use clipmesh_proto::api::v2::{DeviceKeysResponse, EpochWrapRecord};
use clipmesh_proto::content::ClipMeta;
use clipmesh_proto::signed::SIGNED_ENVELOPE_VERSION;
use clipmesh_proto::{
    open_clip, seal_clip, ClipItem, ClipKey, DataKey, DeviceId, DevicePublic, DeviceSecrets,
    DeviceWrappedKey, EnvelopeKind, Epoch, EpochKey, Fingerprint, SignedEnvelope, SignedHeader,
};
use zeroize::Zeroize;

/// What the relay says about the account's keys: the device listing and,
/// when the account is at a newer epoch than this device, the key of that
/// epoch wrapped to this device.
#[derive(Clone, Debug)]
pub struct Listing {
    /// `GET /api/v2/device-keys`.
    pub keys: DeviceKeysResponse,
    /// `GET /api/v2/epoch-wrap` (fetched only for a newer epoch; `None`
    /// also on a relay without key epochs).
    pub wrap: Option<EpochWrapRecord>,
}

/// What [`fetch_listing_until`] brings: the listing (`None`: the relay
/// has no v2), or why it could not be fetched.
pub type Fetched = Result<Option<Listing>, String>;

/// [`fetch_listing`] for async callers, in a blocking thread; `None` when
/// `cancel` fired first.
pub async fn fetch_listing_until(
    api: &crate::api::Api,
    token: &str,
    holds: Epoch,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<Fetched> {
    let (api, token) = (api.clone(), token.to_owned());
    let work = tokio::task::spawn_blocking(move || {
        fetch_listing(&api, &token, holds).map_err(|e| e.to_string())
    });
    tokio::select! {
        r = work => Some(r.unwrap_or_else(|e| Err(format!("device key task failed: {e}")))),
        _ = cancel.cancelled() => None,
    }
}

/// The relay's listing for a device at epoch `holds`; `None` when the
/// relay has no v2 (404). Blocking.
pub fn fetch_listing(
    api: &crate::api::Api,
    token: &str,
    holds: Epoch,
) -> Result<Option<Listing>, crate::api::ApiError> {
    let not_found =
        |e: &crate::api::ApiError| matches!(e, crate::api::ApiError::Other { status: 404, .. });
    let keys = match api.v2_device_keys(token) {
        Ok(l) => l,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let wrap = if keys.epoch > holds.0 {
        match api.v2_epoch_wrap(token) {
            Ok(w) => w.wrap,
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Some(Listing { keys, wrap }))
}

/// The keys of the logged-in `device` in `dir` (loads its roster).
pub fn for_device(
    dir: &std::path::Path,
    device: &crate::account::Device,
) -> std::io::Result<ClipKeys> {
    Ok(ClipKeys::new(
        DeviceId(device.account.device_id),
        device.secrets.device.clone(),
        device.secrets.epoch,
        &device.secrets.data_key,
        Roster::load(dir)?,
    ))
}

/// How a received envelope turned out.
#[derive(Debug)]
pub enum Opened {
    /// Opened and checked.
    Clip(ClipMeta, ClipItem),
    /// Needs the relay's listing first (an unknown sender, or a newer
    /// epoch); call [`ClipKeys::refresh`] and open again with
    /// `refreshed = true`.
    Refresh(Need),
    /// Refused; the one line to log. Nothing may be applied.
    Refused(String),
}

/// A device announced by [`ClipKeys::refresh`]: certified, seen for the
/// first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDevice {
    /// The device.
    pub id: DeviceId,
    /// Its name, as the relay lists it.
    pub name: String,
    /// Its safety number.
    pub fingerprint: Fingerprint,
}

/// What [`ClipKeys::refresh`] changed.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// The epoch this device moved to; the caller stores
    /// [`ClipKeys::epoch_key`] in the secret store.
    pub moved_to: Option<Epoch>,
    /// Devices seen for the first time: announce each, never silently.
    pub new_devices: Vec<NewDevice>,
    /// Listed keys refused (swapped or uncertified): one line each.
    pub refused: Vec<String>,
}

/// This device's clip keys and the roster it checks senders against.
#[derive(Debug)]
pub struct ClipKeys {
    me: DeviceId,
    /// v2: this device's key pairs (`None`: a device logged in with v1).
    device: Option<DeviceSecrets>,
    /// The newest epoch this device holds (0 for v1 devices).
    epoch: Epoch,
    key: EpochKey,
    roster: Roster,
}

impl ClipKeys {
    /// Keys of device `me`: its v2 secrets if any, the epoch it holds and
    /// that epoch's key (a v1 device: epoch 0, its data key), and its
    /// pinned roster.
    pub fn new(
        me: DeviceId,
        device: Option<DeviceSecrets>,
        epoch: Option<u32>,
        data_key: &DataKey,
        roster: Roster,
    ) -> Self {
        Self {
            me,
            device,
            epoch: Epoch(epoch.unwrap_or(0)),
            key: EpochKey::from_bytes(*data_key.expose()),
            roster,
        }
    }

    /// The epoch this device seals under.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The key of [`ClipKeys::epoch`] (to store after a move).
    pub fn epoch_key(&self) -> &EpochKey {
        &self.key
    }

    /// Whether this device signs (has v2 key pairs).
    pub fn signs(&self) -> bool {
        self.device.is_some()
    }

    /// The key that seals direct-link signalling: the v1-style subkey of the
    /// current epoch key, so it changes with every epoch.
    pub fn signal_key(&self) -> ClipKey {
        DataKey::from_bytes(*self.key.expose()).signal_key()
    }

    /// What direct-link signalling is sealed and checked with now.
    pub fn signal_keys(&self) -> crate::p2p::SignalKeys {
        crate::p2p::SignalKeys {
            key: self.signal_key(),
            epoch: self.epoch,
            peers: self.roster.pins(),
        }
    }

    /// This device's key pairs (v2), which also sign its signalling.
    pub fn device_secrets(&self) -> Option<&DeviceSecrets> {
        self.device.as_ref()
    }

    fn v1_clip_key(&self) -> ClipKey {
        DataKey::from_bytes(*self.key.expose()).clip_key()
    }

    /// Seals `item` as this device with sequence number `seq`: signed v2
    /// under the current epoch, or v1 on a device without key pairs.
    pub fn seal(&self, seq: u64, item: &ClipItem) -> Vec<u8> {
        match &self.device {
            Some(dev) => {
                let mut pt = item.encode();
                let header = SignedHeader {
                    kind: EnvelopeKind::Clip,
                    sender: self.me,
                    seq,
                    epoch: self.epoch,
                };
                let env = SignedEnvelope::seal(&self.key.clip_key(self.epoch), dev, &header, &pt);
                pt.zeroize();
                env
            }
            None => seal_clip(&self.v1_clip_key(), self.me, seq, item),
        }
    }

    /// Opens an envelope the relay (or a direct link) says `from` sent.
    /// `refreshed`: the listing was fetched for this envelope already, so
    /// an unknown sender or a newer epoch is refused rather than asked for.
    pub fn open(&self, from: DeviceId, envelope: &[u8], refreshed: bool) -> Opened {
        match envelope.first() {
            Some(&SIGNED_ENVELOPE_VERSION) => self.open_signed(from, envelope, refreshed),
            Some(&clipmesh_proto::envelope::ENVELOPE_VERSION) => self.open_v1(from, envelope),
            _ => Opened::Refused(format!(
                "clip from device {from} refused: unknown envelope version"
            )),
        }
    }

    fn open_signed(&self, from: DeviceId, envelope: &[u8], refreshed: bool) -> Opened {
        let Ok(h) = SignedEnvelope::peek_header(envelope) else {
            return Opened::Refused(format!("clip from device {from} refused: malformed"));
        };
        if h.sender != from {
            return Opened::Refused(format!(
                "clip from device {from} refused: signed as device {}",
                h.sender
            ));
        }
        if h.epoch < self.epoch {
            return Opened::Refused(format!(
                "clip from device {from} refused: sealed under key epoch {}, this device is at {}",
                h.epoch.0, self.epoch.0
            ));
        }
        let pinned = self.roster.get(h.sender);
        if h.epoch > self.epoch || pinned.is_none() {
            if !refreshed {
                return Opened::Refresh(if h.epoch > self.epoch {
                    Need::Epoch(h.epoch)
                } else {
                    Need::Sender(h.sender)
                });
            }
            return Opened::Refused(if h.epoch > self.epoch {
                format!(
                    "clip from device {from} refused: sealed under key epoch {}, and the relay has no key for it wrapped to this device",
                    h.epoch.0
                )
            } else {
                format!("clip from device {from} refused: signed by a key that is not in this device's roster (unknown or revoked device)")
            });
        }
        let Some(public) = pinned else {
            return Opened::Refused(format!("clip from device {from} refused: unknown device"));
        };
        match SignedEnvelope::open(&self.key.clip_key(self.epoch), &public, envelope) {
            Ok((header, mut pt)) if header == h => {
                let item = ClipItem::decode(&pt);
                pt.zeroize();
                match item {
                    Ok(item) => Opened::Clip(
                        ClipMeta {
                            origin: h.sender,
                            seq: h.seq,
                            timestamp_ms: item.timestamp_ms,
                        },
                        item,
                    ),
                    Err(_) => Opened::Refused(format!(
                        "clip from device {from} dropped: could not decode clip"
                    )),
                }
            }
            _ => Opened::Refused(format!(
                "clip from device {from} refused: its signature or seal does not verify with the key pinned for it"
            )),
        }
    }

    fn open_v1(&self, from: DeviceId, envelope: &[u8]) -> Opened {
        if self.epoch.0 != 0 {
            return Opened::Refused(format!(
                "clip from device {from} refused: unsigned (v1) envelope, and the account is at key epoch {}",
                self.epoch.0
            ));
        }
        if self.roster.get(from).is_some() {
            return Opened::Refused(format!(
                "clip from device {from} refused: unsigned (v1) envelope from a device that signs its clips"
            ));
        }
        match open_clip(&self.v1_clip_key(), from, envelope) {
            Ok((meta, item)) => Opened::Clip(meta, item),
            Err(e) => Opened::Refused(format!("clip from device {from} dropped: {e}")),
        }
    }

    /// Takes the relay's listing: moves to a newer epoch if a key for it is
    /// wrapped to this device, then prunes and reviews the roster. Errs with
    /// one line when the account is at a newer epoch this device cannot
    /// reach (it stays where it is).
    pub fn refresh(&mut self, l: &Listing) -> Result<Refreshed, String> {
        let mut out = Refreshed::default();
        let mut problem = None;
        let listing = &l.keys;
        if listing.epoch > self.epoch.0 {
            match self.adopt(listing, l.wrap.as_ref()) {
                Ok(()) => out.moved_to = Some(self.epoch),
                Err(e) => problem = Some(e),
            }
        }
        let verdicts = self
            .roster
            .review(&self.key, self.epoch.0, &listing.devices)
            .map_err(|e| format!("device roster: {e}"))?;
        for (d, v) in listing.devices.iter().zip(verdicts) {
            match v {
                Trust::New(fingerprint) => out.new_devices.push(NewDevice {
                    id: d.id,
                    name: d.name.clone(),
                    fingerprint,
                }),
                Trust::Swapped => out.refused.push(format!(
                    "refused: the relay lists a different key for device {} \"{}\" than the one this device pinned",
                    d.id.0, d.name
                )),
                Trust::BadCert => out.refused.push(format!(
                    "refused: the relay lists a key for device {} \"{}\" that no device of this account certified",
                    d.id.0, d.name
                )),
                Trust::Known(_) | Trust::NoKey | Trust::OtherEpoch(_) => {}
            }
        }
        match problem {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Opens the wrap of the listing's epoch, then keeps in the roster only
    /// the devices certified in it (with the key pinned for them).
    fn adopt(
        &mut self,
        listing: &DeviceKeysResponse,
        wrap: Option<&EpochWrapRecord>,
    ) -> Result<(), String> {
        let next = Epoch(listing.epoch);
        let lost = || {
            format!(
                "the account moved to key epoch {}, and this device cannot open that epoch's key: log in again",
                next.0
            )
        };
        let dev = self.device.as_ref().ok_or_else(lost)?;
        let w = wrap.filter(|w| w.epoch == next.0).ok_or_else(lost)?;
        let wrap = DeviceWrappedKey::from_hex(&w.wrap).ok_or_else(lost)?;
        let claimed = DevicePublic::from_hex(&w.sender_public).ok_or_else(lost)?;
        let sender = match self.roster.get(w.sender) {
            Some(pinned) if pinned == claimed => pinned,
            Some(_) => {
                return Err(format!(
                    "refused the key of epoch {}: it is signed by device {} with another key than the one pinned for it",
                    next.0, w.sender
                ))
            }
            None => {
                // A device this one never saw: it must hold a certificate
                // under the epoch this device holds (only its devices can
                // make one).
                let cert = hex::decode(&w.sender_cert).map_err(|_| lost())?;
                if next.0.checked_sub(1) != Some(self.epoch.0)
                    || self
                        .key
                        .verify_cert(self.epoch, w.sender, &claimed, &cert)
                        .is_err()
                {
                    return Err(format!(
                        "refused the key of epoch {}: signed by device {}, which this device cannot verify: log in again",
                        next.0, w.sender
                    ));
                }
                claimed
            }
        };
        let key = wrap
            .open(next, (w.sender, &sender), (self.me, dev))
            .map_err(|_| {
                format!(
                    "refused the key of epoch {}: the wrap does not open or its signature does not verify",
                    next.0
                )
            })?;
        // The roster of the new epoch: devices whose pinned key the listing
        // shows certified under it. A revoked device is not among them.
        let me = self.me;
        let mine = self.device.as_ref().map(|d| d.public());
        let certified = |id: DeviceId, public: &DevicePublic| {
            if id == me {
                return mine.as_ref() == Some(public);
            }
            listing.devices.iter().any(|d| {
                d.id == id
                    && d.epoch == Some(next.0)
                    && d.public_key.as_deref().and_then(DevicePublic::from_hex) == Some(*public)
                    && d.cert
                        .as_deref()
                        .and_then(|c| hex::decode(c).ok())
                        .is_some_and(|c| key.verify_cert(next, id, public, &c).is_ok())
            })
        };
        self.roster
            .retain(certified)
            .map_err(|e| format!("device roster: {e}"))?;
        self.key = key;
        self.epoch = next;
        Ok(())
    }

    /// Installs a new epoch this device made itself (a revoke or password
    /// change it started), keeping in the roster only `remaining`.
    pub fn start_epoch(
        &mut self,
        epoch: Epoch,
        key: EpochKey,
        remaining: &[DeviceId],
    ) -> std::io::Result<()> {
        let me = self.me;
        self.roster
            .retain(|id, _| id == me || remaining.contains(&id))?;
        self.key = key;
        self.epoch = epoch;
        Ok(())
    }

    /// The pinned roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::api::v2::DeviceKeyRecord;
    use clipmesh_proto::ClipContent;
    use rand::rngs::OsRng;

    /// One device of a test account: its secrets and its keys object.
    struct Dev {
        id: DeviceId,
        secrets: DeviceSecrets,
        keys: ClipKeys,
        _dir: tempfile::TempDir,
    }

    fn dev(id: u64, epoch: u32, key: &EpochKey, signs: bool) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let secrets = DeviceSecrets::generate(&mut OsRng);
        let mut roster = Roster::load(dir.path()).unwrap();
        if signs {
            // As at login: a device pins its own key first.
            roster.pin(DeviceId(id), &secrets.public()).unwrap();
        }
        let keys = ClipKeys::new(
            DeviceId(id),
            signs.then(|| secrets.clone()),
            signs.then_some(epoch),
            &DataKey::from_bytes(*key.expose()),
            roster,
        );
        Dev {
            id: DeviceId(id),
            secrets,
            keys,
            _dir: dir,
        }
    }

    fn record(d: &Dev, key: &EpochKey, epoch: u32) -> DeviceKeyRecord {
        let p = d.secrets.public();
        DeviceKeyRecord {
            id: d.id,
            name: format!("d{}", d.id.0),
            public_key: Some(p.to_hex()),
            epoch: Some(epoch),
            cert: Some(hex::encode(key.certify(Epoch(epoch), d.id, &p))),
        }
    }

    fn listing(epoch: u32, devices: Vec<DeviceKeyRecord>) -> Listing {
        Listing {
            keys: DeviceKeysResponse { epoch, devices },
            wrap: None,
        }
    }

    fn item(t: &str) -> ClipItem {
        ClipItem {
            timestamp_ms: 7,
            content: ClipContent::Text(t.into()),
        }
    }

    fn text(o: Opened) -> String {
        match o {
            Opened::Clip(
                _,
                ClipItem {
                    content: ClipContent::Text(t),
                    ..
                },
            ) => t,
            other => panic!("not opened: {other:?}"),
        }
    }

    fn refused(o: Opened) -> String {
        match o {
            Opened::Refused(line) => line,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn signed_clips_open_only_from_the_pinned_sender() {
        let k1 = EpochKey::generate(&mut OsRng);
        let (a, mut b, c) = (
            dev(1, 1, &k1, true),
            dev(2, 1, &k1, true),
            dev(3, 1, &k1, true),
        );
        let env = a.keys.seal(5, &item("hi"));
        assert_eq!(env[0], SIGNED_ENVELOPE_VERSION);
        // Unknown sender: ask for the listing, then refuse if still unknown.
        assert!(matches!(b.keys.open(a.id, &env, false), Opened::Refresh(_)));
        assert!(refused(b.keys.open(a.id, &env, true)).contains("not in this device's roster"));
        let r = b
            .keys
            .refresh(&listing(1, vec![record(&a, &k1, 1), record(&c, &k1, 1)]))
            .unwrap();
        assert_eq!(r.new_devices.len(), 2, "A and C announced");
        assert_eq!(text(b.keys.open(a.id, &env, false)), "hi");
        // Another device of the account (C holds the epoch key) signs as A.
        let h = SignedHeader {
            kind: EnvelopeKind::Clip,
            sender: a.id,
            seq: 6,
            epoch: Epoch(1),
        };
        let forged =
            SignedEnvelope::seal(&k1.clip_key(Epoch(1)), &c.secrets, &h, &item("x").encode());
        assert!(refused(b.keys.open(a.id, &forged, false)).contains("does not verify"));
        // The relay: no device key, no epoch key.
        let forged = SignedEnvelope::seal(
            &EpochKey::generate(&mut OsRng).clip_key(Epoch(1)),
            &DeviceSecrets::generate(&mut OsRng),
            &h,
            &item("x").encode(),
        );
        assert!(refused(b.keys.open(a.id, &forged, false)).contains("does not verify"));
        // The relay stamps another sender on A's envelope.
        assert!(refused(b.keys.open(c.id, &env, false)).contains("signed as device"));
        // Unsigned clips of an account at epoch 1: refused, even sealed
        // right (by C, or anyone holding the key).
        let v1 = seal_clip(
            &DataKey::from_bytes(*k1.expose()).clip_key(),
            c.id,
            9,
            &item("x"),
        );
        assert!(refused(b.keys.open(c.id, &v1, false)).contains("unsigned (v1)"));
        assert!(refused(b.keys.open(c.id, &[9, 9, 9], false)).contains("unknown envelope version"));
    }

    #[test]
    fn epoch_zero_takes_v1_clips_from_v1_devices_only() {
        // An upgraded v1 account: epoch 0 is the v1 data key.
        let k0 = EpochKey::generate(&mut OsRng);
        let (v1dev, mut b, c) = (
            dev(1, 0, &k0, false),
            dev(2, 0, &k0, true),
            dev(3, 0, &k0, true),
        );
        assert!(!v1dev.keys.signs());
        let env = v1dev.keys.seal(1, &item("from v1"));
        assert_eq!(text(b.keys.open(v1dev.id, &env, false)), "from v1");
        // A v1 envelope claiming a device that signs: refused.
        b.keys
            .refresh(&listing(0, vec![record(&c, &k0, 0)]))
            .unwrap();
        let v1c = seal_clip(
            &DataKey::from_bytes(*k0.expose()).clip_key(),
            c.id,
            1,
            &item("x"),
        );
        assert!(refused(b.keys.open(c.id, &v1c, false)).contains("device that signs"));
        // The v1 device opens signed epoch-0 clips once it has the listing.
        let mut v1dev = v1dev;
        let signed = c.keys.seal(2, &item("signed"));
        assert!(matches!(
            v1dev.keys.open(c.id, &signed, false),
            Opened::Refresh(Need::Sender(_))
        ));
        v1dev
            .keys
            .refresh(&listing(0, vec![record(&c, &k0, 0)]))
            .unwrap();
        assert_eq!(text(v1dev.keys.open(c.id, &signed, false)), "signed");
    }

    /// Device `a` starts epoch 2 and wraps it to `to`; the listing as the
    /// relay then shows it to `to`.
    fn rotate(a: &Dev, k1: &EpochKey, k2: &EpochKey, stay: &[&Dev], to: &Dev) -> Listing {
        let pa = a.secrets.public();
        let w = k2
            .wrap_to_device(
                &mut OsRng,
                Epoch(2),
                (a.id, &a.secrets),
                (to.id, &to.secrets.public()),
            )
            .unwrap();
        Listing {
            keys: DeviceKeysResponse {
                epoch: 2,
                devices: stay.iter().map(|d| record(d, k2, 2)).collect(),
            },
            wrap: Some(EpochWrapRecord {
                epoch: 2,
                sender: a.id,
                sender_public: pa.to_hex(),
                sender_cert: hex::encode(k1.certify(Epoch(1), a.id, &pa)),
                wrap: w.to_hex(),
            }),
        }
    }

    #[test]
    fn a_new_epoch_is_adopted_and_the_revoked_device_drops_out() {
        let (k1, k2) = (
            EpochKey::generate(&mut OsRng),
            EpochKey::generate(&mut OsRng),
        );
        let (a, mut b, c) = (
            dev(1, 1, &k1, true),
            dev(2, 1, &k1, true),
            dev(3, 1, &k1, true),
        );
        b.keys
            .refresh(&listing(
                1,
                vec![record(&a, &k1, 1), record(&b, &k1, 1), record(&c, &k1, 1)],
            ))
            .unwrap();
        let from_c = c.keys.seal(1, &item("c, epoch 1"));
        // A revokes C: epoch 2 for A and B only.
        let l = rotate(&a, &k1, &k2, &[&a, &b], &b);
        let r = b.keys.refresh(&l).unwrap();
        assert_eq!(r.moved_to, Some(Epoch(2)));
        assert_eq!(b.keys.epoch_key(), &k2);
        assert!(
            b.keys.roster().get(c.id).is_none(),
            "C is out of the roster"
        );
        assert!(b.keys.roster().get(a.id).is_some());
        // C's clips: older epoch, and C is no longer known.
        assert!(refused(b.keys.open(c.id, &from_c, false)).contains("epoch 1"));
        let c_forged = SignedEnvelope::seal(
            &k2.clip_key(Epoch(2)),
            &c.secrets,
            &SignedHeader {
                kind: EnvelopeKind::Clip,
                sender: c.id,
                seq: 2,
                epoch: Epoch(2),
            },
            &item("x").encode(),
        );
        assert!(matches!(
            b.keys.open(c.id, &c_forged, false),
            Opened::Refresh(Need::Sender(_))
        ));
        assert!(refused(b.keys.open(c.id, &c_forged, true)).contains("not in this device's roster"));
        // C itself cannot adopt: it has no wrap, and B's does not open for it.
        let mut c = c;
        let mut lc = rotate(&a, &k1, &k2, &[&a, &b], &b);
        assert!(c.keys.refresh(&lc).unwrap_err().contains("does not open"));
        lc.wrap = None;
        assert!(c.keys.refresh(&lc).unwrap_err().contains("log in again"));
        assert_eq!(c.keys.epoch(), Epoch(1));
    }

    #[test]
    fn a_wrap_from_an_unknown_signer_needs_its_certificate() {
        let (k1, k2) = (
            EpochKey::generate(&mut OsRng),
            EpochKey::generate(&mut OsRng),
        );
        let (a, mut b) = (dev(1, 1, &k1, true), dev(2, 1, &k1, true));
        // B never pinned A: A's certificate under epoch 1 vouches for it.
        let l = rotate(&a, &k1, &k2, &[&a, &b], &b);
        let mut bad = l.clone();
        let evil = DeviceSecrets::generate(&mut OsRng).public();
        bad.wrap.as_mut().unwrap().sender_public = evil.to_hex();
        assert!(b.keys.refresh(&bad).unwrap_err().contains("cannot verify"));
        let mut bad = l.clone();
        bad.wrap.as_mut().unwrap().sender_cert = hex::encode([0u8; 32]);
        assert!(b.keys.refresh(&bad).unwrap_err().contains("cannot verify"));
        assert_eq!(b.keys.epoch(), Epoch(1));
        let r = b.keys.refresh(&l).unwrap();
        assert_eq!(r.moved_to, Some(Epoch(2)));
        assert_eq!(r.new_devices.len(), 1, "A announced");
        // A pinned signer with another key than the wrap claims: refused.
        let (k3, mut c) = (EpochKey::generate(&mut OsRng), dev(3, 1, &k1, true));
        c.keys
            .refresh(&listing(1, vec![record(&a, &k1, 1)]))
            .unwrap();
        let mut l3 = rotate(&a, &k1, &k3, &[&a, &c], &c);
        l3.wrap.as_mut().unwrap().sender_public = evil.to_hex();
        assert!(c.keys.refresh(&l3).unwrap_err().contains("another key"));
    }
}
