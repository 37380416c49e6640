//! One long-lived read handle answers exactly as a handle opened afresh does, and as what was
//! logged says, while another handle keeps logging and compacting under it: new generations,
//! merges of an experiment's older files, manifest edits on a base and new bases. Whatever a
//! handle keeps between reads (decoded manifests, file footers, decoded blocks, step runs,
//! summaries) must follow the store as it changes, never answer from a state that is gone.
//!
//! The series cover what such reuse could get wrong: a dense series of more than 40,000 points
//! split across several compacted files and the log's tail, one with repeated steps logged out
//! of order (ties ordered by logging order), one logged again over steps already compacted (parts
//! with overlapping spans), short ones of 10 rows (compacted, split across a file and the tail,
//! tail only), one timestamped by the clock that search orders runs by, and many one-point
//! series that make the manifest's base large enough for chains of edits to grow on it. Ranges are taken at
//! the 16,384-row page edges of every file a series is in (the file's last partial page
//! included), at the edges of its parts and at random.

use std::collections::BTreeMap;

use runlog::query::{History, SearchRuns};
use runlog::{Durability, RunId, RunOptions, Store, StoreOptions, ViewType};

use crate::util::Rng;

/// Rows per page of a compacted file (`COMPACTED_PAGE_ROWS_MAX`).
const PAGE_ROWS: u64 = 16 * 1024;

/// Edges of a series (page, part, ends) read around in one check.
const EDGES_PER_CHECK: usize = 8;

/// One-point series of the `wide` run; a random few are read in each check.
const WIDE_KEYS: usize = 80;

/// Rounds of logging; each is followed by a compaction unless the seed skips it.
const ROUNDS: usize = 9;

/// Compactions at least, so that an experiment passes `FILES_PER_EXPERIMENT_MAX` files.
const COMPACTIONS_MIN: usize = 6;

/// The dense series' length at least, once every round has logged.
const DENSE_POINTS_MIN: i64 = 40_001;

/// A point: step, timestamp, value bits.
type Point = (i64, i64, u64);

/// What was logged to one series, in logging order.
#[derive(Default)]
struct Series {
    points: Vec<Point>,
    /// Whether the timestamps were given (else the clock's, which the model does not know).
    timestamped: bool,
}

impl Series {
    /// The history a read gives: by step, logging order within a step.
    fn history(&self) -> Vec<Point> {
        let mut sorted = self.points.clone();
        sorted.sort_by_key(|p| p.0);
        sorted
    }
}

type Model = BTreeMap<(RunId, String), Series>;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    }
}

fn read_only() -> StoreOptions {
    StoreOptions {
        read_only: true,
        ..options()
    }
}

fn points(history: &History) -> Vec<Point> {
    (0..history.len())
        .map(|i| {
            (
                history.steps[i],
                history.timestamps_ms[i],
                history.values[i].to_bits(),
            )
        })
        .collect()
}

fn to_history(points: &[Point]) -> History {
    History {
        steps: points.iter().map(|p| p.0).collect(),
        timestamps_ms: points.iter().map(|p| p.1).collect(),
        values: points.iter().map(|p| f64::from_bits(p.2)).collect(),
    }
}

/// Points the model can vouch for: all three fields, or step and value only.
fn comparable(points: &[Point], timestamped: bool) -> Vec<Point> {
    points
        .iter()
        .map(|p| (p.0, if timestamped { p.1 } else { 0 }, p.2))
        .collect()
}

/// Everything the writer side does, and the model of what it logged.
struct Writer {
    store: Store,
    runs: BTreeMap<&'static str, runlog::Run>,
    model: Model,
    clock_ms: i64,
    dense_next: i64,
}

impl Writer {
    fn run(&self, name: &str) -> RunId {
        self.runs[name].id()
    }

