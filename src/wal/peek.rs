//! Reading metric records in part, for a query that wants a few runs and keys of a log that
//! holds many: the run and point count of a columns record without decoding its columns (nor,
//! when it is lz4-compressed, decompressing more than its first bytes); a columns payload
//! decoded straight into the caller's slices, keeping only the wanted rows; and a stream's
//! points for the wanted runs only.
//!
//! Invariants: every function here accepts exactly the bytes its full decoder in `metric.rs`
//! accepts, and rejects the rest with the same kind of error, so a reader that skips never sees
//! a log end, or fail, where a full reader would not. Nothing is allocated from a count before
//! the bytes that must hold it are checked to be there.

use crate::error::CorruptionKind;
use crate::ids::{KeyId, RunId};
use crate::limits::RECORD_PAYLOAD_BYTES_MAX;
use crate::wal::codec::{Decoder, malformed, unzigzag};
use crate::wal::metric::{MetricBatch, StreamVisitor, check_ops_crc, walk_stream};
use crate::wal::record::FLAG_COMPRESSED;

/// Byte offsets of a columns payload's fixed head (`docs/format/log.md` section 5).
const RUN_OFFSET: usize = 0;
const POINT_COUNT_OFFSET: usize = RUN_OFFSET + 16;
const VALUE_WIDTH_OFFSET: usize = POINT_COUNT_OFFSET + 4;
const COLUMNS_HEAD_BYTES: usize = VALUE_WIDTH_OFFSET + 1;

/// What the fixed head of a columns payload says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnsHead {
    /// The run of every point of the record.
    pub run: RunId,
    /// Points in the record, as stored (checked against the payload's size only when decoded).
    pub point_count: u32,
}

/// The run and point count of a columns record stored with `flags`, from its first 21 bytes
/// (decompressing only those when the payload is compressed).
pub fn columns_head(flags: u8, stored: &[u8]) -> Result<ColumnsHead, CorruptionKind> {
    let mut head = [0u8; COLUMNS_HEAD_BYTES];
    let payload_bytes = if flags & FLAG_COMPRESSED == 0 {
        let bytes = stored.get(..COLUMNS_HEAD_BYTES).ok_or_else(|| {
            malformed(format!("a columns payload of {} bytes", stored.len()))
        })?;
        head.copy_from_slice(bytes);
        stored.len()
    } else {
        let mut decoder = Decoder::new(stored);
        let payload_bytes = decoder.u32()? as usize;
        let block = decoder.take(decoder.remaining())?;
        // The bounds `metric::decompress` checks before allocating.
        if payload_bytes > RECORD_PAYLOAD_BYTES_MAX
            || payload_bytes > block.len().saturating_mul(LZ4_EXPANSION_MAX)
        {
            return Err(malformed(format!(
                "{} lz4 bytes said to decompress to {payload_bytes}",
                block.len()
            )));
        }
        lz4_prefix(block, &mut head)?;
        payload_bytes
    };
    let mut decoder = Decoder::new(&head);
    let run = RunId(decoder.u128()?);
    let point_count = decoder.u32()?;
    // Callers allocate for the count: refuse one the payload cannot hold, as the decoder does
    // (each point takes at least three varint bytes and a four-byte value).
    if point_count as usize > payload_bytes.saturating_sub(COLUMNS_HEAD_BYTES) / (3 + 4) {
        return Err(malformed(format!(
            "{point_count} points cannot fit in {payload_bytes} bytes"
        )));
    }
    Ok(ColumnsHead { run, point_count })
}

/// How much an lz4 block can expand, at most.
const LZ4_EXPANSION_MAX: usize = 255;

/// Decodes the start of an lz4 block (the block format, no frame) until `out` is full. Only
/// a prefix is decoded, so the checks of the whole block (its declared size, its end) are left
/// to whoever decompresses it all.
fn lz4_prefix(block: &[u8], out: &mut [u8]) -> Result<(), CorruptionKind> {
    let short = || malformed("lz4 block ends before the columns head".to_string());
    let (mut input, mut written) = (0usize, 0usize);
    while written < out.len() {
        let token = *block.get(input).ok_or_else(short)?;
        input += 1;
        let literals = lz4_length(block, &mut input, usize::from(token >> 4))?;
        let take = literals.min(out.len() - written);
        let source = block.get(input..input + take).ok_or_else(short)?;
        out[written..written + take].copy_from_slice(source);
        written += take;
        input += literals;
        if written == out.len() {
            break;
        }
        let offset = block.get(input..input + 2).ok_or_else(short)?;
        let offset = usize::from(u16::from_le_bytes([offset[0], offset[1]]));
        input += 2;
        if offset == 0 || offset > written {
            return Err(malformed(format!("lz4 match offset {offset} at {written}")));
        }
        let length = lz4_length(block, &mut input, usize::from(token & 0x0f))? + 4;
        // A match may overlap what it produces: copy byte by byte.
        for _ in 0..length.min(out.len() - written) {
            out[written] = out[written - offset];
            written += 1;
        }
    }
    Ok(())
}

