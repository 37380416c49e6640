//! `MetricHandle`: one metric key of one run, resolved once, for logging a point per call at
//! the lowest cost the log allows.
//!
//! A handle holds what `Run::log_metric` looks up by key on every call: the run's catalog entry,
//! the series' summaries for handles (`catalog::LaneSummaries`), and the key's id in the writer
//! that last logged it (`InternedKey`). Logging through it hashes nothing, allocates nothing
//! and takes one lock, the calling thread's writer lane, under which it also adds the point to
//! the series' summary: no lock of the run's. It reads the wall clock through `clock.rs`.
//!
//! Invariants:
//! - A point logged through a handle is exactly the point `Run::log_metric_at` would log with
//!   the same arguments (same record; the run's summary of the series counts it the same, up
//!   to the rounding of `sum` when several paths or lanes logged the series), and is refused
//!   in exactly the same cases, with the same errors: `Deleted` once the run is deleted,
//!   `Forked` in a forked child, `Poisoned` after a failed sync, `ReadOnly` on a read-only
//!   store.
//! - A read of the run that starts after a call returned counts its point.
//! - The series' slot is taken on the first point, not when the handle is made: a handle that
//!   never logs leaves no trace in the catalog.
//! - A series keeps its slot and its summaries for handles for good (`catalog`), so the ones a
//!   handle remembers never go stale.

use std::sync::{Arc, OnceLock};

use crate::catalog::{LaneSummaries, RunEntry};
use crate::error::Result;
use crate::ids::RunId;
use crate::tracking::clock;
use crate::tracking::store::Store;
use crate::wal::InternedKey;

/// One metric key of one run, ready to log to: made by [`Run::metric`](crate::Run::metric).
///
/// `Send + Sync` and cheap to clone: threads may share one handle or each clone it (a clone
/// remembers its own writer lane's key id, so per-thread clones never trade it back and forth).
///
/// The handle outlives nothing it should not: it holds the store and the run's entry, not the
/// [`Run`](crate::Run), so it behaves like the store's by-id writes.
/// - After the run ends (`finish`, `end`, or its `Run` dropped) points are still accepted, as
///   MLflow accepts metrics on a finished run; the run's status does not change.
/// - Once the run is deleted, every call is `Error::Deleted` (restored, it accepts points
///   again).
/// - In a process forked from the one that opened the store, every call is `Error::Forked`.
///
/// ```
/// # fn main() -> runlog::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
/// # let store = runlog::Store::open(dir.path())?;
/// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
/// let loss = run.metric("train/loss")?;
/// for step in 0..100 {
///     loss.log(1.0 / (step + 1) as f64, step)?;
/// }
/// loss.log_at(0.001, 100, 1_700_000_000_000)?;
/// assert_eq!(run.view()?.metrics["train/loss"].count, 101);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MetricHandle {
    store: Store,
    entry: Arc<RunEntry>,
    key: Arc<str>,
    /// The series' summaries for handles, set on the first point (with the series' slot).
    series: OnceLock<Arc<LaneSummaries>>,
    interned: InternedKey,
}

impl Clone for MetricHandle {
    fn clone(&self) -> Self {
        MetricHandle {
            store: self.store.clone(),
            entry: Arc::clone(&self.entry),
            key: Arc::clone(&self.key),
            series: self.series.clone(),
            interned: self.interned.clone(),
        }
    }
}

impl MetricHandle {
    /// A handle to `key` of the run of `entry`; the key is checked as the first point of a new
    /// series would be.
    pub(crate) fn new(store: Store, entry: Arc<RunEntry>, key: &str) -> Result<MetricHandle> {
        crate::tracking::validation::key("metric", key)?;
        Ok(MetricHandle {
            store,
            entry,
            key: Arc::from(key),
            series: OnceLock::new(),
            interned: InternedKey::default(),
        })
    }

    /// The metric key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The run it logs to.
    pub fn run_id(&self) -> RunId {
        self.entry.id
    }

    /// Logs one point, timestamped now: the same point as `run.log_metric(key, value, step)`.
    /// The timestamp is the wall clock's millisecond at the call, exactly (see `clock.rs`).
    #[inline]
    pub fn log(&self, value: f64, step: i64) -> Result<()> {
        self.log_at(value, step, clock::now_ms())
    }

    /// Logs one point with its timestamp (ms since the Unix epoch): the same point as
    /// `run.log_metric_at(key, value, step, timestamp_ms)`. NaN and ±inf are stored bit for
    /// bit.
    #[inline]
    pub fn log_at(&self, value: f64, step: i64, timestamp_ms: i64) -> Result<()> {
        self.store.append_interned_point(
            &self.entry,
            &self.key,
            &self.series,
            &self.interned,
            (step, timestamp_ms, value),
        )
    }
}
