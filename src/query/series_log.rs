//! The uncompacted points of one key of a few runs, read from a log that may hold many more
//! runs: `read_tail`'s engine.
//!
//! Two passes, each parallel. The first reads every uncompacted segment on its own
//! (`compaction::uncompacted_places`); a segment whose directory is not known is scanned
//! whole, every frame and CRC checked as any reader does, decoding only what the query may
//! use: the definitions of the wanted key for the wanted runs, the head of each columns record
//! (its run and point count, `wal::peek`), and the points of the wanted runs in streams. A
//! columns record of another run is skipped without decoding (and, compressed, without
//! decompressing more than its first bytes). Once every definition is known,
//! the second pass decodes each kept columns record straight into its place in the result
//! columns, which are allocated once at their final size.
//!
//! A sealed segment whose directory the handle knows (`wal/directory.rs`) is not scanned: the
//! first pass takes its definitions and the wanted runs' records from the directory, and reads
//! only those records, each frame and CRC checked when the record is decoded (a stream's in the
//! first pass, a columns record's in the second, `columns_payload`). Any other segment is
//! scanned whole, and leaves its directory if it is sealed and trimmed.
//!
//! Invariants:
//! - Points come out as a sequential read gives them: writers in ascending id order, then
//!   segment by segment, record by record; within a stream, run by run (`docs/format/log.md`
//!   section 6.1).
//! - A key id counts as the wanted key when any definition, in the manifest's keys or in the
//!   log, names it so for its writer and run; a writer interns each key once per run, so this
//!   is the sequential reader's resolution for every log a writer writes.
//! - A payload decoded in the second pass that passed its CRC but does not decode is corruption
//!   at its record's offset (a CRC-valid record that does not decode is no torn write).

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::history::History;
use crate::compaction::Manifest;
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::ids::{KeyId, RunId, WriterId};
use crate::wal::directory::{self, Directory, MetricRecord, SegmentDirectories, SegmentIdentity};
use crate::wal::event::Event;
use crate::wal::metric::{MetricBatch, decompress};
use crate::wal::peek::{self, ColumnsOut, RowFilter};
use crate::wal::reader::{ChainEnd, ChainPlace, RecordSink, SegmentBytes};
use crate::wal::record::{FLAG_COMPRESSED, FRAME_BYTES, Frame, RecordType, decode_frame};

/// The query: one key, the runs of `slots` (run to its place in the output), a step range.
pub(super) struct SeriesQuery<'a> {
    /// Each wanted run's index in the output.
    pub slots: &'a HashMap<RunId, usize>,
    /// The key.
    pub key: &'a str,
    /// First step wanted.
    pub first_step: i64,
    /// Last step wanted (inclusive).
    pub last_step: i64,
}

/// Appends to `histories[slot]` the points of the query that the log holds after `manifest`'s
/// watermarks, in log order, and to `pieces[slot]` the lengths of the runs of them that each
/// come from one record (consecutive in the log, so each in logging order), none empty.
pub(super) fn read_series_tail(
    root: &std::path::Path,
    manifest: &Manifest,
    directories: &SegmentDirectories,
    query: &SeriesQuery<'_>,
    histories: &mut [History],
    pieces: &mut [Vec<usize>],
) -> Result<()> {
    let scanned = scan_all(root, manifest, directories, query)?;
    let wanted = wanted_key_ids(manifest, &scanned, query);
    let (tasks, mut columns) = plan(&scanned, &wanted, query, histories.len())?;
    let kept = fill(&tasks, &mut columns, query)?;
    for (slot, (mut steps, mut timestamps, mut values)) in columns.into_iter().enumerate() {
        let total = close_gaps(
            &tasks,
            &kept,
            slot,
            (&mut steps, &mut timestamps, &mut values),
        );
        // The columns were sized for every point of the wanted runs' records, all keys; a
        // history of one key among many must not keep the others' room.
        for column in [&mut steps, &mut timestamps] {
            column.truncate(total);
            column.shrink_to_fit();
        }
        values.truncate(total);
        values.shrink_to_fit();
        let Some(history) = histories.get_mut(slot) else {
            continue;
        };
        if let Some(pieces) = pieces.get_mut(slot) {
            let lengths = (tasks.iter().zip(&kept)).filter(|(task, _)| task.slot == slot);
            pieces.extend(lengths.map(|(_, kept)| *kept).filter(|kept| *kept > 0));
        }
        if history.is_empty() {
            (history.steps, history.timestamps_ms, history.values) = (steps, timestamps, values);
        } else {
            history.steps.extend(steps);
            history.timestamps_ms.extend(timestamps);
            history.values.extend(values);
        }
    }
    Ok(())
}

