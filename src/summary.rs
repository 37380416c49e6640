//! What the catalog and compaction both know of a metric series: the per-series summary the
//! catalog keeps for every (run, key), enough to answer "latest metrics" and "compare runs"
//! without reading history, and the [`WriterMark`] a manifest records for each compacted writer.
//! A leaf below `catalog`, `compaction` and the log's replay, so none depends on another (it
//! imports only the ids, the limits and the id hasher): [`CompactedSummaries`] is how the
//! catalog reads a manifest's summaries without knowing the manifest, and [`ReplaySummaries`]
//! is how it takes the points a replay of the log read without their being materialised.
//!
//! Invariant: every update is commutative (order-independent): count and min/max obviously; the
//! latest value is the point with the greatest (step, timestamp, value), MLflow's rule, with
//! values ordered by `f64::total_cmp`; min/max ignore NaN, order values by `f64::total_cmp` too
//! (so -0.0 is below +0.0: IEEE's `==` would make their tie at one step order-dependent) and
//! break ties by the smaller step.
//! (The running sum behind the mean is the one exception: floating-point rounding depends on
//! the order of additions, so means from different replay orders agree to rounding only.)
//! So replaying writers in any order gives the same summary.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crate::ids::{KeyId, RunId, SegmentSequence, WriterId};
use crate::limits::KEYS_PER_RUN_MAX;
use crate::util::IdHash;

/// How far one writer's log is compacted, and the keys its later points may refer to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriterMark {
    /// Every segment up to this one is compacted.
    pub through: Option<SegmentSequence>,
    /// Its final segment is compacted: the writer has nothing more to compact.
    pub finished: bool,
    /// Key ids interned in compacted segments, for points in later ones.
    pub keys: BTreeMap<(RunId, KeyId), String>,
    /// Per series, the summary of this writer's compacted points.
    pub summaries: BTreeMap<(RunId, String), MetricSummary>,
}

/// Where the summaries of compacted writers' points are found, run by run: the catalog adopts
/// a compacted writer by reference and takes a run's summaries only when a read first needs
/// that run's metrics, so an open costs nothing per compacted series.
pub(crate) trait CompactedSummaries: Send + Sync + std::fmt::Debug {
    /// Calls `each` with the key and summary of every series of `run` among `writer`'s
    /// compacted points, each series once.
    fn each_of_run(&self, writer: WriterId, run: RunId, each: &mut dyn FnMut(&str, &MetricSummary));
}

impl WriterMark {
    /// The distinct runs of this mark's summaries, ascending; one tree search per run, not
    /// one step per series.
    pub fn runs(&self) -> Vec<RunId> {
        let mut runs = Vec::new();
        let mut from = RunId(0);
        while let Some(((run, _), _)) = self.summaries.range((from, String::new())..).next() {
            runs.push(*run);
            let Some(next) = run.0.checked_add(1) else {
                break;
            };
            from = RunId(next);
        }
        runs
    }

    /// Calls `each` with every series of `run` in this mark's summaries, in key order.
    pub fn each_of_run(&self, run: RunId, each: &mut dyn FnMut(&str, &MetricSummary)) {
        let from = (run, String::new());
        for ((of, key), summary) in self.summaries.range(from..) {
            if *of != run {
                break;
            }
            each(key, summary);
        }
    }
}

/// Summary of one metric series of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricSummary {
    /// Points logged.
    pub count: u64,
    /// Smallest step.
    pub first_step: i64,
    /// Greatest step.
    pub last_step: i64,
    /// Value of the latest point: greatest (step, timestamp, value).
    pub last_value: f64,
    /// Timestamp of the latest point, ms.
    pub last_timestamp_ms: i64,
    /// Smallest non-NaN value (NaN if every value is NaN).
    pub min_value: f64,
    /// Step of the smallest value.
    pub min_step: i64,
    /// Greatest non-NaN value (NaN if every value is NaN).
    pub max_value: f64,
    /// Step of the greatest value.
    pub max_step: i64,
    /// Sum of non-NaN values, for means.
    pub sum: f64,
    /// Number of non-NaN values.
    pub finite_count: u64,
}

/// Words of a summary as [`MetricSummary::to_words`] gives them.
pub(crate) const SUMMARY_WORDS: usize = 11;

