//! Few-row reads of compacted series, for samples that pick a few hundred ranks out of millions
//! of points: a series' `step` column kept as arithmetic runs (`StepRuns`), which place a rank
//! and show ties without reading the column again, and the picked rows themselves, both cached
//! per store handle (in `MetadataCache`) and bounded. Picked rows not cached are read from the
//! pages holding them alone (`pages::read_picks`), or through the general reader for a layout
//! that decoder declines.
//!
//! Invariants: a cache entry is keyed by the file's path and the length and CRC its manifest
//! entry records, and filled only from bytes read after `MetadataCache::get` checked the whole
//! file against them; a compacted file never changes once published, and a path is never
//! published with other bytes, so an entry stays true for as long as any manifest lists the
//! file. Step runs describe the series exactly or are not kept: a series whose steps decrease
//! anywhere (not sorted as its manifest says) or need more than `STEP_RUNS_MAX` runs has none,
//! and its readers take the general path.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::pages::Picked;
use super::reader::{MetadataCache, read_picked_file_rows, read_series_rows, visit_series_steps};
use super::{CompactedFile, FileChecksum, SeriesRows};
use crate::error::Result;

/// Runs a series' steps may take before it is left to the general path (a regular series takes
/// one run per logging pattern change; an irregular one about one per point).
const STEP_RUNS_MAX: usize = 4096;
/// Runs all cached series may hold (32 bytes each: 8 MiB) before the cache starts over.
const CACHED_STEP_RUNS_MAX: usize = 256 * 1024;
/// Rows the picked-row cache may hold (about 50 bytes each with the map: 13 MiB) before it
/// starts over.
const CACHED_ROWS_MAX: usize = 256 * 1024;

/// A compacted file as the caches know it: its path and recorded length and CRC.
type FileId = (PathBuf, Option<(u64, u32)>);

/// Steps `step`, `step + stride`, ... of `len` consecutive rows from `row` (counted from the
/// series' first row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StepRun {
    row: u64,
    step: i64,
    stride: i64,
    len: u64,
}

/// A series' steps in row order as arithmetic runs (strides >= 1; a repeated step starts a new
/// run), non-decreasing from run to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StepRuns {
    runs: Vec<StepRun>,
    rows: u64,
}

impl StepRuns {
    /// The runs of `steps`, or `None` if they decrease somewhere or need more than `max` runs.
    pub(crate) fn of(steps: &[i64], max: usize) -> Option<StepRuns> {
        let mut builder = StepRunsBuilder::new(max);
        builder.push(steps);
        builder.finish()
    }

    /// Rows of the series.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows among `rows` whose step is below `step`: a prefix of them, the steps being sorted.
    pub(crate) fn count_below(&self, rows: &Range<u64>, step: i128) -> u64 {
        let k = self.runs.partition_point(|run| i128::from(run.step) < step);
        let below = match k.checked_sub(1).and_then(|k| self.runs.get(k)) {
            None => 0,
            Some(run) => {
                // Elements step + i * stride < `step`: i < (step - run.step) / stride, rounded up.
                // `gap` >= 1 and `stride` >= 1; a gap past u64 is past every run's end.
                let gap = u64::try_from(step - i128::from(run.step)).unwrap_or(u64::MAX);
                let stride = u64::try_from(run.stride).unwrap_or(1).max(1);
                run.row + gap.div_ceil(stride).min(run.len)
            }
        };
        below.clamp(rows.start, rows.end.max(rows.start)) - rows.start
    }

    /// The step of `row`.
    pub(crate) fn step_at(&self, row: u64) -> Option<i64> {
        let k = self.runs.partition_point(|run| run.row <= row);
        let run = self.runs.get(k.checked_sub(1)?)?;
        let index = row - run.row;
        (index < run.len)
            .then(|| {
                run.step
                    .checked_add(run.stride.checked_mul(i64::try_from(index).ok()?)?)
            })
            .flatten()
    }

    /// The smallest and greatest steps among `rows` (non-empty, inside the series).
    pub(crate) fn span(&self, rows: &Range<u64>) -> Option<(i64, i64)> {
        if rows.is_empty() {
            return None;
        }
        Some((self.step_at(rows.start)?, self.step_at(rows.end - 1)?))
    }

    /// What the runs count for in the cache's bound (at least 1, for a series with none).
    fn weight(&self) -> usize {
        self.runs.len().max(1)
    }
}

