//! Large-item throughput: sealing and opening a 16 MiB blob chunk by chunk,
//! the way the client streams a file (`BlobStreamSealer` fed 64 KiB reads,
//! `BlobOpener` fed whole sealed chunks). Both include the SHA-256 of the
//! plaintext. `sha256` alone is there to show how much of that is hashing.
//!
//! `cargo bench -p clipmesh-proto --bench blob`; figures go to
//! `docs/benchmarks.md`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use clipmesh_proto::{BlobId, BlobKey, BlobOpener, BlobStreamSealer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::time::Duration;

const SIZE: usize = 16 * 1024 * 1024;
const READ: usize = 64 * 1024;

fn seal(key: &BlobKey, id: BlobId, data: &[u8]) -> (Vec<Vec<u8>>, [u8; 32]) {
    let mut s = BlobStreamSealer::new(key, id);
    let mut out = Vec::new();
    for piece in data.chunks(READ) {
        out.extend(s.push(piece).unwrap().into_iter().map(|c| c.bytes));
    }
    let (last, summary) = s.finish().unwrap();
    out.extend(last.map(|c| c.bytes));
    (out, summary.sha256)
}

fn blob(c: &mut Criterion) {
    let key = BlobKey::generate();
    let id = BlobId::generate();
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31) as u8).collect();
    let mut g = c.benchmark_group("blob");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("seal_16MiB", |b| {
        // Drop each sealed chunk at once, as an uploader would.
        b.iter(|| {
            let mut s = BlobStreamSealer::new(&key, id);
            for piece in black_box(&data).chunks(READ) {
                for c in s.push(piece).unwrap() {
                    black_box(c.bytes.len());
                }
            }
            black_box(s.finish().unwrap())
        })
    });
    let (chunks, sha256) = seal(&key, id, &data);
    g.bench_function("open_16MiB", |b| {
        b.iter(|| {
            let mut o = BlobOpener::new(&key, id, SIZE as u64, sha256).unwrap();
            for c in black_box(&chunks) {
                black_box(o.open_chunk(c).unwrap().len());
            }
            o.finish().unwrap()
        })
    });
    g.bench_function("sha256_16MiB", |b| {
        b.iter(|| Sha256::digest(black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, blob);
criterion_main!(benches);
