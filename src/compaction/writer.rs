//! The compactor: sealed segments after each writer's watermark become one sorted Parquet file
//! per experiment; an experiment with too many files has them merged; then the manifest.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::manifest::{self, CompactedFile, Manifest, SeriesRows};
use super::reader::float_values;
use super::{EXPERIMENTS_DIR, FILES_PER_EXPERIMENT_MAX};
use crate::error::{Error, Result};
use crate::export::file::{Layout, write as write_parquet};
use crate::ids::{ExperimentId, RunId};
use crate::tracking::{Store, WAL_DIR};
use crate::wal::Event;
use crate::wal::reader::{self, ReadOptions};
use crate::wal::segment;

const LOCK_FILE: &str = "compaction.lock";

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The manifest generation written (0: nothing to compact).
    pub generation: u64,
    /// Segments compacted.
    pub segments: usize,
    /// Points moved into Parquet.
    pub points: u64,
    /// Files written (new and merged).
    pub files_written: usize,
    /// Files replaced by a merge.
    pub files_merged: usize,
    /// Bytes of the files written.
    pub bytes: u64,
}

/// A point on its way into a file, with its run and key as text (the file's sort order).
struct Row {
    run: String,
    key: String,
    step: i64,
    timestamp_ms: i64,
    value: f64,
}

impl Store {
    /// Compacts every sealed segment, and first seals this handle's own open segments so its
    /// newest points are included.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// let store = runlog::Store::open(dir.path())?;
    /// let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// for step in 0..1000 {
    ///     run.log_metric("loss", 1.0 / (step + 1) as f64, step)?;
    /// }
    /// let report = store.compact()?;
    /// assert_eq!(report.points, 1000);
    /// assert_eq!(store.history(run.id(), "loss", ..)?.len(), 1000); // now from Parquet
    /// # Ok(())
    /// # }
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        if self.inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        let root = self.inner.root.clone();
        let storage = self.inner.options.storage.as_ref();
        let lock_path = root.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open compaction lock", &lock_path, e))?;
        lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
        self.inner.log.close()?;
        self.refresh()?;
        let mut manifest = manifest::load(&root)?;
        // Files a crashed compaction published without a manifest would collide with this
        // generation's names; no manifest lists them, so they go first.
        remove_unlisted(&root, &manifest);
        let generation = manifest.generation + 1;
        let run_experiment: HashMap<RunId, ExperimentId> = self
            .inner
            .catalog
            .runs(None)
            .iter()
            .map(|v| (v.info.id, v.info.experiment))
            .collect();
        let mut report = CompactionReport::default();
        let mut rows: BTreeMap<ExperimentId, Vec<Row>> = BTreeMap::new();
        gather(
            &root,
            &mut manifest,
            &run_experiment,
            &mut rows,
            &mut report,
        )?;
        if report.segments == 0 {
            return Ok(report);
        }
        for (experiment, mut points) in rows {
            sort_rows(&mut points);
            let path = file_path(experiment, &format!("{generation:010}"));
            let (file, bytes) = write_file(&root, &path, experiment, generation, &points, storage)?;
            manifest.files.push(file);
            report.files_written += 1;
            report.bytes += bytes;
        }
        merge_generations(&root, &mut manifest, generation, storage, &mut report)?;
        manifest.generation = generation;
        manifest::store(&root, &manifest, storage)?;
        report.generation = generation;
        remove_unlisted(&root, &manifest);
        drop(lock);
        Ok(report)
    }

    /// The manifest in force.
    pub fn manifest(&self) -> Result<Manifest> {
        manifest::load(&self.inner.root)
    }
}

fn file_path(experiment: ExperimentId, name: &str) -> String {
    format!("{EXPERIMENTS_DIR}/{experiment}/{name}.parquet")
}

