//! MLflow's run endpoints: create, get, update, delete, restore, search, log-metric,
//! log-parameter, log-batch, set-tag, delete-tag and log-inputs (its datasets in `datasets.rs`,
//! its models in `models.rs`).
//!
//! Invariants:
//! - A logging request is checked whole (MLflow's field checks and batch limits here, the
//!   engine's key, param and lifecycle rules in `Store::log_batch`) before anything is written;
//!   a refused request writes nothing.
//! - Param and tag values longer than MLflow's limits are cut to them, as MLflow's server does
//!   by default (`MLFLOW_TRUNCATE_LONG_VALUES`); keys are never cut.
//! - A run created with neither `run_name` nor an `mlflow.runName` tag gets a made-up name of
//!   MLflow's shape (`<adjective>-<noun>-<0..=1000>`, at most 20 characters), as MLflow's server
//!   gives it, not the engine's own default: that is MLflow's behaviour, not the engine's.
//! - A log-batch metric entry that carries a `model_id` and repeats exactly (key, timestamp,
//!   step, value bits) a point the run already holds is dropped before the batch is written:
//!   MLflow's `log_model` re-sends the run's metrics that way and its SQL store keeps one copy.
//!   Entries without a `model_id` are all kept, as the engine keeps every value at a step.
//!   Entries with a `model_id` are also kept for their model (`model_metrics.rs`), after
//!   the run's points are written.
//! - Engine errors about a run get MLflow's messages (`Run with id=... not found`, `must be in
//!   the 'active' state`, `Changing param values is not allowed`).

use std::fmt::Write as _;
use std::str::FromStr;

use petname::Generator as _;
use rand::RngExt as _;
use serde::Serialize;
use serde_json::Value;

use super::experiments::{self, key_values, max_results, view_type};
use super::messages::{RunInfoMessage, RunMessage, to_json};
use super::wire::{Fields, double_value, int_value, missing, wrong_type};
use super::{Body, Method, MlflowError, Request, Service, batch};
use crate::query::SearchRuns;
use crate::tracking::{system_tags, validation};
use crate::util::now_ms;
use crate::{Error, MetricPoint, RunId, RunOptions, RunStatus};

/// The user MLflow's client names when it knows none, and MLflow reports for a run without one.
pub(crate) const UNKNOWN_USER: &str = "unknown";

/// The largest page of `runs/search` (MLflow's server limit).
const SEARCH_RESULTS_MAX: i64 = 50_000;

/// `Run with id=... not found`, MLflow's words.
pub(crate) fn not_found(id: &str) -> MlflowError {
    MlflowError::not_found(format!("Run with id={id} not found"))
}

/// The run id a request names; text that is no id names no run.
pub(crate) fn parse_id(text: &str) -> Result<RunId, MlflowError> {
    RunId::from_str(text).map_err(|_| not_found(text))
}

/// Maps an engine error about run `id` onto MLflow's messages.
pub(crate) fn run_error(id: &str, error: Error) -> MlflowError {
    match error {
        Error::NotFound(what) if what.starts_with("run ") && what.len() == 4 + 32 => not_found(id),
        Error::Deleted { what } if what.starts_with("run ") => MlflowError::invalid(format!(
            "The run {id} must be in the 'active' state. Current state is deleted."
        )),
        Error::ParamChanged {
            key,
            existing,
            attempted,
            ..
        } => MlflowError::invalid(format!(
            "Changing param values is not allowed. Param with key='{key}' was already logged \
             with value='{existing}' for run ID='{id}'. Attempted logging new value \
             '{attempted}'."
        )),
        other => MlflowError::from(other),
    }
}

/// Cuts `value` to `chars_max` characters, as MLflow's server does with long values.
fn truncated(value: &str, chars_max: usize) -> &str {
    match value.char_indices().nth(chars_max) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// A `RunStatus` field: its enum name or number.
fn run_status(fields: &Fields) -> Result<Option<RunStatus>, MlflowError> {
    let Some(value) = fields.raw("status") else {
        return Ok(None);
    };
    let status = match value {
        Value::String(s) => match s.as_str() {
            "RUNNING" => Some(RunStatus::Running),
            "SCHEDULED" => Some(RunStatus::Scheduled),
            "FINISHED" => Some(RunStatus::Finished),
            "FAILED" => Some(RunStatus::Failed),
            "KILLED" => Some(RunStatus::Killed),
            _ => None,
        },
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .and_then(RunStatus::from_byte),
        _ => None,
    };
    status.map(Some).ok_or_else(|| wrong_type("status", value))
}

#[derive(Serialize)]
struct RunResponse<'a> {
    run: RunMessage<'a>,
}

