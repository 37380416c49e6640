//! Directories of sealed log segments, kept per `Store` handle in memory: where each
//! metric-bearing record of a segment is and whose points it holds, so that a later read of
//! the segment reads only the records it wants.
//!
//! A segment that is sealed and trimmed never changes again (`wal/classify.rs`, `wal/reader.rs`:
//! the seal, the trim, and the sync before the next segment is created), and compaction only
//! deletes whole segments. So once a read has scanned such a segment, checking every frame and
//! CRC, what it learnt of the segment's layout stays true for as long as the file exists. A
//! directory records it: each columns record's offset, flags, run and point count, each stream
//! record's offset and run table, and the key definitions (`MetricKeyDefined`). Nothing else in
//! a segment bears on a metric read.
//!
//! The read contract this keeps (`docs/DURABILITY.md`, "What a read checks"): every byte a read
//! returns is CRC-checked when it is read, since a read through a directory checks the frame
//! and CRC of each record it uses exactly as a scan does; the rest of a sealed segment was
//! checked when its directory was built; `runlog verify` checks everything.
//!
//! Invariants:
//! - Only a segment that a scan found sealed and trimmed gets a directory, and only if the file
//!   had the same identity (device, inode, length) before and after it was read: a file a
//!   writer trimmed during the read, or one that is not the file scanned, never matches.
//! - An entry is keyed by writer, sequence, device, inode and length, and keeps the header and
//!   seal record of the bytes it was built from; a read uses it only for loaded bytes of that
//!   length that begin and end with them (`Directory::describes`), so the key and the bytes
//!   read are tied even when the file named changed between the stat and the load. Another
//!   segment has another header (writer, sequence, creation time) or seal (record count). A
//!   known segment whose file is gone is an error of the read, as it is without a directory
//!   (`compaction::missing_or_stale`). The change time is deliberately not in the key: a byte
//!   damaged in place (bit rot keeps it too) must still be found by the CRC of the record read.
//! - The directories take at most `DIRECTORIES_BYTES_MAX` bytes (estimated); past that none is
//!   added. When a read sees a newer manifest, the entries of segments it no longer reads (the
//!   compacted ones) are dropped.
//! - A directory lists records in log order, as the scan met them.
//! - A sample's measure of a columns record (how many points of a key, their steps as runs) is
//!   kept beside its record, at most one per record and key over every step; the bytes it was
//!   computed from were checked when it was computed, and the record's points that a read
//!   returns are checked again when they are read. Measures are not counted in
//!   `DIRECTORIES_BYTES_MAX`: a few words each, at most as many as the records, and usually one
//!   step run each.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{CorruptionKind, Error, Result};
use crate::ids::{KeyId, RunId, SegmentSequence, WriterId};
use crate::wal::reader::ChainPlace;
use crate::wal::record::SEAL_RECORD_BYTES;
use crate::wal::segment::HEADER_BYTES;

/// Bytes all the directories of one handle may take (estimated by `Directory::bytes`): about
/// 40 bytes per record, so a thousand 64 MiB segments of 12 KiB records fit.
pub(crate) const DIRECTORIES_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Measures a directory keeps beyond one per record (`Directory::keep_measure`).
const MEASURES_SPARE: usize = 16;

/// What identifies one segment file: a file with another identity is another file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SegmentIdentity {
    writer: WriterId,
    sequence: SegmentSequence,
    device: u64,
    inode: u64,
    len: u64,
}

impl SegmentIdentity {
    /// The identity of `place`'s file as it is now.
    pub(crate) fn of(place: &ChainPlace) -> Result<SegmentIdentity> {
        let metadata = std::fs::metadata(&place.path)
            .map_err(|error| Error::io("stat", &place.path, error))?;
        Ok(SegmentIdentity::new(place.writer, place.sequence, &metadata))
    }

    /// The identity of segment `sequence` of `writer` whose file has `metadata`.
    pub(crate) fn new(
        writer: WriterId,
        sequence: SegmentSequence,
        metadata: &std::fs::Metadata,
    ) -> SegmentIdentity {
        SegmentIdentity {
            writer,
            sequence,
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
        }
    }
}

