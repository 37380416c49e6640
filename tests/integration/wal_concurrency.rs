//! Many threads append through one handle: each gets its own lane (writer), nothing is lost,
//! and each thread's points keep their order.

use std::collections::BTreeSet;

use runlog::RunId;
use runlog::wal::Log;

use crate::util::{Store, read, small_options};

#[test]
fn eight_threads_through_one_handle_lose_nothing_and_keep_order() {
    let store = Store::new();
    let mut options = small_options();
    options.lanes = 8;
    let (log, _) = Log::open(store.wal(), options).unwrap();
    let threads = 8u128;
    let steps = 5_000i64;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let log = log.clone();
            scope.spawn(move || {
                for step in 0..steps {
                    let key = if step % 2 == 0 { "even" } else { "odd" };
                    log.log_point(RunId(thread), key, step, step, step as f64)
                        .unwrap();
                    if step % 1000 == 999 {
                        log.log_columns(RunId(thread), "batch", &[step], &[step], &[0.5])
                            .unwrap();
                    }
                }
            });
        }
    });
    log.close().unwrap();
    let contents = read(&store.wal()).unwrap();
    let writers: BTreeSet<_> = contents.points.iter().map(|(w, _)| *w).collect();
    assert!(
        writers.len() >= 2,
        "threads should spread over lanes, got {} writers",
        writers.len()
    );
    for thread in 0..threads {
        let points = contents.points_of(RunId(thread));
        let streamed: Vec<i64> = points
            .iter()
            .filter(|p| p.key != "batch")
            .map(|p| p.step)
            .collect();
        assert_eq!(streamed, (0..steps).collect::<Vec<_>>(), "thread {thread}");
        assert_eq!(points.iter().filter(|p| p.key == "batch").count(), 5);
    }
}

/// Handles are Send + Sync and cheap to clone.
#[test]
fn log_handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Log>();
}
