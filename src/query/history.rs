//! Metric history: every point of one series, a step range of it, or a downsampled view for
//! charts, and the same downsampling aligned across runs.
//!
//! Source: the compacted Parquet files the manifest lists (only the series' own rows and three
//! columns; for a step range only the rows in it, located by `compaction::read_series`), then
//! the log after each writer's watermark. Points come back sorted by step, each
//! step's points in logging order (a stable sort), so repeated steps are all kept.
//!
//! Downsampling divides the step range of the selected points into at most `max_points`
//! buckets of equal width; each non-empty bucket reports its point count, min and max (NaN
//! ignored) and its last point (greatest step, then last logged), and the first and last points
//! of the series are always reported as such. A 10-million-point curve asked for 1,000 points
//! comes back as at most 1,000 buckets.

use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};

use crate::error::{Error, Result};
use crate::ids::RunId;
use crate::tracking::Store;

/// One point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Step.
    pub step: i64,
    /// Timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Value (bit-exact).
    pub value: f64,
}

/// The points of one series, column by column, sorted by step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Steps.
    pub steps: Vec<i64>,
    /// Timestamps, ms.
    pub timestamps_ms: Vec<i64>,
    /// Values.
    pub values: Vec<f64>,
}

impl History {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Point `index`.
    pub fn point(&self, index: usize) -> Option<Point> {
        Some(Point {
            step: *self.steps.get(index)?,
            timestamp_ms: self.timestamps_ms[index],
            value: self.values[index],
        })
    }

    /// The points as an Arrow record batch: `step` (int64), `timestamp` (int64 ms), `value`
    /// (float64), the columns of the `metrics` export table.
    #[cfg(feature = "parquet")]
    pub fn to_record_batch(&self) -> Result<arrow_array::RecordBatch> {
        use std::sync::Arc;

        use arrow_array::{Float64Array, Int64Array};
        use arrow_schema::{DataType, Field, Schema};
        let schema = Schema::new(vec![
            Field::new("step", DataType::Int64, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]);
        arrow_array::RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(self.steps.clone())),
                Arc::new(Int64Array::from(self.timestamps_ms.clone())),
                Arc::new(Float64Array::from(self.values.clone())),
            ],
        )
        .map_err(|e| Error::InvalidInput(format!("building a history batch: {e}")))
    }
}

/// One bucket of a downsampled series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// First step the bucket covers.
    pub step_start: i64,
    /// Last step it covers (inclusive).
    pub step_end: i64,
    /// Points in it.
    pub count: u64,
    /// Smallest non-NaN value (NaN if all are NaN).
    pub min: f64,
    /// Largest non-NaN value (NaN if all are NaN).
    pub max: f64,
    /// The bucket's last point: greatest step, then last logged.
    pub last: Point,
}

/// A downsampled series: buckets, plus its first and last points, always kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Downsampled {
    /// The first point (smallest step, first logged).
    pub first: Option<Point>,
    /// The last point (greatest step, last logged).
    pub last: Option<Point>,
    /// Non-empty buckets in step order.
    pub buckets: Vec<Bucket>,
    /// Points summarized.
    pub points: u64,
}

impl Store {
    /// The points of `key` of `run` whose step is in `steps` (e.g. `..`, `1000..2000`).
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// for step in 0..100 {
    ///     run.log_metric("loss", 1.0 / (step + 1) as f64, step)?;
    /// }
    /// let range = store.history(run.id(), "loss", 10..20)?;
    /// assert_eq!(range.steps, (10..20).collect::<Vec<_>>());
    /// # Ok(())
    /// # }
    /// ```
    pub fn history(
        &self,
        run: RunId,
        key: &str,
        steps: impl RangeBounds<i64> + Sync,
    ) -> Result<History> {
        let mut histories = self.histories(&[run], key, &steps)?;
        Ok(histories.pop().unwrap_or_default())
    }

