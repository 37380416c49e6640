//! `Store::history` against an in-memory model of what several handles logged: every logging
//! path (single points and streams, `log_metrics`, the keyed `log_batch`, column batches small
//! and large, lz4-compressed or not, f32-narrow or not), special values bit for bit, repeated
//! and negative steps, compactions in the middle (so a series is part compacted, part log tail),
//! and reads from a handle that never wrote.
//!
//! The model keeps each series' points per writing handle in logging order. A history is right
//! when it is sorted by step, holds exactly the model's points (matched bit for bit), and within
//! one step keeps each handle's logging order; how points of different handles interleave
//! within a step is not specified, so it is not checked. Every point is made unique (an exact
//! timestamp from a counter, or, where the store stamps the time itself, a unique value), so
//! matching a returned point to the model is never ambiguous.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;

use runlog::{Durability, MetricPoint, RunId, RunOptions, Store, StoreOptions};

use crate::util::Rng;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 32 * 1024,
        ..StoreOptions::default()
    }
}

/// A point's timestamp as the model knows it: exact, or stamped by the store within a window.
#[derive(Clone, Copy, Debug)]
enum Stamp {
    Exact(i64),
    Within(i64, i64),
}

#[derive(Clone, Copy, Debug)]
struct Logged {
    handle: usize,
    step: i64,
    stamp: Stamp,
    bits: u64,
}

impl Logged {
    fn matches(&self, step: i64, timestamp_ms: i64, bits: u64) -> bool {
        let stamped = match self.stamp {
            Stamp::Exact(t) => t == timestamp_ms,
            Stamp::Within(lo, hi) => (lo..=hi).contains(&timestamp_ms),
        };
        self.step == step && self.bits == bits && stamped
    }
}

/// (run, key) -> points in logging order (across handles).
type Model = BTreeMap<(RunId, String), Vec<Logged>>;

const KEYS: [&str; 4] = ["loss", "acc", "val/loss", "lr"];
const WRITERS: usize = 3;

/// Values no arithmetic produces: NaNs with payloads (quiet, signalling, negative), signed zero,
/// infinities, a subnormal, extremes.
const SPECIAL_BITS: [u64; 12] = [
    0x7ff8_0000_0000_0000,
    0x7ff8_0000_dead_beef,
    0xfff8_0000_0000_0001,
    0x7ff0_0000_0000_0001,
    0xfff4_0000_1234_5678,
    0x8000_0000_0000_0000,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x0000_0000_0000_0001,
    0x7fef_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x0000_0000_0000_0000,
];

/// A value whose bits are unlike any stamped-by-the-store point's (those are `unique`).
fn value(rng: &mut Rng, step: i64) -> f64 {
    match rng.below(10) {
        0..=2 => f64::from_bits(SPECIAL_BITS[rng.below(SPECIAL_BITS.len() as u64) as usize]),
        3..=4 => f64::from_bits(rng.next_u64()),
        _ => rng.loss(step),
    }
}

/// A value no other point has: the store stamps these points' time itself, so the value is
/// what identifies them.
fn unique(counter: &mut i64) -> f64 {
    *counter += 1;
    -1.0e15 - *counter as f64
}

fn steps(rng: &mut Rng, count: usize) -> Vec<i64> {
    let start = rng.below(200) as i64 - 100;
    match rng.below(5) {
        0 => (0..count as i64).map(|i| start + i).collect(),
        1 => (0..count as i64).map(|i| start - i).collect(),
        2 => vec![start; count],
        3 => (0..count).map(|_| rng.below(60) as i64 - 30).collect(),
        _ => (0..count as i64).map(|i| start + i / 3).collect(),
    }
}