/// Builds a series' step runs from its `step` column, batch by batch, so the column is never
/// held whole.
pub(crate) struct StepRunsBuilder {
    runs: Vec<StepRun>,
    rows: u64,
    /// The step that extends the last run (`None`: it has one step, or the next overflows).
    next: Option<i64>,
    last: Option<i64>,
    max: usize,
    failed: bool,
}

impl StepRunsBuilder {
    /// A builder that gives up past `max` runs.
    pub(crate) fn new(max: usize) -> StepRunsBuilder {
        StepRunsBuilder {
            runs: Vec::new(),
            rows: 0,
            next: None,
            last: None,
            max,
            failed: false,
        }
    }

    /// Appends the next steps in row order.
    pub(crate) fn push(&mut self, steps: &[i64]) {
        let mut at = 0;
        while at < steps.len() && !self.failed {
            at += self.extend_last(&steps[at..]);
            if let Some(step) = steps.get(at) {
                self.push_one(*step);
                at += 1;
            }
        }
    }

    /// Extends the last run by the leading steps of `steps` that continue it (the common case,
    /// kept to one comparison a step); how many it took.
    fn extend_last(&mut self, steps: &[i64]) -> usize {
        let (Some(mut next), Some(run)) = (self.next, self.runs.last_mut()) else {
            return 0;
        };
        let mut taken = 0;
        let mut following = Some(next);
        for step in steps {
            if *step != next {
                break;
            }
            taken += 1;
            following = next.checked_add(run.stride);
            match following {
                Some(after) => next = after,
                None => break,
            }
        }
        if taken > 0 {
            run.len += taken as u64;
            self.rows += taken as u64;
            self.last = steps.get(taken - 1).copied();
            self.next = following;
        }
        taken
    }

    /// Appends `count` steps `step`, `step + stride`, ... (wrapping, as a delta-encoded column
    /// spells them): what pushing them one by one does, in constant time when they continue
    /// the last run.
    pub(crate) fn push_run(&mut self, step: i64, stride: i64, count: u64) {
        let last = i64::try_from(count.saturating_sub(1))
            .ok()
            .and_then(|n| stride.checked_mul(n))
            .and_then(|span| step.checked_add(span));
        let (Some(last), true) = (last, stride >= 1 && count >= 3) else {
            let mut value = step;
            for _ in 0..count {
                if self.failed {
                    return;
                }
                self.push(std::slice::from_ref(&value));
                value = value.wrapping_add(stride);
            }
            return;
        };
        self.push(&[step, step + stride]);
        let third = step + 2 * stride;
        let continues =
            self.next == Some(third) && self.runs.last().is_some_and(|r| r.stride == stride);
        if self.failed || !continues {
            let mut value = third;
            for _ in 2..count {
                if self.failed {
                    return;
                }
                self.push(std::slice::from_ref(&value));
                value = value.wrapping_add(stride);
            }
            return;
        }
        if let Some(run) = self.runs.last_mut() {
            run.len += count - 2;
        }
        self.rows += count - 2;
        self.last = Some(last);
        self.next = last.checked_add(stride);
    }

    fn push_one(&mut self, step: i64) {
        let row = self.rows;
        self.rows += 1;
        if self.next == Some(step)
            && let Some(run) = self.runs.last_mut()
        {
            run.len += 1;
            self.next = step.checked_add(run.stride);
            self.last = Some(step);
            return;
        }
        match self.last {
            Some(last) if step < last => {
                self.failed = true;
                return;
            }
            Some(last) if step > last => {
                if let Some(run) = self.runs.last_mut().filter(|run| run.len == 1)
                    && let Some(stride) = step.checked_sub(last)
                {
                    run.stride = stride;
                    run.len = 2;
                    self.next = step.checked_add(stride);
                    self.last = Some(step);
                    return;
                }
            }
            _ => {}
        }
        if self.runs.len() == self.max {
            self.failed = true;
            return;
        }
        self.runs.push(StepRun {
            row,
            step,
            stride: 1,
            len: 1,
        });
        self.next = None;
        self.last = Some(step);
    }

    /// Whether the steps pushed so far decreased somewhere or needed more than `max` runs.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed
    }

    /// The runs, or `None` if the steps decreased somewhere or needed more than `max` runs.
    pub(crate) fn finish(self) -> Option<StepRuns> {
        (!self.failed).then_some(StepRuns {
            runs: self.runs,
            rows: self.rows,
        })
    }
}

