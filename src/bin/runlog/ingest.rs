//! `runlog ingest`: JSON Lines of events into the store (schema in `docs/CLI.md`).
//!
//! Input is read in blocks of whole lines. A reader thread parses and validates each block's
//! lines in parallel (rayon) while the calling thread applies the block before it, in input
//! order, so every run's points keep their order and parsing overlaps appending.
//!
//! Invariants:
//! - A line is written whole or not at all: everything that can be refused (fields, keys,
//!   values, statuses) is checked while parsing, before anything of the line is appended.
//! - A bad line is reported with its 1-based line number. With `--on-error stop` (the default)
//!   nothing after it is applied; what came before is flushed and stays.
//! - A store error (I/O, a full disk, damage) is never a bad line: it stops the ingest with a
//!   failure whatever `--on-error` says. So does a closed acknowledgement output: an ingest
//!   that did not write its whole input never reports success.
//! - `run` names a run within its experiment, created at its first mention in this input;
//!   `run_id` names a run that already exists. Runs are left as their lines leave them: a run
//!   without a `status` line stays RUNNING.
//! - Only a `status` line changes a run's status or end time. A run this input did not start,
//!   or one a `status` line ended, is written by id (`Store::log_batch` and friends), which
//!   never resumes it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use serde_json::Value;

use crate::output::{Table, now_ms};
use crate::{Context, Failure, Outcome};
use runlog::ingest::{Line, Target, parse_line};
use runlog::{Durability, ExperimentId, Run, RunId, RunOptions, Store, StoreOptions};

/// The hasher of maps keyed by names read from the input: seeded per process, so no input can
/// make its names collide on purpose.
type KeyHash = foldhash::fast::RandomState;
/// The hasher of maps keyed by ids the engine made.
type IdHash = foldhash::fast::FixedState;

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
    let (mut input, length, stdin) = open_input(&args)?;
    let bar = context.progress(length.unwrap_or(0), "ingest");
    let started = Instant::now();
    let mut ingest = Ingest::new(store);
    // One parsed block in flight while another is applied: memory stays at about three blocks
    // whatever the input's size. The reader is not joined: when applying stops early it may be
    // blocked reading an idle stdin, and it ends with the process.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Outcome<Parsed>>(1);
    std::thread::spawn(move || read_and_parse(&mut *input, stdin, &sender));
    let applied = apply_all(receiver, &mut ingest, &args, context, &bar);
    bar.finish_and_clear();
    // On every way out, runs are let go as their lines left them (not ended as KILLED by
    // their handles' drop), and what was applied is flushed.
    let summary = ingest.finish();
    let failure = applied?;
    let table = summary_table(&summary?, started.elapsed().as_secs_f64());
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

/// The input (the file, or stdin for none or `-`), its length if known, and whether it is stdin.
fn open_input(args: &Args) -> Outcome<(Box<dyn Read + Send>, Option<u64>, bool)> {
    match args.file.as_ref().filter(|path| path.as_os_str() != "-") {
        None => Ok((Box::new(std::io::stdin()), None, true)),
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Failure::Message(format!("open {}: {e}", path.display())))?;
            let length = file.metadata().ok().map(|m| m.len());
            Ok((Box::new(file), length, false))
        }
    }
}

/// Applies every parsed line in input order. Returns the report of the bad line that stopped
/// it (`--on-error stop`), if one did; a store failure is an error.
fn apply_all(
    receiver: std::sync::mpsc::Receiver<Outcome<Parsed>>,
    ingest: &mut Ingest,
    args: &Args,
    context: &mut Context,
    bar: &indicatif::ProgressBar,
) -> Outcome<Option<String>> {
    let mut number = 1u64;
    for parsed in receiver {
        let Parsed { block, lines } = parsed?;
        bar.inc(block.len() as u64);
        for line in lines.into_iter().flatten() {
            let this = number;
            number += 1;
            let applied = match line {
                Ok(None) => continue,
                Ok(Some(line)) => match ingest.apply(&block, line) {
                    Ok(()) => Ok(()),
                    Err(error) if is_line_fault(&error) => Err(error.to_string()),
                    Err(error) => return Err(store_failure(this, &error)),
                },
                Err(message) => Err(message),
            };
            match applied {
                Ok(()) if args.acknowledge => writeln_ack(context, this)?,
                Ok(()) => {}
                Err(message) => {
                    ingest.counts.errors += 1;
                    let report = format!("line {this}: {message}");
                    if args.on_error == OnError::Stop {
                        return Ok(Some(report));
                    }
                    crate::eprintln_quiet(&format!("runlog: skipped {report}"));
                }
            }
        }
    }
    Ok(None)
}

