//! Reading one series back from a compacted file (columns step, timestamp, value): only its rows,
//! which the manifest locates, so the page index lets the reader skip every other page. Parsed
//! footers are cached per store handle.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow_array::{Array, Float32Array, Float64Array, Int64Array};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;

use super::SeriesRows;
use crate::error::{Error, Result};

/// Files whose parsed footers a cache keeps before starting over (far more than any manifest
/// lists; the rest are entries of files merged away).
const METADATA_CACHE_FILES_MAX: usize = 4096;

/// Parsed footers and page indexes of compacted files, so repeated queries skip parsing them.
/// Keyed by path, inode and length: a compacted file never changes, and a name reused after a
/// crashed compaction's file was removed is a different inode.
#[derive(Debug, Default)]
pub(crate) struct MetadataCache {
    files: Mutex<HashMap<(PathBuf, u64, u64), ArrowReaderMetadata>>,
}

impl MetadataCache {
    fn get(&self, path: &Path, file: &File) -> Result<ArrowReaderMetadata> {
        use std::os::unix::fs::MetadataExt;
        let stat = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        let key = (path.to_path_buf(), stat.ino(), stat.len());
        if let Some(metadata) = crate::catalog::lock(&self.files).get(&key) {
            return Ok(metadata.clone());
        }
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::load(file, options)
            .map_err(|e| Error::io("read parquet footer", path, std::io::Error::other(e)))?;
        let mut files = crate::catalog::lock(&self.files);
        if files.len() >= METADATA_CACHE_FILES_MAX {
            files.clear();
        }
        files.insert(key, metadata.clone());
        Ok(metadata)
    }
}

/// Appends the points of `series` in `path` whose step passes `keep` to the three columns.
pub(crate) fn read_series(
    path: &Path,
    series: &SeriesRows,
    keep: &dyn Fn(i64) -> bool,
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
    cache: &MetadataCache,
) -> Result<()> {
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let metadata = cache.get(path, &file)?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    let selection = RowSelection::from(vec![
        RowSelector::skip(series.row_start as usize),
        RowSelector::select(series.row_count as usize),
    ]);
    let reader = builder
        .with_row_selection(selection)
        .build()
        .map_err(parquet_error)?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::io("read parquet", path, std::io::Error::other(e)))?;
        let column = |index: usize| batch.column(index);
        let (Some(steps), Some(timestamps), Some(values)) = (
            column(0).as_any().downcast_ref::<Int64Array>(),
            column(1).as_any().downcast_ref::<Int64Array>(),
            float_values(column(2)),
        ) else {
            return Err(Error::InvalidInput(format!(
                "{} does not have runlog's metric columns",
                path.display()
            )));
        };
        for (i, value) in values.into_iter().enumerate() {
            let step = steps.value(i);
            if keep(step) {
                out.0.push(step);
                out.1.push(timestamps.value(i));
                out.2.push(value);
            }
        }
    }
    Ok(())
}

/// A value column as f64, whichever width it was stored at (f32 widens exactly).
pub(super) fn float_values(column: &dyn Array) -> Option<Vec<f64>> {
    if let Some(values) = column.as_any().downcast_ref::<Float64Array>() {
        return Some(values.values().to_vec());
    }
    let values = column.as_any().downcast_ref::<Float32Array>()?;
    Some(values.values().iter().map(|v| f64::from(*v)).collect())
}
