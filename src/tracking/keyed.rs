//! Writes keyed by run id: the calls a caller that holds no [`Run`](crate::Run) handle makes (a
//! server answering MLflow's REST API, a binding, the command line), and the one write path
//! `Run`'s methods go through as well.
//!
//! Rules (MLflow's):
//! - A batch (`log_batch`) is checked whole before anything is written: sizes, keys, values,
//!   duplicate param keys, changed params and the run's lifecycle stage. A refused batch writes
//!   nothing. Once checking passed, only an I/O error can stop a batch part way; what it wrote
//!   before that is acknowledged.
//! - Params are immutable: the same value again is accepted and writes nothing, a different one
//!   is `Error::ParamChanged`.
//! - Points may come in any step order and from any number of threads at once for one run:
//!   the metric summaries are order-independent (`summary.rs`).
//! - Writes refuse a deleted run (`Error::Deleted`); a finished run still accepts them. No write
//!   changes a run's status or end time, except `update_run`, which changes exactly what it is
//!   given.
//!
//! Invariants:
//! - The hot path (a batch of points to a run this handle has seen) takes one shard of the
//!   run-slot map for reading and the run's own metrics mutex: no lock shared by all runs.
//! - The run-slot map holds only runs whose creation this handle has applied. A run id it does
//!   not hold costs a refresh, then `NotFound`; so ids that reach the map were made by
//!   `Store::start_run` from random bits, and the map's fixed-seed hash cannot be flooded
//!   through ids a network client picks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::artifact::{self, ArtifactReader};
use crate::catalog::{self, Artifact, LifecycleStage, RunEntry, RunInfo};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, RunId};
use crate::tracking::run::{RunOptions, SystemTags, record_new_run};
use crate::tracking::store::Store;
use crate::tracking::{system_tags, validation};
use crate::util::{IdHash, now_ms};
use crate::wal::{Event, InternedKey, RunStatus};

/// One metric point of a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricPoint<'a> {
    /// The metric key.
    pub key: &'a str,
    /// The value; NaN and ±inf are stored bit for bit.
    pub value: f64,
    /// The step.
    pub step: i64,
    /// When it was measured, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Shards of the run-slot map: enough that threads logging to different runs rarely share one.
const RUN_SLOT_SHARDS: usize = 64;

type Shard = RwLock<HashMap<RunId, Arc<RunEntry>, IdHash>>;

/// Run id to the run's catalog entry (its metric table and lifecycle flag), for created runs.
#[derive(Debug)]
pub(crate) struct RunSlots {
    shards: Box<[Shard]>,
}

