//! `runlog demo`: a simulated hyperparameter sweep, logged at full speed, compacted, and
//! summarized. At `--runs 100 --keys 8 --steps 50000` it is the benchmark workload of
//! `docs/BENCHMARKS.md` (40 M points).
//!
//! Invariant: the sweep is a pure function of `--seed` and the sizes, so two demos with the
//! same arguments log the same values (timestamps aside).

use std::time::Instant;

use rayon::prelude::*;
use serde_json::Value;

use crate::output::{Table, float, float_or_null, now_ms};
use crate::{Context, Failure, Outcome};
use runlog::query::SearchRuns;
use runlog::{Durability, RunOptions, Store, StoreOptions, ViewType};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runs in the sweep.
    #[arg(long, default_value_t = 12)]
    runs: usize,
    /// Steps per run.
    #[arg(long, default_value_t = 5_000)]
    steps: i64,
    /// Metric keys per run (8 named ones, then extra/m8, extra/m9, ...).
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Seed of the simulated noise.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Experiment to log into.
    #[arg(long, default_value = "demo-sweep")]
    experiment: String,
}

const KEYS: [&str; 8] = [
    "train/loss",
    "val/loss",
    "val/acc",
    "train/acc",
    "lr",
    "grad_norm",
    "throughput",
    "gpu_mem_gb",
];
const LEARNING_RATES: [f64; 5] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2];
const BATCH_SIZES: [u32; 3] = [32, 64, 128];
const OPTIMIZERS: [&str; 2] = ["adamw", "sgd"];
/// Steps logged per `log_batch` call.
const CHUNK_STEPS: i64 = 1_000;

pub fn run(args: Args, context: &mut Context) -> Outcome {
    if args.runs == 0 || args.steps <= 0 || args.keys == 0 {
        return Err(Failure::Message(
            "--runs, --steps and --keys must be at least 1".into(),
        ));
    }
    let store = Store::open_with(
        &context.store_dir,
        StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        },
    )?;
    let experiment = store.get_or_create_experiment(&args.experiment)?;
    let existing = store.runs(experiment.id, ViewType::All)?.len();
    let keys: Vec<String> = (0..args.keys)
        .map(|k| match KEYS.get(k) {
            Some(key) => key.to_string(),
            None => format!("extra/m{k}"),
        })
        .collect();
    let total_points = args.runs as u64 * args.steps as u64 * keys.len() as u64;
    let bar = context.progress(total_points, "log");
    let started = Instant::now();
    let start_ms = now_ms();
    (0..args.runs).into_par_iter().try_for_each(|index| {
        let trial = Trial::new(index, args.seed, args.steps);
        let name = format!("trial-{:03}", existing + index + 1);
        let run = store.start_run(
            experiment.id,
            RunOptions {
                name: Some(name),
                tags: vec![
                    ("model".into(), trial.model.into()),
                    ("sweep".into(), args.experiment.clone()),
                ],
                start_time_ms: Some(start_ms + index as i64),
                ..RunOptions::default()
            },
        )?;
        run.log_params(&[
            ("lr", &trial.lr.to_string()),
            ("batch_size", &trial.batch_size.to_string()),
            ("optimizer", trial.optimizer),
            ("seed", &trial.seed.to_string()),
        ])?;
        let mut values = vec![Vec::new(); keys.len()];
        let mut first = 0;
        while first < args.steps {
            let last = (first + CHUNK_STEPS).min(args.steps);
            let steps: Vec<i64> = (first..last).collect();
            let timestamps: Vec<i64> = steps.iter().map(|s| start_ms + s * 50).collect();
            for column in values.iter_mut() {
                column.clear();
            }
            let mut noise = Noise::new(trial.seed ^ first as u64);
            for step in &steps {
                let point = trial.at(*step, &mut noise);
                for (k, column) in values.iter_mut().enumerate() {
                    // Values of f32 origin, as `tensor.item()` produces.
                    let value = point.get(k).copied().unwrap_or_else(|| noise.normal());
                    column.push(f64::from(value as f32));
                }
            }
            for (key, column) in keys.iter().zip(&values) {
                run.log_batch(key, &steps, Some(&timestamps), column)?;
            }
            bar.inc(steps.len() as u64 * keys.len() as u64);
            first = last;
        }
        run.finish()
    })?;
    bar.finish_and_clear();
    let logged = started.elapsed().as_secs_f64();
    let spinner = context.progress(1, "compact");
    let started = Instant::now();
    let report = store.compact()?;
    spinner.finish_and_clear();
    let compacted = started.elapsed().as_secs_f64();
    // The Parquet figure leaves out the manifests, metadata and any log left; the store's
    // total counts every byte (`runlog stats` breaks it down).
    let store_bytes = runlog::tracking::disk_usage(store.root())?.total().bytes;
    use std::io::Write;
    writeln!(
        context.out,
        "Logged {} runs x {} keys x {} steps = {} points in {:.2} s ({:.1} M points/s); \
         compacted in {:.2} s to {:.2} bytes/point in Parquet, {} bytes in all (store: {})",
        args.runs,
        keys.len(),
        args.steps,
        total_points,
        logged,
        total_points as f64 / logged / 1e6,
        compacted,
        report.bytes as f64 / report.points.max(1) as f64,
        store_bytes,
        context.store_dir.display()
    )?;
    print_results(&store, &args, &keys, context)
}

