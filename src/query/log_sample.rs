//! The uncompacted points of one key of a few runs, indexed for a sample
//! (`Store::history_sample`) instead of held whole: the log is read as `series_log` reads it
//! (each record used checked when read, every record of a segment without a known directory
//! checked, other runs' records skipped from their heads), then each
//! wanted record is decoded once into a small buffer of its own, to learn how many of its
//! points the query keeps and their steps as arithmetic runs, and the points are dropped.
//!
//! When each record's kept steps ascend and the records, ordered by first step, only touch (a
//! step shared by two records only at their ends, the earlier record first: the log of
//! `log_batch` calls of consecutive steps, whether their batches reached the log in step order
//! or, from several threads on several writer lanes, not), a run's points in history order are
//! its records one after another in that order. Their step runs, joined, are the run's: they
//! place any rank by counting, and a picked point is read again from its one record. For points
//! logged as columns records, nothing the size of the run's points is allocated and no point is
//! compared with another; points logged through streams (which have no stored length) are held
//! decoded, as the scan found them, until the sample is made.
//!
//! A columns record of a sealed segment read through its directory (`wal/directory.rs`) is
//! measured once per handle and key: the measure (its points' count and step runs over every
//! step) is kept in the directory, and a later sample over every step decodes, and checks the
//! frame and CRC of, only the records that hold a picked point.
//!
//! Invariants:
//! - The records, their order and the points each keeps are `series_log`'s (the same scan, key
//!   resolution and row filter), so `LogTail::history` equals what `read_series_tail` gives
//!   and `SortedTail::history` what `sorted_by_step` makes of it.
//! - Memory: per wanted record a few words and at most `RECORD_STEP_RUNS_MAX` step runs, and
//!   the bytes of the segments that hold wanted columns records (as `series_log` holds them);
//!   a record of more runs is marked as such and its run takes the general path.

use std::sync::Arc;

use rayon::prelude::*;

use super::history::History;
use super::series_log::{
    Item, Scanned, SeriesQuery, columns_payload, corrupt, corruption, decode_record, scan_all,
    stream_rows, wanted_key_ids,
};
use crate::compaction::{Manifest, StepRuns, StepRunsBuilder};
use crate::error::Result;
use crate::ids::{KeyId, RunId};
use crate::wal::directory::{Directory, Measure, SegmentDirectories};
use crate::wal::peek::ColumnsOut;
use crate::wal::record::FLAG_COMPRESSED;

/// Step runs one record's kept steps may take before its run is left to the general path (a
/// batch of consecutive steps takes one).
const RECORD_STEP_RUNS_MAX: usize = 16;
/// Step runs a run's whole tail may take (as `Store::sample_by_step_runs` allows a tail).
const TAIL_STEP_RUNS_MAX: usize = 4096;

/// The log's points of a query, per run: its records in log order, measured.
pub(super) struct LogTail<'q> {
    scanned: Vec<Scanned>,
    query: &'q SeriesQuery<'q>,
    slots: Vec<Vec<Record>>,
}

/// One record's points of a run (a columns record, or a stream's points of the run).
struct Record {
    source: Source,
    /// Points of the query it holds (at least one).
    kept: usize,
    /// Its kept steps as arithmetic runs, when they ascend in at most `RECORD_STEP_RUNS_MAX`.
    runs: Option<Vec<StepRun>>,
}

/// Steps `step`, `step + stride`, ... (`len` of them; stride at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StepRun {
    step: i64,
    stride: i64,
    len: u64,
}

impl StepRun {
    fn last(&self) -> i64 {
        // Made from steps that exist, so it does not overflow.
        self.step
            .wrapping_add(self.stride.wrapping_mul(self.len.saturating_sub(1) as i64))
    }
}

enum Source {
    /// A columns record, decoded again when its points are wanted.
    Columns {
        /// Its segment's index in `LogTail::scanned`.
        segment: usize,
        record_offset: u64,
        /// What to check the record against when it is decoded, if the first pass did not.
        unchecked: Option<(RunId, u8, usize)>,
        compressed: bool,
        point_count: usize,
        key_ids: Vec<KeyId>,
    },
    /// A stream's points of the run, already filtered.
    Points(History),
}