impl MetricSummary {
    /// The summary's fields as words, bit for bit (NaN payloads and signed zeros kept), so
    /// summaries compare as bits and fit in atomic words.
    #[inline]
    pub(crate) fn to_words(self) -> [u64; SUMMARY_WORDS] {
        [
            self.count,
            self.first_step as u64,
            self.last_step as u64,
            self.last_value.to_bits(),
            self.last_timestamp_ms as u64,
            self.min_value.to_bits(),
            self.min_step as u64,
            self.max_value.to_bits(),
            self.max_step as u64,
            self.sum.to_bits(),
            self.finite_count,
        ]
    }

    /// The summary [`MetricSummary::to_words`] gave `words` for.
    #[inline]
    pub(crate) fn from_words(words: &[u64; SUMMARY_WORDS]) -> MetricSummary {
        MetricSummary {
            count: words[0],
            first_step: words[1] as i64,
            last_step: words[2] as i64,
            last_value: f64::from_bits(words[3]),
            last_timestamp_ms: words[4] as i64,
            min_value: f64::from_bits(words[5]),
            min_step: words[6] as i64,
            max_value: f64::from_bits(words[7]),
            max_step: words[8] as i64,
            sum: f64::from_bits(words[9]),
            finite_count: words[10],
        }
    }

    /// An empty summary (count 0).
    pub const EMPTY: MetricSummary = MetricSummary {
        count: 0,
        first_step: 0,
        last_step: 0,
        last_value: f64::NAN,
        last_timestamp_ms: 0,
        min_value: f64::NAN,
        min_step: 0,
        max_value: f64::NAN,
        max_step: 0,
        sum: 0.0,
        finite_count: 0,
    };

    /// Mean of the non-NaN values (NaN if there are none).
    pub fn mean(&self) -> f64 {
        if self.finite_count == 0 {
            f64::NAN
        } else {
            self.sum / self.finite_count as f64
        }
    }

    /// Adds every point `other` summarizes, as if they had been `update`d one by one (up to
    /// the rounding of `sum`). Compacted files carry one summary per series; a store opened
    /// after their segments are deleted starts from these.
    pub fn merge(&mut self, other: &MetricSummary) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        if other.latest_is_after(self) {
            self.last_value = other.last_value;
            self.last_timestamp_ms = other.last_timestamp_ms;
        }
        self.first_step = self.first_step.min(other.first_step);
        self.last_step = self.last_step.max(other.last_step);
        // Saturating: a summary's counts may come from a damaged manifest, and no count of
        // points logged can reach the bound.
        self.count = self.count.saturating_add(other.count);
        if other.finite_count == 0 {
            return;
        }
        self.sum += other.sum;
        self.finite_count = self.finite_count.saturating_add(other.finite_count);
        let (value, step) = (other.min_value, other.min_step);
        let smaller = replaces_extreme(
            value.total_cmp(&self.min_value),
            step,
            self.min_step,
            Ordering::Less,
        );
        if self.min_value.is_nan() || smaller {
            self.min_value = value;
            self.min_step = step;
        }
        let (value, step) = (other.max_value, other.max_step);
        let greater = replaces_extreme(
            value.total_cmp(&self.max_value),
            step,
            self.max_step,
            Ordering::Greater,
        );
        if self.max_value.is_nan() || greater {
            self.max_value = value;
            self.max_step = step;
        }
    }

    /// Whether this summary's latest point comes after `other`'s, by (step, timestamp, value).
    pub fn latest_is_after(&self, other: &MetricSummary) -> bool {
        (self.last_step, self.last_timestamp_ms)
            .cmp(&(other.last_step, other.last_timestamp_ms))
            .then_with(|| self.last_value.total_cmp(&other.last_value))
            == Ordering::Greater
    }

    /// The latest value of the points `self` and `other` summarize together, if any: what
    /// `merge` would give, without building the merged summary.
    pub fn latest_of(&self, other: &MetricSummary) -> Option<f64> {
        match (self.count, other.count) {
            (0, 0) => None,
            (_, 0) => Some(self.last_value),
            (0, _) => Some(other.last_value),
            _ if other.latest_is_after(self) => Some(other.last_value),
            _ => Some(self.last_value),
        }
    }

    /// Adds one point.
    #[inline]
    pub fn update(&mut self, step: i64, timestamp_ms: i64, value: f64) {
        // The latest point has the greatest step, so `last_step` is also its step; and
        // `first_step <= last_step`, so only a point before the latest can lower it. Tested
        // in the order points usually come: each one later than the last.
        if self.count == 0 || step > self.last_step {
            if self.count == 0 {
                self.first_step = step;
            }
            self.last_step = step;
            self.last_value = value;
            self.last_timestamp_ms = timestamp_ms;
        } else if step == self.last_step {
            let newer = timestamp_ms
                .cmp(&self.last_timestamp_ms)
                .then_with(|| value.total_cmp(&self.last_value));
            if newer == Ordering::Greater {
                self.last_value = value;
                self.last_timestamp_ms = timestamp_ms;
            }
        } else if step < self.first_step {
            self.first_step = step;
        }
        self.count = self.count.saturating_add(1);
        if value.is_nan() {
            return;
        }
        self.sum += value;
        self.finite_count = self.finite_count.saturating_add(1);
        // Strictly between the extremes by IEEE's order is strictly between them by
        // `total_cmp` too (the two differ only on NaN, never kept as an extreme, and on the
        // signs of zeros, which `<` does not separate), so neither moves: the common case,
        // decided by two comparisons. With no extreme yet (NaN), both are false.
        if value > self.min_value && value < self.max_value {
            return;
        }
        let smaller = replaces_extreme(
            value.total_cmp(&self.min_value),
            step,
            self.min_step,
            Ordering::Less,
        );
        if self.min_value.is_nan() || smaller {
            self.min_value = value;
            self.min_step = step;
        }
        let greater = replaces_extreme(
            value.total_cmp(&self.max_value),
            step,
            self.max_step,
            Ordering::Greater,
        );
        if self.max_value.is_nan() || greater {
            self.max_value = value;
            self.max_step = step;
        }
    }
}

