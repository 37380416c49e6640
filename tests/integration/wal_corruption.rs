//! A named table of corruption cases, each run against the read-only reader and against
//! open-with-recovery, for a crashed writer's open segment and for a sealed one.

use std::path::{Path, PathBuf};

use runlog::wal::reader::scan_segment;
use runlog::wal::segment::HEADER_BYTES;
use runlog::wal::{Event, Log, ReadOptions, read_dir};
use runlog::{CorruptionKind, Error, ExperimentId, RunId};

use crate::util::{Store, small_options};

/// One record of the pristine fixture: where it starts and the events it decodes to.
#[derive(Clone, Debug)]
pub struct Record {
    pub offset: usize,
    pub end: usize,
    pub events: Vec<Event>,
}

pub struct Fixture {
    pub store: Store,
    pub segment: PathBuf,
    pub records: Vec<Record>,
}

/// A small segment holding every kind of record: events, a key definition, a stream, a
/// compressed and an uncompressed columns batch. `sealed`: closed cleanly; otherwise the
/// writer "crashes" after a flush, leaving an open segment and its lock file.
pub fn fixture(sealed: bool) -> Fixture {
    let store = Store::new();
    let mut writer = store.writer(8 * 1024);
    let run = RunId(0xfeed);
    writer
        .append(&Event::ExperimentCreated {
            experiment: ExperimentId(3),
            time_ms: 1_700_000_000_000,
            name: "mnist".into(),
        })
        .unwrap();
    writer
        .append(&Event::RunCreated {
            run,
            time_ms: 1_700_000_000_001,
            experiment: ExperimentId(3),
            parent: None,
            name: "r1".into(),
        })
        .unwrap();
    for step in 0..5 {
        writer
            .log_point(
                run,
                "loss",
                step,
                1_700_000_000_010 + step,
                1.0 / (step + 1) as f64,
            )
            .unwrap();
    }
    let steps: Vec<i64> = (0..60).collect();
    let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_001_000 + s).collect();
    let values: Vec<f64> = steps.iter().map(|s| f64::from(*s as f32 * 0.5)).collect();
    writer
        .log_columns(run, "acc", &steps, &timestamps, &values)
        .unwrap();
    writer
        .append(&Event::TagSet {
            run,
            time_ms: 5,
            key: "model".into(),
            value: "resnet".into(),
        })
        .unwrap();
    writer
        .log_columns(run, "lr", &[1, 2], &[10, 20], &[0.1, 0.2])
        .unwrap();
    for step in 5..8 {
        writer
            .log_point(
                run,
                "loss",
                step,
                1_700_000_000_010 + step,
                0.1 * step as f64,
            )
            .unwrap();
    }
    writer
        .append(&Event::ParamLogged {
            run,
            time_ms: 6,
            key: "lr".into(),
            value: "0.1".into(),
        })
        .unwrap();
    if sealed {
        writer.close().unwrap();
    } else {
        writer.flush().unwrap();
        writer.abandon();
    }
    let segment = crate::util::only_segment(&store.wal());
    let bytes = std::fs::read(&segment).unwrap();
    let mut records: Vec<Record> = Vec::new();
    let scan = scan_segment(&bytes, HEADER_BYTES, false, &mut |offset, event| {
        let offset = offset as usize;
        match records.last_mut() {
            Some(last) if last.offset == offset => last.events.push(event),
            _ => records.push(Record {
                offset,
                end: 0,
                events: vec![event],
            }),
        }
    })
    .unwrap();
    let ends: Vec<usize> = records
        .iter()
        .skip(1)
        .map(|r| r.offset)
        .chain(std::iter::once(scan.end_offset as usize))
        .collect();
    for (record, end) in records.iter_mut().zip(ends) {
        record.end = end;
    }
    assert!(records.len() >= 9, "fixture has {} records", records.len());
    Fixture {
        store,
        segment,
        records,
    }
}

impl Fixture {
    pub fn prefix(&self, records: usize) -> Vec<Event> {
        self.records[..records]
            .iter()
            .flat_map(|r| r.events.clone())
            .collect()
    }

    pub fn all(&self) -> Vec<Event> {
        self.prefix(self.records.len())
    }
}

/// Events a read-only reader returns, or its error.
pub fn read_events(wal: &Path, salvage: bool) -> runlog::Result<Vec<Event>> {
    let mut events = Vec::new();
    read_dir(
        wal,
        ReadOptions {
            salvage,
            writer_locked: false,
        },
        &mut |_, event| events.push(event),
    )?;
    Ok(events)
}

