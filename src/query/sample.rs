//! Points picked by rank out of a step range of a series (`Store::history_sample`), reading
//! only the picked rows of compacted series (and their neighbours, to tell ties), never the
//! whole range.
//!
//! A run's points in a range come from parts: each compacted series entry that meets the range
//! and the log's tail. Ranks count points in history order (by step, then logging order).
//! When the parts' step spans are disjoint, that order is the parts one after another in step
//! order, so a rank maps to one row of one part, and a compacted part's rows are located by
//! `compaction::locate_steps` (arithmetic on a dense series, page statistics otherwise).
//! When spans overlap (a step range logged again after a compaction, or batches that reached
//! compactions out of step order), the parts' `step` columns alone are read and merged to find
//! where each rank falls, and then only those rows are read.
//!
//! Both give way to the step-run path when every part's steps fit in a few arithmetic runs
//! (`compaction::step_runs`, kept per store handle): a rank is placed by counting the points
//! below a step in each part, with no merge walk and no neighbour read for ties, and only the
//! picked rows are read (`compaction::read_picked_rows`, also kept per handle).
//!
//! The log's part is read through `log_sample`: every wanted record is decoded once to measure
//! it, and when the records in step order are the run's points in history order (the usual
//! log of batches, in step order or not), that order's step runs place the ranks and a picked
//! point is decoded again from its record alone; otherwise the part is read whole and sorted.

use std::collections::HashMap;
use std::ops::{Range, RangeBounds};

use super::history::{History, SeriesJob, compacted_series, inclusive, read_tail, sorted_by_step};
use super::log_sample::SortedTail;
use crate::error::Result;
use crate::ids::RunId;
use crate::tracking::Store;

/// Points picked by rank out of one run's points in a step range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Points in the range.
    pub total: usize,
    /// The picked points, in rank order.
    pub points: History,
    /// Whether a picked point shares its step with another point of the range, so that its
    /// rank depends on how points of one step are ordered (history order: logging order).
    pub ties: bool,
}

/// A page of a series in (timestamp, step) order ([`Store::history_page`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimePage {
    /// Points of the series.
    pub total: usize,
    /// The page's points, in (timestamp, step) order.
    pub points: History,
}

/// Which ranks to pick out of `total` points: ascending, each below `total`.
pub type Pick<'a> = &'a (dyn Fn(usize) -> Vec<usize> + Sync);

