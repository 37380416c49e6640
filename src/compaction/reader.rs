//! Reading one series back from a compacted file (columns step, timestamp, value): only its rows,
//! which the manifest locates, so the page index lets the reader skip every other page. Parsed
//! footers are cached per store handle.
//!
//! Invariant: no byte of a compacted file is decoded before the whole file has matched the
//! length and CRC its manifest entry records, once per handle (the cache remembers files that
//! did, by path, inode, length and modification time). parquet-rs writes no page CRCs, and
//! page CRCs would not cover page headers or the footer, so the whole-file check is what
//! turns a flipped bit into an error naming the file instead of a wrong value.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow_array::{Array, Float32Array, Float64Array, Int64Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;

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
}

/// Path, inode, length, and modification time in seconds and nanoseconds.
type FileKey = (PathBuf, u64, u64, i64, i64);

impl MetadataCache {
    fn get(
        &self,
        path: &Path,
        file: &File,
        checksum: Option<FileChecksum>,
    ) -> Result<ArrowReaderMetadata> {
        use std::os::unix::fs::MetadataExt;
        let stat = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let key = (
            path.to_path_buf(),
            stat.ino(),
            stat.len(),
            stat.mtime(),
            stat.mtime_nsec(),
        );
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

/// Rows decoded per batch: a series' rows come back in a few large batches (the reader's
/// default of 1,024 rows spends more on per-batch setup than on decoding).
const BATCH_ROWS: usize = 8192;

/// The cache, with what the file being read must check against.
struct Checked<'a> {
    cache: &'a MetadataCache,
    checksum: Option<FileChecksum>,
}

/// Which of a series' points a read keeps.
pub(crate) enum Keep<'a> {
    /// Every point.
    All,
    /// Points whose step passes the test.
    Steps(&'a dyn Fn(i64) -> bool),
}

/// Appends the points of `series` in `path` that `keep` keeps to the three columns.
///
/// For `Keep::Steps`, the step column is read first (it is stored uncompressed and delta
/// encoded, so that is cheap), and then only the rows in the kept range are read of the other
/// two, so the page index skips every page outside it. A series is sorted by step, so a step
/// range is a contiguous run of its rows.
pub(crate) fn read_series(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    keep: Keep<'_>,
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<()> {
    let path = &root.join(&file.path);
    let cache = &Checked {
        cache,
        checksum: file.checksum,
    };
    match keep {
        Keep::All => read_rows(path, series.row_start, series.row_count, out, cache),
        Keep::Steps(keep) => {
            let mut steps = Vec::new();
            for_each_batch(
                path,
                series.row_start,
                series.row_count,
                &[0],
                cache,
                |batch| {
                    let column = batch.column(0).as_any().downcast_ref::<Int64Array>();
                    steps.extend_from_slice(
                        column.ok_or_else(|| not_runlog_columns(path))?.values(),
                    );
                    Ok(())
                },
            )?;
            let Some(first) = steps.iter().position(|s| keep(*s)) else {
                return Ok(());
            };
            let end = steps
                .iter()
                .rposition(|s| keep(*s))
                .map_or(first, |last| last + 1);
            let rows = (end - first) as u64;
            let before = out.0.len();
            read_rows(path, series.row_start + first as u64, rows, out, cache)?;
            // Within the run, a step outside the range cannot occur (the series is sorted);
            // the test stays as a guard against a file that is not.
            let mut index = before;
            for i in before..out.0.len() {
                if keep(out.0[i]) {
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

/// Appends rows `start..start + count` of the three columns.
fn read_rows(
    path: &Path,
    start: u64,
    count: u64,
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &Checked<'_>,
) -> Result<()> {
    out.0.reserve(count as usize);
    out.1.reserve(count as usize);
    out.2.reserve(count as usize);
    for_each_batch(path, start, count, &[0, 1, 2], cache, |batch| {
        let column = |index: usize| batch.column(index).as_any();
        let (Some(steps), Some(timestamps)) = (
            column(0).downcast_ref::<Int64Array>(),
            column(1).downcast_ref::<Int64Array>(),
        ) else {
            return Err(not_runlog_columns(path));
        };
        out.0.extend_from_slice(steps.values());
        out.1.extend_from_slice(timestamps.values());
        let values = column(2);
        if let Some(values) = values.downcast_ref::<Float64Array>() {
            out.2.extend_from_slice(values.values());
        } else if let Some(values) = values.downcast_ref::<Float32Array>() {
            out.2.extend(values.values().iter().map(|v| f64::from(*v)));
        } else {
            return Err(not_runlog_columns(path));
        }
        Ok(())
    })
}

/// Calls `visit` with each batch of rows `start..start + count` of the columns `columns`.
fn for_each_batch(
    path: &Path,
    start: u64,
    count: u64,
    columns: &[usize],
    cache: &Checked<'_>,
    mut visit: impl FnMut(&arrow_array::RecordBatch) -> Result<()>,
) -> Result<()> {
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.cache.get(path, &file, cache.checksum)?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    if builder.schema().fields().len() != 3 {
        return Err(not_runlog_columns(path));
    }
    let projection = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let selection = RowSelection::from(vec![
        RowSelector::skip(start as usize),
        RowSelector::select(count as usize),
    ]);
    let reader = builder
        .with_projection(projection)
        .with_row_selection(selection)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(parquet_error)?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::io("read parquet", path, std::io::Error::other(e)))?;
        visit(&batch)?;
    }
    Ok(())
}

fn not_runlog_columns(path: &Path) -> Error {
    Error::InvalidInput(format!(
        "{} does not have runlog's metric columns",
        path.display()
    ))
}
