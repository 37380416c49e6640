//! `search_experiments`: filter, order and page experiments with MLflow's experiment grammar
//! (`name`, `tags.<key>`, `creation_time`, `last_update_time`; see `filter.rs`), answered from
//! the catalog.
//!
//! Ordering follows MLflow's SQL store: each `order_by` field in turn (default
//! `creation_time DESC`), missing values last, then experiment id ascending, so the order is
//! total and pages are stable. Only the experiments of the returned page are copied out of the
//! catalog; the rest are decided on borrowed fields.

use std::cmp::Ordering;

use crate::catalog::{Experiment, ExperimentRow};
use crate::error::{Error, Result};
use crate::ids::ExperimentId;
use crate::query::filter::{self, Attribute, Clause, Field, Filter, OrderBy, Subject, Value};
use crate::query::search::{
    Key, SEARCH_RESULTS_DEFAULT, SEARCH_RESULTS_MAX, compare_keys, compare_number, parse_token,
    text_holds,
};
use crate::tracking::{Store, ViewType};

/// An experiment search.
#[derive(Clone, Debug, Default)]
pub struct SearchExperiments {
    /// Active, deleted or all experiments.
    pub view: ViewType,
    /// MLflow filter string over experiments (empty: every experiment).
    pub filter: String,
    /// `order_by` elements, e.g. `"last_update_time DESC"` (default `creation_time DESC`).
    pub order_by: Vec<String>,
    /// Page size (0: the default, 1,000; at most 50,000).
    pub max_results: usize,
    /// The token of the previous page's result, to get the next page.
    pub page_token: Option<String>,
}

/// One page of experiments.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentsPage {
    /// Matching experiments, in order.
    pub experiments: Vec<Experiment>,
    /// Present when more experiments match.
    pub next_page_token: Option<String>,
}

impl Store {
    /// Searches experiments with MLflow's experiment filter grammar.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// use runlog::query::SearchExperiments;
    /// let store = runlog::Store::open(dir.path())?;
    /// for name in ["vision/resnet", "vision/vit", "text/bert"] {
    ///     store.get_or_create_experiment(name)?;
    /// }
    /// let page = store.search_experiments(&SearchExperiments {
    ///     filter: "name LIKE 'vision/%'".into(),
    ///     order_by: vec!["name ASC".into()],
    ///     max_results: 1,
    ///     ..SearchExperiments::default()
    /// })?;
    /// assert_eq!(page.experiments[0].name, "vision/resnet");
    /// let next = store.search_experiments(&SearchExperiments {
    ///     filter: "name LIKE 'vision/%'".into(),
    ///     order_by: vec!["name ASC".into()],
    ///     max_results: 1,
    ///     page_token: page.next_page_token,
    ///     ..SearchExperiments::default()
    /// })?;
    /// assert_eq!(next.experiments[0].name, "vision/vit");
    /// assert!(next.next_page_token.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn search_experiments(&self, search: &SearchExperiments) -> Result<ExperimentsPage> {
        let filter = filter::parse_for(Subject::Experiments, &search.filter)?;
        let order = orders(&search.order_by)?;
        let page_size = page_size(search.max_results)?;
        let fingerprint = fingerprint(search);
        let offset = match &search.page_token {
            Some(token) => parse_token(token, fingerprint)?,
            None => 0,
        };
        self.refresh_if_stale()?;
        let mut hits = self.catalog().scan_experiments(|row| {
            let wanted = includes(search.view, row) && holds_all(&filter, row);
            wanted.then(|| ExperimentHit {
                keys: order.iter().map(|o| sort_key(row, &o.field)).collect(),
                id: row.id,
            })
        });
        let end = offset.saturating_add(page_size);
        let more = hits.len() > end;
        let compare = |a: &ExperimentHit, b: &ExperimentHit| -> Ordering {
            compare_keys(&order, &a.keys, &b.keys).then(a.id.cmp(&b.id))
        };
        if more {
            hits.select_nth_unstable_by(end, compare);
            hits.truncate(end);
        }
        hits.sort_unstable_by(compare);
        let experiments: Vec<Experiment> = hits
            .iter()
            .skip(offset)
            .take(page_size)
            .filter_map(|hit| self.catalog().experiment(hit.id))
            .collect();
        let next = offset + experiments.len();
        let next_page_token = more.then(|| format!("{next:x}.{fingerprint:016x}"));
        Ok(ExperimentsPage {
            experiments,
            next_page_token,
        })
    }
}

