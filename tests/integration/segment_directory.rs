//! Reads through the directories of sealed log segments (`src/wal/directory.rs`): a handle
//! that has read a sealed segment once reads only the records it wants of it after, and must
//! give exactly what a cold read gives.
//!
//! The randomized test logs, from two handles (two writers, several lanes each), several runs
//! and keys as columns records, keyed stream points and single points, into small segments so
//! that segments seal in the middle of runs, compacts part of the log in some rounds, and
//! compares `history_of_runs`, `history` over step ranges and `history_sample`, bit for bit,
//! as read by: a fresh handle with the directories its open's read of the log left, the same
//! handle with its directories forgotten before every read (every segment scanned whole), and
//! a handle that reads after every phase (directories from earlier phases, then warm); the
//! directories' hit count shows the warm reads used them. Its seed replays the calls, not the
//! log's bytes: writer ids come from the clock and random bits, and the order of writers in
//! the log follows them, so a replay logs the same points but may lay them out otherwise.
//!
//! The other tests damage a byte of a wanted columns record or stream after the directory was
//! built, change a header in place, replace or copy a segment file, and delete segments by a
//! compaction under a warm handle.

use runlog::query::{History, Sample};
use runlog::{Durability, MetricPoint, RunId, RunOptions, Store, StoreOptions};

use crate::util::Rng;

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 32 * 1024,
        ..StoreOptions::default()
    };
    Store::open_with(dir, options).unwrap()
}

const KEYS: [&str; 3] = ["loss", "acc", "lr"];

/// Points as (step, timestamp, value bits), comparable with NaN payloads.
type Bits = Vec<(i64, i64, u64)>;

/// A history as comparable bits (NaN payloads included).
fn bits(history: &History) -> Bits {
    (0..history.len())
        .map(|i| {
            (
                history.steps[i],
                history.timestamps_ms[i],
                history.values[i].to_bits(),
            )
        })
        .collect()
}

fn sample_bits(sample: &Sample) -> (usize, bool, Bits) {
    (sample.total, sample.ties, bits(&sample.points))
}

/// Logs one random call for `run` through `store`.
fn log_some(store: &Store, run: &runlog::Run, step: &mut i64, rng: &mut Rng) {
    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
    let count = 1 + rng.below(1_000) as usize;
    let steps: Vec<i64> = (0..count as i64).map(|i| *step + i).collect();
    *step += count as i64 - rng.below(3) as i64;
    let values: Vec<f64> = steps
        .iter()
        .map(|s| match rng.below(50) {
            0 => f64::from_bits(0x7ff8_0000_dead_beef),
            _ => *s as f64 / 7.0 + rng.below(100) as f64,
        })
        .collect();
    let timestamps: Vec<i64> = steps.iter().map(|s| 1_000 + s * 3).collect();
    match rng.below(3) {
        0 => run
            .log_batch(key, &steps, Some(&timestamps), &values)
            .unwrap(),
        1 => {
            let metrics: Vec<MetricPoint<'_>> = (0..count)
                .map(|i| MetricPoint {
                    key,
                    value: values[i],
                    step: steps[i],
                    timestamp_ms: timestamps[i],
                })
                .collect();
            store.log_batch(run.id(), &metrics, &[], &[]).unwrap();
        }
        _ => {
            for i in 0..count.min(20) {
                store
                    .log_metric(run.id(), key, values[i], steps[i], timestamps[i])
                    .unwrap();
            }
        }
    }
}

/// Everything the reads compared give, as bits.
#[derive(Debug, PartialEq)]
struct Answers {
    histories: Vec<Vec<Bits>>,
    ranges: Vec<Bits>,
    samples: Vec<Vec<(usize, bool, Bits)>>,
}

