//! Step ranges of compacted series: the rows the reader locates (by arithmetic on a dense
//! series, by the `step` column's page statistics otherwise) give exactly the points a brute
//! force filter of what was logged gives, at page edges, series edges and outside the series.

use runlog::{Durability, RunId, RunOptions, Store, StoreOptions};

use crate::util::Rng;

/// Rows per page of a compacted file (`COMPACTED_PAGE_ROWS_MAX`).
const PAGE_ROWS: i64 = 16 * 1024;

type Points = Vec<(i64, i64, u64)>;

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    Store::open_with(dir, options).unwrap()
}

/// Logs `steps` of `key` (value and timestamp derived from the position) and returns the
/// points in the order a history gives them: by step, logging order within a step.
fn log(run: &runlog::Run, key: &str, steps: &[i64]) -> Points {
    let timestamps: Vec<i64> = (0..steps.len() as i64).map(|i| 1_000 + i).collect();
    let values: Vec<f64> = (0..steps.len()).map(|i| i as f64 * 0.25).collect();
    for chunk in 0..steps.len().div_ceil(10_000) {
        let range = chunk * 10_000..((chunk + 1) * 10_000).min(steps.len());
        run.log_batch(
            key,
            &steps[range.clone()],
            Some(&timestamps[range.clone()]),
            &values[range],
        )
        .unwrap();
    }
    let mut points: Points = (0..steps.len())
        .map(|i| (steps[i], timestamps[i], values[i].to_bits()))
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

fn check(store: &Store, run: RunId, key: &str, points: &Points, first: i64, last: i64) {
    let got = store.history(run, key, first..=last).unwrap();
    let got: Points = (0..got.len())
        .map(|i| (got.steps[i], got.timestamps_ms[i], got.values[i].to_bits()))
        .collect();
    let expected: Points = points
        .iter()
        .filter(|p| (first..=last).contains(&p.0))
        .copied()
        .collect();
    assert_eq!(got.len(), expected.len(), "{key} {first}..={last}");
    assert!(got == expected, "{key} {first}..={last}");
}

/// Ranges at the edges of every page (in file rows, whatever the series' first row is) and
/// of the series, plus ranges before, after, empty and random.
fn ranges(points: &Points, rng: &mut Rng) -> Vec<(i64, i64)> {
    let (Some(low), Some(high)) = (points.first().map(|p| p.0), points.last().map(|p| p.0)) else {
        return vec![(0, 10)];
    };
    let mut out = vec![
        (low, high),
        (low, low),
        (high, high),
        (i64::MIN, low - 1),
        (high + 1, i64::MAX),
        (low - 5, low + 5),
        (high - 5, high + 5),
        (i64::MIN, i64::MAX),
        (low + 1, high - 1),
    ];
    for edge in (low..=high + PAGE_ROWS).step_by(PAGE_ROWS as usize / 4) {
        for delta in [-2, -1, 0, 1] {
            out.push((edge + delta, edge + delta + 1_000));
            out.push((edge + delta, edge + delta));
            out.push((edge - 1_000, edge + delta));
        }
    }
    for _ in 0..40 {
        let a = low - 10 + rng.below((high - low + 20) as u64) as i64;
        let b = a + rng.below(3 * PAGE_ROWS as u64) as i64;
        out.push((a, b));
    }
    out
}

#[test]
fn step_ranges_of_compacted_series_read_exactly_their_points() {
    let mut rng = Rng::from_env("step_ranges_of_compacted_series_read_exactly_their_points");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let mut series: Vec<(String, Points)> = Vec::new();
    // Small series first, so that the long ones start mid-page and share pages with them.
    for k in 0..6 {
        let steps: Vec<i64> = (0..700 + k * 300).collect();
        let key = format!("a/small{k}");
        series.push((key.clone(), log(&run, &key, &steps)));
    }
    // Dense, several pages.
    let dense: Vec<i64> = (0..3 * PAGE_ROWS + 123).collect();
    series.push(("b/dense".into(), log(&run, "b/dense", &dense)));
    // Dense, negative steps.
    let negative: Vec<i64> = (-40_000..-1_000).collect();
    series.push(("c/negative".into(), log(&run, "c/negative", &negative)));
    // As many rows as steps in its span, but with a repeated step and a gap: not dense.
    let mut looks_dense: Vec<i64> = (0..2 * PAGE_ROWS).collect();
    looks_dense[20_000] = 19_999;
    looks_dense[30_001] = 30_000;
    series.push((
        "d/looks_dense".into(),
        log(&run, "d/looks_dense", &looks_dense),
    ));
    // Repeated, negative and sparse steps, logged out of order.
    let mut sparse: Vec<i64> = Vec::new();
    let mut step = -5_000i64;
    while sparse.len() < 2 * PAGE_ROWS as usize + 77 {
        for _ in 0..1 + rng.below(3) {
            sparse.push(step);
        }
        step += 1 + rng.below(4) as i64;
    }
    let mut shuffled = sparse.clone();
    for i in (1..shuffled.len()).rev() {
        if rng.below(8) == 0 {
            let j = rng.below(i as u64 + 1) as usize;
            shuffled.swap(i, j);
        }
    }
    series.push(("e/sparse".into(), log(&run, "e/sparse", &shuffled)));
    for k in 0..4 {
        let steps: Vec<i64> = (0..500).map(|s| s * 3).collect();
        let key = format!("f/tail{k}");
        series.push((key.clone(), log(&run, &key, &steps)));
    }
    let id = run.id();
    drop(run);
    store.compact().unwrap();
    for (key, points) in &series {
        for (first, last) in ranges(points, &mut rng) {
            check(&store, id, key, points, first, last);
        }
    }
    // A reopened handle (no cached footers) reads the same.
    drop(store);
    let store = open(dir.path());
    for (key, points) in &series {
        let (low, high) = (points[0].0, points[points.len() - 1].0);
        check(&store, id, key, points, low + 17, high - 17);
    }
}

#[test]
fn a_step_range_spanning_compacted_files_and_the_log_keeps_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let mut points = log(&run, "loss", &(0..40_000).collect::<Vec<_>>());
    store.compact().unwrap();
    let mut more = log(&run, "loss", &(30_000..60_000).collect::<Vec<_>>());
    store.compact().unwrap();
    let mut tail = log(&run, "loss", &(59_000..61_000).collect::<Vec<_>>());
    // Stable by step: compacted generations first, then the log, as the history promises.
    points.append(&mut more);
    points.append(&mut tail);
    points.sort_by_key(|p| p.0);
    let id = run.id();
    for (first, last) in [
        (0, 70_000),
        (29_990, 30_010),
        (39_999, 40_000),
        (58_999, 59_001),
        (60_000, 60_999),
        (61_000, 70_000),
        (-5, -1),
    ] {
        check(&store, id, "loss", &points, first, last);
    }
}
