//! Metric history, downsampling and step-aligned comparison, against what was logged.

use proptest::prelude::*;
use runlog::query::{Downsampled, History, downsample};
use runlog::{Durability, Error, RunId, RunOptions, Store, StoreOptions};

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    };
    Store::open_with(dir, options).unwrap()
}

#[test]
fn history_returns_every_point_sorted_by_step_in_logging_order_across_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let id = run.id();
    let mut expected: Vec<(i64, i64, u64)> = Vec::new();
    for step in (0..300).rev() {
        let value = if step % 50 == 0 {
            f64::NAN
        } else {
            step as f64 * 0.5
        };
        run.log_metric_at("loss", value, step, 1_000 + step)
            .unwrap();
        run.log_metric_at("other", 1.0, step, 0).unwrap();
        expected.push((step, 1_000 + step, value.to_bits()));
    }
    run.log_metric_at("loss", -1.0, 10, 5).unwrap(); // a repeated step, logged later
    expected.push((10, 5, (-1.0f64).to_bits()));
    drop(run);
    // A second handle (another writer) resumes the run.
    let second = open(dir.path());
    let resumed = second.resume_run(id).unwrap();
    resumed.log_metric_at("loss", 7.0, 1_000, 9).unwrap();
    expected.push((1_000, 9, 7f64.to_bits()));
    expected.sort_by_key(|p| p.0);

    let history = store.history(id, "loss", ..).unwrap();
    let got: Vec<(i64, i64, u64)> = (0..history.len())
        .map(|i| {
            (
                history.steps[i],
                history.timestamps_ms[i],
                history.values[i].to_bits(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let range = store.history(id, "loss", 100..=102).unwrap();
    assert_eq!(range.steps, vec![100, 101, 102]);
    assert!(store.history(id, "never", ..).unwrap().is_empty());
    assert!(matches!(
        store.history(RunId(3), "loss", ..),
        Err(Error::NotFound(_))
    ));
    #[cfg(feature = "parquet")]
    {
        let batch = range.to_record_batch().unwrap();
        assert_eq!(batch.num_rows(), 3);
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["step", "timestamp", "value"]);
    }
}

fn brute_force_check(history: &History, max_points: usize, down: &Downsampled) {
    assert!(
        down.buckets.len() <= max_points,
        "{} buckets for {max_points}",
        down.buckets.len()
    );
    assert_eq!(down.points as usize, history.len());
    assert_eq!(
        down.buckets.iter().map(|b| b.count).sum::<u64>() as usize,
        history.len()
    );
    let key =
        |p: Option<runlog::query::Point>| p.map(|p| (p.step, p.timestamp_ms, p.value.to_bits()));
    assert_eq!(key(down.first), key(history.point(0)));
    assert_eq!(
        down.last.map(|p| p.value.to_bits()),
        history
            .len()
            .checked_sub(1)
            .map(|i| history.values[i].to_bits())
    );
    for pair in down.buckets.windows(2) {
        assert!(
            pair[0].step_end < pair[1].step_start,
            "overlapping buckets {pair:?}"
        );
    }
    for bucket in &down.buckets {
        let inside: Vec<usize> = (0..history.len())
            .filter(|i| (bucket.step_start..=bucket.step_end).contains(&history.steps[*i]))
            .collect();
        assert_eq!(inside.len() as u64, bucket.count);
        let finite: Vec<f64> = inside
            .iter()
            .map(|i| history.values[*i])
            .filter(|v| !v.is_nan())
            .collect();
        let min = finite
            .iter()
            .copied()
            .fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m });
        let max = finite
            .iter()
            .copied()
            .fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m });
        assert_eq!(bucket.min.to_bits(), min.to_bits());
        assert_eq!(bucket.max.to_bits(), max.to_bits());
        let last = *inside.last().unwrap();
        assert_eq!(bucket.last.step, history.steps[last]);
        assert_eq!(bucket.last.value.to_bits(), history.values[last].to_bits());
    }
}

