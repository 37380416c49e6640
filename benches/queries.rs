//! Issue 4's query benchmark: the standard workload (100 runs x 8 keys x 50,000 steps = 40 M
//! points), the same five queries timed in runlog and, on runlog's Parquet export, in DuckDB
//! (`benches/duckdb_queries.py`, run by this harness when python3 has or can install duckdb).
//!
//! Run: `cargo bench --bench queries` (`RUNLOG_BENCH_STEPS` scales the steps per series).
//! Figures go in `docs/BENCHMARKS.md`. Medians of several repetitions. runlog's queries run
//! after `Store::compact`, so history reads the compacted, indexed Parquet files.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use runlog::query::SearchRuns;
use runlog::{Durability, RunId, RunOptions, Store, StoreOptions};

const RUNS: usize = 100;
const KEYS: [&str; 8] = [
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "lr",
    "grad_norm",
    "tokens",
    "mfu",
];

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time(repetitions: usize, mut query: impl FnMut()) -> Duration {
    query(); // warm up
    median(
        (0..repetitions)
            .map(|_| {
                let start = Instant::now();
                query();
                start.elapsed()
            })
            .collect(),
    )
}

fn build(root: &Path, steps: i64) -> (Store, Vec<RunId>) {
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(root, options).unwrap();
    let experiment = store.get_or_create_experiment("workload").unwrap();
    let steps_column: Vec<i64> = (0..steps).collect();
    let timestamps: Vec<i64> = steps_column
        .iter()
        .map(|s| 1_700_000_000_000 + s * 250)
        .collect();
    let mut runs = Vec::new();
    for r in 0..RUNS {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_param("lr", &format!("{}", 0.001 * (r % 10 + 1) as f64))
            .unwrap();
        for (k, key) in KEYS.iter().enumerate() {
            let values: Vec<f64> = steps_column
                .iter()
                .map(|s| {
                    f64::from((1.0 / (1.0 + *s as f64 / 1000.0) + (r * 8 + k) as f64 * 1e-3) as f32)
                })
                .collect();
            run.log_batch(key, &steps_column, Some(&timestamps), &values)
                .unwrap();
        }
        runs.push(run.id());
        run.finish().unwrap();
    }
    (store, runs)
}

fn main() {
    let steps: i64 = std::env::var("RUNLOG_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (store, runs) = build(&dir.path().join("store"), steps);
    let points = RUNS as u64 * KEYS.len() as u64 * steps as u64;
    println!(
        "workload: {RUNS} runs x {} keys x {steps} steps = {points} points, logged in {:.1} s",
        KEYS.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let export = dir.path().join("export");
    let report = store.export(&export).unwrap();
    println!(
        "export: {} files, {} bytes ({:.2} bytes/point incl. all tables) in {:.1} s",
        report.files.len(),
        report.bytes,
        report.bytes as f64 / points as f64,
        started.elapsed().as_secs_f64()
    );

    // Queries on the log alone, then after compaction.
    let run = runs[RUNS / 2];
    let mid = steps / 2;
    let log_history = time(3, || {
        assert_eq!(
            store.history(run, "val/loss", ..).unwrap().len() as i64,
            steps
        )
    });
    println!(
        "history from the log alone: {:.1} ms",
        log_history.as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let compaction = store.compact().unwrap();
    let took = started.elapsed().as_secs_f64();
    println!(
        "compaction: {} points in {:.2} s ({:.1} M points/s), {} files, {} bytes ({:.2} bytes/point)",
        compaction.points,
        took,
        compaction.points as f64 / took / 1e6,
        compaction.files_written,
        compaction.bytes,
        compaction.bytes as f64 / compaction.points as f64
    );
    let results = [
        (
            "full history of one series",
            time(5, || {
                assert_eq!(
                    store.history(run, "val/loss", ..).unwrap().len() as i64,
                    steps
                )
            }),
        ),
        (
            "a 1,000-step range",
            time(5, || {
                assert_eq!(
                    store
                        .history(run, "val/loss", mid..mid + 1000)
                        .unwrap()
                        .len(),
                    1000
                )
            }),
        ),
        (
            "last value for all 800 series",
            time(20, || {
                assert_eq!(
                    store.compare_table(&runs, &KEYS).unwrap().len(),
                    RUNS * KEYS.len()
                )
            }),
        ),
        (
            "10-run step-aligned comparison, 500 buckets",
            time(5, || {
                let compared = store
                    .compare_aligned(&runs[..10], "val/loss", .., 500)
                    .unwrap();
                assert_eq!(compared.len(), 10);
            }),
        ),
    ];
    // Search: its own store of 10,000 runs (two-clause filter), as in benches/tracking.rs.
    let search_dir = tempfile::tempdir().unwrap();
    let search_store = Store::open_with(
        search_dir.path(),
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let experiment = search_store.get_or_create_experiment("search").unwrap();
    for i in 0..10_000u64 {
        let run = search_store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_param("lr", ["0.1", "0.01", "0.001"][(i % 3) as usize])
            .unwrap();
        run.log_metric("acc", (i % 1000) as f64 / 1000.0, 1)
            .unwrap();
        run.finish().unwrap();
    }
    let search_export = search_dir.path().join("export");
    search_store.export(&search_export).unwrap();
    let search_with = |filter: &str, order_by: &[&str]| {
        time(10, || {
            let page = search_store
                .search_runs(&SearchRuns {
                    filter: filter.into(),
                    order_by: order_by.iter().map(|o| o.to_string()).collect(),
                    max_results: 100,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(page.runs.len(), 100);
        })
    };
    let two_clauses = "metrics.acc > 0.5 and params.lr = '0.01'";
    let search = search_with(two_clauses, &[]);
    let search_metric = search_with("metrics.acc > 0.5", &[]);
    // Ordering by a metric reads every matching run, not just the newest.
    let search_ordered = search_with(two_clauses, &["metrics.acc DESC"]);

    let rows: Vec<(&str, Duration)> = results
        .into_iter()
        .chain([
            ("search over 10,000 runs, two-clause filter", search),
            ("search over 10,000 runs, one metric clause", search_metric),
            (
                "search over 10,000 runs, two-clause filter, ordered by metrics.acc DESC",
                search_ordered,
            ),
        ])
        .collect();
    println!("\n| query | runlog |");
    println!("|---|---|");
    for (name, took) in &rows {
        println!("| {name} | {:.3} ms |", took.as_secs_f64() * 1e3);
    }
    // The script prints DuckDB's times beside these, with the ratio of the two in this run.
    let runlog_ms: String = rows
        .iter()
        .map(|(name, took)| format!("{name}\t{}\n", took.as_secs_f64() * 1e3))
        .collect();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_queries.py");
    let status = Command::new("python3")
        .env("RUNLOG_QUERY_MS", runlog_ms)
        .arg(&script)
        .arg(&export)
        .arg(&search_export)
        .arg(run.to_string())
        .arg(mid.to_string())
        .args(runs[..10].iter().map(|r| r.to_string()))
        .status();
    match status {
        Ok(status) if status.success() => {}
        other => {
            println!("duckdb comparison not run ({other:?}); pip install duckdb to include it")
        }
    }
}