    fn batch(&mut self, run: &str, key: &str, steps: &[i64], rng: &mut Rng) {
        let timestamps: Vec<i64> = steps
            .iter()
            .map(|_| {
                self.clock_ms += 1;
                self.clock_ms
            })
            .collect();
        let values: Vec<f64> = steps.iter().map(|s| rng.loss(*s)).collect();
        for chunk in (0..steps.len()).step_by(10_000) {
            let range = chunk..(chunk + 10_000).min(steps.len());
            self.runs[run]
                .log_batch(
                    key,
                    &steps[range.clone()],
                    Some(&timestamps[range.clone()]),
                    &values[range],
                )
                .unwrap();
        }
        let series = self
            .model
            .entry((self.run(run), key.to_string()))
            .or_default();
        series.timestamped = true;
        series
            .points
            .extend((0..steps.len()).map(|i| (steps[i], timestamps[i], values[i].to_bits())));
    }

    fn point(&mut self, run: &str, key: &str, step: i64, value: f64) {
        self.clock_ms += 1;
        self.runs[run]
            .log_metric_at(key, value, step, self.clock_ms)
            .unwrap();
        let series = self
            .model
            .entry((self.run(run), key.to_string()))
            .or_default();
        series.timestamped = true;
        series.points.push((step, self.clock_ms, value.to_bits()));
    }

    /// `acc` at the next step, timestamped by the clock (`log_metrics`).
    fn acc(&mut self, run: &str, value: f64) {
        let id = self.run(run);
        let series = self.model.entry((id, "acc".to_string())).or_default();
        let step = series.points.len() as i64;
        series.points.push((step, 0, value.to_bits()));
        self.runs[run].log_metrics(step, &[("acc", value)]).unwrap();
    }

    /// One round of logging: the dense series grows, the repeated and overlapping series get
    /// more points, short series are logged at their round, every run's `acc` moves.
    fn log_round(&mut self, round: usize, rng: &mut Rng) {
        let dense_points = if round == 0 {
            18_000
        } else {
            let left = (DENSE_POINTS_MIN - self.dense_next).max(0);
            let rounds_left = (ROUNDS - round) as i64;
            (left + rounds_left - 1) / rounds_left + rng.below(1_500) as i64
        };
        let steps: Vec<i64> = (self.dense_next..self.dense_next + dense_points).collect();
        self.dense_next += dense_points;
        self.batch("dense", "dense", &steps, rng);

        // Repeated steps, out of order, a NaN now and then.
        for _ in 0..20 + rng.below(60) {
            let step = rng.below(50) as i64;
            let value = if rng.below(25) == 0 {
                f64::NAN
            } else {
                rng.loss(step)
            };
            self.point("dense", "rep", step, value);
        }

        // Over steps already logged (and compacted), and past them.
        let start = round as i64 * 300 - 100;
        let overlapping: Vec<i64> = (start.max(0)..round as i64 * 300 + 400).collect();
        self.batch("split", "loss", &overlapping, rng);

        // Many one-point series, so that the manifest's base is large next to an edit of what
        // a round changes, and a chain of edits grows on it between new bases.
        if round == 0 {
            for k in 0..WIDE_KEYS {
                self.point("wide", &format!("wide/{k:03}"), 0, k as f64 + 0.5);
            }
        }

        // 10 rows: compacted at once, half and half across the first compaction, in the tail.
        let short = |from: i64, to: i64| (from..to).map(|s| s * 3).collect::<Vec<i64>>();
        match round {
            0 => {
                self.batch("short_a", "short", &short(0, 10), rng);
                self.batch("short_b", "short", &short(0, 5), rng);
            }
            1 => self.batch("short_b", "short", &short(5, 10), rng),
            r if r == ROUNDS - 1 => self.batch("short_c", "short", &short(0, 10), rng),
            _ => {}
        }

        let names: Vec<&'static str> = self.runs.keys().copied().collect();
        for name in names {
            if rng.below(2) == 0 || round == 0 {
                let value = rng.below(1_000_000) as f64 / 1_000_000.0;
                self.acc(name, value);
            }
        }
        self.store.flush().unwrap();
    }
}

