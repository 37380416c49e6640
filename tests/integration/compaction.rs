//! Compaction: history answered from compacted files plus the uncompacted log equals what was
//! logged, exactly once, whatever the interleaving of logging, compaction and crashes.
#![cfg(feature = "parquet")]

use std::collections::BTreeMap;
use std::sync::Arc;

use runlog::compaction::FILES_PER_EXPERIMENT_MAX;
use runlog::io::{FaultStorage, Operation};
use runlog::{Durability, Error, RunId, RunOptions, Store, StoreOptions};

use crate::util::Rng;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 16 * 1024,
        ..StoreOptions::default()
    }
}

/// (run, key) -> points (step, timestamp, value bits) in logging order.
type Logged = BTreeMap<(RunId, String), Vec<(i64, i64, u64)>>;

fn check(store: &Store, logged: &Logged, context: &str) {
    for ((run, key), points) in logged {
        let history = store
            .history(*run, key, ..)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        let mut got: Vec<(i64, i64, u64)> = (0..history.len())
            .map(|i| {
                (
                    history.steps[i],
                    history.timestamps_ms[i],
                    history.values[i].to_bits(),
                )
            })
            .collect();
        assert!(
            got.windows(2).all(|w| w[0].0 <= w[1].0),
            "{context}: {run} {key} not sorted by step"
        );
        let mut want = points.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{context}: run {run} key {key}");
        let (lo, hi) = (3, 9);
        let range = store.history(*run, key, lo..hi).unwrap();
        assert_eq!(
            range.len(),
            points.iter().filter(|p| (lo..hi).contains(&p.0)).count(),
            "{context}: range"
        );
        // The catalog's summary, whether built from the log, the manifest or both.
        let view = store.run(*run).unwrap_or_else(|e| panic!("{context}: {e}"));
        let summary = view.metrics.get(key);
        assert_eq!(
            summary.map_or(0, |s| s.count),
            points.len() as u64,
            "{context}: summary count of {run} {key}"
        );
        if let Some(summary) = summary {
            let latest = points
                .iter()
                .max_by(|a, b| {
                    (a.0, a.1)
                        .cmp(&(b.0, b.1))
                        .then_with(|| f64::from_bits(a.2).total_cmp(&f64::from_bits(b.2)))
                })
                .unwrap();
            assert_eq!(
                (summary.last_step, summary.last_value.to_bits()),
                (latest.0, latest.2),
                "{context}: latest of {run} {key}"
            );
            let first = points.iter().map(|p| p.0).min().unwrap();
            assert_eq!(summary.first_step, first, "{context}: first step");
        }
    }
}

#[test]
fn compacted_history_equals_what_was_logged_through_random_interleavings() {
    let mut seeds =
        Rng::from_env("compacted_history_equals_what_was_logged_through_random_interleavings");
    for case in 0..4 {
        let seed = seeds.next_u64();
        eprintln!("case {case}: seed {seed}");
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        let handles = [
            Store::open_with(dir.path(), options()).unwrap(),
            Store::open_with(dir.path(), options()).unwrap(),
        ];
        let experiments = [
            handles[0].get_or_create_experiment("a").unwrap(),
            handles[0].get_or_create_experiment("b").unwrap(),
        ];
        let runs: Vec<RunId> = (0..4)
            .map(|i| {
                handles[0]
                    .start_run(experiments[i % 2].id, RunOptions::default())
                    .unwrap()
                    .id()
            })
            .collect();
        let resumed: Vec<Vec<runlog::Run>> = handles
            .iter()
            .map(|h| runs.iter().map(|r| h.resume_run(*r).unwrap()).collect())
            .collect();
        let mut logged = Logged::new();
        let mut clock = 0i64;
        for op in 0..1_500 {
            let handle = rng.below(2) as usize;
            let run = rng.below(runs.len() as u64) as usize;
            let key = ["loss", "acc", "lr"][rng.below(3) as usize];
            clock += 1;
            match rng.below(100) {
                0..=79 => {
                    let step = rng.below(20) as i64;
                    let value = if rng.below(30) == 0 {
                        f64::NAN
                    } else {
                        rng.below(1000) as f64 / 8.0
                    };
                    resumed[handle][run]
                        .log_metric_at(key, value, step, clock)
                        .unwrap();
                    logged
                        .entry((runs[run], key.to_string()))
                        .or_default()
                        .push((step, clock, value.to_bits()));
                }
                80..=94 => {
                    let steps: Vec<i64> = (0..rng.below(40) as i64).collect();
                    let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
                    let timestamps = vec![clock; steps.len()];
                    resumed[handle][run]
                        .log_batch(key, &steps, Some(&timestamps), &values)
                        .unwrap();
                    let series = logged.entry((runs[run], key.to_string())).or_default();
                    series.extend(
                        steps
                            .iter()
                            .zip(&values)
                            .map(|(s, v)| (*s, clock, v.to_bits())),
                    );
                }
                _ => {
                    handles[handle].compact().unwrap();
                    check(
                        &handles[1 - handle],
                        &logged,
                        &format!("seed {seed} op {op} after compaction"),
                    );
                }
            }
        }
        handles[0].compact().unwrap();
        check(&handles[0], &logged, &format!("seed {seed} end"));
        let files = handles[0].manifest().unwrap().files;
        for experiment in &experiments {
            let count = files
                .iter()
                .filter(|f| f.experiment == experiment.id)
                .count();
            assert!(
                count <= FILES_PER_EXPERIMENT_MAX,
                "{count} files for one experiment"
            );
        }
        drop(resumed);
        drop(handles);
        check(
            &Store::open_with(dir.path(), options()).unwrap(),
            &logged,
            &format!("seed {seed} reopened"),
        );
    }
}