/// Reads every compactable segment after each writer's watermark: every segment but a chain's
/// last, and the last too once it is sealed and trimmed. A writer stops before a segment with a
/// point whose run has no known experiment (the run's creation is not readable yet).
fn gather(
    root: &Path,
    manifest: &mut Manifest,
    run_experiment: &HashMap<RunId, ExperimentId>,
    rows: &mut BTreeMap<ExperimentId, Vec<Row>>,
    report: &mut CompactionReport,
) -> Result<()> {
    let wal_dir = root.join(WAL_DIR);
    for (writer, files) in reader::list_writers(&wal_dir)? {
        let mark = manifest.writers.entry(writer).or_default();
        let start = mark.through.map_or(0, |s| s.0 + 1);
        let last = files.segments.last().copied();
        for sequence in files.segments.iter().copied().filter(|s| s.0 >= start) {
            let path = segment::segment_path(&wal_dir, writer, sequence);
            if Some(sequence) == last && !is_sealed(&path)? {
                break;
            }
            let mut keys = mark.keys.clone();
            let mut points: Vec<(ExperimentId, Row)> = Vec::new();
            let mut orphan = false;
            reader::read_chain(
                &wal_dir,
                writer,
                &[sequence],
                ReadOptions::default(),
                &mut |event| match event {
                    Event::MetricKeyDefined { run, key_id, key } => {
                        keys.insert((run, key_id), key);
                    }
                    Event::Metrics(batch) => {
                        let Some(experiment) = run_experiment.get(&batch.run) else {
                            orphan = true;
                            return;
                        };
                        let run = batch.run.to_string();
                        for i in 0..batch.len() {
                            let Some(key) = keys.get(&(batch.run, batch.key_ids[i])) else {
                                orphan = true;
                                continue;
                            };
                            points.push((
                                *experiment,
                                Row {
                                    run: run.clone(),
                                    key: key.clone(),
                                    step: batch.steps[i],
                                    timestamp_ms: batch.timestamps_ms[i],
                                    value: batch.values[i],
                                },
                            ));
                        }
                    }
                    _ => {}
                },
            )?;
            if orphan {
                break;
            }
            report.segments += 1;
            report.points += points.len() as u64;
            for (experiment, row) in points {
                rows.entry(experiment).or_default().push(row);
            }
            mark.keys = keys;
            mark.through = Some(sequence);
        }
    }
    manifest.writers.retain(|_, mark| mark.through.is_some());
    Ok(())
}

fn is_sealed(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    Ok(reader::is_final_and_trimmed(&file, len))
}

/// Sorts by (run, key, step); stable, so a series keeps its logging order within a step.
fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        a.run
            .cmp(&b.run)
            .then_with(|| a.key.cmp(&b.key))
            .then(a.step.cmp(&b.step))
    });
}

fn write_file(
    root: &Path,
    relative: &str,
    experiment: ExperimentId,
    generation: u64,
    rows: &[Row],
    storage: &dyn crate::io::Storage,
) -> Result<(CompactedFile, u64)> {
    // Values of f32 origin are stored as f32: the same numbers (widening is exact), but the
    // byte streams then line up with the f32 bytes and compress far better.
    let narrow = rows
        .iter()
        .all(|r| crate::wal::metric::is_f32_exact(r.value));
    let (value_type, values): (DataType, ArrayRef) = if narrow {
        let values: Vec<f32> = rows.iter().map(|r| r.value as f32).collect();
        (DataType::Float32, Arc::new(Float32Array::from(values)))
    } else {
        let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
        (DataType::Float64, Arc::new(Float64Array::from(values)))
    };
    let schema = Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("step", DataType::Int64, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value", value_type, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.run.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
        )),
        values,
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns)
        .map_err(|e| Error::InvalidInput(format!("building a compacted file: {e}")))?;
    let bytes = write_parquet(
        root,
        &root.join(relative),
        &batch,
        Layout::Compacted,
        storage,
    )?;
    let file = CompactedFile {
        experiment,
        generation,
        path: relative.to_string(),
        rows: rows.len() as u64,
        series: series_index(rows)?,
    };
    Ok((file, bytes))
}