/// The reads compared, each preceded by `before_each` (the cold baseline forgets the
/// directories before every read, since each read leaves them for the next).
fn answers(
    store: &Store,
    runs: &[RunId],
    ranges: &[(RunId, &str, i64, i64)],
    before_each: &dyn Fn(&Store),
) -> Answers {
    let pick = |total: usize| {
        (0..total)
            .step_by(1 + total / 40)
            .chain(total.checked_sub(1))
            .collect::<Vec<_>>()
    };
    Answers {
        histories: KEYS
            .iter()
            .map(|key| {
                before_each(store);
                let histories = store.history_of_runs(runs, key, ..).unwrap();
                histories.iter().map(bits).collect()
            })
            .collect(),
        ranges: ranges
            .iter()
            .map(|(run, key, first, last)| {
                before_each(store);
                bits(&store.history(*run, key, *first..=*last).unwrap())
            })
            .collect(),
        samples: KEYS
            .iter()
            .map(|key| {
                before_each(store);
                let samples = store.history_sample(runs, key, .., &pick).unwrap();
                samples.iter().map(sample_bits).collect()
            })
            .collect(),
    }
}

#[test]
fn reads_through_segment_directories_give_what_cold_reads_give() {
    let mut rng = Rng::from_env("reads_through_segment_directories_give_what_cold_reads_give");
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let writers = [open(dir.path()), open(dir.path())];
        let experiment = writers[0].get_or_create_experiment("e").unwrap().id;
        let runs: Vec<runlog::Run> = (0..2 + rng.below(3))
            .map(|_| {
                writers[0]
                    .start_run(experiment, RunOptions::default())
                    .unwrap()
            })
            .collect();
        let ids: Vec<RunId> = runs.iter().map(runlog::Run::id).collect();
        let mut steps = vec![0i64; runs.len()];
        let reader = open(dir.path());
        // Lookups that found a directory, in the fresh handles' reads and in the warm ones.
        let mut round_hits = (0u64, 0u64);
        for phase in 0..3 {
            for _ in 0..40 + rng.below(60) {
                let index = rng.below(runs.len() as u64) as usize;
                let writer = &writers[rng.below(2) as usize];
                log_some(writer, &runs[index], &mut steps[index], &mut rng);
            }
            for writer in &writers {
                writer.flush().unwrap();
            }
            if phase == 1 && rng.below(2) == 0 {
                writers[0].compact().unwrap();
            }
            let ranges: Vec<(RunId, &str, i64, i64)> = (0..4)
                .map(|_| {
                    let run = ids[rng.below(ids.len() as u64) as usize];
                    let first = rng.below(3_000) as i64 - 100;
                    (
                        run,
                        KEYS[rng.below(3) as usize],
                        first,
                        first + rng.below(4_000) as i64,
                    )
                })
                .collect();
            // A fresh handle's open reads the other writers' log, which leaves the sealed
            // segments' directories: forgotten, its reads scan the whole log tail.
            let fresh = open(dir.path());
            drop(fresh.run(ids[0]).unwrap());
            let nothing = |_: &Store| {};
            let hits_before = fresh.segment_directory_stats().hits;
            let opened = answers(&fresh, &ids, &ranges, &nothing);
            let opened_hits = fresh.segment_directory_stats().hits - hits_before;
            let cold = answers(&fresh, &ids, &ranges, &|store: &Store| {
                store.forget_segment_directories();
            });
            let first = answers(&reader, &ids, &ranges, &nothing);
            let hits_before = reader.segment_directory_stats().hits;
            let warm = answers(&reader, &ids, &ranges, &nothing);
            let warm_hits = reader.segment_directory_stats().hits - hits_before;
            let context = format!("round {round}, phase {phase}");
            round_hits.0 += opened_hits;
            round_hits.1 += warm_hits;
            assert!(
                opened == cold,
                "{context}: directories from the open changed an answer"
            );
            assert!(
                first == cold,
                "{context}: a handle's reads differ from a fresh handle's"
            );
            assert!(
                warm == cold,
                "{context}: warm directories changed an answer"
            );
        }
        // The first phase seals segments (32 KiB each) before any compaction, so the open's
        // read and the earlier reads leave directories that later reads must use: were the
        // warm path never taken, the comparisons above would pass with every read cold.
        assert!(
            round_hits.0 > 0,
            "round {round}: no read used the directories an open left"
        );
        assert!(
            round_hits.1 > 0,
            "round {round}: no warm read used a directory"
        );
        assert!(
            reader.segment_directory_stats().entries > 0,
            "round {round}: no sealed segment was read through a directory"
        );
        let fresh = open(dir.path());
        drop(fresh.run(ids[0]).unwrap());
        assert!(
            fresh.segment_directory_stats().entries > 0,
            "round {round}: the open's read of the log left no directory"
        );
    }
}

