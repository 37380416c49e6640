//! I/O faults through the storage seam: a failed sync poisons the writer for good; a full disk
//! at segment creation is a clear error that loses nothing and passes once space returns.

use std::sync::Arc;

use runlog::io::{FaultStorage, Operation};
use runlog::wal::{Durability, Log, LogOptions};
use runlog::{Error, RunId};

use crate::util::{Store, read, small_options};

fn options(storage: Arc<FaultStorage>, durability: Durability) -> LogOptions {
    LogOptions {
        storage,
        durability,
        segment_bytes: 8 * 1024,
        lanes: 1,
        ..LogOptions::default()
    }
}

#[test]
fn a_failed_msync_poisons_the_writer_and_reopening_keeps_acknowledged_points() {
    let store = Store::new();
    let storage = Arc::new(FaultStorage::new());
    let (log, _) = Log::open(store.wal(), options(storage.clone(), Durability::Sync)).unwrap();
    for step in 0..10 {
        log.log_point(RunId(1), "loss", step, step, 1.0).unwrap();
    }
    storage.fail_once(Operation::SyncMap, 0, libc::EIO);
    let error = log.log_point(RunId(1), "loss", 10, 10, 1.0).unwrap_err();
    assert!(matches!(error, Error::Poisoned { .. }), "{error}");
    assert!(error.to_string().contains("msync"), "{error}");
    storage.heal();
    // Never retry and carry on: the kernel may have dropped the dirty pages.
    for step in 11..15 {
        let error = log
            .log_point(RunId(1), "loss", step, step, 1.0)
            .unwrap_err();
        assert!(matches!(error, Error::Poisoned { .. }), "{error}");
    }
    assert!(matches!(log.flush(), Err(Error::Poisoned { .. })));
    assert_eq!(storage.injected(), 1);
    drop(log);

    let (_log, report) = Log::open(store.wal(), small_options()).unwrap();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    let steps: Vec<i64> = read(&store.wal()).unwrap().steps_of(RunId(1));
    assert!(steps.starts_with(&(0..10).collect::<Vec<_>>()), "{steps:?}");
    assert!(steps.len() <= 11, "{steps:?}");
}

#[test]
fn a_flusher_sync_failure_is_reported_by_the_next_append() {
    let store = Store::new();
    let storage = Arc::new(FaultStorage::new());
    let durability = Durability::Interval(std::time::Duration::from_millis(5));
    let (log, _) = Log::open(store.wal(), options(storage.clone(), durability)).unwrap();
    log.log_point(RunId(1), "loss", 0, 0, 1.0).unwrap();
    storage.fail_from(Operation::SyncMap, 0, libc::EIO);
    log.log_point(RunId(1), "loss", 1, 1, 1.0).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let error = loop {
        match log.log_point(RunId(1), "loss", 2, 2, 1.0) {
            Err(error) => break error,
            Ok(()) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(()) => panic!("the flusher never synced"),
        }
    };
    assert!(matches!(error, Error::Poisoned { .. }), "{error}");
}

#[test]
fn no_space_at_segment_creation_is_an_error_and_logging_resumes_when_space_returns() {
    let store = Store::new();
    let storage = Arc::new(FaultStorage::new());
    let (log, _) = Log::open(store.wal(), options(storage.clone(), Durability::Sync)).unwrap();
    log.log_point(RunId(1), "loss", 0, 0, 1.0).unwrap();
    storage.fail_from(Operation::Create, 0, libc::ENOSPC);
    let mut acknowledged = 1;
    let error = loop {
        match log.log_point(RunId(1), "loss", acknowledged, 0, 1.0) {
            Ok(()) => acknowledged += 1,
            Err(error) => break error,
        }
        assert!(acknowledged < 100_000, "the segment never filled");
    };
    assert!(matches!(error, Error::StorageFull { .. }), "{error}");
    assert!(error.to_string().contains("no space"), "{error}");
    // Still full: still an error, and no stray file is left behind.
    assert!(
        log.log_point(RunId(1), "loss", acknowledged, 0, 1.0)
            .is_err()
    );
    storage.heal();
    for step in acknowledged..acknowledged + 100 {
        log.log_point(RunId(1), "loss", step, 0, 1.0).unwrap();
    }
    log.close().unwrap();
    let steps: Vec<i64> = read(&store.wal()).unwrap().steps_of(RunId(1));
    assert_eq!(steps, (0..acknowledged + 100).collect::<Vec<_>>());
}

/// A thread that panics holding a lane leaves its writer's state unknown: the handle stops as
/// after a failed sync. The next append through that lane must fail too, not start a fresh
/// writer that makes records durable beside the abandoned one's unsynced ones.
#[test]
fn a_panic_while_appending_stops_the_handle_and_the_next_append_fails() {
    let store = Store::new();
    let options = LogOptions {
        lanes: 1,
        ..small_options()
    };
    let (log, _) = Log::open(store.wal(), options).unwrap();
    let tag = |value: &str| runlog::wal::Event::TagSet {
        run: RunId(1),
        time_ms: 1,
        key: "k".into(),
        value: value.into(),
    };
    log.append_all(&[tag("before")], &mut |_| {}).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log.append_all(&[tag("during")], &mut |_| {
            panic!("a deliberate panic under the lane")
        })
    }));
    assert!(panicked.is_err());
    let after = log.append_all(&[tag("after")], &mut |_| {});
    assert!(matches!(after, Err(Error::Poisoned { .. })), "{after:?}");
    assert!(matches!(log.flush(), Err(Error::Poisoned { .. })));
}