#[test]
fn a_compaction_failing_at_any_storage_call_loses_and_duplicates_nothing() {
    let operations = [
        Operation::Create,
        Operation::SyncMap,
        Operation::SyncFile,
        Operation::SetLen,
        Operation::Link,
        Operation::SyncDir,
        Operation::Remove,
    ];
    for operation in operations {
        for call in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let storage = Arc::new(FaultStorage::new());
            let faulty = StoreOptions {
                storage: storage.clone(),
                ..options()
            };
            let store = Store::open_with(dir.path(), faulty).unwrap();
            let experiment = store.get_or_create_experiment("e").unwrap();
            let run = store
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            run.log_param("lr", "0.1").unwrap();
            run.set_tag("phase", "one").unwrap();
            let mut logged = Logged::new();
            log_steps(&mut logged, &run, "loss", 0..3_000);
            storage.fail_once(operation, call, libc::EIO);
            let outcome = store.compact();
            // Deletions are best effort: a failed one is not an error, only a leftover.
            let failed = outcome.is_err() || storage.injected() > 0;
            let run_id = run.id();
            drop(run);
            drop(store);
            // Reopen on healthy storage: whether the compaction died early, late or not at all,
            // every point is there exactly once, and compacting again works.
            let store = Store::open_with(dir.path(), options()).unwrap();
            let context = format!("{operation:?} fault at call {call}");
            check(&store, &logged, &context);
            let view = store.run(run_id).unwrap();
            assert_eq!(view.params["lr"], "0.1", "{context}");
            assert_eq!(view.tags["phase"], "one", "{context}");
            store.compact().unwrap();
            check(
                &store,
                &logged,
                &format!("{operation:?} fault at call {call}, compacted again"),
            );
            if !failed {
                break;
            }
        }
    }
}

#[test]
fn compacted_files_cost_at_most_4_bytes_per_point_of_f32_origin() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let mut rng = Rng::new(5);
    let mut points = 0u64;
    for _ in 0..4 {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        for key in ["train/loss", "val/loss", "acc", "lr"] {
            let steps: Vec<i64> = (0..50_000).collect();
            let timestamps: Vec<i64> = steps
                .iter()
                .map(|s| 1_700_000_000_000 + s * 250 + rng.below(3) as i64)
                .collect();
            let values: Vec<f64> = steps.iter().map(|s| rng.loss(*s)).collect();
            run.log_batch(key, &steps, Some(&timestamps), &values)
                .unwrap();
            points += steps.len() as u64;
        }
        run.finish().unwrap();
    }
    let report = store.compact().unwrap();
    assert_eq!(report.points, points);
    let per_point = report.bytes as f64 / points as f64;
    eprintln!(
        "{} bytes for {points} points: {per_point:.2} bytes/point",
        report.bytes
    );
    for file in store.manifest().unwrap().files {
        use parquet::file::reader::FileReader;
        let path = dir.path().join(&file.path);
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path).unwrap())
                .unwrap();
        let metadata = reader.metadata();
        for (index, name) in ["step", "timestamp", "value"].iter().enumerate() {
            let bytes: i64 = metadata
                .row_groups()
                .iter()
                .map(|g| g.column(index).compressed_size())
                .sum();
            eprintln!("  {name}: {:.3} bytes/point", bytes as f64 / points as f64);
        }
    }
    assert!(per_point <= 4.0, "{per_point:.2} bytes/point");
}

