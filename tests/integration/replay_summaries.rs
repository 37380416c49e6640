//! Randomized equivalence of the log's replay (`wal::replay`, which sums points into summaries
//! without materialising them) with the points themselves: several handles log to shared runs
//! through streams (one call per point, by run handle and by id) and columns records (batches,
//! lz4-compressed when large), with rotations, flushes, crashes and a follower polling in
//! between. A fresh open, and the follower, must hold for every series the summary that
//! `MetricSummary::update` gives over its points in log order, as the full reader reads them
//! back: bit for bit, the sum included, for a series one writer logged; the sum to rounding
//! otherwise, and in the follower, whose polls sum their points apart (`summary.rs`).
//!
//! Prints its seed; `RUNLOG_SEED=<seed>` replays one case, `RUNLOG_REPLAY_CASES=<n>` runs more.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use runlog::{
    Durability, ExperimentId, MetricPoint, MetricSummary, Run, RunId, RunOptions, Store,
    StoreOptions, ViewType, WriterId,
};

use crate::util::{Rng, read};

const KEYS: [&str; 5] = ["loss", "acc", "lr", "val/loss", "grad_norm"];
const HANDLES: usize = 3;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 16 * 1024,
        refresh_interval: None,
        ..StoreOptions::default()
    }
}

/// Every series' summary over its points in log order, and the writers that logged it.
type Expected = BTreeMap<(RunId, String), (MetricSummary, BTreeSet<WriterId>)>;

fn expected(root: &Path) -> Expected {
    let mut expected = Expected::new();
    for (writer, point) in read(&root.join("wal")).unwrap().points {
        let (summary, writers) = expected
            .entry((point.run, point.key))
            .or_insert((MetricSummary::EMPTY, BTreeSet::new()));
        summary.update(
            point.step,
            point.timestamp_ms,
            f64::from_bits(point.value_bits),
        );
        writers.insert(writer);
    }
    expected
}

/// The summaries `store` holds, per series.
fn held(store: &Store, experiment: ExperimentId) -> BTreeMap<(RunId, String), MetricSummary> {
    let mut held = BTreeMap::new();
    for view in store.runs(experiment, ViewType::All).unwrap() {
        for (key, summary) in view.metrics {
            held.insert((view.info.id, key), summary);
        }
    }
    held
}

/// Whether `got` is `want`: every field bit for bit, the sum too if `exact_sum`.
fn check(
    got: &BTreeMap<(RunId, String), MetricSummary>,
    want: &Expected,
    exact_sum: &dyn Fn(&BTreeSet<WriterId>) -> bool,
    context: &str,
) {
    let got_series: Vec<_> = got.keys().collect();
    let want_series: Vec<_> = want.keys().collect();
    assert_eq!(got_series, want_series, "{context}: series");
    for (series, (want, writers)) in want {
        let got = &got[series];
        let fields = |s: &MetricSummary| {
            (
                s.count,
                s.first_step,
                s.last_step,
                s.last_value.to_bits(),
                s.last_timestamp_ms,
                (s.min_value.to_bits(), s.min_step),
                (s.max_value.to_bits(), s.max_step),
                s.finite_count,
            )
        };
        assert_eq!(fields(got), fields(want), "{context}: {series:?}");
        if exact_sum(writers) {
            assert_eq!(
                got.sum.to_bits(),
                want.sum.to_bits(),
                "{context}: {series:?} sum"
            );
        } else {
            let tolerance = 1e-9 * want.sum.abs().max(1.0);
            let close = got.sum == want.sum
                || (got.sum.is_nan() && want.sum.is_nan())
                || (got.sum - want.sum).abs() <= tolerance;
            assert!(
                close,
                "{context}: {series:?} sum {} != {}",
                got.sum, want.sum
            );
        }
    }
}

/// A value of the kinds that make summaries differ: NaN (with a payload too), infinities,
/// both zeros, ties, and values that f32 cannot hold (stored as f64).
fn value(rng: &mut Rng) -> f64 {
    match rng.below(14) {
        0 => f64::NAN,
        1 => f64::from_bits(0x7ff8_0000_0000_0001),
        2 => f64::INFINITY,
        3 => f64::NEG_INFINITY,
        4 => -0.0,
        5 => 0.0,
        6 | 7 => rng.below(100) as f64 * 0.1,
        _ => f64::from(rng.below(20) as f32 / 4.0),
    }
}

/// The handles of one case: a few writers and their run handles, and a follower that only
/// reads.
struct Case {
    root: tempfile::TempDir,
    experiment: ExperimentId,
    writers: Vec<Store>,
    runs: BTreeMap<(usize, RunId), Run>,
    ids: Vec<RunId>,
    follower: Store,
    clock: i64,
}

