//! Deterministic simulation of the whole engine under crashes and I/O faults (issue 6).
//!
//! Random operations (start, log, tag, param, finish, delete, flush, compact, export, reopen)
//! run against a real store and an in-memory model. The store's storage is a
//! [`CrashStorage`] over a [`FaultStorage`]: faults (EIO, ENOSPC) are injected into chosen
//! operations, and power losses are simulated at chosen operations, keeping only what was
//! synced or a torn subset of the rest. After every crash or restart the store that comes back
//! is opened and checked against the model:
//! - everything acknowledged (returned `Ok` at `Sync`, or covered by a `flush()` that returned
//!   `Ok`) is present exactly once;
//! - each series is a prefix of what was written to it, so no point appears that was never
//!   written, none twice, and none after a gap;
//! - every store opens, and `verify` finds no problem in it.
//!
//! Each seed prints itself on failure. `RUNLOG_SIM_SEEDS=N` runs N seeds from
//! `RUNLOG_SIM_FIRST` (default 0); `RUNLOG_SEED=S` replays one; `RUNLOG_SIM_DEBUG=1` traces it.
//! `RUNLOG_SIM_STATS=1` prints totals (for docs/RELIABILITY.md).
//!
//! A seed fixes the operations, their arguments, and where faults and crashes strike. It does
//! not fix what the engine draws from the clock and the OS (writer ids, timestamps), so file
//! names and compressed sizes, and with them which torn pages matter, differ between runs of
//! one seed: a failure may need many replays (the bugs it found reproduced within 1 to 8,
//! except seed 715, which did not in 68; see docs/RELIABILITY.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use runlog::io::{CrashMode, CrashStorage, FaultStorage, Operation, Storage};
use runlog::wal::RunStatus;
use runlog::{Durability, ExperimentId, Run, RunId, RunOptions, Store, StoreOptions};

use crate::util::Rng;

const KEYS: [&str; 3] = ["loss", "acc", "lr"];
const OPERATIONS_PER_SEED: usize = 160;

/// Something written, and whether it is acknowledged yet.
#[derive(Clone, Debug)]
struct Written<T> {
    value: T,
    acked: bool,
    /// Its call returned an error, so it may be missing even where later writes are present.
    failed: bool,
}

#[derive(Debug, Default)]
struct ModelRun {
    experiment: Option<ExperimentId>,
    /// Whether its creation is acknowledged.
    acked: bool,
    points: BTreeMap<&'static str, Vec<Written<(i64, u64)>>>,
    params: BTreeMap<String, Written<String>>,
    tags: BTreeMap<String, Vec<Written<String>>>,
    finished: Option<Written<()>>,
    deleted: Option<Written<()>>,
    /// Params logged so far, lost ones included: a param key is never reused.
    params_logged: usize,
}

/// Totals over every seed, for the docs.
#[derive(Debug, Default)]
struct Stats {
    seeds: u64,
    operations: u64,
    crashes: u64,
    torn_crashes: u64,
    restarts: u64,
    faults_injected: u64,
    compactions: u64,
    exports: u64,
    points_checked: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    durability: Durability,
    base: tempfile::TempDir,
    root: PathBuf,
    generation: u32,
    faults: Arc<FaultStorage>,
    crash: Arc<CrashStorage>,
    store: Option<Store>,
    open: BTreeMap<RunId, Run>,
    model: BTreeMap<RunId, ModelRun>,
    experiments: Vec<ExperimentId>,
    /// An operation failed since the last restart (an injected fault, or the crash).
    failed: bool,
    /// A `start_run` failed: a run the model does not know may exist.
    unknown_runs_possible: bool,
    next_step: BTreeMap<(RunId, &'static str), i64>,
    /// The mode of the planned power loss, for the totals.
    planned: Option<CrashMode>,
    stats: Stats,
}

fn options(storage: Arc<dyn Storage>, durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        // Small segments: rotation, sealing and compaction of many segments in a short run.
        segment_bytes: 8 * 1024,
        lanes: 2,
        storage,
        ..StoreOptions::default()
    }
}