impl Default for RunSlots {
    fn default() -> Self {
        RunSlots {
            shards: (0..RUN_SLOT_SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl RunSlots {
    fn shard(&self, run: RunId) -> &Shard {
        // Run ids are random bits (see the module doc), so their low bits spread evenly.
        &self.shards[(run.0 as usize) % RUN_SLOT_SHARDS]
    }

    #[inline]
    fn get(&self, run: RunId) -> Option<Arc<RunEntry>> {
        let shard = self
            .shard(run)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(&run).cloned()
    }

    fn insert(&self, entry: Arc<RunEntry>) -> Arc<RunEntry> {
        let mut shard = self
            .shard(entry.id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.entry(entry.id) {
            Entry::Occupied(existing) => Arc::clone(existing.get()),
            Entry::Vacant(vacant) => Arc::clone(vacant.insert(entry)),
        }
    }
}

/// Refuses a write to a deleted run.
#[inline]
fn check_not_deleted(entry: &RunEntry) -> Result<()> {
    if entry.deleted.load(Ordering::Acquire) {
        return Err(Error::Deleted {
            what: format!("run {}", entry.id),
        });
    }
    Ok(())
}

fn check_key_value(what: &str, key: &str, value: &str, chars_max: usize) -> Result<()> {
    validation::key(what, key)?;
    validation::value(what, key, value, chars_max)
}

impl Store {
    /// The catalog entry of `run`, which must exist: known to this handle, or found by a
    /// refresh (another process created it).
    #[inline]
    pub(crate) fn run_slot(&self, run: RunId) -> Result<Arc<RunEntry>> {
        match self.run_slots().get(run) {
            Some(entry) => Ok(entry),
            None => self.run_slot_slow(run),
        }
    }

    #[cold]
    fn run_slot_slow(&self, run: RunId) -> Result<Arc<RunEntry>> {
        let catalog = self.catalog();
        // Single flight: many requests for an unknown id (a network client picks ids) share
        // one refresh instead of queueing a full refresh each.
        if self
            .lookup_fresh(|| catalog.has_run(run).then_some(()))?
            .is_none()
        {
            return Err(Error::NotFound(format!("run {run}")));
        }
        let entry = catalog.run_or_insert(run);
        Ok(self.run_slots().insert(entry))
    }

    /// The entry of `run` for a write: it exists and is not deleted.
    fn writable_run(&self, run: RunId) -> Result<Arc<RunEntry>> {
        let entry = self.run_slot(run)?;
        check_not_deleted(&entry)?;
        Ok(entry)
    }

    /// Creates a run in `experiment` without a handle (MLflow's CreateRun): it stays RUNNING
    /// until `update_run` ends it. Unlike [`Store::start_run`] it records none of this process's
    /// user, source or git tags, only its name and parent tags and `options.tags`: a server's
    /// client sends its own.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// let experiment = store.get_or_create_experiment("e")?.id;
    /// let options = runlog::RunOptions { name: Some("remote".into()), ..Default::default() };
    /// let info = store.create_run(experiment, options)?;
    /// let tags = store.run(info.id)?.tags;
    /// assert_eq!(tags.keys().collect::<Vec<_>>(), ["mlflow.runName"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn create_run(&self, experiment: ExperimentId, options: RunOptions) -> Result<RunInfo> {
        let found = self.experiment(experiment)?;
        if found.lifecycle_stage == LifecycleStage::Deleted {
            return Err(Error::Deleted {
                what: format!("experiment {experiment}"),
            });
        }
        let entry = record_new_run(self, experiment, options, SystemTags::NameAndParentOnly)?;
        Ok(self.run(entry.id)?.info)
    }

    /// Logs metric points, params and tags to `run` with MLflow's batch rules (see the module
    /// doc): everything is checked first, and a refused batch writes nothing. Sizes follow
    /// MLflow's LogBatch: at most 1,000 points, 100 params, 100 tags and 1,000 items in all.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// use runlog::{MetricPoint, Store};
    /// let store = Store::open(dir.path())?;
    /// let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// let id = run.id();
    /// run.detach(); // e.g. a server: requests name the run by id
    /// let point = |step, value| {
    ///     MetricPoint { key: "loss", value, step, timestamp_ms: 1_700_000_000_000 + step }
    /// };
    /// let (params, tags) = ([("lr", "0.01")], [("phase", "warmup")]);
    /// store.log_batch(id, &[point(2, 0.5), point(1, 0.7)], &params, &tags)?;
    /// // Refused whole: the param changed, so the point at step 3 is not written either.
    /// assert!(store.log_batch(id, &[point(3, 0.4)], &[("lr", "0.02")], &[]).is_err());
    /// let view = store.run(id)?;
    /// assert_eq!((view.metrics["loss"].count, view.metrics["loss"].last_value), (2, 0.5));
    /// assert_eq!(view.params["lr"], "0.01");
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_batch(
        &self,
        run: RunId,
        metrics: &[MetricPoint<'_>],
        params: &[(&str, &str)],
        tags: &[(&str, &str)],
    ) -> Result<()> {
        validation::batch_sizes(metrics.len(), params.len(), tags.len())?;
        check_params(params)?;
        for (key, value) in tags {
            check_key_value("tag", key, value, validation::TAG_VALUE_CHARS_MAX)?;
        }
        let entry = self.writable_run(run)?;
        if params.is_empty() && tags.is_empty() {
            return self.append_points_unchecked(&entry, metrics);
        }
        check_new_keys(&catalog::lock(&entry.metrics), metrics)?;
        let time_ms = now_ms();
        let tags: Vec<Event> = tags
            .iter()
            .map(|(key, value)| Event::TagSet {
                run,
                time_ms,
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect();
        self.write_params_and(&entry, params, tags)?;
        self.append_points_unchecked(&entry, metrics)
    }

    /// Checks `params` against the run's logged ones and writes the new ones, then `then`
    /// (the batch's tags), in one append call: one msync under `Durability::Sync`. The run's
    /// param lock is held across the check and the write so two writers cannot both pass it.
    fn write_params_and(
        &self,
        entry: &RunEntry,
        params: &[(&str, &str)],
        then: Vec<Event>,
    ) -> Result<()> {
        if params.is_empty() {
            return self.record_all(&then);
        }
        // Another process's value of the same key must be seen to be refused; what it logged
        // within the last `refresh_interval` may still be missed (the earliest value then wins).
        self.refresh_if_stale()?;
        let _guard = catalog::lock(&entry.param_writes);
        let mut new = Vec::with_capacity(params.len());
        for (key, value) in params {
            match entry.param(key) {
                Some(existing) if existing == *value => {}
                Some(existing) => {
                    return Err(Error::ParamChanged {
                        run: entry.id,
                        key: key.to_string(),
                        existing,
                        attempted: value.to_string(),
                    });
                }
                None => new.push((key, value)),
            }
        }
        let time_ms = now_ms();
        let mut events: Vec<Event> = new
            .into_iter()
            .map(|(key, value)| Event::ParamLogged {
                run: entry.id,
                time_ms,
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect();
        events.extend(then);
        self.record_all(&events)
    }

    /// Appends points to a run whose entry the caller holds and checked is not deleted,
    /// checking every new key before the first point is written.
    #[inline]
    fn append_points_unchecked(&self, entry: &RunEntry, points: &[MetricPoint<'_>]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        // Held across the appends so that this handle's summary of a series counts a point
        // exactly when the log holds it.
        let mut metrics = catalog::lock(&entry.metrics);
        check_new_keys(&metrics, points)?;
        if let Some(key) = one_key(points) {
            // A batch of one key (a history uploaded in pieces, MLflow's `log_batch` of one
            // metric over many steps) is one columns record: encoded a column at a time, and
            // read back a record at a time without decoding other runs' or keys' points.
            let steps: Vec<i64> = points.iter().map(|p| p.step).collect();
            let timestamps: Vec<i64> = points.iter().map(|p| p.timestamp_ms).collect();
            let values: Vec<f64> = points.iter().map(|p| p.value).collect();
            return self.columns_locked(
                &mut metrics,
                entry.id,
                key,
                (&steps, &timestamps, &values),
            );
        }
        // A batch is mostly runs of one key: a key equal to the point before's takes its slot
        // without a lookup.
        let mut last: Option<(&str, usize)> = None;
        let slots: Vec<usize> = points
            .iter()
            .map(|point| match last {
                Some((key, slot)) if key == point.key => slot,
                _ => {
                    let slot = metrics.slot_or_insert(point.key);
                    last = Some((point.key, slot));
                    slot
                }
            })
            .collect();
        // One append call for the batch: under `Durability::Sync` it is one msync, not one per
        // point. Points are counted once the call is over (after its sync): those the log holds.
        let columns = points
            .iter()
            .map(|p| (p.key, p.step, p.timestamp_ms, p.value));
        self.log().log_points(entry.id, columns, &mut |held| {
            for (point, slot) in points.iter().zip(&slots).take(held) {
                metrics.own[*slot].update(point.step, point.timestamp_ms, point.value);
            }
        })
    }

    /// Appends one point `(step, timestamp_ms, value)` of `key` to a run whose entry the
    /// caller holds (`Run::log_metric`): `append_points_unchecked` with one point and the
    /// lifecycle check, at the cost of one
    /// key lookup (the run's metric table, which also holds the key's writer id).
    #[inline]
    pub(crate) fn append_point(
        &self,
        entry: &RunEntry,
        key: &str,
        point: (i64, i64, f64),
    ) -> Result<()> {
        check_not_deleted(entry)?;
        // Held across the append, as in `append_points_unchecked`.
        let mut metrics = catalog::lock(&entry.metrics);
        let slot = match metrics.slot(key) {
            Some(slot) => slot,
            None => {
                validation::key("metric", key)?;
                metrics.slot_or_insert(key)
            }
        };
        let catalog::MetricTable { own, interned, .. } = &mut *metrics;
        let (Some(summary), Some(interned)) = (own.get_mut(slot), interned.get(slot)) else {
            // Slots are only appended, to every column at once: unreachable.
            return Err(Error::InvalidInput(format!(
                "no metric slot {slot} for {key:?}"
            )));
        };
        self.log()
            .log_point_interned(entry.id, key, interned, point, |_| {})?;
        let (step, timestamp_ms, value) = point;
        summary.update(step, timestamp_ms, value);
        Ok(())
    }

    /// Appends one point `(step, timestamp_ms, value)` of `key` to a run whose entry the
    /// caller holds (a metric handle): `append_point` with the key's id in `interned`, and
    /// the point added to the series' summaries for handles (`catalog::LaneSummaries`, taken
    /// into `series` with the series' slot on the first point) under the lane's lock, so that
    /// no lock of the run's is taken once `series` is set.
    #[inline]
    pub(crate) fn append_interned_point(
        &self,
        entry: &RunEntry,
        key: &str,
        series: &OnceLock<Arc<catalog::LaneSummaries>>,
        interned: &InternedKey,
        point: (i64, i64, f64),
    ) -> Result<()> {
        check_not_deleted(entry)?;
        let series = series.get_or_init(|| {
            catalog::lock(&entry.metrics).lane_summaries(key, self.log().options().lanes)
        });
        let (step, timestamp_ms, value) = point;
        self.log()
            .log_point_interned(entry.id, key, interned, point, |lane| {
                series.add(lane, step, timestamp_ms, value);
            })
    }

    /// Appends a column-wise batch of one key to a run whose entry the caller holds.
    pub(crate) fn append_columns(
        &self,
        entry: &RunEntry,
        key: &str,
        steps: &[i64],
        timestamps_ms: &[i64],
        values: &[f64],
    ) -> Result<()> {
        check_not_deleted(entry)?;
        validation::key("metric", key)?;
        let mut metrics = catalog::lock(&entry.metrics);
        self.columns_locked(&mut metrics, entry.id, key, (steps, timestamps_ms, values))
    }

    /// Appends columns of one key of `run`, whose metrics lock the caller holds (`metrics`),
    /// and counts in the series' summary exactly the points the log holds once the call is
    /// over, even when a batch spans records and a later one fails. The series gets its slot
    /// only once a point is held.
    fn columns_locked(
        &self,
        metrics: &mut catalog::MetricTable,
        run: RunId,
        key: &str,
        (steps, timestamps_ms, values): (&[i64], &[i64], &[f64]),
    ) -> Result<()> {
        self.log()
            .log_columns_counted(run, key, (steps, timestamps_ms, values), &mut |held| {
                if held == 0 {
                    return;
                }
                let slot = metrics.slot_or_insert(key);
                let summary = &mut metrics.own[slot];
                let columns = steps.iter().zip(timestamps_ms).zip(values);
                for ((step, timestamp), value) in columns.take(held) {
                    summary.update(*step, *timestamp, *value);
                }
            })
    }

    /// Logs one metric point to `run`: `log_batch` with one point.
    pub fn log_metric(
        &self,
        run: RunId,
        key: &str,
        value: f64,
        step: i64,
        timestamp_ms: i64,
    ) -> Result<()> {
        let point = MetricPoint {
            key,
            value,
            step,
            timestamp_ms,
        };
        self.log_batch(run, &[point], &[], &[])
    }

    /// Logs a param of `run`: the same value again is accepted, a different one is
    /// `Error::ParamChanged` naming both.
    pub fn log_param(&self, run: RunId, key: &str, value: &str) -> Result<()> {
        self.log_batch(run, &[], &[(key, value)], &[])
    }

    /// Sets a tag of `run` (tags are mutable). Setting `mlflow.runName` renames the run, as in
    /// MLflow.
    pub fn set_tag(&self, run: RunId, key: &str, value: &str) -> Result<()> {
        self.log_batch(run, &[], &[], &[(key, value)])
    }

    /// Deletes a tag of `run`; `NotFound` if it is not set.
    pub fn delete_tag(&self, run: RunId, key: &str) -> Result<()> {
        // The view refreshes first, so the lifecycle check below is as current as the tags.
        let view = self.run(run)?;
        self.writable_run(run)?;
        if !view.tags.contains_key(key) {
            return Err(Error::NotFound(format!("tag {key:?} of run {run}")));
        }
        self.record(Event::TagDeleted {
            run,
            time_ms: now_ms(),
            key: key.to_string(),
        })
    }

    /// Changes what is given of `run`'s status, end time (ms since the Unix epoch) and name,
    /// and nothing else (MLflow's UpdateRun): a status without an end time keeps the end time,
    /// and an end time without a status keeps the status. Returns the run's attributes after.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// use runlog::RunStatus;
    /// let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// let id = run.id();
    /// run.detach();
    /// let end = Some(1_700_000_000_000);
    /// let info = store.update_run(id, Some(RunStatus::Finished), end, Some("baseline"))?;
    /// assert_eq!((info.status, info.end_time_ms), (RunStatus::Finished, Some(1_700_000_000_000)));
    /// assert_eq!(store.run(id)?.tags["mlflow.runName"], "baseline");
    /// # Ok(())
    /// # }
    /// ```
    pub fn update_run(
        &self,
        run: RunId,
        status: Option<RunStatus>,
        end_time_ms: Option<i64>,
        name: Option<&str>,
    ) -> Result<RunInfo> {
        if let Some(name) = name {
            validation::value(
                "tag",
                system_tags::RUN_NAME,
                name,
                validation::TAG_VALUE_CHARS_MAX,
            )?;
        }
        // The view refreshes first: the status and end time kept are the newest known.
        let info = self.run(run)?.info;
        let entry = self.writable_run(run)?;
        if status.is_some() || end_time_ms.is_some() {
            let status = status.unwrap_or(info.status);
            self.set_status(&entry, status, end_time_ms.or(info.end_time_ms))?;
        }
        if let Some(name) = name {
            self.record(Event::TagSet {
                run,
                time_ms: now_ms(),
                key: system_tags::RUN_NAME.to_string(),
                value: name.to_string(),
            })?;
        }
        Ok(self.run(run)?.info)
    }

    /// Records `status` and `end_time_ms` of a run whose entry the caller holds.
    pub(crate) fn set_status(
        &self,
        entry: &RunEntry,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<()> {
        self.record(Event::RunStatusChanged {
            run: entry.id,
            time_ms: now_ms(),
            status,
            end_time_ms,
        })
    }

    /// Copies the file at `source` into `run`'s artifact folder under its file name.
    pub fn log_artifact(&self, run: RunId, source: impl AsRef<Path>) -> Result<Artifact> {
        let source = source.as_ref();
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::InvalidInput(format!("{} has no UTF-8 file name", source.display()))
            })?
            .to_string();
        let mut file = std::fs::File::open(source)
            .map_err(|e| Error::io("open artifact source", source, e))?;
        self.store_artifact(run, &name, &mut file)
    }

    /// Stores `bytes` as the artifact `path` (relative, may contain folders) of `run`.
    /// Artifacts are write-once: a path already stored is `AlreadyExists`.
    pub fn log_artifact_bytes(&self, run: RunId, path: &str, bytes: &[u8]) -> Result<Artifact> {
        self.store_artifact(run, path, &mut std::io::Cursor::new(bytes))
    }

    /// Stores what `source` yields until its end as the artifact `path` of `run`, a buffer at a
    /// time, so an artifact of any size costs no more memory than one buffer. An error from
    /// `source` stores nothing (the partial file is removed) and is returned as `Error::Io`.
    /// Write-once, as [`Store::log_artifact_bytes`].
    pub fn log_artifact_from(
        &self,
        run: RunId,
        path: &str,
        source: &mut dyn std::io::Read,
    ) -> Result<Artifact> {
        self.store_artifact(run, path, source)
    }

    /// Artifact `path` of `run` opened for reading a buffer at a time, so an artifact of any
    /// size costs one buffer: the reader's last read fails (`InvalidData`) unless the content
    /// is exactly what was recorded (size and SHA-256), so nothing it gives is trusted before
    /// its end.
    pub fn open_artifact(&self, run: RunId, path: &str) -> Result<ArtifactReader> {
        let view = self.run(run)?;
        let artifact = view
            .artifacts
            .get(path)
            .ok_or_else(|| Error::NotFound(format!("artifact {path:?} of run {run}")))?;
        artifact::open(&artifact::run_dir(self.root(), run), artifact)
    }

    /// The content of artifact `path` of `run`, checked against its recorded SHA-256.
    pub fn read_artifact(&self, run: RunId, path: &str) -> Result<Vec<u8>> {
        let view = self.run(run)?;
        let artifact = view
            .artifacts
            .get(path)
            .ok_or_else(|| Error::NotFound(format!("artifact {path:?} of run {run}")))?;
        artifact::read(&artifact::run_dir(self.root(), run), artifact)
    }

    /// The direct children of artifact folder `dir` of `run` (`""` for its artifact folder),
    /// in path order; a `dir` that is a file or holds nothing lists nothing.
    pub fn list_artifacts(&self, run: RunId, dir: &str) -> Result<Vec<artifact::ArtifactEntry>> {
        if !dir.is_empty() {
            validation::artifact_path(dir)?;
        }
        Ok(artifact::list(&self.run(run)?.artifacts, dir))
    }

    /// Deletes artifact `path` of `run`, or every artifact under folder `path`, as MLflow's
    /// artifact stores do; a path that names nothing is `NotFound`. Returns what was deleted.
    pub fn delete_artifacts(&self, run: RunId, path: &str) -> Result<Vec<String>> {
        validation::artifact_path(path)?;
        if self.options().read_only {
            return Err(Error::ReadOnly);
        }
        let view = self.run(run)?;
        self.writable_run(run)?;
        let folder = format!("{path}/");
        let doomed: Vec<String> = view
            .artifacts
            .keys()
            .filter(|stored| *stored == path || stored.starts_with(&folder))
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Err(Error::NotFound(format!("artifact {path:?} of run {run}")));
        }
        // The listed paths come from the log: one that could leave the run's folder (a damaged
        // or forged record) refuses the whole deletion before anything is recorded.
        let run_dir = artifact::run_dir(self.root(), run);
        for stored in &doomed {
            artifact::file_in(&run_dir, stored)?;
        }
        self.delete_artifact_files(|| {
            for stored in &doomed {
                self.record(Event::ArtifactDeleted {
                    run,
                    time_ms: now_ms(),
                    path: stored.clone(),
                })?;
            }
            // Whatever the durability level, the deletions are durable before any file goes: a
            // power loss must not keep an event naming a removed file.
            self.flush()?;
            for stored in &doomed {
                artifact::remove(&run_dir, stored, self.options().storage.as_ref())?;
            }
            Ok(())
        })?;
        Ok(doomed)
    }

    fn store_artifact(
        &self,
        run: RunId,
        path: &str,
        source: &mut dyn std::io::Read,
    ) -> Result<Artifact> {
        validation::artifact_path(path)?;
        if self.options().read_only {
            return Err(Error::ReadOnly);
        }
        let view = self.run(run)?;
        self.writable_run(run)?;
        if view.artifacts.contains_key(path) {
            return Err(Error::AlreadyExists(format!(
                "artifact {path:?} of run {run} (artifacts are write-once)"
            )));
        }
        let folder = artifact::run_dir(self.root(), run);
        let owner = format!("run {run}");
        let listed = || Ok(self.run(run)?.artifacts.contains_key(path));
        self.publish_artifact(&folder, &owner, path, source, listed, |stored| {
            let time_ms = now_ms();
            self.record(Event::ArtifactRecorded {
                run,
                time_ms,
                size_bytes: stored.size_bytes,
                sha256: stored.sha256,
                path: path.to_string(),
            })?;
            Ok(Artifact {
                path: path.to_string(),
                size_bytes: stored.size_bytes,
                sha256: stored.sha256,
                time_ms,
            })
        })
    }
}

/// Checks the keys and values of a batch's params, and that no key comes twice (MLflow refuses
/// duplicate param keys in one batch even with equal values).
fn check_params(params: &[(&str, &str)]) -> Result<()> {
    let mut seen: HashMap<&str, &str> = HashMap::with_capacity(params.len());
    for (key, value) in params {
        check_key_value("param", key, value, validation::PARAM_VALUE_CHARS_MAX)?;
        if let Some(other) = seen.insert(key, value) {
            return Err(Error::InvalidInput(format!(
                "param '{key}' is given twice in one batch, as '{other}' and '{value}'"
            )));
        }
    }
    Ok(())
}

/// Points a batch needs before its points of one key go into a columns record rather than a
/// stream: below it, a stream's few bytes a point beat a record's head.
const COLUMNS_BATCH_POINTS_MIN: usize = 16;

/// The one key of `points`, if they are at least [`COLUMNS_BATCH_POINTS_MIN`] and share it.
fn one_key<'a>(points: &[MetricPoint<'a>]) -> Option<&'a str> {
    let first = points.first()?.key;
    (points.len() >= COLUMNS_BATCH_POINTS_MIN && points.iter().all(|p| p.key == first))
        .then_some(first)
}

/// Validates the keys of `points` the run has no series for yet (known keys were validated
/// when their series began).
#[inline]
fn check_new_keys(metrics: &catalog::MetricTable, points: &[MetricPoint<'_>]) -> Result<()> {
    let mut checked = None;
    for point in points {
        // The point before's key, when it is the same, was checked.
        if checked == Some(point.key) {
            continue;
        }
        if metrics.slot(point.key).is_none() {
            validation::key("metric", point.key)?;
        }
        checked = Some(point.key);
    }
    Ok(())
}
