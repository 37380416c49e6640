//! Publishing a file atomically: write it under a temporary name in its own folder, fsync it,
//! link it to its final name (never replacing a file there), fsync the folder (ALICE, OSDI 2014). A reader never sees a
//! half-written file at the final path, and a crash leaves at most a `.<name>.tmp-<hex>` file
//! (or the caller's own temporary name, [`TemporaryName::Short`]). A temporary is locked
//! (`flock`, exclusive) by its writer from its creation until its link, so sweeps of killed
//! writers' temporaries can tell a live one (`tracking/artifacts.rs`).

use std::fs::File;
use std::path::Path;

use super::Storage;
use crate::error::{Error, Result};

/// Writes `path` through a temporary file that `write` fills, then publishes it with a hard link,
/// which never replaces: if `path` exists, this fails with `Error::AlreadyExists` and the file
/// already there stays as it was.
pub(crate) fn publish<T>(
    path: &Path,
    storage: &dyn Storage,
    write: impl FnOnce(&Path, &mut File) -> Result<T>,
) -> Result<T> {
    publish_named(path, TemporaryName::Derived, storage, write, || Ok(())).map(|(value, ())| value)
}

/// How the temporary file of [`publish_named`] is named.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TemporaryName {
    /// `.<name>.tmp-<16 hex digits>`: says which file it was for, which the compaction's
    /// sweeps rely on, but is 22 bytes longer than the name, so a name near the file system's
    /// limit cannot be published.
    Derived,
    /// `.tmp-<16 hex digits>`: fits whenever the folder exists, for names chosen by users.
    Short,
}

/// [`publish`] with the temporary file named as `temporary_name` says, calling `before_link`
/// once the temporary file is written and fsynced, just before the link, and returning what it
/// returns (a lock guard, say, that the caller holds until it has recorded the file).
pub(crate) fn publish_named<T, L>(
    path: &Path,
    temporary_name: TemporaryName,
    storage: &dyn Storage,
    write: impl FnOnce(&Path, &mut File) -> Result<T>,
    before_link: impl FnOnce() -> Result<L>,
) -> Result<(T, L)> {
    let Some(dir) = path.parent() else {
        return Err(Error::InvalidInput(format!(
            "{} has no folder",
            path.display()
        )));
    };
    let random = crate::util::random_u64();
    let temporary = match temporary_name {
        TemporaryName::Derived => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            dir.join(format!(".{name}.tmp-{random:016x}"))
        }
        TemporaryName::Short => dir.join(format!(".tmp-{random:016x}")),
    };
    let result = (|| {
        let mut file =
            File::create_new(&temporary).map_err(|e| Error::io("create", &temporary, e))?;
        // Held until the file is linked (the handle is dropped after the link): a sweep of
        // killed writers' temporaries that cannot take it leaves the file alone. Best effort:
        // a file system without `flock` leaves the sweep only the temporary's age to go by.
        let _ = file.try_lock();
        let value = write(&temporary, &mut file)?;
        storage
            .sync_file(&temporary, &file)
            .map_err(|e| Error::io("fsync", &temporary, e))?;
        let held = before_link()?;
        storage.link(&temporary, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(path.display().to_string()),
            _ => Error::io("publish", path, e),
        })?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
        drop(file);
        Ok((value, held))
    })();
    // After the link the temporary name is a second name of the published file; after a
    // failure it is debris. Either way it goes.
    let _ = storage.remove(&temporary);
    result
}

/// Creates `dir` and its missing parents, fsyncing the folder that gained each new entry, so
/// new folders survive a power loss along with the files in them. Without the parent's fsync a
/// folder's entry is not durable (ALICE, OSDI 2014): a crash could take a whole log with it.
///
/// A `dir` that already exists still has its parent fsynced: it may be left from an earlier
/// call whose fsync failed, and a file published into it would then be lost with it (found by
/// the simulation, seed 2126: a compaction retried after a failed fsync of `experiments/`
/// published a file that a power loss then took with its folder).
pub(crate) fn create_dirs(dir: &Path, storage: &dyn Storage) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        if parent != Path::new(".") && !parent.is_dir() {
            create_dirs(parent, storage)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            // Another thread or process made it meanwhile; its parent is fsynced below too.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(Error::io("create folder", dir, error)),
        }
    }
    storage
        .sync_dir(parent)
        .map_err(|e| Error::io("fsync", parent, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::create_dirs;
    use crate::io::{CrashMode, CrashStorage, FaultStorage, Operation};

    #[test]
    fn a_folder_whose_fsync_failed_is_made_durable_by_the_next_call() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let faults = Arc::new(FaultStorage::new());
        let crash = CrashStorage::new(&root, faults.clone()).unwrap();
        let dir = root.join("experiments").join("7");
        // The fsync of `experiments/` after creating `7` fails: `7` exists, not durably.
        faults.fail_once(Operation::SyncDir, 1, libc::EIO);
        assert!(create_dirs(&dir, &crash).is_err());
        assert!(dir.is_dir());
        create_dirs(&dir, &crash).unwrap();
        let image = base.path().join("after");
        crash.crash_now(&image, CrashMode::Synced).unwrap();
        assert!(image.join("experiments").join("7").is_dir());
    }
}
