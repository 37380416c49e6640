//! Metric points in the log: column-wise batch records and the single-point stream.
//!
//! A **columns** payload holds one run's points, column by column, so that each column is
//! uniform and compresses (lz4, when it pays):
//!
//! ```text
//! run          u128 LE
//! point_count  u32 LE
//! value_width  u8: 4 (every value is exactly an f32) or 8
//! key_ids      point_count x uvarint
//! steps        point_count x zigzag uvarint, delta from the previous step (first from 0)
//! timestamps   point_count x zigzag uvarint, delta from the previous ms timestamp (first from 0)
//! values       point_count x f32 or f64 LE, raw bits (NaN payloads and infinities kept)
//! ```
//!
//! A **stream** is a sequence of ops appended in place one call at a time, each committed by
//! rewriting the stream's commit word (see `record.rs`). Each op starts with a uvarint head
//! whose low two bits are its kind:
//!
//! ```text
//! kind 0  point, f32 value:  head = key_id << 2 | 0, step delta, timestamp delta, f32 LE
//! kind 1  point, f64 value:  head = key_id << 2 | 1, step delta, timestamp delta, f64 LE
//! kind 2  new run:           head = 2 exactly, run u128 LE; appends the run to the stream's
//!                            run table and makes it current
//! kind 3  switch run:        head = slot << 2 | 3; makes run table entry `slot` current
//!                            (format version 2; in version 1 kind 3 was invalid)
//! ```
//!
//! Deltas are zigzag uvarints from the previous point of the stream (first from 0); a point
//! before any run op is invalid. The run table lets one writer interleave runs (one thread
//! logging several runs) at one or two bytes per switch instead of seventeen; the writer puts at
//! most `STREAM_RUNS_MAX` runs in a stream (readers accept any number: version 1 wrote a
//! set-run op at every change). Points of one run keep their order; the reader groups a stream's
//! points into one batch per run. A value is stored as f32 only when that round-trips its
//! bits exactly, so values of f32 origin cost four bytes and nothing is ever rounded.

use crate::error::CorruptionKind;
use crate::ids::{KeyId, RunId};
use crate::limits::RECORD_PAYLOAD_BYTES_MAX;
use crate::wal::codec::{Decoder, Encoder, VARINT_BYTES_MAX, malformed, unzigzag, zigzag};

/// Points of one run, column by column, as read from the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricBatch {
    /// The run.
    pub run: RunId,
    /// Interned key of each point (see `Event::MetricKeyDefined`).
    pub key_ids: Vec<KeyId>,
    /// Step of each point.
    pub steps: Vec<i64>,
    /// Timestamp of each point, ms since the Unix epoch.
    pub timestamps_ms: Vec<i64>,
    /// Value of each point.
    pub values: Vec<f64>,
}

