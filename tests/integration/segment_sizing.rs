//! Segment sizing: a writer's segments start small and double up to the configured size, a
//! record larger than the next size gets a segment that fits it, a metadata chain is sized to
//! its events, and a nearly full disk neither stops a small writer nor a compaction.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use runlog::limits::SEGMENT_BYTES_FIRST;
use runlog::wal::segment::SegmentHeader;
use runlog::wal::{Event, WriterOptions};
use runlog::{Durability, Error, RunId, RunOptions, Store, StoreOptions};

use crate::util::{self, Tmpfs};

const MIB: u64 = 1024 * 1024;

/// The header of a segment file.
fn header(path: &Path) -> SegmentHeader {
    let bytes = std::fs::read(path).unwrap();
    SegmentHeader::decode(&bytes).unwrap()
}

/// Bytes of disk blocks the files under `dir` hold (preallocated blocks included).
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        total += if metadata.is_dir() {
            allocated_bytes(&entry.path())
        } else {
            metadata.blocks() * 512
        };
    }
    total
}

fn writer(wal: &Path, segment_bytes: u64) -> runlog::wal::Writer {
    let options = WriterOptions {
        segment_bytes,
        sync_every_append: false,
    };
    runlog::wal::Writer::create(wal, Arc::new(runlog::io::OsStorage), options).unwrap()
}

#[test]
fn a_writer_that_logs_ten_points_takes_about_one_mib_of_disk() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("small").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    for step in 0..10 {
        run.log_metric("loss", 0.5, step).unwrap();
    }
    // The writer is alive and idle: its segment is still preallocated, not trimmed.
    let wal = dir.path().join("wal");
    let segment = util::only_segment(&wal);
    assert_eq!(header(&segment).segment_bytes, SEGMENT_BYTES_FIRST);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        SEGMENT_BYTES_FIRST
    );
    let bytes = allocated_bytes(dir.path());
    assert!(
        bytes <= SEGMENT_BYTES_FIRST + 64 * 1024,
        "a writer of ten points holds {bytes} bytes of disk"
    );
    run.finish().unwrap();
}

/// On a disk with 8 MiB free, a store with the default 64 MiB segments still logs.
#[test]
fn a_writer_starts_on_a_disk_with_less_room_than_the_configured_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&mount, "8m") else {
        eprintln!("cannot mount a tmpfs here (needs root): test skipped");
        return;
    };
    let root = mount.join("store");
    let store = Store::open(&root).unwrap();
    let experiment = store.get_or_create_experiment("small").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    let id = run.id();
    for step in 0..10 {
        run.log_metric("loss", 0.5, step).unwrap();
    }
    run.finish().unwrap();
    drop(store);
    let store = Store::open(&root).unwrap();
    assert_eq!(store.history(id, "loss", ..).unwrap().len(), 10);
}

#[test]
fn segments_double_from_one_mib_up_to_the_configured_size() {
    let store = util::Store::new();
    let mut writer = writer(&store.wal(), 4 * MIB);
    // Incompressible values, so the columns records fill segments quickly.
    let mut rng = util::Rng::new(7);
    let steps: Vec<i64> = (0..10_000).collect();
    let values: Vec<f64> = steps
        .iter()
        .map(|_| f64::from_bits(rng.next_u64() >> 2))
        .collect();
    let mut step_offset = 0;
    while writer.stats().segments < 5 {
        let shifted: Vec<i64> = steps.iter().map(|s| s + step_offset).collect();
        writer
            .log_columns(RunId(1), "x", &shifted, &shifted, &values)
            .unwrap();
        step_offset += steps.len() as i64;
    }
    writer.close().unwrap();
    let sizes: Vec<u64> = util::segments(&store.wal())
        .iter()
        .map(|path| {
            let header = header(path);
            let len = std::fs::metadata(path).unwrap().len();
            assert!(len <= header.segment_bytes, "{}", path.display());
            header.segment_bytes
        })
        .collect();
    assert_eq!(sizes, [MIB, 2 * MIB, 4 * MIB, 4 * MIB, 4 * MIB]);
    let points = util::read(&store.wal()).unwrap().points_of(RunId(1));
    assert_eq!(points.len() as i64, step_offset);
}

#[test]
fn a_segment_never_grows_past_a_configured_size_below_one_mib() {
    let store = util::Store::new();
    let mut writer = writer(&store.wal(), 16 * 1024);
    for step in 0..20_000 {
        writer
            .log_point(RunId(1), "x", step, step, step as f64 * 0.1)
            .unwrap();
    }
    writer.close().unwrap();
    let segments = util::segments(&store.wal());
    assert!(segments.len() > 2);
    for path in &segments {
        assert_eq!(header(path).segment_bytes, 16 * 1024, "{}", path.display());
    }
    assert_eq!(
        util::read(&store.wal()).unwrap().points_of(RunId(1)).len(),
        20_000
    );
}

