//! Few-row reads from compacted files, through the library alone (no HTTP): the read behind
//! `get-history-bulk-interval` (`Store::history_sample`, 10 runs x 1 M points, 320 ranks per
//! run picked as MLflow's NTILE does) and a 1,000-step range against the full history of a
//! 50,000-point series. Figures go in docs/BENCHMARKS.md ("Few-row reads").
//!
//! The bulk runs are logged as `runlog serve`'s 8 connections deliver them: the batches of
//! each run reach two compactions out of step order, so each run ends up in two compacted
//! parts whose step spans overlap (the case that needs a merge by step).
//!
//! Four figures for the sample: the first query on a store handle just opened (which checks
//! each file's CRC whole before decoding it, once per handle), the first on a handle that has
//! already checked the files (caches of the few-row reads empty), the first after the
//! server's background warm-up (`Store::warm_compacted_files`: files checked, long series'
//! step runs read), and "warm", the median of repeated queries on one handle. The OS page cache holds the files throughout.
//!
//! Run: `cargo bench --bench sample`. `RUNLOG_SAMPLE_STORE=<dir>` keeps the store built there
//! and reuses it on the next run; `RUNLOG_BENCH_SCALE=0.1` shrinks the bulk runs.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use runlog::{Durability, RunId, RunOptions, Store, StoreOptions};

const BULK_RUNS: usize = 10;
const BULK_POINTS: usize = 1_000_000;
const BATCH_POINTS: usize = 1_000;
const PICKS: usize = 320;
const RANGE_RUNS: usize = 20;
const RANGE_KEYS: usize = 8;
const RANGE_STEPS: i64 = 50_000;
const REPETITIONS: usize = 50;
const COLD_OPENS: usize = 5;

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    }
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

/// User and system CPU time of this process so far, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` writes the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The server's background warm-up of a store handle, run to its end.
fn warm_up(store: &Store) {
    let go_on = std::sync::atomic::AtomicBool::new(false);
    store.warm_compacted_files(None, &go_on).unwrap();
}

fn log_batches(run: &runlog::Run, batches: impl Iterator<Item = usize>) {
    for batch in batches {
        let first = (batch * BATCH_POINTS) as i64;
        let steps: Vec<i64> = (first..first + BATCH_POINTS as i64).collect();
        let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s).collect();
        let values: Vec<f64> = steps.iter().map(|s| 1.0 / (1.0 + *s as f64)).collect();
        run.log_batch("loss", &steps, Some(&timestamps), &values)
            .unwrap();
    }
}

/// The bulk runs (two overlapping compacted parts each) and the range runs (one part per
/// series), compacted.
fn build(root: &Path, scale: f64) -> (Vec<RunId>, Vec<RunId>) {
    let store = Store::open_with(root, options()).unwrap();
    let experiment = store.get_or_create_experiment("bulk").unwrap();
    let batches = ((BULK_POINTS as f64 * scale) as usize / BATCH_POINTS).max(4);
    let runs: Vec<runlog::Run> = (0..BULK_RUNS)
        .map(|_| {
            store
                .start_run(experiment.id, RunOptions::default())
                .unwrap()
        })
        .collect();
    // First compaction: batches up to 48 % and 50 % to 52 %; the second takes the rest.
    let (hole, resume) = (batches * 48 / 100, batches * 52 / 100);
    for run in &runs {
        log_batches(run, (0..hole).chain(batches / 2..resume));
    }
    store.compact().unwrap();
    for run in &runs {
        log_batches(run, (hole..batches / 2).chain(resume..batches));
    }
    store.compact().unwrap();
    let bulk: Vec<RunId> = runs.iter().map(|r| r.id()).collect();
    for run in runs {
        run.finish().unwrap();
    }

    let experiment = store.get_or_create_experiment("range").unwrap();
    let steps: Vec<i64> = (0..RANGE_STEPS).collect();
    let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s * 250).collect();
    let mut range = Vec::new();
    for r in 0..RANGE_RUNS {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        for k in 0..RANGE_KEYS {
            let values: Vec<f64> = steps
                .iter()
                .map(|s| f64::from((1.0 / (1.0 + *s as f64 / 1000.0) + (r * 8 + k) as f64) as f32))
                .collect();
            run.log_batch(&format!("k{k}"), &steps, Some(&timestamps), &values)
                .unwrap();
        }
        range.push(run.id());
        run.finish().unwrap();
    }
    store.compact().unwrap();
    (bulk, range)
}