impl Sim {
    /// A simulation of `seed` that adds to the totals in `stats`.
    fn new(seed: u64, stats: Stats) -> Sim {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("gen-0");
        std::fs::create_dir(&root).unwrap();
        let durability = if seed.is_multiple_of(2) {
            Durability::Sync
        } else {
            Durability::Buffered
        };
        let faults = Arc::new(FaultStorage::new());
        let crash = Arc::new(CrashStorage::new(&root, faults.clone()).unwrap());
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            durability,
            base,
            root,
            generation: 0,
            faults,
            crash,
            store: None,
            open: BTreeMap::new(),
            model: BTreeMap::new(),
            experiments: Vec::new(),
            failed: false,
            unknown_runs_possible: false,
            next_step: BTreeMap::new(),
            planned: None,
            stats,
        };
        sim.open_store("first open");
        for name in ["mnist", "cifar"] {
            let experiment = sim.store().get_or_create_experiment(name).unwrap();
            sim.experiments.push(experiment.id);
        }
        sim.store().flush().unwrap();
        sim
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn context(&self, what: &str) -> String {
        format!(
            "seed {} ({:?}), generation {}, {what} (replay with RUNLOG_SEED={})",
            self.seed, self.durability, self.generation, self.seed
        )
    }

    fn open_store(&mut self, why: &str) {
        let storage: Arc<dyn Storage> = self.crash.clone();
        let store = Store::open_with(&self.root, options(storage, self.durability))
            .unwrap_or_else(|e| panic!("{}: the store does not open: {e}", self.context(why)));
        self.store = Some(store);
    }

    /// Marks everything written so far whose call returned `Ok` as acknowledged (a `flush`
    /// returned `Ok`: after a failure the handle is poisoned and flushes fail, unless the
    /// failure lost nothing).
    fn ack_all(&mut self) {
        fn ack<T>(written: &mut Written<T>) {
            written.acked |= !written.failed;
        }
        for run in self.model.values_mut() {
            run.acked = true;
            run.points.values_mut().flatten().for_each(ack);
            run.params.values_mut().for_each(ack);
            run.tags.values_mut().flatten().for_each(ack);
            run.finished.iter_mut().for_each(ack);
            run.deleted.iter_mut().for_each(ack);
        }
    }

    /// Whether an `Ok` acknowledges the write by itself.
    fn sync(&self) -> bool {
        self.durability == Durability::Sync
    }

    /// Records an error: only an injected fault or the crash may cause one.
    fn failure(&mut self, what: &str, error: runlog::Error) {
        if debug() {
            eprintln!("  {what} failed: {error}");
        }
        assert!(
            self.faults.injected() > 0 || self.crash.crashed(),
            "{}: {what} failed with nothing injected: {error}",
            self.context(what)
        );
        self.failed = true;
    }

    fn pick_open_run(&mut self) -> Option<RunId> {
        let ids: Vec<RunId> = self.open.keys().copied().collect();
        ids.get(self.rng.below(ids.len() as u64) as usize).copied()
    }

    fn step(&mut self, index: usize) {
        self.stats.operations += 1;
        let roll = self.rng.below(100);
        if debug() {
            eprintln!(
                "op {index}: roll {roll}, generation {}, failed {}, storage operations {}",
                self.generation,
                self.failed,
                self.crash.operations()
            );
        }
        match roll {
            0..=7 => self.start_run(),
            8..=54 => self.log_metric(),
            55..=59 => self.log_batch(),
            60..=64 => self.set_tag(),
            65..=67 => self.log_param(),
            68..=70 => self.finish(),
            71 => self.delete(),
            72..=78 => self.flush(),
            79..=82 => self.compact(),
            83 => self.export(index),
            84..=86 => self.inject_fault(),
            87..=88 => self.restart(),
            89..=92 => self.plan_crash(),
            _ => self.log_metric(),
        }
        if self.crash.crashed() {
            self.recover_from_crash();
        } else if self.failed && self.rng.below(4) == 0 {
            // A failed writer is poisoned; a user restarts the process.
            self.restart();
        }
    }

    fn start_run(&mut self) {
        let experiment = self.experiments[self.rng.below(2) as usize];
        match self.store().start_run(experiment, RunOptions::default()) {
            Ok(run) => {
                let id = run.id();
                let sync = self.sync();
                self.model.insert(
                    id,
                    ModelRun {
                        experiment: Some(experiment),
                        acked: sync,
                        ..ModelRun::default()
                    },
                );
                self.open.insert(id, run);
            }
            Err(error) => {
                self.unknown_runs_possible = true;
                self.failure("start_run", error);
            }
        }
    }

