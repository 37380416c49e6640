//! Decoding the pages of a compacted file's three columns straight into a result's slices:
//! the whole-series read's fast path, for the layout compaction writes (`parquet_file.rs`:
//! data pages v2 of required columns, `step` and `timestamp` delta-binary-packed int64, `value`
//! byte-stream-split double, an offset index). Each page is decompressed by the parquet crate's
//! page reader and decoded here, in tight loops, into its rows' places; only a page cut by a
//! piece's edge is decoded through a scratch buffer (a delta page up to the piece's last row)
//! or gathered in place (a byte-stream-split page).
//!
//! It also reads a sample's picked rows (`read_picks`) from the pages holding them alone, each
//! page once for all its picks, through a positioned reader with one handle and without
//! parquet's codec: each compressed page is decompressed by the thread's own zstd context
//! into the thread's buffer, which is kept (at most the largest page a thread has read).
//!
//! Invariants: a page decodes to exactly the rows the offset index gives it, or the read fails
//! naming the file, the page and its byte offset; any other layout (another encoding, another
//! codec, a dictionary, data page v1, float values, no offset index) is declined, and the
//! caller then reads through the general reader (for a piece, overwriting whatever was
//! written of it). Bytes from disk are never trusted for a length or an index: every read of
//! them is checked, no buffer is sized by a page's own claim before its header agrees with
//! the offset index's rows, a page read must lie within the file's length, and a page's
//! decompressed size is bounded by its rows (`decompressed_bytes_max`).

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::page_index::offset_index::PageLocation;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;

use super::reader::ColumnsMut;
use crate::error::{Error, Result};

/// Whether a piece was decoded here, or declined as a layout this decoder does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// Every row of the piece is in its slices; whether its steps ascend, tested page by page
    /// while each page's steps are still in cache.
    Done {
        /// The piece's steps ascend.
        ascending: bool,
    },
    /// Nothing was decided from the file's pages: read it through the general reader.
    Declined,
}

/// The physical type and the encoding compaction writes for `step`, `timestamp` and `value`.
const TYPES: [PhysicalType; 3] = [
    PhysicalType::INT64,
    PhysicalType::INT64,
    PhysicalType::DOUBLE,
];
const ENCODINGS: [Encoding; 3] = [
    Encoding::DELTA_BINARY_PACKED,
    Encoding::DELTA_BINARY_PACKED,
    Encoding::BYTE_STREAM_SPLIT,
];

/// Whether the file's schema is compaction's: three required columns of `TYPES`.
fn has_compacted_columns(metadata: &ParquetMetaData) -> bool {
    let schema = metadata.file_metadata().schema_descr();
    schema.num_columns() == 3
        && (0..3).all(|column| {
            let descriptor = schema.column(column);
            descriptor.physical_type() == TYPES[column]
                && descriptor.max_def_level() == 0
                && descriptor.max_rep_level() == 0
        })
}

/// Where a page lies, for the error that it is damaged.
struct Where<'a> {
    path: &'a Path,
    group: usize,
    column: usize,
    page: usize,
    /// The page's byte offset in the file, from the offset index.
    offset: i64,
}

impl Where<'_> {
    fn damaged(&self, why: &str) -> Error {
        Error::InvalidInput(format!(
            "{}: page {} (at byte {}) of column {} of row group {} {why}",
            self.path.display(),
            self.page,
            self.offset,
            self.column,
            self.group
        ))
    }
}

/// Decodes rows `rows` (counted from the group's first row) of row group `group` of `file`
/// into `out`, which is exactly as many rows long.
pub(super) fn decode_piece(
    path: &Path,
    file: File,
    metadata: &ParquetMetaData,
    group: usize,
    rows: Range<u64>,
    out: &mut ColumnsMut<'_>,
) -> Result<Decoded> {
    let (Some(page_index), Some(group_metadata)) =
        (metadata.page_index(), metadata.row_groups().get(group))
    else {
        return Ok(Decoded::Declined);
    };
    if !has_compacted_columns(metadata) {
        return Ok(Decoded::Declined);
    }
    let group_rows = u64::try_from(group_metadata.num_rows()).unwrap_or(0);
    let file = Arc::new(file);
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let mut ascending = true;
    for (column, encoding) in ENCODINGS.iter().enumerate() {
        let Some(offsets) = page_index.offset_index(group, column) else {
            return Ok(Decoded::Declined);
        };
        let locations = offsets.page_locations().clone();
        let Some(firsts) = page_starts(group_metadata.column(column), &locations, group_rows)
        else {
            return Ok(Decoded::Declined);
        };
        let offsets_of: Vec<i64> = locations.iter().map(|l| l.offset).collect();
        let where_ = |page: usize| Where {
            path,
            group,
            column,
            page,
            offset: offsets_of.get(page).copied().unwrap_or(0),
        };
        let mut reader = SerializedPageReader::new(
            Arc::clone(&file),
            group_metadata.column(column),
            usize::try_from(group_rows).unwrap_or(usize::MAX),
            Some(locations),
        )
        .map_err(parquet_error)?;
        for (page, first) in firsts.iter().enumerate() {
            let end = firsts.get(page + 1).copied().unwrap_or(group_rows);
            let page_rows = *first..end;
            if page_rows.end <= rows.start || page_rows.start >= rows.end {
                if page_rows.start >= rows.end {
                    break;
                }
                reader.skip_next_page().map_err(parquet_error)?;
                continue;
            }
            let Some(page_bytes) = reader.get_next_page().map_err(parquet_error)? else {
                return Err(where_(page).damaged("is missing"));
            };
            // Another page kind or encoding declines the whole piece: what was written of it
            // is overwritten by the general reader.
            let Some(values) = page_values(&page_bytes, page_rows.end - page_rows.start) else {
                return Ok(Decoded::Declined);
            };
            if values.1 != *encoding {
                return Ok(Decoded::Declined);
            }
            let written = decode_into(values, column, &page_rows, &rows, out);
            written.map_err(|why| where_(page).damaged(why))?;
            if column == 0 {
                // The page's steps and the step before them, if the piece has one.
                let first = (page_rows.start.max(rows.start) - rows.start) as usize;
                let end = (page_rows.end.min(rows.end) - rows.start) as usize;
                let steps = out
                    .steps
                    .get(first.saturating_sub(1)..end)
                    .unwrap_or_default();
                ascending &= super::reader::ascending(steps);
            }
        }
    }
    Ok(Decoded::Done { ascending })
}

