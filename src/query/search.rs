//! `search_runs`: filter, order and page runs, answered from the catalog (latest metric values
//! come from the summaries, so no history is read).
//!
//! Ordering follows MLflow's SQL store: each `order_by` field in turn, a NaN metric after every
//! number and a missing value after that, whatever the direction, then start time descending and run id as tie-breakers, so pages
//! are stable.

use std::cmp::Ordering;
use std::collections::HashSet;

use rayon::prelude::*;

use crate::catalog::{
    CONTEXT_TAG, Codes, LifecycleStage, MISSING, MetricTable, MetricsReader, RunColumns, RunView,
    TextColumn,
};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, RunId};
use crate::query::filter::{
    self, Attribute, Clause, DatasetField, Field, Filter, Op, OrderBy, Value,
};
use crate::tracking::{Store, ViewType};
use crate::wal::RunStatus;

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
        let filter = filter::parse(&search.filter)?;
        let order: Vec<OrderBy> = search
            .order_by
            .iter()
            .map(|o| filter::parse_order_by(o).map_err(Error::from))
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
        self.refresh_if_stale()?;
        let columns = self.catalog().run_columns();
        let experiments = &search.experiments;
        // Clauses on metadata are decided from the columns; the rest (metric values, which
        // change with every point) from each surviving run's live summaries, under its lock.
        let mut column_tests = Vec::new();
        let mut live_clauses = Vec::new();
        let runs_of_datasets = self.runs_of_dataset_clauses(&filter);
        for (clause, dataset_runs) in filter.clauses.iter().zip(runs_of_datasets) {
            if let Some(runs) = dataset_runs {
                column_tests.push(dataset_test(runs, &columns));
                continue;
            }
            match column_test(clause, &columns) {
                Some(test) => column_tests.push(test),
                None => live_clauses.push(clause),
            }
        }
        let needs_metrics =
            !live_clauses.is_empty() || order.iter().any(|o| matches!(o.field, Field::Metric(_)));
        let columns = &*columns;
        let slot_columns = metric_slot_columns(columns, &live_clauses, &order);
        let evaluate = |reader: &MetricsReader<'_>, row: usize| -> Option<Hit> {
            let wanted = (experiments.is_empty()
                || experiments.contains(&columns.experiments[row]))
                && includes(search.view, columns.stages[row])
                && column_tests.iter().all(|test| test(row));
            if !wanted {
                return None;
            }
            let metrics = needs_metrics.then(|| reader.metrics(&columns.entries[row]));
            let run = Row {
                columns,
                row,
                metrics: metrics.as_deref(),
                slot_columns: &slot_columns,
            };
            live_clauses
                .iter()
                .all(|clause| clause_holds(clause, &run))
                .then(|| Hit {
                    first: order.first().and_then(|o| sort_key(&run, &o.field)),
                    rest: order
                        .iter()
                        .skip(1)
                        .map(|o| sort_key(&run, &o.field))
                        .collect(),
                    start_time_ms: columns.start_times_ms[row],
                    id: columns.ids[row],
                    row,
                })
        };
        let end = offset.saturating_add(page_size);
        let (hits, more) = if order.is_empty() {
            first_hits_by_start(columns, end, || self.catalog().metrics_reader(), evaluate)
        } else {
            let mut hits: Vec<Hit> = (0..columns.len())
                .into_par_iter()
                .map_init(
                    || self.catalog().metrics_reader(),
                    |reader, row| evaluate(reader, row),
                )
                .flatten_iter()
                .collect();
            // Only the runs up to the end of this page need ordering among themselves. The
            // order is total (run ids break every tie), so selecting then sorting gives the
            // very pages a full sort would.
            let more = hits.len() > end;
            if more {
                hits.select_nth_unstable_by(end, |a, b| compare_hits(&order, a, b));
                hits.truncate(end);
            }
            hits.sort_unstable_by(|a, b| compare_hits(&order, a, b));
            (hits, more)
        };
        let page: Vec<RunView> = hits
            .iter()
            .skip(offset)
            .take(page_size)
            .filter_map(|hit| columns.entries[hit.row].view(self.catalog()))
            .collect();
        let next = offset + page.len();
        let next_page_token = more.then(|| format!("{next:x}.{fingerprint:016x}"));
        Ok(RunsPage {
            runs: page,
            next_page_token,
        })
    }
}