impl MetricBatch {
    /// An empty batch for `run`.
    pub fn new(run: RunId) -> Self {
        MetricBatch {
            run,
            ..MetricBatch::default()
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the batch has no point.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Appends one point.
    pub fn push(&mut self, key_id: KeyId, step: i64, timestamp_ms: i64, value: f64) {
        self.key_ids.push(key_id);
        self.steps.push(step);
        self.timestamps_ms.push(timestamp_ms);
        self.values.push(value);
    }

    /// Bytes a columns payload of `points` points can take at most, before compression.
    pub fn encoded_bytes_max(points: usize) -> usize {
        COLUMNS_FIXED_BYTES + points * POINT_COLUMNS_BYTES_MAX
    }
}

const COLUMNS_FIXED_BYTES: usize = 16 + 4 + 1;
/// key id (u32 varint) + two i64 zigzag varints + an f64.
const POINT_COLUMNS_BYTES_MAX: usize = 5 + VARINT_BYTES_MAX + VARINT_BYTES_MAX + 8;

/// Whether `value` survives a round trip through f32 bit for bit.
#[inline]
pub fn is_f32_exact(value: f64) -> bool {
    f64::from(value as f32).to_bits() == value.to_bits()
}

/// Column slices borrowed from the caller, all of one length.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    /// Interned key of each point.
    pub key_ids: &'a [KeyId],
    /// Step of each point.
    pub steps: &'a [i64],
    /// Timestamp of each point, ms.
    pub timestamps_ms: &'a [i64],
    /// Value of each point.
    pub values: &'a [f64],
}

/// Appends a columns payload for `run` to `out`.
pub fn encode_columns(run: RunId, columns: Columns<'_>, out: &mut Vec<u8>) {
    let count = columns.steps.len();
    debug_assert!(
        columns.key_ids.len() == count
            && columns.timestamps_ms.len() == count
            && columns.values.len() == count
    );
    let narrow = columns.values.iter().all(|v| is_f32_exact(*v));
    out.reserve(MetricBatch::encoded_bytes_max(count));
    let mut encoder = Encoder::new(out);
    encoder.u128(run.0);
    encoder.u32(count as u32);
    encoder.u8(if narrow { 4 } else { 8 });
    encoder.varints(columns.key_ids.iter().map(|key| u64::from(key.0)));
    encode_deltas(&mut encoder, columns.steps);
    encode_deltas(&mut encoder, columns.timestamps_ms);
    if narrow {
        encoder.le_bytes(columns.values.iter().map(|v| (*v as f32).to_le_bytes()));
    } else {
        encoder.le_bytes(columns.values.iter().map(|v| v.to_le_bytes()));
    }
}

fn encode_deltas(encoder: &mut Encoder<'_>, column: &[i64]) {
    let previous = std::iter::once(0).chain(column.iter().copied());
    encoder.varints(
        (column.iter().zip(previous)).map(|(value, previous)| zigzag(value.wrapping_sub(previous))),
    );
}

/// Reads a columns payload's run, point count and value width, and refuses a width other
/// than 4 or 8 and a count the rest of the payload cannot hold (each point takes at least
/// three varint bytes and a value), before anyone allocates for it. Shared by every decoder
/// of the payload, so they accept the same bytes.
pub(crate) fn decode_columns_head(
    decoder: &mut Decoder<'_>,
) -> Result<(RunId, usize, u8), CorruptionKind> {
    let run = RunId(decoder.u128()?);
    let count = decoder.u32()? as usize;
    let width = decoder.u8()?;
    if width != 4 && width != 8 {
        return Err(malformed(format!("value width {width}, must be 4 or 8")));
    }
    let point_bytes_min = 3 + usize::from(width);
    if count > decoder.remaining() / point_bytes_min {
        return Err(malformed(format!(
            "{count} points cannot fit in {} bytes",
            decoder.remaining()
        )));
    }
    Ok((run, count, width))
}

/// Decodes a columns payload (already decompressed).
pub fn decode_columns(payload: &[u8]) -> Result<MetricBatch, CorruptionKind> {
    let mut batch = MetricBatch::default();
    decode_columns_reusing(payload, &mut batch)?;
    Ok(batch)
}

/// [`decode_columns`] into `batch`, whose vectors are cleared and reused, so that a reader of
/// many records allocates for the largest only. On an error `batch` holds part of the points.
pub fn decode_columns_reusing(
    payload: &[u8],
    batch: &mut MetricBatch,
) -> Result<(), CorruptionKind> {
    let mut decoder = Decoder::new(payload);
    let (run, count, width) = decode_columns_head(&mut decoder)?;
    batch.run = run;
    batch.key_ids.clear();
    batch.steps.clear();
    batch.timestamps_ms.clear();
    batch.values.clear();
    batch.key_ids.reserve(count);
    batch.steps.reserve(count);
    batch.timestamps_ms.reserve(count);
    batch.values.reserve(count);
    for _ in 0..count {
        let key = decoder.varint()?;
        let key = u32::try_from(key).map_err(|_| malformed(format!("key id {key} > u32")))?;
        batch.key_ids.push(KeyId(key));
    }
    decode_deltas(&mut decoder, count, &mut batch.steps)?;
    decode_deltas(&mut decoder, count, &mut batch.timestamps_ms)?;
    let raw = decoder.take(count * usize::from(width))?;
    if width == 4 {
        batch.values.extend(
            raw.chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        );
    } else {
        batch.values.extend(
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        );
    }
    decoder.finish()
}

fn decode_deltas(
    decoder: &mut Decoder<'_>,
    count: usize,
    out: &mut Vec<i64>,
) -> Result<(), CorruptionKind> {
    let mut previous = 0i64;
    for _ in 0..count {
        previous = previous.wrapping_add(unzigzag(decoder.varint()?));
        out.push(previous);
    }
    Ok(())
}

/// Compresses a columns payload when that saves at least an eighth. Returns the flags and the
/// bytes to store: `decompressed_bytes u32 LE` then an lz4 block.
pub fn compress(payload: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let bound = lz4_flex::block::get_maximum_output_size(payload.len());
    out.resize(start + 4 + bound, 0);
    match lz4_flex::block::compress_into(payload, &mut out[start + 4..]) {
        Ok(written) if 4 + written < payload.len() - payload.len() / 8 => {
            out.truncate(start + 4 + written);
            true
        }
        _ => {
            out.truncate(start);
            false
        }
    }
}

const LZ4_EXPANSION_MAX: usize = 255;

/// Inverse of [`compress`], refusing sizes over the record limit.
pub fn decompress(stored: &[u8]) -> Result<Vec<u8>, CorruptionKind> {
    let mut out = Vec::new();
    decompress_reusing(stored, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out`, which is cleared and reused.
pub fn decompress_reusing(stored: &[u8], out: &mut Vec<u8>) -> Result<(), CorruptionKind> {
    let mut decoder = Decoder::new(stored);
    let bytes = decoder.u32()? as usize;
    if bytes > RECORD_PAYLOAD_BYTES_MAX {
        return Err(malformed(format!(
            "decompressed size {bytes} exceeds the record limit"
        )));
    }
    let block = decoder.take(decoder.remaining())?;
    // An lz4 block expands at most 255-fold: refuse sizes its bytes cannot produce before
    // allocating for them.
    if bytes > block.len().saturating_mul(LZ4_EXPANSION_MAX) {
        return Err(malformed(format!(
            "{} lz4 bytes cannot decompress to {bytes} bytes",
            block.len()
        )));
    }
    out.clear();
    out.resize(bytes, 0);
    match lz4_flex::block::decompress_into(block, out) {
        Ok(written) if written == bytes => Ok(()),
        Ok(written) => Err(malformed(format!(
            "lz4 gave {written} bytes, header says {bytes}"
        ))),
        Err(error) => Err(malformed(format!("lz4: {error}"))),
    }
}

const OP_POINT_F32: u64 = 0;
const OP_POINT_F64: u64 = 1;
const OP_NEW_RUN: u64 = 2;
const OP_SWITCH_RUN: u64 = 3;
const OP_KIND_MASK: u64 = 3;

/// Runs one stream can hold in its run table.
pub const STREAM_RUNS_MAX: usize = 64;

/// Longest encoded op.
pub const STREAM_OP_BYTES_MAX: usize = 2 * VARINT_BYTES_MAX + VARINT_BYTES_MAX + 8;
const _: () = assert!(STREAM_OP_BYTES_MAX > 16);

/// Encodes stream ops, carrying the delta state and the run table between calls.
#[derive(Clone, Debug, Default)]
pub struct StreamEncoder {
    previous_step: i64,
    previous_timestamp_ms: i64,
    runs: Vec<RunId>,
    current: Option<usize>,
}

impl StreamEncoder {
    /// Encodes whatever op makes `run` current into `out`: nothing if it already is, a
    /// one-byte switch if the stream has seen it, else a new-run op. Returns the bytes and ops
    /// written, or `None` when the run table is full (close the stream and start another).
    ///
    /// `out` holds at least `STREAM_OP_BYTES_MAX` bytes.
    #[inline]
    pub fn run(&mut self, run: RunId, out: &mut [u8]) -> Option<(usize, u32)> {
        if self.current.is_some_and(|slot| self.runs[slot] == run) {
            return Some((0, 0));
        }
        if let Some(slot) = self.runs.iter().position(|r| *r == run) {
            self.current = Some(slot);
            return Some((put_varint((slot as u64) << 2 | OP_SWITCH_RUN, out, 0), 1));
        }
        if self.runs.len() == STREAM_RUNS_MAX {
            return None;
        }
        out[0] = OP_NEW_RUN as u8;
        out[1..17].copy_from_slice(&run.0.to_le_bytes());
        self.current = Some(self.runs.len());
        self.runs.push(run);
        Some((17, 1))
    }

    /// Encodes a point op into `out` (at least `STREAM_OP_BYTES_MAX` bytes), returning its
    /// length.
    #[inline]
    pub fn point(
        &mut self,
        key: KeyId,
        step: i64,
        timestamp_ms: i64,
        value: f64,
        out: &mut [u8],
    ) -> usize {
        let narrow = is_f32_exact(value);
        let head = u64::from(key.0) << 2 | if narrow { OP_POINT_F32 } else { OP_POINT_F64 };
        let mut len = put_varint(head, out, 0);
        len = put_varint(zigzag(step.wrapping_sub(self.previous_step)), out, len);
        len = put_varint(
            zigzag(timestamp_ms.wrapping_sub(self.previous_timestamp_ms)),
            out,
            len,
        );
        if narrow {
            out[len..len + 4].copy_from_slice(&(value as f32).to_le_bytes());
            len += 4;
        } else {
            out[len..len + 8].copy_from_slice(&value.to_le_bytes());
            len += 8;
        }
        self.previous_step = step;
        self.previous_timestamp_ms = timestamp_ms;
        len
    }
}

/// Writes `value` as a uvarint at `out[at..]` in place (no staging copy: this is the per-point
/// path), returning the offset after it.
#[inline]
fn put_varint(mut value: u64, out: &mut [u8], mut at: usize) -> usize {
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

/// What a stream's committed ops decode to: every point in op order, with the run of each.
#[derive(Debug, Default, PartialEq)]
pub struct StreamOps {
    /// The stream's run table.
    pub runs: Vec<RunId>,
    /// Index into `runs` of each point's run.
    pub point_runs: Vec<u32>,
    /// The points, in op order (the batch's `run` field is unused).
    pub points: MetricBatch,
    /// Bytes the committed ops take; the next record starts right after them.
    pub ops_bytes: usize,
}

impl StreamOps {
    /// Points in the stream.
    #[cfg(feature = "testing")]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the stream has no point.
    #[cfg(feature = "testing")]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points after the first `skip` (in op order), grouped into one batch per run, each in
    /// op order.
    pub fn into_batches(self, skip: usize) -> Vec<MetricBatch> {
        let StreamOps {
            runs,
            point_runs,
            points,
            ..
        } = self;
        if runs.len() == 1 {
            let mut batch = points;
            batch.run = runs[0];
            let skip = skip.min(batch.len());
            if skip > 0 {
                batch.key_ids.drain(..skip);
                batch.steps.drain(..skip);
                batch.timestamps_ms.drain(..skip);
                batch.values.drain(..skip);
            }
            return if batch.is_empty() {
                Vec::new()
            } else {
                vec![batch]
            };
        }
        let mut batches: Vec<MetricBatch> = runs.iter().map(|run| MetricBatch::new(*run)).collect();
        for i in skip..points.len() {
            let batch = &mut batches[point_runs[i] as usize];
            batch.push(
                points.key_ids[i],
                points.steps[i],
                points.timestamps_ms[i],
                points.values[i],
            );
        }
        batches.retain(|batch| !batch.is_empty());
        batches
    }
}

/// Decodes the first `ops_count` ops of `ops_area` and checks them against `ops_crc`.
pub fn decode_stream(
    ops_area: &[u8],
    ops_count: u32,
    ops_crc: u32,
) -> Result<StreamOps, CorruptionKind> {
    let mut ops = StreamOps::default();
    ops.ops_bytes = walk_stream(ops_area, ops_count, &mut ops)?;
    check_ops_crc(ops_area, ops.ops_bytes, ops_crc)?;
    Ok(ops)
}

impl StreamVisitor for StreamOps {
    fn new_run(&mut self, run: RunId) {
        self.runs.push(run);
    }

    #[inline]
    fn point(&mut self, slot: usize, key: KeyId, step: i64, timestamp_ms: i64, value: f64) {
        self.point_runs.push(slot as u32);
        self.points.push(key, step, timestamp_ms, value);
    }
}

/// What [`walk_stream`] hands each op to, once the op has passed the checks of
/// `docs/format/log.md` section 6.1.
pub(crate) trait StreamVisitor {
    /// A new-run op: `run` is the run table's next entry, and the current run.
    fn new_run(&mut self, run: RunId);

    /// A point of the run in entry `slot` of the run table (an entry `new_run` was given).
    fn point(&mut self, slot: usize, key: KeyId, step: i64, timestamp_ms: i64, value: f64);
}

/// Decodes the first `ops_count` ops of `ops_area`, handing each to `visitor`, and returns the
/// bytes they take. Every decoder of a stream walks it here, so all accept the same bytes. The
/// ops are not checked against their CRC ([`check_ops_crc`]): that needs their length, which
/// only the walk finds, so a visitor's work on ops that fail it must be undone by the caller.
#[inline]
pub(crate) fn walk_stream<V: StreamVisitor>(
    ops_area: &[u8],
    ops_count: u32,
    visitor: &mut V,
) -> Result<usize, CorruptionKind> {
    let mut decoder = Decoder::new(ops_area);
    // Entries of the run table so far, and the current one.
    let mut runs = 0usize;
    let mut current: Option<usize> = None;
    let mut previous_step = 0i64;
    let mut previous_timestamp_ms = 0i64;
    for _ in 0..ops_count {
        // The usual ops, checked and taken whole: a one-byte switch to a known slot, and an
        // f32 point whose head and deltas are one byte each. Anything else, valid or not,
        // takes the general path below, which alone reports errors.
        if let Some(head) = decoder.peek_u8()
            && head < 0x80
        {
            let slot = usize::from(head >> 2);
            if u64::from(head) & OP_KIND_MASK == OP_SWITCH_RUN && slot < runs {
                current = Some(slot);
                decoder.take(1)?;
                continue;
            }
            if u64::from(head) & OP_KIND_MASK == OP_POINT_F32
                && let Some(slot) = current
                && decoder.remaining() >= SHORT_POINT_BYTES
            {
                let mut ahead = decoder.clone();
                let op = ahead.take(SHORT_POINT_BYTES)?;
                if op[1] < 0x80 && op[2] < 0x80 {
                    decoder = ahead;
                    previous_step = previous_step.wrapping_add(unzigzag(u64::from(op[1])));
                    previous_timestamp_ms =
                        previous_timestamp_ms.wrapping_add(unzigzag(u64::from(op[2])));
                    let value = f32::from_le_bytes([op[3], op[4], op[5], op[6]]);
                    let key = KeyId(u32::from(head >> 2));
                    visitor.point(
                        slot,
                        key,
                        previous_step,
                        previous_timestamp_ms,
                        f64::from(value),
                    );
                    continue;
                }
            }
        }
        let head = short_varint(&mut decoder)?;
        match head & OP_KIND_MASK {
            // No cap on the table here: version 1 wrote a set-run op at every change of run, so
            // a v1 stream may hold any number of them. Each costs 17 input bytes, which bounds
            // the table by the input.
            OP_NEW_RUN if head == OP_NEW_RUN => {
                visitor.new_run(RunId(decoder.u128()?));
                current = Some(runs);
                runs += 1;
            }
            OP_SWITCH_RUN => {
                let slot = head >> 2;
                if slot >= runs as u64 {
                    return Err(malformed(format!("switch to run slot {slot} of {runs}")));
                }
                current = Some(slot as usize);
            }
            kind @ (OP_POINT_F32 | OP_POINT_F64) => {
                let key = u32::try_from(head >> 2)
                    .map_err(|_| malformed(format!("stream key id {} > u32", head >> 2)))?;
                previous_step = previous_step.wrapping_add(unzigzag(short_varint(&mut decoder)?));
                previous_timestamp_ms = previous_timestamp_ms
                    .wrapping_add(unzigzag(short_varint(&mut decoder)?));
                let value = if kind == OP_POINT_F32 {
                    f64::from(decoder.f32()?)
                } else {
                    decoder.f64()?
                };
                let Some(slot) = current else {
                    return Err(malformed("stream point before any run op".to_string()));
                };
                visitor.point(
                    slot,
                    KeyId(key),
                    previous_step,
                    previous_timestamp_ms,
                    value,
                );
            }
            _ => return Err(malformed(format!("invalid stream op head {head:#x}"))),
        }
    }
    Ok(decoder.position())
}

/// An f32 point op whose head and two deltas take one byte each.
const SHORT_POINT_BYTES: usize = 3 + 4;

/// Checks the first `ops_bytes` bytes of `ops_area` (what [`walk_stream`] returned) against
/// the stream's `ops_crc`.
pub(crate) fn check_ops_crc(
    ops_area: &[u8],
    ops_bytes: usize,
    ops_crc: u32,
) -> Result<(), CorruptionKind> {
    let found = crc32fast::hash(ops_area.get(..ops_bytes).unwrap_or(ops_area));
    if found != ops_crc {
        return Err(CorruptionKind::ChecksumMismatch {
            what: "stream ops",
            expected: ops_crc,
            found,
        });
    }
    Ok(())
}

/// The next varint: one byte, the usual case of a stream's heads and deltas, without the
/// general decoder's loop.
#[inline]
pub(crate) fn short_varint(decoder: &mut Decoder<'_>) -> Result<u64, CorruptionKind> {
    match decoder.peek_u8() {
        Some(byte) if byte < 0x80 => {
            decoder.take(1)?;
            Ok(u64::from(byte))
        }
        _ => decoder.varint(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_exactness_keeps_bits() {
        assert!(is_f32_exact(0.5));
        assert!(is_f32_exact(f64::INFINITY));
        assert!(is_f32_exact(f64::NEG_INFINITY));
        assert!(!is_f32_exact(0.1));
        assert!(is_f32_exact(f64::from(0.1f32)));
    }

    #[test]
    fn compress_refuses_incompressible_and_round_trips_compressible() {
        let repetitive = vec![7u8; 4096];
        let mut stored = Vec::new();
        assert!(compress(&repetitive, &mut stored));
        assert_eq!(decompress(&stored), Ok(repetitive));
        let mut noise = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4096 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            noise.push(state as u8);
        }
        let mut stored = Vec::new();
        assert!(!compress(&noise, &mut stored));
        assert!(stored.is_empty());
    }
}
