//! Following writers from any process: each [`Tail::poll`] yields what was appended since the
//! previous one, writer by writer, in each writer's order.
//!
//! The first poll reads every writer from the start, so a tail is also how a store loads its
//! log. It judges each segment's end with `classify`, as the full reader and `verify` do: an
//! invalid record, a missing seal or a byte after a seal where the writer protocol guarantees a
//! seal (a segment with a successor, or any segment of a writer with no lock file) is
//! corruption and an error. At the end of the last segment of a writer with a lock file, an
//! invalid record or a header not yet written means "not yet" (a live writer is mid-append, or
//! a dead one awaits recovery), and the next poll tries again.
//!
//! A sealed, trimmed segment that a poll reads whole (from its first record to its seal) leaves
//! its directory (`wal::directory`) with the caller that asks for one, so that a store's first
//! query after its open reads only the wanted records of the segments the open read.
//!
//! Sealed segments are mapped; a live segment is read in windows from the cursor, growing only
//! when a record does not fit, so polling an idle writer reads a few KiB, not its 64 MiB
//! preallocation. An open stream is re-read from its start on each poll (streams are capped
//! at `STREAM_BYTES_MAX`) and only its points not yet yielded are passed on.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::ids::{SegmentSequence, WriterId};
use crate::limits::{RECORD_PAYLOAD_BYTES_MAX, STREAM_BYTES_MAX};
use crate::ids::RunId;
use crate::wal::classify::{self, Place, SegmentFile};
use crate::wal::directory::{Directory, SegmentDirectories, SegmentIdentity};
#[cfg(feature = "testing")]
use crate::wal::event::Event;
use crate::wal::event::Seal;
use crate::wal::metric::STREAM_OP_BYTES_MAX;
#[cfg(feature = "testing")]
use crate::wal::metric::decode_stream;
use crate::wal::reader::{self, corrupt};
use crate::wal::record::{
    FRAME_BYTES, Frame, RecordType, SEAL_RECORD_BYTES, STREAM_HEADER_BYTES_MAX, decode_frame,
};
use crate::wal::segment::{self, HEADER_BYTES, SegmentHeader};

/// First read window on a live segment.
const WINDOW_BYTES_MIN: usize = 64 * 1024;

/// A cursor over every writer of a log directory.
#[derive(Debug)]
pub struct Tail {
    wal_dir: PathBuf,
    cursors: BTreeMap<WriterId, Cursor>,
}

#[derive(Clone, Copy, Debug)]
struct Cursor {
    sequence: SegmentSequence,
    offset: u64,
    /// Points already yielded from the stream that starts at `offset`.
    stream_points_seen: usize,
    finished: bool,
}

enum Step {
    /// Nothing more to read now.
    Wait,
    /// The segment is sealed; continue with the next one (or stop if it was the last).
    NextSegment {
        finished: bool,
        /// Where the seal record ends: the file's end, unless `check_sealed_end` let a live
        /// writer's untrimmed last segment pass.
        seal_end: u64,
    },
}

/// How one pass over a buffer ended.
enum Pass {
    Step(Step),
    /// The buffer ended before the data did: read a larger window.
    NeedMore,
}

/// The bytes of a segment from some offset on.
struct Window {
    bytes: reader::SegmentBytes,
    /// File offset of `bytes[0]`.
    base: u64,
    /// Whether `bytes` runs to the end of the file.
    to_end: bool,
    /// The file ends with a valid seal: sealed and trimmed.
    sealed: bool,
    /// The file's length when the window was read.
    file_len: u64,
    /// The file's metadata, for a sealed window (its identity, `wal::directory`).
    metadata: Option<std::fs::Metadata>,
}

impl Tail {
    /// A tail positioned at the start of every writer's chain.
    pub fn new(wal_dir: impl AsRef<Path>) -> Tail {
        Tail {
            wal_dir: wal_dir.as_ref().to_path_buf(),
            cursors: BTreeMap::new(),
        }
    }

    /// Starts `writer` at segment `sequence` instead of its first one (its earlier segments are
    /// compacted), or marks it as read to the end if `finished`.
    pub fn start_at(&mut self, writer: WriterId, sequence: SegmentSequence, finished: bool) {
        self.cursors.insert(
            writer,
            Cursor {
                sequence,
                offset: HEADER_BYTES as u64,
                stream_points_seen: 0,
                finished,
            },
        );
    }

    /// The `wal/` folder it follows.
    pub fn dir(&self) -> &Path {
        &self.wal_dir
    }

