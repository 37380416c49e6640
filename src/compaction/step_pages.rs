//! A series' step runs read straight from the encoded pages of a compacted file's `step`
//! column, without decoding each step: the first sample of a series on a store handle needs
//! them, and a decode of the whole column was a fifth of that sample's time.
//!
//! Compacted files write `step` with `DELTA_BINARY_PACKED` (docs/format/compacted.md): a page
//! is a first value, then blocks whose miniblocks each store their deltas as `min_delta` plus
//! unsigned offsets of a bit width. A miniblock of bit width 0 is `min_delta` repeated: one
//! arithmetic run, known from its header alone. Regular steps (one per row, or one every `k`)
//! are such miniblocks throughout; only miniblocks of other widths are unpacked value by value.
//!
//! Invariants: the runs fed to the builder are exactly the steps of the series' rows, in row
//! order, as a decode of the column gives them (the spec's wrapping arithmetic included);
//! anything this reader does not know (another encoding, a dictionary page, levels, no offset
//! index, a header that does not add up) makes it answer `None`, never a guess, and the caller
//! then decodes the column as before. Nothing is read before `MetadataCache::get` has checked
//! the whole file against its manifest entry.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::serialized_reader::SerializedPageReader;

use super::reader::MetadataCache;
use super::rows::StepRunsBuilder;
use super::{CompactedFile, SeriesRows};
use crate::error::{Error, Result};

/// Feeds the steps of `series` to `builder` from the encoded pages of its `step` column;
/// `Ok(false)` (the builder then holds a prefix, to be dropped) when the pages are not in a
/// form this reader knows.
pub(super) fn push_series_steps(
    root: &Path,
    file: &CompactedFile,
    series: &SeriesRows,
    cache: &MetadataCache,
    builder: &mut StepRunsBuilder,
) -> Result<bool> {
    let path = root.join(&file.path);
    let handle = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let metadata = cache.get(&path, &handle, file.checksum)?;
    let parquet = metadata.metadata();
    let Some(page_index) = parquet.page_index() else {
        return Ok(false);
    };
    let series_rows = series.row_start..series.row_start + series.row_count;
    let handle = Arc::new(handle);
    let mut group_start = 0u64;
    for (group, group_metadata) in parquet.row_groups().iter().enumerate() {
        let group_rows = u64::try_from(group_metadata.num_rows()).unwrap_or(0);
        let group_end = group_start.saturating_add(group_rows);
        if group_end > series_rows.start && group_start < series_rows.end {
            let column = group_metadata.column(0);
            let descriptor = column.column_descr();
            let required = descriptor.max_def_level() == 0 && descriptor.max_rep_level() == 0;
            let Some(offsets) = page_index.offset_index(group, 0) else {
                return Ok(false);
            };
            let locations = offsets.page_locations().clone();
            let firsts = super::pages::page_starts(column, &locations, group_rows);
            let (Some(firsts), PhysicalType::INT64, true) =
                (firsts, column.column_type(), required)
            else {
                return Ok(false);
            };
            let mut pages = SerializedPageReader::new(
                Arc::clone(&handle),
                column,
                usize::try_from(group_rows).unwrap_or(usize::MAX),
                Some(locations),
            )
            .map_err(|e| parquet_error(&path, e))?;
            for (number, first) in firsts.iter().enumerate() {
                let end = firsts.get(number + 1).copied().unwrap_or(group_rows);
                let page_rows = group_start + first..group_start + end;
                if page_rows.start >= series_rows.end {
                    break;
                }
                if page_rows.end <= series_rows.start {
                    pages
                        .skip_next_page()
                        .map_err(|e| parquet_error(&path, e))?;
                    continue;
                }
                if builder.has_failed() {
                    return Ok(true);
                }
                let page = pages.get_next_page().map_err(|e| parquet_error(&path, e))?;
                let Some(values) = page.as_ref().and_then(delta_values) else {
                    return Ok(false);
                };
                let mut clipped = Clipped {
                    page_start: page_rows.start,
                    series: series_rows.clone(),
                    builder,
                    pending: None,
                };
                if decode_page(values, page_rows.end - page_rows.start, &mut clipped).is_none() {
                    return Ok(false);
                }
                clipped.flush();
            }
        }
        group_start = group_end;
    }
    Ok(true)
}