/// `runs/create`.
pub(crate) fn create(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let experiment_text = fields.string("experiment_id")?.unwrap_or("0");
    let experiment_text = if experiment_text.is_empty() {
        "0"
    } else {
        experiment_text
    };
    let start_time_ms = fields.int("start_time")?;
    let run_name = fields.string("run_name")?.filter(|n| !n.is_empty());
    let user_id = fields.string("user_id")?.filter(|u| !u.is_empty());
    let mut tags: Vec<(String, String)> = key_values(&fields, "tags")?
        .into_iter()
        .map(|(key, value)| {
            let value = truncated(value, validation::TAG_VALUE_CHARS_MAX);
            (key.to_string(), value.to_string())
        })
        .collect();
    let name_tag = tags
        .iter()
        .rev()
        .find(|(key, _)| key == system_tags::RUN_NAME)
        .map(|(_, value)| value.clone());
    if let (Some(name), Some(tag)) = (run_name, &name_tag)
        && name != tag
    {
        return Err(MlflowError::invalid(format!(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with \
             different values (run_name='{name}', mlflow.runName='{tag}')."
        )));
    }
    // MLflow's client sends `unknown` when it knows no user; MLflow's server records no tag
    // for it then.
    if let Some(user) = user_id.filter(|u| *u != UNKNOWN_USER)
        && !tags.iter().any(|(key, _)| key == system_tags::USER)
    {
        tags.push((system_tags::USER.to_string(), user.to_string()));
    }
    let parent = tags
        .iter()
        .find(|(key, _)| key == system_tags::PARENT_RUN_ID)
        .and_then(|(_, value)| RunId::from_str(value).ok())
        .filter(|id| service.store().run(*id).is_ok());
    let options = RunOptions {
        name: Some(
            run_name
                .map(str::to_string)
                .or(name_tag)
                .unwrap_or_else(generated_run_name),
        ),
        parent,
        tags,
        start_time_ms: Some(start_time_ms.unwrap_or_else(now_ms)),
    };
    let experiment = experiments::parse_id(experiment_text)?;
    let info = service
        .store()
        .create_run(experiment, options)
        .map_err(|e| match e {
            Error::NotFound(_) => experiments::not_found(experiment_text),
            Error::Deleted { .. } => MlflowError::invalid(format!(
                "The experiment {experiment_text} must be in the 'active' state. Current state \
                 is deleted."
            )),
            other => MlflowError::from(other),
        })?;
    let run = service.store().run(info.id)?;
    Ok(to_json(&RunResponse {
        run: RunMessage::of(&run),
    }))
}

/// Longest name MLflow's server makes up, in characters.
const GENERATED_NAME_CHARS_MAX: usize = 20;
/// Names drawn in search of one within `GENERATED_NAME_CHARS_MAX` before the last is cut.
const GENERATED_NAME_ATTEMPTS: usize = 10;
/// Largest number ending a made-up name (MLflow draws from 0 to 10^3, both included).
const GENERATED_NAME_NUMBER_MAX: u32 = 1_000;

/// A name for a run created without one, as MLflow's server makes it up:
/// `<adjective>-<noun>-<number>`, lower case, at most `GENERATED_NAME_CHARS_MAX` characters
/// (drawn again while longer, then cut). The words are petname's English lists, not MLflow's.
fn generated_run_name() -> String {
    let words = petname::Petnames::default();
    let mut random = rand::rng();
    let mut name = String::new();
    for _ in 0..GENERATED_NAME_ATTEMPTS {
        name.clear();
        words.generate_into(&mut name, &mut random, 2, "-");
        let number = random.random_range(0..=GENERATED_NAME_NUMBER_MAX);
        let _ = write!(name, "-{number}");
        if name.chars().count() <= GENERATED_NAME_CHARS_MAX {
            return name;
        }
    }
    name.chars().take(GENERATED_NAME_CHARS_MAX).collect()
}

