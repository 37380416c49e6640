//! Recovery at open: dead writers are sealed, live ones left alone, cut-short creations removed.

use std::path::Path;

use runlog::wal::{Event, Log, RepairAction};
use runlog::{ExperimentId, RunId};

use crate::util::{Store, read, small_options};

fn log_steps(log: &Log, run: RunId, steps: std::ops::Range<i64>) {
    for step in steps {
        log.log_point(
            run,
            "loss",
            step,
            1_700_000_000_000 + step,
            step as f64 * 0.25,
        )
        .unwrap();
    }
}

#[test]
fn a_crashed_writer_is_sealed_on_open_and_keeps_every_acknowledged_point() {
    let store = Store::new();
    let (log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert!(report.repaired.is_empty());
    log.append(&Event::ExperimentCreated {
        experiment: ExperimentId(1),
        time_ms: 1,
        name: "e".into(),
    })
    .unwrap();
    log_steps(&log, RunId(1), 0..5_000);
    log.abandon(); // as kill -9: no seal, no sync, lock released

    let (log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert!(
        matches!(
            report.repaired[0].action,
            RepairAction::Sealed { torn: None, .. }
        ),
        "{report:?}"
    );
    let contents = read(&store.wal()).unwrap();
    let steps: Vec<i64> = contents.steps_of(RunId(1));
    assert_eq!(steps, (0..5_000).collect::<Vec<_>>());
    assert_eq!(contents.events.len(), 1);

    // Logging goes on in a new writer; a second open has nothing to repair.
    log_steps(&log, RunId(1), 5_000..6_000);
    log.close().unwrap();
    let (_log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert!(report.repaired.is_empty(), "{report:?}");
    let steps: Vec<i64> = read(&store.wal()).unwrap().steps_of(RunId(1));
    assert_eq!(steps, (0..6_000).collect::<Vec<_>>());
}

#[test]
fn a_live_writer_is_left_alone_and_its_data_is_visible_without_a_flush() {
    let store = Store::new();
    let (writing, _) = Log::open(store.wal(), small_options()).unwrap();
    log_steps(&writing, RunId(9), 0..100);
    let (_second, report) = Log::open(store.wal(), small_options()).unwrap();
    assert_eq!(report.live_writers, 1, "{report:?}");
    assert!(report.repaired.is_empty());
    assert_eq!(read(&store.wal()).unwrap().points_of(RunId(9)).len(), 100);
    log_steps(&writing, RunId(9), 100..200);
    assert_eq!(read(&store.wal()).unwrap().points_of(RunId(9)).len(), 200);
}

#[test]
fn a_segment_whose_creation_was_cut_short_is_removed() {
    let store = Store::new();
    let mut writer = store.writer(4096);
    // Log until the writer seals segment 0 and starts segment 1; that last point is in 1.
    let mut step = 0;
    while crate::util::segments(&store.wal()).len() < 2 {
        writer.log_point(RunId(1), "loss", step, 0, 1.0).unwrap();
        step += 1;
    }
    let id = writer.id();
    writer.flush().unwrap();
    writer.abandon();
    // Segment 1 as a crash right after its creation leaves it: its blocks, no header yet.
    let unborn = store.wal().join(format!("{id}-0000000001.wal"));
    std::fs::write(&unborn, vec![0u8; 4096]).unwrap();
    // Recovery looks at the last segment: the unborn one goes, and segment 0 ends the chain.
    let (_log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert!(!unborn.exists(), "{report:?}");
    let points = read(&store.wal()).unwrap().points.len();
    assert_eq!(points as i64, step - 1);
}

/// A crash between writing a seal and trimming the file: the writer's lock file is still
/// there (unlocked), and its last segment still has its preallocated length.
#[test]
fn a_sealed_segment_left_untrimmed_by_a_crash_is_trimmed() {
    let store = Store::new();
    let mut writer = store.writer(4096);
    writer.log_point(RunId(1), "loss", 0, 0, 1.0).unwrap();
    let id = writer.id();
    writer.close().unwrap();
    std::fs::write(store.wal().join(format!("{id}.lock")), b"").unwrap();
    let segment = crate::util::only_segment(&store.wal());
    let sealed_len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(4096).unwrap();
    drop(file);
    let (_log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert!(
        matches!(report.repaired[0].action, RepairAction::Trimmed),
        "{report:?}"
    );
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), sealed_len);
    assert_eq!(read(&store.wal()).unwrap().points.len(), 1);
}

#[test]
fn a_string_longer_than_readers_accept_is_refused_not_acknowledged() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    let huge = "x".repeat(runlog::limits::STRING_BYTES_MAX + 1);
    let error = log
        .append(&Event::TagSet {
            run: RunId(1),
            time_ms: 0,
            key: "k".into(),
            value: huge.clone(),
        })
        .unwrap_err();
    assert!(matches!(error, runlog::Error::InvalidInput(_)), "{error}");
    assert!(log.log_point(RunId(1), &huge, 0, 0, 1.0).is_err());
    log_steps(&log, RunId(1), 0..10);
    log.abandon();
    let (_log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert!(
        matches!(
            report.repaired[0].action,
            RepairAction::Sealed { torn: None, .. }
        ),
        "{report:?}"
    );
    assert_eq!(read(&store.wal()).unwrap().points.len(), 10);
}

#[test]
fn a_closed_writer_is_recognized_without_its_lock_file() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    log_steps(&log, RunId(1), 0..10);
    log.close().unwrap();
    let locks = std::fs::read_dir(store.wal())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "lock")
        })
        .count();
    assert_eq!(locks, 0);
    let (_log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert_eq!(report.closed_writers, 1);
    assert!(report.repaired.is_empty());
}

