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

/// Manifests lost: verify names the compacted files no manifest lists, open refuses the
/// store naming one, and a compaction by a handle opened before the loss deletes nothing.
#[test]
fn lost_manifests_are_reported_and_compaction_deletes_nothing() {
    for lost in ["all", "newest"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let [a, b] = two_generations(root);
        let store = Store::open_with(root, options()).unwrap();
        // A handle opened to write surveys the store at its first refresh: this one's is
        // before the loss.
        store.refresh().unwrap();
        let files = parquet_files(root);
        assert_eq!(files.len(), 2, "{lost}");
        std::fs::remove_file(manifest::path(root, 2)).unwrap();
        if lost == "all" {
            std::fs::remove_file(manifest::path(root, 1)).unwrap();
        }
        // Generation 2 wrote experiment b's file, so it is unlisted either way.
        let b_file = files
            .iter()
            .find(|f| f.file_name().unwrap() == "0000000002.parquet")
            .unwrap();
        assert_verify_names(root, b_file, lost);
        let error = Store::open_with(root, read_only()).unwrap_err();
        assert!(
            matches!(&error, Error::Corrupt(c) if files.contains(&c.path)),
            "{lost}: {error}"
        );
        assert!(error.to_string().contains("manifest"), "{lost}: {error}");
        let _ = log(&store, "c", 0..10);
        assert!(store.compact().is_err(), "{lost}: compaction went ahead");
        drop(store);
        assert_eq!(parquet_files(root), files, "{lost}: files deleted");
        // Put back, the manifests make the store whole again.
        let _ = (a, b);
    }
}

/// A chain that starts past what the manifest in force covers lost its segments to a
/// compaction whose manifest is gone.
#[test]
fn a_chain_that_starts_past_the_manifest_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(
        root,
        StoreOptions {
            segment_bytes: 4096,
            ..options()
        },
    )
    .unwrap();
    let experiment = store.get_or_create_experiment("a").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    for step in 0..3_000 {
        run.log_metric_at("loss", 1.0, step, step).unwrap();
    }
    drop(run);
    drop(store);
    // Segments 0 and 1 of the one writer go, as if compacted under a manifest now lost.
    let segments = crate::util::segments(&root.join("wal"));
    assert!(segments.len() >= 4, "{segments:?}");
    std::fs::remove_file(&segments[0]).unwrap();
    std::fs::remove_file(&segments[1]).unwrap();
    assert_verify_names(root, &segments[2], "chain past the manifest");
    let error = Store::open_with(root, read_only()).unwrap_err();
    assert_corrupt_names(&error, &segments[2], "chain past the manifest");
}

/// Files in `experiments/` that runlog did not write, whatever their names, survive every
/// compaction, merges included; verify notes them and passes.
#[test]
fn compaction_never_deletes_files_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open_with(root, options()).unwrap();
    log(&store, "a", 0..100);
    store.compact().unwrap();
    let folder = parquet_files(root)[0].parent().unwrap().to_path_buf();
    let experiments = root.join("experiments");
    std::fs::create_dir_all(experiments.join("my-notes")).unwrap();
    let user_files = [
        experiments.join("notes.txt"),
        experiments.join("my-notes/0000000009.parquet"),
        experiments.join("0123/0000000009.parquet"),
        folder.join("notes.txt"),
        folder.join("0000000001.parquet.bak"),
        folder.join("mine.parquet"),
        folder.join(".0000000009.parquet.tmp-0123456789abcdef"),
    ];
    for file in &user_files {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"mine").unwrap();
    }
    for round in 0..runlog::compaction::FILES_PER_EXPERIMENT_MAX + 2 {
        log(&store, "a", 0..100);
        let report = store.compact().unwrap();
        assert!(report.generation > 0, "round {round}");
    }
    assert!(
        store
            .manifest()
            .unwrap()
            .files
            .iter()
            .any(|f| f.path.ends_with("-merged.parquet"))
    );
    for file in &user_files {
        assert_eq!(std::fs::read(file).unwrap(), b"mine", "{}", file.display());
    }
    let report = runlog::verify::verify(root).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    for file in &user_files {
        assert!(
            report.notes.iter().any(|n| file.starts_with(&n.path)),
            "no note for {}",
            file.display()
        );
    }
}