    /// The points of `key` of each of `runs` whose step is in `steps`, in the order of `runs`:
    /// what [`history`](Store::history) gives for each, read in one pass over the log for all
    /// of them. `NotFound` if a run does not exist.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let experiment = store.get_or_create_experiment("e")?.id;
    /// let (a, b) = (store.start_run(experiment, Default::default())?, store.start_run(experiment, Default::default())?);
    /// for step in 0..10 {
    ///     a.log_metric("loss", 1.0, step)?;
    ///     b.log_metric("loss", 2.0, step * 2)?;
    /// }
    /// let both = store.history_of_runs(&[a.id(), b.id()], "loss", 5..=10)?;
    /// assert_eq!(both[0].steps, [5, 6, 7, 8, 9]);
    /// assert_eq!(both[1].steps, [6, 8, 10]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn history_of_runs(
        &self,
        runs: &[RunId],
        key: &str,
        steps: impl RangeBounds<i64> + Sync,
    ) -> Result<Vec<History>> {
        self.histories(runs, key, &steps)
    }

    /// `key` of `run` in at most `max_points` buckets over the step axis (see the module doc).
    pub fn history_downsampled(
        &self,
        run: RunId,
        key: &str,
        steps: impl RangeBounds<i64> + Sync,
        max_points: usize,
    ) -> Result<Downsampled> {
        let history = self.history(run, key, steps)?;
        downsample(&history, max_points)
    }

    /// `key` of several runs, each downsampled over the same step buckets (the union of their
    /// step ranges), so charts and tables line up step for step.
    pub fn compare_aligned(
        &self,
        runs: &[RunId],
        key: &str,
        steps: impl RangeBounds<i64> + Sync,
        buckets: usize,
    ) -> Result<Vec<(RunId, Downsampled)>> {
        let histories = self.histories(runs, key, &steps)?;
        let first = histories
            .iter()
            .filter_map(|h| h.steps.first())
            .min()
            .copied();
        let last = histories
            .iter()
            .filter_map(|h| h.steps.last())
            .max()
            .copied();
        use rayon::prelude::*;
        runs.par_iter()
            .zip(&histories)
            .map(|(run, history)| {
                let span = first.zip(last);
                downsample_over(history, buckets, span).map(|d| (*run, d))
            })
            .collect()
    }

    /// `histories_once`, retried when a concurrent compaction removed a file, manifest or
    /// segment the call had chosen: the retry loads the newer manifest. A run named more than
    /// once is read once and its history given at each place it was named.
    fn histories(
        &self,
        runs: &[RunId],
        key: &str,
        steps: &(impl RangeBounds<i64> + Sync),
    ) -> Result<Vec<History>> {
        let mut unique: Vec<RunId> = Vec::with_capacity(runs.len());
        let mut slot_of: HashMap<RunId, usize> = HashMap::with_capacity(runs.len());
        for run in runs {
            slot_of.entry(*run).or_insert_with(|| {
                unique.push(*run);
                unique.len() - 1
            });
        }
        let read = crate::compaction::retry_stale(|| self.histories_once(&unique, key, steps))?;
        if unique.len() == runs.len() {
            return Ok(read);
        }
        Ok(runs
            .iter()
            .map(|run| {
                slot_of
                    .get(run)
                    .and_then(|slot| read.get(*slot))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
    }

    /// The histories of `key` for each of `runs`, in order; `NotFound` for an unknown run.
    /// Compacted points come from the manifest's files (only the series' own rows), the rest
    /// from the log after each writer's watermark; a series' compacted points precede its
    /// uncompacted ones, so logging order within a step holds.
    fn histories_once(
        &self,
        runs: &[RunId],
        key: &str,
        steps: &(impl RangeBounds<i64> + Sync),
    ) -> Result<Vec<History>> {
        self.check_runs_exist(runs)?;
        let root = self.root();
        let manifest = self.manifests().newest(root)?;
        let index: HashMap<RunId, usize> = runs.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        // Read in parallel, then appended in manifest (generation) order so each run's points
        // keep their order.
        let jobs = compacted_series(&manifest, &index, key, steps);
        let parts: Vec<(usize, History, bool)> = {
            use rayon::prelude::*;
            jobs.par_iter()
                .map(|(slot, file, series)| {
                    let mut part = History::default();
                    let ascending = read_compacted(self, file, series, steps, &mut part)
                        .map_err(|e| crate::compaction::missing_or_stale(root, &manifest, e))?;
                    Ok((*slot, part, ascending))
                })
                .collect::<Result<_>>()?
        };
        let mut histories = vec![History::default(); runs.len()];
        // Whether each history is known to ascend by step: one compacted part whose decoder
        // tested its steps, and nothing added after it.
        let mut ascending = vec![false; runs.len()];
        // Each history's pieces in order: its compacted parts, then its log records.
        let mut pieces: Vec<Vec<usize>> = vec![Vec::new(); runs.len()];
        for (slot, part, part_ascending) in parts {
            pieces[slot].push(part.len());
            let history = &mut histories[slot];
            if history.is_empty() {
                *history = part;
                ascending[slot] = part_ascending;
                continue;
            }
            ascending[slot] = false;
            history.steps.extend(part.steps);
            history.timestamps_ms.extend(part.timestamps_ms);
            history.values.extend(part.values);
        }
        let compacted_points: Vec<usize> = histories.iter().map(History::len).collect();
        read_tail(
            self,
            &manifest,
            &index,
            key,
            steps,
            &mut histories,
            &mut pieces,
        )?;
        crate::compaction::check_still_newest(root, &manifest)?;
        use rayon::prelude::*;
        Ok(histories
            .into_par_iter()
            .zip(ascending)
            .zip(compacted_points)
            .zip(pieces)
            .map(|(((history, ascending), points), pieces)| {
                if ascending && history.len() == points {
                    history
                } else {
                    sorted_by_step(history, &pieces)
                }
            })
            .collect())
    }
}

impl Store {
    /// `NotFound` naming the first of `runs` that does not exist, after one refresh for the
    /// whole call; an existence check that copies nothing out.
    pub(super) fn check_runs_exist(&self, runs: &[RunId]) -> Result<()> {
        let all_known = || {
            runs.iter()
                .all(|run| self.catalog().has_run(*run))
                .then_some(())
        };
        if self.lookup_fresh(all_known)?.is_none()
            && let Some(missing) = runs.iter().find(|run| !self.catalog().has_run(**run))
        {
            return Err(Error::NotFound(format!("run {missing}")));
        }
        Ok(())
    }

    /// Those of `runs` that exist, in order, after one refresh for the whole call (and one
    /// more if any is unknown, as a lookup of that run alone would make): what filtering
    /// `runs` by [`run`](Store::run) gives, without copying a run out of the catalog.
    pub(crate) fn existing_runs(&self, runs: &[RunId]) -> Result<Vec<RunId>> {
        let all_known = || {
            runs.iter()
                .all(|run| self.catalog().has_run(*run))
                .then_some(())
        };
        self.lookup_fresh(all_known)?;
        Ok(runs
            .iter()
            .copied()
            .filter(|run| self.catalog().has_run(*run))
            .collect())
    }
}

/// A compacted series to read and the slot of its run.
pub(super) type SeriesJob<'a> = (
    usize,
    &'a crate::compaction::CompactedFile,
    &'a crate::compaction::SeriesRows,
);

/// The compacted series of `key` of the runs in `index` whose step span meets `steps`, in
/// manifest (generation) order.
pub(super) fn compacted_series<'a>(
    manifest: &'a crate::compaction::Manifest,
    index: &HashMap<RunId, usize>,
    key: &str,
    steps: &impl RangeBounds<i64>,
) -> Vec<SeriesJob<'a>> {
    manifest
        .files
        .iter()
        .flat_map(|file| file.series.iter().map(move |series| (file, series)))
        .filter(|(_, series)| {
            *series.key == *key && overlaps(steps, series.first_step, series.last_step)
        })
        .filter_map(|(file, series)| index.get(&series.run).map(|slot| (*slot, file, series)))
        .collect()
}

