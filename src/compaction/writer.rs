//! The compactor: sealed segments after each writer's watermark become one sorted Parquet file
//! per experiment; an experiment with too many files has them merged; then the manifest.
//!
//! Points are gathered per series (one map lookup per distinct key of a batch, not per point),
//! each series sorted by step only if it is not already, and the columns concatenated in
//! (run, key) order, so the series index falls out of the series' lengths.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use super::manifest::{self, CompactedFile, FileChecksum, Manifest, SeriesRows};
use super::{FILES_PER_EXPERIMENT_MAX, METADATA_CHAINS_MAX};
use super::{intent, survey};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::ids::{ExperimentId, KeyId, RunId, SegmentSequence, WriterId};
use crate::io::Storage;
use crate::layout::WAL_DIR;
use crate::parquet_file::{Layout, write as write_parquet};
use crate::summary::{MetricSummary, WriterMark};
use crate::tracking::Store;
use crate::wal::reader::{self, ChainEnd, ReadOptions};
use crate::wal::writer::{Writer, WriterOptions, segment_bytes_to_hold};
use crate::wal::{Event, MetricBatch, segment};

use crate::layout::{COMPACTED_EXTENSION, COMPACTION_LOCK as LOCK_FILE, EXPERIMENTS_DIR};

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The manifest generation in force after the call: the one written, or, when there was
    /// nothing to compact (`segments` is 0), the one already in force (0: none yet).
    pub generation: u64,
    /// Segments compacted.
    pub segments: usize,
    /// Points moved into Parquet.
    pub points: u64,
    /// Files written (new and merged).
    pub files_written: usize,
    /// Files replaced by a merge.
    pub files_merged: usize,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Non-metric events of the compacted segments copied into a metadata chain.
    pub metadata_events: usize,
    /// Compacted segments deleted from the log.
    pub segments_deleted: usize,
    /// Bytes of the manifest file written: an edit, or a whole manifest (a base).
    pub manifest_bytes: u64,
}

/// What a compaction takes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Include {
    /// Seal this handle's open segments first, so everything it logged is compacted.
    OwnTail,
    /// Only segments already sealed; do not wait for another compaction.
    SealedOnly,
}

/// The points of one series, in logging order (and, after `sort`, by step).
#[derive(Default)]
struct Series {
    steps: Vec<i64>,
    timestamps_ms: Vec<i64>,
    values: Vec<f64>,
}

impl Series {
    /// Sorts by step, stably (logging order kept within a step); usually already sorted.
    fn sort(&mut self) {
        if self.steps.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        let mut order: Vec<usize> = (0..self.steps.len()).collect();
        order.sort_by_key(|i| self.steps[*i]);
        self.steps = order.iter().map(|i| self.steps[*i]).collect();
        self.timestamps_ms = order.iter().map(|i| self.timestamps_ms[*i]).collect();
        self.values = order.iter().map(|i| self.values[*i]).collect();
    }
}

/// One experiment's series, in file order: (run, key). Run ids print as fixed-width hex, so
/// this order is also the text order of the `run_id` column.
type ExperimentSeries = BTreeMap<(RunId, String), Series>;

impl Store {
    /// Compacts every sealed segment, and first seals this handle's own open segments so its
    /// newest points are included.
    ///
    /// ```
    /// # fn main() -> runlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| runlog::Error::InvalidInput(e.to_string()))?;
    /// let store = runlog::Store::open(dir.path())?;
    /// let run = store.start_run(store.get_or_create_experiment("e")?.id, Default::default())?;
    /// for step in 0..1000 {
    ///     run.log_metric("loss", 1.0 / (step + 1) as f64, step)?;
    /// }
    /// let report = store.compact()?;
    /// assert_eq!(report.points, 1000);
    /// assert_eq!(store.history(run.id(), "loss", ..)?.len(), 1000); // now from Parquet
    /// # Ok(())
    /// # }
    /// ```
    pub fn compact(&self) -> Result<CompactionReport> {
        let report = self.compact_with(Include::OwnTail)?;
        // Best effort: the compaction is done and its report is the answer; a temporary that
        // cannot be removed stays for the next sweep, and
        // `Store::remove_stale_artifact_temporaries` called alone says why.
        let _ = self.remove_stale_artifact_temporaries();
        Ok(report.unwrap_or_default())
    }