    /// Whether `writer` has been seen (polled or started).
    pub fn knows(&self, writer: WriterId) -> bool {
        self.cursors.contains_key(&writer)
    }

    /// Calls `visit` for every event appended since the last poll; returns how many.
    #[cfg(feature = "testing")]
    pub fn poll(&mut self, visit: &mut dyn FnMut(WriterId, Event)) -> Result<usize> {
        let mut sink = EventSink { visit, count: 0 };
        self.poll_into(&|_| false, &mut sink, None)?;
        Ok(sink.count)
    }

    /// Hands each valid record appended since the last poll to `sink`, which decodes what it
    /// needs (see [`TailSink`]), passing over the writers `skip` names (a store applies its
    /// own appends directly and must not see them twice). `skip` is asked after the folder is
    /// listed, so it can answer for writers created since the last poll. A sealed, trimmed
    /// segment read whole, from its first record to its seal, leaves its directory in
    /// `directories`, if given.
    pub(crate) fn poll_into(
        &mut self,
        skip: &dyn Fn(WriterId) -> bool,
        sink: &mut dyn TailSink,
        directories: Option<&SegmentDirectories>,
    ) -> Result<()> {
        let listed = reader::list_writers(&self.wal_dir)?;
        // A writer with unread segments cannot vanish: only compaction removes segments.
        for (writer, cursor) in &self.cursors {
            if !cursor.finished && !skip(*writer) && !listed.contains_key(writer) {
                return Err(missing(&self.wal_dir, *writer, cursor.sequence));
            }
        }
        for (writer, files) in listed {
            if skip(writer) {
                continue;
            }
            let Some(first) = files.segments.first() else {
                continue;
            };
            // Without a starting point from a manifest, a chain must start at its beginning.
            if !self.cursors.contains_key(&writer) && first.0 != 0 {
                return Err(missing(&self.wal_dir, writer, SegmentSequence(0)));
            }
            let cursor = self.cursors.entry(writer).or_insert(Cursor {
                sequence: *first,
                offset: HEADER_BYTES as u64,
                stream_points_seen: 0,
                finished: false,
            });
            check_chain(&self.wal_dir, writer, &files.segments, cursor)?;
            // Looked at before the segments are read (see `classify::chain_life`).
            let mut life = None;
            while !cursor.finished && files.segments.contains(&cursor.sequence) {
                let life = match life {
                    Some(life) => life,
                    None => *life.insert(classify::chain_life(&self.wal_dir, writer)?),
                };
                let path = segment::segment_path(&self.wal_dir, writer, cursor.sequence);
                let place = Place {
                    last: files.segments.last() == Some(&cursor.sequence),
                    life,
                };
                let expected = (writer, cursor.sequence);
                let step = poll_segment(&path, expected, cursor, place, sink, directories)?;
                match step {
                    Step::Wait => break,
                    Step::NextSegment { finished, .. } => {
                        cursor.finished = finished;
                        cursor.sequence = SegmentSequence(cursor.sequence.0 + 1);
                        cursor.offset = HEADER_BYTES as u64;
                        cursor.stream_points_seen = 0;
                    }
                }
            }
            let after_final = files
                .segments
                .last()
                .is_some_and(|last| *last >= cursor.sequence);
            if cursor.finished && after_final {
                let path = segment::segment_path(&self.wal_dir, writer, cursor.sequence);
                return Err(corrupt(path, 0, CorruptionKind::AfterSeal));
            }
        }
        Ok(())
    }
}

/// What a poll hands each valid record to, with the writer whose log holds it. A method that
/// returns an error must have taken nothing from the record: the record is then invalid, and
/// `classify` judges it as it judges a record whose CRC fails (at the open end of a live
/// writer's chain, it is read again by a later poll).
pub(crate) trait TailSink {
    /// A record other than a seal or a stream, its CRC checked: decode it, or reject it.
    fn record(
        &mut self,
        writer: WriterId,
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), CorruptionKind>;

    /// A stream: decode its first `ops_count` ops from `ops_area`, check them against
    /// `ops_crc`, and take its points after the first `skip` (those an earlier poll took).
    fn stream(
        &mut self,
        writer: WriterId,
        ops_area: &[u8],
        ops_count: u32,
        ops_crc: u32,
        skip: usize,
    ) -> Result<StreamTaken, CorruptionKind>;
}

