//! Following a live writer: each poll yields exactly what was appended since the last one,
//! including points of a stream that is still growing, across segment rotations.

use runlog::RunId;
use runlog::wal::{Event, Log, Tail};

use crate::util::{Store, read, resolve, small_options};

#[test]
fn a_tail_sees_each_append_exactly_once_while_the_writer_runs() {
    let store = Store::new();
    let (log, _) = Log::open(store.wal(), small_options()).unwrap();
    let mut tail = Tail::new(store.wal());
    let mut seen = Vec::new();
    let mut poll = |tail: &mut Tail| {
        tail.poll(&mut |writer, event| seen.push((writer, event)))
            .unwrap();
    };
    poll(&mut tail);
    let mut step = 0i64;
    for round in 0..50 {
        for _ in 0..(round * 37 % 400 + 1) {
            log.log_point(RunId(1), "loss", step, step, step as f64)
                .unwrap();
            step += 1;
        }
        if round % 7 == 0 {
            log.append(&Event::TagSet {
                run: RunId(1),
                time_ms: round,
                key: "r".into(),
                value: "v".into(),
            })
            .unwrap();
        }
        poll(&mut tail);
    }
    assert!(log.stats().segments > 2, "the test should cross rotations");
    log.close().unwrap();
    poll(&mut tail);
    let tailed = resolve(seen);
    let full = read(&store.wal()).unwrap();
    assert_eq!(tailed, full);
    assert_eq!(tailed.points.len() as i64, step);
}

/// A batch record larger than the tail's first read window, right after an open stream: the
/// window must grow to take it in rather than stall until the segment is sealed.
#[test]
fn a_tail_takes_in_a_large_batch_after_a_stream() {
    let store = Store::new();
    let options = runlog::wal::LogOptions {
        segment_bytes: 8 << 20,
        ..small_options()
    };
    let (log, _) = Log::open(store.wal(), options).unwrap();
    let mut tail = Tail::new(store.wal());
    log.log_point(RunId(1), "loss", 0, 0, 0.5).unwrap();
    let steps: Vec<i64> = (0..60_000).collect();
    let values: Vec<f64> = steps.iter().map(|s| (*s as f64).sqrt()).collect();
    log.log_columns(RunId(1), "big", &steps, &steps, &values)
        .unwrap();
    let mut seen = Vec::new();
    tail.poll(&mut |writer, event| seen.push((writer, event)))
        .unwrap();
    assert_eq!(resolve(seen).points.len(), 60_001);
}
