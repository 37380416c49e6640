//! # runlog
//!
//! An embedded, append-only, log-structured metrics engine for machine-learning experiment
//! tracking. A training job links it to record experiments, runs, params, tags, artifacts and
//! step metrics at very high rates, without losing acknowledged data.
//!
//! The crate is built in layers (`docs/ARCHITECTURE.md`):
//! - [`wal`], the **segment log**: preallocated, mmapped segment files of CRC-checked records,
//!   one chain per writer, any number of writers (threads or processes) appending without a
//!   shared lock;
//! - [`catalog`] and [`tracking`], the **tracking API** most users want: [`Store`] and [`Run`],
//!   with MLflow's data model and rules, over an in-memory catalog rebuilt from the log;
//! - [`query`]: run search with MLflow's filter grammar, comparison, metric history and
//!   downsampling;
//! - [`compaction`]: the log's points into sorted, indexed per-experiment Parquet files under a
//!   checksummed manifest, by call or in the background;
//! - `export` (feature `parquet`, on by default): the store as Hive-partitioned Parquet;
//! - [`verify`]: a read-only check of every checksummed structure of a store;
//! - `ingest` (feature `jsonl`, on with `cli`): the JSON Lines event format of `runlog ingest`;
//! - `mlflow` (feature `mlflow`, on with `cli`): MLflow's tracking REST protocol over the
//!   engine, for the HTTP server and the Python plugin;
//! - `server` (feature `server`, on with `cli`): that protocol over HTTP/1.1, the library side
//!   of `runlog serve` (`docs/SERVER.md`).
//!
//! The `runlog` binary (feature `cli`, on by default; `docs/CLI.md`) is a thin command line
//! over these.
//!
//! It is not:
//! - a general time-series database (it knows runs, keys and steps);
//! - a replicated store (durability is one machine's disk).
//!
//! Limits: segments from 4 KiB to 2 GiB (64 MiB by default; a writer's first segment is 1 MiB
//! and each next one doubles up to that size); strings up to 1 MiB; record payloads up to
//! 16 MiB (larger batches are split).
//!
//! Most users start from [`Store`] (see its example). The log underneath can also be used on
//! its own:
//!
//! ```
//! use runlog::wal::{Durability, Event, Log, LogOptions};
//! use runlog::{ExperimentId, RunId};
//!
//! # fn main() -> runlog::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
//! let options = LogOptions { durability: Durability::Buffered, ..LogOptions::default() };
//! let (log, _recovery) = Log::open(dir.path().join("wal"), options)?;
//! let run = RunId(7);
//! log.append(&Event::RunCreated {
//!     run,
//!     time_ms: 1_700_000_000_000,
//!     experiment: ExperimentId(1),
//!     parent: None,
//!     name: "baseline".into(),
//! })?;
//! for step in 0..100 {
//!     log.log_point(run, "loss", step, 1_700_000_000_000 + step, 1.0 / (step + 1) as f64)?;
//! }
//! log.flush()?;
//!
//! let mut points = 0;
//! log.read(&mut |_writer, event| {
//!     if let Event::Metrics(batch) = event {
//!         points += batch.len();
//!     }
//! })?;
//! assert_eq!(points, 100);
//! # Ok(())
//! # }
//! ```

/// The README's examples, compiled and run as doctests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Declares modules that are `pub` with the `testing` feature and `pub(crate)` without it: the
/// integration tests, benches and fuzz targets reach into the engine's internals, and a user of
/// the crate does not see them. (An attribute cannot change a file module's visibility.)
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "testing")]
        pub mod $name;
        #[cfg(not(feature = "testing"))]
        pub(crate) mod $name;
    )*};
}

mod artifact;
pub mod catalog;
pub mod compaction;
pub mod error;
#[cfg(feature = "parquet")]
pub mod export;
mod ids;
#[cfg(feature = "jsonl")]
pub mod ingest;
pub mod io;
pub mod limits;
#[cfg(feature = "mlflow")]
pub mod mlflow;
#[cfg(feature = "parquet")]
mod parquet_file;
mod periodic;
pub mod query;
#[cfg(feature = "server")]
pub mod server;
mod summary;
pub mod tracking;
pub mod verify;
pub mod wal;

internal_modules!(layout, util);

pub use artifact::{ArtifactEntry, ArtifactReader};
pub use catalog::{Artifact, Experiment, LifecycleStage, MetricSummary, RunInfo, RunView};
pub use catalog::{DatasetInput, DatasetSummary, LoggedModel};
pub use error::{Corruption, CorruptionKind, Error, Result};
pub use ids::{ExperimentId, KeyId, ModelId, RunId, SegmentSequence, WriterId};
pub use tracking::{
    MetricHandle, MetricPoint, ModelOptions, Run, RunOptions, Store, StoreOptions, ViewType,
};
pub use wal::{Dataset, Durability, ModelLink, ModelMetric, ModelStatus, RunStatus};