#[test]
fn rotation_keeps_order_across_many_segments() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    for step in 0..20_000 {
        log.log_point(RunId(1), "a", step, step, step as f64)
            .unwrap();
        if step % 1000 == 0 {
            log.append(&Event::TagSet {
                run: RunId(1),
                time_ms: step,
                key: "k".into(),
                value: step.to_string(),
            })
            .unwrap();
            log.log_columns(RunId(2), "b", &[step, step + 1], &[0, 0], &[1.0, 2.0])
                .unwrap();
        }
    }
    let stats = log.stats();
    assert!(stats.segments > 5, "{stats:?}");
    log.close().unwrap();
    let contents = read(&store.wal()).unwrap();
    let steps: Vec<i64> = contents.steps_of(RunId(1));
    assert_eq!(steps, (0..20_000).collect::<Vec<_>>());
    assert_eq!(contents.points_of(RunId(2)).len(), 40);
    let tags: Vec<i64> = contents
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::TagSet { time_ms, .. } => Some(*time_ms),
            _ => None,
        })
        .collect();
    assert_eq!(tags, (0..20).map(|i| i * 1000).collect::<Vec<_>>());
}

/// A folder without `wal/` is not a store: a read-only open (the read commands) and `verify`
/// refuse it instead of reading it as an empty store, while an open for writing still creates a
/// store in an empty or missing folder.
#[test]
fn read_only_opens_and_verify_refuse_a_folder_that_is_not_a_store() {
    let read_only = runlog::StoreOptions {
        read_only: true,
        ..runlog::StoreOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a store").unwrap();
    for root in [dir.path(), Path::new("/")] {
        let opened = runlog::Store::open_with(root, read_only.clone());
        assert!(
            matches!(&opened, Err(runlog::Error::NotAStore(path)) if path == root),
            "{root:?}: {:?}",
            opened.map(|_| ())
        );
        let verified = runlog::verify::verify(root);
        assert!(
            matches!(&verified, Err(runlog::Error::NotAStore(_))),
            "{root:?}: {verified:?}"
        );
    }
    assert!(!dir.path().join("wal").exists());
    let missing = dir.path().join("new");
    for root in [dir.path().to_path_buf(), missing] {
        drop(runlog::Store::open(&root).unwrap());
        assert!(runlog::verify::verify(&root).unwrap().is_ok());
        drop(runlog::Store::open_with(&root, read_only.clone()).unwrap());
    }
}

/// A segment is read as its writer's only while the writer's lock file is there; without it,
/// the chain is taken as closed and must be sealed. So the lock file must be durable before
/// the first segment is: a power loss that kept a new segment's folder entry and lost its lock
/// file's would turn a crash into reported damage. Every crash point of a writer's creation
/// and first appends, with torn folders and pages, must leave a store `verify` and open accept.
#[test]
fn a_crash_anywhere_in_a_writers_creation_leaves_no_segment_without_its_lock_file() {
    use runlog::io::{CrashMode, CrashStorage, OsStorage};
    for operation in 0..8 {
        for seed in 0..32 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            std::fs::create_dir_all(root.join("wal")).unwrap();
            let crash = std::sync::Arc::new(
                CrashStorage::new(&root, std::sync::Arc::new(OsStorage)).unwrap(),
            );
            let image = dir.path().join("image");
            crash.crash_at(operation, &image, CrashMode::Torn { seed });
            let options = runlog::wal::WriterOptions {
                segment_bytes: 4096,
                sync_every_append: false,
            };
            if let Ok(mut writer) =
                runlog::wal::Writer::create(&root.join("wal"), crash.clone(), options)
            {
                let _ = writer.log_point(RunId(1), "loss", 0, 0, 1.0);
                let _ = writer.flush();
                writer.abandon();
            }
            if !crash.crashed() {
                crash.crash_now(&image, CrashMode::Torn { seed }).unwrap();
            }
            let context = format!("crash at operation {operation}, seed {seed}");
            let report = runlog::verify::verify(&image).unwrap();
            assert!(report.is_ok(), "{context}: {:?}", report.problems);
            if let Err(error) = Log::open(image.join("wal"), small_options()) {
                panic!("{context}: open failed: {error}");
            }
        }
    }
}