/// The contiguous row range of each (run, key) in sorted rows.
fn series_index(rows: &[Row]) -> Result<Vec<SeriesRows>> {
    let mut series: Vec<SeriesRows> = Vec::new();
    let mut current: Option<(&str, &str)> = None;
    for (index, row) in rows.iter().enumerate() {
        match (current, series.last_mut()) {
            (Some((run, key)), Some(last)) if run == row.run && key == row.key => {
                last.row_count += 1;
                last.last_step = row.step;
            }
            _ => {
                let run = u128::from_str_radix(&row.run, 16)
                    .map_err(|_| Error::InvalidInput(format!("run id {:?} is not hex", row.run)))?;
                series.push(SeriesRows {
                    run: RunId(run),
                    key: row.key.clone(),
                    row_start: index as u64,
                    row_count: 1,
                    first_step: row.step,
                    last_step: row.step,
                });
                current = Some((&row.run, &row.key));
            }
        }
    }
    Ok(series)
}

/// Merges the files of every experiment that has more than `FILES_PER_EXPERIMENT_MAX`.
fn merge_generations(
    root: &Path,
    manifest: &mut Manifest,
    generation: u64,
    storage: &dyn crate::io::Storage,
    report: &mut CompactionReport,
) -> Result<()> {
    let mut counts: BTreeMap<ExperimentId, usize> = BTreeMap::new();
    for file in &manifest.files {
        *counts.entry(file.experiment).or_default() += 1;
    }
    for (experiment, count) in counts {
        if count <= FILES_PER_EXPERIMENT_MAX {
            continue;
        }
        let (old, kept): (Vec<CompactedFile>, Vec<CompactedFile>) =
            std::mem::take(&mut manifest.files)
                .into_iter()
                .partition(|f| f.experiment == experiment);
        manifest.files = kept;
        // Oldest generation first, so each series keeps its logging order within a step.
        let mut rows = Vec::new();
        let mut old = old;
        old.sort_by_key(|f| f.generation);
        for file in &old {
            read_rows(&root.join(&file.path), &mut rows)?;
        }
        sort_rows(&mut rows);
        let path = file_path(experiment, &format!("{generation:010}-merged"));
        let (file, bytes) = write_file(root, &path, experiment, generation, &rows, storage)?;
        manifest.files.push(file);
        report.files_written += 1;
        report.files_merged += old.len();
        report.bytes += bytes;
    }
    Ok(())
}

fn read_rows(path: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::io("read parquet", path, std::io::Error::other(e))
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_error)?
        .build()
        .map_err(parquet_error)?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::io("read parquet", path, std::io::Error::other(e)))?;
        let malformed = || {
            Error::InvalidInput(format!(
                "{} does not have runlog's metric columns",
                path.display()
            ))
        };
        let text = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
        };
        let int = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
        };
        let (Some(runs), Some(keys), Some(steps), Some(timestamps)) =
            (text(0), text(1), int(2), int(3))
        else {
            return Err(malformed());
        };
        let Some(values) = float_values(batch.column(4)) else {
            return Err(malformed());
        };
        for (i, value) in values.into_iter().enumerate() {
            rows.push(Row {
                run: runs.value(i).to_string(),
                key: keys.value(i).to_string(),
                step: steps.value(i),
                timestamp_ms: timestamps.value(i),
                value,
            });
        }
    }
    Ok(())
}

/// Removes compacted files the manifest no longer lists (merged away, or left by a compaction
/// that crashed before its manifest), and manifests older than the previous one. Best effort:
/// a file left behind is only disk space.
fn remove_unlisted(root: &Path, manifest: &Manifest) {
    let listed: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    if let Ok(experiments) = std::fs::read_dir(root.join(EXPERIMENTS_DIR)) {
        for experiment in experiments.flatten() {
            let Ok(files) = std::fs::read_dir(experiment.path()) else {
                continue;
            };
            for file in files.flatten() {
                let relative = format!(
                    "{EXPERIMENTS_DIR}/{}/{}",
                    experiment.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                if !listed.contains(relative.as_str()) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
    }
    for generation in 0..manifest.generation.saturating_sub(1) {
        let _ = std::fs::remove_file(manifest::path(root, generation));
    }
}
