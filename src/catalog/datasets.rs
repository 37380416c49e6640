//! The catalog's datasets (MLflow's `Dataset`, `DatasetInput`): each experiment's datasets by
//! `(name, digest)`, and each run's inputs naming them, rebuilt from the log like the rest of
//! the catalog.
//!
//! Invariants (the catalog's, see `mod.rs`):
//! - Applying events is order-independent: a dataset's fields and an input's tags are
//!   first-writer-wins values (`First`), kept from the earliest event of their pair, as
//!   MLflow's SQL store keeps the first row it inserted and ignores later ones. Of two
//!   originals in one millisecond from different writers, the one applied first stays: the
//!   same race `lww.rs` describes.
//! - An input shows only once its dataset is known in its run's experiment (an input read
//!   before its dataset's event waits for it, as a placeholder would); the engine appends a
//!   dataset before any input naming it.
//! - A run's inputs keep the order their kept events were applied in, which within one writer
//!   is the order they were logged.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use super::lww::{Origin, Stamp};
use super::{read, write};
use crate::ids::{ExperimentId, RunId};
use crate::wal::{Dataset, DatasetEvent};

/// MLflow's input tag that says what a run used a dataset for (`"training"`, `"eval"`, ...).
pub const CONTEXT_TAG: &str = "mlflow.data.context";

/// A dataset a run used, with the input's tags (MLflow's `DatasetInput`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetInput {
    /// The dataset, as its experiment first logged it.
    pub dataset: Dataset,
    /// The input's tags, in order (e.g. `mlflow.data.context`).
    pub tags: Vec<(String, String)>,
}

/// One use of a dataset in an experiment (MLflow's `DatasetSummary`): the dataset, and the
/// `mlflow.data.context` tag of an input naming it, if that input has one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatasetSummary {
    /// The experiment.
    pub experiment: ExperimentId,
    /// The dataset's name.
    pub name: String,
    /// The dataset's digest.
    pub digest: String,
    /// The input's context tag, if it has one.
    pub context: Option<String>,
}

/// What names a dataset in its experiment.
type Key = (String, String);
/// An input's tags.
type Tags = Vec<(String, String)>;
/// An experiment's datasets.
type ExperimentDatasets = HashMap<Key, First<Arc<Dataset>>>;

/// A value and the stamp of the earliest event that gave it.
#[derive(Debug)]
struct First<T> {
    stamp: Stamp,
    value: T,
}

impl<T> First<T> {
    /// Takes `value` if an event at `at` came before the one kept.
    fn offer(&mut self, at: Stamp, value: T) {
        if at.precedes(self.stamp) {
            *self = First { stamp: at, value };
        }
    }
}

/// A run's inputs, in the order first applied, found by key through an index.
#[derive(Debug, Default)]
struct RunInputs {
    index: HashMap<Key, usize>,
    entries: Vec<(Key, First<Tags>)>,
}

/// The datasets of a catalog, and the runs' inputs naming them.
#[derive(Debug, Default)]
pub(crate) struct Datasets {
    by_experiment: RwLock<HashMap<ExperimentId, ExperimentDatasets>>,
    inputs: RwLock<HashMap<RunId, RunInputs>>,
}

