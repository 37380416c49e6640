//! The series summaries of a manifest decoded for reading, left encoded: a read-only handle
//! needs a run's summaries only when it reads that run's metrics, so the manifest a
//! `ManifestCache` loads keeps the bytes of each writer's summaries with, per run, where its
//! entries start, and decodes a run's entries when asked (`each_of_run`). An open then costs
//! a scan of the summaries (each entry checked as a decode would check it) instead of a tree
//! of 200,000 allocated keys, and memory holds the manifest's bytes, not its decoded form.
//!
//! Invariants:
//! - A writer is either decoded (its `WriterMark::summaries`) or indexed here, never both: an
//!   indexed writer's mark has no summaries, and `take_writer` moves a writer's entries into
//!   its mark (an edit that changes a writer decodes it first, `ManifestEdit::apply`).
//! - An indexed writer's entries are in strictly ascending (run, key) order, with the run and
//!   key tables strictly ascending too, so each (run, key) is indexed once and each run's
//!   entries are contiguous. A manifest whose bytes are otherwise (a CRC-valid file that no
//!   compaction wrote) is decoded whole, as before, so it reads the same either way.
//! - Indexed entries were scanned in full when indexed: decoding one again cannot fail.
//!
//! Only the `ManifestCache`'s manifests are indexed; compaction, `verify` and `stats` load
//! decoded manifests (`manifest::load_with_chain`), which are the ones encoded and diffed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::manifest::{NameTables, decode_summary, skip_summary};
use crate::error::CorruptionKind;
use crate::ids::{RunId, WriterId};
use crate::summary::MetricSummary;
use crate::wal::codec::Decoder;

/// Where one run's entries of one writer start in the manifest's bytes, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunSpan {
    run: RunId,
    offset: usize,
    count: u32,
}

/// The summaries left encoded (see the module doc); empty for a decoded manifest.
#[derive(Clone, Default)]
pub struct EncodedSummaries {
    /// The manifest file's bytes, whose CRC was checked.
    bytes: Arc<Vec<u8>>,
    /// The key table the entries refer to (their runs are resolved in the spans).
    keys: Arc<Vec<String>>,
    /// Per indexed writer, its runs' spans, ascending by run.
    writers: HashMap<WriterId, Vec<RunSpan>>,
}

impl std::fmt::Debug for EncodedSummaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedSummaries")
            .field("bytes", &self.bytes.len())
            .field("writers", &self.writers.len())
            .finish_non_exhaustive()
    }
}

/// Two manifests are equal when they hold the same summaries; encoded ones are compared by
/// what they index, which is enough for the tests that compare manifests (a decoded and an
/// indexed copy of one manifest differ here, as they differ in their marks).
impl PartialEq for EncodedSummaries {
    fn eq(&self, other: &Self) -> bool {
        self.writers.len() == other.writers.len()
            && self.writers.keys().all(|writer| {
                let mut mine = BTreeMap::new();
                let mut theirs = BTreeMap::new();
                self.each_of_writer(*writer, &mut |run, key, s| {
                    mine.insert((run, key.to_string()), s.to_words());
                });
                other.each_of_writer(*writer, &mut |run, key, s| {
                    theirs.insert((run, key.to_string()), s.to_words());
                });
                mine == theirs
            })
    }
}

/// What a summary entry scan found in one writer's entries.
pub(super) enum Scanned {
    /// In order: indexed, nothing decoded.
    Indexed,
    /// Not in the order an index needs: the caller decodes them from where they start.
    OutOfOrder,
}

/// Builds the index while a manifest is decoded.
pub(super) struct Indexer {
    bytes: Arc<Vec<u8>>,
    /// Whether the name tables are strictly ascending (else nothing is indexed).
    tables_sorted: bool,
    writers: HashMap<WriterId, Vec<RunSpan>>,
}

impl Indexer {
    /// An indexer of the manifest whose file is `bytes`, with tables `runs` and `keys`.
    pub fn new(bytes: Arc<Vec<u8>>, runs: &[RunId], keys: &[String]) -> Indexer {
        let tables_sorted = runs.is_sorted_by(|a, b| a < b) && keys.is_sorted_by(|a, b| a < b);
        Indexer {
            bytes,
            tables_sorted,
            writers: HashMap::new(),
        }
    }

