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

/// MLflow's interval sample as the SQL store computes it, the slow way: order the points by
/// (step, timestamp, value with NaN after 0), put row `i` in NTILE bucket `b(i)`, keep each
/// bucket's first row, and make sure the last row is there (replacing the last kept one when
/// the sample is full).
fn reference_interval_sample(history: &runlog::query::History, k: usize) -> Vec<(i64, i64, u64)> {
    let key = |v: f64| if v.is_nan() { (0.0, true) } else { (v, false) };
    let mut points: Vec<(i64, i64, f64)> = (0..history.len())
        .map(|i| {
            (
                history.steps[i],
                history.timestamps_ms[i],
                history.values[i],
            )
        })
        .collect();
    points.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(key(a.2).0.total_cmp(&key(b.2).0))
            .then(key(a.2).1.cmp(&key(b.2).1))
    });
    let n = points.len();
    let (size, larger) = (n / k, n % k);
    let mut kept: Vec<usize> = Vec::new();
    let mut bucket_of_previous = usize::MAX;
    for i in 0..n {
        // NTILE: the first `larger` buckets hold size + 1 rows.
        let bucket = if n <= k {
            i
        } else if i < larger * (size + 1) {
            i / (size + 1)
        } else {
            larger + (i - larger * (size + 1)) / size
        };
        if bucket != bucket_of_previous {
            kept.push(i);
            bucket_of_previous = bucket;
        }
    }
    if n > 0 && kept.last() != Some(&(n - 1)) {
        if kept.len() >= k {
            kept.pop();
        }
        kept.push(n - 1);
    }
    kept.iter()
        .map(|i| (points[*i].0, points[*i].1, points[*i].2.to_bits()))
        .collect()
}

/// Logs a random series for `run`: dense, sparse with repeats, or with steps logged again;
/// compacting in between at random, and leaving some in the log.
/// The points of `history` with a step in `first..=last`, in history order.
fn in_steps(history: &runlog::query::History, first: i64, last: i64) -> runlog::query::History {
    let mut kept = runlog::query::History::default();
    for i in (0..history.len()).filter(|i| (first..=last).contains(&history.steps[*i])) {
        kept.steps.push(history.steps[i]);
        kept.timestamps_ms.push(history.timestamps_ms[i]);
        kept.values.push(history.values[i]);
    }
    kept
}

fn log_random(store: &Store, run: &runlog::Run, rng: &mut Rng) {
    let length = 1 + rng.below(40_000) as i64;
    let start = rng.below(2_000) as i64 - 1_000;
    let shape = rng.below(4);
    let mut steps: Vec<i64> = match shape {
        0 | 1 => (start..start + length).collect(),
        2 => {
            let mut steps = Vec::new();
            let mut step = start;
            while (steps.len() as i64) < length {
                for _ in 0..1 + rng.below(2) {
                    steps.push(step);
                }
                step += 1 + rng.below(3) as i64;
            }
            steps
        }
        _ => (start..start + length).map(|s| s / 2).collect(),
    };
    let cuts = rng.below(3) as usize;
    let mut done = 0;
    for cut in 0..=cuts {
        let end = if cut == cuts {
            steps.len()
        } else {
            done + rng.below((steps.len() - done) as u64 + 1) as usize
        };
        let part = &mut steps[done..end];
        if rng.below(5) == 0 {
            // Some steps of this part again, later.
            for step in part.iter_mut().take(50) {
                *step -= 100;
            }
        }
        let timestamps: Vec<i64> = (0..part.len())
            .map(|i| 1_000 + i as i64 + rng.below(3) as i64)
            .collect();
        let values: Vec<f64> = (0..part.len())
            .map(|i| {
                if rng.below(500) == 0 {
                    f64::NAN
                } else {
                    rng.loss(i as i64)
                }
            })
            .collect();
        for chunk in (0..part.len()).step_by(10_000) {
            let range = chunk..(chunk + 10_000).min(part.len());
            run.log_batch(
                "loss",
                &part[range.clone()],
                Some(&timestamps[range.clone()]),
                &values[range],
            )
            .unwrap();
        }
        if rng.below(3) != 0 {
            store.compact().unwrap();
        }
        done = end;
    }
}

