//! Checks the protocol v2 constructions (device keys, epochs, wraps, the
//! signed envelope, OPAQUE) against the committed vectors in `tests/vectors/`.
//!
//! `device.json`, `epoch.json`, `epoch_wrap.json`, `export_wrap.json` and
//! `signed_envelope.json` come from `scripts/vectors.py` (libsodium's X25519,
//! Ed25519 and XChaCha20-Poly1305, HKDF/HMAC from Python's standard library);
//! its `--check` recomputes them independently. `opaque.json` is pinned from
//! this crate with a deterministic RNG (see `scripts/vectors.py` for why there
//! is no second implementation); regenerate it with
//! `CLIPMESH_WRITE_OPAQUE_VECTORS=1 cargo test -p clipmesh-proto --test vectors_v2`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clipmesh_proto::device::DEVICE_SECRETS_LEN;
use clipmesh_proto::envelope::EnvelopeKind;
use clipmesh_proto::keys::KdfParams;
use clipmesh_proto::opaque::{
    server_login_finish, server_login_start, server_registration_finish, server_registration_start,
    ClientLogin, ClientRegistration, ExportKey, ServerSetup,
};
use clipmesh_proto::{
    DeviceId, DevicePublic, DeviceSecrets, DeviceWrappedKey, Epoch, EpochKey, ExportWrappedKey,
    OpenError, SignedEnvelope, SignedHeader,
};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn h<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let v: Vec<T> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(!v.is_empty(), "{name} has entries");
    v
}

fn secrets(s: &str) -> DeviceSecrets {
    DeviceSecrets::from_bytes(&h::<DEVICE_SECRETS_LEN>(s))
}

#[derive(Deserialize)]
struct DeviceVector {
    secrets_hex: String,
    public_hex: String,
    fingerprint: String,
    message_hex: String,
    signature_hex: String,
}

#[test]
fn device_keys_signatures_and_fingerprints() {
    for v in load::<DeviceVector>("device.json") {
        let s = secrets(&v.secrets_hex);
        assert_eq!(s.public().to_hex(), v.public_hex);
        assert_eq!(s.public().fingerprint().to_string(), v.fingerprint);
        let msg = hex::decode(&v.message_hex).unwrap();
        assert_eq!(hex::encode(s.sign(&msg)), v.signature_hex);
        let p = DevicePublic::from_hex(&v.public_hex).unwrap();
        assert_eq!(p.verify(&msg, &h(&v.signature_hex)), Ok(()));
    }
}

#[derive(Deserialize)]
struct EpochVector {
    epoch_key_hex: String,
    epoch: u32,
    clip_key_hex: String,
    device_id: u64,
    device_public_hex: String,
    cert_hex: String,
}

#[test]
fn epoch_clip_keys_and_device_certificates() {
    for v in load::<EpochVector>("epoch.json") {
        let k = EpochKey::from_bytes(h(&v.epoch_key_hex));
        let e = Epoch(v.epoch);
        assert_eq!(hex::encode(k.clip_key(e).expose()), v.clip_key_hex);
        let p = DevicePublic::from_hex(&v.device_public_hex).unwrap();
        let d = DeviceId(v.device_id);
        assert_eq!(hex::encode(k.certify(e, d, &p)), v.cert_hex);
        assert!(k
            .verify_cert(e, d, &p, &hex::decode(&v.cert_hex).unwrap())
            .is_ok());
    }
}

#[derive(Deserialize)]
struct EpochWrapVector {
    epoch_key_hex: String,
    epoch: u32,
    sender_id: u64,
    sender_secrets_hex: String,
    recipient_id: u64,
    recipient_secrets_hex: String,
    eph_secret_hex: String,
    nonce_hex: String,
    wrapped_hex: String,
}

