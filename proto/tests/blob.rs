//! Pins the large-item (blob) format: the chunk AAD layout by hex snapshot,
//! whole sealed blobs against vectors computed by libsodium
//! (`vectors/blob.json`, from `scripts/vectors.py`), and by property test
//! that every reorder, swap, drop, duplicate, truncation, extension or
//! bit flip of a sealed stream is refused, while untouched streams open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clipmesh_proto::blob::{chunk_aad, BLOB_AAD_LEN, CHUNK_LEN, CHUNK_OVERHEAD, SEALED_CHUNK_LEN};
use clipmesh_proto::{
    BlobError, BlobId, BlobKey, BlobLayout, BlobOpener, BlobSealer, BlobStreamSealer, BlobSummary,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[test]
fn snapshot_chunk_aad() {
    let id = BlobId(std::array::from_fn(|i| 0xa0 + i as u8));
    let aad = chunk_aad(&id, 0x0102_0304_0506_0708, true);
    assert_eq!(aad.len(), BLOB_AAD_LEN);
    // "clipmesh/v1/blob" | id | index u64 BE | last u8, packed with Python's
    // struct from the layout in docs/crypto.md.
    assert_eq!(
        hex::encode(aad),
        "636c69706d6573682f76312f626c6f62a0a1a2a3a4a5a6a7a8a9aaabacadaeaf010203040506070801"
    );
    assert_eq!(
        hex::encode(chunk_aad(&id, 0, false)),
        "636c69706d6573682f76312f626c6f62a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000000000000000"
    );
}

#[test]
fn constants_are_what_the_docs_say() {
    assert_eq!(CHUNK_LEN, 1 << 20);
    assert_eq!(CHUNK_OVERHEAD, 40);
    assert_eq!(SEALED_CHUNK_LEN, (1 << 20) + 40);
}

#[derive(Deserialize)]
struct ChunkVector {
    index: u64,
    last: bool,
    nonce_hex: String,
    aad_hex: String,
    sealed_len: usize,
    sealed_sha256_hex: String,
    sealed_hex: String,
}

#[derive(Deserialize)]
struct BlobVector {
    key_hex: String,
    id_hex: String,
    plaintext_len: usize,
    plaintext_start: usize,
    plaintext_step: usize,
    plaintext_sha256_hex: String,
    chunks: Vec<ChunkVector>,
}

fn pattern(n: usize, start: usize, step: usize) -> Vec<u8> {
    (0..n).map(|i| ((start + i * step) % 256) as u8).collect()
}

#[test]
fn libsodium_vectors() {
    let vectors: Vec<BlobVector> = serde_json::from_str(include_str!("vectors/blob.json")).unwrap();
    assert_eq!(vectors.len(), 3);
    for (n, v) in vectors.iter().enumerate() {
        let key = BlobKey::from_bytes(hex::decode(&v.key_hex).unwrap().try_into().unwrap());
        let id: BlobId = v.id_hex.parse().unwrap();
        let plaintext = pattern(v.plaintext_len, v.plaintext_start, v.plaintext_step);
        let sha256: [u8; 32] = Sha256::digest(&plaintext).into();
        assert_eq!(hex::encode(sha256), v.plaintext_sha256_hex, "vector {n}");
        let layout = BlobLayout::new(plaintext.len() as u64).unwrap();
        assert_eq!(layout.chunk_count(), v.chunks.len() as u64, "vector {n}");

        let sealer = BlobSealer::new(&key, id);
        let mut opener = BlobOpener::new(&key, id, plaintext.len() as u64, sha256).unwrap();
        let mut opened = Vec::new();
        for c in &v.chunks {
            assert_eq!(layout.is_last(c.index), c.last, "vector {n}");
            assert_eq!(hex::encode(chunk_aad(&id, c.index, c.last)), c.aad_hex);
            let start = (c.index as usize) * CHUNK_LEN;
            let end = (start + CHUNK_LEN).min(plaintext.len());
            let nonce: [u8; 24] = hex::decode(&c.nonce_hex).unwrap().try_into().unwrap();
            let sealed = sealer
                .seal_chunk_with_nonce(c.index, &plaintext[start..end], c.last, &nonce)
                .unwrap();
            assert_eq!(sealed.len(), c.sealed_len, "vector {n} chunk {}", c.index);
            assert_eq!(Some(sealed.len()), layout.chunk_sealed_len(c.index));
            assert_eq!(
                hex::encode(Sha256::digest(&sealed)),
                c.sealed_sha256_hex,
                "vector {n} chunk {}",
                c.index
            );
            if !c.sealed_hex.is_empty() {
                assert_eq!(hex::encode(&sealed), c.sealed_hex, "vector {n}");
            }
            assert_eq!(opener.next_sealed_len(), Some(c.sealed_len));
            opened.extend(opener.open_chunk(&sealed).unwrap());
        }
        assert_eq!(opener.next_sealed_len(), None);
        opener.finish().unwrap();
        assert_eq!(opened, plaintext, "vector {n}");
    }
}

// ---------------------------------------------------------------- proptests

/// A sealed blob: its chunks and summary.
struct Sealed {
    key: BlobKey,
    id: BlobId,
    chunks: Vec<Vec<u8>>,
    summary: BlobSummary,
    plaintext: Vec<u8>,
}

fn seal(len: usize, piece: usize, seed: u8) -> Sealed {
    let key = BlobKey::from_bytes([seed; 32]);
    let id = BlobId([seed.wrapping_add(1); 16]);
    let plaintext = pattern(len, seed as usize, 7);
    let mut s = BlobStreamSealer::new(&key, id);
    let mut chunks = Vec::new();
    for p in plaintext.chunks(piece) {
        chunks.extend(s.push(p).unwrap().into_iter().map(|c| c.bytes));
    }
    let (last, summary) = s.finish().unwrap();
    chunks.extend(last.map(|c| c.bytes));
    Sealed {
        key,
        id,
        chunks,
        summary,
        plaintext,
    }
}

/// Feeds `chunks` to an opener for `s`, the way a receiver drives it.
fn open(s: &Sealed, chunks: &[Vec<u8>]) -> Result<Vec<u8>, BlobError> {
    let mut o = BlobOpener::new(&s.key, s.id, s.summary.len, s.summary.sha256)?;
    let mut out = Vec::new();
    for c in chunks {
        out.extend(o.open_chunk(c)?);
    }
    o.finish()?;
    Ok(out)
}

/// Lengths that cover one, two and three chunks and their edges, without
/// making each case seal megabytes more than needed.
fn blob_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..300,
        1 => (CHUNK_LEN - 2)..(CHUNK_LEN + 2),
        1 => (2 * CHUNK_LEN)..(2 * CHUNK_LEN + 300),
    ]
}

