//! Protocol v2 on the device: OPAQUE signup and login, the v1 → v2
//! upgrade, and this device's key pairs (`docs/crypto.md`).
//!
//! - **signup:** OPAQUE registration; a fresh epoch-1 key wrapped under the
//!   export key; the relay creates the account from the record.
//! - **login:** OPAQUE's three messages; the parameters the relay shows are
//!   checked against the floor and this device's pin *before* anything is
//!   stretched; the export key unwraps the current epoch key.
//! - **upgrade:** after a v1 login, a registration with the same password
//!   and the account's parameters; the v1 data key becomes epoch 0.
//! - After each of them the device makes its X25519/Ed25519 key pairs,
//!   certifies the public half under the epoch's roster key and publishes
//!   it. The secrets go to the secret store; the export key is dropped.

use super::{store_session, AccountError, Credentials, Session};
use crate::api::{Api, ApiError};
use crate::config::Account;
use clipmesh_proto::api::v2::{
    DeviceKeyRequest, LoginFinishRequest, LoginStartRequest, LoginV2Response,
    OwnRegisterStartRequest, RegisterStartRequest, SignupFinishRequest, UpgradeRequest,
};
use clipmesh_proto::opaque::{
    ClientLogin, ClientRegistration, ExportKey, LoginResponseBytes, OpaqueError,
    RegistrationResponseBytes,
};
use clipmesh_proto::{AuthKey, DataKey, DeviceId, DeviceSecrets, Epoch, EpochKey, KdfParams};
use rand::rngs::OsRng;
use std::path::Path;

/// The epoch a new v2 account starts at (epoch 0 is an upgraded v1
/// account's data key).
pub const FIRST_EPOCH: u32 = 1;

/// Whether an API error means "this relay has no `/api/v2`".
pub fn not_offered(e: &ApiError) -> bool {
    matches!(e, ApiError::Other { status: 404, .. })
}

fn malformed(what: &'static str) -> AccountError {
    AccountError::BadResponse(what)
}

/// OPAQUE registration with the relay's answer to step 1; returns the
/// record (hex) and the export key.
fn finish_registration(
    state: ClientRegistration,
    creds: &Credentials<'_>,
    response_hex: &str,
    kdf: &KdfParams,
) -> Result<(String, ExportKey), AccountError> {
    let resp = RegistrationResponseBytes::from_hex(response_hex)
        .map_err(|_| malformed("registration response"))?;
    let (record, export_key) = state
        .finish(&mut OsRng, creds.password, creds.username, &resp, kdf)
        .map_err(AccountError::Opaque)?;
    Ok((record.to_hex(), export_key))
}

/// v2 signup; `Err(Api(404))` when the relay has no v2 (see
/// [`not_offered`]).
pub fn signup(
    api: &Api,
    creds: &Credentials<'_>,
    kdf: KdfParams,
) -> Result<(LoginV2Response, EpochKey), AccountError> {
    let (state, request) =
        ClientRegistration::start(&mut OsRng, creds.password).map_err(AccountError::Opaque)?;
    let start = api.v2_signup_start(&RegisterStartRequest {
        username: creds.username.to_owned(),
        request: request.to_hex(),
    })?;
    let (record, export_key) = finish_registration(state, creds, &start.response, &kdf)?;
    let epoch_key = EpochKey::generate(&mut OsRng);
    let wrap = export_key.kek().wrap(Epoch(FIRST_EPOCH), &epoch_key);
    let resp = api.v2_signup_finish(&SignupFinishRequest {
        username: creds.username.to_owned(),
        record,
        kdf,
        epoch: FIRST_EPOCH,
        export_wrap: wrap.to_hex(),
        device_name: creds.device_name.to_owned(),
        setup_token: creds.setup_token.map(str::to_owned),
    })?;
    Ok((resp, epoch_key))
}

/// How a v2 login attempt ended.
pub enum Outcome {
    /// Logged in.
    Done {
        /// The relay's answer.
        resp: LoginV2Response,
        /// This registration's export key.
        export_key: ExportKey,
        /// The parameters it was stretched with (passed floor and pin).
        kdf: KdfParams,
    },
    /// The relay has no `/api/v2`.
    NotOffered,
    /// Wrong password, an account still on v1, or an unknown name: OPAQUE
    /// cannot tell them apart, by design.
    Failed,
}

