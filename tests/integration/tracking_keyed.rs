//! Writes keyed by run id (`Store::log_batch`, `update_run`, ...): MLflow's batch rules, one
//! test each, and many threads logging to one run by id, out of order, while a compactor runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use runlog::wal::RunStatus;
use runlog::{
    Durability, Error, MetricPoint, MetricSummary, RunId, RunOptions, RunView, Store, StoreOptions,
};

use crate::util::{Rng, Store as TempStore};

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 16 * 1024,
        ..StoreOptions::default()
    }
}

fn open(dir: &TempStore) -> Store {
    Store::open_with(dir.dir.path(), options()).unwrap()
}

/// A store under `Durability::Sync` whose storage fails where a test says.
fn synced(dir: &TempStore) -> (Store, Arc<runlog::io::FaultStorage>) {
    let storage = Arc::new(runlog::io::FaultStorage::new());
    let options = StoreOptions {
        durability: Durability::Sync,
        storage: storage.clone(),
        ..options()
    };
    (Store::open_with(dir.dir.path(), options).unwrap(), storage)
}

/// A run with no handle left: from here on only its id reaches it, as from a server.
fn new_run_id(store: &Store) -> RunId {
    let experiment = store.get_or_create_experiment("keyed").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let id = run.id();
    run.detach();
    id
}

fn point(key: &str, step: i64, value: f64) -> MetricPoint<'_> {
    MetricPoint {
        key,
        value,
        step,
        timestamp_ms: 1_700_000_000_000 + step,
    }
}

const KEYS: [&str; 3] = ["train/loss", "train/acc", "lr"];
const THREADS: usize = 8;
const STEPS: i64 = 1_500;

/// Values in quarters, distinct per series and small: every sum of them is exact in any order,
/// so summaries built in different orders compare equal.
fn value_of(key_index: usize, step: i64) -> f64 {
    (step as f64) * 0.25 - (key_index as f64) * 1_000.0
}

#[cfg(feature = "parquet")]
#[test]
fn eight_threads_log_to_one_run_by_id_out_of_order_while_compacting() {
    let mut rng = Rng::from_env("eight_threads_log_to_one_run_by_id_out_of_order_while_compacting");
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);

    // Every (key, step) once, shuffled, dealt to the threads.
    let mut points: Vec<(usize, i64)> = (0..KEYS.len())
        .flat_map(|k| (0..STEPS).map(move |s| (k, s)))
        .collect();
    for i in (1..points.len()).rev() {
        points.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let shares: Vec<Vec<(usize, i64)>> = (0..THREADS)
        .map(|t| points.iter().skip(t).step_by(THREADS).copied().collect())
        .collect();
    let batch_seeds: Vec<u64> = (0..THREADS).map(|_| rng.next_u64()).collect();

    let done = AtomicBool::new(false);
    let compacted_points = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let report = store.compact().unwrap();
                compacted_points.fetch_add(report.points, Ordering::Relaxed);
            }
        });
        let loggers: Vec<_> = shares
            .iter()
            .zip(&batch_seeds)
            .map(|(share, seed)| {
                let store = store.clone();
                scope.spawn(move || log_share(&store, id, share, *seed))
            })
            .collect();
        for logger in loggers {
            logger.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    compacted_points.fetch_add(store.compact().unwrap().points, Ordering::Relaxed);
    assert!(compacted_points.load(Ordering::Relaxed) > 0);

    check_every_point(&store, id);
    store.close().unwrap();
    drop(store);
    check_every_point(&open(&dir), id);
}

/// Logs `share` to `run` by id in batches of 1 to 5 points (most of one point, as MLflow's
/// async client sends them).
fn log_share(store: &Store, run: RunId, share: &[(usize, i64)], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut rest = share;
    while !rest.is_empty() {
        let size = if rng.below(4) == 0 {
            1 + rng.below(5) as usize
        } else {
            1
        };
        let (batch, after) = rest.split_at(size.min(rest.len()));
        let batch: Vec<MetricPoint> = batch
            .iter()
            .map(|(k, s)| point(KEYS[*k], *s, value_of(*k, *s)))
            .collect();
        store.log_batch(run, &batch, &[], &[]).unwrap();
        rest = after;
    }
}

