//! `runlog.Store`: an open store, the entry point of the package.
//!
//! Invariants: every method is one call (or a short sequence of calls) of the engine's public
//! API; reads and anything that may wait on the disk release the GIL; results are copied into
//! Python objects or Arrow columns after the GIL is taken back.

use std::collections::HashMap;
use std::ops::Bound as RangeBound;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use runlog::query::{Aggregate, SearchRuns};
use runlog::{Durability, ExperimentId, RunId, RunOptions, StoreOptions, ViewType};

use crate::arrow::{self, Columns};
use crate::errors::{IntoPy, invalid};
use crate::run::{Run, Writes};
use crate::views::{Experiment, RunData};

/// An open runlog store (a directory). Safe to share between threads; a forked child must open
/// its own (using the parent's raises `runlog.Forked`).
///
/// `durability` is `"buffered"` (survives a process crash), `"sync"` (every call synced to
/// disk before it returns) or a number of milliseconds (synced in the background at least that
/// often); the default is `1000`. See the project's docs/DURABILITY.md.
#[pyclass(frozen, module = "runlog")]
pub struct Store {
    inner: runlog::Store,
    writes: Writes,
}

fn durability(value: Option<&Bound<'_, PyAny>>) -> PyResult<Durability> {
    let Some(value) = value else {
        return Ok(Durability::default());
    };
    if let Ok(name) = value.extract::<String>() {
        return match name.as_str() {
            "buffered" => Ok(Durability::Buffered),
            "sync" => Ok(Durability::Sync),
            other => Err(invalid(format!(
                "durability {other:?}: expected \"buffered\", \"sync\" or milliseconds"
            ))),
        };
    }
    match value.extract::<u64>() {
        Ok(ms) if ms > 0 => Ok(Durability::Interval(Duration::from_millis(ms))),
        _ => Err(invalid(format!(
            "durability {value}: expected \"buffered\", \"sync\" or milliseconds > 0"
        ))),
    }
}

fn run_id(text: &str) -> PyResult<RunId> {
    text.parse::<RunId>().py_err()
}

fn step_range(start: Option<i64>, end: Option<i64>) -> (RangeBound<i64>, RangeBound<i64>) {
    let start = start.map_or(RangeBound::Unbounded, RangeBound::Included);
    let end = end.map_or(RangeBound::Unbounded, RangeBound::Excluded);
    (start, end)
}

fn view_type(name: &str) -> PyResult<ViewType> {
    match name {
        "active" => Ok(ViewType::ActiveOnly),
        "deleted" => Ok(ViewType::DeletedOnly),
        "all" => Ok(ViewType::All),
        other => Err(invalid(format!(
            "view {other:?}: expected \"active\", \"deleted\" or \"all\""
        ))),
    }
}

