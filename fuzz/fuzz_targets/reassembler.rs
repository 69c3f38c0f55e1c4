//! The chunk `Reassembler` fed a sequence of arbitrary frames.
//!
//! The input is a list of records `len: u8 | bytes[len]`. A record whose first
//! byte is even is decoded with `Frame::decode` (the path real input takes);
//! otherwise its bytes become a `Frame::Chunk` directly (transfer, index and
//! total from the bytes, including values `decode` would refuse), so the
//! fuzzer reaches deep reassembly states quickly. Invariants: no panic,
//! buffered bytes stay within `MAX_TRANSFERS * MAX_BYTES`, and every
//! reassembled item is at most `MAX_BYTES`.
#![no_main]

use clipmesh_proto::{Frame, Reassembler};
use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 64;
const MAX_TRANSFERS: usize = 3;

fn chunk_from(b: &[u8]) -> Frame {
    let get = |i: usize| u32::from(b.get(i).copied().unwrap_or(0) % 4);
    Frame::Chunk {
        transfer: get(1),
        index: get(2),
        total: get(3),
        data: b.get(4..).unwrap_or(&[]).to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new(MAX_BYTES, MAX_TRANSFERS);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (record, tail) = tail.split_at(n);
        rest = tail;
        let frame = match record.first() {
            Some(b) if b % 2 == 0 => match Frame::decode(&record[1..]) {
                Ok(f) => f,
                Err(_) => continue,
            },
            _ => chunk_from(record),
        };
        if let Ok(Some(item)) = r.push(frame) {
            assert!(item.len() <= MAX_BYTES, "reassembled item within limit");
        }
        assert!(r.buffered() <= MAX_BYTES * MAX_TRANSFERS, "buffer bounded");
    }
});
