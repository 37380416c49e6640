//! Record framing: how one record sits in a segment, and how a reader tells a record from
//! never-written space.
//!
//! ```text
//! offset  size  field
//!      0     4  payload_bytes  u32 LE
//!      4     4  crc            CRC-32 (IEEE, crc32fast) of bytes 0..4 and 8..10+payload_bytes
//!      8     1  record_type    u8, never 0
//!      9     1  flags          bit 0: payload is lz4-compressed; bits 1..7 zero
//!     10     n  payload
//! ```
//!
//! A stream record (type [`RecordType::MetricStream`]) has a payload of 0 to 7 zero bytes of
//! padding, chosen by the writer so that the commit word after it starts at a file offset that
//! is a multiple of 8 (so it is rewritten with one aligned atomic store). The commit word and
//! the ops grow in place, so the frame CRC does not cover them:
//!
//! ```text
//!     10     p  padding        p = payload_bytes, 0..=7 zero bytes
//!   10+p     4  ops_count      u32 LE: ops committed so far
//!   14+p     4  ops_crc        CRC-32 of the committed ops' bytes
//!   18+p     m  ops            see `metric.rs`
//! ```
//!
//! Invariants: records are contiguous (no padding); a record type is never 0, so ten zero bytes
//! mean "nothing was written here"; every record ends before the segment's end.

use crate::error::CorruptionKind;

const PAYLOAD_BYTES_OFFSET: usize = 0;
const CRC_OFFSET: usize = PAYLOAD_BYTES_OFFSET + 4;
const TYPE_OFFSET: usize = CRC_OFFSET + 4;
const FLAGS_OFFSET: usize = TYPE_OFFSET + 1;
/// Size of a record frame; the payload starts here.
pub const FRAME_BYTES: usize = FLAGS_OFFSET + 1;

/// Size of the commit word of a stream: `ops_count` u32 then `ops_crc` u32.
pub const COMMIT_WORD_BYTES: usize = 8;
/// The commit word's alignment in the file.
pub const COMMIT_WORD_ALIGN: usize = 8;
/// Largest stream header: frame, the most padding, commit word.
pub const STREAM_HEADER_BYTES_MAX: usize = FRAME_BYTES + COMMIT_WORD_ALIGN - 1 + COMMIT_WORD_BYTES;

/// Flag bit: the payload is an lz4 block (preceded by its decompressed size, u32 LE).
pub const FLAG_COMPRESSED: u8 = 1;

/// Payload size of a seal record: record count (u64) and the final-segment flag (u8).
pub const SEAL_PAYLOAD_BYTES: usize = 8 + 1;
/// Size of a whole seal record. The writer always keeps this much room free.
pub const SEAL_RECORD_BYTES: usize = FRAME_BYTES + SEAL_PAYLOAD_BYTES;

const _: () = assert!(FRAME_BYTES == 10);
const _: () = assert!(STREAM_HEADER_BYTES_MAX == 25);

macro_rules! record_types {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// The type byte of a record. Values are part of the format and never reused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum RecordType {
            $($(#[$doc])* $name = $value,)*
        }

        impl RecordType {
            /// Every record type, in type-byte order.
            #[cfg(test)]
            pub const ALL: &[RecordType] = &[$(RecordType::$name,)*];

            /// The type for a type byte, if it is one this version knows.
            pub fn from_byte(byte: u8) -> Option<RecordType> {
                match byte {
                    $($value => Some(RecordType::$name),)*
                    _ => None,
                }
            }
        }
    };
}

record_types! {
    /// An experiment was created.
    ExperimentCreated = 1,
    /// An experiment was renamed.
    ExperimentRenamed = 2,
    /// An experiment was soft-deleted.
    ExperimentDeleted = 3,
    /// A deleted experiment was restored.
    ExperimentRestored = 4,
    /// An experiment tag was set.
    ExperimentTagSet = 5,
    /// An experiment tag was deleted.
    ExperimentTagDeleted = 6,
    /// A run was created.
    RunCreated = 7,
    /// A run's status changed.
    RunStatusChanged = 8,
    /// A run was soft-deleted.
    RunDeleted = 9,
    /// A deleted run was restored.
    RunRestored = 10,
    /// A param was logged.
    ParamLogged = 11,
    /// A run tag was set.
    TagSet = 12,
    /// A run tag was deleted.
    TagDeleted = 13,
    /// A metric key was interned for a run in this writer's log.
    MetricKeyDefined = 14,
    /// A column-wise batch of metric points of one run.
    MetricColumns = 15,
    /// An in-place growing stream of single metric points.
    MetricStream = 16,
    /// An artifact file was recorded.
    ArtifactRecorded = 17,
    /// An artifact file was deleted (format version 3).
    ArtifactDeleted = 18,
    /// A logged model was created (format version 4).
    LoggedModelCreated = 19,
    /// A logged model's status changed (format version 4).
    LoggedModelStatusChanged = 20,
    /// A logged model was deleted (format version 4).
    LoggedModelDeleted = 21,
    /// A logged model's tag was set (format version 4).
    LoggedModelTagSet = 22,
    /// A logged model's tag was deleted (format version 4).
    LoggedModelTagDeleted = 23,
    /// A logged model's param was logged (format version 4).
    LoggedModelParamLogged = 24,
    /// An artifact file of a logged model was recorded (format version 4).
    LoggedModelArtifactRecorded = 25,
    /// A run was linked to a logged model as its output or input (format version 4).
    RunModelLinked = 26,
    /// A dataset was logged in an experiment (format version 5).
    DatasetLogged = 27,
    /// A run used a dataset of its experiment (format version 5).
    DatasetInputLogged = 28,
    /// A run logged a metric point for a logged model (format version 6).
    LoggedModelMetricLogged = 29,
    /// The end of a segment: nothing follows in this file.
    Seal = 255,
}

