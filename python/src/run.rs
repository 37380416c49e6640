//! `runlog.Run`: a run being logged to, and a context manager that ends it.
//!
//! Invariants: the engine's `Run` handle lives here until the run is ended through this
//! object (`end`, `finish`, leaving a `with` block) and is then dropped, so later logging is
//! refused; a handle dropped without being ended (garbage-collected, or the process leaving
//! the block some other way) ends the run as KILLED, which is the engine's `Drop`.

use std::collections::HashMap;
use std::sync::RwLock;

use pyo3::prelude::*;
use pyo3::types::PyType;
use runlog::RunStatus;

use crate::arrow;
use crate::errors::{invalid, to_py};
use crate::views::{Artifact, RunData};

/// Whether a single write is synced before it returns, which decides if it is worth releasing
/// the GIL for. A single buffered call keeps the GIL: releasing and retaking it costs more than
/// the append. The price is that such a call can still wait on the disk with the GIL held:
/// the interval flusher holds a lane's lock while it syncs that lane, so a write to the lane
/// waits for the sync (about once per flush interval), and the append that rotates a segment
/// syncs the finished segment itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Writes land in the page cache; a call waits only for a lane's interval sync or a
    /// segment rotation.
    Buffered,
    /// Every write is synced before it returns.
    Synced,
}

/// A run being logged to. Use it as a context manager: leaving the block ends the run
/// FINISHED, an exception ends it FAILED (and is re-raised), and a run never ended is KILLED.
#[pyclass(frozen, module = "runlog")]
pub struct Run {
    id: String,
    writes: Writes,
    handle: RwLock<Option<runlog::Run>>,
}

impl Run {
    /// Wraps a started run.
    pub fn new(run: runlog::Run, writes: Writes) -> Run {
        Run {
            id: run.id().to_string(),
            writes,
            handle: RwLock::new(Some(run)),
        }
    }

    /// Calls `f` on the live handle, with the GIL released when `detach` says so.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        detach: bool,
        f: impl FnOnce(&runlog::Run) -> runlog::Result<T> + Send,
    ) -> PyResult<T> {
        let call = || -> PyResult<T> {
            let guard = self.handle.read().map_err(|_| {
                invalid(format!("run {} handle is unusable after a panic", self.id))
            })?;
            match guard.as_ref() {
                Some(run) => f(run).map_err(to_py),
                None => Err(invalid(format!(
                    "run {} has ended; resume it to log more",
                    self.id
                ))),
            }
        };
        if detach { py.detach(call) } else { call() }
    }

    fn end_with(&self, py: Python<'_>, status: RunStatus) -> PyResult<()> {
        py.detach(|| {
            let taken = self
                .handle
                .write()
                .map_err(|_| invalid(format!("run {} handle is unusable after a panic", self.id)))?
                .take();
            match taken {
                Some(run) => run.end(status).map_err(to_py),
                None => Ok(()),
            }
        })
    }
}

#[pymethods]
impl Run {
    /// The run's id (32 hex digits).
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// Logs one point; the timestamp is taken inside.
    fn log_metric(&self, py: Python<'_>, key: &str, value: f64, step: i64) -> PyResult<()> {
        self.with(py, self.writes == Writes::Synced, |run| {
            run.log_metric(key, value, step)
        })
    }

    /// A handle to metric `key` of this run: `handle.log(value, step)` logs like
    /// `log_metric(key, value, step)` without looking the key up again.
    fn metric(slf: Bound<'_, Self>, key: &str) -> PyResult<MetricHandle> {
        let handle = slf.get().with(slf.py(), false, |run| run.metric(key))?;
        Ok(MetricHandle {
            run: slf.unbind(),
            handle,
        })
    }

    /// Logs several keys at one step, from a dict of key to value.
    fn log_metrics(
        &self,
        py: Python<'_>,
        metrics: HashMap<String, f64>,
        step: i64,
    ) -> PyResult<()> {
        let points: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.with(py, self.writes == Writes::Synced, |run| {
            run.log_metrics(step, &points)
        })
    }

