//! MLflow 3's logged-model endpoints: create (`POST logged-models`), get, finalize (`PATCH`),
//! delete, search, set tags (`PATCH .../tags`), delete a tag, log params, and the run side of
//! them (`runs/outputs`, the `models` of `runs/log-inputs`), over the engine's logged models
//! (`Store::create_logged_model` and friends). Metrics logged with a `model_id` are in
//! `model_metrics.rs`, the artifact routes of MLflow's UI in `model_artifacts.rs`.
//!
//! Invariants:
//! - Requests are checked whole before anything is written; a refused request writes nothing.
//! - A model id that does not parse is MLflow's 404 `Logged model with ID '...' not found.`, and
//!   so is a deleted model's for `GET` without `?allow_deleted=true`. Every other call on a
//!   model finds a deleted one, as MLflow's SQL store does.
//! - A model's `artifact_uri` is `mlflow-artifacts:/<experiment>/models/<model_id>/artifacts`,
//!   which the mlflow-artifacts routes (`artifacts.rs`) map onto the model's artifact files.

use serde::Serialize;
use serde_json::Value;

use super::experiments::{self, key_values};
use super::messages::{Double, KeyValue, to_json};
use super::runs::{parse_id as parse_run_id, run_error};
use super::wire::{Fields, int_value, missing, wrong_type};
use super::{Body, Method, MlflowError, Request, Service};
use crate::catalog::{LifecycleStage, LoggedModel};
use crate::query::{DatasetFilter, SearchModels};
use crate::{Error, ExperimentId, ModelId, ModelLink, ModelMetric, ModelOptions, ModelStatus};

/// The largest page of `logged-models/search`.
const SEARCH_RESULTS_MAX: i64 = 50_000;

/// `Logged model with ID '...' not found.`, MLflow's words.
pub(crate) fn not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!("Logged model with ID '{id}' not found."))
}

/// The model id a request names; text that is no id names no model.
pub(crate) fn parse_id(text: &str) -> Result<ModelId, MlflowError> {
    text.parse::<ModelId>().map_err(|_| not_found(text))
}

/// Maps an engine error about model `id` onto MLflow's messages.
pub(crate) fn model_error(id: &str, error: Error) -> MlflowError {
    match error {
        Error::NotFound(what) if what.starts_with("logged model ") => not_found(id),
        other => MlflowError::from(other),
    }
}

/// The artifact URI of a model, as MLflow's server with `--serve-artifacts` makes it.
pub(crate) fn artifact_uri(experiment: ExperimentId, model: ModelId) -> String {
    format!("mlflow-artifacts:/{experiment}/models/{model}/artifacts")
}

/// `LoggedModelInfo`.
#[derive(Serialize)]
struct InfoMessage<'a> {
    model_id: String,
    experiment_id: String,
    name: &'a str,
    creation_timestamp_ms: i64,
    last_updated_timestamp_ms: i64,
    artifact_uri: String,
    status: &'static str,
    model_type: &'a str,
    source_run_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValue<'a>>,
}

/// `LoggedModelData`.
#[derive(Serialize)]
struct DataMessage<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    params: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<MetricMessage<'a>>,
}

/// A model's `Metric`: the point with its dataset, model and run, as MLflow's
/// `logged_model_metrics` rows show.
#[derive(Serialize)]
struct MetricMessage<'a> {
    key: &'a str,
    value: Double,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataset_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataset_digest: Option<&'a str>,
    model_id: String,
    run_id: String,
}

impl<'a> MetricMessage<'a> {
    fn of(metric: &'a ModelMetric) -> MetricMessage<'a> {
        MetricMessage {
            key: &metric.key,
            value: Double(metric.value),
            timestamp: metric.timestamp_ms,
            step: metric.step,
            dataset_name: metric.dataset_name.as_deref(),
            dataset_digest: metric.dataset_digest.as_deref(),
            model_id: metric.model.to_string(),
            run_id: metric.run.to_string(),
        }
    }
}

/// `LoggedModel`.
#[derive(Serialize)]
struct ModelMessage<'a> {
    info: InfoMessage<'a>,
    data: DataMessage<'a>,
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Vec<KeyValue<'_>> {
    map.iter()
        .map(|(key, value)| KeyValue { key, value })
        .collect()
}

