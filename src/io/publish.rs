//! Publishing a file atomically: write it under a temporary name in its own folder, fsync it,
//! give it its final name, fsync the folder (ALICE, OSDI 2014). A reader never sees a
//! half-written file at the final path, and a crash leaves at most a `.<name>.tmp-<hex>` file.

use std::fs::File;
use std::path::Path;

use super::Storage;
use crate::error::{Error, Result};

/// Whether publishing may replace a file already at the final path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Rename over it.
    Replace,
    /// Fail with `Error::AlreadyExists` instead (a hard link, which never replaces).
    NoReplace,
}

/// Writes `path` through a temporary file that `write` fills, then publishes it.
pub(crate) fn publish<T>(
    path: &Path,
    mode: Publish,
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
        let named = match mode {
            Publish::Replace => storage.rename(&temporary, path),
            Publish::NoReplace => storage.link(&temporary, path),
        };
        named.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(path.display().to_string()),
            _ => Error::io("publish", path, e),
        })?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
        Ok(value)
    })();
    // After a link the temporary name is a second name of the published file; after a failure
    // it is debris. After a rename it no longer exists.
    if mode == Publish::NoReplace || result.is_err() {
        let _ = storage.remove(&temporary);
    }
    result
}