/// Step runs by file and series (its first row).
type SeriesSteps = HashMap<(FileId, u64), Option<Arc<StepRuns>>>;
/// Picked rows by file and row number of the file.
type PickedRows = HashMap<FileId, HashMap<u64, (i64, i64, f64)>>;

/// The per-handle caches of few-row reads.
#[derive(Debug, Default)]
pub(crate) struct RowCaches {
    /// Step runs per series (`None`: the series has none, see `StepRuns::of`), and the runs
    /// held in all.
    steps: Mutex<(SeriesSteps, usize)>,
    /// Picked rows (row number of the file) per file: step, timestamp, value; and the rows
    /// held in all.
    rows: Mutex<(PickedRows, usize)>,
    /// Decoded blocks of rows, for reads of a few pages.
    blocks: Mutex<Blocks>,
}

fn file_id(root: &Path, file: &CompactedFile) -> FileId {
    let checksum = file.checksum.map(|c: FileChecksum| (c.bytes, c.crc));
    (root.join(&file.path), checksum)
}

/// Whether the step runs cache holds at least half its bound: reading ahead into it past that
/// would, on a large store, start it over and drop the runs the charts in use read.
pub(crate) fn step_runs_cache_half_full(cache: &MetadataCache) -> bool {
    crate::util::lock(&cache.rows().steps).1 >= CACHED_STEP_RUNS_MAX / 2
}

/// The step runs of `series` in `file`, reading its `step` column once per handle; `None` when
/// it has none (`StepRuns::of`).
pub(crate) fn step_runs(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    cache: &MetadataCache,
) -> Result<Option<Arc<StepRuns>>> {
    let key = (file_id(root, file), series.row_start);
    let caches = cache.rows();
    if let Some(found) = crate::util::lock(&caches.steps).0.get(&key) {
        return Ok(found.clone());
    }
    let mut builder = StepRunsBuilder::new(STEP_RUNS_MAX);
    let from_pages = super::step_pages::push_series_steps(root, file, series, cache, &mut builder)?
        && (builder.failed || builder.rows == series.row_count);
    if !from_pages {
        builder = StepRunsBuilder::new(STEP_RUNS_MAX);
        visit_series_steps(
            root,
            file,
            series,
            0..series.row_count,
            cache,
            &mut |steps| {
                builder.push(steps);
            },
        )?;
    }
    let runs = builder.finish().map(Arc::new);
    let weight = runs.as_ref().map_or(1, |r| r.weight());
    let mut held = crate::util::lock(&caches.steps);
    if held.1 + weight > CACHED_STEP_RUNS_MAX {
        *held = (HashMap::new(), 0);
    }
    held.1 += weight;
    held.0.insert(key, runs.clone());
    Ok(runs)
}

/// The step, timestamp and value of each of `rows` of `series` (counted from the series' first
/// row, ascending), reading only those the cache does not hold; each read row is kept.
pub(crate) fn read_picked_rows(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    rows: &[u64],
    cache: &MetadataCache,
) -> Result<Vec<(i64, i64, f64)>> {
    let id = file_id(root, file);
    let caches = cache.rows();
    let mut found: Vec<Option<(i64, i64, f64)>> = {
        let held = crate::util::lock(&caches.rows);
        let of_file = held.0.get(&id);
        rows.iter()
            .map(|row| of_file.and_then(|f| f.get(&(series.row_start + row)).copied()))
            .collect()
    };
    let mut missing: Vec<u64> = Vec::new();
    for (row, point) in rows.iter().zip(&found) {
        if point.is_none() && missing.last().is_none_or(|last| last < row) {
            missing.push(*row);
        }
    }
    if missing.is_empty() {
        return Ok(found.into_iter().flatten().collect());
    }
    let read = read_missing_rows(root, file, series, &missing, cache)?;
    for (row, point) in rows.iter().zip(found.iter_mut()) {
        if point.is_none() {
            *point = read.get(row).copied();
        }
    }
    let mut held = crate::util::lock(&caches.rows);
    if held.1 + read.len() > CACHED_ROWS_MAX {
        *held = (HashMap::new(), 0);
    }
    held.1 += read.len();
    let of_file = held.0.entry(id).or_default();
    for (row, point) in read {
        of_file.insert(series.row_start + row, point);
    }
    drop(held);
    found
        .into_iter()
        .map(|point| {
            point.ok_or_else(|| {
                crate::Error::InvalidInput(format!(
                    "rows {rows:?} of a {}-row series are past its end",
                    series.row_count
                ))
            })
        })
        .collect()
}

