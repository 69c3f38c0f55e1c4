//! Protocol v2 decoders on arbitrary bytes: `SignedEnvelope::peek_header` and
//! `open`, `DeviceWrappedKey::open`, `DevicePublic::from_slice` and the OPAQUE
//! relay-side message parsers. Never panic; nothing the fuzzer makes up opens
//! (it cannot forge an Ed25519 signature or a Poly1305 tag); and the input,
//! used as a plaintext, seals, signs and opens back to itself.
#![no_main]

use clipmesh_proto::opaque::{
    server_login_start, server_registration_finish, LoginRequestBytes, RegistrationRecord,
    ServerSetup,
};
use clipmesh_proto::{
    ClipKey, DeviceId, DevicePublic, DeviceSecrets, DeviceWrappedKey, EnvelopeKind, Epoch,
    SignedEnvelope, SignedHeader,
};
use libfuzzer_sys::fuzz_target;
use rand::rngs::OsRng;

fuzz_target!(|data: &[u8]| {
    let key = ClipKey::from_bytes([0x42; 32]);
    let me = DeviceSecrets::from_bytes(&[0x11; 64]);
    let _ = SignedEnvelope::peek_header(data);
    assert!(
        SignedEnvelope::open(&key, &me.public(), data).is_err(),
        "an envelope the fuzzer made up must not open"
    );
    let _ = DevicePublic::from_slice(data);
    if let Some(w) = DeviceWrappedKey::from_slice(data) {
        assert!(w
            .open(Epoch(1), (DeviceId(1), &me.public()), (DeviceId(2), &me))
            .is_err());
    }
    if let Ok(rec) = RegistrationRecord::from_slice(data) {
        let _ = server_registration_finish(&rec);
    }
    if let Ok(req) = LoginRequestBytes::from_slice(data) {
        let setup = ServerSetup::generate(&mut OsRng);
        let _ = server_login_start(&mut OsRng, &setup, None, &req, "fuzz");
    }

    let header = SignedHeader {
        kind: EnvelopeKind::Clip,
        sender: DeviceId(7),
        seq: data.len() as u64,
        epoch: Epoch(3),
    };
    let sealed = SignedEnvelope::seal(&key, &me, &header, data);
    let (h, pt) = SignedEnvelope::open(&key, &me.public(), &sealed).expect("own envelope opens");
    assert_eq!(h, header);
    assert_eq!(pt, data);
});
