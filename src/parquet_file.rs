//! Writing one Parquet file: the encodings and statistics readers prune on, published
//! atomically. Below both of its users, compaction (the store's compacted files) and export
//! (the Hive-partitioned copy), so neither depends on the other for it.

use std::path::Path;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::io::{Storage, create_dirs, publish};

/// Rows per data page: small pages let a reader skip to a step range using the page index.
const PAGE_ROWS_MAX: usize = 8 * 1024;
/// ZSTD level: 3 is zstd's default balance of speed and size.
const ZSTD_LEVEL: i32 = 3;
/// zstd level of compacted files' value column.
const ZSTD_LEVEL_VALUES: i32 = 9;

/// How a table is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Small tables: defaults plus ZSTD and statistics.
    Plain,
    /// Metric points: sorted by (run_id, key, step); steps and timestamps delta-encoded, values
    /// byte-stream-split, run and key dictionary-encoded.
    Metrics,
    /// Compacted metric points: the `Metrics` layout with larger pages. zstd compresses each page
    /// on its own, and noisy values compress better in larger pages (a reader seeks to a series'
    /// rows through the offset index either way).
    Compacted,
}

/// Rows per data page of compacted files.
const COMPACTED_PAGE_ROWS_MAX: usize = 16 * 1024;

fn properties(layout: Layout) -> Result<WriterProperties> {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let builder = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(zstd))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS_MAX)
        // "<app> version <semver>" is the form parquet-java parses; other forms make it distrust
        // string statistics.
        .set_created_by(format!("runlog version {}", env!("CARGO_PKG_VERSION")));
    let builder = match layout {
        Layout::Plain => builder,
        Layout::Compacted | Layout::Metrics => {
            let builder = if layout == Layout::Compacted {
                builder.set_data_page_row_count_limit(COMPACTED_PAGE_ROWS_MAX)
            } else {
                builder
            };
            let plain = |builder: parquet::file::properties::WriterPropertiesBuilder,
                         column: &str,
                         encoding| {
                builder
                    .set_column_dictionary_enabled(ColumnPath::from(column), false)
                    .set_column_encoding(ColumnPath::from(column), encoding)
            };
            let builder = plain(builder, "step", Encoding::DELTA_BINARY_PACKED);
            let builder = plain(builder, "timestamp", Encoding::DELTA_BINARY_PACKED);
            let builder = plain(builder, "value", Encoding::BYTE_STREAM_SPLIT);
            // In compacted files, delta encoding leaves regular steps a fraction of a bit each,
            // which zstd cannot shrink further, while the parquet crate creates a zstd context
            // per page it decompresses (perf: 14 % of a history query with every column
            // compressed). Values, the bulk of the bytes, get a stronger level: decompression
            // speed does not depend on it.
            let builder = if layout == Layout::Compacted {
                let values = ZstdLevel::try_new(ZSTD_LEVEL_VALUES)
                    .map_err(|e| Error::InvalidInput(e.to_string()))?;
                builder
                    .set_column_compression(ColumnPath::from("step"), Compression::UNCOMPRESSED)
                    .set_column_compression(ColumnPath::from("value"), Compression::ZSTD(values))
            } else {
                builder
            };
            let sorted = |column_idx| SortingColumn {
                column_idx,
                descending: false,
                nulls_first: false,
            };
            // Export files are sorted by (run_id, key, step), their first three columns;
            // compacted files, which have no run or key column, only within each series.
            if layout == Layout::Metrics {
                builder.set_sorting_columns(Some(vec![sorted(0), sorted(1), sorted(2)]))
            } else {
                builder
            }
        }
    };
    Ok(builder.build())
}

/// What was written: the file's length and CRC-32, computed over the bytes as they went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub bytes: u64,
    pub crc: u32,
}

/// A writer that passes bytes through and checksums exactly those the file took.
struct Checksummed<'a> {
    file: &'a mut std::fs::File,
    crc: &'a mut crc32fast::Hasher,
    bytes: &'a mut u64,
}

impl std::io::Write for Checksummed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        let taken = buf.get(..written).unwrap_or(buf);
        self.crc.update(taken);
        *self.bytes += taken.len() as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `batch` to `path` through a temporary name; returns the file's size and CRC.
pub(crate) fn write(
    path: &Path,
    batch: &RecordBatch,
    layout: Layout,
    storage: &dyn Storage,
) -> Result<Written> {
    if let Some(dir) = path.parent() {
        create_dirs(dir, storage)?;
    }
    let properties = properties(layout)?;
    // Never replacing: two exports racing into one folder fail rather than mix.
    publish(path, storage, |temporary, file| {
        let parquet_error = |e: parquet::errors::ParquetError| {
            Error::io("write parquet", temporary, std::io::Error::other(e))
        };
        let mut crc = crc32fast::Hasher::new();
        let mut bytes = 0u64;
        let out = Checksummed {
            file,
            crc: &mut crc,
            bytes: &mut bytes,
        };
        let mut writer =
            ArrowWriter::try_new(out, batch.schema(), Some(properties)).map_err(parquet_error)?;
        writer.write(batch).map_err(parquet_error)?;
        writer.close().map_err(parquet_error)?;
        let length = file
            .metadata()
            .map_err(|e| Error::io("stat", temporary, e))?
            .len();
        if length != bytes {
            return Err(Error::io(
                "write parquet",
                temporary,
                std::io::Error::other(format!("{length} bytes on disk, {bytes} written")),
            ));
        }
        Ok(Written {
            bytes,
            crc: crc.finalize(),
        })
    })
}
