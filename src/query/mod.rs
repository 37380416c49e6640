//! Queries: run search with MLflow's filter grammar and run comparison (from the catalog), and
//! metric history, downsampled history and step-aligned comparison (from the log).

mod compare;
mod experiments;
pub mod filter;
mod history;
#[cfg(feature = "parquet")]
mod log_sample;
mod models;
#[cfg(feature = "parquet")]
mod sample;
mod search;
mod series_log;

pub use compare::{Aggregate, ComparedSeries, Comparison};
pub use experiments::{ExperimentsPage, SearchExperiments};
pub use filter::{
    Filter, FilterError, Subject, parse, parse_for, parse_order_by, parse_order_by_for,
};
pub use history::{Bucket, Downsampled, History, Point, downsample};
pub use models::{DatasetFilter, ModelsPage, SearchModels};
#[cfg(feature = "parquet")]
pub use sample::{Pick, Sample, TimePage};
pub use search::{
    AttributeValue, RunFields, RunsPage, SEARCH_RESULTS_DEFAULT, SEARCH_RESULTS_MAX, SearchRuns,
    matches,
};
