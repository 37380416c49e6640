//! MLflow's datasets over the engine's (`Store::log_dataset_inputs` and friends): the
//! `datasets` of `runs/log-inputs` read into `DatasetInput`s, the `DatasetInput` and
//! `DatasetSummary` messages, and `experiments/search-datasets`.
//!
//! Invariants: this layer only maps; MLflow's dedup rules and limits are the engine's. A
//! request's entries are read whole before anything is written, and a field MLflow's proto
//! marks required that is missing or empty is refused naming its path
//! (`datasets[0].dataset.name`), where MLflow's server would store an empty string.

use serde::Serialize;
use serde_json::{Map, Value};

use super::messages::{KeyValue, to_json};
use super::wire::{Fields, missing, wrong_type};
use super::{Body, MlflowError, Request, Service};
use crate::{Dataset, DatasetInput, DatasetSummary};

/// Most experiments one `experiments/search-datasets` names (MLflow's server limit).
const SEARCH_EXPERIMENTS_MAX: usize = 20;
/// Most summaries one `experiments/search-datasets` answers (MLflow's SQL store limit).
const SEARCH_RESULTS_MAX: usize = 1_000;

/// The `datasets` of a `runs/log-inputs` request.
pub(crate) fn inputs(fields: &Fields) -> Result<Vec<DatasetInput>, MlflowError> {
    fields
        .list("datasets")?
        .iter()
        .enumerate()
        .map(|(index, entry)| input(entry, &format!("datasets[{index}]")))
        .collect()
}

/// One `DatasetInput`: `dataset` required, `tags` optional.
fn input(entry: &Value, path: &str) -> Result<DatasetInput, MlflowError> {
    let map = object(entry, path)?;
    let dataset_path = format!("{path}.dataset");
    let dataset = match map.get("dataset") {
        None | Some(Value::Null) => return Err(missing(&dataset_path)),
        Some(value) => object(value, &dataset_path)?,
    };
    let required = |name: &str| required_string(dataset, &format!("{dataset_path}.{name}"), name);
    let optional = |name: &str| optional_string(dataset, &format!("{dataset_path}.{name}"), name);
    let dataset = Dataset {
        name: required("name")?,
        digest: required("digest")?,
        source_type: required("source_type")?,
        source: required("source")?,
        schema: optional("schema")?,
        profile: optional("profile")?,
    };
    let tags = match map.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .enumerate()
            .map(|(index, tag)| input_tag(tag, &format!("{path}.tags[{index}]")))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(wrong_type(&format!("{path}.tags"), other)),
    };
    Ok(DatasetInput { dataset, tags })
}

/// One `InputTag`: `key` required; `value` may be absent (an empty string, as proto reads it
/// and MLflow's SQL store keeps it).
fn input_tag(entry: &Value, path: &str) -> Result<(String, String), MlflowError> {
    let map = object(entry, path)?;
    Ok((
        required_string(map, &format!("{path}.key"), "key")?,
        optional_string(map, &format!("{path}.value"), "value")?.unwrap_or_default(),
    ))
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, MlflowError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(wrong_type(path, other)),
    }
}

fn required_string(
    map: &Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<String, MlflowError> {
    match optional_string(map, path, name)? {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(missing(path)),
    }
}

fn optional_string(
    map: &Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<Option<String>, MlflowError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(wrong_type(path, other)),
    }
}

/// `Dataset`: `schema` and `profile` only when set and not empty, as MLflow's `to_proto`.
#[derive(Serialize)]
struct DatasetMessage<'a> {
    name: &'a str,
    digest: &'a str,
    source_type: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'a str>,
}

/// `DatasetInput`.
#[derive(Serialize)]
pub(crate) struct DatasetInputMessage<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValue<'a>>,
    dataset: DatasetMessage<'a>,
}

impl<'a> DatasetInputMessage<'a> {
    pub(crate) fn of(input: &'a DatasetInput) -> DatasetInputMessage<'a> {
        let dataset = &input.dataset;
        let set = |text: &'a Option<String>| text.as_deref().filter(|t| !t.is_empty());
        DatasetInputMessage {
            tags: input
                .tags
                .iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            dataset: DatasetMessage {
                name: &dataset.name,
                digest: &dataset.digest,
                source_type: &dataset.source_type,
                source: &dataset.source,
                schema: set(&dataset.schema),
                profile: set(&dataset.profile),
            },
        }
    }
}

/// `DatasetSummary`.
#[derive(Serialize)]
struct SummaryMessage<'a> {
    experiment_id: String,
    name: &'a str,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

/// `experiments/search-datasets`: the datasets the runs of the experiments used, one entry per
/// dataset and context, as MLflow's SQL store answers (at most 1,000).
pub(crate) fn search(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &["experiment_ids"])?;
    let texts = fields.strings("experiment_ids")?;
    if texts.is_empty() {
        return Err(MlflowError::invalid(
            "SearchDatasets request must specify at least one experiment_id.",
        ));
    }
    if texts.len() > SEARCH_EXPERIMENTS_MAX {
        return Err(MlflowError::invalid(format!(
            "SearchDatasets request cannot specify more than {SEARCH_EXPERIMENTS_MAX} \
             experiment_ids. Received {} experiment_ids.",
            texts.len()
        )));
    }
    let experiments = super::experiments::parse_search_ids(&texts)?;
    if experiments.is_empty() {
        return Ok(b"{}".to_vec());
    }
    let mut summaries: Vec<DatasetSummary> = service.store().dataset_summaries(&experiments)?;
    summaries.truncate(SEARCH_RESULTS_MAX);
    #[derive(Serialize)]
    struct Response<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        dataset_summaries: Vec<SummaryMessage<'a>>,
    }
    Ok(to_json(&Response {
        dataset_summaries: summaries
            .iter()
            .map(|summary| SummaryMessage {
                experiment_id: summary.experiment.to_string(),
                name: &summary.name,
                digest: &summary.digest,
                // MLflow leaves an empty context out.
                context: summary.context.as_deref().filter(|c| !c.is_empty()),
            })
            .collect(),
    }))
}
