//! Metric handles (`Run::metric`): they log exactly what the string path logs, from any
//! thread, through any writer, and refuse what it refuses.

use std::time::{SystemTime, UNIX_EPOCH};

use runlog::query::History;
use runlog::wal::RunStatus;
use runlog::{Durability, Error, Run, RunOptions, Store, StoreOptions};

use crate::util::Store as TempStore;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    }
}

fn new_run(store: &Store) -> Run {
    let experiment = store.get_or_create_experiment("handles").unwrap();
    store
        .start_run(experiment.id, RunOptions::default())
        .unwrap()
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Values whose bits a careless path would change: NaN payloads, signed zeros, infinities,
/// subnormals, f32-exact and not.
fn awkward_values() -> Vec<f64> {
    vec![
        f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001),
        f64::from_bits(0xfff0_0000_0000_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        f64::MIN_POSITIVE / 3.0,
        0.1,
        f64::from(0.1f32),
        f64::MAX,
        -1.5,
    ]
}

/// A history as (step, timestamp, value bits), sorted: comparable whatever order ties take.
fn points(history: &History) -> Vec<(i64, i64, u64)> {
    let mut points: Vec<_> = history
        .steps
        .iter()
        .zip(&history.timestamps_ms)
        .zip(&history.values)
        .map(|((step, timestamp), value)| (*step, *timestamp, value.to_bits()))
        .collect();
    points.sort_unstable();
    points
}

#[test]
fn a_handle_logs_exactly_what_the_string_path_logs() {
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let (by_string, by_handle) = (new_run(&store), new_run(&store));
    let handle = by_handle.metric("loss").unwrap();
    let steps = [0, -3, i64::MAX, i64::MIN, 7, 7, 1 << 40];
    for (index, value) in awkward_values().into_iter().enumerate() {
        let step = steps[index % steps.len()];
        let timestamp_ms = 1_700_000_000_000 + (index as i64 * 37) % 11 - 5;
        by_string
            .log_metric_at("loss", value, step, timestamp_ms)
            .unwrap();
        handle.log_at(value, step, timestamp_ms).unwrap();
    }
    let summary = |run: &Run| run.view().unwrap().metrics["loss"];
    let (expected, found) = (summary(&by_string), summary(&by_handle));
    assert_eq!(format!("{expected:?}"), format!("{found:?}"));
    let history = |store: &Store, run: &Run| points(&store.history(run.id(), "loss", ..).unwrap());
    let expected = history(&store, &by_string);
    assert_eq!(expected.len(), awkward_values().len());
    assert_eq!(history(&store, &by_handle), expected);
    let ids = (by_string.id(), by_handle.id());
    drop((by_string, by_handle, handle));
    store.close().unwrap();
    drop(store);

    // What the log holds, read back by a fresh open.
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let history = |run| points(&store.history(run, "loss", ..).unwrap());
    assert_eq!(history(ids.1), history(ids.0));
    assert_eq!(history(ids.1), expected);
}

#[test]
fn a_handle_timestamps_each_point_with_the_wall_clock_millisecond() {
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let run = new_run(&store);
    let handle = run.metric("loss").unwrap();
    let mut bounds = Vec::new();
    // Long enough to calibrate the counter-backed clock and cross many milliseconds after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(50);
    let mut step = 0;
    while std::time::Instant::now() < deadline {
        let before = wall_clock_ms();
        handle.log(step as f64, step).unwrap();
        run.log_metric("string", step as f64, step).unwrap();
        bounds.push((before, wall_clock_ms()));
        step += 1;
    }
    for key in ["loss", "string"] {
        let history = store.history(run.id(), key, ..).unwrap();
        assert_eq!(history.steps.len(), bounds.len());
        for ((step, timestamp_ms), (before, after)) in history
            .steps
            .iter()
            .zip(&history.timestamps_ms)
            .zip(&bounds)
        {
            assert!(
                before <= timestamp_ms && timestamp_ms <= after,
                "{key} at step {step}: {before} <= {timestamp_ms} <= {after}"
            );
        }
    }
}

#[test]
fn handles_log_from_many_threads_shared_and_cloned() {
    const THREADS: i64 = 8;
    const POINTS: i64 = 2_000;
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let run = new_run(&store);
    let shared = run.metric("shared").unwrap();
    let cloned = run.metric("cloned").unwrap();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (shared, cloned) = (&shared, cloned.clone());
            let run = &run;
            scope.spawn(move || {
                for i in 0..POINTS {
                    let step = thread * POINTS + i;
                    shared.log_at(step as f64, step, step).unwrap();
                    cloned.log_at(-step as f64, step, step).unwrap();
                    // The string path on the same series, interleaved.
                    run.log_metric_at("shared", 0.5, -step - 1, 0).unwrap();
                }
            });
        }
    });
    let total = (THREADS * POINTS) as u64;
    let metrics = run.view().unwrap().metrics;
    assert_eq!(metrics["shared"].count, 2 * total);
    assert_eq!(metrics["cloned"].count, total);
    let id = run.id();
    drop(run);
    store.close().unwrap();
    drop(store);
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let cloned = store.history(id, "cloned", ..).unwrap();
    let expected: Vec<i64> = (0..THREADS * POINTS).collect();
    assert_eq!(cloned.steps, expected);
    assert!(
        cloned
            .steps
            .iter()
            .zip(&cloned.values)
            .all(|(s, v)| *v == -*s as f64)
    );
    let shared = store.history(id, "shared", 0..).unwrap();
    assert_eq!(shared.steps, expected);
    assert_eq!(store.run(id).unwrap().metrics["shared"].count, 2 * total);
}

