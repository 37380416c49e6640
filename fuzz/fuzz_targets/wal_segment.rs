//! Feeds arbitrary bytes through every segment decoder. Property: no decoder panics
//! (returning `Err` is fine), and every event the segment scanner yields re-encodes to a
//! payload that decodes back to the same event.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use runlog::wal::segment::{self, FORMAT_VERSION, HEADER_BYTES, SegmentHeader};
use runlog::wal::classify::{ChainLife, Place};
use runlog::wal::{Event, metric, reader, record};
use runlog::{SegmentSequence, WriterId};

/// A valid header, prepended to the input so that the fuzzer reaches the records without
/// having to forge the header CRC.
static HEADER: LazyLock<[u8; HEADER_BYTES]> = LazyLock::new(|| {
    SegmentHeader {
        format_version: FORMAT_VERSION,
        writer: WriterId(1),
        sequence: SegmentSequence(0),
        created_unix_ms: 0,
        segment_bytes: 4096,
    }
    .encode()
});

fuzz_target!(|data: &[u8]| {
    let _ = SegmentHeader::decode(data);

    let mut with_header = Vec::with_capacity(HEADER_BYTES + data.len());
    with_header.extend_from_slice(&*HEADER);
    with_header.extend_from_slice(data);
    for bytes in [data, with_header.as_slice()] {
        for salvage in [false, true] {
            let scan =
                reader::scan_segment(bytes, segment::HEADER_BYTES, salvage, &mut |_, event| {
                    check_round_trip(&event)
                });
            if let Ok(scan) = scan {
                // The scan never reports a record end past the bytes it was given.
                assert!(scan.end_offset <= bytes.len() as u64, "{scan:?}");
            }
        }
        // The judgement of how the segment ends, in every place a chain can give it.
        for last in [false, true] {
            for life in [ChainLife::Unfinished, ChainLife::Closed] {
                let segment = reader::SegmentRef {
                    path: std::path::Path::new("fuzz.wal"),
                    bytes,
                    writer: WriterId(1),
                    sequence: SegmentSequence(0),
                    place: Place { last, life },
                };
                let _ = reader::read_segment(segment, false, &mut Vec::new(), &mut |_| {});
            }
        }
    }

    let _ = record::decode_frame(data);

    // Raw metric payloads. Successful decodes are round-tripped too (same property as above).
    if let Ok(batch) = metric::decode_columns(data) {
        check_round_trip(&Event::Metrics(batch));
    }
    if let Ok(payload) = metric::decompress(data)
        && let Ok(batch) = metric::decode_columns(&payload)
    {
        check_round_trip(&Event::Metrics(batch));
    }
    // decode_stream(ops_area, ops_count, ops_crc): the commit word is the first 8 bytes.
    if let Some((ops_count, rest)) = data.split_first_chunk::<4>()
        && let Some((ops_crc, ops_area)) = rest.split_first_chunk::<4>()
    {
        let (ops_count, ops_crc) = (u32::from_le_bytes(*ops_count), u32::from_le_bytes(*ops_crc));
        if let Ok(ops) = metric::decode_stream(ops_area, ops_count, ops_crc) {
            assert!(ops.ops_bytes <= ops_area.len());
            assert_eq!(ops.point_runs.len(), ops.len());
            let points = ops.len();
            let skip = points / 2;
            let batches = ops.into_batches(skip);
            assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), points - skip);
            for batch in batches {
                check_round_trip(&Event::Metrics(batch));
            }
        }
    }
});

/// `decode(encode(event)) == event`.
///
/// Metric values are compared by their bits rather than with `==`: NaN != NaN would make any
/// batch holding a NaN fail, and comparing `{:?}` output would hide changes of NaN payload or
/// sign, which the format promises to keep ("raw bits (NaN payloads and infinities kept)").
/// Bit equality is the stronger of the two checks and has no false positives: a value decoded
/// from the log is re-encoded as f32 only when that round-trips its bits exactly.
fn check_round_trip(event: &Event) {
    let mut payload = Vec::new();
    event.encode_payload(&mut payload);
    let decoded = match Event::decode(event.record_type(), 0, &payload) {
        Ok(decoded) => decoded,
        Err(error) => panic!("re-encoded event does not decode: {error:?}\nevent: {event:?}"),
    };
    let same = match (event, &decoded) {
        (Event::Metrics(a), Event::Metrics(b)) => {
            a.run == b.run
                && a.key_ids == b.key_ids
                && a.steps == b.steps
                && a.timestamps_ms == b.timestamps_ms
                && a.values.len() == b.values.len()
                && a.values
                    .iter()
                    .zip(&b.values)
                    .all(|(x, y)| x.to_bits() == y.to_bits())
        }
        _ => event == &decoded,
    };
    assert!(
        same,
        "round trip changed the event\nbefore: {event:?}\nafter:  {decoded:?}"
    );
}
