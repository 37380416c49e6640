//! Reading one series back from a compacted file: only its rows (the manifest says where they
//! are) and only the step, timestamp and value columns, so the page index lets the reader skip
//! every other page.

use std::fs::File;
use std::path::Path;

use arrow_array::{Array, Float32Array, Float64Array, Int64Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;

use crate::error::{Error, Result};

use super::SeriesRows;

/// Appends the points of `series` in `path` whose step passes `keep` to the three columns.
pub(crate) fn read_series(
    path: &Path,
    series: &SeriesRows,
    keep: &dyn Fn(i64) -> bool,
    out: &mut (Vec<i64>, Vec<i64>, Vec<f64>),
) -> Result<()> {
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(parquet_error)?;
    let projection = ProjectionMask::roots(builder.parquet_schema(), [2, 3, 4]);
    let selection = RowSelection::from(vec![
        RowSelector::skip(series.row_start as usize),
        RowSelector::select(series.row_count as usize),
    ]);
    let reader = builder
        .with_projection(projection)
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
