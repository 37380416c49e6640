//! Reading one long series: issue 15's `store.history` of a 10 M-point series, in Rust, on the
//! workload of `python/benches/hot_paths.py`. One writer's log holds, before the series, 6 M
//! single-point `log_metric` calls of another run (stream records) and 30 M points of that
//! run's `log_batch` calls (columns records); the series is 10 M points of one `log_batch`
//! of a second run, with one timestamp, as Python's `log_batch` without timestamps gives.
//! The read is timed from the log (nothing compacted), then after `Store::compact` (Parquet).
//!
//! A second workload is issue 14's chart of runs still training: `Store::history_sample` of
//! 10 runs × 1 M points from the log, 320 ranks per run picked as MLflow's NTILE does (what
//! `get-history-bulk-interval` asks), the points logged as `runlog serve`'s 8 connections
//! deliver them: 1,000-point keyed `Store::log_batch` calls (stream points, as the server's
//! `log-batch` logs them) from 8 threads, so each run's batches land on several writer lanes
//! and its log order is not its step order. Its answer is checked against
//! the same ranks picked out of the whole histories.
//!
//! Run: `cargo bench --bench long_series` (`RUNLOG_BENCH_POINTS` scales the series and, in
//! proportion, the other run's points; `RUNLOG_BENCH_SEED` replays the values;
//! `RUNLOG_BENCH_READS` sets the repetitions, `RUNLOG_BENCH_COMPACT=0` skips the compacted
//! read, e.g. to profile the log read alone; `RUNLOG_BENCH_WORKLOAD=series` or `sample` runs
//! one workload alone, `RUNLOG_SAMPLE_POINTS` sets the points per run of the sample,
//! `RUNLOG_SAMPLE_COLUMNS=1` logs its batches with `Run::log_batch`, as columns records). Figures go in `docs/BENCHMARKS.md`. Best and
//! median of several repetitions, after one warm-up read, of the call alone (its result is
//! dropped after the clock stops) and of the call with that drop. The repeated reads go
//! through the directories of the sealed segments (`wal/directory.rs`) from the second on.
//! Then the first read of a few fresh read-only handles is timed alone: with the directories
//! their open's read of the log left, and with those forgotten, the read that scans the whole
//! log tail (what every read did before directories).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlog::{Durability, RunOptions, RunStatus, Store, StoreOptions};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Uniform values in [0, 1) from a xorshift generator: not exact in f32, as numpy's
/// `random()` values are not, so every value costs eight bytes in the log.
fn values(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.max(1);
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// Times `read` `repetitions` times after a warm-up: the call alone, and the call with the
/// drop of what it returned (240 MB of columns given back), each sorted.
fn times<T>(
    repetitions: usize,
    mut read: impl FnMut() -> T,
    points: impl Fn(&T) -> usize,
    expected: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    assert_eq!(points(&read()), expected, "warm-up read");
    let (mut calls, mut with_drop) = (Vec::new(), Vec::new());
    for _ in 0..repetitions {
        let start = Instant::now();
        let result = read();
        let returned = start.elapsed();
        assert_eq!(points(&result), expected);
        drop(result);
        with_drop.push(start.elapsed());
        calls.push(returned);
    }
    calls.sort();
    with_drop.sort();
    (calls, with_drop)
}

fn report(what: &str, (calls, with_drop): &(Vec<Duration>, Vec<Duration>)) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: best {:.1} ms, median {:.1} ms ({} reads; with the result's drop: best {:.1} ms, median {:.1} ms)",
        ms(calls[0]),
        ms(calls[calls.len() / 2]),
        calls.len(),
        ms(with_drop[0]),
        ms(with_drop[with_drop.len() / 2]),
    );
}

fn main() {
    let workload = std::env::var("RUNLOG_BENCH_WORKLOAD").unwrap_or_default();
    if workload != "sample" {
        long_series();
    }
    if workload != "series" {
        sample_from_log();
    }
}

