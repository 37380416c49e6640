//! `runlog ingest`: JSON Lines of events into the store (schema in `docs/CLI.md`).
//!
//! Input is read in blocks of whole lines. Each block's lines are parsed and validated in
//! parallel (rayon), then applied in input order on one thread, so every run's points keep
//! their order.
//!
//! Invariants:
//! - A line is written whole or not at all: everything that can be refused (fields, keys,
//!   values, statuses) is checked while parsing, before anything of the line is appended.
//! - A bad line is reported with its 1-based line number. With `--on-error stop` (the default)
//!   nothing after it is applied; what came before is flushed and stays.
//! - `run` names a run within its experiment, created at its first mention in this input;
//!   `run_id` names a run that already exists. Runs are left as their lines leave them: a run
//!   without a `status` line stays RUNNING.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::output::Table;
use crate::{Context, Failure, Outcome};
use runlog::tracking::validation;
use runlog::wal::writer::{FastHash, now_ms};
use runlog::{Durability, ExperimentId, Run, RunId, RunOptions, RunStatus, Store, StoreOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON Lines file; `-` or nothing reads stdin.
    file: Option<PathBuf>,
    /// On a bad line: stop there (exit 1), or report it and go on.
    #[arg(long = "on-error", value_enum, default_value = "stop")]
    on_error: OnError,
    /// Durability of the appends: `buffered` (flushed at the end), `sync` (every line synced
    /// before the next is read), or a flush interval in ms.
    #[arg(long, default_value = "buffered")]
    durability: String,
    /// Print each line number to stdout once its line is acknowledged (for crash tests).
    #[arg(long, hide = true)]
    acknowledge: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Stop,
    Skip,
}

/// Bytes read per block; a line longer than this still works (the block grows).
const BLOCK_BYTES: usize = 8 << 20;

pub fn run(args: Args, context: &mut Context) -> Outcome {
    let durability = parse_durability(&args.durability)?;
    let store = Store::open_with(
        &context.store_dir,
        StoreOptions {
            durability,
            ..StoreOptions::default()
        },
    )?;
    let (mut input, length): (Box<dyn Read>, Option<u64>) = match &args.file {
        None => (Box::new(std::io::stdin().lock()), None),
        Some(path) if path.as_os_str() == "-" => (Box::new(std::io::stdin().lock()), None),
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Failure::Message(format!("open {}: {e}", path.display())))?;
            let length = file.metadata().ok().map(|m| m.len());
            (Box::new(file), length)
        }
    };
    let bar = context.progress(length.unwrap_or(0), "ingest");
    let started = Instant::now();
    let mut ingest = Ingest::new(store);
    let mut carry: Vec<u8> = Vec::new();
    let mut first_line = 1u64;
    let mut failure = None;
    loop {
        let mut block = std::mem::take(&mut carry);
        let end_of_input = !fill(&mut input, &mut block)?;
        // A trailing partial line waits for the next block; a block without any newline
        // grows until it has one.
        let cut = if end_of_input {
            block.len()
        } else {
            match block.iter().rposition(|b| *b == b'\n') {
                Some(newline) => newline + 1,
                None => {
                    carry = block;
                    continue;
                }
            }
        };
        carry = block.split_off(cut);
        if end_of_input && block.last().is_some_and(|b| *b != b'\n') {
            // The last line had no newline; give it one so every line ends alike.
            block.push(b'\n');
        }
        bar.inc(block.len() as u64);
        let now = now_ms();
        // Split and parse in parallel, in pieces that end at line ends; apply in order.
        let pieces = pieces(&block, PIECES_PER_BLOCK);
        let parsed: Vec<Vec<Result<Option<Line<'_>>, String>>> = pieces
            .par_iter()
            .map(|piece| {
                piece
                    .split(|b| *b == b'\n')
                    .map(|bytes| parse_line(bytes, now))
                    .collect()
            })
            .collect();
        let mut number = first_line;
        for line in parsed.into_iter().flat_map(|piece| {
            // Each piece ends with its newline, so `split` yields an empty last item that
            // belongs to no line.
            let lines = piece.len().saturating_sub(1);
            piece.into_iter().take(lines)
        }) {
            let this = number;
            number += 1;
            let applied = match line {
                Ok(None) => continue,
                Ok(Some(line)) => ingest.apply(line).map_err(|e| e.to_string()),
                Err(message) => Err(message),
            };
            let number = this;
            match applied {
                Ok(()) => {
                    if args.acknowledge {
                        writeln_ack(context, number)?;
                    }
                }
                Err(message) => {
                    ingest.errors += 1;
                    let report = format!("line {number}: {message}");
                    if args.on_error == OnError::Stop {
                        failure = Some(report);
                        break;
                    }
                    crate::eprintln_quiet(&format!("runlog: skipped {report}"));
                }
            }
        }
        if failure.is_some() || end_of_input {
            break;
        }
        first_line = number;
    }
    bar.finish_and_clear();
    let summary = ingest.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let mut table = Table::new([
        "lines",
        "metrics",
        "params",
        "tags",
        "statuses",
        "runs_created",
        "errors",
        "seconds",
        "lines_per_second",
    ]);
    table.push(vec![
        Value::from(summary.lines),
        Value::from(summary.metrics),
        Value::from(summary.params),
        Value::from(summary.tags),
        Value::from(summary.statuses),
        Value::from(summary.runs_created),
        Value::from(summary.errors),
        Value::from((seconds * 1000.0).round() / 1000.0),
        Value::from((summary.lines as f64 / seconds.max(1e-9)).round()),
    ]);
    match failure {
        None if !args.acknowledge => Ok(table.write(&mut context.out, context.format)?),
        None => Ok(()),
        Some(report) => {
            let mut text = Vec::new();
            table.write(&mut text, crate::output::Format::Table)?;
            crate::eprintln_quiet(String::from_utf8_lossy(&text).trim_end());
            Err(Failure::Message(format!(
                "{report} (nothing after it was written; --on-error skip goes on)"
            )))
        }
    }
}