#[derive(Debug)]
enum Expect {
    /// The first N records, and nothing else.
    Prefix(usize),
    /// A hard error at this offset whose kind satisfies the check.
    Error {
        offset: usize,
        kind: fn(&CorruptionKind) -> bool,
    },
}

struct Case {
    name: &'static str,
    sealed: bool,
    corrupt: fn(&Fixture, &mut Vec<u8>),
    expect: fn(&Fixture) -> Expect,
}

fn middle(f: &Fixture) -> &Record {
    &f.records[f.records.len() / 2]
}

fn last(f: &Fixture) -> &Record {
    f.records.last().unwrap()
}

const CASES: &[Case] = &[
    Case {
        name: "torn_last_record",
        sealed: false,
        corrupt: |f, bytes| {
            let r = last(f);
            let half = r.offset + (r.end - r.offset) / 2;
            bytes[half..r.end].fill(0);
        },
        expect: |f| Expect::Prefix(f.records.len() - 1),
    },
    Case {
        name: "torn_last_record_of_sealed_segment_trailer_gone",
        sealed: true,
        corrupt: |f, bytes| {
            let r = last(f);
            bytes.truncate(r.offset + (r.end - r.offset) / 2);
        },
        expect: |f| Expect::Prefix(f.records.len() - 1),
    },
    Case {
        name: "truncated_header",
        sealed: true,
        corrupt: |_, bytes| bytes.truncate(HEADER_BYTES / 2),
        // Only segment of the chain, nothing after the cut: a creation cut short, holding nothing.
        expect: |_| Expect::Prefix(0),
    },
    Case {
        name: "truncated_header_with_data_after",
        sealed: false,
        corrupt: |_, bytes| bytes[HEADER_BYTES / 2..HEADER_BYTES].fill(0),
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| {
                matches!(
                    k,
                    CorruptionKind::ChecksumMismatch {
                        what: "segment header",
                        ..
                    }
                )
            },
        },
    },
    Case {
        name: "bad_crc_in_open_segment",
        sealed: false,
        corrupt: |f, bytes| bytes[middle(f).end - 1] ^= 0x40,
        expect: |f| Expect::Prefix(f.records.len() / 2),
    },
    Case {
        name: "bad_crc_in_sealed_segment",
        sealed: true,
        corrupt: |f, bytes| bytes[middle(f).end - 1] ^= 0x40,
        expect: |f| Expect::Error {
            offset: middle(f).offset,
            kind: |k| matches!(k, CorruptionKind::ChecksumMismatch { .. }),
        },
    },
    Case {
        // Zeros where a record should be, in a segment that ends with its seal: damage, not the
        // end of the log (else everything after the zeros would silently vanish).
        name: "zeroed_record_in_sealed_segment",
        sealed: true,
        corrupt: |f, bytes| {
            let r = middle(f);
            bytes[r.offset..r.end].fill(0);
        },
        expect: |f| Expect::Error {
            offset: middle(f).offset,
            kind: |_| true,
        },
    },
    Case {
        name: "zeroed_tail",
        sealed: false,
        corrupt: |f, bytes| {
            let from = f.records[3].offset;
            bytes[from..].fill(0);
        },
        expect: |_| Expect::Prefix(3),
    },
    Case {
        name: "garbage_after_valid_tail",
        sealed: false,
        corrupt: |f, bytes| {
            let from = last(f).end;
            for (i, byte) in bytes[from..from + 200].iter_mut().enumerate() {
                *byte = (i as u8).wrapping_mul(37).wrapping_add(11) | 1;
            }
        },
        expect: |f| Expect::Prefix(f.records.len()),
    },
    Case {
        name: "length_past_segment_end",
        sealed: false,
        corrupt: |f, bytes| {
            let at = last(f).offset;
            bytes[at..at + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        },
        expect: |f| Expect::Prefix(f.records.len() - 1),
    },
    Case {
        name: "length_past_segment_end_sealed",
        sealed: true,
        corrupt: |f, bytes| {
            let at = middle(f).offset;
            bytes[at..at + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        },
        expect: |f| Expect::Error {
            offset: middle(f).offset,
            kind: |k| matches!(k, CorruptionKind::LengthPastEnd { .. }),
        },
    },
    Case {
        name: "bad_magic",
        sealed: true,
        corrupt: |_, bytes| bytes[0] = b'X',
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| matches!(k, CorruptionKind::BadMagic { .. }),
        },
    },
    Case {
        name: "future_format_version",
        sealed: true,
        corrupt: |_, bytes| {
            bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
            let crc = crc32fast::hash(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        },
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| {
                matches!(
                    k,
                    CorruptionKind::UnsupportedVersion {
                        found: 3,
                        supported: 2
                    }
                )
            },
        },
    },
];

