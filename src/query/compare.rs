//! Comparing runs: last, min, max, mean or count per (run, key), answered from the catalog's
//! summaries without reading history.
//!
//! The answer is column-shaped ([`Comparison`]): the runs and the keys once each, and one
//! summary per (run, key) in a run-major table. Building it takes each run's metric table once,
//! finds each key's slot and copies its summary: no run metadata is copied and no string is
//! allocated per cell, so comparing 100 runs by 8 keys costs 100 table lookups and 800 copies.
//! [`Store::compare`] gives the same cells as one owned row each, for callers that want rows.

use crate::catalog::{Catalog, MetricSummary, MetricTable};
use crate::error::{Error, Result};
use crate::ids::RunId;
use crate::tracking::Store;

/// What to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// The latest value (greatest step, then timestamp).
    Last,
    /// The smallest non-NaN value.
    Min,
    /// The largest non-NaN value.
    Max,
    /// The mean of non-NaN values.
    Mean,
    /// The number of points.
    Count,
}

impl Aggregate {
    /// The aggregate of a series.
    pub fn of(self, summary: &MetricSummary) -> f64 {
        match self {
            Aggregate::Last => summary.last_value,
            Aggregate::Min => summary.min_value,
            Aggregate::Max => summary.max_value,
            Aggregate::Mean => summary.mean(),
            Aggregate::Count => summary.count as f64,
        }
    }
}

/// One cell of a comparison, as an owned row.
#[derive(Clone, Debug, PartialEq)]
pub struct ComparedSeries {
    /// The run.
    pub run: RunId,
    /// The metric key.
    pub key: String,
    /// Its summary; `None` if the run never logged the key.
    pub summary: Option<MetricSummary>,
}

/// The summaries of some keys for some runs: a table with a row per run and a column per key.
///
/// Invariant: `cells.len() == runs.len() * keys.len()`, run-major; a cell whose `count` is 0
/// stands for a series the run never logged (a logged series has at least one point).
#[derive(Clone, Debug)]
pub struct Comparison {
    runs: Vec<RunId>,
    keys: Vec<String>,
    cells: Vec<MetricSummary>,
}

impl PartialEq for Comparison {
    /// The same runs, keys and logged summaries. A cell never logged holds an empty summary,
    /// whose NaN fields would make a table unequal to itself: such cells compare as `None`.
    fn eq(&self, other: &Self) -> bool {
        self.runs == other.runs && self.keys == other.keys && self.iter().eq(other.iter())
    }
}

impl Comparison {
    /// The runs, in the order asked for: row `i` is `runs()[i]`.
    pub fn runs(&self) -> &[RunId] {
        &self.runs
    }

    /// The keys: the ones asked for in that order, or every key of the runs, sorted.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The number of cells (runs × keys).
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The summary of key `keys()[key_index]` in run `runs()[run_index]`; `None` if the run
    /// never logged it or an index is out of range.
    pub fn get(&self, run_index: usize, key_index: usize) -> Option<&MetricSummary> {
        if key_index >= self.keys.len() {
            return None;
        }
        let cell = run_index
            .checked_mul(self.keys.len())?
            .checked_add(key_index)?;
        self.cells.get(cell).filter(|summary| summary.count > 0)
    }

    /// Every cell, run-major: `(run, key, summary)`, the summary `None` where the run never
    /// logged the key. Borrows; allocates nothing.
    pub fn iter(&self) -> impl Iterator<Item = (RunId, &str, Option<&MetricSummary>)> + '_ {
        // A table with no keys has no cells, and `chunks` refuses a size of 0.
        let width = self.keys.len().max(1);
        self.runs
            .iter()
            .zip(self.cells.chunks(width))
            .flat_map(move |(run, row)| {
                self.keys.iter().zip(row).map(move |(key, summary)| {
                    (*run, key.as_str(), Some(summary).filter(|s| s.count > 0))
                })
            })
    }
}

impl Store {
    /// The summaries of `keys` (every key of those runs if empty) for each of `runs`, in the
    /// order given, as a table; `NotFound` for an unknown run.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// let store = runlog::Store::open(dir.path())?;
    /// let experiment = store.get_or_create_experiment("e")?;
    /// let run = store.start_run(experiment.id, Default::default())?;
    /// run.log_metric("loss", 0.5, 1)?;
    /// let table = store.compare_table(&[run.id()], &["loss", "acc"])?;
    /// assert_eq!(table.get(0, 0).map(|s| s.last_value), Some(0.5));
    /// assert_eq!(table.get(0, 1), None); // never logged
    /// # Ok(())
    /// # }
    /// ```
    pub fn compare_table(&self, runs: &[RunId], keys: &[&str]) -> Result<Comparison> {
        self.refresh_if_stale()?;
        let catalog = self.catalog();
        let mut entries = Vec::with_capacity(runs.len());
        for id in runs {
            let lookup = || catalog.run_entry(*id).filter(|entry| entry.is_created());
            // A miss refreshes once more, so a run another handle just created is found.
            let entry = match lookup() {
                Some(entry) => Some(entry),
                None => self.lookup_fresh(lookup)?,
            };
            entries.push(entry.ok_or_else(|| Error::NotFound(format!("run {id}")))?);
        }
        let keys: Vec<String> = if keys.is_empty() {
            every_key(catalog, &entries)
        } else {
            keys.iter().map(|key| (*key).to_owned()).collect()
        };
        let mut cells = Vec::with_capacity(entries.len().saturating_mul(keys.len()));
        for entry in &entries {
            let metrics = catalog.metrics(entry);
            cells.extend(keys.iter().map(|key| summary_of(&metrics, key)));
        }
        Ok(Comparison {
            runs: runs.to_vec(),
            keys,
            cells,
        })
    }

