//! `Store`: the embedded tracking store. Opening it recovers the log; the catalog is rebuilt by
//! the handle's first refresh (at once for a read-only handle, at the first call that reads it
//! for one opened to write). Every change is appended to the log first and applied to the
//! catalog once acknowledged.
//!
//! Layout of a store directory:
//! ```text
//! <root>/wal/            segment log (docs/format/log.md)
//! <root>/artifacts/      artifact files, by run id
//! <root>/catalog.lock    serializes experiment creation and renaming across processes
//! ```
//!
//! Invariants:
//! - The catalog reflects every event this handle appended (applied as soon as the log
//!   accepted it) and every event of other writers up to the last refresh.
//! - Bounded staleness: a read sees every append other writers acknowledged at least
//!   `refresh_interval` before the read began. A read refreshes only when the last refresh
//!   started longer ago than that; one thread refreshes (single flight) while fresh readers go
//!   on without taking any lock of the store, and stale ones wait for that one refresh.
//!   `Store::refresh` always refreshes.
//! - Experiment names are unique: creation and renaming happen under the store-wide
//!   `catalog.lock`, after a refresh, so two processes asking for the same name get one
//!   experiment.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::follow::Follower;
use crate::catalog::{self, Catalog, Experiment, LifecycleStage, RunInfo, RunView};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, RunId};
use crate::io::{OsStorage, Storage};
use crate::limits::{LANES_DEFAULT, REFRESH_INTERVAL_DEFAULT, SEGMENT_BYTES_DEFAULT};
use crate::tracking::keyed::RunSlots;
use crate::tracking::run::{Run, RunOptions};
use crate::tracking::validation;
use crate::util::{now_ms, random_u64};
use crate::wal::{Durability, Event, Log, LogOptions, RecoveryReport};

use crate::layout::CATALOG_LOCK;

/// The name of MLflow's default experiment, id 0 ([`Store::default_experiment`]).
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";
pub use crate::layout::WAL_DIR;

/// Fails unless `root` has a store's layout: the `wal/` folder that opening a store for
/// writing creates first, and that nothing ever removes.
pub fn check_is_store(root: &Path) -> Result<()> {
    let wal_dir = root.join(WAL_DIR);
    match std::fs::metadata(&wal_dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotAStore(root.to_path_buf())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NotAStore(root.to_path_buf()))
        }
        Err(error) => Err(Error::io("look for", wal_dir, error)),
    }
}

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// What an acknowledged call survives (default `Interval(1 s)`); see `docs/DURABILITY.md`.
    pub durability: Durability,
    /// Largest preallocated size of a log segment (default 64 MiB). Each writer's first
    /// segment is 1 MiB (or this, if smaller), and each next one doubles up to this size.
    pub segment_bytes: u64,
    /// Open without writing anything: no recovery, every change refused with `Error::ReadOnly`.
    pub read_only: bool,
    /// Writer lanes: threads that can log at once without sharing a lane (default 64).
    pub lanes: usize,
    /// The I/O seam (the OS by default).
    pub storage: Arc<dyn Storage>,
    /// Compact sealed segments in a background thread this often (default: never; call
    /// `Store::compact`). Needs the `parquet` feature; ignored by read-only handles.
    pub compaction_interval: Option<std::time::Duration>,
    /// How stale a read may be with respect to other handles' and processes' writes (default
    /// 5 ms). A read refreshes from the log only if the last refresh is older than this;
    /// `None` refreshes on every read. This handle's own writes are visible at once whatever
    /// the interval, and `Store::refresh` always refreshes.
    pub refresh_interval: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::default(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            read_only: false,
            lanes: LANES_DEFAULT,
            storage: Arc::new(OsStorage),
            compaction_interval: None,
            refresh_interval: Some(REFRESH_INTERVAL_DEFAULT),
        }
    }
}

/// Which experiments or runs a listing includes (MLflow's `ViewType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ViewType {
    /// Only active ones (the default).
    #[default]
    ActiveOnly,
    /// Only deleted ones.
    DeletedOnly,
    /// Both.
    All,
}

