//! The `runlog` command line: a thin layer over the library, so that a store can be used from a
//! shell and from any language (`docs/CLI.md`).
//!
//! Invariants:
//! - An error is one line on stderr and a non-zero exit (1; 2 for usage errors, from clap).
//! - Results go to stdout; progress and summaries of long work go to stderr, and progress bars
//!   only when stderr is a terminal.
//! - A closed stdout (`runlog history ... | head`) ends the command quietly with exit 0, unless
//!   it cuts work short: `ingest --acknowledge` then fails, as its input was not all written.

mod demo;
mod ingest;
mod inspect;
mod maintain;
mod output;
mod plot;
mod serve;

use std::io::{self, IsTerminal, Write};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Format;
use runlog::{Store, StoreOptions};

/// runlog: an embedded, log-structured metrics store for ML experiment tracking.
#[derive(Parser, Debug)]
#[command(name = "runlog", version, about, max_term_width = 100)]
struct Cli {
    /// The store directory.
    #[arg(
        long,
        global = true,
        env = "RUNLOG_STORE",
        default_value = "./runlog-data"
    )]
    store: PathBuf,
    /// Output format of tables.
    #[arg(long, global = true, value_enum, default_value = "table")]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate a hyperparameter sweep, log it, compact it, and show the best runs.
    Demo(demo::Args),
    /// Log JSON Lines of events from FILE, or stdin with `-` or no FILE (docs/CLI.md).
    Ingest(ingest::Args),
    /// List experiments.
    Experiments(inspect::ExperimentsArgs),
    /// Search the runs of an experiment (MLflow filter grammar).
    Runs(inspect::RunsArgs),
    /// Print a metric's history, whole or downsampled.
    History(inspect::HistoryArgs),
    /// Compare runs on their metrics' summaries.
    Compare(inspect::CompareArgs),
    /// Draw runs' curves of one metric, with a min/max band, to an SVG or PNG file.
    Plot(plot::Args),
    /// Compact the log into per-experiment Parquet files.
    Compact,
    /// Export the store as Hive-partitioned Parquet tables into DIR.
    Export(maintain::ExportArgs),
    /// Check every checksum of the store; exit 1 naming each problem's file and offset.
    Verify,
    /// Counts and sizes: series, points, bytes per point, log versus compacted.
    Stats,
    /// Serve MLflow's tracking REST API over the store on HTTP (docs/SERVER.md).
    Serve(serve::Args),
}

/// A command's failure: printed as one line.
#[derive(Debug)]
pub enum Failure {
    /// From the library.
    Runlog(runlog::Error),
    /// Reading input or writing output.
    Io(io::Error),
    /// Anything else, already worded.
    Message(String),
}

impl From<runlog::Error> for Failure {
    fn from(error: runlog::Error) -> Failure {
        Failure::Runlog(error)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Io(error)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Runlog(error) => write!(f, "{error}"),
            Failure::Io(error) => write!(f, "{error}"),
            Failure::Message(message) => write!(f, "{message}"),
        }
    }
}

/// Result of a command.
pub type Outcome<T = ()> = Result<T, Failure>;

/// What every command gets.
pub struct Context {
    /// The store directory.
    pub store_dir: PathBuf,
    /// How tables are printed.
    pub format: Format,
    /// Buffered stdout.
    pub out: Box<dyn Write>,
    /// Whether progress bars may be drawn (stderr is a terminal).
    pub interactive: bool,
}

impl Context {
    /// Opens the store for writing, creating it if needed.
    pub fn open_writable(&self) -> Outcome<Store> {
        Ok(Store::open(&self.store_dir)?)
    }

    /// Opens an existing store read-only: inspection never creates a store by mistake, and
    /// takes no lock, so it runs beside writers.
    ///
    /// The handle is never dropped: a read-only handle has no writer to seal, no flusher and
    /// no compactor (`Store::open_with`), so its drop would only free memory, one allocation
    /// at a time (a tenth of a cold `runlog experiments` on a store of 200,000 series), which
    /// the process's exit frees at once.
    pub fn open_read_only(&self) -> Outcome<ManuallyDrop<Store>> {
        self.require_store()?;
        let store = Store::open_with(
            &self.store_dir,
            StoreOptions {
                read_only: true,
                ..StoreOptions::default()
            },
        )?;
        Ok(ManuallyDrop::new(store))
    }

    /// Fails unless the store directory exists.
    pub fn require_store(&self) -> Outcome<&Path> {
        if self.store_dir.is_dir() {
            Ok(&self.store_dir)
        } else {
            Err(Failure::Message(format!(
                "no store at {} (choose one with --store or RUNLOG_STORE)",
                self.store_dir.display()
            )))
        }
    }

    /// A progress bar on stderr when it is a terminal, else a hidden one.
    pub fn progress(&self, length: u64, what: &str) -> indicatif::ProgressBar {
        if !self.interactive {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(length);
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta})",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        bar
    }
}

/// A line on stderr; a closed stderr is not worth failing for.
pub fn eprintln_quiet(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut context = Context {
        store_dir: cli.store,
        format: cli.format,
        out: Box::new(io::BufWriter::new(io::stdout().lock())),
        interactive: io::stderr().is_terminal(),
    };
    let result = run(cli.command, &mut context).and_then(|()| Ok(context.out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): what it wanted was written.
        Err(Failure::Io(error)) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(failure) => {
            // Whatever stdout holds is partial; drop it rather than fail again on a closed pipe.
            let _ = context.out.flush();
            eprintln_quiet(&format!("runlog: error: {failure}"));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, context: &mut Context) -> Outcome {
    match command {
        Command::Demo(args) => demo::run(args, context),
        Command::Ingest(args) => ingest::run(args, context),
        Command::Experiments(args) => inspect::experiments(args, context),
        Command::Runs(args) => inspect::runs(args, context),
        Command::History(args) => inspect::history(args, context),
        Command::Compare(args) => inspect::compare(args, context),
        Command::Plot(args) => plot::run(args, context),
        Command::Compact => maintain::compact(context),
        Command::Export(args) => maintain::export(args, context),
        Command::Verify => maintain::verify(context),
        Command::Stats => maintain::stats(context),
        Command::Serve(args) => serve::run(args, context),
    }
}
