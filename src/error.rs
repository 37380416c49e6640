//! Errors. One umbrella [`Error`]; corruption carries the file, the offset and what was
//! expected and found, so that a user can locate the damage with a hex dump.
//!
//! Operating errors (I/O, full disk, bad input) are `Result`s. Broken internal invariants are
//! assertions, never errors.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::ids::{RunId, WriterId};

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in runlog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done (`"create segment"`, `"msync"`, ...).
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The disk (or a file-size limit) has no room. Nothing acknowledged was lost; free space
    /// and retry, or reopen the store.
    #[error("no space left for {operation} {path}: {source}")]
    StorageFull {
        /// What was being done.
        operation: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error (ENOSPC, EFBIG or EDQUOT).
        source: io::Error,
    },
    /// A file on disk does not hold what the format says it must.
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    /// An earlier msync/fsync failed. The kernel may have dropped the dirty pages, so this writer
    /// refuses every further append; reopen the store to replay what is on disk.
    #[error("writer {writer} is poisoned after a failed sync ({cause}); reopen the store")]
    Poisoned {
        /// The writer that failed.
        writer: WriterId,
        /// The error that poisoned it.
        cause: String,
    },
    /// The handle was opened by another process, of which this one is a forked child. Its
    /// segments and locks belong to the parent; the child must open the store itself.
    #[error(
        "this handle was opened by process {owner_pid}; a forked child (process {pid}) must open the store itself"
    )]
    Forked {
        /// The process that opened the handle.
        owner_pid: u32,
        /// The calling process.
        pid: u32,
    },
    /// A read was overtaken by compactions every time it started over: each attempt found
    /// what it had chosen to read (named here) replaced by a newer manifest. Nothing is
    /// damaged; the read may be retried, or compactions made less frequent.
    #[error("read kept being overtaken by compaction: {what} changed under it {attempts} times")]
    StaleRead {
        /// What moved under the read (a file, a folder, or the manifest).
        what: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The caller passed something the engine cannot accept.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// An experiment, run or artifact that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A folder opened without creating a store (read-only, or `verify`) lacks the store's
    /// layout: reading it as an empty store would hide a wrong path.
    #[error(
        "{} is not a runlog store: it has no wal/ folder (write commands create one)",
        .0.display()
    )]
    NotAStore(PathBuf),
    /// Creating something whose name is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A param logged again with a different value: params are immutable, as in MLflow.
    #[error(
        "param '{key}' of run {run} is already '{existing}'; refusing '{attempted}' \
         (params are immutable; use a tag for values that change)"
    )]
    ParamChanged {
        /// The run.
        run: RunId,
        /// The param key.
        key: String,
        /// The value logged first.
        existing: String,
        /// The value refused.
        attempted: String,
    },
    /// A search filter or ordering that does not parse.
    #[error(transparent)]
    InvalidFilter(#[from] FilterError),
    /// Logging to a run (or experiment) that is deleted.
    #[error("{what} is deleted; restore it before logging to it")]
    Deleted {
        /// What is deleted (`"run 0123..."`).
        what: String,
    },
}

/// A filter or ordering that does not parse: the text, where and why. Its message names fields
/// and operators as MLflow does (`start_time`, `>`). The filter parser (`query`) makes it; it
/// lives here so that the umbrella [`Error`] can wrap it without depending on the parser.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid filter at column {column}: {message}\n  {input}\n  {caret:>column$}",
    caret = "^"
)]
pub struct FilterError {
    /// The text given.
    pub input: String,
    /// 1-based character column of the problem.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl FilterError {
    /// The same error, reported against the whole `input` it was found in.
    pub(crate) fn within(mut self, input: &str) -> FilterError {
        self.input = input.to_string();
        self
    }
}

impl Error {
    /// Wraps an I/O error, classifying "no space" errors as [`Error::StorageFull`].
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        let full = matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
        ) || source.kind() == io::ErrorKind::StorageFull;
        if full {
            Error::StorageFull {
                operation,
                path,
                source,
            }
        } else {
            Error::Io {
                operation,
                path,
                source,
            }
        }
    }
}