impl ViewType {
    fn includes(self, stage: LifecycleStage) -> bool {
        match self {
            ViewType::ActiveOnly => stage == LifecycleStage::Active,
            ViewType::DeletedOnly => stage == LifecycleStage::Deleted,
            ViewType::All => true,
        }
    }
}

/// A handle to a tracking store: `Send + Sync`, cheap to clone; clones share one log and catalog.
///
/// ```
/// # fn main() -> runlog::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
/// use runlog::Store;
/// let store = Store::open(dir.path())?;
/// let experiment = store.get_or_create_experiment("mnist")?;
/// let run = store.start_run(experiment.id, Default::default())?;
/// run.log_param("lr", "0.01")?;
/// run.log_metric("loss", 0.25, 1)?;
/// let id = run.id();
/// run.finish()?;
/// let view = store.run(id)?;
/// assert_eq!(view.metrics["loss"].last_value, 0.25);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
pub(crate) struct StoreInner {
    root: PathBuf,
    options: StoreOptions,
    log: Log,
    catalog: Catalog,
    recovery: RecoveryReport,
    follower: Mutex<Follower>,
    /// Run id to run entry, for writes by id (`keyed.rs`).
    run_slots: RunSlots,
    /// The clock of `last_refresh_ns`.
    opened: Instant,
    /// When the newest completed refresh started, in ns since `opened`, plus one (0: never).
    last_refresh_ns: AtomicU64,
    /// Whether the survey that comes before the first refresh has passed (`refresh_locked`).
    surveyed: AtomicBool,
    /// Parsed footers of compacted files, reused by history queries.
    #[cfg(feature = "parquet")]
    compacted_metadata: crate::compaction::MetadataCache,
    /// The newest manifest, decoded once per generation.
    manifests: crate::compaction::manifest::ManifestCache,
    /// Directories of the sealed log segments this handle's reads have scanned.
    segment_directories: crate::wal::directory::SegmentDirectories,
    /// The background compactor, if `compaction_interval` asked for one.
    #[cfg(feature = "parquet")]
    background: Mutex<Option<crate::compaction::Background>>,
}

