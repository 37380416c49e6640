//! Reading segments: validate every CRC and yield each writer's events in the order written.
//!
//! Every segment's end is judged by `classify` (shared with the tail and `verify`; see
//! `docs/DURABILITY.md`):
//! - A segment that must end with its seal (one that is not the last of its chain, or any
//!   segment of a writer with no lock file) has every byte checked: an invalid record, a missing
//!   seal or a byte after the seal is a hard error naming the file and offset (or, in salvage
//!   mode, an invalid record is skipped with a report).
//! - The last segment of a writer with a lock file ends either at a seal or at its first invalid
//!   record. If its file still ends with a valid seal, or is shorter than its preallocated
//!   length, the invalid record is corruption. Otherwise it is the torn tail of a writer that
//!   crashed (or, for a live writer, a record still being written): the log ends there. If its
//!   header is invalid and nothing was written after it, its creation was cut short: it holds
//!   nothing.
//!
//! A segment is mapped only when nothing can shrink it while it is mapped: when it is sealed
//! and trimmed (final), or when the caller holds its writer's lock. Anything else is read with
//! plain `read`: a live writer trims a segment when it seals it, and touching a map of a file
//! that shrank under it would fault (SIGBUS).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::ids::{SegmentSequence, WriterId};
use crate::wal::classify::{self, Place, SealedEnd, SegmentFile};
use crate::wal::event::{Event, Seal};
use crate::wal::metric::decode_stream;
use crate::wal::record::{Frame, RecordType, SEAL_RECORD_BYTES, decode_frame};
use crate::wal::segment::{self, HEADER_BYTES, SegmentHeader, WalFile};

/// How the valid records of a segment end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// A valid seal record.
    Sealed(Seal),
    /// Never-written space (zeros or the end of the file).
    Unwritten,
    /// An invalid record.
    Invalid(CorruptionKind),
}

/// The result of scanning one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment header.
    pub header: SegmentHeader,
    /// Offset just past the last valid record (where a seal goes, or where the seal is).
    pub end_offset: u64,
    /// How the records end.
    pub end: SegmentEnd,
    /// Valid records read (a stream counts as one).
    pub record_count: u64,
    /// Records skipped by salvage, as (offset, problem).
    pub salvaged: Vec<(u64, CorruptionKind)>,
}

/// Scans `bytes` (a whole segment file) from `start` (at least [`HEADER_BYTES`]), calling
/// `visit(record_offset, event)` for each event. In `salvage` mode, an invalid record is
/// reported and skipped by searching forward for the next valid one.
pub fn scan_segment(
    bytes: &[u8],
    start: usize,
    salvage: bool,
    visit: &mut dyn FnMut(u64, Event),
) -> Result<SegmentScan, (u64, CorruptionKind)> {
    scan_segment_with(bytes, start, salvage, &mut EventSink(visit))
}

/// What a scan hands each valid record to. The scan checks every frame and CRC; the sink
/// decodes what it needs and must reject a payload it decodes that is malformed, which ends
/// the segment's valid records there as any invalid record does.
pub trait RecordSink {
    /// A record other than a seal or a stream, at file offset `offset`, its CRC checked.
    fn record(
        &mut self,
        offset: u64,
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), CorruptionKind>;

    /// A stream record at `offset`: decodes its first `ops_count` ops from `ops_area`, checks
    /// them against `ops_crc`, and returns the bytes they take (where the next record starts).
    fn stream(
        &mut self,
        offset: u64,
        ops_area: &[u8],
        ops_count: u32,
        ops_crc: u32,
    ) -> Result<usize, CorruptionKind>;
}

/// The sink that decodes every record into events, as `scan_segment` and `read_chain` give them.
struct EventSink<'a>(&'a mut dyn FnMut(u64, Event));