/// The one-row table `runlog ingest` prints at the end.
fn summary_table(summary: &Summary, seconds: f64) -> Table {
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
    table
}

/// A block of whole lines and the result of parsing each, in input order.
struct Parsed {
    block: Vec<u8>,
    /// One item per line of `block` (blank lines are `Ok(None)`), in pieces of the block, so
    /// no thread copies the pieces' results together; strings point into `block`.
    lines: Vec<Vec<Result<Option<Line<Text>>, String>>>,
}

/// Reads `input` in blocks of whole lines, parses each block in parallel, and sends it on,
/// until the input ends, reading fails, or the receiver is gone (it stopped at a bad line).
fn read_and_parse(
    input: &mut dyn Read,
    stdin: bool,
    sender: &std::sync::mpsc::SyncSender<Outcome<Parsed>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    let mut start_of_input = true;
    loop {
        let mut block = std::mem::take(&mut carry);
        let end_of_input = match fill(input, &mut block, stdin) {
            Ok(more) => !more,
            Err(failure) => {
                let _ = sender.send(Err(failure));
                return;
            }
        };
        if start_of_input {
            start_of_input = strip_byte_order_mark(&mut block, end_of_input);
        }
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
        let now = now_ms();
        let lines = pieces(&block, PIECES_PER_BLOCK)
            .par_iter()
            .map(|piece| {
                // Sized up front: growing a vector of lines this size is a real share of the
                // parse time.
                let mut lines = Vec::with_capacity(piece.iter().filter(|b| **b == b'\n').count());
                // Each piece ends with its newline, so the split's empty last item belongs to
                // no line.
                let (_, whole) = piece.split_last().unwrap_or((&b'\n', &[]));
                lines.extend(whole.split(|b| *b == b'\n').map(|bytes| {
                    Ok(
                        parse_line(bytes, now)?
                            .map(|line| line.map(|text| Text::new(text, &block))),
                    )
                }));
                lines
            })
            .collect();
        if sender.send(Ok(Parsed { block, lines })).is_err() || end_of_input {
            return;
        }
    }
}

