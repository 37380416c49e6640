//! Segment files: the fixed header every segment starts with, and the file naming scheme.
//!
//! ```text
//! offset  size  field
//!      0     8  magic            "RUNLOGWL"
//!      8     2  format_version   u16 LE (5; 1 to 4 are still read)
//!     10     2  header_bytes     u16 LE (64)
//!     12     4  flags            u32 LE (0; reserved)
//!     16     8  writer_id        u64 LE
//!     24     8  segment_sequence u64 LE
//!     32     8  created_unix_ms  i64 LE
//!     40     8  segment_bytes    u64 LE (preallocated size)
//!     48    12  reserved         zero
//!     60     4  header_crc       CRC-32 (IEEE) of bytes 0..60
//! ```
//!
//! Invariants: a header is written once, when the segment is created, and synced before any
//! record is appended; its writer id and sequence agree with the file name
//! `<writer_id:016x>-<sequence:010>.wal`. Records follow at offset [`HEADER_BYTES`].

use std::path::{Path, PathBuf};

use crate::error::CorruptionKind;
use crate::ids::{SegmentSequence, WriterId};

/// Identifies runlog segment files.
pub const MAGIC: [u8; 8] = *b"RUNLOGWL";
/// The format version this build writes. Readers accept `1..=FORMAT_VERSION`.
///
/// - 1: first layout. Streams had no padding and no switch-run op.
/// - 2: streams pad their commit word to 8 bytes (0-7 zero bytes of frame payload) and may
///   switch between runs in a per-stream run table (op kind 3). Version 1 segments are a
///   subset of version 2 and decode with the same code.
/// - 3: record type 18 (artifact deleted). 4: record types 19 to 26 (logged models). 5: record
///   types 27 and 28 (datasets and runs' dataset inputs). 6: record type 29 (a logged model's
///   metric point) and logged model status 0 (unspecified). Each only adds record types or
///   values, so one decoder reads every version.
pub const FORMAT_VERSION: u16 = 6;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const HEADER_BYTES_OFFSET: usize = VERSION_OFFSET + 2;
const FLAGS_OFFSET: usize = HEADER_BYTES_OFFSET + 2;
const WRITER_OFFSET: usize = FLAGS_OFFSET + 4;
const SEQUENCE_OFFSET: usize = WRITER_OFFSET + 8;
const CREATED_OFFSET: usize = SEQUENCE_OFFSET + 8;
const CAPACITY_OFFSET: usize = CREATED_OFFSET + 8;
const RESERVED_OFFSET: usize = CAPACITY_OFFSET + 8;
const CRC_OFFSET: usize = RESERVED_OFFSET + 12;
/// Size of the segment header; records start here.
pub const HEADER_BYTES: usize = CRC_OFFSET + 4;

const _: () = assert!(HEADER_BYTES == 64);

