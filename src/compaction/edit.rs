//! A manifest edit: what one compaction changed in the manifest, stored as the file of its
//! generation (`manifest/<generation:010>.manifest`, version 4, kind 1) instead of the whole
//! manifest. The state of generation `g` is its base (the newest whole manifest at or before
//! `g`) with the edits of every generation after the base, up to `g`, applied in order.
//!
//! ```text
//! magic "RUNLOGMF" 8, version u16 = 4, kind u8 = 1 (edit)
//! generation u64, base u64 (the generation of the base this edit builds on)
//! runs, keys       the name tables of the runs and keys this edit names (as in a base)
//! writers removed  u32 count, then writer u64 each
//! writers changed  u32 count, then per writer: writer u64, through u64, finished u8,
//!                    keys removed u32 count, then run idx, key_id u32 each
//!                    keys set u32 count, then run idx, key_id u32, key idx each
//!                    summaries removed u32 count, then run idx, key idx each
//!                    summaries set u32 count, then run idx, key idx, summary each
//! metadata         u32 count, then writer u64 each: the whole set after this edit
//! files removed    u32 count, then path str each
//! files added      u32 count, then file entries as in a base, appended in order
//! crc u32          CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Invariant: `ManifestEdit::diff(previous, next)` applied to `previous` gives exactly `next`
//! (`diff` returns no edit when it cannot say so), and `apply` refuses an edit that names
//! anything the state does not hold, so an edit applied to the wrong state is damage, never a
//! silently different manifest.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::manifest::{
    self, CompactedFile, KIND_EDIT, Manifest, NameTables, Names, VERSION, WriterMark,
};
use crate::error::CorruptionKind;
use crate::ids::{KeyId, RunId, SegmentSequence, WriterId};
use crate::summary::MetricSummary;
use crate::wal::codec::{Decoder, Encoder};

/// What one compaction changed in the manifest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManifestEdit {
    generation: u64,
    base: u64,
    writers_removed: Vec<WriterId>,
    writers: Vec<WriterChange>,
    metadata: BTreeSet<WriterId>,
    files_removed: Vec<String>,
    files_added: Vec<CompactedFile>,
}

/// One writer's new watermark and the keys and summaries that changed with it.
#[derive(Clone, Debug, PartialEq)]
struct WriterChange {
    writer: WriterId,
    through: Option<SegmentSequence>,
    finished: bool,
    keys_removed: Vec<(RunId, KeyId)>,
    keys_set: Vec<((RunId, KeyId), String)>,
    summaries_removed: Vec<(RunId, String)>,
    summaries_set: Vec<((RunId, String), MetricSummary)>,
}

/// The smallest encodings, for `manifest::bounded`: a writer change with empty lists, a key
/// removal (a 1-byte index and a key id), a key set, a summary removal (two 1-byte indexes), a
/// summary set, a file path (an empty `str`) and a file entry.
const WRITER_CHANGE_BYTES_MIN: usize = 8 + 8 + 1 + 4 * 4;
const KEY_REMOVED_BYTES_MIN: usize = 1 + 4;
const KEY_SET_BYTES_MIN: usize = 1 + 4 + 1;
const SUMMARY_REMOVED_BYTES_MIN: usize = 2;
const SUMMARY_SET_BYTES_MIN: usize = 2 + manifest::SUMMARY_BYTES_MIN;
const PATH_BYTES_MIN: usize = 4;
const FILE_BYTES_MIN: usize = 8 + 8 + 4 + 8 + 4 + 8 + 4;

impl ManifestEdit {
    /// The generation this edit makes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation of the base it builds on.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// What turns `previous` into `next`, the manifest of the generation after it, as an edit
    /// on the base of generation `base`; `None` if `next` is not of the next generation or its
    /// files are not `previous`'s, some removed, followed by new ones.
    pub(crate) fn diff(previous: &Manifest, next: &Manifest, base: u64) -> Option<ManifestEdit> {
        if next.generation != previous.generation.checked_add(1)? || base > previous.generation {
            return None;
        }
        let (previous, next) = (&*previous.decoded(), &*next.decoded());
        let writers_removed = (previous.writers.keys())
            .filter(|w| !next.writers.contains_key(w))
            .copied()
            .collect();
        let writers = (next.writers.iter())
            .filter_map(|(writer, mark)| {
                WriterChange::diff(*writer, previous.writers.get(writer), mark)
            })
            .collect();
        let (files_removed, files_added) = diff_files(&previous.files, &next.files)?;
        Some(ManifestEdit {
            generation: next.generation,
            base,
            writers_removed,
            writers,
            metadata: next.metadata.clone(),
            files_removed,
            files_added,
        })
    }

