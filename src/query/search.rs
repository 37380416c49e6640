//! `search_runs`: filter, order and page runs, answered from the catalog (latest metric values
//! come from the summaries, so no history is read).
//!
//! Ordering follows MLflow's SQL store: each `order_by` field in turn, missing values (and NaN)
//! last whatever the direction, then start time descending and run id as tie-breakers, so pages
//! are stable.

use std::cmp::Ordering;

use crate::catalog::{LifecycleStage, RunView};
use crate::error::{Error, Result};
use crate::ids::ExperimentId;
use crate::query::filter::{self, Attribute, Clause, Field, Filter, Op, OrderBy, Value};
use crate::tracking::{Store, ViewType};

/// Default page size (MLflow's client default).
pub const SEARCH_RESULTS_DEFAULT: usize = 1_000;
/// Largest page (MLflow's server limit).
pub const SEARCH_RESULTS_MAX: usize = 50_000;

/// A run search.
#[derive(Clone, Debug, Default)]
pub struct SearchRuns {
    /// Experiments to search (all if empty).
    pub experiments: Vec<ExperimentId>,
    /// MLflow filter string (empty: every run).
    pub filter: String,
    /// `order_by` elements, e.g. `"metrics.acc DESC"`.
    pub order_by: Vec<String>,
    /// Page size (0: the default, 1,000; at most 50,000).
    pub max_results: usize,
    /// The token of the previous page's result, to get the next page.
    pub page_token: Option<String>,
    /// Active, deleted or all runs.
    pub view: ViewType,
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct RunsPage {
    /// Matching runs, in order.
    pub runs: Vec<RunView>,
    /// Present when more runs match.
    pub next_page_token: Option<String>,
}

impl Store {
    /// Searches runs with MLflow's filter grammar.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// use runlog::query::SearchRuns;
    /// let store = runlog::Store::open(dir.path())?;
    /// let experiment = store.get_or_create_experiment("e")?;
    /// for lr in ["0.1", "0.01"] {
    ///     let run = store.start_run(experiment.id, Default::default())?;
    ///     run.log_param("lr", lr)?;
    ///     run.log_metric("acc", if lr == "0.01" { 0.95 } else { 0.7 }, 1)?;
    ///     run.finish()?;
    /// }
    /// let page = store.search_runs(&SearchRuns {
    ///     filter: "metrics.acc > 0.9 and params.lr = '0.01'".into(),
    ///     order_by: vec!["metrics.acc DESC".into()],
    ///     ..SearchRuns::default()
    /// })?;
    /// assert_eq!(page.runs.len(), 1);
    /// assert!(store.search_runs(&SearchRuns { filter: "metrics.acc >".into(), ..Default::default() }).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn search_runs(&self, search: &SearchRuns) -> Result<RunsPage> {
        let filter =
            filter::parse(&search.filter).map_err(|e| invalid_filter(&search.filter, e))?;
        let order: Vec<OrderBy> = search
            .order_by
            .iter()
            .map(|o| filter::parse_order_by(o).map_err(|e| invalid_filter(o, e)))
            .collect::<Result<_>>()?;
        let page_size = match search.max_results {
            0 => SEARCH_RESULTS_DEFAULT,
            n if n > SEARCH_RESULTS_MAX => {
                return Err(Error::InvalidInput(format!(
                    "max_results {n} exceeds {SEARCH_RESULTS_MAX}"
                )));
            }
            n => n,
        };
        let fingerprint = fingerprint(search);
        let offset = match &search.page_token {
            Some(token) => parse_token(token, fingerprint)?,
            None => 0,
        };
        self.refresh()?;
        let experiments = &search.experiments;
        let mut runs: Vec<RunView> = self
            .inner
            .catalog
            .runs(None)
            .into_iter()
            .filter(|run| experiments.is_empty() || experiments.contains(&run.info.experiment))
            .filter(|run| includes(search.view, run.info.lifecycle_stage))
            .filter(|run| matches(&filter, run))
            .collect();
        runs.sort_by(|a, b| compare_runs(&order, a, b));
        let total = runs.len();
        let page: Vec<RunView> = runs.into_iter().skip(offset).take(page_size).collect();
        let next = offset + page.len();
        let next_page_token = (next < total).then(|| format!("{next:x}.{fingerprint:016x}"));
        Ok(RunsPage {
            runs: page,
            next_page_token,
        })
    }
}

fn includes(view: ViewType, stage: LifecycleStage) -> bool {
    match view {
        ViewType::ActiveOnly => stage == LifecycleStage::Active,
        ViewType::DeletedOnly => stage == LifecycleStage::Deleted,
        ViewType::All => true,
    }
}

fn invalid_filter(input: &str, error: filter::FilterError) -> Error {
    Error::InvalidFilter {
        input: input.to_string(),
        column: error.column,
        message: error.message,
    }
}

/// Ties a page token to the query it came from, so a token is not replayed on another query.
fn fingerprint(search: &SearchRuns) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = crate::wal::writer::FastHasher::default();
    search.experiments.hash(&mut hasher);
    search.filter.hash(&mut hasher);
    search.order_by.hash(&mut hasher);
    (search.view as u8).hash(&mut hasher);
    hasher.finish()
}

