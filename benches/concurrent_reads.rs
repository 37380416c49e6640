//! Concurrent reads beside logging: 4 threads searching runs and reading histories (2 each)
//! while 2 threads log, against a baseline where the same 2 threads log and nobody reads. The
//! readers use their own handle (a dashboard or server process beside a training job), so
//! every point they see arrives through a refresh; the last phase repeats the mixed load with
//! `refresh_interval: None` (a refresh on every read) to show what the interval buys. Each
//! phase starts from a fresh store: history reads scan the uncompacted log, which the writers
//! grow by millions of points per second.
//!
//! Run: `cargo bench --bench concurrent_reads` (about 10 s after building; set
//! `RUNLOG_BENCH_SECONDS` to change each phase's length). Figures go in `docs/BENCHMARKS.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runlog::query::SearchRuns;
use runlog::{Durability, RunId, RunOptions, Store, StoreOptions};

/// Runs with metadata only: what search filters and orders.
const RUNS_SEARCHED: usize = 10_000;
/// Runs with a finished history: what readers read.
const RUNS_READ: usize = 16;
const HISTORY_POINTS: i64 = 5_000;
const READERS: usize = 4;
const WRITERS: usize = 2;

fn options(refresh_interval: Option<Duration>) -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        refresh_interval,
        ..StoreOptions::default()
    }
}

/// A store with `RUNS_SEARCHED` runs (param, tag, one metric) and `RUNS_READ` runs with
/// `HISTORY_POINTS` points of `loss`; returns the latter's ids.
fn populate(root: &Path) -> Vec<RunId> {
    let store = Store::open_with(root, options(None)).unwrap();
    let experiment = store.get_or_create_experiment("bench").unwrap();
    for i in 0..RUNS_SEARCHED {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_param("lr", ["0.1", "0.01", "0.001"][i % 3])
            .unwrap();
        run.set_tag("model", ["resnet", "vit"][i % 2]).unwrap();
        run.log_metric("acc", (i % 1000) as f64 / 1000.0, 0)
            .unwrap();
        run.finish().unwrap();
    }
    let read: Vec<RunId> = (0..RUNS_READ)
        .map(|_| {
            let run = store
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            for step in 0..HISTORY_POINTS {
                run.log_metric("loss", 1.0 / (step + 1) as f64, step)
                    .unwrap();
            }
            let id = run.id();
            run.finish().unwrap();
            id
        })
        .collect();
    store.close().unwrap();
    read
}

struct Rates {
    points_per_second: f64,
    searches_per_second: f64,
    histories_per_second: f64,
}

/// A fresh store, `WRITERS` threads logging for `duration` through one handle, and `readers`
/// threads (if any) reading meanwhile through another handle opened with `refresh_interval`:
/// half of them search, half read histories, so each rate is measured on its own.
fn phase(readers: usize, refresh_interval: Option<Duration>, duration: Duration) -> Rates {
    let dir = tempfile::tempdir().unwrap();
    let read = populate(dir.path());
    let writer = Store::open_with(dir.path(), options(None)).unwrap();
    let reader = Store::open_with(dir.path(), options(refresh_interval)).unwrap();
    let experiment = writer.get_or_create_experiment("bench").unwrap();
    let stop = AtomicBool::new(false);
    let (points, searches, histories) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            let run = writer
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            let (stop, points) = (&stop, &points);
            scope.spawn(move || {
                let mut step = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        run.log_metric("loss", 1.0 / (step + 1) as f64, step)
                            .unwrap();
                        step += 1;
                    }
                    points.fetch_add(256, Ordering::Relaxed);
                }
                run.finish().unwrap();
            });
        }
        for thread in 0..readers {
            let (stop, searches, histories, reader, read) =
                (&stop, &searches, &histories, &reader, &read);
            scope.spawn(move || {
                let search = SearchRuns {
                    filter: "params.lr = '0.01' and metrics.acc > 0.5".into(),
                    order_by: vec!["metrics.acc DESC".into()],
                    max_results: 50,
                    ..SearchRuns::default()
                };
                let mut i = thread;
                while !stop.load(Ordering::Relaxed) {
                    if thread % 2 == 0 {
                        let page = reader.search_runs(&search).unwrap();
                        assert_eq!(page.runs.len(), 50);
                        searches.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let history = reader.history(read[i % read.len()], "loss", ..).unwrap();
                        assert_eq!(history.len(), HISTORY_POINTS as usize);
                        histories.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let seconds = start.elapsed().as_secs_f64();
    Rates {
        points_per_second: points.load(Ordering::Relaxed) as f64 / seconds,
        searches_per_second: searches.load(Ordering::Relaxed) as f64 / seconds,
        histories_per_second: histories.load(Ordering::Relaxed) as f64 / seconds,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that does not name this bench skips it.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"concurrent_reads".contains(a.as_str()))
    {
        return;
    }
    let seconds: u64 = std::env::var("RUNLOG_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let default_interval = StoreOptions::default().refresh_interval;
    let report = |name: &str, rates: &Rates| {
        println!(
            "{name:<40} {:>10.0} points/s {:>8.0} searches/s {:>8.1} histories/s",
            rates.points_per_second, rates.searches_per_second, rates.histories_per_second
        );
    };
    println!(
        "{WRITERS} writers (log_metric, Buffered); {READERS} readers in another handle: {} \
         searching {RUNS_SEARCHED} runs (page of 50), {} reading {HISTORY_POINTS}-point \
         histories; a fresh store and {seconds} s per phase",
        READERS.div_ceil(2),
        READERS / 2
    );
    report(
        "baseline: writers only",
        &phase(0, default_interval, duration),
    );
    report(
        &format!("with readers, refresh_interval {default_interval:?}"),
        &phase(READERS, default_interval, duration),
    );
    report(
        "with readers, refresh_interval None",
        &phase(READERS, None, duration),
    );
}
