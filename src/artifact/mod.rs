//! Artifact files: `artifacts/<run-id>/<path>` under the store root, each published atomically
//! and recorded in the log with its size and SHA-256.
//!
//! Invariants:
//! - A file at its final path is complete and durable (temporary name, fsync, link, directory
//!   fsync), and is recorded in the log only after that, so a crash never leaves the log
//!   pointing at a half-written artifact. A crash before the record leaves at most an orphan
//!   file that no run lists.
//! - Artifacts are write-once: publishing fails if the path exists, so the file always matches
//!   the one event that recorded it (replacing it could leave an old event describing new
//!   content after a crash).

mod reader;
mod writer;

pub(crate) use reader::read;
pub(crate) use writer::store;

use std::path::{Path, PathBuf};

use crate::ids::RunId;

pub use crate::layout::ARTIFACTS_DIR;

/// The artifact folder of `run`.
pub fn run_dir(root: &Path, run: RunId) -> PathBuf {
    root.join(ARTIFACTS_DIR).join(run.to_string())
}
