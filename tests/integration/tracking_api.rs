//! The tracking API's rules, one test each.

use runlog::wal::RunStatus;
use runlog::{
    Durability, Error, LifecycleStage, Run, RunId, RunOptions, Store, StoreOptions, ViewType,
};

use crate::util::{Store as TempStore, read};

fn open(dir: &TempStore) -> Store {
    Store::open_with(dir.dir.path(), options()).unwrap()
}

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    }
}

fn new_run(store: &Store, experiment: &str) -> Run {
    let experiment = store.get_or_create_experiment(experiment).unwrap();
    store
        .start_run(experiment.id, RunOptions::default())
        .unwrap()
}

#[test]
fn experiments_are_unique_by_name_and_have_a_lifecycle() {
    let dir = TempStore::new();
    let store = open(&dir);
    let a = store.get_or_create_experiment("mnist").unwrap();
    assert_eq!(store.get_or_create_experiment("mnist").unwrap().id, a.id);
    assert!(matches!(
        store.create_experiment("mnist"),
        Err(Error::AlreadyExists(_))
    ));
    let b = store.create_experiment("cifar").unwrap();
    assert!(matches!(
        store.rename_experiment(b.id, "mnist"),
        Err(Error::AlreadyExists(_))
    ));
    store.rename_experiment(b.id, "cifar-10").unwrap();
    assert_eq!(store.experiment(b.id).unwrap().name, "cifar-10");
    assert!(store.experiment_by_name("cifar").unwrap().is_none());

    store.set_experiment_tag(a.id, "team", "vision").unwrap();
    assert_eq!(store.experiment(a.id).unwrap().tags["team"], "vision");
    store.delete_experiment_tag(a.id, "team").unwrap();
    assert!(store.experiment(a.id).unwrap().tags.is_empty());

    store.delete_experiment(a.id).unwrap();
    assert_eq!(
        store.experiment(a.id).unwrap().lifecycle_stage,
        LifecycleStage::Deleted
    );
    assert_eq!(store.experiments(ViewType::ActiveOnly).unwrap().len(), 1);
    assert_eq!(store.experiments(ViewType::DeletedOnly).unwrap().len(), 1);
    assert_eq!(store.experiments(ViewType::All).unwrap().len(), 2);
    // A deleted experiment keeps its name and refuses new runs.
    assert!(matches!(
        store.create_experiment("mnist"),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        store.start_run(a.id, RunOptions::default()),
        Err(Error::Deleted { .. })
    ));
    store.restore_experiment(a.id).unwrap();
    assert!(store.start_run(a.id, RunOptions::default()).is_ok());

    assert!(matches!(
        store.create_experiment(""),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.create_experiment(&"x".repeat(501)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.experiment(runlog::ExperimentId(42)),
        Err(Error::NotFound(_))
    ));

    drop(store);
    let store = open(&dir);
    assert_eq!(store.experiment(b.id).unwrap().name, "cifar-10");
    assert_eq!(store.experiment_by_name("mnist").unwrap().unwrap().id, a.id);
}

#[test]
fn a_run_records_start_user_source_and_git_commit_under_mlflow_tags() {
    let dir = TempStore::new();
    let store = open(&dir);
    let parent = new_run(&store, "e");
    let experiment = store.experiment_by_name("e").unwrap().unwrap();
    let child = store
        .start_run(
            experiment.id,
            RunOptions {
                name: Some("child".into()),
                parent: Some(parent.id()),
                ..RunOptions::default()
            },
        )
        .unwrap();
    let view = child.view().unwrap();
    assert_eq!(view.info.name, "child");
    assert_eq!(view.info.parent, Some(parent.id()));
    assert_eq!(view.info.status, RunStatus::Running);
    assert!(view.info.start_time_ms > 1_600_000_000_000);
    assert_eq!(view.tags["mlflow.runName"], "child");
    assert_eq!(view.tags["mlflow.parentRunId"], parent.id().to_string());
    assert_eq!(view.tags["mlflow.source.type"], "LOCAL");
    assert!(view.tags.contains_key("mlflow.source.name"));
    if let Ok(user) = std::env::var("USER") {
        assert_eq!(view.info.user.as_deref(), Some(user.as_str()));
    }
    // The tests run inside the project's git checkout.
    let commit = runlog::tracking::system_tags::git_commit(&std::env::current_dir().unwrap());
    assert_eq!(view.tags.get("mlflow.source.git.commit"), commit.as_ref());
    assert!(
        commit.is_some(),
        "tests are expected to run in a git checkout"
    );
    assert!(matches!(
        store.start_run(
            experiment.id,
            RunOptions {
                parent: Some(RunId(5)),
                ..RunOptions::default()
            }
        ),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn runs_end_finished_killed_or_failed() {
    let dir = TempStore::new();
    let store = open(&dir);
    let finished = new_run(&store, "e");
    let finished_id = finished.id();
    finished.finish().unwrap();
    let view = store.run(finished_id).unwrap();
    assert_eq!(view.info.status, RunStatus::Finished);
    assert!(view.info.end_time_ms.is_some());

    let dropped = new_run(&store, "e");
    let dropped_id = dropped.id();
    drop(dropped);
    assert_eq!(
        store.run(dropped_id).unwrap().info.status,
        RunStatus::Killed
    );

    let panicking = new_run(&store, "e");
    let panicking_id = panicking.id();
    let outcome = std::thread::spawn(move || {
        let _run = panicking;
        panic!("training diverged");
    })
    .join();
    assert!(outcome.is_err());
    assert_eq!(
        store.run(panicking_id).unwrap().info.status,
        RunStatus::Failed
    );

    let explicit = new_run(&store, "e");
    let explicit_id = explicit.id();
    explicit.end(RunStatus::Killed).unwrap();
    assert_eq!(
        store.run(explicit_id).unwrap().info.status,
        RunStatus::Killed
    );
    assert!(new_run(&store, "e").end(RunStatus::Running).is_err());
}

#[test]
fn deleted_runs_refuse_logging_until_restored_and_runs_can_be_resumed() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    let id = run.id();
    run.log_metric("loss", 1.0, 0).unwrap();
    store.delete_run(id).unwrap();
    assert_eq!(
        store.run(id).unwrap().info.lifecycle_stage,
        LifecycleStage::Deleted
    );
    for outcome in [
        run.log_metric("loss", 2.0, 1),
        run.log_param("p", "v"),
        run.set_tag("t", "v"),
    ] {
        assert!(matches!(outcome, Err(Error::Deleted { .. })), "{outcome:?}");
    }
    let experiment = store.experiment_by_name("e").unwrap().unwrap();
    assert!(
        store
            .runs(experiment.id, ViewType::ActiveOnly)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .runs(experiment.id, ViewType::DeletedOnly)
            .unwrap()
            .len(),
        1
    );
    store.restore_run(id).unwrap();
    run.log_metric("loss", 2.0, 1).unwrap();
    run.finish().unwrap();
    assert_eq!(store.run(id).unwrap().info.status, RunStatus::Finished);

    let resumed = store.resume_run(id).unwrap();
    assert_eq!(store.run(id).unwrap().info.status, RunStatus::Running);
    resumed.log_metric("loss", 3.0, 2).unwrap();
    resumed.finish().unwrap();
    let view = store.run(id).unwrap();
    assert_eq!(view.metrics["loss"].count, 3);
    assert_eq!(view.info.status, RunStatus::Finished);
    assert!(matches!(
        store.resume_run(RunId(77)),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn params_are_immutable_and_tags_mutable() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    run.log_param("lr", "0.01").unwrap();
    run.log_param("lr", "0.01").unwrap();
    let error = run.log_param("lr", "0.02").unwrap_err();
    assert!(
        matches!(&error, Error::ParamChanged { existing, attempted, .. } if existing == "0.01" && attempted == "0.02"),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("0.01") && message.contains("0.02"),
        "{message}"
    );
    assert!(run.log_params(&[("a", "1"), ("a", "2")]).is_err());
    run.log_params(&[("a", "1"), ("b", "2")]).unwrap();

    run.set_tag("model", "resnet").unwrap();
    run.set_tag("model", "vit").unwrap();
    run.set_note("tried a bigger batch").unwrap();
    let view = run.view().unwrap();
    assert_eq!(view.tags["model"], "vit");
    assert_eq!(view.tags["mlflow.note.content"], "tried a bigger batch");
    run.delete_tag("model").unwrap();
    assert!(matches!(run.delete_tag("model"), Err(Error::NotFound(_))));
    let id = run.id();
    drop(run);
    drop(store);

    let store = open(&dir);
    let view = store.run(id).unwrap();
    assert_eq!(view.params["lr"], "0.01");
    assert_eq!(view.params.len(), 3);
    assert!(!view.tags.contains_key("model"));
    // Immutability holds across reopen.
    let resumed = store.resume_run(id).unwrap();
    assert!(matches!(
        resumed.log_param("lr", "0.5"),
        Err(Error::ParamChanged { .. })
    ));
}

#[test]
fn metric_values_are_kept_exactly_with_every_point_and_mlflow_latest_semantics() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::from_bits(0x7ff8_dead_beef_0001),
    ];
    for (step, value) in specials.iter().enumerate() {
        run.log_metric_at("odd", *value, step as i64, 1000 + step as i64)
            .unwrap();
    }
    // Several values at one step are all kept, in logging order.
    run.log_metric_at("dup", 1.0, 5, 100).unwrap();
    run.log_metric_at("dup", 2.0, 5, 100).unwrap();
    run.log_metric_at("dup", 3.0, 5, 99).unwrap();
    // The latest is the greatest (step, timestamp), not the last logged.
    run.log_metric_at("dup", 9.0, 4, 500).unwrap();
    run.log_batch(
        "batch",
        &[0, 1, 2],
        Some(&[7, 8, 9]),
        &[0.5, f64::NAN, 0.25],
    )
    .unwrap();
    let view = run.view().unwrap();
    let dup = view.metrics["dup"];
    assert_eq!(
        (dup.count, dup.last_value, dup.last_timestamp_ms),
        (4, 2.0, 100)
    );
    assert_eq!(
        (
            dup.first_step,
            dup.last_step,
            dup.min_value,
            dup.max_value,
            dup.max_step
        ),
        (4, 5, 1.0, 9.0, 4)
    );
    let odd = view.metrics["odd"];
    assert_eq!(odd.last_value.to_bits(), specials[4].to_bits());
    assert_eq!(
        (odd.min_value, odd.max_value),
        (f64::NEG_INFINITY, f64::INFINITY)
    );
    assert_eq!(view.metrics["batch"].count, 3);
    let id = run.id();
    drop(run);
    store.close().unwrap();

    // Every point, bit for bit, in the log.
    let contents = read(&dir.dir.path().join("wal")).unwrap();
    let odd_bits: Vec<u64> = contents
        .points_of(id)
        .iter()
        .filter(|p| p.key == "odd")
        .map(|p| p.value_bits)
        .collect();
    assert_eq!(
        odd_bits,
        specials.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let dup: Vec<(i64, u64)> = contents
        .points_of(id)
        .iter()
        .filter(|p| p.key == "dup")
        .map(|p| (p.step, p.value_bits))
        .collect();
    assert_eq!(
        dup,
        vec![
            (5, 1f64.to_bits()),
            (5, 2f64.to_bits()),
            (5, 3f64.to_bits()),
            (4, 9f64.to_bits())
        ]
    );

    // And the same summary after a reopen rebuilds the catalog from the log.
    let reopened = open(&dir).run(id).unwrap();
    assert_eq!(reopened.metrics["dup"], dup_summary(&view));
    assert_eq!(
        reopened.metrics["odd"].last_value.to_bits(),
        specials[4].to_bits()
    );
}

fn dup_summary(view: &runlog::RunView) -> runlog::MetricSummary {
    view.metrics["dup"]
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    for key in ["", "/abs", "a//b", "bad*char", "../up", &"k".repeat(251)] {
        let error = run.log_metric(key, 1.0, 0).unwrap_err();
        assert!(matches!(error, Error::InvalidInput(_)), "{key:?}: {error}");
        assert!(run.log_param(key, "v").is_err());
        assert!(run.set_tag(key, "v").is_err());
    }
    let error = run.log_param("long", &"v".repeat(6_001)).unwrap_err();
    assert!(error.to_string().contains("6000"), "{error}");
    assert!(run.set_tag("long", &"v".repeat(8_001)).is_err());
    run.set_tag("ok", &"v".repeat(8_000)).unwrap();
    assert!(matches!(store.run(RunId(1)), Err(Error::NotFound(_))));
    assert!(matches!(
        store.delete_run(RunId(1)),
        Err(Error::NotFound(_))
    ));
    assert!(run.log_batch("k", &[1, 2], None, &[1.0]).is_err());
    // Nothing invalid reached the log: a reopen shows the same run.
    let id = run.id();
    let before = run.view().unwrap();
    drop(run);
    let after = open(&dir).run(id).unwrap();
    assert_eq!(before.tags, after.tags);
    assert!(after.metrics.is_empty());
}

#[test]
fn artifacts_are_stored_atomically_listed_and_verified() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    let stored = run
        .log_artifact_bytes("model/weights.bin", &[1, 2, 3, 4])
        .unwrap();
    assert_eq!(stored.size_bytes, 4);
    let source = dir.dir.path().join("config.yaml");
    std::fs::write(&source, "lr: 0.01\n").unwrap();
    run.log_artifact(&source).unwrap();
    let listed = run.artifacts().unwrap();
    assert_eq!(
        listed.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
        ["config.yaml", "model/weights.bin"]
    );
    assert_eq!(run.read_artifact("config.yaml").unwrap(), b"lr: 0.01\n");
    assert!(matches!(
        run.read_artifact("missing"),
        Err(Error::NotFound(_))
    ));
    // Write-once: the file keeps matching the one event that recorded it.
    assert!(matches!(
        run.log_artifact_bytes("config.yaml", b"other"),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(run.read_artifact("config.yaml").unwrap(), b"lr: 0.01\n");
    for bad in ["../escape", "/abs", "a//b", ""] {
        assert!(
            matches!(
                run.log_artifact_bytes(bad, b"x"),
                Err(Error::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    // No temporary file is left behind.
    let run_dir = dir.dir.path().join("artifacts").join(run.id().to_string());
    let leftovers: Vec<_> = walk(&run_dir)
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Damage on disk is detected, not served.
    std::fs::write(run_dir.join("model/weights.bin"), [1, 2, 3, 5]).unwrap();
    let error = run.read_artifact("model/weights.bin").unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt(c) if matches!(c.kind, runlog::CorruptionKind::DigestMismatch { .. })),
        "{error}"
    );

    let id = run.id();
    drop(run);
    let reopened = open(&dir).run(id).unwrap();
    assert_eq!(reopened.artifacts.len(), 2);
    assert_eq!(reopened.artifacts["config.yaml"].sha256, listed[0].sha256);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn a_read_only_handle_and_a_second_handle_see_live_writes() {
    let dir = TempStore::new();
    let writer = open(&dir);
    let run = new_run(&writer, "e");
    run.log_metric("loss", 1.0, 0).unwrap();
    let reader = Store::open_with(
        dir.dir.path(),
        StoreOptions {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(reader.run(run.id()).unwrap().metrics["loss"].count, 1);
    for step in 1..1000 {
        run.log_metric("loss", 1.0 / step as f64, step).unwrap();
    }
    run.log_param("lr", "0.1").unwrap();
    // Reads may be up to `refresh_interval` stale; `refresh` makes them current now.
    reader.refresh().unwrap();
    let view = reader.run(run.id()).unwrap();
    assert_eq!(view.metrics["loss"].count, 1000);
    assert_eq!(view.metrics["loss"].last_step, 999);
    assert_eq!(view.params["lr"], "0.1");
    assert!(matches!(
        reader.get_or_create_experiment("other"),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(reader.resume_run(run.id()), Err(Error::ReadOnly)));

    // A second writing handle in the same process: its own lanes, the same store.
    let second = open(&dir);
    let other = second.resume_run(run.id()).unwrap();
    other.log_metric("loss", 0.0, 1000).unwrap();
    writer.refresh().unwrap();
    reader.refresh().unwrap();
    assert_eq!(writer.run(run.id()).unwrap().metrics["loss"].count, 1001);
    assert_eq!(
        reader.run(run.id()).unwrap().metrics["loss"].last_step,
        1000
    );
}

#[test]
fn handles_are_send_sync_and_many_threads_log_to_one_run() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<Run>();
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let run = &run;
            scope.spawn(move || {
                for step in 0..2_000 {
                    run.log_metric(&format!("t{thread}"), step as f64, step)
                        .unwrap();
                    run.log_metric("shared", 1.0, step).unwrap();
                }
            });
        }
    });
    let view = run.view().unwrap();
    assert_eq!(view.metrics["shared"].count, 8_000);
    assert_eq!(view.metrics["t3"].count, 2_000);
    let id = run.id();
    drop(run);
    assert_eq!(open(&dir).run(id).unwrap().metrics["shared"].count, 8_000);
}

/// A key definition can only carry a huge id in a crafted file (records pass their CRC, writers
/// number keys from 0): opening the store must not allocate a table of that size.
#[test]
fn a_crafted_huge_key_id_does_not_blow_up_open() {
    use runlog::wal::record::{RecordType, encode_frame};
    use runlog::wal::segment::{FORMAT_VERSION, SegmentHeader};
    use runlog::wal::{Event, Seal};
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    let header = SegmentHeader {
        format_version: FORMAT_VERSION,
        writer: runlog::WriterId(0xabc),
        sequence: runlog::SegmentSequence(0),
        created_unix_ms: 0,
        segment_bytes: 4096,
    };
    let mut bytes = header.encode().to_vec();
    let event = Event::MetricKeyDefined {
        run: RunId(1),
        key_id: runlog::KeyId(u32::MAX),
        key: "loss".into(),
    };
    let mut record = vec![0u8; 10];
    event.encode_payload(&mut record);
    encode_frame(&mut record, RecordType::MetricKeyDefined, 0);
    bytes.extend_from_slice(&record);
    let mut seal = vec![0u8; 10];
    Seal {
        record_count: 1,
        final_segment: true,
    }
    .encode(&mut seal);
    encode_frame(&mut seal, RecordType::Seal, 0);
    bytes.extend_from_slice(&seal);
    std::fs::write(wal.join("0000000000000abc-0000000000.wal"), &bytes).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert!(store.experiments(ViewType::All).unwrap().is_empty());
}

/// Duplicates among one call's params are found in linear time: 300,000 params with the only
/// clash at the very end are refused at once (the quadratic check took minutes), and nothing
/// of the call is written.
#[test]
fn log_params_checks_a_large_call_in_linear_time() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run(&store, "e");
    let keys: Vec<String> = (0..300_000).map(|i| format!("p{i}")).collect();
    let mut params: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "1")).collect();
    params.push(("p0", "2"));
    let error = run.log_params(&params).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput(m) if m.contains("'p0' is given twice")),
        "{error}"
    );
    assert!(run.view().unwrap().params.is_empty());
    params.pop();
    params.truncate(50_000);
    params.push(("p0", "1"));
    run.log_params(&params).unwrap();
    assert_eq!(run.view().unwrap().params.len(), 50_000);
}