/// What a sink found in a stream.
#[derive(Clone, Debug)]
pub(crate) struct StreamTaken {
    /// Bytes the committed ops take: the next record starts right after them.
    pub ops_bytes: usize,
    /// Points in the committed ops, the skipped ones included.
    pub point_count: usize,
    /// The stream's run table (at least every run with a point in it), for its segment's
    /// directory.
    pub runs: Vec<RunId>,
}

/// The sink that decodes every record into events, as [`Tail::poll`] gives them.
#[cfg(feature = "testing")]
struct EventSink<'a> {
    visit: &'a mut dyn FnMut(WriterId, Event),
    count: usize,
}

#[cfg(feature = "testing")]
impl TailSink for EventSink<'_> {
    fn record(
        &mut self,
        writer: WriterId,
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), CorruptionKind> {
        let event = Event::decode(record_type, flags, payload)?;
        self.count += 1;
        (self.visit)(writer, event);
        Ok(())
    }

    fn stream(
        &mut self,
        writer: WriterId,
        ops_area: &[u8],
        ops_count: u32,
        ops_crc: u32,
        skip: usize,
    ) -> Result<StreamTaken, CorruptionKind> {
        let ops = decode_stream(ops_area, ops_count, ops_crc)?;
        let taken = StreamTaken {
            ops_bytes: ops.ops_bytes,
            point_count: ops.len(),
            runs: ops.runs.clone(),
        };
        for batch in ops.into_batches(skip) {
            self.count += 1;
            (self.visit)(writer, Event::Metrics(batch));
        }
        Ok(taken)
    }
}

fn missing(wal_dir: &Path, writer: WriterId, sequence: SegmentSequence) -> Error {
    corrupt(
        segment::segment_path(wal_dir, writer, sequence),
        0,
        CorruptionKind::MissingSegment {
            writer,
            sequence: sequence.0,
        },
    )
}

/// The full reader's chain check: no gap from the cursor's segment on.
fn check_chain(
    wal_dir: &Path,
    writer: WriterId,
    segments: &[SegmentSequence],
    cursor: &Cursor,
) -> Result<()> {
    let later = &segments[segments.partition_point(|s| *s < cursor.sequence)..];
    let gap = match later.first() {
        Some(first) if *first != cursor.sequence && !cursor.finished => Some(cursor.sequence),
        _ => later
            .windows(2)
            .find(|pair| pair[1].0 != pair[0].0 + 1)
            .map(|pair| SegmentSequence(pair[0].0 + 1)),
    };
    match gap {
        Some(sequence) => Err(missing(wal_dir, writer, sequence)),
        None => Ok(()),
    }
}

fn poll_segment(
    path: &Path,
    (writer, sequence): (WriterId, SegmentSequence),
    cursor: &mut Cursor,
    place: Place,
    sink: &mut dyn TailSink,
    directories: Option<&SegmentDirectories>,
) -> Result<Step> {
    let header = reader::read_range(path, 0, HEADER_BYTES)?;
    let header = match SegmentHeader::decode(&header) {
        Ok(header) => header,
        // Still being created, if it may be; `classify` decides.
        Err(kind) => {
            let file = SegmentFile {
                path,
                len: file_len(path)?,
                ends_with_seal: false,
                place,
            };
            classify::check_bad_header(file, kind, &mut || body_is_zero(path))?;
            return Ok(Step::Wait);
        }
    };
    classify::check_header_names(path, &header, writer, sequence)?;
    let mut window_bytes = WINDOW_BYTES_MIN;
    loop {
        let window = open_window(path, cursor.offset, window_bytes)?;
        let end = SegmentEnd {
            file: SegmentFile {
                path,
                len: window.file_len,
                ends_with_seal: window.sealed,
                place,
            },
            header,
            writer,
        };
        // Only a sealed, trimmed segment read from its first record gets a directory: the
        // tail then meets every record of it in this one pass.
        let whole = window.sealed
            && cursor.offset == HEADER_BYTES as u64
            && cursor.stream_points_seen == 0;
        let room = directories.is_some_and(SegmentDirectories::has_room);
        let mut directory = (whole && room).then(Directory::default);
        match scan_window(&end, &window, cursor, sink, &mut directory)? {
            Pass::Step(step) => {
                // As the query path's rule (`ChainEnd::Sealed { untrimmed: false }`): only a
                // segment whose seal ends the file is one that never changes again.
                if let (Step::NextSegment { seal_end, .. }, Some(directory), Some(directories)) =
                    (&step, directory, directories)
                    && *seal_end == window.file_len
                    && let Some(metadata) = &window.metadata
                {
                    let identity = SegmentIdentity::new(writer, sequence, metadata);
                    // The identity is the fd's that was checked sealed, the bytes come from
                    // a second open: `insert` keeps only bytes of the identity's length and
                    // records their header and seal, which a later read's bytes must match.
                    if crate::wal::directory::unchanged(path, &identity) {
                        directories.insert(identity, directory, &window.bytes);
                    }
                }
                return Ok(step);
            }
            Pass::NeedMore => window_bytes = window_bytes.saturating_mul(4),
        }
    }
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .map_err(|error| Error::io("stat", path, error))
}

