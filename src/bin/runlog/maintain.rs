//! Maintenance commands: `compact`, `export`, `verify`, `stats`.
//!
//! Invariant: `verify` changes nothing and opens no handle (it must be safe on a damaged store
//! and beside writers); `stats` opens the store read-only.

use std::path::{Path, PathBuf};
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
    let (wal_files, wal_bytes) = disk_usage(&root.join(runlog::tracking::WAL_DIR))?;
    let (compacted_files, compacted_bytes) =
        disk_usage(&root.join(runlog::compaction::EXPERIMENTS_DIR))?;
    let compacted_points: u64 = runlog::compaction::manifest::load(&root)?
        .files
        .iter()
        .map(|f| f.rows)
        .sum();
    // The log also holds metadata and segments not yet deleted, so its bytes per point is an
    // upper bound on what a point costs there.
    let wal_points = points.saturating_sub(compacted_points);
    let per_point = |bytes: u64, points: u64| {
        if points == 0 {
            Value::Null
        } else {
            Value::from(round3(bytes as f64 / points as f64))
        }
    };
    let mut table = Table::new(["stat", "value"]);
    let rows: [(&str, Value); 14] = [
        ("experiments", Value::from(experiments)),
        ("runs", Value::from(runs)),
        ("series", Value::from(series)),
        ("points", Value::from(points)),
        ("points_in_wal", Value::from(wal_points)),
        ("points_compacted", Value::from(compacted_points)),
        ("wal_files", Value::from(wal_files)),
        ("wal_bytes", Value::from(wal_bytes)),
        ("compacted_files", Value::from(compacted_files)),
        ("compacted_bytes", Value::from(compacted_bytes)),
        (
            "bytes_per_point",
            per_point(wal_bytes + compacted_bytes, points),
        ),
        ("wal_bytes_per_wal_point", per_point(wal_bytes, wal_points)),
        (
            "compacted_bytes_per_compacted_point",
            per_point(compacted_bytes, compacted_points),
        ),
        (
            "manifest_generation",
            Value::from(runlog::compaction::manifest::newest_generation(&root)?),
        ),
    ];
    for (name, value) in rows {
        table.push(vec![Value::from(name), value]);
    }
    Ok(table.write(&mut context.out, context.format)?)
}

/// Files and bytes under `dir` (0, 0 if it does not exist).
fn disk_usage(dir: &Path) -> Outcome<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(error) => return Err(Failure::Message(format!("list {}: {error}", dir.display()))),
    };
    for entry in entries {
        let entry = entry?;
        let metadata = entry.metadata()?;
        if metadata.is_dir() {
            let (f, b) = disk_usage(&entry.path())?;
            files += f;
            bytes += b;
        } else {
            files += 1;
            bytes += metadata.len();
        }
    }
    Ok((files, bytes))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