/// UTF-8's byte-order mark, which some editors write at the start of a text file.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Removes a byte-order mark from the start of the input's first bytes, `block`; true while
/// `block` is too short to tell (the next block starts the input too).
fn strip_byte_order_mark(block: &mut Vec<u8>, end_of_input: bool) -> bool {
    if block.starts_with(BYTE_ORDER_MARK) {
        block.drain(..BYTE_ORDER_MARK.len());
        return false;
    }
    !end_of_input && BYTE_ORDER_MARK.starts_with(block)
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
///
/// From stdin, a block is handed on once it holds a whole line and either nothing more comes
/// within `STDIN_PAUSE_MS` or it has been filling for `STDIN_LATENCY_MS`: a live producer's
/// lines are applied (and acknowledged) within milliseconds rather than after 8 MiB more of
/// them, while a bulk pipe still fills blocks of megabytes.
fn fill(input: &mut dyn Read, block: &mut Vec<u8>, stdin: bool) -> Outcome<bool> {
    let started = Instant::now();
    let mut filled = block.len();
    let mut whole_line = block.contains(&b'\n');
    // Zeroed once per block, not per read: a pipe gives at most 64 KiB a read.
    block.resize(filled + BLOCK_BYTES, 0);
    let more = loop {
        match input.read(&mut block[filled..]) {
            Ok(0) => break false,
            Ok(n) => {
                whole_line = whole_line || block[filled..filled + n].contains(&b'\n');
                filled += n;
                if filled == block.len() {
                    break true;
                }
                if stdin && whole_line && (started.elapsed() >= STDIN_LATENCY || !stdin_ready()) {
                    break true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                block.truncate(filled);
                return Err(Failure::Message(format!("read input: {e}")));
            }
        }
    };
    block.truncate(filled);
    Ok(more)
}

/// How long a short read from stdin waits for more before handing its lines on.
const STDIN_PAUSE_MS: i32 = 5;

/// How long a block from stdin may keep filling once it holds a whole line.
const STDIN_LATENCY: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether stdin has bytes to read within `STDIN_PAUSE_MS`.
fn stdin_ready() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd and a count of one; poll only writes `revents`.
    let ready = unsafe { libc::poll(&mut fd, 1, STDIN_PAUSE_MS) };
    ready > 0
}

/// Acknowledges line `number`. The reader of the acknowledgements going away ends the ingest
/// with a failure, never quietly: the lines after this one are not written, and a caller that
/// counts on every line being logged must not see success.
fn writeln_ack(context: &mut Context, number: u64) -> Outcome {
    use std::io::Write;
    writeln!(context.out, "{number}")
        .and_then(|()| context.out.flush())
        .map_err(|error| {
            Failure::Message(format!(
                "acknowledging line {number}: {error}; stopped there, nothing after line \
                 {number} was written"
            ))
        })
}

/// Whether `error`, from applying a line, is the line's fault (a run id that does not exist, a
/// param that would change, a deleted run): `--on-error` decides what happens then. Anything
/// else is the store failing (I/O, a full disk, damage, a poisoned writer), which no later
/// line can get past.
fn is_line_fault(error: &runlog::Error) -> bool {
    use runlog::Error;
    matches!(
        error,
        Error::InvalidInput(_)
            | Error::NotFound(_)
            | Error::AlreadyExists(_)
            | Error::ParamChanged { .. }
            | Error::Deleted { .. }
    )
}

/// The failure of a store error met while applying line `number`: the ingest stops there,
/// whatever `--on-error` says.
fn store_failure(number: u64, error: &runlog::Error) -> Failure {
    Failure::Message(format!(
        "the store failed at line {number}: {error}; ingest stopped there, and no line after \
         it was written"
    ))
}

pub(crate) fn parse_durability(text: &str) -> Outcome<Durability> {
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

// ---- parsed lines, carried to the applying thread ----

/// A string of a parsed line that can travel with its block to the applying thread: where it
/// lies in the block (no allocation, the common case), or its own copy (a string with escapes,
/// or a default that is not in the input).
enum Text {
    Span(usize, usize),
    Owned(String),
}

impl Text {
    fn new(text: Cow<'_, str>, block: &[u8]) -> Text {
        if let Cow::Borrowed(borrowed) = &text {
            // serde borrows straight from the input, so a borrowed string is a part of the
            // block unless it is a static default; the range check tells which.
            let at = (borrowed.as_ptr() as usize).wrapping_sub(block.as_ptr() as usize);
            if at <= block.len() && borrowed.len() <= block.len() - at {
                return Text::Span(at, at + borrowed.len());
            }
        }
        Text::Owned(text.into_owned())
    }

    /// The string, from the block it was parsed from.
    fn get<'b>(&'b self, block: &'b [u8]) -> &'b str {
        match self {
            // The span came from a `&str` of this block, so it is in range and UTF-8.
            Text::Span(start, end) => block
                .get(*start..*end)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .unwrap_or_default(),
            Text::Owned(text) => text,
        }
    }
}

/// Borrowed pairs of a `run` line's params or tags.
fn pairs(map: &[(String, String)]) -> Vec<(&str, &str)> {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `target` with its strings read from `block`.
fn target_in<'b>(target: &'b Target<Text>, block: &'b [u8]) -> Target<&'b str> {
    target.as_ref().map(|text| text.get(block))
}

// ---- applying ----

/// Where a line's writes go: the handle of a run this input started and has not ended, or
/// any other run, by id.
enum To<'a> {
    Handle(&'a Run),
    Id(&'a Store, RunId),
}

impl To<'_> {
    fn log_metric(
        &self,
        key: &str,
        value: f64,
        step: i64,
        timestamp_ms: i64,
    ) -> runlog::Result<()> {
        match self {
            To::Handle(run) => run.log_metric_at(key, value, step, timestamp_ms),
            To::Id(store, id) => store.log_metric(*id, key, value, step, timestamp_ms),
        }
    }

    fn log_param(&self, key: &str, value: &str) -> runlog::Result<()> {
        match self {
            To::Handle(run) => run.log_param(key, value),
            To::Id(store, id) => store.log_param(*id, key, value),
        }
    }

    fn set_tag(&self, key: &str, value: &str) -> runlog::Result<()> {
        match self {
            To::Handle(run) => run.set_tag(key, value),
            To::Id(store, id) => store.set_tag(*id, key, value),
        }
    }
}

struct Ingest {
    store: Store,
    experiments: HashMap<String, ExperimentId, KeyHash>,
    /// Runs by name, per experiment (nested so a lookup borrows the line's `&str`).
    named: HashMap<ExperimentId, HashMap<String, RunId, KeyHash>, IdHash>,
    /// Handles of the runs this input started and no `status` line ended yet.
    open: HashMap<RunId, Run, IdHash>,
    counts: Summary,
}

/// What an ingest wrote, for its report.
#[derive(Default)]
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
            open: HashMap::default(),
            counts: Summary::default(),
        }
    }

    /// Applies `line`, parsed from `block`.
    fn apply(&mut self, block: &[u8], line: Line<Text>) -> runlog::Result<()> {
        match line {
            Line::Metric {
                target,
                key,
                value,
                step,
                timestamp_ms,
            } => {
                let key = key.get(block);
                self.with_run(target_in(&target, block), |to| {
                    to.log_metric(key, value, step, timestamp_ms)
                })?;
                self.counts.metrics += 1;
            }
            Line::Param { target, key, value } => {
                let key = key.get(block);
                self.with_run(target_in(&target, block), |to| to.log_param(key, &value))?;
                self.counts.params += 1;
            }
            Line::Tag { target, key, value } => {
                let key = key.get(block);
                self.with_run(target_in(&target, block), |to| to.set_tag(key, &value))?;
                self.counts.tags += 1;
            }
            Line::Status { target, status } => {
                let id = self.resolve(target_in(&target, block))?;
                match self.open.remove(&id) {
                    Some(run) => run.end(status)?,
                    None => {
                        self.store
                            .update_run(id, Some(status), Some(now_ms()), None)?;
                    }
                }
                self.counts.statuses += 1;
            }
            Line::Run {
                experiment,
                name,
                parent,
                params,
                tags,
            } => {
                let name = name.get(block);
                let experiment = self.experiment(experiment.get(block))?;
                let parent = match parent {
                    Some(parent) => Some(self.parent(experiment, parent.get(block))?),
                    None => None,
                };
                let id = match self.named_run(experiment, name) {
                    Some(id) if parent.is_some() => {
                        return Err(runlog::Error::InvalidInput(format!(
                            "run {name:?} already exists (run {id}); a parent can only be given when it is created"
                        )));
                    }
                    Some(id) => id,
                    None => self.create(experiment, name, parent)?,
                };
                // Params and tags in one batch, written whole or not at all.
                self.store
                    .log_batch(id, &[], &pairs(&params), &pairs(&tags))?;
                self.counts.params += params.len() as u64;
                self.counts.tags += tags.len() as u64;
            }
        }
        self.counts.lines += 1;
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
        self.open.insert(id, run);
        self.counts.runs_created += 1;
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

    fn resolve(&mut self, target: Target<&str>) -> runlog::Result<RunId> {
        match target {
            Target::Id(id) => Ok(id),
            Target::Named { experiment, run } => {
                let experiment = self.experiment(experiment)?;
                match self.named_run(experiment, run) {
                    Some(id) => Ok(id),
                    None => self.create(experiment, run, None),
                }
            }
        }
    }

    fn with_run(
        &mut self,
        target: Target<&str>,
        apply: impl FnOnce(To<'_>) -> runlog::Result<()>,
    ) -> runlog::Result<()> {
        // The hot path: a named run already open.
        if let Target::Named { experiment, run } = &target
            && let Some(experiment) = self.experiments.get(*experiment)
            && let Some(id) = self.named_run(*experiment, run)
            && let Some(run) = self.open.get(&id)
        {
            return apply(To::Handle(run));
        }
        let id = self.resolve(target)?;
        match self.open.get(&id) {
            Some(run) => apply(To::Handle(run)),
            None => apply(To::Id(&self.store, id)),
        }
    }

    /// Lets the runs go, then seals the handle's log here, where a failure is reported,
    /// rather than in the handle's drop, which would then free the catalog one allocation at a
    /// time (a tenth of a small ingest into a store of 200,000 series); the process's exit
    /// frees it at once, as for the read-only commands (`Context::open_read_only`).
    fn finish(self) -> runlog::Result<Summary> {
        let Ingest {
            store,
            open,
            counts,
            ..
        } = self;
        for (_, run) in open {
            run.detach();
        }
        store.flush()?;
        store.close()?;
        std::mem::forget(store);
        Ok(counts)
    }
}