/// The first pass over every segment `manifest` leaves uncompacted, in parallel, in log order.
pub(super) fn scan_all(
    root: &std::path::Path,
    manifest: &Manifest,
    directories: &SegmentDirectories,
    query: &SeriesQuery<'_>,
) -> Result<Vec<Scanned>> {
    let stale = |error| crate::compaction::missing_or_stale(root, manifest, error);
    let places = crate::compaction::uncompacted_places(root, manifest).map_err(stale)?;
    directories.prune(manifest.generation, compacted_through(manifest));
    places
        .into_par_iter()
        .map(|place| scan(place, query, directories).map_err(stale))
        .collect()
}

/// Each writer's last compacted segment under `manifest`.
fn compacted_through(
    manifest: &Manifest,
) -> impl Iterator<Item = (WriterId, crate::ids::SegmentSequence)> + '_ {
    (manifest.writers.iter()).filter_map(|(writer, mark)| Some((*writer, mark.through?)))
}

/// One segment after the first pass: its bytes, kept for the second, and what it holds for the
/// query.
pub(super) struct Scanned {
    pub(super) place: ChainPlace,
    /// Kept only when the segment holds a wanted columns record (decoded in the second pass).
    pub(super) bytes: Option<SegmentBytes>,
    pub(super) found: Found,
    /// The segment's directory, when the first pass read it through one.
    pub(super) directory: Option<Arc<Directory>>,
}

/// What the first pass keeps of one segment.
#[derive(Default)]
pub(super) struct Found {
    /// Key ids defined as the query's key for a wanted run.
    definitions: Vec<(RunId, KeyId)>,
    /// The wanted runs' points, in log order.
    pub(super) items: Vec<Item>,
}

/// Points of one wanted run, not yet filtered by key.
pub(super) enum Item {
    /// A columns record, left undecoded.
    Columns {
        run: RunId,
        /// Offset of its record in the segment.
        record_offset: u64,
        flags: u8,
        point_count: usize,
        /// Whether the first pass checked its frame and CRC (a scan does; a read through a
        /// directory leaves that to whoever decodes it, `columns_payload`).
        checked: bool,
    },
    /// A stream's points of the run, decoded.
    Stream(MetricBatch),
}

struct SegmentSink<'a> {
    query: &'a SeriesQuery<'a>,
    found: Found,
    /// Every metric-bearing record and definition met, kept if the segment turns out sealed;
    /// built only for a file that ends with a seal while the handle has room for it.
    directory: Option<Directory>,
}

impl RecordSink for SegmentSink<'_> {
    fn record(
        &mut self,
        offset: u64,
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> std::result::Result<(), CorruptionKind> {
        match record_type {
            RecordType::MetricKeyDefined => {
                if let Event::MetricKeyDefined { run, key_id, key } =
                    Event::decode(record_type, flags, payload)?
                {
                    if key == self.query.key && self.query.slots.contains_key(&run) {
                        self.found.definitions.push((run, key_id));
                    }
                    if let Some(directory) = &mut self.directory {
                        directory.add_definition(run, key_id, &key);
                    }
                }
            }
            RecordType::MetricColumns => {
                let head = peek::columns_head(flags, payload)?;
                if self.query.slots.contains_key(&head.run) {
                    self.found.items.push(Item::Columns {
                        run: head.run,
                        record_offset: offset,
                        flags,
                        point_count: head.point_count as usize,
                        checked: true,
                    });
                }
                if let Some(directory) = &mut self.directory {
                    directory.records.push(MetricRecord::Columns {
                        offset,
                        run: head.run,
                        flags,
                        point_count: head.point_count,
                    });
                }
            }
            // Nothing else bears on the series: it passed its CRC, which is all it must do here.
            _ => {}
        }
        Ok(())
    }

    fn stream(
        &mut self,
        offset: u64,
        ops_area: &[u8],
        ops_count: u32,
        ops_crc: u32,
    ) -> std::result::Result<usize, CorruptionKind> {
        let wanted = |run: RunId| self.query.slots.contains_key(&run);
        let stream = peek::stream_points(ops_area, ops_count, ops_crc, &wanted)?;
        self.found
            .items
            .extend(stream.batches.into_iter().map(Item::Stream));
        if let Some(directory) = &mut self.directory {
            directory.add_stream(offset, stream.runs);
        }
        Ok(stream.ops_bytes)
    }
}

