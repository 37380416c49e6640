//! Issue 16's bytes-per-point workload, shared by the integration test `compaction_bytes` and
//! the bench `compacted_bytes`: per run, 4 keys logged together at every step (as
//! `log_metrics` and MLflow's `log_batch` do), 3 of `f32` origin (a noisy loss, an accuracy, a
//! noisy gradient norm: computed in `f32` and widened) and 1 a full-precision `f64` cosine
//! learning-rate schedule, with millisecond timestamps shared by the keys of a step, 250 ms
//! apart plus 0 to 2 ms of jitter.
//!
//! Deterministic for a seed, so a size measured once is measured again.

#![allow(dead_code)]

use runlog::{RunId, Store};

/// The keys, in the order they are logged.
pub const KEYS: [&str; 4] = ["train/loss", "train/accuracy", "grad_norm", "lr"];

/// A splitmix64 generator: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-0.5, 0.5), with 24 bits of randomness (an `f32` draw).
    fn noise(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// One run's columns: steps, timestamps and the values of each key of `KEYS`.
pub struct RunColumns {
    pub steps: Vec<i64>,
    pub timestamps_ms: Vec<i64>,
    pub values: [Vec<f64>; 4],
}

/// The columns of one run of `steps` steps.
pub fn run_columns(steps: i64, seed: u64) -> RunColumns {
    let mut rng = Rng(seed);
    let start_ms = 1_780_000_000_000i64;
    let span = steps.max(1) as f32;
    let warmup = (steps / 100).max(1);
    let (peak, floor) = (3e-4f64, 3e-5f64);
    let mut columns = RunColumns {
        steps: Vec::with_capacity(steps as usize),
        timestamps_ms: Vec::with_capacity(steps as usize),
        values: Default::default(),
    };
    for step in 0..steps {
        let t = step as f32 / span;
        let loss = 2.0 * (-4.0 * t).exp() + 0.35 + 0.08 * rng.noise();
        let accuracy = 0.93 - 0.8 * (-5.0 * t).exp() + 0.01 * rng.noise();
        let grad_norm = (0.4 + 1.6 * (-3.0 * t).exp()) * (1.0 + 0.6 * rng.noise());
        let lr = if step < warmup {
            peak * step as f64 / warmup as f64
        } else {
            let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
            floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
        };
        columns.steps.push(step);
        columns
            .timestamps_ms
            .push(start_ms + step * 250 + (rng.next_u64() % 3) as i64);
        columns.values[0].push(f64::from(loss));
        columns.values[1].push(f64::from(accuracy));
        columns.values[2].push(f64::from(grad_norm));
        columns.values[3].push(lr);
    }
    columns
}

/// Logs `runs` runs of `steps` steps each into experiment `experiment`; returns the columns
/// logged, run by run.
pub fn log(
    store: &Store,
    experiment: &str,
    runs: usize,
    steps: i64,
    seed: u64,
) -> Vec<(RunId, RunColumns)> {
    let experiment = store.get_or_create_experiment(experiment).unwrap();
    (0..runs)
        .map(|index| {
            let run = store.start_run(experiment.id, Default::default()).unwrap();
            let columns = run_columns(steps, seed.wrapping_add(index as u64));
            for (key, values) in KEYS.iter().zip(&columns.values) {
                run.log_batch(key, &columns.steps, Some(&columns.timestamps_ms), values)
                    .unwrap();
            }
            let id = run.id();
            run.finish().unwrap();
            (id, columns)
        })
        .collect()
}

/// Compressed bytes of each column of the compacted files in force, by column name.
pub fn column_bytes(store: &Store, root: &std::path::Path) -> Vec<(String, i64)> {
    use parquet::file::reader::FileReader;
    let mut bytes: Vec<(String, i64)> = Vec::new();
    for file in store.manifest().unwrap().files {
        let path = root.join(&file.path);
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path).unwrap())
                .unwrap();
        for group in reader.metadata().row_groups() {
            for column in group.columns() {
                let name = column.column_path().string();
                match bytes.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, total)) => *total += column.compressed_size(),
                    None => bytes.push((name, column.compressed_size())),
                }
            }
        }
    }
    bytes
}