#[test]
fn epoch_key_wrapped_to_a_device() {
    for v in load::<EpochWrapVector>("epoch_wrap.json") {
        let k = EpochKey::from_bytes(h(&v.epoch_key_hex));
        let e = Epoch(v.epoch);
        let (sd, rd) = (DeviceId(v.sender_id), DeviceId(v.recipient_id));
        let s = secrets(&v.sender_secrets_hex);
        let r = secrets(&v.recipient_secrets_hex);
        let w = k
            .wrap_to_device_with(
                &h(&v.eph_secret_hex),
                &h(&v.nonce_hex),
                e,
                (sd, &s),
                (rd, &r.public()),
            )
            .unwrap();
        assert_eq!(w.to_hex(), v.wrapped_hex);
        let parsed = DeviceWrappedKey::from_hex(&v.wrapped_hex).unwrap();
        assert_eq!(parsed.open(e, (sd, &s.public()), (rd, &r)).unwrap(), k);
        for i in 0..parsed.0.len() {
            let mut bad = parsed.clone();
            bad.0[i] ^= 0x80;
            assert!(
                bad.open(e, (sd, &s.public()), (rd, &r)).is_err(),
                "byte {i}"
            );
        }
    }
}

#[derive(Deserialize)]
struct ExportWrapVector {
    export_key_hex: String,
    export_kek_hex: String,
    epoch: u32,
    epoch_key_hex: String,
    nonce_hex: String,
    wrapped_hex: String,
}

#[test]
fn epoch_key_wrapped_under_the_export_key() {
    for v in load::<ExportWrapVector>("export_wrap.json") {
        let kek = ExportKey::from_bytes(h(&v.export_key_hex)).kek();
        assert_eq!(hex::encode(kek.expose()), v.export_kek_hex);
        let k = EpochKey::from_bytes(h(&v.epoch_key_hex));
        let e = Epoch(v.epoch);
        let w = kek.wrap_with_nonce(e, &k, &h(&v.nonce_hex));
        assert_eq!(w.to_hex(), v.wrapped_hex);
        let parsed = ExportWrappedKey::from_hex(&v.wrapped_hex).unwrap();
        assert_eq!(kek.unwrap(e, &parsed).unwrap(), k);
        assert!(kek.unwrap(Epoch(v.epoch ^ 1), &parsed).is_err());
    }
}

#[derive(Deserialize)]
struct SignedEnvelopeVector {
    clip_key_hex: String,
    epoch: u32,
    sender_secrets_hex: String,
    sender_public_hex: String,
    sender: u64,
    seq: u64,
    nonce_hex: String,
    plaintext_hex: String,
    envelope_hex: String,
}

#[test]
fn signed_envelope() {
    for v in load::<SignedEnvelopeVector>("signed_envelope.json") {
        let key = clipmesh_proto::ClipKey::from_bytes(h(&v.clip_key_hex));
        let s = secrets(&v.sender_secrets_hex);
        let header = SignedHeader {
            kind: EnvelopeKind::Clip,
            sender: DeviceId(v.sender),
            seq: v.seq,
            epoch: Epoch(v.epoch),
        };
        let pt = hex::decode(&v.plaintext_hex).unwrap();
        let env = SignedEnvelope::seal_with_nonce(&key, &s, &header, &h(&v.nonce_hex), &pt);
        assert_eq!(hex::encode(&env), v.envelope_hex);
        let p = DevicePublic::from_hex(&v.sender_public_hex).unwrap();
        assert_eq!(SignedEnvelope::peek_header(&env).unwrap(), header);
        assert_eq!(SignedEnvelope::open(&key, &p, &env).unwrap(), (header, pt));
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x04;
            assert_eq!(SignedEnvelope::open(&key, &p, &bad), Err(OpenError));
        }
    }
}

/// A reproducible RNG for the OPAQUE vector: block `i` is
/// `SHA-256(seed | i as u64 BE)`, concatenated.
struct ShaRng {
    seed: Vec<u8>,
    counter: u64,
    buf: Vec<u8>,
}

impl ShaRng {
    fn new(seed: &str) -> Self {
        Self {
            seed: seed.as_bytes().to_vec(),
            counter: 0,
            buf: Vec::new(),
        }
    }
}