/// `runs/get`.
pub(crate) fn get(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let run = service
        .store()
        .run(parse_id(text)?)
        .map_err(|e| run_error(text, e))?;
    let datasets = service
        .store()
        .run_dataset_inputs(run.info.id)
        .map_err(|e| run_error(text, e))?;
    let (model_inputs, outputs) = super::models::run_links(service, run.info.id)?;
    let mut message = RunMessage::with_datasets(&run, &datasets);
    message.inputs.model_inputs = model_inputs;
    message.outputs = outputs;
    Ok(to_json(&RunResponse { run: message }))
}

/// `runs/update`: status, end time and name, each only when given.
pub(crate) fn update(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let status = run_status(&fields)?;
    let end_time_ms = fields.int("end_time")?;
    let name = fields.string("run_name")?.filter(|n| !n.is_empty());
    let info = service
        .store()
        .update_run(parse_id(text)?, status, end_time_ms, name)
        .map_err(|e| run_error(text, e))?;
    #[derive(Serialize)]
    struct Response<'a> {
        run_info: RunInfoMessage<'a>,
    }
    Ok(to_json(&Response {
        run_info: RunInfoMessage::of(&info),
    }))
}

/// `runs/delete`.
pub(crate) fn delete(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    service
        .store()
        .delete_run(parse_id(text)?)
        .map_err(|e| run_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `runs/restore`.
pub(crate) fn restore(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    service
        .store()
        .restore_run(parse_id(text)?)
        .map_err(|e| run_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `runs/search`.
pub(crate) fn search(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &["experiment_ids", "order_by"])?;
    let experiment_ids = fields.strings("experiment_ids")?;
    let search = SearchRuns {
        experiments: super::experiments::parse_search_ids(&experiment_ids)?,
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
        view: view_type(&fields, "run_view_type")?,
    };
    #[derive(Serialize)]
    struct Response<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        runs: Vec<RunMessage<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }
    // The engine reads "no experiments" as every experiment; MLflow finds no runs.
    if search.experiments.is_empty() {
        search_checks_only(&search)?;
        return Ok(b"{}".to_vec());
    }
    let page = service.store().search_runs(&search)?;
    // One catalog read for the whole page, not one per run.
    let experiments: Vec<_> = page
        .runs
        .iter()
        .map(|run| (run.info.id, run.info.experiment))
        .collect();
    let ids: Vec<_> = experiments.iter().map(|(run, _)| *run).collect();
    let datasets = service.store().runs_dataset_inputs(&experiments)?;
    let links = service.store().runs_model_links(&ids)?;
    let mut runs = Vec::with_capacity(page.runs.len());
    for ((run, datasets), links) in page.runs.iter().zip(&datasets).zip(&links) {
        // MLflow's SQL store gives search results their datasets and model outputs, not
        // their model inputs.
        let mut message = RunMessage::with_datasets(run, datasets);
        message.outputs = super::models::run_outputs(links);
        runs.push(message);
    }
    Ok(to_json(&Response {
        runs,
        next_page_token: page.next_page_token,
    }))
}

/// Parses the search's filter and order, so a request with no experiment still reports a bad
/// one.
fn search_checks_only(search: &SearchRuns) -> Result<(), MlflowError> {
    crate::query::parse(&search.filter).map_err(Error::from)?;
    for order in &search.order_by {
        crate::query::parse_order_by(order).map_err(Error::from)?;
    }
    Ok(())
}

/// `runs/log-metric`.
pub(crate) fn log_metric(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let key = fields.required_string("key")?;
    let value = fields.double("value")?.ok_or_else(|| missing("value"))?;
    let timestamp_ms = fields
        .int("timestamp")?
        .ok_or_else(|| missing("timestamp"))?;
    let step = fields.int("step")?.unwrap_or(0);
    check_timestamp("timestamp", key, timestamp_ms)?;
    let point = MetricPoint {
        key,
        value,
        step,
        timestamp_ms,
    };
    let run = parse_id(text)?;
    let model_metric = super::model_metrics::body_metric(&fields, run, &point)?;
    service
        .store()
        .log_batch(run, &[point], &[], &[])
        .map_err(|e| run_error(text, e))?;
    super::model_metrics::log_metrics(service, text, model_metric.as_slice())?;
    Ok(b"{}".to_vec())
}

fn check_timestamp(path: &str, key: &str, timestamp_ms: i64) -> Result<(), MlflowError> {
    if timestamp_ms < 0 {
        return Err(MlflowError::invalid(format!(
            "Invalid value {timestamp_ms} for parameter '{path}' supplied: metric '{key}'. \
             Timestamp must be a nonnegative long (64-bit integer) "
        )));
    }
    Ok(())
}

/// `runs/log-parameter`.
pub(crate) fn log_param(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let key = fields.required_string("key")?;
    let value = truncated(
        fields.string("value")?.unwrap_or(""),
        validation::PARAM_VALUE_CHARS_MAX,
    );
    let run = parse_id(text)?;
    service
        .store()
        .log_batch(run, &[], &[(key, value)], &[])
        .map_err(|e| run_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `runs/set-tag`.
pub(crate) fn set_tag(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let key = fields.required_string("key")?;
    let value = truncated(
        fields.string("value")?.unwrap_or(""),
        validation::TAG_VALUE_CHARS_MAX,
    );
    let run = parse_id(text)?;
    service
        .store()
        .log_batch(run, &[], &[], &[(key, value)])
        .map_err(|e| run_error(text, e))?;
    Ok(b"{}".to_vec())
}

/// `runs/delete-tag`.
pub(crate) fn delete_tag(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let key = fields.required_string("key")?;
    let run = parse_id(text)?;
    service.store().delete_tag(run, key).map_err(|e| match e {
        Error::NotFound(what) if what.starts_with("tag ") => {
            MlflowError::not_found(format!("No tag with name: {key} in run with id {text}"))
        }
        other => run_error(text, other),
    })?;
    Ok(b"{}".to_vec())
}

/// `runs/log-batch`. The body is read by `batch::read` when it takes it (nearly every body a
/// client sends; never one with an entry naming a logged model), else by the general reader;
/// both give the same entries and the same answer.
pub(crate) fn log_batch(service: &Service, request: &Request<'_>) -> Body {
    if let Some(batch) = (request.method == Method::Post)
        .then(|| batch::read(request.body))
        .flatten()
    {
        let text = batch.fields.run_id()?;
        let (params, tags) = batch_params_and_tags(&batch.fields, batch.points.len())?;
        return write_batch(service, text, batch.points, None, &[], &params, &tags);
    }
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let metrics = fields.list("metrics")?;
    let (params, tags) = batch_params_and_tags(&fields, metrics.len())?;
    let mut points = Vec::with_capacity(metrics.len());
    let mut from_model = Vec::new();
    for (index, entry) in metrics.iter().enumerate() {
        let (point, origin) = metric_entry(entry, index)?;
        if origin == Origin::Model {
            from_model.push(index);
        }
        points.push(point);
    }
    write_batch(
        service,
        text,
        points,
        Some(metrics),
        &from_model,
        &params,
        &tags,
    )
}

/// The batch's params and tags, values cut to MLflow's limits, once the batch's sizes and
/// its param keys are checked (with `metrics` entries).
fn batch_params_and_tags<'a>(
    fields: &'a Fields,
    metrics: usize,
) -> Result<KeyValues<'a>, MlflowError> {
    let params = key_values(fields, "params")?;
    let tags = key_values(fields, "tags")?;
    check_batch_limits(metrics, params.len(), tags.len())?;
    check_unique_param_keys(&params)?;
    let params = params
        .into_iter()
        .map(|(k, v)| (k, truncated(v, validation::PARAM_VALUE_CHARS_MAX)))
        .collect();
    let tags = tags
        .into_iter()
        .map(|(k, v)| (k, truncated(v, validation::TAG_VALUE_CHARS_MAX)))
        .collect();
    Ok((params, tags))
}

/// A batch's params and tags.
type KeyValues<'a> = (Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str)>);

/// Writes a batch read and checked: its points (less the repeats among the entries at
/// `from_model`), params and tags, to the run `text` names, then the model metrics of the
/// general reader's `entries` (the one-pass reader takes no entry that names a model).
fn write_batch(
    service: &Service,
    text: &str,
    points: Vec<MetricPoint<'_>>,
    entries: Option<&[Value]>,
    from_model: &[usize],
    params: &[(&str, &str)],
    tags: &[(&str, &str)],
) -> Body {
    let run = parse_id(text)?;
    let model_metrics = match entries {
        Some(entries) => super::model_metrics::batch_metrics(entries, points.iter(), run)?,
        None => Vec::new(),
    };
    let points = without_model_repeats(service, text, run, points, from_model)?;
    service
        .store()
        .log_batch(run, &points, params, tags)
        .map_err(|e| run_error(text, e))?;
    super::model_metrics::log_metrics(service, text, &model_metrics)?;
    Ok(b"{}".to_vec())
}

/// Whether a `metrics[]` entry names a logged model (`model_id`), as `log_model` sends them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Run,
    Model,
}

/// One entry of `metrics[]`: the point and whether it carries a `model_id`.
fn metric_entry(entry: &Value, index: usize) -> Result<(MetricPoint<'_>, Origin), MlflowError> {
    let point = metric_point(entry, index)?;
    let has_model = entry
        .get("model_id")
        .is_some_and(|v| v.as_str().is_some_and(|id| !id.is_empty()));
    let origin = if has_model {
        Origin::Model
    } else {
        Origin::Run
    };
    Ok((point, origin))
}

/// The batch's points, less the model entries (the points at `from_model`, in increasing
/// order) that repeat a point `run` already holds or an earlier point of the batch. A batch
/// without model entries is returned as it is, read nowhere. A run that does not exist keeps
/// every entry, so that `Store::log_batch` reports it.
fn without_model_repeats<'a>(
    service: &Service,
    text: &str,
    run: RunId,
    points: Vec<MetricPoint<'a>>,
    from_model: &[usize],
) -> Result<Vec<MetricPoint<'a>>, MlflowError> {
    if from_model.is_empty() {
        return Ok(points);
    }
    let mut kept: Vec<MetricPoint<'a>> = Vec::with_capacity(points.len());
    let mut models = from_model.iter().peekable();
    for (index, point) in points.into_iter().enumerate() {
        let is_model = models.next_if_eq(&&index).is_some();
        if is_model
            && (kept.iter().any(|k| same_point(k, &point))
                || run_holds(service, text, run, &point)?)
        {
            continue;
        }
        kept.push(point);
    }
    Ok(kept)
}

