//! MLflow's experiment endpoints: create, get, get-by-name, search, update, delete, restore,
//! set-experiment-tag and delete-experiment-tag.
//!
//! Invariants: a create whose tags fail validation writes nothing (tags are checked before the
//! experiment is recorded); ids are MLflow's decimal strings, and an id that is not one names no
//! experiment (404, as for an unknown number).

use serde::Serialize;
use serde_json::Value;

use super::messages::{ExperimentMessage, to_json};
use super::wire::{Fields, missing, wrong_type};
use super::{Body, MlflowError, Request, Service};
use crate::query::SearchExperiments;
use crate::tracking::validation;
use crate::{Error, Experiment, ExperimentId, LifecycleStage, ViewType};

/// The largest page of `experiments/search` (MLflow's `SEARCH_MAX_RESULTS_THRESHOLD`).
const SEARCH_RESULTS_MAX: i64 = 50_000;

/// `No Experiment with id=... exists`, MLflow's words.
pub(crate) fn not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!("No Experiment with id={id} exists"))
}

/// The experiment id a request names; text that is no id names no experiment.
pub(crate) fn parse_id(text: &str) -> Result<ExperimentId, MlflowError> {
    text.parse::<u64>()
        .map(ExperimentId)
        .map_err(|_| not_found(text))
}

/// The experiment ids of a search, as MLflow reads them: each must be an integer (Python's
/// `int()`: surrounding spaces and a sign allowed), else 400; one that is no id of runlog's
/// (negative, or too large) names no experiment and is left out.
pub(crate) fn parse_search_ids(texts: &[&str]) -> Result<Vec<ExperimentId>, MlflowError> {
    let mut ids = Vec::with_capacity(texts.len());
    for text in texts {
        let number = text.trim().parse::<i128>().map_err(|_| {
            MlflowError::invalid(format!(
                "Invalid experiment ID '{text}'. Experiment ID must be a valid integer."
            ))
        })?;
        if let Ok(id) = u64::try_from(number) {
            ids.push(ExperimentId(id));
        }
    }
    Ok(ids)
}

/// Maps an engine error about experiment `id` onto MLflow's messages.
fn experiment_error(id: &str, error: Error) -> MlflowError {
    match error {
        Error::NotFound(_) => not_found(id),
        other => MlflowError::from(other),
    }
}

/// `experiments/create`.
pub(crate) fn create(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let name = fields.required_string("name")?;
    fields.string("artifact_location")?;
    let tags = key_values(&fields, "tags")?;
    validation::experiment_name(name).map_err(MlflowError::from)?;
    for (key, value) in &tags {
        validation::key("experiment tag", key).map_err(MlflowError::from)?;
        validation::value(
            "experiment tag",
            key,
            value,
            validation::EXPERIMENT_TAG_VALUE_CHARS_MAX,
        )
        .map_err(MlflowError::from)?;
    }
    let store = service.store();
    let experiment = store.create_experiment(name).map_err(|e| match e {
        Error::AlreadyExists(what) => MlflowError::new(
            super::ErrorCode::ResourceAlreadyExists,
            format!("Experiment(name={name}) already exists. Error: {what} already exists"),
        ),
        other => MlflowError::from(other),
    })?;
    for (key, value) in &tags {
        store.set_experiment_tag(experiment.id, key, value)?;
    }
    #[derive(Serialize)]
    struct Response {
        experiment_id: String,
    }
    Ok(to_json(&Response {
        experiment_id: experiment.id.to_string(),
    }))
}

/// The `{key, value}` entries of a repeated tag field, each with both present as strings.
pub(crate) fn key_values<'a>(
    fields: &'a Fields,
    name: &str,
) -> Result<Vec<(&'a str, &'a str)>, MlflowError> {
    fields
        .list(name)?
        .iter()
        .enumerate()
        .map(|(index, entry)| key_value(entry, &format!("{name}[{index}]")))
        .collect()
}

/// One `{key, value}` entry; `value` may be absent (an empty string, as proto reads it).
pub(crate) fn key_value<'a>(
    entry: &'a Value,
    path: &str,
) -> Result<(&'a str, &'a str), MlflowError> {
    let Value::Object(map) = entry else {
        return Err(wrong_type(path, entry));
    };
    let key = match map.get("key") {
        Some(Value::String(key)) if !key.is_empty() => key.as_str(),
        None | Some(Value::Null) => return Err(missing(&format!("{path}.key"))),
        Some(Value::String(_)) => return Err(missing(&format!("{path}.key"))),
        Some(other) => return Err(wrong_type(&format!("{path}.key"), other)),
    };
    let value = match map.get("value") {
        Some(Value::String(value)) => value.as_str(),
        None | Some(Value::Null) => "",
        Some(other) => return Err(wrong_type(&format!("{path}.value"), other)),
    };
    Ok((key, value))
}

#[derive(Serialize)]
struct ExperimentResponse<'a> {
    experiment: ExperimentMessage<'a>,
}

/// `experiments/get`.
pub(crate) fn get(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.required_string("experiment_id")?;
    let experiment = service
        .store()
        .experiment(parse_id(text)?)
        .map_err(|e| experiment_error(text, e))?;
    Ok(to_json(&ExperimentResponse {
        experiment: ExperimentMessage::of(&experiment),
    }))
}

/// `experiments/get-by-name`.
pub(crate) fn get_by_name(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let name = fields.required_string("experiment_name")?;
    let experiment = service.store().experiment_by_name(name)?.ok_or_else(|| {
        MlflowError::not_found(format!("Could not find experiment with name '{name}'"))
    })?;
    Ok(to_json(&ExperimentResponse {
        experiment: ExperimentMessage::of(&experiment),
    }))
}

