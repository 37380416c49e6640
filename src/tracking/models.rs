//! The tracking API of logged models (MLflow 3's `LoggedModel`): create, read, list, finalize,
//! delete, tags, params, metric points and artifact files, and the links between runs and
//! models.
//!
//! Invariants:
//! - Every write is checked whole before anything is appended: a refused call writes nothing.
//! - A model's artifacts follow the run artifacts' rules (`artifact/mod.rs`): write-once,
//!   published durably before the log records them, read back checked against their SHA-256.
//! - A deleted model is hidden from reads, listings and searches (`NotFound`), and its id is
//!   never reused. As in MLflow's SQL store, it is still found by id to be read on request
//!   ([`Store::logged_model_including_deleted`]), finalized, deleted again, tagged or given
//!   params; its artifacts are not served or stored.

use std::collections::BTreeMap;

use super::Store;
use super::validation;
use crate::artifact::{self, ArtifactEntry, ArtifactReader};
use crate::catalog::{Artifact, LifecycleStage, LoggedModel};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, ModelId, RunId};
use crate::util::{now_ms, random_u64};
use crate::wal::{Event, ModelEvent, ModelLink, ModelMetric, ModelStatus};

/// What a new logged model starts with.
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Its name; a generated one when `None`.
    pub name: Option<String>,
    /// Its type (free text).
    pub model_type: String,
    /// The run that logs it. It is not checked, as MLflow's stores do not check it: it may
    /// name a run another writer creates later.
    pub source_run: Option<RunId>,
    /// Its first tags.
    pub tags: Vec<(String, String)>,
    /// Its first params.
    pub params: Vec<(String, String)>,
}

impl Store {
    /// Creates a logged model in `experiment` (which must exist and be active), status pending.
    pub fn create_logged_model(
        &self,
        experiment: ExperimentId,
        options: ModelOptions,
    ) -> Result<LoggedModel> {
        if self.options().read_only {
            return Err(Error::ReadOnly);
        }
        if self.experiment(experiment)?.lifecycle_stage == LifecycleStage::Deleted {
            return Err(Error::Deleted {
                what: format!("experiment {experiment}"),
            });
        }
        check_pairs("tag", &options.tags, validation::TAG_VALUE_CHARS_MAX)?;
        check_pairs("param", &options.params, validation::PARAM_VALUE_CHARS_MAX)?;
        let model = ModelId((u128::from(random_u64()) << 64) | u128::from(random_u64()));
        let time_ms = now_ms();
        let name = options
            .name
            .unwrap_or_else(|| format!("model-{}", &model.to_string()[2..10]));
        let mut events = vec![Event::Model(ModelEvent::Created {
            model,
            time_ms,
            experiment,
            source_run: options.source_run,
            name,
            model_type: options.model_type,
        })];
        events.extend(options.tags.into_iter().map(|(key, value)| {
            Event::Model(ModelEvent::TagSet {
                model,
                time_ms,
                key,
                value,
            })
        }));
        events.extend(options.params.into_iter().map(|(key, value)| {
            Event::Model(ModelEvent::ParamLogged {
                model,
                time_ms,
                key,
                value,
            })
        }));
        self.record_all(&events)?;
        self.logged_model(model)
    }

    /// A snapshot of logged model `model`; `NotFound` if it does not exist or was deleted.
    pub fn logged_model(&self, model: ModelId) -> Result<LoggedModel> {
        self.lookup_fresh(|| self.catalog().models.get(model))?
            .ok_or_else(|| Error::NotFound(format!("logged model {model}")))
    }

    /// A snapshot of logged model `model`, deleted or not; `NotFound` if it was never created
    /// (MLflow's `get_logged_model(allow_deleted=True)`). Its `lifecycle_stage` says which.
    pub fn logged_model_including_deleted(&self, model: ModelId) -> Result<LoggedModel> {
        self.lookup_fresh(|| self.catalog().models.get_including_deleted(model))?
            .ok_or_else(|| Error::NotFound(format!("logged model {model}")))
    }

    /// The logged models of `experiments` (every experiment when empty), oldest first.
    pub fn logged_models(&self, experiments: &[ExperimentId]) -> Result<Vec<LoggedModel>> {
        self.refresh_if_stale()?;
        Ok(self
            .catalog()
            .models
            .list(|experiment| experiments.is_empty() || experiments.contains(&experiment)))
    }

    /// Sets the status of `model` (MLflow's finalize), deleted or not.
    pub fn finalize_logged_model(&self, model: ModelId, status: ModelStatus) -> Result<()> {
        self.logged_model_including_deleted(model)?;
        self.record(Event::Model(ModelEvent::StatusChanged {
            model,
            time_ms: now_ms(),
            status,
        }))
    }

    /// Deletes `model`; deleting a deleted model again dates its deletion anew, as MLflow's
    /// SQL store does. Its artifact files stay on disk, as MLflow's stores leave them.
    pub fn delete_logged_model(&self, model: ModelId) -> Result<()> {
        self.logged_model_including_deleted(model)?;
        self.record(Event::Model(ModelEvent::Deleted {
            model,
            time_ms: now_ms(),
        }))
    }