/// The intent of generation `generation`, byte by byte as `docs/format/compacted.md` section 14.8 gives it.
fn intent_bytes(generation: u64) -> Vec<u8> {
    let mut bytes = b"RUNLOGCI".to_vec();
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// A file of the next generation is a crashed compaction's leftover only with that
/// generation's intent beside it: then it is a note, and the next compaction removes it;
/// without the intent it is missing history, and compaction removes nothing.
#[test]
fn a_next_generation_file_is_removed_only_with_its_intent() {
    for with_intent in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let [a, b] = two_generations(root);
        let source = parquet_files(root)[0].clone();
        let leftover = source.with_file_name("0000000003.parquet");
        std::fs::copy(&source, &leftover).unwrap();
        let intent = root.join("manifest/0000000003.compacting");
        if with_intent {
            std::fs::write(&intent, intent_bytes(3)).unwrap();
        }
        let report = runlog::verify::verify(root).unwrap();
        let store = Store::open_with(root, options());
        if with_intent {
            assert!(report.is_ok(), "{:?}", report.problems);
            assert!(report.notes.iter().any(|n| n.path == leftover));
            let store = store.unwrap();
            log(&store, "c", 0..10);
            assert_eq!(store.compact().unwrap().generation, 3);
            assert!(!intent.exists(), "the intent outlived its manifest");
            assert_eq!(history(root, a).unwrap(), expected(0..3_000));
            assert_eq!(history(root, b).unwrap(), expected(0..3_000));
        } else {
            assert_verify_names(root, &leftover, "no intent");
            // A handle opened to write surveys the store at its first read: that read, and
            // every one after it, refuses the store.
            let store = store.unwrap();
            for attempt in ["first read", "second read"] {
                let error = store.experiments(runlog::ViewType::All).unwrap_err();
                assert_corrupt_names(&error, &leftover, attempt);
            }
            assert!(store.compact().is_err(), "compaction went ahead");
            assert_corrupt_names(
                &Store::open_with(root, read_only()).unwrap_err(),
                &leftover,
                "no intent, read-only",
            );
            assert!(leftover.exists());
        }
    }
}

/// Every read path of compacted points, through a fresh read-only handle (so nothing is
/// cached): each must fail with a corruption error naming `damaged`, or return exactly the
/// points logged.
fn assert_every_read_path_fails_naming(
    root: &Path,
    runs: [RunId; 2],
    damaged: &Path,
    context: &str,
) {
    let store = match Store::open_with(root, read_only()) {
        Ok(store) => store,
        Err(error) => return assert_corrupt_names(&error, damaged, context),
    };
    let reads: [(&str, runlog::Result<()>); 5] = [
        ("history", store.history(runs[0], "loss", ..).map(drop)),
        ("range", store.history(runs[0], "loss", 100..200).map(drop)),
        (
            "downsampled",
            store.history_downsampled(runs[0], "loss", .., 50).map(drop),
        ),
        (
            "compare_aligned",
            store.compare_aligned(&runs, "loss", .., 50).map(drop),
        ),
        (
            "export",
            store
                .export(tempfile::tempdir().unwrap().path().join("out"))
                .map(drop),
        ),
    ];
    for (name, result) in reads {
        match result {
            Ok(()) => panic!("{context}: {name} read a damaged file"),
            Err(error) => assert_corrupt_names(&error, damaged, &format!("{context}: {name}")),
        }
    }
}