#[test]
fn a_damaged_manifest_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let run = store
        .start_run(
            store.get_or_create_experiment("e").unwrap().id,
            RunOptions::default(),
        )
        .unwrap();
    run.log_metric("loss", 1.0, 0).unwrap();
    let report = store.compact().unwrap();
    let path = runlog::compaction::manifest::path(dir.path(), report.generation);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[12] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let error = store.history(run.id(), "loss", ..).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt(c) if c.path == path),
        "{error}"
    );
}

/// A segment with a successor has been sealed, so one that lost its seal is damage: compaction
/// must report it, not compact up to it and move the watermark past the loss.
#[test]
fn compaction_refuses_a_segment_that_lost_its_seal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            segment_bytes: 4096,
            ..options()
        },
    )
    .unwrap();
    let run = store
        .start_run(
            store.get_or_create_experiment("e").unwrap().id,
            RunOptions::default(),
        )
        .unwrap();
    for step in 0..2_000 {
        run.log_metric_at("loss", 1.0, step, step).unwrap();
    }
    drop(run);
    store.close().unwrap();
    let segments = crate::util::segments(&dir.path().join("wal"));
    assert!(segments.len() >= 3);
    let first = &segments[0];
    let len = std::fs::metadata(first).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let error = store.compact().unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt(c) if &c.path == first),
        "{error}"
    );
    assert_eq!(
        store.manifest().unwrap().generation,
        0,
        "nothing may be compacted past damage"
    );
}

/// Logs `value = step` at `timestamp = step` for each step, and records it in `logged`.
fn log_steps(logged: &mut Logged, run: &runlog::Run, key: &str, steps: std::ops::Range<i64>) {
    for step in steps {
        run.log_metric_at(key, step as f64, step, step).unwrap();
        logged.entry((run.id(), key.into())).or_default().push((
            step,
            step,
            (step as f64).to_bits(),
        ));
    }
}

/// Everything a run view says, with the running sum behind the mean compared to rounding (its
/// order of additions differs between a catalog read from the log and one from the manifest).
fn assert_same_runs(before: &[runlog::RunView], after: &[runlog::RunView], context: &str) {
    assert_eq!(before.len(), after.len(), "{context}: run count");
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b.info, a.info, "{context}");
        assert_eq!(b.params, a.params, "{context}");
        assert_eq!(b.tags, a.tags, "{context}");
        assert_eq!(b.artifacts, a.artifacts, "{context}");
        assert_eq!(
            b.metrics.keys().collect::<Vec<_>>(),
            a.metrics.keys().collect::<Vec<_>>(),
            "{context}"
        );
        for (key, x) in &b.metrics {
            let y = &a.metrics[key];
            let exact = |s: &runlog::MetricSummary| {
                (
                    s.count,
                    s.first_step,
                    s.last_step,
                    s.last_value.to_bits(),
                    s.last_timestamp_ms,
                    s.min_value.to_bits(),
                    s.min_step,
                    s.max_value.to_bits(),
                    s.max_step,
                    s.finite_count,
                )
            };
            assert_eq!(exact(x), exact(y), "{context}: {} {key}", b.info.id);
            // Rounding grows with the number of terms and their size; overflow to infinity
            // (or inf - inf) depends on the order outright.
            if x.sum.is_finite() && y.sum.is_finite() {
                let size = x.min_value.abs().max(x.max_value.abs()).max(1.0);
                let tolerance = 1e-12 * x.finite_count as f64 * size;
                assert!(
                    (x.sum - y.sum).abs() <= tolerance,
                    "{context}: sum of {key}: {} vs {}",
                    x.sum,
                    y.sum
                );
            }
        }
    }
}

fn all_runs(store: &Store) -> Vec<runlog::RunView> {
    let mut runs = Vec::new();
    for experiment in store.experiments(runlog::ViewType::All).unwrap() {
        runs.extend(store.runs(experiment.id, runlog::ViewType::All).unwrap());
    }
    runs.sort_by_key(|v| v.info.id);
    runs
}