/// Appends the points of `key` in `steps` that the log holds after `manifest`'s watermarks to
/// the history of each run of `index`, in log order, and the lengths of their pieces (the
/// points of one record each) to `pieces` (see `series_log.rs`).
pub(super) fn read_tail(
    store: &Store,
    manifest: &crate::compaction::Manifest,
    index: &HashMap<RunId, usize>,
    key: &str,
    steps: &impl RangeBounds<i64>,
    histories: &mut [History],
    pieces: &mut [Vec<usize>],
) -> Result<()> {
    // An empty range still reads the log, so that damage is reported whatever the range.
    let (first_step, last_step) = inclusive(steps).unwrap_or((1, 0));
    let query = super::series_log::SeriesQuery {
        slots: index,
        key,
        first_step,
        last_step,
    };
    let directories = store.segment_directories();
    super::series_log::read_series_tail(
        store.root(),
        manifest,
        directories,
        &query,
        histories,
        pieces,
    )
}

/// `steps` as an inclusive range, `None` if it holds no step.
pub(crate) fn inclusive(steps: &impl RangeBounds<i64>) -> Option<(i64, i64)> {
    let first = match steps.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => i64::MIN,
    };
    let last = match steps.end_bound() {
        Bound::Included(e) => *e,
        Bound::Excluded(e) => e.checked_sub(1)?,
        Bound::Unbounded => i64::MAX,
    };
    (first <= last).then_some((first, last))
}

