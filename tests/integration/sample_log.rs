//! `Store::history_sample` of points still in the log: the sample read from the log's records
//! in step order (each record measured, the picked points read again from their records alone)
//! gives exactly the points at the picked ranks of the whole history, with the same ties, and
//! so does each fallback (records whose steps do not ascend, overlap or are irregular; streams
//! of single points; records of several keys; a compacted part before the log).
//!
//! Batches reach the log out of step order, as the batches of `runlog serve`'s concurrent
//! requests do: shuffled by the seeded generator, and sent from several threads one after
//! another (each thread its own writer lane), so that a seed replays the same log.

use runlog::query::History;
use runlog::{Durability, MetricPoint, RunId, RunOptions, Store, StoreOptions};

use crate::util::Rng;

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    Store::open_with(dir, options).unwrap()
}

/// One batch to log: its steps, and whether it also carries points of another key.
struct Batch {
    steps: Vec<i64>,
    mixed: bool,
}

/// The batches of one run's series, by shape: consecutive steps (the usual), with a step
/// repeated at a batch's edge or inside it, with strides, irregular gaps, or a stretch logged
/// again.
fn batches(rng: &mut Rng) -> Vec<Batch> {
    let count = 1 + rng.below(40) as i64;
    let width = 1 + rng.below(300) as i64;
    let shape = rng.below(6);
    let mut batches = Vec::new();
    for index in 0..count {
        let mut steps: Vec<i64> = match shape {
            2 => (0..width).map(|i| (index * width + i) * 3).collect(),
            3 => {
                let mut step = index * width * 40;
                (0..width)
                    .map(|_| {
                        step += 1 + rng.below(30) as i64;
                        step
                    })
                    .collect()
            }
            _ => (index * width..(index + 1) * width).collect(),
        };
        match shape {
            1 if rng.below(3) == 0 => steps.push(*steps.last().unwrap_or(&0)),
            1 if rng.below(3) == 0 => steps.insert(0, index * width),
            4 if rng.below(4) == 0 => steps.iter_mut().for_each(|s| *s -= width / 2),
            _ => {}
        }
        batches.push(Batch {
            steps,
            mixed: rng.below(8) == 0,
        });
    }
    for index in (1..batches.len()).rev() {
        batches.swap(index, rng.below(index as u64 + 1) as usize);
    }
    batches
}

/// Logs `batch` of `key` for `run`, from the calling thread's lane: as a columns record, as
/// stream points through the keyed API (a mixed batch with another key's points beside), or,
/// when small, as single points.
fn log_batch(store: &Store, run: &runlog::Run, batch: &Batch, rng: &mut Rng) {
    let points: Vec<(i64, i64, f64)> = batch
        .steps
        .iter()
        .map(|step| {
            let value = if rng.below(200) == 0 {
                f64::NAN
            } else {
                rng.below(1_000) as f64 / 8.0
            };
            (*step, 1_000 + rng.below(5) as i64, value)
        })
        .collect();
    let keyed = rng.below(2) == 0;
    if batch.mixed || keyed {
        // Through the keyed API, as the server's `log-batch` logs: stream points, which a
        // lane's stream record holds for several calls.
        let keys: &[&str] = if batch.mixed {
            &["loss", "other"]
        } else {
            &["loss"]
        };
        let metrics: Vec<MetricPoint<'_>> = points
            .iter()
            .flat_map(|(step, timestamp_ms, value)| {
                keys.iter()
                    .map(move |key| (*key, if *key == "loss" { *value } else { -value }))
                    .map(|(key, value)| MetricPoint {
                        key,
                        value,
                        step: *step,
                        timestamp_ms: *timestamp_ms,
                    })
            })
            .collect();
        store.log_batch(run.id(), &metrics, &[], &[]).unwrap();
    } else if batch.steps.len() <= 2 && rng.below(2) == 0 {
        for (step, timestamp_ms, value) in points {
            store
                .log_metric(run.id(), "loss", value, step, timestamp_ms)
                .unwrap();
        }
    } else {
        let steps: Vec<i64> = points.iter().map(|p| p.0).collect();
        let timestamps: Vec<i64> = points.iter().map(|p| p.1).collect();
        let values: Vec<f64> = points.iter().map(|p| p.2).collect();
        run.log_batch("loss", &steps, Some(&timestamps), &values)
            .unwrap();
    }
}

/// The points of `history` with a step in `first..=last`.
fn in_steps(history: &History, first: i64, last: i64) -> History {
    let mut kept = History::default();
    for i in (0..history.len()).filter(|i| (first..=last).contains(&history.steps[*i])) {
        kept.steps.push(history.steps[i]);
        kept.timestamps_ms.push(history.timestamps_ms[i]);
        kept.values.push(history.values[i]);
    }
    kept
}