/// One framed item found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Ten zero bytes (or fewer, up to the end): nothing was written here.
    End,
    /// A complete record whose CRC checked.
    Record {
        /// Its type.
        record_type: RecordType,
        /// Its flags byte.
        flags: u8,
        /// Its payload.
        payload: &'a [u8],
    },
    /// A stream record: the frame checked; the ops are validated by the caller against the
    /// commit word, because only the caller can decode them to find their length.
    Stream {
        /// Padding bytes before the commit word.
        padding: usize,
        /// Ops committed.
        ops_count: u32,
        /// CRC of the committed ops.
        ops_crc: u32,
        /// Every byte after the commit word, up to the end of the buffer.
        ops_area: &'a [u8],
    },
}

impl Frame<'_> {
    /// Bytes the frame occupies, not counting a stream's ops.
    pub fn frame_bytes(&self) -> usize {
        match self {
            Frame::End => 0,
            Frame::Record { payload, .. } => FRAME_BYTES + payload.len(),
            Frame::Stream { padding, .. } => FRAME_BYTES + padding + COMMIT_WORD_BYTES,
        }
    }
}

/// Decodes the frame at the start of `bytes`, which runs to the end of the readable data.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, CorruptionKind> {
    let Some(frame) = bytes.get(..FRAME_BYTES) else {
        return if bytes.iter().all(|b| *b == 0) {
            Ok(Frame::End)
        } else {
            Err(CorruptionKind::LengthPastEnd {
                length: FRAME_BYTES as u64,
                available: bytes.len() as u64,
            })
        };
    };
    if frame.iter().all(|b| *b == 0) {
        return Ok(Frame::End);
    }
    let payload_bytes = u32::from_le_bytes(word(frame, PAYLOAD_BYTES_OFFSET)) as usize;
    let expected = u32::from_le_bytes(word(frame, CRC_OFFSET));
    let type_byte = frame[TYPE_OFFSET];
    let flags = frame[FLAGS_OFFSET];
    let Some(payload) = bytes.get(FRAME_BYTES..FRAME_BYTES.saturating_add(payload_bytes)) else {
        return Err(CorruptionKind::LengthPastEnd {
            length: (FRAME_BYTES + payload_bytes) as u64,
            available: bytes.len() as u64,
        });
    };
    let found = frame_crc(
        &frame[PAYLOAD_BYTES_OFFSET..CRC_OFFSET],
        type_byte,
        flags,
        payload,
    );
    if expected != found {
        return Err(CorruptionKind::ChecksumMismatch {
            what: "record",
            expected,
            found,
        });
    }
    let record_type =
        RecordType::from_byte(type_byte).ok_or(CorruptionKind::UnknownRecordType(type_byte))?;
    if flags & !FLAG_COMPRESSED != 0 || (flags != 0 && record_type != RecordType::MetricColumns) {
        return Err(CorruptionKind::MalformedPayload(format!(
            "flags {flags:#04x} are not valid on a {record_type:?} record"
        )));
    }
    if record_type != RecordType::MetricStream {
        return Ok(Frame::Record {
            record_type,
            flags,
            payload,
        });
    }
    if payload_bytes >= COMMIT_WORD_ALIGN || payload.iter().any(|b| *b != 0) {
        return Err(CorruptionKind::MalformedPayload(format!(
            "stream padding of {payload_bytes} bytes must be 0 to 7 zero bytes"
        )));
    }
    let commit_at = FRAME_BYTES + payload_bytes;
    let ops_at = commit_at + COMMIT_WORD_BYTES;
    let Some(ops_area) = bytes.get(ops_at..) else {
        return Err(CorruptionKind::LengthPastEnd {
            length: ops_at as u64,
            available: bytes.len() as u64,
        });
    };
    Ok(Frame::Stream {
        padding: payload_bytes,
        ops_count: u32::from_le_bytes(word(bytes, commit_at)),
        ops_crc: u32::from_le_bytes(word(bytes, commit_at + 4)),
        ops_area,
    })
}