/// The first `end` matching runs in the default order (start time descending, then run id),
/// and whether more match. Rows are taken in that order, in chunks sized to what is still
/// missing at the hit rate seen so far, and the scan stops once the page is full: a search for
/// the newest matching runs reads about as many runs as it needs, not all of them. Chunk sizes
/// change how many rows are read, never which runs are returned.
fn first_hits_by_start<'a>(
    columns: &RunColumns,
    end: usize,
    reader: impl Fn() -> MetricsReader<'a> + Sync + Send,
    evaluate: impl Fn(&MetricsReader<'a>, usize) -> Option<Hit> + Sync + Send,
) -> (Vec<Hit>, bool) {
    let mut hits = Vec::new();
    let mut rows = columns.by_start();
    let mut read = 0;
    // One more than the page tells whether more match.
    let wanted = end.saturating_add(1);
    let mut chunk = wanted.clamp(CHUNK_ROWS_MIN, FIRST_CHUNK_ROWS_MAX);
    while !rows.is_empty() {
        let (now, later) = rows.split_at(chunk.min(rows.len()));
        if now.len() < PARALLEL_ROWS_MIN {
            // On one thread the scan can stop at the very row that fills the page.
            let reader = reader();
            for row in now {
                hits.extend(evaluate(&reader, *row as usize));
                if hits.len() > end {
                    hits.truncate(end);
                    return (hits, true);
                }
            }
        } else {
            // An indexed parallel iterator collects in order.
            let found: Vec<Hit> = now
                .par_iter()
                .map_init(&reader, |reader, row| evaluate(reader, *row as usize))
                .flatten_iter()
                .collect();
            hits.extend(found);
        }
        if hits.len() > end {
            hits.truncate(end);
            return (hits, true);
        }
        read += now.len();
        rows = later;
        chunk = next_chunk_rows(wanted - hits.len(), read, hits.len(), chunk);
    }
    (hits, false)
}

/// The fewest rows a chunk of an early-stopping scan reads.
const CHUNK_ROWS_MIN: usize = 64;
/// The fewest rows of a chunk read in parallel. Fewer are read on the calling thread: waking
/// the pool's other thread costs more than it saves on a few hundred rows, and much more when
/// the other core is busy (in a loop on a loaded 2-core machine, a page of 100 runs at one
/// hit in six took 0.12-0.15 ms on one thread against 0.17-0.25 ms in parallel).
const PARALLEL_ROWS_MIN: usize = 1_024;
/// The most rows a first chunk reads, before any hit rate is known.
const FIRST_CHUNK_ROWS_MAX: usize = 512;
const _: () = assert!(CHUNK_ROWS_MIN <= FIRST_CHUNK_ROWS_MAX);

/// Rows to read next to find `missing` more hits, having found `found` in `read` rows: that
/// rate's estimate with a quarter more, so that a page is usually full after one more chunk,
/// and at most twice the `last` chunk, so that a rate measured on few rows costs little.
fn next_chunk_rows(missing: usize, read: usize, found: usize, last: usize) -> usize {
    let most = last.saturating_mul(2);
    if found == 0 {
        return most;
    }
    let estimate = missing.saturating_mul(read) / found;
    estimate
        .saturating_add(estimate / 4)
        .clamp(CHUNK_ROWS_MIN, most.max(CHUNK_ROWS_MIN))
}

fn includes(view: ViewType, stage: LifecycleStage) -> bool {
    match view {
        ViewType::ActiveOnly => stage == LifecycleStage::Active,
        ViewType::DeletedOnly => stage == LifecycleStage::Deleted,
        ViewType::All => true,
    }
}

