//! MLflow's metric history endpoints: `metrics/get-history` (paged), `get-history-bulk` and
//! `get-history-bulk-interval` (sampled for charts).
//!
//! Orders follow MLflow's SQL store, which its clients and differential tests see:
//! `get-history` and `get-history-bulk` by (timestamp, step, value), the interval sample by
//! (step, timestamp, value). NaN sorts where MLflow's SQL store keeps it (its stored value is
//! 0, with a flag that sorts after a real 0).
//!
//! The engine reads a `get-history` page's rows alone (`Store::history_page`) and only the
//! sampled rows of an interval request (`Store::history_sample`) where it can show that its
//! order there is MLflow's; elsewhere the series (or the step range) is read whole and sorted
//! here.
//!
//! Invariants: a page token is the decimal offset of the page's first point in that order; an
//! interval sample holds at most `max_results` points per run and always the run's last point
//! of the range.

use std::cmp::Ordering;

use super::experiments::max_results;
use super::messages::MetricsJson;
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

/// MLflow's sampling order: (step, timestamp, value).
fn step_order(a: &Point, b: &Point) -> Ordering {
    a.step
        .cmp(&b.step)
        .then(a.timestamp_ms.cmp(&b.timestamp_ms))
        .then(compare_values(a.value, b.value))
}