/// The first pass over one segment: through its directory when `directories` knows it, else
/// a scan of all of it, which leaves its directory there if the segment is sealed.
pub(super) fn scan(
    place: ChainPlace,
    query: &SeriesQuery<'_>,
    directories: &SegmentDirectories,
) -> Result<Scanned> {
    let identity = SegmentIdentity::of(&place)?;
    let known = directories.get(&identity);
    if let Some(directory) = &known
        && !wants_any(directory, query)
    {
        // Nothing to read: the definitions are all a directory without a wanted record gives.
        let found = definitions(directory, query);
        return Ok(Scanned {
            place,
            bytes: None,
            found,
            directory: known,
        });
    }
    let bytes = crate::wal::reader::load_segment(&place.path, false)?;
    if let Some(directory) = known {
        // The file the directory was built from, unless it changed between the stat and the
        // load: then it is scanned as any unknown segment.
        if directory.describes(&bytes) {
            return read_known(place, bytes, directory, query);
        }
    }
    let mut sink = SegmentSink {
        query,
        found: Found::default(),
        directory: (crate::wal::reader::ends_with_seal(&bytes) && directories.has_room())
            .then(Directory::default),
    };
    let mut salvaged = Vec::new();
    let end = crate::wal::reader::read_segment_with(
        place.segment_ref(&bytes),
        false,
        &mut salvaged,
        &mut sink,
    )?;
    let sealed = matches!(
        end,
        ChainEnd::Sealed {
            untrimmed: false,
            ..
        }
    );
    if let Some(directory) = sink.directory
        && sealed
        && directory::unchanged(&place.path, &identity)
    {
        directories.insert(identity, directory, &bytes);
    }
    Ok(scanned(place, bytes, sink.found))
}

/// The segment and what the first pass found in it. Only a segment with a wanted columns
/// record is read again; the others' bytes go now, so a query over many live writers' 64 MiB
/// segments holds only the ones it decodes.
fn scanned(place: ChainPlace, bytes: SegmentBytes, found: Found) -> Scanned {
    let needed = (found.items.iter()).any(|item| matches!(item, Item::Columns { .. }));
    Scanned {
        place,
        bytes: needed.then_some(bytes),
        found,
        directory: None,
    }
}

/// The first pass over a sealed segment whose directory is known: only the wanted runs'
/// records are read, each frame and CRC checked as a scan checks them, a columns record's
/// when it is decoded (the rest of the segment was checked when the directory was built).
fn read_known(
    place: ChainPlace,
    bytes: SegmentBytes,
    directory: Arc<Directory>,
    query: &SeriesQuery<'_>,
) -> Result<Scanned> {
    let wanted = |run: RunId| query.slots.contains_key(&run);
    let mut found = definitions(&directory, query);
    for record in &directory.records {
        match record {
            MetricRecord::Columns {
                offset,
                run,
                flags,
                point_count,
            } if wanted(*run) => {
                // Checked when decoded: a sample whose measure of the record is known
                // (`Directory::measure`) may never decode it.
                found.items.push(Item::Columns {
                    run: *run,
                    record_offset: *offset,
                    flags: *flags,
                    point_count: *point_count as usize,
                    checked: false,
                });
            }
            MetricRecord::Stream { offset, runs } if runs.iter().any(|run| wanted(*run)) => {
                let stream = stream_at(&bytes, *offset, &wanted)
                    .map_err(|kind| corruption(&place, *offset, kind))?;
                found
                    .items
                    .extend(stream.batches.into_iter().map(Item::Stream));
            }
            MetricRecord::Columns { .. } | MetricRecord::Stream { .. } => {}
        }
    }
    let mut scanned = scanned(place, bytes, found);
    scanned.directory = Some(directory);
    Ok(scanned)
}

