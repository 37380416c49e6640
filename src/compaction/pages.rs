//! Decoding the pages of a compacted file's three columns straight into a result's slices:
//! the whole-series read's fast path, for the layout compaction writes (`parquet_file.rs`:
//! data pages v2 of required columns, `step` and `timestamp` delta-binary-packed int64, `value`
//! byte-stream-split double, an offset index). Each page is decompressed by the parquet crate's
//! page reader and decoded here, in tight loops, into its rows' places; only a page cut by a
//! piece's edge goes through a scratch buffer.
//!
//! Invariants: a page decodes to exactly the rows the offset index gives it, or the read fails
//! naming the file; any other layout (another encoding, a dictionary, data page v1, float
//! values, no offset index) is declined, and the caller then reads the whole piece through the
//! general reader, which overwrites whatever was written of it. Bytes from disk are never trusted for a length or an
//! index: every read of them is checked.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::page_index::offset_index::PageLocation;
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
    let schema = metadata.file_metadata().schema_descr();
    let types = [
        PhysicalType::INT64,
        PhysicalType::INT64,
        PhysicalType::DOUBLE,
    ];
    let (Some(page_index), Some(group_metadata)) =
        (metadata.page_index(), metadata.row_groups().get(group))
    else {
        return Ok(Decoded::Declined);
    };
    if schema.num_columns() != 3
        || (0..3).any(|column| {
            let descriptor = schema.column(column);
            descriptor.physical_type() != types[column] || descriptor.max_def_level() != 0
        })
    {
        return Ok(Decoded::Declined);
    }
    let group_rows = u64::try_from(group_metadata.num_rows()).unwrap_or(0);
    let file = Arc::new(file);
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let mut ascending = true;
    for column in 0..3 {
        let Some(offsets) = page_index.offset_index(group, column) else {
            return Ok(Decoded::Declined);
        };
        let locations = offsets.page_locations().clone();
        let Some(firsts) = page_starts(group_metadata.column(column), &locations, group_rows)
        else {
            return Ok(Decoded::Declined);
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
                return Err(damaged(path, group, column, page, "is missing"));
            };
            // Another page kind or encoding declines the whole piece: what was written of it
            // is overwritten by the general reader.
            let Some(values) = page_values(&page_bytes, page_rows.end - page_rows.start) else {
                return Ok(Decoded::Declined);
            };
            if values.1
                != [
                    Encoding::DELTA_BINARY_PACKED,
                    Encoding::DELTA_BINARY_PACKED,
                    Encoding::BYTE_STREAM_SPLIT,
                ][column]
            {
                return Ok(Decoded::Declined);
            }
            let written = decode_into(values, column, &page_rows, &rows, out);
            written.map_err(|why| damaged(path, group, column, page, why))?;
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
                let mut scratch = vec![0i64; count];
                delta_binary_packed(bytes, &mut scratch)?;
                target.copy_from_slice(&scratch[skip..skip + take]);
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
                let mut scratch = vec![0f64; count];
                byte_stream_split(bytes, &mut scratch)?;
                target.copy_from_slice(&scratch[skip..skip + take]);
                Ok(())
            }
        }
        _ => Err("has an encoding compaction does not write"),
    }
}

fn damaged(path: &Path, group: usize, column: usize, page: usize, why: &str) -> Error {
    Error::InvalidInput(format!(
        "{}: page {page} of column {column} of row group {group} {why}",
        path.display()
    ))
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
    let mut position = 0usize;
    let block_values = uleb(bytes, &mut position)?;
    let miniblocks = uleb(bytes, &mut position)?;
    let count = uleb(bytes, &mut position)?;
    let first = zigzag(uleb(bytes, &mut position)?);
    if count != out.len() as u64 {
        return Err("holds another count of values than its rows");
    }
    if miniblocks == 0 || block_values == 0 || block_values % miniblocks != 0 {
        return Err("has a malformed delta header");
    }
    let miniblock_values = usize::try_from(block_values / miniblocks).map_err(|_| "is too long")?;
    if miniblock_values % 8 != 0 || miniblock_values > 1 << 16 {
        return Err("has a malformed delta header");
    }
    let Some((head, mut rest)) = out.split_first_mut() else {
        return Ok(());
    };
    *head = first;
    let mut previous = first;
    while !rest.is_empty() {
        let minimum = zigzag(uleb(bytes, &mut position)?);
        let widths = bytes
            .get(position..position + miniblocks as usize)
            .ok_or("ends inside a block")?;
        position += miniblocks as usize;
        for width in widths {
            if rest.is_empty() {
                break;
            }
            let take = rest.len().min(miniblock_values);
            let (part, after) = rest.split_at_mut(take);
            rest = after;
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
            previous = unpack_deltas(packed, width, minimum, previous, part);
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