/// Logs one run's points as columns records into small segments, sealed by `close`.
fn sealed_run(dir: &std::path::Path, key: &str) -> (RunId, RunId) {
    let store = open(dir);
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    let other = store.start_run(experiment, RunOptions::default()).unwrap();
    for batch in 0..60i64 {
        let steps: Vec<i64> = (batch * 500..(batch + 1) * 500).collect();
        let values: Vec<f64> = steps.iter().map(|s| *s as f64 / 3.0).collect();
        let logged = if batch % 2 == 0 { &run } else { &other };
        logged.log_batch(key, &steps, None, &values).unwrap();
    }
    let ids = (run.id(), other.id());
    store.close().unwrap();
    ids
}

/// The segment files of the store's log, largest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "wal"))
        .map(|path| (std::fs::metadata(&path).unwrap().len(), path))
        .collect();
    files.sort();
    files.reverse();
    files.into_iter().map(|(_, path)| path).collect()
}

fn flip(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], offset).unwrap();
}

#[test]
fn a_wanted_record_damaged_after_its_directory_was_built_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, other) = sealed_run(dir.path(), "loss");
    let reader = open(dir.path());
    let whole = reader.history(run, "loss", ..).unwrap();
    assert_eq!(whole.len(), 30 * 500);
    assert!(reader.segment_directory_stats().entries > 0);
    // Every other record of the largest segment is the run's: damage one in the middle of
    // the file, in a record of `run` or of `other`.
    let segment = segments(dir.path()).remove(0);
    let len = std::fs::metadata(&segment).unwrap().len();
    flip(&segment, len / 2);
    let hits = reader.segment_directory_stats().hits;
    let warm = reader.history(run, "loss", ..);
    let warm_other = reader.history(other, "loss", ..);
    assert!(
        reader.segment_directory_stats().hits > hits,
        "the reads after the damage went through the directories"
    );
    // The same handle's history scan with no directory.
    let cold = |id| {
        reader.forget_segment_directories();
        reader.history(id, "loss", ..)
    };
    let (damaged, fine) = match (&warm, &warm_other) {
        (Err(_), Ok(_)) => (warm, cold(run)),
        (Ok(_), Err(_)) => (warm_other, cold(other)),
        _ => panic!("one run's read must fail: {warm:?}, {warm_other:?}"),
    };
    let Err(runlog::Error::Corrupt(warm_error)) = damaged else {
        panic!("not a corruption error: {damaged:?}");
    };
    assert_eq!(warm_error.path, segment);
    assert!(
        warm_error.offset > 0 && warm_error.offset <= len / 2,
        "{warm_error:?}"
    );
    // A cold read of the damaged run fails at the same place, with the same error.
    let Err(runlog::Error::Corrupt(cold_error)) = fine else {
        panic!("a cold read must see the damage too: {fine:?}");
    };
    assert_eq!(cold_error, warm_error);
    // The damage is in a record the warm read of the other run does not use, and it was
    // checked when the directory was built; `verify` checks everything.
    let report = runlog::verify::verify(dir.path());
    assert!(
        report.as_ref().map_or(true, |report| !report.is_ok()),
        "{report:?}"
    );
}

