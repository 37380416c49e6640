//! A process forked from one holding an open store (as Python's `multiprocessing` does) must
//! neither append into its parent's segments nor, when it drops its copies of the handles,
//! seal, sync or unlock them.

use std::path::Path;
use std::time::{Duration, Instant};

use runlog::{Durability, Error, RunOptions, Store, StoreOptions};

/// Exit codes of the child: what it saw.
const CHILD_OK: i32 = 0;
const CHILD_LOGGED: i32 = 10;
const CHILD_LOG_WRONG_ERROR: i32 = 11;
const CHILD_FLUSHED: i32 = 20;
const CHILD_FLUSH_WRONG_ERROR: i32 = 21;
const CHILD_REFRESHED: i32 = 30;
const CHILD_REFRESH_WRONG_ERROR: i32 = 31;

fn lock_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("wal"))
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".lock")
        })
        .count()
}

/// Runs in the child: never returns.
fn child(store: Store, run: runlog::Run, handle: runlog::MetricHandle) -> ! {
    let logged = match run.log_metric("loss", -1.0, 1_000) {
        Ok(()) => CHILD_LOGGED,
        Err(Error::Forked { .. }) => CHILD_OK,
        Err(_) => CHILD_LOG_WRONG_ERROR,
    };
    // A metric handle made before the fork: the same refusal as the string path.
    let logged = match (logged, handle.log(-1.0, 1_001)) {
        (CHILD_OK, Ok(())) => CHILD_LOGGED,
        (CHILD_OK, Err(Error::Forked { .. })) => CHILD_OK,
        (CHILD_OK, Err(_)) => CHILD_LOG_WRONG_ERROR,
        (code, _) => code,
    };
    let flushed = match store.flush() {
        Ok(()) => CHILD_FLUSHED,
        Err(Error::Forked { .. }) => CHILD_OK,
        Err(_) => CHILD_FLUSH_WRONG_ERROR,
    };
    // A read that refreshes would take the parent's writers for the child's own and never see
    // what the parent appends after the fork.
    let refreshed = match store.refresh() {
        Ok(()) => CHILD_REFRESHED,
        Err(Error::Forked { .. }) => CHILD_OK,
        Err(_) => CHILD_REFRESH_WRONG_ERROR,
    };
    // The last references in this process: the run's drop tries to end it, and the store's
    // drop reaches the writers, the flusher and the background compactor.
    drop(handle);
    drop(run);
    drop(store);
    let code = [logged, flushed, refreshed]
        .into_iter()
        .find(|&code| code != CHILD_OK)
        .unwrap_or(CHILD_OK);
    // SAFETY: ends the child without running the test harness's exit path.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid`, killing it if it hangs (a drop joining a thread the child does not have).
fn wait_child(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid failed");
        if done == pid {
            assert!(libc::WIFEXITED(status), "child died: status {status}");
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child hung (dropping its handles must not wait)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_forked_child_cannot_log_and_its_drop_leaves_the_parent_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let options = StoreOptions {
        durability: Durability::Interval(Duration::from_millis(5)),
        segment_bytes: 64 * 1024,
        compaction_interval: Some(Duration::from_millis(5)),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&root, options).unwrap();
    let experiment = store.create_experiment("fork").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    let handle = run.metric("loss").unwrap();
    for step in 0..100 {
        handle.log(step as f64, step).unwrap();
    }
    store.flush().unwrap();
    let locks_before = lock_files(&root);
    assert!(locks_before > 0);

    // SAFETY: the child only calls the store and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        child(store, run, handle);
    }
    let code = wait_child(pid);
    assert_eq!(
        code, CHILD_OK,
        "child exit code (10: logged, 20: flushed, 30: refreshed, 11/21/31: wrong error)"
    );
    assert_eq!(
        lock_files(&root),
        locks_before,
        "the child removed the parent's lock files"
    );

    for step in 100..200 {
        run.log_metric("loss", step as f64, step).unwrap();
    }
    drop(handle);
    store.flush().unwrap();
    let history = store.history(run.id(), "loss", ..).unwrap();
    let expected: Vec<f64> = (0..200).map(|step| step as f64).collect();
    assert_eq!(history.values, expected);
    drop(run);
    store.close().unwrap();
    drop(store);
    let report = runlog::verify::verify(&root).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// A child's `stats` and `abandon` lock no lane: a lane a parent thread held at the fork stays
/// locked in the child forever, so locking one would hang. The parent keeps appending from
/// another thread while it forks, so some forks land while a lane is held.
#[test]
fn a_forked_child_reads_no_stats_and_abandons_nothing_of_its_parent() {
    use runlog::RunId;
    use runlog::wal::{Log, WriterStats};
    use std::sync::atomic::{AtomicBool, Ordering};

    let store = crate::util::Store::new();
    let mut options = crate::util::small_options();
    options.lanes = 1;
    let (log, _) = Log::open(store.wal(), options).unwrap();
    log.log_point(RunId(1), "loss", 0, 0, 0.0).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let appender = log.clone();
        let stop = &stop;
        scope.spawn(move || {
            let mut step = 1;
            while !stop.load(Ordering::Relaxed) {
                appender
                    .log_point(RunId(1), "loss", step, step, step as f64)
                    .unwrap();
                step += 1;
            }
        });
        for _ in 0..20 {
            // SAFETY: the child only calls `stats`/`abandon` on the handle and then `_exit`s.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let code = if log.stats() == WriterStats::default() {
                    CHILD_OK
                } else {
                    CHILD_LOGGED
                };
                log.abandon();
                // SAFETY: ends the child without running the test harness's exit path.
                unsafe { libc::_exit(code) }
            }
            assert_eq!(
                wait_child(pid),
                CHILD_OK,
                "the child counted its parent's appends as its own"
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(log.stats().points > 0);
    log.close().unwrap();
}