/// Decoding room for one record, reused across the records a thread decodes.
#[derive(Default)]
struct Scratch {
    steps: Vec<i64>,
    timestamps_ms: Vec<i64>,
    values: Vec<f64>,
}

/// Reads the log after `manifest`'s watermarks for `query` (whose slots are below
/// `slot_count`) and measures each wanted record.
pub(super) fn index_tail<'q>(
    root: &std::path::Path,
    manifest: &Manifest,
    directories: &SegmentDirectories,
    query: &'q SeriesQuery<'q>,
    slot_count: usize,
) -> Result<LogTail<'q>> {
    let scanned = scan_all(root, manifest, directories, query)?;
    let pending = sources(&scanned, manifest, query, slot_count)?;
    let measured: Vec<(usize, Option<Vec<StepRun>>)> = pending
        .par_iter()
        .map_init(Scratch::default, |scratch, (_, source)| {
            let known = known_measure(&scanned, query, source);
            if let Some(measure) = known
                .as_ref()
                .and_then(|(directory, offset, key_id)| directory.measure(*offset, *key_id))
            {
                return Ok(from_measure(&measure));
            }
            let kept = decode(&scanned, query, source, scratch)?;
            let steps = match source {
                Source::Points(points) => &points.steps[..],
                Source::Columns { .. } => &scratch.steps[..kept],
            };
            let runs = step_runs(steps);
            if let Some((directory, offset, key_id)) = known {
                directory.keep_measure(offset, key_id, to_measure(kept, runs.as_deref()));
            }
            Ok((kept, runs))
        })
        .collect::<Result<_>>()?;
    let mut slots: Vec<Vec<Record>> = (0..slot_count).map(|_| Vec::new()).collect();
    for ((slot, source), (kept, runs)) in pending.into_iter().zip(measured) {
        if kept > 0 {
            slots[slot].push(Record { source, kept, runs });
        }
    }
    Ok(LogTail {
        scanned,
        query,
        slots,
    })
}

/// Where a columns record's measure may be kept: its segment's directory, its offset and the
/// query's one key id, when the segment was read through a directory and the query takes
/// every step (a measure is of every step of one key).
fn known_measure<'s>(
    scanned: &'s [Scanned],
    query: &SeriesQuery<'_>,
    source: &Source,
) -> Option<(&'s Directory, u64, KeyId)> {
    let Source::Columns {
        segment,
        record_offset,
        key_ids,
        ..
    } = source
    else {
        return None;
    };
    let every_step = query.first_step == i64::MIN && query.last_step == i64::MAX;
    let directory = scanned.get(*segment)?.directory.as_deref()?;
    match key_ids.as_slice() {
        [key_id] if every_step => Some((directory, *record_offset, *key_id)),
        _ => None,
    }
}

fn from_measure(measure: &Measure) -> (usize, Option<Vec<StepRun>>) {
    let runs = measure.runs.as_deref().map(|runs| {
        (runs.iter())
            .map(|(step, stride, len)| StepRun {
                step: *step,
                stride: *stride,
                len: *len,
            })
            .collect()
    });
    (measure.kept, runs)
}

fn to_measure(kept: usize, runs: Option<&[StepRun]>) -> Measure {
    Measure {
        kept,
        runs: runs.map(|runs| {
            runs.iter()
                .map(|run| (run.step, run.stride, run.len))
                .collect()
        }),
    }
}

/// The wanted records of `scanned`, in log order, with their slots.
fn sources(
    scanned: &[Scanned],
    manifest: &Manifest,
    query: &SeriesQuery<'_>,
    slot_count: usize,
) -> Result<Vec<(usize, Source)>> {
    let wanted = wanted_key_ids(manifest, scanned, query);
    let mut sources = Vec::new();
    for (index, segment) in scanned.iter().enumerate() {
        let writer = segment.place.writer;
        for item in &segment.found.items {
            let (run, pieces): (_, Vec<Source>) = match item {
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
                    if segment.bytes.is_none() {
                        return Err(corrupt(&segment.place, *record_offset, "record moved"));
                    }
                    let source = Source::Columns {
                        segment: index,
                        record_offset: *record_offset,
                        unchecked: (!checked).then_some((*run, *flags, *point_count)),
                        compressed: flags & FLAG_COMPRESSED != 0,
                        point_count: *point_count,
                        key_ids: key_ids.clone(),
                    };
                    (*run, vec![source])
                }
                Item::Stream(batch) => {
                    let Some(key_ids) = wanted.get(&(writer, batch.run)) else {
                        continue;
                    };
                    let points = stream_rows(batch, key_ids, query);
                    let pieces = arithmetic_pieces(points).into_iter().map(Source::Points);
                    (batch.run, pieces.collect())
                }
            };
            match query.slots.get(&run) {
                Some(slot) if *slot < slot_count => {
                    sources.extend(pieces.into_iter().map(|source| (*slot, source)));
                }
                _ => {}
            }
        }
    }
    Ok(sources)
}