fn batch_values(rng: &mut Rng, steps: &[i64]) -> Vec<f64> {
    match rng.below(4) {
        // f32-exact and regular: narrow columns that lz4 shrinks.
        0 => steps.iter().map(|s| *s as f64 * 0.25).collect(),
        // Random bits: wide, incompressible (NaN payloads included by chance).
        1 => steps
            .iter()
            .map(|_| f64::from_bits(rng.next_u64()))
            .collect(),
        // Regular but wide (not f32-exact): compressible.
        2 => steps.iter().map(|s| *s as f64 / 3.0).collect(),
        _ => steps.iter().map(|s| value(rng, *s)).collect(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The store's clock may be calibrated apart from the system clock: a generous window.
const SLACK_MS: i64 = 60_000;

fn contains(range: &(Bound<i64>, Bound<i64>), step: i64) -> bool {
    std::ops::RangeBounds::contains(range, &step)
}

/// Checks one history against the model's points of its series in `range`.
fn check_series(
    got: &runlog::query::History,
    logged: &[Logged],
    range: &(Bound<i64>, Bound<i64>),
    context: &str,
) {
    assert_eq!(got.steps.len(), got.timestamps_ms.len(), "{context}");
    assert_eq!(got.steps.len(), got.values.len(), "{context}");
    assert!(
        got.steps.windows(2).all(|w| w[0] <= w[1]),
        "{context}: not sorted by step"
    );
    // step -> handle -> points in logging order.
    let mut queues: BTreeMap<i64, Vec<VecDeque<Logged>>> = BTreeMap::new();
    let mut want = 0;
    for point in logged.iter().filter(|p| contains(range, p.step)) {
        queues
            .entry(point.step)
            .or_insert_with(|| vec![VecDeque::new(); WRITERS])[point.handle]
            .push_back(*point);
        want += 1;
    }
    for i in 0..got.steps.len() {
        let (step, timestamp_ms, bits) =
            (got.steps[i], got.timestamps_ms[i], got.values[i].to_bits());
        let Some(at_step) = queues.get_mut(&step) else {
            panic!(
                "{context}: point {i} (step {step}, ts {timestamp_ms}, bits {bits:#x}) was never logged in range"
            );
        };
        match at_step.iter().position(|q| {
            q.front()
                .is_some_and(|p| p.matches(step, timestamp_ms, bits))
        }) {
            Some(handle) => {
                at_step[handle].pop_front();
            }
            None => {
                let later = at_step
                    .iter()
                    .flatten()
                    .find(|p| p.matches(step, timestamp_ms, bits));
                panic!(
                    "{context}: point {i} (step {step}, ts {timestamp_ms}, bits {bits:#x}) {}",
                    match later {
                        Some(p) => format!(
                            "comes before points handle {} logged before it at that step",
                            p.handle
                        ),
                        None => "was never logged, or is returned twice".to_string(),
                    }
                );
            }
        }
    }
    let missing: Vec<&Logged> = queues.values().flatten().flatten().collect();
    assert!(
        missing.is_empty(),
        "{context}: {} of {want} points missing, first {:?}",
        missing.len(),
        missing.first()
    );
}

/// The step ranges checked for a series: everything, slices around its data, an empty range,
/// ranges wholly below and above it, and the extremes.
fn ranges(rng: &mut Rng, logged: &[Logged]) -> Vec<(Bound<i64>, Bound<i64>)> {
    use Bound::{Excluded, Included, Unbounded};
    let lo = logged.iter().map(|p| p.step).min().unwrap_or(0);
    let hi = logged.iter().map(|p| p.step).max().unwrap_or(0);
    let a = lo + rng.below((hi - lo + 1) as u64) as i64;
    let b = a + rng.below((hi - a + 1) as u64) as i64;
    vec![
        (Unbounded, Unbounded),
        (Included(a), Excluded(b)),
        (Included(a), Included(b)),
        (Excluded(a), Unbounded),
        (Unbounded, Included(a)),
        (Included(a), Excluded(a)),
        (Included(i64::MIN), Excluded(lo)),
        (Excluded(hi), Included(i64::MAX)),
        (Included(hi + 1), Included(hi + 1_000)),
        (Included(i64::MIN), Included(i64::MAX)),
        (Included(lo), Included(lo)),
    ]
}

/// How much of the store one check reads.
#[derive(Clone, Copy, PartialEq)]
enum Depth {
    /// One random series of each run, a few ranges.
    Sample,
    /// Every series, a few ranges.
    Series,
    /// Every series, every range.
    Full,
}

fn check(store: &Store, model: &Model, rng: &mut Rng, runs: &[RunId], depth: Depth, context: &str) {
    for run in runs {
        let keys: Vec<&str> = if depth != Depth::Sample {
            KEYS.to_vec()
        } else {
            vec![KEYS[rng.below(KEYS.len() as u64) as usize]]
        };
        for key in keys {
            let logged = model
                .get(&(*run, key.to_string()))
                .map_or(&[][..], Vec::as_slice);
            let mut ranges = ranges(rng, logged);
            if depth != Depth::Full {
                let first = rng.below(ranges.len() as u64 - 2) as usize;
                ranges.drain(..first);
                ranges.truncate(3);
            }
            for range in ranges {
                let got = store
                    .history(*run, key, range)
                    .unwrap_or_else(|e| panic!("{context}: history({run}, {key}, {range:?}): {e}"));
                check_series(
                    &got,
                    logged,
                    &range,
                    &format!("{context}: history({run}, {key}, {range:?})"),
                );
            }
        }
        // Several runs in one read answer as each alone does.
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let both = store
            .history_of_runs(&[*run, runs[0]], key, ..)
            .unwrap_or_else(|e| panic!("{context}: history_of_runs: {e}"));
        for (history, of) in both.iter().zip([*run, runs[0]]) {
            let logged = model
                .get(&(of, key.to_string()))
                .map_or(&[][..], Vec::as_slice);
            check_series(
                history,
                logged,
                &(Bound::Unbounded, Bound::Unbounded),
                &format!("{context}: history_of_runs({of}, {key})"),
            );
        }
    }
}

/// One randomized scenario: three writing handles and one that only reads, on one store.
/// `tag` names the scenario in failures, with what replays it.
fn scenario(seed: u64, tag: &str, dir: &Path) {
    let mut rng = Rng::new(seed);
    let handles: Vec<Store> = (0..=WRITERS)
        .map(|_| Store::open_with(dir, options()).unwrap())
        .collect();
    let reader = WRITERS;
    let experiments = [
        handles[0].get_or_create_experiment("a").unwrap().id,
        handles[1].get_or_create_experiment("b").unwrap().id,
    ];
    let runs: Vec<RunId> = (0..4)
        .map(|i| {
            let run = handles[i % WRITERS]
                .start_run(experiments[i % 2], RunOptions::default())
                .unwrap();
            let id = run.id();
            run.detach();
            id
        })
        .collect();
    let resumed: Vec<Vec<runlog::Run>> = handles[..WRITERS]
        .iter()
        .map(|h| runs.iter().map(|r| h.resume_run(*r).unwrap()).collect())
        .collect();
    let mut model = Model::new();
    let mut clock = 1_000_000i64;
    let mut counter = 0i64;
    let ops = 200 + rng.below(100);
    for op in 0..ops {
        let handle = rng.below(WRITERS as u64) as usize;
        let r = rng.below(runs.len() as u64) as usize;
        let run = &resumed[handle][r];
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let mut push = |key: &str, step: i64, stamp: Stamp, value: f64| {
            model
                .entry((runs[r], key.to_string()))
                .or_default()
                .push(Logged {
                    handle,
                    step,
                    stamp,
                    bits: value.to_bits(),
                });
        };
        match rng.below(100) {
            // One point with its timestamp: a stream.
            0..=34 => {
                let step = rng.below(40) as i64 - 10;
                let v = value(&mut rng, step);
                clock += 1;
                run.log_metric_at(key, v, step, clock).unwrap();
                push(key, step, Stamp::Exact(clock), v);
            }
            // One point stamped now, through the run or a metric handle.
            35..=42 => {
                let step = rng.below(40) as i64 - 10;
                let v = unique(&mut counter);
                let before = now_ms();
                if rng.below(2) == 0 {
                    run.log_metric(key, v, step).unwrap();
                } else {
                    run.metric(key).unwrap().log(v, step).unwrap();
                }
                push(
                    key,
                    step,
                    Stamp::Within(before - SLACK_MS, now_ms() + SLACK_MS),
                    v,
                );
            }
            // Several keys at one step.
            43..=50 => {
                let step = rng.below(40) as i64 - 20;
                let count = 1 + rng.below(KEYS.len() as u64) as usize;
                let points: Vec<(&str, f64)> = KEYS[..count]
                    .iter()
                    .map(|k| (*k, unique(&mut counter)))
                    .collect();
                let before = now_ms();
                run.log_metrics(step, &points).unwrap();
                let stamp = Stamp::Within(before - SLACK_MS, now_ms() + SLACK_MS);
                for (k, v) in points {
                    push(k, step, stamp, v);
                }
            }
            // The keyed (MLflow) batch: mixed keys of one run, streamed.
            51..=60 => {
                let count = 1 + rng.below(30) as usize;
                let points: Vec<MetricPoint<'_>> = (0..count)
                    .map(|_| {
                        let step = rng.below(50) as i64 - 25;
                        clock += 1;
                        MetricPoint {
                            key: KEYS[rng.below(KEYS.len() as u64) as usize],
                            value: value(&mut rng, step),
                            step,
                            timestamp_ms: clock,
                        }
                    })
                    .collect();
                handles[handle]
                    .log_batch(runs[r], &points, &[], &[])
                    .unwrap();
                for p in &points {
                    push(p.key, p.step, Stamp::Exact(p.timestamp_ms), p.value);
                }
            }
            // A small column batch.
            61..=78 => {
                let count = rng.below(20) as usize;
                let steps = steps(&mut rng, count);
                let values = batch_values(&mut rng, &steps);
                let timestamps: Vec<i64> = (0..count as i64).map(|i| clock + 1 + i).collect();
                clock += count as i64;
                run.log_batch(key, &steps, Some(&timestamps), &values)
                    .unwrap();
                for ((s, t), v) in steps.iter().zip(&timestamps).zip(&values) {
                    push(key, *s, Stamp::Exact(*t), *v);
                }
            }
            // A large column batch: compressed when its values let it be, split into records.
            79..=93 => {
                let count = 200 + rng.below(1_500) as usize;
                let steps = steps(&mut rng, count);
                let values = batch_values(&mut rng, &steps);
                let timestamps: Vec<i64> = (0..count as i64).map(|i| clock + 1 + i).collect();
                clock += count as i64;
                run.log_batch(key, &steps, Some(&timestamps), &values)
                    .unwrap();
                for ((s, t), v) in steps.iter().zip(&timestamps).zip(&values) {
                    push(key, *s, Stamp::Exact(*t), *v);
                }
            }
            94..=96 => {
                let by = rng.below(handles.len() as u64) as usize;
                handles[by].compact().unwrap();
            }
            _ => {
                // Mostly the handle that never wrote.
                let by = if rng.below(2) == 0 {
                    reader
                } else {
                    rng.below(handles.len() as u64) as usize
                };
                check(
                    &handles[by],
                    &model,
                    &mut rng,
                    &runs,
                    Depth::Sample,
                    &format!("{tag} op {op} handle {by}"),
                );
            }
        }
    }
    check(
        &handles[reader],
        &model,
        &mut rng,
        &runs,
        Depth::Series,
        &format!("{tag} end, reader"),
    );
    handles[rng.below(WRITERS as u64) as usize]
        .compact()
        .unwrap();
    check(
        &handles[reader],
        &model,
        &mut rng,
        &runs,
        Depth::Series,
        &format!("{tag} end, compacted"),
    );
    drop(resumed);
    drop(handles);
    let reopened = Store::open_with(dir, options()).unwrap();
    check(
        &reopened,
        &model,
        &mut rng,
        &runs,
        Depth::Full,
        &format!("{tag} reopened"),
    );
}

#[test]
fn history_log_model_matches_what_several_handles_logged() {
    let mut seeds = Rng::from_env("history_log_model_matches_what_several_handles_logged");
    for case in 0..3 {
        let seed = seeds.next_u64();
        let dir = tempfile::tempdir().unwrap();
        scenario(
            seed,
            &format!("case {case} (replay: the RUNLOG_SEED printed first)"),
            dir.path(),
        );
    }
}

/// How a columns record of the wanted run is garbled, its frame CRC then made valid again.
#[derive(Clone, Copy, Debug)]
enum Garble {
    /// Uncompressed: the point count one more than the columns hold (the payload runs out).
    CountOver,
    /// Uncompressed: the point count one less (bytes are left over after the last column).
    CountUnder,
    /// Compressed: the declared decompressed size one more than the lz4 block gives.
    SizeOver,
    /// Compressed: the declared decompressed size one less.
    SizeUnder,
}

/// Offset and length of the record (frame included) of every columns record of `run` in the
/// segment `bytes`, with its flags.
fn columns_records(bytes: &[u8], run: RunId) -> Vec<(usize, usize, u8)> {
    use runlog::wal::record::{FLAG_COMPRESSED, Frame, RecordType, decode_frame};
    let mut found = Vec::new();
    let mut at = runlog::wal::segment::HEADER_BYTES;
    loop {
        let frame = decode_frame(&bytes[at..]).unwrap();
        let (record_type, flags, payload) = match frame {
            Frame::End => return found,
            Frame::Record {
                record_type,
                flags,
                payload,
            } => (record_type, flags, payload),
            Frame::Stream { .. } => panic!("no stream expected in this segment"),
        };
        if record_type == RecordType::MetricColumns {
            let plain = if flags & FLAG_COMPRESSED != 0 {
                runlog::wal::metric::decompress(payload).unwrap()
            } else {
                payload.to_vec()
            };
            let of = u128::from_le_bytes(plain[..16].try_into().unwrap());
            if RunId(of) == run {
                found.push((at, frame.frame_bytes(), flags));
            }
        }
        if record_type == RecordType::Seal {
            return found;
        }
        at += frame.frame_bytes();
    }
}

/// A record whose CRC is right but whose payload does not decode (what a writer bug, or damage
/// that happened before the CRC was computed, leaves) is corruption for `history`, never a
/// shorter or shifted series.
#[test]
fn a_crc_valid_columns_record_that_does_not_decode_is_an_error() {
    for garble in [
        Garble::CountOver,
        Garble::CountUnder,
        Garble::SizeOver,
        Garble::SizeUnder,
    ] {
        let compressed = matches!(garble, Garble::SizeOver | Garble::SizeUnder);
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            lanes: 1,
            ..options()
        };
        let store = Store::open_with(dir.path(), options.clone()).unwrap();
        let experiment = store.get_or_create_experiment("e").unwrap().id;
        let (wanted, other) = (
            store.start_run(experiment, RunOptions::default()).unwrap(),
            store.start_run(experiment, RunOptions::default()).unwrap(),
        );
        // 20 random wide values stay under the compression threshold; 400 regular ones are
        // compressed.
        let count: i64 = if compressed { 400 } else { 20 };
        let steps: Vec<i64> = (0..count).collect();
        let values: Vec<f64> = if compressed {
            steps.iter().map(|s| *s as f64 * 0.5).collect()
        } else {
            let mut rng = Rng::new(7);
            steps
                .iter()
                .map(|_| f64::from_bits(rng.next_u64() >> 2))
                .collect()
        };
        for run in [&other, &wanted, &other] {
            run.log_batch("loss", &steps, Some(&steps), &values)
                .unwrap();
        }
        let id = wanted.id();
        wanted.finish().unwrap();
        other.finish().unwrap();
        drop(store);

        let reader = Store::open_with(
            dir.path(),
            StoreOptions {
                read_only: true,
                ..options
            },
        )
        .unwrap();
        assert_eq!(
            reader.history(id, "loss", ..).unwrap().len(),
            count as usize
        );
        let mut garbled = 0;
        for segment in crate::util::segments(&dir.path().join("wal")) {
            let mut bytes = std::fs::read(&segment).unwrap();
            for (at, len, flags) in columns_records(&bytes, id) {
                assert_eq!(flags != 0, compressed, "{garble:?}: flags {flags}");
                let payload = at + runlog::wal::record::FRAME_BYTES;
                // The point count follows the run id; a compressed payload opens with its size.
                let field = if compressed { payload } else { payload + 16 };
                let word = u32::from_le_bytes(bytes[field..field + 4].try_into().unwrap());
                let word = match garble {
                    Garble::CountOver | Garble::SizeOver => word + 1,
                    Garble::CountUnder | Garble::SizeUnder => word - 1,
                };
                bytes[field..field + 4].copy_from_slice(&word.to_le_bytes());
                runlog::wal::record::encode_frame(
                    &mut bytes[at..at + len],
                    runlog::wal::record::RecordType::MetricColumns,
                    flags,
                );
                garbled += 1;
            }
            std::fs::write(&segment, &bytes).unwrap();
        }
        assert_eq!(garbled, 1, "{garble:?}: the wanted run's one record");
        match reader.history(id, "loss", ..) {
            Err(runlog::Error::Corrupt(_)) => {}
            other => panic!("{garble:?}: a garbled record gave {other:?}"),
        }
    }
}