fn check_every_point(store: &Store, run: RunId) {
    let view = store.run(run).unwrap();
    for (k, key) in KEYS.iter().enumerate() {
        let history = store.history(run, key, ..).unwrap();
        let steps: Vec<i64> = (0..STEPS).collect();
        assert_eq!(history.steps, steps, "{key}: steps");
        let timestamps: Vec<i64> = steps.iter().map(|s| 1_700_000_000_000 + s).collect();
        assert_eq!(history.timestamps_ms, timestamps, "{key}: timestamps");
        let values: Vec<u64> = steps.iter().map(|s| value_of(k, *s).to_bits()).collect();
        let found: Vec<u64> = history.values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(found, values, "{key}: values");

        let mut expected = MetricSummary::EMPTY;
        for step in 0..STEPS {
            expected.update(step, 1_700_000_000_000 + step, value_of(k, step));
        }
        assert_eq!(view.metrics[*key], expected, "{key}: summary");
    }
}

/// The run's view with its tags, params and metrics, for before/after comparisons.
fn contents(store: &Store, run: RunId) -> RunView {
    store.run(run).unwrap()
}

/// Params or tags of a batch.
type Pairs<'a> = &'a [(&'a str, &'a str)];

#[test]
fn a_refused_batch_writes_nothing() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    store
        .log_batch(
            id,
            &[point("loss", 1, 0.5)],
            &[("lr", "0.1")],
            &[("t", "a")],
        )
        .unwrap();
    let before = contents(&store, id);

    let too_many: Vec<MetricPoint> = (0..1_001).map(|s| point("loss", s, 0.0)).collect();
    let long_tag = "v".repeat(8_001);
    let good = [point("loss", 2, 0.25), point("acc", 2, 0.75)];
    let bad_key = [point("loss", 2, 0.25), point("a*b", 2, 1.0)];
    let cases: [(&str, &[MetricPoint], Pairs, Pairs); 6] = [
        (
            "a bad metric key after a good point",
            &bad_key,
            &[],
            &[("t", "b")],
        ),
        (
            "a changed param",
            &good,
            &[("new", "1"), ("lr", "0.2")],
            &[("t", "b")],
        ),
        ("a param key twice", &good, &[("p", "1"), ("p", "1")], &[]),
        (
            "a bad tag key",
            &good,
            &[("new", "1")],
            &[("t", "b"), ("/x", "1")],
        ),
        ("a tag value too long", &good, &[], &[("t", &long_tag)]),
        ("1,001 points", &too_many, &[], &[]),
    ];
    for (case, metrics, params, tags) in cases {
        let refused = store.log_batch(id, metrics, params, tags);
        assert!(refused.is_err(), "{case}: accepted");
        assert_eq!(contents(&store, id), before, "{case}: wrote something");
        assert_eq!(store.history(id, "acc", ..).unwrap().len(), 0, "{case}");
    }
    assert!(matches!(
        store.log_batch(id, &good, &[("lr", "0.2")], &[]),
        Err(Error::ParamChanged { .. })
    ));
}

#[test]
fn params_by_id_are_immutable_and_the_same_value_again_is_accepted() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    store.log_param(id, "lr", "0.01").unwrap();
    store.log_param(id, "lr", "0.01").unwrap();
    store.log_batch(id, &[], &[("lr", "0.01")], &[]).unwrap();
    let changed = store.log_param(id, "lr", "0.02").unwrap_err();
    match &changed {
        Error::ParamChanged {
            run,
            key,
            existing,
            attempted,
        } => {
            assert_eq!((*run, key.as_str()), (id, "lr"));
            assert_eq!((existing.as_str(), attempted.as_str()), ("0.01", "0.02"));
        }
        other => panic!("expected ParamChanged, got {other:?}"),
    }
    let message = changed.to_string();
    assert!(message.contains("'lr'") && message.contains("0.01") && message.contains("0.02"));
    assert_eq!(store.run(id).unwrap().params["lr"], "0.01");
}

