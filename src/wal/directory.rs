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
//! - The directories and their measures take at most `SEGMENT_DIRECTORIES_BYTES_MAX` bytes, as
//!   counted: each directory's vectors at their (shrunk) capacity, its keys and run tables,
//!   its map entry, and each measure. Past that none is added. When the handle sees a newer
//!   manifest (a query's read of the log, or the follower taking it in), the directories of
//!   the segments it compacted are dropped, and none of those is added after.
//! - A directory lists records in log order, as the scan met them.
//! - A sample's measure of a columns record (how many points of a key, their steps as runs) is
//!   kept beside its record, at most one per record and key over every step; the bytes it was
//!   computed from were checked when it was computed, and the record's points that a read
//!   returns are checked again when they are read.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{CorruptionKind, Error, Result};
use crate::ids::{KeyId, RunId, SegmentSequence, WriterId};
use crate::wal::record::SEAL_RECORD_BYTES;
use crate::wal::segment::HEADER_BYTES;

use crate::limits::SEGMENT_DIRECTORIES_BYTES_MAX;
use crate::wal::reader::ChainPlace;

/// Bytes an entry of the handle's map takes beside its directory: the key, the `Arc` and its
/// counts, the byte count kept with it, and the map's control byte, rounded up.
const ENTRY_BYTES: usize = std::mem::size_of::<SegmentIdentity>()
    + std::mem::size_of::<(Arc<Directory>, usize)>()
    + 2 * std::mem::size_of::<usize>()
    + 8;

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
    /// (`query::log_sample`): at most one entry per record, plus a few.
    measures: Mutex<Measures>,
}

/// A directory's measures and what they are counted against.
#[derive(Debug, Default)]
struct Measures {
    /// By the record's offset and the key id.
    by_record: HashMap<(u64, KeyId), Arc<Measure>>,
    /// The handle's byte count the measures are counted in, while the directory is one of the
    /// handle's (`SegmentDirectories::insert` sets it, dropping the entry takes it back): a
    /// directory no longer kept keeps no measure.
    budget: Option<Arc<AtomicUsize>>,
    /// Bytes counted in `budget` for them.
    bytes: usize,
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
        self.measures().by_record.get(&(offset, key_id)).cloned()
    }

    /// Keeps `measure` of the columns record at `offset` for `key_id`, unless the directory
    /// already keeps as many measures as it lists records (plus a few), is no longer one of
    /// the handle's, or the handle's directories have no room for it.
    pub(crate) fn keep_measure(&self, offset: u64, key_id: KeyId, measure: Measure) {
        let mut measures = self.measures();
        let Some(budget) = measures.budget.clone() else {
            return;
        };
        if measures.by_record.len() >= self.records.len() + MEASURES_SPARE
            || measures.by_record.contains_key(&(offset, key_id))
        {
            return;
        }
        let bytes = std::mem::size_of::<((u64, KeyId), Arc<Measure>)>()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<Measure>()
            + measure.runs.as_deref().map_or(0, std::mem::size_of_val);
        if reserve(&budget, bytes) {
            measures.bytes += bytes;
            measures.by_record.insert((offset, key_id), Arc::new(measure));
        }
    }

    fn measures(&self) -> std::sync::MutexGuard<'_, Measures> {
        // A panic while the lock was held left at worst a missing measure: only speed.
        self.measures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the directory out of `budget`'s count, with its measures: it keeps none after.
    fn release(&self, bytes: usize) {
        let mut measures = self.measures();
        if let Some(budget) = measures.budget.take() {
            budget.fetch_sub(bytes + measures.bytes, Ordering::Relaxed);
        }
        measures.bytes = 0;
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

    /// Bytes the directory takes in memory, its measures apart: its vectors' capacity (the
    /// caller shrinks them first), each key's and run table's heap block, and the directory.
    fn bytes(&self) -> usize {
        let keys: usize = (self.definitions.iter()).map(|(_, _, key)| key.len()).sum();
        let run_tables: usize = (self.records.iter())
            .map(|record| match record {
                MetricRecord::Columns { .. } => 0,
                MetricRecord::Stream { runs, .. } => std::mem::size_of_val(&**runs),
            })
            .sum();
        std::mem::size_of::<Directory>()
            + self.ends.len()
            + self.definitions.capacity() * std::mem::size_of::<(RunId, KeyId, Box<str>)>()
            + self.records.capacity() * std::mem::size_of::<MetricRecord>()
            + keys
            + run_tables
    }
}

