//! What the relay stores for protocol v2 (`docs/crypto.md`): each
//! account's OPAQUE registration record, its current key epoch and that
//! epoch's key wrapped under the OPAQUE export key; each device's public
//! keys and their certificate.
//!
//! None of it opens anything: the record needs the relay's OPAQUE setup
//! (kept outside the database) *and* one Argon2id per password guess; the
//! export wrap needs the password; public keys are public.
//!
//! An upgraded v1 account keeps its row and id. Its v1 verifier, salt and
//! wrapped data key are deleted in the same transaction that stores the
//! record, so v1 login stops working for it at once.

use super::{id, kdf_from_json, kdf_to_json, sql_id, Db, Logout, StoreError};
use clipmesh_proto::{DeviceId, KdfParams, UserId};
use rusqlite::{params, OptionalExtension};

/// A v2 account's login material.
#[derive(Clone, Debug)]
pub struct V2Account {
    /// The account.
    pub user: UserId,
    /// The OPAQUE record; `None` while the account is still v1.
    pub record: Option<Vec<u8>>,
    /// The key-stretching parameters.
    pub kdf: KdfParams,
    /// The current epoch.
    pub epoch: u32,
    /// The current epoch key wrapped under the export key.
    pub export_wrap: Option<Vec<u8>>,
    /// Administers the relay.
    pub is_admin: bool,
    /// Disabled by an admin.
    pub disabled: bool,
}

/// A new record and what goes with it (already validated).
#[derive(Clone, Debug)]
pub struct V2Credentials {
    /// The OPAQUE registration record.
    pub record: Vec<u8>,
    /// Its key-stretching parameters.
    pub kdf: KdfParams,
    /// The epoch `export_wrap` holds.
    pub epoch: u32,
    /// That epoch's key wrapped under the export key.
    pub export_wrap: Vec<u8>,
}

/// One device's published key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKeyRow {
    /// The device.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// X25519 ‖ Ed25519 public keys.
    pub public_key: Option<Vec<u8>>,
    /// The epoch of the certificate.
    pub epoch: Option<u32>,
    /// The certificate.
    pub cert: Option<Vec<u8>>,
}

/// A new epoch's wraps, certificates and revokes, checked by
/// [`clipmesh_room::epoch::check_rotation`].
pub use clipmesh_room::epoch::Rotation;

/// The current epoch's key wrapped to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochWrapRow {
    /// The epoch.
    pub epoch: u32,
    /// The device that wrapped it.
    pub sender: DeviceId,
    /// Its public keys.
    pub sender_public: Vec<u8>,
    /// Its certificate under the previous epoch.
    pub sender_cert: Vec<u8>,
    /// The wrap.
    pub wrap: Vec<u8>,
}