fn check(case: &Case, outcome: runlog::Result<Vec<Event>>, fixture: &Fixture, reader: &str) {
    match ((case.expect)(fixture), outcome) {
        (Expect::Prefix(n), Ok(events)) => {
            assert_eq!(
                events,
                fixture.prefix(n),
                "{}: {reader} returned the wrong prefix",
                case.name
            );
        }
        (Expect::Error { offset, kind }, Err(Error::Corrupt(corruption))) => {
            assert_eq!(
                corruption.path, fixture.segment,
                "{}: {reader} names the wrong file",
                case.name
            );
            assert_eq!(
                corruption.offset, offset as u64,
                "{}: {reader}: {corruption}",
                case.name
            );
            assert!(
                kind(&corruption.kind),
                "{}: {reader}: unexpected kind {:?}",
                case.name,
                corruption.kind
            );
        }
        (expect, outcome) => panic!(
            "{}: {reader}: expected {expect:?}, got {outcome:?}",
            case.name
        ),
    }
}

#[test]
fn corruption_table() {
    for case in CASES {
        let fixture = fixture(case.sealed);
        let mut bytes = std::fs::read(&fixture.segment).unwrap();
        (case.corrupt)(&fixture, &mut bytes);
        std::fs::write(&fixture.segment, &bytes).unwrap();

        check(
            case,
            read_events(&fixture.store.wal(), false),
            &fixture,
            "read-only reader",
        );
        // Recovery must not change what a reader sees, and must not fail where reading succeeds.
        let opened = Log::open(fixture.store.wal(), small_options());
        match (case.expect)(&fixture) {
            Expect::Prefix(_) => {
                let (log, _) = opened.unwrap_or_else(|e| panic!("{}: open failed: {e}", case.name));
                drop(log);
                check(
                    case,
                    read_events(&fixture.store.wal(), false),
                    &fixture,
                    "reader after recovery",
                );
            }
            Expect::Error { .. } => {
                if let Ok((log, _)) = opened {
                    drop(log);
                }
                check(
                    case,
                    read_events(&fixture.store.wal(), false),
                    &fixture,
                    "reader after open",
                );
            }
        }
    }
}

#[test]
fn salvage_mode_skips_a_corrupt_record_in_a_sealed_segment() {
    let fixture = fixture(true);
    let mut bytes = std::fs::read(&fixture.segment).unwrap();
    let victim = middle(&fixture).clone();
    bytes[victim.end - 1] ^= 0x40;
    std::fs::write(&fixture.segment, &bytes).unwrap();
    assert!(read_events(&fixture.store.wal(), false).is_err());
    let mut report = Vec::new();
    read_dir(
        &fixture.store.wal(),
        ReadOptions {
            salvage: true,
            writer_locked: false,
        },
        &mut |_, _| {},
    )
    .map(|summaries| report = summaries)
    .unwrap();
    assert_eq!(report[0].salvaged.len(), 1, "{report:?}");
    assert_eq!(report[0].salvaged[0].offset, victim.offset as u64);
    let salvaged = read_events(&fixture.store.wal(), true).unwrap();
    let expected: Vec<Event> = fixture
        .records
        .iter()
        .filter(|r| r.offset != victim.offset)
        .flat_map(|r| r.events.clone())
        .collect();
    assert_eq!(salvaged, expected);
}

#[test]
fn stream_commit_words_are_eight_byte_aligned() {
    for sealed in [false, true] {
        let fixture = fixture(sealed);
        let bytes = std::fs::read(&fixture.segment).unwrap();
        let mut streams = 0;
        for record in &fixture.records {
            if let Ok(runlog::wal::record::Frame::Stream { padding, .. }) =
                runlog::wal::record::decode_frame(&bytes[record.offset..])
            {
                streams += 1;
                let commit_at = record.offset + runlog::wal::record::FRAME_BYTES + padding;
                assert_eq!(
                    commit_at % 8,
                    0,
                    "stream at {} (padding {padding})",
                    record.offset
                );
            }
        }
        assert!(streams >= 2);
    }
}

#[test]
fn a_tail_reports_corruption_in_a_sealed_segment_instead_of_waiting() {
    let fixture = fixture(true);
    let mut bytes = std::fs::read(&fixture.segment).unwrap();
    bytes[middle(&fixture).end - 1] ^= 0x40;
    std::fs::write(&fixture.segment, &bytes).unwrap();
    let mut tail = runlog::wal::Tail::new(fixture.store.wal());
    let error = tail.poll(&mut |_, _| {}).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt(c) if c.offset == middle(&fixture).offset as u64),
        "{error}"
    );
}

