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
//! - A publish temporary (`.tmp-<16 hex digits>`, or `.<name>.tmp-<16 hex digits>` from older
//!   versions) that a killed process left is removed by the sweep of compaction
//!   ([`Store::remove_stale_artifact_temporaries`]) only if its writer is gone and no event
//!   names it: `io::publish` holds an exclusive `flock` on a temporary from its creation until
//!   it is linked, so a sweep that takes that lock knows no live writer owns the file; files
//!   modified in the last `TEMPORARY_AGE_MIN` are left alone whatever their lock says (the
//!   instant between creation and lock, a writer of a version that did not lock); and, as for
//!   orphans, the check that no event names the path is made under the artifact lock held
//!   exclusively after a refresh, since a user may name an artifact `.tmp-0123456789abcdef`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::artifact::{self, Stored};
use crate::error::{Error, Result};
use crate::ids::{ModelId, RunId};
use crate::layout::{ARTIFACTS_DIR, ARTIFACTS_LOCK};
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
        let file_path = artifact::file_in(folder, path)?;
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

    /// Removes the publish temporaries that killed processes left in the artifact folders:
    /// those no live writer holds, unmodified for `TEMPORARY_AGE_MIN`, and named by no event.
    /// Returns how many it removed. The folders are walked without a lock; the artifact lock
    /// is taken (exclusively, briefly) only when the walk found candidates. An entry that
    /// vanishes or may not be read is passed over; a temporary that cannot be removed does
    /// not stop the others, and the first such failure is returned after the rest are done.
    pub fn remove_stale_artifact_temporaries(&self) -> Result<usize> {
        if self.options().read_only {
            return Ok(0);
        }
        let artifacts = self.root().join(ARTIFACTS_DIR);
        let candidates = stale_temporaries(&artifacts, SystemTime::now())?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let _exclusive = self.lock_artifacts(Hold::Exclusive)?;
        self.refresh()?;
        let mut removed = 0;
        let mut first_failure = None;
        for candidate in candidates {
            if self.names_artifact(&artifacts, &candidate)? {
                continue;
            }
            // Opened to write: where `flock` is emulated by POSIX locks (NFS), an exclusive
            // lock needs a file open for writing.
            let Ok(file) = std::fs::OpenOptions::new().write(true).open(&candidate) else {
                continue;
            };
            // Held until the name is gone, so no writer can take the file up meanwhile.
            if file.try_lock().is_err() {
                continue;
            }
            // Old still, now that the lock is held: a writer that does not lock (another host
            // where locks do not reach) may have written to it while the sweep waited.
            let still_old = file
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| is_stale(modified, SystemTime::now()));
            if !still_old {
                continue;
            }
            match std::fs::remove_file(&candidate) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    first_failure.get_or_insert(Error::io("remove", &candidate, error));
                }
            }
        }
        first_failure.map_or(Ok(removed), Err)
    }

    /// Whether an event names the artifact at `file` (a path under `artifacts`): a run's
    /// (`<run>/<path>`) or a logged model's (`models/<model>/<path>`). A path under a run or
    /// model this handle does not know, or under no run or model at all, counts as named: the
    /// sweep leaves alone what it cannot account for (another store's folder, a run this
    /// handle has not seen yet).
    fn names_artifact(&self, artifacts: &Path, file: &Path) -> Result<bool> {
        let Some(relative) = file
            .strip_prefix(artifacts)
            .ok()
            .and_then(|r| r.to_str())
            .map(|r| r.split('/').collect::<Vec<_>>())
        else {
            // Not valid UTF-8: no artifact path is (`validation::artifact_path`), so no
            // writer of this store made it; left alone.
            return Ok(true);
        };
        let found = match relative.as_slice() {
            ["models", model, path @ ..] => match model.parse::<ModelId>() {
                Ok(model) => self
                    .logged_model(model)
                    .map(|m| m.artifacts.contains_key(&path.join("/"))),
                Err(_) => return Ok(true),
            },
            [run, path @ ..] => match run.parse::<RunId>() {
                Ok(run) => self
                    .run(run)
                    .map(|r| r.artifacts.contains_key(&path.join("/"))),
                Err(_) => return Ok(true),
            },
            [] => return Ok(true),
        };
        match found {
            Ok(found) => Ok(found),
            Err(Error::NotFound(_)) => Ok(true),
            Err(error) => Err(error),
        }
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

/// How long a publish temporary stays untouched before a sweep may take it for a killed
/// writer's: far longer than the instant between its creation and its writer's lock, and than
/// any pause of a writer that does not lock it.
const TEMPORARY_AGE_MIN: Duration = Duration::from_secs(3600);

/// Whether `name` is a temporary name `io::publish` gives: `.tmp-<16 hex digits>` (artifacts)
/// or `.<name>.tmp-<16 hex digits>`.
fn is_temporary_name(name: &str) -> bool {
    let random = match name.strip_prefix(".tmp-") {
        Some(random) => random,
        None => match name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) {
            Some((target, random)) if !target.is_empty() => random,
            _ => return false,
        },
    };
    random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The regular files under `dir` with temporary names, unmodified since `now` less
/// `TEMPORARY_AGE_MIN`. Symbolic links are neither followed nor listed.
fn stale_temporaries(dir: &Path, now: SystemTime) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // Gone meanwhile (a deleted run's folder), never made, or not this process's to
            // read: nothing of it can be swept.
            Err(error) if passed_over(&error) => continue,
            Err(error) => return Err(Error::io("list", &folder, error)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) if passed_over(&error) => continue,
                Err(error) => return Err(Error::io("list", &folder, error)),
            };
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(error) if passed_over(&error) => continue,
                Err(error) => return Err(Error::io("stat", entry.path(), error)),
            };
            if kind.is_dir() {
                folders.push(entry.path());
                continue;
            }
            let named = entry.file_name().to_str().is_some_and(is_temporary_name);
            if !kind.is_file() || !named {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified());
            if modified.is_ok_and(|m| is_stale(m, now)) {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// Whether a temporary last modified at `modified` is old enough, at `now`, to be a killed
/// writer's.
fn is_stale(modified: SystemTime, now: SystemTime) -> bool {
    now.duration_since(modified)
        .is_ok_and(|age| age >= TEMPORARY_AGE_MIN)
}

/// Whether a sweep passes over an entry it failed to look at rather than fail: one gone
/// meanwhile, or one this process may not read.
fn passed_over(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// How the artifact lock is held.
#[derive(Clone, Copy)]
enum Hold {
    Shared,
    Exclusive,
}
