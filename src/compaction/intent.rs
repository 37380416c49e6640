//! The compaction intent, `manifest/<generation:010>.compacting`: published (synced) by a
//! compaction before it creates any file of that generation, and removed once that
//! generation's manifest is in force. It is the proof that a file of a generation newer than
//! every manifest is a crashed compaction's own leftover (`survey.rs`); without it such a file
//! may be all that is left of a lost manifest's data, and nothing may delete it.
//!
//! ```text
//! magic       8  "RUNLOGCI"
//! version     2  u16 LE, 1
//! generation  8  u64 LE, as in the file name
//! crc         4  CRC-32 (IEEE) of the 18 bytes before it
//! ```
//!
//! Invariant: an intent of generation `g` exists from before the first file of `g` is created
//! until after the manifest of `g` is published, so a file of `g` seen while the newest
//! manifest is `g - 1` always has its intent beside it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{Storage, create_dirs, publish};
use crate::layout::MANIFEST_DIR;

const MAGIC: [u8; 8] = *b"RUNLOGCI";
const VERSION: u16 = 1;
use crate::layout::INTENT_EXTENSION as EXTENSION;
const MAGIC_BYTES: usize = 8;
const VERSION_END: usize = MAGIC_BYTES + 2;
const GENERATION_END: usize = VERSION_END + 8;
/// The size of an intent file.
pub const INTENT_BYTES: usize = GENERATION_END + 4;

/// `manifest/<generation:010>.compacting`.
pub fn path(root: &Path, generation: u64) -> PathBuf {
    root.join(MANIFEST_DIR)
        .join(format!("{generation:010}.{EXTENSION}"))
}

fn encode(generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(INTENT_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Whether the intent of `generation` exists and holds exactly what a compaction writes for
/// it: a damaged intent proves nothing.
pub fn is_valid(root: &Path, generation: u64) -> bool {
    std::fs::read(path(root, generation)).is_ok_and(|bytes| bytes == encode(generation))
}

/// Publishes the intent of `generation`, unless a valid one is already there (left by a
/// compaction of the same generation that crashed).
pub fn write(root: &Path, generation: u64, storage: &dyn Storage) -> Result<()> {
    if is_valid(root, generation) {
        return Ok(());
    }
    let file = path(root, generation);
    match storage.remove(&file) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("remove", &file, error)),
    }
    create_dirs(&root.join(MANIFEST_DIR), storage)?;
    let bytes = encode(generation);
    publish(&file, storage, |temporary, out| {
        use std::io::Write;
        out.write_all(&bytes)
            .map_err(|e| Error::io("write compaction intent", temporary, e))
    })
}

/// Removes the intents of every generation up to `generation`, whose manifests are published.
/// Best effort: a stale intent proves nothing, since its generation is not newer than the
/// newest manifest.
pub fn remove_through(root: &Path, generation: u64, storage: &dyn Storage) {
    let Ok(entries) = std::fs::read_dir(root.join(MANIFEST_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_suffix(&format!(".{EXTENSION}")))
        else {
            continue;
        };
        if super::manifest::parse_generation(stem).is_some_and(|g| g <= generation) {
            let _ = storage.remove(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_is_valid_only_for_its_own_generation_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::io::OsStorage;
        assert!(!is_valid(dir.path(), 3));
        write(dir.path(), 3, &storage).unwrap();
        assert!(is_valid(dir.path(), 3));
        assert_eq!(
            std::fs::metadata(path(dir.path(), 3)).map(|m| m.len()).ok(),
            Some(INTENT_BYTES as u64)
        );
        std::fs::copy(path(dir.path(), 3), path(dir.path(), 4)).unwrap();
        assert!(!is_valid(dir.path(), 4), "a copy under another generation");
        remove_through(dir.path(), 3, &storage);
        assert!(!is_valid(dir.path(), 3));
        assert!(path(dir.path(), 4).exists());
    }
}
