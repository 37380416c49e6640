//! Logs a small simulated hyperparameter sweep into a segment log, crashes one writer the way
//! kill -9 would, reopens (recovery), reads everything back and prints what it found.
//!
//! Run: `cargo run --release --example wal_demo [DIR]` (default: a temporary directory).

use std::time::Instant;

use runlog::wal::{Durability, Event, Log, LogOptions};
use runlog::{ExperimentId, RunId};

fn main() -> runlog::Result<()> {
    let temporary = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temporary.path().to_path_buf(), Into::into);
    let wal = dir.join("wal");
    let options = LogOptions {
        durability: Durability::Buffered,
        ..LogOptions::default()
    };

    let (log, _) = Log::open(&wal, options.clone())?;
    let experiment = ExperimentId(1);
    log.append(&Event::ExperimentCreated {
        experiment,
        time_ms: now(),
        name: "sweep".into(),
    })?;
    let runs = 8u128;
    let steps = 50_000i64;
    let keys = ["train/loss", "train/acc", "lr", "grad_norm"];
    let started = Instant::now();
    std::thread::scope(|scope| {
        for run in 0..runs {
            let log = log.clone();
            scope.spawn(move || -> runlog::Result<()> {
                let lr = 0.001 * (run + 1) as f64;
                log.append(&Event::RunCreated {
                    run: RunId(run),
                    time_ms: now(),
                    experiment,
                    parent: None,
                    name: format!("lr={lr}"),
                })?;
                log.append(&Event::ParamLogged {
                    run: RunId(run),
                    time_ms: now(),
                    key: "lr".into(),
                    value: lr.to_string(),
                })?;
                for step in 0..steps {
                    let t = step as f64 / steps as f64;
                    let loss = (2.0 * (-t * 3.0 * (run + 1) as f64).exp() + 0.05) as f32;
                    let values = [loss, 1.0 - loss / 2.1, lr as f32 * (1.0 - t as f32), 0.5];
                    for (key, value) in keys.iter().zip(values) {
                        log.log_point(RunId(run), key, step, now(), f64::from(value))?;
                    }
                }
                Ok(())
            });
        }
    });
    let elapsed = started.elapsed();
    let points = runs as u64 * steps as u64 * keys.len() as u64;
    println!(
        "logged {points} points from {runs} threads in {:.2} s ({:.1} M points/s, one call each)",
        elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64() / 1e6
    );
    // Simulate kill -9: nothing sealed, nothing synced, locks released.
    log.abandon();

    let started = Instant::now();
    let (log, report) = Log::open(&wal, options)?;
    let mut read_points = 0usize;
    let mut events = 0usize;
    log.read(&mut |_, event| match event {
        Event::Metrics(batch) => read_points += batch.len(),
        _ => events += 1,
    })?;
    println!(
        "reopened after a simulated crash in {:.0} ms: {} writers repaired, {read_points} points \
         and {events} other events read back",
        started.elapsed().as_secs_f64() * 1e3,
        report.repaired.len()
    );
    let bytes: u64 = std::fs::read_dir(&wal)
        .map_err(|e| runlog::Error::InvalidInput(e.to_string()))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "log size {bytes} bytes: {:.2} bytes/point",
        bytes as f64 / read_points as f64
    );
    log.close()
}

fn now() -> i64 {
    runlog::util::now_ms()
}