#[derive(Clone, Debug)]
enum Attack {
    Swap(usize, usize),
    Drop(usize),
    Truncate(usize),
    Duplicate(usize),
    Append,
    FlipBit(usize, usize),
    CutChunk(usize, usize),
    FromOtherBlob(usize),
}

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Attack::Swap(a, b)),
        any::<usize>().prop_map(Attack::Drop),
        any::<usize>().prop_map(Attack::Truncate),
        any::<usize>().prop_map(Attack::Duplicate),
        Just(Attack::Append),
        (any::<usize>(), any::<usize>()).prop_map(|(c, b)| Attack::FlipBit(c, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(c, b)| Attack::CutChunk(c, b)),
        any::<usize>().prop_map(Attack::FromOtherBlob),
    ]
}

/// Applies `a` to the stream; `None` when it would leave it unchanged (a
/// swap of two identical positions on a one-chunk blob).
fn apply(a: &Attack, s: &Sealed) -> Option<Vec<Vec<u8>>> {
    let mut c = s.chunks.clone();
    let n = c.len();
    match *a {
        Attack::Swap(i, j) => {
            let (i, j) = (i % n, j % n);
            if i == j {
                return None;
            }
            c.swap(i, j);
        }
        Attack::Drop(i) => {
            c.remove(i % n);
        }
        Attack::Truncate(k) => c.truncate(k % n),
        Attack::Duplicate(i) => {
            let i = i % n;
            c.insert(i, c[i].clone());
        }
        Attack::Append => c.push(c[n - 1].clone()),
        Attack::FlipBit(i, b) => {
            let i = i % n;
            let b = b % (c[i].len() * 8);
            c[i][b / 8] ^= 1 << (b % 8);
        }
        Attack::CutChunk(i, k) => {
            let i = i % n;
            let k = k % c[i].len();
            c[i].truncate(k);
        }
        Attack::FromOtherBlob(i) => {
            // Same key, same length, another blob id: ids are in the AAD.
            // The other id is the complement of this one, so it differs for
            // every seed (a constant id equalled `seal`'s for seed 237).
            let i = i % n;
            let other_id = BlobId(s.id.0.map(|b| !b));
            let mut o = BlobStreamSealer::new(&s.key, other_id);
            let mut oc = Vec::new();
            for p in s.plaintext.chunks(CHUNK_LEN) {
                oc.extend(o.push(p).unwrap().into_iter().map(|c| c.bytes));
            }
            oc.extend(o.finish().unwrap().0.map(|c| c.bytes));
            c[i] = oc[i].clone();
        }
    }
    Some(c)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        // Deterministic: the same cases on every run and machine, and no
        // regression file written into the source tree.
        rng_seed: RngSeed::Fixed(0x636c_6970_6d65_7368),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn untouched_streams_open(len in blob_len(), piece in 1usize..200_000, seed: u8) {
        let s = seal(len, piece, seed);
        let layout = BlobLayout::new(len as u64).unwrap();
        prop_assert_eq!(s.chunks.len() as u64, layout.chunk_count());
        let total: usize = s.chunks.iter().map(Vec::len).sum();
        prop_assert_eq!(total as u64, layout.sealed_len());
        prop_assert_eq!(BlobLayout::from_sealed_len(total as u64), Some(layout));
        prop_assert_eq!(open(&s, &s.chunks).unwrap(), s.plaintext);
    }

    #[test]
    fn every_attack_is_refused(len in blob_len(), seed: u8, a in attack()) {
        let s = seal(len, 65_536, seed);
        if let Some(bad) = apply(&a, &s) {
            prop_assert!(open(&s, &bad).is_err(), "{:?} on {} chunks opened", a, s.chunks.len());
        }
    }

    #[test]
    fn resume_from_any_acked_length_rebuilds_the_same_blob(
        len in blob_len(),
        seed: u8,
        acked_frac in 0.0f64..=1.0,
    ) {
        let s = seal(len, 100_000, seed);
        let layout = BlobLayout::new(len as u64).unwrap();
        let acked = (layout.sealed_len() as f64 * acked_frac) as u64;
        let kept = layout.whole_chunks_len(acked);
        prop_assert!(kept <= acked);
        let from = layout.resume_index(kept);
        prop_assert_eq!(layout.sealed_offset(from), kept);
        // The relay's copy: the whole chunks it kept, then the resumed tail
        // (freshly sealed with new nonces).
        let mut stream: Vec<Vec<u8>> = s.chunks[..from as usize].to_vec();
        let mut r = BlobStreamSealer::new(&s.key, s.id).resume_from(from);
        for p in s.plaintext.chunks(100_000) {
            stream.extend(r.push(p).unwrap().into_iter().map(|c| c.bytes));
        }
        let (last, summary) = r.finish().unwrap();
        stream.extend(last.map(|c| c.bytes));
        prop_assert_eq!(summary, s.summary);
        prop_assert_eq!(open(&s, &stream).unwrap(), s.plaintext.clone());
    }

    #[test]
    fn opener_never_panics_on_garbage(
        len in 0u64..(3 * CHUNK_LEN as u64),
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..128), 0..4),
    ) {
        let key = BlobKey::from_bytes([1; 32]);
        let mut o = BlobOpener::new(&key, BlobId([2; 16]), len, [0; 32]).unwrap();
        for c in &chunks {
            prop_assert!(o.open_chunk(c).is_err());
        }
        prop_assert!(o.finish().is_err());
    }
}