    /// Applies the edit to `state`, the manifest of the generation before it; refuses (as
    /// `MalformedPayload`) an edit that removes what `state` does not hold or adds a file it
    /// already lists.
    pub fn apply(&self, state: &mut Manifest) -> Result<(), CorruptionKind> {
        let malformed = |why: String| Err(CorruptionKind::MalformedPayload(why));
        if state.generation.checked_add(1) != Some(self.generation) {
            return malformed(format!(
                "an edit of generation {} cannot follow generation {}",
                self.generation, state.generation
            ));
        }
        // A writer's summaries left encoded (a manifest loaded for reading) are decoded into
        // its mark before the mark changes; the writers the edit leaves alone stay encoded.
        for writer in &self.writers_removed {
            state.decode_writer(*writer);
            if state.writers.remove(writer).is_none() {
                return malformed(format!("removes writer {writer}, which is not listed"));
            }
        }
        for change in &self.writers {
            state.decode_writer(change.writer);
            change.apply(state.writers.entry(change.writer).or_default())?;
        }
        state.metadata.clone_from(&self.metadata);
        let removed: HashSet<&str> = self.files_removed.iter().map(String::as_str).collect();
        let before = state.files.len();
        state.files.retain(|f| !removed.contains(f.path.as_str()));
        if before - state.files.len() != removed.len() || removed.len() != self.files_removed.len()
        {
            return malformed("removes a file that is not listed, or one twice".into());
        }
        let listed: HashSet<&str> = state.files.iter().map(|f| f.path.as_str()).collect();
        if let Some(file) = self
            .files_added
            .iter()
            .find(|f| listed.contains(f.path.as_str()))
        {
            return malformed(format!("adds file {}, which is already listed", file.path));
        }
        state.files.extend(self.files_added.iter().cloned());
        state.generation = self.generation;
        state.version = VERSION;
        Ok(())
    }

    /// Encodes the edit with its header and CRC.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = manifest::header(KIND_EDIT);
        let names = self.names();
        let mut e = Encoder::new(&mut out);
        e.u64(self.generation);
        e.u64(self.base);
        names.encode(&mut e);
        e.u32(self.writers_removed.len() as u32);
        for writer in &self.writers_removed {
            e.u64(writer.0);
        }
        e.u32(self.writers.len() as u32);
        for change in &self.writers {
            change.encode(&mut e, &names);
        }
        e.u32(self.metadata.len() as u32);
        for writer in &self.metadata {
            e.u64(writer.0);
        }
        e.u32(self.files_removed.len() as u32);
        for path in &self.files_removed {
            e.str(path);
        }
        e.u32(self.files_added.len() as u32);
        for file in &self.files_added {
            manifest::encode_file(&mut e, &names, file);
        }
        manifest::seal(out)
    }

    fn names(&self) -> Names<'_> {
        let mut names = Names::default();
        for change in &self.writers {
            for (run, _) in &change.keys_removed {
                names.add_run(*run);
            }
            for ((run, _), key) in &change.keys_set {
                names.add(*run, key);
            }
            for (run, key) in &change.summaries_removed {
                names.add(*run, key);
            }
            for ((run, key), _) in &change.summaries_set {
                names.add(*run, key);
            }
        }
        for file in &self.files_added {
            names.add_file(file);
        }
        names.number();
        names
    }

    /// Decodes the body after the header (the caller checked the CRC and finishes the
    /// decoder), and checks its fields against each other.
    pub(super) fn decode_body(d: &mut Decoder<'_>) -> Result<ManifestEdit, CorruptionKind> {
        let generation = d.u64()?;
        let base = d.u64()?;
        if base == 0 || base >= generation {
            return Err(CorruptionKind::MalformedPayload(format!(
                "an edit of generation {generation} cannot build on base {base}"
            )));
        }
        let names = NameTables::decode(d)?;
        let mut writers_removed = Vec::new();
        for _ in 0..manifest::bounded(d, 8)? {
            writers_removed.push(WriterId(d.u64()?));
        }
        let mut writers = Vec::new();
        for _ in 0..manifest::bounded(d, WRITER_CHANGE_BYTES_MIN)? {
            writers.push(WriterChange::decode(d, &names)?);
        }
        let mut metadata = BTreeSet::new();
        for _ in 0..manifest::bounded(d, 8)? {
            metadata.insert(WriterId(d.u64()?));
        }
        let mut files_removed = Vec::new();
        for _ in 0..manifest::bounded(d, PATH_BYTES_MIN)? {
            files_removed.push(d.string()?);
        }
        let mut files_added = Vec::new();
        for _ in 0..manifest::bounded(d, FILE_BYTES_MIN)? {
            let file = manifest::decode_file(d, Some(&names))?;
            manifest::check_file(&file, generation)?;
            files_added.push(file);
        }
        Ok(ManifestEdit {
            generation,
            base,
            writers_removed,
            writers,
            metadata,
            files_removed,
            files_added,
        })
    }
}

