//! `search_logged_models`: filter, order and page an experiment's logged models with MLflow's
//! logged-model grammar (`name`, `model_id`, `status`, `source_run_id`, `model_type`,
//! `creation_time`, `last_updated_timestamp`, `params.<key>`, `tags.<key>`; see `filter.rs`),
//! answered from the catalog.
//!
//! A `metrics.<key>` clause holds for a model when any of its metric points of that key (on
//! one of the search's datasets, if it names some) satisfies it, as MLflow's SQL store joins
//! its `logged_model_metrics` rows; a search that names datasets and has no metric clause keeps
//! the models with a point on one of them.
//!
//! Ordering follows MLflow's SQL store: each `order_by` field in turn, missing values last,
//! then `creation_time` descending (unless ordered on), then model id ascending, so the order is
//! total and pages are stable. A model's value for `metrics.<key>` is its latest point of that
//! key (greatest timestamp, then greatest step, then smallest run id), on the order's dataset
//! when it names one.

use std::cmp::Ordering;

use crate::catalog::LoggedModel;
use crate::error::{Error, Result};
use crate::ids::ExperimentId;
use crate::query::filter::{self, Attribute, Clause, Field, OrderBy, Subject, Value};
use crate::query::search::{
    Key, SEARCH_RESULTS_MAX, compare_keys, compare_number, parse_token, text_holds,
};
use crate::tracking::Store;
use crate::wal::ModelMetric;

/// The page size when none is given (MLflow's `SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT`).
const MODELS_PAGE_DEFAULT: usize = 100;

/// A logged model search.
#[derive(Clone, Debug, Default)]
pub struct SearchModels {
    /// The experiments searched (at least one).
    pub experiments: Vec<ExperimentId>,
    /// MLflow filter string over logged models (empty: every model).
    pub filter: String,
    /// `order_by` elements, e.g. `"creation_time DESC"`.
    pub order_by: Vec<String>,
    /// The dataset each `order_by` element's metric is read on, by index (MLflow's
    /// `dataset_name` and `dataset_digest` of an order); missing or `None`: any dataset.
    pub order_by_datasets: Vec<Option<DatasetFilter>>,
    /// MLflow's `datasets`: metric clauses count only points on one of these; with no metric
    /// clause, only models with a point on one of them match. Empty: no restriction. Here a
    /// filter's `None` digest matches only points without a digest, as MLflow's server
    /// matches a dataset given without one.
    pub datasets: Vec<DatasetFilter>,
    /// Page size (0: the default, 100; at most 50,000).
    pub max_results: usize,
    /// The token of the previous page's result, to get the next page.
    pub page_token: Option<String>,
}

/// A dataset a model's metric points are restricted to: MLflow's `DatasetFilter`. What a `None`
/// field matches depends on where the filter is given (`SearchModels::datasets`: no value;
/// `SearchModels::order_by_datasets`: any value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DatasetFilter {
    /// The dataset's name.
    pub name: Option<String>,
    /// Its digest.
    pub digest: Option<String>,
}

impl DatasetFilter {
    /// Whether `metric` was logged on this dataset, as a search's `datasets` entry matches:
    /// its name, and its digest or, when the filter gives none, no digest.
    fn holds_exactly(&self, metric: &ModelMetric) -> bool {
        self.name == metric.dataset_name && self.digest == metric.dataset_digest
    }

    /// Whether `metric` was logged on this dataset, as an `order_by` entry matches: each field
    /// the filter gives is the point's.
    fn holds(&self, metric: &ModelMetric) -> bool {
        let matches =
            |wanted: &Option<String>, found: &Option<String>| wanted.is_none() || wanted == found;
        matches(&self.name, &metric.dataset_name) && matches(&self.digest, &metric.dataset_digest)
    }
}

/// One page of logged models.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelsPage {
    /// Matching models, in order.
    pub models: Vec<LoggedModel>,
    /// Present when more models match.
    pub next_page_token: Option<String>,
}