fn epoch_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl Db {
    /// The v2 login material of `username`.
    pub fn v2_account_by_name(&self, username: &str) -> Result<Option<V2Account>, StoreError> {
        self.v2_account("username = ?1", params![username])
    }

    /// The v2 login material of `user`.
    pub fn v2_account_by_id(&self, user: UserId) -> Result<Option<V2Account>, StoreError> {
        self.v2_account("id = ?1", params![sql_id(user.0)])
    }

    fn v2_account(
        &self,
        filter: &str,
        p: impl rusqlite::Params,
    ) -> Result<Option<V2Account>, StoreError> {
        let sql = format!(
            "SELECT id, opaque_record, kdf, epoch, export_wrap, is_admin, disabled \
             FROM users WHERE {filter}"
        );
        let row = self
            .conn
            .query_row(&sql, p, |r| {
                Ok((
                    V2Account {
                        user: UserId(id(r.get(0)?)),
                        record: r.get(1)?,
                        kdf: KdfParams::default(),
                        epoch: epoch_of(r.get(3)?),
                        export_wrap: r.get(4)?,
                        is_admin: r.get(5)?,
                        disabled: r.get(6)?,
                    },
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        row.map(|(mut a, kdf)| {
            a.kdf = kdf_from_json(&kdf)?;
            Ok(a)
        })
        .transpose()
    }

    /// Creates a v2 account (no v1 verifier, salt or wrapped data key) and
    /// its first device session, in one transaction.
    pub fn create_user_v2(
        &mut self,
        username: &str,
        creds: &V2Credentials,
        policy_allows: impl FnOnce(u64) -> bool,
        device: (&str, &[u8; 32]),
        now: i64,
    ) -> Result<super::CreateUser, StoreError> {
        let v1 = super::NewCredentials {
            salt: Vec::new(),
            kdf: creds.kdf,
            auth_hash: String::new(),
            wrapped_data_key: Vec::new(),
        };
        self.create_user_inner(username, &v1, Some(creds), policy_allows, Some(device), now)
    }

    /// Moves a v1 account to v2 in place: stores the record, the epoch-0
    /// export wrap and the parameters, and deletes the v1 verifier, salt and
    /// wrapped data key. False if the account had already upgraded (the
    /// caller answers as for a wrong password).
    pub fn upgrade_to_v2(
        &mut self,
        user: UserId,
        creds: &V2Credentials,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE users SET opaque_record = ?2, kdf = ?3, epoch = ?4, export_wrap = ?5, \
             auth_hash = '', salt = x'', wrapped_data_key = x'' \
             WHERE id = ?1 AND opaque_record IS NULL",
            params![
                sql_id(user.0),
                creds.record,
                kdf_to_json(&creds.kdf),
                i64::from(creds.epoch),
                creds.export_wrap
            ],
        )?;
        Ok(n > 0)
    }

    /// Replaces a v2 account's record, parameters, epoch and export wrap
    /// (a password change), ending sessions as `logout` says. Returns the
    /// devices logged out. An epoch change also drops every device's
    /// certificate of an older epoch and the stored clip sealed under it.
    ///
    /// With a `rotation` (a new epoch), in the same transaction: the
    /// revoked devices are deleted (sessions, keys, wraps), every older
    /// wrap is replaced by the new ones, and the remaining devices'
    /// certificates move to the new epoch.
    pub fn update_v2_credentials(
        &mut self,
        user: UserId,
        creds: &V2Credentials,
        logout: Logout,
        rotation: Option<&Rotation>,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let tx = self.conn.transaction()?;
        let old: i64 = tx.query_row(
            "SELECT epoch FROM users WHERE id = ?1",
            params![sql_id(user.0)],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE users SET opaque_record = ?2, kdf = ?3, epoch = ?4, export_wrap = ?5, \
             cc_verifier = NULL WHERE id = ?1",
            params![
                sql_id(user.0),
                creds.record,
                kdf_to_json(&creds.kdf),
                i64::from(creds.epoch),
                creds.export_wrap
            ],
        )?;
        let mut revoked = Self::logout_in(&tx, user, logout)?;
        if let Some(r) = rotation {
            for d in &r.revoke {
                let n = tx.execute(
                    "DELETE FROM devices WHERE id = ?1 AND user_id = ?2",
                    params![sql_id(d.0), sql_id(user.0)],
                )?;
                if n > 0 && !revoked.contains(d) {
                    revoked.push(*d);
                }
            }
            tx.execute(
                "DELETE FROM epoch_wraps WHERE user_id = ?1",
                params![sql_id(user.0)],
            )?;
            for (d, wrap) in &r.wraps {
                tx.execute(
                    "INSERT INTO epoch_wraps (device_id, user_id, epoch, sender, sender_public, sender_cert, wrap) \
                     SELECT id, user_id, ?3, ?4, ?5, ?6, ?7 FROM devices WHERE id = ?1 AND user_id = ?2",
                    params![
                        sql_id(d.0),
                        sql_id(user.0),
                        i64::from(creds.epoch),
                        sql_id(r.sender.0),
                        r.sender_public,
                        r.sender_cert,
                        wrap
                    ],
                )?;
            }
            for (d, cert) in &r.certs {
                tx.execute(
                    "UPDATE devices SET key_epoch = ?3, key_cert = ?4 \
                     WHERE id = ?1 AND user_id = ?2 AND public_key IS NOT NULL",
                    params![sql_id(d.0), sql_id(user.0), i64::from(creds.epoch), cert],
                )?;
            }
        }
        if epoch_of(old) != creds.epoch {
            tx.execute(
                "UPDATE room_state SET envelope = NULL WHERE user_id = ?1",
                params![sql_id(user.0)],
            )?;
        }
        tx.commit()?;
        Ok(revoked)
    }

    /// Publishes a device's public keys and certificate. False if the
    /// device is not the user's.
    pub fn set_device_key(
        &self,
        user: UserId,
        device: DeviceId,
        public_key: &[u8],
        epoch: u32,
        cert: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE devices SET public_key = ?3, key_epoch = ?4, key_cert = ?5 \
             WHERE id = ?1 AND user_id = ?2",
            params![
                sql_id(device.0),
                sql_id(user.0),
                public_key,
                i64::from(epoch),
                cert
            ],
        )?;
        Ok(n > 0)
    }

    /// The current epoch's key wrapped to `device`, if the relay holds one
    /// for the account's current epoch.
    pub fn epoch_wrap(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> Result<Option<EpochWrapRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT w.epoch, w.sender, w.sender_public, w.sender_cert, w.wrap \
                 FROM epoch_wraps w JOIN users u ON u.id = w.user_id \
                 WHERE w.device_id = ?1 AND w.user_id = ?2 AND w.epoch = u.epoch",
                params![sql_id(device.0), sql_id(user.0)],
                |r| {
                    Ok(EpochWrapRow {
                        epoch: epoch_of(r.get(0)?),
                        sender: DeviceId(id(r.get(1)?)),
                        sender_public: r.get(2)?,
                        sender_cert: r.get(3)?,
                        wrap: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// The public key a device published, if any.
    pub fn device_public_key(&self, device: DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT public_key FROM devices WHERE id = ?1",
                params![sql_id(device.0)],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Every device of `user` with its published key, oldest first.
    pub fn device_keys(&self, user: UserId) -> Result<Vec<DeviceKeyRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, name, public_key, key_epoch, key_cert FROM devices \
             WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map(params![sql_id(user.0)], |r| {
            Ok(DeviceKeyRow {
                id: DeviceId(id(r.get(0)?)),
                name: r.get(1)?,
                public_key: r.get(2)?,
                epoch: r.get::<_, Option<i64>>(3)?.map(epoch_of),
                cert: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::CreateUser;
    use super::*;

    fn v2() -> V2Credentials {
        V2Credentials {
            record: vec![1; 192],
            kdf: KdfParams::default(),
            epoch: 1,
            export_wrap: vec![2; 72],
        }
    }

    #[test]
    fn v2_account_lifecycle() {
        let mut db = Db::open_in_memory().unwrap();
        let CreateUser::Created {
            user,
            device: Some(dev),
            is_admin: true,
        } = db
            .create_user_v2("ann", &v2(), |_| true, ("laptop", &[9; 32]), 5)
            .unwrap()
        else {
            panic!("not created")
        };
        let a = db.v2_account_by_name("ann").unwrap().unwrap();
        assert_eq!(a.record.as_deref(), Some(&[1u8; 192][..]));
        assert_eq!((a.epoch, a.user), (1, user));
        // No v1 verifier: the v1 row says so.
        let row = db.user_by_name("ann").unwrap().unwrap();
        assert!(row.v2 && row.auth_hash.is_empty());
        // Not an upgrade candidate any more.
        assert!(!db.upgrade_to_v2(user, &v2()).unwrap());

        assert!(db.set_device_key(user, dev, &[3; 64], 1, &[4; 32]).unwrap());
        assert!(!db
            .set_device_key(UserId(99), dev, &[3; 64], 1, &[4; 32])
            .unwrap());
        let keys = db.device_keys(user).unwrap();
        assert_eq!(keys[0].public_key.as_deref(), Some(&[3u8; 64][..]));
        assert_eq!(keys[0].epoch, Some(1));

        let next = V2Credentials {
            epoch: 2,
            record: vec![5; 192],
            ..v2()
        };
        let d2 = db.create_session(user, "phone", &[8; 32], 6).unwrap();
        let revoked = db
            .update_v2_credentials(user, &next, Logout::AllBut(dev), None)
            .unwrap();
        assert_eq!(revoked, vec![d2]);
        let a = db.v2_account_by_id(user).unwrap().unwrap();
        assert_eq!((a.epoch, a.record.unwrap()), (2, vec![5; 192]));
    }

    #[test]
    fn a_rotation_replaces_wraps_moves_certs_and_deletes_the_revoked() {
        let mut db = Db::open_in_memory().unwrap();
        let CreateUser::Created {
            user,
            device: Some(a),
            ..
        } = db
            .create_user_v2("ann", &v2(), |_| true, ("a", &[1; 32]), 5)
            .unwrap()
        else {
            panic!("not created");
        };
        let b = db.create_session(user, "b", &[2; 32], 5).unwrap();
        let c = db.create_session(user, "c", &[3; 32], 5).unwrap();
        for d in [a, b, c] {
            assert!(db
                .set_device_key(user, d, &[d.0 as u8; 64], 1, &[9; 32])
                .unwrap());
        }
        let rotate = |sender: DeviceId, epoch: u32, wraps: Vec<DeviceId>, revoke: Vec<DeviceId>| {
            (
                V2Credentials { epoch, ..v2() },
                Rotation {
                    sender,
                    sender_public: vec![sender.0 as u8; 64],
                    sender_cert: vec![7; 32],
                    certs: wraps.iter().map(|d| (*d, vec![epoch as u8; 32])).collect(),
                    wraps: wraps.iter().map(|d| (*d, vec![d.0 as u8; 168])).collect(),
                    revoke,
                },
            )
        };
        let (creds, rot) = rotate(a, 2, vec![a, b], vec![c]);
        let revoked = db
            .update_v2_credentials(user, &creds, Logout::None, Some(&rot))
            .unwrap();
        assert_eq!(revoked, vec![c]);
        let w = db.epoch_wrap(user, b).unwrap().unwrap();
        assert_eq!((w.epoch, w.sender, w.wrap.len()), (2, a, 168));
        assert_eq!(w.sender_public, vec![a.0 as u8; 64]);
        assert!(db.epoch_wrap(user, c).unwrap().is_none());
        let keys = db.device_keys(user).unwrap();
        assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![a, b]);
        assert!(keys
            .iter()
            .all(|k| k.epoch == Some(2) && k.cert == Some(vec![2; 32])));
        // The next epoch replaces every wrap; a wrap of an older epoch is
        // never handed out.
        let (creds, rot) = rotate(b, 3, vec![b], Vec::new());
        db.update_v2_credentials(user, &creds, Logout::None, Some(&rot))
            .unwrap();
        assert!(db.epoch_wrap(user, a).unwrap().is_none());
        assert_eq!(db.epoch_wrap(user, b).unwrap().unwrap().epoch, 3);
        let other = db
            .create_user_v2("bob", &v2(), |_| true, ("x", &[4; 32]), 5)
            .unwrap();
        let CreateUser::Created { user: bob, .. } = other else {
            panic!("not created");
        };
        assert!(
            db.epoch_wrap(bob, b).unwrap().is_none(),
            "another account's device"
        );
    }

    #[test]
    fn v1_account_upgrades_once_and_loses_its_v1_verifier() {
        let mut db = Db::open_in_memory().unwrap();
        let creds = super::super::NewCredentials {
            salt: vec![1; 16],
            kdf: KdfParams::default(),
            auth_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            wrapped_data_key: vec![2; 72],
        };
        let CreateUser::Created { user, .. } =
            db.create_user("bob", &creds, |_| true, None, 1).unwrap()
        else {
            panic!("not created")
        };
        assert!(db.v2_account_by_id(user).unwrap().unwrap().record.is_none());
        let up = V2Credentials { epoch: 0, ..v2() };
        assert!(db.upgrade_to_v2(user, &up).unwrap());
        assert!(!db.upgrade_to_v2(user, &up).unwrap(), "only once");
        let row = db.user_by_id(user).unwrap().unwrap();
        assert!(row.v2);
        assert!(row.auth_hash.is_empty() && row.salt.is_empty());
        assert!(row.wrapped_data_key.is_empty());
        assert_eq!(db.v2_account_by_id(user).unwrap().unwrap().epoch, 0);
    }
}