/// A `ViewType` field: its enum name or number; absent is `ACTIVE_ONLY`.
pub(crate) fn view_type(fields: &Fields, name: &str) -> Result<ViewType, MlflowError> {
    let Some(value) = fields.raw(name) else {
        return Ok(ViewType::ActiveOnly);
    };
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Number(n) => match n.as_i64() {
            Some(1) => "ACTIVE_ONLY",
            Some(2) => "DELETED_ONLY",
            Some(3) => "ALL",
            _ => "",
        },
        _ => "",
    };
    match text {
        "ACTIVE_ONLY" | "1" => Ok(ViewType::ActiveOnly),
        "DELETED_ONLY" | "2" => Ok(ViewType::DeletedOnly),
        "ALL" | "3" => Ok(ViewType::All),
        _ => Err(wrong_type(name, value)),
    }
}

/// A page size field: absent is `default`, otherwise 1..=`max`.
pub(crate) fn max_results(fields: &Fields, default: usize, max: i64) -> Result<usize, MlflowError> {
    match fields.int("max_results")? {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(MlflowError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be at most {max} \
             and positive."
        ))),
    }
}

/// `experiments/search` (GET with query parameters, or POST).
pub(crate) fn search(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &["order_by"])?;
    let search = SearchExperiments {
        view: view_type(&fields, "view_type")?,
        filter: fields.string("filter")?.unwrap_or("").to_string(),
        order_by: fields
            .strings("order_by")?
            .into_iter()
            .map(str::to_string)
            .collect(),
        max_results: max_results(&fields, 1_000, SEARCH_RESULTS_MAX)?,
        page_token: fields
            .string("page_token")?
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    };
    let page = service.store().search_experiments(&search)?;
    #[derive(Serialize)]
    struct Response<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        experiments: Vec<ExperimentMessage<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }
    Ok(to_json(&Response {
        experiments: page.experiments.iter().map(ExperimentMessage::of).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// The experiment `text` names, which must be in `stage` (MLflow looks an experiment up among
/// the active ones to delete it, among the deleted ones to restore it: any other is not found).
fn experiment_in(
    service: &Service,
    text: &str,
    stage: LifecycleStage,
) -> Result<Experiment, MlflowError> {
    let experiment = service
        .store()
        .experiment(parse_id(text)?)
        .map_err(|e| experiment_error(text, e))?;
    if experiment.lifecycle_stage != stage {
        return Err(not_found(text));
    }
    Ok(experiment)
}

/// An active experiment, for a change MLflow allows only on active ones.
fn active_experiment(service: &Service, text: &str) -> Result<Experiment, MlflowError> {
    let experiment = service
        .store()
        .experiment(parse_id(text)?)
        .map_err(|e| experiment_error(text, e))?;
    if experiment.lifecycle_stage != LifecycleStage::Active {
        return Err(MlflowError::invalid(format!(
            "The experiment {text} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(experiment)
}

/// `experiments/update`: renames an active experiment.
pub(crate) fn update(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.required_string("experiment_id")?;
    let new_name = fields.required_string("new_name")?;
    let id = parse_id(text)?;
    let experiment = service
        .store()
        .experiment(id)
        .map_err(|e| experiment_error(text, e))?;
    if experiment.lifecycle_stage != LifecycleStage::Active {
        return Err(MlflowError::new(
            super::ErrorCode::InvalidState,
            "Cannot rename a non-active experiment.",
        ));
    }
    service
        .store()
        .rename_experiment(id, new_name)
        .map_err(|e| match e {
            // MLflow's SQL store reports the unique-name violation of a rename as BAD_REQUEST.
            Error::AlreadyExists(_) => MlflowError::new(
                super::ErrorCode::BadRequest,
                format!("Experiment(name={new_name}) already exists."),
            ),
            other => experiment_error(text, other),
        })?;
    Ok(b"{}".to_vec())
}

/// `experiments/delete`: deletes an active experiment and, as MLflow does, its runs.
pub(crate) fn delete(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.required_string("experiment_id")?;
    let experiment = experiment_in(service, text, LifecycleStage::Active)?;
    service
        .store()
        .delete_experiment_and_runs(experiment.id)
        .map_err(|e| experiment_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `experiments/restore`: restores a deleted experiment and, as MLflow does, all its runs.
pub(crate) fn restore(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.required_string("experiment_id")?;
    let experiment = experiment_in(service, text, LifecycleStage::Deleted)?;
    service
        .store()
        .restore_experiment_and_runs(experiment.id)
        .map_err(|e| experiment_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `experiments/set-experiment-tag`.
pub(crate) fn set_tag(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.required_string("experiment_id")?;
    let key = fields.required_string("key")?;
    let value = fields.string("value")?.unwrap_or("");
    let experiment = active_experiment(service, text)?;
    service
        .store()
        .set_experiment_tag(experiment.id, key, value)
        .map_err(|e| experiment_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `experiments/delete-experiment-tag`.
pub(crate) fn delete_tag(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.required_string("experiment_id")?;
    let key = fields.required_string("key")?;
    let experiment = active_experiment(service, text)?;
    let id = experiment.id;
    if !experiment.tags.contains_key(key) {
        return Err(MlflowError::not_found(format!(
            "No tag with name: {key} in experiment with id {text}"
        )));
    }
    service
        .store()
        .delete_experiment_tag(id, key)
        .map_err(|e| experiment_error(text, e))?;
    Ok(b"{}".to_vec())
}
