//! Replaying other writers' logs into a catalog: metric records are decoded straight into
//! per-series summaries ([`ReplaySummaries`]), one `update` per point, with no point
//! materialised; every other record becomes an event as usual.
//!
//! Invariants:
//! - It accepts and rejects exactly what the event decoder does: streams go through the walk
//!   `metric::decode_stream` makes (`metric::walk_stream`), columns through
//!   `metric::decode_columns_reusing`, and the rest through `Event::decode`.
//! - A record that fails leaves the summaries as they were: a columns record is decoded whole
//!   before its points are applied, and a stream's points, applied as the walk finds them, are
//!   undone if its ops do not decode or fail their CRC (`ReplaySummaries::undo_record`).
//! - Points of one writer reach each series in log order, so its summary is bit for bit the
//!   one `MetricSummary::update` gives point by point.

use crate::error::CorruptionKind;
use crate::ids::{KeyId, RunId, WriterId};
use crate::summary::{ReplayRunIndex, ReplaySummaries};
use crate::wal::event::Event;
use crate::wal::metric::{
    self, MetricBatch, StreamVisitor, check_ops_crc, decode_columns_reusing, walk_stream,
};
use crate::wal::record::{FLAG_COMPRESSED, RecordType};
use crate::wal::tail::{StreamTaken, TailSink};

/// The [`TailSink`] of a replay: metric points into `summaries`, other events to `visit`.
pub(crate) struct ReplaySink<'a> {
    summaries: &'a mut ReplaySummaries,
    /// Every event other than metric points, with the summaries so far (so that a caller that
    /// must apply them before some event, see `Follower`, can).
    visit: &'a mut dyn FnMut(WriterId, Event, &mut ReplaySummaries),
    /// Reused by every columns record, so that a replay allocates for the largest only.
    batch: MetricBatch,
    decompressed: Vec<u8>,
    /// Per entry of the current stream's run table, where its points go.
    table: Vec<ReplayRunIndex>,
}

impl<'a> ReplaySink<'a> {
    /// A sink that adds points to `summaries` and hands other events to `visit`.
    pub fn new(
        summaries: &'a mut ReplaySummaries,
        visit: &'a mut dyn FnMut(WriterId, Event, &mut ReplaySummaries),
    ) -> Self {
        ReplaySink {
            summaries,
            visit,
            batch: MetricBatch::default(),
            decompressed: Vec::new(),
            table: Vec::new(),
        }
    }

    fn columns(&mut self, writer: WriterId, flags: u8, payload: &[u8]) -> Result<(), CorruptionKind> {
        let payload = if flags & FLAG_COMPRESSED != 0 {
            metric::decompress_reusing(payload, &mut self.decompressed)?;
            &self.decompressed[..]
        } else {
            payload
        };
        decode_columns_reusing(payload, &mut self.batch)?;
        let batch = &self.batch;
        // Named even without points, as an event for the run would name it.
        let run = self.summaries.run_index(writer, batch.run);
        for index in 0..batch.len() {
            self.summaries.update(
                run,
                batch.key_ids[index],
                batch.steps[index],
                batch.timestamps_ms[index],
                batch.values[index],
            );
        }
        Ok(())
    }
}

impl TailSink for ReplaySink<'_> {
    fn record(
        &mut self,
        writer: WriterId,
        record_type: RecordType,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), CorruptionKind> {
        if record_type == RecordType::MetricColumns {
            return self.columns(writer, flags, payload);
        }
        let event = Event::decode(record_type, flags, payload)?;
        (self.visit)(writer, event, self.summaries);
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
        self.summaries.start_record();
        self.table.clear();
        let mut points = StreamPoints {
            summaries: self.summaries,
            writer,
            table: &mut self.table,
            skip,
            point_count: 0,
        };
        let walked = walk_stream(ops_area, ops_count, &mut points);
        let point_count = points.point_count;
        let checked = walked.and_then(|ops_bytes| {
            check_ops_crc(ops_area, ops_bytes, ops_crc)?;
            Ok(ops_bytes)
        });
        match checked {
            Ok(ops_bytes) => Ok(StreamTaken {
                ops_bytes,
                point_count,
            }),
            Err(kind) => {
                self.summaries.undo_record();
                Err(kind)
            }
        }
    }
}

/// A stream's points as the walk gives them, into the summaries.
struct StreamPoints<'a> {
    summaries: &'a mut ReplaySummaries,
    writer: WriterId,
    table: &'a mut Vec<ReplayRunIndex>,
    /// Points an earlier poll took: counted, not applied again.
    skip: usize,
    point_count: usize,
}

impl StreamVisitor for StreamPoints<'_> {
    fn new_run(&mut self, run: RunId) {
        self.table.push(self.summaries.run_index(self.writer, run));
    }

    #[inline]
    fn point(&mut self, slot: usize, key: KeyId, step: i64, timestamp_ms: i64, value: f64) {
        self.point_count += 1;
        if self.point_count <= self.skip {
            return;
        }
        // The walk names only entries it gave `new_run`.
        if let Some(run) = self.table.get(slot) {
            self.summaries
                .update(*run, key, step, timestamp_ms, value);
        }
    }
}