/// Pieces a block is parsed in: enough to keep every core busy and balance uneven lines.
const PIECES_PER_BLOCK: usize = 64;

/// `block` (which ends with a newline) cut into about `count` pieces, each ending just after
/// a newline.
fn pieces(block: &[u8], count: usize) -> Vec<&[u8]> {
    let target = (block.len() / count.max(1)).max(1);
    let mut pieces = Vec::with_capacity(count + 1);
    let mut start = 0;
    while start < block.len() {
        let guess = (start + target).min(block.len()) - 1;
        let end = block[guess..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(block.len(), |at| guess + at + 1);
        pieces.push(&block[start..end]);
        start = end;
    }
    pieces
}

/// Reads up to `BLOCK_BYTES` more into `block`; false at the end of the input.
fn fill(input: &mut dyn Read, block: &mut Vec<u8>) -> Outcome<bool> {
    let target = block.len() + BLOCK_BYTES;
    block.reserve(BLOCK_BYTES);
    while block.len() < target {
        let start = block.len();
        block.resize(target, 0);
        match input.read(&mut block[start..]) {
            Ok(0) => {
                block.truncate(start);
                return Ok(false);
            }
            Ok(n) => block.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => block.truncate(start),
            Err(e) => {
                block.truncate(start);
                return Err(Failure::Message(format!("read input: {e}")));
            }
        }
    }
    Ok(true)
}

fn writeln_ack(context: &mut Context, number: u64) -> Outcome {
    use std::io::Write;
    writeln!(context.out, "{number}")?;
    context.out.flush()?;
    Ok(())
}

fn parse_durability(text: &str) -> Outcome<Durability> {
    match text {
        "buffered" => Ok(Durability::Buffered),
        "sync" => Ok(Durability::Sync),
        ms => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Durability::Interval(std::time::Duration::from_millis(ms))),
            _ => Err(Failure::Message(format!(
                "--durability {text:?}: expected buffered, sync, or an interval in ms"
            ))),
        },
    }
}

// ---- parsing ----

/// One input object, as written. Unknown fields are refused, so a typo (`"stpe"`) is an error
/// rather than a silently defaulted field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    experiment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    run: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    run_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    value: Option<Scalar<'a>>,
    #[serde(default)]
    step: Option<i64>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<BTreeMap<String, Scalar<'a>>>,
    #[serde(borrow, default)]
    tags: Option<BTreeMap<String, Scalar<'a>>>,
    #[serde(borrow, default)]
    parent: Option<Cow<'a, str>>,
}