    /// Compacts; with `Include::SealedOnly` this handle's lanes are left open (so its writers
    /// keep their chains), and if another compaction holds the lock, returns `None` at once
    /// instead of waiting. The background compactor's call.
    pub(crate) fn compact_with(&self, include: Include) -> Result<Option<CompactionReport>> {
        let (lock, lock_path) = self.open_lock_file(LOCK_FILE)?;
        match include {
            Include::OwnTail => {
                lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
                self.log().close()?;
            }
            Include::SealedOnly => match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io("lock", &lock_path, e));
                }
            },
        }
        let root = self.root().to_path_buf();
        let storage = self.options().storage.as_ref();
        self.refresh()?;
        let (loaded, chain) = match manifest::newest_generation(&root)? {
            0 => (Manifest::default(), None),
            newest => manifest::load_with_chain(&root, newest)?,
        };
        // The manifest of the generation before this one stays loadable until the one after
        // this is published: its chain starts here.
        let keep_from = chain.map_or(loaded.generation, |c| c.base);
        // Files a crashed compaction published without a manifest would collide with this
        // generation's names, so its provable leftovers go first; anything no manifest
        // accounts for stops the compaction, which would otherwise build on lost history.
        let survey = survey::survey(&root, &loaded)?;
        survey.check()?;
        // A leftover that stays must stop this compaction: its proof is a manifest that the
        // clean-up after the next manifest would remove, and it would then read as damage.
        remove_leftovers(&survey, storage)?;
        let listed = reader::list_writers(&root.join(WAL_DIR))?;
        // An edit is what turns the state loaded into the next; only a version 4 state has a
        // chain to add one to. Both leave out the marks no compaction can change any more,
        // which `publish_next` puts back, so the copy kept to diff against is not a second
        // whole manifest.
        let mut loaded = loaded;
        let unchanged = match chain {
            Some(_) => take_unchanged(&mut loaded, &listed),
            None => BTreeMap::new(),
        };
        let previous = chain.map(|_| loaded.clone());
        // A stage-one manifest has no summaries or metadata chains, so nothing it covers may be
        // deleted: compact the whole log again (its segments are all still there) and let its
        // files be removed once the new manifest is in force.
        let mut manifest = if loaded.covers_catalog() {
            let mut loaded = loaded;
            add_checksums(&root, &mut loaded)?;
            loaded
        } else {
            Manifest {
                generation: loaded.generation,
                ..Manifest::default()
            }
        };
        let generation = manifest.generation + 1;
        let run_experiment: HashMap<RunId, ExperimentId> = self.catalog().run_experiments();
        let mut report = CompactionReport::default();
        let mut gathered: BTreeMap<ExperimentId, ExperimentSeries> = BTreeMap::new();
        let mut metadata = Vec::new();
        gather(
            &root,
            &listed,
            &mut manifest,
            &run_experiment,
            &mut gathered,
            &mut metadata,
            &mut report,
        )?;
        if report.segments == 0 {
            report.generation = manifest.generation;
            return Ok(Some(report));
        }
        // From here on, files of `generation` may exist before its manifest does.
        intent::write(&root, generation, storage)?;
        if !metadata.is_empty() {
            let chain = self.write_metadata_chain(&metadata)?;
            manifest.metadata.insert(chain);
            report.metadata_events = metadata.len();
        }
        for (experiment, series) in gathered {
            let path = file_path(experiment, &format!("{generation:010}"));
            let (file, bytes) = write_file(&root, &path, experiment, generation, series, storage)?;
            manifest.files.push(file);
            report.files_written += 1;
            report.bytes += bytes;
        }
        merge_generations(&root, &mut manifest, generation, storage, &mut report)?;
        manifest.generation = generation;
        let previous = previous.unwrap_or_default();
        report.manifest_bytes =
            manifest::publish_next(&root, &previous, chain, &mut manifest, unchanged, storage)?;
        report.generation = generation;
        // What follows reads the marks' watermarks and the files only: the marks' summaries
        // and keys, most of a large manifest's memory, go before the refresh loads the new
        // manifest beside it.
        drop(previous);
        for mark in manifest.writers.values_mut() {
            mark.summaries = BTreeMap::new();
            mark.keys = BTreeMap::new();
        }
        // Read what is about to be deleted, so this handle need not rebuild its catalog. Best
        // effort: a failure here is met again, and reported, by the next read.
        let _ = self.refresh();
        report.segments_deleted = delete_compacted(&root, &manifest, storage);
        clean_up(&root, &manifest, keep_from, storage);
        drop(lock);
        Ok(Some(report))
    }

    /// Writes `events` into a new, sealed chain of a fresh writer id; returns the id. Its first
    /// segment is sized to hold them all, so a nearly full disk that has room for them does
    /// not refuse a compaction, which frees space.
    fn write_metadata_chain(&self, events: &[Event]) -> Result<WriterId> {
        let options = WriterOptions {
            segment_bytes: self.options().segment_bytes,
            sync_every_append: false,
        };
        let storage = Arc::clone(&self.options().storage);
        let wal_dir = self.root().join(WAL_DIR);
        let segment_bytes = segment_bytes_to_hold(events);
        let mut writer = Writer::create_metadata_chain(&wal_dir, storage, options, segment_bytes)?;
        for event in events {
            writer.append(event)?;
        }
        let id = writer.id();
        // Sealing syncs the chain, so it is durable before the manifest that lists it.
        writer.close()?;
        Ok(id)
    }

    /// The manifest in force.
    pub fn manifest(&self) -> Result<Manifest> {
        manifest::load(self.root())
    }
}

