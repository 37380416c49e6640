//! Reading one series back from a compacted file (columns step, timestamp, value): only its rows,
//! which the manifest locates, so the page index lets the reader skip every other page. Parsed
//! footers are cached per store handle, and so are the few-row reads of `rows.rs` (reads of a
//! few pages go through its block cache).
//!
//! Invariant: no byte of a compacted file is decoded before the whole file has matched the
//! length and CRC its manifest entry records, once per handle (the cache remembers files that
//! did, by path, inode, length and modification time). parquet-rs writes no page CRCs, and
//! page CRCs would not cover page headers or the footer, so the whole-file check is what
//! turns a flipped bit into an error naming the file instead of a wrong value.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow_array::{Array, Float32Array, Float64Array, Int64Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use super::{CompactedFile, FileChecksum, SeriesRows};
use crate::error::{Error, Result};

/// Files whose parsed footers a cache keeps before starting over (far more than any manifest
/// lists; the rest are entries of files merged away).
const METADATA_CACHE_FILES_MAX: usize = 4096;

/// Parsed footers and page indexes of compacted files, so repeated queries skip parsing them.
/// Keyed by path, inode, length and modification time: a compacted file never changes, a name
/// reused after a crashed compaction's file was removed is a different inode, and a file
/// changed in place has a new modification time, so it is checked again.
#[derive(Debug, Default)]
pub(crate) struct MetadataCache {
    files: Mutex<HashMap<FileKey, ArrowReaderMetadata>>,
    /// Step runs and picked rows of few-row reads (`rows.rs`).
    rows: super::rows::RowCaches,
}

/// Path, inode, length, and modification time in seconds and nanoseconds.
type FileKey = (PathBuf, u64, u64, i64, i64);

impl MetadataCache {
    /// The caches of few-row reads, which share this one's lifetime (the store handle's).
    pub(super) fn rows(&self) -> &super::rows::RowCaches {
        &self.rows
    }

    /// Whether `file` (open at `path`) is in the cache: checked and parsed already.
    pub(super) fn is_checked(&self, path: &Path, file: &File) -> Result<bool> {
        let key = file_key(path, file)?;
        Ok(crate::util::lock(&self.files).contains_key(&key))
    }

    pub(super) fn get(
        &self,
        path: &Path,
        file: &File,
        checksum: Option<FileChecksum>,
    ) -> Result<ArrowReaderMetadata> {
        let key = file_key(path, file)?;
        if let Some(metadata) = crate::util::lock(&self.files).get(&key) {
            return Ok(metadata.clone());
        }
        if let Some(checksum) = checksum {
            // Through the handle about to be read, so the bytes checked are the bytes decoded.
            checksum.check_open_file(path, file)?;
        }
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::load(file, options)
            .map_err(|e| Error::io("read parquet footer", path, std::io::Error::other(e)))?;
        let mut files = crate::util::lock(&self.files);
        if files.len() >= METADATA_CACHE_FILES_MAX {
            files.clear();
        }
        files.insert(key, metadata.clone());
        Ok(metadata)
    }
}

fn file_key(path: &Path, file: &File) -> Result<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let stat = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok((
        path.to_path_buf(),
        stat.ino(),
        stat.len(),
        stat.mtime(),
        stat.mtime_nsec(),
    ))
}

/// Rows decoded per batch: a series' rows come back in a few large batches (the reader's
/// default of 1,024 rows spends more on per-batch setup than on decoding).
const BATCH_ROWS: usize = 8192;

/// The most rows a read sets room aside for before decoding them (128 MiB a column).
const RESERVE_ROWS_MAX: u64 = 1 << 24;

/// The cache, with what the file being read must check against.
struct Checked<'a> {
    cache: &'a MetadataCache,
    checksum: Option<FileChecksum>,
}

/// Which of a series' points a read keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keep {
    /// Every point.
    All,
    /// Points whose step is in `first..=last`.
    Steps {
        /// Smallest step kept.
        first: i64,
        /// Greatest step kept.
        last: i64,
    },
}

/// Where a step range lies in a series: its rows (counted from the series' first row) and the
/// steps of the first and last of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    /// The rows whose steps are in the range, a contiguous run since a series is sorted.
    pub rows: Range<u64>,
    /// Step of the first of them.
    pub first_step: i64,
    /// Step of the last of them.
    pub last_step: i64,
}