/// One v2 login. The parameters the relay shows are checked against the
/// floor and `pinned` before the password is stretched.
pub fn login(
    api: &Api,
    creds: &Credentials<'_>,
    pinned: Option<&KdfParams>,
) -> Result<Outcome, AccountError> {
    let (state, ke1) =
        ClientLogin::start(&mut OsRng, creds.password).map_err(AccountError::Opaque)?;
    let start = match api.v2_login_start(&LoginStartRequest {
        username: creds.username.to_owned(),
        request: ke1.to_hex(),
    }) {
        Ok(s) => s,
        Err(e) if not_offered(&e) => return Ok(Outcome::NotOffered),
        Err(e) => return Err(e.into()),
    };
    start.kdf.check_pinned(pinned).map_err(AccountError::Kdf)?;
    let ke2 = LoginResponseBytes::from_hex(&start.response).map_err(|_| malformed("KE2"))?;
    let out = match state.finish(creds.password, creds.username, &ke2, &start.kdf) {
        Ok(o) => o,
        Err(OpaqueError::LoginFailed) => return Ok(Outcome::Failed),
        Err(e) => return Err(AccountError::Opaque(e)),
    };
    match api.v2_login_finish(&LoginFinishRequest {
        login_id: start.login_id,
        finish: out.finish.to_hex(),
        device_name: creds.device_name.to_owned(),
    }) {
        Ok(resp) => Ok(Outcome::Done {
            resp,
            export_key: out.export_key,
            kdf: start.kdf,
        }),
        Err(ApiError::InvalidCredentials) => Ok(Outcome::Failed),
        Err(e) => Err(e.into()),
    }
}

/// Upgrades the account of a fresh v1 session (`token`) to v2 in place:
/// a registration with the same password and the account's parameters,
/// the v1 data key wrapped under the export key as epoch 0, and the v1
/// `auth_key` as proof.
pub fn upgrade(
    api: &Api,
    token: &str,
    creds: &Credentials<'_>,
    auth_key: &AuthKey,
    data_key: &DataKey,
    kdf: KdfParams,
) -> Result<(), AccountError> {
    let (state, request) =
        ClientRegistration::start(&mut OsRng, creds.password).map_err(AccountError::Opaque)?;
    let start = api.v2_register_start(
        token,
        &OwnRegisterStartRequest {
            request: request.to_hex(),
        },
    )?;
    let (record, export_key) = finish_registration(state, creds, &start.response, &kdf)?;
    let epoch_key = EpochKey::from_bytes(*data_key.expose());
    let wrap = export_key.kek().wrap(Epoch(0), &epoch_key);
    api.v2_upgrade(
        token,
        &UpgradeRequest {
            current_auth_key: hex::encode(auth_key.expose()),
            record,
            kdf,
            export_wrap: wrap.to_hex(),
        },
    )?;
    Ok(())
}

/// Makes this device's key pairs, stores them with the token and the
/// epoch key, and publishes the public half with its certificate. A
/// failed publish is logged, not fatal: the device is logged in, and
/// `clipmesh devices` on the others shows it without a key.
pub fn store(
    dir: &Path,
    server: &str,
    creds: &Credentials<'_>,
    api: &Api,
    resp: LoginV2Response,
    epoch_key: EpochKey,
) -> Result<Account, AccountError> {
    let device = DeviceSecrets::generate(&mut OsRng);
    let public = device.public();
    let epoch = Epoch(resp.epoch);
    let cert = epoch_key.certify(epoch, resp.device_id, &public);
    let token = resp.token.clone();
    let account = store_session(
        dir,
        server,
        creds,
        Session {
            user_id: resp.user_id.0,
            device_id: resp.device_id.0,
            token: resp.token,
            data_key: DataKey::from_bytes(*epoch_key.expose()),
            v2: Some((device, resp.epoch)),
        },
    )?;
    if let Err(e) = api.v2_put_device_key(
        &token,
        &DeviceKeyRequest {
            public_key: public.to_hex(),
            epoch: resp.epoch,
            cert: hex::encode(cert),
        },
    ) {
        tracing::warn!(error = %e, "could not publish this device's public key");
    }
    // This device's own key goes into its roster first.
    crate::roster::Roster::load(dir)
        .and_then(|mut r| r.pin(DeviceId(account.device_id), &public))
        .map_err(AccountError::Pins)?;
    tracing::info!(device = account.device_id, fingerprint = %public.fingerprint(), "device keys made");
    Ok(account)
}

