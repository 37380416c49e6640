//! The engine as separate processes (issue 6), driven through the `runlog` binary:
//! - a crash loop: `runlog ingest --durability sync --acknowledge` and `runlog compact` are
//!   killed with SIGKILL at random moments; after each kill the store opens, `verify` finds no
//!   problem, and every acknowledged line is present exactly once;
//! - 8 writer processes on one store while a compactor and readers run;
//! - a full disk (a small tmpfs where mounting is allowed) under logging and compaction.
//!
//! Randomized: each prints its seed (`RUNLOG_SEED` replays). `RUNLOG_CRASH_CYCLES=N` runs a
//! longer crash loop; `RUNLOG_PROCESS_STATS=1` prints the totals docs/RELIABILITY.md quotes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use runlog::{Store, ViewType};

use crate::util::{Rng, Tmpfs};

const RUNLOG: &str = env!("CARGO_BIN_EXE_runlog");

fn runlog(store: &Path) -> Command {
    let mut command = Command::new(RUNLOG);
    command.arg("--store").arg(store);
    command
}

/// The value written at `step`: exact in binary, so it compares bit for bit.
fn value(step: i64) -> f64 {
    step as f64 * 0.5 + 0.25
}

fn metric_line(run: &str, step: i64) -> String {
    format!(
        "{{\"type\":\"metric\",\"experiment\":\"crash\",\"run\":\"{run}\",\"key\":\"loss\",\"value\":{},\"step\":{step},\"timestamp\":1700000000000}}\n",
        value(step)
    )
}

fn stats_wanted() -> bool {
    std::env::var_os("RUNLOG_PROCESS_STATS").is_some()
}

/// Every run of experiment `crash`, by name.
fn runs_by_name(store: &Store) -> Vec<(String, runlog::RunId)> {
    let Some(experiment) = store.experiment_by_name("crash").unwrap() else {
        return Vec::new();
    };
    store
        .runs(experiment.id, ViewType::All)
        .unwrap()
        .into_iter()
        .map(|view| (view.info.name, view.info.id))
        .collect()
}

/// Checks that run `name`'s `loss` is exactly steps `0..n` for some `n >= acknowledged`, with
/// the values written; returns `n`.
fn check_series(store: &Store, runs: &[(String, runlog::RunId)], name: &str, at_least: u64) -> u64 {
    let ids: Vec<runlog::RunId> = runs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, id)| *id)
        .collect();
    if ids.is_empty() {
        assert_eq!(
            at_least, 0,
            "run {name}: {at_least} lines acknowledged, no run"
        );
        return 0;
    }
    assert_eq!(ids.len(), 1, "run {name} exists {} times", ids.len());
    let history = store.history(ids[0], "loss", ..).unwrap();
    for index in 0..history.len() {
        let point = history.point(index).unwrap();
        assert_eq!(point.step, index as i64, "run {name}: a gap or a duplicate");
        assert_eq!(
            point.value.to_bits(),
            value(point.step).to_bits(),
            "run {name} step {}: a value never written",
            point.step
        );
    }
    let present = history.len() as u64;
    assert!(
        present >= at_least,
        "run {name}: {at_least} lines acknowledged, {present} points present"
    );
    present
}

fn verify_clean(store: &Path, context: &str) {
    let report = runlog::verify::verify(store).unwrap();
    assert!(
        report.problems.is_empty(),
        "{context}: verify: {:?}",
        report.problems
    );
}

/// Kills `child` with SIGKILL unless it already ended; true if it was killed.
fn kill(child: &mut Child) -> bool {
    let running = matches!(child.try_wait(), Ok(None));
    if running {
        let _ = child.kill();
    }
    let _ = child.wait();
    running
}