/// Checksums the files a version 2 manifest lists, which it has no checksums for, so the
/// manifest this compaction writes has one for every file it keeps.
fn add_checksums(root: &Path, manifest: &mut Manifest) -> Result<()> {
    for file in manifest.files.iter_mut().filter(|f| f.checksum.is_none()) {
        file.checksum = Some(FileChecksum::of_file(&root.join(&file.path))?);
    }
    Ok(())
}

fn file_path(experiment: ExperimentId, name: &str) -> String {
    format!("{EXPERIMENTS_DIR}/{experiment}/{name}.{COMPACTED_EXTENSION}")
}

/// Whether a compaction gathers the metadata chains too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetadataChains {
    /// Pass them over: their events are compacted already.
    PassOver,
    /// Gather them, so that their events move into the one chain this compaction writes.
    Merge,
}

/// Where `gather` puts what it reads.
struct Gathered<'a> {
    run_experiment: &'a HashMap<RunId, ExperimentId>,
    series: &'a mut BTreeMap<ExperimentId, ExperimentSeries>,
    metadata: &'a mut Vec<Event>,
    report: &'a mut CompactionReport,
}

/// What compaction takes from one sealed segment.
struct SegmentContents {
    /// The writer's key definitions up to the end of the segment.
    keys: BTreeMap<(RunId, KeyId), String>,
    batches: Vec<MetricBatch>,
    /// Events but metric batches and key definitions, in log order.
    events: Vec<Event>,
    /// The seal says the writer appends no further segment.
    final_segment: bool,
}