fn main() {
    let scale: f64 = std::env::var("RUNLOG_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let temporary = tempfile::tempdir().unwrap();
    let root = std::env::var_os("RUNLOG_SAMPLE_STORE")
        .map_or_else(|| temporary.path().join("store"), Into::into);
    let ids = root.join("bench-runs.txt");
    let (bulk, range) = if let Ok(text) = std::fs::read_to_string(&ids) {
        let parse = |line: &str| -> Vec<RunId> {
            line.split_whitespace()
                .map(|id| id.parse().unwrap())
                .collect()
        };
        let mut lines = text.lines();
        (parse(lines.next().unwrap()), parse(lines.next().unwrap()))
    } else {
        let started = Instant::now();
        let built = build(&root, scale);
        let line = |runs: &[RunId]| {
            runs.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        std::fs::write(&ids, format!("{}\n{}\n", line(&built.0), line(&built.1))).unwrap();
        println!(
            "built in {:.1} s at {}",
            started.elapsed().as_secs_f64(),
            root.display()
        );
        built
    };

    let pick = |total: usize| ntile(total, PICKS);
    let sample = |store: &Store| {
        let samples = store.history_sample(&bulk, "loss", .., &pick).unwrap();
        assert!(samples.iter().all(|s| s.points.len() == PICKS && !s.ties));
    };
    // `RUNLOG_SAMPLE_PROFILE=checked` (or `warmed`): only "first after the files are checked"
    // (or "first after the server's warm-up"), 40 times, for a profiler or a steadier mean.
    let profile = std::env::var("RUNLOG_SAMPLE_PROFILE");
    if let Ok(profile @ ("checked" | "warmed")) = profile.as_deref() {
        let stores: Vec<Store> = (0..40)
            .map(|_| {
                let store = Store::open_with(&root, options()).unwrap();
                if profile == "checked" {
                    store.history(bulk[0], "loss", ..).unwrap();
                } else {
                    warm_up(&store);
                }
                store
            })
            .collect();
        let (started, cpu_before) = (Instant::now(), cpu_seconds());
        for store in &stores {
            sample(store);
        }
        // CPU time is what the other helpers' load on a shared machine moves least.
        println!(
            "{profile}: {:.2} ms each, {:.2} ms of CPU each",
            started.elapsed().as_secs_f64() * 1e3 / 40.0,
            (cpu_seconds() - cpu_before) * 1e3 / 40.0
        );
        return;
    }
    let cold: Vec<Duration> = (0..COLD_OPENS)
        .map(|_| {
            let store = Store::open_with(&root, options()).unwrap();
            let started = Instant::now();
            sample(&store);
            started.elapsed()
        })
        .collect();
    // Cold caches on a handle that has already checked the files (as a server that has
    // read a history in them before): the whole history of one run, which has a series in
    // each of the two files, read first.
    let checked: Vec<Duration> = (0..COLD_OPENS)
        .map(|_| {
            let store = Store::open_with(&root, options()).unwrap();
            store.history(bulk[0], "loss", ..).unwrap();
            let started = Instant::now();
            sample(&store);
            started.elapsed()
        })
        .collect();
    // What `runlog serve` does after its start and each compaction before a chart is asked
    // for: the newest files checked and their long series' step runs read.
    let warmed: Vec<Duration> = (0..COLD_OPENS)
        .map(|_| {
            let store = Store::open_with(&root, options()).unwrap();
            warm_up(&store);
            let started = Instant::now();
            sample(&store);
            started.elapsed()
        })
        .collect();
    let store = Store::open_with(&root, options()).unwrap();
    sample(&store);
    let warm: Vec<Duration> = (0..REPETITIONS)
        .map(|_| {
            let started = Instant::now();
            sample(&store);
            started.elapsed()
        })
        .collect();
    println!(
        "history_sample, {BULK_RUNS} runs x {} points (two overlapping parts each), {PICKS} picks/run: first query on a new handle median {:.2} ms, first after the files are checked {:.2} ms, first after the server's warm-up {:.2} ms ({COLD_OPENS} opens each), warm median {:.2} ms",
        (BULK_POINTS as f64 * scale) as usize,
        median(cold),
        median(checked),
        median(warmed),
        median(warm)
    );

    // The same sample through MLflow's endpoint, in process (no HTTP): what the service adds.
    let service = runlog::mlflow::Service::new(std::sync::Arc::new(
        Store::open_with(&root, options()).unwrap(),
    ));
    let mut query = format!("metric_key=loss&max_results={PICKS}");
    for run in &bulk {
        query.push_str(&format!("&run_ids={run}"));
    }
    let request = || {
        let reply = service.handle(runlog::mlflow::Request {
            method: runlog::mlflow::Method::Get,
            path: "/api/2.0/mlflow/metrics/get-history-bulk-interval",
            query: &query,
            body: b"",
        });
        assert_eq!(reply.status, 200);
    };
    request();
    let endpoint: Vec<Duration> = (0..REPETITIONS)
        .map(|_| {
            let started = Instant::now();
            request();
            started.elapsed()
        })
        .collect();
    println!(
        "get-history-bulk-interval through the service in process, warm: median {:.2} ms",
        median(endpoint)
    );

    let run = range[RANGE_RUNS / 2];
    let mid = RANGE_STEPS / 2;
    let time = |query: &dyn Fn()| {
        query();
        median(
            (0..REPETITIONS * 20)
                .map(|_| {
                    let started = Instant::now();
                    query();
                    started.elapsed()
                })
                .collect(),
        )
    };
    let full = time(&|| {
        assert_eq!(
            store.history(run, "k3", ..).unwrap().len() as i64,
            RANGE_STEPS
        );
    });
    let part = time(&|| {
        assert_eq!(
            store.history(run, "k3", mid..mid + 1000).unwrap().len(),
            1000
        );
    });
    println!(
        "history of a {RANGE_STEPS}-point series: full {full:.3} ms, 1,000-step range {part:.3} ms ({:.2} of full)",
        part / full
    );
}