/// A compacted file read by position (`pread`) through one shared handle, for the page
/// readers of picks: the parquet crate's reader for a `File` duplicates the handle, seeks and
/// closes it for every page, and stats the file for its length. Reads past the length the
/// file had when opened are refused before anything is allocated for them.
pub(super) struct PositionedFile {
    file: Arc<File>,
    length: u64,
}

impl PositionedFile {
    pub(super) fn new(path: &Path, file: File) -> Result<PositionedFile> {
        let length = (file.metadata())
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Ok(PositionedFile {
            file: Arc::new(file),
            length,
        })
    }
}

impl Length for PositionedFile {
    fn len(&self) -> u64 {
        self.length
    }
}

impl ChunkReader for PositionedFile {
    type T = PositionedRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<PositionedRead> {
        Ok(PositionedRead {
            file: Arc::clone(&self.file),
            position: start,
            end: self.length,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        use std::os::unix::fs::FileExt;
        let end = start.checked_add(length as u64);
        if end.is_none_or(|end| end > self.length) {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{length} bytes at byte {start} are past the end of a {}-byte file",
                self.length
            )));
        }
        let mut buffer = vec![0u8; length];
        self.file.read_exact_at(&mut buffer, start)?;
        Ok(buffer.into())
    }
}

/// A `Read` from a position of a `PositionedFile`, up to its length.
pub(super) struct PositionedRead {
    file: Arc<File>,
    position: u64,
    end: u64,
}

impl std::io::Read for PositionedRead {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = self.end.saturating_sub(self.position);
        let wanted = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.file.read_at(&mut buffer[..wanted], self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

/// A picked row: step, timestamp (ms) and value.
pub(super) type Picked = (i64, i64, f64);

/// The step, timestamp and value of each of `rows` (row numbers of the file, strictly
/// ascending), decoding only the pages that hold them, each once for all its picks: a delta
/// page up to its last picked row, a byte-stream-split page not at all (a picked value's
/// eight bytes are gathered from the decompressed page). `None` for a layout this decoder
/// does not know, for the general reader.
pub(super) fn read_picks(
    path: &Path,
    file: File,
    metadata: &ParquetMetaData,
    rows: &[u64],
) -> Result<Option<Vec<Picked>>> {
    let file = PositionedFile::new(path, file)?;
    let Some(page_index) = metadata.page_index() else {
        return Ok(None);
    };
    if !has_compacted_columns(metadata) || rows.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Ok(None);
    }
    let file = Arc::new(file);
    let mut picked: Vec<Picked> = vec![(0, 0, 0.0); rows.len()];
    let mut scratch: Vec<i64> = Vec::new();
    let mut done = 0usize;
    let mut group_start = 0u64;
    for (group, group_metadata) in metadata.row_groups().iter().enumerate() {
        if done == rows.len() {
            break;
        }
        let group_rows = u64::try_from(group_metadata.num_rows()).unwrap_or(0);
        let group_end = group_start.saturating_add(group_rows);
        let in_group = rows[done..].partition_point(|row| *row < group_end);
        if in_group > 0 {
            let group_picks = GroupPicks {
                path,
                group,
                file: &file,
                chunk_rows: group_start..group_end,
                rows: &rows[done..done + in_group],
            };
            for column in 0..3 {
                let Some(offsets) = page_index.offset_index(group, column) else {
                    return Ok(None);
                };
                let chunk = group_metadata.column(column);
                let locations = offsets.page_locations();
                let Some(firsts) = page_starts(chunk, locations, group_rows) else {
                    return Ok(None);
                };
                let out = &mut picked[done..done + in_group];
                if !group_picks.read_column(column, chunk, locations, &firsts, out, &mut scratch)? {
                    return Ok(None);
                }
            }
        }
        done += in_group;
        group_start = group_end;
    }
    if done != rows.len() {
        return Err(Error::InvalidInput(format!(
            "{}: rows from {} are past its last row, {group_start}",
            path.display(),
            rows[done]
        )));
    }
    Ok(Some(picked))
}

/// The picked rows of one row group.
struct GroupPicks<'a> {
    path: &'a Path,
    group: usize,
    file: &'a Arc<PositionedFile>,
    /// The group's rows, as row numbers of the file.
    chunk_rows: Range<u64>,
    /// The picked rows in it, ascending.
    rows: &'a [u64],
}

