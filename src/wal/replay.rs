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
            runs: Vec::new(),
            skip,
            point_count: 0,
        };
        let walked = walk_stream(ops_area, ops_count, &mut points);
        let (point_count, runs) = (points.point_count, points.runs);
        let checked = walked.and_then(|ops_bytes| {
            check_ops_crc(ops_area, ops_bytes, ops_crc)?;
            Ok(ops_bytes)
        });
        match checked {
            Ok(ops_bytes) => Ok(StreamTaken {
                ops_bytes,
                point_count,
                runs,
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
    /// The run table, for the segment's directory.
    runs: Vec<RunId>,
    /// Points an earlier poll took: counted, not applied again.
    skip: usize,
    point_count: usize,
}

impl StreamVisitor for StreamPoints<'_> {
    fn new_run(&mut self, run: RunId) {
        self.table.push(self.summaries.run_index(self.writer, run));
        self.runs.push(run);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::MetricSummary;
    use crate::wal::metric::{STREAM_OP_BYTES_MAX, StreamEncoder};

    /// Stream ops for `points` of (run, key, step, value), and how many ops they are.
    fn stream(points: &[(u128, u32, i64, f64)]) -> (Vec<u8>, u32) {
        let mut encoder = StreamEncoder::default();
        let (mut ops, mut count) = (Vec::new(), 0u32);
        let mut scratch = [0u8; STREAM_OP_BYTES_MAX];
        for (run, key, step, value) in points {
            let (bytes, added) = encoder.run(RunId(*run), &mut scratch).unwrap_or_default();
            ops.extend_from_slice(&scratch[..bytes]);
            let bytes = encoder.point(KeyId(*key), *step, 1_700_000_000_000, *value, &mut scratch);
            ops.extend_from_slice(&scratch[..bytes]);
            count += added + 1;
        }
        (ops, count)
    }

    /// Every series with points, as (run, key id, summary) in a comparable form.
    fn contents(summaries: &mut ReplaySummaries) -> Vec<(u128, u32, u64, u64, i64)> {
        let mut contents = Vec::new();
        for run in summaries.take() {
            for (key, summary) in run.series() {
                contents.push((
                    run.run.0,
                    key.0,
                    summary.count,
                    summary.sum.to_bits(),
                    summary.last_step,
                ));
            }
        }
        contents
    }

    fn replay(summaries: &mut ReplaySummaries, ops: &[u8], count: u32, crc: u32, skip: usize) -> bool {
        let mut visit = |_: WriterId, _: Event, _: &mut ReplaySummaries| {};
        let mut sink = ReplaySink::new(summaries, &mut visit);
        sink.stream(WriterId(7), ops, count, crc, skip).is_ok()
    }

    #[test]
    fn a_stream_that_fails_leaves_the_summaries_as_they_were() {
        let first = [(1, 0, 1, 0.5), (2, 0, 1, 0.1), (1, 1, 2, 0.25)];
        let (first_ops, first_count) = stream(&first);
        let first_crc = crc32fast::hash(&first_ops);
        let mut summaries = ReplaySummaries::default();
        assert!(replay(&mut summaries, &first_ops, first_count, first_crc, 0));
        let mut before = ReplaySummaries::default();
        assert!(replay(&mut before, &first_ops, first_count, first_crc, 0));
        let before = contents(&mut before);

        // New series, new runs and series the first stream made, each touched twice.
        let second = [(1, 0, 3, 1.5), (3, 2, 1, 2.0), (1, 0, 4, 0.75), (2, 5, 9, 1.0)];
        let (ops, count) = stream(&second);
        let crc = crc32fast::hash(&ops);
        assert!(!replay(&mut summaries, &ops, count, crc ^ 1, 0));
        // Cut inside the last op: the walk fails after applying the first points.
        assert!(!replay(&mut summaries, &ops[..ops.len() - 2], count, crc, 0));
        // No run the failed stream named is left behind, with or without points.
        let runs: Vec<u128> = summaries.take().iter().map(|run| run.run.0).collect();
        assert_eq!(runs, [1, 2], "runs after the failed stream");
        assert!(replay(&mut summaries, &first_ops, first_count, first_crc, 0));
        assert_eq!(contents(&mut summaries), before);
    }

    #[test]
    fn a_stream_read_again_takes_only_the_points_after_those_taken() {
        let points = [(1, 0, 1, 0.5), (2, 0, 1, 0.1), (1, 0, 2, 0.25), (2, 0, 3, 4.0)];
        let (ops, count) = stream(&points);
        let crc = crc32fast::hash(&ops);
        let mut summaries = ReplaySummaries::default();
        assert!(replay(&mut summaries, &ops, count, crc, 3));
        let mut expected = MetricSummary::EMPTY;
        expected.update(3, 1_700_000_000_000, 4.0);
        let only_last = vec![(2, 0, 1, expected.sum.to_bits(), 3)];
        assert_eq!(contents(&mut summaries), only_last);
    }

    #[test]
    fn points_of_a_key_id_no_definition_can_bind_are_dropped() {
        let limit = crate::limits::KEYS_PER_RUN_MAX as u32;
        let (ops, count) = stream(&[(1, limit, 1, 0.5), (1, limit - 1, 1, 0.5)]);
        let mut summaries = ReplaySummaries::default();
        assert!(replay(&mut summaries, &ops, count, crc32fast::hash(&ops), 0));
        let kept: Vec<u32> = contents(&mut summaries).iter().map(|c| c.1).collect();
        assert_eq!(kept, vec![limit - 1]);
    }
}