/// The metric-bearing records of one sealed segment and its key definitions.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    /// The segment's header and seal record as they were when the directory was built
    /// (`SegmentDirectories::insert`): the bytes a later read loads must begin and end with
    /// them (`Directory::describes`).
    ends: Box<[u8]>,
    /// `(run, key id, key)` of each `MetricKeyDefined` record.
    pub(crate) definitions: Vec<(RunId, KeyId, Box<str>)>,
    /// The segment's columns and stream records, in log order.
    pub(crate) records: Vec<MetricRecord>,
    /// What a sample measured of a columns record's points of one key over every step
    /// (`query::log_sample`), by the record's offset and the key id: at most one entry per
    /// record, plus a few.
    measures: Mutex<HashMap<(u64, KeyId), Arc<Measure>>>,
}

/// A columns record's points of one key, over every step, as a sample measures them: how many,
/// and their steps as arithmetic runs `(first step, stride, count)` when they ascend in a few.
#[derive(Debug)]
pub(crate) struct Measure {
    /// Points of the key in the record.
    pub(crate) kept: usize,
    /// Their steps as arithmetic runs, if the sample could take them so.
    pub(crate) runs: Option<Box<[(i64, i64, u64)]>>,
}

/// One metric-bearing record of a segment.
#[derive(Debug)]
pub(crate) enum MetricRecord {
    /// A `MetricColumns` record.
    Columns {
        /// Offset of its frame in the segment.
        offset: u64,
        /// The run of its points.
        run: RunId,
        /// Its frame's flags.
        flags: u8,
        /// Points it holds.
        point_count: u32,
    },
    /// A `MetricStream` record.
    Stream {
        /// Offset of its frame in the segment.
        offset: u64,
        /// Its run table.
        runs: Box<[RunId]>,
    },
}

impl Directory {
    /// Adds a `MetricKeyDefined` record.
    pub(crate) fn add_definition(&mut self, run: RunId, key_id: KeyId, key: &str) {
        self.definitions.push((run, key_id, key.into()));
    }

    /// Adds the columns record at `offset`, stored with `flags` and `payload` (whose CRC the
    /// caller checked).
    pub(crate) fn add_columns(
        &mut self,
        offset: u64,
        flags: u8,
        payload: &[u8],
    ) -> std::result::Result<(), CorruptionKind> {
        let head = crate::wal::peek::columns_head(flags, payload)?;
        self.records.push(MetricRecord::Columns {
            offset,
            run: head.run,
            flags,
            point_count: head.point_count,
        });
        Ok(())
    }

    /// Adds the stream record at `offset`, whose run table is `runs`.
    pub(crate) fn add_stream(&mut self, offset: u64, runs: Vec<RunId>) {
        self.records.push(MetricRecord::Stream {
            offset,
            runs: runs.into_boxed_slice(),
        });
    }

    /// The measure of the columns record at `offset` for `key_id`, if one was kept.
    pub(crate) fn measure(&self, offset: u64, key_id: KeyId) -> Option<Arc<Measure>> {
        let measures = self.measures.lock().unwrap_or_else(PoisonError::into_inner);
        measures.get(&(offset, key_id)).cloned()
    }

    /// Keeps `measure` of the columns record at `offset` for `key_id`, unless the directory
    /// already keeps as many measures as it lists records (plus a few).
    pub(crate) fn keep_measure(&self, offset: u64, key_id: KeyId, measure: Measure) {
        let mut measures = self.measures.lock().unwrap_or_else(PoisonError::into_inner);
        if measures.len() < self.records.len() + MEASURES_SPARE {
            measures.insert((offset, key_id), Arc::new(measure));
        }
    }

    /// Whether `bytes`, a segment file as a read loaded it, are the file this directory was
    /// built from as far as its length, header and seal tell: a stat and the load are two
    /// calls, and the file named may have changed between them.
    pub(crate) fn describes(&self, bytes: &[u8]) -> bool {
        !self.ends.is_empty() && Directory::ends_of(bytes).is_some_and(|ends| *ends == *self.ends)
    }

