//! Queries over the catalog: run search with MLflow's filter grammar, and run comparison from
//! metric summaries.

mod compare;
pub mod filter;
mod search;

pub use compare::{Aggregate, ComparedSeries};
pub use filter::{Filter, FilterError, parse, parse_order_by};
pub(crate) use search::AttributeParts;
pub use search::{
    AttributeValue, RunFields, RunsPage, SEARCH_RESULTS_DEFAULT, SEARCH_RESULTS_MAX, SearchRuns,
    matches,
};
