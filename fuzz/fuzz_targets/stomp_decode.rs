//! `stomp::decode` on arbitrary bytes: never panics, stays within its
//! limits, and every decoded frame re-encodes to bytes that decode to the
//! same frame.
#![no_main]

use clipmesh_proto::stomp::{decode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message: 64 * 1024,
        ..Limits::default()
    };
    if let Ok(frames) = decode(data, &limits) {
        assert!(frames.len() <= limits.max_frames);
        for f in frames {
            assert!(f.headers.len() <= limits.max_headers);
            let again = decode(&f.encode(), &Limits::default()).expect("encoded frames decode");
            assert_eq!(again, vec![f.clone()], "round trip");
            let _ = format!("{f:?}");
        }
    }
});
