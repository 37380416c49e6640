//! Metrics logged with a `model_id` (MLflow 3): the `model_id`, `dataset_name` and
//! `dataset_digest` of a `runs/log-batch` entry or a `runs/log-metric` body, read into the
//! engine's `ModelMetric`s and kept for their models (`Store::log_model_metrics`) after the
//! run's own points are written, as MLflow's SQL store writes its `logged_model_metrics`.
//!
//! Invariants:
//! - A request's model metrics are read whole before anything is written: a malformed
//!   `model_id` or dataset field refuses the request.
//! - Values are kept exactly, as a run's are: NaN, ±inf and -0.0 keep their bits, where
//!   MLflow's SQL store keeps a model's NaN as 0 and an infinity as the largest finite double
//!   (docs/SERVER.md, "Differences from MLflow").

use serde_json::Value;

use super::models::parse_id;
use super::runs::run_error;
use super::wire::{Fields, wrong_type};
use super::{MlflowError, Service};
use crate::{MetricPoint, ModelMetric, RunId};

/// The model metric a metric entry names with `model_id` (and optional `dataset_name` and
/// `dataset_digest`), read with `field` from the entry at `path` (`metrics[3]`, or `""` for a
/// log-metric body); `None` when it names no model.
fn entry_metric<'a>(
    field: impl Fn(&str) -> Option<&'a Value>,
    path: &str,
    run: RunId,
    point: &MetricPoint<'_>,
) -> Result<Option<ModelMetric>, MlflowError> {
    let named = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let text = |name: &str| match field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str()).filter(|t| !t.is_empty())),
        Some(other) => Err(wrong_type(&named(name), other)),
    };
    let Some(model_text) = text("model_id")? else {
        return Ok(None);
    };
    Ok(Some(ModelMetric {
        model: parse_id(model_text)?,
        run,
        key: point.key.to_string(),
        value: point.value,
        timestamp_ms: point.timestamp_ms,
        step: point.step,
        dataset_name: text("dataset_name")?.map(str::to_string),
        dataset_digest: text("dataset_digest")?.map(str::to_string),
    }))
}

/// The model metrics of a log-batch's `metrics` (`entries`, with the points read from them),
/// read whole before anything is written.
pub(crate) fn batch_metrics<'p>(
    entries: &[Value],
    points: impl Iterator<Item = &'p MetricPoint<'p>>,
    run: RunId,
) -> Result<Vec<ModelMetric>, MlflowError> {
    let mut metrics = Vec::new();
    for (index, (entry, point)) in entries.iter().zip(points).enumerate() {
        let path = format!("metrics[{index}]");
        if let Some(metric) = entry_metric(|name| entry.get(name), &path, run, point)? {
            metrics.push(metric);
        }
    }
    Ok(metrics)
}

/// The model metric of a log-metric request, if it names a model.
pub(crate) fn body_metric(
    fields: &Fields,
    run: RunId,
    point: &MetricPoint<'_>,
) -> Result<Option<ModelMetric>, MlflowError> {
    entry_metric(|name| fields.raw(name), "", run, point)
}

/// Keeps `metrics` for their models (`Store::log_model_metrics`), after the run's own points
/// were written, as MLflow's SQL store writes them.
pub(crate) fn log_metrics(
    service: &Service,
    run_text: &str,
    metrics: &[ModelMetric],
) -> Result<(), MlflowError> {
    if metrics.is_empty() {
        return Ok(());
    }
    service
        .store()
        .log_model_metrics(metrics)
        .map_err(|e| run_error(run_text, e))
}