/// Whether a point at `step`, whose value compares to the kept minimum (or maximum) as
/// `order`, replaces it: a value further in the `beyond` direction does, and an equal one does
/// at a smaller step. `total_cmp` rather than IEEE's `<` so that -0.0 and +0.0 at one step do
/// not tie, which would keep whichever came first.
#[inline]
fn replaces_extreme(order: Ordering, step: i64, kept_step: i64, beyond: Ordering) -> bool {
    order == beyond || (order == Ordering::Equal && step < kept_step)
}

/// The summaries of the metric points a replay of the log read, per writer, run and key id,
/// before the catalog resolves the key ids to keys (`Catalog::apply_foreign_summaries`): an
/// open updates one summary per point instead of materialising each point.
///
/// Invariants:
/// - Each series is updated point by point in the order its points are given, so one writer's
///   series comes out bit for bit as `update`s in log order give it.
/// - A record's points are applied provisionally: between [`ReplaySummaries::start_record`]
///   and the next, [`ReplaySummaries::undo_record`] restores every series the record touched,
///   so a record found invalid after its first points (a stream's checksum covers all its ops)
///   leaves nothing behind.
/// - Memory is bounded by the points' key ids as the catalog's key map is by definitions: four
///   bytes per key id up to the largest seen in a run, and one summary per series with points.
///   A key id of `KEYS_PER_RUN_MAX` or more is never defined (`Catalog::define_key`), so its
///   points are dropped here.
#[derive(Debug, Default)]
pub(crate) struct ReplaySummaries {
    index: HashMap<(WriterId, RunId), usize, IdHash>,
    runs: Vec<ReplayRun>,
    /// Number of the current record; a series stamped with another has not yet been saved
    /// in `undo` for it.
    record: u64,
    /// The series the current record touched, as they were before it: (run, position, summary).
    undo: Vec<(usize, usize, MetricSummary)>,
    /// Runs held when the current record started: the ones after it are the record's own and
    /// go with it if it is undone, so a rejected record leaves no run behind.
    runs_at_record: usize,
}

/// The position in [`ReplaySummaries`] of one writer's points of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplayRunIndex(usize);

