//! The in-memory catalog: experiments, runs, params, tags, artifacts, logged models and datasets
//! (`models.rs`, `datasets.rs`) and a summary of every metric series, rebuilt from the log at
//! open and kept current while logging.
//!
//! Invariants:
//! - Applying events is order-independent across writers: every mutable field is a
//!   last-writer-wins register keyed by event time (`lww.rs`), params keep the earliest value,
//!   metric summaries are commutative (`summary.rs`), and an event for an entity not yet seen
//!   creates a placeholder that its creation event fills in. A store can therefore apply its own
//!   appends at once and other writers' whenever it tails them.
//! - The hot path (`log_metric`) touches only its run's `metrics` mutex: the maps of runs and
//!   experiments are locked only to find or create an entry. A metric handle's call touches no
//!   lock of the catalog's at all once its series has a slot (`lane_summaries.rs`).
//! - Readers share: the maps of runs and experiments, each run's metadata and search's column
//!   snapshot are `RwLock`s, so views and searches on many threads proceed in parallel. Only a
//!   run's `metrics` table is a mutex, held by a reader just long enough to copy summaries.
//! - Only created entities are visible: placeholders stay hidden until their creation event.
//! - A series' summary has three parts: what this handle logged by key (`own`, updated by
//!   `log_metric`), what it logged through metric handles (`by_handles`, one part per writer
//!   lane, read without a lock) and what other writers did (`foreign`, from the log and the
//!   compaction manifest). Only the foreign part is ever rebuilt (`follow.rs`), so a rebuild
//!   never races the hot path. Merged, they equal the summary of every point up to the
//!   rounding of `sum` (`MetricSummary::merge`).
//! - A compacted writer is adopted by reference (`Pending`): its summaries stay in the manifest
//!   until a read first needs one of its runs' metrics, which then takes that run's series
//!   (`Catalog::metrics`). So an open costs nothing per compacted series, and memory grows
//!   with the runs read, not with every series ever logged. Each run's table counts the
//!   adoptions it has taken, so each is merged exactly once; every read of `foreign` or of a
//!   table's keys goes through `Catalog::metrics`, writes of `own` need not. Lock order:
//!   `pending`, then `runs`, then a run's `metrics`.
//! - Every change to a run's metadata goes through `with_run`, which bumps `meta_epoch` after
//!   it, so search's column snapshot (`columns.rs`) knows when it is stale.
//! - A run's name is the latest of its creation event's name and its `mlflow.runName` tags:
//!   setting that tag renames a run, as in MLflow.
//! - A series keeps its slot in its run's `MetricTable` for good: slots are only appended.

mod columns;
mod datasets;
mod lane_summaries;
mod lww;
mod models;
mod registers;

pub use crate::summary::MetricSummary;
pub(crate) use columns::{Codes, MISSING, RunColumns, TextColumn};
pub use datasets::{CONTEXT_TAG, DatasetInput, DatasetSummary};
pub(crate) use lane_summaries::LaneSummaries;
pub use models::LoggedModel;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) use lww::Origin;
use lww::{Lww, Stamp};
use registers::Registers;

use crate::ids::{ExperimentId, KeyId, RunId, WriterId};
use crate::summary::{CompactedSummaries, ReplaySummaries};
use crate::util::{IdHash, KeyHash};
use crate::wal::{Event, InternedKey, MetricBatch, RunStatus};

/// The tag that holds a run's name: setting it renames the run, as in MLflow.
const RUN_NAME_TAG: &str = "mlflow.runName";
/// The tag that holds a run's user.
const USER_TAG: &str = "mlflow.user";

/// Whether an experiment or run is active or soft-deleted (MLflow's lifecycle stage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleStage {
    /// Visible and writable.
    Active,
    /// Soft-deleted: hidden from default listings, refuses logging, can be restored.
    Deleted,
}

impl LifecycleStage {
    /// MLflow's name: `"active"` or `"deleted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Active => "active",
            LifecycleStage::Deleted => "deleted",
        }
    }
}

/// A snapshot of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    /// Its id.
    pub id: ExperimentId,
    /// Its current name.
    pub name: String,
    /// Active or deleted.
    pub lifecycle_stage: LifecycleStage,
    /// When it was created, ms since the Unix epoch.
    pub creation_time_ms: i64,
    /// When it last changed, ms.
    pub last_update_time_ms: i64,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// A created experiment's fields, borrowed from the catalog for the length of a scan.
pub(crate) struct ExperimentRow<'a> {
    pub id: ExperimentId,
    pub name: &'a str,
    pub lifecycle_stage: LifecycleStage,
    pub creation_time_ms: i64,
    pub last_update_time_ms: i64,
    tags: &'a Registers<Lww<Option<String>>>,
}

impl ExperimentRow<'_> {
    /// The live value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key)?.value.as_deref()
    }
}

/// A stored artifact file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// Path relative to the run's artifact folder.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// When it was recorded, ms.
    pub time_ms: i64,
}

/// A run's attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    /// Its id.
    pub id: RunId,
    /// Its experiment.
    pub experiment: ExperimentId,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: RunStatus,
    /// Start time, ms.
    pub start_time_ms: i64,
    /// End time, ms, once it ended.
    pub end_time_ms: Option<i64>,
    /// Parent run, for nested runs.
    pub parent: Option<RunId>,
    /// Active or deleted.
    pub lifecycle_stage: LifecycleStage,
    /// The `mlflow.user` tag, if set.
    pub user: Option<String>,
}

/// A snapshot of a run: attributes, params, tags, metric summaries and artifacts.
#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    /// Attributes.
    pub info: RunInfo,
    /// Params.
    pub params: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Summary of each metric series (the latest value is `last_value`).
    pub metrics: BTreeMap<String, MetricSummary>,
    /// Artifacts by path.
    pub artifacts: BTreeMap<String, Artifact>,
}