impl GroupPicks<'_> {
    /// Reads `column` of the picked rows into `out` (one slot a row) through one page reader
    /// for the chunk, skipping every page without a pick; `false` for a page of another
    /// layout. Delta pages decode into `scratch`.
    fn read_column(
        &self,
        column: usize,
        chunk: &ColumnChunkMetaData,
        locations: &[PageLocation],
        firsts: &[u64],
        out: &mut [Picked],
        scratch: &mut Vec<i64>,
    ) -> Result<bool> {
        let path = self.path;
        let parquet_error = |e: parquet::errors::ParquetError| {
            Error::io("read parquet", path, std::io::Error::other(e))
        };
        let group_rows = self.chunk_rows.end - self.chunk_rows.start;
        // The page reader is told the chunk is uncompressed, so that it creates no codec (a
        // zstd compression and decompression context a chunk, where a pick touches a page
        // or two of it): the pages it hands over are decompressed here, by the thread's own
        // decompressor.
        let compression = chunk.compression();
        let compressed = match compression {
            Compression::UNCOMPRESSED => false,
            Compression::ZSTD(_) => true,
            _ => return Ok(false),
        };
        let raw = chunk
            .clone()
            .into_builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build()
            .map_err(parquet_error)?;
        let mut reader = SerializedPageReader::new(
            Arc::clone(self.file),
            &raw,
            usize::try_from(group_rows).unwrap_or(usize::MAX),
            Some(locations.to_vec()),
        )
        .map_err(parquet_error)?;
        let mut at = 0usize;
        for (page, first) in firsts.iter().enumerate() {
            if at == self.rows.len() {
                break;
            }
            let end = firsts.get(page + 1).copied().unwrap_or(group_rows);
            let page_start = self.chunk_rows.start + first;
            let page_end = self.chunk_rows.start + end;
            let here = self.rows[at..].partition_point(|row| *row < page_end);
            if here == 0 {
                reader.skip_next_page().map_err(parquet_error)?;
                continue;
            }
            let place = Where {
                path,
                group: self.group,
                column,
                page,
                offset: locations.get(page).map_or(0, |l| l.offset),
            };
            let Some(page_bytes) = reader.get_next_page().map_err(parquet_error)? else {
                return Err(place.damaged("is missing"));
            };
            let count = end - first;
            let Some((bytes, encoding)) = page_values(&page_bytes, count) else {
                return Ok(false);
            };
            if encoding != ENCODINGS[column] {
                return Ok(false);
            }
            let page_compressed = compressed
                && matches!(page_bytes, Page::DataPageV2 { is_compressed, .. } if is_compressed);
            // Indexes within the page: the picks are ascending and at or past its start.
            let indexes = self.rows[at..at + here]
                .iter()
                .map(|row| (row - page_start) as usize);
            let slots = &mut out[at..at + here];
            let picked = if page_compressed {
                let most = decompressed_bytes_max(column, count).ok_or("is too long");
                let most = most.map_err(|why| place.damaged(why))?;
                with_decompressed(bytes, most, |bytes| {
                    pick_from_page(bytes, column, count, indexes, slots, scratch)
                })
            } else {
                pick_from_page(bytes, column, count, indexes, slots, scratch)
            };
            picked.map_err(|why| place.damaged(why))?;
            at += here;
        }
        Ok(true)
    }
}

/// The most bytes a page of `count` rows of `column` decompresses to in the layouts this
/// decoder reads: eight a value byte-stream-split; for a delta page, its values and the
/// padding of its last miniblock (at most `DELTA_MINIBLOCK_VALUES_MAX`) at up to nine bytes
/// each (eight of bit width 64, and a block's minimum and widths), and a header. A page
/// claiming more is damaged, and the bound keeps the buffer from being sized by its claim.
fn decompressed_bytes_max(column: usize, count: u64) -> Option<usize> {
    let count = usize::try_from(count).ok()?;
    match column {
        2 => count.checked_mul(8),
        _ => (count.checked_add(DELTA_MINIBLOCK_VALUES_MAX)?)
            .checked_mul(9)?
            .checked_add(64),
    }
}

/// Values a delta miniblock may hold before its page is refused as malformed.
const DELTA_MINIBLOCK_VALUES_MAX: usize = 1 << 16;

thread_local! {
    /// The thread's zstd decompressor and output buffer, kept across pages and reads: a
    /// decompression context is costly to create, and a page's output fits the buffer once
    /// it has grown.
    static DECOMPRESSOR: std::cell::RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Calls `use_page` with the zstd frame `compressed` decompressed (at most `most` bytes) by
/// the thread's decompressor.
fn with_decompressed<T>(
    compressed: &[u8],
    most: usize,
    use_page: impl FnOnce(&[u8]) -> std::result::Result<T, &'static str>,
) -> std::result::Result<T, &'static str> {
    DECOMPRESSOR.with(|cell| {
        let mut held = cell.borrow_mut();
        if held.is_none() {
            let decompressor = zstd::bulk::Decompressor::new()
                .map_err(|_| "cannot be decompressed: no zstd context")?;
            *held = Some((decompressor, Vec::new()));
        }
        let Some((decompressor, buffer)) = held.as_mut() else {
            return Err("cannot be decompressed: no zstd context");
        };
        // The frame's own content size, where it gives one, reserves no more than the page.
        let claimed = zstd::zstd_safe::get_frame_content_size(compressed)
            .ok()
            .flatten();
        let capacity = match claimed.map(usize::try_from) {
            None => most,
            Some(Ok(size)) if size <= most => size,
            Some(_) => return Err("decompresses to more bytes than its rows allow"),
        };
        buffer.clear();
        buffer.reserve(capacity);
        decompressor
            .decompress_to_buffer(compressed, buffer)
            .map_err(|_| "is not a zstd frame of the size its rows allow")?;
        use_page(buffer)
    })
}

