//! `Store::export`: the store as Hive-partitioned Parquet that DuckDB, Polars, pyarrow and Spark
//! read directly. The layout and every column are a public contract, specified in
//! `docs/FORMAT.md` ("Parquet export"):
//!
//! ```text
//! <dir>/experiments.parquet
//! <dir>/runs/experiment_id=<id>/part-0.parquet
//! <dir>/params/experiment_id=<id>/part-0.parquet
//! <dir>/tags/experiment_id=<id>/part-0.parquet
//! <dir>/metrics/experiment_id=<id>/part-0.parquet
//! <dir>/metric_summaries/experiment_id=<id>/part-0.parquet
//! ```
//!
//! Invariants: every logged point appears exactly once in `metrics` (repeated steps, NaN and
//! ±inf included), sorted by (run_id, key, step) with each series' logging order kept within a
//! step; every file is published complete (temporary name, fsync, rename, folder fsync).

mod file;
mod tables;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tracking::Store;

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Experiments exported.
    pub experiments: usize,
    /// Runs exported.
    pub runs: usize,
    /// Metric points exported.
    pub points: u64,
    /// Points of runs whose creation is not in the log (so no experiment to file them under);
    /// left out.
    pub orphan_points: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Their total size.
    pub bytes: u64,
}

impl Store {
    /// Writes the store to `dir` (which must be missing or empty) as Hive-partitioned Parquet.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// let store = runlog::Store::open(dir.path().join("store"))?;
    /// let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// run.log_metric("loss", 0.5, 1)?;
    /// run.finish()?;
    /// let report = store.export(dir.path().join("export"))?;
    /// assert_eq!(report.points, 1);
    /// assert!(dir.path().join("export/experiments.parquet").exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn export(&self, dir: impl AsRef<Path>) -> Result<ExportReport> {
        let dir = dir.as_ref();
        let occupied = std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if occupied {
            return Err(Error::AlreadyExists(format!(
                "{} is not empty; export into a new or empty folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create export folder", dir, e))?;
        self.refresh()?;
        let storage = self.inner.options.storage.as_ref();
        let mut report = ExportReport::default();
        let experiments = self.inner.catalog.experiments();
        report.experiments = experiments.len();
        let tables = tables::collect(self, &experiments)?;
        report.orphan_points = tables.orphan_points;
        let mut write =
            |path: PathBuf, batch: &arrow_array::RecordBatch, layout: file::Layout| -> Result<()> {
                report.bytes += file::write(&path, batch, layout, storage)?;
                report.files.push(path);
                Ok(())
            };
        write(
            dir.join("experiments.parquet"),
            &tables.experiments,
            file::Layout::Plain,
        )?;
        for partition in &tables.partitions {
            let folder = |table: &str| {
                dir.join(table)
                    .join(format!("experiment_id={}", partition.experiment))
            };
            report.runs += partition.runs.num_rows();
            report.points += partition.metrics.num_rows() as u64;
            write(
                folder("runs").join("part-0.parquet"),
                &partition.runs,
                file::Layout::Plain,
            )?;
            write(
                folder("params").join("part-0.parquet"),
                &partition.params,
                file::Layout::Plain,
            )?;
            write(
                folder("tags").join("part-0.parquet"),
                &partition.tags,
                file::Layout::Plain,
            )?;
            write(
                folder("metrics").join("part-0.parquet"),
                &partition.metrics,
                file::Layout::Metrics,
            )?;
            write(
                folder("metric_summaries").join("part-0.parquet"),
                &partition.summaries,
                file::Layout::Plain,
            )?;
        }
        Ok(report)
    }
}
