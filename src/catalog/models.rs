//! The catalog's logged models (MLflow 3): each model's attributes, status, tags, params and
//! artifact files, and each run's links to models (its outputs and inputs), rebuilt from the
//! log like the rest of the catalog.
//!
//! Invariants (the catalog's, see `mod.rs`):
//! - Applying events is order-independent: status, tags and artifacts are last-writer-wins
//!   registers (`lww.rs`); params keep the earliest value; a deletion is final; an event for a
//!   model not yet created makes a placeholder that its creation event fills in.
//! - Only created, undeleted models are visible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use super::lww::{self, Lww, Origin, Stamp};
use super::registers::Registers;
use super::{Artifact, read, set_register, write};
use crate::ids::{ExperimentId, ModelId, RunId};
use crate::wal::{ModelEvent, ModelLink, ModelStatus};

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
    /// When its status last changed (or it was created), ms.
    pub last_updated_time_ms: i64,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its params.
    pub params: BTreeMap<String, String>,
    /// Its artifact files by path.
    pub artifacts: BTreeMap<String, Artifact>,
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
    deleted: bool,
    tags: Registers<Lww<Option<String>>>,
    params: Registers<Lww<String>>,
    artifacts: Registers<Lww<Option<Artifact>>>,
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
            ModelEvent::Deleted { model, .. } => models.entry(*model).or_default().deleted = true,
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
            ModelEvent::RunLinked { .. } => {}
        }
    }

    /// A snapshot of `model`, if it was created and is not deleted.
    pub fn get(&self, model: ModelId) -> Option<LoggedModel> {
        view(model, read(&self.models).get(&model)?)
    }

    /// Snapshots of the visible models whose experiment `keep` accepts, oldest first.
    pub fn list(&self, keep: impl Fn(ExperimentId) -> bool) -> Vec<LoggedModel> {
        let mut found: Vec<LoggedModel> = read(&self.models)
            .iter()
            .filter_map(|(id, entry)| view(*id, entry))
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
    if entry.deleted {
        return None;
    }
    let (status, last_updated_time_ms) = match &entry.status {
        Some(status) => (status.value, status.time_ms.max(created.time_ms)),
        None => (ModelStatus::Pending, created.time_ms),
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
        ];
        let forward = Models::default();
        let backward = Models::default();
        for event in &events {
            forward.apply(event, Origin::Writer);
        }
        for event in events.iter().rev() {
            backward.apply(event, Origin::Writer);
        }
        let seen = forward.get(model).expect("created");
        assert_eq!(seen.status, ModelStatus::Ready);
        assert_eq!(seen.params.get("p").map(String::as_str), Some("first"));
        assert_eq!(Some(seen), backward.get(model));
    }
}