/// Step ranges to read of one series: at the page edges of every compacted file it is in (in
/// file rows, the last partial page included), at the edges of its parts, around its ends and
/// at random.
fn ranges(
    store: &Store,
    run: RunId,
    key: &str,
    history: &[Point],
    rng: &mut Rng,
) -> Vec<(i64, i64)> {
    let (Some(low), Some(high)) = (history.first().map(|p| p.0), history.last().map(|p| p.0))
    else {
        return vec![(i64::MIN, i64::MAX), (0, 10)];
    };
    let mut edges: Vec<i64> = vec![low, high];
    let manifest = store.manifest().unwrap();
    for file in &manifest.files {
        let mut page_starts: Vec<u64> =
            (PAGE_ROWS..file.rows).step_by(PAGE_ROWS as usize).collect();
        page_starts.push(file.rows.saturating_sub(1));
        for part in file
            .series
            .iter()
            .filter(|s| s.run == run && *s.key == *key)
        {
            edges.extend([part.first_step, part.last_step]);
            let end = part.row_start + part.row_count;
            for row in page_starts
                .iter()
                .filter(|r| (part.row_start..end).contains(r))
            {
                // Exact on a dense part, near the edge on others.
                let offset = (row - part.row_start) as i128;
                let span = i128::from(part.last_step) - i128::from(part.first_step);
                let rows = part.row_count.max(2) as i128 - 1;
                let step = i128::from(part.first_step) + offset * span / rows;
                edges.push(step as i64);
            }
        }
    }
    let mut out = vec![
        (i64::MIN, i64::MAX),
        (low - 5, low + 5),
        (high - 5, high + 5),
    ];
    out.push((high + 1, i64::MAX));
    out.push((i64::MIN, low - 1));
    edges.sort_unstable();
    edges.dedup();
    // A random few: every edge is read in some check, not all in each.
    while edges.len() > EDGES_PER_CHECK {
        edges.swap_remove(rng.below(edges.len() as u64) as usize);
    }
    for edge in edges {
        let delta = rng.below(4) as i64 - 2;
        let edge = edge + delta;
        out.push((edge, edge));
        out.push((edge - 1, edge + 1));
        out.push((edge - rng.below(700) as i64, edge + rng.below(700) as i64));
    }
    for _ in 0..2 {
        let a = low - 10 + rng.below((high - low + 20) as u64) as i64;
        out.push((a, a + rng.below(2 * PAGE_ROWS) as i64));
    }
    out
}

/// Ranks to pick of `total`, as MLflow's interval sampling does: evenly spaced, and the last.
fn pick_of(k: usize) -> impl Fn(usize) -> Vec<usize> + Sync {
    move |total: usize| {
        let mut ranks: Vec<usize> = (0..total).step_by(1 + total / k.max(1)).collect();
        if total > 0 && ranks.last() != Some(&(total - 1)) {
            ranks.push(total - 1);
        }
        ranks
    }
}

fn in_steps(history: &[Point], first: i64, last: i64) -> Vec<Point> {
    history
        .iter()
        .filter(|p| (first..=last).contains(&p.0))
        .copied()
        .collect()
}

/// The long-lived handle, a fresh one and the model agree on one series.
fn check_series(
    long: &Store,
    fresh: &Store,
    run: RunId,
    key: &str,
    series: &Series,
    rng: &mut Rng,
    context: &str,
) {
    let expected = series.history();
    let timestamped = series.timestamped;
    let whole = points(&long.history(run, key, ..).unwrap());
    assert!(
        whole == points(&fresh.history(run, key, ..).unwrap()),
        "{context}: {run} {key}: history differs from a fresh handle's"
    );
    assert_eq!(
        whole.len(),
        expected.len(),
        "{context}: {run} {key}: length"
    );
    assert!(
        comparable(&whole, timestamped) == comparable(&expected, timestamped),
        "{context}: {run} {key}: history differs from what was logged"
    );

    if !timestamped {
        // `acc`, a few points for search to order runs by: their ranges add nothing here.
        return;
    }
    for (first, last) in ranges(fresh, run, key, &expected, rng) {
        let got = points(&long.history(run, key, first..=last).unwrap());
        let want = in_steps(&whole, first, last);
        assert!(
            got == want,
            "{context}: {run} {key} {first}..={last}: {} points, the whole history has {}",
            got.len(),
            want.len()
        );
        if rng.below(4) == 0 {
            let other = points(&fresh.history(run, key, first..=last).unwrap());
            assert!(
                other == want,
                "{context}: {run} {key} {first}..={last}: fresh handle"
            );
        }
    }

    {
        let max_points = [1, 7, 100][rng.below(3) as usize];
        let got = long.history_downsampled(run, key, .., max_points).unwrap();
        let other = fresh.history_downsampled(run, key, .., max_points).unwrap();
        let want = runlog::query::downsample(&to_history(&whole), max_points).unwrap();
        // Debug prints f64 exactly (and NaN as NaN), so equal text is equal bits here.
        assert_eq!(
            format!("{got:?}"),
            format!("{other:?}"),
            "{context}: {run} {key} downsampled"
        );
        assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "{context}: {run} {key} downsampled"
        );
    }

    check_samples(long, fresh, run, key, &whole, rng, context);
}

