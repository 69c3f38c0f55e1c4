//! `BlobOpener` under a fixed key fed arbitrary chunks, and a seal/open
//! round trip of the input.
//!
//! The input is `sel: u8` then records `len: u16 BE | bytes[len]`. `sel`
//! picks the length the "envelope" promises (a few bytes, or just over one
//! chunk so the opener expects two). Invariants: no panic; a made-up chunk
//! never opens (libFuzzer cannot forge a Poly1305 tag), so `finish` never
//! succeeds; `next_sealed_len` is `None` once the opener failed. Then the
//! whole input is sealed as a blob and must open back to itself, and the
//! same stream with one bit flipped (chosen by the input) must not.
#![no_main]

use clipmesh_proto::blob::CHUNK_LEN;
use clipmesh_proto::{BlobId, BlobKey, BlobOpener, BlobStreamSealer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = BlobKey::from_bytes([0x42; 32]);
    let id = BlobId([7; 16]);
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let promised = if sel & 0x80 == 0 {
        u64::from(sel)
    } else {
        CHUNK_LEN as u64 + u64::from(sel & 0x7f)
    };
    let mut o = BlobOpener::new(&key, id, promised, [0; 32]).expect("promised length is small");
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let chunk = &rest[2..2 + n];
        rest = &rest[2 + n..];
        assert!(o.open_chunk(chunk).is_err(), "a made-up chunk opened");
        assert_eq!(
            o.next_sealed_len(),
            None,
            "a failed opener must stay failed"
        );
    }
    assert!(o.finish().is_err(), "a made-up blob finished");

    // Round trip of the input itself.
    let mut s = BlobStreamSealer::new(&key, id);
    let mut chunks: Vec<Vec<u8>> = s
        .push(data)
        .expect("input is far below the size limit")
        .into_iter()
        .map(|c| c.bytes)
        .collect();
    let (last, summary) = s.finish().expect("input is far below the size limit");
    chunks.extend(last.map(|c| c.bytes));
    let mut o = BlobOpener::new(&key, id, summary.len, summary.sha256).expect("small blob");
    let mut out = Vec::new();
    for c in &chunks {
        out.extend(o.open_chunk(c).expect("own chunk opens"));
    }
    o.finish().expect("own blob finishes");
    assert_eq!(out, data);

    let total: usize = chunks.iter().map(Vec::len).sum();
    let bit = usize::from(sel) * 131 % (total * 8);
    let (mut i, mut at) = (0, bit / 8);
    while at >= chunks[i].len() {
        at -= chunks[i].len();
        i += 1;
    }
    chunks[i][at] ^= 1 << (bit % 8);
    let mut o = BlobOpener::new(&key, id, summary.len, summary.sha256).expect("small blob");
    let opened = chunks.iter().all(|c| o.open_chunk(c).is_ok()) && o.finish().is_ok();
    assert!(!opened, "a tampered blob opened");
});