fn parquet_error(path: &Path, error: parquet::errors::ParquetError) -> Error {
    Error::io("read parquet", path, std::io::Error::other(error))
}

/// The encoded values of a data page of a required column written with `DELTA_BINARY_PACKED`;
/// `None` for any other page.
fn delta_values(page: &Page) -> Option<&[u8]> {
    match page {
        Page::DataPage {
            buf,
            encoding: Encoding::DELTA_BINARY_PACKED,
            ..
        } => Some(buf),
        Page::DataPageV2 {
            buf,
            encoding: Encoding::DELTA_BINARY_PACKED,
            def_levels_byte_len,
            rep_levels_byte_len,
            num_nulls: 0,
            ..
        } => {
            let levels = usize::try_from(*def_levels_byte_len)
                .ok()?
                .checked_add(usize::try_from(*rep_levels_byte_len).ok()?)?;
            buf.get(levels..)
        }
        _ => None,
    }
}

/// Where decoded runs go: rows of one page, clipped to the series' rows, consecutive runs
/// that continue each other joined before they reach the builder.
struct Clipped<'a> {
    /// The file's row number of the page's first value.
    page_start: u64,
    series: Range<u64>,
    builder: &'a mut StepRunsBuilder,
    /// A run not yet pushed: first step, stride, values.
    pending: Option<(i64, i64, u64)>,
}

impl Clipped<'_> {
    /// Values `index..index + count` of the page are `step`, `step + stride`, ... (wrapping,
    /// as the encoding's arithmetic is).
    fn run(&mut self, index: u64, step: i64, stride: i64, count: u64) {
        let start = self.page_start + index;
        let (low, high) = (
            start.max(self.series.start),
            (start + count).min(self.series.end),
        );
        if low >= high {
            return;
        }
        let skipped = i64::try_from(low - start).unwrap_or(i64::MAX);
        let step = step.wrapping_add(stride.wrapping_mul(skipped));
        let count = high - low;
        // A single value has no stride of its own: it continues any run it lands on.
        let incoming = (count > 1).then_some(stride);
        if let Some((first, pending_stride, length)) = &mut self.pending {
            if *length == 1 {
                let gap = step.wrapping_sub(*first);
                if incoming.is_none_or(|s| s == gap) {
                    *pending_stride = gap;
                    *length += count;
                    return;
                }
            } else {
                let next = first.wrapping_add(
                    pending_stride.wrapping_mul(i64::try_from(*length).unwrap_or(i64::MAX)),
                );
                if next == step && incoming.is_none_or(|s| s == *pending_stride) {
                    *length += count;
                    return;
                }
            }
        }
        self.flush();
        self.pending = Some((step, stride, count));
    }

    fn flush(&mut self) {
        if let Some((step, stride, count)) = self.pending.take() {
            self.builder.push_run(step, stride, count);
        }
    }
}

/// Decodes the `DELTA_BINARY_PACKED` values of a page of `rows` values into runs; `None` if
/// they do not decode as the format says or hold another number of values.
fn decode_page(bytes: &[u8], rows: u64, out: &mut Clipped<'_>) -> Option<()> {
    let mut at = 0usize;
    let block_values = uleb128(bytes, &mut at)?;
    let miniblocks = uleb128(bytes, &mut at)?;
    let total = uleb128(bytes, &mut at)?;
    let first = zigzag(uleb128(bytes, &mut at)?);
    // As the format (and parquet's decoder) requires: a block of a multiple of 128 values, in
    // miniblocks of a multiple of 32, so no count below is 0 and no size overflows.
    if miniblocks == 0
        || block_values == 0
        || block_values % 128 != 0
        || block_values % miniblocks != 0
        || (block_values / miniblocks) % 32 != 0
        || total != rows
    {
        return None;
    }
    let miniblock_values = block_values / miniblocks;
    if total == 0 {
        return Some(());
    }
    out.run(0, first, 0, 1);
    let mut value = first;
    let mut index = 1u64;
    while index < total {
        let min_delta = zigzag(uleb128(bytes, &mut at)?);
        let widths_end = at.checked_add(usize::try_from(miniblocks).ok()?)?;
        let widths = bytes.get(at..widths_end)?;
        at = widths_end;
        for width in widths {
            if index >= total {
                break;
            }
            let count = miniblock_values.min(total - index);
            let width = u32::from(*width);
            if width > 64 {
                return None;
            }
            if width == 0 {
                let step = value.wrapping_add(min_delta);
                out.run(index, step, min_delta, count);
                value = step.wrapping_add(
                    min_delta.wrapping_mul(i64::try_from(count - 1).unwrap_or(i64::MAX)),
                );
            } else {
                // A miniblock's bytes are its full size even when the page ends inside it.
                let bits = miniblock_values.checked_mul(u64::from(width))?;
                let length = usize::try_from(bits / 8).ok()?;
                let packed = bytes.get(at..at.checked_add(length)?)?;
                at += length;
                for k in 0..count {
                    let offset = unpack(packed, width, k)?;
                    value = value.wrapping_add(min_delta).wrapping_add_unsigned(offset);
                    out.run(index + k, value, 0, 1);
                }
            }
            index += count;
        }
    }
    Some(())
}

