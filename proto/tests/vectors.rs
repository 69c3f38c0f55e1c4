//! Checks the key hierarchy and the envelope against the committed JSON test
//! vectors in `tests/vectors/`.
//!
//! The vectors were produced by `scripts/vectors.py` with independent
//! implementations (the Argon2 reference via argon2-cffi, libsodium via
//! PyNaCl, HKDF from RFC 5869 over Python's hmac); that script's `--check`
//! re-verifies them. This test needs neither Python nor the network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clipmesh_proto::envelope::{HEADER_LEN, OVERHEAD};
use clipmesh_proto::keys::{derive_keys, KdfAlg, NONCE_LEN, WRAP_AAD};
use clipmesh_proto::{
    ClipContent, ClipItem, ClipKey, DataKey, Envelope, KdfParams, Kek, MasterKey, OpenError,
    WrappedDataKey,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct KdfVector {
    password: String,
    salt_hex: String,
    m_kib: u32,
    t: u32,
    p: u32,
    master_hex: String,
    auth_key_hex: String,
    kek_hex: String,
}

#[derive(Deserialize)]
struct WrapVector {
    kek_hex: String,
    data_key_hex: String,
    nonce_hex: String,
    aad_hex: String,
    wrapped_hex: String,
}

#[derive(Deserialize)]
struct ClipKeyVector {
    data_key_hex: String,
    info: String,
    clip_key_hex: String,
}

#[derive(Deserialize)]
struct EnvelopeVector {
    key_hex: String,
    nonce_hex: String,
    aad_hex: String,
    plaintext_hex: String,
    ciphertext_hex: String,
    envelope_hex: String,
}

fn load<T: for<'de> Deserialize<'de>>(json: &str) -> Vec<T> {
    let v: Vec<T> = serde_json::from_str(json).expect("vector file is valid JSON");
    assert!(!v.is_empty(), "vector file has entries");
    v
}

fn bytes(h: &str) -> Vec<u8> {
    hex::decode(h).expect("vector field is hex")
}

fn arr<const N: usize>(h: &str) -> [u8; N] {
    bytes(h)
        .try_into()
        .expect("vector field has the right length")
}

#[test]
fn kdf_vectors() {
    let vectors: Vec<KdfVector> = load(include_str!("vectors/kdf.json"));
    let defaults = KdfParams::default();
    assert!(
        vectors
            .iter()
            .any(|v| (v.m_kib, v.t, v.p) == (defaults.m_kib, defaults.t, defaults.p)),
        "kdf.json has an entry at the default parameters"
    );
    assert!(
        vectors.iter().any(|v| v.m_kib < defaults.m_kib),
        "kdf.json has a small-parameter entry"
    );
    for (i, v) in vectors.iter().enumerate() {
        let params = KdfParams {
            alg: KdfAlg::Argon2id,
            version: 0x13,
            m_kib: v.m_kib,
            t: v.t,
            p: v.p,
        };
        let salt = arr::<16>(&v.salt_hex);
        let master = MasterKey::derive(v.password.as_bytes(), &salt, &params).unwrap();
        assert_eq!(
            hex::encode(master.expose()),
            v.master_hex,
            "entry {i}: master"
        );
        let (auth, kek) = master.split();
        assert_eq!(
            hex::encode(auth.expose()),
            v.auth_key_hex,
            "entry {i}: auth"
        );
        assert_eq!(hex::encode(kek.expose()), v.kek_hex, "entry {i}: kek");

        // The one-call helper agrees.
        let (auth2, kek2) = derive_keys(v.password.as_bytes(), &salt, &params).unwrap();
        assert_eq!(auth2, auth, "entry {i}: derive_keys auth");
        assert_eq!(kek2, kek, "entry {i}: derive_keys kek");
    }
}

#[test]
fn wrap_vectors() {
    let vectors: Vec<WrapVector> = load(include_str!("vectors/wrap.json"));
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(bytes(&v.aad_hex), WRAP_AAD, "entry {i}: aad is WRAP_AAD");
        let kek = Kek::from_bytes(arr(&v.kek_hex));
        let data_key = DataKey::from_bytes(arr(&v.data_key_hex));
        let nonce: [u8; NONCE_LEN] = arr(&v.nonce_hex);

        // The vector's `wrapped` is ciphertext || tag; the wire form of
        // WrappedDataKey prefixes the nonce.
        let wrapped = kek.wrap_with_nonce(&data_key, &nonce);
        let mut wire = nonce.to_vec();
        wire.extend_from_slice(&bytes(&v.wrapped_hex));
        assert_eq!(wrapped.0.as_slice(), wire.as_slice(), "entry {i}: wrap");
        assert_eq!(
            WrappedDataKey::from_hex(&hex::encode(&wire)).unwrap(),
            wrapped,
            "entry {i}: hex form"
        );

        assert_eq!(kek.unwrap(&wrapped).unwrap(), data_key, "entry {i}: unwrap");

        // Any flipped bit fails, the one way unwrapping fails.
        for b in 0..wire.len() {
            let mut bad = wrapped.clone();
            bad.0[b] ^= 0x80;
            assert_eq!(kek.unwrap(&bad), Err(OpenError), "entry {i}: byte {b}");
        }
    }
}

#[test]
fn wrap_vectors_chain_to_kdf_vectors() {
    // wrap.json's first KEK is kdf.json's first KEK, so a client that logs in
    // with that password unwraps that data key.
    let kdf: Vec<KdfVector> = load(include_str!("vectors/kdf.json"));
    let wrap: Vec<WrapVector> = load(include_str!("vectors/wrap.json"));
    assert_eq!(kdf[0].kek_hex, wrap[0].kek_hex);
}

