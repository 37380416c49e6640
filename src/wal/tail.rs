//! Following live writers from any process: each [`Tail::poll`] yields what was appended since
//! the previous one.
//!
//! A tail never fails on a record that does not validate at the end of a chain: for a live
//! writer that is a record still being written ("not yet"), and the next poll tries again. An
//! open stream is re-read from its start on each poll (streams are capped at
//! `STREAM_BYTES_MAX`), and only its points not yet yielded are passed on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::ids::{SegmentSequence, WriterId};
use crate::wal::event::{Event, Seal};
use crate::wal::metric::{MetricBatch, decode_stream};
use crate::wal::reader;
use crate::wal::record::{Frame, RecordType, decode_frame};
use crate::wal::segment::{self, HEADER_BYTES, SegmentHeader};

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
        let mut count = 0;
        for (writer, files) in reader::list_writers(&self.wal_dir)? {
            let Some(first) = files.segments.first() else {
                continue;
            };
            let cursor = self.cursors.entry(writer).or_insert(Cursor {
                sequence: *first,
                offset: HEADER_BYTES as u64,
                stream_points_seen: 0,
                finished: false,
            });
            while !cursor.finished {
                let path = segment::segment_path(&self.wal_dir, writer, cursor.sequence);
                if !path.exists() {
                    break;
                }
                let step = poll_segment(&path, cursor, &mut |event| {
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

fn poll_segment(path: &Path, cursor: &mut Cursor, visit: &mut dyn FnMut(Event)) -> Result<Step> {
    let bytes = reader::read_file(path)?;
    if SegmentHeader::decode(&bytes).is_err() {
        // Still being created (or damaged, which a full read reports): nothing to yield.
        return Ok(Step::Wait);
    }
    loop {
        let offset = cursor.offset as usize;
        let rest = bytes.get(offset..).unwrap_or_default();
        let Ok(frame) = decode_frame(rest) else {
            return Ok(Step::Wait);
        };
        match frame {
            Frame::End => return Ok(Step::Wait),
            Frame::Record {
                record_type: RecordType::Seal,
                payload,
                ..
            } => {
                let Ok(seal) = Seal::decode(payload) else {
                    return Ok(Step::Wait);
                };
                return Ok(Step::NextSegment {
                    finished: seal.final_segment,
                });
            }
            Frame::Record {
                record_type,
                flags,
                payload,
            } => {
                let Ok(event) = Event::decode(record_type, flags, payload) else {
                    return Ok(Step::Wait);
                };
                visit(event);
                cursor.offset += frame.frame_bytes() as u64;
                cursor.stream_points_seen = 0;
            }
            Frame::Stream {
                ops_count,
                ops_crc,
                ops_area,
            } => {
                let Ok(ops) = decode_stream(ops_area, ops_count, ops_crc) else {
                    return Ok(Step::Wait);
                };
                let total: usize = ops.batches.iter().map(MetricBatch::len).sum();
                for batch in skip_points(ops.batches, cursor.stream_points_seen) {
                    visit(Event::Metrics(batch));
                }
                cursor.stream_points_seen = total;
                let next = offset + frame.frame_bytes() + ops.ops_bytes;
                // The stream may still grow until something else follows it.
                let followed = matches!(
                    decode_frame(bytes.get(next..).unwrap_or_default()),
                    Ok(Frame::Record { .. } | Frame::Stream { .. })
                );
                if !followed {
                    return Ok(Step::Wait);
                }
                cursor.offset = next as u64;
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