/// Whether two points are the same (key, timestamp, step, value bits).
fn same_point(a: &MetricPoint<'_>, b: &MetricPoint<'_>) -> bool {
    a.key == b.key
        && a.step == b.step
        && a.timestamp_ms == b.timestamp_ms
        && a.value.to_bits() == b.value.to_bits()
}

/// Whether `run` already holds `point`, read through a one-step history range.
fn run_holds(
    service: &Service,
    text: &str,
    run: RunId,
    point: &MetricPoint<'_>,
) -> Result<bool, MlflowError> {
    let history = match service
        .store()
        .history(run, point.key, point.step..=point.step)
    {
        Ok(history) => history,
        Err(Error::NotFound(_)) => return Ok(false),
        Err(other) => return Err(run_error(text, other)),
    };
    Ok(history
        .timestamps_ms
        .iter()
        .zip(&history.values)
        .any(|(&timestamp_ms, value)| {
            timestamp_ms == point.timestamp_ms && value.to_bits() == point.value.to_bits()
        }))
}

/// One entry of `metrics[]`: `key`, `value` and `timestamp` required, `step` 0 by default.
fn metric_point(entry: &Value, index: usize) -> Result<MetricPoint<'_>, MlflowError> {
    let path = format!("metrics[{index}]");
    let Value::Object(map) = entry else {
        return Err(wrong_type(&path, entry));
    };
    let field = |name: &str| map.get(name).filter(|v| !v.is_null());
    let key = match field("key") {
        Some(Value::String(key)) if !key.is_empty() => key.as_str(),
        Some(Value::String(_)) | None => return Err(missing(&format!("{path}.key"))),
        Some(other) => return Err(wrong_type(&format!("{path}.key"), other)),
    };
    let value = field("value")
        .ok_or_else(|| missing(&format!("{path}.value")))
        .and_then(|v| double_value(&format!("{path}.value"), v))?;
    let timestamp_ms = field("timestamp")
        .ok_or_else(|| missing(&format!("{path}.timestamp")))
        .and_then(|v| int_value(&format!("{path}.timestamp"), v))?;
    check_timestamp(&format!("{path}.timestamp"), key, timestamp_ms)?;
    let step = field("step")
        .map(|v| int_value(&format!("{path}.step"), v))
        .transpose()?
        .unwrap_or(0);
    Ok(MetricPoint {
        key,
        value,
        step,
        timestamp_ms,
    })
}