/// A segment whose file claims far more bytes than any segment holds (here a sparse terabyte)
/// is damage named by `verify` and by open, not an allocation that aborts the process.
#[test]
fn a_segment_file_larger_than_any_segment_is_damage_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let store = runlog::Store::open(dir.path()).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, runlog::RunOptions::default())
        .unwrap();
    run.log_metric("loss", 0.5, 1).unwrap();
    run.finish().unwrap();
    store.close().unwrap();
    drop(store);
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.path == segment),
        "{:?}",
        report.problems
    );
    let read_only = runlog::StoreOptions {
        read_only: true,
        ..runlog::StoreOptions::default()
    };
    let opened = runlog::Store::open_with(dir.path(), read_only);
    assert!(
        matches!(&opened, Err(runlog::Error::Corrupt(c)) if c.path == segment),
        "{:?}",
        opened.map(|_| ())
    );
}

/// Large columns records go into the segment through its file rather than its map; they are
/// in the same page cache, so the range sync that makes them durable covers them. A power loss
/// after the flush keeps every point of the large and the small records synced before it,
/// in order, in a store `verify` accepts.
#[test]
fn large_records_written_through_the_file_are_durable_once_flushed() {
    use runlog::io::{CrashMode, CrashStorage, OsStorage};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("wal")).unwrap();
    let crash =
        std::sync::Arc::new(CrashStorage::new(&root, std::sync::Arc::new(OsStorage)).unwrap());
    let options = runlog::wal::WriterOptions {
        segment_bytes: 4 << 20,
        sync_every_append: false,
    };
    let mut writer =
        runlog::wal::Writer::create(&root.join("wal"), crash.clone(), options).unwrap();
    let mut expected = Vec::new();
    let mut step = 0i64;
    // Small points through the map between batches of 50,000 (about 550 KB each, through the
    // file), across segment rotations.
    for batch in 0..12 {
        let steps: Vec<i64> = (step..step + 50_000).collect();
        let values: Vec<f64> = steps.iter().map(|s| *s as f64 / 3.0).collect();
        let timestamps = vec![batch; steps.len()];
        writer
            .log_columns(RunId(1), "loss", &steps, &timestamps, &values)
            .unwrap();
        expected.extend_from_slice(&steps);
        step += 50_000;
        writer
            .log_point(RunId(1), "loss", step, batch, 0.5)
            .unwrap();
        expected.push(step);
        step += 1;
    }
    writer.flush().unwrap();
    // Not synced: a power loss may drop it.
    writer
        .log_columns(RunId(1), "loss", &[step], &[0], &[0.0])
        .unwrap();
    let image = dir.path().join("image");
    crash.crash_now(&image, CrashMode::Synced).unwrap();
    drop(writer);

    let report = runlog::verify::verify(&image).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let (_log, _) = Log::open(image.join("wal"), small_options()).unwrap();
    let steps = read(&image.join("wal")).unwrap().steps_of(RunId(1));
    assert_eq!(steps.len(), expected.len());
    assert!(steps == expected, "the synced points came back changed");
}
