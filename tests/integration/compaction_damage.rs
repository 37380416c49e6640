//! Damage to the compacted part of a store (manifests and Parquet files) that a reader must
//! report, naming the file, rather than answer wrong, hang, or make permanent: a manifest under
//! another generation's name, lost manifests, files no manifest lists, bit rot in compacted
//! files, and a table of truncations, emptyings and bit flips of both kinds of file.
#![cfg(feature = "parquet")]

use std::path::{Path, PathBuf};

use runlog::compaction::manifest;
use runlog::{Durability, Error, RunId, RunOptions, Store, StoreOptions};

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 16 * 1024,
        ..StoreOptions::default()
    }
}

fn read_only() -> StoreOptions {
    StoreOptions {
        read_only: true,
        ..options()
    }
}

/// A run's `loss` points: value `step / 1000`, so a wrong value is told from a right one.
fn log(store: &Store, experiment: &str, steps: std::ops::Range<i64>) -> RunId {
    let experiment = store.get_or_create_experiment(experiment).unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    for step in steps {
        run.log_metric_at("loss", step as f64 / 1000.0, step, 1_000 + step)
            .unwrap();
    }
    let id = run.id();
    run.finish().unwrap();
    id
}

/// A store with two compacted generations: run `a` (experiment `a`, 3,000 points) in
/// generation 1, run `b` (experiment `b`, 3,000 points) in generation 2.
fn two_generations(root: &Path) -> [RunId; 2] {
    let store = Store::open_with(root, options()).unwrap();
    let a = log(&store, "a", 0..3_000);
    assert_eq!(store.compact().unwrap().generation, 1);
    let b = log(&store, "b", 0..3_000);
    assert_eq!(store.compact().unwrap().generation, 2);
    [a, b]
}

/// Every point of `run`, read through a fresh read-only handle.
fn history(root: &Path, run: RunId) -> runlog::Result<Vec<(i64, f64)>> {
    let store = Store::open_with(root, read_only())?;
    let history = store.history(run, "loss", ..)?;
    Ok((0..history.len())
        .map(|i| (history.steps[i], history.values[i]))
        .collect())
}

fn expected(steps: std::ops::Range<i64>) -> Vec<(i64, f64)> {
    steps.map(|step| (step, step as f64 / 1000.0)).collect()
}

/// `verify` reports a problem naming `path`.
fn assert_verify_names(root: &Path, path: &Path, context: &str) {
    let report = runlog::verify::verify(root).unwrap();
    assert!(
        report.problems.iter().any(|p| p.path == path),
        "{context}: verify does not name {}: problems {:?}, notes {:?}",
        path.display(),
        report.problems,
        report.notes
    );
}

/// `error` is a corruption error naming `path`.
fn assert_corrupt_names(error: &Error, path: &Path, context: &str) {
    assert!(
        matches!(error, Error::Corrupt(c) if c.path == path),
        "{context}: expected a corruption error naming {}, got {error}",
        path.display()
    );
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for experiment in std::fs::read_dir(root.join("experiments")).unwrap() {
        for file in std::fs::read_dir(experiment.unwrap().path()).unwrap() {
            files.push(file.unwrap().path());
        }
    }
    files.sort();
    files
}

/// A copy of one generation's manifest under the next generation's name holds the wrong
/// generation: damage that verify and open report, where readers once waited forever for the
/// generation the name promised.
#[test]
fn a_manifest_under_another_generations_name_is_reported_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let [a, _] = two_generations(dir.path());
    let newest = manifest::path(dir.path(), 2);
    std::fs::remove_file(&newest).unwrap();
    std::fs::copy(manifest::path(dir.path(), 1), &newest).unwrap();
    assert_verify_names(dir.path(), &newest, "copied manifest");
    let error = history(dir.path(), a).unwrap_err();
    assert_corrupt_names(&error, &newest, "copied manifest");
    assert!(error.to_string().contains("generation"), "{error}");
}
