//! A dense, column-wise copy of every created run's metadata (ids, attributes, params, tags)
//! for run search. Text columns are dictionary-encoded, so a clause such as
//! `params.lr = '0.01'` is decided once per distinct value and then per run by one array
//! lookup, instead of walking each run's heap-scattered maps under its lock.
//!
//! Metric values are not copied: they change with every point, so search reads them live from
//! each surviving run's entry.
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

/// A dictionary-encoded text column.
#[derive(Debug, Default)]
pub(crate) struct TextColumn {
    /// Distinct values, in first-seen order.
    pub values: Vec<Box<str>>,
    /// Per row: an index into `values`, or [`MISSING`].
    pub codes: Vec<u32>,
    lookup: HashMap<Box<str>, u32, KeyHash>,
}

impl TextColumn {
    /// Sets `row`'s value; rows skipped since the last push stay missing.
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
        self.codes.resize(row, MISSING);
        self.codes.push(code);
    }

    fn finish(&mut self, rows: usize) {
        self.codes.resize(rows, MISSING);
        self.lookup = HashMap::default();
    }

    /// The value of `row`, if it has one.
    pub fn get(&self, row: usize) -> Option<&str> {
        let code = *self.codes.get(row)?;
        self.values.get(code as usize).map(|v| &**v)
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
    pub metric_slots: HashMap<Box<str>, Vec<u32>, KeyHash>,
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
                slots.resize(row, MISSING);
                slots.push(slot as u32);
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
            slots.resize(rows, MISSING);
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