#[test]
#[cfg(feature = "mlflow")]
fn sampled_history_matches_the_whole_history_sampled() {
    use std::sync::Arc;
    let mut rng = Rng::from_env("sampled_history_matches_the_whole_history_sampled");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let experiment = store.get_or_create_experiment("e").unwrap();
    let mut runs = Vec::new();
    for _ in 0..6 {
        let run = store
            .start_run(experiment.id, RunOptions::default())
            .unwrap();
        log_random(&store, &run, &mut rng);
        runs.push(run.id());
    }
    let service = runlog::mlflow::Service::new(store.clone());
    // The reference: each run's whole history, read with no step range so that every part is
    // kept whole, not located by steps as the sampled read locates it.
    let everything = store.history_of_runs(&runs, "loss", ..).unwrap();
    for _ in 0..30 {
        let k = [1, 2, 7, 320, 2_500][rng.below(5) as usize];
        let range = match rng.below(3) {
            0 => None,
            _ => {
                let a = rng.below(45_000) as i64 - 2_000;
                Some((a, a + rng.below(30_000) as i64))
            }
        };
        let steps = range.map_or((i64::MIN, i64::MAX), |r| r);
        // The engine: picking ranks out of the sampled read equals picking them out of the
        // whole history.
        let pick = |total: usize| (0..total).step_by(1 + total / k).collect::<Vec<_>>();
        let sampled = store
            .history_sample(&runs, "loss", steps.0..=steps.1, &pick)
            .unwrap();
        let whole: Vec<runlog::query::History> = everything
            .iter()
            .map(|history| in_steps(history, steps.0, steps.1))
            .collect();
        for (sample, history) in sampled.iter().zip(&whole) {
            assert_eq!(sample.total, history.len());
            let ranks = pick(history.len());
            let bits = |h: &runlog::query::History, i: usize| {
                (h.steps[i], h.timestamps_ms[i], h.values[i].to_bits())
            };
            let expected: Vec<_> = ranks.iter().map(|i| bits(history, *i)).collect();
            let got: Vec<_> = (0..sample.points.len())
                .map(|i| bits(&sample.points, i))
                .collect();
            assert!(got == expected, "engine sample, k {k}, range {range:?}");
            let ties = ranks.iter().any(|i| {
                let step = history.steps[*i];
                (i.checked_sub(1).map(|b| history.steps[b]) == Some(step))
                    || history.steps.get(i + 1) == Some(&step)
            });
            assert_eq!(sample.ties, ties, "ties, k {k}, range {range:?}");
        }
        // MLflow's endpoint against its SQL store's sampling of the whole history.
        let mut query = format!("metric_key=loss&max_results={k}");
        if let Some((a, b)) = range {
            query.push_str(&format!("&start_step={a}&end_step={b}"));
        }
        for run in &runs {
            query.push_str(&format!("&run_ids={run}"));
        }
        let reply = service.handle(runlog::mlflow::Request {
            method: runlog::mlflow::Method::Get,
            path: "/api/2.0/mlflow/metrics/get-history-bulk-interval",
            query: &query,
            body: b"",
        });
        assert_eq!(reply.status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let metrics = answer["metrics"].as_array().cloned().unwrap_or_default();
        let mut expected = Vec::new();
        for (run, history) in runs.iter().zip(&whole) {
            for point in reference_interval_sample(history, k) {
                expected.push((run.to_string(), point));
            }
        }
        let got: Vec<(String, (i64, i64, u64))> = metrics
            .iter()
            .map(|m| {
                let value = match &m["value"] {
                    serde_json::Value::String(s) if s == "NaN" => f64::NAN,
                    other => other.as_f64().unwrap(),
                };
                (
                    m["run_id"].as_str().unwrap().to_string(),
                    (
                        m["step"].as_i64().unwrap(),
                        m["timestamp"].as_i64().unwrap(),
                        value.to_bits(),
                    ),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "k {k}, range {range:?}");
        let nan_bits = |p: &(String, (i64, i64, u64))| {
            let v = f64::from_bits(p.1.2);
            (
                p.0.clone(),
                p.1.0,
                p.1.1,
                if v.is_nan() { u64::MAX } else { p.1.2 },
            )
        };
        let got: Vec<_> = got.iter().map(nan_bits).collect();
        let expected: Vec<_> = expected.iter().map(nan_bits).collect();
        assert!(got == expected, "mlflow sample, k {k}, range {range:?}");
    }
}

/// Pages through `get-history` of `key` and returns every point, in the order of the pages.
#[cfg(feature = "mlflow")]
fn all_pages(service: &runlog::mlflow::Service, run: RunId, key: &str, size: usize) -> Points {
    let mut points = Points::new();
    let mut token = String::new();
    loop {
        let query = format!("run_id={run}&metric_key={key}&max_results={size}&page_token={token}");
        let reply = service.handle(runlog::mlflow::Request {
            method: runlog::mlflow::Method::Get,
            path: "/api/2.0/mlflow/metrics/get-history",
            query: &query,
            body: b"",
        });
        assert_eq!(reply.status, 200);
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let metrics = answer["metrics"].as_array().cloned().unwrap_or_default();
        assert!(metrics.len() <= size);
        for m in &metrics {
            points.push((
                m["step"].as_i64().unwrap(),
                m["timestamp"].as_i64().unwrap(),
                m["value"].as_f64().unwrap().to_bits(),
            ));
        }
        match answer["next_page_token"].as_str() {
            Some(next) => token = next.to_string(),
            None => return points,
        }
    }
}

#[test]
#[cfg(feature = "mlflow")]
fn history_pages_read_only_their_rows_and_match_the_whole_history_in_time_order() {
    use std::sync::Arc;
    let mut rng = Rng::from_env("history_pages_read_only_their_rows_and_match_the_whole_history");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let experiment = store.get_or_create_experiment("e").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    log(&run, "a/before", &(0..1_234).collect::<Vec<_>>());
    // Timestamps increase with steps (`log` makes them increase with the position).
    let in_order = log(
        &run,
        "b/in_order",
        &(-500..3 * PAGE_ROWS).collect::<Vec<_>>(),
    );
    // Timestamps against steps: positions increase while steps decrease.
    let against = log(&run, "c/against", &(0..40_000).rev().collect::<Vec<_>>());
    log(&run, "d/after", &(0..999).collect::<Vec<_>>());
    let id = run.id();
    store.compact().unwrap();
    let service = runlog::mlflow::Service::new(store.clone());
    let by_time = |points: &Points| {
        let mut sorted = points.clone();
        sorted.sort_by_key(|p| (p.1, p.0));
        sorted
    };
    // The in-order series is paged from its page index; the other cannot be.
    assert!(
        store
            .history_page(id, "b/in_order", 0, 10)
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .history_page(id, "c/against", 0, 10)
            .unwrap()
            .is_none()
    );
    for size in [25_000, 1 + rng.below(20_000) as usize, 16_384, 1] {
        if size == 1 {
            // One point a page: only a few pages, checked against the whole history.
            let page = store
                .history_page(id, "b/in_order", 20_000, 1)
                .unwrap()
                .unwrap();
            assert_eq!(page.points.steps, [by_time(&in_order)[20_000].0]);
            continue;
        }
        assert!(
            all_pages(&service, id, "b/in_order", size) == by_time(&in_order),
            "{size}"
        );
        assert!(
            all_pages(&service, id, "c/against", size) == by_time(&against),
            "{size}"
        );
    }
    // A page past the end is empty and has no token.
    let page = store
        .history_page(id, "b/in_order", 1 << 40, 25_000)
        .unwrap()
        .unwrap();
    assert!(page.points.is_empty());
    // Points in the log as well: the whole series is read, with the same answer.
    let more = log(
        &run,
        "b/in_order",
        &(3 * PAGE_ROWS..3 * PAGE_ROWS + 10).collect::<Vec<_>>(),
    );
    assert!(
        store
            .history_page(id, "b/in_order", 0, 10)
            .unwrap()
            .is_none()
    );
    let mut everything = in_order.clone();
    everything.extend(more);
    assert!(all_pages(&service, id, "b/in_order", 25_000) == by_time(&everything));
}