impl<'a> ModelMessage<'a> {
    fn of(model: &'a LoggedModel) -> ModelMessage<'a> {
        ModelMessage {
            info: InfoMessage {
                model_id: model.id.to_string(),
                experiment_id: model.experiment.to_string(),
                name: &model.name,
                creation_timestamp_ms: model.creation_time_ms,
                last_updated_timestamp_ms: model.last_updated_time_ms,
                artifact_uri: artifact_uri(model.experiment, model.id),
                status: model.status.as_str(),
                model_type: &model.model_type,
                source_run_id: model.source_run.map(|r| r.to_string()).unwrap_or_default(),
                tags: pairs(&model.tags),
            },
            data: DataMessage {
                params: pairs(&model.params),
                metrics: model.metrics.iter().map(MetricMessage::of).collect(),
            },
        }
    }
}

#[derive(Serialize)]
struct ModelResponse<'a> {
    model: ModelMessage<'a>,
}

fn model_response(model: &LoggedModel) -> Vec<u8> {
    to_json(&ModelResponse {
        model: ModelMessage::of(model),
    })
}

/// The `{key, value}` entries of `name`, owned.
fn owned_pairs(fields: &Fields, name: &str) -> Result<Vec<(String, String)>, MlflowError> {
    Ok(key_values(fields, name)?
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect())
}

/// Characters MLflow refuses in a logged model's name (`_validate_logged_model_name`): its
/// artifact locations and URIs are built from it.
const MODEL_NAME_FORBIDDEN: [char; 6] = ['/', ':', '.', '%', '"', '\''];

/// MLflow's check of a logged model's name as it arrives: an empty one stands for none (a name
/// is then generated), so only the forbidden characters are refused.
fn check_model_name(name: &str) -> Result<(), MlflowError> {
    if name.contains(MODEL_NAME_FORBIDDEN) {
        return Err(MlflowError::invalid(format!(
            "Invalid model name ({name:?}) provided. Model name must be a non-empty string and \
             cannot contain the following characters: {MODEL_NAME_FORBIDDEN:?}"
        )));
    }
    Ok(())
}

/// `POST logged-models`.
pub(crate) fn create(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let experiment_text = fields.required_string("experiment_id")?;
    // Before the experiment is looked up, as MLflow checks.
    if let Some(name) = fields.string("name")? {
        check_model_name(name)?;
    }
    let experiment = experiments::parse_id(experiment_text)?;
    let source_run = match fields.string("source_run_id")?.filter(|s| !s.is_empty()) {
        Some(text) => Some(parse_run_id(text)?),
        None => None,
    };
    let options = ModelOptions {
        name: fields
            .string("name")?
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        model_type: fields.string("model_type")?.unwrap_or("").to_string(),
        source_run,
        tags: owned_pairs(&fields, "tags")?,
        params: owned_pairs(&fields, "params")?,
    };
    // The source run is not looked up: MLflow's SQL store keeps whatever run id it is given.
    let store = service.store();
    store
        .experiment(experiment)
        .map_err(|_| experiments::not_found(experiment_text))?;
    let model = store.create_logged_model(experiment, options)?;
    Ok(model_response(&model))
}

