//! Opens the checked-in stores of `tests/fixtures/` (see its README): a store written in a
//! released format must keep opening, with the same contents, and damage to one must keep
//! being reported with its file and offset.

use std::path::{Path, PathBuf};

use runlog::{Error, RunStatus, Store, StoreOptions, ViewType};

fn fixture(name: &str) -> PathBuf {
    fixture_of("store-v2", name)
}

fn fixture_of(store: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(store)
        .join(name)
}

fn read_only(root: &Path) -> runlog::Result<Store> {
    Store::open_with(
        root,
        StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        },
    )
}

/// A copy of a fixture in a temporary folder, so that opening it for writing leaves the
/// checked-in files as they are.
fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn check_contents(store: &Store) {
    let experiments = store.experiments(ViewType::All).unwrap();
    let mut names: Vec<&str> = experiments.iter().map(|e| e.name.as_str()).collect();
    // `later` is the tests' own; `Default` is what `runlog serve` made writing store-v4.
    names.retain(|name| *name != "later" && *name != "Default");
    names.sort();
    assert_eq!(names, ["demo-sweep", "fixture"]);

    let sweep = store.experiment_by_name("demo-sweep").unwrap().unwrap();
    let runs = store.runs(sweep.id, ViewType::All).unwrap();
    assert_eq!(runs.len(), 3);
    for run in &runs {
        assert_eq!(run.metrics.len(), 2, "run {}", run.info.name);
        for (key, summary) in &run.metrics {
            assert_eq!(summary.count, 40, "run {} key {key}", run.info.name);
            let history = store.history(run.info.id, key, ..).unwrap();
            assert_eq!(history.len(), 40, "run {} key {key}", run.info.name);
        }
    }

    let fixture = store.experiment_by_name("fixture").unwrap().unwrap();
    let runs = store.runs(fixture.id, ViewType::All).unwrap();
    assert_eq!(runs.len(), 1);
    let tail = &runs[0];
    assert_eq!(tail.info.name, "tail");
    assert_eq!(tail.info.status, RunStatus::Finished);
    assert_eq!(tail.params["lr"], "0.5");
    assert_eq!(tail.tags["note"], "uncompacted");
    let history = store.history(tail.info.id, "loss", ..).unwrap();
    let points: Vec<(i64, i64, f64)> = (0..history.len())
        .map(|i| history.point(i).unwrap())
        .map(|p| (p.step, p.timestamp_ms, p.value))
        .collect();
    assert_eq!(
        points,
        [(1, 1_700_000_000_000, 0.75), (2, 1_700_000_001_000, 0.5)]
    );
}

#[test]
fn the_checked_in_store_opens_with_its_contents() {
    let valid = fixture("valid");
    let report = runlog::verify::verify(&valid).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.compacted_files, 1);
    check_contents(&read_only(&valid).unwrap());
}

#[test]
fn the_checked_in_store_takes_new_writes_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    copy(&fixture("valid"), dir.path());
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    let experiment = store.get_or_create_experiment("later").unwrap().id;
    let run = store
        .start_run(experiment, runlog::RunOptions::default())
        .unwrap();
    run.log_metric("loss", 1.0, 0).unwrap();
    run.finish().unwrap();
    store.compact().unwrap();
    // The version 2 manifest's file is kept, now with its length and CRC.
    let manifest = store.manifest().unwrap();
    assert_eq!(manifest.version, 4);
    assert!(manifest.files.iter().all(|f| f.checksum.is_some()));
    drop(store);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    assert_eq!(store.experiments(ViewType::All).unwrap().len(), 3);
}

/// Damage is reported naming the damaged file and where in it; nothing panics.
#[test]
fn the_corrupted_copies_are_errors_naming_the_file_and_offset() {
    for (name, file, offset) in [
        (
            "corrupt-segment",
            "wal/68815f475726524a-0000000000.wal",
            1000,
        ),
        ("corrupt-manifest", "manifest/0000000001.manifest", 0),
    ] {
        let root = fixture(name);
        let damaged = root.join(file);
        let report = runlog::verify::verify(&root).unwrap();
        assert_eq!(report.problems.len(), 1, "{name}: {:?}", report.problems);
        assert_eq!(report.problems[0].path, damaged, "{name}");
        assert_eq!(report.problems[0].offset, Some(offset), "{name}");

        let error = read_only(&root)
            .and_then(|store| {
                // Opening may defer reading the damaged part; a full read must reach it.
                for experiment in store.experiments(ViewType::All)? {
                    for run in store.runs(experiment.id, ViewType::All)? {
                        for key in run.metrics.keys() {
                            store.history(run.info.id, key, ..)?;
                        }
                    }
                }
                Ok(())
            })
            .expect_err(name);
        match &error {
            Error::Corrupt(corruption) => assert_eq!(corruption.path, damaged, "{name}: {error}"),
            other => panic!("{name}: expected a corruption error, got {other}"),
        }
        assert!(error.to_string().contains(file), "{name}: {error}");
    }
}

