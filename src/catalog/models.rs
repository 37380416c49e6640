//! The catalog's logged models (MLflow 3): each model's attributes, status, tags, params,
//! metric points and artifact files, and each run's links to models (its outputs and inputs),
//! rebuilt from the log like the rest of the catalog.
//!
//! Invariants (the catalog's, see `mod.rs`):
//! - Applying events is order-independent: status, tags and artifacts are last-writer-wins
//!   registers (`lww.rs`); params keep the earliest value; metric points are a set, so an
//!   exact repeat (a copy in a metadata chain among them) is one point; a deletion is final and dated by the
//!   latest one; an event for a model not yet created makes a placeholder that its creation
//!   event fills in.
//! - Only created models are visible: undeleted ones to every read, deleted ones only to a read
//!   that asks for them (MLflow finds a deleted model by id to finalize, delete or tag it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use super::lww::{self, Lww, Origin, Stamp};
use super::registers::Registers;
use super::{Artifact, LifecycleStage, read, set_register, write};
use crate::ids::{ExperimentId, ModelId, RunId};
use crate::wal::{ModelEvent, ModelLink, ModelMetric, ModelStatus};

/// A snapshot of a logged model.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedModel {
    /// Its id.
    pub id: ModelId,
    /// Its experiment.
    pub experiment: ExperimentId,
    /// Its name.
    pub name: String,
    /// Its type (free text, often empty).
    pub model_type: String,
    /// The run that logged it, if any.
    pub source_run: Option<RunId>,
    /// Pending until finalized.
    pub status: ModelStatus,
    /// When it was created, ms since the Unix epoch.
    pub creation_time_ms: i64,
    /// When its status last changed or it was last deleted (or it was created), ms.
    pub last_updated_time_ms: i64,
    /// Active, or deleted (found only by the store's `logged_model_including_deleted`).
    pub lifecycle_stage: LifecycleStage,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its params.
    pub params: BTreeMap<String, String>,
    /// Its artifact files by path.
    pub artifacts: BTreeMap<String, Artifact>,
    /// The metric points runs logged for it, each once, ordered by key, step, timestamp, run,
    /// value bits and dataset.
    pub metrics: Vec<ModelMetric>,
}

/// A metric point of a model as the catalog keeps it: ordered, and equal only to an exact
/// repeat (value compared by its bits).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MetricRow {
    key: String,
    step: i64,
    timestamp_ms: i64,
    run: RunId,
    value_bits: u64,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

impl MetricRow {
    fn of(metric: &ModelMetric) -> MetricRow {
        MetricRow {
            key: metric.key.clone(),
            step: metric.step,
            timestamp_ms: metric.timestamp_ms,
            run: metric.run,
            value_bits: metric.value.to_bits(),
            dataset_name: metric.dataset_name.clone(),
            dataset_digest: metric.dataset_digest.clone(),
        }
    }

