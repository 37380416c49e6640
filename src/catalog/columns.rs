//! A column-wise copy of every created run's metadata (ids, attributes, params, tags)
//! for run search. Text columns are dictionary-encoded, so a clause such as
//! `params.lr = '0.01'` is decided once per distinct value and then per run by one array
//! lookup, instead of walking each run's heap-scattered maps under its lock.
//!
//! Metric values are not copied: they change with every point, so search reads them live from
//! each surviving run's entry.
//!
//! A key set on few runs keeps its rows sparse (row and code pairs): a dense column per key
//! would cost every key a word per run, and a store whose runs each log their own keys (a
//! key per trial, a step number in a name) would then need keys × runs words. A column is
//! dense only when at least one run in [`DENSE_RUNS_PER_SET`] sets it, so the columns take at
//! most a few words per value actually set, whatever the keys.
//!
//! Invariant: a snapshot tagged with epoch `E` holds every metadata change applied before the
//! catalog's epoch became `E`. `Catalog::with_run` bumps the epoch after each change, and a
//! snapshot reads the epoch before it reads any run, so a snapshot whose epoch still matches
//! is current. A change racing a build makes the build newer than its tag, never older: the
//! next search just rebuilds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Catalog, LifecycleStage, RunEntry, lock, read, write};
use crate::ids::{ExperimentId, RunId};
use crate::util::KeyHash;
use crate::wal::RunStatus;

/// The code of a row without a value.
pub(crate) const MISSING: u32 = u32::MAX;

/// A column is kept dense when at least one run in this many sets it; sparser ones keep their
/// set rows only.
const DENSE_RUNS_PER_SET: usize = 16;

/// Per-row codes of a column (a dictionary code, or a slot), for every row or for the rows that
/// have one.
#[derive(Debug)]
pub(crate) enum Codes {
    /// One code per row, [`MISSING`] where unset.
    Dense(Vec<u32>),
    /// (row, code) for each set row, in row order.
    Sparse(Vec<(u32, u32)>),
}

impl Default for Codes {
    fn default() -> Codes {
        Codes::Sparse(Vec::new())
    }
}

impl Codes {
    /// Records `row`'s code while building; rows arrive in ascending order.
    fn push(&mut self, row: usize, code: u32) {
        // Built sparse, made dense (or not) by `finish`; row numbers fit in u32 (see
        // `TextColumn::set`).
        if let Codes::Sparse(pairs) = self {
            pairs.push((row as u32, code));
        }
    }

    /// Chooses the layout once every row is known.
    fn finish(&mut self, rows: usize) {
        let Codes::Sparse(pairs) = self else {
            return;
        };
        if pairs.len().saturating_mul(DENSE_RUNS_PER_SET) >= rows {
            let mut dense = vec![MISSING; rows];
            for &(row, code) in pairs.iter() {
                if let Some(cell) = dense.get_mut(row as usize) {
                    *cell = code;
                }
            }
            *self = Codes::Dense(dense);
        } else {
            pairs.shrink_to_fit();
        }
    }

    /// The code of `row`, or [`MISSING`].
    #[inline]
    pub fn get(&self, row: usize) -> u32 {
        match self {
            Codes::Dense(codes) => codes.get(row).copied().unwrap_or(MISSING),
            Codes::Sparse(pairs) => match pairs.binary_search_by_key(&row, |&(r, _)| r as usize) {
                Ok(at) => pairs[at].1,
                Err(_) => MISSING,
            },
        }
    }
}

/// A dictionary-encoded text column.
#[derive(Debug, Default)]
pub(crate) struct TextColumn {
    /// Distinct values, in first-seen order.
    pub values: Vec<Box<str>>,
    /// Per row: an index into `values`, or [`MISSING`].
    pub codes: Codes,
    lookup: HashMap<Box<str>, u32, KeyHash>,
}

impl TextColumn {
    /// Sets `row`'s value; rows arrive in ascending order, and rows skipped stay missing.
    fn set(&mut self, row: usize, value: &str) {
        let code = match self.lookup.get(value) {
            Some(code) => *code,
            None => {
                // Codes stay below MISSING: a column has at most one value per run, and a
                // catalog holds far fewer than 2^32 runs.
                let code = self.values.len() as u32;
                self.values.push(value.into());
                self.lookup.insert(value.into(), code);
                code
            }
        };
        self.codes.push(row, code);
    }

    fn finish(&mut self, rows: usize) {
        self.codes.finish(rows);
        self.lookup = HashMap::default();
    }

    /// The value of `row`, if it has one.
    pub fn get(&self, row: usize) -> Option<&str> {
        self.values.get(self.codes.get(row) as usize).map(|v| &**v)
    }
}

/// Every created run's metadata, one row per run.
#[derive(Debug)]
pub(crate) struct RunColumns {
    epoch: u64,
    pub entries: Vec<Arc<RunEntry>>,
    pub ids: Vec<RunId>,
    pub experiments: Vec<ExperimentId>,
    pub stages: Vec<LifecycleStage>,
    pub start_times_ms: Vec<i64>,
    pub end_times_ms: Vec<Option<i64>>,
    pub statuses: Vec<RunStatus>,
    /// Run names ("" when unnamed).
    pub names: TextColumn,
    /// The `mlflow.user` tag ("" when unset), MLflow's `attributes.user_id`.
    pub users: TextColumn,
    pub params: HashMap<Box<str>, TextColumn, KeyHash>,
    pub tags: HashMap<Box<str>, TextColumn, KeyHash>,
    /// Per metric key, each row's slot in its run's `MetricTable` ([`MISSING`] if the run had
    /// no such series when this was built). Slots are never reassigned, so a recorded slot
    /// stays right; a series created since is found through the table's index.
    pub metric_slots: HashMap<Box<str>, Codes, KeyHash>,
    /// Rows in search's default order: start time descending, then run id.
    by_start: Vec<u32>,
}

