//! Compaction: metric points of sealed log segments move into per-experiment Parquet files,
//! `experiments/<experiment-id>/<generation>.parquet` (columns step, timestamp, value; sorted by
//! run, key, step), indexed by series in a checksummed manifest (`manifest.rs`) that says which
//! rows belong to which (run, key).
//!
//! Stage one of the design in `docs/ARCHITECTURE.md`: the log is left in place. A compacted
//! segment is only skipped by readers of points (its writer's watermark in the manifest), so no
//! crash can lose or duplicate a point and no live reader can miss one. Deleting compacted
//! segments waits for reader leases (stage two).
//!
//! Crash safety: files are published atomically and listed by a manifest published after them;
//! a file no manifest lists is ignored and removed by the next compaction. One compactor runs at
//! a time, under an OS lock on `compaction.lock`.

pub mod manifest;
#[cfg(feature = "parquet")]
mod reader;
#[cfg(feature = "parquet")]
mod writer;

pub use manifest::{CompactedFile, Manifest, SeriesRows, WriterMark};
#[cfg(feature = "parquet")]
pub(crate) use reader::{MetadataCache, read_series};
#[cfg(feature = "parquet")]
pub use writer::CompactionReport;

/// The folder of compacted files inside a store.
pub const EXPERIMENTS_DIR: &str = "experiments";
/// An experiment with more files than this has them merged into one.
pub const FILES_PER_EXPERIMENT_MAX: usize = 4;
