//! `verify`: a read-only check of every structure of a store that carries a checksum, naming
//! each problem with its file and byte offset. It opens no handle, takes no lock and changes
//! nothing, so it can run beside writers and on a copy of a damaged store.
//!
//! What it checks:
//! - every segment of every writer: the header, every record's CRC and payload (scanning on
//!   past damage, so one bad record does not hide the next), and the chain around it (no
//!   missing sequence number, a seal on every segment but the last, nothing after a final
//!   seal);
//! - the newest compaction manifest (its CRC, layout and name), every file it lists against
//!   the length and CRC it records (manifests before version 3 record none) and, with the
//!   `parquet` feature, that the file opens as Parquet with the row count it records;
//! - that the manifest accounts for everything compacted (`compaction::survey`): a compacted
//!   file no manifest lists, or a chain that starts past its watermark, is missing history;
//!   a compaction's provable leftovers and files runlog did not write are notes.
//!
//! The last segment of a writer that died mid-append may end in a torn record: that is what
//! recovery trims at the next open, not damage, and is reported as a note. Damage followed by
//! valid records is reported as a problem wherever it is.

use std::path::{Path, PathBuf};

use crate::compaction::{manifest, survey};
use crate::error::{Error, Result};
use crate::tracking::WAL_DIR;
use crate::wal::reader::{self, SegmentEnd};
use crate::wal::segment::{self, HEADER_BYTES};

/// One finding: a file, where in it, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file.
    pub path: PathBuf,
    /// Byte offset in it, where one applies.
    pub offset: Option<u64>,
    /// What is wrong (or, for a note, what was found).
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(offset) => write!(
                f,
                "{}: byte {offset}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments scanned.
    pub segments: u64,
    /// Valid records read in them.
    pub records: u64,
    /// Bytes of segment files.
    pub segment_bytes: u64,
    /// Compacted files checked.
    pub compacted_files: u64,
    /// Damage: each makes the store fail verification.
    pub problems: Vec<Finding>,
    /// Torn tails that the next open trims (not damage).
    pub notes: Vec<Finding>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store at `root` (see the module doc). An `Err` means the check itself could not
/// run (a directory that cannot be listed); damage is reported in the report.
pub fn verify(root: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    if !root.is_dir() {
        return Err(Error::NotFound(format!("store {}", root.display())));
    }
    verify_log(&root.join(WAL_DIR), &mut report)?;
    verify_compacted(root, &mut report);
    Ok(report)
}

fn verify_log(wal_dir: &Path, report: &mut VerifyReport) -> Result<()> {
    for (writer, files) in reader::list_writers(wal_dir)? {
        let segments = &files.segments;
        for pair in segments.windows(2) {
            if pair[1].0 != pair[0].0 + 1 {
                report.problems.push(Finding {
                    path: segment::segment_path(wal_dir, writer, pair[1]),
                    offset: None,
                    message: format!(
                        "writer {writer} has no segment {} before this one",
                        pair[0].0 + 1
                    ),
                });
            }
        }
        for (index, sequence) in segments.iter().enumerate() {
            let last = index + 1 == segments.len();
            let path = segment::segment_path(wal_dir, writer, *sequence);
            verify_segment(&path, last, report);
        }
    }
    Ok(())
}

fn verify_segment(path: &Path, last: bool, report: &mut VerifyReport) {
    let problem = |offset: Option<u64>, message: String| Finding {
        path: path.to_path_buf(),
        offset,
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            report
                .problems
                .push(problem(None, format!("cannot read: {error}")));
            return;
        }
    };
    report.segments += 1;
    report.segment_bytes += bytes.len() as u64;
    let strict = reader::scan_segment(&bytes, HEADER_BYTES, false, &mut |_, _| {});
    let salvaged = reader::scan_segment(&bytes, HEADER_BYTES, true, &mut |_, _| {});
    let (strict, salvaged) = match (strict, salvaged) {
        (Ok(strict), Ok(salvaged)) => (strict, salvaged),
        (Err(_), _) if last && reader::never_written(&bytes) => {
            // Created, and the crash came before its header was synced: readers take it as
            // the chain's end, and recovery removes it when it repairs the writer.
            report.notes.push(problem(
                Some(0),
                "unborn segment (created, never written)".into(),
            ));
            return;
        }
        (Err((offset, kind)), _) | (_, Err((offset, kind))) => {
            report
                .problems
                .push(problem(Some(offset), format!("bad header: {kind}")));
            return;
        }
    };
    report.records += salvaged.record_count;
    let torn_tail = last
        && matches!(strict.end, SegmentEnd::Invalid(_))
        && salvaged.record_count == strict.record_count;
    if torn_tail {
        if let SegmentEnd::Invalid(kind) = &strict.end {
            report.notes.push(problem(
                Some(strict.end_offset),
                format!("torn tail ({kind}); the next open trims it"),
            ));
        }
    } else {
        for (offset, kind) in &salvaged.salvaged {
            report
                .problems
                .push(problem(Some(*offset), kind.to_string()));
        }
    }
    match &strict.end {
        SegmentEnd::Sealed(seal) if seal.final_segment && !last => report.problems.push(problem(
            Some(strict.end_offset),
            "final seal, but the writer has later segments".into(),
        )),
        SegmentEnd::Sealed(_) => {}
        _ if !last => report.problems.push(problem(
            Some(salvaged.end_offset),
            "no seal, but the writer has later segments".into(),
        )),
        _ => {}
    }
}