#[test]
fn clip_key_vectors() {
    let vectors: Vec<ClipKeyVector> = load(include_str!("vectors/clip_key.json"));
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.info.as_bytes(), clipmesh_proto::keys::INFO_CLIP);
        let dk = DataKey::from_bytes(arr(&v.data_key_hex));
        assert_eq!(
            hex::encode(dk.clip_key().expose()),
            v.clip_key_hex,
            "entry {i}"
        );
    }
}

#[test]
fn envelope_vectors() {
    let vectors: Vec<EnvelopeVector> = load(include_str!("vectors/envelope.json"));
    for (i, v) in vectors.iter().enumerate() {
        let key = ClipKey::from_bytes(arr(&v.key_hex));
        let nonce: [u8; NONCE_LEN] = arr(&v.nonce_hex);
        let aad = bytes(&v.aad_hex);
        let plaintext = bytes(&v.plaintext_hex);
        let ciphertext = bytes(&v.ciphertext_hex);
        let envelope = bytes(&v.envelope_hex);

        // Layout: header (= AAD) | nonce | ciphertext || tag.
        assert_eq!(aad.len(), HEADER_LEN, "entry {i}: header length");
        assert_eq!(envelope.len(), OVERHEAD + plaintext.len(), "entry {i}");
        assert_eq!(
            [aad.as_slice(), &nonce, &ciphertext].concat(),
            envelope,
            "entry {i}: envelope = aad | nonce | ciphertext"
        );

        let header = Envelope::peek_header(&envelope).unwrap();
        assert_eq!(header.encode().as_slice(), aad.as_slice(), "entry {i}");

        let sealed = Envelope::seal_with_nonce(&key, &header, &nonce, &plaintext);
        assert_eq!(hex::encode(&sealed), v.envelope_hex, "entry {i}: seal");

        let (h, pt) = Envelope::open(&key, &envelope).unwrap();
        assert_eq!(h, header, "entry {i}: opened header");
        assert_eq!(pt, plaintext, "entry {i}: opened plaintext");

        // Tampering anywhere, header included, fails the one way.
        for b in 0..envelope.len() {
            let mut bad = envelope.clone();
            bad[b] ^= 0x01;
            assert_eq!(
                Envelope::open(&key, &bad),
                Err(OpenError),
                "entry {i} byte {b}"
            );
        }
    }
}

#[test]
fn envelope_vectors_use_the_clip_key_of_the_wrapped_data_key() {
    let ck: Vec<ClipKeyVector> = load(include_str!("vectors/clip_key.json"));
    let env: Vec<EnvelopeVector> = load(include_str!("vectors/envelope.json"));
    assert_eq!(env[0].key_hex, ck[0].clip_key_hex);

    // The first envelope carries a ClipItem, as a real client would seal.
    let item = ClipItem::decode(&bytes(&env[0].plaintext_hex)).unwrap();
    assert_eq!(item.timestamp_ms, 1_700_000_000_000);
    assert_eq!(
        item.content,
        ClipContent::Text("hello from clipmesh".into())
    );
}

#[derive(Deserialize)]
struct SignalVector {
    data_key_hex: String,
    info: String,
    signal_key_hex: String,
    sealed_offer: Option<SealedOffer>,
}

#[derive(Deserialize)]
struct SealedOffer {
    sender: u64,
    target: u64,
    session: u64,
    body: String,
    plaintext_hex: String,
    envelope_hex: String,
}

#[test]
fn signal_vectors() {
    use clipmesh_proto::{
        DeviceId, EnvelopeHeader, EnvelopeKind, SignalCodec, SignalKind, SignalMsg,
    };
    let vectors: Vec<SignalVector> = load(include_str!("vectors/signal.json"));
    let mut offers = 0;
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.info.as_bytes(), clipmesh_proto::keys::INFO_SIGNAL);
        let dk = DataKey::from_bytes(arr(&v.data_key_hex));
        let key = dk.signal_key();
        assert_eq!(hex::encode(key.expose()), v.signal_key_hex, "entry {i}");
        let Some(o) = &v.sealed_offer else { continue };
        offers += 1;
        let msg = SignalMsg {
            kind: SignalKind::Offer,
            target: DeviceId(o.target),
            session: o.session,
            body: o.body.clone(),
        };
        assert_eq!(hex::encode(msg.encode()), o.plaintext_hex, "entry {i}");
        let envelope = bytes(&o.envelope_hex);
        let header = Envelope::peek_header(&envelope).unwrap();
        assert_eq!(header.kind, EnvelopeKind::Signal);
        let nonce: [u8; NONCE_LEN] = envelope[HEADER_LEN..HEADER_LEN + NONCE_LEN]
            .try_into()
            .unwrap();
        let sealed = Envelope::seal_with_nonce(
            &key,
            &EnvelopeHeader {
                kind: EnvelopeKind::Signal,
                sender: DeviceId(o.sender),
                seq: header.seq,
            },
            &nonce,
            &msg.encode(),
        );
        assert_eq!(hex::encode(sealed), o.envelope_hex, "entry {i}: seal");
        let mut codec = SignalCodec::new(key, DeviceId(o.target), 1);
        let opened = codec
            .open(DeviceId(o.sender), SignalKind::Offer, &envelope)
            .unwrap();
        assert_eq!(opened, msg, "entry {i}: open");
    }
    assert_eq!(offers, 1);
}
