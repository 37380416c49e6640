//! Comparing runs: last, min, max, mean or count per (run, key), answered from the catalog's
//! summaries without reading history.

use crate::catalog::MetricSummary;
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

/// One cell of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct ComparedSeries {
    /// The run.
    pub run: RunId,
    /// The metric key.
    pub key: String,
    /// Its summary; `None` if the run never logged the key.
    pub summary: Option<MetricSummary>,
}

impl Store {
    /// The summaries of `keys` (every key of those runs if empty) for each of `runs`, in the
    /// order given; `NotFound` for an unknown run.
    pub fn compare(&self, runs: &[RunId], keys: &[&str]) -> Result<Vec<ComparedSeries>> {
        let mut rows = Vec::new();
        let views = runs
            .iter()
            .map(|id| {
                let view = self.lookup_fresh(|| {
                    self.catalog()
                        .run_entry(*id)
                        .and_then(|e| e.view(self.catalog()))
                })?;
                view.ok_or_else(|| Error::NotFound(format!("run {id}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let all_keys: Vec<String> = if keys.is_empty() {
            let mut all: Vec<String> = views
                .iter()
                .flat_map(|v| v.metrics.keys().cloned())
                .collect();
            all.sort();
            all.dedup();
            all
        } else {
            keys.iter().map(|k| k.to_string()).collect()
        };
        for view in &views {
            for key in &all_keys {
                rows.push(ComparedSeries {
                    run: view.info.id,
                    key: key.clone(),
                    summary: view.metrics.get(key).copied(),
                });
            }
        }
        Ok(rows)
    }
}
