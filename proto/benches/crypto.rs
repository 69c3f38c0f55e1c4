//! Envelope seal/open throughput and Argon2id cost at the default parameters.
//!
//! `cargo bench -p clipmesh-proto --bench crypto`; figures go to
//! `docs/benchmarks.md`.
#![allow(missing_docs)]

use clipmesh_proto::keys::{derive_keys, random_salt};
use clipmesh_proto::{DataKey, DeviceId, Envelope, EnvelopeHeader, EnvelopeKind, KdfParams};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn envelope(c: &mut Criterion) {
    let key = DataKey::generate().clip_key();
    let header = EnvelopeHeader {
        kind: EnvelopeKind::Clip,
        sender: DeviceId(1),
        seq: 1,
    };
    let mut g = c.benchmark_group("envelope");
    for size in [1024usize, 64 * 1024, 4 * 1024 * 1024] {
        let pt = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &pt, |b, pt| {
            b.iter(|| Envelope::seal(&key, &header, black_box(pt)))
        });
        let sealed = Envelope::seal(&key, &header, &pt);
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, env| {
            b.iter(|| Envelope::open(&key, black_box(env)))
        });
    }
    g.finish();
}

fn argon2_default(c: &mut Criterion) {
    let mut g = c.benchmark_group("kdf");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let salt = random_salt();
    let params = KdfParams::default();
    g.bench_function("argon2id_m64MiB_t3_p4", |b| {
        b.iter(|| derive_keys(black_box(b"correct horse battery staple"), &salt, &params))
    });
    g.finish();
}

criterion_group!(benches, envelope, argon2_default);
criterion_main!(benches);
