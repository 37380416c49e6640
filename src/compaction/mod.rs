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
//!   `check_still_newest`, `retry_stale`). A file gone while no newer manifest exists is
//!   damage, never a race (`missing_or_stale`). A handle whose catalog had not read deleted
//!   segments rebuilds from the newest manifest (`tracking/follow.rs`).
//! - A writer is marked finished once its chain is compacted to its end and it can append no
//!   more: its final segment is compacted, or its last segment is and it has no lock file, or
//!   it has no file left in `wal/` at all. Otherwise tails would wait for a next segment.
//! - One compactor runs at a time, under an OS lock on `compaction.lock`.

#[cfg(feature = "parquet")]
mod background;
mod edit;
mod encoded;
// Without parquet there is no compactor to write intents; surveys still read them.
#[cfg_attr(not(feature = "parquet"), allow(dead_code))]
mod intent;
internal_modules!(manifest);
#[cfg(feature = "parquet")]
mod pages;
#[cfg(feature = "parquet")]
mod reader;
#[cfg(feature = "parquet")]
mod rows;
mod stats;
#[cfg(feature = "parquet")]
mod step_pages;
pub(crate) mod survey;
#[cfg(feature = "parquet")]
mod warm;
#[cfg(feature = "parquet")]
mod writer;

#[cfg(feature = "parquet")]
pub(crate) use background::Background;
pub use manifest::{CompactedFile, FileChecksum, Manifest, SeriesRows, WriterMark};
#[cfg(feature = "testing")]
pub use manifest::{ManifestEdit, ManifestFile};
#[cfg(feature = "parquet")]
pub(crate) use reader::{
    Keep, Located, MetadataCache, locate_steps, read_rows_in_time_order, read_series,
    read_series_rows, read_series_steps, read_whole_series,
};
#[cfg(feature = "parquet")]
pub(crate) use rows::{StepRuns, StepRunsBuilder, read_picked_rows, step_runs};
pub use stats::ManifestStats;
#[cfg(feature = "parquet")]
pub use writer::CompactionReport;

pub use crate::layout::EXPERIMENTS_DIR;
/// An experiment with more files than this has them merged into one.
pub const FILES_PER_EXPERIMENT_MAX: usize = 4;
/// With more metadata chains than this, a compaction merges them into its own.
pub const METADATA_CHAINS_MAX: usize = 4;

/// A reader's view changed under it: a compaction published a newer manifest and deleted
/// what the reader had chosen (`what`). Reads start over with the newer manifest; only when
/// `READ_ATTEMPTS_MAX` attempts were all overtaken does the caller see it.
pub(crate) fn stale(what: &str) -> crate::Error {
    crate::Error::StaleRead {
        what: what.to_string(),
        attempts: 1,
    }
}

/// Runs `read` until it is not overtaken by a compaction, at most `READ_ATTEMPTS_MAX` times;
/// the last stale error counts all the attempts.
pub(crate) fn retry_stale<T>(mut read: impl FnMut() -> crate::Result<T>) -> crate::Result<T> {
    let mut attempts = 1;
    loop {
        match read() {
            Err(crate::Error::StaleRead { what, .. }) if attempts >= READ_ATTEMPTS_MAX => {
                return Err(crate::Error::StaleRead { what, attempts });
            }
            Err(crate::Error::StaleRead { .. }) => attempts += 1,
            other => return other,
        }
    }
}

/// Tells a race from damage when a file `manifest` led the reader to is gone: a newer manifest
/// means a compaction replaced and deleted it (stale); with `manifest` still the newest, nothing
/// may delete it, so it is missing. Other errors pass through.
pub(crate) fn missing_or_stale(
    root: &std::path::Path,
    manifest: &Manifest,
    error: crate::Error,
) -> crate::Error {
    let crate::Error::Io { path, source, .. } = &error else {
        return error;
    };
    if source.kind() != std::io::ErrorKind::NotFound {
        return error;
    }
    match manifest::newest_generation(root) {
        Ok(newest) if newest != manifest.generation => stale(&path.display().to_string()),
        Ok(_) => crate::Error::Corrupt(crate::error::Corruption {
            path: path.clone(),
            offset: 0,
            kind: crate::error::CorruptionKind::MissingFile,
        }),
        Err(other) => other,
    }
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
                check_still_newest(root, manifest)?;
                // No newer manifest compacted the chain's start away: it is lost.
                return Err(crate::error::Corruption {
                    path: crate::wal::segment::segment_path(
                        &wal_dir,
                        writer,
                        crate::ids::SegmentSequence(start),
                    ),
                    offset: 0,
                    kind: crate::error::CorruptionKind::MissingSegment {
                        writer,
                        sequence: start,
                    },
                }
                .into());
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
    read_uncompacted_once(root, manifest, visit).map_err(|e| missing_or_stale(root, manifest, e))
}

fn read_uncompacted_once(
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

/// The segments [`read_uncompacted`] reads, in the order it reads them, each with its place in
/// its chain so that it can be read on its own: for readers that read them in parallel. The
/// caller resolves key ids with the manifest's keys (`WriterMark::keys`) as well as the
/// segments' own definitions, and maps an error of loading a segment with [`missing_or_stale`].
pub(crate) fn uncompacted_places(
    root: &std::path::Path,
    manifest: &Manifest,
) -> crate::Result<Vec<crate::wal::reader::ChainPlace>> {
    let wal_dir = root.join(crate::layout::WAL_DIR);
    let mut places = Vec::new();
    for (writer, segments) in uncompacted(root, manifest)? {
        places.extend(crate::wal::reader::chain_places(
            &wal_dir, writer, &segments,
        )?);
    }
    Ok(places)
}

/// Fails as stale if a newer manifest than `manifest` was published: its compaction may have
/// deleted, before the caller listed the log, whole chains the caller's manifest does not cover.
pub(crate) fn check_still_newest(root: &std::path::Path, manifest: &Manifest) -> crate::Result<()> {
    if manifest::newest_generation(root)? != manifest.generation {
        return Err(stale(&root.display().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_stale_gives_up_after_the_attempts_max_and_counts_them() {
        let mut calls = 0;
        let result: crate::Result<()> = retry_stale(|| {
            calls += 1;
            Err(stale("a file"))
        });
        assert_eq!(calls, READ_ATTEMPTS_MAX);
        assert!(
            matches!(&result, Err(crate::Error::StaleRead { what, attempts })
                if what == "a file" && *attempts == READ_ATTEMPTS_MAX),
            "{result:?}"
        );
    }

    #[test]
    fn retry_stale_returns_other_errors_at_once() {
        let mut calls = 0;
        let result: crate::Result<()> = retry_stale(|| {
            calls += 1;
            Err(crate::Error::NotFound("run".into()))
        });
        assert_eq!(calls, 1);
        assert!(matches!(result, Err(crate::Error::NotFound(_))));
    }
}