#[pymethods]
impl Store {
    /// Opens (creating if needed) the store at `path`.
    #[new]
    #[pyo3(signature = (path, durability = None, read_only = false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        durability: Option<&Bound<'_, PyAny>>,
        read_only: bool,
    ) -> PyResult<Store> {
        let durability = self::durability(durability)?;
        let writes = if durability == Durability::Sync {
            Writes::Synced
        } else {
            Writes::Buffered
        };
        let options = StoreOptions {
            durability,
            read_only,
            ..StoreOptions::default()
        };
        let inner = py
            .detach(|| runlog::Store::open_with(&path, options))
            .py_err()?;
        Ok(Store { inner, writes })
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// The experiment named `name`, created if it does not exist.
    fn get_or_create_experiment(&self, py: Python<'_>, name: &str) -> PyResult<Experiment> {
        py.detach(|| self.inner.get_or_create_experiment(name))
            .py_err()
            .map(Experiment::from)
    }

    /// Creates an experiment; `runlog.AlreadyExists` if the name is taken.
    fn create_experiment(&self, py: Python<'_>, name: &str) -> PyResult<Experiment> {
        py.detach(|| self.inner.create_experiment(name))
            .py_err()
            .map(Experiment::from)
    }

    /// The experiment with id `experiment_id`.
    fn get_experiment(&self, py: Python<'_>, experiment_id: u64) -> PyResult<Experiment> {
        py.detach(|| self.inner.experiment(ExperimentId(experiment_id)))
            .py_err()
            .map(Experiment::from)
    }

    /// Experiments: `view` is `"active"` (default), `"deleted"` or `"all"`.
    #[pyo3(signature = (view = "active"))]
    fn experiments(&self, py: Python<'_>, view: &str) -> PyResult<Vec<Experiment>> {
        let view = view_type(view)?;
        let found = py.detach(|| self.inner.experiments(view)).py_err()?;
        Ok(found.into_iter().map(Experiment::from).collect())
    }

    /// Starts a run in experiment `experiment_id`, with optional name, params, tags and parent
    /// run (for nested runs). Use the result as a context manager.
    #[pyo3(signature = (experiment_id, name = None, params = None, tags = None, parent_id = None))]
    fn start_run(
        &self,
        py: Python<'_>,
        experiment_id: u64,
        name: Option<String>,
        params: Option<HashMap<String, String>>,
        tags: Option<HashMap<String, String>>,
        parent_id: Option<&str>,
    ) -> PyResult<Run> {
        let parent = parent_id.map(run_id).transpose()?;
        let options = RunOptions {
            name,
            parent,
            tags: tags.unwrap_or_default().into_iter().collect(),
            start_time_ms: None,
        };
        let params = params.unwrap_or_default();
        let run = py
            .detach(|| {
                let run = self.inner.start_run(ExperimentId(experiment_id), options)?;
                let pairs: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !pairs.is_empty() {
                    run.log_params(&pairs)?;
                }
                Ok(run)
            })
            .py_err()?;
        Ok(Run::new(run, self.writes))
    }

    /// Takes up an existing run again (status back to RUNNING) to log more to it.
    fn resume_run(&self, py: Python<'_>, run_id: &str) -> PyResult<Run> {
        let id = self::run_id(run_id)?;
        let run = py.detach(|| self.inner.resume_run(id)).py_err()?;
        Ok(Run::new(run, self.writes))
    }

    /// The run with id `run_id`, as stored now.
    fn get_run(&self, py: Python<'_>, run_id: &str) -> PyResult<RunData> {
        let id = self::run_id(run_id)?;
        py.detach(|| self.inner.run(id)).py_err().map(RunData::from)
    }

    /// Every point of `key` of the run, sorted by step (repeated steps all kept, in logging
    /// order), as a `pyarrow.Table` with int64 `step`, int64 `timestamp` (ms) and float64
    /// `value`. `start_step` (inclusive) and `end_step` (exclusive) narrow it.
    #[pyo3(signature = (run_id, key, start_step = None, end_step = None))]
    fn history<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        key: &str,
        start_step: Option<i64>,
        end_step: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = self::run_id(run_id)?;
        let range = step_range(start_step, end_step);
        let history = py.detach(|| self.inner.history(id, key, range)).py_err()?;
        Columns(vec![
            ("step", arrow::int64s(history.steps)),
            ("timestamp", arrow::int64s(history.timestamps_ms)),
            ("value", arrow::float64s(history.values)),
        ])
        .into_table(py)
    }

    /// `key` of the run in at most `max_points` buckets of equal step width, as a
    /// `pyarrow.Table`: `step_start`, `step_end` (inclusive), `count`, `min`, `max` (NaN
    /// ignored) and the bucket's last point `last_step`, `last_timestamp`, `last_value`.
    #[pyo3(signature = (run_id, key, max_points, start_step = None, end_step = None))]
    fn history_downsampled<'py>(
        &self,
        py: Python<'py>,
        run_id: &str,
        key: &str,
        max_points: usize,
        start_step: Option<i64>,
        end_step: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id = self::run_id(run_id)?;
        let range = step_range(start_step, end_step);
        let down = py
            .detach(|| self.inner.history_downsampled(id, key, range, max_points))
            .py_err()?;
        let b = &down.buckets;
        let ints = |f: fn(&runlog::query::Bucket) -> i64| arrow::int64s(b.iter().map(f).collect());
        let floats =
            |f: fn(&runlog::query::Bucket) -> f64| arrow::float64s(b.iter().map(f).collect());
        Columns(vec![
            ("step_start", ints(|b| b.step_start)),
            ("step_end", ints(|b| b.step_end)),
            (
                "count",
                ints(|b| i64::try_from(b.count).unwrap_or(i64::MAX)),
            ),
            ("min", floats(|b| b.min)),
            ("max", floats(|b| b.max)),
            ("last_step", ints(|b| b.last.step)),
            ("last_timestamp", ints(|b| b.last.timestamp_ms)),
            ("last_value", floats(|b| b.last.value)),
        ])
        .into_table(py)
    }

    /// Searches runs with MLflow's filter grammar (`"metrics.loss < 0.3 and params.lr =
    /// '0.01'"`) and `order_by` (`["metrics.loss ASC"]`); returns up to `max_results` runs
    /// (0: 1,000), of `view` `"active"` (default), `"deleted"` or `"all"`.
    #[pyo3(signature = (experiment_ids = None, filter_string = "", order_by = None, max_results = 0, view = "active"))]
    fn search_runs(
        &self,
        py: Python<'_>,
        experiment_ids: Option<Vec<u64>>,
        filter_string: &str,
        order_by: Option<Vec<String>>,
        max_results: usize,
        view: &str,
    ) -> PyResult<Vec<RunData>> {
        let search = SearchRuns {
            experiments: experiment_ids
                .unwrap_or_default()
                .into_iter()
                .map(ExperimentId)
                .collect(),
            filter: filter_string.to_string(),
            order_by: order_by.unwrap_or_default(),
            max_results,
            page_token: None,
            view: view_type(view)?,
        };
        let page = py.detach(|| self.inner.search_runs(&search)).py_err()?;
        Ok(page.runs.into_iter().map(RunData::from).collect())
    }

    /// The summary of each of `keys` (every key if None) for each run, in order: a list of
    /// dicts with `run_id`, `key`, and `count`, `first_step`, `last_step`, `last`, `min`,
    /// `max`, `mean` (all None where the run never logged the key).
    #[pyo3(signature = (run_ids, keys = None))]
    fn compare<'py>(
        &self,
        py: Python<'py>,
        run_ids: Vec<String>,
        keys: Option<Vec<String>>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let ids = run_ids
            .iter()
            .map(|id| run_id(id))
            .collect::<PyResult<Vec<_>>>()?;
        let keys = keys.unwrap_or_default();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let rows = py.detach(|| self.inner.compare(&ids, &key_refs)).py_err()?;
        rows.into_iter()
            .map(|row| {
                let dict = PyDict::new(py);
                dict.set_item("run_id", row.run.to_string())?;
                dict.set_item("key", row.key)?;
                let s = row.summary.as_ref();
                dict.set_item("count", s.map(|s| s.count))?;
                dict.set_item("first_step", s.map(|s| s.first_step))?;
                dict.set_item("last_step", s.map(|s| s.last_step))?;
                dict.set_item("last", s.map(|s| Aggregate::Last.of(s)))?;
                dict.set_item("min", s.map(|s| Aggregate::Min.of(s)))?;
                dict.set_item("max", s.map(|s| Aggregate::Max.of(s)))?;
                dict.set_item("mean", s.map(|s| Aggregate::Mean.of(s)))?;
                Ok(dict)
            })
            .collect()
    }

    /// Compacts sealed log segments into indexed Parquet files; returns counts as a dict.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = py.detach(|| self.inner.compact()).py_err()?;
        let dict = PyDict::new(py);
        dict.set_item("generation", report.generation)?;
        dict.set_item("segments", report.segments)?;
        dict.set_item("points", report.points)?;
        dict.set_item("files_written", report.files_written)?;
        dict.set_item("bytes", report.bytes)?;
        Ok(dict)
    }

    /// Writes the whole store as Hive-partitioned Parquet under `directory`; returns counts and
    /// the files written as a dict.
    fn export<'py>(&self, py: Python<'py>, directory: PathBuf) -> PyResult<Bound<'py, PyDict>> {
        let report = py.detach(|| self.inner.export(&directory)).py_err()?;
        let dict = PyDict::new(py);
        dict.set_item("experiments", report.experiments)?;
        dict.set_item("runs", report.runs)?;
        dict.set_item("points", report.points)?;
        dict.set_item("files", report.files)?;
        dict.set_item("bytes", report.bytes)?;
        Ok(dict)
    }

    /// Makes everything this handle wrote durable (synced to disk).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).py_err()
    }

    /// Seals this handle's log segments (later writes start new ones).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).py_err()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Store({:?})", self.inner.root())
    }
}
