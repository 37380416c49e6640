//! What a store's files cost on disk, by kind: the sizes `runlog stats` reports.
//!
//! Invariants:
//! - Every file under the store's root is counted exactly once, in one [`FileKind`]; a file
//!   runlog does not recognise (a lock file, a user's file, a leftover) is `Other`. So the kinds
//!   add up to the whole store, and a bytes-per-point figure from the total is honest.
//! - Sizes are read from the files on disk, never from a manifest, so the figures hold whatever
//!   a manifest lists and however manifests are laid out.
//! - Symbolic links are counted as links, never followed: the store's size is its own.

use std::path::Path;

use crate::error::{Error, Result};
use crate::layout::WAL_DIR;
use crate::layout::{
    ARTIFACTS_DIR, COMPACTED_EXTENSION, EXPERIMENTS_DIR, MANIFEST_DIR, MANIFEST_EXTENSION,
};
use crate::wal::segment::{WalFile, parse_file_name};
use crate::wal::writer::is_metadata_chain;

/// What a file of the store is, judged by where it lies and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A segment of an ordinary writer's log (`wal/`).
    Segment,
    /// A segment of a metadata chain (`wal/`, a chain's id). Chains written before chain ids
    /// were set apart have ordinary ids and count as `Segment`.
    MetadataChain,
    /// A compaction manifest (`manifest/*.manifest`).
    Manifest,
    /// A compacted Parquet file (`experiments/**.parquet`).
    Parquet,
    /// An artifact (`artifacts/`).
    Artifact,
    /// Anything else: lock files, files runlog did not write.
    Other,
}

/// A count of files and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileBytes {
    /// Files.
    pub files: u64,
    /// Their total length in bytes.
    pub bytes: u64,
}

impl FileBytes {
    fn add(&mut self, other: FileBytes) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// The files of a store, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Ordinary writers' segments.
    pub segments: FileBytes,
    /// Metadata chains' segments.
    pub metadata_chains: FileBytes,
    /// Compaction manifests (every generation on disk).
    pub manifests: FileBytes,
    /// Compacted Parquet files.
    pub parquet: FileBytes,
    /// Artifacts.
    pub artifacts: FileBytes,
    /// Everything else.
    pub other: FileBytes,
}

impl DiskUsage {
    /// Every file of the store.
    pub fn total(&self) -> FileBytes {
        let mut total = FileBytes::default();
        for kind in [
            self.segments,
            self.metadata_chains,
            self.manifests,
            self.parquet,
            self.artifacts,
            self.other,
        ] {
            total.add(kind);
        }
        total
    }

    /// The count of one kind.
    pub fn of(&mut self, kind: FileKind) -> &mut FileBytes {
        match kind {
            FileKind::Segment => &mut self.segments,
            FileKind::MetadataChain => &mut self.metadata_chains,
            FileKind::Manifest => &mut self.manifests,
            FileKind::Parquet => &mut self.parquet,
            FileKind::Artifact => &mut self.artifacts,
            FileKind::Other => &mut self.other,
        }
    }
}

/// Every file under `root`, a store's directory, counted by kind (all zero if `root` does not
/// exist).
pub fn disk_usage(root: &Path) -> Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    add_dir(root, None, &mut usage)?;
    Ok(usage)
}

/// Adds the files under `dir`; `area` is the top-level folder of the store it lies in (`None`
/// for the root itself).
fn add_dir(dir: &Path, area: Option<&str>, usage: &mut DiskUsage) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("list", dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("list", dir, error))?;
        let path = entry.path();
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|error| Error::io("stat", &path, error))?;
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if metadata.is_dir() {
            add_dir(&path, Some(area.unwrap_or(name)), usage)?;
        } else {
            let kind = if metadata.is_file() {
                kind_of(area, name)
            } else {
                FileKind::Other
            };
            usage.of(kind).add(FileBytes {
                files: 1,
                bytes: metadata.len(),
            });
        }
    }
    Ok(())
}

/// The kind of a regular file named `name` in the store's top-level folder `area`.
fn kind_of(area: Option<&str>, name: &str) -> FileKind {
    match area {
        Some(WAL_DIR) => match parse_file_name(name) {
            Some(WalFile::Segment(writer, _)) if is_metadata_chain(writer) => {
                FileKind::MetadataChain
            }
            Some(WalFile::Segment(..)) => FileKind::Segment,
            _ => FileKind::Other,
        },
        Some(MANIFEST_DIR) if name.ends_with(&format!(".{MANIFEST_EXTENSION}")) => {
            FileKind::Manifest
        }
        Some(EXPERIMENTS_DIR) if name.ends_with(&format!(".{COMPACTED_EXTENSION}")) => {
            FileKind::Parquet
        }
        Some(ARTIFACTS_DIR) => FileKind::Artifact,
        _ => FileKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_classified_by_place_and_name() {
        let segment = "4000000000000001-0000000000.wal";
        let chain = "2000000000000001-0000000000.wal";
        assert_eq!(kind_of(Some(WAL_DIR), segment), FileKind::Segment);
        assert_eq!(kind_of(Some(WAL_DIR), chain), FileKind::MetadataChain);
        assert_eq!(
            kind_of(Some(WAL_DIR), "4000000000000001.lock"),
            FileKind::Other
        );
        assert_eq!(
            kind_of(Some(MANIFEST_DIR), "0000000001.manifest"),
            FileKind::Manifest
        );
        assert_eq!(
            kind_of(Some(EXPERIMENTS_DIR), "1.parquet"),
            FileKind::Parquet
        );
        assert_eq!(kind_of(Some(EXPERIMENTS_DIR), "notes.txt"), FileKind::Other);
        assert_eq!(
            kind_of(Some(ARTIFACTS_DIR), "model.bin"),
            FileKind::Artifact
        );
        assert_eq!(kind_of(None, segment), FileKind::Other);
    }

    #[test]
    fn every_byte_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(WAL_DIR)).unwrap();
        std::fs::create_dir_all(root.join(MANIFEST_DIR)).unwrap();
        std::fs::create_dir_all(root.join(EXPERIMENTS_DIR).join("7")).unwrap();
        std::fs::write(
            root.join(WAL_DIR).join("4000000000000001-0000000000.wal"),
            [0; 10],
        )
        .unwrap();
        std::fs::write(root.join(MANIFEST_DIR).join("0000000001.manifest"), [0; 20]).unwrap();
        std::fs::write(
            root.join(EXPERIMENTS_DIR).join("7").join("a.parquet"),
            [0; 40],
        )
        .unwrap();
        std::fs::write(root.join("catalog.lock"), [0; 1]).unwrap();
        let usage = disk_usage(root).unwrap();
        assert_eq!(
            usage.segments,
            FileBytes {
                files: 1,
                bytes: 10
            }
        );
        assert_eq!(
            usage.manifests,
            FileBytes {
                files: 1,
                bytes: 20
            }
        );
        assert_eq!(
            usage.parquet,
            FileBytes {
                files: 1,
                bytes: 40
            }
        );
        assert_eq!(usage.other, FileBytes { files: 1, bytes: 1 });
        assert_eq!(
            usage.total(),
            FileBytes {
                files: 4,
                bytes: 71
            }
        );
        assert_eq!(
            disk_usage(&root.join("absent")).unwrap(),
            DiskUsage::default()
        );
    }
}
