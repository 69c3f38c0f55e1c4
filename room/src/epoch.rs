//! The relay side of protocol v2's key epochs that does no IO, shared by
//! both relay hosts: which epoch a `password/finish` may name, and the
//! checks of a new epoch's wraps, certificates and revokes against the
//! account's devices (`docs/crypto.md`, "Key epochs").
//!
//! A host loads the account's epoch and devices, calls [`epoch_step`] and,
//! for a new epoch, [`check_rotation`], then stores the [`Rotation`] in one
//! transaction with the new credentials. The relay can open none of what it
//! stores: wraps are sealed to each device's key and signed by the sender,
//! and receivers check the signer against their own roster.

use crate::opaque::{cert, device_wrap};
use crate::validate::Invalid;
use clipmesh_proto::api::v2::PasswordFinishRequest;
use clipmesh_proto::DeviceId;
use std::collections::HashSet;

/// One device of the account, as the rotation checks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountDevice {
    /// The device.
    pub id: DeviceId,
    /// Its published public keys, if it published any.
    pub public_key: Option<Vec<u8>>,
}

/// A new epoch started by one device (a revoke or password change): who
/// gets its key, who is certified in it, who is revoked. Checked against
/// the account's devices by [`check_rotation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The device that started the epoch and signed the wraps.
    pub sender: DeviceId,
    /// Its public keys (empty when there are no wraps).
    pub sender_public: Vec<u8>,
    /// Its certificate under the previous epoch (empty when there are no
    /// wraps).
    pub sender_cert: Vec<u8>,
    /// The new key wrapped to each remaining device.
    pub wraps: Vec<(DeviceId, Vec<u8>)>,
    /// Each remaining device's certificate under the new epoch.
    pub certs: Vec<(DeviceId, Vec<u8>)>,
    /// Devices whose sessions end.
    pub revoke: Vec<DeviceId>,
}

/// What `DELETE /api/v1/devices/{id}` answers (409) when
/// [`v1_revoke_allowed`] refuses it.
pub const V1_REVOKE_NEEDS_EPOCH: &str = "this account uses key epochs: revoking another device must start a new epoch, or the revoked device could still open clips sealed from now on; run `clipmesh devices --revoke ID` (it asks for the password and starts a new epoch)";

/// Whether `DELETE /api/v1/devices/{id}` by device `caller` may end the
/// session of `target` on an account at `account_epoch`. That request ends
/// a session without a new epoch, so the device keeps the current key:
/// allowed only while the account is at epoch 0 (a v1 account, or an
/// upgraded one before its first new epoch, whose v1 clients have no other
/// revoke), or when a device ends its own session (a logout). Anything else
/// must be a rotation (`password/finish` with `revoke`), answered 409 with
/// [`V1_REVOKE_NEEDS_EPOCH`].
pub fn v1_revoke_allowed(account_epoch: u32, caller: DeviceId, target: DeviceId) -> bool {
    account_epoch == 0 || caller == target
}

/// The epoch a `password/finish` names against the account's `current`
/// one: `Ok(false)` for the same epoch (which carries no revoke, wrap or
/// certificate), `Ok(true)` for the next one; anything else is refused.
pub fn epoch_step(current: u32, req: &PasswordFinishRequest) -> Result<bool, Invalid> {
    let next = Some(req.epoch) == current.checked_add(1);
    if req.epoch != current && !next {
        return Err(Invalid(
            "epoch must be the account's current epoch or the next".into(),
        ));
    }
    let changes = !(req.revoke.is_empty() && req.wraps.is_empty() && req.certs.is_empty());
    if changes && !next {
        return Err(Invalid(
            "revoking a device or wrapping keys needs a new epoch".into(),
        ));
    }
    Ok(next)
}

