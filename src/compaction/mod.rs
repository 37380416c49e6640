//! Compaction: metric points of sealed log segments move into per-experiment Parquet files,
//! `experiments/<experiment-id>/<generation>.parquet` (columns step, timestamp, value; sorted by
//! run, key, step), indexed by series in a checksummed manifest (`manifest.rs`) that says which
//! rows belong to which (run, key). The segments' other events are copied into a metadata chain
//! the manifest lists, and per writer the manifest keeps a watermark (its last compacted
//! segment), the key names of its compacted segments and the summaries of its compacted
//! points. Then the compacted segments are deleted from the log. `Store::compact` runs one
//! compaction; `StoreOptions::compaction_interval` runs them in a background thread
//! (`background.rs`). The steps and crash cases are in `docs/DURABILITY.md`, section 10.
//!
//! Invariants:
//! - Every point of a segment at or below its writer's watermark is in exactly one file the
//!   manifest in force lists, and no point of a later segment is in any.
//! - Files and manifests are published atomically and never changed; a manifest is published
//!   after every file and metadata chain it lists is durable, and segments are deleted only
//!   after it is. Nothing in `experiments/` is removed unless the survey (`survey.rs`) proves
//!   it a compaction's own leftover, by the intent (`intent.rs`) a compaction publishes
//!   before its first file or by the previous manifest; a compacted file nothing accounts for
//!   is missing history, which open, compaction and `verify` report.
//! - A reader of points uses one manifest: its files, then each writer's segments after the
//!   watermark. A read that a compaction overtook (a file or segment gone, a chain that starts
//!   past its watermark, a newer manifest) is stale and starts over (`uncompacted`,
//!   `check_still_newest`). A handle whose catalog had not read deleted segments rebuilds
//!   from the newest manifest (`tracking/follow.rs`).
//! - A writer is marked finished once its chain is compacted to its end and it can append no
//!   more: its final segment is compacted, or its last segment is and it has no lock file, or
//!   it has no file left in `wal/` at all. Otherwise tails would wait for a next segment.
//! - One compactor runs at a time, under an OS lock on `compaction.lock`.

#[cfg(feature = "parquet")]
mod background;
// Without parquet there is no compactor to write intents; surveys still read them.
#[cfg_attr(not(feature = "parquet"), allow(dead_code))]
mod intent;
pub mod manifest;
#[cfg(feature = "parquet")]
mod reader;
mod stats;
pub(crate) mod survey;
#[cfg(feature = "parquet")]
mod writer;

#[cfg(feature = "parquet")]
pub(crate) use background::Background;
pub use manifest::{CompactedFile, FileChecksum, Manifest, SeriesRows, WriterMark};
#[cfg(feature = "parquet")]
pub(crate) use reader::{Keep, MetadataCache, read_series};
pub use stats::ManifestStats;
#[cfg(feature = "parquet")]
pub use writer::CompactionReport;

pub use crate::layout::EXPERIMENTS_DIR;
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
    let wal_dir = root.join(crate::layout::WAL_DIR);
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

/// Calls `visit(writer, event)` for every event of the log that `manifest` does not cover: each
/// writer's chain after its watermark (`uncompacted`), preceded by a `MetricKeyDefined` for each
/// key id its compacted segments interned, so callers resolve key ids as if they had read the
/// whole chain.
pub(crate) fn read_uncompacted(
    root: &std::path::Path,
    manifest: &Manifest,
    visit: &mut dyn FnMut(crate::ids::WriterId, crate::wal::Event),
) -> crate::Result<()> {
    let wal_dir = root.join(crate::layout::WAL_DIR);
    for (writer, segments) in uncompacted(root, manifest)? {
        for ((run, key_id), key) in manifest
            .writers
            .get(&writer)
            .map(|m| &m.keys)
            .into_iter()
            .flatten()
        {
            let key = key.clone();
            visit(
                writer,
                crate::wal::Event::MetricKeyDefined {
                    run: *run,
                    key_id: *key_id,
                    key,
                },
            );
        }
        crate::wal::reader::read_chain(
            &wal_dir,
            writer,
            &segments,
            crate::wal::ReadOptions::default(),
            &mut |event| visit(writer, event),
        )?;
    }
    Ok(())
}

/// Fails as stale if a newer manifest than `manifest` was published: its compaction may have
/// deleted, before the caller listed the log, whole chains the caller's manifest does not cover.
pub(crate) fn check_still_newest(root: &std::path::Path, manifest: &Manifest) -> crate::Result<()> {
    if manifest::newest_generation(root)? != manifest.generation {
        return Err(stale(&root.display().to_string()));
    }
    Ok(())
}
