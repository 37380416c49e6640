//! The one integration-test binary (one binary links once; see ripgrep's `tests/`).
//!
//! Randomized tests print their seed; set `RUNLOG_SEED=<seed>` to replay one. proptest cases
//! persist failing seeds under `proptest-regressions/` and replay them first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod util;

mod catalog_lazy;
#[cfg(feature = "cli")]
mod cli;
mod compaction;
#[cfg(feature = "parquet")]
mod compaction_bytes;
mod compaction_damage;
mod export_parquet;
#[cfg(feature = "parquet")]
mod fixtures;
mod fork;
#[cfg(feature = "parquet")]
mod handle_across_compactions;
#[cfg(feature = "parquet")]
mod history_log_model;
mod layers;
#[cfg(feature = "parquet")]
mod mixed_workload;
#[cfg(feature = "mlflow")]
mod mlflow_api;
#[cfg(feature = "server")]
mod mlflow_datasets;
#[cfg(feature = "server")]
mod mlflow_models;
#[cfg(feature = "cli")]
mod processes;
mod query_experiments;
mod query_history;
#[cfg(feature = "parquet")]
mod query_ranges;
mod query_search;
mod reads_concurrent;
mod replay_summaries;
#[cfg(feature = "parquet")]
mod sample_log;
#[cfg(feature = "parquet")]
mod segment_directory;
mod segment_sizing;
#[cfg(feature = "server")]
mod server_http;
#[cfg(feature = "cli")]
mod server_process;
#[cfg(feature = "server")]
mod server_util;
#[cfg(feature = "parquet")]
mod sim;
#[cfg(feature = "parquet")]
mod sim_regressions;
mod tracking_api;
mod tracking_artifacts;
mod tracking_handle;
mod tracking_keyed;
mod tracking_model;
mod tracking_multiprocess;

mod wal_concurrency;
mod wal_corruption;
mod wal_exhaustive;
mod wal_faults;
mod wal_multiprocess;
mod wal_recovery;
mod wal_roundtrip;
mod wal_tail;