/// The routes below `logged-models/`: `<id>`, `<id>/tags`, `<id>/tags/<key>`, `<id>/params`,
/// `<id>/artifacts/directories` (the files route answers apart, `model_artifacts::file_reply`).
pub(crate) fn handle_path(service: &Service, request: &Request<'_>, rest: &str) -> Body {
    let (id_text, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let id_text = super::wire::percent_decode(id_text);
    match (request.method, tail) {
        (Method::Get, "") => get(service, &id_text, allow_deleted(request.query)),
        (Method::Patch, "") => finalize(service, request, &id_text),
        (Method::Delete, "") => delete(service, &id_text),
        (Method::Patch, "tags") => set_tags(service, request, &id_text),
        (Method::Post, "params") => log_params(service, request, &id_text),
        (Method::Get, "artifacts/directories") => {
            super::model_artifacts::list(service, &id_text, request.query)
        }
        (Method::Delete, key) if key.starts_with("tags/") && key.len() > "tags/".len() => {
            let key = super::wire::percent_decode(&key["tags/".len()..]);
            delete_tag(service, &id_text, &key)
        }
        _ => Err(MlflowError::endpoint_not_found(
            request.method,
            request.path,
        )),
    }
}

/// Whether a `GET` asks for a deleted model too: `allow_deleted=true` in its query, the case
/// of `true` aside, as MLflow's handler reads it.
fn allow_deleted(query: &str) -> bool {
    super::wire::query_pairs(query)
        .any(|(key, value)| key == "allow_deleted" && value.eq_ignore_ascii_case("true"))
}

/// The model `id_text` names, deleted or not: MLflow's SQL store finds a deleted model for
/// every call but a plain `GET`.
fn found(service: &Service, id_text: &str) -> Result<LoggedModel, MlflowError> {
    let id = parse_id(id_text)?;
    service
        .store()
        .logged_model_including_deleted(id)
        .map_err(|e| model_error(id_text, e))
}

fn get(service: &Service, id_text: &str, allow_deleted: bool) -> Body {
    let model = found(service, id_text)?;
    if !allow_deleted && model.lifecycle_stage == LifecycleStage::Deleted {
        return Err(not_found(id_text));
    }
    Ok(model_response(&model))
}

/// A `LoggedModelStatus` field: its enum name or number.
fn model_status(fields: &Fields) -> Result<ModelStatus, MlflowError> {
    let Some(value) = fields.raw("status") else {
        return Err(missing("status"));
    };
    let status = match value {
        Value::String(s) => match s.as_str() {
            "LOGGED_MODEL_STATUS_UNSPECIFIED" => Some(ModelStatus::Unspecified),
            "LOGGED_MODEL_PENDING" => Some(ModelStatus::Pending),
            "LOGGED_MODEL_READY" => Some(ModelStatus::Ready),
            "LOGGED_MODEL_UPLOAD_FAILED" => Some(ModelStatus::UploadFailed),
            _ => None,
        },
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .and_then(ModelStatus::from_byte),
        _ => None,
    };
    status.ok_or_else(|| wrong_type("status", value))
}

/// The body's `model_id`, which MLflow's server requires beside the one in the path.
fn body_model_id(fields: &Fields) -> Result<(), MlflowError> {
    fields.required_string("model_id").map(|_| ())
}

fn finalize(service: &Service, request: &Request<'_>, id_text: &str) -> Body {
    let fields = Fields::of(request, &[])?;
    body_model_id(&fields)?;
    let status = model_status(&fields)?;
    let model = found(service, id_text)?;
    service
        .store()
        .finalize_logged_model(model.id, status)
        .map_err(|e| model_error(id_text, e))?;
    get(service, id_text, true)
}

fn delete(service: &Service, id_text: &str) -> Body {
    let model = found(service, id_text)?;
    service
        .store()
        .delete_logged_model(model.id)
        .map_err(|e| model_error(id_text, e))?;
    Ok(b"{}".to_vec())
}

fn set_tags(service: &Service, request: &Request<'_>, id_text: &str) -> Body {
    let fields = Fields::of(request, &[])?;
    let tags = owned_pairs(&fields, "tags")?;
    let model = found(service, id_text)?;
    service
        .store()
        .set_logged_model_tags(model.id, &tags)
        .map_err(|e| model_error(id_text, e))?;
    Ok(b"{}".to_vec())
}

fn delete_tag(service: &Service, id_text: &str, key: &str) -> Body {
    let model = found(service, id_text)?;
    if !model.tags.contains_key(key) {
        return Err(MlflowError::not_found(format!(
            "No tag with key '{key}' found for model with ID '{id_text}'."
        )));
    }
    service
        .store()
        .delete_logged_model_tag(model.id, key)
        .map_err(|e| model_error(id_text, e))?;
    Ok(b"{}".to_vec())
}

fn log_params(service: &Service, request: &Request<'_>, id_text: &str) -> Body {
    let fields = Fields::of(request, &[])?;
    body_model_id(&fields)?;
    let params = owned_pairs(&fields, "params")?;
    let model = found(service, id_text)?;
    service
        .store()
        .log_logged_model_params(model.id, &params)
        .map_err(|e| model_error(id_text, e))?;
    Ok(b"{}".to_vec())
}

/// An optional string field of an object in a request.
fn optional_text<'a>(
    map: &'a serde_json::Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<Option<&'a str>, MlflowError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str()).filter(|t| !t.is_empty())),
        Some(other) => Err(wrong_type(&format!("{path}.{name}"), other)),
    }
}

