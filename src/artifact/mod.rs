//! Artifact files: `artifacts/<run-id>/<path>` for runs and `artifacts/models/<model-id>/<path>`
//! for logged models, under the store root, each published atomically and recorded in the log
//! with its size and SHA-256.
//!
//! Invariants:
//! - A file at its final path is complete and durable (temporary name, fsync, link, directory
//!   fsync), and is recorded in the log only after that, so a crash never leaves the log
//!   pointing at a half-written artifact. A crash before the record leaves at most an orphan
//!   file that no run lists, which the next store of its path removes
//!   (`tracking/artifacts.rs` decides when that is safe).
//! - Artifacts are write-once: publishing fails if the path exists, so the file always matches
//!   the one event that recorded it (replacing it could leave an old event describing new
//!   content after a crash).
//! - A deletion is recorded in the log, and made durable, before the file is removed, so the
//!   log never lists a file that is gone, whatever the durability level. A crash in between
//!   leaves an orphan file, as above.

mod reader;
mod writer;

pub use reader::ArtifactReader;
pub(crate) use reader::{open, read};
pub(crate) use writer::{Stored, remove, store};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::Artifact;
use crate::ids::{ModelId, RunId};

pub use crate::layout::ARTIFACTS_DIR;

/// Whether `path` names a file inside any artifact folder it is joined to: relative, with no
/// empty, `.` or `..` segment, and no backslash (a separator on some systems) or control
/// character. Front-ends refuse other paths before anything is written
/// (`tracking::validation::artifact_path`); the paths joined here come from the log, so they
/// are checked again where they meet the file system: a damaged or forged record must not
/// reach, or remove, a file outside the store.
pub(crate) fn is_contained_path(path: &str) -> bool {
    !path.is_empty()
        && !path.chars().any(|c| c == '\\' || c.is_control())
        && path
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

/// `folder` joined with the artifact path `path`, or an error naming both if the path could
/// leave the folder.
pub(crate) fn file_in(folder: &Path, path: &str) -> crate::Result<PathBuf> {
    if is_contained_path(path) {
        Ok(folder.join(path))
    } else {
        Err(crate::Error::InvalidInput(format!(
            "artifact path {path:?} under {} is not a relative path inside that folder, so it \
             is refused",
            folder.display()
        )))
    }
}

/// The artifact folder of `run`.
pub fn run_dir(root: &Path, run: RunId) -> PathBuf {
    root.join(ARTIFACTS_DIR).join(run.to_string())
}

/// The folder, beside the runs' folders, that holds the logged models' artifact folders. A run
/// folder's name is 32 hex digits, so it never clashes.
const MODELS_DIR: &str = "models";

/// The artifact folder of logged model `model`.
pub fn model_dir(root: &Path, model: ModelId) -> PathBuf {
    root.join(ARTIFACTS_DIR)
        .join(MODELS_DIR)
        .join(model.to_string())
}

/// One entry of an artifact folder's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactEntry {
    /// A file.
    File {
        /// Path relative to the run's artifact folder.
        path: String,
        /// Its size.
        size_bytes: u64,
    },
    /// A folder (it exists because some file below it does).
    Dir {
        /// Path relative to the run's artifact folder.
        path: String,
    },
}

impl ArtifactEntry {
    /// Path relative to the run's artifact folder.
    pub fn path(&self) -> &str {
        match self {
            ArtifactEntry::File { path, .. } | ArtifactEntry::Dir { path } => path,
        }
    }
}

/// The direct children of folder `dir` (`""` for the run's artifact folder itself) among a
/// run's `artifacts`, in path order. A `dir` that is a file or holds nothing lists nothing.
pub fn list(artifacts: &BTreeMap<String, Artifact>, dir: &str) -> Vec<ArtifactEntry> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: Vec<ArtifactEntry> = Vec::new();
    for (path, artifact) in artifacts.range(prefix.clone()..) {
        let Some(rest) = path.strip_prefix(&prefix) else {
            break;
        };
        match rest.split_once('/') {
            None => entries.push(ArtifactEntry::File {
                path: path.clone(),
                size_bytes: artifact.size_bytes,
            }),
            Some((child, _)) => {
                let child_path = format!("{prefix}{child}");
                // Paths below one child folder are adjacent in order, so one look back suffices.
                if entries.last().map(ArtifactEntry::path) != Some(child_path.as_str()) {
                    entries.push(ArtifactEntry::Dir { path: child_path });
                }
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifacts(paths: &[&str]) -> BTreeMap<String, Artifact> {
        paths
            .iter()
            .map(|path| {
                let artifact = Artifact {
                    path: path.to_string(),
                    size_bytes: path.len() as u64,
                    sha256: [0; 32],
                    time_ms: 0,
                };
                (path.to_string(), artifact)
            })
            .collect()
    }

    fn paths(entries: &[ArtifactEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|entry| match entry {
                ArtifactEntry::File { path, .. } => path.clone(),
                ArtifactEntry::Dir { path } => format!("{path}/"),
            })
            .collect()
    }

    #[test]
    fn lists_direct_children_only() {
        let stored = artifacts(&[
            "a.txt",
            "d/b.txt",
            "d/e/c.txt",
            "d/f.txt",
            "d-x.txt",
            "dd/g",
        ]);
        assert_eq!(paths(&list(&stored, "")), ["a.txt", "d-x.txt", "d/", "dd/"]);
        assert_eq!(paths(&list(&stored, "d")), ["d/b.txt", "d/e/", "d/f.txt"]);
        assert_eq!(paths(&list(&stored, "d/e")), ["d/e/c.txt"]);
        assert!(list(&stored, "a.txt").is_empty());
        assert!(list(&stored, "missing").is_empty());
        assert_eq!(
            list(&stored, "d/e"),
            [ArtifactEntry::File {
                path: "d/e/c.txt".into(),
                size_bytes: 9
            }]
        );
    }
}
