//! Many small writers: the disk and memory one idle writer costs (a writer whose run logged
//! ten points and then waits), and the open time of a store holding 1,000 writer chains, live
//! and then closed. Each writer is its own `Store` handle, as each of 1,000 training ranks
//! would be its own process; Buffered, so no handle starts a flusher thread.
//!
//! Run: `cargo bench --bench small_writers` (prints figures; no criterion: each is measured
//! once). Figures go in `docs/BENCHMARKS.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use runlog::{Durability, RunOptions, Store, StoreOptions};

const WRITERS: usize = 1_000;
const POINTS_PER_WRITER: i64 = 10;

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        compaction_interval: None,
        ..StoreOptions::default()
    }
}

/// (apparent bytes, allocated bytes) of the files in `dir`.
fn disk_bytes(dir: &Path) -> (u64, u64) {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap())
        .fold((0, 0), |(len, blocks), meta| {
            (len + meta.len(), blocks + meta.blocks() * 512)
        })
}

/// This process's resident memory, bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn time_open(root: &Path) -> f64 {
    let start = Instant::now();
    let store = Store::open_with(root, options()).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let experiment = store.experiment_by_name("ranks").unwrap().unwrap();
    let runs = store.runs(experiment.id, runlog::ViewType::All).unwrap();
    assert_eq!(runs.len(), WRITERS);
    elapsed
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let experiment = Store::open_with(root, options())
        .unwrap()
        .get_or_create_experiment("ranks")
        .unwrap()
        .id;
    let wal = root.join("wal");
    let (disk_before, allocated_before) = disk_bytes(&wal);
    let rss_before = rss_bytes();
    let stores: Vec<Store> = (0..WRITERS)
        .map(|_| Store::open_with(root, options()).unwrap())
        .collect();
    let rss_handles = rss_bytes();
    let mut writers = Vec::with_capacity(WRITERS);
    for store in stores {
        let run = store.start_run(experiment, RunOptions::default()).unwrap();
        let loss = run.metric("loss").unwrap();
        for step in 0..POINTS_PER_WRITER {
            loss.log(1.0 / (step + 1) as f64, step).unwrap();
        }
        writers.push((store, run));
    }
    let rss_idle = rss_bytes();
    let (disk_idle, allocated_idle) = disk_bytes(&wal);
    let per = |bytes: u64| bytes as f64 / WRITERS as f64 / 1024.0;
    println!("small_writers: {WRITERS} idle writers, {POINTS_PER_WRITER} points each");
    println!(
        "  disk per idle writer: {:.1} KiB apparent, {:.1} KiB allocated",
        per(disk_idle - disk_before),
        per(allocated_idle - allocated_before)
    );
    println!(
        "  memory per store handle (RSS growth, nothing logged yet): {:.1} KiB",
        per(rss_handles.saturating_sub(rss_before))
    );
    println!(
        "  memory per idle writer (RSS growth from its run and ten points): {:.1} KiB",
        per(rss_idle.saturating_sub(rss_handles))
    );
    println!(
        "  open beside {WRITERS} live writer chains: {:.3} s",
        time_open(root)
    );
    for (store, run) in writers.drain(..) {
        run.finish().unwrap();
        store.close().unwrap();
    }
    let (disk_closed, allocated_closed) = disk_bytes(&wal);
    println!(
        "  disk per closed writer: {:.1} KiB apparent, {:.1} KiB allocated",
        per(disk_closed - disk_before),
        per(allocated_closed - allocated_before)
    );
    println!(
        "  open of {WRITERS} closed writer chains: {:.3} s",
        time_open(root)
    );
}
