//! What a cold open costs on a compacted store of many small runs, and what the catalog holds
//! as reads take runs' summaries: live heap bytes per run and per series (a counting global
//! allocator), resident memory, and the time of each step.
//!
//! The store is built through the API (`--writers` threads, default 2, `Durability::Buffered`)
//! and compacted; then each measurement runs in a fresh process (this binary run again with
//! `--measure`), so that nothing the build allocated or cached is counted: one read-only
//! handle, then one writable handle (which adds one run to the store).
//!
//! Run: `cargo bench --bench catalog_heap` for the default shape, 20,000 runs in 20
//! experiments, 10 keys x 10 steps each (200,000 series, 2 M points), in a temporary folder.
//! Other shapes take arguments after `--`:
//!
//! ```text
//! cargo bench --bench catalog_heap -- --runs 100000 --keys 100 --steps 2 \
//!     --store /work/tmp/catalog-1e7 --runs-per-compaction 10000 --compacted-rounds 7
//! ```
//!
//! `--store DIR` builds the store in `DIR/store` unless `DIR/shape.txt` says a store of that
//! shape is already complete there, and keeps it (delete `DIR` when done); `--build-only`
//! stops after the build. The build is one round unless `--runs-per-compaction N` splits it
//! into rounds of N runs, each a fresh writable handle that logs, compacts and closes; only
//! the first `--compacted-rounds` rounds compact, the rest leave their points in the log.
//! `--runs` may also come from `RUNLOG_CATALOG_RUNS`.
//!
//! Memory is guarded, not only measured: taking every run's summaries stops once the live heap
//! passes `--heap-limit-mib` (default 6,144), and any process of the bench exits once its
//! resident set passes `--rss-limit-mib` (default 8,192), each saying so, so that a shape too
//! large for the machine reports how far it got instead of pushing it into the OOM killer.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runlog::query::SearchRuns;
use runlog::{Durability, ExperimentId, RunId, RunOptions, Store, StoreOptions, ViewType};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` has been since it was last reset (`reset_peak`).
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_alloc(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_alloc(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;

/// What the store holds: every run has `keys` series of `steps` points each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    runs: usize,
    experiments: usize,
    keys: usize,
    steps: i64,
}

impl Shape {
    fn series(&self) -> usize {
        self.runs * self.keys
    }

    fn points(&self) -> u64 {
        (self.series() as u64) * self.steps.unsigned_abs()
    }

    /// The line `shape.txt` holds once a store of this shape is complete.
    fn describe(&self) -> String {
        format!(
            "runs {} experiments {} keys {} steps {}",
            self.runs, self.experiments, self.keys, self.steps
        )
    }

    /// Runs of experiment `index`: the runs split as evenly as they go.
    fn runs_of(&self, index: usize) -> usize {
        self.runs / self.experiments + usize::from(index < self.runs % self.experiments)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handle {
    ReadOnly,
    Writable,
}

struct Args {
    shape: Shape,
    store: Option<PathBuf>,
    writers: usize,
    /// Runs per build round (0: one round).
    runs_per_round: usize,
    /// Rounds that end with a compaction (the rest leave their points in the log).
    compacted_rounds: usize,
    heap_limit_bytes: usize,
    rss_limit_bytes: usize,
    /// Build the store and stop: no measurement.
    build_only: bool,
    /// Set in the child processes only.
    measure: Option<Handle>,
}

fn parse_args() -> Args {
    let runs_default = std::env::var("RUNLOG_CATALOG_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let mut args = Args {
        shape: Shape {
            runs: runs_default,
            experiments: 20,
            keys: 10,
            steps: 10,
        },
        store: None,
        writers: 2,
        runs_per_round: 0,
        compacted_rounds: usize::MAX,
        heap_limit_bytes: 6_144 << 20,
        rss_limit_bytes: 8_192 << 20,
        build_only: false,
        measure: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .unwrap_or_else(|| fail(&format!("{word} needs a value")))
        };
        match word.as_str() {
            "--bench" => {}
            "--build-only" => args.build_only = true,
            "--runs" => args.shape.runs = number(&value()),
            "--experiments" => args.shape.experiments = number(&value()),
            "--keys" => args.shape.keys = number(&value()),
            "--steps" => args.shape.steps = number(&value()) as i64,
            "--writers" => args.writers = number(&value()),
            "--runs-per-compaction" => args.runs_per_round = number(&value()),
            "--compacted-rounds" => args.compacted_rounds = number(&value()),
            "--store" => args.store = Some(PathBuf::from(value())),
            "--heap-limit-mib" => args.heap_limit_bytes = number(&value()) << 20,
            "--rss-limit-mib" => args.rss_limit_bytes = number(&value()) << 20,
            "--measure" => {
                args.measure = Some(match value().as_str() {
                    "read-only" => Handle::ReadOnly,
                    "writable" => Handle::Writable,
                    other => fail(&format!("--measure read-only|writable, not {other}")),
                });
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if args.shape.runs == 0 || args.shape.experiments == 0 || args.shape.keys == 0 {
        fail("--runs, --experiments and --keys must be at least 1");
    }
    if args.shape.steps < 1 || args.writers == 0 {
        fail("--steps and --writers must be at least 1");
    }
    args
}

fn number(text: &str) -> usize {
    text.replace('_', "")
        .parse()
        .unwrap_or_else(|_| fail(&format!("not a count: {text}")))
}

fn fail(message: &str) -> ! {
    eprintln!("catalog_heap: {message}");
    std::process::exit(2)
}

/// `VmRSS` and `VmHWM` of this process, bytes (0 where `/proc` does not tell).
fn resident_bytes() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Ends the process once its resident set passes `limit_bytes`: a shape too large for the
/// machine stops with the figure instead of pushing the machine into swap or the OOM killer.
fn guard_resident(limit_bytes: usize) {
    std::thread::spawn(move || {
        loop {
            let (resident, _) = resident_bytes();
            if resident > limit_bytes {
                println!(
                    "catalog_heap: STOPPED: resident {:.0} MiB passed the limit of {:.0} MiB \
                     (live heap {:.0} MiB)",
                    resident as f64 / MIB,
                    limit_bytes as f64 / MIB,
                    LIVE.load(Ordering::Relaxed) as f64 / MIB
                );
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

/// Live heap and its peak since `reset_peak`, resident set and its peak, as text.
fn memory() -> String {
    let (resident, peak) = resident_bytes();
    format!(
        "live heap {:.0} MiB (peak {:.0} MiB), resident {:.0} MiB (peak {:.0} MiB)",
        LIVE.load(Ordering::Relaxed) as f64 / MIB,
        PEAK.load(Ordering::Relaxed) as f64 / MIB,
        resident as f64 / MIB,
        peak as f64 / MIB
    )
}

fn key_names(keys: usize) -> Vec<String> {
    (0..keys).map(|k| format!("m{k}")).collect()
}

/// Logs runs `runs` of experiment `index` (those it has of them): a param, a tag, and every
/// key at every step.
fn build_experiment(
    store: &Store,
    shape: Shape,
    index: usize,
    runs: std::ops::Range<usize>,
    keys: &[String],
) {
    let experiment = store
        .get_or_create_experiment(&format!("exp{index}"))
        .unwrap();
    let mut points: Vec<(&str, f64)> = Vec::with_capacity(keys.len());
    for r in runs.start..runs.end.min(shape.runs_of(index)) {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_param("lr", &format!("{}", 0.001 * (r % 7 + 1) as f64))
            .unwrap();
        run.set_tag("model", "cnn").unwrap();
        let offset = (r % 97) as f64 / 97.0;
        for step in 0..shape.steps {
            points.clear();
            points.extend(
                (keys.iter().enumerate())
                    .map(|(k, key)| (key.as_str(), (step as f64 + k as f64 + offset) * 0.25)),
            );
            run.log_metrics(step, &points).unwrap();
        }
        run.finish().unwrap();
    }
}

/// Builds the store in rounds of `--runs-per-compaction` runs (all of them in one round if 0):
/// each round is one writable handle that logs its runs with `--writers` threads, compacts
/// (the first `--compacted-rounds` rounds only) and closes.
fn build(root: &Path, shape: Shape, args: &Args) {
    let writers = args.writers;
    let per_experiment = match args.runs_per_round {
        0 => shape.runs.div_ceil(shape.experiments),
        n => n.div_ceil(shape.experiments),
    };
    let rounds = shape
        .runs
        .div_ceil(shape.experiments)
        .div_ceil(per_experiment);
    let keys = key_names(shape.keys);
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    for round in 0..rounds {
        let runs = round * per_experiment..(round + 1) * per_experiment;
        let store = Store::open_with(root, options.clone()).unwrap();
        let start = Instant::now();
        reset_peak();
        std::thread::scope(|scope| {
            for writer in 0..writers {
                let (store, keys, runs) = (store.clone(), &keys, runs.clone());
                scope.spawn(move || {
                    for index in (writer..shape.experiments).step_by(writers) {
                        build_experiment(&store, shape, index, runs.clone(), keys);
                    }
                });
            }
        });
        let logged = start.elapsed();
        println!(
            "catalog_heap: build round {}/{rounds}: runs {}..{} of each experiment logged by \
             {writers} threads in {:.1} s; {}",
            round + 1,
            runs.start,
            runs.end,
            logged.as_secs_f64(),
            memory()
        );
        if round >= args.compacted_rounds {
            store.close().unwrap();
            continue;
        }
        let start = Instant::now();
        reset_peak();
        let report = store.compact().unwrap();
        println!(
            "catalog_heap: build round {}/{rounds}: compacted {} points, {} files, {} bytes of \
             Parquet, a {} byte manifest, in {:.1} s; {}",
            round + 1,
            report.points,
            report.files_written,
            report.bytes,
            report.manifest_bytes,
            start.elapsed().as_secs_f64(),
            memory()
        );
        store.close().unwrap();
    }
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => bytes_under(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs `step`, then prints its time, the live heap growth since `base` and the resident set.
fn measure<T>(what: &str, base: usize, step: impl FnOnce() -> T) -> (T, usize) {
    let start = Instant::now();
    let out = step();
    let elapsed = start.elapsed();
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    let (resident, peak) = resident_bytes();
    println!(
        "catalog_heap: {what:<44} {:>9.1} ms, heap {:>8.1} MiB, rss {:>7.0} MiB (peak {:>6.0})",
        elapsed.as_secs_f64() * 1e3,
        live as f64 / MIB,
        resident as f64 / MIB,
        peak as f64 / MIB
    );
    (out, live)
}

fn per(bytes: usize, count: usize) -> f64 {
    bytes as f64 / count.max(1) as f64
}

/// The read-only handle's steps, from a cold open to every run's summaries taken.
fn measure_read_only(root: &Path, shape: Shape, heap_limit_bytes: usize) {
    let base = LIVE.load(Ordering::Relaxed);
    let options = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    let (store, opened) = measure("open (read-only)", base, || {
        Store::open_with(root, options).unwrap()
    });
    let (experiments, _) = measure("list experiments with run counts", base, || {
        let experiments = store.experiments(ViewType::All).unwrap();
        let counts = store.run_counts(ViewType::All).unwrap();
        assert!(counts.values().sum::<usize>() >= shape.runs);
        experiments
    });
    let middle = experiments[experiments.len() / 2].id;
    let (runs, _) = measure("one experiment's runs (attributes)", base, || {
        store.run_infos(middle, ViewType::All).unwrap()
    });
    let (view, _) = measure("one run's view", base, || {
        store.run(runs[runs.len() / 2].id).unwrap()
    });
    assert_eq!(view.metrics.len(), shape.keys);
    let key = format!("m{}", 3.min(shape.keys - 1));
    let (history, _) = measure("one series' history", base, || {
        store.history(runs[runs.len() / 3].id, &key, ..).unwrap()
    });
    assert_eq!(history.len() as i64, shape.steps);
    measure("search one experiment by a param", base, || {
        search(&store, middle, "params.lr = '0.002'", None)
    });
    measure("search one experiment by a metric, ordered", base, || {
        let filter = format!("metrics.{key} > 1.0");
        search(&store, middle, &filter, Some(format!("metrics.{key} DESC")))
    });
    let (taken, all) = measure("every run's view (every summary taken)", base, || {
        every_view(&store, &experiments, base + heap_limit_bytes)
    });
    println!(
        "catalog_heap: {} runs, {} series: after open {:.0} bytes/run, {:.1} bytes/series; \
         with the summaries of {taken} runs taken {:.0} bytes/run, {:.1} bytes/series",
        shape.runs,
        shape.series(),
        per(opened, shape.runs),
        per(opened, shape.series()),
        per(all, shape.runs),
        per(all, shape.series()),
    );
    if taken < shape.runs {
        println!(
            "catalog_heap: STOPPED taking summaries after {taken} runs: the live heap passed \
             --heap-limit-mib ({:.0} MiB)",
            heap_limit_bytes as f64 / MIB
        );
    }
    // A read-only handle has nothing to seal; dropping it would time the frees, not the reads.
    std::mem::forget(store);
}

fn search(store: &Store, experiment: ExperimentId, filter: &str, order: Option<String>) -> usize {
    let page = store
        .search_runs(&SearchRuns {
            experiments: vec![experiment],
            filter: filter.into(),
            order_by: order.into_iter().collect(),
            view: ViewType::All,
            ..SearchRuns::default()
        })
        .unwrap();
    assert!(!page.runs.is_empty());
    page.runs.len()
}

/// Takes every run's view, experiment by experiment, until the live heap passes `stop_at`;
/// returns how many runs were taken.
fn every_view(store: &Store, experiments: &[runlog::Experiment], stop_at: usize) -> usize {
    let mut taken = 0;
    for experiment in experiments {
        let runs: Vec<RunId> = (store.run_infos(experiment.id, ViewType::All).unwrap())
            .iter()
            .map(|run| run.id)
            .collect();
        for id in runs {
            store.run(id).unwrap();
            taken += 1;
            if taken % 1024 == 0 && LIVE.load(Ordering::Relaxed) > stop_at {
                return taken;
            }
        }
    }
    taken
}

/// The writable handle's steps: what a training rank pays to open the store and log.
fn measure_writable(root: &Path, shape: Shape) {
    let base = LIVE.load(Ordering::Relaxed);
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let (store, opened) = measure("open (writable)", base, || {
        Store::open_with(root, options).unwrap()
    });
    measure("start a run, log one point, finish it", base, || {
        let experiment = store.get_or_create_experiment("exp0").unwrap();
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_metric("m0", 1.0, 0).unwrap();
        run.finish().unwrap();
    });
    measure("close", base, || store.close().unwrap());
    println!(
        "catalog_heap: writable open: {:.0} bytes/run, {:.1} bytes/series (this added one run \
         to the store)",
        per(opened, shape.runs),
        per(opened, shape.series())
    );
}

/// Runs this binary again to measure `handle` in a fresh process.
fn measure_in_child(args: &Args, root_dir: &Path, handle: &str) {
    let shape = args.shape;
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--measure", handle, "--store"])
        .arg(root_dir)
        .args(["--runs", &shape.runs.to_string()])
        .args(["--experiments", &shape.experiments.to_string()])
        .args(["--keys", &shape.keys.to_string()])
        .args(["--steps", &shape.steps.to_string()])
        .args([
            "--heap-limit-mib",
            &(args.heap_limit_bytes >> 20).to_string(),
        ])
        .args(["--rss-limit-mib", &(args.rss_limit_bytes >> 20).to_string()])
        .status()
        .unwrap();
    if !status.success() {
        fail(&format!("the {handle} measurement failed: {status}"));
    }
}

fn main() {
    let args = parse_args();
    guard_resident(args.rss_limit_bytes);
    let shape = args.shape;
    if let Some(handle) = args.measure {
        let root = args
            .store
            .expect("--measure comes with --store")
            .join("store");
        match handle {
            Handle::ReadOnly => measure_read_only(&root, shape, args.heap_limit_bytes),
            Handle::Writable => measure_writable(&root, shape),
        }
        return;
    }
    let temporary;
    let dir = match &args.store {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::tempdir().unwrap();
            temporary.path().to_path_buf()
        }
    };
    let marker = dir.join("shape.txt");
    let root = dir.join("store");
    let built = std::fs::read_to_string(&marker).ok();
    if built.as_deref() == Some(shape.describe().as_str()) {
        println!(
            "catalog_heap: measuring the store already built in {}",
            dir.display()
        );
    } else {
        if built.is_some() || root.exists() {
            fail(&format!(
                "{} holds another or an unfinished store ({}): delete it first",
                dir.display(),
                built.as_deref().unwrap_or("no shape.txt")
            ));
        }
        println!(
            "catalog_heap: building {} ({} series, {} points) in {}",
            shape.describe(),
            shape.series(),
            shape.points(),
            root.display()
        );
        build(&root, shape, &args);
        std::fs::write(&marker, shape.describe()).unwrap();
    }
    println!(
        "catalog_heap: the store: {} bytes on disk",
        bytes_under(&root)
    );
    if args.build_only {
        return;
    }
    measure_in_child(&args, &dir, "read-only");
    measure_in_child(&args, &dir, "writable");
}