    /// The cells of [`Store::compare_table`] as owned rows, run-major.
    pub fn compare(&self, runs: &[RunId], keys: &[&str]) -> Result<Vec<ComparedSeries>> {
        let table = self.compare_table(runs, keys)?;
        Ok(table
            .iter()
            .map(|(run, key, summary)| ComparedSeries {
                run,
                key: key.to_owned(),
                summary: summary.copied(),
            })
            .collect())
    }
}

/// The summary of `key` in `metrics`, empty if it has no points there.
fn summary_of(metrics: &MetricTable, key: &str) -> MetricSummary {
    metrics
        .slot(key)
        .map_or(MetricSummary::EMPTY, |slot| metrics.summary(slot))
}

/// Every key with points in any of `entries`' runs, sorted, once each.
fn every_key(
    catalog: &Catalog,
    entries: &[std::sync::Arc<crate::catalog::RunEntry>],
) -> Vec<String> {
    let mut all = Vec::new();
    for entry in entries {
        let metrics = catalog.metrics(entry);
        for (slot, key) in metrics.keys().iter().enumerate() {
            if metrics.summary(slot).count > 0 {
                all.push(key.to_string());
            }
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, RunOptions, StoreOptions};

    /// Every cell agrees with the run's own view ([`Store::run`]), before and after a
    /// compaction (whose summaries runs adopt on first read), with keys given and with every
    /// key asked for.
    #[test]
    fn the_table_agrees_with_each_runs_view() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let options = StoreOptions {
            durability: Durability::Buffered,
            ..StoreOptions::default()
        };
        let store = Store::open_with(dir.path(), options)?;
        let experiment = store.get_or_create_experiment("compare")?;
        let mut runs = Vec::new();
        for (index, keys) in [&["loss", "acc"][..], &["acc"], &[]].iter().enumerate() {
            let run = store.start_run(experiment.id, RunOptions::default())?;
            for (k, key) in keys.iter().enumerate() {
                for step in 0..3 {
                    run.log_metric(key, (index * 10 + k + step) as f64, step as i64)?;
                }
            }
            runs.push(run.id());
            run.finish()?;
        }
        let check = |store: &Store, keys: &[&str]| -> Result<()> {
            let table = store.compare_table(&runs, keys)?;
            let wanted: Vec<&str> = if keys.is_empty() {
                vec!["acc", "loss"]
            } else {
                keys.to_vec()
            };
            assert_eq!(table.keys(), &wanted[..]);
            assert_eq!(table.runs(), &runs[..]);
            assert_eq!(table.len(), runs.len() * wanted.len());
            let rows = store.compare(&runs, keys)?;
            assert_eq!(rows.len(), table.len());
            for (run_index, run) in runs.iter().enumerate() {
                let view = store.run(*run)?;
                for (key_index, key) in wanted.iter().enumerate() {
                    let cell = table.get(run_index, key_index);
                    assert_eq!(cell, view.metrics.get(*key), "run {run} key {key}");
                    let row = &rows[run_index * wanted.len() + key_index];
                    assert_eq!((row.run, row.key.as_str()), (*run, *key));
                    assert_eq!(row.summary.as_ref(), cell);
                }
            }
            assert_eq!(table, table.clone(), "cells never logged compare equal");
            assert_eq!(table.get(runs.len(), 0), None);
            assert_eq!(table.get(0, wanted.len()), None);
            Ok(())
        };
        check(&store, &["loss", "acc", "never"])?;
        check(&store, &[])?;
        store.compact()?;
        check(&store, &[])?;
        // A new handle holds nothing of its own: every summary is adopted from the manifest.
        let reopened = Store::open(dir.path())?;
        check(&reopened, &["acc", "loss"])?;
        assert_eq!(
            reopened.compare_table(&runs, &["acc", "loss", "never"])?,
            store.compare_table(&runs, &["acc", "loss", "never"])?
        );
        assert!(matches!(
            store.compare_table(&[RunId(u128::MAX)], &[]),
            Err(Error::NotFound(_))
        ));
        Ok(())
    }
}