#[test]
fn threads_racing_on_one_param_by_id_agree_on_one_value() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    let outcomes: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    store
                        .log_param(id, "seed", &t.to_string())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    let winner = outcomes.iter().position(Result::is_ok).unwrap();
    assert_eq!(store.run(id).unwrap().params["seed"], winner.to_string());
}

#[test]
fn a_deleted_run_refuses_every_keyed_write_until_restored() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    store.set_tag(id, "t", "1").unwrap();
    store.delete_run(id).unwrap();
    let refusals = [
        store.log_batch(id, &[point("loss", 1, 0.5)], &[], &[]),
        store.log_metric(id, "loss", 0.5, 1, 1_700_000_000_000),
        store.log_param(id, "lr", "0.1"),
        store.set_tag(id, "t", "2"),
        store.delete_tag(id, "t"),
        store
            .update_run(id, Some(RunStatus::Finished), None, None)
            .map(|_| ()),
        store.log_artifact_bytes(id, "a.txt", b"a").map(|_| ()),
    ];
    for (index, refused) in refusals.into_iter().enumerate() {
        assert!(
            matches!(&refused, Err(Error::Deleted { what }) if what.contains(&id.to_string())),
            "write {index}: {refused:?}"
        );
    }
    let view = store.run(id).unwrap();
    assert!(view.metrics.is_empty() && view.params.is_empty() && view.artifacts.is_empty());
    assert_eq!(view.tags["t"], "1");
    assert_eq!(view.info.status, RunStatus::Running);

    store.restore_run(id).unwrap();
    store
        .log_metric(id, "loss", 0.5, 1, 1_700_000_000_000)
        .unwrap();
    assert_eq!(store.run(id).unwrap().metrics["loss"].count, 1);
}

#[test]
fn a_finished_run_accepts_keyed_writes_and_stays_finished() {
    let dir = TempStore::new();
    let store = open(&dir);
    let experiment = store.get_or_create_experiment("keyed").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let id = run.id();
    run.finish().unwrap();
    let before = store.run(id).unwrap().info;
    assert_eq!(before.status, RunStatus::Finished);

    store
        .log_batch(
            id,
            &[point("loss", 7, 0.5)],
            &[("lr", "0.1")],
            &[("t", "1")],
        )
        .unwrap();
    store.log_param(id, "epochs", "3").unwrap();
    store.set_tag(id, "t", "2").unwrap();
    store.delete_tag(id, "t").unwrap();
    store.log_artifact_bytes(id, "notes.txt", b"late").unwrap();

    let view = store.run(id).unwrap();
    assert_eq!(
        view.info, before,
        "a keyed write changed the run's attributes"
    );
    assert_eq!(view.metrics["loss"].last_step, 7);
    assert_eq!(view.params.len(), 2);
    assert!(!view.tags.contains_key("t"));
    assert_eq!(store.read_artifact(id, "notes.txt").unwrap(), b"late");
    drop(store);
    assert_eq!(open(&dir).run(id).unwrap().info, before, "after reopening");
}

#[test]
fn update_run_changes_exactly_what_it_is_given() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    let started = store.run(id).unwrap().info;

    let info = store
        .update_run(id, Some(RunStatus::Finished), Some(1_700_000_000_123), None)
        .unwrap();
    assert_eq!(
        (info.status, info.end_time_ms),
        (RunStatus::Finished, Some(1_700_000_000_123))
    );
    assert_eq!(info.name, started.name);

    let info = store
        .update_run(id, Some(RunStatus::Failed), None, None)
        .unwrap();
    assert_eq!(
        (info.status, info.end_time_ms),
        (RunStatus::Failed, Some(1_700_000_000_123))
    );

    let info = store
        .update_run(id, None, Some(1_700_000_000_456), None)
        .unwrap();
    assert_eq!(
        (info.status, info.end_time_ms),
        (RunStatus::Failed, Some(1_700_000_000_456))
    );

    let info = store.update_run(id, None, None, Some("baseline")).unwrap();
    assert_eq!(info.name, "baseline");
    assert_eq!(
        (info.status, info.end_time_ms),
        (RunStatus::Failed, Some(1_700_000_000_456))
    );
    assert_eq!(store.run(id).unwrap().tags["mlflow.runName"], "baseline");
    assert_eq!(info.start_time_ms, started.start_time_ms);

    drop(store);
    let reopened = open(&dir).run(id).unwrap().info;
    assert_eq!(reopened, info, "after reopening");
}