/// The directories a handle knows (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct SegmentDirectories {
    state: Mutex<State>,
    /// Bytes the directories and their measures take (`Directory::bytes`, `ENTRY_BYTES`,
    /// `Directory::keep_measure`), at most `SEGMENT_DIRECTORIES_BYTES_MAX`.
    used: Arc<AtomicUsize>,
    /// Lookups that found a directory (for tests and benchmarks: proof the warm path ran).
    hits: AtomicU64,
}

/// What a handle's directories hold (`SegmentDirectories::stats`).
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectoryStats {
    /// Segments whose directory is known.
    pub entries: usize,
    /// Bytes their directories and measures take.
    pub bytes: usize,
    /// Lookups that found a directory, since the handle opened.
    pub hits: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Each directory, with the bytes counted for it (its measures apart).
    entries: HashMap<SegmentIdentity, (Arc<Directory>, usize)>,
    /// The newest manifest generation the entries were pruned for.
    generation: Option<u64>,
    /// Its writers' compacted segments: each writer's last compacted sequence. A directory of
    /// one of them is never kept (a read or poll that began before may still build one).
    compacted: HashMap<WriterId, SegmentSequence>,
}

impl State {
    fn is_compacted(&self, identity: &SegmentIdentity) -> bool {
        (self.compacted.get(&identity.writer)).is_some_and(|through| identity.sequence <= *through)
    }
}

/// Counts `bytes` more in `used` if that stays within `SEGMENT_DIRECTORIES_BYTES_MAX`.
fn reserve(used: &AtomicUsize, bytes: usize) -> bool {
    used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        now.checked_add(bytes)
            .filter(|after| *after <= SEGMENT_DIRECTORIES_BYTES_MAX)
    })
    .is_ok()
}

