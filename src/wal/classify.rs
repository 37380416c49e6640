//! The one decision of what the end of a segment means: a seal, the open end of a writer's log,
//! a segment whose creation was cut short, or damage. The full reader (`reader.rs`, and through
//! it recovery and compaction), the tail that follows other writers (`tail.rs`) and `verify` all
//! decide here, so what `verify` calls damage is exactly what opening a store refuses.
//!
//! What the writer protocol guarantees (`writer.rs`, `recovery.rs`, `docs/DURABILITY.md`):
//! - A writer's lock file is durable before its first segment is created, and is removed only
//!   after its last segment is sealed, trimmed and synced, by the writer's close or by the
//!   recovery of a dead writer. A chain with no lock file is closed: every segment of it ends
//!   with its seal, and the file ends there. (Its last seal is not always marked final: a crash
//!   between a rotation's seal and the next segment's creation leaves a non-final seal that
//!   recovery keeps. So a closed chain whose newest segments were deleted is not detected here.)
//! - A segment is sealed, trimmed and synced before the next one is created: every segment but
//!   the last of a chain ends with its seal, and the file ends there.
//! - Until it is sealed, a segment keeps the length it was preallocated with, which its header
//!   records (`segment_bytes`). The one exception is the moment between the sync of a new
//!   segment's header and the sync of its length: a crash then leaves exactly the header.
//!
//! So only the last segment of a chain that still has its lock file (a live writer, which is
//! appending there, or a dead one, which recovery seals) may end without a seal: in
//! never-written space, in a torn record, or before its header was written (unborn). Any other
//! end without a seal, and any byte after a seal, is damage.

use std::path::Path;

use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::ids::{SegmentSequence, WriterId};
use crate::wal::event::Seal;
use crate::wal::record::SEAL_RECORD_BYTES;
use crate::wal::segment::{self, HEADER_BYTES, SegmentHeader};

/// What a writer's lock file says about how its chain may end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainLife {
    /// The lock file exists: the writer is live, or died and awaits recovery. Its last segment
    /// may end without a seal.
    Unfinished,
    /// No lock file: the writer closed (or was recovered). Every segment ends with its seal.
    Closed,
}

/// Looks at `writer`'s lock file. Callers ask before reading the chain's bytes: a chain found
/// closed then cannot change while it is read.
pub fn chain_life(wal_dir: &Path, writer: WriterId) -> Result<ChainLife> {
    let path = segment::lock_path(wal_dir, writer);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(ChainLife::Unfinished),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(ChainLife::Closed),
        Err(error) => Err(Error::io("look for lock file", path, error)),
    }
}

/// Where a segment sits in its chain, and the chain's life: what decides how it may end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The last segment listed for its writer.
    pub last: bool,
    /// What the writer's lock file says.
    pub life: ChainLife,
}

impl Place {
    /// Whether the segment may end without a seal (see the module doc).
    pub fn may_end_open(self) -> bool {
        self.last && self.life == ChainLife::Unfinished
    }

    fn why_sealed(self) -> &'static str {
        if self.last {
            "its writer has no lock file, so it closed after sealing it"
        } else {
            "a later segment of its writer exists"
        }
    }
}

/// The facts about one segment file that its end is judged by.
#[derive(Clone, Copy, Debug)]
pub struct SegmentFile<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its length in bytes.
    pub len: u64,
    /// Whether its last bytes are a valid seal record.
    pub ends_with_seal: bool,
    /// Its place in the chain.
    pub place: Place,
}

fn corrupt(path: &Path, offset: u64, kind: CorruptionKind) -> Error {
    Error::Corrupt(Corruption {
        path: path.to_path_buf(),
        offset,
        kind,
    })
}

/// Judges a segment whose header does not decode (`kind` says why): `Ok` if it is a segment
/// whose creation was cut short (nothing was ever written after its header's place, and it may
/// end open), else the damage at offset 0. `body_is_zero` is asked only when it matters.
pub fn check_bad_header(
    file: SegmentFile<'_>,
    kind: CorruptionKind,
    body_is_zero: &mut dyn FnMut() -> Result<bool>,
) -> Result<()> {
    // A file is created empty and then given its whole preallocated length at once: a length
    // inside the header is a cut, not a creation.
    let creation_length = file.len == 0 || file.len >= HEADER_BYTES as u64;
    if file.place.may_end_open() && creation_length && body_is_zero()? {
        return Ok(());
    }
    Err(corrupt(file.path, 0, kind))
}

/// Checks that a decoded header names the segment's file.
pub fn check_header_names(
    path: &Path,
    header: &SegmentHeader,
    writer: WriterId,
    sequence: SegmentSequence,
) -> Result<()> {
    if header.writer == writer && header.sequence == sequence {
        return Ok(());
    }
    Err(corrupt(
        path,
        0,
        CorruptionKind::HeaderMismatch(format!(
            "header says writer {} segment {}, the file name says writer {writer} segment \
             {sequence}",
            header.writer, header.sequence
        )),
    ))
}