/// The `index`-th `width`-bit value of `packed`, bits least significant first.
fn unpack(packed: &[u8], width: u32, index: u64) -> Option<u64> {
    let bit = index.checked_mul(u64::from(width))?;
    let mut result = 0u64;
    for taken in 0..width {
        let position = bit + u64::from(taken);
        let byte = packed.get(usize::try_from(position / 8).ok()?)?;
        if (byte >> (position % 8)) & 1 == 1 {
            result |= 1 << taken;
        }
    }
    Some(result)
}

fn uleb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut result = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

fn zigzag(encoded: u64) -> i64 {
    ((encoded >> 1) as i64) ^ -((encoded & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, RunOptions, Store, StoreOptions};

    use crate::util::TestRng as Rng;

    /// Steps of one series: regular stretches with the odd gap, repeat or jump, so pages mix
    /// miniblocks of width 0 and others.
    fn steps(rng: &mut Rng) -> Vec<i64> {
        let length = 1 + rng.below(60_000) as usize;
        let mut step = rng.below(1000) as i64 - 500;
        let stride = 1 + rng.below(4) as i64;
        let rare = 1 + rng.below(5000);
        (0..length)
            .map(|_| {
                match rng.below(rare) {
                    0 => {
                        let bits = rng.below(40);
                        step += 1 + rng.below(1 << bits) as i64;
                    }
                    1 => {}
                    _ => step += stride,
                }
                step
            })
            .collect()
    }

    #[test]
    fn step_runs_from_encoded_pages_are_those_of_the_decoded_column() {
        let mut rng = Rng::from_env("step_runs_from_encoded_pages_are_those_of_the_decoded_column");
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), options).unwrap();
        let experiment = store.get_or_create_experiment("e").unwrap();
        let mut fixed: Vec<Vec<i64>> = vec![
            vec![7],
            (0..40_000).collect(),
            (0..3).collect(),
            vec![i64::MIN, -1, 0, i64::MAX - 1, i64::MAX],
            (0..20_000).map(|s| s / 3).collect(),
            (0..5000).map(|s| s * s).collect(),
        ];
        for _ in 0..8 {
            fixed.push(steps(&mut rng));
        }
        for series in &fixed {
            let run = store
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            let timestamps: Vec<i64> = (0..series.len() as i64).collect();
            let values: Vec<f64> = (0..series.len()).map(|i| i as f64).collect();
            run.log_batch("k", series, Some(&timestamps), &values)
                .unwrap();
            run.finish().unwrap();
        }
        store.compact().unwrap();
        let root = store.root();
        let manifest = store.manifests().newest(root).unwrap();
        let cache = store.compacted_metadata();
        let mut compared = 0;
        for file in &manifest.files {
            for series in &file.series {
                let mut from_pages = StepRunsBuilder::new(usize::MAX);
                assert!(push_series_steps(root, file, series, cache, &mut from_pages).unwrap());
                let mut decoded = StepRunsBuilder::new(usize::MAX);
                super::super::reader::visit_series_steps(
                    root,
                    file,
                    series,
                    0..series.row_count,
                    cache,
                    &mut |steps| decoded.push(steps),
                )
                .unwrap();
                assert_eq!(from_pages.finish(), decoded.finish(), "{series:?}");
                compared += 1;
            }
        }
        assert_eq!(compared, fixed.len());
    }
}