/// A literal or match length of a token nibble, with its extension bytes when it is 15.
fn lz4_length(block: &[u8], input: &mut usize, nibble: usize) -> Result<usize, CorruptionKind> {
    let mut length = nibble;
    if nibble == 15 {
        loop {
            let byte = *block
                .get(*input)
                .ok_or_else(|| malformed("lz4 length runs past the block".to_string()))?;
            *input += 1;
            length = length.saturating_add(usize::from(byte));
            if byte != 255 {
                break;
            }
        }
    }
    // No length in a block can exceed the largest payload it may decompress to.
    if length > RECORD_PAYLOAD_BYTES_MAX {
        return Err(malformed(format!("lz4 length {length}")));
    }
    Ok(length)
}

/// The columns a payload is decoded into: as many slots as it has points.
pub struct ColumnsOut<'a> {
    /// Steps.
    pub steps: &'a mut [i64],
    /// Timestamps, ms.
    pub timestamps_ms: &'a mut [i64],
    /// Values.
    pub values: &'a mut [f64],
}

/// Which rows of a columns payload to keep: those of a wanted key, with a step in
/// `first_step..=last_step`.
pub struct RowFilter<'a> {
    /// The wanted key ids (usually one).
    pub key_ids: &'a [KeyId],
    /// First step kept.
    pub first_step: i64,
    /// Last step kept (inclusive).
    pub last_step: i64,
}

/// Decodes a columns payload (already decompressed) into `out`, whose slices hold exactly its
/// point count, keeping the rows `filter` wants at the front, in order; returns how many.
/// Accepts and rejects what `metric::decode_columns` does.
pub fn decode_columns_into(
    payload: &[u8],
    filter: &RowFilter<'_>,
    out: ColumnsOut<'_>,
) -> Result<usize, CorruptionKind> {
    let mut decoder = Decoder::new(payload);
    let (_, count, width) = super::metric::decode_columns_head(&mut decoder)?;
    if out.steps.len() != count || out.timestamps_ms.len() != count || out.values.len() != count
    {
        return Err(malformed(format!(
            "{count} points, where the record's head said {}",
            out.steps.len()
        )));
    }
    let mut position = decoder.position();
    let wanted = key_mask(payload, &mut position, count, filter.key_ids)?;
    position = decode_deltas_into(payload, position, out.steps)?;
    position = decode_deltas_into(payload, position, out.timestamps_ms)?;
    let mut decoder = Decoder::new(payload.get(position..).unwrap_or_default());
    let raw = decoder.take(count * usize::from(width))?;
    decoder.finish()?;
    if width == 4 {
        for (value, bytes) in out.values.iter_mut().zip(raw.chunks_exact(4)) {
            *value = f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        }
    } else {
        for (value, bytes) in out.values.iter_mut().zip(raw.chunks_exact(8)) {
            *value = f64::from_le_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
            ]);
        }
    }
    Ok(keep_rows(out, wanted.as_deref(), filter))
}

/// Decodes the key id column from `*position`, leaving `*position` after it: `None` if every
/// row has a wanted key, else whether each row has one.
fn key_mask(
    payload: &[u8],
    position: &mut usize,
    count: usize,
    wanted: &[KeyId],
) -> Result<Option<Vec<bool>>, CorruptionKind> {
    // The usual record: one key, whose id fits a one-byte varint, for every row.
    if let [KeyId(wanted)] = wanted
        && let Ok(byte) = u8::try_from(*wanted)
        && byte < 0x80
        && let Some(column) = payload.get(*position..*position + count)
        && column.iter().all(|b| *b == byte)
    {
        *position += count;
        return Ok(None);
    }
    let mut mask: Option<Vec<bool>> = None;
    for row in 0..count {
        let key = read_varint(payload, position)?;
        let key = u32::try_from(key).map_err(|_| malformed(format!("key id {key} > u32")))?;
        let keep = wanted.contains(&KeyId(key));
        match &mut mask {
            Some(mask) => mask.push(keep),
            None if !keep => {
                let mut started = Vec::with_capacity(count);
                started.resize(row, true);
                started.push(false);
                mask = Some(started);
            }
            None => {}
        }
    }
    Ok(mask)
}