impl Store {
    /// For each of `runs` (in order), the points of `key` in `steps` at the ranks `pick`
    /// chooses given their number: what picking those indexes out of
    /// [`history_of_runs`](Store::history_of_runs) gives, reading only the picked rows of
    /// compacted series. `NotFound` if a run does not exist.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// # let store = runlog::Store::open(dir.path())?;
    /// # let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// for step in 0..100 {
    ///     run.log_metric("loss", step as f64, step)?;
    /// }
    /// let every_tenth = |total: usize| (0..total).step_by(10).collect::<Vec<_>>();
    /// let sample = store.history_sample(&[run.id()], "loss", 10..=59, &every_tenth)?;
    /// assert_eq!(sample[0].total, 50);
    /// assert_eq!(sample[0].points.steps, [10, 20, 30, 40, 50]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn history_sample(
        &self,
        runs: &[RunId],
        key: &str,
        steps: impl RangeBounds<i64> + Sync,
        pick: Pick<'_>,
    ) -> Result<Vec<Sample>> {
        let mut unique: Vec<RunId> = Vec::with_capacity(runs.len());
        let mut slot_of: HashMap<RunId, usize> = HashMap::with_capacity(runs.len());
        for run in runs {
            slot_of.entry(*run).or_insert_with(|| {
                unique.push(*run);
                unique.len() - 1
            });
        }
        let read = crate::compaction::retry_stale(|| self.sample_once(&unique, key, &steps, pick))?;
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

    /// Points `offset..offset + count` of `key` of `run` in (timestamp, step) order, reading
    /// only the pages that hold them (and the pages the series shares with its neighbours),
    /// when that order can be shown from those pages and the page statistics of the others.
    /// `None` when it cannot (points in the log or in several compacted files, a file without
    /// a page index, timestamps not increasing with steps, or two points with the same
    /// timestamp and step): then only a read of the whole series gives the page.
    /// `NotFound` if the run does not exist.
    pub fn history_page(
        &self,
        run: RunId,
        key: &str,
        offset: usize,
        count: usize,
    ) -> Result<Option<TimePage>> {
        crate::compaction::retry_stale(|| self.page_once(run, key, offset, count))
    }

    fn page_once(
        &self,
        run: RunId,
        key: &str,
        offset: usize,
        count: usize,
    ) -> Result<Option<TimePage>> {
        self.check_runs_exist(&[run])?;
        let root = self.root();
        let manifest = self.manifests().newest(root)?;
        let index: HashMap<RunId, usize> = HashMap::from([(run, 0)]);
        let jobs = compacted_series(&manifest, &index, key, &(..));
        // Decided before the log is read: the caller falls back to a read of the whole
        // series, log included, so a tail read here would be a second one.
        let Some((_, file, series)) = sole_part(&jobs) else {
            return Ok(None);
        };
        let mut tail = vec![History::default()];
        read_tail(
            self,
            &manifest,
            &index,
            key,
            &(..),
            &mut tail,
            &mut [Vec::new()],
        )?;
        if tail.iter().any(|t| !t.is_empty()) {
            return Ok(None);
        }
        let total = series.row_count;
        let start = (offset as u64).min(total);
        let end = start.saturating_add(count as u64).min(total);
        let mut columns = (Vec::new(), Vec::new(), Vec::new());
        let shown = crate::compaction::read_rows_in_time_order(
            root,
            file,
            series,
            start..end,
            &mut columns,
            self.compacted_metadata(),
        )
        .map_err(|e| crate::compaction::missing_or_stale(root, &manifest, e))?;
        crate::compaction::check_still_newest(root, &manifest)?;
        Ok(shown.then_some(TimePage {
            total: total as usize,
            points: History {
                steps: columns.0,
                timestamps_ms: columns.1,
                values: columns.2,
            },
        }))
    }

    fn sample_once(
        &self,
        runs: &[RunId],
        key: &str,
        steps: &(impl RangeBounds<i64> + Sync),
        pick: Pick<'_>,
    ) -> Result<Vec<Sample>> {
        self.check_runs_exist(runs)?;
        let root = self.root();
        let manifest = self.manifests().newest(root)?;
        let index: HashMap<RunId, usize> = runs.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        let Some((first, last)) = inclusive(steps) else {
            return Ok(vec![Sample::default(); runs.len()]);
        };
        let jobs = compacted_series(&manifest, &index, key, steps);
        let cache = self.compacted_metadata();
        let located: Vec<Option<crate::compaction::Located>> = {
            use rayon::prelude::*;
            jobs.par_iter()
                .map(|(_, file, series)| {
                    crate::compaction::locate_steps(root, file, series, first, last, cache)
                        .map_err(|e| crate::compaction::missing_or_stale(root, &manifest, e))
                })
                .collect::<Result<_>>()?
        };
        let query = super::series_log::SeriesQuery {
            slots: &index,
            key,
            first_step: first,
            last_step: last,
        };
        let log = super::log_sample::index_tail(
            root,
            &manifest,
            self.segment_directories(),
            &query,
            runs.len(),
        )?;
        crate::compaction::check_still_newest(root, &manifest)?;
        // Each run's log points in history order: its records in an order, where one gives
        // it, else read whole and sorted.
        let sorted: Vec<Option<SortedTail<'_, '_>>> =
            (0..runs.len()).map(|slot| log.sorted(slot)).collect();
        let tails: Vec<History> = {
            use rayon::prelude::*;
            (0..runs.len())
                .into_par_iter()
                .map(|slot| {
                    if sorted[slot].is_some() || log.is_empty(slot) {
                        return Ok(History::default());
                    }
                    let (history, pieces) = log.history(slot)?;
                    Ok(sorted_by_step(history, &pieces))
                })
                .collect::<Result<_>>()?
        };
        let mut parts: Vec<Vec<Part<'_>>> = (0..runs.len()).map(|_| Vec::new()).collect();
        for (order, (job, located)) in jobs.iter().zip(located).enumerate() {
            if let Some(located) = located {
                parts[job.0].push(Part::Compacted(order, *job, located));
            }
        }
        for (slot, (tail, sorted)) in tails.iter().zip(sorted).enumerate() {
            match sorted {
                Some(sorted) => parts[slot].push(Part::Log(sorted)),
                None if !tail.is_empty() => parts[slot].push(Part::Tail(tail)),
                None => {}
            }
        }
        use rayon::prelude::*;
        parts
            .into_par_iter()
            .map(|parts| {
                self.sample_parts(parts, pick)
                    .map_err(|e| crate::compaction::missing_or_stale(root, &manifest, e))
            })
            .collect()
    }

    /// The sample of one run out of its parts (compacted series in manifest order, then the
    /// tail).
    fn sample_parts(&self, parts: Vec<Part<'_>>, pick: Pick<'_>) -> Result<Sample> {
        if let Some(sample) = self.sample_by_step_runs(&parts, pick)? {
            return Ok(sample);
        }
        // The general paths read the log's points as one history in order.
        let mut read = None;
        for part in &parts {
            if let Part::Log(tail) = part {
                read = Some(tail.history()?);
            }
        }
        let mut parts: Vec<Part<'_>> = (parts.into_iter())
            .filter(|part| !matches!(part, Part::Log(_)))
            .chain(read.as_ref().map(Part::Tail))
            .collect();
        // Stable, so parts starting at one step keep manifest order, then the tail.
        parts.sort_by_key(|part| part.span().0);
        let disjoint = parts.windows(2).all(|w| w[0].span().1 < w[1].span().0);
        if !disjoint {
            return self.sample_merged(&parts, pick);
        }
        let total: usize = parts.iter().map(Part::len).sum();
        let mut ranks = pick(total);
        ranks.retain(|rank| *rank < total);
        ranks.sort_unstable();
        ranks.dedup();
        let mut sample = Sample {
            total,
            ..Sample::default()
        };
        let mut part_start = 0;
        let mut next = 0;
        for part in &parts {
            let part_end = part_start + part.len();
            let mut offsets = Vec::new();
            while let Some(rank) = ranks.get(next).filter(|rank| **rank < part_end) {
                offsets.push(rank - part_start);
                next += 1;
            }
            if !offsets.is_empty() {
                sample.ties |= self.pick_from(part, &offsets, &mut sample.points)?;
            }
            part_start = part_end;
        }
        Ok(sample)
    }

    /// The sample of one run out of its parts (in merge order: compacted series in manifest
    /// order, then the tail) from their step runs alone, then only the picked rows read (each
    /// through the handle's cache); `None` when a part has no step runs (irregular steps), for
    /// the general path. With the runs, every rank is placed by counting the points below a
    /// step in each part, so overlapping parts need no `step` column read and no merge walk,
    /// and ties show without reading neighbours.
    fn sample_by_step_runs(&self, parts: &[Part<'_>], pick: Pick<'_>) -> Result<Option<Sample>> {
        use crate::compaction::StepRuns;
        let cache = self.compacted_metadata();
        let mut sources: Vec<(std::sync::Arc<StepRuns>, Range<u64>)> =
            Vec::with_capacity(parts.len());
        for part in parts {
            let source = match part {
                Part::Compacted(_, (_, file, series), located) => {
                    match crate::compaction::step_runs(self.root(), file, series, cache)? {
                        Some(runs) if runs.rows() == series.row_count => {
                            (runs, located.rows.clone())
                        }
                        _ => return Ok(None),
                    }
                }
                Part::Tail(tail) => match StepRuns::of(&tail.steps, TAIL_STEP_RUNS_MAX) {
                    Some(runs) => (std::sync::Arc::new(runs), 0..tail.len() as u64),
                    None => return Ok(None),
                },
                Part::Log(tail) => (std::sync::Arc::clone(&tail.runs), 0..tail.total as u64),
            };
            sources.push(source);
        }
        let Some(placed) = place_ranks(&sources, pick) else {
            return Ok(None);
        };
        // Each part's picked points, read at once, then laid out in rank order.
        let mut points: Vec<Vec<(i64, i64, f64)>> = Vec::with_capacity(parts.len());
        for (index, (part, (runs, rows))) in parts.iter().zip(&sources).enumerate() {
            let offsets: Vec<u64> = placed
                .picked
                .iter()
                .filter(|(p, _)| *p == index)
                .map(|(_, offset)| rows.start + offset)
                .collect();
            let read = match part {
                Part::Compacted(_, (_, file, series), _) if !offsets.is_empty() => {
                    crate::compaction::read_picked_rows(self.root(), file, series, &offsets, cache)?
                }
                Part::Compacted(..) => Vec::new(),
                Part::Tail(tail) => offsets
                    .iter()
                    .filter_map(|row| tail.point(*row as usize))
                    .map(|p| (p.step, p.timestamp_ms, p.value))
                    .collect(),
                Part::Log(_) if offsets.is_empty() => Vec::new(),
                Part::Log(tail) => tail.points(&offsets)?,
            };
            // The runs were built from these rows' own column; a step that differs means
            // they do not describe the rows, so the general path answers instead.
            let agrees = read.len() == offsets.len()
                && offsets
                    .iter()
                    .zip(&read)
                    .all(|(row, point)| runs.step_at(*row) == Some(point.0));
            if !agrees {
                return Ok(None);
            }
            points.push(read);
        }
        let mut sample = Sample {
            total: placed.total as usize,
            ties: placed.ties,
            ..Sample::default()
        };
        let mut cursors = vec![0usize; parts.len()];
        for (part, _) in &placed.picked {
            if let Some((step, timestamp_ms, value)) = points[*part].get(cursors[*part]) {
                sample.points.steps.push(*step);
                sample.points.timestamps_ms.push(*timestamp_ms);
                sample.points.values.push(*value);
            }
            cursors[*part] += 1;
        }
        Ok(Some(sample))
    }

    /// Appends the points at `offsets` (ascending) of `part` to `out`; whether any of them
    /// shares its step with a neighbour in the part.
    fn pick_from(&self, part: &Part<'_>, offsets: &[usize], out: &mut History) -> Result<bool> {
        match part {
            Part::Log(tail) => {
                let history = tail.history()?;
                self.pick_from(&Part::Tail(&history), offsets, out)
            }
            Part::Tail(tail) => {
                let mut ties = false;
                for offset in offsets {
                    let step = tail.steps[*offset];
                    ties |= offset.checked_sub(1).and_then(|o| tail.steps.get(o)) == Some(&step)
                        || tail.steps.get(offset + 1) == Some(&step);
                    out.steps.push(step);
                    out.timestamps_ms.push(tail.timestamps_ms[*offset]);
                    out.values.push(tail.values[*offset]);
                }
                Ok(ties)
            }
            Part::Compacted(_, (_, file, series), located) => {
                // Each picked row with its neighbours inside the located rows, merged.
                let count = located.rows.end - located.rows.start;
                let mut rows: Vec<Range<u64>> = Vec::with_capacity(offsets.len());
                for offset in offsets {
                    let offset = *offset as u64;
                    let start = located.rows.start + offset.saturating_sub(1);
                    let end = located.rows.start + (offset + 2).min(count);
                    match rows.last_mut() {
                        Some(previous) if previous.end >= start => previous.end = end,
                        _ => rows.push(start..end),
                    }
                }
                let mut columns = (Vec::new(), Vec::new(), Vec::new());
                let cache = self.compacted_metadata();
                crate::compaction::read_series_rows(
                    self.root(),
                    file,
                    series,
                    &rows,
                    &mut columns,
                    cache,
                )?;
                let row_numbers: Vec<u64> = rows.iter().flat_map(|r| r.clone()).collect();
                let mut ties = false;
                let mut at = 0;
                for offset in offsets {
                    let row = located.rows.start + *offset as u64;
                    while row_numbers.get(at).is_some_and(|r| *r < row) {
                        at += 1;
                    }
                    let Some(step) = columns.0.get(at).copied() else {
                        break;
                    };
                    ties |= at
                        .checked_sub(1)
                        .filter(|before| row_numbers[*before] + 1 == row)
                        .and_then(|before| columns.0.get(before))
                        == Some(&step)
                        || (row_numbers.get(at + 1) == Some(&(row + 1))
                            && columns.0.get(at + 1) == Some(&step));
                    out.steps.push(step);
                    out.timestamps_ms.push(columns.1[at]);
                    out.values.push(columns.2[at]);
                }
                Ok(ties)
            }
        }
    }

    /// The sample of parts whose spans overlap: their `step` columns alone are merged in
    /// history order (by step; at one step, manifest order, then the tail) to find the parts
    /// and rows the ranks fall on, and only those rows are read.
    fn sample_merged(&self, parts: &[Part<'_>], pick: Pick<'_>) -> Result<Sample> {
        let mut ordered: Vec<&Part<'_>> = parts.iter().collect();
        ordered.sort_by_key(|part| match part {
            Part::Compacted(order, ..) => *order,
            Part::Tail(_) | Part::Log(_) => usize::MAX,
        });
        let cache = self.compacted_metadata();
        let steps: Vec<std::borrow::Cow<'_, [i64]>> = ordered
            .iter()
            .map(|part| match part {
                Part::Tail(tail) => Ok(std::borrow::Cow::Borrowed(tail.steps.as_slice())),
                Part::Log(tail) => tail
                    .history()
                    .map(|history| std::borrow::Cow::Owned(history.steps)),
                Part::Compacted(_, (_, file, series), located) => {
                    crate::compaction::read_series_steps(
                        self.root(),
                        file,
                        series,
                        located.rows.clone(),
                        cache,
                    )
                    .map(std::borrow::Cow::Owned)
                }
            })
            .collect::<Result<_>>()?;
        let total: usize = steps.iter().map(|s| s.len()).sum();
        let mut ranks = pick(total);
        ranks.retain(|rank| *rank < total);
        ranks.sort_unstable();
        ranks.dedup();
        let (picked, ties) = merge_pick(&steps, &ranks);
        let mut sample = Sample {
            total,
            ties,
            ..Sample::default()
        };
        // Each part's picked points, read at once, then laid out in rank order.
        let mut points: Vec<History> = Vec::with_capacity(ordered.len());
        for (index, part) in ordered.iter().enumerate() {
            let offsets: Vec<usize> = picked
                .iter()
                .filter(|(p, _)| *p == index)
                .map(|(_, offset)| *offset)
                .collect();
            let mut part_points = History::default();
            if !offsets.is_empty() {
                self.pick_from(part, &offsets, &mut part_points)?;
            }
            points.push(part_points);
        }
        let mut cursors = vec![0usize; ordered.len()];
        for (part, _) in &picked {
            if let Some(point) = points[*part].point(cursors[*part]) {
                sample.points.steps.push(point.step);
                sample.points.timestamps_ms.push(point.timestamp_ms);
                sample.points.values.push(point.value);
            }
            cursors[*part] += 1;
        }
        Ok(sample)
    }
}

/// The one compacted part a page in time order can be read from: `None` when the series has
/// none (all its points are in the log) or several (whose rows interleave in time in a way
/// only a read of all of them shows).
fn sole_part<T>(parts: &[T]) -> Option<&T> {
    match parts {
        [only] => Some(only),
        _ => None,
    }
}

/// Runs a tail's steps may take for the step-run path (`Store::sample_by_step_runs`).
const TAIL_STEP_RUNS_MAX: usize = 4096;

/// Where the ranks of a sample fall in the merge of its parts.
struct Placed {
    /// Points in all the parts.
    total: u64,
    /// Per picked rank, in rank order: its part and its offset among the part's rows.
    picked: Vec<(usize, u64)>,
    /// Whether a picked point shares its step with another point of the merge.
    ties: bool,
}

/// Places the ranks `pick` chooses in the merge of `sources` (each part's step runs and its
/// rows in the range; merge order by step, at one step by part order) without walking it:
/// a rank's step is the smallest whose points at or below it outnumber the rank (a binary
/// search over steps, counting through the runs), and its part and offset follow from the
/// points each part has below and at that step. `None` only if the runs contradict
/// themselves.
fn place_ranks(
    sources: &[(std::sync::Arc<crate::compaction::StepRuns>, Range<u64>)],
    pick: Pick<'_>,
) -> Option<Placed> {
    let total: u64 = sources.iter().map(|(_, rows)| rows.end - rows.start).sum();
    let below = |step: i128| -> u64 {
        sources
            .iter()
            .map(|(runs, rows)| runs.count_below(rows, step))
            .sum()
    };
    let mut low = i128::MAX;
    let mut high = i128::MIN;
    for (runs, rows) in sources {
        if let Some((first, last)) = runs.span(rows) {
            low = low.min(i128::from(first));
            high = high.max(i128::from(last));
        }
    }
    let mut ranks = pick(usize::try_from(total).ok()?);
    ranks.retain(|rank| (*rank as u64) < total);
    ranks.sort_unstable();
    ranks.dedup();
    let mut placed = Placed {
        total,
        picked: Vec::with_capacity(ranks.len()),
        ties: false,
    };
    // Ranks ascend, so each one's step is at or after the one before's.
    let mut floor = low;
    for rank in ranks {
        let rank = rank as u64;
        let (mut lo, mut hi) = (floor, high);
        let mut interpolate = true;
        while lo < hi {
            // Steps mostly advance evenly, so a guess from the counts at the bounds usually
            // lands on the answer; bisecting every other round keeps the worst case
            // logarithmic.
            let mid = if interpolate {
                let (at_lo, past_hi) = (below(lo), below(hi + 1));
                let spread = i128::from(past_hi.saturating_sub(at_lo)).max(1);
                let ahead = i128::from(rank.saturating_sub(at_lo));
                (lo + ahead * (hi - lo) / spread).clamp(lo, hi - 1)
            } else {
                (lo + hi).div_euclid(2)
            };
            interpolate = !interpolate;
            if below(mid + 1) > rank {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut offset = rank.checked_sub(below(lo))?;
        let mut at_step = 0;
        let mut chosen = None;
        for (part, (runs, rows)) in sources.iter().enumerate() {
            let before = runs.count_below(rows, lo);
            let here = runs.count_below(rows, lo + 1) - before;
            at_step += here;
            if chosen.is_none() {
                if offset < here {
                    chosen = Some((part, before + offset));
                } else {
                    offset -= here;
                }
            }
        }
        placed.ties |= at_step > 1;
        placed.picked.push(chosen?);
        floor = lo;
    }
    Some(placed)
}

/// Walks the merge of `steps` (each sorted; at one step, the earlier slice first) and returns
/// the (slice, offset) each of `ranks` (ascending) falls on, and whether any of those shares
/// its step with the point before or after it in the merge.
fn merge_pick(
    steps: &[std::borrow::Cow<'_, [i64]>],
    ranks: &[usize],
) -> (Vec<(usize, usize)>, bool) {
    let mut positions = vec![0usize; steps.len()];
    let mut picked = Vec::with_capacity(ranks.len());
    let mut ties = false;
    let mut previous: Option<i64> = None;
    let mut last_picked_step: Option<i64> = None;
    let mut next_rank = 0;
    for rank in 0.. {
        let Some((part, step)) = steps
            .iter()
            .enumerate()
            .filter_map(|(part, s)| s.get(positions[part]).map(|step| (part, *step)))
            .min_by_key(|(part, step)| (*step, *part))
        else {
            break;
        };
        if let Some(picked_step) = last_picked_step.take() {
            ties |= picked_step == step;
        }
        if ranks.get(next_rank) == Some(&rank) {
            ties |= previous == Some(step);
            picked.push((part, positions[part]));
            last_picked_step = Some(step);
            next_rank += 1;
        }
        previous = Some(step);
        positions[part] += 1;
        if next_rank == ranks.len() && last_picked_step.is_none() {
            break;
        }
    }
    (picked, ties)
}

/// One source of a run's points in the range.
enum Part<'a> {
    /// A compacted series (its place in manifest order, the series) and its rows in the range.
    Compacted(usize, SeriesJob<'a>, crate::compaction::Located),
    /// The log's points, sorted by step.
    Tail(&'a History),
    /// The log's points, as its records in history order.
    Log(SortedTail<'a, 'a>),
}

impl Part<'_> {
    fn len(&self) -> usize {
        match self {
            Part::Compacted(_, _, located) => (located.rows.end - located.rows.start) as usize,
            Part::Tail(tail) => tail.len(),
            Part::Log(tail) => tail.total,
        }
    }

    /// Its first and last steps in the range.
    fn span(&self) -> (i64, i64) {
        match self {
            Part::Compacted(_, _, located) => (located.first_step, located.last_step),
            Part::Tail(tail) => (
                tail.steps.first().copied().unwrap_or(i64::MAX),
                tail.steps.last().copied().unwrap_or(i64::MIN),
            ),
            Part::Log(tail) => tail
                .runs
                .span(&(0..tail.total as u64))
                .unwrap_or((i64::MAX, i64::MIN)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{merge_pick, place_ranks, sole_part};
    use crate::compaction::StepRuns;

    use crate::util::TestRng as Rng;

    #[test]
    fn ranks_placed_through_step_runs_fall_where_the_merge_walk_puts_them() {
        let mut rng =
            Rng::from_env("ranks_placed_through_step_runs_fall_where_the_merge_walk_puts_them");
        for _ in 0..500 {
            let parts: Vec<Vec<i64>> = (0..1 + rng.below(4))
                .map(|_| {
                    let mut step = rng.below(200) as i64 - 100;
                    let stride = 1 + rng.below(3) as i64;
                    (0..1 + rng.below(300))
                        .map(|_| {
                            match rng.below(10) {
                                0 => {}
                                1 => step += 1 + rng.below(50) as i64,
                                _ => step += stride,
                            }
                            step
                        })
                        .collect()
                })
                .collect();
            // Each part read over a random window of its rows, as a located step range is.
            let windows: Vec<std::ops::Range<u64>> = parts
                .iter()
                .map(|steps| {
                    let length = steps.len() as u64;
                    let start = rng.below(length / 4 + 1);
                    start..length - rng.below((length - start) / 4 + 1)
                })
                .collect();
            let sources: Vec<_> = parts
                .iter()
                .zip(&windows)
                .map(|(steps, rows)| {
                    (
                        std::sync::Arc::new(StepRuns::of(steps, usize::MAX).unwrap_or_default()),
                        rows.clone(),
                    )
                })
                .collect();
            let slices: Vec<std::borrow::Cow<'_, [i64]>> = parts
                .iter()
                .zip(&windows)
                .map(|(steps, rows)| {
                    std::borrow::Cow::Borrowed(&steps[rows.start as usize..rows.end as usize])
                })
                .collect();
            let every = 1 + rng.below(20) as usize;
            let pick = |total: usize| (0..total).step_by(every).collect::<Vec<_>>();
            let total: usize = slices.iter().map(|s| s.len()).sum();
            let placed = place_ranks(&sources, &pick).unwrap();
            let (picked, ties) = merge_pick(&slices, &pick(total));
            assert_eq!(placed.total as usize, total);
            let placed_picked: Vec<(usize, usize)> = placed
                .picked
                .iter()
                .map(|(part, offset)| (*part, *offset as usize))
                .collect();
            assert_eq!(placed_picked, picked, "{parts:?} {windows:?} every {every}");
            assert_eq!(placed.ties, ties, "{parts:?} {windows:?} every {every}");
        }
    }

    #[test]
    fn a_page_in_time_order_needs_exactly_one_compacted_part() {
        assert_eq!(sole_part::<u8>(&[]), None);
        assert_eq!(sole_part(&[7]), Some(&7));
        assert_eq!(sole_part(&[7, 8]), None);
        assert_eq!(sole_part(&[7, 8, 9]), None);
    }
}