impl Store {
    /// Searches the logged models of `search.experiments` with MLflow's logged-model grammar.
    pub fn search_logged_models(&self, search: &SearchModels) -> Result<ModelsPage> {
        if search.experiments.is_empty() {
            return Err(Error::InvalidInput(
                "a logged model search names at least one experiment".into(),
            ));
        }
        let filter = filter::parse_for(Subject::LoggedModels, &search.filter)?;
        let order = orders(&search.order_by)?;
        let page_size = match search.max_results {
            0 => MODELS_PAGE_DEFAULT,
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
        let has_metric_clause =
            (filter.clauses.iter()).any(|c| matches!(c.field, Field::Metric(_)));
        let on_datasets = |metric: &ModelMetric| {
            search.datasets.is_empty() || search.datasets.iter().any(|d| d.holds_exactly(metric))
        };
        let mut hits: Vec<(Vec<Option<Key>>, LoggedModel)> = self
            .logged_models(&search.experiments)?
            .into_iter()
            .filter(|model| {
                filter.clauses.iter().all(|c| holds(c, model, &on_datasets))
                    && (has_metric_clause
                        || search.datasets.is_empty()
                        || model.metrics.iter().any(on_datasets))
            })
            .map(|model| {
                let keys = (order.iter().enumerate())
                    .map(|(index, o)| {
                        let dataset = search.order_by_datasets.get(index).and_then(Option::as_ref);
                        sort_key(&model, &o.field, dataset)
                    })
                    .collect();
                (keys, model)
            })
            .collect();
        hits.sort_by(|(a_keys, a), (b_keys, b)| -> Ordering {
            compare_keys(&order, a_keys, b_keys).then(a.id.cmp(&b.id))
        });
        let more = hits.len() > offset.saturating_add(page_size);
        let models: Vec<LoggedModel> = hits
            .into_iter()
            .skip(offset)
            .take(page_size)
            .map(|(_, model)| model)
            .collect();
        let next = offset + models.len();
        let next_page_token = more.then(|| format!("{next:x}.{fingerprint:016x}"));
        Ok(ModelsPage {
            models,
            next_page_token,
        })
    }
}

/// The parsed orderings with MLflow's tie-breakers: `creation_time` descending unless ordered
/// on (the model id last is the caller's).
fn orders(order_by: &[String]) -> Result<Vec<OrderBy>> {
    let mut orders: Vec<OrderBy> = order_by
        .iter()
        .map(|o| filter::parse_order_by_for(Subject::LoggedModels, o).map_err(Error::from))
        .collect::<Result<_>>()?;
    let creation = Field::Attribute(Attribute::CreationTime);
    if !orders.iter().any(|o| o.field == creation) {
        orders.push(OrderBy {
            field: creation,
            ascending: false,
        });
    }
    Ok(orders)
}

/// Ties a page token to the search it came from, so it is not replayed on another search.
fn fingerprint(search: &SearchModels) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed seed: a token must match its search in every process serving the store.
    let mut hasher = std::hash::BuildHasher::build_hasher(&crate::util::IdHash::default());
    "logged-models".hash(&mut hasher);
    search.experiments.hash(&mut hasher);
    search.filter.hash(&mut hasher);
    search.order_by.hash(&mut hasher);
    search.order_by_datasets.hash(&mut hasher);
    search.datasets.hash(&mut hasher);
    hasher.finish()
}

/// The text of a text attribute of `model`.
fn text(model: &LoggedModel, attribute: Attribute) -> Option<String> {
    match attribute {
        Attribute::Name => Some(model.name.clone()),
        Attribute::ModelId => Some(model.id.to_string()),
        Attribute::Status => Some(model.status.as_str().to_string()),
        Attribute::SourceRunId => Some(model.source_run.map(|r| r.to_string()).unwrap_or_default()),
        Attribute::ModelType => Some(model.model_type.clone()),
        _ => None,
    }
}

fn time_ms(model: &LoggedModel, attribute: Attribute) -> Option<i64> {
    match attribute {
        Attribute::CreationTime => Some(model.creation_time_ms),
        Attribute::LastUpdateTime => Some(model.last_updated_time_ms),
        _ => None,
    }
}

/// Whether `clause` holds for `model`. A clause on a missing param or tag is false, except
/// `IS NULL`, as in MLflow; `status` compares MLflow's short names (`READY`) and the proto
/// names (`LOGGED_MODEL_READY`) alike.
fn holds(
    clause: &Clause,
    model: &LoggedModel,
    on_datasets: &impl Fn(&ModelMetric) -> bool,
) -> bool {
    match (&clause.field, &clause.value) {
        (Field::Metric(key), Value::Number(target)) => model.metrics.iter().any(|metric| {
            metric.key == *key
                && on_datasets(metric)
                && compare_number(metric.value, clause.op, *target)
        }),
        (Field::Tag(key), value) => {
            text_holds(model.tags.get(key).map(String::as_str), clause.op, value)
        }
        (Field::Param(key), value) => {
            text_holds(model.params.get(key).map(String::as_str), clause.op, value)
        }
        // The parser makes dataset fields for runs only.
        (Field::Metric(_) | Field::Dataset(_), _) => false,
        (Field::Attribute(Attribute::Status), Value::Text(target)) => {
            let short = model.status.as_str().trim_start_matches("LOGGED_MODEL_");
            let value = Value::Text(target.trim_start_matches("LOGGED_MODEL_").to_string());
            text_holds(Some(short), clause.op, &value)
        }
        (Field::Attribute(attribute), Value::Number(target)) => {
            time_ms(model, *attribute).is_some_and(|t| compare_number(t as f64, clause.op, *target))
        }
        (Field::Attribute(attribute), value) => {
            text_holds(text(model, *attribute).as_deref(), clause.op, value)
        }
    }
}

/// The latest point of `key` of `model` (on `dataset` if given), as MLflow's SQL store picks
/// it for ordering: greatest timestamp, then greatest step, then smallest run id.
fn latest_metric(model: &LoggedModel, key: &str, dataset: Option<&DatasetFilter>) -> Option<f64> {
    (model.metrics.iter())
        .filter(|metric| metric.key == key && dataset.is_none_or(|d| d.holds(metric)))
        .max_by(|a, b| {
            (a.timestamp_ms, a.step)
                .cmp(&(b.timestamp_ms, b.step))
                .then(b.run.cmp(&a.run))
        })
        .map(|metric| metric.value)
}

fn sort_key(model: &LoggedModel, field: &Field, dataset: Option<&DatasetFilter>) -> Option<Key> {
    match field {
        Field::Metric(key) => latest_metric(model, key, dataset).map(|value| {
            if value.is_nan() {
                Key::NaN
            } else {
                Key::Number(value)
            }
        }),
        Field::Attribute(attribute) => match time_ms(model, *attribute) {
            Some(t) => Some(Key::Number(t as f64)),
            None => text(model, *attribute).map(Key::Text),
        },
        Field::Tag(key) => model.tags.get(key).map(|v| Key::Text(v.clone())),
        Field::Param(key) => model.params.get(key).map(|v| Key::Text(v.clone())),
        Field::Dataset(_) => None,
    }
}
