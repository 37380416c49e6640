//! Tracking-API benches: `log_metric` one call per point on one thread and on 8 threads logging
//! to 8 runs; the same points through `MetricHandle`s (`Run::metric`), clock read per call or
//! timestamp given; the same points through the handle (`Run::log_metric_at`) and by run id
//! (`Store::log_batch` with one point, as MLflow's async client sends them), in one run so the
//! two compare; and opening a store whose log holds 10 million points.
//!
//! Run: `cargo bench --bench tracking`. Figures go in `docs/BENCHMARKS.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runlog::{Durability, MetricHandle, MetricPoint, Run, RunOptions, Store, StoreOptions};

const KEYS: [&str; 4] = ["train/loss", "train/acc", "lr", "grad_norm"];

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    }
}

/// Noisy values of f32 origin.
fn value(i: u64) -> f64 {
    let noise = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 44) as f64 / 1e6;
    f64::from((1.0 / (1.0 + i as f64 / 1e5) + noise) as f32)
}

fn log_metric(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracking/log_metric");
    group.throughput(Throughput::Elements(1));
    for threads in [1usize, 8] {
        group.bench_function(format!("{threads}_threads_{threads}_runs"), |b| {
            b.iter_custom(|iterations| {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open_with(dir.path(), options()).unwrap();
                let experiment = store.get_or_create_experiment("bench").unwrap();
                let runs: Vec<_> = (0..threads)
                    .map(|_| {
                        store
                            .start_run(experiment.id, RunOptions::default())
                            .unwrap()
                    })
                    .collect();
                let per_thread = iterations / threads as u64;
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for run in &runs {
                        scope.spawn(move || {
                            for i in 0..per_thread {
                                let step = (i / KEYS.len() as u64) as i64;
                                run.log_metric(KEYS[i as usize % KEYS.len()], value(i), step)
                                    .unwrap();
                            }
                        });
                    }
                });
                let elapsed = start.elapsed();
                drop(runs);
                store.close().unwrap();
                elapsed
            });
        });
    }
    group.finish();
}

/// What `metric_handle` times per call.
#[derive(Clone, Copy)]
enum Timestamp {
    /// `MetricHandle::log`: the clock read per call.
    Now,
    /// `MetricHandle::log_at`: given.
    Given,
}

/// The same points as `log_metric`, through one `MetricHandle` per key (made before timing).
fn metric_handle(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracking/metric_handle");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("log_1_threads_1_runs", 1usize, Timestamp::Now),
        ("log_at_1_threads_1_runs", 1, Timestamp::Given),
        ("log_8_threads_8_runs", 8, Timestamp::Now),
    ];
    for (name, threads, timestamp) in cases {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open_with(dir.path(), options()).unwrap();
                let experiment = store.get_or_create_experiment("bench").unwrap();
                let runs: Vec<_> = (0..threads)
                    .map(|_| {
                        store
                            .start_run(experiment.id, RunOptions::default())
                            .unwrap()
                    })
                    .collect();
                let handles: Vec<Vec<MetricHandle>> = runs
                    .iter()
                    .map(|run| KEYS.iter().map(|key| run.metric(key).unwrap()).collect())
                    .collect();
                let per_thread = iterations / threads as u64;
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for handles in &handles {
                        scope.spawn(move || {
                            for i in 0..per_thread {
                                let step = (i / KEYS.len() as u64) as i64;
                                let handle = &handles[i as usize % KEYS.len()];
                                match timestamp {
                                    Timestamp::Now => handle.log(value(i), step),
                                    Timestamp::Given => {
                                        handle.log_at(value(i), step, 1_700_000_000_000 + step)
                                    }
                                }
                                .unwrap();
                            }
                        });
                    }
                });
                let elapsed = start.elapsed();
                drop((handles, runs));
                store.close().unwrap();
                elapsed
            });
        });
    }
    group.finish();
}

/// How `keyed_vs_handle` logs a point.
#[derive(Clone, Copy)]
enum Path {
    Handle,
    Keyed,
}