#[derive(Debug, Default)]
struct ExperimentEntry {
    name: Option<Lww<String>>,
    lifecycle: Option<Lww<LifecycleStage>>,
    creation_time_ms: Option<i64>,
    last_update_time_ms: i64,
    tags: Registers<Lww<Option<String>>>,
}

/// Everything the catalog knows about one run.
#[derive(Debug)]
pub(crate) struct RunEntry {
    pub id: RunId,
    /// Mirrors the lifecycle stage for a lock-free check on the hot path.
    pub deleted: AtomicBool,
    /// Serializes this handle's param checks with their appends (params are immutable).
    pub param_writes: Mutex<()>,
    /// Read far more often than written (every view and column build): readers share it.
    pub meta: RwLock<RunMeta>,
    pub metrics: Mutex<MetricTable>,
}

#[derive(Debug, Default)]
pub(crate) struct RunMeta {
    created: Option<Created>,
    name: Option<Lww<String>>,
    status: Option<Lww<(RunStatus, Option<i64>)>>,
    lifecycle: Option<Lww<LifecycleStage>>,
    params: Registers<Lww<String>>,
    tags: Registers<Lww<Option<String>>>,
    /// By path; `None` once deleted (kept, so an older record applied later stays deleted).
    artifacts: Registers<Lww<Option<Artifact>>>,
}

#[derive(Clone, Copy, Debug)]
struct Created {
    experiment: ExperimentId,
    start_time_ms: i64,
    parent: Option<RunId>,
}

/// The metric series of one run: summaries in vectors, found by key through an index.
#[derive(Debug, Default)]
pub(crate) struct MetricTable {
    index: HashMap<Box<str>, usize, KeyHash>,
    keys: Vec<Box<str>>,
    /// What this handle logged by key (`Run::log_metric`), per slot.
    pub own: Vec<MetricSummary>,
    /// What this handle logged through metric handles, per slot, if any were used: kept
    /// apart so that a handle's call takes no lock of the run's (`lane_summaries.rs`).
    by_handles: Vec<Option<Arc<LaneSummaries>>>,
    /// What other writers logged, per slot, as far as this handle has read.
    pub foreign: Vec<MetricSummary>,
    /// The `Pending::epoch` that `taken` counts in.
    taken_epoch: u64,
    /// How many of `Pending::adopted` are merged into `foreign`.
    taken: usize,
    /// Each slot's key as this handle's writer that last logged it interned it, so that
    /// logging by key costs one lookup (this table's), not the writer's as well.
    pub interned: Vec<InternedKey>,
}

impl MetricTable {
    /// The slot of `key`, if it has one.
    #[inline]
    pub fn slot(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The slot of `key`, created empty if needed.
    pub fn slot_or_insert(&mut self, key: &str) -> usize {
        if let Some(slot) = self.slot(key) {
            return slot;
        }
        let slot = self.own.len();
        self.index.insert(key.into(), slot);
        self.keys.push(key.into());
        self.own.push(MetricSummary::EMPTY);
        self.by_handles.push(None);
        self.foreign.push(MetricSummary::EMPTY);
        self.interned.push(InternedKey::default());
        slot
    }

    /// The keys, by slot.
    pub fn keys(&self) -> &[Box<str>] {
        &self.keys
    }

    /// The summaries of the points of `key` logged through metric handles, created (with its
    /// slot) on first use: a log of `lanes` lanes writes them.
    pub fn lane_summaries(&mut self, key: &str, lanes: usize) -> Arc<LaneSummaries> {
        let slot = self.slot_or_insert(key);
        Arc::clone(self.by_handles[slot].get_or_insert_with(|| Arc::new(LaneSummaries::new(lanes))))
    }

    /// The latest value of the series in `slot`, if it has points.
    pub fn last_value(&self, slot: usize) -> Option<f64> {
        let own = match self.by_handles.get(slot)? {
            Some(by_handles) => {
                let mut own = by_handles.summary();
                own.merge(self.own.get(slot)?);
                own
            }
            None => *self.own.get(slot)?,
        };
        own.latest_of(self.foreign.get(slot)?)
    }

    /// The summary of every point of the series in `slot`.
    pub fn summary(&self, slot: usize) -> MetricSummary {
        let mut summary = self.own[slot];
        if let Some(by_handles) = &self.by_handles[slot] {
            summary.merge(&by_handles.summary());
        }
        summary.merge(&self.foreign[slot]);
        summary
    }

    fn view(&self) -> BTreeMap<String, MetricSummary> {
        // Slots are in first-logged order, not sorted: inserted one by one, with no
        // intermediate vector to sort.
        let mut view = BTreeMap::new();
        for (slot, key) in self.keys.iter().enumerate() {
            let summary = self.summary(slot);
            if summary.count > 0 {
                view.insert(key.to_string(), summary);
            }
        }
        view
    }
}

/// A compacted writer adopted by reference: its summaries stay in `source` until a read takes
/// a run's.
#[derive(Clone, Debug)]
pub(crate) struct Adopted {
    source: Arc<dyn CompactedSummaries>,
    writer: WriterId,
}

/// The compacted writers adopted since the foreign summaries were last replaced, in order.
#[derive(Debug, Default)]
struct Pending {
    /// Bumped by every replacement, which starts a new list.
    epoch: u64,
    adopted: Vec<Adopted>,
    /// Per run, the positions in `adopted` that hold series of it, ascending: a run's take
    /// visits its own writers only, however many writers the store has seen.
    by_run: HashMap<RunId, Positions, IdHash>,
    /// Distinct sources in `adopted` (adoptions of one source are consecutive).
    sources: usize,
}

/// Distinct manifests that pending adoptions may keep in memory: past this, every run takes
/// what is pending and the list starts over, so a long-lived reader that follows many
/// compactions holds a bounded number of old manifests.
const PENDING_SOURCES_MAX: usize = 4;

/// The positions in `Pending::adopted` of one run's series, ascending. Most runs are in one
/// adoption (the writer that logged them), so one position is kept without an allocation of
/// its own: an open adopts every run of a store, and a list per run was a fifth of the
/// allocations of opening one of 20,000 runs (docs/BENCHMARKS.md).
#[derive(Debug)]
enum Positions {
    One(usize),
    Many(Vec<usize>),
}

impl Positions {
    fn push(&mut self, position: usize) {
        match self {
            Positions::One(first) => *self = Positions::Many(vec![*first, position]),
            Positions::Many(positions) => positions.push(position),
        }
    }