/// Writes `column` of the rows at `indexes` of a page of `count` rows into `slots`.
fn pick_from_page(
    bytes: &[u8],
    column: usize,
    count: u64,
    indexes: impl Iterator<Item = usize> + Clone,
    slots: &mut [Picked],
    scratch: &mut Vec<i64>,
) -> std::result::Result<(), &'static str> {
    if column == 2 {
        let count = usize::try_from(count).map_err(|_| "is too long")?;
        if bytes.len() != count.checked_mul(8).ok_or("is too long")? {
            return Err("is not eight bytes a value");
        }
        for (slot, index) in slots.iter_mut().zip(indexes) {
            slot.2 = byte_stream_split_at(bytes, count, index).ok_or("is shorter than its rows")?;
        }
        return Ok(());
    }
    let indexes: Vec<usize> = indexes.collect();
    let mut values = vec![0i64; indexes.len()];
    delta_binary_packed_picks(bytes, count, &indexes, &mut values, scratch)?;
    for (slot, value) in slots.iter_mut().zip(values) {
        if column == 0 {
            slot.0 = value;
        } else {
            slot.1 = value;
        }
    }
    Ok(())
}

/// The first row of each page of a column chunk, from its offset index, when its pages can be
/// walked by skipping some: the index starts at the chunk's first data page with no dictionary
/// page before it (a skip would skip the dictionary instead), and its first rows rise from 0
/// within the group's `group_rows`, so that every page holds at least one row. `None` for
/// anything else, which callers decline to the general reader: the index comes from disk.
pub(super) fn page_starts(
    column: &ColumnChunkMetaData,
    locations: &[PageLocation],
    group_rows: u64,
) -> Option<Vec<u64>> {
    let starts_at_data = column.dictionary_page_offset().is_none()
        && locations.first().map(|l| l.offset) == Some(column.data_page_offset());
    let firsts = locations
        .iter()
        .map(|page| u64::try_from(page.first_row_index).ok())
        .collect::<Option<Vec<u64>>>()?;
    let rising = firsts.first() == Some(&0)
        && firsts.windows(2).all(|pair| pair[0] < pair[1])
        && firsts.last().is_some_and(|last| *last < group_rows);
    (starts_at_data && rising).then_some(firsts)
}

/// The value bytes and encoding of a data page v2 of a required column holding `rows` rows;
/// `None` for any other page.
fn page_values(page: &Page, rows: u64) -> Option<(&[u8], Encoding)> {
    match page {
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            num_nulls: 0,
            num_rows,
            def_levels_byte_len: 0,
            rep_levels_byte_len: 0,
            ..
        } if u64::from(*num_values) == rows && u64::from(*num_rows) == rows => {
            Some((buf.as_ref(), *encoding))
        }
        _ => None,
    }
}

/// Decodes one page of `column`, holding rows `page_rows` of the group, into the part of
/// `out` (rows `rows` of the group) it meets.
fn decode_into(
    (bytes, encoding): (&[u8], Encoding),
    column: usize,
    page_rows: &Range<u64>,
    rows: &Range<u64>,
    out: &mut ColumnsMut<'_>,
) -> std::result::Result<(), &'static str> {
    let start = page_rows.start.max(rows.start);
    let end = page_rows.end.min(rows.end);
    let skip = (start - page_rows.start) as usize;
    let take = (end - start) as usize;
    let at = (start - rows.start) as usize;
    let whole = skip == 0 && take as u64 == page_rows.end - page_rows.start;
    let count = (page_rows.end - page_rows.start) as usize;
    match (column, encoding) {
        (0 | 1, Encoding::DELTA_BINARY_PACKED) => {
            let slice = if column == 0 {
                &mut *out.steps
            } else {
                &mut *out.timestamps_ms
            };
            let target = slice.get_mut(at..at + take).ok_or("overruns its piece")?;
            if whole {
                delta_binary_packed(bytes, target)
            } else {
                // Only the prefix up to the piece's last row of the page is decoded, into a
                // buffer sized once the page's own header has agreed with its rows.
                let mut scratch = Vec::new();
                delta_binary_packed_prefix(bytes, count as u64, skip + take, &mut scratch)?;
                target.copy_from_slice(scratch.get(skip..skip + take).ok_or("is too short")?);
                Ok(())
            }
        }
        (2, Encoding::BYTE_STREAM_SPLIT) => {
            let target = out
                .values
                .get_mut(at..at + take)
                .ok_or("overruns its piece")?;
            if whole {
                byte_stream_split(bytes, target)
            } else {
                // Gathered in place: no buffer at all.
                if bytes.len() != count * 8 {
                    return Err("is not eight bytes a value");
                }
                for (offset, value) in target.iter_mut().enumerate() {
                    *value = byte_stream_split_at(bytes, count, skip + offset)
                        .ok_or("is not eight bytes a value")?;
                }
                Ok(())
            }
        }
        _ => Err("has an encoding compaction does not write"),
    }
}

