//! `ClipItem::decode` on arbitrary bytes (what a receiver does with an opened
//! envelope): never panics, and anything that decodes re-encodes to exactly
//! the same bytes.
#![no_main]

use clipmesh_proto::ClipItem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = ClipItem::decode(data) {
        assert_eq!(item.encode(), data, "decoded items are canonical");
        let _ = format!("{item:?}");
        let _ = item.content.payload_len();
    }
});