/// Reads every compactable segment after each writer's watermark: every segment but a chain's
/// last, and the last too once it is sealed and trimmed. A writer stops before a segment with a
/// point whose run has no known experiment (the run's creation is not readable yet) or whose key
/// is not defined. Points go to `gathered` and their writer's summaries; other events but key
/// definitions (which the manifest keeps) go to `metadata`, in log order.
///
/// Metadata chains are passed over, unless there are more than `METADATA_CHAINS_MAX`: then
/// they are gathered too, so their events move into the one chain this compaction writes.
fn gather(
    root: &Path,
    listed: &BTreeMap<WriterId, reader::WriterFiles>,
    manifest: &mut Manifest,
    run_experiment: &HashMap<RunId, ExperimentId>,
    gathered: &mut BTreeMap<ExperimentId, ExperimentSeries>,
    metadata: &mut Vec<Event>,
    report: &mut CompactionReport,
) -> Result<()> {
    let wal_dir = root.join(WAL_DIR);
    let chains = if manifest.metadata.len() > METADATA_CHAINS_MAX {
        MetadataChains::Merge
    } else {
        MetadataChains::PassOver
    };
    let mut into = Gathered {
        run_experiment,
        series: gathered,
        metadata,
        report,
    };
    for (writer, files) in listed {
        if chains == MetadataChains::PassOver && manifest.metadata.contains(writer) {
            continue;
        }
        let mark = manifest.writers.entry(*writer).or_default();
        gather_writer(&wal_dir, *writer, files, mark, &mut into)?;
    }
    // A writer with no file left at all (everything compacted and deleted, no lock) is done.
    for (writer, mark) in manifest.writers.iter_mut() {
        if !mark.finished && !listed.contains_key(writer) {
            mark.keys.clear();
            mark.finished = true;
        }
    }
    manifest.writers.retain(|_, mark| mark.through.is_some());
    if chains == MetadataChains::Merge {
        // Every chain gathered whole moved into the new one; a chain that could not be (it lost
        // its seal: an error above) stays listed.
        let writers = &manifest.writers;
        manifest
            .metadata
            .retain(|chain| !writers.get(chain).is_some_and(|mark| mark.finished));
    }
    Ok(())
}

/// Takes out of `manifest` the marks of the writers that no compaction can change any more:
/// finished, with no file left in the log, and not metadata chains (which `gather` may
/// retire). In a large store they hold nearly every summary.
fn take_unchanged(
    manifest: &mut Manifest,
    listed: &BTreeMap<WriterId, reader::WriterFiles>,
) -> BTreeMap<WriterId, WriterMark> {
    let metadata = &manifest.metadata;
    let (unchanged, changing) =
        std::mem::take(&mut manifest.writers)
            .into_iter()
            .partition(|(writer, mark)| {
                mark.finished
                    && mark.through.is_some()
                    && !listed.contains_key(writer)
                    && !metadata.contains(writer)
            });
    manifest.writers = changing;
    unchanged
}

/// Gathers one writer's compactable segments after its watermark `mark`, and moves the mark.
fn gather_writer(
    wal_dir: &Path,
    writer: WriterId,
    files: &reader::WriterFiles,
    mark: &mut WriterMark,
    into: &mut Gathered<'_>,
) -> Result<()> {
    let start = mark.through.map_or(0, |s| s.0 + 1);
    let mut finished = false;
    let last = files.segments.last().copied();
    for sequence in files.segments.iter().copied().filter(|s| s.0 >= start) {
        let path = segment::segment_path(wal_dir, writer, sequence);
        if Some(sequence) == last && !is_sealed(&path)? {
            break;
        }
        let mut contents = read_sealed_segment(wal_dir, writer, sequence, mark.keys.clone())?;
        // A segment left out stays in the log with its keys still needed: only a final
        // segment actually taken ends the writer.
        if !into.placeable(&contents) {
            break;
        }
        finished = contents.final_segment;
        for batch in &contents.batches {
            if let Some(experiment) = into.run_experiment.get(&batch.run) {
                into.report.points += batch.len() as u64;
                let series = into.series.entry(*experiment).or_default();
                add_batch(series, &mut mark.summaries, &contents.keys, batch);
            }
        }
        into.metadata.append(&mut contents.events);
        into.report.segments += 1;
        mark.keys = contents.keys;
        mark.through = Some(sequence);
    }
    // A chain taken to its last segment is finished if that segment's seal says so, or if
    // the writer has no lock file: it was closed, or it died and recovery removed its lock,
    // so it can never append again, even when its last seal is a rotation's (non-final)
    // one. Readers would otherwise wait for a next segment that will never exist.
    let taken_whole = mark.through.is_some() && mark.through == last;
    if finished || (taken_whole && !files.has_lock_file) {
        mark.keys.clear();
        mark.finished = true;
    }
    Ok(())
}

