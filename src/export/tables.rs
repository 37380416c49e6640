//! The export's tables as Arrow record batches: column names and types exactly as specified in
//! `docs/format/export.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::catalog::{Experiment, RunView};
use crate::error::{Error, Result};
use crate::ids::{ExperimentId, KeyId, RunId, WriterId};
use crate::tracking::Store;
use crate::wal::Event;

/// Everything to write.
pub(super) struct Tables {
    pub experiments: RecordBatch,
    pub partitions: Vec<Partition>,
    pub orphan_points: u64,
    pub orphan_runs: usize,
}

/// The tables of one experiment.
pub(super) struct Partition {
    pub experiment: ExperimentId,
    pub runs: RecordBatch,
    pub params: RecordBatch,
    pub tags: RecordBatch,
    pub metrics: RecordBatch,
    pub summaries: RecordBatch,
}

/// Metric points of one experiment, column by column; run and key as indexes into tables.
#[derive(Default)]
struct Points {
    runs: Vec<u32>,
    keys: Vec<u32>,
    steps: Vec<i64>,
    timestamps_ms: Vec<i64>,
    values: Vec<f64>,
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn optional_utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn optional_int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn float64(name: &str) -> Field {
    Field::new(name, DataType::Float64, false)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::InvalidInput(format!("building an export table: {e}")))
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from(values.into_iter().collect::<Vec<_>>()))
}

fn optional_strings<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from(values.into_iter().collect::<Vec<_>>()))
}

fn integers(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from(values.into_iter().collect::<Vec<_>>()))
}

fn floats(values: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from(values.into_iter().collect::<Vec<_>>()))
}

pub(super) fn collect(store: &Store, experiments: &[Experiment]) -> Result<Tables> {
    let runs = store.catalog().runs(None);
    let run_experiment: HashMap<RunId, ExperimentId> = runs
        .iter()
        .map(|view| (view.info.id, view.info.experiment))
        .collect();
    let LogPoints {
        by_experiment: points,
        keys,
        orphans: orphan_points,
    } = read_points(store, &run_experiment)?;
    let mut by_experiment: BTreeMap<ExperimentId, Vec<&RunView>> = BTreeMap::new();
    for view in &runs {
        by_experiment
            .entry(view.info.experiment)
            .or_default()
            .push(view);
    }
    let mut partitions = Vec::new();
    let mut points = points;
    for experiment in experiments {
        let views = by_experiment.remove(&experiment.id).unwrap_or_default();
        let experiment_points = points.remove(&experiment.id).unwrap_or_default();
        partitions.push(partition(experiment.id, &views, experiment_points, &keys)?);
    }
    // Runs (and their points) whose experiment was never created have nowhere to go.
    let orphan_runs: usize = by_experiment.values().map(Vec::len).sum();
    let orphan_points = orphan_points
        + points
            .values()
            .map(|(_, p)| p.steps.len() as u64)
            .sum::<u64>();
    let experiments = batch(
        vec![
            utf8("experiment_id"),
            utf8("name"),
            utf8("lifecycle_stage"),
            int64("creation_time"),
        ],
        vec![
            strings(
                experiments
                    .iter()
                    .map(|e| e.id.to_string())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            ),
            strings(experiments.iter().map(|e| e.name.as_str())),
            strings(experiments.iter().map(|e| e.lifecycle_stage.as_str())),
            integers(experiments.iter().map(|e| e.creation_time_ms)),
        ],
    )?;
    Ok(Tables {
        experiments,
        partitions,
        orphan_points,
        orphan_runs,
    })
}

/// Every point of the log, grouped by experiment, with the key table they index.
struct LogPoints {
    by_experiment: HashMap<ExperimentId, (Vec<RunId>, Points)>,
    keys: Vec<String>,
    orphans: u64,
}

/// Every point of the store, grouped by experiment: the compacted files' rows, then the log
/// after each writer's watermark, resolving each writer's interned key ids. Keys are interned
/// into one table shared by all experiments. Started over if a compaction deletes what the
/// read chose.
fn read_points(store: &Store, run_experiment: &HashMap<RunId, ExperimentId>) -> Result<LogPoints> {
    crate::compaction::retry_stale(|| read_points_once(store, run_experiment))
}

/// Interns keys and runs while points are gathered.
#[derive(Default)]
struct Gathering {
    key_names: Vec<String>,
    key_index: HashMap<String, u32>,
    out: HashMap<ExperimentId, (Vec<RunId>, Points)>,
    run_slots: HashMap<RunId, u32>,
    orphans: u64,
}