#[test]
fn compaction_deletes_compacted_segments_and_the_store_reopens_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let mut logged = Logged::new();
    for name in ["a", "b"] {
        let experiment = store.get_or_create_experiment(name).unwrap();
        store
            .set_experiment_tag(experiment.id, "team", name)
            .unwrap();
        for r in 0..3 {
            let run = store
                .start_run(experiment.id, RunOptions::default())
                .unwrap();
            run.log_param("lr", &format!("0.{r}")).unwrap();
            run.set_tag("model", "resnet").unwrap();
            for step in 0..2_000i64 {
                let value = if step % 97 == 0 {
                    f64::NAN
                } else {
                    (step * (r + 1)) as f64
                };
                run.log_metric_at("loss", value, step, 1_000 + step)
                    .unwrap();
                logged.entry((run.id(), "loss".into())).or_default().push((
                    step,
                    1_000 + step,
                    value.to_bits(),
                ));
            }
            if r == 1 {
                run.delete_tag("model").unwrap();
                store.delete_run(run.id()).unwrap();
            }
            run.finish().unwrap();
        }
    }
    let before = all_runs(&store);
    let segments_before = crate::util::segments(&dir.path().join("wal")).len();
    let report = store.compact().unwrap();
    assert!(report.segments_deleted > 0, "{report:?}");
    assert!(report.metadata_events > 0, "{report:?}");
    let segments_after = crate::util::segments(&dir.path().join("wal")).len();
    // Left: the metadata chain's one segment.
    assert!(
        segments_after < segments_before && segments_after <= 1,
        "{segments_before} segments before, {segments_after} after"
    );
    check(&store, &logged, "compacting handle");
    assert_same_runs(&before, &all_runs(&store), "compacting handle");
    drop(store);
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &logged, "reopened");
    assert_same_runs(&before, &all_runs(&reopened), "reopened");
    let experiments = reopened.experiments(runlog::ViewType::All).unwrap();
    assert!(experiments.iter().all(|e| e.tags["team"] == e.name));
}

/// A handle that did not read a writer's segments before another handle compacted and deleted
/// them rebuilds what other writers logged from the manifest, and keeps what it logged itself.
#[test]
fn a_handle_that_fell_behind_a_compaction_rebuilds_other_writers_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open_with(dir.path(), options()).unwrap();
    let experiment = writer.get_or_create_experiment("e").unwrap();
    let theirs = writer
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let mut logged = Logged::new();
    log_steps(&mut logged, &theirs, "loss", 0..500);
    let behind = Store::open_with(dir.path(), options()).unwrap();
    // The lagging handle logs too, to a run of its own and to the shared one.
    let mine = behind
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let shared = behind.resume_run(theirs.id()).unwrap();
    log_steps(&mut logged, &mine, "acc", 0..300);
    log_steps(&mut logged, &shared, "grad", 0..300);
    // Many segments later, compacted and deleted, none of them read by `behind`.
    log_steps(&mut logged, &theirs, "loss", 500..5_000);
    let report = writer.compact().unwrap();
    assert!(report.segments_deleted > 0, "{report:?}");
    log_steps(&mut logged, &theirs, "loss", 5_000..5_100);
    log_steps(&mut logged, &mine, "acc", 300..400);
    writer.flush().unwrap();
    check(&behind, &logged, "lagging handle");
    check(&writer, &logged, "compacting handle");
    // Compacting from the lagging handle, then reading from both again.
    behind.compact().unwrap();
    log_steps(&mut logged, &shared, "grad", 300..350);
    check(&writer, &logged, "first handle after the second compacted");
    check(&behind, &logged, "second handle after it compacted");
    drop((theirs, mine, shared, writer, behind));
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &logged, "reopened");
}

/// Every compaction writes a metadata chain; past `METADATA_CHAINS_MAX` they are merged, and
/// nothing they held is lost.
#[test]
fn metadata_chains_are_merged_and_keep_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let mut logged = Logged::new();
    for round in 0..(runlog::compaction::METADATA_CHAINS_MAX as i64 + 4) {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        run.log_param("round", &round.to_string()).unwrap();
        for step in 0..200 {
            run.log_metric_at("loss", step as f64, step, round).unwrap();
            logged.entry((run.id(), "loss".into())).or_default().push((
                step,
                round,
                (step as f64).to_bits(),
            ));
        }
        run.finish().unwrap();
        store.compact().unwrap();
        let manifest = store.manifest().unwrap();
        assert!(
            manifest.metadata.len() <= runlog::compaction::METADATA_CHAINS_MAX + 1,
            "round {round}: {} metadata chains",
            manifest.metadata.len()
        );
    }
    let before = all_runs(&store);
    drop(store);
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &logged, "reopened");
    assert_same_runs(&before, &all_runs(&reopened), "reopened");
    let mut rounds: Vec<String> = all_runs(&reopened)
        .iter()
        .map(|v| v.params["round"].clone())
        .collect();
    rounds.sort_by_key(|r| r.parse::<i64>().unwrap());
    assert_eq!(rounds.len(), runlog::compaction::METADATA_CHAINS_MAX + 4);
}