impl Datasets {
    /// Applies one dataset event read from `origin`.
    pub fn apply(&self, event: &DatasetEvent, origin: Origin) {
        match event {
            DatasetEvent::Logged {
                experiment,
                time_ms,
                dataset,
            } => {
                let at = Stamp {
                    time_ms: *time_ms,
                    origin,
                };
                let key = (dataset.name.clone(), dataset.digest.clone());
                let value = Arc::new(dataset.clone());
                write(&self.by_experiment)
                    .entry(*experiment)
                    .or_default()
                    .entry(key)
                    .and_modify(|kept| kept.offer(at, Arc::clone(&value)))
                    .or_insert(First { stamp: at, value });
            }
            DatasetEvent::InputLogged {
                run,
                time_ms,
                name,
                digest,
                tags,
            } => {
                let at = Stamp {
                    time_ms: *time_ms,
                    origin,
                };
                let key = (name.clone(), digest.clone());
                let mut inputs = write(&self.inputs);
                let run_inputs = inputs.entry(*run).or_default();
                match run_inputs.index.get(&key) {
                    Some(&position) => run_inputs.entries[position].1.offer(at, tags.clone()),
                    None => {
                        run_inputs
                            .index
                            .insert(key.clone(), run_inputs.entries.len());
                        let value = tags.clone();
                        run_inputs.entries.push((key, First { stamp: at, value }));
                    }
                }
            }
        }
    }

    /// Whether `experiment` has dataset `(name, digest)`.
    pub fn has_dataset(&self, experiment: ExperimentId, name: &str, digest: &str) -> bool {
        read(&self.by_experiment)
            .get(&experiment)
            .is_some_and(|datasets| datasets.contains_key(&(name.to_string(), digest.to_string())))
    }

    /// Whether `run` has an input naming dataset `(name, digest)`, shown or not.
    pub fn has_input(&self, run: RunId, name: &str, digest: &str) -> bool {
        read(&self.inputs).get(&run).is_some_and(|inputs| {
            inputs
                .index
                .contains_key(&(name.to_string(), digest.to_string()))
        })
    }

    /// The inputs of `run`, whose experiment is `experiment`, in the order they were logged;
    /// an input whose dataset is not known yet is left out.
    pub fn run_inputs(&self, run: RunId, experiment: ExperimentId) -> Vec<DatasetInput> {
        let inputs = read(&self.inputs);
        let Some(run_inputs) = inputs.get(&run) else {
            return Vec::new();
        };
        let by_experiment = read(&self.by_experiment);
        let Some(datasets) = by_experiment.get(&experiment) else {
            return Vec::new();
        };
        let mut found: Vec<(Stamp, DatasetInput)> = run_inputs
            .entries
            .iter()
            .filter_map(|(key, tags)| {
                let dataset = datasets.get(key)?;
                Some((
                    tags.stamp,
                    DatasetInput {
                        dataset: Dataset::clone(&dataset.value),
                        tags: tags.value.clone(),
                    },
                ))
            })
            .collect();
        // Stable: inputs of one millisecond keep the order they were applied in.
        found.sort_by(|(a, _), (b, _)| {
            (a.time_ms, a.origin == Origin::Writer).cmp(&(b.time_ms, b.origin == Origin::Writer))
        });
        found.into_iter().map(|(_, input)| input).collect()
    }

    /// Calls `visit` with each shown input of the runs of `runs` (each run's experiment): the
    /// run, the dataset and the input's tags.
    pub fn each_input(
        &self,
        runs: &HashMap<RunId, ExperimentId>,
        mut visit: impl FnMut(RunId, &Dataset, &Tags),
    ) {
        let inputs = read(&self.inputs);
        let by_experiment = read(&self.by_experiment);
        for (run, run_inputs) in inputs.iter() {
            let Some(datasets) = runs.get(run).and_then(|e| by_experiment.get(e)) else {
                continue;
            };
            for (key, tags) in &run_inputs.entries {
                if let Some(dataset) = datasets.get(key) {
                    visit(*run, &dataset.value, &tags.value);
                }
            }
        }
    }