/// The files removed (by path) and added that turn `previous` into `next`: a file kept must
/// keep its entry and its place, and every new file come after the kept ones; else `None`.
fn diff_files(
    previous: &[CompactedFile],
    next: &[CompactedFile],
) -> Option<(Vec<String>, Vec<CompactedFile>)> {
    let before: HashMap<&str, &CompactedFile> =
        previous.iter().map(|f| (f.path.as_str(), f)).collect();
    let kept_count = next
        .iter()
        .take_while(|f| before.get(f.path.as_str()).is_some_and(|old| *old == *f))
        .count();
    let (kept, added) = next.split_at(kept_count);
    let kept_paths: HashSet<&str> = kept.iter().map(|f| f.path.as_str()).collect();
    let in_order = previous
        .iter()
        .filter(|f| kept_paths.contains(f.path.as_str()))
        .map(|f| f.path.as_str())
        .eq(kept.iter().map(|f| f.path.as_str()));
    if !in_order || kept_paths.len() != kept.len() {
        return None;
    }
    let removed = previous
        .iter()
        .filter(|f| !kept_paths.contains(f.path.as_str()))
        .map(|f| f.path.clone())
        .collect();
    Some((removed, added.to_vec()))
}

impl WriterChange {
    /// What changed in `writer`'s mark from `previous` (none: a new writer) to `next`; `None`
    /// if nothing did.
    fn diff(
        writer: WriterId,
        previous: Option<&WriterMark>,
        next: &WriterMark,
    ) -> Option<WriterChange> {
        let empty = WriterMark::default();
        let old = previous.unwrap_or(&empty);
        let keys_removed: Vec<_> = (old.keys.keys())
            .filter(|k| !next.keys.contains_key(k))
            .copied()
            .collect();
        let keys_set: Vec<_> = (next.keys.iter())
            .filter(|(k, v)| old.keys.get(*k) != Some(*v))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let summaries_removed: Vec<_> = (old.summaries.keys())
            .filter(|k| !next.summaries.contains_key(*k))
            .cloned()
            .collect();
        let summaries_set: Vec<_> = (next.summaries.iter())
            .filter(|(k, v)| !old.summaries.get(*k).is_some_and(|o| same_summary(o, v)))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let unchanged = previous.is_some()
            && old.through == next.through
            && old.finished == next.finished
            && keys_removed.is_empty()
            && keys_set.is_empty()
            && summaries_removed.is_empty()
            && summaries_set.is_empty();
        (!unchanged).then_some(WriterChange {
            writer,
            through: next.through,
            finished: next.finished,
            keys_removed,
            keys_set,
            summaries_removed,
            summaries_set,
        })
    }

    fn apply(&self, mark: &mut WriterMark) -> Result<(), CorruptionKind> {
        let missing = |what: String| {
            Err(CorruptionKind::MalformedPayload(format!(
                "writer {}: removes {what}, which is not listed",
                self.writer
            )))
        };
        mark.through = self.through;
        mark.finished = self.finished;
        for key in &self.keys_removed {
            if mark.keys.remove(key).is_none() {
                return missing(format!("key id {} of run {}", key.1.0, key.0));
            }
        }
        mark.keys.extend(self.keys_set.iter().cloned());
        for series in &self.summaries_removed {
            if mark.summaries.remove(series).is_none() {
                return missing(format!("the summary of ({}, {:?})", series.0, series.1));
            }
        }
        mark.summaries.extend(self.summaries_set.iter().cloned());
        Ok(())
    }

