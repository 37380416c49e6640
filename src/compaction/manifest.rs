//! The compaction manifest: which Parquet files hold which compacted points, how far each
//! writer's log they cover, and which log chains hold the metadata of deleted segments. One file
//! per generation, `manifest/<generation:010>.manifest`, written once (published without
//! replacing) and never changed. In version 4 a file is either a base, the whole manifest, or an
//! edit of what one compaction changed (`edit.rs`); the state of a generation is the base it
//! names with every edit after it applied in order. A compaction writes an edit until the edits
//! on a base would pass half the base's bytes, then a new base (`publish_next`).
//!
//! ```text
//! magic          8  "RUNLOGMF"
//! version        2  u16 LE (4; versions 1 to 3 still read)
//! kind           1  (v4) 0: a base, the body below; 1: an edit (`edit.rs`)
//! body           n  see below, the codec of `wal/codec.rs`
//! crc            4  CRC-32 (IEEE) of every byte before it
//!
//! body:
//!   generation u64
//!   runs       (v3) u32 count, then each run id the manifest names once: u128, ascending
//!   keys       (v3) u32 count, then each key name it names once: str, ascending
//!   (in v3, every run and key below is a varint index into these tables)
//!   writers    u32 count, then per writer:
//!                writer u64, through u64 (every segment up to this sequence is compacted),
//!                finished u8 (v2: its final segment is compacted),
//!                keys u32 count, then per key: run u128, key_id u32, key str,
//!                summaries (v2) u32 count, then per series: run u128, key str, summary
//!   metadata   (v2) u32 count, then per chain: writer u64
//!   files      u32 count, then per file:
//!                experiment u64, generation u64, path str (relative to the store root),
//!                (v3) bytes u64 and crc u32 of the whole file (bytes u64::MAX: none known),
//!                rows u64, series u32 count, then per series:
//!                  run u128, key str, row_start u64 (v1, v2 only: v3 starts each series where
//!                  the one before ended), row_count, first_step, last_step - first_step
//!                  (u64, i64, i64 in v1 and v2; varint, zigzag varint, varint in v3)
//!
//! summary: count, first_step, last_step - first_step, last_value f64 (bits), last_timestamp,
//!   min_value f64, min_step, max_value f64, max_step, sum f64, finite_count. v1 and v2 store
//!   each as 8 bytes (the step difference as last_step itself); v3 the floats as 8 bytes,
//!   counts as varints and steps and the timestamp as zigzag varints (39 to 102 bytes).
//! ```
//!
//! Invariants: every point of a compacted segment (sequence <= its writer's `through`) is in
//! exactly one listed file, and no point of a later segment is; a writer's `summaries` are those
//! of exactly the points of its compacted segments; every non-metric event of a compacted
//! segment is in a listed metadata chain (or a chain a merge of them produced). So the
//! summaries, the metadata chains and the log after the watermarks make up the whole catalog,
//! and compacted segments may be deleted. Summaries are kept per writer so that a handle can
//! rebuild what other writers contributed without touching what it logged itself. Readers take
//! the newest manifest's state; each file of it was published complete and synced before
//! anything relied on it, so one that does not check is damage, reported as `Error::Corrupt`
//! naming that file, not skipped. A compaction removes no file of the chains of the state it
//! writes and of the one before, so both stay loadable.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::ids::{ExperimentId, KeyId, RunId, SegmentSequence, WriterId};
use crate::io::{Storage, create_dirs, publish};
use crate::summary::MetricSummary;
pub use crate::summary::WriterMark;
use crate::wal::codec::{Decoder, Encoder, unzigzag, varint_length, zigzag};

pub use super::edit::ManifestEdit;
use super::encoded::{Indexer, Scanned};
pub use super::encoded::EncodedSummaries;

const MAGIC: [u8; 8] = *b"RUNLOGMF";
/// Bases and edits.
pub(super) const VERSION: u16 = 4;
/// One whole manifest per generation.
const VERSION_3: u16 = 3;
/// No file checksums.
const VERSION_2: u16 = 2;
/// Stage one's manifests: no summaries, no metadata chains, no `finished` flags.
const VERSION_1: u16 = 1;
/// The kind byte of a version 4 base: a whole manifest.
const KIND_BASE: u8 = 0;
/// The kind byte of a version 4 edit: what one compaction changed.
pub(super) const KIND_EDIT: u8 = 1;
/// `bytes` of a file entry with no checksum (read from a version 1 or 2 manifest).
const NO_CHECKSUM_BYTES: u64 = u64::MAX;
pub use crate::layout::MANIFEST_DIR;
use crate::layout::{COMPACTED_EXTENSION, MANIFEST_EXTENSION as EXTENSION};

/// One series' rows in a file (files are sorted by run, key, step, so they are contiguous).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesRows {
    /// The run.
    pub run: RunId,
    /// The key, shared by every series of it in the manifest: a manifest lists a file's every
    /// series, and a `String` each was a tenth of loading one of 200,000 series.
    pub key: Arc<str>,
    /// First row.
    pub row_start: u64,
    /// Number of rows.
    pub row_count: u64,
    /// Smallest step.
    pub first_step: i64,
    /// Greatest step.
    pub last_step: i64,
}

/// What a compacted file's bytes must be: a file is immutable once published, so any other
/// length or CRC is damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileChecksum {
    /// Its length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of all its bytes.
    pub crc: u32,
}

impl FileChecksum {
    /// Checks the file at `path` against this checksum, reading it whole.
    pub fn check_file(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        self.check_open_file(path, &file)
    }

    /// Checks `file`, open at `path`, against this checksum: its length, then its CRC.
    pub fn check_open_file(&self, path: &Path, file: &std::fs::File) -> Result<()> {
        let length = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        self.check_length(path, length)?;
        self.check_crc(path, crc_of_file(path, file, length)?)
    }

    /// The checksum of the file at `path`.
    pub fn of_file(path: &Path) -> Result<FileChecksum> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let crc = crc_of_file(path, &file, bytes)?;
        Ok(FileChecksum { bytes, crc })
    }

    /// Checks that the file at `path` is `length` bytes long, as recorded.
    pub fn check_length(&self, path: &Path, length: u64) -> Result<()> {
        if length == self.bytes {
            return Ok(());
        }
        Err(compacted_file_damage(
            path,
            CorruptionKind::HeaderMismatch(format!(
                "the compacted file is {length} bytes, the manifest says {}",
                self.bytes
            )),
        ))
    }

    fn check_crc(&self, path: &Path, found: u32) -> Result<()> {
        if found == self.crc {
            return Ok(());
        }
        Err(compacted_file_damage(
            path,
            CorruptionKind::ChecksumMismatch {
                what: "compacted file",
                expected: self.crc,
                found,
            },
        ))
    }
}

/// The CRC-32 of the first `length` bytes of `file`, read in chunks so that a large file
/// needs no buffer of its size.
fn crc_of_file(path: &Path, file: &std::fs::File, length: u64) -> Result<u32> {
    use std::os::unix::fs::FileExt;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; CHECK_CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < length {
        let chunk = buffer
            .len()
            .min(usize::try_from(length - offset).unwrap_or(usize::MAX));
        let part = &mut buffer[..chunk];
        file.read_exact_at(part, offset)
            .map_err(|e| Error::io("read", path, e))?;
        hasher.update(part);
        offset += chunk as u64;
    }
    Ok(hasher.finalize())
}

fn compacted_file_damage(path: &Path, kind: CorruptionKind) -> Error {
    Error::Corrupt(Corruption {
        path: path.to_path_buf(),
        offset: 0,
        kind,
    })
}

/// Bytes a file check reads at a time.
const CHECK_CHUNK_BYTES: usize = 1024 * 1024;

/// One compacted Parquet file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactedFile {
    /// Its experiment.
    pub experiment: ExperimentId,
    /// The generation that wrote it.
    pub generation: u64,
    /// Path relative to the store root.
    pub path: String,
    /// Its length and CRC (`None`: read from a version 1 or 2 manifest, which had none).
    pub checksum: Option<FileChecksum>,
    /// Rows.
    pub rows: u64,
    /// Its series, in file order.
    pub series: Vec<SeriesRows>,
}

/// A manifest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    /// The format version it was read from (0: no manifest yet; written as the current one).
    pub version: u16,
    /// Its generation (0: nothing compacted yet).
    pub generation: u64,
    /// Per writer, how far it is compacted.
    pub writers: BTreeMap<WriterId, WriterMark>,
    /// Chains written by compaction that hold the non-metric events of compacted segments.
    pub metadata: BTreeSet<WriterId>,
    /// The files, oldest generation first.
    pub files: Vec<CompactedFile>,
    /// The summaries of the writers whose marks hold none, left encoded: only in a manifest
    /// loaded for reading (`ManifestCache`), empty in one loaded to be changed and encoded
    /// (`encoded.rs`). Read a writer's summaries through `each_of_run` and `runs_of`.
    #[doc(hidden)]
    pub encoded_summaries: EncodedSummaries,
}