/// Appends the points of `series` in `path` that `keep` keeps to the three columns.
///
/// For `Keep::Steps`, `locate_steps` finds the rows first, reading at most the `step` column
/// of the pages that can hold the range, and then only those rows are read of the three
/// columns, so the page index skips every page outside them.
pub(crate) fn read_series(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    keep: Keep,
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<()> {
    match keep {
        Keep::All => {
            let all = 0..series.row_count;
            read_series_rows(root, file, series, std::slice::from_ref(&all), out, cache)
        }
        Keep::Steps { first, last } => {
            let before = out.0.len();
            // A dense-looking series: the rows the range maps to, with a neighbour on each
            // side, read in one pass; kept if the neighbours prove them to be the whole range.
            let mut read = false;
            if let Some((window, inner)) = dense_window(series, first, last) {
                read_series_rows(
                    root,
                    file,
                    series,
                    std::slice::from_ref(&window),
                    out,
                    cache,
                )?;
                read = brackets(&out.0[before..], &window, &inner, (first, last), series);
                if !read {
                    out.0.truncate(before);
                    out.1.truncate(before);
                    out.2.truncate(before);
                }
            }
            if !read {
                let Some(located) = locate_steps(root, file, series, first, last, cache)? else {
                    return Ok(());
                };
                let rows = located.rows;
                read_series_rows(root, file, series, std::slice::from_ref(&rows), out, cache)?;
            }
            // The rows located hold only steps in the range unless the file is not sorted as
            // its manifest says; the test keeps such a file from answering outside the range.
            let mut index = before;
            for i in before..out.0.len() {
                if (first..=last).contains(&out.0[i]) {
                    out.0[index] = out.0[i];
                    out.1[index] = out.1[i];
                    out.2[index] = out.2[i];
                    index += 1;
                }
            }
            out.0.truncate(index);
            out.1.truncate(index);
            out.2.truncate(index);
            Ok(())
        }
    }
}

/// For a series with as many rows as steps in its span (most likely dense: each step once),
/// the rows step range `first..=last` maps to (`inner`, counted from the series' first row)
/// and the same widened by one row on each side within the series (`window`).
fn dense_window(series: &SeriesRows, first: i64, last: i64) -> Option<(Range<u64>, Range<u64>)> {
    let span = i128::from(series.last_step) - i128::from(series.first_step) + 1;
    let (low, high) = (first.max(series.first_step), last.min(series.last_step));
    if span != i128::from(series.row_count) || low > high {
        return None;
    }
    let row_low = (i128::from(low) - i128::from(series.first_step)) as u64;
    let row_high = (i128::from(high) - i128::from(series.first_step)) as u64;
    let inner = row_low..row_high + 1;
    let window = row_low.saturating_sub(1)..(row_high + 2).min(series.row_count);
    Some((window, inner))
}

/// Whether `steps` (of rows `window`) prove rows `inner` to be exactly the series' rows with
/// steps in `range`: the first and last of `inner` are in it, and the rows just outside
/// `inner` are out of it or past the series' ends. The series is sorted, so every row between
/// is in the range and none outside is.
fn brackets(
    steps: &[i64],
    window: &Range<u64>,
    inner: &Range<u64>,
    range: (i64, i64),
    series: &SeriesRows,
) -> bool {
    let step_of = |row: u64| {
        row.checked_sub(window.start)
            .and_then(|index| steps.get(index as usize))
            .copied()
    };
    let inside = |row: u64| step_of(row).is_some_and(|s| (range.0..=range.1).contains(&s));
    let before = inner.start == 0 || step_of(inner.start - 1).is_some_and(|s| s < range.0);
    let after = inner.end >= series.row_count || step_of(inner.end).is_some_and(|s| s > range.1);
    steps.len() as u64 == window.end - window.start
        && inside(inner.start)
        && inside(inner.end - 1)
        && before
        && after
}

/// Rows one task of a whole-series read decodes at most: enough pieces for both cores even
/// when a series lies in one row group, few enough that a piece's setup (a file handle, a
/// reader, the partly decoded first page of each column) stays small beside its rows.
const PIECE_ROWS_MAX: u64 = 256 * 1024;

/// Parts of three columns of one length that a read fills in place.
pub(crate) struct ColumnsMut<'a> {
    /// Steps.
    pub steps: &'a mut [i64],
    /// Timestamps, ms.
    pub timestamps_ms: &'a mut [i64],
    /// Values.
    pub values: &'a mut [f64],
}

impl<'a> ColumnsMut<'a> {
    /// The first `rows` rows, and the rest.
    fn split_at(self, rows: usize) -> (ColumnsMut<'a>, ColumnsMut<'a>) {
        let (steps, steps_rest) = self.steps.split_at_mut(rows);
        let (timestamps_ms, timestamps_rest) = self.timestamps_ms.split_at_mut(rows);
        let (values, values_rest) = self.values.split_at_mut(rows);
        let head = ColumnsMut {
            steps,
            timestamps_ms,
            values,
        };
        let rest = ColumnsMut {
            steps: steps_rest,
            timestamps_ms: timestamps_rest,
            values: values_rest,
        };
        (head, rest)
    }
}