/// A compaction by the code that wrote version 2 manifests wrote no intent: a file of the next
/// generation beside such a manifest is that compaction's leftover after a crash, to be
/// removed, not missing history that makes the store refuse to open.
#[test]
fn a_crashed_compactions_file_beside_a_version_2_manifest_is_a_leftover() {
    let dir = tempfile::tempdir().unwrap();
    copy(&fixture("valid"), dir.path());
    let folder = dir.path().join("experiments/1882601202969842099");
    let orphan = folder.join("0000000002.parquet");
    std::fs::copy(folder.join("0000000001.parquet"), &orphan).unwrap();
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    store.compact().unwrap();
    assert!(!orphan.exists(), "the leftover was kept");
    drop(store);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    check_contents(&Store::open(dir.path()).unwrap());
}

/// A store whose newest manifest is of version 3 opens and reads; its next compaction writes a
/// version 4 base (a version 3 manifest is no base an edit may build on), the one after that
/// an edit, and the store reopens with the same contents.
#[test]
fn the_checked_in_version_3_store_opens_and_compacts_into_version_4() {
    let valid = fixture_of("store-v3", "valid");
    let report = runlog::verify::verify(&valid).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.compacted_files, 1);
    let checked_in = read_only(&valid).unwrap();
    check_contents(&checked_in);
    assert_eq!(checked_in.manifest().unwrap().version, 3);
    drop(checked_in);

    let dir = tempfile::tempdir().unwrap();
    copy(&valid, dir.path());
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    let experiment = store.get_or_create_experiment("later").unwrap().id;
    for step in 0..2 {
        let run = store
            .start_run(experiment, runlog::RunOptions::default())
            .unwrap();
        run.log_metric("loss", 1.0, step).unwrap();
        run.finish().unwrap();
        let report = store.compact().unwrap();
        assert_eq!(report.generation, 2 + step as u64);
        let stats = store.manifest_stats().unwrap();
        assert_eq!(store.manifest().unwrap().version, 4);
        assert_eq!(stats.base_generation, 2, "step {step}: {stats:?}");
        assert_eq!(stats.edits, step as u64, "step {step}: {stats:?}");
    }
    drop(store);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    let later = store.experiment_by_name("later").unwrap().unwrap();
    let runs = store.runs(later.id, ViewType::All).unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(store.history(run.info.id, "loss", ..).unwrap().len(), 1);
    }
}

/// The logged model, the run's link to it and the run's artifacts that `store-v4/valid/` holds
/// besides the shape `check_contents` checks (see `tests/fixtures/README.md`).
fn check_version_4_contents(store: &Store) {
    let fixture = store.experiment_by_name("fixture").unwrap().unwrap();
    let tail = &store.runs(fixture.id, ViewType::All).unwrap()[0];
    let model_id: runlog::ModelId = "m-14584162401fff389a0e88f699bc0054".parse().unwrap();
    let model = store.logged_model(model_id).unwrap();
    assert_eq!(model.name, "fixture-model");
    assert_eq!(model.experiment, fixture.id);
    assert_eq!(model.source_run, Some(tail.info.id));
    assert_eq!(model.status, runlog::ModelStatus::Ready);
    assert_eq!(model.tags["flavor"], "none");
    assert_eq!(model.params["alpha"], "0.1");
    assert_eq!(
        store.read_model_artifact(model_id, "MLmodel").unwrap(),
        b"model bytes"
    );
    assert_eq!(
        store.run_model_links(tail.info.id).unwrap(),
        [(model_id, runlog::ModelLink::Output { step: 2 })]
    );
    let artifacts: Vec<&str> = tail.artifacts.keys().map(String::as_str).collect();
    assert_eq!(artifacts, ["notes.txt"], "draft.txt was deleted");
    assert_eq!(
        store.read_artifact(tail.info.id, "notes.txt").unwrap(),
        b"kept notes"
    );
}

/// Every segment of the checked-in `store` says format `version` in its header.
fn assert_segment_versions(store: &str, version: u16) {
    let wal = fixture_of(store, "valid").join("wal");
    let mut segments = 0;
    for entry in std::fs::read_dir(&wal).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|extension| extension.to_str()) != Some("wal") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let header = runlog::wal::segment::SegmentHeader::decode(&bytes).unwrap();
        assert_eq!(header.format_version, version, "{}", path.display());
        segments += 1;
    }
    assert!(segments > 0, "no segment in {}", wal.display());
}