/// The step, timestamp and value of `rows` of `series` (counted from the series' first row,
/// strictly ascending), by row: from the picked pages alone (`pages::read_picks`), or where
/// the file's layout is not one it knows, through the general reader.
fn read_missing_rows(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    rows: &[u64],
    cache: &MetadataCache,
) -> Result<HashMap<u64, Picked>> {
    if rows.last().is_some_and(|last| *last < series.row_count) {
        let absolute: Vec<u64> = rows.iter().map(|row| series.row_start + row).collect();
        if let Some(points) = read_picked_file_rows(root, file, &absolute, cache)? {
            return Ok(rows.iter().copied().zip(points).collect());
        }
    }
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for row in rows {
        match ranges.last_mut() {
            Some(previous) if previous.end == *row => previous.end = row + 1,
            _ => ranges.push(*row..row + 1),
        }
    }
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    read_series_rows(root, file, series, &ranges, &mut columns, cache)?;
    Ok(rows
        .iter()
        .copied()
        .zip((0..columns.0.len()).map(|i| (columns.0[i], columns.1[i], columns.2[i])))
        .collect())
}

/// Rows of a file one cached block holds: a compacted file's page (its row groups are whole
/// multiples of it), so that a block costs a read what the page it holds does.
const BLOCK_ROWS: u64 = 16 * 1024;
/// Blocks a read may touch and still go through the block cache: reads of a few pages (a step
/// range, a short series) are the ones that repeat; a long series' history would only push
/// them out.
const BLOCKS_PER_READ_MAX: usize = 8;
/// Blocks the cache holds (384 KiB each, 18 MiB in all), the least recently used leaving first.
const CACHED_BLOCKS_MAX: usize = 48;

/// The three columns of rows `BLOCK_ROWS * n ..` of a file, decoded.
#[derive(Debug)]
struct Block {
    steps: Vec<i64>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

/// Decoded blocks by file and block number, each with when it was last used.
#[derive(Debug, Default)]
struct Blocks {
    held: HashMap<(FileId, u64), (Arc<Block>, u64)>,
    clock: u64,
}

impl Blocks {
    fn get(&mut self, key: &(FileId, u64)) -> Option<Arc<Block>> {
        self.clock += 1;
        let clock = self.clock;
        self.held.get_mut(key).map(|(block, used)| {
            *used = clock;
            Arc::clone(block)
        })
    }

    fn insert(&mut self, key: (FileId, u64), block: Arc<Block>) {
        while self.held.len() >= CACHED_BLOCKS_MAX {
            let oldest = self
                .held
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(oldest) => self.held.remove(&oldest),
                None => break,
            };
        }
        self.clock += 1;
        self.held.insert(key, (block, self.clock));
    }
}