/// A stream's points of a run cut where their steps stop being one arithmetic run: a stream
/// record holds whatever its lane appended, so the points of several `log_batch` calls of the
/// run (keyed calls, and the server's `log-batch`), in the order the lane took them, not
/// necessarily step order. Each piece then orders as a batch does. Left whole when that takes
/// more than `RECORD_STEP_RUNS_MAX` pieces (irregular steps, for the general path anyway).
fn arithmetic_pieces(points: History) -> Vec<History> {
    let steps = &points.steps;
    let mut cuts = Vec::new();
    let mut start = 0;
    while start < steps.len() {
        let mut end = start + 1;
        let stride = steps
            .get(end)
            .and_then(|next| next.checked_sub(steps[start]));
        if let Some(stride) = stride.filter(|stride| *stride > 0) {
            while steps
                .get(end)
                .is_some_and(|step| steps[end - 1].checked_add(stride) == Some(*step))
            {
                end += 1;
            }
        }
        cuts.push(start..end);
        if cuts.len() > RECORD_STEP_RUNS_MAX {
            return vec![points];
        }
        start = end;
    }
    if cuts.len() <= 1 {
        return vec![points];
    }
    cuts.into_iter()
        .map(|cut| History {
            steps: points.steps[cut.clone()].to_vec(),
            timestamps_ms: points.timestamps_ms[cut.clone()].to_vec(),
            values: points.values[cut].to_vec(),
        })
        .collect()
}

/// Decodes a columns record's kept points into the front of `scratch` (a stream's points are
/// already decoded); how many it keeps.
fn decode(
    scanned: &[Scanned],
    query: &SeriesQuery<'_>,
    source: &Source,
    scratch: &mut Scratch,
) -> Result<usize> {
    let Source::Columns {
        segment,
        record_offset,
        unchecked,
        compressed,
        point_count,
        key_ids,
    } = source
    else {
        return Ok(match source {
            Source::Points(points) => points.len(),
            Source::Columns { .. } => 0,
        });
    };
    let segment = &scanned[*segment];
    let bytes = (segment.bytes.as_deref())
        .ok_or_else(|| corrupt(&segment.place, *record_offset, "record moved"))?;
    let payload = columns_payload(bytes, *record_offset, *unchecked)
        .map_err(|kind| corruption(&segment.place, *record_offset, kind))?;
    scratch.steps.resize(*point_count, 0);
    scratch.timestamps_ms.resize(*point_count, 0);
    scratch.values.resize(*point_count, 0.0);
    let out = ColumnsOut {
        steps: &mut scratch.steps,
        timestamps_ms: &mut scratch.timestamps_ms,
        values: &mut scratch.values,
    };
    decode_record(payload, *compressed, key_ids, query, out)
        .map_err(|kind| corruption(&segment.place, *record_offset, kind))
}

/// `steps` as arithmetic runs (a repeated step starts a new run), or `None` if they decrease
/// somewhere or need more than `RECORD_STEP_RUNS_MAX` runs.
fn step_runs(steps: &[i64]) -> Option<Vec<StepRun>> {
    let mut runs: Vec<StepRun> = Vec::new();
    let mut at = 0;
    while let Some(step) = steps.get(at).copied() {
        if runs.last().is_some_and(|run| step < run.last()) {
            return None;
        }
        let stride = match steps.get(at + 1) {
            Some(next) => next.checked_sub(step)?,
            None => 1,
        };
        if stride < 0 {
            return None;
        }
        let mut len = 1;
        if stride > 0 {
            while steps
                .get(at + len)
                .is_some_and(|next| steps[at + len - 1].checked_add(stride) == Some(*next))
            {
                len += 1;
            }
        }
        runs.push(StepRun {
            step,
            stride: stride.max(1),
            len: len as u64,
        });
        if runs.len() > RECORD_STEP_RUNS_MAX {
            return None;
        }
        at += len;
    }
    Some(runs)
}