/// Ties a page token to the query it came from, so a token is not replayed on another query.
fn fingerprint(search: &SearchRuns) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed seed: a token must match its query in every process serving the store.
    let mut hasher = std::hash::BuildHasher::build_hasher(&crate::util::IdHash::default());
    search.experiments.hash(&mut hasher);
    search.filter.hash(&mut hasher);
    search.order_by.hash(&mut hasher);
    (search.view as u8).hash(&mut hasher);
    hasher.finish()
}

pub(super) fn parse_token(token: &str, fingerprint: u64) -> Result<usize> {
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

/// Read access to one run's fields, so a filter can be evaluated on a snapshot ([`RunView`]) or
/// in place on the catalog (without copying every run).
pub trait RunFields {
    /// The run's id.
    fn id(&self) -> RunId;
    /// Its experiment.
    fn experiment(&self) -> ExperimentId;
    /// Its lifecycle stage.
    fn lifecycle_stage(&self) -> LifecycleStage;
    /// Its start time, ms.
    fn start_time_ms(&self) -> i64;
    /// The latest value of metric `key`.
    fn metric_last(&self, key: &str) -> Option<f64>;
    /// Param `key`.
    fn param(&self, key: &str) -> Option<&str>;
    /// Tag `key`.
    fn tag(&self, key: &str) -> Option<&str>;
    /// An attribute.
    fn attribute(&self, attribute: Attribute) -> AttributeValue;
}

impl RunFields for RunView {
    fn id(&self) -> RunId {
        self.info.id
    }
    fn experiment(&self) -> ExperimentId {
        self.info.experiment
    }
    fn lifecycle_stage(&self) -> LifecycleStage {
        self.info.lifecycle_stage
    }
    fn start_time_ms(&self) -> i64 {
        self.info.start_time_ms
    }
    fn metric_last(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).map(|m| m.last_value)
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, attribute: Attribute) -> AttributeValue {
        let info = &self.info;
        let parts = AttributeParts {
            id: info.id,
            name: &info.name,
            status: info.status,
            user: info.user.as_deref(),
            stage: info.lifecycle_stage,
            start_time_ms: info.start_time_ms,
            end_time_ms: info.end_time_ms,
        };
        parts.value(attribute)
    }
}

/// What a run's attributes are made of, for both `RunFields` implementations.
struct AttributeParts<'a> {
    pub id: RunId,
    pub name: &'a str,
    pub status: RunStatus,
    pub user: Option<&'a str>,
    pub stage: LifecycleStage,
    pub start_time_ms: i64,
    pub end_time_ms: Option<i64>,
}

impl AttributeParts<'_> {
    fn value(&self, attribute: Attribute) -> AttributeValue {
        match attribute {
            Attribute::RunId => AttributeValue::Text(self.id.to_string()),
            Attribute::RunName => AttributeValue::Text(self.name.to_string()),
            Attribute::Status => AttributeValue::Text(self.status.as_str().to_string()),
            Attribute::UserId => AttributeValue::Text(self.user.unwrap_or_default().to_string()),
            Attribute::LifecycleStage => AttributeValue::Text(self.stage.as_str().to_string()),
            Attribute::StartTime => AttributeValue::Number(Some(self.start_time_ms)),
            Attribute::EndTime => AttributeValue::Number(self.end_time_ms),
            // Experiment attributes: a run has none, so no clause on them holds.
            Attribute::Name
            | Attribute::ExperimentId
            | Attribute::CreationTime
            | Attribute::LastUpdateTime
            | Attribute::ModelId
            | Attribute::SourceRunId
            | Attribute::ModelType => AttributeValue::Number(None),
        }
    }
}

/// An attribute's value.
pub enum AttributeValue {
    /// A time, if set.
    Number(Option<i64>),
    /// A string.
    Text(String),
}