/// Value `index` of a byte-stream-split page of `count` doubles; `None` past its bytes.
fn byte_stream_split_at(bytes: &[u8], count: usize, index: usize) -> Option<f64> {
    let mut value = [0u8; 8];
    for (k, byte) in value.iter_mut().enumerate() {
        *byte = *bytes.get(k.checked_mul(count)?.checked_add(index)?)?;
    }
    Some(f64::from_le_bytes(value))
}

/// Decodes a byte-stream-split page of doubles: `out.len()` values, byte `k` of value `i` at
/// `bytes[k * len + i]`.
pub(super) fn byte_stream_split(
    bytes: &[u8],
    out: &mut [f64],
) -> std::result::Result<(), &'static str> {
    let count = out.len();
    if bytes.len() != count * 8 {
        return Err("is not eight bytes a value");
    }
    let stream = |k: usize| bytes.get(k * count..(k + 1) * count).unwrap_or_default();
    let (s0, s1, s2, s3) = (stream(0), stream(1), stream(2), stream(3));
    let (s4, s5, s6, s7) = (stream(4), stream(5), stream(6), stream(7));
    if [s0, s1, s2, s3, s4, s5, s6, s7]
        .iter()
        .any(|s| s.len() != count)
    {
        return Err("is not eight bytes a value");
    }
    let streams = [s0, s1, s2, s3, s4, s5, s6, s7];
    // Eight values at a time: eight bytes of each stream, as the rows of an 8×8 byte matrix,
    // transposed in words so that row `r` becomes value `r` (a few word operations a value,
    // where gathering byte by byte took a load and a shift for each byte).
    let whole = count - count % 8;
    let (head, tail) = out.split_at_mut(whole);
    for (chunk, values) in head.chunks_exact_mut(8).enumerate() {
        let at = chunk * 8;
        let mut rows = streams.map(|stream| {
            let mut word = [0u8; 8];
            word.copy_from_slice(stream.get(at..at + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(word)
        });
        transpose_bytes(&mut rows);
        for (value, row) in values.iter_mut().zip(rows) {
            *value = f64::from_bits(row);
        }
    }
    for (offset, value) in tail.iter_mut().enumerate() {
        let index = whole + offset;
        let bytes = streams.map(|stream| stream.get(index).copied().unwrap_or(0));
        *value = f64::from_le_bytes(bytes);
    }
    Ok(())
}

/// Transposes the 8×8 byte matrix whose row `r` is `rows[r]` (column `c` its byte `c`, least
/// significant first): the off-diagonal blocks of 4, then 2, then 1 bytes swap places.
#[inline]
fn transpose_bytes(rows: &mut [u64; 8]) {
    for (distance, mask) in [
        (4usize, 0x0000_0000_ffff_ffff_u64),
        (2, 0x0000_ffff_0000_ffff),
        (1, 0x00ff_00ff_00ff_00ff),
    ] {
        let shift = 8 * distance as u32;
        for row in 0..8 {
            if row & distance == 0 {
                let (a, b) = (rows[row], rows[row + distance]);
                let swapped = ((a >> shift) ^ b) & mask;
                rows[row + distance] = b ^ swapped;
                rows[row] = a ^ (swapped << shift);
            }
        }
    }
}

/// Decodes a delta-binary-packed page of int64 into `out`, which must be exactly its value
/// count long: a header (block size, miniblocks per block, value count, first value), then
/// blocks of a minimum delta, one bit width per miniblock and the miniblocks' deltas above the
/// minimum, bit-packed from the least significant bit. Sums wrap, as the encoder's did.
pub(super) fn delta_binary_packed(
    bytes: &[u8],
    out: &mut [i64],
) -> std::result::Result<(), &'static str> {
    let header = DeltaHeader::read(bytes, out.len() as u64)?;
    delta_body(bytes, &header, out)
}

/// Decodes the first `needed` values of a delta-binary-packed page of `count` int64 into
/// `scratch` (resized to `needed`), which grows only once the page's header has agreed with
/// `count` and `needed` is within it.
pub(super) fn delta_binary_packed_prefix(
    bytes: &[u8],
    count: u64,
    needed: usize,
    scratch: &mut Vec<i64>,
) -> std::result::Result<(), &'static str> {
    let header = DeltaHeader::read(bytes, count)?;
    if needed as u64 > count {
        return Err("holds fewer values than the rows asked of it");
    }
    scratch.clear();
    scratch.resize(needed, 0);
    delta_body(bytes, &header, scratch)
}

/// A delta-binary-packed page's header: where its blocks start and how they are cut.
#[derive(Clone, Copy)]
struct DeltaHeader {
    miniblocks: u64,
    miniblock_values: usize,
    first: i64,
    /// Where the first block starts.
    position: usize,
}

