//! Publishing and deleting artifact files under `artifacts.lock`, so that a file a crash left at
//! an artifact's path with no event naming it (an orphan) is taken away by the next store of
//! that path instead of blocking it for good.
//!
//! Invariants:
//! - Every publish holds the lock shared from just before its file appears at its final path
//!   (the link) until its event is appended; every deletion from before its first event until
//!   its last file is removed. The content is written before the lock is taken, so an upload's
//!   length never holds it. Shared holders never wait for each other.
//! - An orphan is removed only under the lock held exclusively, after a refresh of the catalog
//!   taken under it. No shared holder is then between its file and its event, so a file that
//!   no event names after that refresh has no event coming: a crash took its writer between
//!   the two steps (or a power loss took its event). A file some event names is never removed.
//! - Only a regular file whose every path component is in its folder under exactly the bytes
//!   asked for is an orphan: on a file system that folds case or normalizes names, `Model.pkl`
//!   may open `model.pkl`, which an event names. A folder or a symbolic link at the path is left
//!   alone and the store fails as it would have.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::artifact::{self, Stored};
use crate::error::{Error, Result};
use crate::layout::ARTIFACTS_LOCK;
use crate::tracking::store::Store;

impl Store {
    /// Stores `source` as artifact `path` in artifact folder `folder`, removing an orphan at
    /// that path first if there is one, and runs `record` (which appends its event) with the
    /// artifact lock held shared from just before the link. `listed` says, from the catalog,
    /// whether an event names the path; `owner` names the run or model in errors.
    pub(crate) fn publish_artifact<T>(
        &self,
        folder: &Path,
        owner: &str,
        path: &str,
        source: &mut dyn Read,
        listed: impl Fn() -> Result<bool>,
        record: impl FnOnce(Stored) -> Result<T>,
    ) -> Result<T> {
        let file_path = folder.join(path);
        let is_file = std::fs::symlink_metadata(&file_path).is_ok_and(|found| found.is_file());
        if is_file {
            self.remove_orphan(folder, owner, path, listed)?;
        }
        let storage = self.options().storage.as_ref();
        let (stored, _shared) = artifact::store(folder, owner, path, source, storage, || {
            self.lock_artifacts(Hold::Shared)
        })?;
        record(stored)
    }

    /// Runs `delete` (which records artifact deletions, then removes their files) under the
    /// artifact lock held shared, so no orphan check sees a file between the two.
    pub(crate) fn delete_artifact_files<T>(&self, delete: impl FnOnce() -> Result<T>) -> Result<T> {
        let _shared = self.lock_artifacts(Hold::Shared)?;
        delete()
    }

    /// Removes the file at `path` if, under the exclusive lock and after a refresh, no event
    /// names it; fails with `AlreadyExists` if one does, or if the file found is not named by
    /// exactly these bytes.
    fn remove_orphan(
        &self,
        folder: &Path,
        owner: &str,
        path: &str,
        listed: impl Fn() -> Result<bool>,
    ) -> Result<()> {
        let taken = || {
            Error::AlreadyExists(format!(
                "artifact {path:?} of {owner} (artifacts are write-once)"
            ))
        };
        let _exclusive = self.lock_artifacts(Hold::Exclusive)?;
        self.refresh()?;
        if listed()? || !named_exactly(folder, path)? {
            return Err(taken());
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

/// Whether every component of `path` is an entry of its folder under `folder` with exactly its
/// bytes, as a file system that folds case or normalizes names would not promise by opening it.
fn named_exactly(folder: &Path, path: &str) -> Result<bool> {
    let mut dir = folder.to_path_buf();
    for component in path.split('/') {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        let mut found = false;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            if entry.file_name() == OsStr::new(component) {
                found = true;
                break;
            }
        }
        if !found {
            return Ok(false);
        }
        dir.push(component);
    }
    Ok(true)
}

/// How the artifact lock is held.
#[derive(Clone, Copy)]
enum Hold {
    Shared,
    Exclusive,
}
