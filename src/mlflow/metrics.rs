//! MLflow's metric history endpoints: `metrics/get-history` (paged), `get-history-bulk` and
//! `get-history-bulk-interval` (sampled for charts).
//!
//! Orders follow MLflow's SQL store, which its clients and differential tests see:
//! `get-history` and `get-history-bulk` by (timestamp, step, value), the interval sample by
//! (step, timestamp, value). NaN sorts where MLflow's SQL store keeps it (its stored value is
//! 0, with a flag that sorts after a real 0).
//!
//! Invariants: a page token is the decimal offset of the page's first point in that order; an
//! interval sample holds at most `max_results` points per run and always the run's last point
//! of the range.

use std::cmp::Ordering;

use serde::Serialize;

use super::experiments::max_results;
use super::messages::{Double, Metric, to_json};
use super::runs::{self, run_error};
use super::wire::{Fields, missing, query_pairs};
use super::{Body, MlflowError, Request, Service};
use crate::RunId;
use crate::query::{History, Point};

/// The largest page of `get-history` (MLflow's `GET_METRIC_HISTORY_MAX_RESULTS`).
const HISTORY_PAGE_MAX: i64 = 25_000;
/// Runs one bulk request may name (MLflow's `MAX_RUNS_GET_METRIC_HISTORY_BULK`).
const BULK_RUNS_MAX: usize = 100;
/// Points per run of `get-history-bulk-interval` (MLflow's `MAX_RESULTS_PER_RUN`).
const INTERVAL_RESULTS_MAX: i64 = 2_500;

/// The sort key MLflow's SQL store gives a value: NaN is stored as 0 with a flag after it.
fn value_key(value: f64) -> (f64, bool) {
    if value.is_nan() {
        (0.0, true)
    } else {
        (value, false)
    }
}

fn compare_values(a: f64, b: f64) -> Ordering {
    let (a, b) = (value_key(a), value_key(b));
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// The points of `history` in MLflow's history order: (timestamp, step, value).
fn by_time(history: &History) -> Vec<Point> {
    let mut points: Vec<Point> = (0..history.len())
        .filter_map(|i| history.point(i))
        .collect();
    points.sort_by(|a, b| {
        a.timestamp_ms
            .cmp(&b.timestamp_ms)
            .then(a.step.cmp(&b.step))
            .then(compare_values(a.value, b.value))
    });
    points
}

/// The points of `history` in MLflow's sampling order: (step, timestamp, value).
fn by_step(history: &History) -> Vec<Point> {
    let mut points: Vec<Point> = (0..history.len())
        .filter_map(|i| history.point(i))
        .collect();
    points.sort_by(|a, b| {
        a.step
            .cmp(&b.step)
            .then(a.timestamp_ms.cmp(&b.timestamp_ms))
            .then(compare_values(a.value, b.value))
    });
    points
}

/// Reads `key` of the run `text` names. A run that does not exist has no points, as in
/// MLflow's SQL store (its history queries do not check the run).
fn read_history(
    service: &Service,
    text: &str,
    key: &str,
    steps: (std::ops::Bound<i64>, std::ops::Bound<i64>),
) -> Result<(Option<RunId>, History), MlflowError> {
    let Ok(run) = runs::parse_id(text) else {
        return Ok((None, History::default()));
    };
    match service.store().history(run, key, steps) {
        Ok(history) => Ok((Some(run), history)),
        Err(crate::Error::NotFound(_)) => Ok((Some(run), History::default())),
        Err(other) => Err(run_error(text, other)),
    }
}

const ALL_STEPS: (std::ops::Bound<i64>, std::ops::Bound<i64>) =
    (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);

#[derive(Serialize)]
struct MetricsResponse<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<Metric<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// `metrics/get-history`: every point (or a page of them) of one series.
pub(crate) fn get_history(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let key = fields.required_string("metric_key")?;
    let page_size = match fields.int("max_results")? {
        None => None,
        Some(n) if n <= 0 => {
            return Err(MlflowError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be a positive \
                 integer."
            )));
        }
        Some(_) => Some(max_results(&fields, 0, HISTORY_PAGE_MAX)?),
    };
    let offset = match fields.string("page_token")?.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            MlflowError::invalid(format!(
                "Invalid page token {token:?}: it is not one this server gave"
            ))
        })?,
    };
    let (_, history) = read_history(service, text, key, ALL_STEPS)?;
    let points = by_time(&history);
    let start = offset.min(points.len());
    let end = page_size.map_or(points.len(), |size| {
        start.saturating_add(size).min(points.len())
    });
    let next_page_token = (page_size.is_some() && end < points.len()).then(|| end.to_string());
    Ok(to_json(&MetricsResponse {
        metrics: points[start..end]
            .iter()
            .map(|p| metric(key, p, None))
            .collect(),
        next_page_token,
    }))
}

fn metric<'a>(key: &'a str, point: &Point, run: Option<RunId>) -> Metric<'a> {
    Metric {
        key,
        value: Double(point.value),
        timestamp: point.timestamp_ms,
        step: point.step,
        run_id: run.map(|r| r.to_string()),
    }
}