/// The definitions of the query's key for its runs that `directory` lists.
fn definitions(directory: &Directory, query: &SeriesQuery<'_>) -> Found {
    let mut found = Found::default();
    for (run, key_id, key) in &directory.definitions {
        if **key == *query.key && query.slots.contains_key(run) {
            found.definitions.push((*run, *key_id));
        }
    }
    found
}

/// Whether `directory` lists a record with points of a wanted run.
fn wants_any(directory: &Directory, query: &SeriesQuery<'_>) -> bool {
    let wanted = |run: &RunId| query.slots.contains_key(run);
    directory.records.iter().any(|record| match record {
        MetricRecord::Columns { run, .. } => wanted(run),
        MetricRecord::Stream { runs, .. } => runs.iter().any(wanted),
    })
}

/// The payload of a wanted columns record (`Item::Columns`) of `bytes`, a segment's: as the
/// first pass checked it, or, when it did not, with its frame and CRC checked now and its head
/// checked to still say what the directory listed (`run`, `flags`, `point_count`).
pub(super) fn columns_payload(
    bytes: &[u8],
    record_offset: u64,
    unchecked: Option<(RunId, u8, usize)>,
) -> std::result::Result<&[u8], CorruptionKind> {
    let Some((run, flags, point_count)) = unchecked else {
        return payload_at(bytes, record_offset).ok_or_else(|| moved("no record"));
    };
    match decode_frame(record_bytes(bytes, record_offset)?)? {
        Frame::Record {
            record_type: RecordType::MetricColumns,
            flags: found_flags,
            payload,
        } if found_flags == flags => {
            let head = peek::columns_head(flags, payload)?;
            if head.run == run && head.point_count as usize == point_count {
                return Ok(payload);
            }
            Err(moved("a columns record of another run or size"))
        }
        _ => Err(moved("another record than the columns record it listed")),
    }
}

/// The wanted runs' points of the stream record at `offset`, its frame, ops and CRC checked.
fn stream_at(
    bytes: &[u8],
    offset: u64,
    wanted: &dyn Fn(RunId) -> bool,
) -> std::result::Result<peek::StreamPoints, CorruptionKind> {
    match decode_frame(record_bytes(bytes, offset)?)? {
        Frame::Stream {
            ops_count,
            ops_crc,
            ops_area,
            ..
        } => peek::stream_points(ops_area, ops_count, ops_crc, wanted),
        _ => Err(moved("another record than the stream it listed")),
    }
}

/// The bytes of a segment from `offset` on.
fn record_bytes(bytes: &[u8], offset: u64) -> std::result::Result<&[u8], CorruptionKind> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| bytes.get(start..))
        .ok_or_else(|| moved("a listed offset past the end of the file"))
}

/// A sealed segment whose record at a listed offset is not the one its directory lists: the
/// file changed in place after it was sealed.
fn moved(what: &str) -> CorruptionKind {
    CorruptionKind::MalformedPayload(format!(
        "{what}, at an offset of a sealed segment (the file changed after it was sealed)"
    ))
}

/// The key ids that stand for the query's key, per writer and run.
pub(super) fn wanted_key_ids(
    manifest: &Manifest,
    scanned: &[Scanned],
    query: &SeriesQuery<'_>,
) -> HashMap<(WriterId, RunId), Vec<KeyId>> {
    let mut wanted: HashMap<(WriterId, RunId), Vec<KeyId>> = HashMap::new();
    let mut add = |writer, run, key_id| {
        let ids = wanted.entry((writer, run)).or_default();
        if !ids.contains(&key_id) {
            ids.push(key_id);
        }
    };
    for (writer, mark) in &manifest.writers {
        for ((run, key_id), key) in &mark.keys {
            if key == query.key && query.slots.contains_key(run) {
                add(*writer, *run, *key_id);
            }
        }
    }
    for segment in scanned {
        for (run, key_id) in &segment.found.definitions {
            add(segment.place.writer, *run, *key_id);
        }
    }
    wanted
}

