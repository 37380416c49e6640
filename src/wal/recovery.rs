//! Recovery at open: find writers that died without closing and make their chains whole.
//!
//! A writer is live while it holds the OS lock on `wal/<id>.lock`. A lock file that can be
//! locked belongs to a dead writer. No lock file means the writer closed: ids are never reused,
//! a writer creates its lock file before its first segment, and removes it only after sealing,
//! trimming and syncing its last one, so a closed writer's chain needs nothing.
//!
//! Only dead writers are repaired, and only while holding their lock (checked to be on the file
//! still at the lock path, not one another recovery just removed):
//! - a last segment whose creation was cut short is removed;
//! - a last segment without a seal gets one at the end of its valid records (a torn record there
//!   is overwritten: it was never acknowledged), and is trimmed and synced;
//! - a sealed segment that was not trimmed is trimmed;
//! - then the lock file is removed.
//!
//! What counts as a repairable end and what as damage is `classify`'s judgement, the same the
//! readers and `verify` make: a last segment cut shorter than its preallocated length, or an
//! invalid record before a seal at the end of the file, is damage, and `recover` fails with it
//! (in salvage mode the writer is left as it is and listed in `unrepaired`).
//!
//! Sealed segments are not re-read here; the full read that follows checks every CRC.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::ids::WriterId;
use crate::io::Storage;
use crate::util::same_file;
use crate::wal::event::Seal;
use crate::wal::reader::{self, ChainEnd, ReadOptions};
use crate::wal::record::{self, FRAME_BYTES, RecordType, SEAL_RECORD_BYTES};
use crate::wal::segment;

/// What recovery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Writers found alive (their lock is held by some process).
    pub live_writers: usize,
    /// Writers that had closed cleanly.
    pub closed_writers: usize,
    /// Dead writers whose chains were repaired.
    pub repaired: Vec<Repair>,
    /// Dead writers left as they were because their last segment is corrupt (only in salvage
    /// mode; otherwise that is an error).
    pub unrepaired: Vec<crate::error::Corruption>,
}

/// One repaired writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The writer.
    pub writer: WriterId,
    /// The segment changed.
    pub path: PathBuf,
    /// What was done.
    pub action: RepairAction,
}

/// What recovery did to a dead writer's last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairAction {
    /// Sealed at `offset`; `torn` is the invalid record discarded there, if any.
    Sealed {
        /// Where the seal went.
        offset: u64,
        /// What was found at that offset.
        torn: Option<CorruptionKind>,
    },
    /// A sealed but untrimmed segment was trimmed.
    Trimmed,
    /// A segment whose creation was cut short was removed.
    RemovedUnborn,
    /// Only the lock file was left.
    RemovedLockFile,
}

/// Whether a writer is running.
#[derive(Debug)]
pub enum Liveness {
    /// Its lock is held.
    Live,
    /// Its lock file exists and we now hold its lock.
    Dead(File),
    /// It has no lock file.
    Closed,
}

/// Probes a writer's lock.
pub fn probe(wal_dir: &Path, writer: WriterId) -> Result<Liveness> {
    let path = segment::lock_path(wal_dir, writer);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Liveness::Closed),
        Err(error) => return Err(Error::io("open lock file", path, error)),
    };
    match file.try_lock() {
        Ok(()) if same_file(&file, &path) => Ok(Liveness::Dead(file)),
        // Another recovery removed it after we opened it: that writer is dealt with.
        Ok(()) => Ok(Liveness::Closed),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Liveness::Live),
        Err(std::fs::TryLockError::Error(error)) => Err(Error::io("lock", path, error)),
    }
}

/// Repairs every dead writer in `wal_dir`.
pub fn recover(wal_dir: &Path, storage: &dyn Storage, salvage: bool) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    for (writer, files) in reader::list_writers(wal_dir)? {
        let lock = match probe(wal_dir, writer)? {
            Liveness::Live => {
                report.live_writers += 1;
                continue;
            }
            Liveness::Closed => {
                report.closed_writers += 1;
                continue;
            }
            Liveness::Dead(lock) => lock,
        };
        match repair_last_segment(wal_dir, writer, &files.segments, storage) {
            Ok(Some(action)) => report.repaired.push(action),
            Ok(None) => {}
            Err(Error::Corrupt(corruption)) if salvage => {
                // Leave the writer (and its lock file) as they are for a later look.
                report.unrepaired.push(corruption);
                continue;
            }
            Err(error) => return Err(error),
        }
        let path = segment::lock_path(wal_dir, writer);
        match storage.remove(&path) {
            Ok(()) => {}
            // Another process's recovery got there first.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io("remove lock file", path, error)),
        }
        storage
            .sync_dir(wal_dir)
            .map_err(|e| Error::io("fsync", wal_dir, e))?;
        drop(lock);
        if files.segments.is_empty() {
            report.repaired.push(Repair {
                writer,
                path,
                action: RepairAction::RemovedLockFile,
            });
        }
    }
    Ok(report)
}

fn repair_last_segment(
    wal_dir: &Path,
    writer: WriterId,
    segments: &[crate::ids::SegmentSequence],
    storage: &dyn Storage,
) -> Result<Option<Repair>> {
    let Some(last) = segments.last() else {
        return Ok(None);
    };
    let read = reader::read_chain(
        wal_dir,
        writer,
        std::slice::from_ref(last),
        ReadOptions {
            salvage: false,
            writer_locked: true,
        },
        &mut |_| {},
    )?;
    let (path, action) = match read.end {
        ChainEnd::Empty
        | ChainEnd::Sealed {
            untrimmed: false, ..
        } => return Ok(None),
        ChainEnd::Sealed {
            path, seal_offset, ..
        } => {
            let file = open_rw(&path)?;
            trim(
                storage,
                &path,
                &file,
                seal_offset + SEAL_RECORD_BYTES as u64,
            )?;
            (path, RepairAction::Trimmed)
        }
        ChainEnd::Unborn { path } => {
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove unborn segment", path.clone(), e))?;
            storage
                .sync_dir(wal_dir)
                .map_err(|e| Error::io("fsync", wal_dir, e))?;
            (path, RepairAction::RemovedUnborn)
        }
        ChainEnd::Open {
            path,
            offset,
            record_count,
            torn,
        } => {
            let file = open_rw(&path)?;
            let mut seal = vec![0u8; FRAME_BYTES];
            Seal {
                record_count,
                final_segment: true,
            }
            .encode(&mut seal);
            record::encode_frame(&mut seal, RecordType::Seal, 0);
            storage
                .write_at(&path, &file, offset, &seal)
                .map_err(|e| Error::io("write seal", path.clone(), e))?;
            trim(storage, &path, &file, offset + SEAL_RECORD_BYTES as u64)?;
            (path, RepairAction::Sealed { offset, torn })
        }
    };
    Ok(Some(Repair {
        writer,
        path,
        action,
    }))
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Trims a repaired segment to end right after its seal. Everything before the seal is synced
/// first: a file that ends with a seal is taken as sealed and complete, so the trim must not
/// reach the disk ahead of the records (or the seal) it follows.
fn trim(storage: &dyn Storage, path: &Path, file: &File, len: u64) -> Result<()> {
    storage
        .sync_file(path, file)
        .map_err(|e| Error::io("fsync", path, e))?;
    storage
        .set_len(path, file, len)
        .map_err(|e| Error::io("trim segment", path, e))?;
    storage
        .sync_file(path, file)
        .map_err(|e| Error::io("fsync", path, e))
}