/// `metrics/get-history-bulk` (MLflow's legacy UI route): query parameters only, `run_id`
/// repeated; runs in id order, each run's points by time, at most `max_results` in all.
pub(crate) fn get_history_bulk(service: &Service, request: &Request<'_>) -> Body {
    let mut run_ids: Vec<String> = Vec::new();
    let mut key = None;
    let mut limit_text = None;
    for (name, value) in query_pairs(request.query) {
        match name.as_str() {
            "run_id" => run_ids.push(value),
            "metric_key" if key.is_none() => key = Some(value),
            "max_results" if limit_text.is_none() => limit_text = Some(value),
            _ => {}
        }
    }
    if run_ids.is_empty() {
        return Err(MlflowError::invalid(
            "GetMetricHistoryBulk request must specify at least one run_id.",
        ));
    }
    if run_ids.len() > BULK_RUNS_MAX {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than {BULK_RUNS_MAX} run_ids. \
             Received {} run_ids.",
            run_ids.len()
        )));
    }
    let key = key.ok_or_else(|| {
        MlflowError::invalid("GetMetricHistoryBulk request must specify a metric_key.")
    })?;
    let limit = match limit_text {
        None => HISTORY_PAGE_MAX as usize,
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| missing("max_results"))?
            .clamp(0, HISTORY_PAGE_MAX) as usize,
    };
    run_ids.sort();
    let mut out = Vec::new();
    for text in &run_ids {
        let (Some(run), history) = read_history(service, text, &key, ALL_STEPS)? else {
            continue;
        };
        let points = by_time(&history);
        out.extend(
            points
                .iter()
                .take(limit)
                .map(|p| metric(&key, p, Some(run))),
        );
        if out.len() >= limit {
            break;
        }
    }
    out.truncate(limit);
    Ok(to_json(&MetricsResponse {
        metrics: out,
        next_page_token: None,
    }))
}

/// `metrics/get-history-bulk-interval`: up to `max_results` points per run, sampled evenly
/// over each run's points in the step range, as MLflow's SQL store samples them.
pub(crate) fn get_history_bulk_interval(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &["run_ids"])?;
    let run_ids = fields.strings("run_ids")?;
    if run_ids.is_empty() {
        return Err(missing("run_ids"));
    }
    if run_ids.len() > BULK_RUNS_MAX {
        return Err(MlflowError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_RUNS_MAX} run_ids. \
             Received {} run_ids.",
            run_ids.len()
        )));
    }
    let key = fields.required_string("metric_key")?;
    let per_run = match fields.int("max_results")? {
        None => INTERVAL_RESULTS_MAX as usize,
        Some(n) if (1..=INTERVAL_RESULTS_MAX).contains(&n) => n as usize,
        Some(_) => {
            return Err(MlflowError::invalid(format!(
                "max_results must be between 1 and {INTERVAL_RESULTS_MAX}."
            )));
        }
    };
    let steps = step_range(fields.int("start_step")?, fields.int("end_step")?)?;
    // Runs that do not exist have no points (as in MLflow's SQL store); the rest are read in
    // one pass over the log.
    let store = service.store();
    let runs: Vec<RunId> = run_ids
        .iter()
        .filter_map(|text| runs::parse_id(text).ok())
        .filter(|run| store.run(*run).is_ok())
        .collect();
    let histories = store.history_of_runs(&runs, key, steps)?;
    let mut out = Vec::new();
    for (run, history) in runs.iter().zip(&histories) {
        let points = by_step(history);
        out.extend(
            sample_like_ntile(&points, per_run)
                .into_iter()
                .map(|p| metric(key, &p, Some(*run))),
        );
    }
    Ok(to_json(&MetricsResponse {
        metrics: out,
        next_page_token: None,
    }))
}

/// The step range of an interval request: both ends or neither.
fn step_range(
    start: Option<i64>,
    end: Option<i64>,
) -> Result<(std::ops::Bound<i64>, std::ops::Bound<i64>), MlflowError> {
    use std::ops::Bound::Included;
    match (start, end) {
        (None, None) => Ok(ALL_STEPS),
        (Some(start), Some(end)) if start <= end => Ok((Included(start), Included(end))),
        (Some(start), Some(end)) => Err(MlflowError::invalid(format!(
            "end_step must be greater than start_step. Found start_step={start} and \
             end_step={end}."
        ))),
        _ => Err(MlflowError::invalid(
            "If either start step or end step are specified, both must be specified.",
        )),
    }
}

/// MLflow's SQL sample of ordered points: split them into `max_results` buckets as SQL's
/// `NTILE` does (the first `n % k` buckets one point larger), keep each bucket's first point,
/// and make sure the last point is there (replacing the sample's last point when the sample is
/// full).
pub(crate) fn sample_like_ntile(points: &[Point], max_results: usize) -> Vec<Point> {
    let n = points.len();
    let k = max_results.max(1);
    if n <= k {
        return points.to_vec();
    }
    let (base, rem) = (n / k, n % k);
    let mut sample: Vec<Point> = (0..k).map(|i| points[i * base + i.min(rem)]).collect();
    // The sample is full (k points of more than k), so the last point takes the last slot.
    if let (Some(slot), Some(last)) = (sample.last_mut(), points.last()) {
        *slot = *last;
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: i64) -> Vec<Point> {
        (0..n)
            .map(|step| Point {
                step,
                timestamp_ms: step,
                value: step as f64,
            })
            .collect()
    }

    #[test]
    fn ntile_sample_keeps_every_point_up_to_the_limit() {
        assert_eq!(sample_like_ntile(&points(5), 5).len(), 5);
        assert_eq!(sample_like_ntile(&points(0), 5).len(), 0);
    }

    #[test]
    fn ntile_sample_takes_bucket_firsts_and_the_last_point() {
        // 10 points in 4 buckets: sizes 3, 3, 2, 2, firsts 0, 3, 6, 8; the last point (9)
        // replaces 8 because the sample is full.
        let steps: Vec<i64> = sample_like_ntile(&points(10), 4)
            .iter()
            .map(|p| p.step)
            .collect();
        assert_eq!(steps, [0, 3, 6, 9]);
        let one: Vec<i64> = sample_like_ntile(&points(10), 1)
            .iter()
            .map(|p| p.step)
            .collect();
        assert_eq!(one, [9]);
    }
}
