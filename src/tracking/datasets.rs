//! The tracking API of datasets (MLflow's `log_inputs`): a run's dataset inputs, logged, read
//! back, and summed up per experiment.
//!
//! Invariants:
//! - A call is checked whole (every field's length, MLflow's limits and the log's) before
//!   anything is appended: a refused call writes nothing.
//! - MLflow's SQL store's rules: a dataset is logged once per experiment and `(name, digest)`,
//!   the first logging's fields staying; an input once per run and dataset, the first
//!   logging's tags staying (a later logging of the same pair, with other tags or other
//!   fields, changes nothing); within one call the first of two entries of a pair counts.
//! - A dataset's event is appended before any input naming it (`record_all` appends the
//!   experiment's lane, then the run's). The two lanes are different writers, each reaching
//!   the disk on its own, so the order holds on disk only as far as the durability level says:
//!   under `Durability::Sync` the dataset's append is synced before the input's is made, so an
//!   input on disk always has its dataset there too. Under `Buffered` and `Interval` a process
//!   crash keeps both (every acknowledged append survives it), but a power loss can keep the
//!   input's append and lose the dataset's. Such an input stays hidden (the catalog shows an
//!   input only once its experiment has its dataset) until the dataset is logged again in
//!   that experiment; it then shows with that logging's fields and its own first tags.

use std::collections::HashSet;

use super::Store;
use super::validation;
use crate::catalog::{DatasetInput, DatasetSummary, LifecycleStage, RunInfo};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, RunId};
use crate::limits::{RECORD_PAYLOAD_BYTES_MAX, STRING_BYTES_MAX};
use crate::util::now_ms;
use crate::wal::{Dataset, DatasetEvent, Event};

impl Store {
    /// Logs `inputs` as datasets `run` (which must exist and be active) used, with MLflow's
    /// rules (see the module doc): a dataset its experiment already has, or an input the run
    /// already has, is not logged again, and keeps what it had.
    pub fn log_dataset_inputs(&self, run: RunId, inputs: &[DatasetInput]) -> Result<()> {
        if self.options().read_only {
            return Err(Error::ReadOnly);
        }
        for input in inputs {
            check_input(input)?;
        }
        let info = self.run_info(run)?;
        if info.lifecycle_stage == LifecycleStage::Deleted {
            return Err(Error::Deleted {
                what: format!("run {run}"),
            });
        }
        let events = self.new_dataset_events(&info, inputs);
        for event in &events {
            check_record_size(event)?;
        }
        self.record_all(&events)
    }

    /// The datasets `run` used, in the order they were first logged, each as its experiment
    /// first logged it and with the input's first tags.
    pub fn run_dataset_inputs(&self, run: RunId) -> Result<Vec<DatasetInput>> {
        let info = self.run_info(run)?;
        Ok(self.catalog().datasets.run_inputs(run, info.experiment))
    }

    /// The datasets each of `runs` used, as `run_dataset_inputs` gives them, after one
    /// refresh: for a page of search results, whose runs and their experiments are known, so
    /// that the page costs one refresh and no lookup per run.
    pub fn runs_dataset_inputs(
        &self,
        runs: &[(RunId, ExperimentId)],
    ) -> Result<Vec<Vec<DatasetInput>>> {
        self.refresh_if_stale()?;
        let datasets = &self.catalog().datasets;
        Ok(runs
            .iter()
            .map(|(run, experiment)| datasets.run_inputs(*run, *experiment))
            .collect())
    }

    /// Every distinct use of a dataset by a run (deleted runs too, as MLflow's SQL store
    /// counts them) of `experiments` (every experiment when empty): the dataset and the
    /// input's `mlflow.data.context` tag, sorted by experiment, name, digest and context.
    pub fn dataset_summaries(&self, experiments: &[ExperimentId]) -> Result<Vec<DatasetSummary>> {
        self.refresh_if_stale()?;
        let runs = self.catalog().run_experiments();
        Ok(self.catalog().datasets.summaries(&runs, |experiment| {
            experiments.is_empty() || experiments.contains(&experiment)
        }))
    }

    /// The attributes of `run`; `NotFound` if it does not exist.
    fn run_info(&self, run: RunId) -> Result<RunInfo> {
        self.lookup_fresh(|| self.catalog().run_entry(run).and_then(|entry| entry.info()))?
            .ok_or_else(|| Error::NotFound(format!("run {run}")))
    }