/// A store of segment format 4 (logged models, artifact deletions) opens with its contents,
/// takes new writes (datasets, which format 5 added, among them), compacts them and the tail
/// it holds, and reopens with the same contents.
#[test]
fn the_checked_in_version_4_store_opens_and_compacts_with_its_models() {
    assert_segment_versions("store-v4", 4);
    let valid = fixture_of("store-v4", "valid");
    let report = runlog::verify::verify(&valid).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.compacted_files, 1);
    let checked_in = read_only(&valid).unwrap();
    check_contents(&checked_in);
    check_version_4_contents(&checked_in);
    drop(checked_in);

    let dir = tempfile::tempdir().unwrap();
    copy(&valid, dir.path());
    let store = Store::open(dir.path()).unwrap();
    let experiment = store.get_or_create_experiment("later").unwrap().id;
    let run = store
        .start_run(experiment, runlog::RunOptions::default())
        .unwrap();
    run.log_metric("loss", 1.0, 0).unwrap();
    let id = run.id();
    // The fixture's own run too: its tail is in a version 4 segment.
    let fixture = store.experiment_by_name("fixture").unwrap().unwrap();
    let tail = store.runs(fixture.id, ViewType::All).unwrap()[0].info.id;
    let input = runlog::DatasetInput {
        dataset: runlog::Dataset {
            name: "train".into(),
            digest: "d1".into(),
            source_type: "local".into(),
            source: "{\"uri\": \"a\"}".into(),
            schema: None,
            profile: Some("{\"num_rows\": 3}".into()),
        },
        tags: vec![("mlflow.data.context".into(), "training".into())],
    };
    for logged in [id, tail] {
        store
            .log_dataset_inputs(logged, std::slice::from_ref(&input))
            .unwrap();
    }
    run.finish().unwrap();
    store.compact().unwrap();
    drop(store);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    check_version_4_contents(&store);
    assert_eq!(store.experiments(ViewType::All).unwrap().len(), 4);
    for logged in [id, tail] {
        assert_eq!(
            store.run_dataset_inputs(logged).unwrap(),
            std::slice::from_ref(&input)
        );
    }
    let summaries = store.dataset_summaries(&[experiment, fixture.id]).unwrap();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
}

/// The model, dataset and run links that `store-v5/valid/` holds besides the shape
/// `check_contents` checks (see `tests/fixtures/README.md`).
fn check_version_5_contents(store: &Store) -> (runlog::RunId, runlog::ModelId) {
    let fixture = store.experiment_by_name("fixture").unwrap().unwrap();
    let tail = &store.runs(fixture.id, ViewType::All).unwrap()[0];
    let model_id: runlog::ModelId = "m-63ef962513c162abe9c2c14a1d82d6cd".parse().unwrap();
    let model = store.logged_model(model_id).unwrap();
    assert_eq!(
        (model.name.as_str(), model.source_run, model.status),
        (
            "fixture-model",
            Some(tail.info.id),
            runlog::ModelStatus::Ready
        )
    );
    assert_eq!(model.params["alpha"], "0.1");
    assert!(model.metrics.is_empty(), "format 5 keeps no model metrics");
    assert_eq!(
        store.read_model_artifact(model_id, "MLmodel").unwrap(),
        b"model bytes"
    );
    assert_eq!(
        store.run_model_links(tail.info.id).unwrap(),
        [(model_id, runlog::ModelLink::Output { step: 2 })]
    );
    let inputs = store.run_dataset_inputs(tail.info.id).unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(
        (
            inputs[0].dataset.name.as_str(),
            inputs[0].dataset.digest.as_str()
        ),
        ("train", "d1")
    );
    // The batch's `acc` entry is the run's point; its `loss` entry repeated one and was dropped.
    assert_eq!(store.history(tail.info.id, "acc", ..).unwrap().len(), 1);
    assert_eq!(store.history(tail.info.id, "loss", ..).unwrap().len(), 2);
    (tail.info.id, model_id)
}

/// A store of segment format 5 (datasets) opens with its contents, takes a logged model's
/// metric points (which format 6 added), compacts them with the tail it holds, and reopens
/// with the same contents and the points.
#[test]
fn the_checked_in_version_5_store_opens_and_compacts_with_model_metrics() {
    assert_segment_versions("store-v5", 5);
    let valid = fixture_of("store-v5", "valid");
    let report = runlog::verify::verify(&valid).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let checked_in = read_only(&valid).unwrap();
    check_contents(&checked_in);
    check_version_5_contents(&checked_in);
    drop(checked_in);

    let dir = tempfile::tempdir().unwrap();
    copy(&valid, dir.path());
    let store = Store::open(dir.path()).unwrap();
    let (tail, model) = check_version_5_contents(&store);
    let point = runlog::ModelMetric {
        model,
        run: tail,
        key: "acc".into(),
        value: 0.9,
        timestamp_ms: 1_700_000_002_000,
        step: 2,
        dataset_name: Some("train".into()),
        dataset_digest: Some("d1".into()),
    };
    store
        .log_model_metrics(std::slice::from_ref(&point))
        .unwrap();
    store
        .finalize_logged_model(model, runlog::ModelStatus::Unspecified)
        .unwrap();
    store.compact().unwrap();
    drop(store);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let store = Store::open(dir.path()).unwrap();
    check_contents(&store);
    let found = store.logged_model(model).unwrap();
    assert_eq!(found.metrics, [point]);
    assert_eq!(found.status, runlog::ModelStatus::Unspecified);
    let inputs = store.run_dataset_inputs(tail).unwrap();
    assert_eq!(inputs.len(), 1);
}
