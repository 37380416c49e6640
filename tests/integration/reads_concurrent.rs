//! The read path under concurrency: bounded staleness (`refresh_interval`), a handle's own
//! writes visible at once, and many reader threads beside writers seeing gap-free prefixes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use runlog::query::SearchRuns;
use runlog::{Durability, Error, RunOptions, Store, StoreOptions};

fn open(dir: &std::path::Path, refresh_interval: Option<Duration>) -> Store {
    let options = StoreOptions {
        durability: Durability::Buffered,
        refresh_interval,
        ..StoreOptions::default()
    };
    Store::open_with(dir, options).unwrap()
}

#[test]
fn reads_are_at_most_refresh_interval_stale_and_own_writes_show_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path(), None);
    let experiment = writer.get_or_create_experiment("e").unwrap();
    let theirs = writer
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    theirs.log_metric("loss", 1.0, 0).unwrap();

    // An hour-long interval: reads serve the catalog as of the last refresh.
    let lazy = open(dir.path(), Some(Duration::from_secs(3_600)));
    assert_eq!(lazy.run(theirs.id()).unwrap().metrics["loss"].count, 1);
    theirs.log_metric("loss", 0.5, 1).unwrap();
    assert_eq!(lazy.run(theirs.id()).unwrap().metrics["loss"].count, 1);
    // `refresh` always refreshes.
    lazy.refresh().unwrap();
    assert_eq!(lazy.run(theirs.id()).unwrap().metrics["loss"].count, 2);
    // A run created since the last refresh is found, not reported missing: a miss refreshes.
    let new = writer
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    assert_eq!(lazy.run(new.id()).unwrap().info.id, new.id());
    assert!(matches!(
        lazy.run(runlog::RunId(7)),
        Err(Error::NotFound(_))
    ));
    // The handle's own writes are visible at once, whatever the interval.
    let mine = lazy.resume_run(new.id()).unwrap();
    mine.log_metric("acc", 0.9, 0).unwrap();
    mine.set_tag("stage", "prod").unwrap();
    let view = lazy.run(new.id()).unwrap();
    assert_eq!(view.metrics["acc"].last_value, 0.9);
    assert_eq!(view.tags["stage"], "prod");
    let found = lazy
        .search_runs(&SearchRuns {
            filter: "tags.stage = 'prod' and metrics.acc > 0.5".into(),
            ..SearchRuns::default()
        })
        .unwrap();
    assert_eq!(found.runs.len(), 1);

    // A short interval: another handle's write shows once the interval has passed.
    let eager = open(dir.path(), Some(Duration::from_millis(20)));
    assert_eq!(eager.run(theirs.id()).unwrap().metrics["loss"].count, 2);
    theirs.log_metric("loss", 0.25, 2).unwrap();
    std::thread::sleep(Duration::from_millis(25));
    assert_eq!(eager.run(theirs.id()).unwrap().metrics["loss"].count, 3);

    // No interval: every read refreshes.
    let strict = open(dir.path(), None);
    assert_eq!(strict.run(theirs.id()).unwrap().metrics["loss"].count, 3);
    theirs.log_metric("loss", 0.125, 3).unwrap();
    assert_eq!(strict.run(theirs.id()).unwrap().metrics["loss"].count, 4);
}

#[test]
fn eight_readers_beside_two_writers_always_see_gap_free_prefixes() {
    const POINTS: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let writers = open(dir.path(), None);
    let experiment = writers.get_or_create_experiment("e").unwrap();
    let runs: Vec<runlog::Run> = (0..2)
        .map(|_| {
            writers
                .start_run(experiment.id, RunOptions::default())
                .unwrap()
        })
        .collect();
    let ids: Vec<runlog::RunId> = runs.iter().map(|r| r.id()).collect();
    // Readers share one handle with the default interval, in another handle than the writers,
    // so every point they see came through a refresh.
    let reader = open(dir.path(), StoreOptions::default().refresh_interval);
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..8)
        .map(|thread| {
            let (reader, done, reads, ids) =
                (reader.clone(), done.clone(), reads.clone(), ids.clone());
            std::thread::spawn(move || {
                let mut seen = [0usize; 2];
                let mut counted = [0u64; 2];
                loop {
                    // Read `done` first: a round that starts after the writers finished and
                    // refreshed must see everything.
                    let last_round = done.load(Ordering::Acquire);
                    for (index, id) in ids.iter().enumerate() {
                        let history = reader.history(*id, "loss", ..).unwrap();
                        for i in 0..history.len() {
                            assert_eq!(history.steps[i], i as i64, "thread {thread}, run {index}");
                        }
                        assert!(
                            history.len() >= seen[index],
                            "thread {thread}: history shrank"
                        );
                        seen[index] = history.len();
                        let count = reader
                            .run(*id)
                            .unwrap()
                            .metrics
                            .get("loss")
                            .map_or(0, |m| m.count);
                        assert!(count >= counted[index], "thread {thread}: summary shrank");
                        counted[index] = count;
                    }
                    let page = reader.search_runs(&SearchRuns::default()).unwrap();
                    assert_eq!(page.runs.len(), 2);
                    reads.fetch_add(1, Ordering::Relaxed);
                    if last_round {
                        return (seen, counted);
                    }
                }
            })
        })
        .collect();
    let writer_threads: Vec<_> = runs
        .into_iter()
        .map(|run| {
            std::thread::spawn(move || {
                for step in 0..POINTS {
                    run.log_metric("loss", 1.0 / (step + 1) as f64, step)
                        .unwrap();
                }
                run.finish().unwrap();
            })
        })
        .collect();
    for thread in writer_threads {
        thread.join().unwrap();
    }
    writers.flush().unwrap();
    reader.refresh().unwrap();
    done.store(true, Ordering::Release);
    for thread in readers {
        let (seen, counted) = thread.join().unwrap();
        assert_eq!(seen, [POINTS as usize; 2]);
        assert_eq!(counted, [POINTS as u64; 2]);
    }
    assert!(reads.load(Ordering::Relaxed) >= 8);
}