    /// The events that log `inputs` for `run`: its experiment's new datasets first, then the
    /// run's new inputs, each pair once, in the order of `inputs`.
    fn new_dataset_events(&self, run: &RunInfo, inputs: &[DatasetInput]) -> Vec<Event> {
        let datasets = &self.catalog().datasets;
        let time_ms = now_ms();
        let mut seen = HashSet::new();
        let mut logged = Vec::new();
        let mut used = Vec::new();
        for input in inputs {
            let Dataset { name, digest, .. } = &input.dataset;
            if !seen.insert((name.as_str(), digest.as_str())) {
                continue;
            }
            if !datasets.has_dataset(run.experiment, name, digest) {
                logged.push(Event::Dataset(DatasetEvent::Logged {
                    experiment: run.experiment,
                    time_ms,
                    dataset: input.dataset.clone(),
                }));
            }
            if !datasets.has_input(run.id, name, digest) {
                used.push(Event::Dataset(DatasetEvent::InputLogged {
                    run: run.id,
                    time_ms,
                    name: name.clone(),
                    digest: digest.clone(),
                    tags: input.tags.clone(),
                }));
            }
        }
        logged.append(&mut used);
        logged
    }
}

/// Checks one input against MLflow's limits, and each string against the longest the log
/// holds; an input tag key given twice is refused (MLflow's SQL store fails on it).
fn check_input(input: &DatasetInput) -> Result<()> {
    let dataset = &input.dataset;
    for (field, value) in [("name", &dataset.name), ("digest", &dataset.digest)] {
        if value.is_empty() {
            return Err(Error::InvalidInput(format!(
                "a dataset's {field} is empty; it names the dataset in its experiment"
            )));
        }
    }
    let fields = [
        (
            "name",
            Some(&dataset.name),
            validation::DATASET_NAME_CHARS_MAX,
        ),
        (
            "digest",
            Some(&dataset.digest),
            validation::DATASET_DIGEST_CHARS_MAX,
        ),
        ("source_type", Some(&dataset.source_type), usize::MAX),
        (
            "source",
            Some(&dataset.source),
            validation::DATASET_SOURCE_CHARS_MAX,
        ),
        (
            "schema",
            dataset.schema.as_ref(),
            validation::DATASET_SCHEMA_CHARS_MAX,
        ),
        (
            "profile",
            dataset.profile.as_ref(),
            validation::DATASET_PROFILE_CHARS_MAX,
        ),
    ];
    for (field, value, chars_max) in fields {
        if let Some(value) = value {
            check_length(
                &format!("dataset {:?}", dataset.name),
                field,
                value,
                chars_max,
            )?;
        }
    }
    let mut keys = HashSet::new();
    for (key, value) in &input.tags {
        let what = format!("input tag of dataset {:?}", dataset.name);
        check_length(&what, "key", key, validation::INPUT_TAG_KEY_CHARS_MAX)?;
        check_length(&what, "value", value, validation::INPUT_TAG_VALUE_CHARS_MAX)?;
        if !keys.insert(key.as_str()) {
            return Err(Error::InvalidInput(format!(
                "{what}: key {key:?} is given twice"
            )));
        }
    }
    Ok(())
}

/// Checks `value` against MLflow's `chars_max` characters, then against the log's longest
/// string (`STRING_BYTES_MAX` bytes), which is the tighter for a long profile.
fn check_length(what: &str, field: &str, value: &str, chars_max: usize) -> Result<()> {
    if value.len() > chars_max && value.chars().count() > chars_max {
        return Err(Error::InvalidInput(format!(
            "{what}: '{field}' exceeds the maximum length of {chars_max} characters"
        )));
    }
    if value.len() > STRING_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "{what}: '{field}' of {} bytes exceeds the {STRING_BYTES_MAX} bytes runlog keeps in \
             one field",
            value.len()
        )));
    }
    Ok(())
}

/// Checks that `event` fits one record, so that no append of the call fails on its size.
fn check_record_size(event: &Event) -> Result<()> {
    let mut payload = Vec::new();
    event.encode_payload(&mut payload);
    if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "a dataset input of {} bytes exceeds the {RECORD_PAYLOAD_BYTES_MAX} bytes of one \
             record (too many input tags)",
            payload.len()
        )));
    }
    Ok(())
}