/// Every row of `series`, as three columns allocated once at their final size and filled in
/// parallel: the series' rows are cut into pieces along row groups (and within a large group
/// every `PIECE_ROWS_MAX` rows), and each piece is decoded straight into its own part of the
/// columns, so no part is copied together afterwards and the fresh columns' page faults are
/// taken by the threads that write them.
pub(crate) fn read_whole_series(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    cache: &MetadataCache,
) -> Result<WholeSeries> {
    use rayon::prelude::*;
    let path = &root.join(&file.path);
    let opened = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.get(path, &opened, file.checksum)?;
    drop(opened);
    let rows = series.row_start..series.row_start + series.row_count;
    let pieces = pieces(metadata.metadata(), rows);
    let covered: u64 = pieces
        .iter()
        .map(|piece| piece.rows.end - piece.rows.start)
        .sum();
    if covered != series.row_count {
        return Err(Error::InvalidInput(format!(
            "{} holds {covered} of the {} rows its manifest entry gives a series from row {}",
            path.display(),
            series.row_count,
            series.row_start
        )));
    }
    // The footer's row groups vouch for the count; a count no vector can hold is refused
    // rather than left to the allocator's panic.
    let count = usize::try_from(series.row_count)
        .ok()
        .filter(|&count| count <= isize::MAX as usize / size_of::<i64>())
        .ok_or_else(|| not_runlog_columns(path))?;
    // Zeroed allocations this large come from the system as untouched pages, faulted in by
    // whichever thread first writes each.
    let mut columns = (vec![0i64; count], vec![0i64; count], vec![0f64; count]);
    let mut rest = ColumnsMut {
        steps: &mut columns.0,
        timestamps_ms: &mut columns.1,
        values: &mut columns.2,
    };
    let mut jobs = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let (out, after) = rest.split_at((piece.rows.end - piece.rows.start) as usize);
        rest = after;
        jobs.push((piece, out));
    }
    let checked = &Checked {
        cache,
        checksum: file.checksum,
    };
    let starts: Vec<usize> = (jobs.iter())
        .scan(0usize, |start, (_, out)| {
            let this = *start;
            *start += out.steps.len();
            Some(this)
        })
        .collect();
    let pieces_ascend = jobs
        .into_par_iter()
        .map(|(piece, out)| read_piece(path, &piece, out, checked))
        .collect::<Result<Vec<bool>>>()?;
    // Each piece tested its own steps; the pieces' edges are tested here.
    let edges_ascend = (starts.iter().skip(1))
        .all(|start| (columns.0.get(start - 1..=*start)).is_some_and(|pair| pair[0] <= pair[1]));
    let ascending = edges_ascend && pieces_ascend.iter().all(|ascends| *ascends);
    Ok(WholeSeries { columns, ascending })
}

/// A whole series' three columns, and whether its steps are known to ascend (`false` when
/// not tested: the caller tests them).
pub(crate) struct WholeSeries {
    /// Steps, timestamps, values.
    pub columns: (Vec<i64>, Vec<i64>, Vec<f64>),
    /// The steps were tested and ascend.
    pub ascending: bool,
}

/// Rows of one row group that one task of a whole-series read decodes.
struct Piece {
    group: usize,
    /// Row number of the group's first row in the file.
    group_start: u64,
    /// The rows, as row numbers of the file.
    rows: Range<u64>,
}

/// `rows` (row numbers of the file) cut at row group boundaries and every `PIECE_ROWS_MAX`
/// rows within a group, in row order.
fn pieces(metadata: &parquet::file::metadata::ParquetMetaData, rows: Range<u64>) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut group_start = 0u64;
    for (group, group_metadata) in metadata.row_groups().iter().enumerate() {
        let group_end = group_start + u64::try_from(group_metadata.num_rows()).unwrap_or(0);
        let mut start = rows.start.max(group_start);
        let end = rows.end.min(group_end);
        while start < end {
            let piece_end = end.min(start + PIECE_ROWS_MAX);
            pieces.push(Piece {
                group,
                group_start,
                rows: start..piece_end,
            });
            start = piece_end;
        }
        group_start = group_end;
    }
    pieces
}