    fn as_slice(&self) -> &[usize] {
        match self {
            Positions::One(position) => std::slice::from_ref(position),
            Positions::Many(positions) => positions,
        }
    }
}

impl Pending {
    /// Appends `adopted`, whose compacted points belong to `runs`.
    fn push(&mut self, adopted: Adopted, runs: &[RunId]) {
        let same = self
            .adopted
            .last()
            .is_some_and(|last| Arc::ptr_eq(&last.source, &adopted.source));
        if !same {
            self.sources += 1;
        }
        let position = self.adopted.len();
        self.by_run.reserve(runs.len());
        for run in runs {
            self.by_run
                .entry(*run)
                .and_modify(|positions| positions.push(position))
                .or_insert(Positions::One(position));
        }
        self.adopted.push(adopted);
    }
}

/// Merges into `metrics`, the table of `run`, the adoptions of `pending` it has not taken. A
/// compacted summary goes first in each merge, but points read from the log after an adoption
/// are often in `foreign` before the run's first take: its sum is then the compacted sum plus
/// the tail's sum, not the tail's points added one by one to the compacted sum, which agrees
/// to rounding only, as any two replay orders do (`summary.rs`).
fn take_pending(pending: &Pending, metrics: &mut MetricTable, run: RunId) {
    if metrics.taken_epoch != pending.epoch {
        metrics.taken_epoch = pending.epoch;
        metrics.taken = 0;
    }
    let positions = pending
        .by_run
        .get(&run)
        .map_or(&[][..], Positions::as_slice);
    let first = positions.partition_point(|&position| position < metrics.taken);
    let todo = positions[first..]
        .iter()
        .filter_map(|&position| pending.adopted.get(position));
    for adopted in todo {
        adopted
            .source
            .each_of_run(adopted.writer, run, &mut |key, summary| {
                let slot = metrics.slot_or_insert(key);
                let mut merged = *summary;
                merged.merge(&metrics.foreign[slot]);
                metrics.foreign[slot] = merged;
            });
    }
    metrics.taken = pending.adopted.len();
}

/// See [`Catalog::metrics_reader`].
pub(crate) struct MetricsReader<'a> {
    pending: RwLockReadGuard<'a, Pending>,
}

impl MetricsReader<'_> {
    /// What [`Catalog::metrics`] gives.
    pub fn metrics<'a>(&self, entry: &'a RunEntry) -> MutexGuard<'a, MetricTable> {
        let mut metrics = lock(&entry.metrics);
        let pending = &*self.pending;
        if metrics.taken_epoch != pending.epoch || metrics.taken != pending.adopted.len() {
            take_pending(pending, &mut metrics, entry.id);
        }
        metrics
    }
}

/// Resolves a foreign writer's interned key ids to metric slots of its runs.
#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    slots: HashMap<(WriterId, RunId), Vec<Option<usize>>>,
}

/// The catalog.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    experiments: RwLock<BTreeMap<ExperimentId, ExperimentEntry>>,
    /// Run ids are the engine's own, so a fixed-seed hash serves (`util::IdHash`).
    runs: RwLock<HashMap<RunId, Arc<RunEntry>, IdHash>>,
    /// Bumped after every change to a run's metadata: tells search whether `columns` is
    /// current (`columns.rs`).
    meta_epoch: AtomicU64,
    columns: RwLock<Option<Arc<RunColumns>>>,
    /// Compacted writers whose summaries runs take on first read.
    pending: RwLock<Pending>,
    /// Logged models and the runs' links to them.
    pub(crate) models: models::Models,
    /// Experiments' datasets and the runs' inputs naming them.
    pub(crate) datasets: datasets::Datasets,
}

pub(crate) use crate::util::lock;

/// Shared access; poisoning is ignored for the reason given at [`crate::util::lock`].
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Exclusive access; poisoning is ignored for the reason given at [`crate::util::lock`].
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Foreign summaries being rebuilt, per run and slot, and the compacted writers adopted for
/// them, before they replace the live ones.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    foreign: HashMap<RunId, Vec<MetricSummary>>,
    adopted: Pending,
}

/// Where foreign points of `run` go: its live foreign summaries, or its staged ones during a
/// rebuild (sized to the live table's slots, which a rebuild creates in the live table).
fn foreign_target<'a>(
    metrics: &'a mut MetricTable,
    staged: Option<&'a mut Staged>,
    run: RunId,
) -> &'a mut Vec<MetricSummary> {
    match staged {
        Some(staged) => {
            let target = staged.foreign.entry(run).or_default();
            target.resize(
                metrics.foreign.len().max(target.len()),
                MetricSummary::EMPTY,
            );
            target
        }
        None => &mut metrics.foreign,
    }
}

impl Catalog {
    /// Applies an event from another writer (read from the log); metric points go to the live
    /// foreign summaries, or to `staged` during a rebuild.
    pub fn apply_foreign(
        &self,
        keys: &mut KeyMap,
        writer: WriterId,
        event: Event,
        origin: Origin,
        staged: Option<&mut Staged>,
    ) {
        match event {
            Event::MetricKeyDefined { run, key_id, key } => {
                self.define_key(keys, writer, run, key_id, &key);
            }
            Event::Metrics(batch) => self.apply_batch(keys, writer, &batch, staged),
            other => self.apply_owned(other, origin),
        }
    }