    fn metric(&self, model: ModelId) -> ModelMetric {
        ModelMetric {
            model,
            run: self.run,
            key: self.key.clone(),
            value: f64::from_bits(self.value_bits),
            timestamp_ms: self.timestamp_ms,
            step: self.step,
            dataset_name: self.dataset_name.clone(),
            dataset_digest: self.dataset_digest.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct Created {
    experiment: ExperimentId,
    time_ms: i64,
    source_run: Option<RunId>,
    name: String,
    model_type: String,
}

#[derive(Debug, Default)]
struct ModelEntry {
    created: Option<Created>,
    status: Option<Lww<ModelStatus>>,
    /// When it was last deleted, if it was.
    deleted_time_ms: Option<i64>,
    tags: Registers<Lww<Option<String>>>,
    params: Registers<Lww<String>>,
    artifacts: Registers<Lww<Option<Artifact>>>,
    metrics: BTreeSet<MetricRow>,
}

/// The logged models of a catalog, and the runs' links to them.
#[derive(Debug, Default)]
pub(crate) struct Models {
    models: RwLock<HashMap<ModelId, ModelEntry>>,
    links: RwLock<HashMap<RunId, BTreeSet<(ModelId, ModelLink)>>>,
}

impl Models {
    /// Applies one model event read from `origin`.
    pub fn apply(&self, event: &ModelEvent, origin: Origin) {
        let at = |time_ms: i64| Stamp { time_ms, origin };
        if let ModelEvent::RunLinked {
            run, model, link, ..
        } = event
        {
            write(&self.links)
                .entry(*run)
                .or_default()
                .insert((*model, *link));
            return;
        }
        let mut models = write(&self.models);
        match event {
            ModelEvent::Created {
                model,
                time_ms,
                experiment,
                source_run,
                name,
                model_type,
            } => {
                models.entry(*model).or_default().created = Some(Created {
                    experiment: *experiment,
                    time_ms: *time_ms,
                    source_run: *source_run,
                    name: name.clone(),
                    model_type: model_type.clone(),
                });
            }
            ModelEvent::StatusChanged {
                model,
                time_ms,
                status,
            } => lww::set(
                &mut models.entry(*model).or_default().status,
                at(*time_ms),
                *status,
            ),
            ModelEvent::Deleted { model, time_ms } => {
                let deleted = &mut models.entry(*model).or_default().deleted_time_ms;
                *deleted = Some(deleted.map_or(*time_ms, |earlier| earlier.max(*time_ms)));
            }
            ModelEvent::TagSet {
                model,
                time_ms,
                key,
                value,
            } => {
                let entry = models.entry(*model).or_default();
                set_register(&mut entry.tags, key, at(*time_ms), Some(value.clone()));
            }
            ModelEvent::TagDeleted {
                model,
                time_ms,
                key,
            } => {
                let entry = models.entry(*model).or_default();
                set_register(&mut entry.tags, key, at(*time_ms), None);
            }
            ModelEvent::ParamLogged {
                model,
                time_ms,
                key,
                value,
            } => {
                let params = &mut models.entry(*model).or_default().params;
                let earlier = params.get(key).is_some_and(|p| p.time_ms <= *time_ms);
                if !earlier {
                    params.insert(key.clone(), Lww::new(at(*time_ms), value.clone()));
                }
            }
            ModelEvent::ArtifactRecorded {
                model,
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
                let entry = models.entry(*model).or_default();
                set_register(&mut entry.artifacts, path, at(*time_ms), Some(artifact));
            }
            ModelEvent::MetricLogged(metric) => {
                let entry = models.entry(metric.model).or_default();
                entry.metrics.insert(MetricRow::of(metric));
            }
            ModelEvent::RunLinked { .. } => {}
        }
    }

    /// A snapshot of `model`, if it was created and is not deleted.
    pub fn get(&self, model: ModelId) -> Option<LoggedModel> {
        self.get_including_deleted(model)
            .filter(|found| found.lifecycle_stage == LifecycleStage::Active)
    }

    /// A snapshot of `model`, if it was created, deleted or not.
    pub fn get_including_deleted(&self, model: ModelId) -> Option<LoggedModel> {
        view(model, read(&self.models).get(&model)?)
    }

    /// Whether `metric`'s model holds exactly that point already (a lookup in its set, without
    /// a snapshot).
    pub fn holds_metric(&self, metric: &ModelMetric) -> bool {
        read(&self.models)
            .get(&metric.model)
            .is_some_and(|entry| entry.metrics.contains(&MetricRow::of(metric)))
    }

    /// Snapshots of the visible models whose experiment `keep` accepts, oldest first.
    pub fn list(&self, keep: impl Fn(ExperimentId) -> bool) -> Vec<LoggedModel> {
        let mut found: Vec<LoggedModel> = read(&self.models)
            .iter()
            .filter_map(|(id, entry)| view(*id, entry))
            .filter(|model| model.lifecycle_stage == LifecycleStage::Active)
            .filter(|model| keep(model.experiment))
            .collect();
        found.sort_by_key(|model| (model.creation_time_ms, model.id));
        found
    }

    /// The models `run` is linked to, in model id order.
    pub fn links(&self, run: RunId) -> Vec<(ModelId, ModelLink)> {
        read(&self.links)
            .get(&run)
            .map(|links| links.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn view(id: ModelId, entry: &ModelEntry) -> Option<LoggedModel> {
    let created = entry.created.as_ref()?;
    let (status, status_time_ms) = match &entry.status {
        Some(status) => (status.value, status.time_ms),
        None => (ModelStatus::Pending, created.time_ms),
    };
    // MLflow's finalize and delete both set `last_updated_timestamp_ms`; tags and params do not.
    let last_updated_time_ms = status_time_ms
        .max(created.time_ms)
        .max(entry.deleted_time_ms.unwrap_or(i64::MIN));
    let lifecycle_stage = match entry.deleted_time_ms {
        Some(_) => LifecycleStage::Deleted,
        None => LifecycleStage::Active,
    };
    Some(LoggedModel {
        id,
        experiment: created.experiment,
        name: created.name.clone(),
        model_type: created.model_type.clone(),
        source_run: created.source_run,
        status,
        creation_time_ms: created.time_ms,
        last_updated_time_ms,
        lifecycle_stage,
        tags: entry
            .tags
            .iter()
            .filter_map(|(key, tag)| Some((key.clone(), tag.value.clone()?)))
            .collect(),
        params: entry
            .params
            .iter()
            .map(|(key, param)| (key.clone(), param.value.clone()))
            .collect(),
        artifacts: entry
            .artifacts
            .iter()
            .filter_map(|(path, artifact)| Some((path.clone(), artifact.value.clone()?)))
            .collect(),
        metrics: entry.metrics.iter().map(|row| row.metric(id)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_in_any_order_give_the_same_model() {
        let model = ModelId(7);
        let events = [
            ModelEvent::Created {
                model,
                time_ms: 10,
                experiment: ExperimentId(1),
                source_run: None,
                name: "m".into(),
                model_type: String::new(),
            },
            ModelEvent::StatusChanged {
                model,
                time_ms: 20,
                status: ModelStatus::Ready,
            },
            ModelEvent::ParamLogged {
                model,
                time_ms: 11,
                key: "p".into(),
                value: "first".into(),
            },
            ModelEvent::ParamLogged {
                model,
                time_ms: 12,
                key: "p".into(),
                value: "second".into(),
            },
            ModelEvent::MetricLogged(ModelMetric {
                model,
                run: RunId(3),
                key: "acc".into(),
                value: 0.5,
                timestamp_ms: 30,
                step: 1,
                dataset_name: None,
                dataset_digest: None,
            }),
            ModelEvent::MetricLogged(ModelMetric {
                model,
                run: RunId(3),
                key: "acc".into(),
                value: 0.25,
                timestamp_ms: 20,
                step: 0,
                dataset_name: Some("d".into()),
                dataset_digest: None,
            }),
            ModelEvent::Deleted { model, time_ms: 40 },
            ModelEvent::Deleted { model, time_ms: 35 },
        ];
        let forward = Models::default();
        let backward = Models::default();
        for event in &events {
            forward.apply(event, Origin::Writer);
        }
        for event in events.iter().rev() {
            backward.apply(event, Origin::Writer);
        }
        assert_eq!(forward.get(model), None, "deleted");
        let seen = forward.get_including_deleted(model).expect("created");
        assert_eq!(seen.status, ModelStatus::Ready);
        assert_eq!(seen.params.get("p").map(String::as_str), Some("first"));
        assert_eq!(seen.lifecycle_stage, LifecycleStage::Deleted);
        assert_eq!(seen.last_updated_time_ms, 40, "the latest deletion");
        let steps: Vec<i64> = seen.metrics.iter().map(|m| m.step).collect();
        assert_eq!(steps, [0, 1], "ordered by key, then step");
        // A copy of a point (a metadata chain's) is the same point.
        forward.apply(&events[4], Origin::MetadataChain);
        assert_eq!(Some(seen), backward.get_including_deleted(model));
        assert_eq!(
            forward.get_including_deleted(model),
            backward.get_including_deleted(model)
        );
    }
}
