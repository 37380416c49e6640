//! Read-only snapshots handed to Python: an experiment, a run (as search returns it) and an
//! artifact. Each is a plain copy of the engine's view at the time of the call; none holds a
//! lock or a reference into the store.

use std::collections::BTreeMap;

use pyo3::prelude::*;

/// An experiment: `.id`, `.name`, `.lifecycle_stage`, `.creation_time`, `.last_update_time`
/// (ms since the Unix epoch) and `.tags`.
#[pyclass(frozen, module = "runlog", get_all)]
pub struct Experiment {
    /// Its id.
    pub id: u64,
    /// Its unique name.
    pub name: String,
    /// `"active"` or `"deleted"`.
    pub lifecycle_stage: String,
    /// Creation time, ms.
    pub creation_time: i64,
    /// Last update, ms.
    pub last_update_time: i64,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

impl From<runlog::Experiment> for Experiment {
    fn from(e: runlog::Experiment) -> Self {
        Experiment {
            id: e.id.0,
            name: e.name,
            lifecycle_stage: e.lifecycle_stage.as_str().to_string(),
            creation_time: e.creation_time_ms,
            last_update_time: e.last_update_time_ms,
            tags: e.tags,
        }
    }
}

#[pymethods]
impl Experiment {
    fn __repr__(&self) -> String {
        format!("Experiment(id={}, name={:?})", self.id, self.name)
    }
}

/// A run as stored: `.id` (32 hex digits), `.experiment_id`, `.name`, `.status`
/// (`"RUNNING"`, `"FINISHED"`, ...), `.start_time`, `.end_time` (ms, or None),
/// `.parent_id`, `.lifecycle_stage`, `.params`, `.tags`, `.metrics` (each key's latest value)
/// and `.artifacts` (paths).
#[pyclass(frozen, module = "runlog", get_all)]
pub struct RunData {
    /// Its id.
    pub id: String,
    /// Its experiment.
    pub experiment_id: u64,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// Start, ms.
    pub start_time: i64,
    /// End, ms, if ended.
    pub end_time: Option<i64>,
    /// The parent run, for nested runs.
    pub parent_id: Option<String>,
    /// `"active"` or `"deleted"`.
    pub lifecycle_stage: String,
    /// Params.
    pub params: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Each metric key's latest value (greatest step, then last logged).
    pub metrics: BTreeMap<String, f64>,
    /// Artifact paths.
    pub artifacts: Vec<String>,
}

impl From<runlog::RunView> for RunData {
    fn from(view: runlog::RunView) -> Self {
        let info = view.info;
        RunData {
            id: info.id.to_string(),
            experiment_id: info.experiment.0,
            name: info.name,
            status: info.status.as_str().to_string(),
            start_time: info.start_time_ms,
            end_time: info.end_time_ms,
            parent_id: info.parent.map(|p| p.to_string()),
            lifecycle_stage: info.lifecycle_stage.as_str().to_string(),
            params: view.params,
            tags: view.tags,
            metrics: view
                .metrics
                .into_iter()
                .map(|(key, summary)| (key, summary.last_value))
                .collect(),
            artifacts: view.artifacts.into_keys().collect(),
        }
    }
}

#[pymethods]
impl RunData {
    fn __repr__(&self) -> String {
        format!(
            "RunData(id={:?}, name={:?}, status={:?})",
            self.id, self.name, self.status
        )
    }
}

/// A stored artifact: `.path` inside the run, `.size_bytes`, `.sha256` (hex) and `.time` (ms).
#[pyclass(frozen, module = "runlog", get_all)]
pub struct Artifact {
    /// Path inside the run's artifact folder.
    pub path: String,
    /// Size.
    pub size_bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// When it was logged, ms.
    pub time: i64,
}

impl From<runlog::Artifact> for Artifact {
    fn from(a: runlog::Artifact) -> Self {
        Artifact {
            path: a.path,
            size_bytes: a.size_bytes,
            sha256: a.sha256.iter().map(|b| format!("{b:02x}")).collect(),
            time: a.time_ms,
        }
    }
}

#[pymethods]
impl Artifact {
    fn __repr__(&self) -> String {
        format!(
            "Artifact(path={:?}, size_bytes={})",
            self.path, self.size_bytes
        )
    }
}