fn log_one(store: &Store, run: &Run, path: Path, i: u64) {
    let key = KEYS[i as usize % KEYS.len()];
    let step = (i / KEYS.len() as u64) as i64;
    let timestamp_ms = 1_700_000_000_000 + step;
    match path {
        Path::Handle => run
            .log_metric_at(key, value(i), step, timestamp_ms)
            .unwrap(),
        Path::Keyed => {
            let point = MetricPoint {
                key,
                value: value(i),
                step,
                timestamp_ms,
            };
            store.log_batch(run.id(), &[point], &[], &[]).unwrap();
        }
    }
}

fn keyed_vs_handle(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracking/keyed_vs_handle");
    group.throughput(Throughput::Elements(1));
    for threads in [1usize, 8] {
        for (name, path) in [("handle", Path::Handle), ("keyed", Path::Keyed)] {
            group.bench_function(format!("{name}_{threads}_threads_{threads}_runs"), |b| {
                b.iter_custom(|iterations| {
                    let dir = tempfile::tempdir().unwrap();
                    let store = Store::open_with(dir.path(), options()).unwrap();
                    let experiment = store.get_or_create_experiment("bench").unwrap();
                    let runs: Vec<_> = (0..threads)
                        .map(|_| {
                            store
                                .start_run(experiment.id, RunOptions::default())
                                .unwrap()
                        })
                        .collect();
                    let per_thread = iterations / threads as u64;
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for run in &runs {
                            let store = &store;
                            scope.spawn(move || {
                                for i in 0..per_thread {
                                    log_one(store, run, path, i);
                                }
                            });
                        }
                    });
                    let elapsed = start.elapsed();
                    drop(runs);
                    store.close().unwrap();
                    elapsed
                });
            });
        }
    }
    group.finish();
}

fn open_10m(c: &mut Criterion) {
    let points = 10_000_000u64;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        let experiment = store.get_or_create_experiment("bench").unwrap();
        let runs: Vec<_> = (0..10)
            .map(|_| {
                store
                    .start_run(experiment.id, RunOptions::default())
                    .unwrap()
            })
            .collect();
        for i in 0..points {
            let run = &runs[(i % 10) as usize];
            let j = i / 10;
            run.log_metric_at(
                KEYS[(j % 4) as usize],
                value(j),
                (j / 4) as i64,
                1_700_000_000_000 + j as i64,
            )
            .unwrap();
        }
        for run in runs {
            run.finish().unwrap();
        }
        store.close().unwrap();
    }
    let bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!("tracking/open: log of {points} points takes {bytes} bytes");
    let mut group = c.benchmark_group("tracking/open");
    group.sample_size(10);
    group.throughput(Throughput::Elements(points));
    group.bench_function("10m_points", |b| {
        b.iter(|| {
            let store = Store::open_with(dir.path(), options()).unwrap();
            let experiment = store.experiment_by_name("bench").unwrap().unwrap();
            let runs = store.runs(experiment.id, runlog::ViewType::All).unwrap();
            let total: u64 = runs
                .iter()
                .flat_map(|r| r.metrics.values())
                .map(|m| m.count)
                .sum();
            assert_eq!(total, points);
        });
    });
    group.finish();
}

fn search_10k(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let experiment = store.get_or_create_experiment("bench").unwrap();
    for i in 0..10_000u64 {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_param("lr", ["0.1", "0.01", "0.001"][(i % 3) as usize])
            .unwrap();
        run.set_tag("model", ["resnet", "vit"][(i % 2) as usize])
            .unwrap();
        for key in [
            "acc",
            "loss",
            "lr",
            "grad_norm",
            "val/acc",
            "val/loss",
            "tokens",
            "mfu",
        ] {
            run.log_metric(key, value(i * 8 + key.len() as u64), 100)
                .unwrap();
        }
        run.finish().unwrap();
    }
    let mut group = c.benchmark_group("tracking/search");
    group.bench_function("10k_runs_two_clauses", |b| {
        b.iter(|| {
            let page = store
                .search_runs(&runlog::query::SearchRuns {
                    experiments: vec![experiment.id],
                    filter: "metrics.acc > 0.5 and params.lr = '0.01'".into(),
                    max_results: 100,
                    ..Default::default()
                })
                .unwrap();
            assert!(!page.runs.is_empty());
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = log_metric, metric_handle, keyed_vs_handle, open_10m, search_10k
}
criterion_main!(benches);