/// Moves the rows to keep to the front of `out`, in order; returns how many there are.
fn keep_rows(out: ColumnsOut<'_>, mask: Option<&[bool]>, filter: &RowFilter<'_>) -> usize {
    let every_step = (filter.first_step == i64::MIN && filter.last_step == i64::MAX)
        || out
            .steps
            .iter()
            .all(|step| (filter.first_step..=filter.last_step).contains(step));
    if mask.is_none() && every_step {
        return out.steps.len();
    }
    let mut kept = 0;
    for row in 0..out.steps.len() {
        let step = out.steps[row];
        let keep = mask.is_none_or(|mask| mask[row])
            && (filter.first_step..=filter.last_step).contains(&step);
        if keep {
            out.steps[kept] = step;
            out.timestamps_ms[kept] = out.timestamps_ms[row];
            out.values[kept] = out.values[row];
            kept += 1;
        }
    }
    kept
}

/// Decodes `out.len()` zigzag deltas (the first from 0) from `payload[position..]`, returning
/// the position after them. One-byte deltas, the usual case of steps counted one by one and of
/// timestamps of one batch, take the short path.
#[inline]
fn decode_deltas_into(
    payload: &[u8],
    mut position: usize,
    out: &mut [i64],
) -> Result<usize, CorruptionKind> {
    let mut previous = 0i64;
    let mut index = 0;
    // Eight one-byte deltas at a time while no byte of the next eight continues a varint.
    while index + 8 <= out.len() {
        let Some(word) = payload.get(position..position + 8) else {
            break;
        };
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let word = u64::from_le_bytes(bytes);
        if word & 0x8080_8080_8080_8080 != 0 {
            break;
        }
        let slots = &mut out[index..index + 8];
        if word == u64::from(bytes[0]) * 0x0101_0101_0101_0101 {
            // Eight equal deltas (steps counted one by one, one batch's timestamps): a
            // progression, computed without the chain of additions, so it vectorizes.
            let delta = unzigzag(u64::from(bytes[0]));
            for (multiple, slot) in (1i64..).zip(slots.iter_mut()) {
                *slot = previous.wrapping_add(delta.wrapping_mul(multiple));
            }
            previous = previous.wrapping_add(delta.wrapping_mul(8));
        } else {
            for (slot, byte) in slots.iter_mut().zip(bytes) {
                previous = previous.wrapping_add(unzigzag(u64::from(byte)));
                *slot = previous;
            }
        }
        index += 8;
        position += 8;
    }
    for slot in out[index..].iter_mut() {
        let delta = match payload.get(position) {
            Some(byte) if *byte < 0x80 => {
                position += 1;
                u64::from(*byte)
            }
            _ => read_varint(payload, &mut position)?,
        };
        previous = previous.wrapping_add(unzigzag(delta));
        *slot = previous;
    }
    Ok(position)
}

/// The varint at `*position`, with the checks of `Decoder::varint`.
#[inline]
fn read_varint(payload: &[u8], position: &mut usize) -> Result<u64, CorruptionKind> {
    let mut decoder = Decoder::new(payload.get(*position..).unwrap_or_default());
    let value = decoder.varint()?;
    *position += decoder.position();
    Ok(value)
}

/// What [`stream_points`] finds in a stream.
#[derive(Debug, Default)]
pub struct StreamPoints {
    /// The wanted runs' points, one batch per run with points, in run table order.
    pub batches: Vec<MetricBatch>,
    /// The bytes the committed ops take (where the next record starts).
    pub ops_bytes: usize,
    /// Every run of the stream's run table, wanted or not, in table order (a run a
    /// version-1 stream repeats is listed each time).
    pub runs: Vec<RunId>,
}