pub(super) fn overlaps(steps: &impl RangeBounds<i64>, first: i64, last: i64) -> bool {
    let after_start = match steps.start_bound() {
        Bound::Included(s) => last >= *s,
        Bound::Excluded(s) => last > *s,
        Bound::Unbounded => true,
    };
    let before_end = match steps.end_bound() {
        Bound::Included(e) => first <= *e,
        Bound::Excluded(e) => first < *e,
        Bound::Unbounded => true,
    };
    after_start && before_end
}

/// Appends the points of `series` in `steps` to `history`; returns whether the history's
/// steps are known to ascend (tested while they were decoded; `false` when not tested).
#[cfg(feature = "parquet")]
fn read_compacted(
    store: &Store,
    file: &crate::compaction::CompactedFile,
    series: &crate::compaction::SeriesRows,
    steps: &impl RangeBounds<i64>,
    history: &mut History,
) -> Result<bool> {
    let cache = &store.compacted_metadata();
    let root = store.root();
    // A range that covers the series' whole step span keeps every point without testing each,
    // and a history that starts with them takes the columns they are decoded into.
    let whole = steps.contains(&series.first_step) && steps.contains(&series.last_step);
    if whole && history.is_empty() {
        let read = crate::compaction::read_whole_series(root, file, series, cache)?;
        (history.steps, history.timestamps_ms, history.values) = read.columns;
        return Ok(read.ascending);
    }
    let mut columns = (
        std::mem::take(&mut history.steps),
        std::mem::take(&mut history.timestamps_ms),
        std::mem::take(&mut history.values),
    );
    let keep = if whole {
        crate::compaction::Keep::All
    } else {
        match inclusive(steps) {
            Some((first, last)) => crate::compaction::Keep::Steps { first, last },
            None => return Ok(false),
        }
    };
    let result = crate::compaction::read_series(root, file, series, keep, &mut columns, cache);
    (history.steps, history.timestamps_ms, history.values) = columns;
    result.map(|()| false)
}

#[cfg(not(feature = "parquet"))]
fn read_compacted(
    _: &Store,
    file: &crate::compaction::CompactedFile,
    _: &crate::compaction::SeriesRows,
    _: &impl RangeBounds<i64>,
    _: &mut History,
) -> Result<bool> {
    Err(Error::InvalidInput(format!(
        "{} is compacted Parquet; this build of runlog has no parquet feature",
        file.path
    )))
}