impl Gathering {
    fn key(&mut self, key: &str) -> u32 {
        if let Some(index) = self.key_index.get(key) {
            return *index;
        }
        let index = self.key_names.len() as u32;
        self.key_names.push(key.to_string());
        self.key_index.insert(key.to_string(), index);
        index
    }

    /// The points of `experiment`, and the slot of `run` in its run table.
    fn target(&mut self, experiment: ExperimentId, run: RunId) -> (&mut Points, u32) {
        let (runs, points) = self.out.entry(experiment).or_default();
        let slot = *self.run_slots.entry(run).or_insert_with(|| {
            runs.push(run);
            runs.len() as u32 - 1
        });
        (points, slot)
    }
}

fn read_points_once(
    store: &Store,
    run_experiment: &HashMap<RunId, ExperimentId>,
) -> Result<LogPoints> {
    let root = store.root();
    let manifest = store.manifests().newest(root)?;
    let mut g = Gathering::default();
    for file in &manifest.files {
        for series in &file.series {
            let Some(experiment) = run_experiment.get(&series.run) else {
                g.orphans += series.row_count;
                continue;
            };
            let mut columns = (Vec::new(), Vec::new(), Vec::new());
            let cache = &store.compacted_metadata();
            crate::compaction::read_series(
                root,
                file,
                series,
                crate::compaction::Keep::All,
                &mut columns,
                cache,
            )
            .map_err(|e| crate::compaction::missing_or_stale(root, &manifest, e))?;
            let key = g.key(&series.key);
            let (points, run) = g.target(*experiment, series.run);
            points
                .runs
                .extend(std::iter::repeat_n(run, columns.0.len()));
            points
                .keys
                .extend(std::iter::repeat_n(key, columns.0.len()));
            points.steps.extend(columns.0);
            points.timestamps_ms.extend(columns.1);
            points.values.extend(columns.2);
        }
    }
    // Each writer's key ids, resolved to the shared key table.
    let mut defined: HashMap<(WriterId, RunId, KeyId), u32> = HashMap::new();
    crate::compaction::read_uncompacted(root, &manifest, &mut |writer, event| match event {
        Event::MetricKeyDefined { run, key_id, key } => {
            let index = g.key(&key);
            defined.insert((writer, run, key_id), index);
        }
        Event::Metrics(batch) => {
            let Some(experiment) = run_experiment.get(&batch.run) else {
                g.orphans += batch.len() as u64;
                return;
            };
            let mut orphans = 0;
            let (points, run) = g.target(*experiment, batch.run);
            for i in 0..batch.len() {
                // A key id without its definition cannot occur in a valid log: the writer
                // defines a key before using it, in the same chain.
                let Some(key) = defined.get(&(writer, batch.run, batch.key_ids[i])) else {
                    orphans += 1;
                    continue;
                };
                points.runs.push(run);
                points.keys.push(*key);
                points.steps.push(batch.steps[i]);
                points.timestamps_ms.push(batch.timestamps_ms[i]);
                points.values.push(batch.values[i]);
            }
            g.orphans += orphans;
        }
        _ => {}
    })?;
    crate::compaction::check_still_newest(root, &manifest)?;
    Ok(LogPoints {
        by_experiment: g.out,
        keys: g.key_names,
        orphans: g.orphans,
    })
}

/// Run ids as text, computed once per experiment: every table of it names runs this way.
type RunIdTexts = HashMap<RunId, String>;

fn partition(
    experiment: ExperimentId,
    views: &[&RunView],
    (run_ids, points): (Vec<RunId>, Points),
    keys: &[String],
) -> Result<Partition> {
    let id_text: RunIdTexts = views
        .iter()
        .map(|v| (v.info.id, v.info.id.to_string()))
        .collect();
    Ok(Partition {
        experiment,
        runs: runs_table(views, &id_text)?,
        params: key_value_table(views, &id_text, |v| &v.params)?,
        tags: key_value_table(views, &id_text, |v| &v.tags)?,
        metrics: metrics_table(&id_text, &run_ids, &points, keys)?,
        summaries: summaries_table(views, &id_text)?,
    })
}