#[test]
fn a_warm_handle_reads_on_after_a_compaction_deleted_the_segments_it_knew() {
    let dir = tempfile::tempdir().unwrap();
    let (run, other) = sealed_run(dir.path(), "loss");
    let reader = open(dir.path());
    let before = bits(&reader.history(run, "loss", ..).unwrap());
    let known = reader.segment_directory_stats().entries;
    assert!(known > 0);
    let writer = open(dir.path());
    writer.compact().unwrap();
    // Points after the compaction, in new segments.
    let experiment = writer.get_or_create_experiment("e").unwrap().id;
    let later = writer.start_run(experiment, RunOptions::default()).unwrap();
    later
        .log_batch("loss", &[1, 2, 3], None, &[0.5, 0.25, 0.125])
        .unwrap();
    writer.flush().unwrap();
    // A read that is no history read (the catalog's refresh) takes in the newer manifest,
    // and with it drops the compacted segments' directories.
    drop(reader.run(later.id()).unwrap());
    assert!(
        reader.segment_directory_stats().entries < known,
        "the follower's newer manifest drops the compacted segments' directories"
    );
    assert_eq!(bits(&reader.history(run, "loss", ..).unwrap()), before);
    assert_eq!(
        bits(&reader.history(other, "loss", ..).unwrap()),
        bits(&open(dir.path()).history(other, "loss", ..).unwrap())
    );
    assert_eq!(reader.history(later.id(), "loss", ..).unwrap().len(), 3);
    assert!(
        reader.segment_directory_stats().entries < known,
        "the deleted segments' directories are dropped"
    );
}

#[test]
fn a_segment_file_replaced_by_another_is_scanned_again() {
    let dir = tempfile::tempdir().unwrap();
    let (run, other) = sealed_run(dir.path(), "loss");
    let reader = open(dir.path());
    reader.history(run, "loss", ..).unwrap();
    reader.history(other, "loss", ..).unwrap();
    // The same bytes with one flipped, under the same name and length: another file (another
    // inode), which the handle's directory of the old one must not describe.
    let segment = segments(dir.path()).remove(0);
    let copy = dir.path().join("copy");
    std::fs::copy(&segment, &copy).unwrap();
    let len = std::fs::metadata(&copy).unwrap().len();
    flip(&copy, len / 2);
    std::fs::rename(&copy, &segment).unwrap();
    // Whichever run's record the byte is in, both reads scan the whole new file and fail.
    for id in [run, other] {
        let read = reader.history(id, "loss", ..);
        assert!(
            matches!(&read, Err(runlog::Error::Corrupt(c)) if c.path == segment),
            "{read:?}"
        );
    }
}

#[test]
fn a_sampled_record_damaged_after_its_measure_was_kept_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, other) = sealed_run(dir.path(), "loss");
    let reader = open(dir.path());
    let every = |total: usize| (0..total).collect::<Vec<_>>();
    let few = |total: usize| vec![0, total / 2, total.saturating_sub(1)];
    // The first sample measures the records; the second takes the measures kept.
    for _ in 0..2 {
        let samples = reader
            .history_sample(&[run, other], "loss", .., &few)
            .unwrap();
        assert_eq!(samples[0].total, 30 * 500);
    }
    let segment = segments(dir.path()).remove(0);
    let len = std::fs::metadata(&segment).unwrap().len();
    flip(&segment, len / 2);
    // Picking every point decodes every record, the damaged one with it.
    let warm = reader.history_sample(&[run, other], "loss", .., &every);
    let Err(runlog::Error::Corrupt(warm_error)) = warm else {
        panic!("not a corruption error: {warm:?}");
    };
    assert_eq!(warm_error.path, segment);
    let cold = open(dir.path()).history_sample(&[run, other], "loss", .., &every);
    let Err(runlog::Error::Corrupt(cold_error)) = cold else {
        panic!("a cold read must see the damage too: {cold:?}");
    };
    assert_eq!(cold_error, warm_error);
}

