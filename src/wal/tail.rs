//! Following writers from any process: each [`Tail::poll`] yields what was appended since the
//! previous one, writer by writer, in each writer's order.
//!
//! The first poll reads every writer from the start, so a tail is also how a store loads its
//! log. It is as strict as the full reader where the format allows no doubt: an invalid record in
//! a segment that is sealed, or that has a successor, is corruption and an error. At the end of
//! a writer's last, unsealed segment an invalid record means "not yet" (a live writer is
//! mid-append, or a dead one awaits recovery), and the next poll tries again.
//!
//! Sealed segments are mapped; a live segment is read in windows from the cursor, growing only
//! when a record does not fit, so polling an idle writer reads a few KiB, not its 64 MiB
//! preallocation. An open stream is re-read from its start on each poll (streams are capped
//! at `STREAM_BYTES_MAX`) and only its points not yet yielded are passed on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::ids::{SegmentSequence, WriterId};
use crate::wal::event::{Event, Seal};
use crate::wal::metric::{MetricBatch, decode_stream};
use crate::wal::reader::{self, corrupt};
use crate::wal::record::{FRAME_BYTES, Frame, RecordType, decode_frame};
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
    NextSegment { finished: bool },
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
}

impl Tail {
    /// A tail positioned at the start of every writer's chain.
    pub fn new(wal_dir: impl AsRef<Path>) -> Tail {
        Tail {
            wal_dir: wal_dir.as_ref().to_path_buf(),
            cursors: BTreeMap::new(),
        }
    }

    /// Calls `visit` for every event appended since the last poll; returns how many.
    pub fn poll(&mut self, visit: &mut dyn FnMut(WriterId, Event)) -> Result<usize> {
        self.poll_except(&BTreeSet::new(), visit)
    }

    /// Like [`Tail::poll`], but passes over the writers in `skip` (a store applies its own
    /// appends directly and must not see them twice).
    pub fn poll_except(
        &mut self,
        skip: &BTreeSet<WriterId>,
        visit: &mut dyn FnMut(WriterId, Event),
    ) -> Result<usize> {
        let mut count = 0;
        for (writer, files) in reader::list_writers(&self.wal_dir)? {
            if skip.contains(&writer) {
                continue;
            }
            let Some(first) = files.segments.first() else {
                continue;
            };
            let cursor = self.cursors.entry(writer).or_insert(Cursor {
                sequence: *first,
                offset: HEADER_BYTES as u64,
                stream_points_seen: 0,
                finished: false,
            });
            while !cursor.finished && files.segments.contains(&cursor.sequence) {
                let path = segment::segment_path(&self.wal_dir, writer, cursor.sequence);
                let has_successor = files.segments.last() != Some(&cursor.sequence);
                let step = poll_segment(&path, cursor, has_successor, &mut |event| {
                    count += 1;
                    visit(writer, event);
                })?;
                match step {
                    Step::Wait => break,
                    Step::NextSegment { finished } => {
                        cursor.finished = finished;
                        cursor.sequence = SegmentSequence(cursor.sequence.0 + 1);
                        cursor.offset = HEADER_BYTES as u64;
                        cursor.stream_points_seen = 0;
                    }
                }
            }
        }
        Ok(count)
    }
}

fn poll_segment(
    path: &Path,
    cursor: &mut Cursor,
    has_successor: bool,
    visit: &mut dyn FnMut(Event),
) -> Result<Step> {
    let header = reader::read_range(path, 0, HEADER_BYTES)?;
    if let Err(kind) = SegmentHeader::decode(&header) {
        // Still being created, unless something follows it.
        return if has_successor {
            Err(corrupt(path.to_path_buf(), 0, kind))
        } else {
            Ok(Step::Wait)
        };
    }
    let mut window_bytes = WINDOW_BYTES_MIN;
    loop {
        let window = open_window(path, cursor.offset, window_bytes)?;
        let strict = window.sealed || has_successor;
        match scan_window(path, &window, cursor, strict, visit)? {
            Pass::Step(step) => return Ok(step),
            Pass::NeedMore => window_bytes = window_bytes.saturating_mul(4),
        }
    }
}

