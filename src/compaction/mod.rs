//! Compaction: metric points of sealed log segments move into per-experiment Parquet files,
//! `experiments/<experiment-id>/<generation>.parquet` (columns step, timestamp, value; sorted by
//! run, key, step), indexed by series in a checksummed manifest (`manifest.rs`) that says which
//! rows belong to which (run, key).
//!
//! Stage one of the design in `docs/ARCHITECTURE.md`: the log is left in place. A compacted
//! segment is only skipped by readers of points (its writer's watermark in the manifest), so no
//! crash can lose or duplicate a point and no live reader can miss one. Deleting compacted
//! segments waits for reader leases (stage two).
//!
//! Crash safety: files are published atomically and listed by a manifest published after them;
//! a file no manifest lists is ignored and removed by the next compaction. One compactor runs at
//! a time, under an OS lock on `compaction.lock`.

#[cfg(feature = "parquet")]
mod background;
pub mod manifest;
#[cfg(feature = "parquet")]
mod reader;
#[cfg(feature = "parquet")]
mod writer;

#[cfg(feature = "parquet")]
pub(crate) use background::Background;
pub use manifest::{CompactedFile, Manifest, SeriesRows, WriterMark};
#[cfg(feature = "parquet")]
pub(crate) use reader::{MetadataCache, read_series};
#[cfg(feature = "parquet")]
pub use writer::CompactionReport;

/// The folder of compacted files inside a store.
pub const EXPERIMENTS_DIR: &str = "experiments";
/// An experiment with more files than this has them merged into one.
pub const FILES_PER_EXPERIMENT_MAX: usize = 4;
/// With more metadata chains than this, a compaction merges them into its own.
pub const METADATA_CHAINS_MAX: usize = 4;

/// A reader's view changed under it: a compaction published a newer manifest and deleted
/// segments the reader had chosen. Reads start over with the newer manifest.
pub(crate) fn stale(what: &str) -> crate::Error {
    crate::Error::io(
        "read the log after the manifest",
        what,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "compacted and deleted meanwhile",
        ),
    )
}

/// Whether `error` means "start over with the newest manifest".
pub(crate) fn is_stale(error: &crate::Error) -> bool {
    matches!(error, crate::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// Times a read starts over because compactions keep changing the store under it.
pub(crate) const READ_ATTEMPTS_MAX: usize = 8;

/// The segments not covered by `manifest`, per writer (metadata chains, which hold no points,
/// left out), after checking that each chain still starts where the manifest says: a chain
/// that starts later was compacted and cut by a newer manifest, and the read is stale.
pub(crate) fn uncompacted(
    root: &std::path::Path,
    manifest: &Manifest,
) -> crate::Result<Vec<(crate::ids::WriterId, Vec<crate::ids::SegmentSequence>)>> {
    let wal_dir = root.join(crate::tracking::WAL_DIR);
    let mut out = Vec::new();
    for (writer, files) in crate::wal::reader::list_writers(&wal_dir)? {
        if manifest.metadata.contains(&writer) {
            continue;
        }
        let start = manifest
            .writers
            .get(&writer)
            .and_then(|m| m.through)
            .map_or(0, |s| s.0 + 1);
        let from = files.segments.partition_point(|s| s.0 < start);
        let later = &files.segments[from..];
        match later.first() {
            None => continue,
            Some(first) if first.0 != start => {
                return Err(stale(&wal_dir.display().to_string()));
            }
            Some(_) => out.push((writer, later.to_vec())),
        }
    }
    Ok(out)
}

/// Fails as stale if a newer manifest than `manifest` was published: its compaction may have
/// deleted, before the caller listed the log, whole chains the caller's manifest does not cover.
pub(crate) fn check_still_newest(root: &std::path::Path, manifest: &Manifest) -> crate::Result<()> {
    if manifest::newest_generation(root)? != manifest.generation {
        return Err(stale(&root.display().to_string()));
    }
    Ok(())
}