    /// Logs a whole series segment of `key`: `steps` (int64) and `values` (float64 or float32)
    /// from numpy arrays, anything numpy reads as one without copying (buffers,
    /// `array.array`), or Arrow arrays. No Python work is done per point.
    fn log_batch(
        &self,
        py: Python<'_>,
        key: &str,
        steps: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let steps = arrow::steps(arrow::import_column("steps", steps)?)?;
        let values = arrow::values(arrow::import_column("values", values)?)?;
        if steps.len() != values.len() {
            return Err(invalid(format!(
                "log_batch of {key:?}: {} steps but {} values",
                steps.len(),
                values.len()
            )));
        }
        self.with(py, true, |run| {
            run.log_batch(key, steps.values(), None, values.values())
        })
    }

    /// Logs a param (params are write-once: a different value is refused).
    fn log_param(&self, py: Python<'_>, key: &str, value: &str) -> PyResult<()> {
        self.with(py, self.writes == Writes::Synced, |run| {
            run.log_param(key, value)
        })
    }

    /// Logs several params from a dict.
    fn log_params(&self, py: Python<'_>, params: HashMap<String, String>) -> PyResult<()> {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.with(py, self.writes == Writes::Synced, |run| {
            run.log_params(&pairs)
        })
    }

    /// Sets a tag (the last value set wins).
    fn set_tag(&self, py: Python<'_>, key: &str, value: &str) -> PyResult<()> {
        self.with(py, self.writes == Writes::Synced, |run| {
            run.set_tag(key, value)
        })
    }

    /// Deletes a tag.
    fn delete_tag(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        self.with(py, self.writes == Writes::Synced, |run| run.delete_tag(key))
    }

    /// Copies the file at `path` into the run's artifacts under its file name.
    fn log_artifact(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<Artifact> {
        self.with(py, true, |run| run.log_artifact(&path))
            .map(Artifact::from)
    }

    /// Stores `data` as the artifact `path`.
    fn log_artifact_bytes(&self, py: Python<'_>, path: &str, data: Vec<u8>) -> PyResult<Artifact> {
        self.with(py, true, |run| run.log_artifact_bytes(path, &data))
            .map(Artifact::from)
    }

    /// The run as stored now (params, tags, latest metric values...).
    fn info(&self, py: Python<'_>) -> PyResult<RunData> {
        self.with(py, true, |run| run.view()).map(RunData::from)
    }

    /// Ends the run: `"FINISHED"` (default), `"FAILED"` or `"KILLED"`. Ending twice does
    /// nothing.
    #[pyo3(signature = (status = "FINISHED"))]
    fn end(&self, py: Python<'_>, status: &str) -> PyResult<()> {
        let status = match status {
            "FINISHED" => RunStatus::Finished,
            "FAILED" => RunStatus::Failed,
            "KILLED" => RunStatus::Killed,
            other => {
                return Err(invalid(format!(
                    "{other:?} is not an end status (FINISHED, FAILED or KILLED)"
                )));
            }
        };
        self.end_with(py, status)
    }

    /// Whether the run is still being logged to through this object.
    #[getter]
    fn active(&self) -> bool {
        self.handle.read().map(|h| h.is_some()).unwrap_or(false)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let status = if exc_type.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Finished
        };
        self.end_with(py, status)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Run(id={:?})", self.id)
    }
}

/// One metric key of a run, from `Run.metric(key)`: logs as `Run.log_metric` does, with the
/// same refusals (a run ended through its `Run` refuses, as `Run.log_metric` does), and holds
/// its run object alive.
#[pyclass(frozen, module = "runlog")]
pub struct MetricHandle {
    run: Py<Run>,
    handle: runlog::MetricHandle,
}

#[pymethods]
impl MetricHandle {
    /// The metric key.
    #[getter]
    fn key(&self) -> &str {
        self.handle.key()
    }

    /// Logs one point; the timestamp is taken inside.
    fn log(&self, py: Python<'_>, value: f64, step: i64) -> PyResult<()> {
        let run = self.run.get();
        run.with(py, run.writes == Writes::Synced, |_| {
            self.handle.log(value, step)
        })
    }

    /// Logs one point with its timestamp (ms since the Unix epoch).
    fn log_at(&self, py: Python<'_>, value: f64, step: i64, timestamp_ms: i64) -> PyResult<()> {
        let run = self.run.get();
        run.with(py, run.writes == Writes::Synced, |_| {
            self.handle.log_at(value, step, timestamp_ms)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "MetricHandle(run={:?}, key={:?})",
            self.run.get().id,
            self.handle.key()
        )
    }
}