impl Case {
    fn new() -> Case {
        let root = tempfile::tempdir().unwrap();
        let writers: Vec<Store> = (0..HANDLES)
            .map(|_| Store::open_with(root.path(), options()).unwrap())
            .collect();
        let experiment = writers[0].get_or_create_experiment("replay").unwrap().id;
        let follower = Store::open_with(root.path(), options()).unwrap();
        Case {
            root,
            experiment,
            writers,
            runs: BTreeMap::new(),
            ids: Vec::new(),
            follower,
            clock: 1_700_000_000_000,
        }
    }

    /// `handle`'s run handle for `run`, resumed there if it has none.
    fn run(&mut self, handle: usize, run: RunId) -> &Run {
        let store = &self.writers[handle];
        self.runs.entry((handle, run)).or_insert_with(|| {
            store.refresh().unwrap();
            store.resume_run(run).unwrap()
        })
    }

    /// Replaces `handle` by a new one on the same store, after a crash or a clean close.
    fn reopen(&mut self, handle: usize, crash: bool) {
        let owned: Vec<(usize, RunId)> = self
            .runs
            .keys()
            .filter(|(h, _)| *h == handle)
            .copied()
            .collect();
        for key in owned {
            if let Some(run) = self.runs.remove(&key) {
                run.detach();
            }
        }
        if crash {
            self.writers[handle].abandon();
        } else {
            self.writers[handle].close().unwrap();
        }
        self.writers[handle] = Store::open_with(self.root.path(), options()).unwrap();
    }

    fn step(&mut self, rng: &mut Rng) {
        let handle = rng.below(HANDLES as u64) as usize;
        self.clock += rng.below(3) as i64;
        let Some(&run) = self.ids.get(rng.below(self.ids.len() as u64) as usize) else {
            return self.start_run(handle);
        };
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let step = rng.below(30) as i64 - 5;
        match rng.below(100) {
            0..=49 => {
                let (value, clock) = (value(rng), self.clock);
                self.run(handle, run)
                    .log_metric_at(key, value, step, clock)
                    .unwrap();
            }
            50..=59 => {
                let count = 1 + rng.below(400) as usize;
                let steps: Vec<i64> = (0..count).map(|i| step + i as i64 / 2).collect();
                let timestamps: Vec<i64> = (0..count).map(|i| self.clock + i as i64 / 3).collect();
                let values: Vec<f64> = (0..count).map(|_| value(rng)).collect();
                self.run(handle, run)
                    .log_batch(key, &steps, Some(&timestamps), &values)
                    .unwrap();
            }
            60..=74 => {
                let points: Vec<MetricPoint<'_>> = (0..1 + rng.below(4))
                    .map(|i| MetricPoint {
                        key: KEYS[(i as i64 + step).rem_euclid(KEYS.len() as i64) as usize],
                        value: value(rng),
                        step,
                        timestamp_ms: self.clock,
                    })
                    .collect();
                let store = &self.writers[handle];
                store.refresh().unwrap();
                store.log_batch(run, &points, &[], &[]).unwrap();
            }
            75..=79 => self.writers[handle].flush().unwrap(),
            80..=83 => self.reopen(handle, rng.below(2) == 0),
            84..=89 => self.start_run(handle),
            _ => self.follower.refresh().unwrap(),
        }
    }

    fn start_run(&mut self, handle: usize) {
        let run = self.writers[handle]
            .start_run(self.experiment, RunOptions::default())
            .unwrap();
        self.ids.push(run.id());
        self.runs.insert((handle, run.id()), run);
    }
}

fn run_case(seed: u64, operations: usize) {
    let mut rng = Rng::new(seed);
    let mut case = Case::new();
    for index in 0..operations {
        case.step(&mut rng);
        if index % 97 == 96 {
            case.follower.refresh().unwrap();
            let want = expected(case.root.path());
            let context = format!("seed {seed}, follower after op {index}");
            check(
                &held(&case.follower, case.experiment),
                &want,
                &|_| false,
                &context,
            );
        }
    }
    for (_, run) in std::mem::take(&mut case.runs) {
        run.detach();
    }
    for writer in &case.writers {
        writer.close().unwrap();
    }
    let want = expected(case.root.path());
    let fresh = Store::open_with(case.root.path(), options()).unwrap();
    let single = |writers: &BTreeSet<WriterId>| writers.len() == 1;
    let context = format!("seed {seed}, fresh open");
    check(&held(&fresh, case.experiment), &want, &single, &context);
    case.follower.refresh().unwrap();
    let context = format!("seed {seed}, follower at the end");
    check(
        &held(&case.follower, case.experiment),
        &want,
        &|_| false,
        &context,
    );
}

#[test]
fn an_open_summarises_each_series_as_its_points_one_by_one_do() {
    let cases: u64 = std::env::var("RUNLOG_REPLAY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut seeds = Rng::from_env("an_open_summarises_each_series_as_its_points_one_by_one_do");
    let replay = std::env::var("RUNLOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    for case in 0..cases {
        let seed = replay.unwrap_or_else(|| seeds.next_u64());
        eprintln!("case {case}: seed {seed} (replay with RUNLOG_SEED={seed})");
        run_case(seed, 600);
        if replay.is_some() {
            break;
        }
    }
}