impl Gathered<'_> {
    /// Whether every point of `contents` has a run of known experiment and a defined key.
    fn placeable(&self, contents: &SegmentContents) -> bool {
        contents.batches.iter().all(|batch| {
            self.run_experiment.contains_key(&batch.run)
                && batch
                    .key_ids
                    .iter()
                    .all(|key_id| contents.keys.contains_key(&(batch.run, *key_id)))
        })
    }
}

/// Reads one segment of `writer` on its own, with the key definitions `keys` of the segments
/// before it. Read alone, a segment counts as its chain's last; only a sealed one may be
/// compacted, and one that has lost its seal is damage, not a tail.
fn read_sealed_segment(
    wal_dir: &Path,
    writer: WriterId,
    sequence: SegmentSequence,
    mut keys: BTreeMap<(RunId, KeyId), String>,
) -> Result<SegmentContents> {
    let mut batches = Vec::new();
    let mut events = Vec::new();
    let read = reader::read_chain(
        wal_dir,
        writer,
        &[sequence],
        ReadOptions::default(),
        &mut |event| match event {
            Event::MetricKeyDefined { run, key_id, key } => {
                keys.insert((run, key_id), key);
            }
            Event::Metrics(batch) => batches.push(batch),
            other => events.push(other),
        },
    )?;
    let ChainEnd::Sealed { seal, .. } = read.end else {
        return Err(Error::Corrupt(Corruption {
            path: segment::segment_path(wal_dir, writer, sequence),
            offset: 0,
            kind: CorruptionKind::MalformedPayload(
                "a segment to compact does not end with its seal".into(),
            ),
        }));
    };
    Ok(SegmentContents {
        keys,
        batches,
        events,
        final_segment: seal.final_segment,
    })
}

/// Deletes every segment at or below its writer's watermark. Best effort: a segment left behind
/// is skipped by every reader (the manifest covers it) and deleted by the next compaction.
/// Returns how many were deleted.
fn delete_compacted(root: &Path, manifest: &Manifest, storage: &dyn Storage) -> usize {
    let wal_dir = root.join(WAL_DIR);
    let Ok(listed) = reader::list_writers(&wal_dir) else {
        return 0;
    };
    let mut deleted = 0;
    for (writer, files) in listed {
        let Some(through) = manifest.writers.get(&writer).and_then(|m| m.through) else {
            continue;
        };
        // Oldest first, so an interrupted deletion leaves each chain without a hole.
        for sequence in files.segments.iter().filter(|s| **s <= through) {
            let path = segment::segment_path(&wal_dir, writer, *sequence);
            if storage.remove(&path).is_ok() {
                deleted += 1;
            }
        }
    }
    deleted
}