#[test]
fn a_segment_whose_header_changed_in_place_is_scanned_again() {
    let dir = tempfile::tempdir().unwrap();
    let (run, other) = sealed_run(dir.path(), "loss");
    let reader = open(dir.path());
    reader.history(run, "loss", ..).unwrap();
    reader.history(other, "loss", ..).unwrap();
    // Same inode, same length: only the bytes loaded tell the file is not the one its
    // directory was built from, and the scan of them finds the damage.
    let segment = segments(dir.path()).remove(0);
    flip(&segment, 40);
    for id in [run, other] {
        let read = reader.history(id, "loss", ..);
        assert!(
            matches!(&read, Err(runlog::Error::Corrupt(c)) if c.path == segment),
            "{read:?}"
        );
    }
}

/// Logs two runs' points one at a time (stream records), each block of a run's points closed
/// by a three-point columns record of a third run, into small segments sealed by `close`.
fn sealed_streams(dir: &std::path::Path, key: &str) -> [RunId; 2] {
    let store = open(dir);
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let runs = [(); 3].map(|()| store.start_run(experiment, RunOptions::default()).unwrap());
    for block in 0..40i64 {
        let run = &runs[(block % 2) as usize];
        for step in block * 100..(block + 1) * 100 {
            store
                .log_metric(run.id(), key, step as f64 / 3.0, step, 1_000 + step)
                .unwrap();
        }
        runs[2]
            .log_batch(key, &[block, block + 1, block + 2], None, &[0.0; 3])
            .unwrap();
    }
    let ids = [runs[0].id(), runs[1].id()];
    store.close().unwrap();
    ids
}

#[test]
fn a_stream_damaged_after_its_directory_was_built_fails_only_the_reads_that_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let ids = sealed_streams(dir.path(), "loss");
    let reader = open(dir.path());
    let before: Vec<Bits> = (ids.iter())
        .map(|id| bits(&reader.history(*id, "loss", ..).unwrap()))
        .collect();
    assert_eq!(before[0].len(), 20 * 100);
    let segment = segments(dir.path()).remove(0);
    let len = std::fs::metadata(&segment).unwrap().len();
    flip(&segment, len / 2);
    let hits = reader.segment_directory_stats().hits;
    let warm: Vec<_> = (ids.iter())
        .map(|id| reader.history(*id, "loss", ..))
        .collect();
    assert!(reader.segment_directory_stats().hits > hits);
    let mut failed = 0;
    for (index, id) in ids.iter().enumerate() {
        reader.forget_segment_directories();
        let cold = reader.history(*id, "loss", ..);
        match &warm[index] {
            // A read through the directory that uses the damaged record fails as a scan
            // of the file does, naming the file and the record's offset.
            Err(runlog::Error::Corrupt(warm_error)) => {
                failed += 1;
                assert_eq!(warm_error.path, segment);
                assert!(warm_error.offset <= len / 2, "{warm_error:?}");
                assert!(
                    matches!(&cold, Err(runlog::Error::Corrupt(c)) if c == warm_error),
                    "{cold:?}, {warm_error:?}"
                );
            }
            // One that does not use it is not tripped by it: the rest of the segment was
            // checked when its directory was built.
            Ok(history) => assert_eq!(bits(history), before[index]),
            Err(other) => panic!("not a corruption error: {other:?}"),
        }
        // A scan checks every record, so it meets the damage whichever run it wants.
        assert!(
            cold.is_err(),
            "a scan of the whole file must fail: {cold:?}"
        );
    }
    assert!(
        failed > 0,
        "the middle of the file is in a run's stream, and its read must fail"
    );
}

#[test]
fn a_segment_copied_to_another_inode_is_scanned_again() {
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = sealed_run(dir.path(), "loss");
    let reader = open(dir.path());
    let before = bits(&reader.history(run, "loss", ..).unwrap());
    let segment = segments(dir.path()).remove(0);
    let copy = dir.path().join("copy");
    std::fs::copy(&segment, &copy).unwrap();
    std::fs::rename(&copy, &segment).unwrap();
    // The same bytes in another file: its directory is not found, it is scanned (and leaves
    // a directory of its own), and the answer is the same.
    let entries = reader.segment_directory_stats().entries;
    assert_eq!(bits(&reader.history(run, "loss", ..).unwrap()), before);
    assert_eq!(reader.segment_directory_stats().entries, entries + 1);
}