/// One writer's series of one run, as far as a replay has read them.
#[derive(Debug)]
pub(crate) struct ReplayRun {
    /// The writer whose log holds the points.
    pub writer: WriterId,
    /// Their run.
    pub run: RunId,
    /// Per key id, the position of its series in `series`, or `NO_SERIES`.
    positions: Vec<u32>,
    series: Vec<ReplaySeries>,
}

#[derive(Clone, Copy, Debug)]
struct ReplaySeries {
    key: KeyId,
    summary: MetricSummary,
    /// The record that last saved this series in `ReplaySummaries::undo`.
    stamp: u64,
}

const NO_SERIES: u32 = u32::MAX;
const _: () = assert!(KEYS_PER_RUN_MAX < NO_SERIES as usize);

impl ReplayRun {
    /// Every series with points, by key id.
    pub fn series(&self) -> impl Iterator<Item = (KeyId, &MetricSummary)> {
        self.series
            .iter()
            .filter(|series| series.summary.count > 0)
            .map(|series| (series.key, &series.summary))
    }
}

impl ReplaySummaries {
    /// Where `writer`'s points of `run` go, made empty if none went there yet.
    pub fn run_index(&mut self, writer: WriterId, run: RunId) -> ReplayRunIndex {
        let runs = &mut self.runs;
        let index = *self.index.entry((writer, run)).or_insert_with(|| {
            runs.push(ReplayRun {
                writer,
                run,
                positions: Vec::new(),
                series: Vec::new(),
            });
            runs.len() - 1
        });
        ReplayRunIndex(index)
    }

    /// Adds one point of key `key` to the run at `index` (from [`ReplaySummaries::run_index`]).
    #[inline]
    pub fn update(
        &mut self,
        index: ReplayRunIndex,
        key: KeyId,
        step: i64,
        timestamp_ms: i64,
        value: f64,
    ) {
        let Some(run) = self.runs.get_mut(index.0) else {
            return;
        };
        let Some(position) = series_position(run, key) else {
            return;
        };
        let series = &mut run.series[position];
        if series.stamp != self.record {
            series.stamp = self.record;
            self.undo.push((index.0, position, series.summary));
        }
        series.summary.update(step, timestamp_ms, value);
    }

    /// Starts a record: the points given from now on are undone by
    /// [`ReplaySummaries::undo_record`], until the next record starts.
    pub fn start_record(&mut self) {
        self.record += 1;
        self.undo.clear();
        self.runs_at_record = self.runs.len();
    }

    /// Restores every series the current record touched to what it was before the record.
    pub fn undo_record(&mut self) {
        let kept = self.runs_at_record.min(self.runs.len());
        for added in self.runs.drain(kept..) {
            self.index.remove(&(added.writer, added.run));
        }
        for (run, position, summary) in self.undo.drain(..).rev() {
            if let Some(series) = self
                .runs
                .get_mut(run)
                .and_then(|run| run.series.get_mut(position))
            {
                series.summary = summary;
            }
        }
    }

    /// Whether the series of `key` in `writer`'s points of `run` has points.
    pub fn has_points(&self, writer: WriterId, run: RunId, key: KeyId) -> bool {
        let Some(run) = self
            .index
            .get(&(writer, run))
            .and_then(|i| self.runs.get(*i))
        else {
            return false;
        };
        let position = run.positions.get(key.0 as usize).copied();
        position
            .filter(|position| *position != NO_SERIES)
            .and_then(|position| run.series.get(position as usize))
            .is_some_and(|series| series.summary.count > 0)
    }

    /// Every run read so far, in the order first read, leaving this empty.
    pub fn take(&mut self) -> Vec<ReplayRun> {
        self.index.clear();
        self.undo.clear();
        std::mem::take(&mut self.runs)
    }
}