    fn encode(&self, e: &mut Encoder<'_>, names: &Names<'_>) {
        e.u64(self.writer.0);
        manifest::encode_through(e, self.through);
        e.u8(u8::from(self.finished));
        e.u32(self.keys_removed.len() as u32);
        for (run, key_id) in &self.keys_removed {
            names.put_run(e, *run);
            e.u32(key_id.0);
        }
        e.u32(self.keys_set.len() as u32);
        for ((run, key_id), key) in &self.keys_set {
            names.put_run(e, *run);
            e.u32(key_id.0);
            names.put_key(e, key);
        }
        e.u32(self.summaries_removed.len() as u32);
        for (run, key) in &self.summaries_removed {
            names.put_run(e, *run);
            names.put_key(e, key);
        }
        e.u32(self.summaries_set.len() as u32);
        for ((run, key), summary) in &self.summaries_set {
            names.put_run(e, *run);
            names.put_key(e, key);
            manifest::encode_summary(e, summary);
        }
    }

    fn decode(d: &mut Decoder<'_>, names: &NameTables) -> Result<WriterChange, CorruptionKind> {
        let names = Some(names);
        let writer = WriterId(d.u64()?);
        let through = manifest::decode_through(d)?;
        let finished = manifest::decode_finished(d)?;
        let mut keys_removed = Vec::new();
        for _ in 0..manifest::bounded(d, KEY_REMOVED_BYTES_MIN)? {
            keys_removed.push((NameTables::run(names, d)?, KeyId(d.u32()?)));
        }
        let mut keys_set = Vec::new();
        for _ in 0..manifest::bounded(d, KEY_SET_BYTES_MIN)? {
            let run = NameTables::run(names, d)?;
            let key_id = KeyId(d.u32()?);
            keys_set.push(((run, key_id), NameTables::key(names, d)?));
        }
        let mut summaries_removed = Vec::new();
        for _ in 0..manifest::bounded(d, SUMMARY_REMOVED_BYTES_MIN)? {
            summaries_removed.push((NameTables::run(names, d)?, NameTables::key(names, d)?));
        }
        let mut summaries_set = Vec::new();
        for _ in 0..manifest::bounded(d, SUMMARY_SET_BYTES_MIN)? {
            let series = (NameTables::run(names, d)?, NameTables::key(names, d)?);
            summaries_set.push((series, manifest::decode_summary(d)?));
        }
        Ok(WriterChange {
            writer,
            through,
            finished,
            keys_removed,
            keys_set,
            summaries_removed,
            summaries_set,
        })
    }
}