/// `close` ends every lane's writer; the lane's next writer interns keys afresh, so a handle
/// must not keep the id the old writer gave its key.
#[test]
fn a_handle_follows_its_lane_to_a_new_writer() {
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let run = new_run(&store);
    // Another key first, so that the new writer numbers the handle's key differently.
    let (first, second) = (run.metric("first").unwrap(), run.metric("second").unwrap());
    first.log_at(1.0, 0, 0).unwrap();
    second.log_at(2.0, 0, 0).unwrap();
    store.close().unwrap();
    second.log_at(2.5, 1, 0).unwrap();
    first.log_at(1.5, 1, 0).unwrap();
    let id = run.id();
    run.detach();
    store.close().unwrap();
    drop((first, second, store));
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let values = |key| store.history(id, key, ..).unwrap().values;
    assert_eq!(values("first"), [1.0, 1.5]);
    assert_eq!(values("second"), [2.0, 2.5]);
}

#[test]
fn a_handle_logs_after_its_run_ends_as_the_string_path_does() {
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let run = new_run(&store);
    let id = run.id();
    let handle = run.metric("loss").unwrap();
    handle.log(1.0, 0).unwrap();
    run.finish().unwrap();
    // The keyed path accepts points on a finished run (MLflow does); so does the handle.
    store.log_metric(id, "loss", 2.0, 1, 0).unwrap();
    handle.log(3.0, 2).unwrap();
    let view = store.run(id).unwrap();
    assert_eq!(view.info.status, RunStatus::Finished);
    assert_eq!(view.metrics["loss"].count, 3);
}

#[test]
fn a_handle_refuses_a_deleted_run_like_the_string_path() {
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let run = new_run(&store);
    let handle = run.metric("loss").unwrap();
    handle.log(1.0, 0).unwrap();
    store.delete_run(run.id()).unwrap();
    assert!(matches!(
        run.log_metric("loss", 2.0, 1),
        Err(Error::Deleted { .. })
    ));
    assert!(matches!(handle.log(2.0, 1), Err(Error::Deleted { .. })));
    assert!(matches!(
        handle.log_at(2.0, 1, 0),
        Err(Error::Deleted { .. })
    ));
    // A handle made while the run is deleted refuses too; restored, both log again.
    let late = run.metric("late").unwrap();
    assert!(matches!(late.log(1.0, 0), Err(Error::Deleted { .. })));
    store.restore_run(run.id()).unwrap();
    handle.log(2.0, 1).unwrap();
    late.log(1.0, 0).unwrap();
    let metrics = run.view().unwrap().metrics;
    assert_eq!((metrics["loss"].count, metrics["late"].count), (2, 1));
}

#[test]
fn a_handle_refuses_an_invalid_key_and_leaves_no_series_until_it_logs() {
    let dir = TempStore::new();
    let store = Store::open_with(dir.dir.path(), options()).unwrap();
    let run = new_run(&store);
    for key in ["", "bad\u{0}key", &"k".repeat(100_000)] {
        assert!(matches!(
            run.metric(key).map(drop),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            run.log_metric(key, 1.0, 0),
            Err(Error::InvalidInput(_))
        ));
    }
    let unused = run.metric("unused").unwrap();
    assert!(run.view().unwrap().metrics.is_empty());
    assert_eq!(unused.key(), "unused");
    assert_eq!(unused.run_id(), run.id());
}
