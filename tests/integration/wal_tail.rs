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