fn open_window(path: &Path, offset: u64, len: usize) -> Result<Window> {
    let file = File::open(path).map_err(|error| Error::io("open", path, error))?;
    let file_len = file
        .metadata()
        .map_err(|error| Error::io("stat", path, error))?
        .len();
    if reader::is_final_and_trimmed(&file, file_len) {
        let bytes = reader::load_segment(path, false)?;
        return Ok(Window {
            bytes,
            base: 0,
            to_end: true,
            sealed: true,
        });
    }
    let end = file_len.min(offset.saturating_add(len as u64));
    let mut bytes = vec![0u8; end.saturating_sub(offset) as usize];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|error| Error::io("read", path, error))?;
    Ok(Window {
        bytes: reader::SegmentBytes::Owned(bytes),
        base: offset,
        to_end: end == file_len,
        sealed: false,
    })
}

/// Decodes records from the cursor on, advancing it past each one yielded.
fn scan_window(
    path: &Path,
    window: &Window,
    cursor: &mut Cursor,
    strict: bool,
    visit: &mut dyn FnMut(Event),
) -> Result<Pass> {
    // An invalid item: more bytes may fix it; else corruption where the format allows no doubt,
    // "not yet" at the open end of a chain.
    let invalid = |offset: u64, kind: CorruptionKind| -> Result<Pass> {
        if !window.to_end {
            Ok(Pass::NeedMore)
        } else if strict {
            Err(corrupt(path.to_path_buf(), offset, kind))
        } else {
            Ok(Pass::Step(Step::Wait))
        }
    };
    loop {
        let relative = (cursor.offset - window.base) as usize;
        let rest = window.bytes.get(relative..).unwrap_or_default();
        let frame = match decode_frame(rest) {
            Ok(frame) => frame,
            Err(kind) => return invalid(cursor.offset, kind),
        };
        match frame {
            Frame::End if rest.len() < FRAME_BYTES && !window.to_end => return Ok(Pass::NeedMore),
            Frame::End if strict => {
                return Err(corrupt(
                    path.to_path_buf(),
                    cursor.offset,
                    CorruptionKind::MalformedPayload(
                        "segment ends without a seal but is sealed or has a successor".into(),
                    ),
                ));
            }
            Frame::End => return Ok(Pass::Step(Step::Wait)),
            Frame::Record {
                record_type: RecordType::Seal,
                payload,
                ..
            } => {
                return match Seal::decode(payload) {
                    Ok(seal) => Ok(Pass::Step(Step::NextSegment {
                        finished: seal.final_segment,
                    })),
                    Err(kind) => invalid(cursor.offset, kind),
                };
            }
            Frame::Record {
                record_type,
                flags,
                payload,
            } => {
                match Event::decode(record_type, flags, payload) {
                    Ok(event) => visit(event),
                    Err(kind) => return invalid(cursor.offset, kind),
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
                let ops = match decode_stream(ops_area, ops_count, ops_crc) {
                    Ok(ops) => ops,
                    Err(kind) => return invalid(cursor.offset, kind),
                };
                let total: usize = ops.batches.iter().map(MetricBatch::len).sum();
                for batch in skip_points(ops.batches, cursor.stream_points_seen) {
                    visit(Event::Metrics(batch));
                }
                cursor.stream_points_seen = total;
                let next = relative + frame.frame_bytes() + ops.ops_bytes;
                // The stream may still grow until something else follows it.
                let followed = matches!(
                    decode_frame(window.bytes.get(next..).unwrap_or_default()),
                    Ok(Frame::Record { .. } | Frame::Stream { .. })
                );
                if !followed {
                    let more_to_see = !window.to_end && window.bytes.len() - next < FRAME_BYTES;
                    return Ok(if more_to_see {
                        Pass::NeedMore
                    } else {
                        Pass::Step(Step::Wait)
                    });
                }
                cursor.offset = window.base + next as u64;
                cursor.stream_points_seen = 0;
            }
        }
    }
}

/// Drops the first `skip` points of a run of batches.
fn skip_points(batches: Vec<MetricBatch>, mut skip: usize) -> impl Iterator<Item = MetricBatch> {
    batches.into_iter().filter_map(move |mut batch| {
        if skip >= batch.len() {
            skip -= batch.len();
            return None;
        }
        if skip > 0 {
            batch.key_ids.drain(..skip);
            batch.steps.drain(..skip);
            batch.timestamps_ms.drain(..skip);
            batch.values.drain(..skip);
            skip = 0;
        }
        Some(batch)
    })
}