/// Output columns of one run: steps, timestamps, values.
type OutColumns = (Vec<i64>, Vec<i64>, Vec<f64>);

/// One item of the second pass: where its points come from and the slot range they go to.
struct Task<'a> {
    slot: usize,
    /// Index of its first point in the slot's columns, and how many it may write.
    start: usize,
    capacity: usize,
    source: Source<'a>,
}

enum Source<'a> {
    Columns {
        /// The segment's bytes.
        bytes: &'a [u8],
        /// What to check the record against, if the first pass did not (`columns_payload`).
        unchecked: Option<(RunId, u8, usize)>,
        compressed: bool,
        key_ids: &'a [KeyId],
        /// For errors: the segment and the record's offset.
        place: &'a ChainPlace,
        record_offset: u64,
    },
    /// A stream's points, already filtered.
    Points(History),
}

/// The second pass's tasks, in log order, and the output columns sized for all of them.
fn plan<'a>(
    scanned: &'a [Scanned],
    wanted: &'a HashMap<(WriterId, RunId), Vec<KeyId>>,
    query: &SeriesQuery<'_>,
    slot_count: usize,
) -> Result<(Vec<Task<'a>>, Vec<OutColumns>)> {
    let mut sizes = vec![0usize; slot_count];
    let mut tasks = Vec::new();
    for segment in scanned {
        let writer = segment.place.writer;
        for item in &segment.found.items {
            let (run, capacity, source) = match item {
                Item::Columns {
                    run,
                    record_offset,
                    flags,
                    point_count,
                    checked,
                } => {
                    let Some(key_ids) = wanted.get(&(writer, *run)) else {
                        continue;
                    };
                    let bytes = (segment.bytes.as_deref())
                        .ok_or_else(|| corrupt(&segment.place, *record_offset, "record moved"))?;
                    let source = Source::Columns {
                        bytes,
                        unchecked: (!checked).then_some((*run, *flags, *point_count)),
                        compressed: flags & FLAG_COMPRESSED != 0,
                        key_ids,
                        place: &segment.place,
                        record_offset: *record_offset,
                    };
                    (*run, *point_count, source)
                }
                Item::Stream(batch) => {
                    let Some(key_ids) = wanted.get(&(writer, batch.run)) else {
                        continue;
                    };
                    let points = stream_rows(batch, key_ids, query);
                    (batch.run, points.len(), Source::Points(points))
                }
            };
            let Some(slot) = query.slots.get(&run).copied() else {
                continue;
            };
            if capacity == 0 || slot >= slot_count {
                continue;
            }
            tasks.push(Task {
                slot,
                start: sizes[slot],
                capacity,
                source,
            });
            sizes[slot] += capacity;
        }
    }
    // Zeroed allocations of this size come straight from the system as untouched pages, so
    // the second pass's threads map them in (`util::prefault`) as they reach them, in
    // parallel.
    let columns = sizes
        .iter()
        .map(|size| (vec![0i64; *size], vec![0i64; *size], vec![0f64; *size]))
        .collect();
    Ok((tasks, columns))
}

/// The payload of the record at `record_offset` of `bytes`, as the first pass checked it.
pub(super) fn payload_at(bytes: &[u8], record_offset: u64) -> Option<&[u8]> {
    let start = usize::try_from(record_offset).ok()?;
    let length = bytes.get(start..start + 4)?;
    let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
    bytes.get(start + FRAME_BYTES..start + FRAME_BYTES + length)
}

/// A stream batch's rows of the wanted keys and steps.
pub(super) fn stream_rows(
    batch: &MetricBatch,
    key_ids: &[KeyId],
    query: &SeriesQuery<'_>,
) -> History {
    let mut points = History::default();
    for row in 0..batch.len() {
        let step = batch.steps[row];
        if key_ids.contains(&batch.key_ids[row])
            && (query.first_step..=query.last_step).contains(&step)
        {
            points.steps.push(step);
            points.timestamps_ms.push(batch.timestamps_ms[row]);
            points.values.push(batch.values[row]);
        }
    }
    points
}

