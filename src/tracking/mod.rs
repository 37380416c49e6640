//! The tracking API: experiments, runs, params, tags, metrics and artifacts, following MLflow's
//! data model and rules, on top of the segment log and the catalog.

mod artifacts;
mod clock;
mod datasets;
mod follow;
mod keyed;
mod metric_handle;
mod models;
mod run;
mod store;
pub mod system_tags;
mod usage;
pub mod validation;

pub use keyed::MetricPoint;
pub use metric_handle::MetricHandle;
pub use models::ModelOptions;
pub use run::{Run, RunOptions};
#[cfg(feature = "parquet")]
pub(crate) use store::StoreInner;
pub use store::{DEFAULT_EXPERIMENT_NAME, Store, StoreOptions, ViewType, WAL_DIR, check_is_store};
pub use usage::{DiskUsage, FileBytes, FileKind, disk_usage};