/// Damage found in a file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {path} at byte {offset}: {kind}")]
pub struct Corruption {
    /// The damaged file.
    pub path: PathBuf,
    /// Byte offset of the damaged structure inside the file.
    pub offset: u64,
    /// What is wrong.
    pub kind: CorruptionKind,
}

/// What is wrong with a damaged structure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The file is shorter than a segment header.
    TruncatedHeader {
        /// Bytes present.
        found_bytes: u64,
    },
    /// The magic bytes are not runlog's.
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The file was written by a newer (or unknown) format version.
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// A checksum did not match its data.
    ChecksumMismatch {
        /// Which structure (`"segment header"`, `"record"`, `"stream ops"`).
        what: &'static str,
        /// Checksum stored in the file.
        expected: u32,
        /// Checksum of the bytes actually present.
        found: u32,
    },
    /// A length field points past the end of the file.
    LengthPastEnd {
        /// Bytes the structure claims.
        length: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A record type this version does not know.
    UnknownRecordType(u8),
    /// A record's bytes are not zero where the format requires them to be.
    NonZeroReserved,
    /// A payload that passed its checksum but does not decode.
    MalformedPayload(String),
    /// A header field disagrees with the file name or the writer's chain.
    HeaderMismatch(String),
    /// Data the manifest in force does not account for: a compacted file no manifest lists, or
    /// a chain that starts past what the manifest covers. A manifest is missing.
    MissingHistory(String),
    /// A file the manifest in force lists is gone, while no newer manifest replaced it.
    MissingFile,
    /// A segment of a writer's chain is missing.
    MissingSegment {
        /// The writer whose chain has the gap.
        writer: WriterId,
        /// The missing sequence number.
        sequence: u64,
    },
    /// A final seal followed by another segment of the same writer.
    AfterSeal,
    /// A segment ends without its seal, or runs on past it, where the writer protocol
    /// guarantees that it ends with its seal (the reason says why).
    MissingSeal(String),
    /// A file's content does not match the digest recorded for it.
    DigestMismatch {
        /// SHA-256 recorded in the log, hex.
        expected: String,
        /// SHA-256 of the bytes on disk, hex.
        found: String,
    },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::TruncatedHeader { found_bytes } => {
                write!(
                    f,
                    "file is {found_bytes} bytes, shorter than a segment header"
                )
            }
            CorruptionKind::BadMagic { found } => write!(f, "bad magic {found:02x?}"),
            CorruptionKind::UnsupportedVersion { found, supported } => write!(
                f,
                "format version {found} is not supported (this build reads up to {supported}); \
                 upgrade runlog"
            ),
            CorruptionKind::ChecksumMismatch {
                what,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{what} checksum mismatch: stored {expected:#010x}, computed {found:#010x}"
                )
            }
            CorruptionKind::LengthPastEnd { length, available } => {
                write!(
                    f,
                    "length {length} runs past the end ({available} bytes left)"
                )
            }
            CorruptionKind::UnknownRecordType(t) => write!(f, "unknown record type {t}"),
            CorruptionKind::NonZeroReserved => write!(f, "reserved bytes are not zero"),
            CorruptionKind::MalformedPayload(why) => write!(f, "malformed payload: {why}"),
            CorruptionKind::HeaderMismatch(why) => write!(f, "header mismatch: {why}"),
            CorruptionKind::MissingHistory(why) => write!(f, "missing manifest history: {why}"),
            CorruptionKind::MissingFile => {
                write!(
                    f,
                    "listed by the manifest in force, but the file is missing"
                )
            }
            CorruptionKind::MissingSegment { writer, sequence } => {
                write!(f, "writer {writer} has no segment {sequence}")
            }
            CorruptionKind::AfterSeal => write!(f, "a segment follows the writer's final seal"),
            CorruptionKind::MissingSeal(why) => write!(f, "no seal where one must be: {why}"),
            CorruptionKind::DigestMismatch { expected, found } => {
                write!(f, "content SHA-256 is {found}, the log recorded {expected}")
            }
        }
    }
}