/// Decodes `piece` into `out` (exactly as many rows long), through a handle of its own that
/// the cache has checked like any other.
/// Returns whether the piece's steps are known to ascend (tested by the page decoder; `false`
/// when not tested).
fn read_piece(
    path: &Path,
    piece: &Piece,
    out: ColumnsMut<'_>,
    cache: &Checked<'_>,
) -> Result<bool> {
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.cache.get(path, &file, cache.checksum)?;
    let mut out = out;
    crate::util::prefault(out.steps);
    crate::util::prefault(out.timestamps_ms);
    crate::util::prefault(out.values);
    let group_rows = piece.rows.start - piece.group_start..piece.rows.end - piece.group_start;
    let handle = file.try_clone().map_err(|e| Error::io("open", path, e))?;
    let decoded = super::pages::decode_piece(
        path,
        handle,
        metadata.metadata(),
        piece.group,
        group_rows,
        &mut out,
    )?;
    if let super::pages::Decoded::Done { ascending } = decoded {
        return Ok(ascending);
    }
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    if builder.schema().fields().len() != 3 {
        return Err(not_runlog_columns(path));
    }
    let projection = ProjectionMask::roots(builder.parquet_schema(), [0, 1, 2]);
    let skipped = (piece.rows.start - piece.group_start) as usize;
    let wanted = (piece.rows.end - piece.rows.start) as usize;
    let mut selectors = Vec::with_capacity(2);
    if skipped > 0 {
        selectors.push(RowSelector::skip(skipped));
    }
    selectors.push(RowSelector::select(wanted));
    let reader = builder
        .with_row_groups(vec![piece.group])
        .with_projection(projection)
        .with_row_selection(RowSelection::from(selectors))
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    let mut at = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| Error::io("read parquet", path, std::io::Error::other(e)))?;
        let (steps, timestamps, values) = runlog_columns(&batch, path)?;
        let rows = at..at + batch.num_rows();
        let (Some(steps_out), Some(timestamps_out), Some(values_out)) = (
            out.steps.get_mut(rows.clone()),
            out.timestamps_ms.get_mut(rows.clone()),
            out.values.get_mut(rows.clone()),
        ) else {
            return Err(piece_length_error(path, piece, rows.end));
        };
        steps_out.copy_from_slice(steps);
        timestamps_out.copy_from_slice(timestamps);
        match values {
            Values::F64(values) => values_out.copy_from_slice(values),
            Values::F32(values) => {
                for (out, value) in values_out.iter_mut().zip(values) {
                    *out = f64::from(*value);
                }
            }
        }
        at = rows.end;
    }
    if at != wanted {
        return Err(piece_length_error(path, piece, at));
    }
    Ok(false)
}

/// Whether `steps` ascend, compared without an early exit so that the comparison vectorizes.
pub(crate) fn ascending(steps: &[i64]) -> bool {
    (steps.iter().zip(steps.iter().skip(1))).fold(true, |ok, (a, b)| ok & (a <= b))
}

fn piece_length_error(path: &Path, piece: &Piece, rows: usize) -> Error {
    Error::InvalidInput(format!(
        "{} gave {rows} rows where rows {:?} of row group {} were asked for",
        path.display(),
        piece.rows,
        piece.group
    ))
}