/// MLflow's LogBatch limits, with its messages.
fn check_batch_limits(metrics: usize, params: usize, tags: usize) -> Result<(), MlflowError> {
    let limits = [
        ("metrics", metrics, validation::BATCH_METRICS_MAX),
        ("params", params, validation::BATCH_PARAMS_MAX),
        ("tags", tags, validation::BATCH_TAGS_MAX),
        (
            "metrics, params, and tags",
            metrics + params + tags,
            validation::BATCH_ITEMS_MAX,
        ),
    ];
    for (what, count, count_max) in limits {
        if count > count_max {
            return Err(MlflowError::invalid(format!(
                "A batch logging request can contain at most {count_max} {what}. Got {count} \
                 {what}. Please split up {what} across multiple requests and try again."
            )));
        }
    }
    Ok(())
}

fn check_unique_param_keys(params: &[(&str, &str)]) -> Result<(), MlflowError> {
    let mut seen = std::collections::HashSet::new();
    let duplicates: Vec<&str> = params
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| !seen.insert(*key))
        .collect();
    if duplicates.is_empty() {
        return Ok(());
    }
    let list = duplicates
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(MlflowError::invalid(format!(
        "Duplicate parameter keys have been submitted: [{list}]. Please ensure the request \
         contains only one param value per param key."
    )))
}

