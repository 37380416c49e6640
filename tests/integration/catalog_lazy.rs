//! A reader that takes compacted summaries run by run, on first read: whichever runs it reads,
//! in whatever order, and across compactions other handles publish meanwhile, every run shows
//! every point exactly once, as a handle that read everything at once shows it.

use std::collections::BTreeMap;

use runlog::query::SearchRuns;
use runlog::{Durability, RunId, RunOptions, Store, StoreOptions, ViewType};

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 16 * 1024,
        // Reads refresh only when asked, so the test decides what each handle has seen.
        refresh_interval: Some(std::time::Duration::from_secs(3_600)),
        ..StoreOptions::default()
    }
}

/// (run, key) -> (points, latest value, sum), by the rules the catalog keeps.
type Expected = BTreeMap<(RunId, String), (u64, f64, f64)>;

fn log(expected: &mut Expected, run: &runlog::Run, key: &str, steps: std::ops::Range<i64>) {
    for step in steps {
        let value = (step as f64) * 0.5 + key.len() as f64;
        run.log_metric_at(key, value, step, 1_000 + step).unwrap();
        let entry = expected
            .entry((run.id(), key.to_string()))
            .or_insert((0, 0.0, 0.0));
        entry.0 += 1;
        entry.1 = value;
        entry.2 += value;
    }
}

/// Checks `run`'s view on `store` against what was logged to it.
fn check_run(store: &Store, run: RunId, expected: &Expected, context: &str) {
    let view = store.run(run).unwrap();
    let want: BTreeMap<&str, (u64, f64, f64)> = expected
        .range((run, String::new())..)
        .take_while(|((of, _), _)| *of == run)
        .map(|((_, key), value)| (key.as_str(), *value))
        .collect();
    let got: BTreeMap<&str, (u64, f64, f64)> = view
        .metrics
        .iter()
        .map(|(key, s)| (key.as_str(), (s.count, s.last_value, s.sum)))
        .collect();
    assert_eq!(got.len(), want.len(), "{context}: keys of run {run}");
    for (key, (count, last, sum)) in want {
        let (got_count, got_last, got_sum) = got[key];
        assert_eq!(
            (got_count, got_last),
            (count, last),
            "{context}: {run} {key}"
        );
        assert!((got_sum - sum).abs() <= 1e-9 * sum.abs(), "{context}: sum");
    }
}

fn check_all(store: &Store, runs: &[RunId], expected: &Expected, context: &str) {
    for run in runs {
        check_run(store, *run, expected, context);
    }
}

#[test]
fn runs_read_lazily_see_every_point_once_across_other_handles_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Expected::new();
    let first = Store::open_with(dir.path(), options()).unwrap();
    let experiment = first.get_or_create_experiment("e").unwrap().id;
    let runs: Vec<runlog::Run> = (0..3)
        .map(|_| first.start_run(experiment, RunOptions::default()).unwrap())
        .collect();
    let ids: Vec<RunId> = runs.iter().map(|r| r.id()).collect();
    for run in &runs {
        log(&mut expected, run, "loss", 0..400);
    }
    first.compact().unwrap();
    drop(runs);
    drop(first);

    // A cold reader reads one run only, then logs to another one itself.
    let reader = Store::open_with(dir.path(), options()).unwrap();
    check_run(&reader, ids[0], &expected, "cold reader, first run");
    let mine = reader.resume_run(ids[1]).unwrap();
    log(&mut expected, &mine, "loss", 400..450);

    // Rounds of other handles, each a new writer that logs, compacts and leaves; the reader
    // refreshes between rounds, so it adopts each writer from a different manifest, more than
    // it keeps pending.
    for round in 0..7 {
        let other = Store::open_with(dir.path(), options()).unwrap();
        let run = other.resume_run(ids[round % ids.len()]).unwrap();
        let start = 1_000 * (round as i64 + 1);
        log(&mut expected, &run, "loss", start..start + 300);
        log(&mut expected, &run, &format!("k{round}"), 0..50);
        other.compact().unwrap();
        drop(run);
        drop(other);
        reader.refresh().unwrap();
        if round == 2 {
            check_run(&reader, ids[2], &expected, "reader, mid-way");
        }
    }
    check_all(&reader, &ids, &expected, "reader after the rounds");

    // Search reads metrics of runs found through their columns.
    let page = reader
        .search_runs(&SearchRuns {
            experiments: vec![experiment],
            filter: "metrics.k6 > 0".into(),
            ..SearchRuns::default()
        })
        .unwrap();
    let found: Vec<RunId> = page.runs.iter().map(|v| v.info.id).collect();
    assert_eq!(found, vec![ids[6 % ids.len()]]);

    // The reader's own compaction, then a cold open: the same again.
    reader.compact().unwrap();
    check_all(&reader, &ids, &expected, "reader after its compaction");
    drop(mine);
    drop(reader);
    let reopened = Store::open_with(dir.path(), options()).unwrap();
    let listed = reopened.runs(experiment, ViewType::All).unwrap();
    assert_eq!(listed.len(), ids.len());
    check_all(&reopened, &ids, &expected, "reopened");
}