/// Times `read` once on each of `handles` fresh handles on the store at `root`, after each
/// handle's catalog is built (`ready`): with the directories of the sealed segments its open
/// read, or, with `forget`, without any, so that the read scans the whole log tail as every
/// read did before directories.
fn first_reads<T>(
    root: &std::path::Path,
    (handles, forget): (usize, bool),
    ready: impl Fn(&Store),
    read: impl Fn(&Store) -> T,
) -> Vec<Duration> {
    let mut calls: Vec<Duration> = (0..handles)
        .map(|_| {
            let fresh = Store::open_with(
                root,
                StoreOptions {
                    read_only: true,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            ready(&fresh);
            if forget {
                fresh.forget_segment_directories();
            }
            let start = Instant::now();
            let result = read(&fresh);
            let elapsed = start.elapsed();
            drop(result);
            elapsed
        })
        .collect();
    calls.sort();
    calls
}

fn report_first(what: &str, calls: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: best {:.1} ms, median {:.1} ms ({} fresh handles, the call alone)",
        ms(calls[0]),
        ms(calls[calls.len() / 2]),
        calls.len(),
    );
}

/// MLflow's NTILE pick: each bucket's first rank, the last point always.
fn ntile(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let (base, rem) = (n / k, n % k);
    let mut picks: Vec<usize> = (0..k).map(|i| i * base + i.min(rem)).collect();
    if let Some(last) = picks.last_mut() {
        *last = n - 1;
    }
    picks
}

fn sample_from_log() {
    const RUNS: usize = 10;
    const BATCH_POINTS: usize = 1_000;
    const THREADS: usize = 8;
    const PICKS: usize = 320;
    let points = env_or("RUNLOG_SAMPLE_POINTS", 1_000_000) as usize;
    let reads = env_or("RUNLOG_BENCH_READS", 7).max(1) as usize;
    let batches = points.div_ceil(BATCH_POINTS);
    let columns = env_or("RUNLOG_SAMPLE_COLUMNS", 0) == 1;
    let logged = if columns {
        "columns records"
    } else {
        "stream points"
    };
    println!(
        "sample from the log: {RUNS} runs x {points} points as {logged}, {PICKS} picks per run"
    );
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("bench").unwrap().id;
    let runs: Vec<runlog::Run> = (0..RUNS)
        .map(|_| store.start_run(experiment, RunOptions::default()).unwrap())
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= batches * RUNS {
                        return;
                    }
                    let first = (index / RUNS * BATCH_POINTS) as i64;
                    let last = (first + BATCH_POINTS as i64).min(points as i64);
                    let steps: Vec<i64> = (first..last).collect();
                    let timestamps: Vec<i64> =
                        steps.iter().map(|s| 1_700_000_000_000 + s).collect();
                    let values: Vec<f64> = steps.iter().map(|s| 1.0 / (1.0 + *s as f64)).collect();
                    if columns {
                        // `Run::log_batch`: one columns record per call.
                        runs[index % RUNS]
                            .log_batch("loss", &steps, Some(&timestamps), &values)
                            .unwrap();
                        continue;
                    }
                    // The keyed call the server's `log-batch` makes (stream points).
                    let metrics: Vec<runlog::MetricPoint<'_>> = (0..steps.len())
                        .map(|i| runlog::MetricPoint {
                            key: "loss",
                            value: values[i],
                            step: steps[i],
                            timestamp_ms: timestamps[i],
                        })
                        .collect();
                    store
                        .log_batch(runs[index % RUNS].id(), &metrics, &[], &[])
                        .unwrap();
                }
            });
        }
    });
    store.flush().unwrap();
    let ids: Vec<runlog::RunId> = runs.iter().map(|run| run.id()).collect();
    let pick = |total: usize| ntile(total, PICKS);
    let read = || store.history_sample(&ids, "loss", .., &pick).unwrap();
    let count = |samples: &Vec<runlog::query::Sample>| samples.iter().map(|s| s.total).sum();
    report(
        "history_sample from the log",
        &times(reads, read, count, points * RUNS),
    );
    for (what, forget) in [("", false), (", its directories forgotten", true)] {
        report_first(
            &format!("history_sample from the log, first read of a fresh handle{what}"),
            &first_reads(
                dir.path(),
                (reads.min(5), forget),
                |fresh| drop(fresh.run(ids[0]).unwrap()),
                |fresh| fresh.history_sample(&ids, "loss", .., &pick).unwrap(),
            ),
        );
    }
    let sample = read();
    let histories = store.history_of_runs(&ids, "loss", ..).unwrap();
    for (sample, history) in sample.iter().zip(&histories) {
        let expected: Vec<i64> = pick(history.len())
            .iter()
            .map(|rank| history.steps[*rank])
            .collect();
        assert_eq!(sample.points.steps, expected);
        assert!(!sample.ties);
    }
}

fn long_series() {
    let points = env_or("RUNLOG_BENCH_POINTS", 10_000_000) as usize;
    let seed = env_or("RUNLOG_BENCH_SEED", 7);
    let reads = env_or("RUNLOG_BENCH_READS", 7).max(1) as usize;
    println!("long_series: {points} points, seed {seed} (RUNLOG_BENCH_SEED replays it)");
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("bench").unwrap().id;
    let other = store.start_run(experiment, RunOptions::default()).unwrap();
    let calls = points / 5;
    for _ in 0..3 {
        for step in 0..calls as i64 {
            other.log_metric("loss", 0.5, step).unwrap();
        }
    }
    let steps: Vec<i64> = (0..points as i64).collect();
    let series_values = values(points, seed);
    for _ in 0..3 {
        other
            .log_batch("batch", &steps, None, &series_values)
            .unwrap();
    }
    let single = store.start_run(experiment, RunOptions::default()).unwrap();
    single
        .log_batch("loss", &steps, None, &series_values)
        .unwrap();
    let id = single.id();
    single.end(RunStatus::Finished).unwrap();
    other.end(RunStatus::Finished).unwrap();
    store.flush().unwrap();

    let read = || store.history(id, "loss", ..).unwrap();
    let count = |history: &runlog::query::History| history.len();
    report("history from the log", &times(reads, read, count, points));
    for (what, forget) in [("", false), (", its directories forgotten", true)] {
        report_first(
            &format!("history from the log, first read of a fresh handle{what}"),
            &first_reads(
                dir.path(),
                (reads.min(5), forget),
                |fresh| drop(fresh.run(id).unwrap()),
                |fresh| fresh.history(id, "loss", ..).unwrap(),
            ),
        );
    }
    let history = store.history(id, "loss", ..).unwrap();
    assert_eq!(history.steps, steps);
    assert!(history.values == series_values, "values read back differ");
    drop(history);

    if env_or("RUNLOG_BENCH_COMPACT", 1) == 0 {
        return;
    }
    store.compact().unwrap();
    report("history once compacted", &times(reads, read, count, points));
    let history = store.history(id, "loss", ..).unwrap();
    assert_eq!(history.steps, steps);
    assert!(
        history.values == series_values,
        "compacted values read back differ"
    );
}
