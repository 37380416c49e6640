//! Publishing and deleting artifact files under `artifacts.lock`, so that a file a crash left at
//! an artifact's path with no event naming it (an orphan) is taken away by the next store of
//! that path instead of blocking it for good.
//!
//! Invariants:
//! - Every step that makes a file at an artifact's final path and then records it (publishing),
//!   and every step that records a deletion and then removes the file, holds the lock shared
//!   from before the file changes until after the event is appended. Shared holders never wait
//!   for each other, so uploads and deletions proceed in parallel.
//! - An orphan is removed only under the lock held exclusively, after a refresh of the catalog
//!   taken under it. No shared holder is then between its file and its event, so a file that
//!   no event names after that refresh has no event coming: a crash took its writer between
//!   the two steps (or a power loss took its event). A file some event names is never removed.
//! - Only a regular file is an orphan: a folder or a symbolic link at the path is left alone
//!   and the store fails as it would have.

use std::fs::File;
use std::path::Path;

use crate::artifact;
use crate::error::{Error, Result};
use crate::layout::ARTIFACTS_LOCK;
use crate::tracking::store::Store;

impl Store {
    /// Runs `publish` (which stores artifact `path` in artifact folder `folder` and records
    /// its event) under the artifact lock held shared, after removing an orphan at that path
    /// if there is one. `listed` says, from the catalog, whether an event names the path;
    /// `owner` names the run or model in errors.
    pub(crate) fn publish_artifact<T>(
        &self,
        folder: &Path,
        owner: &str,
        path: &str,
        listed: impl Fn() -> Result<bool>,
        publish: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let file_path = folder.join(path);
        let is_file = std::fs::symlink_metadata(&file_path).is_ok_and(|found| found.is_file());
        if is_file {
            self.remove_orphan(folder, owner, path, listed)?;
        }
        let _shared = self.lock_artifacts(Hold::Shared)?;
        publish()
    }

    /// Runs `delete` (which records artifact deletions, then removes their files) under the
    /// artifact lock held shared, so no orphan check sees a file between the two.
    pub(crate) fn delete_artifact_files<T>(&self, delete: impl FnOnce() -> Result<T>) -> Result<T> {
        let _shared = self.lock_artifacts(Hold::Shared)?;
        delete()
    }

    /// Removes the file at `path` if, under the exclusive lock and after a refresh, no event
    /// names it; fails with `AlreadyExists` if one does.
    fn remove_orphan(
        &self,
        folder: &Path,
        owner: &str,
        path: &str,
        listed: impl Fn() -> Result<bool>,
    ) -> Result<()> {
        let _exclusive = self.lock_artifacts(Hold::Exclusive)?;
        self.refresh()?;
        if listed()? {
            return Err(Error::AlreadyExists(format!(
                "artifact {path:?} of {owner} (artifacts are write-once)"
            )));
        }
        artifact::remove(folder, path, self.options().storage.as_ref())
    }

    fn lock_artifacts(&self, hold: Hold) -> Result<File> {
        let (file, lock_path) = self.open_lock_file(ARTIFACTS_LOCK)?;
        match hold {
            Hold::Shared => file.lock_shared(),
            Hold::Exclusive => file.lock(),
        }
        .map_err(|e| Error::io("lock", &lock_path, e))?;
        Ok(file)
    }
}

/// How the artifact lock is held.
#[derive(Clone, Copy)]
enum Hold {
    Shared,
    Exclusive,
}