/// A handle that fell behind a compaction rebuilds its foreign summaries; runs it had not read
/// before, and runs it had, both come out whole.
#[test]
fn a_rebuild_keeps_runs_read_and_unread_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Expected::new();
    let writer = Store::open_with(dir.path(), options()).unwrap();
    let experiment = writer.get_or_create_experiment("e").unwrap().id;
    let runs: Vec<runlog::Run> = (0..4)
        .map(|_| writer.start_run(experiment, RunOptions::default()).unwrap())
        .collect();
    let ids: Vec<RunId> = runs.iter().map(|r| r.id()).collect();
    for run in &runs {
        log(&mut expected, run, "loss", 0..200);
    }
    writer.compact().unwrap();
    let behind = Store::open_with(dir.path(), options()).unwrap();
    check_run(&behind, ids[0], &expected, "behind, before");
    // Many segments `behind` never reads, compacted and deleted under it.
    for run in &runs {
        log(&mut expected, run, "loss", 200..2_000);
    }
    writer.compact().unwrap();
    behind.refresh().unwrap();
    check_all(&behind, &ids, &expected, "behind, after the rebuild");
    check_all(&writer, &ids, &expected, "writer");
}

/// A long-lived reader follows runs that each live in a process of their own: each process
/// starts a run, logs, and closes, another handle compacts it, and the reader refreshes. The
/// compacted writers are finished, so the manifest keeps none of their key ids: each run and
/// its summaries reach the reader through the manifest and the metadata chains alone, also
/// when adopting a writer makes the reader take everything it had pending.
#[test]
fn runs_of_finished_writers_keep_their_summaries_past_the_pending_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Expected::new();
    let reader = Store::open_with(dir.path(), options()).unwrap();
    let experiment = reader.get_or_create_experiment("e").unwrap().id;
    let mut ids = Vec::new();
    for round in 0..9 {
        let process = Store::open_with(dir.path(), options()).unwrap();
        let run = process
            .start_run(experiment, RunOptions::default())
            .unwrap();
        log(&mut expected, &run, "loss", 0..300);
        log(&mut expected, &run, &format!("k{round}"), 0..20);
        ids.push(run.id());
        drop(run);
        drop(process);
        let compactor = Store::open_with(dir.path(), options()).unwrap();
        compactor.compact().unwrap();
        drop(compactor);
        reader.refresh().unwrap();
        check_run(&reader, ids[round], &expected, &format!("round {round}"));
    }
    check_all(&reader, &ids, &expected, "reader after the rounds");
}

/// A read-only handle builds its catalog at open, one opened to write at its first read. Across
/// compactions that leave several metadata chains listed and then merge them, with runs
/// renamed, tagged, finished and deleted between them, both show every experiment and run
/// exactly as the handle that made them, metrics included.
#[test]
fn a_cold_handle_read_only_or_writable_sees_the_catalog_of_the_handle_that_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Expected::new();
    let writer = Store::open_with(dir.path(), options()).unwrap();
    let mut ids = Vec::new();
    // Seven compactions: more chains than a manifest keeps listed, so they are merged.
    for round in 0..7_i64 {
        let experiment = writer
            .get_or_create_experiment(&format!("e{}", round % 3))
            .unwrap()
            .id;
        writer
            .set_experiment_tag(experiment, "round", &round.to_string())
            .unwrap();
        let run = writer.start_run(experiment, RunOptions::default()).unwrap();
        run.log_param("round", &round.to_string()).unwrap();
        run.set_tag("mlflow.runName", &format!("run-{round}"))
            .unwrap();
        log(&mut expected, &run, "loss", round * 100..round * 100 + 50);
        ids.push(run.id());
        if round % 2 == 1 {
            run.finish().unwrap();
        }
        if round == 3 {
            writer.delete_run(ids[0]).unwrap();
        }
        writer.compact().unwrap();
    }
    let experiments = writer.experiments(ViewType::All).unwrap();
    let views: Vec<_> = ids.iter().map(|id| writer.run(*id).unwrap()).collect();
    let read_only = StoreOptions {
        read_only: true,
        ..options()
    };
    for (cold, what) in [
        (
            Store::open_with(dir.path(), read_only).unwrap(),
            "read-only",
        ),
        (Store::open_with(dir.path(), options()).unwrap(), "writable"),
    ] {
        assert_eq!(
            cold.experiments(ViewType::All).unwrap(),
            experiments,
            "{what}"
        );
        for view in &views {
            assert_eq!(&cold.run(view.info.id).unwrap(), view, "{what}");
        }
        check_all(&cold, &ids, &expected, what);
    }
}