/// A JSON number or string.
enum Scalar<'a> {
    Number(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl Scalar<'_> {
    /// As a param or tag value: strings as they are, numbers in their shortest decimal form.
    fn into_text(self) -> String {
        match self {
            Scalar::Text(text) => text.into_owned(),
            Scalar::Number(number) => number.to_string(),
        }
    }
}

/// Which run a line is about.
enum Target<'a> {
    Named {
        experiment: Cow<'a, str>,
        run: Cow<'a, str>,
    },
    Id(RunId),
}

/// A validated line, ready to apply.
enum Line<'a> {
    Metric {
        target: Target<'a>,
        key: Cow<'a, str>,
        value: f64,
        step: i64,
        timestamp_ms: i64,
    },
    Param {
        target: Target<'a>,
        key: Cow<'a, str>,
        value: String,
    },
    Tag {
        target: Target<'a>,
        key: Cow<'a, str>,
        value: String,
    },
    Status {
        target: Target<'a>,
        status: RunStatus,
    },
    Run {
        experiment: Cow<'a, str>,
        name: Cow<'a, str>,
        parent: Option<Cow<'a, str>>,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
    },
}

/// The experiment of a `run` line that names none.
const DEFAULT_EXPERIMENT: &str = "Default";

/// The run a line names: by name within `experiment`, or by id.
fn target<'a>(
    run: Option<Cow<'a, str>>,
    run_id: Option<Cow<'a, str>>,
    experiment: Cow<'a, str>,
) -> Result<Target<'a>, String> {
    match (run, run_id) {
        (Some(_), Some(_)) => Err("give \"run\" or \"run_id\", not both".to_string()),
        (None, None) => Err("needs \"run\" (a name) or \"run_id\"".to_string()),
        (None, Some(id)) => Ok(Target::Id(id.parse::<RunId>().map_err(|e| e.to_string())?)),
        (Some(run), None) => Ok(Target::Named { experiment, run }),
    }
}

/// Parses and validates one line; `Ok(None)` for a blank one.
fn parse_line(bytes: &[u8], now: i64) -> Result<Option<Line<'_>>, String> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let raw: Raw<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let invalid = |e: runlog::Error| e.to_string();
    let Raw {
        kind,
        experiment,
        run,
        run_id,
        key,
        value,
        step,
        timestamp,
        status,
        params,
        tags,
        parent,
    } = raw;
    let experiment = experiment.unwrap_or(Cow::Borrowed(DEFAULT_EXPERIMENT));
    // A field the line's type does not use is refused, never silently dropped.
    let used: &[&str] = match kind.as_ref() {
        "metric" => &["run_id", "key", "value", "step", "timestamp"],
        "param" | "tag" => &["run_id", "key", "value"],
        "status" => &["run_id", "status"],
        "run" => &["params", "tags", "parent"],
        other => return Err(unknown_type(other)),
    };
    let present = [
        ("run_id", run_id.is_some()),
        ("key", key.is_some()),
        ("value", value.is_some()),
        ("step", step.is_some()),
        ("timestamp", timestamp.is_some()),
        ("status", status.is_some()),
        ("params", params.is_some()),
        ("tags", tags.is_some()),
        ("parent", parent.is_some()),
    ];
    if let Some((field, _)) = present
        .iter()
        .find(|(field, present)| *present && !used.contains(field))
    {
        return Err(format!("\"{field}\" does not belong in a {kind:?} line"));
    }
    let need_key = |what: &str| -> Result<Cow<'_, str>, String> {
        let key = key
            .clone()
            .ok_or_else(|| format!("a {what} line needs \"key\""))?;
        validation::key(what, &key).map_err(invalid)?;
        Ok(key)
    };
    let line = match kind.as_ref() {
        "metric" => {
            let key = need_key("metric")?;
            let value = match value {
                Some(Scalar::Number(n)) => n,
                Some(Scalar::Text(text)) => match text.as_ref() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    other => {
                        return Err(format!(
                            "metric value {other:?} is not a number, \"NaN\", \"Infinity\" or \"-Infinity\""
                        ));
                    }
                },
                None => return Err("a metric line needs \"value\"".into()),
            };
            Line::Metric {
                target: target(run, run_id, experiment)?,
                key,
                value,
                step: step.unwrap_or(0),
                timestamp_ms: timestamp.unwrap_or(now),
            }
        }
        "param" | "tag" => {
            let what = kind.as_ref();
            let key = need_key(what)?;
            let value = value
                .ok_or_else(|| format!("a {what} line needs \"value\""))?
                .into_text();
            let target = target(run, run_id, experiment)?;
            if what == "param" {
                validation::value("param", &key, &value, validation::PARAM_VALUE_CHARS_MAX)
                    .map_err(invalid)?;
                Line::Param { target, key, value }
            } else {
                validation::value("tag", &key, &value, validation::TAG_VALUE_CHARS_MAX)
                    .map_err(invalid)?;
                Line::Tag { target, key, value }
            }
        }
        "status" => {
            let status = match status.as_deref() {
                Some("FINISHED") => RunStatus::Finished,
                Some("FAILED") => RunStatus::Failed,
                Some("KILLED") => RunStatus::Killed,
                Some(other) => {
                    return Err(format!(
                        "status {other:?} is not FINISHED, FAILED or KILLED"
                    ));
                }
                None => return Err("a status line needs \"status\"".into()),
            };
            Line::Status {
                target: target(run, run_id, experiment)?,
                status,
            }
        }
        "run" => {
            let name = run.ok_or("a run line needs \"run\" (its name)")?;
            let checked = |what: &str, map: Option<BTreeMap<String, Scalar<'_>>>, max| {
                map.unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| {
                        let v = v.into_text();
                        validation::key(what, &k).map_err(invalid)?;
                        validation::value(what, &k, &v, max).map_err(invalid)?;
                        Ok((k, v))
                    })
                    .collect::<Result<Vec<_>, String>>()
            };
            Line::Run {
                experiment,
                name,
                parent,
                params: checked("param", params, validation::PARAM_VALUE_CHARS_MAX)?,
                tags: checked("tag", tags, validation::TAG_VALUE_CHARS_MAX)?,
            }
        }
        other => return Err(unknown_type(other)),
    };
    Ok(Some(line))
}