/// The points of `history` MLflow's interval sample keeps, in its order. A history is sorted
/// by step already (in logging order within a step), which is MLflow's order unless a step
/// holds points logged out of timestamp order: only then are the points copied and sorted.
fn sample_history(history: &History, max_results: usize) -> Vec<Point> {
    let in_order = (1..history.len()).all(|i| match (history.point(i - 1), history.point(i)) {
        (Some(a), Some(b)) => step_order(&a, &b) != Ordering::Greater,
        _ => true,
    });
    if in_order {
        return sample_indices(history.len(), max_results)
            .into_iter()
            .filter_map(|i| history.point(i))
            .collect();
    }
    let mut points: Vec<Point> = (0..history.len())
        .filter_map(|i| history.point(i))
        .collect();
    points.sort_by(step_order);
    sample_indices(points.len(), max_results)
        .into_iter()
        .filter_map(|i| points.get(i).copied())
        .collect()
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

/// Appends `points` as `Metric` messages of the run `json` is at.
fn push_points(json: &mut MetricsJson, points: &[Point]) {
    for point in points {
        json.push(point.value, point.timestamp_ms, point.step);
    }
}

/// A `get-history` answer: `points` of `key`, no run ids.
fn history_json(key: &str, points: &[Point], next_page_token: Option<usize>) -> Vec<u8> {
    let mut json = MetricsJson::new(key, points.len());
    push_points(&mut json, points);
    json.finish(next_page_token.map(|end| end.to_string()).as_deref())
}

/// `metrics/get-history`: every point (or a page of them) of one series.
pub(crate) fn get_history(service: &Service, request: &Request<'_>) -> Body {
    let fields = Fields::of(request, &[])?;
    let text = fields.run_id()?;
    let key = fields.required_string("metric_key")?;
    // Without `max_results` MLflow's server sends the whole series in one answer; a page of at
    // most 25,000 points (what MLflow's client asks for) keeps one answer's memory bounded.
    let page_size = match fields.int("max_results")? {
        None => Some(HISTORY_PAGE_MAX as usize),
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
    if let Some(size) = page_size
        && let Some((points, total)) = page_in_time_order(service, text, key, offset, size)?
    {
        let end = offset.saturating_add(points.len());
        return Ok(history_json(key, &points, (end < total).then_some(end)));
    }
    let (_, history) = read_history(service, text, key, ALL_STEPS)?;
    let points = by_time(&history);
    let start = offset.min(points.len());
    let end = page_size.map_or(points.len(), |size| {
        start.saturating_add(size).min(points.len())
    });
    let next_page_token = (end < points.len()).then_some(end);
    Ok(history_json(key, &points[start..end], next_page_token))
}

/// One page of MLflow's history order read without the rest of the series, and the series'
/// point count, where the engine can show its (timestamp, step) order from the page's rows
/// and page statistics (`Store::history_page`). Distinct (timestamp, step) pairs leave the
/// value no say in MLflow's order, so that order is MLflow's.
#[cfg(feature = "parquet")]
fn page_in_time_order(
    service: &Service,
    text: &str,
    key: &str,
    offset: usize,
    size: usize,
) -> Result<Option<(Vec<Point>, usize)>, MlflowError> {
    let Ok(run) = runs::parse_id(text) else {
        return Ok(None);
    };
    match service.store().history_page(run, key, offset, size) {
        Ok(Some(page)) => Ok(Some((
            (0..page.points.len())
                .filter_map(|i| page.points.point(i))
                .collect(),
            page.total,
        ))),
        Ok(None) | Err(crate::Error::NotFound(_)) => Ok(None),
        Err(other) => Err(run_error(text, other)),
    }
}

/// Without compacted Parquet files there is no page index to page by.
#[cfg(not(feature = "parquet"))]
fn page_in_time_order(
    _: &Service,
    _: &str,
    _: &str,
    _: usize,
    _: usize,
) -> Result<Option<(Vec<Point>, usize)>, MlflowError> {
    Ok(None)
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
    let mut json = MetricsJson::new(&key, 0);
    let mut left = limit;
    for text in &run_ids {
        let (Some(run), history) = read_history(service, text, &key, ALL_STEPS)? else {
            continue;
        };
        let points = by_time(&history);
        let taken = &points[..points.len().min(left)];
        json.run(Some(run));
        push_points(&mut json, taken);
        left -= taken.len();
        if left == 0 {
            break;
        }
    }
    Ok(json.finish(None))
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
    // one pass over the log. One existence check for all runs, copying nothing out of the
    // catalog.
    let store = service.store();
    let named: Vec<RunId> = run_ids
        .iter()
        .filter_map(|text| runs::parse_id(text).ok())
        .collect();
    let runs = store.existing_runs(&named)?;
    let samples = sample_runs(store, &runs, key, steps, per_run)?;
    let mut json = MetricsJson::new(key, samples.iter().map(Vec::len).sum());
    for (run, points) in runs.iter().zip(&samples) {
        json.run(Some(*run));
        push_points(&mut json, points);
    }
    Ok(json.finish(None))
}

/// Each run's interval sample. The engine reads only the sampled rows; its order (by step, then
/// logging order) is MLflow's wherever no sampled point shares its step with another, and a
/// run where one does is read whole and sampled in MLflow's order.
#[cfg(feature = "parquet")]
fn sample_runs(
    store: &crate::Store,
    runs: &[RunId],
    key: &str,
    steps: (std::ops::Bound<i64>, std::ops::Bound<i64>),
    per_run: usize,
) -> crate::Result<Vec<Vec<Point>>> {
    let pick = |total: usize| sample_indices(total, per_run);
    let samples = store.history_sample(runs, key, steps, &pick)?;
    runs.iter()
        .zip(samples)
        .map(|(run, sample)| {
            if sample.ties {
                let history = store.history(*run, key, steps)?;
                return Ok(sample_history(&history, per_run));
            }
            Ok((0..sample.points.len())
                .filter_map(|i| sample.points.point(i))
                .collect())
        })
        .collect()
}

/// Each run's interval sample, from its whole history in the range.
#[cfg(not(feature = "parquet"))]
fn sample_runs(
    store: &crate::Store,
    runs: &[RunId],
    key: &str,
    steps: (std::ops::Bound<i64>, std::ops::Bound<i64>),
    per_run: usize,
) -> crate::Result<Vec<Vec<Point>>> {
    let histories = store.history_of_runs(runs, key, steps)?;
    Ok(histories
        .iter()
        .map(|history| sample_history(history, per_run))
        .collect())
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

/// The indices MLflow's SQL store samples out of `n` ordered points: split them into
/// `max_results` buckets as SQL's `NTILE` does (the first `n % k` buckets one point larger),
/// keep each bucket's first point, and make sure the last point is there (it takes the last
/// slot of a full sample).
pub(crate) fn sample_indices(n: usize, max_results: usize) -> Vec<usize> {
    let k = max_results.max(1);
    if n <= k {
        return (0..n).collect();
    }
    let (base, rem) = (n / k, n % k);
    let mut sample: Vec<usize> = (0..k).map(|i| i * base + i.min(rem)).collect();
    if let Some(slot) = sample.last_mut() {
        *slot = n - 1;
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntile_sample_keeps_every_point_up_to_the_limit() {
        assert_eq!(sample_indices(5, 5), [0, 1, 2, 3, 4]);
        assert!(sample_indices(0, 5).is_empty());
    }

    #[test]
    fn ntile_sample_takes_bucket_firsts_and_the_last_point() {
        // 10 points in 4 buckets: sizes 3, 3, 2, 2, firsts 0, 3, 6, 8; the last point (9)
        // replaces 8 because the sample is full.
        assert_eq!(sample_indices(10, 4), [0, 3, 6, 9]);
        assert_eq!(sample_indices(10, 1), [9]);
    }

    #[test]
    fn a_step_logged_out_of_timestamp_order_is_sampled_in_mlflow_order() {
        let history = History {
            steps: vec![0, 1, 1, 2],
            timestamps_ms: vec![0, 9, 5, 3],
            values: vec![0.0, 1.0, 2.0, 3.0],
        };
        let timestamps: Vec<i64> = sample_history(&history, 10)
            .iter()
            .map(|p| p.timestamp_ms)
            .collect();
        assert_eq!(timestamps, [0, 5, 9, 3]);
        let in_order = History {
            steps: (0..10).collect(),
            timestamps_ms: (0..10).collect(),
            values: (0..10).map(|v| v as f64).collect(),
        };
        let steps: Vec<i64> = sample_history(&in_order, 4)
            .iter()
            .map(|p| p.step)
            .collect();
        assert_eq!(steps, [0, 3, 6, 9]);
    }
}