fn print_results(store: &Store, args: &Args, keys: &[String], context: &mut Context) -> Outcome {
    use std::io::Write;
    writeln!(context.out)?;
    let experiment = store
        .experiment_by_name(&args.experiment)?
        .ok_or_else(|| Failure::Message("the demo experiment vanished".into()))?;
    // Rank by validation accuracy when it is logged, else by the first key's latest value.
    let (rank_key, descending) = if keys.len() > 2 {
        ("val/acc", true)
    } else {
        (keys[0].as_str(), false)
    };
    let order = format!(
        "metrics.`{rank_key}` {}",
        if descending { "DESC" } else { "ASC" }
    );
    let best = store.search_runs(&SearchRuns {
        experiments: vec![experiment.id],
        order_by: vec![order.clone()],
        max_results: 5,
        ..SearchRuns::default()
    })?;
    writeln!(context.out, "Best runs by {rank_key} ({order}):")?;
    let mut table = Table::new(["rank", "run", "lr", "batch_size", "optimizer", rank_key]);
    for (rank, run) in best.runs.iter().enumerate() {
        let param = |k: &str| {
            run.params
                .get(k)
                .map_or(Value::Null, |v| Value::from(v.as_str()))
        };
        table.push(vec![
            Value::from(rank + 1),
            Value::from(run.info.name.as_str()),
            param("lr"),
            param("batch_size"),
            param("optimizer"),
            float_or_null(run.metrics.get(rank_key).map(|m| m.last_value)),
        ]);
    }
    table.write(&mut context.out, context.format)?;
    let ids: Vec<runlog::RunId> = best.runs.iter().map(|r| r.info.id).collect();
    // Up to three keys, each with its latest value and its best (min for a loss, else max).
    let shown: Vec<&str> = ["val/loss", "val/acc", "train/loss"]
        .into_iter()
        .filter(|k| keys.iter().any(|key| key == k))
        .chain(keys.iter().map(String::as_str))
        .take(3)
        .collect();
    let compared = store.compare(&ids, &shown)?;
    writeln!(context.out, "\nThe same runs, latest and best values:")?;
    let best_of = |key: &str| if key.contains("loss") { "min" } else { "max" };
    let mut table = Table::new(
        std::iter::once("run".to_string()).chain(
            shown
                .iter()
                .flat_map(|k| [format!("{k} last"), format!("{k} {}", best_of(k))]),
        ),
    );
    for run in &best.runs {
        let mut row = vec![Value::from(run.info.name.as_str())];
        for key in &shown {
            let summary = compared
                .iter()
                .find(|c| c.run == run.info.id && c.key == *key)
                .and_then(|c| c.summary);
            row.push(summary.map_or(Value::Null, |s| float(s.last_value)));
            row.push(summary.map_or(Value::Null, |s| {
                float(if best_of(key) == "min" {
                    s.min_value
                } else {
                    s.max_value
                })
            }));
        }
        table.push(row);
    }
    table.write(&mut context.out, context.format)?;
    if let Some(first) = best.runs.first() {
        let names: Vec<&str> = best
            .runs
            .iter()
            .take(3)
            .map(|r| r.info.name.as_str())
            .collect();
        writeln!(
            context.out,
            "\nNext: runlog history {} {} --max-points 20\n      runlog plot {} --key {} -o curves.svg",
            first.info.name,
            keys[0],
            names.join(" "),
            keys.get(1).unwrap_or(&keys[0])
        )?;
    }
    Ok(())
}