    /// Scans `count` version 3 summary entries of `writer` at `d`, checking each as a
    /// decode would, and indexes them if they are in order. On `OutOfOrder`, `d` has moved
    /// past an unknown part of them; the caller restarts from a copy.
    pub fn scan(
        &mut self,
        d: &mut Decoder<'_>,
        writer: WriterId,
        count: u32,
        tables: &NameTables,
    ) -> Result<Scanned, CorruptionKind> {
        let (runs, keys) = (&tables.runs, &tables.keys);
        if !self.tables_sorted || self.writers.contains_key(&writer) {
            return Ok(Scanned::OutOfOrder);
        }
        let mut spans: Vec<RunSpan> = Vec::new();
        let mut last: Option<(u64, u64)> = None;
        for _ in 0..count {
            let offset = d.position();
            let run_index = d.varint()?;
            let key_index = d.varint()?;
            let run = table_entry(runs, run_index, "run")?;
            tables.charge_key(table_entry(keys, key_index, "key")?, d)?;
            skip_summary(d)?;
            if last.is_some_and(|last| last >= (run_index, key_index)) {
                return Ok(Scanned::OutOfOrder);
            }
            last = Some((run_index, key_index));
            match spans.last_mut() {
                Some(span) if span.run == *run => span.count += 1,
                _ => spans.push(RunSpan {
                    run: *run,
                    offset,
                    count: 1,
                }),
            }
        }
        self.writers.insert(writer, spans);
        Ok(Scanned::Indexed)
    }

    /// Drops `writer` from the index: a later entry of the same writer was decoded, and
    /// replaces it, as in a decode.
    pub fn forget(&mut self, writer: WriterId) {
        self.writers.remove(&writer);
    }

    /// The index, with the key table it refers to.
    pub fn finish(self, keys: Vec<String>) -> EncodedSummaries {
        if self.writers.is_empty() {
            return EncodedSummaries::default();
        }
        EncodedSummaries {
            bytes: self.bytes,
            keys: Arc::new(keys),
            writers: self.writers,
        }
    }
}

fn table_entry<'t, T>(table: &'t [T], index: u64, what: &str) -> Result<&'t T, CorruptionKind> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| {
            CorruptionKind::MalformedPayload(format!(
                "{what} index {index} is past the {} entries of the {what} table",
                table.len()
            ))
        })
}

impl EncodedSummaries {
    /// Whether `writer`'s summaries are here rather than in its mark.
    pub fn holds(&self, writer: WriterId) -> bool {
        self.writers.contains_key(&writer)
    }

    /// The distinct runs of `writer`'s summaries, ascending, if it is indexed.
    pub fn runs_of(&self, writer: WriterId) -> Option<Vec<RunId>> {
        let spans = self.writers.get(&writer)?;
        Some(spans.iter().map(|span| span.run).collect())
    }

    /// Calls `each` with every series of `run` among `writer`'s indexed entries, in key order.
    pub fn each_of_run(
        &self,
        writer: WriterId,
        run: RunId,
        each: &mut dyn FnMut(&str, &MetricSummary),
    ) {
        let Some(spans) = self.writers.get(&writer) else {
            return;
        };
        if let Ok(found) = spans.binary_search_by_key(&run, |span| span.run) {
            self.decode_span(&spans[found], &mut |_, key, summary| each(key, summary));
        }
    }

    /// Calls `each` with every indexed series of `writer`, in (run, key) order.
    fn each_of_writer(&self, writer: WriterId, each: &mut dyn FnMut(RunId, &str, &MetricSummary)) {
        for span in self.writers.get(&writer).map_or(&[][..], Vec::as_slice) {
            self.decode_span(span, each);
        }
    }

    fn decode_span(&self, span: &RunSpan, each: &mut dyn FnMut(RunId, &str, &MetricSummary)) {
        let Some(from) = self.bytes.get(span.offset..) else {
            return;
        };
        let mut d = Decoder::new(from);
        for _ in 0..span.count {
            // Scanned whole when indexed (module invariant): these cannot fail, and stopping
            // is all that is left to do if they somehow did.
            let (Ok(_), Ok(key_index), Ok(summary)) =
                (d.varint(), d.varint(), decode_summary(&mut d))
            else {
                return;
            };
            let Some(key) = usize::try_from(key_index)
                .ok()
                .and_then(|i| self.keys.get(i))
            else {
                return;
            };
            each(span.run, key, &summary);
        }
    }

    /// Removes `writer` from the index and returns its summaries decoded (empty if it was not
    /// indexed), for a mark that an edit is about to change.
    pub fn take_writer(&mut self, writer: WriterId) -> BTreeMap<(RunId, String), MetricSummary> {
        let mut summaries = BTreeMap::new();
        self.each_of_writer(writer, &mut |run, key, summary| {
            summaries.insert((run, key.to_string()), *summary);
        });
        self.writers.remove(&writer);
        summaries
    }

    /// The indexed writers, in no particular order.
    pub fn writers(&self) -> Vec<WriterId> {
        self.writers.keys().copied().collect()
    }

    /// Whether any writer is indexed.
    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }
}