impl DeltaHeader {
    /// The header of `bytes`, which must say it holds `count` values.
    fn read(bytes: &[u8], count: u64) -> std::result::Result<DeltaHeader, &'static str> {
        let mut position = 0usize;
        let block_values = uleb(bytes, &mut position)?;
        let miniblocks = uleb(bytes, &mut position)?;
        let claimed = uleb(bytes, &mut position)?;
        let first = zigzag(uleb(bytes, &mut position)?);
        if claimed != count {
            return Err("holds another count of values than its rows");
        }
        if miniblocks == 0 || block_values == 0 || block_values % miniblocks != 0 {
            return Err("has a malformed delta header");
        }
        let miniblock_values =
            usize::try_from(block_values / miniblocks).map_err(|_| "is too long")?;
        if miniblock_values % 8 != 0 || miniblock_values > DELTA_MINIBLOCK_VALUES_MAX {
            return Err("has a malformed delta header");
        }
        Ok(DeltaHeader {
            miniblocks,
            miniblock_values,
            first,
            position,
        })
    }
}

/// The first `out.len()` values of the page whose header is `header`.
fn delta_body(
    bytes: &[u8],
    header: &DeltaHeader,
    out: &mut [i64],
) -> std::result::Result<(), &'static str> {
    let Some((head, rest)) = out.split_first_mut() else {
        return Ok(());
    };
    *head = header.first;
    walk_miniblocks(bytes, header, rest.len(), |miniblock| {
        let part = &mut rest[miniblock.start..miniblock.start + miniblock.take];
        unpack_deltas(
            miniblock.packed,
            miniblock.width,
            miniblock.minimum,
            miniblock.previous,
            part,
        )
    })
}

/// The values at `indexes` (ascending, each below `count`) of a delta-binary-packed page of
/// `count` int64, into `values` (as many): only the miniblocks up to the last index are
/// walked, a miniblock of bit width 0 (a progression) is not unpacked at all, and any other
/// is unpacked into `scratch` (one miniblock long).
pub(super) fn delta_binary_packed_picks(
    bytes: &[u8],
    count: u64,
    indexes: &[usize],
    values: &mut [i64],
    scratch: &mut Vec<i64>,
) -> std::result::Result<(), &'static str> {
    let header = DeltaHeader::read(bytes, count)?;
    let Some(last) = indexes.last() else {
        return Ok(());
    };
    if *last as u64 >= count || indexes.len() != values.len() {
        return Err("holds fewer values than the rows asked of it");
    }
    let mut next = 0usize;
    while indexes.get(next) == Some(&0) {
        values[next] = header.first;
        next += 1;
    }
    // Value `index` is delta `index - 1`: the miniblocks walk the deltas.
    walk_miniblocks(bytes, &header, *last, |miniblock| {
        let end = miniblock.start + miniblock.take;
        let mut previous = miniblock.previous;
        if miniblock.width != 0 {
            scratch.clear();
            scratch.resize(miniblock.take, 0);
            previous = unpack_deltas(
                miniblock.packed,
                miniblock.width,
                miniblock.minimum,
                miniblock.previous,
                scratch,
            );
        }
        while let Some(index) = indexes.get(next).filter(|index| **index <= end) {
            let delta = index - 1 - miniblock.start;
            values[next] = if miniblock.width == 0 {
                let steps = (delta as i64).wrapping_add(1);
                miniblock
                    .previous
                    .wrapping_add(miniblock.minimum.wrapping_mul(steps))
            } else {
                scratch[delta]
            };
            next += 1;
        }
        if miniblock.width == 0 {
            previous = (miniblock.previous)
                .wrapping_add(miniblock.minimum.wrapping_mul(miniblock.take as i64));
        }
        previous
    })
}

/// One miniblock's worth of deltas, as `walk_miniblocks` hands it over.
struct Miniblock<'a> {
    /// Index of its first delta among the page's deltas (delta `i` gives value `i + 1`).
    start: usize,
    /// Deltas of it that are wanted (at most the miniblock's).
    take: usize,
    width: usize,
    minimum: i64,
    /// The value before its first delta.
    previous: i64,
    /// Its bit-packed deltas, at least `take` of them.
    packed: &'a [u8],
}

/// Walks the blocks of a delta page, after its header, handing each miniblock holding any of
/// the first `deltas` deltas to `visit`, which returns the value after its last delta taken.
fn walk_miniblocks(
    bytes: &[u8],
    header: &DeltaHeader,
    deltas: usize,
    mut visit: impl FnMut(Miniblock<'_>) -> i64,
) -> std::result::Result<(), &'static str> {
    let DeltaHeader {
        miniblocks,
        miniblock_values,
        first,
        mut position,
    } = *header;
    let mut previous = first;
    let mut start = 0usize;
    while start < deltas {
        let minimum = zigzag(uleb(bytes, &mut position)?);
        let widths = usize::try_from(miniblocks)
            .ok()
            .and_then(|count| bytes.get(position..position.checked_add(count)?))
            .ok_or("ends inside a block")?;
        position += widths.len();
        for width in widths {
            if start >= deltas {
                break;
            }
            let take = (deltas - start).min(miniblock_values);
            let width = usize::from(*width);
            if width > 64 {
                return Err("has a bit width over 64");
            }
            let packed_bytes = miniblock_values * width / 8;
            // The last miniblock may stop at its last value's byte.
            let available = bytes.len().saturating_sub(position).min(packed_bytes);
            if available < (take * width).div_ceil(8) {
                return Err("ends inside a miniblock");
            }
            let packed = &bytes[position..position + available];
            position += available;
            previous = visit(Miniblock {
                start,
                take,
                width,
                minimum,
                previous,
                packed,
            });
            start += take;
        }
    }
    Ok(())
}