/// One row per run: its attributes.
fn runs_table(views: &[&RunView], id_text: &RunIdTexts) -> Result<RecordBatch> {
    let parents: Vec<Option<String>> = views
        .iter()
        .map(|v| v.info.parent.map(|p| p.to_string()))
        .collect();
    batch(
        vec![
            utf8("run_id"),
            utf8("name"),
            utf8("status"),
            int64("start_time"),
            optional_int64("end_time"),
            optional_utf8("parent_run_id"),
            utf8("lifecycle_stage"),
            optional_utf8("user"),
        ],
        vec![
            strings(views.iter().map(|v| id_text[&v.info.id].as_str())),
            strings(views.iter().map(|v| v.info.name.as_str())),
            strings(views.iter().map(|v| v.info.status.as_str())),
            integers(views.iter().map(|v| v.info.start_time_ms)),
            Arc::new(Int64Array::from(
                views.iter().map(|v| v.info.end_time_ms).collect::<Vec<_>>(),
            )),
            optional_strings(parents.iter().map(|p| p.as_deref())),
            strings(views.iter().map(|v| v.info.lifecycle_stage.as_str())),
            optional_strings(views.iter().map(|v| v.info.user.as_deref())),
        ],
    )
}

/// One row per (run, key) of the map `pick` chooses (params or tags).
fn key_value_table(
    views: &[&RunView],
    id_text: &RunIdTexts,
    pick: fn(&RunView) -> &BTreeMap<String, String>,
) -> Result<RecordBatch> {
    let rows: Vec<(&str, &str, &str)> = views
        .iter()
        .flat_map(|v| {
            pick(v)
                .iter()
                .map(move |(k, value)| (id_text[&v.info.id].as_str(), k.as_str(), value.as_str()))
        })
        .collect();
    batch(
        vec![utf8("run_id"), utf8("key"), utf8("value")],
        vec![
            strings(rows.iter().map(|r| r.0)),
            strings(rows.iter().map(|r| r.1)),
            strings(rows.iter().map(|r| r.2)),
        ],
    )
}

/// One row per point, sorted by (run_id, key, step); the sort is stable, so each series keeps
/// its logging order within a step.
fn metrics_table(
    id_text: &RunIdTexts,
    run_ids: &[RunId],
    points: &Points,
    keys: &[String],
) -> Result<RecordBatch> {
    let run_texts: Vec<String> = run_ids
        .iter()
        .map(|run| id_text.get(run).cloned().unwrap_or_else(|| run.to_string()))
        .collect();
    let run_text = |i: &u32| run_texts[points.runs[*i as usize] as usize].as_str();
    let key = |i: &u32| keys[points.keys[*i as usize] as usize].as_str();
    let mut order: Vec<u32> = (0..points.steps.len() as u32).collect();
    order.sort_by(|a, b| {
        run_text(a)
            .cmp(run_text(b))
            .then_with(|| key(a).cmp(key(b)))
            .then(points.steps[*a as usize].cmp(&points.steps[*b as usize]))
    });
    let column = |pick: &dyn Fn(usize) -> i64| integers(order.iter().map(|i| pick(*i as usize)));
    batch(
        vec![
            utf8("run_id"),
            utf8("key"),
            int64("step"),
            int64("timestamp"),
            float64("value"),
        ],
        vec![
            strings(order.iter().map(run_text)),
            strings(order.iter().map(key)),
            column(&|i| points.steps[i]),
            column(&|i| points.timestamps_ms[i]),
            floats(order.iter().map(|i| points.values[*i as usize])),
        ],
    )
}

/// One row per (run, key): the series' summary.
fn summaries_table(views: &[&RunView], id_text: &RunIdTexts) -> Result<RecordBatch> {
    let series: Vec<(&str, &str, &crate::catalog::MetricSummary)> = views
        .iter()
        .flat_map(|v| {
            v.metrics
                .iter()
                .map(move |(k, s)| (id_text[&v.info.id].as_str(), k.as_str(), s))
        })
        .collect();
    batch(
        vec![
            utf8("run_id"),
            utf8("key"),
            int64("count"),
            int64("first_step"),
            int64("last_step"),
            float64("last_value"),
            int64("last_timestamp"),
            float64("min_value"),
            int64("min_step"),
            float64("max_value"),
            int64("max_step"),
        ],
        vec![
            strings(series.iter().map(|s| s.0)),
            strings(series.iter().map(|s| s.1)),
            integers(series.iter().map(|s| s.2.count as i64)),
            integers(series.iter().map(|s| s.2.first_step)),
            integers(series.iter().map(|s| s.2.last_step)),
            floats(series.iter().map(|s| s.2.last_value)),
            integers(series.iter().map(|s| s.2.last_timestamp_ms)),
            floats(series.iter().map(|s| s.2.min_value)),
            integers(series.iter().map(|s| s.2.min_step)),
            floats(series.iter().map(|s| s.2.max_value)),
            integers(series.iter().map(|s| s.2.max_step)),
        ],
    )
}