    /// A segment's header and seal record, if it is long enough to hold both.
    fn ends_of(bytes: &[u8]) -> Option<Vec<u8>> {
        let seal_start = bytes.len().checked_sub(SEAL_RECORD_BYTES)?;
        let header = bytes.get(..HEADER_BYTES)?;
        let seal = bytes.get(seal_start.max(HEADER_BYTES)..)?;
        Some([header, seal].concat())
    }

    /// Estimated bytes the directory takes in memory.
    fn bytes(&self) -> usize {
        let definitions: usize = (self.definitions.iter())
            .map(|(_, _, key)| std::mem::size_of::<(RunId, KeyId, Box<str>)>() + key.len())
            .sum();
        let records: usize = (self.records.iter())
            .map(|record| {
                std::mem::size_of::<MetricRecord>()
                    + match record {
                        MetricRecord::Columns { .. } => 0,
                        MetricRecord::Stream { runs, .. } => std::mem::size_of_val(&**runs),
                    }
            })
            .sum();
        std::mem::size_of::<Directory>() + definitions + records
    }
}

/// The directories a handle knows (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct SegmentDirectories {
    state: Mutex<State>,
    /// Lookups that found a directory (for tests and benchmarks: proof the warm path ran).
    hits: AtomicU64,
}

/// What a handle's directories hold (`SegmentDirectories::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Segments whose directory is known.
    pub entries: usize,
    /// Estimated bytes their directories take.
    pub bytes: usize,
    /// Lookups that found a directory, since the handle opened.
    pub hits: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<SegmentIdentity, Arc<Directory>>,
    /// Sum of the entries' `Directory::bytes`.
    bytes: usize,
    /// The newest manifest generation a read has pruned the entries for.
    generation: Option<u64>,
}

impl SegmentDirectories {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held left at worst a missing entry or a byte count off:
        // both only cost speed, so the state is used as it is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory of the file `identity` names, if known.
    pub(crate) fn get(&self, identity: &SegmentIdentity) -> Option<Arc<Directory>> {
        let found = self.state().entries.get(identity).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keeps `directory`, built from `bytes`, the whole file `identity` names, unless that
    /// would pass `DIRECTORIES_BYTES_MAX` (or `bytes` are not the file's length).
    pub(crate) fn insert(&self, identity: SegmentIdentity, mut directory: Directory, bytes: &[u8]) {
        let Some(ends) = (bytes.len() as u64 == identity.len)
            .then(|| Directory::ends_of(bytes))
            .flatten()
        else {
            return;
        };
        directory.ends = ends.into_boxed_slice();
        let bytes = directory.bytes();
        let mut state = self.state();
        if state.entries.contains_key(&identity)
            || state.bytes.saturating_add(bytes) > DIRECTORIES_BYTES_MAX
        {
            return;
        }
        state.bytes += bytes;
        state.entries.insert(identity, Arc::new(directory));
    }

    /// Drops the entries of segments not among `places` (the uncompacted segments under the
    /// manifest of `generation`), when `generation` is newer than any seen before: the
    /// segments a compaction took and deleted.
    pub(crate) fn prune(&self, generation: u64, places: &[ChainPlace]) {
        let mut state = self.state();
        if state.generation.is_some_and(|seen| seen >= generation) {
            return;
        }
        state.generation = Some(generation);
        let live: HashSet<(WriterId, SegmentSequence)> = (places.iter())
            .map(|place| (place.writer, place.sequence))
            .collect();
        let mut freed = 0;
        state.entries.retain(|identity, directory| {
            let keep = live.contains(&(identity.writer, identity.sequence));
            if !keep {
                freed += directory.bytes();
            }
            keep
        });
        state.bytes = state.bytes.saturating_sub(freed);
    }

    /// Forgets every directory.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.entries.clear();
        state.bytes = 0;
    }