/// Checks a new epoch's wraps, certificates and revokes from device `me`
/// against the account's `devices`: each names a device of the account;
/// nobody revoked gets a wrap or a certificate and nobody is named twice;
/// the caller does not revoke itself; certificates go to devices with a
/// published key; wraps need the caller's published key and its
/// certificate under the previous epoch (receivers check the signer with
/// them).
pub fn check_rotation(
    me: DeviceId,
    devices: &[AccountDevice],
    req: &PasswordFinishRequest,
) -> Result<Rotation, Invalid> {
    let known = |d: &DeviceId| devices.iter().any(|r| r.id == *d);
    let bad = |m: &str| Err(Invalid(m.into()));
    let mut r = Rotation {
        sender: me,
        sender_public: Vec::new(),
        sender_cert: Vec::new(),
        wraps: Vec::new(),
        certs: Vec::new(),
        revoke: Vec::new(),
    };
    for d in &req.revoke {
        if *d == me || !known(d) {
            return bad("revoke names an unknown device or the caller");
        }
        if !r.revoke.contains(d) {
            r.revoke.push(*d);
        }
    }
    let mut seen = HashSet::new();
    for w in &req.wraps {
        if !known(&w.device) || r.revoke.contains(&w.device) || !seen.insert(w.device) {
            return bad("wraps names an unknown, revoked or repeated device");
        }
        r.wraps.push((w.device, device_wrap(&w.wrap)?.0.to_vec()));
    }
    let mut seen = HashSet::new();
    for c in &req.certs {
        let has_key = devices
            .iter()
            .any(|d| d.id == c.device && d.public_key.is_some());
        if !has_key || r.revoke.contains(&c.device) || !seen.insert(c.device) {
            return bad("certs names an unknown, keyless, revoked or repeated device");
        }
        r.certs.push((c.device, cert(&c.cert)?.to_vec()));
    }
    if !r.wraps.is_empty() {
        let Some(public) = devices
            .iter()
            .find(|d| d.id == me)
            .and_then(|d| d.public_key.clone())
        else {
            return bad("wrapping keys needs this device's published key");
        };
        let Some(sender_cert) = req.sender_cert.as_deref() else {
            return bad("wrapping keys needs sender_cert");
        };
        r.sender_public = public;
        r.sender_cert = cert(sender_cert)?.to_vec();
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::api::v2::{CertUpload, WrapUpload};
    use clipmesh_proto::epoch::{CERT_LEN, DEVICE_WRAPPED_LEN};
    use clipmesh_proto::KdfParams;

    #[test]
    fn a_v1_revoke_of_another_device_needs_epoch_zero() {
        let (me, other) = (DeviceId(1), DeviceId(2));
        assert!(v1_revoke_allowed(0, me, other), "v1 and epoch-0 accounts");
        assert!(!v1_revoke_allowed(1, me, other));
        assert!(!v1_revoke_allowed(7, me, other));
        assert!(
            v1_revoke_allowed(7, me, me),
            "a device ends its own session"
        );
    }

    fn req(epoch: u32) -> PasswordFinishRequest {
        PasswordFinishRequest {
            login_id: String::new(),
            finish: String::new(),
            record: String::new(),
            kdf: KdfParams::default(),
            epoch,
            export_wrap: String::new(),
            end_other_sessions: false,
            revoke: Vec::new(),
            wraps: Vec::new(),
            certs: Vec::new(),
            sender_cert: None,
        }
    }

    fn devices() -> Vec<AccountDevice> {
        vec![
            AccountDevice {
                id: DeviceId(1),
                public_key: Some(vec![1; 64]),
            },
            AccountDevice {
                id: DeviceId(2),
                public_key: Some(vec![2; 64]),
            },
            AccountDevice {
                id: DeviceId(3),
                public_key: None,
            },
        ]
    }

    fn wrap(d: u64) -> WrapUpload {
        WrapUpload {
            device: DeviceId(d),
            wrap: "ab".repeat(DEVICE_WRAPPED_LEN),
        }
    }

    fn certificate(d: u64) -> CertUpload {
        CertUpload {
            device: DeviceId(d),
            cert: "cd".repeat(CERT_LEN),
        }
    }

    #[test]
    fn only_the_current_or_next_epoch_and_changes_only_with_the_next() {
        assert_eq!(epoch_step(4, &req(4)), Ok(false));
        assert_eq!(epoch_step(4, &req(5)), Ok(true));
        assert!(epoch_step(4, &req(6)).is_err());
        assert!(epoch_step(4, &req(3)).is_err());
        assert!(epoch_step(u32::MAX, &req(0)).is_err());
        let mut r = req(4);
        r.revoke.push(DeviceId(2));
        assert!(epoch_step(4, &r).is_err(), "a revoke in the same epoch");
        r.epoch = 5;
        assert_eq!(epoch_step(4, &r), Ok(true));
    }

    #[test]
    fn a_valid_rotation_is_returned_as_stored() {
        let mut r = req(2);
        r.revoke = vec![DeviceId(3)];
        r.wraps = vec![wrap(1), wrap(2)];
        r.certs = vec![certificate(1), certificate(2)];
        r.sender_cert = Some("ef".repeat(CERT_LEN));
        let got = check_rotation(DeviceId(1), &devices(), &r).unwrap();
        assert_eq!(got.sender, DeviceId(1));
        assert_eq!(got.sender_public, vec![1; 64]);
        assert_eq!(got.sender_cert, vec![0xef; CERT_LEN]);
        assert_eq!(got.revoke, vec![DeviceId(3)]);
        assert_eq!(
            got.wraps.iter().map(|w| w.0).collect::<Vec<_>>(),
            vec![DeviceId(1), DeviceId(2)]
        );
        assert_eq!(got.wraps[0].1, vec![0xab; DEVICE_WRAPPED_LEN]);
        assert_eq!(got.certs[1], (DeviceId(2), vec![0xcd; CERT_LEN]));
    }

    #[test]
    fn bad_rotations_are_refused() {
        let cert = Some("ef".repeat(CERT_LEN));
        let cases: Vec<(&str, DeviceId, PasswordFinishRequest)> = vec![
            ("revoking oneself", DeviceId(1), {
                let mut r = req(2);
                r.revoke = vec![DeviceId(1)];
                r
            }),
            ("an unknown revoke", DeviceId(1), {
                let mut r = req(2);
                r.revoke = vec![DeviceId(9)];
                r
            }),
            ("a wrap to a revoked device", DeviceId(1), {
                let mut r = req(2);
                r.revoke = vec![DeviceId(2)];
                r.wraps = vec![wrap(2)];
                r.sender_cert = cert.clone();
                r
            }),
            ("a repeated wrap", DeviceId(1), {
                let mut r = req(2);
                r.wraps = vec![wrap(2), wrap(2)];
                r.sender_cert = cert.clone();
                r
            }),
            ("a short wrap", DeviceId(1), {
                let mut r = req(2);
                r.wraps = vec![WrapUpload {
                    device: DeviceId(2),
                    wrap: "00".into(),
                }];
                r.sender_cert = cert.clone();
                r
            }),
            ("wraps without sender_cert", DeviceId(1), {
                let mut r = req(2);
                r.wraps = vec![wrap(2)];
                r
            }),
            ("wraps from a keyless sender", DeviceId(3), {
                let mut r = req(2);
                r.wraps = vec![wrap(2)];
                r.sender_cert = cert.clone();
                r
            }),
            ("a cert for a keyless device", DeviceId(1), {
                let mut r = req(2);
                r.certs = vec![certificate(3)];
                r
            }),
            ("a cert for an unknown device", DeviceId(1), {
                let mut r = req(2);
                r.certs = vec![certificate(9)];
                r
            }),
            ("a repeated cert", DeviceId(1), {
                let mut r = req(2);
                r.certs = vec![certificate(2), certificate(2)];
                r
            }),
        ];
        for (what, me, r) in cases {
            assert!(check_rotation(me, &devices(), &r).is_err(), "{what}");
        }
    }
}