/// Writes `part.len()` values, each the previous plus `minimum` plus its `width`-bit delta of
/// `packed`; returns the last. Width 0 (every delta the minimum: steps counted one by one, one
/// batch's timestamps) is a progression, computed without a chain of additions.
fn unpack_deltas(
    packed: &[u8],
    width: usize,
    minimum: i64,
    previous: i64,
    part: &mut [i64],
) -> i64 {
    if width == 0 {
        // An induction variable, which the compiler vectorizes.
        let mut value = previous;
        for slot in part.iter_mut() {
            value = value.wrapping_add(minimum);
            *slot = value;
        }
        return value;
    }
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    let mut previous = previous;
    for (index, slot) in part.iter_mut().enumerate() {
        let bit = index * width;
        let mut window = [0u8; 16];
        let from = packed.get(bit / 8..).unwrap_or_default();
        let length = from.len().min(16);
        window[..length].copy_from_slice(&from[..length]);
        let delta = (u128::from_le_bytes(window) >> (bit % 8)) as u64 & mask;
        previous = previous.wrapping_add(minimum).wrapping_add(delta as i64);
        *slot = previous;
    }
    previous
}

/// An unsigned LEB128 varint at `*position`.
fn uleb(bytes: &[u8], position: &mut usize) -> std::result::Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*position).ok_or("ends inside a varint")?;
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("has a varint over ten bytes")
}