impl Manifest {
    /// Whether the files' summaries and the metadata chains stand in for the compacted
    /// segments, so a catalog may start from them and skip those segments. False for a
    /// version 1 manifest: stage one kept every segment and wrote no summaries.
    pub fn covers_catalog(&self) -> bool {
        self.version != VERSION_1
    }

    /// The distinct runs of `writer`'s summaries, ascending, wherever they are kept.
    pub fn runs_of(&self, writer: WriterId) -> Vec<RunId> {
        if let Some(runs) = self.encoded_summaries.runs_of(writer) {
            return runs;
        }
        self.writers
            .get(&writer)
            .map(WriterMark::runs)
            .unwrap_or_default()
    }

    /// This manifest with every writer's summaries in its mark: itself when none is left
    /// encoded, otherwise a copy, so that a manifest loaded for reading can still be encoded
    /// or compared rather than give a wrong answer.
    pub(super) fn decoded(&self) -> std::borrow::Cow<'_, Manifest> {
        if self.encoded_summaries.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut whole = self.clone();
        let writers: Vec<WriterId> = whole.encoded_summaries.writers();
        for writer in writers {
            whole.decode_writer(writer);
        }
        std::borrow::Cow::Owned(whole)
    }

    /// Moves `writer`'s summaries into its mark if they are left encoded, so that its mark
    /// can be changed (an edit) or compared.
    pub(super) fn decode_writer(&mut self, writer: WriterId) {
        if self.encoded_summaries.holds(writer) {
            let summaries = self.encoded_summaries.take_writer(writer);
            self.writers.entry(writer).or_default().summaries = summaries;
        }
    }
}

impl crate::summary::CompactedSummaries for Manifest {
    fn each_of_run(
        &self,
        writer: WriterId,
        run: RunId,
        each: &mut dyn FnMut(&str, &MetricSummary),
    ) {
        if self.encoded_summaries.holds(writer) {
            self.encoded_summaries.each_of_run(writer, run, each);
        } else if let Some(mark) = self.writers.get(&writer) {
            mark.each_of_run(run, each);
        }
    }
}

impl Manifest {
    /// Encodes the manifest as a version 4 base, with its header and CRC. A manifest from
    /// `ManifestCache`, whose summaries may be left encoded, is encoded from a decoded copy.
    pub fn encode(&self) -> Vec<u8> {
        if !self.encoded_summaries.is_empty() {
            return self.decoded().encode();
        }
        let mut out = header(KIND_BASE);
        let names = Names::of(self);
        let mut e = Encoder::new(&mut out);
        e.u64(self.generation);
        names.encode(&mut e);
        e.u32(self.writers.len() as u32);
        for (writer, mark) in &self.writers {
            e.u64(writer.0);
            e.u64(mark.through.map_or(u64::MAX, |s| s.0));
            e.u8(u8::from(mark.finished));
            e.u32(mark.keys.len() as u32);
            for ((run, key_id), key) in &mark.keys {
                names.put_run(&mut e, *run);
                e.u32(key_id.0);
                names.put_key(&mut e, key);
            }
            e.u32(mark.summaries.len() as u32);
            for ((run, key), summary) in &mark.summaries {
                names.put_run(&mut e, *run);
                names.put_key(&mut e, key);
                encode_summary(&mut e, summary);
            }
        }
        e.u32(self.metadata.len() as u32);
        for writer in &self.metadata {
            e.u64(writer.0);
        }
        e.u32(self.files.len() as u32);
        for file in &self.files {
            encode_file(&mut e, &names, file);
        }
        seal(out)
    }

    /// Decodes and checks a manifest that stands alone: a version 4 base, or a version 1 to
    /// 3 manifest. A version 4 edit is refused here; `ManifestFile::decode` takes both.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, CorruptionKind> {
        match ManifestFile::decode(bytes)? {
            ManifestFile::Base(manifest) => Ok(manifest),
            ManifestFile::Edit(edit) => Err(CorruptionKind::MalformedPayload(format!(
                "an edit of generation {} (on base {}), not a whole manifest",
                edit.generation(),
                edit.base()
            ))),
        }
    }

    /// Decodes the body of a base (version 4) or of a version 1 to 3 manifest. With `file`
    /// (the file's bytes, which `d` reads), version 3 and 4 summaries are indexed and left
    /// encoded (`encoded.rs`) rather than decoded.
    fn decode_body(
        d: &mut Decoder<'_>,
        version: u16,
        file: Option<&Arc<Vec<u8>>>,
    ) -> Result<Manifest, CorruptionKind> {
        let v2 = version >= VERSION_2;
        let v3 = version >= VERSION_3;
        let generation = d.u64()?;
        let names = if v3 {
            Some(NameTables::decode(d)?)
        } else {
            None
        };
        let mut indexer = match (file, &names) {
            (Some(file), Some(names)) => Some(Indexer::new(
                Arc::clone(file),
                &names.runs,
                &names.keys,
            )),
            _ => None,
        };
        let names = names.as_ref();
        let mut writers = BTreeMap::new();
        for _ in 0..bounded(d, 8 + 8 + 4)? {
            let writer = WriterId(d.u64()?);
            let through = decode_through(d)?;
            let finished = if v2 { decode_finished(d)? } else { false };
            let mut keys = BTreeMap::new();
            for _ in 0..bounded(d, NameTables::run_bytes_min(names) + 4 + 1)? {
                let run = NameTables::run(names, d)?;
                let key_id = KeyId(d.u32()?);
                keys.insert((run, key_id), NameTables::key(names, d)?);
            }
            let summaries = if v2 {
                decode_summaries(d, names, v3, writer, indexer.as_mut())?
            } else {
                BTreeMap::new()
            };
            let mark = WriterMark {
                through,
                finished,
                keys,
                summaries,
            };
            writers.insert(writer, mark);
        }
        let mut metadata = BTreeSet::new();
        if v2 {
            for _ in 0..bounded(d, 8)? {
                metadata.insert(WriterId(d.u64()?));
            }
        }
        let mut files = Vec::new();
        for _ in 0..bounded(d, 8 + 8 + 4 + 8 + 4)? {
            files.push(decode_file(d, names)?);
        }
        let encoded_summaries = match (indexer, names) {
            (Some(indexer), Some(tables)) => {
                indexer.finish(tables.keys.clone())
            }
            _ => EncodedSummaries::default(),
        };
        let manifest = Manifest {
            version,
            generation,
            writers,
            metadata,
            files,
            encoded_summaries,
        };
        manifest.check_fields()?;
        Ok(manifest)
    }

    /// Checks each field against its context, beyond what the CRC proves: a manifest that
    /// checks out byte for byte may still have been written wrong, or be a copy standing
    /// under another name (`load` checks the name).
    fn check_fields(&self) -> Result<(), CorruptionKind> {
        if self.generation == 0 {
            return Err(CorruptionKind::MalformedPayload(
                "generation 0 is no manifest's".into(),
            ));
        }
        self.files
            .iter()
            .try_for_each(|file| check_file(file, self.generation))
    }
}

/// A writer's summaries (version 2 on), decoded; or, with an `indexer` (version 3 on), indexed
/// and left encoded when they are in order (`encoded.rs`), which returns none here.
fn decode_summaries(
    d: &mut Decoder<'_>,
    names: Option<&NameTables>,
    v3: bool,
    writer: WriterId,
    indexer: Option<&mut Indexer>,
) -> Result<BTreeMap<(RunId, String), MetricSummary>, CorruptionKind> {
    let summary_bytes_min = if v3 {
        SUMMARY_BYTES_MIN
    } else {
        SUMMARY_BYTES_V2
    };
    let entry_bytes_min = NameTables::run_bytes_min(names) + 1 + summary_bytes_min;
    let count = bounded(d, entry_bytes_min)?;
    if let (Some(indexer), Some(tables)) = (indexer, names) {
        let restart = (d.clone(), tables.key_bytes_left.get());
        match indexer.scan(d, writer, count, tables)? {
            Scanned::Indexed => return Ok(BTreeMap::new()),
            Scanned::OutOfOrder => {
                indexer.forget(writer);
                *d = restart.0;
                tables.key_bytes_left.set(restart.1);
            }
        }
    }
    let mut summaries = BTreeMap::new();
    for _ in 0..count {
        let run = NameTables::run(names, d)?;
        let key = NameTables::key(names, d)?;
        let summary = if v3 {
            decode_summary(d)?
        } else {
            decode_summary_v2(d)?
        };
        summaries.insert((run, key), summary);
    }
    Ok(summaries)
}

/// Checks a file entry of a manifest (or edit) of `generation`: the file is not newer than it,
/// its path is its own name, and its series tile its rows.
pub(super) fn check_file(file: &CompactedFile, generation: u64) -> Result<(), CorruptionKind> {
    let malformed = |why: String| Err(CorruptionKind::MalformedPayload(why));
    if file.generation == 0 || file.generation > generation {
        return malformed(format!(
            "file {} is of generation {}, not in 1..={generation}",
            file.path, file.generation
        ));
    }
    if !is_file_path(file) {
        return malformed(format!(
            "file path {:?} is not experiments/{}/{:010}[-merged].parquet",
            file.path, file.experiment, file.generation
        ));
    }
    check_series(file)
}

