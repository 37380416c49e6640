//! MLflow's response messages as proto JSON (`message_to_json` in MLflow's server): snake_case
//! field names, unset and empty fields omitted, int64 fields as JSON numbers, enums by name, ids
//! as strings, and doubles that JSON cannot spell as `"NaN"`, `"Infinity"`, `"-Infinity"`.
//!
//! Invariants: a message is built from the engine's snapshots (`Experiment`, `RunView`,
//! `DatasetInput`) without copying their strings; the id texts (`experiment_id`, `run_id`) are the ones requests name.

use serde::{Serialize, Serializer};

use super::datasets::DatasetInputMessage;
use crate::catalog::{Experiment, RunInfo, RunView};
use crate::{DatasetInput, ExperimentId, RunId};

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

/// `RunInputs`: the datasets the run used and the models it used.
#[derive(Default, Serialize)]
pub(crate) struct RunInputsMessage<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dataset_inputs: Vec<DatasetInputMessage<'a>>,
    /// `LoggedModelInput`s; MLflow's `runs/search` leaves them out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_inputs: Vec<serde_json::Value>,
}

/// `Run`.
#[derive(Serialize)]
pub(crate) struct RunMessage<'a> {
    pub info: RunInfoMessage<'a>,
    pub data: RunData<'a>,
    pub inputs: RunInputsMessage<'a>,
    /// `RunOutputs`: the models the run produced (`model_outputs`).
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
            inputs: RunInputsMessage::default(),
            outputs: serde_json::json!({}),
        }
    }

    /// The message of `run` with the datasets it used, `dataset_inputs`.
    pub(crate) fn with_datasets(
        run: &'a RunView,
        dataset_inputs: &'a [DatasetInput],
    ) -> RunMessage<'a> {
        let mut message = RunMessage::of(run);
        message.inputs.dataset_inputs =
            dataset_inputs.iter().map(DatasetInputMessage::of).collect();
        message
    }
}

/// A `{"metrics": [...], "next_page_token": ...}` answer written straight into one buffer,
/// byte for byte what `to_json` writes for the same `Metric` messages (fields in order,
/// `run_id` only when set, an empty list and an absent token omitted): the key is escaped
/// once and each run's id formatted once, not once per point, and no message is built per
/// point. Numbers go through `serde_json` so they are spelled as `to_json` spells them.
pub(crate) struct MetricsJson {
    out: Vec<u8>,
    /// `{"key":<key>,"value":`, the same for every point.
    head: Vec<u8>,
    /// What closes a point: `,"run_id":"<id>"}` of the current run, or `}`.
    tail: Vec<u8>,
    points: usize,
    /// The first serializing error; `finish` then answers as `to_json` does on one.
    failed: Option<serde_json::Error>,
}

impl MetricsJson {
    /// An answer of `key`'s points, with room for about `points` of them.
    pub(crate) fn new(key: &str, points: usize) -> MetricsJson {
        let mut json = MetricsJson {
            // A point with a run id takes about 110 bytes.
            out: Vec::with_capacity(16 + points.saturating_mul(112)),
            head: Vec::with_capacity(16 + key.len()),
            tail: b"}".to_vec(),
            points: 0,
            failed: None,
        };
        json.head.extend_from_slice(br#"{"key":"#);
        let escaped = serde_json::to_writer(&mut json.head, key);
        json.note(escaped);
        json.head.extend_from_slice(br#","value":"#);
        json
    }

    /// The run the points pushed next belong to (`None`: no `run_id` field).
    pub(crate) fn run(&mut self, run: Option<RunId>) {
        self.tail.clear();
        if let Some(run) = run {
            self.tail.extend_from_slice(br#","run_id":"#);
            let written = serde_json::to_writer(&mut self.tail, &run.to_string());
            self.note(written);
        }
        self.tail.push(b'}');
    }

    /// Appends one `Metric` of the current run.
    pub(crate) fn push(&mut self, value: f64, timestamp_ms: i64, step: i64) {
        self.out.extend_from_slice(if self.points == 0 {
            br#"{"metrics":["#
        } else {
            b","
        });
        self.points += 1;
        self.out.extend_from_slice(&self.head);
        let written = serde_json::to_writer(&mut self.out, &Double(value));
        self.note(written);
        self.out.extend_from_slice(br#","timestamp":"#);
        let written = serde_json::to_writer(&mut self.out, &timestamp_ms);
        self.note(written);
        self.out.extend_from_slice(br#","step":"#);
        let written = serde_json::to_writer(&mut self.out, &step);
        self.note(written);
        self.out.extend_from_slice(&self.tail);
    }

    /// The whole answer, with `next_page_token` if there is one.
    pub(crate) fn finish(mut self, next_page_token: Option<&str>) -> Vec<u8> {
        self.out
            .extend_from_slice(if self.points == 0 { b"{" } else { b"]" });
        if let Some(token) = next_page_token {
            if self.points > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(br#""next_page_token":"#);
            let written = serde_json::to_writer(&mut self.out, token);
            self.note(written);
        }
        self.out.push(b'}');
        match self.failed {
            None => self.out,
            Some(e) => internal_error(&e),
        }
    }

    fn note(&mut self, result: Result<(), serde_json::Error>) {
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
    }
}

/// The answer to a response that could not be serialized.
fn internal_error(e: &serde_json::Error) -> Vec<u8> {
    format!(r#"{{"error_code":"INTERNAL_ERROR","message":"serializing the response: {e}"}}"#)
        .into_bytes()
}

/// Serializes a response message.
pub(crate) fn to_json(message: &impl Serialize) -> Vec<u8> {
    // Serializing these structs cannot fail: every map key is a string and Double handles
    // the non-finite values JSON cannot hold.
    serde_json::to_vec(message).unwrap_or_else(|e| internal_error(&e))
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

    /// The message `MetricsJson` stands in for, serialized by `serde` as before it.
    #[derive(Serialize)]
    struct MetricsResponse<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        metrics: Vec<Metric<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }

    #[test]
    fn metrics_json_writes_what_serde_writes() {
        let values = [
            0.5,
            -0.0,
            0.1,
            1e300,
            -2.5e-308,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            3.0,
        ];
        let runs = [Some(RunId(7)), None, Some(RunId(u128::MAX))];
        for key in ["loss", "a \"quoted\" \\ key\u{1}\n", "é/ü"] {
            for token in [None, Some("25000")] {
                for points in [0, 1, values.len()] {
                    let mut json = MetricsJson::new(key, points);
                    let mut messages = Vec::new();
                    for (i, value) in values.iter().take(points).enumerate() {
                        // Two points per run, the runs with and without an id in turn.
                        let run = runs[(i / 2) % runs.len()];
                        if i % 2 == 0 {
                            json.run(run);
                        }
                        let (timestamp, step) = (i64::MAX - i as i64, i64::MIN + i as i64);
                        json.push(*value, timestamp, step);
                        messages.push(Metric {
                            key,
                            value: Double(*value),
                            timestamp,
                            step,
                            run_id: run.map(|r| r.to_string()),
                        });
                    }
                    let expected = to_json(&MetricsResponse {
                        metrics: messages,
                        next_page_token: token.map(str::to_string),
                    });
                    assert_eq!(
                        String::from_utf8(json.finish(token)).unwrap(),
                        String::from_utf8(expected).unwrap(),
                        "key {key:?}, token {token:?}, {points} points"
                    );
                }
            }
        }
    }
}
