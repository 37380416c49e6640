//! Publishing an artifact: stream the content to a temporary file while hashing it, fsync it,
//! link it to its final path (failing if that path exists), fsync the folder.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::RunId;
use crate::io::Storage;

/// What was stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    pub size_bytes: u64,
    pub sha256: [u8; 32],
}

/// Stores the content of `source` as `path` (already validated) of `run`.
pub(crate) fn store(
    root: &Path,
    run: RunId,
    path: &str,
    source: &mut dyn Read,
    storage: &dyn Storage,
) -> Result<Stored> {
    let final_path = super::run_dir(root, run).join(path);
    let Some(dir) = final_path.parent() else {
        return Err(Error::InvalidInput(format!(
            "artifact path {path:?} has no folder"
        )));
    };
    create_dirs(root, dir, storage)?;
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(
        ".{name}.tmp-{:016x}",
        crate::wal::writer::random_u64()
    ));
    let result = write_temporary(&temporary, source, storage).and_then(|stored| {
        // A link, not a rename: publishing never replaces an artifact, so a file at its final
        // path always matches the one event that recorded it.
        storage
            .link(&temporary, &final_path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    Error::AlreadyExists(format!("artifact {path:?} of run {run}"))
                }
                _ => Error::io("publish artifact", &final_path, e),
            })?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync", dir, e))?;
        Ok(stored)
    });
    // The temporary name is removed either way; after a successful link it is only a second
    // name of the published file.
    let _ = storage.remove(&temporary);
    result
}

fn write_temporary(
    temporary: &Path,
    source: &mut dyn Read,
    storage: &dyn Storage,
) -> Result<Stored> {
    let mut file =
        File::create_new(temporary).map_err(|e| Error::io("create artifact", temporary, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size_bytes = 0u64;
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Error::io("read artifact source", temporary, error)),
        };
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .map_err(|e| Error::io("write artifact", temporary, e))?;
        size_bytes += read as u64;
    }
    storage
        .sync_file(temporary, &file)
        .map_err(|e| Error::io("fsync artifact", temporary, e))?;
    Ok(Stored {
        size_bytes,
        sha256: hasher.finalize().into(),
    })
}

/// Creates `dir` and its missing parents below `root`, fsyncing each parent that gained an
/// entry so the new folders survive a power loss.
fn create_dirs(root: &Path, dir: &Path, storage: &dyn Storage) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && parent != root
    {
        create_dirs(root, parent, storage)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(Error::io("create artifact folder", dir, error)),
    }
    let parent = dir.parent().unwrap_or(root);
    storage
        .sync_dir(parent)
        .map_err(|e| Error::io("fsync", parent, e))
}
