//! `Run::log_batch` of one large batch, as Python's `run.log_batch(key, steps, values)` sends
//! it: issue 15's floor of 20 M points/s from numpy (`python/benches/hot_paths.py`), in Rust,
//! without the binding. Each repetition logs 10 M points (steps 0, 1, 2, ..., values uniform in
//! [0, 1), so each costs eight bytes) to a fresh key of one run, with no timestamps given (one
//! taken per call), at `Durability::Buffered`.
//!
//! Run: `cargo bench --bench log_batch` (`RUNLOG_BENCH_POINTS` sets the batch,
//! `RUNLOG_BENCH_REPEATS` the repetitions). Prints best and median points/s; figures go in
//! `docs/BENCHMARKS.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlog::{Durability, RunOptions, Store, StoreOptions};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let points = env_or("RUNLOG_BENCH_POINTS", 10_000_000) as usize;
    let repeats = env_or("RUNLOG_BENCH_REPEATS", 7).max(1) as usize;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("bench").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    let steps: Vec<i64> = (0..points as i64).collect();
    let mut state = 7u64;
    let values: Vec<f64> = (0..points)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let mut times: Vec<Duration> = (0..repeats)
        .map(|repeat| {
            let key = format!("batch{repeat}");
            let start = Instant::now();
            run.log_batch(&key, &steps, None, &values).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    let rate = |time: Duration| points as f64 / time.as_secs_f64() / 1e6;
    println!(
        "log_batch of {points} points: best {:.1} M points/s ({:.1} ms), median {:.1} M points/s \
         ({:.1} ms), {repeats} repetitions",
        rate(times[0]),
        times[0].as_secs_f64() * 1e3,
        rate(times[repeats / 2]),
        times[repeats / 2].as_secs_f64() * 1e3,
    );
    drop(run);
    store.close().unwrap();
}
