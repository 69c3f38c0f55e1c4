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
    pub fn update_v2_credentials(
        &mut self,
        user: UserId,
        creds: &V2Credentials,
        logout: Logout,
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
        let revoked = Self::logout_in(&tx, user, logout)?;
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
            .update_v2_credentials(user, &next, Logout::AllBut(dev))
            .unwrap();
        assert_eq!(revoked, vec![d2]);
        let a = db.v2_account_by_id(user).unwrap().unwrap();
        assert_eq!((a.epoch, a.record.unwrap()), (2, vec![5; 192]));
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