/// The header of a version 4 file of `kind`: magic, version, kind.
pub(super) fn header(kind: u8) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(kind);
    out
}

/// Appends the CRC-32 of every byte of `out`.
pub(super) fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A manifest file as decoded: a whole manifest (a version 4 base, or a version 1 to 3
/// manifest), or a version 4 edit, which holds only what one compaction changed and means
/// something only applied to the state before it.
#[derive(Clone, Debug, PartialEq)]
pub enum ManifestFile {
    /// A whole manifest.
    Base(Manifest),
    /// What one compaction changed.
    Edit(ManifestEdit),
}

impl ManifestFile {
    /// Decodes and checks a manifest file of any version: its CRC first, then its header,
    /// then its body.
    pub fn decode(bytes: &[u8]) -> Result<ManifestFile, CorruptionKind> {
        ManifestFile::decode_with(bytes, None)
    }

    /// `decode`, with a base's version 3 and 4 summaries indexed and left encoded in `file`
    /// (`encoded.rs`): for a manifest that is only read.
    pub(crate) fn decode_indexed(file: Arc<Vec<u8>>) -> Result<ManifestFile, CorruptionKind> {
        ManifestFile::decode_with(&file, Some(&file))
    }

    fn decode_with(
        bytes: &[u8],
        file: Option<&Arc<Vec<u8>>>,
    ) -> Result<ManifestFile, CorruptionKind> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err(CorruptionKind::TruncatedHeader {
                found_bytes: bytes.len() as u64,
            });
        };
        let expected = u32::from_le_bytes(*crc);
        let found = crc32fast::hash(body);
        if expected != found {
            return Err(CorruptionKind::ChecksumMismatch {
                what: "manifest",
                expected,
                found,
            });
        }
        let mut d = Decoder::new(body);
        let mut magic = [0u8; 8];
        magic.copy_from_slice(d.take(8)?);
        if magic != MAGIC {
            return Err(CorruptionKind::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes([d.u8()?, d.u8()?]);
        if !(VERSION_1..=VERSION).contains(&version) {
            return Err(CorruptionKind::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let kind = if version == VERSION {
            d.u8()?
        } else {
            KIND_BASE
        };
        let file = match kind {
            KIND_BASE => ManifestFile::Base(Manifest::decode_body(&mut d, version, file)?),
            KIND_EDIT => ManifestFile::Edit(ManifestEdit::decode_body(&mut d)?),
            other => {
                return Err(CorruptionKind::MalformedPayload(format!(
                    "kind {other} is neither a base (0) nor an edit (1)"
                )));
            }
        };
        d.finish()?;
        Ok(file)
    }

    /// Encodes the file (a whole manifest of any version as a version 4 base). Compaction
    /// publishes through `publish_next`; this is for tests and fuzz seeds.
    #[cfg(any(test, feature = "testing"))]
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ManifestFile::Base(manifest) => manifest.encode(),
            ManifestFile::Edit(edit) => edit.encode(),
        }
    }

    /// The generation the file holds.
    pub fn generation(&self) -> u64 {
        match self {
            ManifestFile::Base(manifest) => manifest.generation,
            ManifestFile::Edit(edit) => edit.generation(),
        }
    }
}

/// A watermark: `u64::MAX` is none.
pub(super) fn decode_through(
    d: &mut Decoder<'_>,
) -> Result<Option<SegmentSequence>, CorruptionKind> {
    Ok(match d.u64()? {
        u64::MAX => None,
        sequence => Some(SegmentSequence(sequence)),
    })
}

pub(super) fn encode_through(e: &mut Encoder<'_>, through: Option<SegmentSequence>) {
    e.u64(through.map_or(u64::MAX, |s| s.0));
}

/// A `finished` byte: 0 or 1, anything else is damage.
pub(super) fn decode_finished(d: &mut Decoder<'_>) -> Result<bool, CorruptionKind> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(CorruptionKind::MalformedPayload(format!(
            "finished flag {other} is neither 0 nor 1"
        ))),
    }
}

/// A file entry as version 3 and 4 write it.
pub(super) fn encode_file(e: &mut Encoder<'_>, names: &Names<'_>, file: &CompactedFile) {
    e.u64(file.experiment.0);
    e.u64(file.generation);
    e.str(&file.path);
    e.u64(file.checksum.map_or(NO_CHECKSUM_BYTES, |c| c.bytes));
    e.u32(file.checksum.map_or(0, |c| c.crc));
    e.u64(file.rows);
    e.u32(file.series.len() as u32);
    for series in &file.series {
        names.put_run(e, series.run);
        names.put_key(e, &series.key);
        // row_start is where the series before ended (`check_series`).
        e.varint(series.row_count);
        e.varint(zigzag(series.first_step));
        e.varint(series.last_step.wrapping_sub(series.first_step) as u64);
    }
}

/// A file entry; `names` is `None` for versions 1 and 2, which store names in place and no
/// checksum.
pub(super) fn decode_file(
    d: &mut Decoder<'_>,
    names: Option<&NameTables>,
) -> Result<CompactedFile, CorruptionKind> {
    let experiment = ExperimentId(d.u64()?);
    let generation = d.u64()?;
    let path = d.string()?;
    let checksum = if names.is_some() {
        match (d.u64()?, d.u32()?) {
            (NO_CHECKSUM_BYTES, _) => None,
            (bytes, crc) => Some(FileChecksum { bytes, crc }),
        }
    } else {
        None
    };
    let rows = d.u64()?;
    let series_bytes_min = if names.is_some() {
        1 + 1 + 3
    } else {
        16 + 4 + 8 * 4
    };
    // Sized at once: `bounded` proved the bytes hold this many, and growing a list of 10,000
    // series by doubling cost a fifth of a large manifest's load.
    let count = bounded(d, series_bytes_min)?;
    let mut series = Vec::with_capacity(count as usize);
    let mut next_row = 0u64;
    for _ in 0..count {
        let rows = if let Some(names) = names {
            decode_series(d, names, next_row)?
        } else {
            decode_series_v2(d)?
        };
        next_row = rows.row_start.saturating_add(rows.row_count);
        series.push(rows);
    }
    Ok(CompactedFile {
        experiment,
        generation,
        path,
        checksum,
        rows,
        series,
    })
}

/// Whether `file.path` is the name its experiment and generation give a compacted file
/// (`docs/format/compacted.md`, section 14.1): so no manifest can point a reader outside `experiments/`.
fn is_file_path(file: &CompactedFile) -> bool {
    let folder = format!("{}/{}/", super::EXPERIMENTS_DIR, file.experiment);
    let Some(name) = file.path.strip_prefix(&folder) else {
        return false;
    };
    let stem = format!("{:010}", file.generation);
    name == format!("{stem}.{COMPACTED_EXTENSION}")
        || name == format!("{stem}-merged.{COMPACTED_EXTENSION}")
}

/// A file's series lie one after another, each non-empty with its steps in order, and cover
/// exactly its rows.
fn check_series(file: &CompactedFile) -> Result<(), CorruptionKind> {
    let mut next_row = 0u64;
    for series in &file.series {
        if series.row_start != next_row
            || series.row_count == 0
            || series.first_step > series.last_step
        {
            return Err(CorruptionKind::MalformedPayload(format!(
                "file {}: series ({}, {:?}) has rows {}+{} and steps {}..={}, after row {next_row}",
                file.path,
                series.run,
                series.key,
                series.row_start,
                series.row_count,
                series.first_step,
                series.last_step
            )));
        }
        // A sum past `u64::MAX` is damage, and refusing it here lets every reader add a
        // series' start and count without overflow.
        next_row = next_row.checked_add(series.row_count).ok_or_else(|| {
            CorruptionKind::MalformedPayload(format!(
                "file {}: its series hold more than {} rows",
                file.path,
                u64::MAX
            ))
        })?;
    }
    if next_row != file.rows {
        return Err(CorruptionKind::MalformedPayload(format!(
            "file {}: its series hold {next_row} rows, the file {}",
            file.path, file.rows
        )));
    }
    Ok(())
}

/// The run ids and key names a version 3 or 4 manifest (or a version 4 edit) names, each
/// stored once at the start of its body and referred to by index (a varint) everywhere else: a
/// run id is 16 bytes and a key a string, and each series names both in a summary and in a file
/// entry.
#[derive(Default)]
pub(super) struct Names<'a> {
    runs: BTreeMap<RunId, u64>,
    keys: BTreeMap<&'a str, u64>,
}

