//! Regression tests for what the deterministic simulation (`sim.rs`) found, each named for
//! what it caught, each failing on the code before its fix.

use std::sync::Arc;

use runlog::io::{CrashMode, CrashStorage, FaultStorage, Operation, Storage};
use runlog::{Durability, Error, RunOptions, RunStatus, Store, StoreOptions};

fn options(storage: Arc<dyn Storage>, durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        segment_bytes: 8 * 1024,
        storage,
        ..StoreOptions::default()
    }
}

/// The store created its `wal/` folder without fsyncing the store's folder, so a power loss
/// right after could take the whole log, synced points and all, with it.
#[test]
fn a_power_loss_after_creating_a_store_keeps_its_synced_points() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("store");
    std::fs::create_dir(&root).unwrap();
    let crash = Arc::new(CrashStorage::new(&root, Arc::new(FaultStorage::new())).unwrap());
    let store = Store::open_with(&root, options(crash.clone(), Durability::Sync)).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    let id = run.id();
    run.log_metric("loss", 0.5, 1).unwrap();
    let image = base.path().join("after");
    crash.crash_now(&image, CrashMode::Synced).unwrap();
    run.detach();
    store.abandon();
    drop(store);

    let store = Store::open(&image).unwrap();
    let history = store.history(id, "loss", ..).unwrap();
    assert_eq!(history.len(), 1, "the synced point survives the power loss");
}

/// After a failed sync poisoned a writer during `compact` (which closes this handle's
/// writers), the lane started a fresh writer and later writes went on in it: durable points
/// of a run whose creation was lost with the poisoned writer's unsynced tail.
#[test]
fn a_failed_sync_while_compacting_stops_every_later_write_of_the_handle() {
    for operation in [Operation::SyncMap, Operation::SetLen] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FaultStorage::new());
        let store =
            Store::open_with(dir.path(), options(faults.clone(), Durability::Buffered)).unwrap();
        let experiment = store.get_or_create_experiment("e").unwrap().id;
        let run = store.start_run(experiment, RunOptions::default()).unwrap();
        run.log_metric("loss", 0.5, 1).unwrap();
        faults.fail_once(operation, 0, libc::EIO);
        assert!(
            store.compact().is_err(),
            "{operation:?}: the injected fault"
        );
        faults.heal();
        let error = run.log_metric("loss", 0.25, 2).unwrap_err();
        assert!(
            matches!(error, Error::Poisoned { .. }),
            "{operation:?}: {error}"
        );
        let error = store
            .start_run(experiment, RunOptions::default())
            .unwrap_err();
        assert!(
            matches!(error, Error::Poisoned { .. }),
            "{operation:?}: {error}"
        );
        assert!(matches!(store.flush(), Err(Error::Poisoned { .. })));
        run.detach();
        store.abandon();
        drop(store);
        // Reopening is the way on, and keeps what was synced.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.runs(experiment, runlog::ViewType::All).unwrap().len(),
            1
        );
    }
}

/// A crash between creating a segment and syncing its header leaves a file of zeros, beside
/// the dead writer's lock file; `verify` called that damage although every reader, and
/// recovery, take it as the chain's end.
#[test]
fn verify_notes_a_segment_that_was_created_but_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    std::fs::create_dir(&wal).unwrap();
    std::fs::write(wal.join("68815d7a7be10ada.lock"), b"").unwrap();
    std::fs::write(wal.join("68815d7a7be10ada-0000000000.wal"), vec![0u8; 8192]).unwrap();
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    assert!(report.notes[0].message.contains("never written"));
}

/// Compaction copies the events of the segments it takes into a metadata chain, which had a
/// writer id newer than every writer before it. A fresh catalog applied the copy of a run's
/// creation after another writer's finish in the same millisecond, and showed the finished
/// run as RUNNING (found by the simulation: seed 715 with the chain listed in a manifest,
/// seed 1565 with a chain a failed compaction left unlisted).
#[test]
fn a_copy_from_a_metadata_chain_never_undoes_a_later_event() {
    for listed in [true, false] {
        same_millisecond_finish_survives_compaction(listed);
    }
}

fn same_millisecond_finish_survives_compaction(listed: bool) {
    use runlog::wal::{Event, Log, LogOptions};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let experiment = Store::open(root)
        .unwrap()
        .get_or_create_experiment("e")
        .unwrap()
        .id;
    let run = runlog::RunId(42);
    let time_ms = 1_700_000_000_000;
    let log_options = || LogOptions {
        durability: Durability::Buffered,
        ..LogOptions::default()
    };
    // Writer A creates the run and ends; writer B, still open, finishes it in the same ms.
    let (a, _) = Log::open(root.join("wal"), log_options()).unwrap();
    a.append(&Event::RunCreated {
        run,
        time_ms,
        experiment,
        parent: None,
        name: "r".into(),
    })
    .unwrap();
    a.close().unwrap();
    let (b, _) = Log::open(root.join("wal"), log_options()).unwrap();
    b.append(&Event::RunStatusChanged {
        run,
        time_ms,
        status: RunStatus::Finished,
        end_time_ms: Some(time_ms),
    })
    .unwrap();
    b.flush().unwrap();
    // Compaction takes A's sealed segment (not B's open one) into a new metadata chain; when
    // not `listed`, publishing the manifest fails and the chain stays, listed nowhere.
    let faults = Arc::new(FaultStorage::new());
    let store = Store::open_with(root, options(faults.clone(), Durability::Buffered)).unwrap();
    if listed {
        let report = store.compact().unwrap();
        assert!(report.metadata_events > 0, "{report:?}");
    } else {
        faults.fail_from(Operation::Link, 0, libc::EIO);
        assert!(store.compact().is_err());
    }
    assert_eq!(store.run(run).unwrap().info.status, RunStatus::Finished);
    store.abandon();
    drop(store);
    let fresh = Store::open(root).unwrap();
    assert_eq!(
        fresh.run(run).unwrap().info.status,
        RunStatus::Finished,
        "listed: {listed}"
    );
    drop(b);
}
