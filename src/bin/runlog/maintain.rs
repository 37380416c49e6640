//! Maintenance commands: `compact`, `export`, `verify`, `stats`.
//!
//! Invariant: `verify` changes nothing and opens no handle (it must be safe on a damaged store
//! and beside writers); `stats` opens the store read-only.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;

use crate::output::{Format, Table};
use crate::{Context, Failure, Outcome};
use runlog::ViewType;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Directory to write the tables into (created; must be empty or absent).
    dir: PathBuf,
}

pub fn compact(context: &mut Context) -> Outcome {
    context.require_store()?;
    let store = context.open_writable()?;
    let spinner = context.progress(1, "compact");
    let started = Instant::now();
    let report = store.compact()?;
    spinner.finish_and_clear();
    let mut table = Table::new([
        "generation",
        "segments",
        "points",
        "files_written",
        "bytes",
        "segments_deleted",
        "seconds",
    ]);
    table.push(vec![
        Value::from(report.generation),
        Value::from(report.segments),
        Value::from(report.points),
        Value::from(report.files_written),
        Value::from(report.bytes),
        Value::from(report.segments_deleted),
        Value::from(round3(started.elapsed().as_secs_f64())),
    ]);
    Ok(table.write(&mut context.out, context.format)?)
}

pub fn export(args: ExportArgs, context: &mut Context) -> Outcome {
    let store = context.open_read_only()?;
    let spinner = context.progress(1, "export");
    let started = Instant::now();
    let report = store.export(&args.dir)?;
    spinner.finish_and_clear();
    let mut table = Table::new(["dir", "experiments", "runs", "points", "seconds"]);
    table.push(vec![
        Value::from(args.dir.display().to_string()),
        Value::from(report.experiments),
        Value::from(report.runs),
        Value::from(report.points),
        Value::from(round3(started.elapsed().as_secs_f64())),
    ]);
    Ok(table.write(&mut context.out, context.format)?)
}

pub fn verify(context: &mut Context) -> Outcome {
    let root = context.require_store()?.to_path_buf();
    let report = runlog::verify::verify(&root)?;
    let mut table = Table::new(["severity", "file", "offset", "finding"]);
    for (severity, findings) in [("problem", &report.problems), ("note", &report.notes)] {
        for finding in findings {
            table.push(vec![
                Value::from(severity),
                Value::from(finding.path.display().to_string()),
                finding.offset.map_or(Value::Null, Value::from),
                Value::from(finding.message.as_str()),
            ]);
        }
    }
    if context.format != Format::Table || !table.rows.is_empty() {
        table.write(&mut context.out, context.format)?;
    }
    let summary = format!(
        "{} segments ({} bytes, {} records), {} compacted files: {} problems, {} notes",
        report.segments,
        report.segment_bytes,
        report.records,
        report.compacted_files,
        report.problems.len(),
        report.notes.len()
    );
    if report.is_ok() {
        crate::eprintln_quiet(&format!("runlog: verify: ok: {summary}"));
        Ok(())
    } else {
        Err(Failure::Message(format!("verify failed: {summary}")))
    }
}

pub fn stats(context: &mut Context) -> Outcome {
    let store = context.open_read_only()?;
    let root = store.root().to_path_buf();
    let (mut experiments, mut runs, mut series, mut points) = (0u64, 0u64, 0u64, 0u64);
    for experiment in store.experiments(ViewType::All)? {
        experiments += 1;
        for run in store.runs(experiment.id, ViewType::All)? {
            runs += 1;
            series += run.metrics.len() as u64;
            points += run.metrics.values().map(|m| m.count).sum::<u64>();
        }
    }
    let usage = runlog::tracking::disk_usage(&root)?;
    let manifest = store.manifest()?;
    let compacted_points: u64 = manifest.files.iter().map(|f| f.rows).sum();
    let wal_points = points.saturating_sub(compacted_points);
    let mut rows: Vec<(String, Value)> = vec![
        ("experiments".into(), Value::from(experiments)),
        ("runs".into(), Value::from(runs)),
        ("series".into(), Value::from(series)),
        ("points".into(), Value::from(points)),
        ("points_in_wal".into(), Value::from(wal_points)),
        ("points_compacted".into(), Value::from(compacted_points)),
    ];
    let total = usage.total();
    for (kind, counted) in [
        ("segment", usage.segments),
        ("metadata_chain", usage.metadata_chains),
        ("manifest", usage.manifests),
        ("parquet", usage.parquet),
        ("artifact", usage.artifacts),
        ("other", usage.other),
        ("total", total),
    ] {
        rows.push((format!("{kind}_files"), Value::from(counted.files)));
        rows.push((format!("{kind}_bytes"), Value::from(counted.bytes)));
    }
    // Every byte of the store over every point: what a point really costs, manifests,
    // metadata and not yet deleted segments included.
    rows.push(("bytes_per_point".into(), ratio(total.bytes, points)));
    rows.push((
        "segment_bytes_per_wal_point".into(),
        ratio(usage.segments.bytes, wal_points),
    ));
    rows.push((
        "parquet_bytes_per_compacted_point".into(),
        ratio(usage.parquet.bytes, compacted_points),
    ));
    rows.push((
        "manifest_bytes_per_series".into(),
        ratio(usage.manifests.bytes, series),
    ));
    rows.push((
        "manifest_generation".into(),
        Value::from(manifest.generation),
    ));
    let mut table = Table::new(["stat", "value"]);
    for (name, value) in rows {
        table.push(vec![Value::from(name), value]);
    }
    Ok(table.write(&mut context.out, context.format)?)
}

/// `bytes` per item, to 3 decimals; null when there is no item.
fn ratio(bytes: u64, count: u64) -> Value {
    if count == 0 {
        Value::Null
    } else {
        Value::from(round3(bytes as f64 / count as f64))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