/// `history` sorted by step, stably (each step's points keep their order), given the lengths of
/// the pieces it is the concatenation of (consecutive, covering it; any cut is correct, and
/// one that follows its sorted stretches is fast). When each piece ascends and the pieces,
/// ordered by first step, only touch (a step shared by two pieces only at their ends, the
/// earlier piece first), the sort is that order of the pieces, copied as blocks: the points of
/// log records whose batches reached the log out of step order (`log_batch` calls from several
/// threads, on several writer lanes) are put in order without comparing points.
pub(super) fn sorted_by_step(history: History, pieces: &[usize]) -> History {
    if ascending(&history.steps) {
        return history;
    }
    match block_order(&history.steps, pieces) {
        Some(blocks) => moved_in_blocks(&history, &blocks),
        None => sorted_point_by_point(history),
    }
}

/// Blocks a sort may move before the point-by-point sort is the cheaper one.
const BLOCKS_MAX: usize = 1 << 16;

/// The pieces' ranges in sorted order, if the sort is an order of the pieces (see
/// `sorted_by_step`); `None` if not, or if `pieces` do not cover `steps` exactly. A piece whose
/// steps go back (a stream record holding several `log_batch` calls of a run, in the order its
/// lane took them) is first cut into its ascending runs, which order as pieces do.
fn block_order(steps: &[i64], pieces: &[usize]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut whole = Vec::with_capacity(pieces.len());
    let mut start = 0usize;
    for length in pieces.iter().filter(|length| **length > 0) {
        let end = start.checked_add(*length)?;
        whole.push(start..end);
        start = end;
    }
    if start != steps.len() {
        return None;
    }
    use rayon::prelude::*;
    let ascends: Vec<bool> = whole
        .par_iter()
        .map(|range| ascending_serial(steps.get(range.clone()).unwrap_or_default()))
        .collect();
    let mut ranges = Vec::with_capacity(whole.len());
    for (range, ascends) in whole.into_iter().zip(ascends) {
        if ascends {
            ranges.push(range);
        } else {
            let mut run_start = range.start;
            for at in range.start + 1..range.end {
                if steps[at] < steps[at - 1] {
                    ranges.push(run_start..at);
                    run_start = at;
                }
            }
            ranges.push(run_start..range.end);
        }
        if ranges.len() > BLOCKS_MAX {
            return None;
        }
    }
    // By first step, then place in the history (a stable sort of the ranges).
    ranges.sort_by_key(|range| steps[range.start]);
    let touching_only = ranges.windows(2).all(|pair| {
        let (last, first) = (steps[pair[0].end - 1], steps[pair[1].start]);
        last < first || (last == first && pair[0].start < pair[1].start)
    });
    touching_only.then_some(ranges)
}

/// The points of `blocks` (ranges of `history` covering it), one after another: copied block
/// by block on all cores into columns allocated once and mapped in part by part.
fn moved_in_blocks(history: &History, blocks: &[std::ops::Range<usize>]) -> History {
    let length = history.len();
    let mut sorted = History {
        steps: vec![0; length],
        timestamps_ms: vec![0; length],
        values: vec![0.0; length],
    };
    let mut jobs = Vec::with_capacity(blocks.len());
    let (mut steps, mut timestamps, mut values) = (
        sorted.steps.as_mut_slice(),
        sorted.timestamps_ms.as_mut_slice(),
        sorted.values.as_mut_slice(),
    );
    for block in blocks {
        let size = block.len();
        let (steps_out, steps_rest) = std::mem::take(&mut steps).split_at_mut(size);
        let (timestamps_out, timestamps_rest) = std::mem::take(&mut timestamps).split_at_mut(size);
        let (values_out, values_rest) = std::mem::take(&mut values).split_at_mut(size);
        (steps, timestamps, values) = (steps_rest, timestamps_rest, values_rest);
        jobs.push((block.clone(), steps_out, timestamps_out, values_out));
    }
    use rayon::prelude::*;
    jobs.into_par_iter()
        .for_each(|(block, steps, timestamps, values)| {
            crate::util::prefault(steps);
            crate::util::prefault(timestamps);
            crate::util::prefault(values);
            steps.copy_from_slice(&history.steps[block.clone()]);
            timestamps.copy_from_slice(&history.timestamps_ms[block.clone()]);
            values.copy_from_slice(&history.values[block]);
        });
    sorted
}