/// Runs the tasks in parallel, each writing its slot range; returns the points each kept, at
/// the front of its range.
fn fill(
    tasks: &[Task<'_>],
    columns: &mut [OutColumns],
    query: &SeriesQuery<'_>,
) -> Result<Vec<usize>> {
    // Carve each slot's columns into the tasks' disjoint ranges, in task order.
    let mut rest: Vec<(&mut [i64], &mut [i64], &mut [f64])> = columns
        .iter_mut()
        .map(|(s, t, v)| (s.as_mut_slice(), t.as_mut_slice(), v.as_mut_slice()))
        .collect();
    let mut jobs = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (steps, timestamps, values) = std::mem::take(&mut rest[task.slot]);
        let (steps, steps_rest) = steps.split_at_mut(task.capacity);
        let (timestamps, timestamps_rest) = timestamps.split_at_mut(task.capacity);
        let (values, values_rest) = values.split_at_mut(task.capacity);
        rest[task.slot] = (steps_rest, timestamps_rest, values_rest);
        let out = ColumnsOut {
            steps,
            timestamps_ms: timestamps,
            values,
        };
        jobs.push((task, out));
    }
    jobs.into_par_iter()
        .map(|(task, out)| run_task(task, out, query))
        .collect()
}

fn run_task(task: &Task<'_>, out: ColumnsOut<'_>, query: &SeriesQuery<'_>) -> Result<usize> {
    crate::util::prefault(out.steps);
    crate::util::prefault(out.timestamps_ms);
    crate::util::prefault(out.values);
    match &task.source {
        Source::Points(points) => {
            out.steps.copy_from_slice(&points.steps);
            out.timestamps_ms.copy_from_slice(&points.timestamps_ms);
            out.values.copy_from_slice(&points.values);
            Ok(points.len())
        }
        Source::Columns {
            bytes,
            unchecked,
            compressed,
            key_ids,
            place,
            record_offset,
        } => columns_payload(bytes, *record_offset, *unchecked)
            .and_then(|payload| decode_record(payload, *compressed, key_ids, query, out))
            .map_err(|kind| corruption(place, *record_offset, kind)),
    }
}

/// Decodes a columns record's stored payload into `out` (as many slots as its points),
/// keeping the query's rows of `key_ids` at the front; how many.
pub(super) fn decode_record(
    payload: &[u8],
    compressed: bool,
    key_ids: &[KeyId],
    query: &SeriesQuery<'_>,
    out: ColumnsOut<'_>,
) -> std::result::Result<usize, CorruptionKind> {
    let filter = RowFilter {
        key_ids,
        first_step: query.first_step,
        last_step: query.last_step,
    };
    if compressed {
        decompress(payload).and_then(|plain| peek::decode_columns_into(&plain, &filter, out))
    } else {
        peek::decode_columns_into(payload, &filter, out)
    }
}

/// A CRC-valid record that does not decode: corruption at its offset.
pub(super) fn corruption(place: &ChainPlace, record_offset: u64, kind: CorruptionKind) -> Error {
    Error::Corrupt(Corruption {
        path: place.path.clone(),
        offset: record_offset,
        kind,
    })
}

/// Moves the points each task of `slot` kept next to the previous task's, in task order;
/// returns the slot's point count.
fn close_gaps(
    tasks: &[Task<'_>],
    kept: &[usize],
    slot: usize,
    (steps, timestamps, values): (&mut [i64], &mut [i64], &mut [f64]),
) -> usize {
    let mut end = 0;
    for (task, kept) in tasks.iter().zip(kept).filter(|(task, _)| task.slot == slot) {
        if task.start != end {
            let range = task.start..task.start + kept;
            steps.copy_within(range.clone(), end);
            timestamps.copy_within(range.clone(), end);
            values.copy_within(range, end);
        }
        end += kept;
    }
    end
}

pub(super) fn corrupt(place: &ChainPlace, offset: u64, why: &str) -> Error {
    Error::Corrupt(Corruption {
        path: place.path.clone(),
        offset,
        kind: CorruptionKind::MalformedPayload(why.to_string()),
    })
}