fn verify_compacted(root: &Path, report: &mut VerifyReport) {
    let manifests = manifest::ManifestCache::default();
    let (manifest, survey) = match survey::survey_newest(root, &manifests) {
        Ok(found) => found,
        Err(error) => {
            let newest = manifest::newest_generation(root).unwrap_or(0);
            report
                .problems
                .push(from_error(&manifest::path(root, newest), error));
            return;
        }
    };
    for (path, why) in survey.missing {
        report.problems.push(Finding {
            path,
            offset: None,
            message: format!("missing manifest history: {why}"),
        });
    }
    let note = |path: PathBuf, message: &str| Finding {
        path,
        offset: None,
        message: message.into(),
    };
    for path in survey.leftovers {
        report.notes.push(note(
            path,
            "a compaction's leftover (crashed before its manifest, or superseded); the next \
             compaction removes it",
        ));
    }
    for path in survey.foreign {
        report
            .notes
            .push(note(path, "not a file runlog wrote here; left alone"));
    }
    for file in &manifest.files {
        report.compacted_files += 1;
        let path = root.join(&file.path);
        if let Some(checksum) = file.checksum
            && let Err(error) = checksum.check_file(&path)
        {
            report.problems.push(from_error(&path, error));
            continue;
        }
        if let Err(message) = check_compacted_file(&path, file.rows) {
            report.problems.push(Finding {
                path,
                offset: None,
                message,
            });
        }
    }
}

#[cfg(feature = "parquet")]
fn check_compacted_file(path: &Path, rows: u64) -> std::result::Result<(), String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(|e| format!("listed by the manifest: {e}"))?;
    let reader = SerializedFileReader::new(file).map_err(|e| format!("not valid Parquet: {e}"))?;
    let found = reader.metadata().file_metadata().num_rows();
    if u64::try_from(found).ok() != Some(rows) {
        return Err(format!("{found} rows, the manifest says {rows}"));
    }
    Ok(())
}

#[cfg(not(feature = "parquet"))]
fn check_compacted_file(path: &Path, _rows: u64) -> std::result::Result<(), String> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("listed by the manifest: {e}")),
    }
}

fn from_error(path: &Path, error: Error) -> Finding {
    match error {
        Error::Corrupt(corruption) => Finding {
            path: corruption.path,
            offset: Some(corruption.offset),
            message: corruption.kind.to_string(),
        },
        other => Finding {
            path: path.to_path_buf(),
            offset: None,
            message: other.to_string(),
        },
    }
}
