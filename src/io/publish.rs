//! Publishing a file atomically: write it under a temporary name in its own folder, fsync it,
//! link it to its final name (never replacing a file there), fsync the folder (ALICE, OSDI 2014). A reader never sees a
//! half-written file at the final path, and a crash leaves at most a `.<name>.tmp-<hex>` file.

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
    let Some(dir) = path.parent() else {
        return Err(Error::InvalidInput(format!(
            "{} has no folder",
            path.display()
        )));
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let random = crate::wal::writer::random_u64();
    let temporary = dir.join(format!(".{name}.tmp-{random:016x}"));
    let result = (|| {
        let mut file =
            File::create_new(&temporary).map_err(|e| Error::io("create", &temporary, e))?;
        let value = write(&temporary, &mut file)?;
        storage
            .sync_file(&temporary, &file)
            .map_err(|e| Error::io("fsync", &temporary, e))?;
        drop(file);
        storage.link(&temporary, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(path.display().to_string()),
            _ => Error::io("publish", path, e),
        })?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
        Ok(value)
    })();
    // After the link the temporary name is a second name of the published file; after a
    // failure it is debris. Either way it goes.
    let _ = storage.remove(&temporary);
    result
}

/// Creates `dir` and its missing parents, fsyncing the folder that gained each new entry, so
/// new folders survive a power loss along with the files in them. Without the parent's fsync a
/// folder's entry is not durable (ALICE, OSDI 2014): a crash could take a whole log with it.
pub(crate) fn create_dirs(dir: &Path, storage: &dyn Storage) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dirs(parent, storage)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(Error::io("create folder", dir, error)),
    }
    let parent = parent.unwrap_or(Path::new("."));
    storage
        .sync_dir(parent)
        .map_err(|e| Error::io("fsync", parent, e))
}