/// Summaries equal bit for bit: NaN values and payloads included, which `==` would not match.
fn same_summary(a: &MetricSummary, b: &MetricSummary) -> bool {
    let floats =
        |s: &MetricSummary| [s.last_value, s.min_value, s.max_value, s.sum].map(f64::to_bits);
    let integers = |s: &MetricSummary| {
        [
            s.count as i64,
            s.first_step,
            s.last_step,
            s.last_timestamp_ms,
            s.min_step,
            s.max_step,
            s.finite_count as i64,
        ]
    };
    floats(a) == floats(b) && integers(a) == integers(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compaction::manifest::{FileChecksum, ManifestFile, SeriesRows};
    use crate::ids::ExperimentId;

    fn file(experiment: u64, generation: u64, merged: bool, runs: &[u128]) -> CompactedFile {
        let suffix = if merged { "-merged" } else { "" };
        CompactedFile {
            experiment: ExperimentId(experiment),
            generation,
            path: format!("experiments/{experiment}/{generation:010}{suffix}.parquet"),
            checksum: Some(FileChecksum {
                bytes: 100 + generation,
                crc: 7,
            }),
            rows: 2 * runs.len() as u64,
            series: (runs.iter().enumerate())
                .map(|(i, run)| SeriesRows {
                    run: RunId(*run),
                    key: "loss".into(),
                    row_start: 2 * i as u64,
                    row_count: 2,
                    first_step: 0,
                    last_step: 1,
                })
                .collect(),
        }
    }

    fn mark(through: u64, runs: &[u128]) -> WriterMark {
        let mut mark = WriterMark {
            through: Some(SegmentSequence(through)),
            ..WriterMark::default()
        };
        for run in runs {
            let mut summary = MetricSummary::EMPTY;
            summary.update(0, 10, 0.5);
            summary.update(1, 11, f64::NAN);
            mark.summaries.insert((RunId(*run), "loss".into()), summary);
            mark.keys.insert((RunId(*run), KeyId(0)), "loss".into());
        }
        mark
    }

    /// Generation 3: two writers, a metadata chain, three files of experiment 11.
    fn previous() -> Manifest {
        Manifest {
            version: VERSION,
            generation: 3,
            writers: [
                (WriterId(1), mark(2, &[5, 6])),
                (WriterId(2), mark(0, &[7])),
            ]
            .into(),
            metadata: [WriterId(9)].into(),
            files: vec![
                file(11, 1, false, &[5]),
                file(11, 2, false, &[6]),
                file(12, 3, false, &[7]),
            ],
            ..Manifest::default()
        }
    }

    /// Generation 4 as a compaction that merges experiment 11 and moves writers would make it.
    fn next() -> Manifest {
        let mut next = previous();
        next.generation = 4;
        let one = next.writers.get_mut(&WriterId(1)).unwrap();
        one.through = Some(SegmentSequence(3));
        one.finished = true;
        one.keys.clear();
        let series = (RunId(5), "loss".to_string());
        one.summaries.get_mut(&series).unwrap().update(2, 12, -1.0);
        next.writers.remove(&WriterId(2));
        next.writers.insert(WriterId(3), mark(0, &[8]));
        next.metadata = [WriterId(9), WriterId(10)].into();
        next.files.retain(|f| f.experiment != ExperimentId(11));
        next.files.push(file(11, 4, true, &[5, 6]));
        next.files.push(file(13, 4, false, &[8]));
        next
    }

    #[test]
    fn an_edit_applied_to_the_state_before_it_gives_the_state_after_it() {
        let (previous, next) = (previous(), next());
        let edit = ManifestEdit::diff(&previous, &next, 1).expect("an edit");
        let bytes = edit.encode();
        let ManifestFile::Edit(decoded) = ManifestFile::decode(&bytes).expect("decodes") else {
            panic!("not an edit");
        };
        assert_eq!(decoded.encode(), bytes);
        let mut state = previous.clone();
        decoded.apply(&mut state).expect("applies");
        // NaN != NaN, so compare the encodings.
        assert_eq!(state.encode(), next.encode());
        assert!(bytes.len() < next.encode().len());
        // Nothing changed: an edit with nothing but the generation and the metadata set.
        let mut same = previous.clone();
        same.generation = 4;
        let empty = ManifestEdit::diff(&previous, &same, 1).expect("an edit");
        assert!(empty.writers.is_empty() && empty.files_added.is_empty());
    }

    #[test]
    fn an_edit_rejects_every_bit_flip_and_truncation() {
        let bytes = ManifestEdit::diff(&previous(), &next(), 1)
            .expect("an edit")
            .encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(ManifestFile::decode(&flipped).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(ManifestFile::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(
            Manifest::decode(&bytes).is_err(),
            "an edit is no whole manifest"
        );
    }

    /// An edit applied to a state it was not made from is refused, not merged into it.
    #[test]
    fn an_edit_applied_to_another_state_is_refused() {
        let edit = ManifestEdit::diff(&previous(), &next(), 1).expect("an edit");
        type Other = fn(&mut Manifest);
        let others: [(&str, Other); 4] = [
            ("another generation", |m| m.generation = 2),
            ("a removed file missing", |m| {
                m.files.remove(0);
            }),
            ("a removed writer missing", |m| {
                m.writers.remove(&WriterId(2));
            }),
            ("an added file already listed", |m| {
                m.files.push(file(13, 4, false, &[8]))
            }),
        ];
        for (name, other) in others {
            let mut state = previous();
            other(&mut state);
            assert!(
                matches!(
                    edit.apply(&mut state),
                    Err(CorruptionKind::MalformedPayload(_))
                ),
                "{name}"
            );
        }
        // Fields that contradict each other: a base not before the edit, a file newer than it.
        let mut bad = edit.clone();
        bad.base = 4;
        assert!(ManifestFile::decode(&bad.encode()).is_err());
        let mut newer = edit.clone();
        newer.files_added[0] = file(11, 5, true, &[5]);
        assert!(ManifestFile::decode(&newer.encode()).is_err());
    }

    /// Files whose order an edit cannot express (a kept file moved) get no edit: the compactor
    /// then writes a base.
    #[test]
    fn files_out_of_order_make_no_edit() {
        let mut next = previous();
        next.generation = 4;
        next.files.swap(0, 1);
        assert!(ManifestEdit::diff(&previous(), &next, 1).is_none());
        let mut skipped = previous();
        skipped.generation = 5;
        assert!(ManifestEdit::diff(&previous(), &skipped, 1).is_none());
    }
}
