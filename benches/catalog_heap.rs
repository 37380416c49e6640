//! What a cold open costs on a compacted store of many small runs, and what the catalog holds
//! as reads take runs' summaries: live heap bytes per run and per series (a counting global
//! allocator) and the time of each step, on one read-only handle.
//!
//! Run: `cargo bench --bench catalog_heap`. The store is `RUNLOG_CATALOG_RUNS` runs (default
//! 20,000) in 20 experiments, 10 keys x 10 steps each (200,000 series, 2 M points), compacted.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use runlog::{Durability, RunId, RunOptions, Store, StoreOptions, ViewType};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const EXPERIMENTS: usize = 20;
const KEYS: usize = 10;
const STEPS: i64 = 10;

fn build(root: &std::path::Path, runs: usize) -> Vec<RunId> {
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(root, options).unwrap();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("m{k}")).collect();
    let mut ids = Vec::with_capacity(runs);
    for e in 0..EXPERIMENTS {
        let experiment = store.get_or_create_experiment(&format!("exp{e}")).unwrap();
        for r in 0..runs / EXPERIMENTS {
            let run = store
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            run.log_param("lr", &format!("{}", 0.001 * (r % 7 + 1) as f64))
                .unwrap();
            run.set_tag("model", "cnn").unwrap();
            for step in 0..STEPS {
                let points: Vec<(&str, f64)> = (keys.iter())
                    .enumerate()
                    .map(|(k, key)| (key.as_str(), (step as f64 + k as f64) * 0.25))
                    .collect();
                run.log_metrics(step, &points).unwrap();
            }
            ids.push(run.id());
            run.finish().unwrap();
        }
    }
    store.compact().unwrap();
    store.close().unwrap();
    ids
}

/// Runs `step`, then prints its time and the live heap growth since `base`.
fn measure<T>(what: &str, base: usize, step: impl FnOnce() -> T) -> (T, usize) {
    let start = Instant::now();
    let out = step();
    let elapsed = start.elapsed();
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    println!(
        "catalog_heap: {what:<40} {:>9.1} ms, heap {:>8.1} MiB",
        elapsed.as_secs_f64() * 1e3,
        live as f64 / (1024.0 * 1024.0)
    );
    (out, live)
}

fn main() {
    let runs: usize = std::env::var("RUNLOG_CATALOG_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let ids = build(dir.path(), runs);
    let series = runs * KEYS;
    let base = LIVE.load(Ordering::Relaxed);
    let options = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    let (store, opened) = measure("open (read-only)", base, || {
        Store::open_with(dir.path(), options).unwrap()
    });
    measure("list experiments with run counts", base, || {
        for experiment in store.experiments(ViewType::All).unwrap() {
            store.run_infos(experiment.id, ViewType::All).unwrap();
        }
    });
    measure("one run's view", base, || store.run(ids[runs / 2]).unwrap());
    measure("one series' history", base, || {
        store.history(ids[runs / 3], "m3", ..).unwrap()
    });
    let (_, all) = measure("every run's view", base, || {
        for id in &ids {
            store.run(*id).unwrap();
        }
    });
    println!(
        "catalog_heap: {runs} runs, {series} series: after open {:.0} bytes/run, {:.0} \
         bytes/series; with every run's summaries taken {:.0} bytes/run, {:.0} bytes/series",
        opened as f64 / runs as f64,
        opened as f64 / series as f64,
        all as f64 / runs as f64,
        all as f64 / series as f64
    );
}
