//! Model-based test: random tracking operations against the store and an in-memory model side
//! by side, with simulated kill -9 and reopen in between; after every reopen the store must
//! agree with the model exactly. Prints its seed; `RUNLOG_SEED=<seed>` replays one case, and
//! `RUNLOG_MODEL_CASES=<n>` runs more.

use std::collections::BTreeMap;

use runlog::wal::RunStatus;
use runlog::{
    Durability, Error, ExperimentId, LifecycleStage, MetricSummary, Run, RunId, RunOptions, Store,
    StoreOptions,
};

use crate::util::Rng;

#[derive(Debug, Default)]
struct ModelRun {
    experiment: Option<ExperimentId>,
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    points: BTreeMap<String, Vec<(i64, i64, f64)>>,
    status: Option<RunStatus>,
    deleted: bool,
}

const KEYS: [&str; 4] = ["loss", "acc", "lr", "val/loss"];
const VALUES: [&str; 3] = ["a", "b", "c"];

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 16 * 1024,
        ..StoreOptions::default()
    }
}

fn summary(points: &[(i64, i64, f64)]) -> MetricSummary {
    let mut summary = MetricSummary::EMPTY;
    for (step, timestamp, value) in points {
        summary.update(*step, *timestamp, *value);
    }
    summary
}

fn check(store: &Store, model: &BTreeMap<RunId, ModelRun>, context: &str) {
    for (id, expected) in model {
        let view = store
            .run(*id)
            .unwrap_or_else(|e| panic!("{context}: run {id}: {e}"));
        assert_eq!(
            Some(view.info.experiment),
            expected.experiment,
            "{context}: run {id} experiment"
        );
        assert_eq!(view.params, expected.params, "{context}: run {id} params");
        let tags: BTreeMap<String, String> = view
            .tags
            .into_iter()
            .filter(|(k, _)| !k.starts_with("mlflow."))
            .collect();
        assert_eq!(tags, expected.tags, "{context}: run {id} tags");
        assert_eq!(
            Some(view.info.status),
            expected.status,
            "{context}: run {id} status"
        );
        let stage = if expected.deleted {
            LifecycleStage::Deleted
        } else {
            LifecycleStage::Active
        };
        assert_eq!(
            view.info.lifecycle_stage, stage,
            "{context}: run {id} lifecycle"
        );
        let keys: Vec<&String> = view.metrics.keys().collect();
        let expected_keys: Vec<&String> = expected
            .points
            .keys()
            .filter(|k| !expected.points[*k].is_empty())
            .collect();
        assert_eq!(keys, expected_keys, "{context}: run {id} metric keys");
        for (key, points) in &expected.points {
            if points.is_empty() {
                continue;
            }
            let got = view.metrics[key];
            let want = summary(points);
            assert_eq!(
                (
                    got.count,
                    got.first_step,
                    got.last_step,
                    got.last_value.to_bits(),
                    got.last_timestamp_ms
                ),
                (
                    want.count,
                    want.first_step,
                    want.last_step,
                    want.last_value.to_bits(),
                    want.last_timestamp_ms
                ),
                "{context}: run {id} metric {key}"
            );
            assert_eq!(
                (
                    got.min_value.to_bits(),
                    got.min_step,
                    got.max_value.to_bits(),
                    got.max_step
                ),
                (
                    want.min_value.to_bits(),
                    want.min_step,
                    want.max_value.to_bits(),
                    want.max_step
                ),
                "{context}: run {id} metric {key} min/max"
            );
        }
    }
}