/// The points of a stream's committed ops that belong to runs `wanted` accepts, one batch per
/// such run in the order the stream's run table lists them, the bytes the ops take and the
/// run table. Decodes every op (a stream has no stored length) and checks `ops_crc`, through
/// the walk `metric::decode_stream` makes, so with its checks and errors; only the points it
/// keeps are stored.
pub fn stream_points(
    ops_area: &[u8],
    ops_count: u32,
    ops_crc: u32,
    wanted: &dyn Fn(RunId) -> bool,
) -> Result<StreamPoints, CorruptionKind> {
    let mut kept = WantedPoints {
        wanted,
        table: Vec::new(),
        runs: Vec::new(),
        batches: Vec::new(),
    };
    let ops_bytes = walk_stream(ops_area, ops_count, &mut kept)?;
    check_ops_crc(ops_area, ops_bytes, ops_crc)?;
    let mut batches = kept.batches;
    batches.retain(|batch| !batch.is_empty());
    Ok(StreamPoints {
        batches,
        ops_bytes,
        runs: kept.runs,
    })
}

/// A stream's points for the wanted runs, as the walk gives them.
struct WantedPoints<'a> {
    wanted: &'a dyn Fn(RunId) -> bool,
    /// Per entry of the run table: the batch its points go to, if its run is wanted.
    table: Vec<Option<usize>>,
    /// The run table.
    runs: Vec<RunId>,
    batches: Vec<MetricBatch>,
}