impl RunColumns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Every row, in search's default order: start time descending, then run id.
    pub fn by_start(&self) -> &[u32] {
        &self.by_start
    }

    fn build(epoch: u64, entries: Vec<Arc<RunEntry>>) -> RunColumns {
        let mut columns = RunColumns {
            epoch,
            entries: Vec::with_capacity(entries.len()),
            ids: Vec::with_capacity(entries.len()),
            experiments: Vec::with_capacity(entries.len()),
            stages: Vec::with_capacity(entries.len()),
            start_times_ms: Vec::with_capacity(entries.len()),
            end_times_ms: Vec::with_capacity(entries.len()),
            statuses: Vec::with_capacity(entries.len()),
            names: TextColumn::default(),
            users: TextColumn::default(),
            params: HashMap::default(),
            tags: HashMap::default(),
            metric_slots: HashMap::default(),
            by_start: Vec::new(),
        };
        for entry in entries {
            let meta = read(&entry.meta);
            let Some(created) = meta.created else {
                continue;
            };
            let row = columns.ids.len();
            let (status, end_time_ms) = meta
                .status
                .as_ref()
                .map_or((RunStatus::Running, None), |s| s.value);
            columns.ids.push(entry.id);
            columns.experiments.push(created.experiment);
            columns.stages.push(
                meta.lifecycle
                    .as_ref()
                    .map_or(LifecycleStage::Active, |l| l.value),
            );
            columns.start_times_ms.push(created.start_time_ms);
            columns.end_times_ms.push(end_time_ms);
            columns.statuses.push(status);
            columns
                .names
                .set(row, meta.name.as_ref().map_or("", |n| n.value.as_str()));
            let mut user = "";
            for (key, param) in &meta.params {
                column(&mut columns.params, key).set(row, &param.value);
            }
            for (key, tag) in &meta.tags {
                if let Some(value) = &tag.value {
                    column(&mut columns.tags, key).set(row, value);
                    if key == "mlflow.user" {
                        user = value;
                    }
                }
            }
            columns.users.set(row, user);
            drop(meta);
            let metrics = lock(&entry.metrics);
            for (slot, key) in metrics.keys().iter().enumerate() {
                let slots = columns.metric_slots.entry(key.clone()).or_default();
                slots.push(row, slot as u32);
            }
            drop(metrics);
            columns.entries.push(entry);
        }
        let rows = columns.len();
        for text in [&mut columns.names, &mut columns.users]
            .into_iter()
            .chain(columns.params.values_mut())
            .chain(columns.tags.values_mut())
        {
            text.finish(rows);
        }
        for slots in columns.metric_slots.values_mut() {
            slots.finish(rows);
        }
        // Row numbers fit in u32: see `TextColumn::set`.
        let mut by_start: Vec<u32> = (0..rows as u32).collect();
        by_start.sort_unstable_by(|a, b| {
            let (a, b) = (*a as usize, *b as usize);
            (columns.start_times_ms[b].cmp(&columns.start_times_ms[a]))
                .then(columns.ids[a].cmp(&columns.ids[b]))
        });
        columns.by_start = by_start;
        columns
    }
}

fn column<'a>(
    columns: &'a mut HashMap<Box<str>, TextColumn, KeyHash>,
    key: &str,
) -> &'a mut TextColumn {
    columns.entry(key.into()).or_default()
}

impl Catalog {
    /// The run columns as of now: the cached snapshot if no run's metadata changed since it was
    /// built, else a new one.
    pub fn run_columns(&self) -> Arc<RunColumns> {
        let epoch = self.meta_epoch.load(Ordering::Acquire);
        if let Some(columns) = read(&self.columns).as_ref().filter(|c| c.epoch == epoch) {
            return Arc::clone(columns);
        }
        // One build at a time: searches that find the snapshot stale wait for it rather than
        // each building their own.
        let mut cached = write(&self.columns);
        let epoch = self.meta_epoch.load(Ordering::Acquire);
        if let Some(columns) = cached.as_ref().filter(|c| c.epoch == epoch) {
            return Arc::clone(columns);
        }
        let columns = Arc::new(RunColumns::build(epoch, self.run_entries()));
        *cached = Some(Arc::clone(&columns));
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column set on few rows stays sparse, one set on many becomes dense, and both answer
    /// every row alike.
    #[test]
    fn sparse_and_dense_codes_answer_alike() {
        let rows = 1_000;
        for every in [1, 7, DENSE_RUNS_PER_SET, DENSE_RUNS_PER_SET + 1, 400, 2_000] {
            let mut column = TextColumn::default();
            for row in (3..rows).step_by(every) {
                column.set(row, if row % 2 == 0 { "even" } else { "odd" });
            }
            column.finish(rows);
            let set = (3..rows).step_by(every).count();
            assert_eq!(
                matches!(column.codes, Codes::Dense(_)),
                set * DENSE_RUNS_PER_SET >= rows,
                "every {every}"
            );
            for row in 0..rows + 2 {
                let expected = (row < rows && row >= 3 && (row - 3) % every == 0)
                    .then_some(if row % 2 == 0 { "even" } else { "odd" });
                assert_eq!(column.get(row), expected, "every {every}, row {row}");
            }
        }
    }
}