    /// `apply_from` for an event the caller gives up: the names and values of the most
    /// common events of a replay, params and tags, move into their registers instead of
    /// being copied and the event's own copies dropped (a tenth of a cold open's replay).
    fn apply_owned(&self, event: Event, origin: Origin) {
        match event {
            Event::ParamLogged {
                run,
                time_ms,
                key,
                value,
            } => self.apply_param(run, Stamp { time_ms, origin }, key, value),
            Event::TagSet {
                run,
                time_ms,
                key,
                value,
            } => self.apply_run_tag(run, Stamp { time_ms, origin }, key, value),
            other => self.apply_from(&other, origin),
        }
    }

    fn define_key(
        &self,
        keys: &mut KeyMap,
        writer: WriterId,
        run: RunId,
        key_id: KeyId,
        key: &str,
    ) {
        let entry = self.run_or_insert(run);
        let slot = lock(&entry.metrics).slot_or_insert(key);
        let index = key_id.0 as usize;
        // Writers number keys 0, 1, 2, ... per run; a huge id can only come from a crafted
        // file, and must not make the table below allocate for it.
        if index >= crate::limits::KEYS_PER_RUN_MAX {
            return;
        }
        let slots = keys.slots.entry((writer, run)).or_default();
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(slot);
    }

    fn apply_batch(
        &self,
        keys: &KeyMap,
        writer: WriterId,
        batch: &MetricBatch,
        staged: Option<&mut Staged>,
    ) {
        let entry = self.run_or_insert(batch.run);
        let slots = keys.slots.get(&(writer, batch.run));
        let mut metrics = lock(&entry.metrics);
        let target = foreign_target(&mut metrics, staged, batch.run);
        for i in 0..batch.len() {
            let KeyId(key_id) = batch.key_ids[i];
            // A point whose key definition is missing cannot happen in a valid log (the writer
            // defines a key before using it); skip rather than invent a key.
            let Some(slot) = slots.and_then(|s| s.get(key_id as usize).copied().flatten()) else {
                continue;
            };
            target[slot].update(batch.steps[i], batch.timestamps_ms[i], batch.values[i]);
        }
    }

    /// Applies the summaries of other writers' points that a replay of the log read, as
    /// `apply_batch` applies their points: through `keys`, skipping a key id with no
    /// definition. A series with no foreign points yet takes its summary as it is, bit for bit.
    pub fn apply_foreign_summaries(
        &self,
        keys: &KeyMap,
        summaries: &mut ReplaySummaries,
        mut staged: Option<&mut Staged>,
    ) {
        for read in summaries.take() {
            let entry = self.run_or_insert(read.run);
            let slots = keys.slots.get(&(read.writer, read.run));
            let mut metrics = lock(&entry.metrics);
            let target = foreign_target(&mut metrics, staged.as_deref_mut(), read.run);
            for (KeyId(key_id), summary) in read.series() {
                let slot = slots.and_then(|s| s.get(key_id as usize).copied().flatten());
                if let Some(slot) = slot {
                    target[slot].merge(summary);
                }
            }
        }
    }

    /// Takes a compacted writer's key ids (from its `mark` in the manifest) and, by reference
    /// to `source`, the summaries of its compacted points, which are of `runs`, as if its
    /// compacted segments had been read. Runs take those summaries on first read (`metrics`).
    pub fn adopt_compacted(
        &self,
        keys: &mut KeyMap,
        writer: WriterId,
        mark: &crate::summary::WriterMark,
        runs: &[RunId],
        source: &Arc<dyn CompactedSummaries>,
        staged: Option<&mut Staged>,
    ) {
        for ((run, key_id), key) in &mark.keys {
            self.define_key(keys, writer, *run, *key_id, key);
        }
        {
            // An open adopts before it reads the chains that create these runs: sized once
            // for them, the map is not rebuilt at each doubling on the way to 20,000 runs.
            let mut entries = write(&self.runs);
            if entries.is_empty() {
                entries.reserve(runs.len());
            }
        }
        let adopted = Adopted {
            source: Arc::clone(source),
            writer,
        };
        match staged {
            Some(staged) => staged.adopted.push(adopted, runs),
            None => {
                let mut pending = write(&self.pending);
                pending.push(adopted, runs);
                if pending.sources > PENDING_SOURCES_MAX {
                    self.settle(&mut pending);
                }
            }
        }
    }

    /// Has every run with series pending take them, then empties the list. A run may have
    /// no entry yet (its creation event is still to be read, as for a finished writer whose
    /// key ids the manifest no longer keeps): it gets one here, or its series would be lost.
    fn settle(&self, pending: &mut Pending) {
        let epoch = pending.epoch + 1;
        // Runs with nothing pending are not visited: their older epoch makes their first take
        // on the new list start from its beginning, as it must.
        for run in pending.by_run.keys() {
            let entry = self.run_or_insert(*run);
            let mut metrics = lock(&entry.metrics);
            take_pending(pending, &mut metrics, *run);
            metrics.taken_epoch = epoch;
            metrics.taken = 0;
        }
        *pending = Pending {
            epoch,
            ..Pending::default()
        };
    }

