//! `verify`: a read-only check of every structure of a store that carries a checksum, naming
//! each problem with its file and byte offset. It opens no handle, takes no lock and changes
//! nothing, so it can run beside writers and on a copy of a damaged store.
//!
//! What it checks:
//! - every segment of every writer: the header, every record's CRC and payload (scanning on
//!   past damage, so one bad record does not hide the next), and the chain around it (no
//!   missing sequence number, a seal on every segment that must have one, nothing after a
//!   final seal). Each segment is judged by the readers' own procedure (`wal::classify`, through
//!   `wal::reader::read_segment`), so what is a problem here is exactly what opening the store
//!   refuses;
//! - the newest compaction manifest (its CRC, layout and name), every file it lists against
//!   the length and CRC it records (manifests before version 3 record none) and, with the
//!   `parquet` feature, that the file opens as Parquet with the row count it records;
//! - that the manifest accounts for everything compacted (`compaction::survey`): a compacted
//!   file no manifest lists, or a chain that starts past its watermark, is missing history;
//!   a compaction's provable leftovers and files runlog did not write are notes.
//!
//! What the next write-open repairs is a note, not damage: the torn tail or unborn last segment
//! of a writer that died (its lock file is still there), a sealed segment it did not trim. A
//! folder without a `wal/` folder is not a store, and checking it is an error.

use std::path::{Path, PathBuf};

use crate::compaction::{manifest, survey};
use crate::error::{Error, Result};
use crate::ids::{SegmentSequence, WriterId};
use crate::layout::WAL_DIR;
use crate::wal::classify::{self, Place};
use crate::wal::reader::{self, ChainEnd, SegmentRef};
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
    crate::tracking::check_is_store(root)?;
    verify_log(&root.join(WAL_DIR), &mut report)?;
    verify_listed_chains(root, &mut report);
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
        // Asked before any segment is read, as the readers do (see `wal::classify`).
        let life = classify::chain_life(wal_dir, writer)?;
        for (index, sequence) in segments.iter().enumerate() {
            let place = Place {
                last: index + 1 == segments.len(),
                life,
            };
            let path = segment::segment_path(wal_dir, writer, *sequence);
            verify_segment(&path, (writer, *sequence), place, report);
        }
    }
    Ok(())
}

/// Reports a metadata chain that the newest manifest lists but whose files are gone, as the
/// store's follower does (`compaction::survey::check_listed_chains`). A manifest that does not load
/// is reported by the compacted part; a compaction that published a newer manifest meanwhile
/// may have deleted a chain legitimately, so the check then stands down.
fn verify_listed_chains(root: &Path, report: &mut VerifyReport) {
    let Ok(manifest) = manifest::load(root) else {
        return;
    };
    if manifest.generation == 0 {
        return;
    }
    let checked = crate::compaction::survey::check_listed_chains(&root.join(WAL_DIR), &manifest);
    let still_newest = manifest::newest_generation(root).ok() == Some(manifest.generation);
    if let Err(error) = checked
        && still_newest
    {
        report.problems.push(from_error(root, error));
    }
}

/// Judges one segment with the readers' own procedure (`wal::reader::read_segment`): what it
/// refuses is a problem, what recovery repairs is a note. A salvage scan then names any further
/// damage in the same segment, so one bad record does not hide the next.
fn verify_segment(
    path: &Path,
    (writer, sequence): (WriterId, SegmentSequence),
    place: Place,
    report: &mut VerifyReport,
) {
    // Copied as the readers copy it, so a live writer's trim during the copy is no damage.
    let bytes = match reader::load_segment(path, false) {
        Ok(bytes) => bytes,
        Err(error) => {
            report.problems.push(from_error(path, error));
            return;
        }
    };
    report.segments += 1;
    report.segment_bytes += bytes.len() as u64;
    let segment = SegmentRef {
        path,
        bytes: &bytes,
        writer,
        sequence,
        place,
    };
    let judged = reader::read_segment(segment, false, &mut Vec::new(), &mut |_| {});
    let salvaged = reader::scan_segment(&bytes, HEADER_BYTES, true, &mut |_, _| {}).ok();
    report.records += salvaged.as_ref().map_or(0, |scan| scan.record_count);
    match judged {
        Ok(end) => note_repairable_end(path, &end, salvaged.as_ref(), report),
        Err(error) => {
            let first = from_error(path, error);
            let first_offset = first.offset;
            report.problems.push(first);
            let further = salvaged.iter().flat_map(|scan| &scan.salvaged);
            for (offset, kind) in further.filter(|(offset, _)| Some(*offset) != first_offset) {
                report.problems.push(Finding {
                    path: path.to_path_buf(),
                    offset: Some(*offset),
                    message: kind.to_string(),
                });
            }
        }
    }
}

/// Notes what recovery does to the end of a dead writer's chain (or what a live writer is
/// still writing): not damage.
fn note_repairable_end(
    path: &Path,
    end: &ChainEnd,
    salvaged: Option<&reader::SegmentScan>,
    report: &mut VerifyReport,
) {
    let (offset, message) = match end {
        ChainEnd::Unborn { .. } => (0, "unborn segment (created, never written)".to_string()),
        ChainEnd::Open {
            offset,
            record_count,
            torn: Some(kind),
            ..
        } => {
            let after = salvaged
                .map_or(0, |scan| scan.record_count)
                .saturating_sub(*record_count);
            let discarded = if after > 0 {
                format!(", dropping the {after} valid records after it")
            } else {
                String::new()
            };
            (
                *offset,
                format!("torn tail ({kind}); the next write-open seals the log here{discarded}"),
            )
        }
        ChainEnd::Sealed {
            seal_offset,
            untrimmed: true,
            ..
        } => (
            *seal_offset,
            "sealed but not trimmed; the next write-open trims it".to_string(),
        ),
        ChainEnd::Open { torn: None, .. } | ChainEnd::Sealed { .. } | ChainEnd::Empty => return,
    };
    report.notes.push(Finding {
        path: path.to_path_buf(),
        offset: Some(offset),
        message,
    });
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