/// `runs/log-inputs`: the run's `datasets` (`Store::log_dataset_inputs`, with MLflow's dedup
/// rules), then its `models` (`Store::link_run_models`). Both are read whole before either is
/// written; datasets are checked before the run is looked up, as MLflow does.
pub(crate) fn log_inputs(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let datasets = super::datasets::inputs(&fields)?;
    let models = super::models::input_models(&fields)?;
    let run = parse_id(text)?;
    let store = service.store();
    if datasets.is_empty() {
        store.run(run).map_err(|e| run_error(text, e))?;
    } else {
        store
            .log_dataset_inputs(run, &datasets)
            .map_err(|e| run_error(text, e))?;
    }
    if !models.is_empty() {
        store
            .link_run_models(run, &models)
            .map_err(|e| run_error(text, e))?;
    }
    Ok(b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::TestRng;

    fn pick<'a>(rng: &mut TestRng, choices: &[&'a str]) -> &'a str {
        choices[rng.below(choices.len() as u64) as usize]
    }

    /// Whitespace between tokens: JSON's, now and then none, rarely a character JSON does
    /// not take as whitespace.
    fn gap(rng: &mut TestRng) -> &'static str {
        match rng.below(500) {
            0 => "\u{b}",
            1 => "\u{a0}",
            _ => pick(rng, &["", " ", " ", "\n  ", "\t", "\r\n"]),
        }
    }

    /// A random decimal number's text: integers of any length, fractions, exponents that
    /// reach past `f64`'s range both ways, and malformed ones.
    fn number_text(rng: &mut TestRng) -> String {
        // At least `least` digits, and up to `more` more.
        let digits = |rng: &mut TestRng, least: u64, more: u64| -> String {
            let count = least + rng.below(more + 1);
            (0..count)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect()
        };
        let sign = pick(rng, &["", "", "-"]);
        // Malformed numbers (bucket 5) rarely, so that most entries are taken.
        match rng.below(40) / 6 + u64::from(rng.below(20) == 0) * 5 {
            0 => format!("{sign}{}", digits(rng, 1, 25)),
            1 => format!("{sign}{}", rng.below(u64::MAX)),
            2 => format!("{}", f64::from_bits(rng.below(u64::MAX))),
            3 => format!("{:e}", f64::from_bits(rng.below(u64::MAX))),
            4 => {
                let exponent = rng.below(700) as i64 - 350;
                let (whole, fraction) = (digits(rng, 1, 3), digits(rng, 0, 30));
                format!("{sign}{whole}.{fraction}e{exponent}")
            }
            5 => pick(
                rng,
                &[
                    "01", "1.", ".5", "+1", "1e", "-", "0x10", "1_0", "Infinity", "NaN", "-0",
                    "-0.0", "1E+2", "2e-400", "-2e-400", "1e309",
                ],
            )
            .to_string(),
            _ => format!("{sign}{}.{}", digits(rng, 1, 17), digits(rng, 1, 17)),
        }
    }

    /// One JSON text a field of a metric entry may hold, as clients send them and as they
    /// must not.
    fn field_text(rng: &mut TestRng, field: &str) -> String {
        // Mostly what clients send, so that many bodies of several entries are taken whole.
        if rng.below(12) != 0 {
            return match field {
                "key" => pick(rng, &[r#""loss""#, "\"\u{e9}t\u{e9}\""]).to_string(),
                "model_id" => pick(rng, &[r#""m-1""#, "null"]).to_string(),
                "value" => number_text(rng),
                _ => rng.below(1 << 41).to_string(),
            };
        }
        let choices: &[&str] = match field {
            "key" => &[
                r#""loss""#,
                r#""l\u006fss""#,
                r#""a/b c""#,
                "\"\u{e9}t\u{e9}\"",
                "\"tab\tinside\"",
                r#""""#,
                "null",
                "5",
                "[]",
            ],
            "value" => &[
                "0.5",
                "-3",
                "7",
                r#""NaN""#,
                r#""-Infinity""#,
                r#"" 2.5 ""#,
                r#""1e400""#,
                r#""x""#,
                r#""\u0031""#,
                "null",
                "true",
                "{}",
            ],
            "model_id" => &[r#""m-1""#, r#""""#, "null", "nul", "3", "[1]", r#""m\"1""#],
            // timestamp and step
            _ => &[
                "1700000000000",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
                "-9223372036854775809",
                "0",
                "-1",
                "12.0",
                "12.5",
                r#""42""#,
                r#"" 7 ""#,
                r#""x""#,
                "null",
                "[]",
            ],
        };
        pick(rng, choices).to_string()
    }

    fn entry_text(rng: &mut TestRng) -> String {
        if rng.below(40) == 0 {
            return pick(rng, &["7", "null", "[]", r#""e""#, "{}"]).to_string();
        }
        let mut fields = Vec::new();
        for field in ["key", "value", "timestamp", "step", "model_id", "other"] {
            // Usually present, sometimes absent, now and then twice.
            let times = match rng.below(60) {
                0 => 0,
                1 => 2,
                _ if field == "model_id" => u64::from(rng.below(4) == 0),
                _ if field == "other" => u64::from(rng.below(20) == 0),
                _ => 1,
            };
            for _ in 0..times {
                let text = if field == "other" {
                    r#"{"nested": [1, "two", null]}"#.to_string()
                } else {
                    field_text(rng, field)
                };
                let name = match (field, rng.below(30)) {
                    ("key", 0) => r"k\u0065y",
                    _ => field,
                };
                fields.push(format!(r#""{name}"{}:{}{text}"#, gap(rng), gap(rng)));
            }
        }
        // Field order does not matter to either reader.
        let count = fields.len();
        fields.rotate_left((rng.below(count as u64 + 1) as usize).min(count));
        let comma = format!("{},{}", gap(rng), gap(rng));
        format!("{{{}{}{}}}", gap(rng), fields.join(&comma), gap(rng))
    }

    fn body_text(rng: &mut TestRng) -> Vec<u8> {
        let entries: Vec<String> = (0..rng.below(5)).map(|_| entry_text(rng)).collect();
        let comma = format!("{},{}", gap(rng), gap(rng));
        let metrics = match rng.below(60) {
            0 => "null".to_string(),
            1 => r#"{"key": "loss"}"#.to_string(),
            2 => format!("[{}]", entries.join(",,")),
            _ => format!("[{}{}{}]", gap(rng), entries.join(&comma), gap(rng)),
        };
        let mut fields = vec![
            r#""run_id": "0123456789abcdef0123456789abcdef""#.to_string(),
            format!(r#""metrics"{}:{}{metrics}"#, gap(rng), gap(rng)),
        ];
        match rng.below(30) {
            0 => fields.push(r#""params": [{"key": "lr", "value": "0.1"}]"#.to_string()),
            1 => fields.push(format!(r#""metrics": {metrics}"#)),
            2 => fields.push(r#""run_id": "other""#.to_string()),
            3 => fields.push(format!(r#""deep": {}{}"#, "[".repeat(70), "]".repeat(70))),
            4 => fields.push(format!(
                r#""deeper": {}{}"#,
                "[".repeat(127),
                "]".repeat(127)
            )),
            5 => fields.push(r#""n": 5"#.to_string()),
            6 => fields.push(r#""r\u0075n_id": "x""#.to_string()),
            _ => {}
        }
        let count = fields.len();
        fields.rotate_left((rng.below(count as u64 + 1) as usize).min(count));
        let body = format!("{{{}{}{}}}", gap(rng), fields.join(&comma), gap(rng));
        match rng.below(60) {
            0 => serde_json::to_vec(&body).unwrap_or_default(),
            1 => format!("{body} x").into_bytes(),
            // Perhaps inside a character.
            2 => body.as_bytes()[..body.len() / 2].to_vec(),
            3 => format!("{body}{body}").into_bytes(),
            _ => format!("{}{body}{}", gap(rng), gap(rng)).into_bytes(),
        }
    }

    /// What the general reader makes of a log-batch body: the fields but `metrics`, and the
    /// entries as (key, value bits, timestamp, step, origin), or its error's message.
    type Read = (Vec<(String, Value)>, Vec<(String, u64, i64, i64, bool)>);

    fn general(body: &[u8]) -> Result<Read, String> {
        let fields = Fields::from_body(body).map_err(|e| e.to_string())?;
        let entries = fields
            .list("metrics")
            .map_err(|e| e.to_string())?
            .iter()
            .enumerate()
            .map(|(index, entry)| metric_entry(entry, index))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let entries = entries.iter().map(|(p, origin)| {
            let model = *origin == Origin::Model;
            (
                p.key.to_string(),
                p.value.to_bits(),
                p.timestamp_ms,
                p.step,
                model,
            )
        });
        let others = fields.map_without("metrics");
        Ok((others, entries.collect()))
    }

    /// What the one-pass reader makes of a body; it takes no entry that names a model.
    fn one_pass(body: &[u8]) -> Option<Read> {
        let batch = batch::read(body)?;
        let entries = batch.points.iter().map(|p| {
            let key = p.key.to_owned();
            (key, p.value.to_bits(), p.timestamp_ms, p.step, false)
        });
        Some((batch.fields.map_without("metrics"), entries.collect()))
    }

    /// Every body the one-pass reader takes, the general reader reads to the same fields and
    /// entries without error; and the one-pass reader takes the bodies clients send.
    #[test]
    fn the_one_pass_batch_reader_reads_what_the_general_reader_reads() {
        let mut rng =
            TestRng::from_env("the_one_pass_batch_reader_reads_what_the_general_reader_reads");
        let (mut taken, mut entries) = (0, 0);
        for case in 0..50_000 {
            let body = body_text(&mut rng);
            if let Some(fast) = one_pass(&body) {
                taken += 1;
                entries += fast.1.len();
                let text = String::from_utf8_lossy(&body);
                assert_eq!(Ok(fast), general(&body), "case {case}: {text}");
            }
        }
        eprintln!("{taken} bodies taken, {entries} entries");
        assert!(
            taken > 5_000 && entries > 5_000,
            "{taken} bodies taken, {entries} entries"
        );
        let client = br#"{"run_id": "r", "metrics": [{"key": "loss", "value": 0.5, "timestamp": 1700000000000, "step": 3}, {"key": "acc", "value": 1, "timestamp": 1700000000000}]}"#;
        assert!(one_pass(client).is_some());
    }
}
