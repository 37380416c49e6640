//! `Store::export`: the store as Hive-partitioned Parquet that DuckDB, Polars, pyarrow and Spark
//! read directly. The layout and every column are a public contract, specified in
//! `docs/format/export.md`:
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
//! Invariants: every logged point of an exported run appears exactly once in `metrics`
//! (repeated steps, NaN and ±inf included), sorted by (run_id, key, step); within a step, points
//! keep their logging order when one writer logged them (points of one step from several
//! threads or processes come in writer order). Every file is published complete (temporary
//! name, fsync, never-replacing link, folder fsync), and `experiments.parquet` is written last,
//! so its presence marks a complete export.
//!
//! The export is not a snapshot: it reads the catalog, then the log, so points logged during an
//! export may be missing from `metric_summaries` or from `metrics`.

mod tables;

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::parquet_file as file;
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
    /// Points left out: of runs whose creation is not in the log or whose experiment is not
    /// (no experiment to file them under), or whose key definition is missing.
    pub orphan_points: u64,
    /// Runs left out because their experiment's creation is not in the log.
    pub orphan_runs: usize,
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
            return Err(Error::InvalidInput(format!(
                "export folder {} is not empty; export into a new or empty folder",
                dir.display()
            )));
        }
        let storage = self.options().storage.as_ref();
        crate::io::create_dirs(dir, storage)?;
        self.refresh()?;
        let mut report = ExportReport::default();
        let experiments = self.catalog().experiments();
        report.experiments = experiments.len();
        let tables = tables::collect(self, &experiments)?;
        report.orphan_points = tables.orphan_points;
        report.orphan_runs = tables.orphan_runs;
        let mut write = |path: PathBuf, batch: &RecordBatch, layout: file::Layout| -> Result<()> {
            report.bytes += file::write(&path, batch, layout, storage)?.bytes;
            report.files.push(path);
            Ok(())
        };
        for partition in &tables.partitions {
            let partition_tables = [
                ("runs", &partition.runs, file::Layout::Plain),
                ("params", &partition.params, file::Layout::Plain),
                ("tags", &partition.tags, file::Layout::Plain),
                ("metrics", &partition.metrics, file::Layout::Metrics),
                (
                    "metric_summaries",
                    &partition.summaries,
                    file::Layout::Plain,
                ),
            ];
            for (table, batch, layout) in partition_tables {
                let folder = dir
                    .join(table)
                    .join(format!("experiment_id={}", partition.experiment));
                write(folder.join("part-0.parquet"), batch, layout)?;
            }
        }
        // Last: its presence marks a complete export.
        write(
            dir.join("experiments.parquet"),
            &tables.experiments,
            file::Layout::Plain,
        )?;
        report.runs = tables.partitions.iter().map(|p| p.runs.num_rows()).sum();
        report.points = tables
            .partitions
            .iter()
            .map(|p| p.metrics.num_rows() as u64)
            .sum();
        Ok(report)
    }
}