#[test]
fn setting_the_run_name_tag_renames_the_run() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    store.set_tag(id, "mlflow.runName", "renamed").unwrap();
    assert_eq!(store.run(id).unwrap().info.name, "renamed");
    drop(store);
    assert_eq!(open(&dir).run(id).unwrap().info.name, "renamed");
}

#[test]
fn keyed_writes_find_runs_of_other_handles_and_refuse_unknown_ids() {
    let dir = TempStore::new();
    let creator = open(&dir);
    let server = open(&dir);
    let id = new_run_id(&creator);
    server
        .log_metric(id, "loss", 0.5, 1, 1_700_000_000_000)
        .unwrap();
    server.set_tag(id, "via", "server").unwrap();
    // Another handle's writes show within `refresh_interval`; `refresh` takes them in now.
    creator.refresh().unwrap();
    assert_eq!(creator.run(id).unwrap().metrics["loss"].count, 1);
    assert_eq!(creator.run(id).unwrap().tags["via"], "server");

    let unknown = RunId(0x1234);
    assert!(matches!(
        server.log_metric(unknown, "loss", 0.5, 1, 0),
        Err(Error::NotFound(what)) if what.contains(&unknown.to_string())
    ));
    assert!(matches!(
        server.update_run(unknown, Some(RunStatus::Finished), None, None),
        Err(Error::NotFound(_))
    ));
}

/// A handle's own appends are counted once even when its writers come and go (each `close`
/// makes the next append start a new writer) while refreshes list the log folder: a writer
/// created between a refresh's look at the handle's writers and its listing of the folder was
/// taken for another process's, and its points counted twice.
#[test]
fn writers_created_during_a_refresh_are_not_counted_twice() {
    let dir = TempStore::new();
    let store = open(&dir);
    let id = new_run_id(&store);
    let done = AtomicBool::new(false);
    let points_per_thread = 3_000;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                store.close().unwrap();
            }
        });
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                store.refresh().unwrap();
            }
        });
        let loggers: Vec<_> = (0..4)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..points_per_thread {
                        let step = t * points_per_thread + i;
                        store.log_metric(id, "loss", 0.5, step, 0).unwrap();
                    }
                })
            })
            .collect();
        for logger in loggers {
            logger.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let count = store.run(id).unwrap().metrics["loss"].count;
    assert_eq!(count, 4 * points_per_thread as u64);
}

/// Under `Durability::Sync` a batch is made durable with one msync, not one per point: with
/// every msync after the first failing, a three-point batch still succeeds, and its points are
/// all counted.
#[test]
fn a_synced_batch_costs_one_msync() {
    use runlog::io::Operation;
    let dir = TempStore::new();
    let (store, storage) = synced(&dir);
    let experiment = store.get_or_create_experiment("sync").unwrap();
    let run = store
        .create_run(experiment.id, RunOptions::default())
        .unwrap()
        .id;
    storage.fail_from(Operation::SyncMap, 1, libc::EIO);
    let points: Vec<MetricPoint> = (0..3)
        .map(|step| MetricPoint {
            key: if step == 1 { "acc" } else { "loss" },
            value: step as f64,
            step,
            timestamp_ms: 1_000 + step,
        })
        .collect();
    store.log_batch(run, &points, &[], &[]).unwrap();
    assert_eq!(storage.injected(), 0);
    let view = store.run(run).unwrap();
    assert_eq!(
        (view.metrics["loss"].count, view.metrics["acc"].count),
        (2, 1)
    );
    // The next batch's msync is the failing one: the writer is poisoned, as before.
    assert!(store.log_batch(run, &points, &[], &[]).is_err());
}

