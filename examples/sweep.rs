//! A small hyperparameter sweep logged through the tracking API: four runs with params, tags
//! and loss/accuracy curves, one thread per run, then the runs ranked by final validation loss.
//!
//! Run: `cargo run --release --example sweep [STORE_DIR]` (default: `./runlog-data`).
//! Run it twice: the second run reopens the store, finds the experiment and adds four runs.

use std::time::Instant;

use runlog::{RunOptions, Store, ViewType};

fn main() -> runlog::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "runlog-data".to_string());
    let started = Instant::now();
    let store = Store::open(&root)?;
    println!(
        "opened {root} in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let experiment = store.get_or_create_experiment("sweep")?;

    let steps = 20_000i64;
    let learning_rates: [f64; 4] = [0.3, 0.1, 0.03, 0.01];
    let started = Instant::now();
    std::thread::scope(|scope| -> runlog::Result<()> {
        let mut workers = Vec::new();
        for lr in learning_rates {
            let store = &store;
            workers.push(scope.spawn(move || -> runlog::Result<()> {
                let options = RunOptions {
                    name: Some(format!("lr={lr}")),
                    ..RunOptions::default()
                };
                let run = store.start_run(experiment.id, options)?;
                run.log_params(&[
                    ("lr", &lr.to_string()),
                    ("optimizer", "adamw"),
                    ("batch_size", "256"),
                ])?;
                run.set_tag("model", "resnet18")?;
                for step in 0..steps {
                    let t = step as f64 / steps as f64;
                    // Too large a rate plateaus high; too small converges slowly.
                    let floor = 0.05 + (lr - 0.03).abs() * 0.8;
                    let loss = floor + 2.0 * (-t * 30.0 * lr.sqrt()).exp();
                    let noise = ((step * 7919) % 101) as f64 / 101.0 * 0.02;
                    run.log_metrics(
                        step,
                        &[
                            ("train/loss", f64::from((loss + noise) as f32)),
                            ("val/loss", f64::from((loss * 1.1) as f32)),
                            ("val/acc", f64::from((1.0 - loss / 2.2) as f32)),
                        ],
                    )?;
                }
                run.log_artifact_bytes("config.json", format!("{{\"lr\": {lr}}}").as_bytes())?;
                run.finish()
            }));
        }
        for worker in workers {
            worker
                .join()
                .unwrap_or_else(|_| Err(runlog::Error::InvalidInput("worker panicked".into())))?;
        }
        Ok(())
    })?;
    let points = learning_rates.len() as f64 * steps as f64 * 3.0;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "logged {points} points in {:.2} s ({:.1} M points/s)",
        elapsed,
        points / elapsed / 1e6
    );
    store.flush()?;

    let mut runs = store.runs(experiment.id, ViewType::ActiveOnly)?;
    runs.sort_by(|a, b| {
        let loss = |r: &runlog::RunView| {
            r.metrics
                .get("val/loss")
                .map_or(f64::INFINITY, |m| m.last_value)
        };
        loss(a).total_cmp(&loss(b))
    });
    println!(
        "{:<34} {:<10} {:>8} {:>10} {:>10} {:>9}",
        "run", "name", "lr", "val/loss", "min loss", "val/acc"
    );
    for run in runs.iter().take(8) {
        let metric = |key: &str| run.metrics.get(key).copied();
        println!(
            "{:<34} {:<10} {:>8} {:>10.4} {:>10.4} {:>9.4}",
            run.info.id.to_string(),
            run.info.name,
            run.params.get("lr").map_or("-", String::as_str),
            metric("val/loss").map_or(f64::NAN, |m| m.last_value),
            metric("val/loss").map_or(f64::NAN, |m| m.min_value),
            metric("val/acc").map_or(f64::NAN, |m| m.last_value),
        );
    }
    Ok(())
}