/// The dataset an object's `dataset_name` and `dataset_digest` name, if any.
fn dataset_of(
    map: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<Option<DatasetFilter>, MlflowError> {
    let name = optional_text(map, path, "dataset_name")?;
    let digest = optional_text(map, path, "dataset_digest")?;
    Ok((name.is_some() || digest.is_some()).then(|| DatasetFilter {
        name: name.map(str::to_string),
        digest: digest.map(str::to_string),
    }))
}

/// The search's `datasets`: each names a dataset (`dataset_name` required, as MLflow's SQL
/// store requires it), and optionally its digest.
fn search_datasets(fields: &Fields) -> Result<Vec<DatasetFilter>, MlflowError> {
    let mut datasets = Vec::new();
    for (index, entry) in fields.list("datasets")?.iter().enumerate() {
        let path = format!("datasets[{index}]");
        let Value::Object(map) = entry else {
            return Err(wrong_type(&path, entry));
        };
        match dataset_of(map, &path)? {
            Some(dataset) if dataset.name.is_some() => datasets.push(dataset),
            _ => {
                return Err(MlflowError::invalid(
                    "`dataset_name` in the `datasets` clause must be specified.",
                ));
            }
        }
    }
    Ok(datasets)
}

/// One `order_by` entry of a search: `{field_name, ascending}` as an ordering string, and the
/// dataset its metric is read on.
fn order_entry(
    entry: &Value,
    index: usize,
) -> Result<(String, Option<DatasetFilter>), MlflowError> {
    let path = format!("order_by[{index}]");
    let Value::Object(map) = entry else {
        return Err(wrong_type(&path, entry));
    };
    let field = match map.get("field_name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(missing(&format!("{path}.field_name")));
        }
        Some(other) => return Err(wrong_type(&format!("{path}.field_name"), other)),
    };
    let ascending = match map.get("ascending") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(wrong_type(&format!("{path}.ascending"), other)),
    };
    let order = format!("{field} {}", if ascending { "ASC" } else { "DESC" });
    Ok((order, dataset_of(map, &path)?))
}