proptest! {
    #[test]
    fn downsampling_agrees_with_brute_force(
        mut points in proptest::collection::vec((-1_000i64..1_000, prop_oneof![any::<f64>(), Just(f64::NAN)]), 0..400),
        max_points in 1usize..60,
    ) {
        points.sort_by_key(|p| p.0);
        let history = History {
            steps: points.iter().map(|p| p.0).collect(),
            timestamps_ms: (0..points.len() as i64).collect(),
            values: points.iter().map(|p| p.1).collect(),
        };
        let down = downsample(&history, max_points).unwrap();
        brute_force_check(&history, max_points, &down);
    }
}

#[test]
fn a_million_point_curve_comes_back_as_about_a_thousand_rows() {
    let points = 1_000_000i64;
    let history = History {
        steps: (0..points).collect(),
        timestamps_ms: (0..points).collect(),
        values: (0..points).map(|s| (s as f64).sin()).collect(),
    };
    let down = downsample(&history, 1_000).unwrap();
    assert_eq!(down.buckets.len(), 1_000);
    assert_eq!(down.first.unwrap().step, 0);
    assert_eq!(down.last.unwrap().step, points - 1);
    assert!(matches!(
        downsample(&history, 0),
        Err(Error::InvalidInput(_))
    ));
    let extreme = History {
        steps: vec![i64::MIN, i64::MAX],
        timestamps_ms: vec![0, 0],
        values: vec![1.0, 2.0],
    };
    brute_force_check(&extreme, 7, &downsample(&extreme, 7).unwrap());
}

#[test]
fn aligned_comparison_uses_the_same_buckets_for_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap();
    let short = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let long = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    for step in 0..500 {
        long.log_metric("loss", 1.0 / (step + 1) as f64, step)
            .unwrap();
        if step < 200 {
            short
                .log_metric("loss", 2.0 / (step + 1) as f64, step)
                .unwrap();
        }
    }
    let compared = store
        .compare_aligned(&[short.id(), long.id()], "loss", .., 50)
        .unwrap();
    assert_eq!(compared.len(), 2);
    let starts = |d: &Downsampled| d.buckets.iter().map(|b| b.step_start).collect::<Vec<_>>();
    assert_eq!(compared[1].1.buckets.len(), 50);
    assert_eq!(compared[0].1.buckets.len(), 20);
    assert_eq!(starts(&compared[0].1)[..], starts(&compared[1].1)[..20]);
}

#[test]
fn history_of_runs_reads_several_runs_as_history_reads_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            store
                .start_run(experiment.id, RunOptions::default())
                .unwrap()
        })
        .collect();
    for (index, run) in runs.iter().enumerate() {
        for step in (0..200).rev() {
            run.log_metric_at("loss", (step * (index as i64 + 1)) as f64, step, step)
                .unwrap();
        }
    }
    #[cfg(feature = "parquet")]
    store.compact().unwrap();
    // Points after the compaction come from the log, after the compacted ones.
    for run in &runs {
        run.log_metric_at("loss", -1.0, 50, 7).unwrap();
    }
    let ids: Vec<RunId> = runs.iter().map(|r| r.id()).collect();
    // The same run twice, and in another order: answers follow `runs`.
    let asked = [ids[2], ids[0], ids[2], ids[1]];
    for range in [(i64::MIN, i64::MAX), (40, 60)] {
        let together = store
            .history_of_runs(&asked, "loss", range.0..=range.1)
            .unwrap();
        assert_eq!(together.len(), asked.len());
        for (run, history) in asked.iter().zip(&together) {
            let alone = store.history(*run, "loss", range.0..=range.1).unwrap();
            assert_eq!(history, &alone);
        }
    }
    assert!(matches!(
        store.history_of_runs(&[ids[0], RunId(3)], "loss", ..),
        Err(Error::NotFound(_))
    ));
}