/// `history` sorted by step, stably, point by point.
fn sorted_point_by_point(history: History) -> History {
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.sort_by_key(|i| history.steps[*i]);
    History {
        steps: order.iter().map(|i| history.steps[*i]).collect(),
        timestamps_ms: order.iter().map(|i| history.timestamps_ms[*i]).collect(),
        values: order.iter().map(|i| history.values[*i]).collect(),
    }
}

/// Whether `steps` ascend: the test every read makes before it would sort, so over all cores
/// in chunks (a 10 M-point history is 80 MB of steps), each compared without an early exit so
/// that the comparison vectorizes.
fn ascending(steps: &[i64]) -> bool {
    /// Steps one task compares: 2 MB, large beside a task's setup.
    const CHUNK_STEPS: usize = 256 * 1024;
    use rayon::prelude::*;
    steps
        .par_chunks(CHUNK_STEPS)
        .enumerate()
        .all(|(index, chunk)| {
            let previous = (index * CHUNK_STEPS).checked_sub(1);
            let joined = previous
                .and_then(|previous| steps.get(previous))
                .zip(chunk.first())
                .is_none_or(|(last, first)| last <= first);
            joined && ascending_serial(chunk)
        })
}

/// Whether `steps` ascend, on this thread, without an early exit so that it vectorizes.
fn ascending_serial(steps: &[i64]) -> bool {
    (steps.iter().zip(steps.iter().skip(1))).fold(true, |ok, (a, b)| ok & (a <= b))
}

/// Downsamples a step-sorted history over its own step range.
pub fn downsample(history: &History, max_points: usize) -> Result<Downsampled> {
    let span = history
        .steps
        .first()
        .copied()
        .zip(history.steps.last().copied());
    downsample_over(history, max_points, span)
}