fn unknown_type(kind: &str) -> String {
    format!("unknown type {kind:?} (metric, param, tag, status or run)")
}

// ---- applying ----

/// A run this input has mentioned.
enum Slot {
    Open(Run),
    /// Ended by a `status` line; a later line reopens it, applies, and ends it again.
    Ended(RunStatus),
}

struct Ingest {
    store: Store,
    experiments: HashMap<String, ExperimentId, FastHash>,
    /// Runs by name, per experiment (nested so a lookup borrows the line's `&str`).
    named: HashMap<ExperimentId, HashMap<String, RunId, FastHash>, FastHash>,
    runs: HashMap<RunId, Slot, FastHash>,
    lines: u64,
    metrics: u64,
    params: u64,
    tags: u64,
    statuses: u64,
    runs_created: u64,
    errors: u64,
}

struct Summary {
    lines: u64,
    metrics: u64,
    params: u64,
    tags: u64,
    statuses: u64,
    runs_created: u64,
    errors: u64,
}

impl Ingest {
    fn new(store: Store) -> Ingest {
        Ingest {
            store,
            experiments: HashMap::default(),
            named: HashMap::default(),
            runs: HashMap::default(),
            lines: 0,
            metrics: 0,
            params: 0,
            tags: 0,
            statuses: 0,
            runs_created: 0,
            errors: 0,
        }
    }

    fn apply(&mut self, line: Line<'_>) -> runlog::Result<()> {
        match line {
            Line::Metric {
                target,
                key,
                value,
                step,
                timestamp_ms,
            } => {
                self.with_run(target, |run| {
                    run.log_metric_at(&key, value, step, timestamp_ms)
                })?;
                self.metrics += 1;
            }
            Line::Param { target, key, value } => {
                self.with_run(target, |run| run.log_param(&key, &value))?;
                self.params += 1;
            }
            Line::Tag { target, key, value } => {
                self.with_run(target, |run| run.set_tag(&key, &value))?;
                self.tags += 1;
            }
            Line::Status { target, status } => {
                let id = self.resolve(target)?;
                match self.runs.remove(&id) {
                    Some(Slot::Open(run)) => run.end(status)?,
                    Some(Slot::Ended(_)) | None => self.store.resume_run(id)?.end(status)?,
                }
                self.runs.insert(id, Slot::Ended(status));
                self.statuses += 1;
            }
            Line::Run {
                experiment,
                name,
                parent,
                params,
                tags,
            } => {
                let experiment = self.experiment(&experiment)?;
                let parent = match parent {
                    Some(parent) => Some(self.parent(experiment, &parent)?),
                    None => None,
                };
                let id = match self.named_run(experiment, &name) {
                    Some(id) if parent.is_some() => {
                        return Err(runlog::Error::InvalidInput(format!(
                            "run {name:?} already exists (run {id}); a parent can only be given when it is created"
                        )));
                    }
                    Some(id) => id,
                    None => self.create(experiment, &name, parent)?,
                };
                self.with_run(Target::Id(id), |run| {
                    for (k, v) in &tags {
                        run.set_tag(k, v)?;
                    }
                    run.log_params(
                        &params
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect::<Vec<_>>(),
                    )
                })?;
                self.params += params.len() as u64;
                self.tags += tags.len() as u64;
            }
        }
        self.lines += 1;
        Ok(())
    }