impl Store {
    /// Opens the store at `root`, creating it if missing, with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// Opens the store at `root` with `options`. A read-only open creates nothing, so it fails
    /// with [`Error::NotAStore`] on a folder that is not a store.
    ///
    /// A read-only open builds the catalog (experiments, runs, metric summaries) from the log
    /// and the compaction manifest before it returns, and fails if the store is damaged. An
    /// open for writing only recovers the log, whatever the store holds: the catalog is built
    /// by the first call that reads it, which every read and every call that checks what it
    /// names does (`get_or_create_experiment`, `start_run`, `resume_run`, ...), and damage
    /// (a manifest that does not load, missing history) is that call's error.
    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if options.read_only {
            check_is_store(&root)?;
        } else {
            crate::io::create_dirs(&root, options.storage.as_ref())?;
        }
        let wal_dir = root.join(WAL_DIR);
        let log_options = LogOptions {
            segment_bytes: options.segment_bytes,
            durability: options.durability,
            lanes: options.lanes,
            read_only: options.read_only,
            salvage: false,
            storage: Arc::clone(&options.storage),
        };
        let (log, recovery) = Log::open(&wal_dir, log_options)?;
        let manifests = crate::compaction::manifest::ManifestCache::default();
        let follower = Follower::new(&root, &wal_dir);
        let store = Store {
            inner: Arc::new(StoreInner {
                root,
                options,
                log,
                catalog: Catalog::default(),
                recovery,
                follower: Mutex::new(follower),
                run_slots: RunSlots::default(),
                opened: Instant::now(),
                last_refresh_ns: AtomicU64::new(0),
                surveyed: AtomicBool::new(false),
                #[cfg(feature = "parquet")]
                compacted_metadata: crate::compaction::MetadataCache::default(),
                manifests,
                segment_directories: Default::default(),
                #[cfg(feature = "parquet")]
                background: Mutex::new(None),
            }),
        };
        // A handle opened for writing builds its catalog at its first refresh, which every
        // read and every write path that checks what it names (an experiment, a run) starts
        // with: so an open that only appends costs nothing per run or series the store holds.
        // A read-only handle is opened to read, so it builds it now and reports damage here.
        if store.inner.options.read_only {
            store.refresh()?;
        }
        if let Some(interval) = store.inner.options.compaction_interval
            && !store.inner.options.read_only
        {
            store.start_background_compaction(interval)?;
        }
        Ok(store)
    }

    #[cfg(feature = "parquet")]
    fn start_background_compaction(&self, interval: std::time::Duration) -> Result<()> {
        let background = crate::compaction::Background::start(self, interval)?;
        *catalog::lock(&self.inner.background) = Some(background);
        Ok(())
    }

    #[cfg(not(feature = "parquet"))]
    fn start_background_compaction(&self, _interval: std::time::Duration) -> Result<()> {
        Err(Error::InvalidInput(
            "compaction_interval needs runlog's parquet feature".into(),
        ))
    }

    /// The outcome of the background compactor's last round (`None`: none ran yet, or there is
    /// no background compactor). Its errors are kept here because no caller is waiting on it.
    #[cfg(feature = "parquet")]
    pub fn last_background_compaction(
        &self,
    ) -> Option<std::result::Result<crate::compaction::CompactionReport, String>> {
        let background = catalog::lock(&self.inner.background);
        background
            .as_ref()
            .and_then(|b| catalog::lock(&b.last).clone())
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// What recovery did when this handle opened the store.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The options the store was opened with.
    pub(crate) fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// This handle's own log (its writers' segments).
    pub(crate) fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The in-memory catalog of experiments and runs.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Run id to run entry, for writes by id.
    pub(crate) fn run_slots(&self) -> &RunSlots {
        &self.inner.run_slots
    }

    /// The newest compaction manifest, decoded once per generation.
    pub(crate) fn manifests(&self) -> &crate::compaction::manifest::ManifestCache {
        &self.inner.manifests
    }

    /// Directories of the sealed log segments this handle's reads have scanned.
    pub(crate) fn segment_directories(&self) -> &crate::wal::directory::SegmentDirectories {
        &self.inner.segment_directories
    }

    /// How many sealed log segments this handle's reads know the directory of, the bytes
    /// those directories take and how many lookups found one (for tests and benchmarks: a
    /// read of a known segment reads only the records it wants).
    #[cfg(feature = "testing")]
    pub fn segment_directory_stats(&self) -> crate::wal::directory::DirectoryStats {
        self.inner.segment_directories.stats()
    }

    /// Forgets every sealed segment's directory, so that the next read scans the whole log
    /// tail (for tests and benchmarks: the read a handle makes before it knows any).
    #[cfg(feature = "testing")]
    pub fn forget_segment_directories(&self) {
        self.inner.segment_directories.clear();
    }

    /// Parsed footers of compacted files.
    #[cfg(feature = "parquet")]
    pub(crate) fn compacted_metadata(&self) -> &crate::compaction::MetadataCache {
        &self.inner.compacted_metadata
    }

    /// A reference that does not keep the store open (for the background compactor).
    #[cfg(feature = "parquet")]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<StoreInner> {
        Arc::downgrade(&self.inner)
    }

    /// The store behind `weak`, if a handle still holds it.
    #[cfg(feature = "parquet")]
    pub(crate) fn upgrade(weak: &std::sync::Weak<StoreInner>) -> Option<Store> {
        weak.upgrade().map(|inner| Store { inner })
    }

    /// Applies what other writers (threads of other handles, other processes) appended since
    /// the last refresh. Reads do so when the last refresh is older than `refresh_interval`;
    /// call this to see other writers' appends now.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// use runlog::{Store, StoreOptions};
    /// let writer = Store::open(dir.path())?;
    /// let run = writer.start_run(writer.get_or_create_experiment("e")?.id, Default::default())?;
    /// let options = StoreOptions { read_only: true, ..StoreOptions::default() };
    /// let reader = Store::open_with(dir.path(), options)?; // e.g. in a dashboard process
    /// run.log_metric("loss", 0.5, 1)?;
    /// reader.refresh()?; // reads see it within `refresh_interval`; this, at once
    /// assert_eq!(reader.run(run.id())?.metrics["loss"].last_value, 0.5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn refresh(&self) -> Result<()> {
        self.inner.log.check_fork()?;
        let mut follower = catalog::lock(&self.inner.follower);
        self.refresh_locked(&mut follower)
    }

    /// Refreshes if the last refresh started longer ago than `refresh_interval` (always when it
    /// is `None`). Reads call this: when the catalog is fresh enough they take no store lock,
    /// so readers on many threads run in parallel.
    pub(crate) fn refresh_if_stale(&self) -> Result<()> {
        self.inner.log.check_fork()?;
        let Some(interval) = self.inner.options.refresh_interval else {
            return self.refresh();
        };
        let interval_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        self.refresh_unless_started_after(self.clock_ns().saturating_sub(interval_ns))
    }

    /// `lookup` on a fresh-enough catalog; on a miss, again after a refresh that started after
    /// the miss, so that what another handle just created is never reported missing.
    pub(crate) fn lookup_fresh<T>(&self, lookup: impl Fn() -> Option<T>) -> Result<Option<T>> {
        self.refresh_if_stale()?;
        if let Some(found) = lookup() {
            return Ok(Some(found));
        }
        self.refresh_unless_started_after(self.clock_ns().saturating_sub(1))?;
        Ok(lookup())
    }

    /// Refreshes unless a refresh that started after `floor_ns` (on `clock_ns`) has completed.
    /// Single flight: threads that wait for another's refresh take it as their own.
    fn refresh_unless_started_after(&self, floor_ns: u64) -> Result<()> {
        let done = || self.inner.last_refresh_ns.load(Ordering::Acquire) > floor_ns;
        if done() {
            return Ok(());
        }
        let mut follower = catalog::lock(&self.inner.follower);
        if done() {
            return Ok(());
        }
        self.refresh_locked(&mut follower)
    }

    fn refresh_locked(&self, follower: &mut Follower) -> Result<()> {
        let started_ns = self.clock_ns();
        if !self.inner.surveyed.load(Ordering::Acquire) {
            // A store whose manifest history is missing would read as if the data it covered
            // had never been: refused, naming what is missing, until a survey passes. The
            // survey loads the newest manifest, which the refresh then takes from the cache.
            crate::compaction::survey::survey_newest(&self.inner.root, &self.inner.manifests)?
                .1
                .check()?;
            self.inner.surveyed.store(true, Ordering::Release);
        }
        let log = &self.inner.log;
        let caches = (&self.inner.manifests, &self.inner.segment_directories);
        follower.refresh(&self.inner.catalog, caches, &|w| log.is_own(w))?;
        self.inner
            .last_refresh_ns
            .fetch_max(started_ns, Ordering::AcqRel);
        Ok(())
    }

    /// Nanoseconds since this handle opened, plus one (so that 0 can mean "never").
    fn clock_ns(&self) -> u64 {
        u64::try_from(self.inner.opened.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Makes everything this handle appended durable (see `docs/DURABILITY.md`).
    pub fn flush(&self) -> Result<()> {
        self.inner.log.flush()
    }

    /// Seals this handle's log segments. Later calls start new writers.
    pub fn close(&self) -> Result<()> {
        self.inner.log.close()
    }

    /// Simulates this process dying (kill -9): the log's writers are abandoned unsealed and
    /// unsynced, their locks released. For crash tests.
    #[doc(hidden)]
    pub fn abandon(&self) {
        self.inner.log.abandon();
    }

    /// Appends `event` and, once the log accepted it, applies it to the catalog.
    pub(crate) fn record(&self, event: Event) -> Result<()> {
        self.inner.log.append(&event)?;
        self.inner.catalog.apply(&event);
        Ok(())
    }

    /// Appends `events` with one sync under `Durability::Sync`, then applies to the catalog
    /// those the log holds (all of them, once the call succeeded and synced).
    ///
    /// Events are grouped by their owner's lane (`Log::lane_of`), one append call per group in
    /// order of first appearance, so each run's and experiment's events keep their order.
    pub(crate) fn record_all(&self, events: &[Event]) -> Result<()> {
        let log = &self.inner.log;
        let mut groups: Vec<(usize, Vec<Event>)> = Vec::new();
        for event in events {
            let lane = log.lane_of(event.owner());
            match groups.iter_mut().find(|(l, _)| *l == lane) {
                Some((_, group)) => group.push(event.clone()),
                None => groups.push((lane, vec![event.clone()])),
            }
        }
        let catalog = &self.inner.catalog;
        for (_, group) in &groups {
            log.append_all(group, &mut |held| {
                for event in group.iter().take(held) {
                    catalog.apply(event);
                }
            })?;
        }
        Ok(())
    }

    // ---- experiments ----

    /// Creates an experiment; fails with `AlreadyExists` if the name is taken (by an active or
    /// deleted experiment, as in MLflow).
    pub fn create_experiment(&self, name: &str) -> Result<Experiment> {
        validation::experiment_name(name)?;
        let _lock = self.lock_catalog()?;
        self.refresh()?;
        if self.inner.catalog.experiment_by_name(name).is_some() {
            return Err(Error::AlreadyExists(format!("experiment {name:?}")));
        }
        self.create_experiment_locked(name)
    }

    /// The experiment named `name`, created if there is none. Two processes asking at once get
    /// the same experiment.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// let store = runlog::Store::open(dir.path())?;
    /// let first = store.get_or_create_experiment("mnist")?;
    /// assert_eq!(store.get_or_create_experiment("mnist")?.id, first.id);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        validation::experiment_name(name)?;
        if let Some(experiment) = self.experiment_by_name(name)? {
            return Ok(experiment);
        }
        let _lock = self.lock_catalog()?;
        self.refresh()?;
        if let Some(experiment) = self.inner.catalog.experiment_by_name(name) {
            return Ok(experiment);
        }
        self.create_experiment_locked(name)
    }

    fn create_experiment_locked(&self, name: &str) -> Result<Experiment> {
        let id = ExperimentId(((now_ms() as u64) << 20) | (random_u64() & 0xf_ffff));
        self.record(Event::ExperimentCreated {
            experiment: id,
            time_ms: now_ms(),
            name: name.to_string(),
        })?;
        self.inner
            .catalog
            .experiment(id)
            .ok_or_else(|| Error::NotFound(format!("experiment {id}")))
    }

    /// MLflow's default experiment: id 0, named `Default`, created if there is none. MLflow's
    /// clients log to it when no experiment is chosen. `AlreadyExists` if another experiment
    /// already holds the name `Default`.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// let store = runlog::Store::open(dir.path())?;
    /// let default = store.default_experiment()?;
    /// assert_eq!((default.id, default.name.as_str()), (runlog::ExperimentId(0), "Default"));
    /// assert_eq!(store.default_experiment()?.id, default.id);
    /// # Ok(())
    /// # }
    /// ```
    pub fn default_experiment(&self) -> Result<Experiment> {
        const DEFAULT: ExperimentId = ExperimentId(0);
        if let Ok(experiment) = self.experiment(DEFAULT) {
            return Ok(experiment);
        }
        let _lock = self.lock_catalog()?;
        self.refresh()?;
        if let Some(experiment) = self.inner.catalog.experiment(DEFAULT) {
            return Ok(experiment);
        }
        if self
            .inner
            .catalog
            .experiment_by_name(DEFAULT_EXPERIMENT_NAME)
            .is_some()
        {
            return Err(Error::AlreadyExists(format!(
                "experiment {DEFAULT_EXPERIMENT_NAME:?} (not the default experiment, id 0)"
            )));
        }
        self.record(Event::ExperimentCreated {
            experiment: DEFAULT,
            time_ms: now_ms(),
            name: DEFAULT_EXPERIMENT_NAME.to_string(),
        })?;
        self.inner
            .catalog
            .experiment(DEFAULT)
            .ok_or_else(|| Error::NotFound(format!("experiment {DEFAULT}")))
    }

    /// The experiment with `id`.
    pub fn experiment(&self, id: ExperimentId) -> Result<Experiment> {
        self.lookup_fresh(|| self.inner.catalog.experiment(id))?
            .ok_or_else(|| Error::NotFound(format!("experiment {id}")))
    }

    /// The experiment named `name` (active or deleted), if any.
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        self.lookup_fresh(|| self.inner.catalog.experiment_by_name(name))
    }

    /// Experiments in `view`, by id.
    pub fn experiments(&self, view: ViewType) -> Result<Vec<Experiment>> {
        self.refresh_if_stale()?;
        let mut all = self.inner.catalog.experiments();
        all.retain(|experiment| view.includes(experiment.lifecycle_stage));
        Ok(all)
    }

    /// Renames an experiment; fails with `AlreadyExists` if the new name is taken.
    pub fn rename_experiment(&self, id: ExperimentId, name: &str) -> Result<()> {
        validation::experiment_name(name)?;
        let _lock = self.lock_catalog()?;
        self.experiment(id)?;
        if self
            .inner
            .catalog
            .experiment_by_name(name)
            .is_some_and(|other| other.id != id)
        {
            return Err(Error::AlreadyExists(format!("experiment {name:?}")));
        }
        self.record(Event::ExperimentRenamed {
            experiment: id,
            time_ms: now_ms(),
            name: name.to_string(),
        })
    }

    /// Soft-deletes an experiment: it is hidden from default listings and refuses new runs.
    pub fn delete_experiment(&self, id: ExperimentId) -> Result<()> {
        self.experiment(id)?;
        self.record(Event::ExperimentDeleted {
            experiment: id,
            time_ms: now_ms(),
        })
    }

    /// Restores a deleted experiment.
    pub fn restore_experiment(&self, id: ExperimentId) -> Result<()> {
        self.experiment(id)?;
        self.record(Event::ExperimentRestored {
            experiment: id,
            time_ms: now_ms(),
        })
    }

    /// Soft-deletes an experiment together with its active runs, as MLflow's DeleteExperiment
    /// does, in one append call (one msync under `Durability::Sync`).
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// use runlog::{LifecycleStage, ViewType};
    /// let experiment = store.get_or_create_experiment("e")?.id;
    /// let run = store.create_run(experiment, Default::default())?.id;
    /// store.delete_experiment_and_runs(experiment)?;
    /// assert_eq!(store.run(run)?.info.lifecycle_stage, LifecycleStage::Deleted);
    /// store.restore_experiment_and_runs(experiment)?;
    /// assert_eq!(store.runs(experiment, ViewType::ActiveOnly)?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete_experiment_and_runs(&self, id: ExperimentId) -> Result<()> {
        self.experiment(id)?;
        let time_ms = now_ms();
        let mut events = vec![Event::ExperimentDeleted {
            experiment: id,
            time_ms,
        }];
        for run in self.run_infos(id, ViewType::ActiveOnly)? {
            events.push(Event::RunDeleted {
                run: run.id,
                time_ms,
            });
        }
        self.record_all(&events)
    }

    /// Restores an experiment together with every deleted run of it, as MLflow's
    /// RestoreExperiment does, in one append call.
    pub fn restore_experiment_and_runs(&self, id: ExperimentId) -> Result<()> {
        self.experiment(id)?;
        let time_ms = now_ms();
        let mut events = vec![Event::ExperimentRestored {
            experiment: id,
            time_ms,
        }];
        for run in self.run_infos(id, ViewType::DeletedOnly)? {
            events.push(Event::RunRestored {
                run: run.id,
                time_ms,
            });
        }
        self.record_all(&events)
    }

    /// Sets an experiment tag.
    pub fn set_experiment_tag(&self, id: ExperimentId, key: &str, value: &str) -> Result<()> {
        validation::key("experiment tag", key)?;
        validation::value(
            "experiment tag",
            key,
            value,
            validation::EXPERIMENT_TAG_VALUE_CHARS_MAX,
        )?;
        self.experiment(id)?;
        self.record(Event::ExperimentTagSet {
            experiment: id,
            time_ms: now_ms(),
            key: key.to_string(),
            value: value.to_string(),
        })
    }

    /// Deletes an experiment tag.
    pub fn delete_experiment_tag(&self, id: ExperimentId, key: &str) -> Result<()> {
        let experiment = self.experiment(id)?;
        if !experiment.tags.contains_key(key) {
            return Err(Error::NotFound(format!("tag {key:?} of experiment {id}")));
        }
        self.record(Event::ExperimentTagDeleted {
            experiment: id,
            time_ms: now_ms(),
            key: key.to_string(),
        })
    }

    // ---- runs ----

    /// Starts a run in `experiment`, recording the start time and MLflow's system tags (user,
    /// source, git commit, run name, parent).
    pub fn start_run(&self, experiment: ExperimentId, options: RunOptions) -> Result<Run> {
        let found = self.experiment(experiment)?;
        if found.lifecycle_stage == LifecycleStage::Deleted {
            return Err(Error::Deleted {
                what: format!("experiment {experiment}"),
            });
        }
        Run::start(self.clone(), experiment, options)
    }

    /// A handle to log to an existing run again (from this or another process). Its status goes
    /// back to RUNNING, as MLflow's resume does.
    pub fn resume_run(&self, id: RunId) -> Result<Run> {
        Run::resume(self.clone(), id)
    }

    /// A snapshot of the run with `id`.
    pub fn run(&self, id: RunId) -> Result<RunView> {
        self.lookup_fresh(|| {
            self.inner
                .catalog
                .run_entry(id)
                .and_then(|entry| entry.view(&self.inner.catalog))
        })?
        .ok_or_else(|| Error::NotFound(format!("run {id}")))
    }

    /// Snapshots of the runs of `experiment` in `view`, newest first.
    pub fn runs(&self, experiment: ExperimentId, view: ViewType) -> Result<Vec<RunView>> {
        self.refresh_if_stale()?;
        let mut runs = self.inner.catalog.runs(Some(experiment));
        runs.retain(|run| view.includes(run.info.lifecycle_stage));
        Ok(runs)
    }

    /// The attributes of the runs of `experiment` in `view`, newest first: what `runs` gives
    /// without params, tags, metrics or artifacts, and without reading any metric summary.
    pub fn run_infos(&self, experiment: ExperimentId, view: ViewType) -> Result<Vec<RunInfo>> {
        self.refresh_if_stale()?;
        let mut runs = self.inner.catalog.run_infos(Some(experiment));
        runs.retain(|run| view.includes(run.lifecycle_stage));
        Ok(runs)
    }

    /// How many runs in `view` each experiment has (experiments with none are left out): what
    /// `run_infos(..).len()` gives for each, in one pass over the runs instead of one per
    /// experiment.
    pub fn run_counts(&self, view: ViewType) -> Result<HashMap<ExperimentId, usize>> {
        self.refresh_if_stale()?;
        let mut counts = HashMap::new();
        for ((experiment, stage), count) in self.inner.catalog.run_counts() {
            if view.includes(stage) {
                *counts.entry(experiment).or_insert(0) += count;
            }
        }
        Ok(counts)
    }

    /// Soft-deletes a run: logging to it fails until it is restored.
    pub fn delete_run(&self, id: RunId) -> Result<()> {
        self.run(id)?;
        self.record(Event::RunDeleted {
            run: id,
            time_ms: now_ms(),
        })
    }

    /// Restores a deleted run.
    pub fn restore_run(&self, id: RunId) -> Result<()> {
        self.run(id)?;
        self.record(Event::RunRestored {
            run: id,
            time_ms: now_ms(),
        })
    }

    fn lock_catalog(&self) -> Result<File> {
        let (file, path) = self.open_lock_file(CATALOG_LOCK)?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(file)
    }

    /// Opens, creating it, the lock file `name` in the store's root, for the caller to lock.
    pub(crate) fn open_lock_file(&self, name: &str) -> Result<(File, PathBuf)> {
        if self.inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        let path = self.inner.root.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        Ok((file, path))
    }
}
