//! The sealed-signal decoders on arbitrary bytes: `SignalMsg::decode` (the
//! plaintext parser) never panics and re-encodes what it accepts to the same
//! bytes; `SignalCodec::open` under a fixed key never panics and never opens
//! a payload the fuzzer made up (it cannot forge a Poly1305 tag).
#![no_main]

use clipmesh_proto::{ClipKey, DeviceId, SignalCodec, SignalKind, SignalMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = SignalMsg::decode(data) {
        assert_eq!(msg.encode(), data, "decode then encode is the identity");
    }
    let mut codec = SignalCodec::new(ClipKey::from_bytes([0x42; 32]), DeviceId(2), 1);
    for kind in [SignalKind::Offer, SignalKind::Bye] {
        assert!(
            codec.open(DeviceId(1), kind, data).is_err(),
            "a signal the fuzzer made up must not open"
        );
    }
});