#[test]
fn a_sample_of_points_in_the_log_is_the_whole_history_picked() {
    let mut rng = Rng::from_env("a_sample_of_points_in_the_log_is_the_whole_history_picked");
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let experiment = store.get_or_create_experiment("e").unwrap();
        let handles: Vec<runlog::Run> = (0..1 + rng.below(4))
            .map(|_| {
                store
                    .start_run(experiment.id, RunOptions::default())
                    .unwrap()
            })
            .collect();
        let runs: Vec<RunId> = handles.iter().map(runlog::Run::id).collect();
        let mut work: Vec<(&runlog::Run, Batch)> = Vec::new();
        for run in &handles {
            work.extend(batches(&mut rng).into_iter().map(|batch| (run, batch)));
        }
        for index in (1..work.len()).rev() {
            work.swap(index, rng.below(index as u64 + 1) as usize);
        }
        // A compacted part before the log, in some rounds.
        let compact_after = (rng.below(3) == 0).then(|| rng.below(work.len() as u64) as usize);
        let threads = 1 + rng.below(4) as usize;
        let share = work.len().div_ceil(threads);
        let mut done = 0;
        for part in work.chunks(share.max(1)) {
            let seed = rng.next_u64();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let mut rng = Rng::new(seed);
                    for (run, batch) in part {
                        log_batch(&store, run, batch, &mut rng);
                    }
                });
            });
            if compact_after.is_some_and(|at| done <= at && at < done + part.len()) {
                store.compact().unwrap();
            }
            done += part.len();
        }
        let everything = store.history_of_runs(&runs, "loss", ..).unwrap();
        for _ in 0..12 {
            let every = 1 + rng.below(40) as usize;
            let range = match rng.below(3) {
                0 => (i64::MIN, i64::MAX),
                _ => {
                    let first = rng.below(6_000) as i64 - 500;
                    (first, first + rng.below(20_000) as i64)
                }
            };
            let pick = |total: usize| {
                (0..total)
                    .step_by(every)
                    .chain(total.checked_sub(1))
                    .collect::<Vec<_>>()
            };
            let sampled = store
                .history_sample(&runs, "loss", range.0..=range.1, &pick)
                .unwrap();
            for (sample, history) in sampled.iter().zip(&everything) {
                let history = in_steps(history, range.0, range.1);
                assert_eq!(
                    sample.total,
                    history.len(),
                    "round {round}, range {range:?}"
                );
                let mut ranks = pick(history.len());
                ranks.sort_unstable();
                ranks.dedup();
                let bits =
                    |h: &History, i: usize| (h.steps[i], h.timestamps_ms[i], h.values[i].to_bits());
                let expected: Vec<_> = ranks.iter().map(|i| bits(&history, *i)).collect();
                let got: Vec<_> = (0..sample.points.len())
                    .map(|i| bits(&sample.points, i))
                    .collect();
                assert!(
                    got == expected,
                    "round {round}, every {every}, range {range:?}: {got:?} against {expected:?}"
                );
                let ties = ranks.iter().any(|i| {
                    let step = history.steps[*i];
                    (i.checked_sub(1).map(|b| history.steps[b]) == Some(step))
                        || history.steps.get(i + 1) == Some(&step)
                });
                assert_eq!(
                    sample.ties, ties,
                    "round {round}, every {every}, range {range:?}"
                );
            }
        }
    }
}

/// A compacted part too irregular for step runs sends the run to the general path, which reads
/// the log's records whole, in their step order.
#[test]
fn a_sample_beside_an_irregular_compacted_part_reads_the_log_records_in_order() {
    let mut rng =
        Rng::from_env("a_sample_beside_an_irregular_compacted_part_reads_the_log_records_in_order");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    // More arithmetic runs than a compacted series keeps (4,096; two steps make a run).
    let mut step = 0;
    let irregular: Vec<i64> = (0..12_000)
        .map(|_| {
            step += 1 + rng.below(30) as i64;
            step
        })
        .collect();
    let values: Vec<f64> = irregular.iter().map(|s| *s as f64).collect();
    run.log_batch("loss", &irregular, None, &values).unwrap();
    store.compact().unwrap();
    let mut later: Vec<Batch> = (0..20)
        .map(|index| Batch {
            steps: (step + 1 + index * 100..step + 1 + (index + 1) * 100).collect(),
            mixed: false,
        })
        .collect();
    for index in (1..later.len()).rev() {
        later.swap(index, rng.below(index as u64 + 1) as usize);
    }
    for batch in &later {
        log_batch(&store, &run, batch, &mut rng);
    }
    let history = store.history(run.id(), "loss", ..).unwrap();
    for every in [1, 7, 100, 5_000] {
        let pick = |total: usize| (0..total).step_by(every).collect::<Vec<_>>();
        let sample = store
            .history_sample(&[run.id()], "loss", .., &pick)
            .unwrap();
        let expected: Vec<i64> = pick(history.len())
            .iter()
            .map(|rank| history.steps[*rank])
            .collect();
        assert_eq!(sample[0].total, history.len());
        assert_eq!(sample[0].points.steps, expected, "every {every}");
        assert!(!sample[0].ties);
    }
}
