//! Helpers shared by the integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use runlog::wal::{Durability, Event, LogOptions, ReadOptions, read_dir};
use runlog::{KeyId, RunId, WriterId};

/// A fresh temporary directory; the log goes in `<dir>/wal`.
pub struct Store {
    pub dir: tempfile::TempDir,
}

impl Store {
    pub fn new() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn wal(&self) -> PathBuf {
        self.dir.path().join("wal")
    }

    /// A writer of its own on this store's log, with `segment_bytes` segments and no sync.
    pub fn writer(&self, segment_bytes: u64) -> runlog::wal::Writer {
        let options = runlog::wal::WriterOptions {
            segment_bytes,
            sync_every_append: false,
        };
        runlog::wal::Writer::create(
            &self.wal(),
            std::sync::Arc::new(runlog::io::OsStorage),
            options,
        )
        .unwrap()
    }

    /// Bytes the log's files take on disk.
    pub fn log_bytes(&self) -> u64 {
        std::fs::read_dir(self.wal())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}

/// Buffered durability, small segments (so tests rotate), a few lanes.
pub fn small_options() -> LogOptions {
    LogOptions {
        segment_bytes: 16 * 1024,
        durability: Durability::Buffered,
        lanes: 4,
        ..LogOptions::default()
    }
}

/// A metric point with its key resolved and its value as bits (so NaN compares).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Point {
    pub run: RunId,
    pub key: String,
    pub step: i64,
    pub timestamp_ms: i64,
    pub value_bits: u64,
}

/// Everything one read of a log returns, split into metadata events and resolved points, per
/// writer in log order.
#[derive(Debug, Default, PartialEq)]
pub struct Contents {
    pub events: Vec<(WriterId, Event)>,
    pub points: Vec<(WriterId, Point)>,
}

impl Contents {
    pub fn points_of(&self, run: RunId) -> Vec<Point> {
        self.points
            .iter()
            .filter(|(_, p)| p.run == run)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The steps of `run`'s points, in log order.
    pub fn steps_of(&self, run: RunId) -> Vec<i64> {
        self.points
            .iter()
            .filter(|(_, p)| p.run == run)
            .map(|(_, p)| p.step)
            .collect()
    }
}

/// Splits a stream of events into metadata and resolved points.
pub fn resolve(raw: Vec<(WriterId, Event)>) -> Contents {
    let mut keys: HashMap<(WriterId, RunId, KeyId), String> = HashMap::new();
    let mut contents = Contents::default();
    for (writer, event) in raw {
        match event {
            Event::MetricKeyDefined { run, key_id, key } => {
                assert!(
                    keys.insert((writer, run, key_id), key).is_none(),
                    "key id {key_id} defined twice for run {run} in writer {writer}"
                );
            }
            Event::Metrics(batch) => {
                for i in 0..batch.len() {
                    let key = keys
                        .get(&(writer, batch.run, batch.key_ids[i]))
                        .unwrap_or_else(|| panic!("undefined key id {}", batch.key_ids[i]))
                        .clone();
                    contents.points.push((
                        writer,
                        Point {
                            run: batch.run,
                            key,
                            step: batch.steps[i],
                            timestamp_ms: batch.timestamps_ms[i],
                            value_bits: batch.values[i].to_bits(),
                        },
                    ));
                }
            }
            other => contents.events.push((writer, other)),
        }
    }
    contents
}

/// Reads a whole log directory.
pub fn read(wal: &Path) -> runlog::Result<Contents> {
    read_with(wal, ReadOptions::default())
}

pub fn read_with(wal: &Path, options: ReadOptions) -> runlog::Result<Contents> {
    let mut raw = Vec::new();
    read_dir(wal, options, &mut |writer, event| raw.push((writer, event)))?;
    Ok(resolve(raw))
}

/// SplitMix64: a tiny seeded generator for replayable randomized tests.
pub struct Rng(u64);

impl Rng {
    /// Seeds from `RUNLOG_SEED` if set, else from the clock; prints the seed either way.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("RUNLOG_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (replay with RUNLOG_SEED={seed})");
        Rng(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A noisy training-loss-like value of f32 origin, as `tensor.item()` produces.
    pub fn loss(&mut self, step: i64) -> f64 {
        let noise = (self.below(1_000_000) as f64 / 1_000_000.0 - 0.5) * 0.1;
        f64::from((2.0 / (1.0 + step as f64 / 100.0) + noise) as f32)
    }
}

/// The segment files of a log directory, sorted by name (writer, then sequence).
pub fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
}

/// The one segment file of a log directory that holds exactly one.
pub fn only_segment(wal: &Path) -> PathBuf {
    let mut segments = segments(wal);
    assert_eq!(
        segments.len(),
        1,
        "expected one segment in {}",
        wal.display()
    );
    segments.pop().unwrap()
}

/// Mounts a tmpfs for the test's life; `None` where mounting is not allowed.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(path.to_path_buf()))
    }

    pub fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