    /// How many directories are known, the bytes they take and how many lookups found one
    /// (for tests and benchmarks).
    pub(crate) fn stats(&self) -> DirectoryStats {
        let state = self.state();
        DirectoryStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            hits: self.hits.load(Ordering::Relaxed),
        }
    }
}

/// Whether the file at `path` is still the one `identity` names (checked after a read, so a
/// file that changed while it was read gets no directory).
pub(crate) fn unchanged(path: &Path, identity: &SegmentIdentity) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| {
        SegmentIdentity::new(identity.writer, identity.sequence, &metadata) == *identity
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::classify::{ChainLife, Place};

    fn identity(writer: u64, sequence: u64, inode: u64) -> SegmentIdentity {
        SegmentIdentity {
            writer: WriterId(writer),
            sequence: SegmentSequence(sequence),
            device: 1,
            inode,
            len: 4096,
        }
    }

    /// A file's bytes: a header and a seal record told apart by `mark`.
    fn file(mark: u8) -> Vec<u8> {
        let mut bytes = vec![0u8; 4096];
        bytes[0] = mark;
        bytes[4095] = mark;
        bytes
    }

    fn place(writer: u64, sequence: u64) -> ChainPlace {
        ChainPlace {
            path: std::path::PathBuf::from("unused"),
            writer: WriterId(writer),
            sequence: SegmentSequence(sequence),
            place: Place {
                last: false,
                life: ChainLife::Closed,
            },
        }
    }

    fn directory(records: u64) -> Directory {
        let mut directory = Directory::default();
        directory.add_definition(RunId(1), KeyId(0), "loss");
        for offset in 0..records {
            directory.add_stream(64 + offset * 100, vec![RunId(1), RunId(2)]);
        }
        directory
    }

    #[test]
    fn a_directory_is_kept_only_with_the_whole_file_it_was_built_from() {
        let directories = SegmentDirectories::default();
        directories.insert(identity(7, 3, 100), directory(2), &file(1)[..4000]);
        assert!(directories.get(&identity(7, 3, 100)).is_none());
    }

    #[test]
    fn a_directory_is_found_only_by_the_identity_of_its_file() {
        let directories = SegmentDirectories::default();
        directories.insert(identity(7, 3, 100), directory(2), &file(1));
        let known = directories.get(&identity(7, 3, 100));
        assert!(known.as_ref().is_some_and(|known| known.describes(&file(1))));
        // Bytes with another header or seal, or another length, are another file's.
        assert!(known.as_ref().is_some_and(|known| !known.describes(&file(2))));
        assert!(known.is_some_and(|known| !known.describes(&file(1)[..4000])));
        // Another inode, length, sequence or writer is another file.
        assert!(directories.get(&identity(7, 3, 101)).is_none());
        assert!(directories.get(&identity(7, 4, 100)).is_none());
        assert!(directories.get(&identity(8, 3, 100)).is_none());
        let mut longer = identity(7, 3, 100);
        longer.len += 1;
        assert!(directories.get(&longer).is_none());
    }

    #[test]
    fn directories_stop_at_their_byte_bound_and_a_newer_manifest_drops_compacted_ones() {
        let directories = SegmentDirectories::default();
        let one = directory(1000);
        let each = one.bytes();
        let fit = DIRECTORIES_BYTES_MAX / each;
        for inode in 0..fit as u64 + 5 {
            directories.insert(identity(7, inode, inode), directory(1000), &file(1));
        }
        let stats = directories.stats();
        assert_eq!(stats.entries, fit);
        assert!(stats.bytes <= DIRECTORIES_BYTES_MAX);
        // Generation 2 leaves segments 10 to 19 uncompacted; an older generation prunes
        // nothing after it.
        let places: Vec<ChainPlace> = (10..20).map(|sequence| place(7, sequence)).collect();
        directories.prune(2, &places);
        assert_eq!(
            (directories.stats().entries, directories.stats().bytes),
            (10, 10 * each)
        );
        directories.prune(1, &[]);
        assert_eq!(directories.stats().entries, 10);
        directories.clear();
        assert_eq!(
            (directories.stats().entries, directories.stats().bytes),
            (0, 0)
        );
    }
}