impl SegmentDirectories {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held left at worst a missing entry or a byte count off:
        // both only cost speed, so the state is used as it is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory of the file `identity` names, if known.
    pub(crate) fn get(&self, identity: &SegmentIdentity) -> Option<Arc<Directory>> {
        let found = (self.state().entries.get(identity)).map(|(directory, _)| directory.clone());
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keeps `directory`, built from `bytes`, the whole file `identity` names, unless that
    /// would pass `SEGMENT_DIRECTORIES_BYTES_MAX`, its segment is compacted, or `bytes` are
    /// not the file's length.
    pub(crate) fn insert(&self, identity: SegmentIdentity, mut directory: Directory, bytes: &[u8]) {
        let Some(ends) = (bytes.len() as u64 == identity.len)
            .then(|| Directory::ends_of(bytes))
            .flatten()
        else {
            return;
        };
        directory.ends = ends.into_boxed_slice();
        directory.definitions.shrink_to_fit();
        directory.records.shrink_to_fit();
        let bytes = directory.bytes() + ENTRY_BYTES;
        let mut state = self.state();
        if state.entries.contains_key(&identity)
            || state.is_compacted(&identity)
            || !reserve(&self.used, bytes)
        {
            return;
        }
        directory.measures().budget = Some(self.used.clone());
        state.entries.insert(identity, (Arc::new(directory), bytes));
    }

    /// Whether another directory may fit (a scan builds one only then).
    pub(crate) fn has_room(&self) -> bool {
        self.used.load(Ordering::Relaxed) < SEGMENT_DIRECTORIES_BYTES_MAX
    }

    /// Drops the directories of the segments the manifest of `generation` compacted (each
    /// writer's segments up to its sequence in `compacted`), when `generation` is newer than
    /// any seen before, and keeps none of them after.
    pub(crate) fn prune(
        &self,
        generation: u64,
        compacted: impl IntoIterator<Item = (WriterId, SegmentSequence)>,
    ) {
        let mut state = self.state();
        if state.generation.is_some_and(|seen| seen >= generation) {
            return;
        }
        state.generation = Some(generation);
        state.compacted = compacted.into_iter().collect();
        let dropped: Vec<SegmentIdentity> = (state.entries.keys())
            .filter(|identity| state.is_compacted(identity))
            .copied()
            .collect();
        for identity in dropped {
            if let Some((directory, bytes)) = state.entries.remove(&identity) {
                directory.release(bytes);
            }
        }
    }

    /// Forgets every directory.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        for (_, (directory, bytes)) in state.entries.drain() {
            directory.release(bytes);
        }
    }

    /// How many directories are known, the bytes they take and how many lookups found one
    /// (for tests and benchmarks).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn stats(&self) -> DirectoryStats {
        let state = self.state();
        DirectoryStats {
            entries: state.entries.len(),
            bytes: self.used.load(Ordering::Relaxed),
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

    fn measure() -> Measure {
        Measure {
            kept: 3,
            runs: Some(Box::new([(0, 1, 3)])),
        }
    }

    #[test]
    fn directories_and_measures_stop_at_their_byte_bound_and_a_newer_manifest_drops_compacted_ones()
    {
        let one = SegmentDirectories::default();
        one.insert(identity(7, 0, 0), directory(1000), &file(1));
        let each = one.stats().bytes;
        let directories = SegmentDirectories::default();
        let fit = SEGMENT_DIRECTORIES_BYTES_MAX / each;
        for sequence in 0..fit as u64 + 5 {
            directories.insert(identity(7, sequence, sequence), directory(1000), &file(1));
        }
        let full = directories.stats();
        assert_eq!(full.entries, fit);
        assert_eq!(full.bytes, fit * each);
        // A measure counts in the same bound.
        let kept = directories.get(&identity(7, 3, 3));
        let room = SEGMENT_DIRECTORIES_BYTES_MAX - full.bytes;
        for offset in 0..room as u64 {
            if let Some(kept) = &kept {
                kept.keep_measure(64 + offset * 100, KeyId(0), measure());
            }
        }
        assert!(directories.stats().bytes <= SEGMENT_DIRECTORIES_BYTES_MAX);
        assert!(directories.stats().bytes > full.bytes);
        // Generation 2 compacted writer 7 through the sequence 10 below the last: the rest
        // stay, with the bytes of their directories only (3's measures went with it).
        let through = SegmentSequence(fit as u64 - 11);
        directories.prune(2, [(WriterId(7), through)]);
        assert_eq!(directories.stats().entries, 10);
        assert_eq!(directories.stats().bytes, 10 * each);
        // A dropped directory keeps no measure, and a compacted segment gets no directory.
        if let Some(kept) = &kept {
            kept.keep_measure(1, KeyId(1), measure());
            assert!(kept.measure(1, KeyId(1)).is_none());
        }
        directories.insert(identity(7, 2, 2), directory(1), &file(1));
        assert_eq!(directories.stats().entries, 10);
        // An older generation prunes nothing after a newer one.
        directories.prune(1, []);
        assert_eq!(directories.stats().entries, 10);
        let last = identity(7, fit as u64 - 1, fit as u64 - 1);
        if let Some(last) = directories.get(&last) {
            last.keep_measure(64, KeyId(0), measure());
            assert!(last.measure(64, KeyId(0)).is_some());
        }
        assert!(directories.stats().bytes > 10 * each);
        directories.clear();
        assert_eq!(
            (directories.stats().entries, directories.stats().bytes),
            (0, 0)
        );
    }
}