impl RecordSink for EventSink<'_> {
    fn record(
        &mut self,
        offset: u64,
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), CorruptionKind> {
        let event = Event::decode(record_type, flags, payload)?;
        (self.0)(offset, event);
        Ok(())
    }

    fn stream(
        &mut self,
        offset: u64,
        ops_area: &[u8],
        ops_count: u32,
        ops_crc: u32,
    ) -> Result<usize, CorruptionKind> {
        let ops = decode_stream(ops_area, ops_count, ops_crc)?;
        let ops_bytes = ops.ops_bytes;
        for batch in ops.into_batches(0) {
            (self.0)(offset, Event::Metrics(batch));
        }
        Ok(ops_bytes)
    }
}

/// [`scan_segment`], handing each record to `sink` instead of decoding it into an event.
pub fn scan_segment_with(
    bytes: &[u8],
    start: usize,
    salvage: bool,
    sink: &mut dyn RecordSink,
) -> Result<SegmentScan, (u64, CorruptionKind)> {
    let header = SegmentHeader::decode(bytes).map_err(|kind| (0, kind))?;
    let mut offset = start.max(HEADER_BYTES);
    let mut record_count = 0u64;
    let mut salvaged = Vec::new();
    let end = loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        let (problem, zeros) = match decode_item(rest, offset as u64, sink) {
            Ok(Item::Record(bytes_used)) => {
                offset += bytes_used;
                record_count += 1;
                continue;
            }
            Ok(Item::Seal(seal)) => break SegmentEnd::Sealed(seal),
            Ok(Item::End) if !salvage || offset >= bytes.len() => break SegmentEnd::Unwritten,
            Err(kind) if !salvage => break SegmentEnd::Invalid(kind),
            // Salvaging a sealed segment: zeros where a record should be are damage too.
            Ok(Item::End) => (
                CorruptionKind::MalformedPayload("zeros where a record should be".into()),
                true,
            ),
            Err(kind) => (kind, false),
        };
        match resync(bytes, offset + 1) {
            Some(next) => {
                salvaged.push((offset as u64, problem));
                offset = next;
            }
            // Nothing valid follows: trailing zeros are just the end; anything else is reported.
            None => {
                if !zeros {
                    salvaged.push((offset as u64, problem));
                }
                break SegmentEnd::Unwritten;
            }
        }
    };
    Ok(SegmentScan {
        header,
        end_offset: offset as u64,
        end,
        record_count,
        salvaged,
    })
}

enum Item {
    End,
    Seal(Seal),
    Record(usize),
}

fn decode_item(
    bytes: &[u8],
    offset: u64,
    sink: &mut dyn RecordSink,
) -> Result<Item, CorruptionKind> {
    match decode_frame(bytes)? {
        Frame::End => Ok(Item::End),
        Frame::Record {
            record_type: RecordType::Seal,
            payload,
            ..
        } => Seal::decode(payload).map(Item::Seal),
        frame @ Frame::Record {
            record_type,
            flags,
            payload,
        } => {
            sink.record(offset, record_type, flags, payload)?;
            Ok(Item::Record(frame.frame_bytes()))
        }
        frame @ Frame::Stream {
            ops_count,
            ops_crc,
            ops_area,
            ..
        } => {
            let ops_bytes = sink.stream(offset, ops_area, ops_count, ops_crc)?;
            Ok(Item::Record(frame.frame_bytes() + ops_bytes))
        }
    }
}

/// Finds the next offset at or after `from` where a valid record (a seal included) starts.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|offset| {
        let rest = &bytes[*offset..];
        matches!(
            decode_frame(rest),
            Ok(Frame::Record { .. } | Frame::Stream { .. })
        ) && decode_item(rest, 0, &mut EventSink(&mut |_, _| {})).is_ok()
    })
}

/// Whether the file's last bytes are a valid seal record: the sign of a sealed, trimmed
/// segment, whatever happened to the bytes before it.
pub fn ends_with_seal(bytes: &[u8]) -> bool {
    let Some(start) = bytes.len().checked_sub(SEAL_RECORD_BYTES) else {
        return false;
    };
    start >= HEADER_BYTES
        && matches!(
            decode_frame(&bytes[start..]),
            Ok(Frame::Record { record_type: RecordType::Seal, payload, .. })
                if Seal::decode(payload).is_ok()
        )
}