/// A store opened with a compaction interval compacts the segments rotation sealed, while the
/// job keeps logging, and deletes them; nothing is lost or counted twice.
#[test]
fn the_background_compactor_compacts_sealed_segments_while_logging_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let background = StoreOptions {
        compaction_interval: Some(std::time::Duration::from_millis(20)),
        ..options()
    };
    let store = Store::open_with(dir.path(), background).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let mut logged = Logged::new();
    let mut step = 0i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        log_steps(&mut logged, &run, "loss", step..step + 1_000);
        step += 1_000;
        let deleted = match store.last_background_compaction() {
            Some(Ok(report)) => report.segments_deleted,
            Some(Err(error)) => panic!("background compaction failed: {error}"),
            None => 0,
        };
        if deleted > 0 && step >= 20_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background compaction deleted anything after {step} points"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    check(&store, &logged, "while the compactor runs");
    assert!(store.manifest().unwrap().generation > 0);
    run.finish().unwrap();
    drop(store);
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &logged, "reopened");
}

#[derive(Clone, Debug)]
enum Op {
    Point {
        run: usize,
        key: usize,
        step: i64,
        value: f64,
    },
    Batch {
        run: usize,
        key: usize,
        first_step: i64,
        values: Vec<f64>,
    },
    /// Compacts the first store (the second never compacts).
    Compact,
    /// Reopens the first store (as after a clean restart).
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    // f32-origin values (stored narrow), arbitrary f64 and NaN: every value path of the files.
    let value = prop_oneof![
        any::<f32>().prop_map(f64::from),
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::NEG_INFINITY),
    ];
    prop_oneof![
        6 => (0..3usize, 0..3usize, -20i64..200, value.clone())
            .prop_map(|(run, key, step, value)| Op::Point { run, key, step, value }),
        3 => (0..3usize, 0..3usize, -20i64..200, proptest::collection::vec(value, 1..600))
            .prop_map(|(run, key, first_step, values)| Op::Batch { run, key, first_step, values }),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

const KEYS: [&str; 3] = ["loss", "acc", "lr"];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever was logged and whenever it was compacted, a compacted store answers every query
    /// exactly as a store that never compacted (the log alone) does.
    #[test]
    fn compacted_results_equal_the_log_alone(ops in proptest::collection::vec(op(), 1..60)) {
        let small = StoreOptions { segment_bytes: 4 * 1024, ..options() };
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = Store::open_with(dir_a.path(), small.clone()).unwrap();
        let b = Store::open_with(dir_b.path(), small.clone()).unwrap();
        let start = |store: &Store| {
            let experiment = store.get_or_create_experiment("e").unwrap();
            (0..3)
                .map(|i| {
                    let run = store.start_run(experiment.id, RunOptions::default()).unwrap();
                    run.log_param("i", &i.to_string()).unwrap();
                    run
                })
                .collect::<Vec<_>>()
        };
        let (mut handles_a, mut handles_b) = (start(&a), start(&b));
        let runs_a: Vec<RunId> = handles_a.iter().map(|r| r.id()).collect();
        let runs_b: Vec<RunId> = handles_b.iter().map(|r| r.id()).collect();
        let mut time = 0i64;
        for op in &ops {
            time += 1;
            match op {
                Op::Point { run, key, step, value } => {
                    for handles in [&handles_a, &handles_b] {
                        handles[*run].log_metric_at(KEYS[*key], *value, *step, time).unwrap();
                    }
                }
                Op::Batch { run, key, first_step, values } => {
                    let steps: Vec<i64> = (0..values.len() as i64).map(|i| first_step + i / 3).collect();
                    let times = vec![time; values.len()];
                    for handles in [&handles_a, &handles_b] {
                        handles[*run].log_batch(KEYS[*key], &steps, Some(&times), values).unwrap();
                    }
                }
                Op::Compact => {
                    a.compact().unwrap();
                }
                Op::Reopen => {
                    // Dropped handles end their runs (KILLED), in both stores alike.
                    handles_a.clear();
                    handles_b.clear();
                    drop(a);
                    a = Store::open_with(dir_a.path(), small.clone()).unwrap();
                    handles_a = runs_a.iter().map(|r| a.resume_run(*r).unwrap()).collect();
                    handles_b = runs_b.iter().map(|r| b.resume_run(*r).unwrap()).collect();
                }
            }
        }
        drop((handles_a, handles_b));
        a.compact().unwrap();
        let reopened = Store::open_with(dir_a.path(), small.clone()).unwrap();
        for (name, store) in [("compacting handle", &a), ("reopened", &reopened)] {
            for (run_a, run_b) in runs_a.iter().zip(&runs_b) {
                for key in KEYS {
                    let (x, y) = (store.history(*run_a, key, ..).unwrap(), b.history(*run_b, key, ..).unwrap());
                    proptest::prop_assert_eq!(&x.steps, &y.steps, "{} {}", name, key);
                    proptest::prop_assert_eq!(&x.timestamps_ms, &y.timestamps_ms);
                    let bits = |h: &runlog::query::History| h.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    proptest::prop_assert_eq!(bits(&x), bits(&y), "{} {} values", name, key);
                    let (x, y) = (store.history(*run_a, key, 10..50).unwrap(), b.history(*run_b, key, 10..50).unwrap());
                    proptest::prop_assert_eq!(&x.steps, &y.steps);
                    let (x, y) = (
                        store.history_downsampled(*run_a, key, .., 7).unwrap(),
                        b.history_downsampled(*run_b, key, .., 7).unwrap(),
                    );
                    proptest::prop_assert_eq!(format!("{x:?}"), format!("{y:?}"));
                }
            }
            let views = |store: &Store, runs: &[RunId]| runs.iter().map(|r| {
                let mut view = store.run(*r).unwrap();
                view.info.id = RunId(0);
                view.info.start_time_ms = 0;
                view.info.end_time_ms = None;
                view.info.experiment = runlog::ExperimentId(0);
                view.tags.clear();
                view.info.name.clear();
                view
            }).collect::<Vec<_>>();
            assert_same_runs(&views(&b, &runs_b), &views(store, &runs_a), name);
        }
    }
}