/// Whether nothing follows the header's place in the file: read in chunks, stopping at the
/// first written byte. Asked only of a segment whose header does not decode.
fn body_is_zero(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|error| Error::io("open", path, error))?;
    let mut chunk = vec![0u8; WINDOW_BYTES_MIN];
    let mut offset = HEADER_BYTES as u64;
    loop {
        let read = match file.read_at(&mut chunk, offset) {
            Ok(0) => return Ok(true),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Error::io("read", path, error)),
        };
        if chunk[..read].iter().any(|byte| *byte != 0) {
            return Ok(false);
        }
        offset += read as u64;
    }
}

/// A segment being scanned, and what its end is judged by.
struct SegmentEnd<'a> {
    file: SegmentFile<'a>,
    header: SegmentHeader,
    writer: WriterId,
}

impl SegmentEnd<'_> {
    /// `Ok` if the log may end (for now) at `offset`, where `torn` was found; else the damage.
    fn judge(&self, offset: u64, torn: Option<CorruptionKind>) -> Result<()> {
        classify::check_open_end(self.file, &self.header, offset, torn)
    }

    /// Whether the segment may end without a seal at all: then a stream may still grow.
    fn may_end_open(&self) -> bool {
        classify::may_end_open(self.file, &self.header)
    }
}

fn open_window(path: &Path, offset: u64, len: usize) -> Result<Window> {
    let file = File::open(path).map_err(|error| Error::io("open", path, error))?;
    let metadata = file
        .metadata()
        .map_err(|error| Error::io("stat", path, error))?;
    let file_len = metadata.len();
    if reader::is_final_and_trimmed(&file, file_len) {
        let bytes = reader::load_segment(path, false)?;
        return Ok(Window {
            bytes,
            base: 0,
            to_end: true,
            sealed: true,
            file_len,
            metadata: Some(metadata),
        });
    }
    let end = file_len.min(offset.saturating_add(len as u64));
    let mut bytes = vec![0u8; end.saturating_sub(offset) as usize];
    // The writer may trim the file (sealing it) between the stat and the read: a short read
    // is then the end of the data, and the next poll sees the sealed file.
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(Error::io("read", path, error)),
        }
    }
    let to_end = filled < bytes.len() || end == file_len;
    bytes.truncate(filled);
    let bytes = reader::SegmentBytes::Owned(bytes);
    Ok(Window {
        bytes,
        base: offset,
        to_end,
        sealed: false,
        file_len,
        metadata: None,
    })
}

/// Longest a stream record can be: a larger window cannot fix a stream that fails to decode.
const STREAM_RECORD_BYTES_MAX: usize =
    STREAM_HEADER_BYTES_MAX + STREAM_BYTES_MAX + 3 * STREAM_OP_BYTES_MAX;

/// Whether a frame error may only mean the window ended inside a valid record: its length runs
/// past the window but not past what any record can be. Anything else (a bad CRC, a garbage
/// length) more bytes cannot fix, so the window does not grow for it.
fn could_be_cut(kind: &CorruptionKind) -> bool {
    let record_bytes_max = (FRAME_BYTES + RECORD_PAYLOAD_BYTES_MAX) as u64;
    matches!(kind, CorruptionKind::LengthPastEnd { length, .. } if *length <= record_bytes_max)
}