impl<'a> Names<'a> {
    /// Every run and key `manifest` names, numbered in ascending order.
    fn of(manifest: &'a Manifest) -> Names<'a> {
        let mut names = Names::default();
        for mark in manifest.writers.values() {
            names.add_mark(mark);
        }
        for file in &manifest.files {
            names.add_file(file);
        }
        names.number();
        names
    }

    pub(super) fn add(&mut self, run: RunId, key: &'a str) {
        self.runs.insert(run, 0);
        self.keys.insert(key, 0);
    }

    pub(super) fn add_run(&mut self, run: RunId) {
        self.runs.insert(run, 0);
    }

    pub(super) fn add_mark(&mut self, mark: &'a WriterMark) {
        for ((run, _), key) in &mark.keys {
            self.add(*run, key);
        }
        for (run, key) in mark.summaries.keys() {
            self.add(*run, key);
        }
    }

    pub(super) fn add_file(&mut self, file: &'a CompactedFile) {
        for series in &file.series {
            self.add(series.run, &series.key);
        }
    }

    /// Numbers the names added, in ascending order; call once all are added.
    pub(super) fn number(&mut self) {
        for (index, slot) in self.runs.values_mut().enumerate() {
            *slot = index as u64;
        }
        for (index, slot) in self.keys.values_mut().enumerate() {
            *slot = index as u64;
        }
    }

    pub(super) fn encode(&self, e: &mut Encoder<'_>) {
        e.u32(self.runs.len() as u32);
        for run in self.runs.keys() {
            e.u128(run.0);
        }
        e.u32(self.keys.len() as u32);
        for key in self.keys.keys() {
            e.str(key);
        }
    }

    pub(super) fn put_run(&self, e: &mut Encoder<'_>, run: RunId) {
        e.varint(self.runs.get(&run).copied().unwrap_or(u64::MAX));
    }

    pub(super) fn put_key(&self, e: &mut Encoder<'_>, key: &str) {
        e.varint(self.keys.get(key).copied().unwrap_or(u64::MAX));
    }
}

/// The name tables as decoded; `None` where a function takes `Option<&NameTables>` means a
/// version 1 or 2 manifest, which stores every run id and key in place.
///
/// Every key reference copies its key out of the table, so a small file referencing one long
/// key many times would make the decode allocate without bound. `key_bytes_left` caps the key
/// bytes one decode copies at [`KEY_BYTES_PER_FILE_BYTE`] times the decoded bytes plus
/// [`KEY_BYTES_SLACK`]: a real manifest stays far below it, because a key is at most
/// `KEY_CHARS_MAX` (250) bytes and each reference to it takes at least 6 bytes of the file.
pub(super) struct NameTables {
    pub(super) runs: Vec<RunId>,
    pub(super) keys: Vec<String>,
    /// `keys` again, each shared by the series that name it (`SeriesRows::key`).
    shared_keys: Vec<Arc<str>>,
    key_bytes_left: Cell<usize>,
}

/// Key bytes one decode may copy per byte of the decoded file.
const KEY_BYTES_PER_FILE_BYTE: usize = 64;
/// Key bytes one decode may copy on top of the per-byte allowance.
const KEY_BYTES_SLACK: usize = 64 << 20;

impl NameTables {
    pub(super) fn decode(d: &mut Decoder<'_>) -> Result<NameTables, CorruptionKind> {
        let file_bytes = d.position() + d.remaining();
        let key_bytes_max = file_bytes
            .saturating_mul(KEY_BYTES_PER_FILE_BYTE)
            .saturating_add(KEY_BYTES_SLACK);
        let mut runs = Vec::new();
        for _ in 0..bounded(d, 16)? {
            runs.push(RunId(d.u128()?));
        }
        let mut keys = Vec::new();
        for _ in 0..bounded(d, 4)? {
            keys.push(d.string()?);
        }
        let shared_keys = keys.iter().map(|key| Arc::from(key.as_str())).collect();
        Ok(NameTables {
            runs,
            keys,
            shared_keys,
            key_bytes_left: Cell::new(key_bytes_max),
        })
    }

    /// The smallest encoding of a run reference: a 1-byte index, or a 16-byte id in place.
    fn run_bytes_min(names: Option<&NameTables>) -> usize {
        if names.is_some() { 1 } else { 16 }
    }

    pub(super) fn run(
        names: Option<&NameTables>,
        d: &mut Decoder<'_>,
    ) -> Result<RunId, CorruptionKind> {
        let Some(names) = names else {
            return Ok(RunId(d.u128()?));
        };
        let index = d.varint()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| names.runs.get(i))
            .copied()
            .ok_or_else(|| out_of_table("run", index, names.runs.len()))
    }

    pub(super) fn key(
        names: Option<&NameTables>,
        d: &mut Decoder<'_>,
    ) -> Result<String, CorruptionKind> {
        let Some(names) = names else {
            return d.string();
        };
        let index = d.varint()?;
        let key = usize::try_from(index)
            .ok()
            .and_then(|i| names.keys.get(i))
            .ok_or_else(|| out_of_table("key", index, names.keys.len()))?;
        names.charge_key(key, d)?;
        Ok(key.clone())
    }

    /// `key`, shared with every other reference to the same table entry.
    fn shared_key(names: &NameTables, d: &mut Decoder<'_>) -> Result<Arc<str>, CorruptionKind> {
        let index = d.varint()?;
        let key = usize::try_from(index)
            .ok()
            .and_then(|i| names.shared_keys.get(i))
            .ok_or_else(|| out_of_table("key", index, names.shared_keys.len()))?;
        names.charge_key(key, d)?;
        Ok(Arc::clone(key))
    }

    /// Counts `key` against the bytes of key names one decode may copy. The indexed path
    /// (`encoded.rs`) charges each reference as a decode does, so that both paths accept the
    /// same files.
    pub(super) fn charge_key(&self, key: &str, d: &Decoder<'_>) -> Result<(), CorruptionKind> {
        let Some(left) = self.key_bytes_left.get().checked_sub(key.len()) else {
            return Err(CorruptionKind::MalformedPayload(format!(
                "key references near byte {} copy more key bytes than a file of {} bytes \
                 can name ({KEY_BYTES_PER_FILE_BYTE} per byte plus {KEY_BYTES_SLACK})",
                d.position(),
                d.position() + d.remaining()
            )));
        };
        self.key_bytes_left.set(left);
        Ok(())
    }
}

fn out_of_table(what: &str, index: u64, length: usize) -> CorruptionKind {
    CorruptionKind::MalformedPayload(format!(
        "{what} index {index} is past the {length} entries of the {what} table"
    ))
}

/// A version 1 or 2 summary: eleven 8-byte fields.
const SUMMARY_BYTES_V2: usize = 11 * 8;
/// The smallest version 3 summary: four 8-byte floats and seven 1-byte varints.
pub(super) const SUMMARY_BYTES_MIN: usize = 4 * 8 + 7;

/// A summary as version 3 writes it: the floats as raw bits, the counts as varints, the steps
/// and the timestamp zigzag varints, and the last step as its distance from the first.
pub(super) fn encode_summary(e: &mut Encoder<'_>, summary: &MetricSummary) {
    e.varint(summary.count);
    e.varint(zigzag(summary.first_step));
    e.varint(summary.last_step.wrapping_sub(summary.first_step) as u64);
    e.u64(summary.last_value.to_bits());
    e.varint(zigzag(summary.last_timestamp_ms));
    e.u64(summary.min_value.to_bits());
    e.varint(zigzag(summary.min_step));
    e.u64(summary.max_value.to_bits());
    e.varint(zigzag(summary.max_step));
    e.u64(summary.sum.to_bits());
    e.varint(summary.finite_count);
}

pub(super) fn decode_summary(d: &mut Decoder<'_>) -> Result<MetricSummary, CorruptionKind> {
    let count = d.varint()?;
    let first_step = unzigzag(d.varint()?);
    Ok(MetricSummary {
        count,
        first_step,
        last_step: first_step.wrapping_add(d.varint()? as i64),
        last_value: f64::from_bits(d.u64()?),
        last_timestamp_ms: unzigzag(d.varint()?),
        min_value: f64::from_bits(d.u64()?),
        min_step: unzigzag(d.varint()?),
        max_value: f64::from_bits(d.u64()?),
        max_step: unzigzag(d.varint()?),
        sum: f64::from_bits(d.u64()?),
        finite_count: d.varint()?,
    })
}

/// Checks a version 3 summary as `decode_summary` does, field by field in its order, and
/// moves past it without building it: the scan of a manifest loaded for reading
/// (`encoded.rs`) decodes a run's summaries only when that run is read, and building each
/// summary only to drop it was most of that scan.
pub(super) fn skip_summary(d: &mut Decoder<'_>) -> Result<(), CorruptionKind> {
    match summary_length(d.rest()) {
        Some(length) => d.skip(length),
        // Refused: a decode says why.
        None => decode_summary(d).map(drop),
    }
}

/// The length of the version 3 summary that `bytes` starts with, if `decode_summary` would
/// accept it.
#[inline]
fn summary_length(bytes: &[u8]) -> Option<usize> {
    const FLOAT_BYTES: usize = 8;
    let varint = |at: usize| Some(at + varint_length(bytes.get(at..)?)?);
    // count, first_step, last_step - first_step
    let mut at = varint(varint(varint(0)?)?)?;
    // last_value, last_timestamp; min_value, min_step; max_value, max_step
    for _ in 0..3 {
        at = varint(at + FLOAT_BYTES)?;
    }
    // sum, finite_count
    varint(at + FLOAT_BYTES)
}