/// Writes a frame for `payload` (already in `out[FRAME_BYTES..]`) into `out[..FRAME_BYTES]`.
pub fn encode_frame(out: &mut [u8], record_type: RecordType, flags: u8) {
    let payload_bytes = (out.len() - FRAME_BYTES) as u32;
    out[PAYLOAD_BYTES_OFFSET..CRC_OFFSET].copy_from_slice(&payload_bytes.to_le_bytes());
    out[TYPE_OFFSET] = record_type as u8;
    out[FLAGS_OFFSET] = flags;
    let crc = frame_crc(
        &payload_bytes.to_le_bytes(),
        record_type as u8,
        flags,
        &out[FRAME_BYTES..],
    );
    out[CRC_OFFSET..TYPE_OFFSET].copy_from_slice(&crc.to_le_bytes());
}

/// The commit word of a stream record: `ops_count` then `ops_crc`.
pub fn encode_commit_word(ops_count: u32, ops_crc: u32) -> [u8; 8] {
    let mut word = [0u8; 8];
    word[..4].copy_from_slice(&ops_count.to_le_bytes());
    word[4..].copy_from_slice(&ops_crc.to_le_bytes());
    word
}

/// Padding a stream record starting at file offset `start` needs so that its commit word is
/// aligned.
pub fn stream_padding(start: usize) -> usize {
    (COMMIT_WORD_ALIGN - (start + FRAME_BYTES) % COMMIT_WORD_ALIGN) % COMMIT_WORD_ALIGN
}

fn frame_crc(payload_bytes: &[u8], type_byte: u8, flags: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(payload_bytes);
    hasher.update(&[type_byte, flags]);
    hasher.update(payload);
    hasher.finalize()
}

fn word(bytes: &[u8], offset: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[offset..offset + 4]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(record_type: RecordType, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; FRAME_BYTES + payload.len()];
        out[FRAME_BYTES..].copy_from_slice(payload);
        encode_frame(&mut out, record_type, 0);
        out
    }

    #[test]
    fn zeros_are_the_end_not_a_record() {
        assert_eq!(decode_frame(&[0u8; 64]), Ok(Frame::End));
        assert_eq!(decode_frame(&[0u8; 3]), Ok(Frame::End));
        assert_eq!(decode_frame(&[]), Ok(Frame::End));
    }

    #[test]
    fn a_record_round_trips_and_rejects_each_bit_flip() {
        let bytes = framed(RecordType::TagSet, b"payload bytes");
        let Ok(Frame::Record {
            record_type,
            payload,
            ..
        }) = decode_frame(&bytes)
        else {
            panic!("did not decode");
        };
        assert_eq!(
            (record_type, payload),
            (RecordType::TagSet, &b"payload bytes"[..])
        );
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&flipped).is_err(),
                "flip of bit {bit} accepted"
            );
        }
    }

    #[test]
    fn stream_padding_aligns_the_commit_word_and_must_be_zeros() {
        for start in 0..64 {
            assert_eq!(
                (start + FRAME_BYTES + stream_padding(start)) % COMMIT_WORD_ALIGN,
                0
            );
            assert!(stream_padding(start) < COMMIT_WORD_ALIGN);
        }
        let mut stream = vec![0u8; FRAME_BYTES + 3];
        encode_frame(&mut stream, RecordType::MetricStream, 0);
        stream.extend_from_slice(&[0u8; COMMIT_WORD_BYTES]);
        assert!(matches!(
            decode_frame(&stream),
            Ok(Frame::Stream { padding: 3, .. })
        ));
        let mut nonzero = vec![0u8; FRAME_BYTES + 3];
        nonzero[FRAME_BYTES + 1] = 1;
        encode_frame(&mut nonzero, RecordType::MetricStream, 0);
        nonzero.extend_from_slice(&[0u8; COMMIT_WORD_BYTES]);
        assert!(decode_frame(&nonzero).is_err());
        let mut too_long = vec![0u8; FRAME_BYTES + 8];
        encode_frame(&mut too_long, RecordType::MetricStream, 0);
        too_long.extend_from_slice(&[0u8; COMMIT_WORD_BYTES]);
        assert!(decode_frame(&too_long).is_err());
    }

    #[test]
    fn record_types_round_trip_through_their_byte() {
        for record_type in RecordType::ALL {
            assert_eq!(
                RecordType::from_byte(*record_type as u8),
                Some(*record_type)
            );
        }
        assert_eq!(RecordType::from_byte(0), None);
    }
}