/// A flipped byte in a compacted file is an error naming it on every read path and in
/// verify, never a wrong value: the manifest records each file's length and CRC.
#[test]
fn a_flipped_byte_in_a_compacted_file_is_an_error_naming_it_on_every_read_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runs = two_generations(root);
    // Run a's points are in generation 1's file.
    let file = manifest::load(root).unwrap().files[0].clone();
    assert_eq!(file.generation, 1);
    let path = root.join(&file.path);
    let clean = std::fs::read(&path).unwrap();
    assert_eq!(
        file.checksum.map(|c| c.bytes),
        Some(clean.len() as u64),
        "the manifest records the file's length"
    );
    let offsets: Vec<usize> = (0..clean.len())
        .step_by(97)
        .chain([clean.len() - 1])
        .collect();
    for offset in offsets {
        let mut bytes = clean.clone();
        bytes[offset] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let context = format!("byte {offset} of {}", clean.len());
        assert_verify_names(root, &path, &context);
        match history(root, runs[0]) {
            Ok(points) => panic!("{context}: history read {} points", points.len()),
            Err(error) => assert_corrupt_names(&error, &path, &context),
        }
    }
    let mut bytes = clean.clone();
    bytes[clean.len() / 2] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let two = [runs[0], runs[0]];
    assert_every_read_path_fails_naming(root, two, &path, "middle byte");
    std::fs::write(&path, &clean).unwrap();
    assert_eq!(history(root, runs[0]).unwrap(), expected(0..3_000));
}

/// One way to damage a file.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut to this many bytes.
    Truncate(usize),
    /// Flip the byte at this offset.
    Flip(usize),
}

impl Damage {
    fn apply(self, clean: &[u8]) -> Vec<u8> {
        match self {
            Damage::Truncate(length) => clean[..length].to_vec(),
            Damage::Flip(offset) => {
                let mut bytes = clean.to_vec();
                bytes[offset] ^= 0x04;
                bytes
            }
        }
    }
}

/// Every truncation (emptying included) and every byte flip of a file of `length` bytes when
/// `every` is set; otherwise both at offsets 97 apart, plus the ends.
fn damages(length: usize, every: bool) -> Vec<Damage> {
    let stride = if every { 1 } else { 97 };
    let offsets: Vec<usize> = (0..length)
        .step_by(stride)
        .chain([length.saturating_sub(1)])
        .collect();
    offsets
        .iter()
        .map(|o| Damage::Truncate(*o))
        .chain(offsets.iter().map(|o| Damage::Flip(*o)))
        .collect()
}

/// The data survive (both runs read back exactly), or verify reports the damaged file and
/// so does the first read that needs it: open for a manifest in force, a history query for
/// a compacted file (open reads no compacted file).
fn survives_or_is_reported(root: &Path, runs: [RunId; 2], damaged: &Path, context: &str) {
    let report = runlog::verify::verify(root).unwrap();
    let reported = report.problems.iter().any(|p| p.path == damaged);
    let reads: Vec<runlog::Result<Vec<(i64, f64)>>> =
        runs.iter().map(|run| history(root, *run)).collect();
    let survived = reads.iter().all(|read| {
        read.as_ref()
            .is_ok_and(|points| *points == expected(0..3_000))
    });
    if survived {
        return;
    }
    assert!(
        reported,
        "{context}: data lost, verify silent: {:?}",
        report.problems
    );
    for read in reads {
        match read {
            Ok(points) => assert_eq!(points, expected(0..3_000), "{context}: wrong points"),
            Err(error) => assert_corrupt_names(&error, damaged, context),
        }
    }
}

/// The corruption table of the compacted part of a store: each manifest truncated to every
/// length, emptied and flipped at every byte; each compacted file truncated, emptied and
/// flipped at sampled offsets. In every case the data survive, or verify and the read that
/// meets the damage both name the file.
#[test]
fn corruption_table_of_manifests_and_compacted_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runs = two_generations(root);
    let mut targets: Vec<(PathBuf, bool)> = vec![
        (manifest::path(root, 1), true),
        (manifest::path(root, 2), true),
    ];
    targets.extend(parquet_files(root).into_iter().map(|f| (f, false)));
    let mut cases = 0;
    for (path, every) in targets {
        let clean = std::fs::read(&path).unwrap();
        for damage in damages(clean.len(), every) {
            std::fs::write(&path, damage.apply(&clean)).unwrap();
            let context = format!("{} {damage:?} of {}", path.display(), clean.len());
            survives_or_is_reported(root, runs, &path, &context);
            cases += 1;
        }
        std::fs::write(&path, &clean).unwrap();
    }
    let report = runlog::verify::verify(root).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    println!("{cases} damaged files checked");
}