/// Appends a batch's points to their series and their writer's summaries: one lookup per
/// distinct key of the batch.
fn add_batch(
    series: &mut ExperimentSeries,
    summaries: &mut BTreeMap<(RunId, String), MetricSummary>,
    keys: &BTreeMap<(RunId, KeyId), String>,
    batch: &MetricBatch,
) {
    let mut distinct: Vec<KeyId> = Vec::new();
    for key_id in &batch.key_ids {
        if !distinct.contains(key_id) {
            distinct.push(*key_id);
        }
    }
    for key_id in distinct {
        let Some(key) = keys.get(&(batch.run, key_id)) else {
            continue;
        };
        let target = series.entry((batch.run, key.clone())).or_default();
        let summary = summaries
            .entry((batch.run, key.clone()))
            .or_insert(MetricSummary::EMPTY);
        for i in (0..batch.len()).filter(|i| batch.key_ids[*i] == key_id) {
            summary.update(batch.steps[i], batch.timestamps_ms[i], batch.values[i]);
            target.steps.push(batch.steps[i]);
            target.timestamps_ms.push(batch.timestamps_ms[i]);
            target.values.push(batch.values[i]);
        }
    }
}

fn is_sealed(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    Ok(reader::is_final_and_trimmed(&file, len))
}

/// Writes one experiment's series as a compacted file; returns its manifest entry and size.
fn write_file(
    root: &Path,
    relative: &str,
    experiment: ExperimentId,
    generation: u64,
    mut series: ExperimentSeries,
    storage: &dyn Storage,
) -> Result<(CompactedFile, u64)> {
    series.retain(|_, points| !points.steps.is_empty());
    let rows: usize = series.values().map(|s| s.steps.len()).sum();
    let mut index = Vec::with_capacity(series.len());
    let mut steps = Vec::with_capacity(rows);
    let mut timestamps = Vec::with_capacity(rows);
    let mut values = Vec::with_capacity(rows);
    for ((run, key), points) in &mut series {
        points.sort();
        index.push(SeriesRows {
            run: *run,
            key: Arc::from(key.as_str()),
            row_start: steps.len() as u64,
            row_count: points.steps.len() as u64,
            first_step: points.steps.first().copied().unwrap_or_default(),
            last_step: points.steps.last().copied().unwrap_or_default(),
        });
        steps.extend_from_slice(&points.steps);
        timestamps.extend_from_slice(&points.timestamps_ms);
        values.extend_from_slice(&points.values);
    }
    // Values of f32 origin are stored as f32: the same numbers (widening is exact), but the
    // byte streams then line up with the f32 bytes and compress far better.
    let narrow = values.iter().all(|v| crate::wal::metric::is_f32_exact(*v));
    let (value_type, value_column): (DataType, ArrayRef) = if narrow {
        let narrowed: Vec<f32> = values.iter().map(|v| *v as f32).collect();
        (DataType::Float32, Arc::new(Float32Array::from(narrowed)))
    } else {
        (DataType::Float64, Arc::new(Float64Array::from(values)))
    };
    // No run or key column: the manifest's series index says which rows are whose, and per-row
    // strings cost the writer more than everything else together (measured with perf).
    let schema = Schema::new(vec![
        Field::new("step", DataType::Int64, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("value", value_type, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(steps)),
        Arc::new(Int64Array::from(timestamps)),
        value_column,
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns)
        .map_err(|e| Error::InvalidInput(format!("building a compacted file: {e}")))?;
    let written = write_parquet(&root.join(relative), &batch, Layout::Compacted, storage)?;
    let rows = rows as u64;
    let path = relative.to_string();
    Ok((
        CompactedFile {
            experiment,
            generation,
            path,
            checksum: Some(FileChecksum {
                bytes: written.bytes,
                crc: written.crc,
            }),
            rows,
            series: index,
        },
        written.bytes,
    ))
}

/// Merges the files of every experiment that has more than `FILES_PER_EXPERIMENT_MAX`.
fn merge_generations(
    root: &Path,
    manifest: &mut Manifest,
    generation: u64,
    storage: &dyn Storage,
    report: &mut CompactionReport,
) -> Result<()> {
    let mut counts: BTreeMap<ExperimentId, usize> = BTreeMap::new();
    for file in &manifest.files {
        *counts.entry(file.experiment).or_default() += 1;
    }
    for (experiment, count) in counts {
        if count <= FILES_PER_EXPERIMENT_MAX {
            continue;
        }
        let (mut old, kept): (Vec<CompactedFile>, Vec<CompactedFile>) =
            std::mem::take(&mut manifest.files)
                .into_iter()
                .partition(|f| f.experiment == experiment);
        manifest.files = kept;
        // Oldest generation first, so each series keeps its logging order within a step.
        old.sort_by_key(|f| f.generation);
        let mut series = ExperimentSeries::new();
        for file in &old {
            read_series_of(root, file, &mut series)?;
        }
        let path = file_path(experiment, &format!("{generation:010}-merged"));
        let (file, bytes) = write_file(root, &path, experiment, generation, series, storage)?;
        manifest.files.push(file);
        report.files_written += 1;
        report.files_merged += old.len();
        report.bytes += bytes;
    }
    Ok(())
}

/// Appends every series of a compacted file to `series`, using the manifest's index.
fn read_series_of(root: &Path, file: &CompactedFile, series: &mut ExperimentSeries) -> Result<()> {
    // A merge reads each file once: a cache of its own keeps the store's free of them.
    let cache = super::MetadataCache::default();
    for rows in &file.series {
        let mut columns = (Vec::new(), Vec::new(), Vec::new());
        super::reader::read_series(root, file, rows, super::Keep::All, &mut columns, &cache)?;
        let target = series.entry((rows.run, rows.key.to_string())).or_default();
        target.steps.extend(columns.0);
        target.timestamps_ms.extend(columns.1);
        target.values.extend(columns.2);
    }
    Ok(())
}

/// Removes the files `survey` proves to be leftovers; returns whether every one is gone.
/// Best effort: a leftover left behind is only disk space, and the next survey finds it again.
fn remove_leftovers(survey: &survey::Survey, storage: &dyn Storage) -> Result<()> {
    let mut first_error = None;
    let mut folders = std::collections::BTreeSet::new();
    for path in &survey.leftovers {
        match storage.remove(path) {
            Ok(()) => {
                folders.extend(path.parent().map(Path::to_path_buf));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                first_error.get_or_insert_with(|| Error::io("remove leftover", path, error));
            }
        }
    }
    // The removals must outlast a power loss before the manifest that proves them leftovers
    // goes: a file back from the dead with no manifest listing it would be missing history.
    for folder in folders {
        if let Err(error) = storage.sync_dir(&folder) {
            first_error.get_or_insert_with(|| Error::io("fsync", &folder, error));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// After `manifest` is published: removes the files it superseded (the previous manifest's
/// that it does not list), its intent, and the manifest files before `keep_from` (where the
/// chain of the previous generation starts), which go only once every file they prove a
/// leftover is gone, and with them temporaries of manifests and intents left by crashes.
/// Best effort.
fn clean_up(root: &Path, manifest: &Manifest, keep_from: u64, storage: &dyn Storage) {
    let Ok(survey) = survey::survey(root, manifest) else {
        return;
    };
    // The intent and older manifests go only while nothing depends on them: every leftover
    // they prove is gone (the intent is the only proof of this generation's files merged away
    // at once), and nothing in `experiments/` lacks a manifest.
    let removed_all = remove_leftovers(&survey, storage).is_ok();
    if !removed_all || !survey.missing.is_empty() {
        return;
    }
    intent::remove_through(root, manifest.generation, storage);
    let Ok(entries) = std::fs::read_dir(root.join(manifest::MANIFEST_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // The chains of this generation and the one before stay: readers may have chosen
        // either a moment ago, and the survey proves leftovers with the one before.
        let old_manifest =
            manifest::generation_of_manifest_name(name).is_some_and(|g| g < keep_from);
        // Under the compaction lock no publication into `manifest/` is under way, so a
        // temporary of a generation up to this one is a crashed publication's.
        let dead_temporary =
            manifest::generation_of_temporary_name(name).is_some_and(|g| g <= manifest.generation);
        if old_manifest || dead_temporary {
            let _ = storage.remove(&entry.path());
        }
    }
}