fn decode_summary_v2(d: &mut Decoder<'_>) -> Result<MetricSummary, CorruptionKind> {
    Ok(MetricSummary {
        count: d.u64()?,
        first_step: d.i64()?,
        last_step: d.i64()?,
        last_value: f64::from_bits(d.u64()?),
        last_timestamp_ms: d.i64()?,
        min_value: f64::from_bits(d.u64()?),
        min_step: d.i64()?,
        max_value: f64::from_bits(d.u64()?),
        max_step: d.i64()?,
        sum: f64::from_bits(d.u64()?),
        finite_count: d.u64()?,
    })
}

/// A version 3 series entry, which starts at `row_start`, where the one before it ended.
fn decode_series(
    d: &mut Decoder<'_>,
    names: &NameTables,
    row_start: u64,
) -> Result<SeriesRows, CorruptionKind> {
    let run = NameTables::run(Some(names), d)?;
    let key = NameTables::shared_key(names, d)?;
    let row_count = d.varint()?;
    let first_step = unzigzag(d.varint()?);
    let last_step = first_step.wrapping_add(d.varint()? as i64);
    Ok(SeriesRows {
        run,
        key,
        row_start,
        row_count,
        first_step,
        last_step,
    })
}

fn decode_series_v2(d: &mut Decoder<'_>) -> Result<SeriesRows, CorruptionKind> {
    Ok(SeriesRows {
        run: RunId(d.u128()?),
        key: Arc::from(d.string()?),
        row_start: d.u64()?,
        row_count: d.u64()?,
        first_step: d.i64()?,
        last_step: d.i64()?,
    })
}

/// Reads a count and refuses one the remaining bytes cannot hold (at `entry_bytes_min` each).
pub(super) fn bounded(d: &mut Decoder<'_>, entry_bytes_min: usize) -> Result<u32, CorruptionKind> {
    let count = d.u32()?;
    if count as usize > d.remaining() / entry_bytes_min {
        return Err(CorruptionKind::MalformedPayload(format!(
            "{count} entries cannot fit in {} bytes",
            d.remaining()
        )));
    }
    Ok(count)
}

/// `manifest/<generation>.manifest`.
pub fn path(root: &Path, generation: u64) -> PathBuf {
    root.join(MANIFEST_DIR)
        .join(format!("{generation:010}.{EXTENSION}"))
}

/// The generation a file name's stem spells: exactly 10 ASCII digits (`0000000007`). One rule for
/// every name a generation is read from (manifests, intents, compacted files), so a stray name
/// such as `+000000009` is nobody's generation.
pub(crate) fn parse_generation(stem: &str) -> Option<u64> {
    (stem.len() == 10 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// The generation of a manifest's file name (`<generation:010>.manifest`).
pub(crate) fn generation_of_manifest_name(name: &str) -> Option<u64> {
    parse_generation(name.strip_suffix(EXTENSION)?.strip_suffix('.')?)
}

/// The generation of a temporary name `io::publish` gives a manifest or an intent
/// (`.<generation:010>.manifest.tmp-<16 hex digits>`, or `.compacting`); `None` for any other
/// name.
pub(crate) fn generation_of_temporary_name(name: &str) -> Option<u64> {
    let (target, random) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (stem, extension) = target.split_once('.')?;
    [EXTENSION, crate::layout::INTENT_EXTENSION]
        .contains(&extension)
        .then(|| parse_generation(stem))
        .flatten()
}

/// The generation of the newest manifest in `root` (0 if there is none), from the folder's
/// listing alone: cheap enough to call on every refresh.
pub fn newest_generation(root: &Path) -> Result<u64> {
    let dir = root.join(MANIFEST_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(Error::io("list", &dir, error)),
    };
    let mut newest = 0;
    for entry in entries {
        let name = entry.map_err(|e| Error::io("list", &dir, e))?.file_name();
        let generation = name.to_str().and_then(generation_of_manifest_name);
        newest = newest.max(generation.unwrap_or(0));
    }
    Ok(newest)
}

/// The newest manifest in `root`, or an empty one if there is none. A newest manifest that does
/// not check is an error naming it: it was synced before anything relied on it.
pub fn load(root: &Path) -> Result<Manifest> {
    let generation = newest_generation(root)?;
    if generation == 0 {
        return Ok(Manifest::default());
    }
    load_generation(root, generation)
}

/// The manifest of `generation`, checked against its file name: a copy of another
/// generation's manifest under this name is damage, and taking it would make a reader that
/// waits for this generation wait forever. A version 4 edit is applied to its base and the
/// edits between.
pub fn load_generation(root: &Path, generation: u64) -> Result<Manifest> {
    load_with_chain(root, generation).map(|(manifest, _)| manifest)
}

/// Where a version 4 state comes from: its base and the edits applied on it, with their
/// sizes, which decide when a compaction writes a new base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The generation of the base.
    pub base: u64,
    /// The base's bytes.
    pub base_bytes: u64,
    /// Edits after the base, up to the generation loaded.
    pub edits: u64,
    /// Their bytes, in all.
    pub edit_bytes: u64,
}

/// The manifest of `generation` and, for version 4, the chain it was built from (`None` for
/// versions 1 to 3, which stand alone). Each file of the chain is checked on its own: its CRC,
/// that it holds the generation its name says, that each edit builds on the chain's base; an
/// error names the file at fault.
pub(crate) fn load_with_chain(root: &Path, generation: u64) -> Result<(Manifest, Option<Chain>)> {
    load_chain(root, generation, Decoding::Whole)
}

/// The manifest of `generation` for reading only: its base's summaries left encoded
/// (`encoded.rs`), so that it costs a scan of them rather than their decode. Never encode it
/// or diff it (`Manifest::encode` refuses).
pub(crate) fn load_for_reading(root: &Path, generation: u64) -> Result<Manifest> {
    load_chain(root, generation, Decoding::Indexed).map(|(manifest, _)| manifest)
}

/// `load`, for reading only (`load_for_reading`).
fn load_newest_for_reading(root: &Path) -> Result<Manifest> {
    let generation = newest_generation(root)?;
    if generation == 0 {
        return Ok(Manifest::default());
    }
    load_for_reading(root, generation)
}

/// Whether a load decodes a base's summaries or leaves them encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decoding {
    Whole,
    Indexed,
}

fn load_chain(
    root: &Path,
    generation: u64,
    decoding: Decoding,
) -> Result<(Manifest, Option<Chain>)> {
    let (top, top_bytes) = read_file(root, generation, decoding)?;
    let edit = match top {
        ManifestFile::Base(manifest) => {
            let chain = (manifest.version == VERSION).then_some(Chain {
                base: generation,
                base_bytes: top_bytes,
                ..Chain::default()
            });
            return Ok((manifest, chain));
        }
        ManifestFile::Edit(edit) => edit,
    };
    let base = edit.base();
    let (mut state, base_bytes) = match read_chain_file(root, generation, base, decoding)? {
        (ManifestFile::Base(manifest), bytes) if manifest.version == VERSION => (manifest, bytes),
        _ => {
            return Err(file_damage(
                &path(root, generation),
                CorruptionKind::HeaderMismatch(format!(
                    "the edit builds on generation {base}, which is not a version 4 base"
                )),
            ));
        }
    };
    let mut chain = Chain {
        base,
        base_bytes,
        ..Chain::default()
    };
    for between in base + 1..generation {
        let (file, bytes) = read_chain_file(root, generation, between, Decoding::Whole)?;
        let ManifestFile::Edit(step) = file else {
            return Err(file_damage(
                &path(root, generation),
                CorruptionKind::HeaderMismatch(format!(
                    "the edit builds on base {base}, but generation {between} is a base"
                )),
            ));
        };
        apply(root, &step, base, &mut state)?;
        chain.edits += 1;
        chain.edit_bytes += bytes;
    }
    apply(root, &edit, base, &mut state)?;
    chain.edits += 1;
    chain.edit_bytes += top_bytes;
    Ok((state, Some(chain)))
}

/// Applies `edit`, of the chain on `base`, to `state`; an error names the edit's file.
fn apply(root: &Path, edit: &ManifestEdit, base: u64, state: &mut Manifest) -> Result<()> {
    let file = path(root, edit.generation());
    if edit.base() != base {
        return Err(file_damage(
            &file,
            CorruptionKind::HeaderMismatch(format!(
                "the edit builds on generation {}, the chain it is in on {base}",
                edit.base()
            )),
        ));
    }
    edit.apply(state).map_err(|kind| file_damage(&file, kind))
}

/// The manifest file of `generation` and its size, decoded and checked against its name.
fn read_file(root: &Path, generation: u64, decoding: Decoding) -> Result<(ManifestFile, u64)> {
    let file = path(root, generation);
    let bytes = std::fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
    let size = bytes.len() as u64;
    let decoded = match decoding {
        Decoding::Whole => ManifestFile::decode(&bytes),
        Decoding::Indexed => ManifestFile::decode_indexed(Arc::new(bytes)),
    }
    .map_err(|kind| file_damage(&file, kind))?;
    if decoded.generation() != generation {
        return Err(file_damage(
            &file,
            CorruptionKind::HeaderMismatch(format!(
                "the manifest holds generation {}, its file name says {generation}",
                decoded.generation()
            )),
        ));
    }
    Ok((decoded, size))
}