/// The manifests' cost is reported: every file of `manifest/`, and per series.
#[test]
fn manifest_stats_count_every_manifest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_generations(root);
    let store = Store::open_with(root, read_only()).unwrap();
    let stats = store.manifest_stats().unwrap();
    let on_disk: u64 = [1, 2]
        .iter()
        .map(|g| std::fs::metadata(manifest::path(root, *g)).unwrap().len())
        .sum();
    assert_eq!(stats.generation, 2);
    assert_eq!(stats.manifests, 2);
    assert_eq!(stats.bytes, on_disk);
    assert_eq!(
        stats.newest_bytes,
        std::fs::metadata(manifest::path(root, 2)).unwrap().len()
    );
    assert_eq!(stats.series, 2);
    assert!((stats.bytes_per_series() - on_disk as f64 / 2.0).abs() < 1e-9);
}

/// The OS's storage, except that removing a Parquet file fails while `refuse_parquet_removal`
/// is set: a leftover that cannot be removed.
#[derive(Debug, Default)]
struct StubbornParquet {
    os: runlog::io::OsStorage,
    refuse_parquet_removal: std::sync::atomic::AtomicBool,
}

impl runlog::io::Storage for StubbornParquet {
    fn create_preallocated(&self, path: &Path, bytes: u64) -> std::io::Result<std::fs::File> {
        self.os.create_preallocated(path, bytes)
    }
    fn sync_map(
        &self,
        path: &Path,
        map: &memmap2::MmapMut,
        offset: usize,
        len: usize,
    ) -> std::io::Result<()> {
        self.os.sync_map(path, map, offset, len)
    }
    fn sync_file(&self, path: &Path, file: &std::fs::File) -> std::io::Result<()> {
        self.os.sync_file(path, file)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.os.sync_dir(dir)
    }
    fn set_len(&self, path: &Path, file: &std::fs::File, bytes: u64) -> std::io::Result<()> {
        self.os.set_len(path, file, bytes)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.os.rename(from, to)
    }
    fn link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.os.link(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let parquet = path.extension().is_some_and(|e| e == "parquet");
        if parquet
            && self
                .refuse_parquet_removal
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.os.remove(path)
    }
    fn write_at(
        &self,
        path: &Path,
        file: &std::fs::File,
        offset: u64,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        self.os.write_at(path, file, offset, bytes)
    }
}

/// A merge's superseded files are leftovers that only the previous manifest proves. While they
/// cannot be removed, a compaction must stop rather than publish a manifest after which the
/// clean-up would remove that proof and leave them to read as missing history.
#[test]
fn a_leftover_that_cannot_be_removed_stops_compaction_and_the_store_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let storage = std::sync::Arc::new(StubbornParquet::default());
    let stubborn = StoreOptions {
        storage: storage.clone(),
        ..options()
    };
    let store = Store::open_with(dir.path(), stubborn).unwrap();
    let mut runs = Vec::new();
    for round in 0..runlog::compaction::FILES_PER_EXPERIMENT_MAX {
        runs.push(log(&store, "e", 0..1_000));
        assert_eq!(store.compact().unwrap().generation, round as u64 + 1);
    }
    storage
        .refuse_parquet_removal
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // This compaction merges the experiment's files; removing the merged-away ones fails.
    runs.push(log(&store, "e", 0..1_000));
    store.compact().unwrap();
    runs.push(log(&store, "e", 0..1_000));
    let stopped = store.compact();
    assert!(
        matches!(&stopped, Err(Error::Io { .. })),
        "a compaction that cannot remove a leftover went on: {stopped:?}"
    );
    drop(store);
    for run in &runs {
        assert_eq!(history(dir.path(), *run).unwrap(), expected(0..1_000));
    }
    storage
        .refuse_parquet_removal
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let store = Store::open_with(dir.path(), options()).unwrap();
    store.compact().unwrap();
    drop(store);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    for run in &runs {
        assert_eq!(history(dir.path(), *run).unwrap(), expected(0..1_000));
    }
}