/// Changes a v2 account's password, which starts a new key epoch
/// (`docs/crypto.md`, "Key epochs"): a fresh OPAQUE login with `current`
/// (the relay checks it), a new registration with `new` at the same
/// parameters, and a fresh epoch key, wrapped under the new export key and
/// to every remaining device whose key this device has pinned, signed by
/// this device; each remaining device is certified under the new epoch.
/// `revoke` ends those devices' sessions in the same step (they are not
/// recipients); with `end_other_sessions` every other device is logged out
/// and only this one gets the key.
///
/// A relay without key epochs (`GET /api/v2/epoch-wrap` answers 404: a
/// release from before them) gets a password change that keeps the current
/// epoch, and a revoke is refused there ([`AccountError::NoEpochs`]).
pub fn change_password(
    dir: &Path,
    device: &super::Device,
    current: &[u8],
    new: &[u8],
    end_other_sessions: bool,
    revoke: &[DeviceId],
) -> Result<PasswordChanged, AccountError> {
    use clipmesh_proto::api::v2::{
        CertUpload, PasswordFinishRequest, PasswordStartRequest, WrapUpload,
    };
    let epoch = device.secrets.epoch.ok_or(AccountError::NotV2)?;
    let me_secrets = device.secrets.device.as_ref().ok_or(AccountError::NotV2)?;
    let me = DeviceId(device.account.device_id);
    if revoke.contains(&me) {
        return Err(AccountError::BadRequest(
            "this device cannot revoke itself with a new epoch: run `clipmesh logout` on it, or revoke it from another device",
        ));
    }
    let api = device.api()?;
    let token = &device.secrets.token;
    let username = device.account.username.as_str();
    let pinned = crate::pins::Pins::load(dir)
        .map_err(AccountError::Pins)?
        .get_v2(&device.account.server, username);
    let rotate = epochs_offered(&api, token)?;
    if !rotate && !revoke.is_empty() {
        return Err(AccountError::NoEpochs);
    }
    let next = if rotate {
        epoch
            .checked_add(1)
            .ok_or(AccountError::BadRequest("no epoch left"))?
    } else {
        epoch
    };
    // Who stays: the listed devices this device can vouch for (pinned, or
    // certified under the epoch it holds), minus the revoked ones.
    let listing = api.v2_device_keys(token)?;
    if listing.epoch != epoch {
        return Err(AccountError::BadRequest(
            "the account is at a newer key epoch than this device: run `clipmesh run` (or `clipmesh send`) once to pick it up, then try again",
        ));
    }
    for r in revoke {
        if !listing.devices.iter().any(|d| d.id == *r) {
            return Err(AccountError::BadRequest("no such device in this account"));
        }
    }
    let old_key = EpochKey::from_bytes(*device.secrets.data_key.expose());
    let mut roster = crate::roster::Roster::load(dir).map_err(AccountError::Pins)?;
    let verdicts = roster
        .review(&old_key, epoch, &listing.devices)
        .map_err(AccountError::Pins)?;
    // Devices this device pins now for the first time get the new key:
    // they are announced to the caller, never added silently.
    let announced: Vec<crate::clipkeys::NewDevice> = listing
        .devices
        .iter()
        .zip(&verdicts)
        .filter_map(|(d, v)| match v {
            crate::roster::Trust::New(fingerprint) => Some(crate::clipkeys::NewDevice {
                id: d.id,
                name: d.name.clone(),
                fingerprint: *fingerprint,
            }),
            _ => None,
        })
        .collect();
    let mut remaining: Vec<(DeviceId, clipmesh_proto::DevicePublic)> =
        vec![(me, me_secrets.public())];
    if !end_other_sessions {
        for d in &listing.devices {
            if d.id == me || revoke.contains(&d.id) {
                continue;
            }
            match roster.get(d.id) {
                Some(p) if d.public_key.as_deref() == Some(p.to_hex().as_str()) => {
                    remaining.push((d.id, p))
                }
                _ => tracing::warn!(
                    device = d.id.0,
                    "device has no key this device can vouch for; it gets no key for the new epoch and must log in again"
                ),
            }
        }
    }
    let (login, ke1) = ClientLogin::start(&mut OsRng, current).map_err(AccountError::Opaque)?;
    let (reg, request) =
        ClientRegistration::start(&mut OsRng, new).map_err(AccountError::Opaque)?;
    let start = api.v2_password_start(
        token,
        &PasswordStartRequest {
            login: ke1.to_hex(),
            registration: request.to_hex(),
        },
    )?;
    start
        .kdf
        .check_pinned(pinned.as_ref())
        .map_err(AccountError::Kdf)?;
    let ke2 = LoginResponseBytes::from_hex(&start.response).map_err(|_| malformed("KE2"))?;
    let out = login
        .finish(current, username, &ke2, &start.kdf)
        .map_err(|e| match e {
            OpaqueError::LoginFailed => AccountError::WrongPassword,
            e => AccountError::Opaque(e),
        })?;
    let resp = RegistrationResponseBytes::from_hex(&start.registration)
        .map_err(|_| malformed("registration response"))?;
    let (record, export_key) = reg
        .finish(&mut OsRng, new, username, &resp, &start.kdf)
        .map_err(AccountError::Opaque)?;
    if !rotate {
        // No key epochs on this relay: the current key under the new
        // password, as before epochs.
        let wrap = export_key.kek().wrap(Epoch(epoch), &old_key);
        api.v2_password_finish(
            token,
            &PasswordFinishRequest {
                login_id: start.login_id,
                finish: out.finish.to_hex(),
                record: record.to_hex(),
                kdf: start.kdf,
                epoch,
                export_wrap: wrap.to_hex(),
                end_other_sessions,
                revoke: Vec::new(),
                wraps: Vec::new(),
                certs: Vec::new(),
                sender_cert: None,
            },
        )?;
        tracing::info!(
            end_other_sessions,
            "password changed; the relay has no key epochs"
        );
        return Ok(PasswordChanged {
            epoch,
            new_epoch: false,
            announced,
        });
    }
    let new_epoch = Epoch(next);
    let new_key = EpochKey::generate(&mut OsRng);
    let mut wraps = Vec::with_capacity(remaining.len());
    let mut certs = Vec::with_capacity(remaining.len());
    for (id, public) in &remaining {
        let w = new_key
            .wrap_to_device(&mut OsRng, new_epoch, (me, me_secrets), (*id, public))
            .map_err(|_| malformed("a device's public key"))?;
        wraps.push(WrapUpload {
            device: *id,
            wrap: w.to_hex(),
        });
        certs.push(CertUpload {
            device: *id,
            cert: hex::encode(new_key.certify(new_epoch, *id, public)),
        });
    }
    let wrap = export_key.kek().wrap(new_epoch, &new_key);
    api.v2_password_finish(
        token,
        &PasswordFinishRequest {
            login_id: start.login_id,
            finish: out.finish.to_hex(),
            record: record.to_hex(),
            kdf: start.kdf,
            epoch: next,
            export_wrap: wrap.to_hex(),
            end_other_sessions,
            revoke: revoke.to_vec(),
            wraps,
            certs,
            sender_cert: Some(hex::encode(old_key.certify(
                Epoch(epoch),
                me,
                &me_secrets.public(),
            ))),
        },
    )?;
    // This device holds the new epoch now; its roster keeps only the
    // devices that got the key.
    let kind = crate::secrets::StoreKind::parse(&device.account.secret_store)
        .unwrap_or(crate::secrets::StoreKind::File);
    crate::secrets::set_epoch(dir, kind, next, &new_key)?;
    let ids: Vec<DeviceId> = remaining.iter().map(|(id, _)| *id).collect();
    roster
        .retain(|id, _| ids.contains(&id))
        .map_err(AccountError::Pins)?;
    tracing::info!(
        end_other_sessions,
        revoked = revoke.len(),
        epoch = next,
        "password changed; new key epoch"
    );
    Ok(PasswordChanged {
        epoch: next,
        new_epoch: true,
        announced,
    })
}

/// What [`change_password`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordChanged {
    /// The epoch the account is at now.
    pub epoch: u32,
    /// Whether the change started it (false on a relay without epochs).
    pub new_epoch: bool,
    /// Devices this device saw (and pinned) for the first time on the
    /// way: the caller announces them.
    pub announced: Vec<crate::clipkeys::NewDevice>,
}

/// Whether the relay stores key epochs (`GET /api/v2/epoch-wrap` exists).
pub fn epochs_offered(api: &Api, token: &str) -> Result<bool, AccountError> {
    match api.v2_epoch_wrap(token) {
        Ok(_) => Ok(true),
        Err(e) if not_offered(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