    /// Every distinct use of a dataset by the runs of `runs` (each run's experiment) whose
    /// experiment `keep` accepts, sorted.
    pub fn summaries(
        &self,
        runs: &HashMap<RunId, ExperimentId>,
        keep: impl Fn(ExperimentId) -> bool,
    ) -> Vec<DatasetSummary> {
        let inputs = read(&self.inputs);
        let by_experiment = read(&self.by_experiment);
        let mut found = BTreeSet::new();
        for (run, run_inputs) in inputs.iter() {
            let Some(&experiment) = runs.get(run).filter(|e| keep(**e)) else {
                continue;
            };
            let Some(datasets) = by_experiment.get(&experiment) else {
                continue;
            };
            for (key, tags) in &run_inputs.entries {
                if !datasets.contains_key(key) {
                    continue;
                }
                let context = tags
                    .value
                    .iter()
                    .find(|(tag, _)| tag == CONTEXT_TAG)
                    .map(|(_, value)| value.clone());
                found.insert(DatasetSummary {
                    experiment,
                    name: key.0.clone(),
                    digest: key.1.clone(),
                    context,
                });
            }
        }
        found.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(source: &str) -> Dataset {
        Dataset {
            name: "train".into(),
            digest: "d1".into(),
            source_type: "local".into(),
            source: source.into(),
            schema: None,
            profile: None,
        }
    }

    fn events() -> Vec<(DatasetEvent, Origin)> {
        let experiment = ExperimentId(1);
        let run = RunId(9);
        let input = |time_ms, context: &str| DatasetEvent::InputLogged {
            run,
            time_ms,
            name: "train".into(),
            digest: "d1".into(),
            tags: vec![(CONTEXT_TAG.into(), context.into())],
        };
        vec![
            (
                DatasetEvent::Logged {
                    experiment,
                    time_ms: 10,
                    dataset: dataset("first"),
                },
                Origin::Writer,
            ),
            (input(10, "training"), Origin::Writer),
            (
                DatasetEvent::Logged {
                    experiment,
                    time_ms: 20,
                    dataset: dataset("later"),
                },
                Origin::Writer,
            ),
            (input(20, "eval"), Origin::Writer),
            // A copy in the same millisecond as the original it copies comes first.
            (input(20, "copy"), Origin::MetadataChain),
        ]
    }

    #[test]
    fn the_first_dataset_and_the_first_tags_stay_in_any_order() {
        let forward = Datasets::default();
        let backward = Datasets::default();
        for (event, origin) in events() {
            forward.apply(&event, origin);
        }
        for (event, origin) in events().into_iter().rev() {
            backward.apply(&event, origin);
        }
        let expected = vec![DatasetInput {
            dataset: dataset("first"),
            tags: vec![(CONTEXT_TAG.into(), "training".into())],
        }];
        for datasets in [&forward, &backward] {
            assert_eq!(datasets.run_inputs(RunId(9), ExperimentId(1)), expected);
            let runs = HashMap::from([(RunId(9), ExperimentId(1))]);
            assert_eq!(
                datasets.summaries(&runs, |_| true),
                [DatasetSummary {
                    experiment: ExperimentId(1),
                    name: "train".into(),
                    digest: "d1".into(),
                    context: Some("training".into()),
                }]
            );
            assert!(datasets.summaries(&runs, |_| false).is_empty());
        }
    }

    #[test]
    fn an_input_waits_for_its_dataset() {
        let datasets = Datasets::default();
        datasets.apply(
            &DatasetEvent::InputLogged {
                run: RunId(1),
                time_ms: 5,
                name: "train".into(),
                digest: "d1".into(),
                tags: Vec::new(),
            },
            Origin::Writer,
        );
        assert!(datasets.has_input(RunId(1), "train", "d1"));
        assert!(datasets.run_inputs(RunId(1), ExperimentId(1)).is_empty());
        datasets.apply(
            &DatasetEvent::Logged {
                experiment: ExperimentId(1),
                time_ms: 5,
                dataset: dataset("s"),
            },
            Origin::Writer,
        );
        assert!(datasets.has_dataset(ExperimentId(1), "train", "d1"));
        assert_eq!(datasets.run_inputs(RunId(1), ExperimentId(1)).len(), 1);
        assert!(datasets.run_inputs(RunId(1), ExperimentId(2)).is_empty());
    }
}