/// A compacted file the manifest in force lists, deleted while no compaction runs, is missing
/// history: history and export report it as damage naming the file, never as a read that a
/// compaction overtook (which would be retried and then blamed on compaction).
#[test]
fn a_deleted_listed_file_is_reported_missing_not_retried_as_a_race() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runs = two_generations(root);
    let file = manifest::load(root).unwrap().files[0].clone();
    assert_eq!(file.generation, 1);
    let path = root.join(&file.path);
    // Opened before the deletion, so what is tested is the reads, not open's survey.
    let store = Store::open_with(root, read_only()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let reads: [(&str, runlog::Result<()>); 3] = [
        ("history", store.history(runs[0], "loss", ..).map(drop)),
        ("range", store.history(runs[0], "loss", 100..200).map(drop)),
        (
            "export",
            store
                .export(tempfile::tempdir().unwrap().path().join("out"))
                .map(drop),
        ),
    ];
    for (name, result) in reads {
        match result {
            Ok(()) => panic!("{name} read a deleted file"),
            Err(error) => assert_corrupt_names(&error, &path, name),
        }
    }
    assert_verify_names(root, &path, "verify");
}

/// Two runs as `two_generations` logs them, but on a base wide enough (400 series of a third
/// run) that generations 2 and 3 are edits on it: `a` in the base, `b` in edit 2, one more
/// point in edit 3.
fn base_and_two_edits(root: &Path) -> [RunId; 2] {
    let store = Store::open_with(root, options()).unwrap();
    let a = log(&store, "a", 0..3_000);
    let wide = store.get_or_create_experiment("wide").unwrap().id;
    let run = store.start_run(wide, RunOptions::default()).unwrap();
    for key in 0..400 {
        run.log_metric(&format!("k{key:03}"), 1.0, 0).unwrap();
    }
    run.finish().unwrap();
    assert_eq!(store.compact().unwrap().generation, 1);
    let b = log(&store, "b", 0..3_000);
    assert_eq!(store.compact().unwrap().generation, 2);
    log(&store, "c", 0..1);
    assert_eq!(store.compact().unwrap().generation, 3);
    let stats = store.manifest_stats().unwrap();
    assert_eq!((stats.base_generation, stats.edits), (1, 2), "{stats:?}");
    [a, b]
}

/// Damage to any file of the chain in force (the base, an edit between, the newest edit):
/// the data survive, or verify and every read name that file, not the newest one.
#[test]
fn damage_to_a_base_or_an_edit_is_an_error_naming_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runs = base_and_two_edits(root);
    let mut cases = 0;
    for (generation, every) in [(1, false), (2, true), (3, true)] {
        let path = manifest::path(root, generation);
        let clean = std::fs::read(&path).unwrap();
        for damage in damages(clean.len(), every) {
            std::fs::write(&path, damage.apply(&clean)).unwrap();
            let context = format!("{} {damage:?} of {}", path.display(), clean.len());
            survives_or_is_reported(root, runs, &path, &context);
            cases += 1;
        }
        std::fs::write(&path, &clean).unwrap();
    }
    // A missing edit between the base and the newest is lost history, named.
    let between = manifest::path(root, 2);
    let clean = std::fs::read(&between).unwrap();
    std::fs::remove_file(&between).unwrap();
    assert_verify_names(root, &between, "edit 2 removed");
    let error = history(root, runs[0]).unwrap_err();
    assert_corrupt_names(&error, &between, "edit 2 removed");
    std::fs::write(&between, &clean).unwrap();
    let report = runlog::verify::verify(root).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    println!("{cases} damaged manifest files checked");
}

/// A crashed publication of an edit leaves only a temporary (the edit is synced before its
/// name exists): readers ignore it, and the next compaction removes it.
#[test]
fn a_torn_edit_is_a_temporary_that_readers_ignore_and_compaction_removes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let runs = base_and_two_edits(root);
    let edit = std::fs::read(manifest::path(root, 3)).unwrap();
    let torn = root.join("manifest/.0000000004.manifest.tmp-00000000deadbeef");
    std::fs::write(&torn, &edit[..edit.len() / 2]).unwrap();
    for run in runs {
        assert_eq!(history(root, run).unwrap(), expected(0..3_000));
    }
    let store = Store::open_with(root, options()).unwrap();
    log(&store, "d", 0..1);
    assert_eq!(store.compact().unwrap().generation, 4);
    assert!(!torn.exists(), "the torn edit was kept");
    drop(store);
    let report = runlog::verify::verify(root).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