/// Appends the three columns of `rows` of `series` (row numbers counted from the series'
/// first row, ascending and disjoint), in row order.
pub(crate) fn read_series_rows(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    rows: &[Range<u64>],
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<()> {
    let absolute = absolute_rows(&root.join(&file.path), series, rows)?;
    if super::rows::read_through_blocks(root, file, &absolute, out, cache)? {
        return Ok(());
    }
    read_file_rows(root, file, &absolute, out, cache)
}

/// Appends `rows` (row numbers of the file, ascending and disjoint) of the three columns of
/// `file`, read directly (the block cache's reads, and reads too long for it).
pub(super) fn read_file_rows(
    root: &Path,
    file: &CompactedFile,
    rows: &[Range<u64>],
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<()> {
    let path = &root.join(&file.path);
    let cache = &Checked {
        cache,
        checksum: file.checksum,
    };
    read_rows(path, rows, out, cache)
}

/// The step, timestamp and value of `rows` (row numbers of the file, strictly ascending) of
/// `file`, from the pages holding them alone (`pages::read_picks`), once the file is checked;
/// `None` for a layout the page decoder declines.
pub(super) fn read_picked_file_rows(
    root: &Path,
    file: &CompactedFile,
    rows: &[u64],
    cache: &MetadataCache,
) -> Result<Option<Vec<super::pages::Picked>>> {
    let path = &root.join(&file.path);
    let opened = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.get(path, &opened, file.checksum)?;
    super::pages::read_picks(path, opened, metadata.metadata(), rows)
}

/// The `step` column of `rows` of `series` (counted from the series' first row).
pub(crate) fn read_series_steps(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    rows: Range<u64>,
    cache: &MetadataCache,
) -> Result<Vec<i64>> {
    let mut steps = Vec::new();
    visit_series_steps(root, file, series, rows, cache, &mut |batch| {
        steps.extend_from_slice(batch);
    })?;
    Ok(steps)
}

/// Calls `visit` with the `step` column of `rows` of `series` (counted from the series' first
/// row), batch by batch in row order.
pub(crate) fn visit_series_steps(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    rows: Range<u64>,
    cache: &MetadataCache,
    visit: &mut dyn FnMut(&[i64]),
) -> Result<()> {
    let path = &root.join(&file.path);
    let cache = &Checked {
        cache,
        checksum: file.checksum,
    };
    let absolute = absolute_rows(path, series, std::slice::from_ref(&rows))?;
    for_each_batch(path, &absolute, &[0], cache, |batch| {
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        visit(column.ok_or_else(|| not_runlog_columns(path))?.values());
        Ok(())
    })
}

/// `rows` of `series` as row numbers of its file; `InvalidInput` for a row past the series.
fn absolute_rows(path: &Path, series: &SeriesRows, rows: &[Range<u64>]) -> Result<Vec<Range<u64>>> {
    let mut previous_end = 0;
    rows.iter()
        .map(|range| {
            if range.start < previous_end || range.end > series.row_count {
                return Err(Error::InvalidInput(format!(
                    "rows {range:?} of a {}-row series of {} are not in order or past its end",
                    series.row_count,
                    path.display()
                )));
            }
            previous_end = range.end;
            Ok(series.row_start + range.start..series.row_start + range.end)
        })
        .collect()
}

/// The rows of `series` whose steps are in `first..=last`, or `None` if it has none there.
///
/// A range holding the series' whole step span needs no read. Otherwise, when the series has
/// as many rows as steps in its span, it is most likely dense (each step once), so the rows
/// are computed and then checked by reading the `step` column of the first and last of them
/// and their outer neighbours. Where that check fails (repeated steps and gaps), or the
/// series is not dense, the `step` column is read over the series' rows in the pages whose
/// statistics can hold the range (`candidate_rows`).
pub(crate) fn locate_steps(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    first: i64,
    last: i64,
    cache: &MetadataCache,
) -> Result<Option<Located>> {
    let (low, high) = (first.max(series.first_step), last.min(series.last_step));
    if low > high || series.row_count == 0 {
        return Ok(None);
    }
    if low == series.first_step && high == series.last_step {
        return Ok(Some(Located {
            rows: 0..series.row_count,
            first_step: low,
            last_step: high,
        }));
    }
    let path = &root.join(&file.path);
    let cache = &Checked {
        cache,
        checksum: file.checksum,
    };
    let span = i128::from(series.last_step) - i128::from(series.first_step) + 1;
    if span == i128::from(series.row_count) {
        // In a dense series, step `s` is row `s - first_step`.
        let row_low = (i128::from(low) - i128::from(series.first_step)) as u64;
        let row_high = (i128::from(high) - i128::from(series.first_step)) as u64;
        if let Some(located) =
            check_dense_guess(path, series, (row_low, row_high), (first, last), cache)?
        {
            return Ok(Some(located));
        }
    }
    let candidates = candidate_rows(path, series, first, last, cache)?;
    let mut steps = Vec::new();
    for_each_batch(path, &candidates, &[0], cache, |batch| {
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        steps.extend_from_slice(column.ok_or_else(|| not_runlog_columns(path))?.values());
        Ok(())
    })?;
    let row_of = |mut index: usize| -> u64 {
        for range in &candidates {
            let length = (range.end - range.start) as usize;
            if index < length {
                return range.start + index as u64 - series.row_start;
            }
            index -= length;
        }
        series.row_count
    };
    let Some(first_index) = steps.iter().position(|s| (first..=last).contains(s)) else {
        return Ok(None);
    };
    let last_index = steps
        .iter()
        .rposition(|s| (first..=last).contains(s))
        .unwrap_or(first_index);
    Ok(Some(Located {
        rows: row_of(first_index)..row_of(last_index) + 1,
        first_step: steps[first_index],
        last_step: steps[last_index],
    }))
}

/// Checks that rows `guess` (inclusive) of `series` are exactly those with steps in `range`
/// (inclusive), by reading the steps of the two rows and of their outer neighbours.
fn check_dense_guess(
    path: &Path,
    series: &SeriesRows,
    guess: (u64, u64),
    range: (i64, i64),
    cache: &Checked<'_>,
) -> Result<Option<Located>> {
    let (row_low, row_high) = guess;
    let mut probes: Vec<u64> = Vec::with_capacity(4);
    for row in [
        row_low.checked_sub(1),
        Some(row_low),
        Some(row_high),
        Some(row_high + 1),
    ]
    .into_iter()
    .flatten()
    {
        if row < series.row_count && probes.last().is_none_or(|p| *p < row) {
            probes.push(row);
        }
    }
    let absolute: Vec<Range<u64>> = probes
        .iter()
        .map(|row| series.row_start + row..series.row_start + row + 1)
        .collect();
    let mut steps = Vec::with_capacity(probes.len());
    for_each_batch(path, &absolute, &[0], cache, |batch| {
        let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
        steps.extend_from_slice(column.ok_or_else(|| not_runlog_columns(path))?.values());
        Ok(())
    })?;
    let step_of = |row: u64| {
        probes
            .iter()
            .position(|p| *p == row)
            .and_then(|index| steps.get(index).copied())
    };
    let inside = |step: Option<i64>| step.is_some_and(|s| (range.0..=range.1).contains(&s));
    let (low_step, high_step) = (step_of(row_low), step_of(row_high));
    let before_ok = row_low == 0 || step_of(row_low - 1).is_some_and(|s| s < range.0);
    let after_ok =
        row_high + 1 >= series.row_count || step_of(row_high + 1).is_some_and(|s| s > range.1);
    match (low_step, high_step) {
        (Some(first_step), Some(last_step))
            if inside(low_step) && inside(high_step) && before_ok && after_ok =>
        {
            Ok(Some(Located {
                rows: row_low..row_high + 1,
                first_step,
                last_step,
            }))
        }
        _ => Ok(None),
    }
}

/// The rows of `series` (row numbers of the file, ascending, merged where adjacent) in pages
/// of the `step` column whose min/max statistics can hold a step in `first..=last`. All the
/// series' rows where the file has no page index. A page shared with a neighbouring series
/// has statistics over both, which can only make it a candidate more often, never less.
fn candidate_rows(
    path: &Path,
    series: &SeriesRows,
    first: i64,
    last: i64,
    cache: &Checked<'_>,
) -> Result<Vec<Range<u64>>> {
    let series_rows = series.row_start..series.row_start + series.row_count;
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.cache.get(path, &file, cache.checksum)?;
    let parquet = metadata.metadata();
    let Some(page_index) = parquet.page_index() else {
        return Ok(vec![series_rows]);
    };
    let mut candidates: Vec<Range<u64>> = Vec::new();
    let mut group_start = 0u64;
    for (group, group_metadata) in parquet.row_groups().iter().enumerate() {
        let group_rows = u64::try_from(group_metadata.num_rows()).unwrap_or(0);
        let group_end = group_start + group_rows;
        if group_end > series_rows.start && group_start < series_rows.end {
            let pages = page_rows(page_index.as_ref(), group, group_rows);
            let statistics = page_index.column_index(group, 0);
            for (page, rows) in pages.iter().enumerate() {
                let may_hold = match statistics {
                    Some(ColumnIndexMetaData::INT64(index)) => {
                        match (index.min_value(page), index.max_value(page)) {
                            (Some(min), Some(max)) => *max >= first && *min <= last,
                            _ => true,
                        }
                    }
                    _ => true,
                };
                let start = (group_start + rows.start).max(series_rows.start);
                let end = (group_start + rows.end).min(series_rows.end);
                if may_hold && start < end {
                    match candidates.last_mut() {
                        Some(previous) if previous.end == start => previous.end = end,
                        _ => candidates.push(start..end),
                    }
                }
            }
        }
        group_start = group_end;
    }
    Ok(candidates)
}

/// Rows `rows` (counted from the series' first row) of `series` appended to `out`, if the
/// series' rows are in (timestamp, step) order as far as those rows' places in that order go;
/// `false` (and nothing appended) when that cannot be shown without reading the whole series.
///
/// Shown from the `timestamp` column's page statistics and the pages read: the pages holding
/// `rows`, and the pages the series shares with its neighbours, are read (all three columns)
/// and must be strictly increasing in (timestamp, step); every other page of the series must
/// lie, by its min/max timestamp, strictly after the pages before it and strictly before the
/// pages after it. Then the points before any row of `rows` in (timestamp, step) order are
/// exactly the rows before it, whatever the order inside unread pages.
pub(crate) fn read_rows_in_time_order(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    rows: Range<u64>,
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<bool> {
    let path = &root.join(&file.path);
    let cache = &Checked {
        cache,
        checksum: file.checksum,
    };
    let Some(blocks) = timestamp_blocks(path, series, &rows, cache)? else {
        return Ok(false);
    };
    let read: Vec<Range<u64>> = blocks
        .iter()
        .filter(|block| block.read)
        .map(|block| block.rows.clone())
        .collect();
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    read_rows(path, &read, &mut columns, cache)?;
    // Each block's (first, last) (timestamp, step) key, the read ones from their rows.
    let mut at = 0usize;
    let mut previous: Option<((i64, i64), u64)> = None;
    let mut window = (0, 0);
    for block in &blocks {
        let (first_key, last_key) = if block.read {
            let count = (block.rows.end - block.rows.start) as usize;
            let keys = |i: usize| (columns.1[i], columns.0[i]);
            if at + count > columns.0.len() || (at + 1..at + count).any(|i| keys(i - 1) >= keys(i))
            {
                return Ok(false);
            }
            let (wanted_start, wanted_end) =
                (series.row_start + rows.start, series.row_start + rows.end);
            if block.rows.contains(&wanted_start) {
                window.0 = at + (wanted_start - block.rows.start) as usize;
            }
            if block.rows.start < wanted_end && wanted_end <= block.rows.end {
                window.1 = at + (wanted_end - block.rows.start) as usize;
            }
            at += count;
            (keys(at - count), keys(at - 1))
        } else {
            ((block.min, i64::MIN), (block.max, i64::MAX))
        };
        if let Some((last, end)) = previous {
            // Adjacent read rows compare exactly; otherwise timestamps must differ.
            let ordered = if end == block.rows.start && block.read && last.1 != i64::MAX {
                last < first_key
            } else {
                last.0 < first_key.0
            };
            if !ordered {
                return Ok(false);
            }
        }
        previous = Some((last_key, block.rows.end));
    }
    if rows.is_empty() {
        return Ok(true);
    }
    if window.0 >= window.1 || window.1 > columns.0.len() {
        return Ok(false);
    }
    out.0.extend_from_slice(&columns.0[window.0..window.1]);
    out.1.extend_from_slice(&columns.1[window.0..window.1]);
    out.2.extend_from_slice(&columns.2[window.0..window.1]);
    Ok(true)
}

/// A run of a series' rows (row numbers of the file) in one page of the `timestamp` column:
/// read, or known only by the page's min/max timestamp.
struct Block {
    rows: Range<u64>,
    read: bool,
    min: i64,
    max: i64,
}

/// The series' rows page by page of the `timestamp` column, marking the pages to read: those
/// meeting `rows` (counted from the series' first row), those shared with a neighbouring
/// series, and those without statistics. `None` without a page index.
fn timestamp_blocks(
    path: &Path,
    series: &SeriesRows,
    rows: &Range<u64>,
    cache: &Checked<'_>,
) -> Result<Option<Vec<Block>>> {
    let series_rows = series.row_start..series.row_start + series.row_count;
    let wanted = series.row_start + rows.start..series.row_start + rows.end;
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.cache.get(path, &file, cache.checksum)?;
    let parquet = metadata.metadata();
    let Some(page_index) = parquet.page_index() else {
        return Ok(None);
    };
    let mut blocks: Vec<Block> = Vec::new();
    let mut group_start = 0u64;
    for (group, group_metadata) in parquet.row_groups().iter().enumerate() {
        let group_rows = u64::try_from(group_metadata.num_rows()).unwrap_or(0);
        let group_end = group_start + group_rows;
        if group_end > series_rows.start && group_start < series_rows.end {
            let Some(offsets) = page_index.offset_index(group, 1) else {
                return Ok(None);
            };
            let firsts: Vec<u64> = offsets
                .page_locations()
                .iter()
                .map(|page| {
                    u64::try_from(page.first_row_index)
                        .unwrap_or(0)
                        .min(group_rows)
                })
                .collect();
            let statistics = match page_index.column_index(group, 1) {
                Some(ColumnIndexMetaData::INT64(index)) => Some(index),
                _ => None,
            };
            for (page, first) in firsts.iter().enumerate() {
                let page_end = group_start + firsts.get(page + 1).copied().unwrap_or(group_rows);
                let page_start = group_start + first;
                let start = page_start.max(series_rows.start);
                let end = page_end.min(series_rows.end);
                if start >= end {
                    continue;
                }
                let bounds = statistics
                    .and_then(|index| Some((*index.min_value(page)?, *index.max_value(page)?)));
                let shared = page_start < series_rows.start || page_end > series_rows.end;
                let meets = start < wanted.end && end > wanted.start;
                let read = shared || meets || bounds.is_none();
                let (min, max) = bounds.unwrap_or((i64::MIN, i64::MAX));
                match blocks.last_mut() {
                    Some(previous) if previous.read && read && previous.rows.end == start => {
                        previous.rows.end = end;
                    }
                    _ => blocks.push(Block {
                        rows: start..end,
                        read,
                        min,
                        max,
                    }),
                }
            }
        }
        group_start = group_end;
    }
    Ok(Some(blocks))
}

/// The rows (counted from the row group's first) of each page of the `step` column of row
/// group `group`, from the offset index; one page of every row if there is none.
fn page_rows(
    page_index: &dyn parquet::file::metadata::page_index::PageIndexProvider,
    group: usize,
    group_rows: u64,
) -> Vec<Range<u64>> {
    let Some(offsets) = page_index.offset_index(group, 0) else {
        return std::iter::once(0..group_rows).collect();
    };
    let firsts: Vec<u64> = offsets
        .page_locations()
        .iter()
        .map(|page| {
            u64::try_from(page.first_row_index)
                .unwrap_or(0)
                .min(group_rows)
        })
        .collect();
    firsts
        .iter()
        .enumerate()
        .map(|(page, start)| *start..firsts.get(page + 1).copied().unwrap_or(group_rows))
        .collect()
}

/// Appends `rows` (row numbers of the file, ascending and disjoint) of the three columns.
fn read_rows(
    path: &Path,
    rows: &[Range<u64>],
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &Checked<'_>,
) -> Result<()> {
    // The count comes from the manifest and the footer, both on disk: beyond a bound the
    // columns grow with the rows actually decoded rather than trust it.
    let count: u64 = rows.iter().map(|r| r.end - r.start).sum();
    let reserve = count.min(RESERVE_ROWS_MAX) as usize;
    out.0.reserve(reserve);
    out.1.reserve(reserve);
    out.2.reserve(reserve);
    for_each_batch(path, rows, &[0, 1, 2], cache, |batch| {
        let (steps, timestamps, values) = runlog_columns(batch, path)?;
        out.0.extend_from_slice(steps);
        out.1.extend_from_slice(timestamps);
        match values {
            Values::F64(values) => out.2.extend_from_slice(values),
            Values::F32(values) => out.2.extend(values.iter().map(|v| f64::from(*v))),
        }
        Ok(())
    })
}

/// A batch's `value` column: f64, or f32 (widened exactly by the caller).
enum Values<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
}

/// A batch of the three columns' `step`, `timestamp` and `value`, or the error that the file
/// does not hold runlog's metric columns.
fn runlog_columns<'a>(
    batch: &'a arrow_array::RecordBatch,
    path: &Path,
) -> Result<(&'a [i64], &'a [i64], Values<'a>)> {
    let column = |index: usize| batch.column(index).as_any();
    let (Some(steps), Some(timestamps)) = (
        column(0).downcast_ref::<Int64Array>(),
        column(1).downcast_ref::<Int64Array>(),
    ) else {
        return Err(not_runlog_columns(path));
    };
    let values = if let Some(values) = column(2).downcast_ref::<Float64Array>() {
        Values::F64(values.values())
    } else if let Some(values) = column(2).downcast_ref::<Float32Array>() {
        Values::F32(values.values())
    } else {
        return Err(not_runlog_columns(path));
    };
    Ok((steps.values(), timestamps.values(), values))
}

/// Calls `visit` with each batch of `rows` (row numbers of the file, ascending and disjoint)
/// of the columns `columns`. Only the row groups holding them are opened, and within those
/// the row selection lets the page index skip every page outside them.
fn for_each_batch(
    path: &Path,
    rows: &[Range<u64>],
    columns: &[usize],
    cache: &Checked<'_>,
    mut visit: impl FnMut(&arrow_array::RecordBatch) -> Result<()>,
) -> Result<()> {
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(());
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.cache.get(path, &file, cache.checksum)?;
    let (groups, groups_start) = row_groups_holding(metadata.metadata(), first.start..last.end);
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    if builder.schema().fields().len() != 3 {
        return Err(not_runlog_columns(path));
    }
    let projection = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let mut selectors = Vec::with_capacity(rows.len() * 2);
    let mut position = groups_start;
    for range in rows {
        if range.start < position {
            return Err(Error::InvalidInput(format!(
                "rows {range:?} of {} are not in order",
                path.display()
            )));
        }
        if range.start > position {
            selectors.push(RowSelector::skip((range.start - position) as usize));
        }
        selectors.push(RowSelector::select((range.end - range.start) as usize));
        position = range.end;
    }
    let reader = builder
        .with_row_groups(groups)
        .with_projection(projection)
        .with_row_selection(RowSelection::from(selectors))
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::io("read parquet", path, std::io::Error::other(e)))?;
        visit(&batch)?;
    }
    Ok(())
}

/// The row groups that hold any of `rows` (one contiguous run of them), and the file's row
/// number of the first one's first row.
fn row_groups_holding(
    metadata: &parquet::file::metadata::ParquetMetaData,
    rows: Range<u64>,
) -> (Vec<usize>, u64) {
    let mut groups = Vec::new();
    let mut first_start = None;
    let mut group_start = 0u64;
    for (group, group_metadata) in metadata.row_groups().iter().enumerate() {
        let group_end = group_start + u64::try_from(group_metadata.num_rows()).unwrap_or(0);
        if group_end > rows.start && group_start < rows.end {
            groups.push(group);
            first_start.get_or_insert(group_start);
        }
        group_start = group_end;
    }
    (groups, first_start.unwrap_or(0))
}

fn not_runlog_columns(path: &Path) -> Error {
    Error::InvalidInput(format!(
        "{} does not have runlog's metric columns",
        path.display()
    ))
}
