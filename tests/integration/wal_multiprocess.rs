//! Several processes append to one store at once and one is killed with SIGKILL mid-write;
//! and a real full disk (a small tmpfs) gives an error, not a crash.
//!
//! Child processes are this test binary re-run on `child_entry` with `RUNLOG_CHILD` set.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use runlog::wal::{Durability, Log, LogOptions};
use runlog::{Error, RunId};

use crate::util::{Rng, Store, Tmpfs, read};

const CHILD_STEPS: i64 = 1_500;

fn spawn_child(role: &str, wal: &Path, run: u128) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "wal_multiprocess::child_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RUNLOG_CHILD", role)
        .env("RUNLOG_CHILD_WAL", wal)
        .env("RUNLOG_CHILD_RUN", run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The body of a child process. Does nothing in a normal test run.
#[test]
#[ignore = "run by the multi-process tests as a child process"]
fn child_entry() {
    let Ok(role) = std::env::var("RUNLOG_CHILD") else {
        return;
    };
    let wal = std::env::var("RUNLOG_CHILD_WAL").unwrap();
    let run = RunId(std::env::var("RUNLOG_CHILD_RUN").unwrap().parse().unwrap());
    let options = LogOptions {
        durability: Durability::Sync,
        segment_bytes: 64 * 1024,
        ..LogOptions::default()
    };
    let (log, _) = Log::open(&wal, options).unwrap();
    let mut stdout = std::io::stdout().lock();
    // libtest has printed "test ... " without a newline: start a fresh line.
    writeln!(stdout).unwrap();
    let mut step = 0i64;
    loop {
        if role == "writer" && step == CHILD_STEPS {
            break;
        }
        match log.log_point(run, "loss", step, 1_700_000_000_000 + step, step as f64) {
            Ok(()) => writeln!(stdout, "ack {step}").unwrap(),
            Err(error) => {
                let full = matches!(error, Error::StorageFull { .. });
                writeln!(stdout, "error full={full} {error}").unwrap();
                break;
            }
        }
        stdout.flush().unwrap();
        step += 1;
    }
    writeln!(stdout, "done").unwrap();
    stdout.flush().unwrap();
    log.close().unwrap();
}

/// Reads `ack N` lines to the end; returns the last acknowledged step (or -1) and any other
/// line. With `kill_after`, sends SIGKILL once that step is acknowledged, and keeps reading:
/// acks already in the pipe still count.
fn drain(child: &mut Child, kill_after: Option<i64>) -> (i64, Vec<String>) {
    let stdout = child.stdout.take().unwrap();
    let mut last = -1;
    let mut other = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        match line.strip_prefix("ack ") {
            Some(step) => last = step.parse().unwrap(),
            None => other.push(line),
        }
        if !killed && kill_after.is_some_and(|n| last >= n) {
            child.kill().unwrap();
            killed = true;
        }
    }
    (last, other)
}

#[test]
fn processes_append_concurrently_and_a_sigkill_loses_nothing_acknowledged() {
    let mut rng =
        Rng::from_env("processes_append_concurrently_and_a_sigkill_loses_nothing_acknowledged");
    let store = Store::new();
    std::fs::create_dir_all(store.wal()).unwrap();
    let mut children: Vec<(u128, Child)> = (1..=4)
        .map(|run| (run, spawn_child("writer", &store.wal(), run)))
        .collect();
    let kill_at = 50 + rng.below(CHILD_STEPS as u64 - 200) as i64;
    let mut acked = Vec::new();
    for (index, (run, child)) in children.iter_mut().enumerate() {
        let stop = if index == 0 { Some(kill_at) } else { None };
        let (last, _) = drain(child, stop);
        if index != 0 {
            assert!(child.wait().unwrap().success(), "child {run} failed");
            assert_eq!(last, CHILD_STEPS - 1, "child {run}");
        }
        acked.push((*run, last));
    }
    let (_log, report) = Log::open(store.wal(), LogOptions::default()).unwrap();
    assert_eq!(
        report.repaired.len(),
        1,
        "exactly the killed writer needs repair: {report:?}"
    );
    let contents = read(&store.wal()).unwrap();
    for (run, last) in acked {
        let steps: Vec<i64> = contents.steps_of(RunId(run));
        // A prefix of what was written, holding everything acknowledged.
        assert_eq!(
            steps,
            (0..steps.len() as i64).collect::<Vec<_>>(),
            "run {run}"
        );
        assert!(
            steps.len() as i64 > last,
            "run {run}: acked {last}, recovered {}",
            steps.len()
        );
    }
}

#[test]
fn a_full_disk_is_an_error_not_a_crash_and_acknowledged_points_survive() {
    let store = Store::new();
    let mount = store.dir.path().join("small");
    let Some(tmpfs) = Tmpfs::mount(&mount, "512k") else {
        eprintln!("cannot mount a tmpfs here; the fault double covers ENOSPC (wal_faults)");
        return;
    };
    let wal = mount.join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    // In a child process, so that a SIGBUS (the failure this guards against) would show as a
    // crashed child rather than kill the test runner.
    let mut child = spawn_child("fill", &wal, 1);
    let (last, other) = drain(&mut child, None);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the writer crashed on a full disk: {status:?}"
    );
    assert!(
        other.iter().any(|l| l.starts_with("error full=true")),
        "{other:?}"
    );
    assert!(last > 1000, "only {last} points fit in 512 KiB");

    tmpfs.resize("4m");
    let options = LogOptions {
        segment_bytes: 64 * 1024,
        ..LogOptions::default()
    };
    let (log, _) = Log::open(&wal, options).unwrap();
    let steps: Vec<i64> = read(&wal).unwrap().steps_of(RunId(1));
    assert_eq!(
        &steps[..=last as usize],
        &(0..=last).collect::<Vec<_>>()[..]
    );
    for step in 0..1000 {
        log.log_point(RunId(2), "loss", step, step, 0.5).unwrap();
    }
    log.close().unwrap();
    assert_eq!(read(&wal).unwrap().points_of(RunId(2)).len(), 1000);
    drop(tmpfs);
}