/// A 2 MiB tag does not fit a 1 MiB first segment: the next segment is made large enough.
#[test]
fn a_record_larger_than_the_next_segment_gets_a_segment_that_fits_it() {
    let store = util::Store::new();
    let mut writer = writer(&store.wal(), 64 * MIB);
    writer.log_point(RunId(1), "before", 0, 0, 1.0).unwrap();
    let big = Event::TagSet {
        run: RunId(1),
        time_ms: 1,
        key: "k".repeat(1 << 20),
        value: "v".repeat(1 << 20),
    };
    writer.append(&big).unwrap();
    writer.log_point(RunId(1), "after", 1, 1, 2.0).unwrap();
    writer.close().unwrap();
    let sizes: Vec<u64> = util::segments(&store.wal())
        .iter()
        .map(|path| header(path).segment_bytes)
        .collect();
    assert_eq!(sizes[0], MIB, "{sizes:?}");
    assert!(
        sizes[1] > 2 * MIB && sizes[1] <= 4 * MIB,
        "the tag's segment is {} bytes",
        sizes[1]
    );
    let contents = util::read(&store.wal()).unwrap();
    assert!(contents.events.iter().any(|(_, event)| *event == big));
    assert_eq!(contents.points_of(RunId(1)).len(), 2);
}

/// A writer whose very first record is larger than its first segment seals that segment empty
/// and goes on in one that fits; a store holding it opens and verifies clean.
#[test]
fn a_first_record_larger_than_the_first_segment_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let wal = dir.path().join("wal");
    let mut writer = writer(&wal, 64 * MIB);
    let big = Event::ExperimentTagSet {
        experiment: runlog::ExperimentId(1),
        time_ms: 1,
        key: "k".repeat(1 << 20),
        value: "v".repeat(1 << 20),
    };
    writer.append(&big).unwrap();
    writer.close().unwrap();
    let segments = util::segments(&wal);
    assert_eq!(segments.len(), 2);
    assert_eq!(header(&segments[0]).segment_bytes, MIB);
    assert_eq!(header(&segments[1]).segment_bytes, 4 * MIB);
    let contents = util::read(&wal).unwrap();
    assert_eq!(contents.events.len(), 1);
    assert!(contents.events[0].1 == big);
    let report = runlog::verify::verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    drop(Store::open(dir.path()).unwrap());
}

/// Compaction's metadata chain holds a few events: its segment is preallocated to fit them,
/// not to the store's segment size.
#[test]
fn a_metadata_chain_is_preallocated_to_the_events_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path(), options).unwrap();
    let experiment = store.get_or_create_experiment("chain").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    run.log_param("lr", "0.1").unwrap();
    run.log_metric("loss", 0.5, 0).unwrap();
    let id = run.id();
    run.finish().unwrap();
    let report = store.compact().unwrap();
    assert!(report.metadata_events > 0);
    let manifest = store.manifest().unwrap();
    assert_eq!(manifest.metadata.len(), 1);
    let chain = manifest.metadata.iter().next().copied().unwrap();
    let wal = dir.path().join("wal");
    let chain_segments: Vec<_> = util::segments(&wal)
        .into_iter()
        .filter(|path| header(path).writer == chain)
        .collect();
    assert_eq!(chain_segments.len(), 1);
    let preallocated = header(&chain_segments[0]).segment_bytes;
    assert!(
        preallocated <= 64 * 1024,
        "a chain of {} events was preallocated {preallocated} bytes",
        report.metadata_events
    );
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.run(id).unwrap().params["lr"], "0.1");
}

/// A store on a 10 MiB disk with 4 MiB segments: the writer's segments of 1, 2 and 4 MiB fill
/// it until the next 4 MiB segment does not fit. Compaction then still succeeds (its metadata
/// chain is a few KiB, not a 4 MiB segment), frees the log's space, and logging resumes.
#[test]
fn compaction_on_a_nearly_full_disk_frees_space_and_logging_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&mount, "10m") else {
        eprintln!("cannot mount a tmpfs here (needs root): test skipped");
        return;
    };
    let root = mount.join("store");
    let options = || StoreOptions {
        durability: Durability::Buffered,
        segment_bytes: 4 * MIB,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&root, options()).unwrap();
    let experiment = store.get_or_create_experiment("full").unwrap().id;
    let run = store.start_run(experiment, RunOptions::default()).unwrap();
    run.log_param("seed", "1").unwrap();
    let id = run.id();
    // Few distinct values: a few bytes per point in the log, far less in Parquet.
    let value = |step: i64| f64::from((step % 8) as f32 * 0.25);
    let mut acknowledged = 0i64;
    let full = loop {
        match run.log_metric_at("loss", value(acknowledged), acknowledged, acknowledged) {
            Ok(()) => acknowledged += 1,
            Err(error) => break error,
        }
        assert!(acknowledged < 20_000_000, "the disk never filled");
    };
    assert!(
        matches!(full, Error::StorageFull { .. }),
        "a full disk is StorageFull, not {full}"
    );
    assert!(acknowledged > 100_000, "only {acknowledged} points fit");
    let before = allocated_bytes(&root);
    eprintln!("{acknowledged} points acknowledged, {before} bytes before compaction");
    let report = store.compact().unwrap();
    assert_eq!(report.points, acknowledged as u64);
    let after = allocated_bytes(&root);
    assert!(
        after + 4 * MIB < before,
        "compaction freed too little: {before} bytes before, {after} after"
    );
    for step in acknowledged..acknowledged + 1000 {
        run.log_metric_at("loss", value(step), step, step).unwrap();
    }
    let total = acknowledged + 1000;
    run.finish().unwrap();
    drop(store);
    let report = runlog::verify::verify(&root).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let store = Store::open_with(&root, options()).unwrap();
    let history = store.history(id, "loss", ..).unwrap();
    assert_eq!(history.steps, (0..total).collect::<Vec<_>>());
    assert!(
        history
            .steps
            .iter()
            .zip(&history.values)
            .all(|(step, v)| *v == value(*step))
    );
}