/// `POST logged-models/search`.
pub(crate) fn search(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &["experiment_ids"])?;
    let experiment_texts = fields.strings("experiment_ids")?;
    if experiment_texts.is_empty() {
        return Err(missing("experiment_ids"));
    }
    let max_results = match fields.raw("max_results") {
        None => 0,
        Some(value) => match int_value("max_results", value)? {
            n if (1..=SEARCH_RESULTS_MAX).contains(&n) => n as usize,
            n => {
                return Err(MlflowError::invalid(format!(
                    "Invalid value {n} for parameter 'max_results' supplied. It must be at \
                     most {SEARCH_RESULTS_MAX} and positive."
                )));
            }
        },
    };
    let (order_by, order_by_datasets): (Vec<String>, Vec<Option<DatasetFilter>>) = fields
        .list("order_by")?
        .iter()
        .enumerate()
        .map(|(index, entry)| order_entry(entry, index))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let datasets = search_datasets(&fields)?;
    // An id that names no experiment matches no model, as in MLflow's SQL store.
    let experiments: Vec<ExperimentId> = experiment_texts
        .iter()
        .filter_map(|text| text.parse::<u64>().ok().map(ExperimentId))
        .collect();
    if experiments.is_empty() {
        return Ok(b"{}".to_vec());
    }
    let search = SearchModels {
        experiments,
        filter: fields.string("filter")?.unwrap_or("").to_string(),
        order_by,
        order_by_datasets,
        datasets,
        max_results,
        page_token: fields
            .string("page_token")?
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    };
    let page = service.store().search_logged_models(&search)?;
    #[derive(Serialize)]
    struct Response<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        models: Vec<ModelMessage<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }
    Ok(to_json(&Response {
        models: page.models.iter().map(ModelMessage::of).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// The `{model_id[, step]}` entries of `name` as links: `step` present (default 0) for outputs.
fn model_links(
    fields: &Fields,
    name: &str,
    output: bool,
) -> Result<Vec<(ModelId, ModelLink)>, MlflowError> {
    let mut links = Vec::new();
    for (index, entry) in fields.list(name)?.iter().enumerate() {
        let path = format!("{name}[{index}]");
        let Value::Object(map) = entry else {
            return Err(wrong_type(&path, entry));
        };
        let id_text = match map.get("model_id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(missing(&format!("{path}.model_id")));
            }
            Some(other) => return Err(wrong_type(&format!("{path}.model_id"), other)),
        };
        let model = parse_id(id_text)?;
        let link = if output {
            let step = match map.get("step") {
                None | Some(Value::Null) => 0,
                Some(value) => int_value(&format!("{path}.step"), value)?,
            };
            ModelLink::Output { step }
        } else {
            ModelLink::Input
        };
        links.push((model, link));
    }
    Ok(links)
}

/// `runs/outputs`: links the run to the models it produced.
pub(crate) fn log_outputs(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    // Required, as MLflow's schema says; an empty list is not a missing one.
    if matches!(fields.raw("models"), None | Some(Value::Null)) {
        return Err(missing("models"));
    }
    let links = model_links(&fields, "models", true)?;
    let run = parse_run_id(text)?;
    service
        .store()
        .link_run_models(run, &links)
        .map_err(|e| run_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// The `models` of `runs/log-inputs`, read whole before anything is written.
pub(crate) fn input_models(fields: &Fields) -> Result<Vec<(ModelId, ModelLink)>, MlflowError> {
    model_links(fields, "models", false)
}

/// The model inputs (`LoggedModelInput`s) and `RunOutputs` of a run: its model links, as
/// MLflow's `runs/get` shows them.
pub(crate) fn run_links(
    service: &Service,
    run: crate::RunId,
) -> Result<(Vec<Value>, Value), MlflowError> {
    let links = service.store().run_model_links(run)?;
    let inputs = links
        .iter()
        .filter(|(_, link)| matches!(link, ModelLink::Input))
        .map(|(model, _)| serde_json::json!({"model_id": model.to_string()}))
        .collect();
    Ok((inputs, run_outputs(&links)))
}

/// The `RunOutputs` of a run linked to `links`: its model outputs, as MLflow shows them (in
/// `runs/search` too, which leaves model inputs out).
pub(crate) fn run_outputs(links: &[(ModelId, ModelLink)]) -> Value {
    let outputs: Vec<Value> = links
        .iter()
        .filter_map(|(model, link)| match link {
            ModelLink::Input => None,
            ModelLink::Output { step } => {
                Some(serde_json::json!({"model_id": model.to_string(), "step": step}))
            }
        })
        .collect();
    let mut map = serde_json::Map::new();
    if !outputs.is_empty() {
        map.insert("model_outputs".to_string(), Value::Array(outputs));
    }
    Value::Object(map)
}