/// The position of `key`'s series in `run`, made empty if it has none; `None` for a key id no
/// definition can bind.
#[inline]
fn series_position(run: &mut ReplayRun, key: KeyId) -> Option<usize> {
    let id = key.0 as usize;
    if let Some(position) = run.positions.get(id)
        && *position != NO_SERIES
    {
        return Some(*position as usize);
    }
    if id >= KEYS_PER_RUN_MAX {
        return None;
    }
    if run.positions.len() <= id {
        run.positions.resize(id + 1, NO_SERIES);
    }
    let position = run.series.len();
    run.positions[id] = position as u32;
    run.series.push(ReplaySeries {
        key,
        summary: MetricSummary::EMPTY,
        stamp: 0,
    });
    Some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest's counts are read from disk: counts near the bound saturate when merged or
    /// added to, in place of an overflow (a panic in a debug build, a wrapped count after).
    #[test]
    fn counts_from_a_damaged_manifest_saturate() {
        let mut huge = MetricSummary::EMPTY;
        huge.update(1, 1, 0.5);
        huge.count = u64::MAX;
        huge.finite_count = u64::MAX;
        let mut merged = huge;
        merged.merge(&huge);
        assert_eq!((merged.count, merged.finite_count), (u64::MAX, u64::MAX));
        merged.update(2, 2, 0.25);
        assert_eq!((merged.count, merged.finite_count), (u64::MAX, u64::MAX));
        assert_eq!(merged.last_step, 2);
    }

    /// Splitting the points anywhere and merging the halves gives the summary of the whole.
    #[test]
    fn merging_summaries_equals_updating_with_every_point() {
        let points: Vec<(i64, i64, f64)> = vec![
            (0, 10, 1.0),
            (3, 11, f64::NAN),
            (1, 12, -2.0),
            (3, 9, 7.0),
            (2, 13, -2.0),
            (5, 14, f64::INFINITY),
            (5, 14, 0.5),
            (4, 15, 7.0),
        ];
        let mut whole = MetricSummary::EMPTY;
        for (step, time, value) in &points {
            whole.update(*step, *time, *value);
        }
        for cut in 0..=points.len() {
            let (mut left, mut right) = (MetricSummary::EMPTY, MetricSummary::EMPTY);
            for (step, time, value) in &points[..cut] {
                left.update(*step, *time, *value);
            }
            for (step, time, value) in &points[cut..] {
                right.update(*step, *time, *value);
            }
            let mut forward = left;
            forward.merge(&right);
            let mut backward = right;
            backward.merge(&left);
            for merged in [forward, backward] {
                assert_eq!(merged.count, whole.count, "cut {cut}");
                assert_eq!(
                    (merged.first_step, merged.last_step),
                    (whole.first_step, whole.last_step)
                );
                assert_eq!(merged.last_value.to_bits(), whole.last_value.to_bits());
                assert_eq!(merged.last_timestamp_ms, whole.last_timestamp_ms);
                assert_eq!(
                    (merged.min_value, merged.min_step),
                    (whole.min_value, whole.min_step)
                );
                assert_eq!(
                    (merged.max_value, merged.max_step),
                    (whole.max_value, whole.max_step)
                );
                assert_eq!(merged.finite_count, whole.finite_count);
            }
        }
    }

    /// Found by `replay_summaries` (seed 9842417623894797041): -0.0 and +0.0 at one step must
    /// give the same minimum and maximum, bit for bit, in either order and through a merge.
    #[test]
    fn signed_zeros_at_one_step_summarise_alike_in_any_order() {
        let points = [(4, 20, 0.0), (4, 21, -0.0), (6, 22, 0.0)];
        let mut summaries = Vec::new();
        for order in [[0, 1, 2], [1, 0, 2], [2, 1, 0], [2, 0, 1]] {
            let mut summary = MetricSummary::EMPTY;
            for index in order {
                let (step, time, value) = points[index];
                summary.update(step, time, value);
            }
            summaries.push(summary);
        }
        for (left, right) in [(0..1, 1..3), (1..3, 0..1), (2..3, 0..2)] {
            let (mut a, mut b) = (MetricSummary::EMPTY, MetricSummary::EMPTY);
            points[left].iter().for_each(|&(s, t, v)| a.update(s, t, v));
            points[right]
                .iter()
                .for_each(|&(s, t, v)| b.update(s, t, v));
            a.merge(&b);
            summaries.push(a);
        }
        for summary in &summaries {
            assert_eq!(
                (summary.min_value.to_bits(), summary.min_step),
                ((-0.0f64).to_bits(), 4)
            );
            assert_eq!(
                (summary.max_value.to_bits(), summary.max_step),
                (0.0f64.to_bits(), 4)
            );
        }
    }
}
