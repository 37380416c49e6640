//! MLflow's response messages as proto JSON (`message_to_json` in MLflow's server): snake_case
//! field names, unset and empty fields omitted, int64 fields as JSON numbers, enums by name, ids
//! as strings, and doubles that JSON cannot spell as `"NaN"`, `"Infinity"`, `"-Infinity"`.
//!
//! Invariants: a message is built from the engine's snapshots (`Experiment`, `RunView`) without
//! copying their strings; the id texts (`experiment_id`, `run_id`) are the ones requests name.

use serde::{Serialize, Serializer};

use crate::catalog::{Experiment, RunInfo, RunView};
use crate::{ExperimentId, RunId};

/// A double as proto JSON writes it: a number when finite, else a string.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Double(pub f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value == f64::INFINITY {
            serializer.serialize_str("Infinity")
        } else if value == f64::NEG_INFINITY {
            serializer.serialize_str("-Infinity")
        } else {
            serializer.serialize_f64(value)
        }
    }
}

/// A `key`/`value` pair: `Param`, `RunTag`, `ExperimentTag`.
#[derive(Serialize)]
pub(crate) struct KeyValue<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// `Metric`.
#[derive(Serialize)]
pub(crate) struct Metric<'a> {
    pub key: &'a str,
    pub value: Double,
    pub timestamp: i64,
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

/// `Experiment`.
#[derive(Serialize)]
pub(crate) struct ExperimentMessage<'a> {
    pub experiment_id: String,
    pub name: &'a str,
    pub artifact_location: String,
    pub lifecycle_stage: &'static str,
    pub last_update_time: i64,
    pub creation_time: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue<'a>>,
}

impl<'a> ExperimentMessage<'a> {
    pub(crate) fn of(experiment: &'a Experiment) -> ExperimentMessage<'a> {
        ExperimentMessage {
            experiment_id: experiment.id.to_string(),
            name: &experiment.name,
            artifact_location: experiment_artifact_location(experiment.id),
            lifecycle_stage: experiment.lifecycle_stage.as_str(),
            last_update_time: experiment.last_update_time_ms,
            creation_time: experiment.creation_time_ms,
            tags: experiment
                .tags
                .iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        }
    }
}

/// An experiment's artifact root, as `mlflow server --serve-artifacts` gives it.
pub(crate) fn experiment_artifact_location(id: ExperimentId) -> String {
    format!("mlflow-artifacts:/{id}")
}

/// A run's artifact root, under its experiment's.
pub(crate) fn run_artifact_uri(experiment: ExperimentId, run: RunId) -> String {
    format!("mlflow-artifacts:/{experiment}/{run}/artifacts")
}

/// `RunInfo`: both `run_id` and its deprecated twin `run_uuid`.
#[derive(Serialize)]
pub(crate) struct RunInfoMessage<'a> {
    pub run_uuid: String,
    pub experiment_id: String,
    pub run_name: &'a str,
    pub user_id: &'a str,
    pub status: &'static str,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: &'static str,
    pub run_id: String,
}

impl<'a> RunInfoMessage<'a> {
    pub(crate) fn of(info: &'a RunInfo) -> RunInfoMessage<'a> {
        let id = info.id.to_string();
        RunInfoMessage {
            run_uuid: id.clone(),
            experiment_id: info.experiment.to_string(),
            run_name: &info.name,
            user_id: info.user.as_deref().unwrap_or(super::runs::UNKNOWN_USER),
            status: info.status.as_str(),
            start_time: info.start_time_ms,
            end_time: info.end_time_ms,
            artifact_uri: run_artifact_uri(info.experiment, info.id),
            lifecycle_stage: info.lifecycle_stage.as_str(),
            run_id: id,
        }
    }
}

/// `RunData`: the latest value of each metric, the params and the tags.
#[derive(Serialize)]
pub(crate) struct RunData<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue<'a>>,
}

/// `Run`.
#[derive(Serialize)]
pub(crate) struct RunMessage<'a> {
    pub info: RunInfoMessage<'a>,
    pub data: RunData<'a>,
    /// `RunInputs`: the models the run used (`model_inputs`); empty in search results.
    pub inputs: serde_json::Value,
    /// `RunOutputs`: the models the run produced (`model_outputs`); empty in search results.
    pub outputs: serde_json::Value,
}

impl<'a> RunMessage<'a> {
    pub(crate) fn of(run: &'a RunView) -> RunMessage<'a> {
        let metrics = run
            .metrics
            .iter()
            .filter(|(_, summary)| summary.count > 0)
            .map(|(key, summary)| Metric {
                key,
                value: Double(summary.last_value),
                timestamp: summary.last_timestamp_ms,
                step: summary.last_step,
                run_id: None,
            })
            .collect();
        let pairs = |map: &'a std::collections::BTreeMap<String, String>| {
            map.iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect()
        };
        RunMessage {
            info: RunInfoMessage::of(&run.info),
            data: RunData {
                metrics,
                params: pairs(&run.params),
                tags: pairs(&run.tags),
            },
            inputs: serde_json::json!({}),
            outputs: serde_json::json!({}),
        }
    }
}

/// Serializes a response message.
pub(crate) fn to_json(message: &impl Serialize) -> Vec<u8> {
    // Serializing these structs cannot fail: every map key is a string and Double handles
    // the non-finite values JSON cannot hold.
    serde_json::to_vec(message).unwrap_or_else(|e| {
        format!(r#"{{"error_code":"INTERNAL_ERROR","message":"serializing the response: {e}"}}"#)
            .into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_write_as_proto_json() {
        let json = |v: f64| serde_json::to_string(&Double(v)).unwrap();
        assert_eq!(json(f64::NAN), r#""NaN""#);
        assert_eq!(json(f64::INFINITY), r#""Infinity""#);
        assert_eq!(json(f64::NEG_INFINITY), r#""-Infinity""#);
        assert_eq!(json(-0.0), "-0.0");
        assert_eq!(json(0.1), "0.1");
        assert_eq!(json(1e300), "1e+300");
    }
}