/// Runs `runlog compact` over and over until `stop`, killing each after a random few ms.
fn compactor_loop(store: PathBuf, seed: u64, stop: Arc<AtomicBool>, kills: Arc<AtomicU64>) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut child) = runlog(&store)
            .arg("compact")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            continue;
        };
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        if kill(&mut child) {
            kills.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn ingest_and_compaction_killed_at_random_keep_every_acknowledged_line() {
    let mut rng = Rng::from_env("ingest_and_compaction_killed_at_random");
    let cycles: u64 = std::env::var("RUNLOG_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let compactor_kills = Arc::new(AtomicU64::new(0));
    let mut ingest_kills = 0u64;
    let mut points_checked = 0u64;
    for cycle in 0..cycles {
        let name = format!("c{cycle}");
        let mut child = runlog(&store)
            .args(["ingest", "-", "--durability", "sync", "--acknowledge"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder_name = name.clone();
        let feeder = std::thread::spawn(move || {
            for step in 0..200_000 {
                if stdin
                    .write_all(metric_line(&feeder_name, step).as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let last_ack = Arc::new(AtomicU64::new(0));
        let reader_ack = Arc::clone(&last_ack);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let number: u64 = line.trim().parse().expect("an acknowledged line number");
                let previous = reader_ack.swap(number, Ordering::SeqCst);
                assert_eq!(number, previous + 1, "acknowledgements out of order");
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let compactor = {
            let (store, stop, kills) = (store.clone(), stop.clone(), compactor_kills.clone());
            let seed = rng.next_u64();
            std::thread::spawn(move || compactor_loop(store, seed, stop, kills))
        };
        std::thread::sleep(Duration::from_millis(100 + rng.below(500)));
        if kill(&mut child) {
            ingest_kills += 1;
        }
        reader.join().unwrap();
        let _ = feeder.join();
        stop.store(true, Ordering::Relaxed);
        compactor.join().unwrap();
        acknowledged.push((name, last_ack.load(Ordering::SeqCst)));

        let context = format!("cycle {cycle}");
        verify_clean(&store, &context);
        let opened = Store::open(&store).unwrap();
        let runs = runs_by_name(&opened);
        for (name, acked) in &acknowledged {
            points_checked += check_series(&opened, &runs, name, *acked);
        }
        drop(opened);
        verify_clean(&store, &context);
    }
    let lines: u64 = acknowledged.iter().map(|(_, n)| n).sum();
    assert!(lines > 0, "nothing was acknowledged in {cycles} cycles");
    if stats_wanted() {
        eprintln!(
            "crash loop: {cycles} cycles, {ingest_kills} ingest processes and {} compactors \
             killed, {lines} lines acknowledged, {points_checked} points checked",
            compactor_kills.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn eight_writer_processes_a_compactor_and_readers_lose_and_duplicate_nothing() {
    const WRITERS: usize = 8;
    const LINES: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Create the experiment first, so the writers do not race to create it.
    {
        let opened = Store::open(&store).unwrap();
        opened.get_or_create_experiment("crash").unwrap();
    }
    let writers: Vec<Child> = (0..WRITERS)
        .map(|writer| {
            let input = dir.path().join(format!("w{writer}.jsonl"));
            let mut text = String::new();
            for step in 0..LINES {
                text.push_str(&metric_line(&format!("w{writer}"), step));
            }
            std::fs::write(&input, text).unwrap();
            runlog(&store)
                .arg("ingest")
                .arg(&input)
                .args(["--durability", "100"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let compactions = Arc::new(AtomicU64::new(0));
    let compactor = {
        let (store, stop, compactions) = (store.clone(), stop.clone(), compactions.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let output = runlog(&store).arg("compact").output().unwrap();
                assert!(
                    output.status.success(),
                    "compact: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                compactions.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, reads) = (store.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let options = runlog::StoreOptions {
                    read_only: true,
                    ..runlog::StoreOptions::default()
                };
                let reader = Store::open_with(&store, options).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    reader.refresh().unwrap();
                    for (name, id) in runs_by_name(&reader) {
                        // A reader sees a prefix of each writer's points, never a gap.
                        let history = reader.history(id, "loss", ..).unwrap();
                        for index in 0..history.len() {
                            let point = history.point(index).unwrap();
                            assert_eq!(point.step, index as i64, "reader: {name}");
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for writer in writers {
        let output = writer.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a writer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stop.store(true, Ordering::Relaxed);
    compactor.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    let output = runlog(&store).arg("compact").output().unwrap();
    assert!(output.status.success());
    verify_clean(&store, "after the writers");
    let opened = Store::open(&store).unwrap();
    let runs = runs_by_name(&opened);
    let mut points = 0;
    for writer in 0..WRITERS {
        points += check_series(&opened, &runs, &format!("w{writer}"), LINES as u64);
    }
    assert_eq!(points, (WRITERS as u64) * LINES as u64);
    drop(opened);
    // Bounded: after the last compaction the log holds no compacted segment, and there is one
    // Parquet file per experiment and generation at most.
    let files = count_files(&store);
    assert!(files <= 40, "{files} files left: {:?}", list_files(&store));
    if stats_wanted() {
        eprintln!(
            "concurrent writers: {WRITERS} processes, {points} points checked, {} compactions \
             and {} reader passes during the run, {files} files at the end",
            compactions.load(Ordering::Relaxed),
            reads.load(Ordering::Relaxed)
        );
    }
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(list_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn count_files(dir: &Path) -> usize {
    list_files(dir).len()
}

/// The whole engine on a full disk: logging fails with `StorageFull`, compaction fails
/// cleanly, and once space returns the store opens with every acknowledged point and compacts.
/// On a 1 MiB tmpfs where mounting is allowed; otherwise ENOSPC from the fault double.
#[test]
fn a_full_disk_under_logging_and_compaction_loses_nothing_acknowledged() {
    use runlog::io::{FaultStorage, Operation, OsStorage, Storage};
    use runlog::{Durability, Error, RunOptions, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let tmpfs = Tmpfs::mount(&mount, "1m");
    let faults = Arc::new(FaultStorage::new());
    let storage: Arc<dyn Storage> = match &tmpfs {
        Some(_) => Arc::new(OsStorage),
        None => {
            eprintln!("cannot mount a tmpfs here: ENOSPC comes from the fault double");
            faults.fail_from(Operation::Create, 20, libc::ENOSPC);
            faults.clone()
        }
    };
    let root = mount.join("store");
    let options = || StoreOptions {
        durability: Durability::Sync,
        segment_bytes: 64 * 1024,
        storage: Arc::clone(&storage),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&root, options()).unwrap();
    let experiment = store.get_or_create_experiment("crash").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    let id = run.id();
    let mut acknowledged = 0i64;
    let full = loop {
        match run.log_metric("loss", value(acknowledged), acknowledged) {
            Ok(()) => acknowledged += 1,
            Err(error) => break error,
        }
        assert!(acknowledged < 10_000_000, "the disk never filled");
    };
    assert!(
        matches!(full, Error::StorageFull { .. }),
        "a full disk is StorageFull, not {full}"
    );
    assert!(
        full.to_string().contains(&root.display().to_string()),
        "{full}"
    );
    // Compaction needs room for Parquet; it fails with an error, and deletes nothing.
    if let Err(error) = store.compact() {
        assert!(
            matches!(error, Error::StorageFull { .. } | Error::Poisoned { .. }),
            "{error}"
        );
    }
    run.detach();
    store.abandon();
    drop(store);

    match &tmpfs {
        Some(tmpfs) => tmpfs.resize("16m"),
        None => faults.heal(),
    }
    let store = Store::open_with(&root, options()).unwrap();
    let runs = vec![("r".to_string(), id)];
    let present = check_series(&store, &runs, "r", acknowledged as u64);
    store.compact().unwrap();
    drop(store);
    verify_clean(&root, "after space returned");
    let store = Store::open_with(&root, options()).unwrap();
    assert_eq!(
        check_series(&store, &runs, "r", acknowledged as u64),
        present
    );
    if stats_wanted() {
        eprintln!(
            "full disk ({}): {acknowledged} points acknowledged before ENOSPC, all present after",
            if tmpfs.is_some() {
                "1 MiB tmpfs"
            } else {
                "fault double"
            }
        );
    }
}