fn check_samples(
    long: &Store,
    fresh: &Store,
    run: RunId,
    key: &str,
    whole: &[Point],
    rng: &mut Rng,
    context: &str,
) {
    let (low, high) = match (whole.first(), whole.last()) {
        (Some(a), Some(b)) => (a.0, b.0),
        _ => (0, 0),
    };
    let mut windows = vec![(i64::MIN, i64::MAX)];
    {
        let a = low - 3 + rng.below((high - low + 6) as u64) as i64;
        windows.push((a, a + rng.below((high - low + 1) as u64 + PAGE_ROWS) as i64));
    }
    for (first, last) in windows {
        for _ in 0..2 {
            let k = [1, 10, 320, 2_500][rng.below(4) as usize];
            let pick = pick_of(k);
            let got = long
                .history_sample(&[run], key, first..=last, &pick)
                .unwrap();
            let other = fresh
                .history_sample(&[run], key, first..=last, &pick)
                .unwrap();
            let range = in_steps(whole, first, last);
            let ranks = pick(range.len());
            let want: Vec<Point> = ranks.iter().map(|i| range[*i]).collect();
            let ties = ranks.iter().any(|i| {
                (i.checked_sub(1).map(|b| range[b].0) == Some(range[*i].0))
                    || range.get(i + 1).map(|p| p.0) == Some(range[*i].0)
            });
            let what = format!("{context}: {run} {key} sample {first}..={last} of {k}");
            assert_eq!(got.len(), 1, "{what}");
            assert_eq!(got[0].total, range.len(), "{what}: total");
            assert!(points(&got[0].points) == want, "{what}: points");
            assert_eq!(got[0].ties, ties, "{what}: ties");
            assert_eq!(other[0].total, got[0].total, "{what}: fresh total");
            assert!(
                points(&other[0].points) == want,
                "{what}: fresh handle's points"
            );
        }
    }
}

/// `view` with its sums left out: a sum is added up in an order that depends on what the
/// handle read when (the points of the log, or a compacted file's summary then the log), so
/// two handles may differ in its last bits.
fn without_sums(view: &runlog::RunView) -> runlog::RunView {
    let mut view = view.clone();
    for summary in view.metrics.values_mut() {
        summary.sum = 0.0;
    }
    view
}