impl RngCore for ShaRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest.iter_mut() {
            if self.buf.is_empty() {
                let mut hs = Sha256::new();
                hs.update(&self.seed);
                hs.update(self.counter.to_be_bytes());
                self.counter += 1;
                self.buf = hs.finalize().to_vec();
            }
            *d = self.buf.remove(0);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for ShaRng {}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct OpaqueVector {
    rng_seed: String,
    username: String,
    password: String,
    ksf: KdfParams,
    server_setup_hex: String,
    server_public_hex: String,
    registration_request_hex: String,
    registration_response_hex: String,
    record_hex: String,
    export_key_hex: String,
    login_request_hex: String,
    login_response_hex: String,
    login_finish_hex: String,
    session_key_hex: String,
}

/// Runs signup and login with one deterministic RNG per side and records
/// every message.
fn opaque_run(rng_seed: &str, username: &str, password: &str, ksf: KdfParams) -> OpaqueVector {
    let mut srng = ShaRng::new(&format!("{rng_seed}/server"));
    let mut crng = ShaRng::new(&format!("{rng_seed}/client"));
    let pw = password.as_bytes();
    let setup = ServerSetup::generate(&mut srng);
    let (reg, req) = ClientRegistration::start(&mut crng, pw).unwrap();
    let resp = server_registration_start(&setup, &req, username).unwrap();
    let (rec, export) = reg.finish(&mut crng, pw, username, &resp, &ksf).unwrap();
    let rec = server_registration_finish(&rec).unwrap();
    let (login, lreq) = ClientLogin::start(&mut crng, pw).unwrap();
    let (state, lresp) =
        server_login_start(&mut srng, &setup, Some(&rec), &lreq, username).unwrap();
    let out = login.finish(pw, username, &lresp, &ksf).unwrap();
    let server_session = server_login_finish(state, &out.finish).unwrap();
    assert_eq!(server_session, out.session_key);
    assert_eq!(out.export_key.expose(), export.expose());
    OpaqueVector {
        rng_seed: rng_seed.into(),
        username: username.into(),
        password: password.into(),
        ksf,
        server_setup_hex: hex::encode(setup.to_bytes().as_slice()),
        server_public_hex: hex::encode(setup.public_key()),
        registration_request_hex: req.to_hex(),
        registration_response_hex: resp.to_hex(),
        record_hex: rec.to_hex(),
        export_key_hex: hex::encode(export.expose()),
        login_request_hex: lreq.to_hex(),
        login_response_hex: lresp.to_hex(),
        login_finish_hex: out.finish.to_hex(),
        session_key_hex: hex::encode(out.session_key.expose()),
    }
}

#[test]
fn opaque_signup_and_login_are_pinned() {
    let small = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
        ..KdfParams::default()
    };
    let runs = vec![
        opaque_run(
            "clipmesh/v2/opaque-vector/0",
            "alice",
            "correct horse battery staple",
            small,
        ),
        opaque_run(
            "clipmesh/v2/opaque-vector/1",
            "bjørn",
            "pässwörd",
            KdfParams::default(),
        ),
    ];
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/opaque.json");
    if std::env::var_os("CLIPMESH_WRITE_OPAQUE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&runs).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let committed: Vec<OpaqueVector> = load("opaque.json");
    assert_eq!(committed, runs);
    // The committed export key opens only with the committed password: a
    // fresh login with a wrong one fails against the committed record.
    let v = &committed[0];
    let setup = ServerSetup::from_bytes(&hex::decode(&v.server_setup_hex).unwrap()).unwrap();
    let rec = clipmesh_proto::opaque::RegistrationRecord::from_hex(&v.record_hex).unwrap();
    let (login, lreq) = ClientLogin::start(&mut rand::rngs::OsRng, b"wrong").unwrap();
    let (_, lresp) = server_login_start(
        &mut rand::rngs::OsRng,
        &setup,
        Some(&rec),
        &lreq,
        &v.username,
    )
    .unwrap();
    assert!(login.finish(b"wrong", &v.username, &lresp, &v.ksf).is_err());
}