fn downsample_over(
    history: &History,
    max_points: usize,
    span: Option<(i64, i64)>,
) -> Result<Downsampled> {
    if max_points == 0 {
        return Err(Error::InvalidInput(
            "max_points must be at least 1".to_string(),
        ));
    }
    let mut out = Downsampled {
        first: history.point(0),
        last: history.len().checked_sub(1).and_then(|i| history.point(i)),
        buckets: Vec::new(),
        points: history.len() as u64,
    };
    let Some((start, end)) = span else {
        return Ok(out);
    };
    // Width in steps, rounded up so `max_points` buckets cover the span; i128 avoids overflow on
    // extreme steps.
    let span_steps = i128::from(end) - i128::from(start) + 1;
    let width = (span_steps + max_points as i128 - 1) / max_points as i128;
    let (steps, values) = (&history.steps[..], &history.values[..]);
    let mut i = 0;
    while i < steps.len() {
        // Points come sorted by step, so a bucket is a run of points: one 128-bit division (a
        // slow libcall) per bucket, then one sequential pass over its points (a binary search
        // for the bucket's end cost more, in cache misses, than the pass it saved).
        let bucket = (i128::from(steps[i]) - i128::from(start)) / width;
        let step_start = i128::from(start) + bucket * width;
        let step_end = (step_start + width - 1).min(i128::from(end)) as i64;
        let (mut min, mut max) = (values[i], values[i]);
        let mut j = i + 1;
        while j < steps.len() && steps[j] <= step_end {
            let value = values[j];
            if !value.is_nan() {
                if min.is_nan() || value < min {
                    min = value;
                }
                if max.is_nan() || value > max {
                    max = value;
                }
            }
            j += 1;
        }
        // Sorted by step, logging order within a step: the bucket's last point is its latest.
        let last = history.point(j - 1).unwrap_or(Point {
            step: steps[j - 1],
            timestamp_ms: 0,
            value: values[j - 1],
        });
        out.buckets.push(Bucket {
            step_start: step_start as i64,
            step_end,
            count: (j - i) as u64,
            min,
            max,
            last,
        });
        i = j;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{History, block_order, sorted_by_step, sorted_point_by_point};
    use crate::util::TestRng as Rng;

    /// Pieces of steps as log records hold them: mostly batches of consecutive steps delivered
    /// out of order, sometimes a repeated step at a batch's edge or inside it, sometimes a
    /// batch logged again or going backwards, so that both the block path and its fallback
    /// are taken.
    fn random_pieces(rng: &mut Rng) -> (History, Vec<usize>) {
        let batches = 1 + rng.below(12) as usize;
        let width = 1 + rng.below(6) as i64;
        let mut order: Vec<i64> = (0..batches as i64).collect();
        for index in (1..order.len()).rev() {
            order.swap(index, rng.below(index as u64 + 1) as usize);
        }
        let (mut history, mut pieces) = (History::default(), Vec::new());
        for batch in order {
            let mut steps: Vec<i64> = (batch * width..(batch + 1) * width).collect();
            match rng.below(12) {
                0 => steps.push(steps[steps.len() - 1]),
                1 => steps.insert(0, batch * width - 1),
                2 => steps.reverse(),
                3 => steps.push((batch + 1) * width),
                _ => {}
            }
            pieces.push(steps.len());
            for step in steps {
                history.timestamps_ms.push(history.len() as i64);
                history.values.push(rng.below(1000) as f64);
                history.steps.push(step);
            }
        }
        // A cut of the same points into other pieces sorts them as well.
        if rng.below(4) == 0 {
            pieces = vec![history.len()];
        }
        (history, pieces)
    }

    #[test]
    fn a_sort_by_pieces_is_the_stable_sort_of_the_points() {
        let mut rng = Rng::from_env("a_sort_by_pieces_is_the_stable_sort_of_the_points");
        for _ in 0..2_000 {
            let (history, pieces) = random_pieces(&mut rng);
            let expected = sorted_point_by_point(history.clone());
            assert_eq!(
                sorted_by_step(history.clone(), &pieces),
                expected,
                "{pieces:?}"
            );
        }
    }

    /// The block path is taken where it applies, not only correct where it is: batches of
    /// consecutive steps that reached one piece out of order are cut at the step that goes
    /// back, and a step shared at two blocks' edges keeps log order.
    #[test]
    fn a_piece_whose_steps_go_back_is_cut_into_blocks() {
        assert_eq!(block_order(&[3, 4, 0, 1, 2], &[5]), Some(vec![2..5, 0..2]));
        // Step 2 shared by the edges of two blocks, the earlier-logged one first.
        assert_eq!(
            block_order(&[5, 6, 0, 1, 2, 2, 3, 4], &[2, 3, 3]),
            Some(vec![2..5, 5..8, 0..2])
        );
        // The same, with the later-logged block's 2 needed first: no order of blocks.
        assert_eq!(block_order(&[2, 3, 0, 1, 2], &[2, 3]), None);
        assert_eq!(block_order(&[2, 3, 0, 1, 2], &[5]), None);
        // Runs that overlap.
        assert_eq!(block_order(&[0, 2, 1, 3], &[4]), None);
    }

    #[test]
    fn pieces_that_do_not_cover_the_history_fall_back_to_the_point_sort() {
        let history = History {
            steps: vec![3, 4, 0, 1],
            timestamps_ms: vec![0, 1, 2, 3],
            values: vec![0.0; 4],
        };
        let sorted = sorted_by_step(history.clone(), &[2]);
        assert_eq!(sorted.steps, [0, 1, 3, 4]);
        assert_eq!(sorted.timestamps_ms, [2, 3, 0, 1]);
        assert_eq!(sorted_by_step(history, &[2, 2]).timestamps_ms, [2, 3, 0, 1]);
    }
}