impl<'q> LogTail<'q> {
    /// Whether the log holds no point of `slot`.
    pub(super) fn is_empty(&self, slot: usize) -> bool {
        self.slots.get(slot).is_none_or(Vec::is_empty)
    }

    /// The points of `slot` in history order as its records in order, or `None` when they
    /// are not that (see the module doc) or their steps take too many runs.
    pub(super) fn sorted(&self, slot: usize) -> Option<SortedTail<'_, 'q>> {
        let records = self.slots.get(slot).filter(|records| !records.is_empty())?;
        let mut spans = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let runs = record.runs.as_deref()?;
            let (first, last) = (runs.first()?.step, runs.last()?.last());
            spans.push((first, last, index));
        }
        // By first step, then log order (a stable sort).
        spans.sort_by_key(|(first, _, _)| *first);
        let touching_only = spans.windows(2).all(|pair| {
            let ((_, last, before), (first, _, after)) = (pair[0], pair[1]);
            last < first || (last == first && before < after)
        });
        if !touching_only {
            return None;
        }
        let mut builder = StepRunsBuilder::new(TAIL_STEP_RUNS_MAX);
        let mut order = Vec::with_capacity(spans.len());
        let mut starts = Vec::with_capacity(spans.len());
        let mut total = 0usize;
        for (_, _, index) in spans {
            let record = &records[index];
            for run in record.runs.as_deref()? {
                builder.push_run(run.step, run.stride, run.len);
            }
            order.push(index);
            starts.push(total);
            total += record.kept;
        }
        let runs = builder
            .finish()
            .filter(|runs| runs.rows() == total as u64)?;
        Some(SortedTail {
            tail: self,
            slot,
            order,
            starts,
            runs: Arc::new(runs),
            total,
        })
    }

    /// The points of `slot` in log order, and the lengths of the records they come from: what
    /// `read_series_tail` gives for the slot.
    pub(super) fn history(&self, slot: usize) -> Result<(History, Vec<usize>)> {
        let records = self.slots.get(slot).map_or(&[][..], Vec::as_slice);
        let history = self.concatenated(records.iter())?;
        Ok((history, records.iter().map(|record| record.kept).collect()))
    }

    /// The kept points of `records`, one after another.
    fn concatenated<'r>(&self, records: impl Iterator<Item = &'r Record>) -> Result<History> {
        let mut history = History::default();
        let mut scratch = Scratch::default();
        for record in records {
            let kept = decode(&self.scanned, self.query, &record.source, &mut scratch)?;
            let (steps, timestamps_ms, values) = match &record.source {
                Source::Points(points) => (
                    &points.steps[..],
                    &points.timestamps_ms[..],
                    &points.values[..],
                ),
                Source::Columns { .. } => (
                    &scratch.steps[..kept],
                    &scratch.timestamps_ms[..kept],
                    &scratch.values[..kept],
                ),
            };
            history.steps.extend_from_slice(steps);
            history.timestamps_ms.extend_from_slice(timestamps_ms);
            history.values.extend_from_slice(values);
        }
        Ok(history)
    }
}

/// A run's log points in history order, as its records in an order (`LogTail::sorted`).
pub(super) struct SortedTail<'t, 'q> {
    tail: &'t LogTail<'q>,
    slot: usize,
    /// The run's records (indexes into its slot), in history order.
    order: Vec<usize>,
    /// Each record's first offset in that order.
    starts: Vec<usize>,
    /// The steps of the points in that order.
    pub(super) runs: Arc<StepRuns>,
    /// Points.
    pub(super) total: usize,
}

