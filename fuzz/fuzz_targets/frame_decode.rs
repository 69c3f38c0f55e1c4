//! `Frame::decode` and `Frame::peek_tag` on arbitrary bytes: never panic, and
//! anything that decodes re-encodes to exactly the same bytes.
#![no_main]

use clipmesh_proto::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tag = Frame::peek_tag(data);
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(tag, Ok(frame.tag()), "peek_tag agrees with decode");
        assert_eq!(frame.encode(), data, "decoded frames are canonical");
        // Debug must not panic either (it is used in trace logs).
        let _ = format!("{frame:?}");
    }
});