/// Under `Durability::Sync` a batch's params and tags are made durable together, with one
/// msync, and its points with one more.
#[test]
fn a_synced_batch_of_params_tags_and_points_costs_two_msyncs() {
    use runlog::io::Operation;
    let dir = TempStore::new();
    let (store, storage) = synced(&dir);
    let experiment = store.get_or_create_experiment("sync").unwrap();
    let run = store
        .create_run(experiment.id, RunOptions::default())
        .unwrap()
        .id;
    storage.fail_from(Operation::SyncMap, 2, libc::EIO);
    let point = MetricPoint {
        key: "loss",
        value: 0.5,
        step: 1,
        timestamp_ms: 1_000,
    };
    let params = [("a", "1"), ("b", "2"), ("c", "3")];
    let tags = [("x", "1"), ("y", "2")];
    store.log_batch(run, &[point], &params, &tags).unwrap();
    assert_eq!(storage.injected(), 0);
    let view = store.run(run).unwrap();
    assert_eq!((view.params.len(), view.tags["y"].as_str()), (3, "2"));
    assert_eq!(view.metrics["loss"].count, 1);
}

/// Under `Durability::Sync` a batch whose msync fails is not shown by the catalog: readers never
/// see params, tags or points that were not made durable.
#[test]
fn a_synced_batch_whose_msync_fails_is_not_shown() {
    use runlog::io::Operation;
    let dir = TempStore::new();
    let (store, storage) = synced(&dir);
    let experiment = store.get_or_create_experiment("sync").unwrap();
    let run = store
        .create_run(experiment.id, RunOptions::default())
        .unwrap()
        .id;
    let point = MetricPoint {
        key: "loss",
        value: 0.5,
        step: 1,
        timestamp_ms: 1_000,
    };
    // The params and tags fail to sync.
    storage.fail_once(Operation::SyncMap, 0, libc::EIO);
    assert!(
        store
            .log_batch(run, &[point], &[("a", "1")], &[("t", "x")])
            .is_err()
    );
    let view = store.run(run).unwrap();
    assert!(view.params.is_empty(), "{:?}", view.params);
    assert!(!view.tags.contains_key("t"));
    assert!(view.metrics.get("loss").is_none_or(|m| m.count == 0));

    // In a second store, the points fail to sync.
    let dir = TempStore::new();
    let (store, storage) = synced(&dir);
    let experiment = store.get_or_create_experiment("sync").unwrap();
    let run = store
        .create_run(experiment.id, RunOptions::default())
        .unwrap()
        .id;
    storage.fail_once(Operation::SyncMap, 0, libc::EIO);
    assert!(store.log_batch(run, &[point, point], &[], &[]).is_err());
    let view = store.run(run).unwrap();
    assert!(view.metrics.get("loss").is_none_or(|m| m.count == 0));
}

/// A run's metadata events go through one lane of a handle whatever thread sends them, so two
/// sequential writes of one tag from two threads within one millisecond replay in order after
/// a reopen (the log is replayed writer by writer). Which thread writes first alternates, so
/// the test catches a revert whichever writer replays first.
#[test]
fn sequential_tag_writes_from_two_threads_keep_their_order_after_reopen() {
    let dir = TempStore::new();
    let lanes_options = StoreOptions {
        lanes: 4,
        ..options()
    };
    let store = Store::open_with(dir.dir.path(), lanes_options.clone()).unwrap();
    let experiment = store.get_or_create_experiment("lanes").unwrap();
    let run = store
        .create_run(experiment.id, RunOptions::default())
        .unwrap()
        .id;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let mut same_ms = Vec::new();
    for index in 0..400 {
        let key = format!("k{index}");
        // Idle threads shift which pair of lanes the two writes take, so every pair of
        // neighbouring lanes (among them one whose writers replay in the opposite order) is
        // tried.
        for _ in 0..index % 4 {
            std::thread::scope(|scope| {
                scope.spawn(|| ());
            });
        }
        let before = now_ms();
        for value in ["a", "b"] {
            // A new thread per write: consecutive threads take different lanes.
            std::thread::scope(|scope| {
                scope.spawn(|| store.set_tag(run, &key, value).unwrap());
            });
        }
        if now_ms() == before {
            same_ms.push(key);
        }
    }
    assert!(
        same_ms.len() >= 10,
        "only {} pairs fell in one millisecond",
        same_ms.len()
    );
    drop(store);
    let reopened = Store::open_with(dir.dir.path(), lanes_options).unwrap();
    let tags = reopened.run(run).unwrap().tags;
    let reverted: Vec<&String> = same_ms.iter().filter(|k| tags[*k] != "b").collect();
    assert!(
        reverted.is_empty(),
        "{} of {} reverted: {reverted:?}",
        reverted.len(),
        same_ms.len()
    );
}