    fn next_step(&mut self, run: RunId, key: &'static str) -> i64 {
        let step = self.next_step.entry((run, key)).or_insert(0);
        *step += 1 + self.rng.below(3) as i64;
        *step
    }

    fn log_metric(&mut self) {
        let Some(id) = self.pick_open_run() else {
            return self.start_run();
        };
        let key = KEYS[self.rng.below(3) as usize];
        let step = self.next_step(id, key);
        let value = self.rng.loss(step);
        let result = self.open[&id].log_metric(key, value, step);
        self.record_points(id, key, &[(step, value)], result, "log_metric");
    }

    fn log_batch(&mut self) {
        let Some(id) = self.pick_open_run() else {
            return;
        };
        let key = KEYS[self.rng.below(3) as usize];
        let count = 1 + self.rng.below(300) as usize;
        let points: Vec<(i64, f64)> = (0..count)
            .map(|_| {
                let step = self.next_step(id, key);
                (step, self.rng.loss(step))
            })
            .collect();
        let steps: Vec<i64> = points.iter().map(|p| p.0).collect();
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        let result = self.open[&id].log_batch(key, &steps, None, &values);
        self.record_points(id, key, &points, result, "log_batch");
    }

    fn record_points(
        &mut self,
        id: RunId,
        key: &'static str,
        points: &[(i64, f64)],
        result: runlog::Result<()>,
        what: &str,
    ) {
        let acked = result.is_ok() && self.sync();
        // Written even on error: the point may or may not have reached the log.
        let series = self
            .model
            .get_mut(&id)
            .unwrap()
            .points
            .entry(key)
            .or_default();
        series.extend(points.iter().map(|(step, value)| Written {
            value: (*step, value.to_bits()),
            acked,
            failed: result.is_err(),
        }));
        if let Err(error) = result {
            self.failure(what, error);
        }
    }

    fn set_tag(&mut self) {
        let Some(id) = self.pick_open_run() else {
            return;
        };
        let key = format!("t{}", self.rng.below(3));
        let value = format!("v{}", self.rng.below(1000));
        let result = self.open[&id].set_tag(&key, &value);
        if debug() {
            eprintln!("  set_tag {id} {key}={value}: {result:?}");
        }
        let acked = result.is_ok() && self.sync();
        let failed = result.is_err();
        let run = self.model.get_mut(&id).unwrap();
        run.tags.entry(key).or_default().push(Written {
            value,
            acked,
            failed,
        });
        if let Err(error) = result {
            self.failure("set_tag", error);
        }
    }

    fn log_param(&mut self) {
        let Some(id) = self.pick_open_run() else {
            return;
        };
        // Params never change, so each gets a new key.
        let key = format!("p{}", self.model[&id].params_logged);
        let value = format!("{}", self.rng.below(1000));
        let result = self.open[&id].log_param(&key, &value);
        let acked = result.is_ok() && self.sync();
        let run = self.model.get_mut(&id).unwrap();
        run.params_logged += 1;
        run.params.insert(
            key,
            Written {
                value,
                acked,
                failed: result.is_err(),
            },
        );
        if let Err(error) = result {
            self.failure("log_param", error);
        }
    }

    fn finish(&mut self) {
        let Some(id) = self.pick_open_run() else {
            return;
        };
        let run = self.open.remove(&id).unwrap();
        let result = run.finish();
        if debug() {
            eprintln!("  finish {id}: {result:?}");
        }
        let acked = result.is_ok() && self.sync();
        self.model.get_mut(&id).unwrap().finished = Some(Written {
            value: (),
            acked,
            failed: result.is_err(),
        });
        if let Err(error) = result {
            self.failure("finish", error);
        }
    }

    fn delete(&mut self) {
        let finished: Vec<RunId> = self
            .model
            .iter()
            .filter(|(id, run)| !self.open.contains_key(id) && run.deleted.is_none())
            .map(|(id, _)| *id)
            .collect();
        let Some(id) = finished
            .get(self.rng.below(finished.len() as u64) as usize)
            .copied()
        else {
            return;
        };
        let result = self.store().delete_run(id);
        let acked = result.is_ok() && self.sync();
        self.model.get_mut(&id).unwrap().deleted = Some(Written {
            value: (),
            acked,
            failed: result.is_err(),
        });
        if let Err(error) = result {
            self.failure("delete_run", error);
        }
    }