/// Judges a segment whose valid records end at `offset` without a seal: `torn` is the invalid
/// record found there (`None`: never-written space or the end of the file). `Ok` means the open
/// end of its writer's log; anything else is damage at `offset`.
pub fn check_open_end(
    file: SegmentFile<'_>,
    header: &SegmentHeader,
    offset: u64,
    torn: Option<CorruptionKind>,
) -> Result<()> {
    let Some(why) = why_not_open(file, header) else {
        return Ok(());
    };
    let kind = match torn {
        // Damage inside a segment that still ends with its seal: the record's own fault says
        // the most.
        Some(kind) if file.ends_with_seal => kind,
        Some(kind) => CorruptionKind::MissingSeal(format!(
            "the valid records end in an invalid one ({kind}), and {why}"
        )),
        None => CorruptionKind::MissingSeal(format!("the valid records end here, and {why}")),
    };
    Err(corrupt(file.path, offset, kind))
}

/// Whether the segment may end without a seal at all (see the module doc).
pub fn may_end_open(file: SegmentFile<'_>, header: &SegmentHeader) -> bool {
    why_not_open(file, header).is_none()
}

/// Why the segment must end with its seal, if it must.
fn why_not_open(file: SegmentFile<'_>, header: &SegmentHeader) -> Option<String> {
    if !file.place.may_end_open() {
        Some(file.place.why_sealed().to_string())
    } else if file.ends_with_seal {
        Some("the file ends with a seal further on".to_string())
    } else if !preallocated_length(header, file.len) {
        Some(format!(
            "the file is {} bytes, not the {} preallocated that its header records: it was cut",
            file.len, header.segment_bytes
        ))
    } else {
        None
    }
}

/// Whether an unsealed segment of `len` bytes has the length its writer gave it: the
/// preallocated length, or, after a crash between the syncs of its header and of its length,
/// just the header.
pub fn preallocated_length(header: &SegmentHeader, len: u64) -> bool {
    len == header.segment_bytes || len == HEADER_BYTES as u64
}

/// What a valid seal at `seal_offset` leaves to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedEnd {
    /// The file ends with the seal.
    Trimmed,
    /// Bytes follow the seal: a writer (or recovery) that sealed it died before the trim.
    /// Recovery trims it.
    Untrimmed,
}

/// Judges a seal at `seal_offset`: a final seal must end the chain, and the file ends at the
/// seal unless the segment may still be open (its sealer may have died before trimming).
pub fn check_sealed_end(file: SegmentFile<'_>, seal: &Seal, seal_offset: u64) -> Result<SealedEnd> {
    let seal_end = seal_offset + SEAL_RECORD_BYTES as u64;
    if seal.final_segment && !file.place.last {
        return Err(corrupt(file.path, seal_offset, CorruptionKind::AfterSeal));
    }
    if file.len == seal_end {
        return Ok(SealedEnd::Trimmed);
    }
    if file.place.may_end_open() {
        return Ok(SealedEnd::Untrimmed);
    }
    Err(corrupt(
        file.path,
        seal_end,
        CorruptionKind::MissingSeal(format!(
            "{} bytes follow the seal, and the file must end there: {}",
            file.len.saturating_sub(seal_end),
            file.place.why_sealed()
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            format_version: segment::FORMAT_VERSION,
            writer: WriterId(1),
            sequence: SegmentSequence(0),
            created_unix_ms: 0,
            segment_bytes: 4096,
        }
    }

    fn file(len: u64, last: bool, life: ChainLife) -> SegmentFile<'static> {
        SegmentFile {
            path: Path::new("s.wal"),
            len,
            ends_with_seal: false,
            place: Place { last, life },
        }
    }

    #[test]
    fn only_the_last_segment_of_an_unfinished_chain_may_end_open() {
        let open = |f| check_open_end(f, &header(), 100, None).is_ok();
        assert!(open(file(4096, true, ChainLife::Unfinished)));
        assert!(!open(file(4096, true, ChainLife::Closed)));
        assert!(!open(file(4096, false, ChainLife::Unfinished)));
        // Cut short: not the preallocated length.
        assert!(!open(file(2000, true, ChainLife::Unfinished)));
        // The header synced, its length not yet.
        assert!(open(file(HEADER_BYTES as u64, true, ChainLife::Unfinished)));
    }

    #[test]
    fn an_unborn_segment_needs_an_unfinished_chain_and_a_creation_length() {
        let unborn = |f| check_bad_header(f, CorruptionKind::NonZeroReserved, &mut || Ok(true));
        assert!(unborn(file(0, true, ChainLife::Unfinished)).is_ok());
        assert!(unborn(file(4096, true, ChainLife::Unfinished)).is_ok());
        assert!(unborn(file(30, true, ChainLife::Unfinished)).is_err());
        assert!(unborn(file(0, true, ChainLife::Closed)).is_err());
        assert!(unborn(file(0, false, ChainLife::Unfinished)).is_err());
    }

    #[test]
    fn bytes_after_a_seal_are_damage_unless_the_sealer_may_have_died() {
        let seal = Seal {
            record_count: 1,
            final_segment: true,
        };
        let end = 100 + SEAL_RECORD_BYTES as u64;
        let sealed = |f| check_sealed_end(f, &seal, 100);
        assert_eq!(
            sealed(file(end, true, ChainLife::Closed)).ok(),
            Some(SealedEnd::Trimmed)
        );
        assert_eq!(
            sealed(file(4096, true, ChainLife::Unfinished)).ok(),
            Some(SealedEnd::Untrimmed)
        );
        assert!(sealed(file(4096, true, ChainLife::Closed)).is_err());
        // A final seal with a later segment.
        assert!(sealed(file(end, false, ChainLife::Closed)).is_err());
    }
}
