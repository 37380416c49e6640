//! Checking a store's newest compacted files ahead of their first read, for a long-lived
//! reader (the server) whose first chart after a start or a compaction would otherwise wait
//! for each file's whole-file CRC check (`reader.rs`'s invariant: no byte is decoded before
//! it). The check is the one a read does, through the same per-handle cache, so a file
//! checked here is not checked again by the read.
//!
//! The step runs of those files' long series (`rows::step_runs`), which a sample of each
//! reads first, are read into the same handle's cache once a file is checked.
//!
//! Invariants: at most `WARM_BYTES_MAX` of not yet checked files are read per manifest
//! generation, newest files first (the runs a chart shows are most likely recent ones); a
//! file that fails its check is left for the read to report; nothing of a file is decoded
//! before it has passed its check, and of a checked file only the `step` column's pages of
//! series of at least `WARM_SERIES_ROWS_MIN` rows.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::tracking::Store;

/// Bytes of files a generation's warm-up checks at most: a large store's older files are
/// checked by the reads that need them, as without warm-up.
const WARM_BYTES_MAX: u64 = 1 << 30;

impl Store {
    /// Checks the newest compacted files against their manifest entries (up to 1 GiB of
    /// files not yet checked by this handle, newest first), unless the newest manifest
    /// generation is `seen`; returns the generation it looked at, for the next call. Stops
    /// between two files once `stop` is set, so that a shutdown waits for one file's check at
    /// most.
    pub fn warm_compacted_files(&self, seen: Option<u64>, stop: &AtomicBool) -> Result<u64> {
        let root = self.root();
        let newest = super::manifest::newest_generation(root)?;
        if seen == Some(newest) || newest == 0 {
            return Ok(newest);
        }
        let manifest = self.manifests().newest(root)?;
        let cache = self.compacted_metadata();
        let mut budget = WARM_BYTES_MAX;
        for file in manifest.files.iter().rev() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let bytes = file.checksum.map_or(0, |c| c.bytes);
            if bytes > budget {
                break;
            }
            let path = root.join(&file.path);
            let Ok(handle) = File::open(&path) else {
                continue;
            };
            if !cache.is_checked(&path, &handle)? {
                budget -= bytes;
                // A damaged file is reported by the read that needs it, with its context.
                if cache.get(&path, &handle, file.checksum).is_err() {
                    continue;
                }
            }
            warm_step_runs(root, file, cache, stop);
        }
        Ok(manifest.generation)
    }
}

/// Rows a series needs for its step runs to be read ahead: a sample of a shorter one reads
/// a page of its `step` column at most, a longer one the headers of many.
const WARM_SERIES_ROWS_MIN: u64 = 16 * 1024;

/// Reads the step runs of the long series of a checked `file` into the handle's cache, which
/// the first sample of each would otherwise read (`rows::step_runs`). A series whose runs
/// cannot be read is left to the read, which reports it.
fn warm_step_runs(
    root: &std::path::Path,
    file: &super::CompactedFile,
    cache: &super::reader::MetadataCache,
    stop: &AtomicBool,
) {
    for series in file.series.iter() {
        // Reading ahead stops at half the cache's bound, so it never starts the cache over.
        if stop.load(Ordering::Relaxed) || super::rows::step_runs_cache_half_full(cache) {
            return;
        }
        if series.row_count >= WARM_SERIES_ROWS_MIN {
            let _ = super::rows::step_runs(root, file, series, cache);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use crate::{Durability, RunOptions, Store, StoreOptions};

    fn options() -> StoreOptions {
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        }
    }

    #[test]
    fn warming_checks_the_newest_files_once_and_leaves_a_damaged_one_to_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), options()).unwrap();
        let experiment = store.get_or_create_experiment("e").unwrap();
        let mut runs = Vec::new();
        for round in 0..2 {
            let run = store
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            for step in 0..100 {
                run.log_metric("loss", f64::from(round * 100 + step), i64::from(step))
                    .unwrap();
            }
            runs.push(run.id());
            run.finish().unwrap();
            store.compact().unwrap();
        }
        drop(store);

        let store = Store::open_with(dir.path(), options()).unwrap();
        let root = store.root().to_path_buf();
        let manifest = store.manifests().newest(&root).unwrap();
        assert_eq!(manifest.files.len(), 2);
        // The older file damaged: the warm-up skips it, the read reports it.
        let damaged = root.join(&manifest.files[0].path);
        let mut bytes = std::fs::read(&damaged).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&damaged, &bytes).unwrap();

        let go_on = AtomicBool::new(false);
        let generation = store.warm_compacted_files(None, &go_on).unwrap();
        assert_eq!(generation, manifest.generation);
        assert_eq!(
            store
                .warm_compacted_files(Some(generation), &go_on)
                .unwrap(),
            generation
        );
        let cache = store.compacted_metadata();
        let checked = |path: &std::path::Path| {
            cache
                .is_checked(path, &std::fs::File::open(path).unwrap())
                .unwrap()
        };
        assert!(checked(&root.join(&manifest.files[1].path)));
        assert!(!checked(&damaged));
        assert_eq!(store.history(runs[1], "loss", ..).unwrap().len(), 100);
        assert!(store.history(runs[0], "loss", ..).is_err());
    }
}