    /// Sets tags of `model` (deleted or not), replacing earlier values. A key given twice keeps
    /// its last value, as MLflow's SQL store keeps it.
    pub fn set_logged_model_tags(&self, model: ModelId, tags: &[(String, String)]) -> Result<()> {
        for (key, value) in tags {
            validation::key("tag", key)?;
            validation::value("tag", key, value, validation::TAG_VALUE_CHARS_MAX)?;
        }
        self.logged_model_including_deleted(model)?;
        let last: BTreeMap<&String, &String> =
            tags.iter().map(|(key, value)| (key, value)).collect();
        let time_ms = now_ms();
        let events: Vec<Event> = last
            .into_iter()
            .map(|(key, value)| {
                Event::Model(ModelEvent::TagSet {
                    model,
                    time_ms,
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect();
        self.record_all(&events)
    }

    /// Deletes tag `key` of `model` (deleted or not); `NotFound` if it has no such tag.
    pub fn delete_logged_model_tag(&self, model: ModelId, key: &str) -> Result<()> {
        if !self
            .logged_model_including_deleted(model)?
            .tags
            .contains_key(key)
        {
            return Err(Error::NotFound(format!(
                "tag {key:?} of logged model {model}"
            )));
        }
        self.record(Event::Model(ModelEvent::TagDeleted {
            model,
            time_ms: now_ms(),
            key: key.to_string(),
        }))
    }

    /// Logs params of `model` (deleted or not). A param keeps its first value; logging it again
    /// with another value is `InvalidInput`.
    pub fn log_logged_model_params(
        &self,
        model: ModelId,
        params: &[(String, String)],
    ) -> Result<()> {
        check_pairs("param", params, validation::PARAM_VALUE_CHARS_MAX)?;
        let existing = self.logged_model_including_deleted(model)?.params;
        for (key, value) in params {
            if let Some(old) = existing.get(key).filter(|old| *old != value) {
                return Err(Error::InvalidInput(format!(
                    "param {key:?} of logged model {model} is already {old:?}; refusing \
                     {value:?} (params are immutable)"
                )));
            }
        }
        let time_ms = now_ms();
        let events: Vec<Event> = params
            .iter()
            .filter(|(key, _)| !existing.contains_key(key))
            .map(|(key, value)| {
                Event::Model(ModelEvent::ParamLogged {
                    model,
                    time_ms,
                    key: key.clone(),
                    value: value.clone(),
                })
            })
            .collect();
        self.record_all(&events)
    }

    /// Links `run` (which must exist and be active) to each of `links`' models, as its outputs
    /// and inputs; linking twice keeps one link. The models are not checked, as MLflow's stores
    /// do not check them: a link may name a model another writer creates later.
    pub fn link_run_models(&self, run: RunId, links: &[(ModelId, ModelLink)]) -> Result<()> {
        if self.run(run)?.info.lifecycle_stage == LifecycleStage::Deleted {
            return Err(Error::Deleted {
                what: format!("run {run}"),
            });
        }
        let time_ms = now_ms();
        let events: Vec<Event> = links
            .iter()
            .map(|(model, link)| {
                Event::Model(ModelEvent::RunLinked {
                    run,
                    time_ms,
                    model: *model,
                    link: *link,
                })
            })
            .collect();
        self.record_all(&events)
    }

    /// Logs metric points for logged models (MLflow's metrics with a `model_id`), each kept
    /// for its model as given (MLflow's `logged_model_metrics` rows) and shown by
    /// [`Store::logged_model`]; the runs' own histories are not touched. Each point's run must
    /// exist and be active; its model is not checked, as MLflow's stores do not check it. An
    /// exact repeat of a point the model holds, or of an earlier one of the call, is dropped.
    pub fn log_model_metrics(&self, metrics: &[ModelMetric]) -> Result<()> {
        if self.options().read_only {
            return Err(Error::ReadOnly);
        }
        let mut checked_runs = Vec::new();
        for metric in metrics {
            validation::key("metric", &metric.key)?;
            for text in [&metric.dataset_name, &metric.dataset_digest]
                .into_iter()
                .flatten()
            {
                validation::value("metric dataset", &metric.key, text, DATASET_TEXT_CHARS_MAX)?;
            }
            if checked_runs.contains(&metric.run) {
                continue;
            }
            if self.run(metric.run)?.info.lifecycle_stage == LifecycleStage::Deleted {
                return Err(Error::Deleted {
                    what: format!("run {}", metric.run),
                });
            }
            checked_runs.push(metric.run);
        }
        let models = &self.catalog().models;
        let mut seen = std::collections::HashSet::with_capacity(metrics.len());
        let mut events: Vec<Event> = Vec::with_capacity(metrics.len());
        for metric in metrics {
            if !seen.insert(point_identity(metric)) || models.holds_metric(metric) {
                continue;
            }
            events.push(Event::Model(ModelEvent::MetricLogged(metric.clone())));
        }
        self.record_all(&events)
    }

    /// The models `run` is linked to.
    pub fn run_model_links(&self, run: RunId) -> Result<Vec<(ModelId, ModelLink)>> {
        self.refresh_if_stale()?;
        Ok(self.catalog().models.links(run))
    }

    /// The models each of `runs` is linked to, after one refresh: for a page of search
    /// results, so that the page costs one refresh rather than one per run.
    pub fn runs_model_links(&self, runs: &[RunId]) -> Result<Vec<Vec<(ModelId, ModelLink)>>> {
        self.refresh_if_stale()?;
        let models = &self.catalog().models;
        Ok(runs.iter().map(|run| models.links(*run)).collect())
    }

    /// Stores `bytes` as artifact `path` of `model` (write-once, as run artifacts).
    pub fn log_model_artifact_bytes(
        &self,
        model: ModelId,
        path: &str,
        bytes: &[u8],
    ) -> Result<Artifact> {
        self.log_model_artifact_from(model, path, &mut std::io::Cursor::new(bytes))
    }

    /// Stores what `source` yields until its end as artifact `path` of `model`, a buffer at a
    /// time (as [`Store::log_artifact_from`]).
    pub fn log_model_artifact_from(
        &self,
        model: ModelId,
        path: &str,
        source: &mut dyn std::io::Read,
    ) -> Result<Artifact> {
        validation::artifact_path(path)?;
        if self.options().read_only {
            return Err(Error::ReadOnly);
        }
        if self.logged_model(model)?.artifacts.contains_key(path) {
            return Err(Error::AlreadyExists(format!(
                "artifact {path:?} of logged model {model} (artifacts are write-once)"
            )));
        }
        let folder = artifact::model_dir(self.root(), model);
        let owner = format!("logged model {model}");
        let listed = || Ok(self.logged_model(model)?.artifacts.contains_key(path));
        self.publish_artifact(&folder, &owner, path, source, listed, |stored| {
            let time_ms = now_ms();
            self.record(Event::Model(ModelEvent::ArtifactRecorded {
                model,
                time_ms,
                size_bytes: stored.size_bytes,
                sha256: stored.sha256,
                path: path.to_string(),
            }))?;
            Ok(Artifact {
                path: path.to_string(),
                size_bytes: stored.size_bytes,
                sha256: stored.sha256,
                time_ms,
            })
        })
    }

    /// Artifact `path` of `model` opened for a checked, streaming read (as
    /// [`Store::open_artifact`]).
    pub fn open_model_artifact(&self, model: ModelId, path: &str) -> Result<ArtifactReader> {
        let found = self.logged_model(model)?;
        let stored = found
            .artifacts
            .get(path)
            .ok_or_else(|| Error::NotFound(format!("artifact {path:?} of logged model {model}")))?;
        artifact::open(&artifact::model_dir(self.root(), model), stored)
    }

    /// The content of artifact `path` of `model`, checked against its recorded SHA-256.
    pub fn read_model_artifact(&self, model: ModelId, path: &str) -> Result<Vec<u8>> {
        let found = self.logged_model(model)?;
        let stored = found
            .artifacts
            .get(path)
            .ok_or_else(|| Error::NotFound(format!("artifact {path:?} of logged model {model}")))?;
        artifact::read(&artifact::model_dir(self.root(), model), stored)
    }

    /// The direct children of artifact folder `dir` of `model` (`""` for its artifact
    /// folder), in path order.
    pub fn list_model_artifacts(&self, model: ModelId, dir: &str) -> Result<Vec<ArtifactEntry>> {
        if !dir.is_empty() {
            validation::artifact_path(dir)?;
        }
        Ok(artifact::list(&self.logged_model(model)?.artifacts, dir))
    }
}

/// Longest dataset name or digest of a model's metric point (MLflow's column is 500
/// characters for the name; its 36 for the digest is not enforced by SQLite, so neither is it
/// here).
const DATASET_TEXT_CHARS_MAX: usize = validation::DATASET_NAME_CHARS_MAX;

/// Every field of a point, its value by its bits: two points with the same identity are one
/// row of the model's.
type PointIdentity<'a> = (
    ModelId,
    RunId,
    &'a str,
    i64,
    i64,
    u64,
    Option<&'a str>,
    Option<&'a str>,
);

fn point_identity(metric: &ModelMetric) -> PointIdentity<'_> {
    (
        metric.model,
        metric.run,
        &metric.key,
        metric.step,
        metric.timestamp_ms,
        metric.value.to_bits(),
        metric.dataset_name.as_deref(),
        metric.dataset_digest.as_deref(),
    )
}

/// Checks keys and values, and that no key comes twice.
fn check_pairs(what: &str, pairs: &[(String, String)], value_chars_max: usize) -> Result<()> {
    let mut seen = BTreeMap::new();
    for (key, value) in pairs {
        validation::key(what, key)?;
        validation::value(what, key, value, value_chars_max)?;
        if seen.insert(key.as_str(), ()).is_some() {
            return Err(Error::InvalidInput(format!(
                "{what} {key:?} is given twice"
            )));
        }
    }
    Ok(())
}