/// Lists the writers in `wal_dir`: their segments in sequence order, and whether each has a
/// lock file.
pub fn list_writers(wal_dir: &Path) -> Result<BTreeMap<WriterId, WriterFiles>> {
    let mut writers: BTreeMap<WriterId, WriterFiles> = BTreeMap::new();
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(writers),
        Err(error) => return Err(Error::io("list", wal_dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("list", wal_dir, error))?;
        let name = entry.file_name();
        match name.to_str().and_then(segment::parse_file_name) {
            Some(WalFile::Segment(writer, sequence)) => {
                writers.entry(writer).or_default().segments.push(sequence);
            }
            Some(WalFile::Lock(writer)) => writers.entry(writer).or_default().has_lock_file = true,
            None => {}
        }
    }
    for files in writers.values_mut() {
        files.segments.sort();
    }
    Ok(writers)
}

/// The files of one writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterFiles {
    /// Segment sequences, ascending.
    pub segments: Vec<SegmentSequence>,
    /// Whether `<writer>.lock` exists.
    pub has_lock_file: bool,
}

/// Where one writer's valid log ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// The last segment ends with a seal.
    Sealed {
        /// Its payload.
        seal: Seal,
        /// The segment.
        path: PathBuf,
        /// Offset of the seal record.
        seal_offset: u64,
        /// Whether the file still runs past the seal (the trim after sealing did not happen).
        untrimmed: bool,
    },
    /// The last segment has no seal: its log ends at `offset`.
    Open {
        /// The segment.
        path: PathBuf,
        /// Where valid records end.
        offset: u64,
        /// Records in that segment.
        record_count: u64,
        /// The invalid record found there, if any (`None`: never-written space).
        torn: Option<CorruptionKind>,
    },
    /// The last segment's creation was cut short (its writer still has its lock file): it
    /// holds nothing and can be removed.
    Unborn {
        /// The segment.
        path: PathBuf,
    },
    /// The writer has no segment.
    Empty,
}

/// Options for reading a writer's chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Skip corrupt records inside sealed segments instead of failing.
    pub salvage: bool,
    /// The caller holds the writer's lock, so no other process can change its segments and they
    /// may be mapped rather than copied.
    pub writer_locked: bool,
}

/// Reads one writer's chain, calling `visit` for each event in order. Returns where it ends.
/// Whether the last segment may end without a seal is decided by the writer's lock file,
/// looked at before any segment is read (see `classify`).
pub fn read_chain(
    wal_dir: &Path,
    writer: WriterId,
    segments: &[SegmentSequence],
    options: ReadOptions,
    visit: &mut dyn FnMut(Event),
) -> Result<ChainRead> {
    let mut end = ChainEnd::Empty;
    let mut salvaged = Vec::new();
    for place in chain_places(wal_dir, writer, segments)? {
        let bytes = load_segment(&place.path, options.writer_locked)?;
        let segment = place.segment_ref(&bytes);
        end = read_segment(segment, options.salvage, &mut salvaged, visit)?;
    }
    Ok(ChainRead { end, salvaged })
}

/// One segment of a chain and its place in it: what reading it on its own, with
/// [`read_segment_with`], needs besides its bytes.
#[derive(Clone, Debug)]
pub struct ChainPlace {
    /// The file.
    pub path: PathBuf,
    /// The writer.
    pub writer: WriterId,
    /// The segment's sequence.
    pub sequence: SegmentSequence,
    /// Its place in the chain, and the chain's life.
    pub place: Place,
}

impl ChainPlace {
    /// The segment with its `bytes`, ready to read.
    pub fn segment_ref<'a>(&'a self, bytes: &'a [u8]) -> SegmentRef<'a> {
        SegmentRef {
            path: &self.path,
            bytes,
            writer: self.writer,
            sequence: self.sequence,
            place: self.place,
        }
    }
}