/// Appends rows `rows` of `file` (row numbers of the file, ascending and disjoint) to `out`
/// through the block cache, reading whole blocks it does not hold; `false` (nothing appended)
/// when they touch more than `BLOCKS_PER_READ_MAX` blocks, for a direct read.
pub(super) fn read_through_blocks(
    root: &Path,
    file: &CompactedFile,
    rows: &[Range<u64>],
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<bool> {
    let mut numbers: Vec<u64> = Vec::new();
    for range in rows.iter().filter(|r| !r.is_empty()) {
        for block in range.start / BLOCK_ROWS..=(range.end - 1) / BLOCK_ROWS {
            if numbers.last() != Some(&block) {
                numbers.push(block);
            }
            if numbers.len() > BLOCKS_PER_READ_MAX {
                return Ok(false);
            }
        }
    }
    let id = file_id(root, file);
    let mut found: Vec<Option<Arc<Block>>> = {
        let mut blocks = crate::util::lock(&cache.rows().blocks);
        numbers
            .iter()
            .map(|n| blocks.get(&(id.clone(), *n)))
            .collect()
    };
    let wanted = |n: u64| n * BLOCK_ROWS..((n + 1) * BLOCK_ROWS).min(file.rows);
    let mut missing: Vec<Range<u64>> = Vec::new();
    for (n, block) in numbers.iter().zip(&found) {
        if block.is_none() {
            let range = wanted(*n);
            match missing.last_mut() {
                Some(previous) if previous.end == range.start => previous.end = range.end,
                _ => missing.push(range),
            }
        }
    }
    if !missing.is_empty() {
        let mut columns = (Vec::new(), Vec::new(), Vec::new());
        super::reader::read_file_rows(root, file, &missing, &mut columns, cache)?;
        let mut at = 0usize;
        let mut blocks = crate::util::lock(&cache.rows().blocks);
        for (n, slot) in numbers.iter().zip(found.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let length = (wanted(*n).end.saturating_sub(wanted(*n).start)) as usize;
            let (Some(steps), Some(timestamps), Some(values)) = (
                columns.0.get(at..at + length),
                columns.1.get(at..at + length),
                columns.2.get(at..at + length),
            ) else {
                return Err(crate::Error::InvalidInput(format!(
                    "{} has fewer rows than the {} its manifest entry says",
                    file.path, file.rows
                )));
            };
            let block = Arc::new(Block {
                steps: steps.to_vec(),
                timestamps: timestamps.to_vec(),
                values: values.to_vec(),
            });
            blocks.insert((id.clone(), *n), Arc::clone(&block));
            *slot = Some(block);
            at += length;
        }
    }
    for range in rows {
        let mut row = range.start;
        while row < range.end {
            let n = row / BLOCK_ROWS;
            let index = numbers.partition_point(|m| *m < n);
            let Some(Some(block)) = found.get(index) else {
                return Err(crate::Error::InvalidInput(format!(
                    "rows {range:?} of {} are not in order",
                    file.path
                )));
            };
            let start = (row - n * BLOCK_ROWS) as usize;
            let end = (range.end.min((n + 1) * BLOCK_ROWS) - n * BLOCK_ROWS) as usize;
            let (Some(steps), Some(timestamps), Some(values)) = (
                block.steps.get(start..end),
                block.timestamps.get(start..end),
                block.values.get(start..end),
            ) else {
                return Err(crate::Error::InvalidInput(format!(
                    "rows {range:?} are past the end of {}",
                    file.path
                )));
            };
            out.0.extend_from_slice(steps);
            out.1.extend_from_slice(timestamps);
            out.2.extend_from_slice(values);
            row = n * BLOCK_ROWS + end as u64;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_below_by_scan(steps: &[i64], rows: &Range<u64>, step: i128) -> u64 {
        steps[rows.start as usize..rows.end as usize]
            .iter()
            .filter(|s| i128::from(**s) < step)
            .count() as u64
    }

    #[test]
    fn step_runs_answer_as_a_scan_of_the_steps_does() {
        let cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![5],
            (0..100).collect(),
            (0..100).map(|s| s * 7 - 30).collect(),
            vec![1, 1, 1, 2, 3, 3, 10, 20, 30, 31, 32, 32],
            (0..50).chain(60..90).chain(89..120).collect(),
            vec![i64::MIN, 0, i64::MAX],
            vec![i64::MAX, i64::MAX],
        ];
        for steps in &cases {
            let runs = StepRuns::of(steps, 64).unwrap();
            assert_eq!(runs.rows(), steps.len() as u64);
            for (row, step) in steps.iter().enumerate() {
                assert_eq!(runs.step_at(row as u64), Some(*step), "{steps:?} row {row}");
            }
            assert_eq!(runs.step_at(steps.len() as u64), None);
            let length = steps.len() as u64;
            let probes: Vec<i128> = steps
                .iter()
                .flat_map(|s| [i128::from(*s) - 1, i128::from(*s), i128::from(*s) + 1])
                .chain([i128::from(i64::MIN) - 1, i128::from(i64::MAX) + 1, 0])
                .collect();
            for rows in [
                0..length,
                length / 3..length,
                0..length / 2,
                length / 2..length / 2,
            ] {
                for probe in &probes {
                    assert_eq!(
                        runs.count_below(&rows, *probe),
                        count_below_by_scan(steps, &rows, *probe),
                        "{steps:?} rows {rows:?} below {probe}"
                    );
                }
            }
        }
    }

    #[test]
    fn steps_that_decrease_or_need_too_many_runs_have_none() {
        assert_eq!(StepRuns::of(&[1, 2, 1], 64), None);
        let irregular: Vec<i64> = (0..100).map(|s| s * s).collect();
        assert_eq!(StepRuns::of(&irregular, 10), None);
        assert!(StepRuns::of(&irregular, 100).is_some());
    }
}