/// A file of the chain that the state of `generation` is built from. One found missing was
/// removed by a compaction two generations on (a compaction keeps the chains of the state it
/// wrote and of the one before), so the read is stale; with no such compaction it is lost.
fn read_chain_file(
    root: &Path,
    generation: u64,
    member: u64,
    decoding: Decoding,
) -> Result<(ManifestFile, u64)> {
    match read_file(root, member, decoding) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let file = path(root, member);
            if newest_generation(root)? >= generation.saturating_add(2) {
                return Err(super::stale(&file.display().to_string()));
            }
            Err(file_damage(&file, CorruptionKind::MissingFile))
        }
        other => other,
    }
}

fn file_damage(file: &Path, kind: CorruptionKind) -> Error {
    Error::Corrupt(Corruption {
        path: file.to_path_buf(),
        offset: 0,
        kind,
    })
}

/// The newest manifest, loaded once per generation: a manifest never changes once published,
/// and loading one costs more than the queries that need it. Loaded for reading: a base's
/// summaries stay encoded until a run's are read (`encoded.rs`).
#[derive(Debug, Default)]
pub(crate) struct ManifestCache {
    newest: std::sync::Mutex<Option<std::sync::Arc<Manifest>>>,
}

impl ManifestCache {
    /// The newest manifest in `root`.
    pub fn newest(&self, root: &Path) -> Result<std::sync::Arc<Manifest>> {
        let generation = newest_generation(root)?;
        if let Some(cached) = crate::util::lock(&self.newest).as_ref()
            && cached.generation == generation
        {
            return Ok(std::sync::Arc::clone(cached));
        }
        let manifest = std::sync::Arc::new(load_newest_for_reading(root)?);
        *crate::util::lock(&self.newest) = Some(std::sync::Arc::clone(&manifest));
        Ok(manifest)
    }

    /// The manifest of `generation`: the cached one if it is that generation (an open
    /// surveys the store, then follows it, and both need the same one), else loaded without
    /// caching it, so that only `newest` decides what the cache holds.
    pub fn generation(&self, root: &Path, generation: u64) -> Result<std::sync::Arc<Manifest>> {
        if let Some(cached) = crate::util::lock(&self.newest).as_ref()
            && cached.generation == generation
        {
            return Ok(std::sync::Arc::clone(cached));
        }
        Ok(std::sync::Arc::new(load_for_reading(root, generation)?))
    }
}

/// Edits on one base at most: a load opens the base and every edit after it, so this bounds
/// the files it opens, where the byte bound (`publish_next`) bounds what it reads.
pub(crate) const EDITS_PER_BASE_MAX: u64 = 1024;

/// Publishes `manifest` as its generation's file, whole (a base). Compaction publishes
/// through `publish_next`; this is for tests that write a manifest by hand.
#[cfg(any(test, feature = "testing"))]
pub fn store(root: &Path, manifest: &Manifest, storage: &dyn Storage) -> Result<()> {
    publish_bytes(root, manifest.generation, &manifest.encode(), storage)
}

/// Publishes `next`, the manifest of the generation after `previous`, as an edit on
/// `chain`'s base when it can be one, else whole, as a new base. An edit is written while the
/// edits on the base, this one included, stay within half the base's bytes and
/// `EDITS_PER_BASE_MAX`: so a compaction writes in proportion to what it changed, amortized
/// (a base costs at most as much as the edits before it did, doubled), and a load reads at
/// most one and a half times a base. `previous` and `next` leave out the marks of
/// `unchanged`, which are put back into `next` for a base. Returns the bytes written.
pub(crate) fn publish_next(
    root: &Path,
    previous: &Manifest,
    chain: Option<Chain>,
    next: &mut Manifest,
    unchanged: BTreeMap<WriterId, WriterMark>,
    storage: &dyn Storage,
) -> Result<u64> {
    // `unchanged` is the same in both states, so the edit is diffed without it; a base holds it.
    let edit = chain
        .filter(|c| c.edits < EDITS_PER_BASE_MAX && previous.version == VERSION)
        .and_then(|c| Some((c, ManifestEdit::diff(previous, next, c.base)?.encode())))
        .filter(|(c, bytes)| c.edit_bytes + bytes.len() as u64 <= c.base_bytes / 2);
    next.writers.extend(unchanged);
    let bytes = match edit {
        Some((_, bytes)) => bytes,
        None => next.encode(),
    };
    publish_bytes(root, next.generation, &bytes, storage)?;
    Ok(bytes.len() as u64)
}