/// One simulated training run.
struct Trial {
    lr: f64,
    batch_size: u32,
    optimizer: &'static str,
    model: &'static str,
    seed: u64,
    steps: i64,
    /// The loss the run converges to: lowest near lr = 1e-3.
    floor: f64,
    /// Steps to converge.
    tau: f64,
    /// How much validation loss rises late in training (high learning rates overfit).
    overfit: f64,
}

impl Trial {
    fn new(index: usize, seed: u64, steps: i64) -> Trial {
        let lr = LEARNING_RATES[index % LEARNING_RATES.len()];
        let batch_size = BATCH_SIZES[(index / LEARNING_RATES.len()) % BATCH_SIZES.len()];
        let optimizer = OPTIMIZERS[(index / 15) % OPTIMIZERS.len()];
        let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64;
        let mut noise = Noise::new(seed);
        let distance = (lr.log10() + 3.0).abs();
        let floor = 0.08
            + 0.35 * distance * distance
            + if optimizer == "sgd" { 0.07 } else { 0.0 }
            + 0.03 * noise.uniform();
        Trial {
            lr,
            batch_size,
            optimizer,
            model: ["resnet18", "resnet50", "vit-b16"][index % 3],
            seed,
            steps,
            floor,
            tau: steps as f64 * (0.12 + 0.1 * distance) * (f64::from(batch_size) / 64.0).sqrt(),
            overfit: if lr >= 3e-3 { 0.25 } else { 0.03 },
        }
    }

    /// The values of the named keys at `step`.
    fn at(&self, step: i64, noise: &mut Noise) -> [f64; 8] {
        let s = step as f64;
        let t = s / self.steps as f64;
        let decay = (-s / self.tau).exp();
        let train_loss = (self.floor + (2.4 - self.floor) * decay) * (1.0 + 0.04 * noise.normal());
        let val_loss = (self.floor * 1.08 + (2.4 - self.floor) * decay + self.overfit * t * t)
            * (1.0 + 0.015 * noise.normal());
        let accuracy = |loss: f64| (1.0 / (1.0 + (7.0 * loss - 3.0).exp())).clamp(0.0, 1.0);
        let warmup = (t / 0.05).min(1.0);
        let lr = self.lr * warmup * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        [
            train_loss.max(0.0),
            val_loss.max(0.0),
            accuracy(val_loss),
            accuracy(train_loss) + 0.005 * noise.normal(),
            lr,
            (4.0 * decay + 0.6) * (1.0 + 0.2 * noise.normal().abs()),
            900.0 * f64::from(self.batch_size) / 64.0 * (1.0 + 0.03 * noise.normal()),
            3.5 + f64::from(self.batch_size) / 32.0 + 0.01 * noise.normal(),
        ]
    }
}

/// SplitMix64 with a Box-Muller normal: seeded, so the sweep is reproducible.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Noise {
        Noise(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
