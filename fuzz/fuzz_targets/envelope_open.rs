//! `Envelope::peek_header` and `Envelope::open` under a fixed key on arbitrary
//! bytes: never panic; a forged envelope never opens (libFuzzer cannot forge
//! a Poly1305 tag, so any success here is a bug); and the input, used as a
//! plaintext, seals and opens back to itself.
#![no_main]

use clipmesh_proto::{ClipKey, DeviceId, Envelope, EnvelopeHeader, EnvelopeKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ClipKey::from_bytes([0x42; 32]);
    let _ = Envelope::peek_header(data);
    assert!(
        Envelope::open(&key, data).is_err(),
        "an envelope the fuzzer made up must not open"
    );

    let header = EnvelopeHeader {
        kind: EnvelopeKind::Clip,
        sender: DeviceId(7),
        seq: data.len() as u64,
    };
    let sealed = Envelope::seal(&key, &header, data);
    let (h, pt) = Envelope::open(&key, &sealed).expect("own envelope opens");
    assert_eq!(h, header);
    assert_eq!(pt, data);
});