    /// The metric table of `entry`, locked, with every compacted summary adopted so far
    /// taken: what a read of its summaries or keys must go through.
    pub fn metrics<'a>(&self, entry: &'a RunEntry) -> MutexGuard<'a, MetricTable> {
        self.metrics_reader().metrics(entry)
    }

    /// A reader of many runs' metric tables that locks the list of pending adoptions once,
    /// not once per run (`pending`, then each run's `metrics`, the lock order). While it
    /// lives, nothing can be adopted: hold it for one pass over runs, and take no other
    /// catalog lock meanwhile, since a waiting adoption blocks even new readers.
    pub fn metrics_reader(&self) -> MetricsReader<'_> {
        MetricsReader {
            pending: read(&self.pending),
        }
    }

    /// The attributes of the created runs of `experiment` (all experiments if `None`), newest
    /// first: metadata alone, no summaries taken.
    pub fn run_infos(&self, experiment: Option<ExperimentId>) -> Vec<RunInfo> {
        let mut infos: Vec<RunInfo> = self
            .run_entries()
            .iter()
            .filter(|entry| experiment.is_none_or(|e| entry.experiment() == Some(e)))
            .filter_map(|entry| entry.info())
            .collect();
        infos.sort_by_key(|info| (std::cmp::Reverse(info.start_time_ms), info.id));
        infos
    }

    /// How many created runs each experiment has, per lifecycle stage: one pass over the
    /// runs' metadata, where a `run_infos` per experiment would pass over every run for each.
    pub fn run_counts(&self) -> HashMap<(ExperimentId, LifecycleStage), usize> {
        let mut counts = HashMap::new();
        for entry in self.run_entries() {
            let meta = read(&entry.meta);
            let Some(created) = meta.created else {
                continue;
            };
            let stage = meta
                .lifecycle
                .as_ref()
                .map_or(LifecycleStage::Active, |l| l.value);
            *counts.entry((created.experiment, stage)).or_insert(0) += 1;
        }
        counts
    }

    /// The experiment of every created run, from their metadata alone.
    pub fn run_experiments(&self) -> HashMap<RunId, ExperimentId> {
        self.run_entries()
            .iter()
            .filter_map(|entry| Some((entry.id, entry.experiment()?)))
            .collect()
    }

    /// Every run entry, copied out so no map lock is held while each is locked in turn.
    fn run_entries(&self) -> Vec<Arc<RunEntry>> {
        self.runs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Replaces every run's foreign summaries with the rebuilt ones, run by run: a reader sees
    /// each run either before or after, both of them complete as of some moment.
    /// The rebuilt adoptions replace the pending ones; a run created meanwhile takes them
    /// whole on first read.
    pub fn replace_foreign(&self, mut staged: Staged) {
        let mut pending = write(&self.pending);
        let epoch = pending.epoch + 1;
        let entries = self.run_entries();
        for entry in entries {
            let mut metrics = lock(&entry.metrics);
            let mut rebuilt = staged.foreign.remove(&entry.id).unwrap_or_default();
            rebuilt.resize(metrics.own.len(), MetricSummary::EMPTY);
            metrics.foreign = rebuilt;
            metrics.taken_epoch = epoch;
            metrics.taken = 0;
        }
        *pending = Pending {
            epoch,
            ..staged.adopted
        };
    }

    /// Applies a metadata event as its writer wrote it (this handle's own, or another
    /// writer's).
    pub fn apply(&self, event: &Event) {
        self.apply_from(event, Origin::Writer);
    }

    /// Applies a metadata event read from `origin` (see `lww` for why it matters).
    pub fn apply_from(&self, event: &Event, origin: Origin) {
        match event {
            Event::ExperimentCreated { .. }
            | Event::ExperimentRenamed { .. }
            | Event::ExperimentDeleted { .. }
            | Event::ExperimentRestored { .. }
            | Event::ExperimentTagSet { .. }
            | Event::ExperimentTagDeleted { .. } => self.apply_experiment_event(event, origin),
            Event::RunCreated { .. }
            | Event::RunStatusChanged { .. }
            | Event::RunDeleted { .. }
            | Event::RunRestored { .. }
            | Event::TagSet { .. }
            | Event::TagDeleted { .. } => self.apply_run_event(event, origin),
            Event::ParamLogged {
                run,
                time_ms,
                key,
                value,
            } => self.apply_param(
                *run,
                Stamp {
                    time_ms: *time_ms,
                    origin,
                },
                key.as_str(),
                value.as_str(),
            ),
            Event::ArtifactRecorded { .. } | Event::ArtifactDeleted { .. } => {
                self.apply_artifact_event(event, origin)
            }
            // Metric events of this handle update summaries directly (see `Run::log_metric`);
            // other writers' go through `apply_foreign`.
            Event::Model(event) => self.models.apply(event, origin),
            Event::Dataset(event) => self.datasets.apply(event, origin),
            Event::MetricKeyDefined { .. } | Event::Metrics(_) => {}
        }
    }

    /// The experiment events; `apply_from` sends no other event here.
    fn apply_experiment_event(&self, event: &Event, origin: Origin) {
        let at = |time_ms: i64| Stamp { time_ms, origin };
        match event {
            Event::ExperimentCreated {
                experiment,
                time_ms,
                name,
            } => {
                self.with_experiment(*experiment, *time_ms, |e| {
                    e.creation_time_ms =
                        Some(e.creation_time_ms.map_or(*time_ms, |t| t.min(*time_ms)));
                    lww::set(&mut e.name, at(*time_ms), name.clone());
                    lww::set(&mut e.lifecycle, at(i64::MIN), LifecycleStage::Active);
                });
            }
            Event::ExperimentRenamed {
                experiment,
                time_ms,
                name,
            } => {
                self.with_experiment(*experiment, *time_ms, |e| {
                    lww::set(&mut e.name, at(*time_ms), name.clone())
                });
            }
            Event::ExperimentDeleted {
                experiment,
                time_ms,
            } => {
                self.with_experiment(*experiment, *time_ms, |e| {
                    lww::set(&mut e.lifecycle, at(*time_ms), LifecycleStage::Deleted);
                });
            }
            Event::ExperimentRestored {
                experiment,
                time_ms,
            } => {
                self.with_experiment(*experiment, *time_ms, |e| {
                    lww::set(&mut e.lifecycle, at(*time_ms), LifecycleStage::Active);
                });
            }
            Event::ExperimentTagSet {
                experiment,
                time_ms,
                key,
                value,
            } => {
                self.with_experiment(*experiment, *time_ms, |e| {
                    set_tag(&mut e.tags, key, at(*time_ms), Some(value.clone()));
                });
            }
            Event::ExperimentTagDeleted {
                experiment,
                time_ms,
                key,
            } => {
                self.with_experiment(*experiment, *time_ms, |e| {
                    set_tag(&mut e.tags, key, at(*time_ms), None)
                });
            }
            _ => {}
        }
    }

    /// The events that change a run's attributes and tags; `apply_from` sends no other event
    /// here.
    fn apply_run_event(&self, event: &Event, origin: Origin) {
        let at = |time_ms: i64| Stamp { time_ms, origin };
        match event {
            Event::RunCreated {
                run,
                time_ms,
                experiment,
                parent,
                name,
            } => {
                self.with_run(*run, |m| {
                    m.created = Some(Created {
                        experiment: *experiment,
                        start_time_ms: *time_ms,
                        parent: *parent,
                    });
                    lww::set(&mut m.name, at(*time_ms), name.clone());
                    lww::set(&mut m.status, at(*time_ms), (RunStatus::Running, None));
                    lww::set(&mut m.lifecycle, at(i64::MIN), LifecycleStage::Active);
                });
            }
            Event::RunStatusChanged {
                run,
                time_ms,
                status,
                end_time_ms,
            } => {
                self.with_run(*run, |m| {
                    lww::set(&mut m.status, at(*time_ms), (*status, *end_time_ms))
                });
            }
            Event::RunDeleted { run, time_ms } => {
                self.with_run(*run, |m| {
                    lww::set(&mut m.lifecycle, at(*time_ms), LifecycleStage::Deleted)
                });
            }
            Event::RunRestored { run, time_ms } => {
                self.with_run(*run, |m| {
                    lww::set(&mut m.lifecycle, at(*time_ms), LifecycleStage::Active)
                });
            }
            Event::TagSet {
                run,
                time_ms,
                key,
                value,
            } => self.apply_run_tag(*run, at(*time_ms), key.as_str(), value.as_str()),
            Event::TagDeleted { run, time_ms, key } => {
                self.with_run(*run, |m| set_tag(&mut m.tags, key, at(*time_ms), None));
            }
            _ => {}
        }
    }

    /// A param: its earliest value is its value. Later different ones were refused by their
    /// writer, or lost a race it could not see.
    fn apply_param(&self, run: RunId, at: Stamp, key: impl Name, value: impl Name) {
        self.with_run(run, |m| match m.params.get_mut(key.as_ref()) {
            Some(existing) if existing.time_ms <= at.time_ms => {}
            Some(existing) => *existing = Lww::new(at, value.into()),
            None => {
                m.params.insert(key.into(), Lww::new(at, value.into()));
            }
        });
    }

    /// A run's tag; `mlflow.runName` also renames the run.
    fn apply_run_tag(&self, run: RunId, at: Stamp, key: impl Name, value: impl Name) {
        self.with_run(run, |m| {
            if key.as_ref() == RUN_NAME_TAG {
                lww::set(&mut m.name, at, value.as_ref().to_string());
            }
            set_tag(&mut m.tags, key, at, Some(value.into()));
        });
    }

    /// An artifact's record or deletion: the latest event of a path decides (a deleted path
    /// keeps its register, so an older record applied later stays deleted). `apply_from`
    /// sends no other event here.
    fn apply_artifact_event(&self, event: &Event, origin: Origin) {
        let at = |time_ms: i64| Stamp { time_ms, origin };
        match event {
            Event::ArtifactRecorded {
                run,
                time_ms,
                size_bytes,
                sha256,
                path,
            } => {
                let artifact = Artifact {
                    path: path.clone(),
                    size_bytes: *size_bytes,
                    sha256: *sha256,
                    time_ms: *time_ms,
                };
                self.with_run(*run, |m| {
                    set_register(&mut m.artifacts, path, at(*time_ms), Some(artifact))
                });
            }
            Event::ArtifactDeleted { run, time_ms, path } => {
                self.with_run(*run, |m| {
                    set_register(&mut m.artifacts, path, at(*time_ms), None)
                });
            }
            _ => {}
        }
    }

    fn with_experiment(
        &self,
        id: ExperimentId,
        time_ms: i64,
        change: impl FnOnce(&mut ExperimentEntry),
    ) {
        let mut experiments = self
            .experiments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = experiments.entry(id).or_default();
        change(entry);
        entry.last_update_time_ms = entry.last_update_time_ms.max(time_ms);
    }

    fn with_run(&self, id: RunId, change: impl FnOnce(&mut RunMeta)) {
        let entry = self.run_or_insert(id);
        let mut meta = write(&entry.meta);
        change(&mut meta);
        let deleted = meta
            .lifecycle
            .as_ref()
            .is_some_and(|l| l.value == LifecycleStage::Deleted);
        entry.deleted.store(deleted, Ordering::Release);
        drop(meta);
        self.meta_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The entry of `run`, created as a placeholder if unknown.
    pub fn run_or_insert(&self, run: RunId) -> Arc<RunEntry> {
        if let Some(entry) = self.run_entry(run) {
            return entry;
        }
        let mut runs = self.runs.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(runs.entry(run).or_insert_with(|| {
            Arc::new(RunEntry {
                id: run,
                deleted: AtomicBool::new(false),
                param_writes: Mutex::new(()),
                meta: RwLock::new(RunMeta::default()),
                metrics: Mutex::new(MetricTable::default()),
            })
        }))
    }

    /// The entry of `run`, created or placeholder.
    pub fn run_entry(&self, run: RunId) -> Option<Arc<RunEntry>> {
        self.runs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&run)
            .cloned()
    }

    /// Whether `run` exists (its creation event has been applied).
    pub fn has_run(&self, run: RunId) -> bool {
        self.run_entry(run)
            .is_some_and(|entry| read(&entry.meta).created.is_some())
    }

    /// A snapshot of an experiment, if it was created.
    pub fn experiment(&self, id: ExperimentId) -> Option<Experiment> {
        let experiments = self
            .experiments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        experiments
            .get(&id)
            .and_then(|entry| experiment_view(id, entry))
    }

    /// Every created experiment, by id.
    pub fn experiments(&self) -> Vec<Experiment> {
        let experiments = self
            .experiments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        experiments
            .iter()
            .filter_map(|(id, entry)| experiment_view(*id, entry))
            .collect()
    }

    /// `pick` applied to every created experiment in place, under the map's read lock: a search
    /// decides on borrowed fields and copies out only what it keeps.
    pub fn scan_experiments<T>(
        &self,
        mut pick: impl FnMut(&ExperimentRow<'_>) -> Option<T>,
    ) -> Vec<T> {
        let experiments = self
            .experiments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        experiments
            .iter()
            .filter_map(|(id, entry)| {
                let row = ExperimentRow {
                    id: *id,
                    name: &entry.name.as_ref()?.value,
                    lifecycle_stage: entry
                        .lifecycle
                        .as_ref()
                        .map_or(LifecycleStage::Active, |l| l.value),
                    creation_time_ms: entry.creation_time_ms?,
                    last_update_time_ms: entry.last_update_time_ms,
                    tags: &entry.tags,
                };
                pick(&row)
            })
            .collect()
    }

    /// The experiment named `name` (active or deleted). If a race made two, the earliest.
    pub fn experiment_by_name(&self, name: &str) -> Option<Experiment> {
        self.experiments()
            .into_iter()
            .filter(|experiment| experiment.name == name)
            .min_by_key(|experiment| (experiment.creation_time_ms, experiment.id))
    }

    /// Snapshots of the created runs of `experiment` (all experiments if `None`).
    pub fn runs(&self, experiment: Option<ExperimentId>) -> Vec<RunView> {
        let entries = self.run_entries();
        let mut views: Vec<RunView> = entries
            .iter()
            .filter(|entry| experiment.is_none_or(|e| entry.experiment() == Some(e)))
            .filter_map(|entry| entry.view(self))
            .collect();
        views.sort_by_key(|view| (std::cmp::Reverse(view.info.start_time_ms), view.info.id));
        views
    }
}

/// A name or value as the catalog receives it: borrowed from an event it applies (`&str`,
/// copied only if kept) or given up by one (`String`, moved in).
trait Name: AsRef<str> + Into<String> {}

impl<T: AsRef<str> + Into<String>> Name for T {}

fn set_tag(
    tags: &mut Registers<Lww<Option<String>>>,
    key: impl Name,
    at: Stamp,
    value: Option<String>,
) {
    set_register(tags, key, at, value);
}

/// Sets (`Some`) or deletes (`None`) the register of `key`, last writer wins.
fn set_register<T>(
    registers: &mut Registers<Lww<Option<T>>>,
    key: impl Name,
    at: Stamp,
    value: Option<T>,
) {
    match registers.get_mut(key.as_ref()) {
        Some(register) => register.set(at, value),
        None => {
            registers.insert(key.into(), Lww::new(at, value));
        }
    }
}

fn live_tags(tags: &Registers<Lww<Option<String>>>) -> BTreeMap<String, String> {
    sorted_map(
        tags.iter()
            .filter_map(|(key, register)| Some((key.clone(), register.value.clone()?))),
    )
}

/// A map of `entries`, which come sorted by key (as a `Registers` yields them), built by
/// appending: `collect` would first gather them in a growing vector and sort it, which is
/// most of a small map's cost, and a search copies a page of runs' maps.
fn sorted_map<V>(entries: impl Iterator<Item = (String, V)>) -> BTreeMap<String, V> {
    let mut map = BTreeMap::new();
    for (key, value) in entries {
        map.insert(key, value);
    }
    map
}

fn experiment_view(id: ExperimentId, entry: &ExperimentEntry) -> Option<Experiment> {
    Some(Experiment {
        id,
        name: entry.name.as_ref()?.value.clone(),
        lifecycle_stage: entry
            .lifecycle
            .as_ref()
            .map_or(LifecycleStage::Active, |l| l.value),
        creation_time_ms: entry.creation_time_ms?,
        last_update_time_ms: entry.last_update_time_ms,
        tags: live_tags(&entry.tags),
    })
}

/// The attributes of run `id`, if it was created.
fn run_info(id: RunId, meta: &RunMeta, user: Option<String>) -> Option<RunInfo> {
    let created = meta.created?;
    let (status, end_time_ms) = meta
        .status
        .as_ref()
        .map_or((RunStatus::Running, None), |s| s.value);
    Some(RunInfo {
        id,
        experiment: created.experiment,
        name: meta
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_default(),
        status,
        start_time_ms: created.start_time_ms,
        end_time_ms,
        parent: created.parent,
        lifecycle_stage: meta
            .lifecycle
            .as_ref()
            .map_or(LifecycleStage::Active, |l| l.value),
        user,
    })
}

impl RunEntry {
    /// Its experiment, once the run was created.
    pub fn experiment(&self) -> Option<ExperimentId> {
        read(&self.meta).created.map(|c| c.experiment)
    }

    /// A snapshot, if the run was created; its metric summaries through `catalog`, which
    /// holds what compacted writers contributed.
    pub fn view(&self, catalog: &Catalog) -> Option<RunView> {
        let meta = read(&self.meta);
        let tags = live_tags(&meta.tags);
        let info = run_info(self.id, &meta, tags.get(USER_TAG).cloned())?;
        let params = sorted_map(
            meta.params
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone())),
        );
        let artifacts = sorted_map(
            meta.artifacts
                .iter()
                .filter_map(|(path, register)| Some((path.clone(), register.value.clone()?))),
        );
        drop(meta);
        let metrics = catalog.metrics(self).view();
        Some(RunView {
            info,
            params,
            tags,
            metrics,
            artifacts,
        })
    }

    /// Whether the run was created (its creation event applied), not a placeholder: the
    /// check a read makes before it shows the run, with nothing copied.
    pub fn is_created(&self) -> bool {
        read(&self.meta).created.is_some()
    }

    /// Its attributes, if the run was created: no params, tags or metrics copied.
    pub fn info(&self) -> Option<RunInfo> {
        let meta = read(&self.meta);
        let user = meta.tags.get(USER_TAG).and_then(|t| t.value.clone());
        run_info(self.id, &meta, user)
    }

    /// The param `key`, if logged.
    pub fn param(&self, key: &str) -> Option<String> {
        read(&self.meta).params.get(key).map(|p| p.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::WriterMark;

    /// One writer's compacted summaries, as a manifest would hold them.
    #[derive(Debug)]
    struct Source(WriterMark);

    impl CompactedSummaries for Source {
        fn each_of_run(
            &self,
            _writer: WriterId,
            run: RunId,
            each: &mut dyn FnMut(&str, &MetricSummary),
        ) {
            self.0.each_of_run(run, each);
        }
    }

    fn points(count: u64) -> MetricSummary {
        let mut summary = MetricSummary::EMPTY;
        for step in 0..count {
            summary.update(step as i64, 0, 1.0);
        }
        summary
    }

    fn count(catalog: &Catalog, run: RunId) -> u64 {
        let entry = catalog.run_entry(run).unwrap();
        let metrics = catalog.metrics(&entry);
        metrics
            .slot("loss")
            .map_or(0, |slot| metrics.summary(slot).count)
    }

    /// Runs read every round and runs read only at the end both take each adoption once,
    /// and past `PENDING_SOURCES_MAX` manifests the pending list settles.
    #[test]
    fn each_adoption_is_taken_once_and_pending_manifests_stay_bounded() {
        let catalog = Catalog::default();
        let mut keys = KeyMap::default();
        let (often, once) = (RunId(1), RunId(2));
        catalog.run_or_insert(often);
        catalog.run_or_insert(once);
        let rounds = 3 * PENDING_SOURCES_MAX as u64;
        for round in 1..=rounds {
            let mut mark = WriterMark::default();
            for run in [often, once] {
                mark.summaries.insert((run, "loss".into()), points(round));
            }
            let source: Arc<dyn CompactedSummaries> = Arc::new(Source(mark.clone()));
            catalog.adopt_compacted(
                &mut keys,
                WriterId(round),
                &mark,
                &mark.runs(),
                &source,
                None,
            );
            assert!(read(&catalog.pending).sources <= PENDING_SOURCES_MAX);
            assert_eq!(count(&catalog, often), (1..=round).sum::<u64>());
        }
        assert_eq!(count(&catalog, once), (1..=rounds).sum::<u64>());
        // A run created after the adoptions has nothing pending.
        catalog.run_or_insert(RunId(3));
        assert_eq!(count(&catalog, RunId(3)), 0);
    }

    /// The adoption that makes the list settle can hold a run the catalog has no entry for
    /// yet (its creation event comes later, from the metadata chain): it still gets its
    /// series, and so do the runs of earlier adoptions that had none either.
    #[test]
    fn a_settle_keeps_the_series_of_runs_created_after_it() {
        let catalog = Catalog::default();
        let mut keys = KeyMap::default();
        let rounds = PENDING_SOURCES_MAX as u128 + 1;
        for round in 1..=rounds {
            let mut mark = WriterMark::default();
            mark.summaries
                .insert((RunId(round), "loss".into()), points(3));
            let source: Arc<dyn CompactedSummaries> = Arc::new(Source(mark.clone()));
            catalog.adopt_compacted(
                &mut keys,
                WriterId(round as u64),
                &mark,
                &mark.runs(),
                &source,
                None,
            );
        }
        assert_eq!(
            read(&catalog.pending).sources,
            0,
            "the last adoption settles"
        );
        for round in 1..=rounds {
            catalog.run_or_insert(RunId(round));
            assert_eq!(count(&catalog, RunId(round)), 3, "run {round}");
        }
    }

    /// A replacement installs the staged adoptions: runs take those, and no longer the ones
    /// pending before.
    #[test]
    fn a_replacement_swaps_the_pending_adoptions() {
        let catalog = Catalog::default();
        let mut keys = KeyMap::default();
        let run = RunId(1);
        catalog.run_or_insert(run);
        let adopt = |keys: &mut KeyMap, staged: Option<&mut Staged>, count: u64| {
            let mut mark = WriterMark::default();
            mark.summaries.insert((run, "loss".into()), points(count));
            let source: Arc<dyn CompactedSummaries> = Arc::new(Source(mark.clone()));
            catalog.adopt_compacted(keys, WriterId(7), &mark, &mark.runs(), &source, staged);
        };
        adopt(&mut keys, None, 5);
        let mut staged = Staged::default();
        adopt(&mut keys, Some(&mut staged), 8);
        assert_eq!(count(&catalog, run), 5);
        catalog.replace_foreign(staged);
        assert_eq!(count(&catalog, run), 8);
    }
}