/// A batch of one key goes into the log as columns records (split across 16 KiB segments here)
/// and reads back exactly as logged: every point, in logging order, values bit for bit, from
/// this handle, after a reopen and after compaction; a batch of mixed keys beside it as well.
#[cfg(feature = "parquet")]
#[test]
fn a_batch_of_one_key_reads_back_as_logged_from_the_log_and_compacted() {
    let dir = TempStore::new();
    let store = open(&dir);
    let run = new_run_id(&store);
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e-300];
    let logged: Vec<(i64, i64, f64)> = (0..1000i64)
        .map(|i| {
            // Steps that go back, repeat and go negative; values special now and then.
            let step = if i % 7 == 3 { i - 5 } else { i };
            let value = specials
                .get(i as usize % 50)
                .copied()
                .unwrap_or(i as f64 / 3.0);
            (step, 1_000 + i, value)
        })
        .collect();
    let one_key: Vec<MetricPoint> = (logged.iter())
        .map(|&(step, timestamp_ms, value)| MetricPoint {
            key: "loss",
            value,
            step,
            timestamp_ms,
        })
        .collect();
    let mixed: Vec<MetricPoint> = (0..40)
        .map(|step| point(if step % 2 == 0 { "a" } else { "b" }, step, step as f64))
        .collect();
    for chunk in one_key.chunks(300) {
        store.log_batch(run, chunk, &[], &[]).unwrap();
    }
    store.log_batch(run, &mixed, &[], &[]).unwrap();
    let check = |store: &Store, when: &str| {
        let history = store.history(run, "loss", ..).unwrap();
        assert_eq!(history.len(), logged.len(), "{when}");
        let mut got: Vec<(i64, i64, u64)> = (0..history.len())
            .map(|i| {
                let p = history.point(i).unwrap();
                (p.step, p.timestamp_ms, p.value.to_bits())
            })
            .collect();
        let mut want: Vec<(i64, i64, u64)> = (logged.iter())
            .map(|&(step, timestamp_ms, value)| (step, timestamp_ms, value.to_bits()))
            .collect();
        // A history is in step order; points of one step keep their logging order.
        want.sort_by_key(|&(step, ..)| step);
        got.sort_by_key(|&(step, ..)| step);
        assert_eq!(got, want, "{when}");
        let view = store.run(run).unwrap();
        assert_eq!(view.metrics["loss"].count, 1000, "{when}");
        assert_eq!(
            (view.metrics["a"].count, view.metrics["b"].count),
            (20, 20),
            "{when}"
        );
    };
    check(&store, "logged");
    drop(store);
    let store = open(&dir);
    check(&store, "reopened");
    store.compact().unwrap();
    check(&store, "compacted");
    check(&open(&dir), "compacted, reopened");
}

/// Under `Durability::Sync` a one-key batch (a columns record) whose msync fails is not shown,
/// as a stream's is not.
#[test]
fn a_synced_batch_of_one_key_whose_msync_fails_is_not_shown() {
    use runlog::io::Operation;
    let dir = TempStore::new();
    let (store, storage) = synced(&dir);
    let run = new_run_id(&store);
    let points: Vec<MetricPoint> = (0..32).map(|step| point("loss", step, 0.5)).collect();
    store.log_batch(run, &points, &[], &[]).unwrap();
    assert_eq!(store.run(run).unwrap().metrics["loss"].count, 32);
    storage.fail_once(Operation::SyncMap, 0, libc::EIO);
    assert!(store.log_batch(run, &points, &[], &[]).is_err());
    assert_eq!(store.run(run).unwrap().metrics["loss"].count, 32);
}