/// Format version 1 (streams without padding or run switches) stays readable: a segment built
/// byte by byte the way version 1 wrote it.
#[test]
fn a_version_1_segment_still_reads() {
    use runlog::wal::record::{RecordType, encode_commit_word, encode_frame};
    use runlog::wal::segment::SegmentHeader;
    let header = SegmentHeader {
        format_version: 1,
        writer: runlog::WriterId(0xabc),
        sequence: runlog::SegmentSequence(0),
        created_unix_ms: 1_700_000_000_000,
        segment_bytes: 4096,
    };
    let mut bytes = header.encode().to_vec();
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    // MetricKeyDefined { run 7, key 0, "loss" }.
    let mut record = vec![0u8; 10];
    record.extend_from_slice(&7u128.to_le_bytes());
    record.extend_from_slice(&0u32.to_le_bytes());
    record.extend_from_slice(&4u32.to_le_bytes());
    record.extend_from_slice(b"loss");
    encode_frame(&mut record, RecordType::MetricKeyDefined, 0);
    bytes.extend_from_slice(&record);
    // A version-1 stream: no padding; set-run op, then two f32 points.
    let mut ops = vec![2u8];
    ops.extend_from_slice(&7u128.to_le_bytes());
    for (step, value) in [(1u8, 0.5f32), (1, 0.25)] {
        ops.extend_from_slice(&[0, step * 2, 2]);
        ops.extend_from_slice(&value.to_le_bytes());
    }
    let mut stream = vec![0u8; 10];
    encode_frame(&mut stream, RecordType::MetricStream, 0);
    stream.extend_from_slice(&encode_commit_word(3, crc32fast::hash(&ops)));
    stream.extend_from_slice(&ops);
    bytes.extend_from_slice(&stream);
    let mut seal = vec![0u8; 10];
    seal.extend_from_slice(&2u64.to_le_bytes());
    seal.push(1);
    encode_frame(&mut seal, RecordType::Seal, 0);
    bytes.extend_from_slice(&seal);

    let store = Store::new();
    std::fs::create_dir_all(store.wal()).unwrap();
    std::fs::write(store.wal().join("0000000000000abc-0000000000.wal"), &bytes).unwrap();
    let contents = crate::util::read(&store.wal()).unwrap();
    let points: Vec<(i64, i64, f64)> = contents
        .points_of(RunId(7))
        .iter()
        .map(|p| (p.step, p.timestamp_ms, f64::from_bits(p.value_bits)))
        .collect();
    assert_eq!(points, vec![(1, 1, 0.5), (2, 2, 0.25)]);
    let mut tail = runlog::wal::Tail::new(store.wal());
    assert_eq!(tail.poll(&mut |_, _| {}).unwrap(), 2);
}

#[test]
fn a_gap_in_a_writers_chain_is_reported() {
    let store = Store::new();
    let mut writer = store.writer(4096);
    for step in 0..2000 {
        writer.log_point(RunId(1), "loss", step, step, 0.5).unwrap();
    }
    writer.close().unwrap();
    let segments = crate::util::segments(&store.wal());
    assert!(segments.len() >= 3);
    std::fs::remove_file(&segments[1]).unwrap();
    let error = read_events(&store.wal(), false).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt(c) if matches!(c.kind, CorruptionKind::MissingSegment { sequence: 1, .. })),
        "{error}"
    );
}

/// Version 1 wrote a set-run op at every change of run, so a v1 stream can hold far more than
/// the 64 runs a v2 writer puts in one: the reader must accept them all (it once rejected the
/// 65th, which recovery would have taken for a torn tail and cut there).
#[test]
fn a_version_1_stream_with_many_run_changes_reads_whole() {
    use runlog::wal::metric::decode_stream;
    let mut ops = Vec::new();
    let changes = 70u8;
    for i in 0..changes {
        ops.push(2u8);
        ops.extend_from_slice(&(7u128 + u128::from(i % 2)).to_le_bytes());
        ops.extend_from_slice(&[0, 2, 0]);
        ops.extend_from_slice(&(f32::from(i)).to_le_bytes());
    }
    let decoded = decode_stream(&ops, u32::from(changes) * 2, crc32fast::hash(&ops)).unwrap();
    assert_eq!(decoded.len(), usize::from(changes));
    let batches = decoded.into_batches(0);
    let per_run = |run: u128| -> usize {
        batches
            .iter()
            .filter(|b| b.run == RunId(run))
            .map(|b| b.len())
            .sum()
    };
    assert_eq!((per_run(7), per_run(8)), (35, 35));
}
