//! `Run`: the handle a training job logs through. Its writes are the keyed writes of
//! `keyed.rs` (one write path, one set of rules); the handle adds the run's lifetime and skips
//! the run-id lookup on the hot path.
//!
//! Invariants:
//! - A change is acknowledged only once the log accepted it; the catalog is updated after.
//! - `log_metric` on a key the run already used validates nothing again, allocates nothing and
//!   takes only this run's metrics mutex and its thread's writer lane: no lock shared across
//!   runs.
//! - A handle ends its run exactly once: FINISHED by `finish()`, the given status by `end()`,
//!   and when dropped without either, FAILED if the thread is panicking, else KILLED.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalog::{self, Artifact, RunEntry, RunView};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, RunId};
use crate::tracking::clock;
use crate::tracking::metric_handle::MetricHandle;
use crate::tracking::store::Store;
use crate::tracking::{system_tags, validation};
use crate::util::{now_ms, random_u64};
use crate::wal::{Event, RunStatus};

/// How to start a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Its name (default: `run-` and the first 8 hex digits of its id).
    pub name: Option<String>,
    /// The parent run, for nested runs.
    pub parent: Option<RunId>,
    /// Tags to set at start, besides the system tags.
    pub tags: Vec<(String, String)>,
    /// Start time, ms since the Unix epoch (default: now).
    pub start_time_ms: Option<i64>,
}

/// A run being logged to. `Send + Sync`: threads may log through one `&Run`.
///
/// ```
/// # fn main() -> runlog::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
/// # let store = runlog::Store::open(dir.path())?;
/// # let experiment = store.get_or_create_experiment("demo")?;
/// let run = store.start_run(experiment.id, runlog::RunOptions::default())?;
/// for step in 0..100 {
///     run.log_metrics(step, &[("loss", 1.0 / (step + 1) as f64), ("acc", step as f64 / 100.0)])?;
/// }
/// run.finish()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Run {
    store: Store,
    entry: Arc<RunEntry>,
    ended: AtomicBool,
}

/// Which of MLflow's system tags a new run gets besides its name and parent tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SystemTags {
    /// The user, source and git commit of this process: the process is the one logging.
    FromProcess,
    /// None: the caller (a server answering a remote client) sends its own.
    NameAndParentOnly,
}