fn zigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in compaction's column layout with random row groups, page sizes (per column,
    /// cut at random write batches so the columns' pages do not line up), compression and
    /// values (NaN with payloads, infinities, signed zeros, any bits; steps and timestamps
    /// whose deltas take every bit width), and its three columns.
    fn random_file(
        rng: &mut crate::util::TestRng,
        path: &Path,
    ) -> (Vec<i64>, Vec<i64>, Vec<f64>, String) {
        use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
        use arrow_schema::{DataType, Field, Schema};
        use parquet::basic::ZstdLevel;
        use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
        use parquet::schema::types::ColumnPath;

        let rows = 1 + rng.below(20_000) as usize;
        let (mut steps, mut timestamps, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut step, mut timestamp) = (rng.below(1000) as i64 - 500, 1_700_000_000_000i64);
        for _ in 0..rows {
            step = match rng.below(20) {
                0 => rng.below(u64::MAX) as i64,
                1..=3 => step.wrapping_add(rng.below(5000) as i64),
                _ => step.wrapping_add(1),
            };
            timestamp = match rng.below(50) {
                0 => rng.below(u64::MAX) as i64,
                _ => timestamp.wrapping_add(rng.below(40) as i64),
            };
            let value = match rng.below(10) {
                0 => f64::from_bits(0x7ff8_0000_0000_0000 | rng.below(1 << 51)),
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                3 => -0.0,
                4 => 0.0,
                5 => f64::from_bits(rng.below(u64::MAX)),
                _ => 1.0 / (1.0 + steps.len() as f64),
            };
            steps.push(step);
            timestamps.push(timestamp);
            values.push(value);
        }
        let page_rows = [8usize, 64, 100, 1000, 4096, 16_384];
        let mut pick = |choices: &[usize]| choices[rng.below(choices.len() as u64) as usize];
        let group_rows = pick(&[100, 777, 5000, 1 << 20]);
        let batch = pick(&[8, 64, 1024]);
        let mut builder = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_2_0)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(group_rows))
            .set_write_batch_size(batch);
        let mut described = format!("{rows} rows, groups of {group_rows}, batches of {batch}");
        for (column, encoding) in [
            ("step", Encoding::DELTA_BINARY_PACKED),
            ("timestamp", Encoding::DELTA_BINARY_PACKED),
            ("value", Encoding::BYTE_STREAM_SPLIT),
        ] {
            let path = ColumnPath::from(column);
            let limit = pick(&page_rows);
            let level = pick(&[0, 1, 3, 9]);
            let compression = match ZstdLevel::try_new(level as i32) {
                Ok(zstd) if level > 0 => Compression::ZSTD(zstd),
                _ => Compression::UNCOMPRESSED,
            };
            described += &format!(", {column} pages of {limit} rows {compression:?}");
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path.clone(), encoding)
                .set_column_data_page_row_count_limit(path.clone(), limit)
                .set_column_compression(path, compression);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("step", DataType::Int64, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(steps.clone())),
            Arc::new(Int64Array::from(timestamps.clone())),
            Arc::new(Float64Array::from(values.clone())),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        let file = File::create(path).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, schema, Some(builder.build())).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        (steps, timestamps, values, described)
    }

    #[test]
    fn damaged_pages_give_picks_an_error_never_a_panic() {
        let mut rng = crate::util::TestRng::from_env("damaged_pages");
        // A valid delta page (as in truncated_delta_pages_are_refused_never_a_panic), then
        // random cuts, flipped bytes and random bytes, for every column and claimed count.
        let mut valid = vec![0x80, 0x01, 4, 40, 6, 2, 0, 5, 5, 5];
        valid.extend(std::iter::repeat_n(0xa5, (32 * 5 * 3) / 8));
        let mut scratch = Vec::new();
        for _ in 0..2000 {
            let mut bytes = valid.clone();
            match rng.below(3) {
                0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
                1 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.below(256) as u8;
                }
                _ => bytes = (0..rng.below(200)).map(|_| rng.below(256) as u8).collect(),
            }
            let count = rng.below(80);
            let mut indexes: Vec<usize> = (0..rng.below(10))
                .map(|_| rng.below(count.max(1) + 5) as usize)
                .collect();
            indexes.sort_unstable();
            indexes.dedup();
            for column in 0..3 {
                let mut slots = vec![(0, 0, 0.0); indexes.len()];
                let iter = indexes.iter().copied();
                let _ = pick_from_page(&bytes, column, count, iter, &mut slots, &mut scratch);
            }
        }
        let mut slots = vec![(0, 0, 0.0); 1];
        let past = pick_from_page(&valid, 1, 40, [40].into_iter(), &mut slots, &mut scratch);
        assert!(past.is_err());
        let bytes = vec![0u8; 64];
        let past = pick_from_page(&bytes, 2, 8, [8].into_iter(), &mut slots, &mut scratch);
        assert!(past.is_err());
    }

    #[test]
    fn a_short_delta_page_may_decompress_to_a_whole_padded_miniblock() {
        // Caught by picks_from_pages_are_the_rows_a_full_read_gives (RUNLOG_SEED=
        // 1796679755266451035): an 8-row timestamp page of 64-bit deltas is its header, a
        // block's minimum and widths, and a miniblock of 32 values padded at 8 bytes each.
        let page_bytes = 40 + 10 + 4 + 32 * 8;
        assert!(decompressed_bytes_max(1, 8).is_some_and(|most| most >= page_bytes));
        assert_eq!(decompressed_bytes_max(2, 8), Some(64));
    }

    #[test]
    fn picks_from_pages_are_the_rows_a_full_read_gives() {
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        use parquet::file::metadata::PageIndexPolicy;

        let mut rng = crate::util::TestRng::from_env("picks_from_pages");
        let dir = tempfile::tempdir().unwrap();
        for round in 0..24 {
            let path = dir.path().join(format!("{round}.parquet"));
            let (steps, timestamps, values, described) = random_file(&mut rng, &path);
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let metadata = ArrowReaderMetadata::load(&File::open(&path).unwrap(), options).unwrap();
            let rows = steps.len() as u64;
            // Sparse picks, a dense run, the first and last rows, every row.
            let mut picks: Vec<u64> = (0..rng.below(400)).map(|_| rng.below(rows)).collect();
            let start = rng.below(rows);
            picks.extend(start..(start + rng.below(300)).min(rows));
            picks.extend([0, rows - 1]);
            if rng.below(4) == 0 {
                picks.extend(0..rows);
            }
            picks.sort_unstable();
            picks.dedup();
            let file = File::open(&path).unwrap();
            let read = read_picks(&path, file, metadata.metadata(), &picks)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round} declined: {described}"));
            for (row, (step, timestamp, value)) in picks.iter().zip(&read) {
                let row = *row as usize;
                assert_eq!(
                    (*step, *timestamp, value.to_bits()),
                    (steps[row], timestamps[row], values[row].to_bits()),
                    "round {round} row {row}: {described}"
                );
            }
            let past = [rows - 1, rows];
            let file = File::open(&path).unwrap();
            assert!(read_picks(&path, file, metadata.metadata(), &past).is_err());
        }
    }

    #[test]
    fn byte_stream_split_puts_byte_k_of_each_value_in_stream_k() {
        let mut values = vec![1.5f64, -0.0, f64::NAN, f64::NEG_INFINITY, 5e-324];
        // Two whole groups of eight and a tail, with every byte position distinct.
        values.extend((0..16u64).map(|i| f64::from_bits(0x0102_0304_0506_0708 * (i + 3))));
        let count = values.len();
        let mut bytes = vec![0u8; count * 8];
        for (index, value) in values.iter().enumerate() {
            for (k, byte) in value.to_le_bytes().iter().enumerate() {
                bytes[k * count + index] = *byte;
            }
        }
        let mut out = vec![0f64; count];
        assert_eq!(byte_stream_split(&bytes, &mut out), Ok(()));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&values));
        assert!(byte_stream_split(&bytes[1..], &mut out).is_err());
    }

    #[test]
    fn truncated_delta_pages_are_refused_never_a_panic() {
        // Header: block 128, 4 miniblocks, 40 values, first 3; a block: minimum 1, widths
        // 0, 5, 5, 5, then five bits for each value past the first miniblock.
        let mut bytes = vec![0x80, 0x01, 4, 40, 6, 2, 0, 5, 5, 5];
        bytes.extend(std::iter::repeat_n(0xa5, (32 * 5 * 3) / 8));
        let mut out = vec![0i64; 40];
        assert_eq!(delta_binary_packed(&bytes, &mut out), Ok(()));
        assert_eq!(out[..33], (0..33).map(|i| 3 + i).collect::<Vec<_>>()[..]);
        for cut in 0..bytes.len() {
            let mut out = vec![0i64; 40];
            let result = delta_binary_packed(&bytes[..cut], &mut out);
            // Ten bytes of headers, then the seven five-bit deltas of the second miniblock.
            assert_eq!(result.is_ok(), cut >= 10 + 5, "cut {cut}");
        }
    }
}
