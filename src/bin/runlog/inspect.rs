//! Inspection commands: `experiments`, `runs`, `history`, `compare`, and how a command line
//! names experiments and runs.
//!
//! Invariants:
//! - A run is named by its id or by a name that is unique in the store; an ambiguous name is
//!   refused with the ids it could mean, never resolved by guessing.
//! - An experiment is named by its id or its name; an id wins over a name that looks like it.
//! - `compare --keys` names metrics that exist: an empty or unknown key is an error, not an
//!   empty column.

use std::collections::BTreeSet;
use std::ops::Bound;

use serde_json::Value;

use crate::output::{Table, float, float_or_null, time};
use crate::{Context, Failure, Outcome};
use runlog::query::{Aggregate, RunsPage, SEARCH_RESULTS_MAX, SearchRuns};
use runlog::{Experiment, RunId, Store, ViewType};

#[derive(clap::Args, Debug)]
pub struct ExperimentsArgs {
    /// Include deleted experiments.
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// Experiment name or id.
    experiment: String,
    /// MLflow filter, e.g. "metrics.acc > 0.9 and params.lr = '0.01'".
    #[arg(long, default_value = "")]
    filter: String,
    /// Ordering, e.g. "metrics.acc DESC" (repeatable).
    #[arg(long = "order-by")]
    order_by: Vec<String>,
    /// At most this many runs (at least 1, no upper limit).
    #[arg(long, default_value_t = 1000)]
    max: usize,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Run id or unique run name.
    run: String,
    /// Metric key.
    key: String,
    /// Step range: A..B (B excluded), A.., ..B or A..=B.
    #[arg(long)]
    steps: Option<String>,
    /// Downsample to at most N buckets (min, max and last of each).
    #[arg(long = "max-points")]
    max_points: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Run ids or unique run names.
    #[arg(required = true)]
    runs: Vec<String>,
    /// Metric keys, comma-separated (default: every key of these runs).
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// What to show per (run, key).
    #[arg(long, value_enum, default_value = "last")]
    agg: Agg,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Agg {
    Last,
    Min,
    Max,
    Mean,
    Count,
}

impl Agg {
    fn aggregate(self) -> Aggregate {
        match self {
            Agg::Last => Aggregate::Last,
            Agg::Min => Aggregate::Min,
            Agg::Max => Aggregate::Max,
            Agg::Mean => Aggregate::Mean,
            Agg::Count => Aggregate::Count,
        }
    }
}

pub fn experiments(args: ExperimentsArgs, context: &mut Context) -> Outcome {
    let store = context.open_read_only()?;
    let view = if args.all {
        ViewType::All
    } else {
        ViewType::ActiveOnly
    };
    let mut table = Table::new(["id", "name", "lifecycle_stage", "runs", "creation_time"]);
    let counts = store.run_counts(ViewType::All)?;
    for experiment in store.experiments(view)? {
        let runs = counts.get(&experiment.id).copied().unwrap_or(0);
        table.push(vec![
            Value::from(experiment.id.0),
            Value::from(experiment.name),
            Value::from(experiment.lifecycle_stage.as_str()),
            Value::from(runs),
            time(experiment.creation_time_ms, context.format),
        ]);
    }
    Ok(table.write(&mut context.out, context.format)?)
}

pub fn runs(args: RunsArgs, context: &mut Context) -> Outcome {
    let store = context.open_read_only()?;
    let experiment = resolve_experiment(&store, &args.experiment)?;
    let page = search_pages(
        &store,
        SearchRuns {
            experiments: vec![experiment.id],
            filter: args.filter,
            order_by: args.order_by,
            ..SearchRuns::default()
        },
        args.max,
    )?;
    let metrics: BTreeSet<&String> = page.runs.iter().flat_map(|r| r.metrics.keys()).collect();
    let params: BTreeSet<&String> = page.runs.iter().flat_map(|r| r.params.keys()).collect();
    let mut table = Table::new(
        ["run_id", "name", "status", "start_time"]
            .into_iter()
            .map(String::from)
            .chain(metrics.iter().map(|k| format!("metrics.{k}")))
            .chain(params.iter().map(|k| format!("params.{k}"))),
    );
    for run in &page.runs {
        let mut row = vec![
            Value::from(run.info.id.to_string()),
            Value::from(run.info.name.as_str()),
            Value::from(run.info.status.as_str()),
            time(run.info.start_time_ms, context.format),
        ];
        row.extend(
            metrics
                .iter()
                .map(|k| float_or_null(run.metrics.get(*k).map(|m| m.last_value))),
        );
        row.extend(params.iter().map(|k| {
            run.params
                .get(*k)
                .map_or(Value::Null, |v| Value::from(v.as_str()))
        }));
        table.push(row);
    }
    table.write(&mut context.out, context.format)?;
    if page.next_page_token.is_some() {
        crate::eprintln_quiet(&format!(
            "runlog: more runs match; showing the first {} (raise --max)",
            page.runs.len()
        ));
    }
    Ok(())
}

/// Up to `max` runs of `search`, read in pages of at most the library's page size, so that
/// `--max` has no limit of its own; the page's token is set when more runs match.
fn search_pages(store: &Store, mut search: SearchRuns, max: usize) -> Outcome<RunsPage> {
    if max == 0 {
        return Err(Failure::Message("--max must be at least 1".into()));
    }
    let mut runs = Vec::new();
    loop {
        search.max_results = (max - runs.len()).min(SEARCH_RESULTS_MAX);
        let page = store.search_runs(&search)?;
        runs.extend(page.runs);
        match page.next_page_token {
            Some(token) if runs.len() < max => search.page_token = Some(token),
            next_page_token => {
                return Ok(RunsPage {
                    runs,
                    next_page_token,
                });
            }
        }
    }
}

pub fn history(args: HistoryArgs, context: &mut Context) -> Outcome {
    let store = context.open_read_only()?;
    let run = resolve_run(&store, &args.run)?;
    let steps = match &args.steps {
        Some(text) => parse_steps(text)?,
        None => (Bound::Unbounded, Bound::Unbounded),
    };
    if !store.run(run)?.metrics.contains_key(&args.key) {
        return Err(Failure::Message(format!(
            "run {} has no metric {:?}",
            args.run, args.key
        )));
    }
    let format = context.format;
    match args.max_points {
        Some(max_points) => {
            let downsampled = store.history_downsampled(run, &args.key, steps, max_points)?;
            let mut table = Table::new(["step_start", "step_end", "count", "min", "max", "last"]);
            for bucket in &downsampled.buckets {
                table.push(vec![
                    Value::from(bucket.step_start),
                    Value::from(bucket.step_end),
                    Value::from(bucket.count),
                    float(bucket.min),
                    float(bucket.max),
                    float(bucket.last.value),
                ]);
            }
            table.write(&mut context.out, format)?;
        }
        None => {
            let history = store.history(run, &args.key, steps)?;
            let mut table = Table::new(["step", "timestamp", "value"]);
            table.rows.reserve(history.len());
            for i in 0..history.len() {
                table.push(vec![
                    Value::from(history.steps[i]),
                    time(history.timestamps_ms[i], format),
                    float(history.values[i]),
                ]);
            }
            table.write(&mut context.out, format)?;
        }
    }
    Ok(())
}

pub fn compare(args: CompareArgs, context: &mut Context) -> Outcome {
    let store = context.open_read_only()?;
    let runs: Vec<RunId> = args
        .runs
        .iter()
        .map(|r| resolve_run(&store, r))
        .collect::<Outcome<_>>()?;
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    if keys.iter().any(|key| key.is_empty()) {
        return Err(Failure::Message(format!(
            "--keys {:?} holds an empty key; separate metric keys with single commas",
            keys.join(",")
        )));
    }
    let compared = store.compare(&runs, &keys)?;
    if let Some(unknown) = keys.iter().find(|key| {
        !compared
            .iter()
            .any(|c| c.key == **key && c.summary.is_some())
    }) {
        return Err(Failure::Message(format!(
            "none of the runs given has a metric {unknown:?}"
        )));
    }
    let all_keys: Vec<String> = if keys.is_empty() {
        compared
            .iter()
            .map(|c| c.key.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        args.keys.clone()
    };
    let mut table = Table::new(
        ["run_id", "name"]
            .into_iter()
            .map(String::from)
            .chain(all_keys.iter().cloned()),
    );
    let aggregate = args.agg.aggregate();
    for run in &runs {
        let view = store.run(*run)?;
        let mut row = vec![
            Value::from(run.to_string()),
            Value::from(view.info.name.as_str()),
        ];
        for key in &all_keys {
            let summary = compared
                .iter()
                .find(|c| c.run == *run && &c.key == key)
                .and_then(|c| c.summary);
            row.push(match (summary, args.agg) {
                (None, _) => Value::Null,
                (Some(s), Agg::Count) => Value::from(s.count),
                (Some(s), _) => float(aggregate.of(&s)),
            });
        }
        table.push(row);
    }
    Ok(table.write(&mut context.out, context.format)?)
}

/// An experiment by id, or by name when no experiment has that id. The id wins, as it does
/// for runs: an experiment named with another's id must not shadow it.
pub fn resolve_experiment(store: &Store, text: &str) -> Outcome<Experiment> {
    if let Ok(id) = text.parse::<u64>() {
        match store.experiment(runlog::ExperimentId(id)) {
            Ok(experiment) => return Ok(experiment),
            Err(runlog::Error::NotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    if let Some(experiment) = store.experiment_by_name(text)? {
        return Ok(experiment);
    }
    Err(Failure::Message(format!(
        "no experiment named {text:?} (see `runlog experiments`)"
    )))
}

/// A run by id, or by a name unique across the store.
pub fn resolve_run(store: &Store, text: &str) -> Outcome<RunId> {
    if let Ok(id) = text.parse::<RunId>()
        && store.run(id).is_ok()
    {
        return Ok(id);
    }
    let mut found = Vec::new();
    for experiment in store.experiments(ViewType::All)? {
        for run in store.run_infos(experiment.id, ViewType::All)? {
            if run.name == text {
                found.push((run.id, experiment.name.clone()));
            }
        }
    }
    match found.as_slice() {
        [(id, _)] => Ok(*id),
        [] => Err(Failure::Message(format!("no run with id or name {text:?}"))),
        several => Err(Failure::Message(format!(
            "{} runs are named {text:?}; name one by id: {}",
            several.len(),
            several
                .iter()
                .map(|(id, experiment)| format!("{id} (experiment {experiment})"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `A..B`, `A..=B`, `A..`, `..B` or `..`.
pub fn parse_steps(text: &str) -> Outcome<(Bound<i64>, Bound<i64>)> {
    let bad = || {
        Failure::Message(format!(
            "--steps {text:?}: expected A..B, A..=B, A.. or ..B with integer steps"
        ))
    };
    let (start, end) = text.split_once("..").ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
    let start = match start.trim() {
        "" => Bound::Unbounded,
        s => Bound::Included(number(s)?),
    };
    let end = match end.strip_prefix('=') {
        Some(inclusive) => Bound::Included(number(inclusive)?),
        None if end.trim().is_empty() => Bound::Unbounded,
        None => Bound::Excluded(number(end)?),
    };
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_every_form() {
        use Bound::*;
        assert_eq!(parse_steps("10..20").unwrap(), (Included(10), Excluded(20)));
        assert_eq!(
            parse_steps("10..=20").unwrap(),
            (Included(10), Included(20))
        );
        assert_eq!(parse_steps("-5..").unwrap(), (Included(-5), Unbounded));
        assert_eq!(parse_steps("..7").unwrap(), (Unbounded, Excluded(7)));
        assert_eq!(parse_steps("..").unwrap(), (Unbounded, Unbounded));
        assert!(parse_steps("10").is_err());
        assert!(parse_steps("a..b").is_err());
    }
}