fn run_case(seed: u64, operations: usize) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_with(dir.path(), options()).unwrap();
    let mut model: BTreeMap<RunId, ModelRun> = BTreeMap::new();
    let mut handles: BTreeMap<RunId, Run> = BTreeMap::new();
    let mut experiments: Vec<ExperimentId> = Vec::new();
    let mut clock = 1_700_000_000_000i64;
    let mut crashes = 0;
    for index in 0..operations {
        let context = format!("seed {seed}, op {index}");
        let ids: Vec<RunId> = handles.keys().copied().collect();
        let pick = |rng: &mut Rng| ids.get(rng.below(ids.len() as u64) as usize).copied();
        clock += rng.below(3) as i64;
        match rng.below(100) {
            0..=4 => {
                let name = format!("exp{}", rng.below(3));
                let experiment = store.get_or_create_experiment(&name).unwrap();
                if !experiments.contains(&experiment.id) {
                    experiments.push(experiment.id);
                }
            }
            5..=9 if !experiments.is_empty() => {
                let experiment = experiments[rng.below(experiments.len() as u64) as usize];
                let run = store.start_run(experiment, RunOptions::default()).unwrap();
                model.insert(
                    run.id(),
                    ModelRun {
                        experiment: Some(experiment),
                        status: Some(RunStatus::Running),
                        ..ModelRun::default()
                    },
                );
                handles.insert(run.id(), run);
            }
            10..=59 => {
                let Some(id) = pick(&mut rng) else { continue };
                let key = KEYS[rng.below(4) as usize];
                let step = rng.below(50) as i64;
                let value = match rng.below(20) {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    _ => f64::from(rng.below(1000) as f32 / 7.0),
                };
                let outcome = handles[&id].log_metric_at(key, value, step, clock);
                let expected = &mut model.get_mut(&id).unwrap();
                if expected.deleted {
                    assert!(matches!(outcome, Err(Error::Deleted { .. })), "{context}");
                } else {
                    outcome.unwrap();
                    expected
                        .points
                        .entry(key.to_string())
                        .or_default()
                        .push((step, clock, value));
                }
            }
            60..=64 => {
                let Some(id) = pick(&mut rng) else { continue };
                let steps: Vec<i64> = (0..rng.below(20) as i64).collect();
                let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
                let timestamps = vec![clock; steps.len()];
                let outcome = handles[&id].log_batch("batch", &steps, Some(&timestamps), &values);
                let expected = model.get_mut(&id).unwrap();
                if expected.deleted {
                    assert!(outcome.is_err(), "{context}");
                } else {
                    outcome.unwrap();
                    let series = expected.points.entry("batch".to_string()).or_default();
                    series.extend(steps.iter().zip(&values).map(|(s, v)| (*s, clock, *v)));
                }
            }
            65..=74 => {
                let Some(id) = pick(&mut rng) else { continue };
                let key = KEYS[rng.below(4) as usize];
                let value = VALUES[rng.below(3) as usize];
                let outcome = handles[&id].log_param(key, value);
                let expected = model.get_mut(&id).unwrap();
                match (expected.deleted, expected.params.get(key)) {
                    (true, _) => {
                        assert!(matches!(outcome, Err(Error::Deleted { .. })), "{context}")
                    }
                    (false, Some(existing)) if existing != value => {
                        assert!(
                            matches!(outcome, Err(Error::ParamChanged { .. })),
                            "{context}: {outcome:?}"
                        );
                    }
                    (false, _) => {
                        outcome.unwrap();
                        expected.params.insert(key.to_string(), value.to_string());
                    }
                }
            }
            75..=82 => {
                let Some(id) = pick(&mut rng) else { continue };
                let key = format!("t{}", rng.below(3));
                let expected = model.get_mut(&id).unwrap();
                if rng.below(3) == 0 {
                    let outcome = handles[&id].delete_tag(&key);
                    match (expected.deleted, expected.tags.remove(&key)) {
                        (true, removed) => {
                            assert!(outcome.is_err(), "{context}");
                            if let Some(value) = removed {
                                expected.tags.insert(key, value);
                            }
                        }
                        (false, Some(_)) => outcome.unwrap(),
                        (false, None) => {
                            assert!(matches!(outcome, Err(Error::NotFound(_))), "{context}")
                        }
                    }
                } else {
                    let value = VALUES[rng.below(3) as usize];
                    let outcome = handles[&id].set_tag(&key, value);
                    if expected.deleted {
                        assert!(outcome.is_err(), "{context}");
                    } else {
                        outcome.unwrap();
                        expected.tags.insert(key, value.to_string());
                    }
                }
            }
            83..=86 => {
                let Some(id) = pick(&mut rng) else { continue };
                let expected = model.get_mut(&id).unwrap();
                if expected.deleted {
                    store.restore_run(id).unwrap();
                } else {
                    store.delete_run(id).unwrap();
                }
                expected.deleted = !expected.deleted;
            }
            87..=90 => {
                let Some(id) = pick(&mut rng) else { continue };
                let handle = handles.remove(&id).unwrap();
                let status = [RunStatus::Finished, RunStatus::Failed, RunStatus::Killed]
                    [rng.below(3) as usize];
                handle.end(status).unwrap();
                model.get_mut(&id).unwrap().status = Some(status);
            }
            91..=93 => store.flush().unwrap(),
            94..=96 => {
                // kill -9: nothing sealed or synced, no handle gets to end its run.
                crashes += 1;
                store.abandon();
                for (_, handle) in std::mem::take(&mut handles) {
                    std::mem::forget(handle);
                }
                drop(store);
                store = Store::open_with(dir.path(), options()).unwrap();
                check(&store, &model, &format!("{context}, after crash {crashes}"));
                for (id, expected) in model.iter_mut() {
                    if !expected.deleted && expected.status == Some(RunStatus::Running) {
                        handles.insert(*id, store.resume_run(*id).unwrap());
                    }
                }
            }
            _ => check(&store, &model, &context),
        }
    }
    for (id, handle) in std::mem::take(&mut handles) {
        handle.finish().unwrap();
        model.get_mut(&id).unwrap().status = Some(RunStatus::Finished);
    }
    check(&store, &model, &format!("seed {seed}, end"));
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    check(&store, &model, &format!("seed {seed}, final reopen"));
}

#[test]
fn random_operations_with_crashes_agree_with_a_model() {
    let cases: u64 = std::env::var("RUNLOG_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let mut seeds = Rng::from_env("random_operations_with_crashes_agree_with_a_model");
    let replay = std::env::var("RUNLOG_SEED").is_ok();
    for case in 0..if replay { 1 } else { cases } {
        let seed = if replay {
            std::env::var("RUNLOG_SEED").unwrap().parse().unwrap()
        } else {
            seeds.next_u64()
        };
        eprintln!("case {case}: seed {seed} (replay with RUNLOG_SEED={seed})");
        run_case(seed, 400);
    }
}
