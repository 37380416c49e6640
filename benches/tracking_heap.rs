//! Heap growth while logging 100 million points with single `log_metric` calls: the issue's
//! floor is 64 MiB. A counting global allocator tracks live heap bytes and their high-water mark.
//!
//! Run: `cargo bench --bench tracking_heap` (set `RUNLOG_HEAP_POINTS` for another count).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use runlog::{Durability, RunOptions, Store, StoreOptions};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: [&str; 8] = [
    "loss",
    "acc",
    "lr",
    "grad_norm",
    "val/loss",
    "val/acc",
    "tokens",
    "mfu",
];

fn main() {
    // cargo bench passes "--bench"; nothing else to parse.
    let points: u64 = std::env::var("RUNLOG_HEAP_POINTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000_000);
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("heap").unwrap();
    let run = store
        .start_run(experiment.id, RunOptions::default())
        .unwrap();
    // Warm up: the first points allocate the key tables and the lane's writer.
    for i in 0..1000u64 {
        run.log_metric(KEYS[(i % 8) as usize], i as f64, (i / 8) as i64)
            .unwrap();
    }
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let start = Instant::now();
    for i in 1000..points {
        let value = f64::from((1.0 / (1.0 + i as f64 / 1e6)) as f32);
        run.log_metric(KEYS[(i % 8) as usize], value, (i / 8) as i64)
            .unwrap();
    }
    let elapsed = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    let end = LIVE.load(Ordering::Relaxed);
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "tracking_heap: {points} points in {:.1} s ({:.2} M points/s); heap at start {:.2} MiB, \
         peak growth {:.3} MiB, growth at end {:.3} MiB (floor: 64 MiB)",
        elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64() / 1e6,
        mib(baseline),
        mib(peak - baseline),
        mib(end.saturating_sub(baseline))
    );
    assert!(
        peak - baseline <= 64 << 20,
        "heap grew by {:.1} MiB",
        mib(peak - baseline)
    );
    run.finish().unwrap();
    store.close().unwrap();
}
