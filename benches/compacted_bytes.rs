//! Issue 16's bytes-per-point benchmark: the mixed workload of `tests/integration/
//! mixed_workload.rs` (4 keys a step, 3 of `f32` origin and an `f64` cosine schedule, shared
//! jittered timestamps), 1 M points by default, logged, compacted into one file, and measured:
//! bytes per point of the whole file and of each column's chunks (compressed, from the
//! Parquet footer), and the compaction's time.
//!
//! Run: `cargo bench --bench compacted_bytes` (`RUNLOG_BENCH_STEPS` sets the steps per run; 4
//! runs x 4 keys). Figures go in `docs/BENCHMARKS.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/mixed_workload.rs"]
mod mixed_workload;

use std::time::Instant;

use runlog::{Durability, Store, StoreOptions};

const RUNS: usize = 4;
const SEED: u64 = 16;

fn main() {
    let steps: i64 = std::env::var("RUNLOG_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(62_500);
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    mixed_workload::log(&store, "e", RUNS, steps, SEED);
    let start = Instant::now();
    let report = store.compact().unwrap();
    let elapsed = start.elapsed();
    let points = report.points;
    println!(
        "{points} points ({RUNS} runs x {} keys x {steps} steps, seed {SEED}), compacted in {:.0} ms",
        mixed_workload::KEYS.len(),
        elapsed.as_secs_f64() * 1e3
    );
    println!(
        "file: {} bytes, {:.3} bytes/point",
        report.bytes,
        report.bytes as f64 / points as f64
    );
    let columns = mixed_workload::column_bytes(&store, dir.path());
    let in_columns: i64 = columns.iter().map(|(_, b)| b).sum();
    for (name, bytes) in columns {
        println!(
            "  {name:<10} {bytes:>9} bytes, {:.3} bytes/point",
            bytes as f64 / points as f64
        );
    }
    let rest = report.bytes as i64 - in_columns;
    println!(
        "  footer and page index {rest:>9} bytes, {:.3} bytes/point",
        rest as f64 / points as f64
    );
}
