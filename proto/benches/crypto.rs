//! Envelope seal/open throughput and Argon2id cost at the default parameters.
//!
//! `cargo bench -p clipmesh-proto --bench crypto`; figures go to
//! `docs/benchmarks.md`.
//!
//! Groups:
//! - `envelope`: `Envelope::seal` / `Envelope::open` at 1 KiB, 64 KiB, 4 MiB,
//!   wall-clock time.
//! - `envelope_cpu`: the same sizes measured in CPU time of the benchmark
//!   thread (`CLOCK_THREAD_CPUTIME_ID`), i.e. "on one core" even
//!   when other processes compete for it (wall time on a shared machine
//!   counts the time other processes hold the core). Skipped where there is
//!   no per-thread CPU clock.
//! - `kdf`: `derive_keys` at `KdfParams::default()`.
#![allow(missing_docs)]

use clipmesh_proto::keys::{derive_keys, random_salt};
use clipmesh_proto::{DataKey, DeviceId, Envelope, EnvelopeHeader, EnvelopeKind, KdfParams};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const BIG: usize = 4 * 1024 * 1024;

fn header() -> EnvelopeHeader {
    EnvelopeHeader {
        kind: EnvelopeKind::Clip,
        sender: DeviceId(1),
        seq: 1,
    }
}

fn envelope(c: &mut Criterion) {
    let key = DataKey::generate().clip_key();
    let header = header();
    let mut g = c.benchmark_group("envelope");
    for size in [1024usize, 64 * 1024, BIG] {
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

/// The envelope in CPU time of the benchmark thread: "one core", whatever
/// else the machine is doing.
fn envelope_cpu(c: &mut Criterion<ThreadCpuTime>) {
    let key = DataKey::generate().clip_key();
    let header = header();
    let mut g = c.benchmark_group("envelope_cpu");
    for size in [1024usize, 64 * 1024, BIG] {
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
    g.measurement_time(Duration::from_secs(15));
    let salt = random_salt();
    let params = KdfParams::default();
    g.bench_function("argon2id_m64MiB_t3_p4", |b| {
        b.iter(|| derive_keys(black_box(b"correct horse battery staple"), &salt, &params))
    });
    g.finish();
}

/// CPU time consumed by the benchmark thread (`CLOCK_THREAD_CPUTIME_ID` on
/// Unix, via the `cpu-time` crate). Criterion runs each sample on the
/// benchmark thread, so this is the work of one core, not diluted by
/// whatever else the machine is doing.
struct ThreadCpuTime;

fn thread_cpu() -> Option<Duration> {
    cpu_time::ThreadTime::try_now()
        .ok()
        .map(|t| t.as_duration())
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu().unwrap_or_default()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu().unwrap_or_default().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

/// Formats CPU nanoseconds like criterion's wall-time formatter does.
struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e3, "µs cpu")
        } else if typical < 1e9 {
            (1e6, "ms cpu")
        } else {
            (1e9, "s cpu")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(
        &self,
        typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        match *throughput {
            Throughput::Bytes(bytes) | Throughput::BytesDecimal(bytes) => {
                // values are ns per iteration; report MiB per CPU-second.
                values
                    .iter_mut()
                    .for_each(|v| *v = bytes as f64 * 1e9 / *v / (1024.0 * 1024.0));
                let _ = typical;
                "MiB/s cpu"
            }
            Throughput::Elements(n) => {
                values.iter_mut().for_each(|v| *v = n as f64 * 1e9 / *v);
                "elem/s cpu"
            }
        }
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn cpu_criterion() -> Criterion<ThreadCpuTime> {
    Criterion::default().with_measurement(ThreadCpuTime)
}

fn envelope_cpu_if_supported(c: &mut Criterion<ThreadCpuTime>) {
    if thread_cpu().is_some() {
        envelope_cpu(c);
    } else {
        eprintln!("envelope_cpu: no per-thread CPU clock on this platform; skipped");
    }
}

criterion_group!(benches, envelope, argon2_default);
criterion_group! {
    name = cpu;
    config = cpu_criterion();
    targets = envelope_cpu_if_supported
}
criterion_main!(benches, cpu);