/// The places of `segments` of `writer`'s chain, as [`read_chain`] reads them: a gap in the
/// sequences is a missing segment, and the chain's life is looked at (its lock file) before
/// any segment is read. Segments judged by their places can then be read in any order, or in
/// parallel.
pub fn chain_places(
    wal_dir: &Path,
    writer: WriterId,
    segments: &[SegmentSequence],
) -> Result<Vec<ChainPlace>> {
    for pair in segments.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            let path = segment::segment_path(wal_dir, writer, pair[1]);
            return Err(corrupt(
                path,
                0,
                CorruptionKind::MissingSegment {
                    writer,
                    sequence: pair[0].0 + 1,
                },
            ));
        }
    }
    let life = classify::chain_life(wal_dir, writer)?;
    Ok(segments
        .iter()
        .enumerate()
        .map(|(index, sequence)| ChainPlace {
            path: segment::segment_path(wal_dir, writer, *sequence),
            writer,
            sequence: *sequence,
            place: Place {
                last: index + 1 == segments.len(),
                life,
            },
        })
        .collect())
}

/// What reading a writer's chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRead {
    /// Where the chain ends.
    pub end: ChainEnd,
    /// Records skipped in salvage mode, each with where it was and what was wrong.
    pub salvaged: Vec<Corruption>,
}

/// One segment file to read, and what decides how it may end.
#[derive(Clone, Copy, Debug)]
pub struct SegmentRef<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its whole content.
    pub bytes: &'a [u8],
    /// The writer its name gives.
    pub writer: WriterId,
    /// The sequence its name gives.
    pub sequence: SegmentSequence,
    /// Its place in the chain, and the chain's life.
    pub place: Place,
}

/// Reads one segment, calling `visit` for each event, and judges its end with `classify`:
/// damage is an error naming the file and offset. With `salvage`, invalid records of a segment
/// that must end with its seal are skipped and listed in `salvaged` instead.
pub fn read_segment(
    segment: SegmentRef<'_>,
    salvage: bool,
    salvaged: &mut Vec<Corruption>,
    visit: &mut dyn FnMut(Event),
) -> Result<ChainEnd> {
    let mut visit = |_, event| visit(event);
    read_segment_with(segment, salvage, salvaged, &mut EventSink(&mut visit))
}

/// [`read_segment`], handing each record to `sink` instead of decoding it into an event.
pub fn read_segment_with(
    segment: SegmentRef<'_>,
    salvage: bool,
    salvaged: &mut Vec<Corruption>,
    sink: &mut dyn RecordSink,
) -> Result<ChainEnd> {
    let SegmentRef {
        path,
        bytes,
        writer,
        sequence,
        place,
    } = segment;
    let file = SegmentFile {
        path,
        len: bytes.len() as u64,
        ends_with_seal: ends_with_seal(bytes),
        place,
    };
    // The open end of a chain is never salvaged: an invalid record there is where the log ends.
    let salvage = salvage && (!place.may_end_open() || file.ends_with_seal);
    let header = match SegmentHeader::decode(bytes) {
        Ok(header) => header,
        Err(kind) => {
            classify::check_bad_header(file, kind, &mut || Ok(never_written(bytes)))?;
            return Ok(ChainEnd::Unborn {
                path: path.to_path_buf(),
            });
        }
    };
    classify::check_header_names(path, &header, writer, sequence)?;
    let scan = scan_segment_with(bytes, HEADER_BYTES, salvage, sink)
        .map_err(|(offset, kind)| corrupt(path.to_path_buf(), offset, kind))?;
    salvaged.extend(scan.salvaged.iter().map(|(offset, kind)| Corruption {
        path: path.to_path_buf(),
        offset: *offset,
        kind: kind.clone(),
    }));
    let (offset, torn) = match scan.end {
        SegmentEnd::Sealed(seal) => {
            let trim = classify::check_sealed_end(file, &seal, scan.end_offset)?;
            return Ok(ChainEnd::Sealed {
                seal,
                path: path.to_path_buf(),
                seal_offset: scan.end_offset,
                untrimmed: trim == SealedEnd::Untrimmed,
            });
        }
        SegmentEnd::Invalid(kind) => (scan.end_offset, Some(kind)),
        SegmentEnd::Unwritten => (scan.end_offset, None),
    };
    classify::check_open_end(file, &header, offset, torn.clone())?;
    Ok(ChainEnd::Open {
        path: path.to_path_buf(),
        offset,
        record_count: scan.record_count,
        torn,
    })
}