/// A writer whose rotation sealed a segment (not as final) but could not create the next one
/// leaves a chain that ends in a non-final seal, with no lock file once closed. Compacted whole
/// and deleted, it must count as finished: readers that waited for its next segment would
/// otherwise stall on a missing segment forever (found in review; DURABILITY.md section 10).
#[test]
fn a_chain_ending_in_a_non_final_seal_is_compacted_and_deleted_without_stalling_readers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FaultStorage::new());
    let faulty = StoreOptions {
        storage: storage.clone(),
        segment_bytes: 4 * 1024,
        ..options()
    };
    let store = Store::open_with(dir.path(), faulty).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let run_id = run.id();
    // Every segment creation from now on fails: the first rotation seals and then stops.
    storage.fail_from(Operation::Create, 0, libc::ENOSPC);
    let mut logged = Logged::new();
    let mut step = 0i64;
    loop {
        match run.log_metric_at("loss", step as f64, step, step) {
            Ok(()) => logged.entry((run_id, "loss".into())).or_default().push((
                step,
                step,
                (step as f64).to_bits(),
            )),
            Err(Error::StorageFull { .. }) | Err(Error::Io { .. }) => break,
            Err(other) => panic!("unexpected error: {other}"),
        }
        step += 1;
        assert!(step < 100_000, "the rotation never failed");
    }
    // Its lanes close while creation still fails: no final seal can be written.
    std::mem::drop(run);
    drop(store);
    storage.heal();
    // A reader that has read the chain up to its last seal, and waits for the next segment.
    let reader = Store::open_with(dir.path(), options()).unwrap();
    check(&reader, &logged, "reader before compaction");
    let compactor = Store::open_with(dir.path(), options()).unwrap();
    let report = compactor.compact().unwrap();
    assert!(report.segments_deleted > 0, "{report:?}");
    check(&reader, &logged, "reader after the chain was deleted");
    check(&compactor, &logged, "compactor");
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &logged, "reopened");
    compactor.compact().unwrap();
    check(&reopened, &logged, "after a second compaction");
}