/// Run views: the summaries of the long-lived handle, a fresh handle and the model agree.
fn check_views(long: &Store, fresh: &Store, model: &Model, context: &str) {
    let mut runs: Vec<RunId> = model.keys().map(|(run, _)| *run).collect();
    runs.dedup();
    for run in runs {
        let view = long.run(run).unwrap();
        let other = fresh.run(run).unwrap();
        assert_eq!(
            format!("{:?}", without_sums(&view)),
            format!("{:?}", without_sums(&other)),
            "{context}: view of {run}"
        );
        for (key, summary) in &view.metrics {
            let sum = other.metrics[key].sum;
            assert!(
                (summary.sum - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                "{context}: {run} {key} sum {} and {sum}",
                summary.sum
            );
        }
        for ((of, key), series) in model.range((run, String::new())..) {
            if *of != run {
                break;
            }
            let Some(summary) = view.metrics.get(key) else {
                assert!(series.points.is_empty(), "{context}: {run} {key} missing");
                continue;
            };
            let points = &series.points;
            assert_eq!(
                summary.count,
                points.len() as u64,
                "{context}: {run} {key} count"
            );
            let latest = points.iter().max_by_key(|p| (p.0, p.1)).unwrap();
            // Without given timestamps, steps only increase (`acc`): the last logged is latest.
            let latest = if series.timestamped {
                latest
            } else {
                points.last().unwrap()
            };
            assert_eq!(
                (summary.last_step, summary.last_value.to_bits()),
                (latest.0, latest.2),
                "{context}: {run} {key} latest"
            );
            if series.timestamped {
                assert_eq!(
                    summary.last_timestamp_ms, latest.1,
                    "{context}: {run} {key}"
                );
            }
            let first = points.iter().map(|p| p.0).min().unwrap();
            assert_eq!(
                summary.first_step, first,
                "{context}: {run} {key} first step"
            );
            let finite: Vec<f64> = points
                .iter()
                .map(|p| f64::from_bits(p.2))
                .filter(|v| !v.is_nan())
                .collect();
            assert_eq!(
                summary.finite_count,
                finite.len() as u64,
                "{context}: {run} {key}"
            );
            if let Some(min) = finite.iter().copied().reduce(f64::min) {
                assert_eq!(summary.min_value, min, "{context}: {run} {key} min");
            }
            if let Some(max) = finite.iter().copied().reduce(f64::max) {
                assert_eq!(summary.max_value, max, "{context}: {run} {key} max");
            }
        }
    }
}

/// Every page of a search ordered by `acc`.
fn search_all(store: &Store, filter: &str) -> Vec<(RunId, u64)> {
    let mut found = Vec::new();
    let mut page_token = None;
    loop {
        let page = store
            .search_runs(&SearchRuns {
                filter: filter.to_string(),
                order_by: vec!["metrics.acc DESC".to_string()],
                max_results: 2,
                page_token,
                view: ViewType::All,
                ..SearchRuns::default()
            })
            .unwrap();
        found.extend(
            page.runs
                .iter()
                .map(|r| (r.info.id, r.metrics["acc"].last_value.to_bits())),
        );
        match page.next_page_token {
            Some(token) => page_token = Some(token),
            None => return found,
        }
    }
}

fn check_search(long: &Store, fresh: &Store, model: &Model, context: &str) {
    for filter in ["", "metrics.acc > 0.4"] {
        let got = search_all(long, filter);
        assert_eq!(
            got,
            search_all(fresh, filter),
            "{context}: search {filter:?}"
        );
        let mut want: Vec<(RunId, f64)> = model
            .iter()
            .filter(|((_, key), _)| key == "acc")
            .map(|((run, _), s)| (*run, f64::from_bits(s.points.last().unwrap().2)))
            .filter(|(_, v)| filter.is_empty() || *v > 0.4)
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Ties may come in any order: compare the values in order, and the runs as sets.
        let values: Vec<f64> = got.iter().map(|g| f64::from_bits(g.1)).collect();
        let want_values: Vec<f64> = want.iter().map(|w| w.1).collect();
        assert_eq!(values, want_values, "{context}: search {filter:?} order");
        let mut runs: Vec<RunId> = got.iter().map(|g| g.0).collect();
        let mut want_runs: Vec<RunId> = want.iter().map(|w| w.0).collect();
        runs.sort();
        want_runs.sort();
        assert_eq!(runs, want_runs, "{context}: search {filter:?} runs");
    }
}

/// The handle that logs and compacts is long-lived too: a few of its reads against the model.
fn check_compactor(compactor: &Store, long: &Store, model: &Model, rng: &mut Rng, context: &str) {
    for ((run, key), series) in model {
        if key.starts_with("wide/") && rng.below(WIDE_KEYS as u64) >= 3 {
            continue;
        }
        let expected = series.history();
        let whole = points(&compactor.history(*run, key, ..).unwrap());
        assert!(
            comparable(&whole, series.timestamped) == comparable(&expected, series.timestamped),
            "{context}: {run} {key}: the compacting handle's history"
        );
        let (Some(low), Some(high)) = (whole.first(), whole.last()) else {
            continue;
        };
        let first = low.0 + rng.below((high.0 - low.0 + 1) as u64) as i64;
        let last = first + rng.below(2 * PAGE_ROWS) as i64;
        assert!(
            points(&compactor.history(*run, key, first..=last).unwrap())
                == in_steps(&whole, first, last),
            "{context}: {run} {key} {first}..={last}: the compacting handle's range"
        );
        let pick = pick_of([1, 10, 320, 2_500][rng.below(4) as usize]);
        let got = compactor
            .history_sample(&[*run], key, first..=last, &pick)
            .unwrap();
        let range = in_steps(&whole, first, last);
        let want: Vec<Point> = pick(range.len()).iter().map(|i| range[*i]).collect();
        assert_eq!(got[0].total, range.len(), "{context}: {run} {key} sample");
        assert!(
            points(&got[0].points) == want,
            "{context}: {run} {key} {first}..={last}: the compacting handle's sample"
        );
    }
    let mut runs: Vec<RunId> = model.keys().map(|(run, _)| *run).collect();
    runs.dedup();
    for run in runs {
        assert_eq!(
            format!("{:?}", without_sums(&compactor.run(run).unwrap())),
            format!("{:?}", without_sums(&long.run(run).unwrap())),
            "{context}: the compacting handle's view of {run}"
        );
    }
}

fn check(
    long: &Store,
    compactor: &Store,
    root: &std::path::Path,
    model: &Model,
    rng: &mut Rng,
    context: &str,
) {
    long.refresh().unwrap();
    let fresh = Store::open_with(root, read_only()).unwrap();
    for ((run, key), series) in model {
        if !key.starts_with("wide/") || rng.below(WIDE_KEYS as u64) < 3 {
            check_series(long, &fresh, *run, key, series, rng, context);
        }
    }
    check_views(long, &fresh, model, context);
    check_search(long, &fresh, model, context);
    check_compactor(compactor, long, model, rng, context);
}

#[test]
fn a_long_lived_handle_answers_as_a_fresh_one_across_compactions() {
    let mut rng = Rng::from_env("a_long_lived_handle_answers_as_a_fresh_one_across_compactions");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, options()).unwrap();
    let alpha = store.get_or_create_experiment("alpha").unwrap().id;
    let beta = store.get_or_create_experiment("beta").unwrap().id;
    let mut runs = BTreeMap::new();
    for (name, experiment) in [
        ("dense", alpha),
        ("short_a", alpha),
        ("split", beta),
        ("short_b", beta),
        ("short_c", beta),
        ("wide", alpha),
    ] {
        let run = store.start_run(experiment, RunOptions::default()).unwrap();
        runs.insert(name, run);
    }
    let mut writer = Writer {
        store,
        runs,
        model: Model::new(),
        clock_ms: 1_700_000_000_000,
        dense_next: 0,
    };
    // Opened before anything is logged, and kept: every read below goes through it.
    let long = Store::open_with(root, read_only()).unwrap();

    let mut compactions = 0;
    let mut merged = 0;
    let mut bases = std::collections::BTreeSet::new();
    let mut edits_seen = 0;
    for round in 0..ROUNDS {
        writer.log_round(round, &mut rng);
        if round == 0 || round == ROUNDS - 1 || rng.below(2) == 0 {
            let context = format!("round {round}, {compactions} compactions, logged");
            check(
                &long,
                &writer.store,
                root,
                &writer.model,
                &mut rng,
                &context,
            );
        }
        let needed = COMPACTIONS_MIN.saturating_sub(compactions);
        if rng.below(4) != 0 || needed >= ROUNDS - round {
            let report = writer.store.compact().unwrap();
            compactions += 1;
            merged += report.files_merged;
            let stats = writer.store.manifest_stats().unwrap();
            bases.insert(stats.base_generation);
            edits_seen = edits_seen.max(stats.edits);
            let context = format!(
                "round {round}, compaction {compactions} (generation {}, {} files merged, base \
                 {}, {} edits)",
                report.generation, report.files_merged, stats.base_generation, stats.edits
            );
            check(
                &long,
                &writer.store,
                root,
                &writer.model,
                &mut rng,
                &context,
            );
        }
    }
    // The scenario did what it is for.
    assert!(
        writer.dense_next >= DENSE_POINTS_MIN,
        "{}",
        writer.dense_next
    );
    assert!(compactions >= COMPACTIONS_MIN);
    assert!(merged > 0, "no merge of older files");
    assert!(edits_seen >= 2, "no chain of edits on a base");
    assert!(bases.len() >= 2, "no new base: {bases:?}");
    eprintln!("bases {bases:?}, at most {edits_seen} edits, {merged} files merged");
}