/// A segment whose header is not valid and whose body is all zeros: created, never used.
pub(crate) fn never_written(bytes: &[u8]) -> bool {
    bytes
        .get(HEADER_BYTES..)
        .unwrap_or_default()
        .iter()
        .all(|b| *b == 0)
}

/// The bytes of a segment file: mapped or copied (see the module doc for when each is safe).
pub enum SegmentBytes {
    /// Read into memory.
    Owned(Vec<u8>),
    /// Mapped read-only.
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for SegmentBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SegmentBytes::Owned(bytes) => bytes,
            SegmentBytes::Mapped(map) => map,
        }
    }
}

/// Loads a segment, mapping it when that is safe: the caller holds the writer's lock
/// (`locked`), or the file ends with a valid seal (sealed and trimmed: never changed again).
///
/// A copy is checked against the length the file had before it was read: `classify` judges a
/// segment by its length, and a live writer may seal and trim the file while it is copied,
/// leaving a copy that is neither the old file nor the new one. Only that trim ever changes a
/// segment's length once it is created, so a second copy (of a sealed, trimmed file) is whole.
pub fn load_segment(path: &Path, locked: bool) -> Result<SegmentBytes> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let file = File::open(path).map_err(|error| Error::io("open", path, error))?;
        let len = file
            .metadata()
            .map_err(|error| Error::io("stat", path, error))?
            .len();
        if (locked || is_final_and_trimmed(&file, len)) && len > 0 {
            // SAFETY: the file cannot shrink while mapped: it is either sealed and trimmed,
            // which nothing ever changes again, or its writer's lock is held by the caller.
            // Deletion (compaction) does not invalidate a map.
            let map = unsafe { memmap2::Mmap::map(&file) };
            if let Ok(map) = map {
                return Ok(SegmentBytes::Mapped(map));
            }
        }
        // The length comes from the file system: a damaged or foreign file may claim any size,
        // which must be an error naming it, not an allocation that aborts the process.
        if len > crate::limits::SEGMENT_BYTES_MAX {
            return Err(Error::Corrupt(Corruption {
                path: path.to_path_buf(),
                offset: crate::limits::SEGMENT_BYTES_MAX,
                kind: CorruptionKind::HeaderMismatch(format!(
                    "the file is {len} bytes, more than any segment ({} at most)",
                    crate::limits::SEGMENT_BYTES_MAX
                )),
            }));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|error| Error::io("read", path, error))?;
        if bytes.len() as u64 == len || attempts == LOAD_ATTEMPTS_MAX {
            return Ok(SegmentBytes::Owned(bytes));
        }
    }
}

/// Copies of a segment tried before a copy whose length changed while it was made is taken as
/// it is: one for a trim during the first copy, one more for good measure. A segment's length
/// changes at most once after its creation, so a third change is not a writer's doing.
const LOAD_ATTEMPTS_MAX: u32 = 3;

/// Whether `file` (of `len` bytes) ends with a valid seal record: sealed and trimmed, so
/// nothing will ever change it again.
pub fn is_final_and_trimmed(file: &File, len: u64) -> bool {
    let mut trailer = [0u8; SEAL_RECORD_BYTES];
    len >= (HEADER_BYTES + SEAL_RECORD_BYTES) as u64
        && file
            .read_exact_at(&mut trailer, len - SEAL_RECORD_BYTES as u64)
            .is_ok()
        && matches!(
            decode_frame(&trailer),
            Ok(Frame::Record { record_type: RecordType::Seal, payload, .. })
                if Seal::decode(payload).is_ok()
        )
}

/// Reads `len` bytes at `offset` (fewer if the file is shorter).
pub fn read_range(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|error| Error::io("open", path, error))?;
    let mut bytes = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut bytes[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(Error::io("read", path, error)),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

pub(crate) fn corrupt(path: PathBuf, offset: u64, kind: CorruptionKind) -> Error {
    Error::Corrupt(Corruption { path, offset, kind })
}