/// A compacted series of more than a row group (1,048,576 rows), starting inside its file's
/// first group after another run's series, is decoded piece by piece on several threads; it
/// must equal what was logged, bit for bit, and the serial reads of two step ranges that split
/// it. Values are random bit patterns (NaN payloads and subnormals among them) with ±inf, -0.0
/// and NaN placed across piece boundaries; `RUNLOG_TEST_SEED` replays a seed.
#[test]
fn a_compacted_series_over_several_row_groups_reads_back_bit_for_bit_in_parallel() {
    let mut next = seeded(0x5eed);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let before = store.start_run(experiment, RunOptions::default()).unwrap();
    let few: Vec<i64> = (0..1000).collect();
    before
        .log_batch("loss", &few, None, &vec![0.5; few.len()])
        .unwrap();
    let before_id = before.id();
    before.end(runlog::RunStatus::Finished).unwrap();
    let points = 1_300_000usize;
    let steps: Vec<i64> = (0..points as i64).map(|s| s * 3 - 7).collect();
    let timestamps: Vec<i64> = (0..points as i64)
        .map(|s| 1_700_000_000_000 + s / 5)
        .collect();
    let mut values: Vec<f64> = (0..points).map(|_| f64::from_bits(next())).collect();
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0];
    for (index, at) in [
        0,
        1,
        262_143,
        262_144,
        1_048_575 - 1000,
        1_048_576 - 1000,
        points - 1,
    ]
    .iter()
    .enumerate()
    {
        values[*at] = specials[index % specials.len()];
    }
    let id = log_and_compact(&store, experiment, &steps, &timestamps, &values);
    let whole = store.history(id, "loss", ..).unwrap();
    assert_exact(&whole, &steps, &timestamps, &values);
    let middle = steps[points / 2];
    let mut halves = store.history(id, "loss", ..middle).unwrap();
    let second = store.history(id, "loss", middle..).unwrap();
    halves.steps.extend(second.steps);
    halves.timestamps_ms.extend(second.timestamps_ms);
    halves.values.extend(second.values);
    assert_exact(&halves, &whole.steps, &whole.timestamps_ms, &whole.values);
    assert_eq!(store.history(before_id, "loss", ..).unwrap().steps, few);
}

/// Irregular steps and timestamps make the compacted columns' delta miniblocks of every bit
/// width, with negative deltas for the timestamps and a step jump that wraps around i64 (from
/// below -2^62 to above 2^62), over two row groups and several pieces: the page decoder must
/// give back exactly what was logged, as the general reader does.
#[test]
fn a_compacted_series_of_irregular_steps_and_times_reads_back_exactly() {
    let mut next = seeded(0x1_5eed);
    let points = 1_100_000usize;
    let mut steps = Vec::with_capacity(points);
    let mut step = -(1i64 << 62) - 5;
    for index in 0..points {
        steps.push(step);
        step += match (index, next() % 1000) {
            (550_000, _) => (1i64 << 62) + (1 << 62) / 2,
            (_, 0) => 1 << 40,
            (_, 1..=500) => 1,
            (_, gap) => gap as i64,
        };
    }
    let timestamps: Vec<i64> = (0..points)
        .map(|_| 1_000_000_000_000 + (next() % (1 << 40)) as i64)
        .collect();
    let values: Vec<f64> = (0..points).map(|_| f64::from_bits(next())).collect();

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap().id;
    let id = log_and_compact(&store, experiment, &steps, &timestamps, &values);
    let read = store.history(id, "loss", ..).unwrap();
    assert_exact(&read, &steps, &timestamps, &values);
}

/// A xorshift64 generator seeded from `RUNLOG_TEST_SEED`, else `default`; the seed is printed.
fn seeded(default: u64) -> impl FnMut() -> u64 {
    let seed = std::env::var("RUNLOG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed {seed} (RUNLOG_TEST_SEED replays it)");
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Logs `loss` in one batch in a new run, ends it, compacts, and gives the run's id.
fn log_and_compact(
    store: &Store,
    experiment: runlog::ExperimentId,
    steps: &[i64],
    timestamps: &[i64],
    values: &[f64],
) -> RunId {
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    run.log_batch("loss", steps, Some(timestamps), values)
        .unwrap();
    let id = run.id();
    run.end(runlog::RunStatus::Finished).unwrap();
    store.compact().unwrap();
    id
}

/// `read` holds exactly these points, values bit for bit.
fn assert_exact(read: &History, steps: &[i64], timestamps: &[i64], values: &[f64]) {
    assert_eq!(read.steps, steps);
    assert_eq!(read.timestamps_ms, timestamps);
    let bits = |values: &[f64]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&read.values), bits(values));
}