impl SortedTail<'_, '_> {
    /// The points at `offsets` (ascending, each below `total`) in history order: step,
    /// timestamp, value. Each record that holds one is decoded once.
    pub(super) fn points(&self, offsets: &[u64]) -> Result<Vec<(i64, i64, f64)>> {
        let records = self.records();
        let mut points = Vec::with_capacity(offsets.len());
        let mut scratch = Scratch::default();
        let mut decoded: Option<usize> = None;
        for offset in offsets {
            let Ok(offset) = usize::try_from(*offset) else {
                break;
            };
            let Some(position) = self
                .starts
                .partition_point(|start| *start <= offset)
                .checked_sub(1)
            else {
                break;
            };
            let (Some(index), Some(start)) = (self.order.get(position), self.starts.get(position))
            else {
                break;
            };
            let Some(record) = records.get(*index) else {
                break;
            };
            let within = offset - start;
            let point = match &record.source {
                Source::Points(points) => points.point(within),
                Source::Columns { .. } => {
                    if decoded != Some(*index) {
                        decode(
                            &self.tail.scanned,
                            self.tail.query,
                            &record.source,
                            &mut scratch,
                        )?;
                        decoded = Some(*index);
                    }
                    (within < record.kept).then(|| super::history::Point {
                        step: scratch.steps[within],
                        timestamp_ms: scratch.timestamps_ms[within],
                        value: scratch.values[within],
                    })
                }
            };
            let Some(point) = point else {
                break;
            };
            points.push((point.step, point.timestamp_ms, point.value));
        }
        Ok(points)
    }

    /// The run's log points in history order, read whole (for the paths that need every
    /// step).
    pub(super) fn history(&self) -> Result<History> {
        let records = self.records();
        let ordered = self.order.iter().filter_map(|index| records.get(*index));
        self.tail.concatenated(ordered)
    }

    fn records(&self) -> &[Record] {
        self.tail
            .slots
            .get(self.slot)
            .map_or(&[][..], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::{History, RECORD_STEP_RUNS_MAX, StepRun, arithmetic_pieces, step_runs};

    fn points(steps: &[i64]) -> History {
        History {
            steps: steps.to_vec(),
            timestamps_ms: (0..steps.len() as i64).collect(),
            values: steps.iter().map(|s| *s as f64).collect(),
        }
    }

    #[test]
    fn a_streams_points_are_cut_where_their_steps_stop_being_one_run() {
        let pieces = arithmetic_pieces(points(&[10, 11, 12, 0, 1, 2, 2, 7]));
        let steps: Vec<Vec<i64>> = pieces.iter().map(|piece| piece.steps.clone()).collect();
        assert_eq!(steps, [vec![10, 11, 12], vec![0, 1, 2], vec![2, 7]]);
        let timestamps: Vec<i64> = pieces
            .iter()
            .flat_map(|p| p.timestamps_ms.clone())
            .collect();
        assert_eq!(timestamps, (0..8).collect::<Vec<_>>());
        assert_eq!(arithmetic_pieces(points(&[4, 6, 8])), [points(&[4, 6, 8])]);
        assert_eq!(arithmetic_pieces(points(&[])), [points(&[])]);
        // Too many pieces: left whole, for the general path.
        let irregular: Vec<i64> = (0..RECORD_STEP_RUNS_MAX as i64 * 4)
            .map(|i| i * i)
            .collect();
        assert_eq!(arithmetic_pieces(points(&irregular)), [points(&irregular)]);
    }

    fn run(step: i64, stride: i64, len: u64) -> StepRun {
        StepRun { step, stride, len }
    }

    #[test]
    fn a_record_of_steps_is_arithmetic_runs() {
        assert_eq!(step_runs(&[]), Some(vec![]));
        assert_eq!(step_runs(&[4]), Some(vec![run(4, 1, 1)]));
        assert_eq!(step_runs(&[0, 1, 2, 3]), Some(vec![run(0, 1, 4)]));
        assert_eq!(
            step_runs(&[0, 2, 4, 5, 5, 6]),
            Some(vec![run(0, 2, 3), run(5, 1, 1), run(5, 1, 2)])
        );
        assert_eq!(step_runs(&[3, 3]), Some(vec![run(3, 1, 1), run(3, 1, 1)]));
        assert_eq!(step_runs(&[0, 1, 0]), None);
        // A stride past i64 is no run: the general path takes such a record.
        assert_eq!(step_runs(&[i64::MIN, i64::MAX]), None);
        let irregular: Vec<i64> = (0..RECORD_STEP_RUNS_MAX as i64 * 3)
            .map(|i| i * i)
            .collect();
        assert_eq!(step_runs(&irregular), None);
    }
}
