//! Publishing an artifact: stream the content to a temporary file while hashing it, fsync it,
//! link it to its final path (failing if that path exists), fsync the folder.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::io::{Storage, TemporaryName, create_dirs, publish_named};

/// What was stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    pub size_bytes: u64,
    pub sha256: [u8; 32],
}

/// Stores the content of `source` as `path` (already validated) in the artifact folder `folder`
/// (`run_dir` or `model_dir`) of `owner` (`"run <id>"`, as errors name it). `before_link` runs
/// once the content is written and synced, just before the file appears at its path; what it
/// returns (a lock guard) is handed back for the caller to hold while it records the file.
pub(crate) fn store<L>(
    folder: &Path,
    owner: &str,
    path: &str,
    source: &mut dyn Read,
    storage: &dyn Storage,
    before_link: impl FnOnce() -> Result<L>,
) -> Result<(Stored, L)> {
    let final_path = super::file_in(folder, path)?;
    let Some(dir) = final_path.parent() else {
        return Err(Error::InvalidInput(format!(
            "artifact path {path:?} has no folder"
        )));
    };
    // A user's name may be as long as the file system allows, so the temporary name must not
    // be longer.
    create_dirs(dir, storage)
        .and_then(|()| {
            // No replacing: a file at its final path always matches the one event that
            // recorded it.
            publish_named(
                &final_path,
                TemporaryName::Short,
                storage,
                |temporary, file| copy(source, temporary, file),
                before_link,
            )
        })
        .map_err(|error| match error {
            Error::AlreadyExists(_) => {
                Error::AlreadyExists(format!("artifact {path:?} of {owner}"))
            }
            other => path_error(other, path, owner),
        })
}

/// The errors the artifact's own path causes (a folder on it is a file, a file on it is a
/// folder, a name too long) are the caller's, said with the artifact's relative path only.
fn path_error(error: Error, path: &str, owner: &str) -> Error {
    let Error::Io { source, .. } = &error else {
        return error;
    };
    let reason = match source.raw_os_error() {
        Some(libc::ENOTDIR) => "a folder on its way is a file",
        Some(libc::EISDIR) => "it is a folder",
        Some(libc::ENAMETOOLONG) => "a name on its way is too long for the file system",
        _ => return error,
    };
    Error::InvalidInput(format!("artifact path {path:?} of {owner}: {reason}"))
}

/// Removes the file of artifact `path` in artifact folder `folder`, once the log recorded its
/// deletion. A file already gone is fine (a concurrent delete, or a crash after an earlier
/// removal).
pub(crate) fn remove(folder: &Path, path: &str, storage: &dyn Storage) -> Result<()> {
    let file_path = super::file_in(folder, path)?;
    match storage.remove(&file_path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("remove artifact", &file_path, error)),
    }
    match file_path.parent() {
        Some(dir) => storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync artifact folder", dir, e)),
        None => Ok(()),
    }
}

/// Copies `source` into `file`, hashing as it goes.
fn copy(source: &mut dyn Read, path: &Path, file: &mut File) -> Result<Stored> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size_bytes = 0u64;
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Error::io("read artifact source", path, error)),
        };
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .map_err(|e| Error::io("write artifact", path, e))?;
        size_bytes += read as u64;
    }
    Ok(Stored {
        size_bytes,
        sha256: hasher.finalize().into(),
    })
}