/// Records a new run in `experiment` with `options`' tags and the system tags `system` asks
/// for, and returns its catalog entry.
pub(crate) fn record_new_run(
    store: &Store,
    experiment: ExperimentId,
    options: RunOptions,
    system: SystemTags,
) -> Result<Arc<RunEntry>> {
    for (key, value) in &options.tags {
        validation::key("tag", key)?;
        validation::value("tag", key, value, validation::TAG_VALUE_CHARS_MAX)?;
    }
    if let Some(parent) = options.parent {
        store.run(parent)?;
    }
    let id = RunId((u128::from(random_u64()) << 64) | u128::from(random_u64()));
    let name = options
        .name
        .unwrap_or_else(|| format!("run-{}", &id.to_string()[..8]));
    let time_ms = options.start_time_ms.unwrap_or_else(now_ms);
    store.record(Event::RunCreated {
        run: id,
        time_ms,
        experiment,
        parent: options.parent,
        name: name.clone(),
    })?;
    let entry = store.catalog().run_or_insert(id);
    let system = match system {
        SystemTags::FromProcess => system_tags::for_new_run(&name, options.parent),
        SystemTags::NameAndParentOnly => system_tags::name_and_parent(&name, options.parent),
    };
    let tags = system
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(options.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (key, value) in tags {
        store.record(Event::TagSet {
            run: id,
            time_ms,
            key: key.to_string(),
            value: value.to_string(),
        })?;
    }
    Ok(entry)
}

impl Run {
    pub(crate) fn start(
        store: Store,
        experiment: ExperimentId,
        options: RunOptions,
    ) -> Result<Run> {
        let entry = record_new_run(&store, experiment, options, SystemTags::FromProcess)?;
        Ok(Run {
            store,
            entry,
            ended: AtomicBool::new(false),
        })
    }

    pub(crate) fn resume(store: Store, id: RunId) -> Result<Run> {
        let view = store.run(id)?;
        if view.info.lifecycle_stage == catalog::LifecycleStage::Deleted {
            return Err(Error::Deleted {
                what: format!("run {id}"),
            });
        }
        let entry = store.catalog().run_or_insert(id);
        let run = Run {
            store,
            entry,
            ended: AtomicBool::new(false),
        };
        run.store.set_status(&run.entry, RunStatus::Running, None)?;
        Ok(run)
    }

    /// The run's id.
    pub fn id(&self) -> RunId {
        self.entry.id
    }

    /// A snapshot of the run.
    pub fn view(&self) -> Result<RunView> {
        self.store.run(self.entry.id)
    }

    /// Logs a param. Params are immutable: the same value again is accepted, a different one is
    /// `Error::ParamChanged` naming both.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// run.log_param("lr", "0.01")?;
    /// run.log_param("lr", "0.01")?; // the same value: fine
    /// assert!(matches!(run.log_param("lr", "0.02"), Err(runlog::Error::ParamChanged { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_param(&self, key: &str, value: &str) -> Result<()> {
        self.store.log_param(self.entry.id, key, value)
    }

    /// Logs several params; all are checked before any is written, in time linear in their
    /// number. A key given twice with one value is logged once; with two values it is refused.
    pub fn log_params(&self, params: &[(&str, &str)]) -> Result<()> {
        let mut given: HashMap<&str, &str> = HashMap::with_capacity(params.len());
        for &(key, value) in params {
            validation::key("param", key)?;
            validation::value("param", key, value, validation::PARAM_VALUE_CHARS_MAX)?;
            match given.insert(key, value) {
                Some(other) if other != value => {
                    return Err(Error::InvalidInput(format!(
                        "param '{key}' is given twice in one call, as '{other}' and '{value}'"
                    )));
                }
                _ => {}
            }
        }
        params
            .iter()
            .try_for_each(|(key, value)| self.log_param(key, value))
    }

    /// Sets a tag (tags are mutable).
    pub fn set_tag(&self, key: &str, value: &str) -> Result<()> {
        self.store.set_tag(self.entry.id, key, value)
    }

    /// Deletes a tag; `NotFound` if it is not set.
    pub fn delete_tag(&self, key: &str) -> Result<()> {
        self.store.delete_tag(self.entry.id, key)
    }

    /// Sets the run's notes (the `mlflow.note.content` tag).
    pub fn set_note(&self, text: &str) -> Result<()> {
        self.set_tag(system_tags::NOTE, text)
    }

    /// A handle to the metric `key` of this run, for logging it many times: each call through
    /// it costs no key lookup (see [`MetricHandle`] for what it does once the run ends or is
    /// deleted). `InvalidInput` if the key is not a valid metric key.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// let loss = run.metric("loss")?;
    /// loss.log(0.5, 0)?;
    /// run.log_metric("loss", 0.25, 1)?; // the same series
    /// assert_eq!(run.view()?.metrics["loss"].count, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn metric(&self, key: &str) -> Result<MetricHandle> {
        MetricHandle::new(self.store.clone(), Arc::clone(&self.entry), key)
    }

    /// Logs one metric point, timestamped now (the wall clock's millisecond, read as
    /// [`MetricHandle::log`] reads it).
    #[inline]
    pub fn log_metric(&self, key: &str, value: f64, step: i64) -> Result<()> {
        self.log_metric_at(key, value, step, clock::now_ms())
    }

    /// Logs one metric point with its timestamp (ms since the Unix epoch). NaN and ±inf are
    /// stored and returned bit for bit. Several values at one step are all kept; the latest value
    /// of a key is the one with the greatest (step, timestamp), as in MLflow.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// run.log_metric_at("loss", 0.5, 10, 1_700_000_000_000)?;
    /// run.log_metric_at("loss", f64::NAN, 3, 1_700_000_000_500)?; // an older step, logged later
    /// let loss = run.view()?.metrics["loss"];
    /// assert_eq!((loss.count, loss.last_step, loss.last_value), (2, 10, 0.5));
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn log_metric_at(&self, key: &str, value: f64, step: i64, timestamp_ms: i64) -> Result<()> {
        self.store
            .append_point(&self.entry, key, (step, timestamp_ms, value))
    }

    /// Logs several keys at one step with one timestamp.
    pub fn log_metrics(&self, step: i64, points: &[(&str, f64)]) -> Result<()> {
        let timestamp_ms = clock::now_ms();
        points
            .iter()
            .try_for_each(|(key, value)| self.log_metric_at(key, *value, step, timestamp_ms))
    }

    /// Logs a column-wise batch of one key: the fast path for many points at once. Timestamps
    /// default to now for every point.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// let steps: Vec<i64> = (0..1000).collect();
    /// let values: Vec<f64> = steps.iter().map(|s| 1.0 / (*s + 1) as f64).collect();
    /// run.log_batch("val/loss", &steps, None, &values)?;
    /// assert_eq!(run.view()?.metrics["val/loss"].count, 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_batch(
        &self,
        key: &str,
        steps: &[i64],
        timestamps_ms: Option<&[i64]>,
        values: &[f64],
    ) -> Result<()> {
        if let Some(timestamps_ms) = timestamps_ms {
            return (self.store).append_columns(&self.entry, key, steps, timestamps_ms, values);
        }
        // One timestamp for every point, given a record's worth of points at a time: a column
        // of it as long as a batch of millions would cost a fault and a fill per page.
        if steps.len() != values.len() {
            return Err(Error::InvalidInput(format!(
                "column lengths differ: {} steps, {} values",
                steps.len(),
                values.len()
            )));
        }
        let chunk = crate::limits::BATCH_POINTS_MAX;
        let now = vec![now_ms(); steps.len().min(chunk)];
        if steps.len() <= chunk {
            return (self.store).append_columns(&self.entry, key, steps, &now, values);
        }
        for (steps, values) in steps.chunks(chunk).zip(values.chunks(chunk)) {
            (self.store).append_columns(&self.entry, key, steps, &now[..steps.len()], values)?;
        }
        Ok(())
    }

    /// Copies the file at `source` into the run's artifact folder under its file name.
    pub fn log_artifact(&self, source: impl AsRef<Path>) -> Result<Artifact> {
        self.store.log_artifact(self.entry.id, source)
    }

    /// Stores `bytes` as the artifact `path` (relative, may contain folders).
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// let stored = run.log_artifact_bytes("model/config.json", br#"{"layers": 18}"#)?;
    /// assert_eq!(stored.size_bytes, 14);
    /// assert_eq!(run.read_artifact("model/config.json")?, br#"{"layers": 18}"#);
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_artifact_bytes(&self, path: &str, bytes: &[u8]) -> Result<Artifact> {
        self.store.log_artifact_bytes(self.entry.id, path, bytes)
    }

    /// The run's artifacts, by path.
    pub fn artifacts(&self) -> Result<Vec<Artifact>> {
        Ok(self.view()?.artifacts.into_values().collect())
    }

    /// The content of artifact `path`, checked against its recorded SHA-256.
    pub fn read_artifact(&self, path: &str) -> Result<Vec<u8>> {
        self.store.read_artifact(self.entry.id, path)
    }

    /// Lets go of the handle without ending the run: it stays as it is (RUNNING, unless ended
    /// elsewhere), for this or another process to resume. Dropping a handle instead ends the
    /// run as KILLED.
    pub fn detach(self) {
        self.ended.store(true, Ordering::Release);
    }

    /// Ends the run as FINISHED.
    pub fn finish(self) -> Result<()> {
        self.end(RunStatus::Finished)
    }

    /// Ends the run with `status` (FINISHED, FAILED or KILLED).
    pub fn end(self, status: RunStatus) -> Result<()> {
        if matches!(status, RunStatus::Running | RunStatus::Scheduled) {
            return Err(Error::InvalidInput(format!(
                "{} is not an end status",
                status.as_str()
            )));
        }
        self.end_inner(status)
    }

    fn end_inner(&self, status: RunStatus) -> Result<()> {
        if self.ended.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.store.set_status(&self.entry, status, Some(now_ms()))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let status = if std::thread::panicking() {
            RunStatus::Failed
        } else {
            RunStatus::Killed
        };
        // Nothing can be returned from drop; a failure here leaves the run RUNNING, which is
        // what its log says.
        let _ = self.end_inner(status);
    }
}