/// A compaction with nothing to do reports the generation already in force, so `runlog compact`
/// and `runlog stats` name the same one (it reported 0).
#[test]
fn a_compaction_with_nothing_to_do_reports_the_generation_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    for step in 0..100 {
        run.log_metric("loss", 1.0 / (step + 1) as f64, step)
            .unwrap();
    }
    run.finish().unwrap();
    let first = store.compact().unwrap();
    assert_eq!((first.generation, first.segments > 0), (1, true));
    let idle = store.compact().unwrap();
    assert_eq!((idle.generation, idle.segments), (1, 0));
    assert_eq!(store.manifest().unwrap().generation, 1);
}

/// Bytes of every file in `manifest/`, by name.
fn manifest_files(root: &std::path::Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(root.join("manifest"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, entry.metadata().unwrap().len())
        })
        .collect()
}

/// A run of `keys` keys with `steps` points each.
fn log_run(store: &Store, experiment: runlog::ExperimentId, keys: usize, steps: i64) -> RunId {
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    let names: Vec<String> = (0..keys).map(|k| format!("metric/{k:03}")).collect();
    for step in 0..steps {
        let points: Vec<(&str, f64)> = names
            .iter()
            .map(|k| (k.as_str(), step as f64 * 0.5))
            .collect();
        run.log_metrics(step, &points).unwrap();
    }
    let id = run.id();
    run.finish().unwrap();
    id
}

/// On a store of 20,000 series, a compaction after one run logged a few points writes to
/// `manifest/` a small fraction of the whole manifest: an edit, not the manifest again.
#[test]
fn a_compaction_writes_manifest_bytes_in_proportion_to_what_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, options()).unwrap();
    let experiment = store.get_or_create_experiment("sweep").unwrap().id;
    for _ in 0..200 {
        log_run(&store, experiment, 100, 1);
    }
    let first = store.compact().unwrap();
    let base = store.manifest_stats().unwrap();
    assert_eq!((base.generation, base.base_generation), (1, 1));
    assert_eq!(base.series, 20_000);
    assert_eq!(first.manifest_bytes, base.base_bytes);

    let before = manifest_files(root);
    let late = log_run(&store, experiment, 3, 4);
    let second = store.compact().unwrap();
    assert_eq!(second.generation, 2);
    let written: u64 = manifest_files(root)
        .into_iter()
        .filter(|(name, _)| !before.contains_key(name))
        .map(|(_, bytes)| bytes)
        .sum();
    let stats = store.manifest_stats().unwrap();
    println!(
        "20,000 series: the base is {} bytes ({:.1} per series); the next compaction wrote {} \
         bytes to manifest/ ({:.3} % of the base)",
        stats.base_bytes,
        stats.base_bytes as f64 / 20_000.0,
        written,
        100.0 * written as f64 / stats.base_bytes as f64
    );
    assert_eq!(written, second.manifest_bytes);
    assert!(
        written * 20 < stats.base_bytes,
        "{written} bytes written, the base is {}",
        stats.base_bytes
    );
    assert_eq!((stats.base_generation, stats.edits), (1, 1), "{stats:?}");
    assert_eq!(stats.edit_bytes, written);
    assert_eq!(stats.newest_bytes, written);
    assert_eq!(stats.series, 20_003);
    drop(store);

    let store = Store::open_with(root, options()).unwrap();
    assert_eq!(store.history(late, "metric/002", ..).unwrap().len(), 4);
    let runs = store.runs(experiment, runlog::ViewType::All).unwrap();
    assert_eq!(runs.len(), 201);
    assert!(
        runs.iter()
            .all(|r| r.metrics.values().all(|s| s.count >= 1))
    );
}