impl StreamVisitor for WantedPoints<'_> {
    fn new_run(&mut self, run: RunId) {
        let batch = (self.wanted)(run).then(|| {
            self.batches.push(MetricBatch::new(run));
            self.batches.len() - 1
        });
        self.table.push(batch);
        self.runs.push(run);
    }

    #[inline]
    fn point(&mut self, slot: usize, key: KeyId, step: i64, timestamp_ms: i64, value: f64) {
        let batch = self.table.get(slot).copied().flatten();
        if let Some(batch) = batch.and_then(|index| self.batches.get_mut(index)) {
            batch.push(key, step, timestamp_ms, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::metric::{Columns, compress, decode_columns, encode_columns};

    fn payload(run: u128, key_ids: &[u32], steps: &[i64], values: &[f64]) -> Vec<u8> {
        let key_ids: Vec<KeyId> = key_ids.iter().map(|k| KeyId(*k)).collect();
        let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s * 7).collect();
        let mut out = Vec::new();
        let columns = Columns {
            key_ids: &key_ids,
            steps,
            timestamps_ms: &timestamps,
            values,
        };
        encode_columns(RunId(run), columns, &mut out);
        out
    }

    #[test]
    fn the_head_of_a_compressed_payload_is_read_from_its_first_bytes() {
        let steps: Vec<i64> = (0..4096).collect();
        let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.25).collect();
        // A run id with repeated bytes, so that lz4 encodes part of the head as a match.
        let run = 0x0101_0101_0101_0101_0000_0000_0000_0007;
        let plain = payload(run, &vec![3; 4096], &steps, &values);
        let mut stored = Vec::new();
        assert!(compress(&plain, &mut stored));
        let expected = ColumnsHead {
            run: RunId(run),
            point_count: 4096,
        };
        assert_eq!(columns_head(FLAG_COMPRESSED, &stored), Ok(expected));
        assert_eq!(columns_head(0, &plain), Ok(expected));
        assert!(columns_head(0, &plain[..20]).is_err());
        assert!(columns_head(FLAG_COMPRESSED, &stored[..8]).is_err());
    }

    #[test]
    fn decoding_into_slices_keeps_the_wanted_rows_as_the_full_decoder_reads_them() {
        let steps = [5, 6, 6, 9, -3, 12];
        let values = [0.1, f64::NAN, -0.0, 2.5, f64::INFINITY, 1e300];
        let bytes = payload(9, &[1, 2, 1, 1, 1, 2], &steps, &values);
        let full = decode_columns(&bytes).unwrap_or_default();
        let (mut s, mut t, mut v) = ([0i64; 6], [0i64; 6], [0f64; 6]);
        let filter = RowFilter {
            key_ids: &[KeyId(1)],
            first_step: 0,
            last_step: 9,
        };
        let out = ColumnsOut {
            steps: &mut s,
            timestamps_ms: &mut t,
            values: &mut v,
        };
        assert_eq!(decode_columns_into(&bytes, &filter, out), Ok(3));
        let kept: Vec<usize> = vec![0, 2, 3];
        for (slot, row) in kept.iter().enumerate() {
            assert_eq!(s[slot], full.steps[*row]);
            assert_eq!(t[slot], full.timestamps_ms[*row]);
            assert_eq!(v[slot].to_bits(), full.values[*row].to_bits());
        }
    }

    #[test]
    fn a_stream_gives_the_wanted_runs_points_as_the_full_decoder_does() {
        use crate::wal::metric::{STREAM_OP_BYTES_MAX, StreamEncoder, decode_stream};
        let mut encoder = StreamEncoder::default();
        let (mut ops, mut count) = (Vec::new(), 0u32);
        let mut scratch = [0u8; STREAM_OP_BYTES_MAX];
        for (i, run) in [1u128, 2, 1, 3, 2, 1, 1].iter().enumerate() {
            let (bytes, added) = encoder.run(RunId(*run), &mut scratch).unwrap_or_default();
            ops.extend_from_slice(&scratch[..bytes]);
            let value = if i % 2 == 0 { 0.1 } else { 0.5 };
            let step = 300 * i as i64 - 500;
            let bytes = encoder.point(KeyId(i as u32 % 2), step, 1_700_000_000_000, value, &mut scratch);
            ops.extend_from_slice(&scratch[..bytes]);
            count += added + 1;
        }
        let crc = crc32fast::hash(&ops);
        // Bytes after the committed ops are not part of the stream.
        ops.extend_from_slice(&[0xff; 3]);
        let full = decode_stream(&ops, count, crc).unwrap_or_default();
        let wanted = |run: RunId| run != RunId(2);
        let found = stream_points(&ops, count, crc, &wanted).unwrap_or_default();
        let (batches, ops_bytes) = (found.batches, found.ops_bytes);
        assert_eq!(ops_bytes, full.ops_bytes);
        assert_eq!(found.runs, [1, 2, 3].map(RunId));
        let expected: Vec<MetricBatch> = full
            .into_batches(0)
            .into_iter()
            .filter(|batch| wanted(batch.run))
            .collect();
        assert_eq!(batches, expected);
        assert!(stream_points(&ops, count, crc ^ 1, &wanted).is_err());
        assert!(stream_points(&ops[..ops_bytes - 1], count, crc, &wanted).is_err());
    }

    #[test]
    fn runs_of_equal_deltas_decode_as_the_full_decoder_reads_them() {
        // Runs of equal one-byte deltas (the progression path) of every length around eight,
        // broken by unequal, negative and multi-byte deltas.
        let mut steps: Vec<i64> = vec![-20];
        for (run, delta) in [(3, 1), (8, 1), (17, 0), (9, -2), (1, 300), (16, 63), (7, -64)] {
            for _ in 0..run {
                let previous = steps.last().copied().unwrap_or_default();
                steps.push(previous.wrapping_add(delta));
            }
            steps.push(steps.last().copied().unwrap_or_default().wrapping_add(5));
        }
        steps.extend((0..40).map(|i| -1_000_000 + i));
        let values: Vec<f64> = steps.iter().map(|s| *s as f64).collect();
        let bytes = payload(9, &vec![1; steps.len()], &steps, &values);
        let full = decode_columns(&bytes).unwrap_or_default();
        let count = steps.len();
        let (mut s, mut t, mut v) = (vec![0i64; count], vec![0i64; count], vec![0f64; count]);
        let filter = RowFilter {
            key_ids: &[KeyId(1)],
            first_step: i64::MIN,
            last_step: i64::MAX,
        };
        let out = ColumnsOut {
            steps: &mut s,
            timestamps_ms: &mut t,
            values: &mut v,
        };
        assert_eq!(decode_columns_into(&bytes, &filter, out), Ok(count));
        assert_eq!(s, steps);
        assert_eq!(s, full.steps);
        assert_eq!(t, full.timestamps_ms);
    }

    #[test]
    fn decoding_into_slices_rejects_what_the_full_decoder_rejects() {
        let bytes = payload(9, &[1, 1], &[1, 2], &[0.5, 0.1]);
        let filter = RowFilter {
            key_ids: &[KeyId(1)],
            first_step: i64::MIN,
            last_step: i64::MAX,
        };
        for cut in 0..bytes.len() {
            let (mut s, mut t, mut v) = ([0i64; 2], [0i64; 2], [0f64; 2]);
            let out = ColumnsOut {
                steps: &mut s,
                timestamps_ms: &mut t,
                values: &mut v,
            };
            assert!(decode_columns(&bytes[..cut]).is_err());
            assert!(decode_columns_into(&bytes[..cut], &filter, out).is_err(), "cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        let (mut s, mut t, mut v) = ([0i64; 2], [0i64; 2], [0f64; 2]);
        let out = ColumnsOut {
            steps: &mut s,
            timestamps_ms: &mut t,
            values: &mut v,
        };
        assert!(decode_columns_into(&long, &filter, out).is_err());
    }
}