fn publish_bytes(root: &Path, generation: u64, bytes: &[u8], storage: &dyn Storage) -> Result<()> {
    let dir = root.join(MANIFEST_DIR);
    create_dirs(&dir, storage)?;
    publish(&path(root, generation), storage, |temporary, file| {
        use std::io::Write;
        file.write_all(bytes)
            .map_err(|e| Error::io("write manifest", temporary, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_whose_rows_overflow_are_refused() {
        let series = |row_start, row_count| SeriesRows {
            run: RunId(1),
            key: Arc::from("k"),
            row_start,
            row_count,
            first_step: 0,
            last_step: 0,
        };
        // The second series starts where the first ends, and the file claims the wrapped
        // total; every reader would add start and count past `u64::MAX`.
        let file = CompactedFile {
            experiment: ExperimentId(1),
            generation: 1,
            path: "experiments/1/0000000001.parquet".to_string(),
            checksum: None,
            rows: u64::MAX,
            series: vec![series(0, u64::MAX), series(u64::MAX, 1)],
        };
        assert!(check_series(&file).is_err());
        let fine = CompactedFile {
            rows: u64::MAX,
            series: vec![series(0, u64::MAX - 1), series(u64::MAX - 1, 1)],
            ..file
        };
        assert_eq!(check_series(&fine), Ok(()));
    }

    #[test]
    fn a_generation_is_exactly_ten_ascii_digits() {
        assert_eq!(parse_generation("0000000009"), Some(9));
        assert_eq!(generation_of_manifest_name("0000000009.manifest"), Some(9));
        for stray in [
            "+000000009",
            "000000009",
            "00000000009",
            "00000000x9",
            " 000000009",
        ] {
            assert_eq!(parse_generation(stray), None, "{stray:?}");
        }
        assert_eq!(generation_of_manifest_name("0000000009manifest"), None);
        let temporary = ".0000000009.manifest.tmp-00000000deadbeef";
        assert_eq!(generation_of_temporary_name(temporary), Some(9));
        let intent = ".0000000009.compacting.tmp-00000000deadbeef";
        assert_eq!(generation_of_temporary_name(intent), Some(9));
        for stray in [
            ".0000000009.manifest.tmp-xyz",
            ".0000000009.parquet.tmp-00000000deadbeef",
            "0000000009.manifest.tmp-00000000deadbeef",
            ".notes.tmp-00000000deadbeef",
        ] {
            assert_eq!(generation_of_temporary_name(stray), None, "{stray:?}");
        }
    }

    fn sample() -> Manifest {
        let mut summary = MetricSummary::EMPTY;
        summary.update(-1, 5, 0.5);
        summary.update(8, 6, f64::NAN);
        let summaries: BTreeMap<_, _> = [((RunId(7), "loss".to_string()), summary)].into();
        let mut writers = BTreeMap::new();
        let mut keys = BTreeMap::new();
        keys.insert((RunId(7), KeyId(0)), "loss".to_string());
        writers.insert(
            WriterId(3),
            WriterMark {
                through: Some(SegmentSequence(4)),
                finished: false,
                keys,
                summaries,
            },
        );
        writers.insert(
            WriterId(9),
            WriterMark {
                through: Some(SegmentSequence(0)),
                finished: true,
                keys: BTreeMap::new(),
                summaries: BTreeMap::new(),
            },
        );
        Manifest {
            version: VERSION,
            generation: 2,
            writers,
            metadata: [WriterId(12)].into_iter().collect(),
            files: vec![CompactedFile {
                experiment: ExperimentId(11),
                generation: 2,
                path: "experiments/11/0000000002.parquet".into(),
                checksum: Some(FileChecksum {
                    bytes: 1234,
                    crc: 0xdead_beef,
                }),
                rows: 10,
                series: vec![SeriesRows {
                    run: RunId(7),
                    key: "loss".into(),
                    row_start: 0,
                    row_count: 10,
                    first_step: -1,
                    last_step: 8,
                }],
            }],
            ..Manifest::default()
        }
    }

    /// The scan of a manifest loaded for reading passes over summaries with `skip_summary`:
    /// it must accept exactly what `decode_summary` accepts, and end where it ends, or the two
    /// loads would read different manifests. Every truncation and every byte of each encoding
    /// replaced by values that end, continue or overflow a varint; and varints of ten bytes.
    #[test]
    fn a_skipped_summary_is_refused_exactly_where_a_decode_is() {
        let mut summaries = vec![MetricSummary::EMPTY];
        let mut summary = MetricSummary::EMPTY;
        summary.update(-1, 5, 0.5);
        summary.update(8, 6, f64::NAN);
        summaries.push(summary);
        let mut extreme = MetricSummary::EMPTY;
        extreme.update(i64::MIN, i64::MAX, f64::INFINITY);
        extreme.update(i64::MAX, i64::MIN, -1.0);
        summaries.push(extreme);
        let mut encodings: Vec<Vec<u8>> = summaries
            .iter()
            .map(|summary| {
                let mut bytes = Vec::new();
                encode_summary(&mut Encoder::new(&mut bytes), summary);
                bytes
            })
            .collect();
        for last in [0x01u8, 0x02, 0x7f] {
            let mut bytes = vec![0xff; crate::wal::codec::VARINT_BYTES_MAX - 1];
            bytes.push(last);
            bytes.extend_from_slice(&encodings[0][1..]);
            encodings.push(bytes);
        }
        let agree = |bytes: &[u8]| {
            let (mut skipped, mut decoded) = (Decoder::new(bytes), Decoder::new(bytes));
            let skip = skip_summary(&mut skipped);
            let decode = decode_summary(&mut decoded);
            assert_eq!(skip.is_ok(), decode.is_ok(), "{bytes:02x?}");
            if skip.is_ok() {
                assert_eq!(skipped.position(), decoded.position(), "{bytes:02x?}");
            }
        };
        for encoding in &encodings {
            let mut padded = encoding.clone();
            padded.extend_from_slice(&[0x80, 0x01]);
            for length in 0..=padded.len() {
                agree(&padded[..length]);
            }
            for at in 0..encoding.len() {
                for byte in [0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0xff] {
                    let mut changed = encoding.clone();
                    changed[at] = byte;
                    agree(&changed);
                    agree(&changed[..changed.len() - 1]);
                }
            }
        }
    }

    #[test]
    fn a_manifest_round_trips_and_rejects_every_bit_flip() {
        let manifest = sample();
        let bytes = manifest.encode();
        let decoded = Manifest::decode(&bytes).expect("decodes");
        // NaN != NaN, so compare the encodings.
        assert_eq!(decoded.encode(), bytes);
        assert_eq!(
            decoded.writers[&WriterId(9)],
            manifest.writers[&WriterId(9)]
        );
        assert_eq!(decoded.metadata, manifest.metadata);
        assert!(decoded.covers_catalog());
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(Manifest::decode(&flipped).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    /// The cost per series of a manifest like a large sweep's: one writer entry with a
    /// summary and one file entry per series, 16-byte keys, 20,000 points each at realistic
    /// timestamps. Version 2 spent 11 fixed 8-byte summary fields and 4 series fields.
    #[test]
    fn a_series_costs_at_most_95_manifest_bytes() {
        let series_count = 10_000u32;
        let mut summaries = BTreeMap::new();
        let mut series = Vec::new();
        for index in 0..series_count {
            let (run, key) = (
                RunId(u128::from(index / 4)),
                format!("train/loss-{index:05}"),
            );
            let mut summary = MetricSummary::EMPTY;
            summary.update(0, 1_765_000_000_000, 2.5);
            summary.update(19_999, 1_765_000_000_000 + 19_999 * 250, 0.125);
            summary.count = 20_000;
            summary.finite_count = 20_000;
            summaries.insert((run, key.clone()), summary);
            series.push(SeriesRows {
                run,
                key: key.into(),
                row_start: u64::from(index) * 20_000,
                row_count: 20_000,
                first_step: 0,
                last_step: 19_999,
            });
        }
        let rows = u64::from(series_count) * 20_000;
        let manifest = Manifest {
            version: VERSION,
            generation: 1,
            writers: [(
                WriterId(3),
                WriterMark {
                    through: Some(SegmentSequence(0)),
                    finished: true,
                    keys: BTreeMap::new(),
                    summaries,
                },
            )]
            .into(),
            metadata: BTreeSet::new(),
            files: vec![CompactedFile {
                experiment: ExperimentId(11),
                generation: 1,
                path: "experiments/11/0000000001.parquet".into(),
                checksum: Some(FileChecksum { bytes: 1, crc: 2 }),
                rows,
                series,
            }],
            ..Manifest::default()
        };
        let bytes = manifest.encode();
        let per_series = bytes.len() as f64 / f64::from(series_count);
        let version_2 = f64::from((16 + 4 + 16 + 88) + (16 + 4 + 16 + 32));
        println!("{per_series:.1} manifest bytes per series (version 2: {version_2})");
        assert!(per_series <= 95.0, "{per_series:.1} bytes per series");
        let decoded = Manifest::decode(&bytes).expect("decodes");
        assert_eq!(decoded.files, manifest.files);
    }

    /// Writers 1 to 3, each with runs 10 to 12 of keys "a" and "b" (writer 3: run 11 only),
    /// summarized by `seed`.
    fn writers(seed: i64) -> BTreeMap<WriterId, WriterMark> {
        let mut writers = BTreeMap::new();
        for writer in 1..=3u64 {
            let mut mark = WriterMark {
                through: Some(SegmentSequence(writer)),
                ..WriterMark::default()
            };
            let runs: &[u128] = if writer == 3 { &[11] } else { &[10, 11, 12] };
            for (index, run) in runs.iter().enumerate() {
                for key in ["a", "b"] {
                    let mut summary = MetricSummary::EMPTY;
                    summary.update(seed + index as i64, 5, writer as f64);
                    summary.update(seed + 9, 6, f64::NAN);
                    mark.summaries.insert((RunId(*run), key.into()), summary);
                }
            }
            writers.insert(WriterId(writer), mark);
        }
        writers
    }

    /// What `manifest` holds of `writer`'s summaries of `run`, through `each_of_run`.
    fn of_run(manifest: &Manifest, writer: u64, run: u128) -> Vec<(String, [u64; 3])> {
        use crate::summary::CompactedSummaries;
        let mut found = Vec::new();
        manifest.each_of_run(WriterId(writer), RunId(run), &mut |key, s| {
            let bits = [s.count, s.first_step as u64, s.last_value.to_bits()];
            found.push((key.to_string(), bits));
        });
        found
    }

    fn indexed(bytes: &[u8]) -> Manifest {
        match ManifestFile::decode_indexed(Arc::new(bytes.to_vec())) {
            Ok(ManifestFile::Base(manifest)) => manifest,
            other => panic!("not a base: {:?}", other.map(|f| f.generation())),
        }
    }

    /// A manifest loaded for reading passes over its summaries (`skip_summary`) where a whole
    /// decode builds them: both loads must accept the same files. Every byte of a base with
    /// summaries of three writers, replaced by values that end, continue or overflow a
    /// varint, with the CRC made right again so the body's decoders decide.
    #[test]
    fn a_manifest_loaded_for_reading_refuses_what_a_decode_refuses() {
        let mut manifest = sample();
        manifest.writers = writers(0);
        let sealed = manifest.encode();
        let body = &sealed[..sealed.len() - 4];
        for at in 0..body.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut changed = body.to_vec();
                changed[at] = byte;
                let changed = seal(changed);
                let whole = ManifestFile::decode(&changed).is_ok();
                let read = ManifestFile::decode_indexed(Arc::new(changed)).is_ok();
                assert_eq!(whole, read, "byte {at} set to {byte:#04x}");
            }
        }
    }

    /// A manifest loaded for reading leaves its summaries encoded and answers each run's, and
    /// each writer's runs, as the decoded manifest does; an edit applied to it decodes only
    /// the writers it changes, and gives the state it gives the decoded one.
    #[test]
    fn a_manifest_loaded_for_reading_reads_as_a_decoded_one() {
        let mut previous = sample();
        previous.writers = writers(0);
        let bytes = previous.encode();
        let decoded = Manifest::decode(&bytes).expect("decodes");
        let mut state = indexed(&bytes);
        for writer in 1..=3u64 {
            assert!(state.encoded_summaries.holds(WriterId(writer)));
            assert!(state.writers[&WriterId(writer)].summaries.is_empty());
            assert_eq!(
                state.runs_of(WriterId(writer)),
                decoded.runs_of(WriterId(writer))
            );
            for run in 9..=13 {
                assert_eq!(of_run(&state, writer, run), of_run(&decoded, writer, run));
            }
        }
        assert_eq!(of_run(&state, 1, 11).len(), 2);
        assert_eq!(state.runs_of(WriterId(3)), [RunId(11)]);
        assert_eq!(state.files, decoded.files);

        // Generation 3 changes writer 2's summaries and removes writer 3.
        let mut next = previous.clone();
        next.generation = 3;
        next.writers = writers(0);
        next.writers.remove(&WriterId(3));
        next.writers.insert(WriterId(2), writers(4)[&WriterId(2)].clone());
        let edit = ManifestEdit::diff(&previous, &next, 2).expect("an edit");
        let mut applied = decoded.clone();
        edit.apply(&mut applied).expect("applies to the decoded state");
        edit.apply(&mut state).expect("applies to the state loaded for reading");
        assert!(state.encoded_summaries.holds(WriterId(1)), "left alone");
        assert!(!state.encoded_summaries.holds(WriterId(2)), "changed");
        assert!(!state.encoded_summaries.holds(WriterId(3)), "removed");
        for run in 10..=12 {
            for writer in 1..=3 {
                assert_eq!(of_run(&state, writer, run), of_run(&applied, writer, run));
            }
        }
        state.decode_writer(WriterId(1));
        assert!(state.encoded_summaries.is_empty());
        assert_eq!(state.encode(), applied.encode());
    }

    /// A manifest loaded for reading, summaries still encoded, encodes and diffs as the
    /// decoded manifest does, rather than panicking or leaving its encoded writers out.
    #[test]
    fn a_manifest_loaded_for_reading_encodes_and_diffs_as_a_decoded_one() {
        let mut previous = sample();
        previous.writers = writers(0);
        let bytes = previous.encode();
        let decoded = Manifest::decode(&bytes).expect("decodes");
        let state = indexed(&bytes);
        assert!(!state.encoded_summaries.is_empty());
        assert_eq!(state.encode(), bytes);
        assert_eq!(state.decoded().encode(), decoded.encode());

        let mut next = previous.clone();
        next.generation = previous.generation + 1;
        next.writers.insert(WriterId(2), writers(4)[&WriterId(2)].clone());
        let from_decoded = ManifestEdit::diff(&decoded, &next, previous.generation);
        let from_indexed = ManifestEdit::diff(&state, &next, previous.generation);
        assert!(from_decoded.is_some());
        assert_eq!(
            from_indexed.map(|edit| edit.encode()),
            from_decoded.map(|edit| edit.encode())
        );
    }

    /// A file with no checksum (kept from a version 2 manifest) round trips as none.
    #[test]
    fn a_file_without_a_checksum_round_trips() {
        let mut manifest = sample();
        manifest.files[0].checksum = None;
        let decoded = Manifest::decode(&manifest.encode()).expect("decodes");
        assert_eq!(decoded.files[0].checksum, None);
        assert_eq!(decoded.version, VERSION);
    }

    /// Fields that pass the CRC but contradict their context are refused: a path outside the
    /// file's own name, a file newer than its manifest, series that do not tile the rows.
    #[test]
    fn a_manifest_whose_fields_contradict_each_other_is_refused() {
        type Damage = fn(&mut Manifest);
        let cases: [(&str, Damage); 6] = [
            ("path outside experiments/", |m| {
                m.files[0].path = "../../etc/passwd".into();
            }),
            ("path of another experiment", |m| {
                m.files[0].path = "experiments/12/0000000002.parquet".into();
            }),
            ("file newer than the manifest", |m| {
                m.files[0].generation = 3;
                m.files[0].path = "experiments/11/0000000003.parquet".into();
            }),
            ("rows past the file's", |m| {
                m.files[0].series[0].row_count = 11
            }),
            ("steps out of order", |m| {
                m.files[0].series[0].first_step = 9
            }),
            ("generation 0", |m| m.generation = 0),
        ];
        for (name, damage) in cases {
            let mut manifest = sample();
            damage(&mut manifest);
            assert!(
                matches!(
                    Manifest::decode(&manifest.encode()),
                    Err(CorruptionKind::MalformedPayload(_))
                ),
                "{name}"
            );
        }
        let mut merged = sample();
        merged.files[0].path = "experiments/11/0000000002-merged.parquet".into();
        assert!(Manifest::decode(&merged.encode()).is_ok());
    }

    /// A base of one writer whose summary entries are `entries` (run index, key index, first
    /// step), over the name tables `runs` and `keys`, written byte by byte.
    fn base_with_entries(runs: &[u128], keys: &[&str], entries: &[(u64, u64, i64)]) -> Vec<u8> {
        let mut out = header(KIND_BASE);
        let mut e = Encoder::new(&mut out);
        e.u64(1);
        e.u32(runs.len() as u32);
        runs.iter().for_each(|run| e.u128(*run));
        e.u32(keys.len() as u32);
        keys.iter().for_each(|key| e.str(key));
        e.u32(1);
        e.u64(3);
        e.u64(u64::MAX);
        e.u8(1);
        e.u32(0);
        e.u32(entries.len() as u32);
        for (run, key, step) in entries {
            e.varint(*run);
            e.varint(*key);
            let mut summary = MetricSummary::EMPTY;
            summary.update(*step, 5, 0.5);
            encode_summary(&mut e, &summary);
        }
        e.u32(0);
        e.u32(0);
        seal(out)
    }

    /// Summaries that no compaction writes (tables or entries out of order, an entry twice)
    /// are not indexed but decoded whole, so they read as a decode reads them: the last of
    /// an entry given twice wins, as in a decode.
    #[test]
    fn summaries_out_of_order_are_decoded_whole_when_loaded_for_reading() {
        /// A case's name, run table, key table and entries.
        type Case<'a> = (&'a str, &'a [u128], &'a [&'a str], &'a [(u64, u64, i64)]);
        let cases: [Case<'_>; 4] = [
            ("in order", &[7, 8], &["a", "b"], &[(0, 0, 1), (0, 1, 2), (1, 0, 3)]),
            ("keys unsorted", &[7, 8], &["b", "a"], &[(0, 0, 1), (0, 1, 2), (1, 0, 3)]),
            ("runs unsorted", &[8, 7], &["a", "b"], &[(0, 0, 1), (1, 1, 2)]),
            ("entries unsorted", &[7, 8], &["a", "b"], &[(1, 0, 1), (0, 1, 2), (0, 0, 3)]),
        ];
        for (name, runs, keys, entries) in cases {
            let bytes = base_with_entries(runs, keys, entries);
            let decoded = Manifest::decode(&bytes).expect(name);
            let loaded = indexed(&bytes);
            assert_eq!(
                loaded.encoded_summaries.holds(WriterId(3)),
                name == "in order",
                "{name}"
            );
            for run in [7, 8] {
                assert_eq!(of_run(&loaded, 3, run), of_run(&decoded, 3, run), "{name}");
            }
            assert_eq!(loaded.runs_of(WriterId(3)), decoded.runs_of(WriterId(3)));
        }
        let twice = base_with_entries(&[7], &["a"], &[(0, 0, 1), (0, 0, 2)]);
        let loaded = indexed(&twice);
        assert!(!loaded.encoded_summaries.holds(WriterId(3)));
        assert_eq!(of_run(&loaded, 3, 7), [("a".to_string(), [1, 2, 0.5f64.to_bits()])]);
        // An entry naming a key past the table is refused by the load for reading too, which
        // checks each entry it leaves encoded.
        let past = base_with_entries(&[7], &["a"], &[(0, 0, 1), (0, 5, 2)]);
        assert!(Manifest::decode(&past).is_err());
        assert!(matches!(
            ManifestFile::decode_indexed(Arc::new(past)),
            Err(CorruptionKind::MalformedPayload(_))
        ));
    }

    /// A version 1 manifest, written byte by byte as stage one wrote it, still reads, without
    /// summaries, and so does not stand in for the catalog.
    #[test]
    fn a_version_1_manifest_still_reads() {
        let mut out = b"RUNLOGMF".to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        let mut e = Encoder::new(&mut out);
        e.u64(1); // generation
        e.u32(1); // writers
        e.u64(3);
        e.u64(4); // through
        e.u32(1); // keys
        e.u128(7);
        e.u32(0);
        e.str("loss");
        e.u32(1); // files
        e.u64(11);
        e.u64(1);
        e.str("experiments/11/0000000001.parquet");
        e.u64(10);
        e.u32(1); // series
        e.u128(7);
        e.str("loss");
        e.u64(0);
        e.u64(10);
        e.i64(-1);
        e.i64(8);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let manifest = Manifest::decode(&out).expect("a version 1 manifest decodes");
        assert_eq!(manifest.generation, 1);
        let mark = &manifest.writers[&WriterId(3)];
        assert_eq!(mark.through, Some(SegmentSequence(4)));
        assert!(!mark.finished);
        assert_eq!(mark.keys[&(RunId(7), KeyId(0))], "loss");
        assert!(manifest.metadata.is_empty());
        assert_eq!(manifest.files[0].series[0].row_count, 10);
        assert!(mark.summaries.is_empty());
        assert!(!manifest.covers_catalog());
    }

    /// A manifest with a valid CRC whose one long key is referenced far more often than its
    /// size could justify: the decode must refuse it instead of copying the key each time.
    /// Sized so that the unbounded decode only uses a few hundred MiB and succeeds.
    #[test]
    fn key_references_that_copy_far_more_than_the_file_holds_are_refused() {
        let key = "k".repeat(1 << 20);
        let references: u32 = 300;
        let mut out = header(KIND_BASE);
        let mut e = Encoder::new(&mut out);
        e.u64(1);
        e.u32(1);
        e.u128(7);
        e.u32(1);
        e.str(&key);
        e.u32(1);
        e.u64(1);
        e.u64(u64::MAX);
        e.u8(0);
        e.u32(references);
        for key_id in 0..references {
            e.varint(0);
            e.u32(key_id);
            e.varint(0);
        }
        e.u32(0);
        e.u32(0);
        e.u32(0);
        let bytes = seal(out);
        match ManifestFile::decode(&bytes) {
            Err(CorruptionKind::MalformedPayload(message)) => {
                assert!(message.contains("more key bytes"), "{message}");
            }
            other => panic!("decoded to {:?}", other.map(|_| "a manifest")),
        }
    }
}