/// Compaction after compaction, the state in force is a base and the edits since, within half
/// the base's bytes; a new base is written when they would pass it, and `manifest/` keeps only
/// the chains of the generation in force and of the one before.
#[test]
fn edits_are_bounded_by_their_base_and_old_chains_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, options()).unwrap();
    let experiment = store.get_or_create_experiment("sweep").unwrap().id;
    let mut runs = vec![log_run(&store, experiment, 20, 2)];
    store.compact().unwrap();
    let mut bases = std::collections::BTreeSet::new();
    let mut previous_base = 1;
    for round in 0..40 {
        runs.push(log_run(&store, experiment, 2, 2));
        let report = store.compact().unwrap();
        let stats = store.manifest_stats().unwrap();
        let context = format!("round {round}: {stats:?}");
        assert_eq!(stats.generation, report.generation, "{context}");
        assert!(stats.edit_bytes <= stats.base_bytes / 2, "{context}");
        bases.insert(stats.base_generation);
        // Kept: the chain of the previous generation (from its base) up to the newest.
        let mut kept: Vec<u64> = manifest_files(root)
            .keys()
            .filter_map(|name| name.strip_suffix(".manifest")?.parse().ok())
            .collect();
        kept.sort();
        let expected: Vec<u64> = (previous_base..=stats.generation).collect();
        assert_eq!(kept, expected, "{context}");
        previous_base = stats.base_generation;
    }
    assert!(bases.len() > 2, "new bases were written: {bases:?}");
    drop(store);
    let report = runlog::verify::verify(root).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    // Every run's summaries come through, whichever base or edit holds its writer's mark: a
    // compaction diffs its edit without the marks it cannot change, and a base puts them back.
    let store = Store::open_with(root, options()).unwrap();
    for (index, run) in runs.into_iter().enumerate() {
        let view = store.run(run).unwrap();
        assert_eq!(
            view.metrics.len(),
            if index == 0 { 20 } else { 2 },
            "run {index}"
        );
        for (key, summary) in &view.metrics {
            assert_eq!(summary.count, 2, "run {index}, {key}");
            assert_eq!(store.history(run, key, ..).unwrap().len(), 2);
        }
    }
}

/// A writer whose final segment holds points of a run no compaction can place yet (its creation
/// is in another writer that appears later) has not had that segment compacted: the manifest
/// must not call it finished. A finished writer's readers start after its watermark and expect
/// nothing there: the compacting handle stopped reading the segment's points, and the store
/// refused to open ("a segment follows the writer's final seal").
#[test]
fn a_final_segment_left_uncompacted_does_not_mark_its_writer_finished() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let (experiment, known_run) = {
        let store = Store::open_with(dir.path(), options()).unwrap();
        let experiment = store.get_or_create_experiment("e").unwrap();
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        (experiment.id, run.id())
    };
    let writer_options = runlog::wal::WriterOptions {
        segment_bytes: 4 * 1024,
        sync_every_append: false,
    };
    let storage = Arc::new(runlog::io::OsStorage);
    // Writer A: a first segment of a known run's points, then a final one that also holds
    // points of a run created nowhere yet.
    let mut a = runlog::wal::Writer::create(&wal, storage.clone(), writer_options.clone()).unwrap();
    let mut known = Logged::new();
    let mut step = 0i64;
    while a.stats().segments < 2 {
        a.log_point(known_run, "loss", step, step, step as f64)
            .unwrap();
        let point = (step, step, (step as f64).to_bits());
        known
            .entry((known_run, "loss".into()))
            .or_default()
            .push(point);
        step += 1;
        assert!(step < 100_000, "the writer never rotated");
    }
    let later_run = RunId(0x5eed_0000_0000_0000_0000_0000_0000_0001);
    let mut logged = known.clone();
    for step in 0..10i64 {
        a.log_point(later_run, "acc", step, step, step as f64)
            .unwrap();
        let point = (step, step, (step as f64).to_bits());
        logged
            .entry((later_run, "acc".into()))
            .or_default()
            .push(point);
    }
    let a_id = a.id();
    a.close().unwrap();

    let compactor = Store::open_with(dir.path(), options()).unwrap();
    compactor.compact().unwrap();
    let mark = compactor.manifest().unwrap().writers[&a_id].clone();
    assert!(
        !mark.finished && mark.through == Some(runlog::SegmentSequence(0)),
        "writer A's last segment is not compacted, yet its mark is {mark:?}"
    );
    check(&compactor, &known, "compactor");
    drop(compactor);
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &known, "reopened before the run is created");
    drop(reopened);

    // Writer B creates the run: now every point of A can be placed.
    let mut b = runlog::wal::Writer::create(&wal, storage, writer_options).unwrap();
    b.append(&runlog::wal::Event::RunCreated {
        run: later_run,
        time_ms: 1,
        experiment,
        parent: None,
        name: "later".into(),
    })
    .unwrap();
    b.close().unwrap();
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    check(&reopened, &logged, "reopened before the second compaction");
    reopened.compact().unwrap();
    check(&reopened, &logged, "after the second compaction");
    let mark = reopened.manifest().unwrap().writers[&a_id].clone();
    assert!(mark.finished, "writer A is compacted whole: {mark:?}");
    let again = Store::open_with(dir.path(), options()).unwrap();
    check(&again, &logged, "reopened after the second compaction");
    let verified = runlog::verify::verify(dir.path()).unwrap();
    assert!(verified.is_ok(), "{:?}", verified.problems);
}