/// Whether `run` satisfies every clause. A clause on a dataset field needs the store's
/// datasets, which a `RunFields` does not give: here it holds for no run
/// (`Store::search_runs` decides it).
pub fn matches(filter: &Filter, run: &impl RunFields) -> bool {
    filter
        .clauses
        .iter()
        .all(|clause| clause_holds(clause, run))
}

fn clause_holds(clause: &Clause, run: &impl RunFields) -> bool {
    match (&clause.field, &clause.value) {
        (Field::Metric(key), Value::Number(target)) => run
            .metric_last(key)
            .is_some_and(|last| compare_number(last, clause.op, *target)),
        (Field::Param(key), value) => text_holds(run.param(key), clause.op, value),
        (Field::Tag(key), value) => text_holds(run.tag(key), clause.op, value),
        (Field::Attribute(attribute), value) => match run.attribute(*attribute) {
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

pub(super) fn compare_number(value: f64, op: Op, target: f64) -> bool {
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

pub(super) fn text_holds(value: Option<&str>, op: Op, target: &Value) -> bool {
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

/// A sortable value (a field is all numbers, all ids or all texts).
#[derive(PartialEq)]
pub(super) enum Key {
    Number(f64),
    /// A metric whose latest value is NaN: after every number, before a missing value, in
    /// either direction (MLflow's SQL store sorts on its `is_nan` flag first).
    NaN,
    Id(u64),
    Text(String),
}

fn sort_key(run: &impl RunFields, field: &Field) -> Option<Key> {
    match field {
        Field::Metric(key) => run.metric_last(key).map(|value| {
            if value.is_nan() {
                Key::NaN
            } else {
                Key::Number(value)
            }
        }),
        Field::Param(key) => run.param(key).map(|v| Key::Text(v.to_string())),
        Field::Tag(key) => run.tag(key).map(|v| Key::Text(v.to_string())),
        Field::Attribute(attribute) => match run.attribute(*attribute) {
            AttributeValue::Number(n) => n.map(|n| Key::Number(n as f64)),
            AttributeValue::Text(text) => Some(Key::Text(text)),
        },
        // The order parser refuses dataset fields.
        Field::Dataset(_) => None,
    }
}

/// A matching run with what it sorts by: the first `order_by` field's value inline, so that
/// the common single-field order allocates nothing per hit, and any further fields' values.
struct Hit {
    first: Option<Key>,
    rest: Vec<Option<Key>>,
    start_time_ms: i64,
    id: RunId,
    row: usize,
}

fn compare_hits(order: &[OrderBy], a: &Hit, b: &Hit) -> Ordering {
    let Some((first, rest)) = order.split_first() else {
        return b.start_time_ms.cmp(&a.start_time_ms).then(a.id.cmp(&b.id));
    };
    compare_field(first.ascending, a.first.as_ref(), b.first.as_ref())
        .then_with(|| compare_keys(rest, &a.rest, &b.rest))
        .then(b.start_time_ms.cmp(&a.start_time_ms))
        .then(a.id.cmp(&b.id))
}

/// Orders two sets of sort keys by `order`: NaN, then missing values, last in either direction.
pub(super) fn compare_keys(order: &[OrderBy], a: &[Option<Key>], b: &[Option<Key>]) -> Ordering {
    for (index, OrderBy { ascending, .. }) in order.iter().enumerate() {
        let (Some(a), Some(b)) = (a.get(index), b.get(index)) else {
            return Ordering::Equal;
        };
        let ordering = compare_field(*ascending, a.as_ref(), b.as_ref());
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// Orders two values of one `order_by` field: NaN, then missing values, last in either
/// direction.
fn compare_field(ascending: bool, a: Option<&Key>, b: Option<&Key>) -> Ordering {
    let ordering = match (a, b) {
        (None, None) | (Some(Key::NaN), Some(Key::NaN)) => return Ordering::Equal,
        (None, Some(_)) | (Some(Key::NaN), Some(_)) => return Ordering::Greater,
        (Some(_), None) | (Some(_), Some(Key::NaN)) => return Ordering::Less,
        (Some(x), Some(y)) => compare_key(x, y),
    };
    if ascending {
        ordering
    } else {
        ordering.reverse()
    }
}

fn compare_key(a: &Key, b: &Key) -> Ordering {
    let rank = |key: &Key| match key {
        Key::Number(_) => 0,
        Key::NaN => 1,
        Key::Id(_) => 2,
        Key::Text(_) => 3,
    };
    match (a, b) {
        (Key::Number(x), Key::Number(y)) => x.total_cmp(y),
        (Key::Id(x), Key::Id(y)) => x.cmp(y),
        (Key::Text(x), Key::Text(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// A clause decided from the run columns alone, per row.
type ColumnTest<'a> = Box<dyn Fn(usize) -> bool + Sync + 'a>;

impl Store {
    /// For each clause of `filter` on a dataset field, the runs one of whose dataset inputs
    /// satisfies it (MLflow's SQL store joins each such clause with the inputs on its own);
    /// `None` for every other clause.
    fn runs_of_dataset_clauses(&self, filter: &Filter) -> Vec<Option<HashSet<RunId>>> {
        if !filter
            .clauses
            .iter()
            .any(|clause| matches!(clause.field, Field::Dataset(_)))
        {
            return vec![None; filter.clauses.len()];
        }
        let catalog = self.catalog();
        let run_experiments = catalog.run_experiments();
        filter
            .clauses
            .iter()
            .map(|clause| {
                let Field::Dataset(field) = clause.field else {
                    return None;
                };
                let mut runs = HashSet::new();
                catalog
                    .datasets
                    .each_input(&run_experiments, |run, dataset, tags| {
                        let value = match field {
                            DatasetField::Name => Some(dataset.name.as_str()),
                            DatasetField::Digest => Some(dataset.digest.as_str()),
                            DatasetField::Context => tags
                                .iter()
                                .find(|(key, _)| key == CONTEXT_TAG)
                                .map(|(_, value)| value.as_str()),
                        };
                        if value.is_some() && text_holds(value, clause.op, &clause.value) {
                            runs.insert(run);
                        }
                    });
                Some(runs)
            })
            .collect()
    }
}

/// A dataset clause as a test on the run columns: whether the row's run is one of `runs`.
fn dataset_test<'a>(runs: HashSet<RunId>, columns: &'a RunColumns) -> ColumnTest<'a> {
    Box::new(move |row| runs.contains(&columns.ids[row]))
}

/// `clause` as a test on the run columns, if it does not read metric values. Each arm decides
/// exactly what [`clause_holds`] decides on the same run.
fn column_test<'a>(clause: &'a Clause, columns: &'a RunColumns) -> Option<ColumnTest<'a>> {
    let op = clause.op;
    let value = &clause.value;
    let test: ColumnTest<'a> = match &clause.field {
        Field::Metric(_) => match value {
            Value::Number(_) => return None,
            _ => Box::new(|_| false),
        },
        Field::Param(key) => text_column_test(columns.params.get(&**key), op, value),
        Field::Tag(key) => text_column_test(columns.tags.get(&**key), op, value),
        // Decided by `dataset_test` from the runs `runs_of_dataset_clauses` found.
        Field::Dataset(_) => return None,
        Field::Attribute(attribute) => match attribute {
            Attribute::RunName => text_column_test(Some(&columns.names), op, value),
            Attribute::UserId => text_column_test(Some(&columns.users), op, value),
            Attribute::Status => {
                Box::new(move |row| text_holds(Some(columns.statuses[row].as_str()), op, value))
            }
            Attribute::LifecycleStage => {
                Box::new(move |row| text_holds(Some(columns.stages[row].as_str()), op, value))
            }
            Attribute::RunId => {
                Box::new(move |row| text_holds(Some(&columns.ids[row].to_string()), op, value))
            }
            Attribute::Name
            | Attribute::ExperimentId
            | Attribute::CreationTime
            | Attribute::LastUpdateTime
            | Attribute::ModelId
            | Attribute::SourceRunId
            | Attribute::ModelType => Box::new(|_| false),
            Attribute::StartTime | Attribute::EndTime => {
                let Value::Number(target) = *value else {
                    return Some(Box::new(|_| false));
                };
                let start = *attribute == Attribute::StartTime;
                Box::new(move |row| {
                    let time = if start {
                        Some(columns.start_times_ms[row])
                    } else {
                        columns.end_times_ms[row]
                    };
                    time.is_some_and(|t| compare_number(t as f64, op, target))
                })
            }
        },
    };
    Some(test)
}

/// A text clause decided once per distinct value of the column, then per row by its code.
fn text_column_test<'a>(column: Option<&'a TextColumn>, op: Op, value: &Value) -> ColumnTest<'a> {
    let missing = text_holds(None, op, value);
    let Some(column) = column else {
        return Box::new(move |_| missing);
    };
    let truth: Vec<bool> = column
        .values
        .iter()
        .map(|v| text_holds(Some(v), op, value))
        .collect();
    Box::new(move |row| match column.codes.get(row) {
        MISSING => missing,
        code => truth[code as usize],
    })
}

/// One row of the run columns, with its live metric summaries when the search needs them.
struct Row<'a> {
    columns: &'a RunColumns,
    row: usize,
    metrics: Option<&'a MetricTable>,
    /// The metric keys the search reads, each with its column of slots, found once per search
    /// rather than hashed once per row.
    slot_columns: &'a [(&'a str, Option<&'a Codes>)],
}

/// The metric keys that `clauses` and `order` read, each with its column of slots if the
/// columns have one, once each.
fn metric_slot_columns<'a>(
    columns: &'a RunColumns,
    clauses: &[&'a Clause],
    order: &'a [OrderBy],
) -> Vec<(&'a str, Option<&'a Codes>)> {
    let fields = clauses
        .iter()
        .map(|clause| &clause.field)
        .chain(order.iter().map(|o| &o.field));
    let mut found: Vec<(&str, Option<&Codes>)> = Vec::new();
    for field in fields {
        if let Field::Metric(key) = field
            && !found.iter().any(|(known, _)| *known == &**key)
        {
            found.push((key.as_str(), columns.metric_slots.get(&**key)));
        }
    }
    found
}

impl RunFields for Row<'_> {
    fn id(&self) -> RunId {
        self.columns.ids[self.row]
    }
    fn experiment(&self) -> ExperimentId {
        self.columns.experiments[self.row]
    }
    fn lifecycle_stage(&self) -> LifecycleStage {
        self.columns.stages[self.row]
    }
    fn start_time_ms(&self) -> i64 {
        self.columns.start_times_ms[self.row]
    }
    fn metric_last(&self, key: &str) -> Option<f64> {
        let metrics = self.metrics?;
        let slots = match self.slot_columns.iter().find(|(known, _)| *known == key) {
            Some((_, slots)) => *slots,
            None => self.columns.metric_slots.get(key),
        };
        let known = slots.map_or(MISSING, |s| s.get(self.row));
        let slot = match known {
            MISSING => metrics.slot(key)?,
            slot => slot as usize,
        };
        metrics.last_value(slot)
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.columns.params.get(key)?.get(self.row)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.columns.tags.get(key)?.get(self.row)
    }
    fn attribute(&self, attribute: Attribute) -> AttributeValue {
        let columns = self.columns;
        let row = self.row;
        let parts = AttributeParts {
            id: columns.ids[row],
            name: columns.names.get(row).unwrap_or_default(),
            status: columns.statuses[row],
            user: columns.users.get(row),
            stage: columns.stages[row],
            start_time_ms: columns.start_times_ms[row],
            end_time_ms: columns.end_times_ms[row],
        };
        parts.value(attribute)
    }
}