pub use crate::layout::{LOCK_EXTENSION, SEGMENT_EXTENSION};

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version the segment was written with.
    pub format_version: u16,
    /// The writer that owns the segment.
    pub writer: WriterId,
    /// Position in the writer's chain.
    pub sequence: SegmentSequence,
    /// Creation time, ms since the Unix epoch.
    pub created_unix_ms: i64,
    /// Preallocated size of the file.
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// Encodes the header in the current format version.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
        bytes[VERSION_OFFSET..HEADER_BYTES_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[HEADER_BYTES_OFFSET..FLAGS_OFFSET]
            .copy_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
        bytes[WRITER_OFFSET..SEQUENCE_OFFSET].copy_from_slice(&self.writer.0.to_le_bytes());
        bytes[SEQUENCE_OFFSET..CREATED_OFFSET].copy_from_slice(&self.sequence.0.to_le_bytes());
        bytes[CREATED_OFFSET..CAPACITY_OFFSET].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        bytes[CAPACITY_OFFSET..RESERVED_OFFSET].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        bytes[CRC_OFFSET..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and checks a header. The error is located at offset 0 of the segment.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, CorruptionKind> {
        let Some(bytes) = bytes.get(..HEADER_BYTES) else {
            return Err(CorruptionKind::TruncatedHeader {
                found_bytes: bytes.len() as u64,
            });
        };
        let magic = array::<8>(bytes, MAGIC_OFFSET);
        if magic != MAGIC {
            return Err(CorruptionKind::BadMagic { found: magic });
        }
        let expected = u32::from_le_bytes(array(bytes, CRC_OFFSET));
        let found = crc32fast::hash(&bytes[..CRC_OFFSET]);
        if expected != found {
            return Err(CorruptionKind::ChecksumMismatch {
                what: "segment header",
                expected,
                found,
            });
        }
        let format_version = u16::from_le_bytes(array(bytes, VERSION_OFFSET));
        if format_version == 0 || format_version > FORMAT_VERSION {
            return Err(CorruptionKind::UnsupportedVersion {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let header_bytes = u16::from_le_bytes(array(bytes, HEADER_BYTES_OFFSET));
        if usize::from(header_bytes) != HEADER_BYTES {
            return Err(CorruptionKind::HeaderMismatch(format!(
                "header_bytes is {header_bytes}, version {format_version} uses {HEADER_BYTES}"
            )));
        }
        let flags_and_reserved_zero = bytes[FLAGS_OFFSET..WRITER_OFFSET].iter().all(|b| *b == 0)
            && bytes[RESERVED_OFFSET..CRC_OFFSET].iter().all(|b| *b == 0);
        if !flags_and_reserved_zero {
            return Err(CorruptionKind::NonZeroReserved);
        }
        Ok(SegmentHeader {
            format_version,
            writer: WriterId(u64::from_le_bytes(array(bytes, WRITER_OFFSET))),
            sequence: SegmentSequence(u64::from_le_bytes(array(bytes, SEQUENCE_OFFSET))),
            created_unix_ms: i64::from_le_bytes(array(bytes, CREATED_OFFSET)),
            segment_bytes: u64::from_le_bytes(array(bytes, CAPACITY_OFFSET)),
        })
    }
}

/// Copies `N` bytes at `offset`. Callers pass offsets inside a slice already checked to be
/// `HEADER_BYTES` long, so the indexing cannot fail.
fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

/// `wal/<writer>-<sequence>.wal`.
pub fn segment_path(wal_dir: &Path, writer: WriterId, sequence: SegmentSequence) -> PathBuf {
    wal_dir.join(format!("{writer}-{sequence}.{SEGMENT_EXTENSION}"))
}

/// `wal/<writer>.lock`.
pub fn lock_path(wal_dir: &Path, writer: WriterId) -> PathBuf {
    wal_dir.join(format!("{writer}.{LOCK_EXTENSION}"))
}

/// What a file in `wal/` is, judged by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// A segment.
    Segment(WriterId, SegmentSequence),
    /// A writer's lock file.
    Lock(WriterId),
}

/// Parses a file name in `wal/`; `None` for names that are not runlog's.
pub fn parse_file_name(name: &str) -> Option<WalFile> {
    let (stem, extension) = name.rsplit_once('.')?;
    match extension {
        SEGMENT_EXTENSION => {
            let (writer, sequence) = stem.split_once('-')?;
            // Digits only: `from_str_radix` and `parse` also take a leading `+`, which would
            // give one sequence two names.
            if writer.len() != 16
                || sequence.len() != 10
                || !writer.bytes().all(|b| b.is_ascii_hexdigit())
                || !sequence.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let writer = u64::from_str_radix(writer, 16).ok()?;
            let sequence = sequence.parse::<u64>().ok()?;
            Some(WalFile::Segment(
                WriterId(writer),
                SegmentSequence(sequence),
            ))
        }
        LOCK_EXTENSION if stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(stem, 16)
            .ok()
                .map(|w| WalFile::Lock(WriterId(w)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            format_version: FORMAT_VERSION,
            writer: WriterId(0x0123_4567_89ab_cdef),
            sequence: SegmentSequence(7),
            created_unix_ms: 1_700_000_000_000,
            segment_bytes: 1 << 20,
        }
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(SegmentHeader::decode(&header().encode()), Ok(header()));
    }

    #[test]
    fn header_rejects_every_single_bit_flip() {
        let bytes = header().encode();
        for bit in 0..HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SegmentHeader::decode(&flipped).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        let path = segment_path(Path::new("w"), WriterId(0xabc), SegmentSequence(12));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert_eq!(name, "0000000000000abc-0000000012.wal");
        assert_eq!(
            parse_file_name(name),
            Some(WalFile::Segment(WriterId(0xabc), SegmentSequence(12)))
        );
        assert_eq!(
            parse_file_name("0000000000000abc.lock"),
            Some(WalFile::Lock(WriterId(0xabc)))
        );
        assert_eq!(parse_file_name("junk.wal"), None);
        assert_eq!(parse_file_name("0000000000000abc-12.wal"), None);
        // A sign is no digit: one sequence, or one writer, has one name.
        assert_eq!(parse_file_name("0000000000000abc-+000000012.wal"), None);
        assert_eq!(parse_file_name("+000000000000abc-0000000012.wal"), None);
        assert_eq!(parse_file_name("+000000000000abc.lock"), None);
    }
}
