//! Segment-log benches: append throughput (single points and 1,000-point batches at each
//! durability level), bytes per point, and scan throughput on recovery.
//!
//! Run: `cargo bench --bench wal`. Figures go in `docs/BENCHMARKS.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runlog::RunId;
use runlog::wal::{Durability, Log, LogOptions, ReadOptions, read_dir};

const KEYS: [&str; 4] = ["train/loss", "train/acc", "lr", "grad_norm"];

/// Noisy values of f32 origin, like `tensor.item()`.
fn values(count: usize) -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state % 1_000_000) as f64 / 1e7;
            f64::from((2.0 / (1.0 + i as f64 / 1000.0) + noise) as f32)
        })
        .collect()
}

fn open(dir: &std::path::Path, durability: Durability) -> Log {
    let options = LogOptions {
        durability,
        ..LogOptions::default()
    };
    Log::open(dir.join("wal"), options).unwrap().0
}

fn levels() -> [(&'static str, Durability); 3] {
    [
        ("buffered", Durability::Buffered),
        ("interval_1s", Durability::Interval(Duration::from_secs(1))),
        ("sync", Durability::Sync),
    ]
}

fn append_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/append_point");
    group.throughput(Throughput::Elements(1));
    let values = values(1 << 16);
    for (name, durability) in levels() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| {
                let dir = tempfile::tempdir().unwrap();
                let log = open(dir.path(), durability);
                let mut timestamp_ms = 1_700_000_000_000i64;
                let start = Instant::now();
                for i in 0..iterations {
                    let step = (i / KEYS.len() as u64) as i64;
                    timestamp_ms += i64::from(i % 64 == 0);
                    let value = values[i as usize & 0xffff];
                    log.log_point(
                        RunId(1),
                        KEYS[i as usize % KEYS.len()],
                        step,
                        timestamp_ms,
                        value,
                    )
                    .unwrap();
                }
                let elapsed = start.elapsed();
                log.close().unwrap();
                elapsed
            });
        });
    }
    group.finish();
}

fn append_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal/append_batch_1000");
    group.throughput(Throughput::Elements(1000));
    let values = values(1000);
    for (name, durability) in levels() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| {
                let dir = tempfile::tempdir().unwrap();
                let log = open(dir.path(), durability);
                let mut steps: Vec<i64> = (0..1000).collect();
                let mut timestamps: Vec<i64> =
                    steps.iter().map(|s| 1_700_000_000_000 + s * 3).collect();
                let start = Instant::now();
                for i in 0..iterations {
                    log.log_columns(
                        RunId(1),
                        KEYS[i as usize % KEYS.len()],
                        &steps,
                        &timestamps,
                        &values,
                    )
                    .unwrap();
                    if i % KEYS.len() as u64 == KEYS.len() as u64 - 1 {
                        steps.iter_mut().for_each(|s| *s += 1000);
                        timestamps.iter_mut().for_each(|t| *t += 3000);
                    }
                }
                let elapsed = start.elapsed();
                log.close().unwrap();
                elapsed
            });
        });
    }
    group.finish();
}

/// Writes `points` points (single calls and batches, half each), closes, and prints the bytes
/// per point the log takes.
fn prepare(dir: &std::path::Path, points: usize) {
    let log = open(dir, Durability::Buffered);
    let values = values(points);
    let half = points / 2;
    for (i, value) in values[..half].iter().enumerate() {
        let step = (i / KEYS.len()) as i64;
        log.log_point(
            RunId(1),
            KEYS[i % KEYS.len()],
            step,
            1_700_000_000_000 + step * 3,
            *value,
        )
        .unwrap();
    }
    let steps: Vec<i64> = (0..1000).collect();
    let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s * 3).collect();
    for chunk in values[half..].chunks(1000) {
        let n = chunk.len();
        log.log_columns(RunId(2), "loss", &steps[..n], &timestamps[..n], chunk)
            .unwrap();
    }
    log.close().unwrap();
}

fn log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn bytes_per_point(_: &mut Criterion) {
    let points = 1_000_000;
    for (name, batch) in [("single", false), ("batch_1000", true)] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), Durability::Buffered);
        let values = values(points);
        if batch {
            let steps: Vec<i64> = (0..points as i64).collect();
            let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s * 3).collect();
            for start in (0..points).step_by(1000) {
                let range = start..start + 1000;
                log.log_columns(
                    RunId(1),
                    "loss",
                    &steps[range.clone()],
                    &timestamps[range.clone()],
                    &values[range],
                )
                .unwrap();
            }
        } else {
            for (i, value) in values.iter().enumerate() {
                let step = (i / KEYS.len()) as i64;
                log.log_point(
                    RunId(1),
                    KEYS[i % KEYS.len()],
                    step,
                    1_700_000_000_000 + step * 3,
                    *value,
                )
                .unwrap();
            }
        }
        log.close().unwrap();
        let bytes = log_bytes(dir.path());
        println!(
            "wal/bytes_per_point/{name}: {:.2} bytes/point ({bytes} bytes, {points} points)",
            bytes as f64 / points as f64
        );
    }
}

fn scan(c: &mut Criterion) {
    let points = 4_000_000;
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path(), points);
    let mut group = c.benchmark_group("wal/scan");
    group.throughput(Throughput::Elements(points as u64));
    group.sample_size(10);
    group.bench_function("read_all_points", |b| {
        b.iter(|| {
            let mut seen = 0usize;
            read_dir(
                &dir.path().join("wal"),
                ReadOptions::default(),
                &mut |_, event| {
                    if let runlog::wal::Event::Metrics(batch) = event {
                        seen += batch.len();
                    }
                },
            )
            .unwrap();
            assert_eq!(seen, points);
        });
    });
    group.bench_function("open_with_recovery_and_read", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let crashed = tempfile::tempdir().unwrap();
                let log = open(crashed.path(), Durability::Buffered);
                let values = values(points / 4);
                for (i, value) in values.iter().enumerate() {
                    log.log_point(
                        RunId(1),
                        "loss",
                        i as i64,
                        1_700_000_000_000 + i as i64,
                        *value,
                    )
                    .unwrap();
                }
                log.abandon();
                let start = Instant::now();
                let (log, report) =
                    Log::open(crashed.path().join("wal"), LogOptions::default()).unwrap();
                let mut seen = 0usize;
                log.read(&mut |_, event| {
                    if let runlog::wal::Event::Metrics(batch) = event {
                        seen += batch.len();
                    }
                })
                .unwrap();
                total += start.elapsed();
                assert_eq!(report.repaired.len(), 1);
                assert_eq!(seen, points / 4);
            }
            // Report per point of the recovered log, like the other scan bench.
            total * 4
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bytes_per_point, append_single, append_batch, scan
}
criterion_main!(benches);