    fn named_run(&self, experiment: ExperimentId, name: &str) -> Option<RunId> {
        self.named.get(&experiment)?.get(name).copied()
    }

    fn experiment(&mut self, name: &str) -> runlog::Result<ExperimentId> {
        if let Some(id) = self.experiments.get(name) {
            return Ok(*id);
        }
        let id = self.store.get_or_create_experiment(name)?.id;
        self.experiments.insert(name.to_string(), id);
        Ok(id)
    }

    fn create(
        &mut self,
        experiment: ExperimentId,
        name: &str,
        parent: Option<RunId>,
    ) -> runlog::Result<RunId> {
        let run = self.store.start_run(
            experiment,
            RunOptions {
                name: Some(name.to_string()),
                parent,
                ..RunOptions::default()
            },
        )?;
        let id = run.id();
        self.named
            .entry(experiment)
            .or_default()
            .insert(name.to_string(), id);
        self.runs.insert(id, Slot::Open(run));
        self.runs_created += 1;
        Ok(id)
    }

    /// A parent given as a run id, or as the name of a run of this input in `experiment`.
    fn parent(&mut self, experiment: ExperimentId, text: &str) -> runlog::Result<RunId> {
        if let Some(id) = self.named_run(experiment, text) {
            return Ok(id);
        }
        let id = text.parse::<RunId>().map_err(|_| {
            runlog::Error::InvalidInput(format!(
                "parent {text:?} is neither a run id nor a run declared earlier in this experiment"
            ))
        })?;
        self.store.run(id)?;
        Ok(id)
    }

    fn resolve(&mut self, target: Target<'_>) -> runlog::Result<RunId> {
        match target {
            Target::Id(id) => Ok(id),
            Target::Named { experiment, run } => {
                let experiment = self.experiment(&experiment)?;
                match self.named_run(experiment, &run) {
                    Some(id) => Ok(id),
                    None => self.create(experiment, &run, None),
                }
            }
        }
    }

    fn with_run(
        &mut self,
        target: Target<'_>,
        apply: impl FnOnce(&Run) -> runlog::Result<()>,
    ) -> runlog::Result<()> {
        // The hot path: a named run already open.
        if let Target::Named { experiment, run } = &target
            && let Some(experiment) = self.experiments.get(experiment.as_ref())
            && let Some(id) = self.named_run(*experiment, run)
            && let Some(Slot::Open(run)) = self.runs.get(&id)
        {
            return apply(run);
        }
        let id = self.resolve(target)?;
        match self.runs.get(&id) {
            Some(Slot::Open(run)) => apply(run),
            Some(Slot::Ended(status)) => {
                let status = *status;
                let run = self.store.resume_run(id)?;
                let result = apply(&run);
                run.end(status)?;
                result
            }
            None => {
                let run = self.store.resume_run(id)?;
                let result = apply(&run);
                self.runs.insert(id, Slot::Open(run));
                result
            }
        }
    }

    fn finish(self) -> runlog::Result<Summary> {
        for (_, slot) in self.runs {
            if let Slot::Open(run) = slot {
                run.detach();
            }
        }
        self.store.flush()?;
        Ok(Summary {
            lines: self.lines,
            metrics: self.metrics,
            params: self.params,
            tags: self.tags,
            statuses: self.statuses,
            runs_created: self.runs_created,
            errors: self.errors,
        })
    }
}