fn parse_token(token: &str, fingerprint: u64) -> Result<usize> {
    let parsed = token.split_once('.').and_then(|(offset, print)| {
        Some((
            usize::from_str_radix(offset, 16).ok()?,
            u64::from_str_radix(print, 16).ok()?,
        ))
    });
    match parsed {
        Some((offset, print)) if print == fingerprint => Ok(offset),
        Some(_) => Err(Error::InvalidInput(format!(
            "page token {token:?} belongs to a different search (filter, order or experiments changed)"
        ))),
        None => Err(Error::InvalidInput(format!(
            "page token {token:?} is not one runlog issued"
        ))),
    }
}

/// Whether `run` satisfies every clause.
pub fn matches(filter: &Filter, run: &RunView) -> bool {
    filter
        .clauses
        .iter()
        .all(|clause| clause_holds(clause, run))
}

fn clause_holds(clause: &Clause, run: &RunView) -> bool {
    match (&clause.field, &clause.value) {
        (Field::Metric(key), Value::Number(target)) => run
            .metrics
            .get(key)
            .is_some_and(|m| compare_number(m.last_value, clause.op, *target)),
        (Field::Param(key), value) => {
            text_holds(run.params.get(key).map(String::as_str), clause.op, value)
        }
        (Field::Tag(key), value) => {
            text_holds(run.tags.get(key).map(String::as_str), clause.op, value)
        }
        (Field::Attribute(attribute), value) => match attribute_value(run, *attribute) {
            AttributeValue::Number(n) => match value {
                Value::Number(target) => {
                    n.is_some_and(|n| compare_number(n as f64, clause.op, *target))
                }
                _ => false,
            },
            AttributeValue::Text(text) => text_holds(Some(&text), clause.op, value),
        },
        _ => false,
    }
}

fn compare_number(value: f64, op: Op, target: f64) -> bool {
    match op {
        Op::Eq => value == target,
        Op::Ne => value != target,
        Op::Lt => value < target,
        Op::Le => value <= target,
        Op::Gt => value > target,
        Op::Ge => value >= target,
        _ => false,
    }
}

fn text_holds(value: Option<&str>, op: Op, target: &Value) -> bool {
    match (op, value, target) {
        (Op::IsNull, value, _) => value.is_none(),
        (Op::IsNotNull, value, _) => value.is_some(),
        (_, None, _) => false,
        (Op::Eq, Some(v), Value::Text(t)) => v == t,
        (Op::Ne, Some(v), Value::Text(t)) => v != t,
        (Op::Like, Some(v), Value::Text(t)) => filter::like(v, t, false),
        (Op::ILike, Some(v), Value::Text(t)) => filter::like(v, t, true),
        (Op::In, Some(v), Value::List(items)) => items.iter().any(|i| i == v),
        (Op::NotIn, Some(v), Value::List(items)) => !items.iter().any(|i| i == v),
        _ => false,
    }
}

enum AttributeValue {
    Number(Option<i64>),
    Text(String),
}

fn attribute_value(run: &RunView, attribute: Attribute) -> AttributeValue {
    let info = &run.info;
    match attribute {
        Attribute::RunId => AttributeValue::Text(info.id.to_string()),
        Attribute::RunName => AttributeValue::Text(info.name.clone()),
        Attribute::Status => AttributeValue::Text(info.status.as_str().to_string()),
        Attribute::UserId => AttributeValue::Text(info.user.clone().unwrap_or_default()),
        Attribute::LifecycleStage => {
            AttributeValue::Text(info.lifecycle_stage.as_str().to_string())
        }
        Attribute::StartTime => AttributeValue::Number(Some(info.start_time_ms)),
        Attribute::EndTime => AttributeValue::Number(info.end_time_ms),
    }
}

/// A sortable value: numbers before texts never mix within one field.
#[derive(PartialEq)]
enum Key {
    Number(f64),
    Text(String),
}

fn sort_key(run: &RunView, field: &Field) -> Option<Key> {
    match field {
        Field::Metric(key) => run
            .metrics
            .get(key)
            .map(|m| m.last_value)
            .filter(|v| !v.is_nan())
            .map(Key::Number),
        Field::Param(key) => run.params.get(key).cloned().map(Key::Text),
        Field::Tag(key) => run.tags.get(key).cloned().map(Key::Text),
        Field::Attribute(attribute) => match attribute_value(run, *attribute) {
            AttributeValue::Number(n) => n.map(|n| Key::Number(n as f64)),
            AttributeValue::Text(text) => Some(Key::Text(text)),
        },
    }
}

fn compare_runs(order: &[OrderBy], a: &RunView, b: &RunView) -> Ordering {
    for OrderBy { field, ascending } in order {
        let ordering = match (sort_key(a, field), sort_key(b, field)) {
            (None, None) => Ordering::Equal,
            // Missing values go last in either direction.
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(Key::Number(x)), Some(Key::Number(y))) => x.total_cmp(&y),
            (Some(Key::Text(x)), Some(Key::Text(y))) => x.cmp(&y),
            (Some(Key::Number(_)), Some(Key::Text(_))) => Ordering::Less,
            (Some(Key::Text(_)), Some(Key::Number(_))) => Ordering::Greater,
        };
        let ordering = if *ascending {
            ordering
        } else {
            ordering.reverse()
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    b.info
        .start_time_ms
        .cmp(&a.info.start_time_ms)
        .then(a.info.id.cmp(&b.info.id))
}