/// The parsed orderings, MLflow's default when none is given.
fn orders(order_by: &[String]) -> Result<Vec<OrderBy>> {
    if order_by.is_empty() {
        return Ok(vec![OrderBy {
            field: Field::Attribute(Attribute::CreationTime),
            ascending: false,
        }]);
    }
    order_by
        .iter()
        .map(|o| filter::parse_order_by_for(Subject::Experiments, o).map_err(Error::from))
        .collect()
}

fn page_size(max_results: usize) -> Result<usize> {
    match max_results {
        0 => Ok(SEARCH_RESULTS_DEFAULT),
        n if n > SEARCH_RESULTS_MAX => Err(Error::InvalidInput(format!(
            "max_results {n} exceeds {SEARCH_RESULTS_MAX}"
        ))),
        n => Ok(n),
    }
}

/// Ties a page token to the search it came from, so it is not replayed on another search.
fn fingerprint(search: &SearchExperiments) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed seed: a token must match its search in every process serving the store.
    let mut hasher = std::hash::BuildHasher::build_hasher(&crate::util::IdHash::default());
    "experiments".hash(&mut hasher);
    search.filter.hash(&mut hasher);
    search.order_by.hash(&mut hasher);
    (search.view as u8).hash(&mut hasher);
    hasher.finish()
}

fn includes(view: ViewType, row: &ExperimentRow<'_>) -> bool {
    use crate::catalog::LifecycleStage;
    match view {
        ViewType::ActiveOnly => row.lifecycle_stage == LifecycleStage::Active,
        ViewType::DeletedOnly => row.lifecycle_stage == LifecycleStage::Deleted,
        ViewType::All => true,
    }
}

fn holds_all(filter: &Filter, row: &ExperimentRow<'_>) -> bool {
    filter.clauses.iter().all(|clause| holds(clause, row))
}

/// Whether `clause` holds for the experiment. A clause on a missing tag is false, except
/// `IS NULL`, as in MLflow.
fn holds(clause: &Clause, row: &ExperimentRow<'_>) -> bool {
    match (&clause.field, &clause.value) {
        (Field::Tag(key), value) => text_holds(row.tag(key), clause.op, value),
        (Field::Attribute(Attribute::Name), value) => text_holds(Some(row.name), clause.op, value),
        (Field::Attribute(attribute), Value::Number(target)) => {
            time_ms(row, *attribute).is_some_and(|t| compare_number(t as f64, clause.op, *target))
        }
        _ => false,
    }
}

fn time_ms(row: &ExperimentRow<'_>, attribute: Attribute) -> Option<i64> {
    match attribute {
        Attribute::CreationTime => Some(row.creation_time_ms),
        Attribute::LastUpdateTime => Some(row.last_update_time_ms),
        _ => None,
    }
}

fn sort_key(row: &ExperimentRow<'_>, field: &Field) -> Option<Key> {
    match field {
        Field::Attribute(Attribute::Name) => Some(Key::Text(row.name.to_string())),
        Field::Attribute(Attribute::ExperimentId) => Some(Key::Id(row.id.0)),
        Field::Attribute(attribute) => time_ms(row, *attribute).map(|t| Key::Number(t as f64)),
        Field::Tag(key) => row.tag(key).map(|v| Key::Text(v.to_string())),
        _ => None,
    }
}

/// A matching experiment with what it sorts by.
struct ExperimentHit {
    keys: Vec<Option<Key>>,
    id: ExperimentId,
}