/// Decodes records from the cursor on, advancing it past each one yielded.
fn scan_window(
    end: &SegmentEnd<'_>,
    window: &Window,
    cursor: &mut Cursor,
    sink: &mut dyn TailSink,
    directory: &mut Option<Directory>,
) -> Result<Pass> {
    // An invalid item: a larger window may fix it when the window cut it short; otherwise
    // `classify` decides between corruption and "not yet" at the open end of a chain.
    let invalid = |offset: u64, kind: CorruptionKind, could_be_cut: bool| -> Result<Pass> {
        if !window.to_end && could_be_cut {
            Ok(Pass::NeedMore)
        } else {
            end.judge(offset, Some(kind))?;
            Ok(Pass::Step(Step::Wait))
        }
    };
    loop {
        let relative = (cursor.offset - window.base) as usize;
        let rest = window.bytes.get(relative..).unwrap_or_default();
        let frame = match decode_frame(rest) {
            Ok(frame) => frame,
            Err(kind) => {
                let cut = could_be_cut(&kind);
                return invalid(cursor.offset, kind, cut);
            }
        };
        match frame {
            Frame::End if rest.len() < FRAME_BYTES && !window.to_end => return Ok(Pass::NeedMore),
            Frame::End => {
                end.judge(cursor.offset, None)?;
                return Ok(Pass::Step(Step::Wait));
            }
            Frame::Record {
                record_type: RecordType::Seal,
                payload,
                ..
            } => {
                return match Seal::decode(payload) {
                    Ok(seal) => {
                        classify::check_sealed_end(end.file, &seal, cursor.offset)?;
                        Ok(Pass::Step(Step::NextSegment {
                            finished: seal.final_segment,
                            seal_end: cursor.offset + SEAL_RECORD_BYTES as u64,
                        }))
                    }
                    Err(kind) => invalid(cursor.offset, kind, false),
                };
            }
            Frame::Record {
                record_type,
                flags,
                payload,
            } => {
                let taken = sink
                    .record(end.writer, record_type, flags, payload)
                    .and_then(|()| match directory.as_mut() {
                        Some(directory) => {
                            add_record(directory, cursor.offset, record_type, flags, payload)
                        }
                        None => Ok(()),
                    });
                if let Err(kind) = taken {
                    return invalid(cursor.offset, kind, false);
                }
                cursor.offset += frame.frame_bytes() as u64;
                cursor.stream_points_seen = 0;
            }
            Frame::Stream {
                ops_count,
                ops_crc,
                ops_area,
                ..
            } => {
                let seen = cursor.stream_points_seen;
                let taken = match sink.stream(end.writer, ops_area, ops_count, ops_crc, seen) {
                    Ok(taken) => taken,
                    Err(kind) => {
                        let cut = rest.len() < STREAM_RECORD_BYTES_MAX;
                        return invalid(cursor.offset, kind, cut);
                    }
                };
                let next = relative + frame.frame_bytes() + taken.ops_bytes;
                cursor.stream_points_seen = taken.point_count;
                // A stream listed with no run would hide its points from every read through
                // the directory: a sink must give the run table, and a segment whose sink
                // did not gets no directory.
                debug_assert!(taken.point_count == 0 || !taken.runs.is_empty());
                if taken.point_count > 0 && taken.runs.is_empty() {
                    *directory = None;
                }
                if let Some(directory) = directory.as_mut() {
                    directory.add_stream(cursor.offset, taken.runs);
                }
                // A live stream may still grow until something follows it; in a sealed segment
                // (or one with a successor) it cannot, and the loop checks what follows.
                let after = window.bytes.get(next..).unwrap_or_default();
                let followed = match decode_frame(after) {
                    Ok(Frame::Record { .. } | Frame::Stream { .. }) => true,
                    Ok(Frame::End) if after.len() < FRAME_BYTES && !window.to_end => {
                        return Ok(Pass::NeedMore);
                    }
                    Err(kind) if !window.to_end && could_be_cut(&kind) => {
                        return Ok(Pass::NeedMore);
                    }
                    _ => false,
                };
                if !followed && end.may_end_open() {
                    return Ok(Pass::Step(Step::Wait));
                }
                cursor.offset = window.base + next as u64;
                cursor.stream_points_seen = 0;
            }
        }
    }
}

/// Adds a record (other than a stream or a seal), its CRC checked, to its segment's directory:
/// a definition or a columns record; nothing else bears on a metric read.
fn add_record(
    directory: &mut Directory,
    offset: u64,
    record_type: RecordType,
    flags: u8,
    payload: &[u8],
) -> Result<(), CorruptionKind> {
    match record_type {
        RecordType::MetricColumns => directory.add_columns(offset, flags, payload),
        RecordType::MetricKeyDefined => {
            if let crate::wal::event::Event::MetricKeyDefined { run, key_id, key } =
                crate::wal::event::Event::decode(record_type, flags, payload)?
            {
                directory.add_definition(run, key_id, &key);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