    fn flush(&mut self) {
        match self.store().flush() {
            Ok(()) => self.ack_all(),
            Err(error) => self.failure("flush", error),
        }
    }

    fn compact(&mut self) {
        self.stats.compactions += 1;
        let result = self.store().compact();
        if debug() {
            eprintln!("  compact: {result:?}");
        }
        if let Err(error) = result {
            self.failure("compact", error);
        }
    }

    fn export(&mut self, index: usize) {
        let dir = self.base.path().join(format!("export-{index}"));
        match self.store().export(&dir) {
            Ok(report) => {
                self.stats.exports += 1;
                // The export is of what this handle sees, which is everything written through
                // it unless a failure lost some: then only an upper bound holds.
                let written: u64 = self
                    .model
                    .values()
                    .flat_map(|run| run.points.values())
                    .map(|series| series.len() as u64)
                    .sum();
                let exported = report.points + report.orphan_points;
                if self.failed {
                    assert!(exported <= written, "{}", self.context("export"));
                } else {
                    assert_eq!(exported, written, "{}", self.context("export"));
                }
            }
            Err(error) => self.failure("export", error),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn inject_fault(&mut self) {
        let operation = [
            Operation::SyncMap,
            Operation::SyncFile,
            Operation::SyncDir,
            Operation::Create,
            Operation::Link,
            Operation::SetLen,
            Operation::Remove,
            Operation::WriteAt,
        ][self.rng.below(8) as usize];
        let errno = if self.rng.below(2) == 0 {
            libc::EIO
        } else {
            libc::ENOSPC
        };
        self.faults.fail_once(operation, self.rng.below(4), errno);
        self.stats.faults_injected += 1;
    }

    fn plan_crash(&mut self) {
        let at = self.crash.operations() + self.rng.below(12);
        let mode = if self.rng.below(2) == 0 {
            CrashMode::Synced
        } else {
            CrashMode::Torn {
                seed: self.rng.next_u64(),
            }
        };
        self.planned = Some(mode);
        let into = self
            .base
            .path()
            .join(format!("gen-{}", self.generation + 1));
        if self.rng.below(3) == 0 {
            self.crash.crash_now(&into, mode).unwrap();
        } else {
            self.crash.crash_at(at, into, mode);
        }
    }

    /// Lets go of every handle (the runs stay RUNNING in the log, as after a kill).
    fn drop_handles(&mut self) {
        for (_, run) in std::mem::take(&mut self.open) {
            run.detach();
        }
        if let Some(store) = self.store.take() {
            store.abandon();
        }
    }

    /// Power loss: the store comes back from the crash image.
    fn recover_from_crash(&mut self) {
        self.stats.crashes += 1;
        if matches!(self.planned.take(), Some(CrashMode::Torn { .. })) {
            self.stats.torn_crashes += 1;
        }
        self.drop_handles();
        self.generation += 1;
        self.root = self.base.path().join(format!("gen-{}", self.generation));
        self.fresh_storage();
        self.open_store("reopen after a crash");
        self.check_and_adopt("after a crash", false);
    }

    /// The process ends and starts again on the same files.
    fn restart(&mut self) {
        let clean = !self.failed;
        if clean {
            // A clean end: flush, then let go. Everything written must come back.
            if let Err(error) = self.store().flush() {
                self.failure("flush before restart", error);
            }
            if self.crash.crashed() {
                // A planned power loss struck during that flush.
                return self.recover_from_crash();
            }
        }
        self.stats.restarts += 1;
        let clean = clean && !self.failed;
        self.drop_handles();
        self.fresh_storage();
        self.open_store("reopen after a restart");
        self.check_and_adopt("after a restart", clean);
    }

    fn fresh_storage(&mut self) {
        // Faults that struck (a planned one may never be reached).
        self.stats.faults_injected += self.faults.injected();
        self.faults = Arc::new(FaultStorage::new());
        self.crash = Arc::new(CrashStorage::new(&self.root, self.faults.clone()).unwrap());
        self.failed = false;
    }

    /// Checks the reopened store against the model, then makes the model what the store now
    /// holds (all of it durable) and resumes the open runs.
    fn check_and_adopt(&mut self, when: &str, everything: bool) {
        let context = self.context(when);
        if debug() {
            eprintln!("{context}: files of {}:", self.root.display());
            for entry in walk(&self.root) {
                eprintln!("  {} ({} bytes)", entry.0.display(), entry.1);
            }
        }
        let report = runlog::verify::verify(&self.root)
            .unwrap_or_else(|e| panic!("{context}: verify failed to run: {e}"));
        assert!(
            report.problems.is_empty(),
            "{context}: verify found problems: {:?}",
            report.problems
        );
        let store = self.store.as_ref().unwrap();
        let mut known = 0;
        let mut adopted = BTreeMap::new();
        for (id, mut run) in std::mem::take(&mut self.model) {
            let view = match store.run(id) {
                Ok(view) => view,
                Err(runlog::Error::NotFound(_)) => {
                    assert!(
                        !run.acked && !everything,
                        "{context}: run {id}, acknowledged, is gone"
                    );
                    continue;
                }
                Err(error) => panic!("{context}: run {id}: {error}"),
            };
            known += 1;
            assert_eq!(
                Some(view.info.experiment),
                run.experiment,
                "{context}: run {id}"
            );
            for (key, series) in &mut run.points {
                let history = store
                    .history(id, key, ..)
                    .unwrap_or_else(|e| panic!("{context}: history of {id}/{key}: {e}"));
                let present: Vec<(i64, u64)> = (0..history.len())
                    .filter_map(|i| history.point(i))
                    .map(|p| (p.step, p.value.to_bits()))
                    .collect();
                self.stats.points_checked += present.len() as u64;
                // Match what is present against what was written, in order. A point whose
                // call failed may be missing from the middle (the error said it was not
                // written); any other point missing ends the prefix.
                let mut matched = 0;
                let mut end = None;
                for (index, written) in series.iter().enumerate() {
                    if present.get(matched) == Some(&written.value) {
                        matched += 1;
                    } else if !written.failed {
                        end = Some(index);
                        break;
                    }
                }
                assert_eq!(
                    matched,
                    present.len(),
                    "{context}: run {id} key {key}: the {} points present are not a prefix of \
                     the {} written; point {matched} of the store was never written there",
                    present.len(),
                    series.len(),
                );
                if let Some(end) = end {
                    assert!(
                        !everything && series[end..].iter().all(|w| !w.acked),
                        "{context}: run {id} key {key}: written point {end} is gone, and it, or \
                         one after it, was acknowledged ({} of {} present)",
                        present.len(),
                        series.len()
                    );
                }
                series.retain(|w| present.binary_search_by_key(&w.value.0, |p| p.0).is_ok());
                series.iter_mut().for_each(|w| {
                    w.acked = true;
                    w.failed = false;
                });
            }
            for (key, param) in &run.params {
                match view.params.get(key) {
                    Some(value) => assert_eq!(value, &param.value, "{context}: {id} param {key}"),
                    None => assert!(
                        !param.acked && !everything,
                        "{context}: run {id}: acknowledged param {key} is gone"
                    ),
                }
            }
            run.params.retain(|key, _| view.params.contains_key(key));
            for (key, values) in &mut run.tags {
                let present = view.tags.get(key);
                // Tags are last-writer-wins: what is present is one of the values written,
                // at or after the last acknowledged one.
                let from = values.iter().rposition(|w| w.acked);
                match present {
                    Some(value) => {
                        let at = values[from.unwrap_or(0)..]
                            .iter()
                            .rposition(|w| &w.value == value);
                        assert!(
                            at.is_some()
                                && (!everything
                                    || at == Some(values.len() - 1 - from.unwrap_or(0))),
                            "{context}: run {id} tag {key} = {value:?}, not one of {:?} from {from:?}",
                            values.iter().map(|w| &w.value).collect::<Vec<_>>()
                        );
                        let value = value.clone();
                        *values = vec![Written {
                            value,
                            acked: true,
                            failed: false,
                        }];
                    }
                    None => {
                        assert!(
                            from.is_none() && !everything,
                            "{context}: run {id}: acknowledged tag {key} is gone (written {:?}, \
                             present {:?}, clean restart {everything})",
                            values,
                            view.tags
                        );
                        values.clear();
                    }
                }
            }
            run.tags.retain(|_, values| !values.is_empty());
            let finished = view.info.status == RunStatus::Finished;
            if let Some(written) = &run.finished {
                assert!(
                    finished || (!written.acked && !everything),
                    "{context}: run {id}: acknowledged finish is gone (status {:?})",
                    view.info.status
                );
            } else {
                assert_eq!(view.info.status, RunStatus::Running, "{context}: run {id}");
            }
            run.finished = finished.then_some(Written {
                value: (),
                acked: true,
                failed: false,
            });
            let deleted = view.info.lifecycle_stage == runlog::LifecycleStage::Deleted;
            if let Some(written) = &run.deleted {
                assert!(
                    deleted || (!written.acked && !everything),
                    "{context}: run {id}: acknowledged deletion is gone"
                );
            } else {
                assert!(!deleted, "{context}: run {id} deleted but never deleted");
            }
            run.deleted = deleted.then_some(Written {
                value: (),
                acked: true,
                failed: false,
            });
            run.acked = true;
            adopted.insert(id, run);
        }
        self.model = adopted;
        // No run the model does not know, unless a start_run failed.
        let mut all = 0;
        for experiment in &self.experiments {
            all += store
                .runs(*experiment, runlog::ViewType::All)
                .unwrap_or_else(|e| panic!("{context}: runs: {e}"))
                .len();
        }
        assert!(
            all == known || (self.unknown_runs_possible && all > known),
            "{context}: {all} runs in the store, {known} known"
        );
        if all > known {
            // Adopt the unknown ones as runs the model ignores from now on.
            self.unknown_runs_possible = true;
        }
        // Resume what is still running, so the workload goes on.
        let running: Vec<RunId> = self
            .model
            .iter()
            .filter(|(_, run)| run.finished.is_none() && run.deleted.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            let run = self
                .store()
                .resume_run(id)
                .unwrap_or_else(|e| panic!("{context}: resume {id}: {e}"));
            self.open.insert(id, run);
        }
        // Points next written continue after what survived.
        self.next_step.clear();
        for (id, run) in &self.model {
            for (key, series) in &run.points {
                if let Some(last) = series.last() {
                    self.next_step.insert((*id, *key), last.value.0);
                }
            }
        }
    }
}

fn run_seed(seed: u64, stats: Stats) -> Stats {
    let mut sim = Sim::new(seed, stats);
    for index in 0..OPERATIONS_PER_SEED {
        sim.step(index);
    }
    // A last power loss with nothing synced since the last check, then a clean restart.
    let into = sim.base.path().join(format!("gen-{}", sim.generation + 1));
    sim.crash.crash_now(&into, CrashMode::Synced).unwrap();
    sim.planned = Some(CrashMode::Synced);
    sim.recover_from_crash();
    sim.restart();
    sim.stats.seeds += 1;
    sim.stats
}

#[test]
fn random_operations_with_crashes_and_faults_keep_every_acknowledged_point() {
    let seeds: Vec<u64> = match std::env::var("RUNLOG_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => {
            let count: u64 = std::env::var("RUNLOG_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(24);
            let first: u64 = std::env::var("RUNLOG_SIM_FIRST")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (first..first + count).collect()
        }
    };
    let mut stats = Stats::default();
    for seed in seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            stats = run_seed(seed, std::mem::take(&mut stats))
        }));
        if let Err(panic) = result {
            eprintln!("simulation seed {seed} failed; replay with RUNLOG_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
    if std::env::var("RUNLOG_SIM_STATS").is_ok() {
        eprintln!("simulation totals: {stats:?}");
    }
}

/// `RUNLOG_SIM_DEBUG=1` traces each operation, failure and reopened store.
fn debug() -> bool {
    std::env::var_os("RUNLOG_SIM_DEBUG").is_some()
}

/// Every file under `dir` with its size, for `RUNLOG_SIM_DEBUG`.
fn walk(dir: &std::path::Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push((path.clone(), entry.metadata().map_or(0, |m| m.len())));
        }
    }
    files
}
