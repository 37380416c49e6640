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
        // A closed writer's segment cannot end torn: it was sealed and trimmed before the lock
        // file went. The log ends where the cut record starts, and that is damage.
        name: "torn_last_record_of_closed_segment_trailer_gone",
        sealed: true,
        corrupt: |f, bytes| {
            let r = last(f);
            bytes.truncate(r.offset + (r.end - r.offset) / 2);
        },
        expect: |f| Expect::Error {
            offset: last(f).offset,
            kind: |k| matches!(k, CorruptionKind::MissingSeal(_)),
        },
    },
    Case {
        name: "torn_last_record_of_dead_segment_trailer_gone",
        sealed: false,
        corrupt: |f, bytes| {
            let r = last(f);
            bytes.truncate(r.offset + (r.end - r.offset) / 2);
        },
        // Shorter than its preallocated length: cut, not torn by a crash.
        expect: |f| Expect::Error {
            offset: last(f).offset,
            kind: |k| matches!(k, CorruptionKind::MissingSeal(_)),
        },
    },
    Case {
        name: "truncated_header",
        sealed: true,
        corrupt: |_, bytes| bytes.truncate(HEADER_BYTES / 2),
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| matches!(k, CorruptionKind::TruncatedHeader { .. }),
        },
    },
    Case {
        // What a crash right after creating a dead writer's segment leaves.
        name: "emptied_open_segment",
        sealed: false,
        corrupt: |_, bytes| bytes.clear(),
        expect: |_| Expect::Prefix(0),
    },
    Case {
        name: "emptied_closed_segment",
        sealed: true,
        corrupt: |_, bytes| bytes.clear(),
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| matches!(k, CorruptionKind::TruncatedHeader { found_bytes: 0 }),
        },
    },
    Case {
        name: "byte_before_final_seal",
        sealed: true,
        corrupt: |f, bytes| bytes[last(f).end - 1] ^= 0x01,
        expect: |f| Expect::Error {
            offset: last(f).offset,
            kind: |_| true,
        },
    },
    Case {
        name: "another_writers_id_in_header",
        sealed: true,
        corrupt: |_, bytes| {
            bytes[16] ^= 0x01;
            let crc = crc32fast::hash(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        },
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| matches!(k, CorruptionKind::HeaderMismatch(_)),
        },
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
            bytes[8..10].copy_from_slice(&7u16.to_le_bytes());
            let crc = crc32fast::hash(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        },
        expect: |_| Expect::Error {
            offset: 0,
            kind: |k| {
                matches!(
                    k,
                    CorruptionKind::UnsupportedVersion {
                        found: 7,
                        supported: 6
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

/// How the writer of a damaged segment ended, which decides what its segments may look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// Closed cleanly: no lock file, every segment sealed and trimmed.
    Closed,
    /// Killed: its lock file stays, its last segment is open (preallocated, unsealed).
    Dead,
    /// Still running in this process, holding its lock.
    Live,
    /// Compaction's metadata chain, listed by the manifest (closed, like every chain).
    MetadataChain,
}

/// Which of the writer's segments is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    First,
    Last,
}

/// What the store must make of one damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Damage: `verify` names it as a problem, and opening (read-only and for writing) fails
    /// naming the same file and offset.
    Damage,
    /// What a crash leaves: the data before it survive, opening works, `verify` has no problem.
    Tail,
}

/// One damage to apply: its label, the damaged bytes of the segment, and the verdict.
type Damage = (String, Vec<u8>, Verdict);

/// One named case: a writer's life, the segment damaged, and the damages to apply to it one at a
/// time (each with its label and verdict).
struct DamageCase {
    name: &'static str,
    life: Life,
    which: Which,
    damages: fn(&SegmentFacts) -> Vec<Damage>,
}

/// The pristine segment and where its records start.
struct SegmentFacts {
    bytes: Vec<u8>,
    record_offsets: Vec<usize>,
    /// Where the valid records end (the seal's offset, if sealed).
    records_end: usize,
    sealed: bool,
    /// Whether the segment may end without a seal: the last of a dead or live writer.
    may_end_open: bool,
}

const POINTS: i64 = 1500;

/// A store with one run of `POINTS` points in 4 KiB segments, its writer ended as `life`
/// says. Returns the folder, the run, and the live store handle (for `Life::Live`).
fn damage_store(life: Life) -> (tempfile::TempDir, RunId, Option<runlog::Store>) {
    let dir = tempfile::tempdir().unwrap();
    let options = runlog::StoreOptions {
        segment_bytes: 4096,
        durability: runlog::wal::Durability::Buffered,
        lanes: 1,
        ..runlog::StoreOptions::default()
    };
    let store = runlog::Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store.start_run(experiment, Default::default()).unwrap();
    let id = run.id();
    for step in 0..POINTS {
        run.log_metric("loss", 1.0 / (step + 1) as f64, step)
            .unwrap();
    }
    run.finish().unwrap();
    match life {
        Life::Closed => drop(store),
        Life::MetadataChain => {
            store.compact().unwrap();
            drop(store);
        }
        Life::Dead => {
            store.flush().unwrap();
            store.abandon();
        }
        Life::Live => {
            store.flush().unwrap();
            return (dir, id, Some(store));
        }
    }
    (dir, id, None)
}

/// The segments of the writer `life` is about, in order.
fn writer_segments(wal: &Path, life: Life) -> Vec<PathBuf> {
    let chain = |path: &PathBuf| {
        let name = path.file_name().unwrap().to_str().unwrap();
        u64::from_str_radix(&name[..16], 16).unwrap() < 1 << 62
    };
    let segments: Vec<PathBuf> = crate::util::segments(wal)
        .into_iter()
        .filter(|path| chain(path) == (life == Life::MetadataChain))
        .collect();
    assert!(!segments.is_empty(), "{life:?}: no segment");
    segments
}

fn facts(path: &Path, may_end_open: bool) -> SegmentFacts {
    let bytes = std::fs::read(path).unwrap();
    let mut record_offsets = Vec::new();
    let scan = scan_segment(&bytes, HEADER_BYTES, false, &mut |offset, _| {
        if record_offsets.last() != Some(&(offset as usize)) {
            record_offsets.push(offset as usize);
        }
    })
    .unwrap();
    SegmentFacts {
        records_end: scan.end_offset as usize,
        sealed: matches!(scan.end, runlog::wal::reader::SegmentEnd::Sealed(_)),
        bytes,
        record_offsets,
        may_end_open,
    }
}

/// Cuts at every offset where a cut means something different: inside the header, at and
/// just past its end, at each record's start and middle, at the seal, and one byte short.
/// Only an open segment may lose its whole body (a creation cut short) or everything after its
/// header (the header synced, its length not yet): those are crash leftovers, all else damage.
fn cuts(facts: &SegmentFacts) -> Vec<Damage> {
    let mut offsets = vec![0, 1, HEADER_BYTES / 2, HEADER_BYTES - 1, HEADER_BYTES];
    for pair in facts.record_offsets.windows(2) {
        offsets.extend([pair[0] + 1, (pair[0] + pair[1]) / 2, pair[1]]);
    }
    offsets.extend([facts.records_end, facts.records_end + 1]);
    offsets.push(facts.bytes.len() - 1);
    offsets.sort_unstable();
    offsets.dedup();
    offsets
        .into_iter()
        .filter(|cut| *cut < facts.bytes.len())
        .map(|cut| {
            let crash_leftover = facts.may_end_open && (cut == 0 || cut == HEADER_BYTES);
            let verdict = if crash_leftover {
                Verdict::Tail
            } else {
                Verdict::Damage
            };
            (
                format!("cut at {cut}"),
                facts.bytes[..cut].to_vec(),
                verdict,
            )
        })
        .collect()
}

/// Damage that keeps the length: another writer's id in the header (CRC fixed up), a header
/// byte flipped, the byte just before the seal flipped, bytes appended after the seal.
fn rewrites(facts: &SegmentFacts) -> Vec<Damage> {
    let mut out = Vec::new();
    let mut other_writer = facts.bytes.clone();
    other_writer[16] ^= 0x01;
    let crc = crc32fast::hash(&other_writer[..60]);
    other_writer[60..64].copy_from_slice(&crc.to_le_bytes());
    out.push((
        "another writer's id in the header".to_string(),
        other_writer,
        Verdict::Damage,
    ));
    let mut header_flip = facts.bytes.clone();
    header_flip[20] ^= 0x10;
    out.push((
        "a header byte flipped".to_string(),
        header_flip,
        Verdict::Damage,
    ));
    if facts.sealed {
        let mut before_seal = facts.bytes.clone();
        before_seal[facts.records_end - 1] ^= 0x01;
        out.push((
            "the byte before the seal flipped".to_string(),
            before_seal,
            Verdict::Damage,
        ));
        let mut appended = facts.bytes.clone();
        appended.extend_from_slice(&[0u8; 100]);
        let verdict = if facts.may_end_open {
            Verdict::Tail
        } else {
            Verdict::Damage
        };
        out.push(("bytes after the seal".to_string(), appended, verdict));
    }
    out
}

fn cuts_and_rewrites(facts: &SegmentFacts) -> Vec<Damage> {
    let mut out = cuts(facts);
    out.extend(rewrites(facts));
    out
}

const DAMAGE_CASES: &[DamageCase] = &[
    DamageCase {
        name: "closed_writer_first_segment",
        life: Life::Closed,
        which: Which::First,
        damages: cuts_and_rewrites,
    },
    DamageCase {
        name: "closed_writer_last_segment",
        life: Life::Closed,
        which: Which::Last,
        damages: cuts_and_rewrites,
    },
    DamageCase {
        name: "dead_writer_sealed_segment",
        life: Life::Dead,
        which: Which::First,
        damages: cuts_and_rewrites,
    },
    DamageCase {
        name: "dead_writer_torn_last_segment",
        life: Life::Dead,
        which: Which::Last,
        damages: cuts_and_rewrites,
    },
    DamageCase {
        name: "metadata_chain",
        life: Life::MetadataChain,
        which: Which::Last,
        damages: cuts_and_rewrites,
    },
];

/// What the store made of the damage: `verify`'s report, and the run's points (or the error)
/// through a read-only open and then through an open for writing (which recovers first).
struct Seen {
    report: runlog::verify::VerifyReport,
    read_only: runlog::Result<usize>,
    writable: runlog::Result<usize>,
}

fn points_through(root: &Path, run: RunId, read_only: bool) -> runlog::Result<usize> {
    let options = runlog::StoreOptions {
        read_only,
        durability: runlog::wal::Durability::Buffered,
        lanes: 1,
        ..runlog::StoreOptions::default()
    };
    let store = runlog::Store::open_with(root, options)?;
    Ok(store.history(run, "loss", ..)?.len())
}

fn look(root: &Path, run: RunId) -> Seen {
    let read_only = points_through(root, run, true);
    let report = runlog::verify::verify(root).unwrap();
    let writable = points_through(root, run, false);
    Seen {
        report,
        read_only,
        writable,
    }
}

/// `verify` and both opens agree: a problem in `verify` is an open error naming the same file
/// and offset, and no problem means every open works.
fn check_agreement(context: &str, segment: &Path, verdict: Verdict, seen: &Seen) {
    match verdict {
        Verdict::Damage => {
            let problem =
                seen.report.problems.first().unwrap_or_else(|| {
                    panic!("{context}: verify found no problem: {:?}", seen.report)
                });
            assert_eq!(problem.path, segment, "{context}: {problem}");
            for (how, outcome) in [("read-only", &seen.read_only), ("writable", &seen.writable)] {
                match outcome {
                    Err(Error::Corrupt(c)) => {
                        assert_eq!(
                            (c.path.as_path(), Some(c.offset)),
                            (problem.path.as_path(), problem.offset),
                            "{context}: {how} open reports {c}, verify {problem}"
                        );
                    }
                    other => panic!("{context}: {how} open gave {other:?}; verify: {problem}"),
                }
            }
        }
        Verdict::Tail => {
            assert!(
                seen.report.problems.is_empty(),
                "{context}: {:?}",
                seen.report.problems
            );
            for (how, outcome) in [("read-only", &seen.read_only), ("writable", &seen.writable)] {
                match outcome {
                    Ok(points) => assert!(*points <= POINTS as usize, "{context}: {how}"),
                    Err(error) => panic!("{context}: {how} open failed: {error}"),
                }
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Truncation, emptying and in-place damage of the segments of closed, dead and metadata-chain
/// writers: every outcome either keeps the data or is reported alike by `verify` and by both
/// opens, naming the file and offset.
#[test]
fn damage_table_verify_and_open_agree() {
    for case in DAMAGE_CASES {
        let (pristine, run, _) = damage_store(case.life);
        let segments = writer_segments(&pristine.path().join("wal"), case.life);
        assert!(
            case.life == Life::MetadataChain || segments.len() >= 2,
            "{}: {} segments",
            case.name,
            segments.len()
        );
        let index = match case.which {
            Which::First => 0,
            Which::Last => segments.len() - 1,
        };
        let last = index + 1 == segments.len();
        let may_end_open = last && case.life == Life::Dead;
        let facts = facts(&segments[index], may_end_open);
        // Looked at in a copy: opening for writing recovers a dead writer.
        let untouched_copy = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), untouched_copy.path());
        let untouched = look(untouched_copy.path(), run);
        assert!(untouched.report.problems.is_empty(), "{}", case.name);
        assert_eq!(
            untouched.read_only.as_ref().ok(),
            Some(&(POINTS as usize)),
            "{}",
            case.name
        );
        for (label, bytes, verdict) in (case.damages)(&facts) {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), copy.path());
            let segment = copy
                .path()
                .join("wal")
                .join(segments[index].file_name().unwrap());
            std::fs::write(&segment, &bytes).unwrap();
            let seen = look(copy.path(), run);
            check_agreement(&format!("{}: {label}", case.name), &segment, verdict, &seen);
        }
    }
}

/// A live writer's current segment legitimately ends in never-written space, so only a cut (a
/// length its writer never gave it) is damage; its sealed segments are checked like any other.
#[test]
fn damage_to_a_live_writers_segments_is_reported_alike() {
    let (probe, _, live) = damage_store(Life::Live);
    let segments = writer_segments(&probe.path().join("wal"), Life::Live);
    let last_len = std::fs::metadata(segments.last().unwrap()).unwrap().len() as usize;
    drop(live);
    let damages = [
        (Which::Last, HEADER_BYTES + 10, Verdict::Damage),
        (Which::Last, last_len - 1, Verdict::Damage),
        (Which::Last, 0, Verdict::Tail),
        (Which::First, 100, Verdict::Damage),
    ];
    for (which, cut, verdict) in damages {
        let (dir, run, live) = damage_store(Life::Live);
        let live = live.unwrap();
        let segments = writer_segments(&dir.path().join("wal"), Life::Live);
        let segment = match which {
            Which::First => segments[0].clone(),
            Which::Last => segments.last().unwrap().clone(),
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(cut as u64).unwrap();
        drop(file);
        let seen = look(dir.path(), run);
        // Its map now runs past the file's end: let it go without touching it.
        live.abandon();
        drop(live);
        check_agreement(
            &format!("live {which:?} cut at {cut}"),
            &segment,
            verdict,
            &seen,
        );
    }
}

/// A metadata chain that the newest manifest lists holds the experiments and runs of the
/// segments it replaced: with its files gone, `verify` and every open report it, instead of
/// the experiment vanishing.
#[test]
fn a_listed_metadata_chain_whose_files_are_gone_is_damage() {
    let (dir, run, _) = damage_store(Life::MetadataChain);
    let chain = writer_segments(&dir.path().join("wal"), Life::MetadataChain);
    for segment in &chain {
        std::fs::remove_file(segment).unwrap();
    }
    let seen = look(dir.path(), run);
    check_agreement("listed chain removed", &chain[0], Verdict::Damage, &seen);
}
