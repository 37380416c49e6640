//! The append side of one writer: a chain of preallocated, mmapped segments owned by one
//! `Writer`, which takes `&mut self` to append, so it needs no lock of its own.
//!
//! Segments grow: the first is `SEGMENT_BYTES_FIRST` (1 MiB) or the configured `segment_bytes`
//! if smaller, and each next one doubles, up to `segment_bytes`, so a writer that logs ten
//! points costs about 1 MiB of disk, not the configured size. A record that does not fit the
//! next size gets a segment large enough for it (up to `segment_bytes`, which every record
//! fits). A metadata chain's first segment is sized to the events it is created for.
//!
//! Invariants:
//! - The writer holds an exclusive OS lock on `wal/<id>.lock` for its whole life; the lock file
//!   is durable before the first segment is created and is removed only after the last is
//!   sealed, trimmed and synced.
//! - A segment's file is exactly as long as the `segment_bytes` its header records until it is
//!   sealed and trimmed: readers tell an unsealed segment cut short from one still being
//!   written by that length.
//! - A segment's header is synced before any record goes in, and `SEAL_RECORD_BYTES` plus one
//!   byte of room are always kept free: a seal always fits, and never ends exactly at the
//!   preallocated end, so "the file ends with a seal" means "sealed and trimmed".
//! - Every metadata record is decoded again before it is written: nothing is acknowledged that
//!   a reader would reject.
//! - Bytes below `durable` are on disk; nothing below it is ever rewritten. The only in-place
//!   rewrite is the commit word of the open stream, which lies above `durable`: every flush closes
//!   the stream first.
//! - A segment is sealed (seal record, msync, trim, fsync) before the next one is created, so
//!   only the last segment of a chain can end in a torn record.
//! - After a failed sync the writer is poisoned: every later call fails.
//! - In a process forked from the writer's, every call fails with `Error::Forked` and dropping
//!   the writer touches nothing on disk: the segments and the lock are the parent's.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::error::{Error, Result};
use crate::ids::{KeyId, RunId, SegmentSequence, WriterId};
use crate::io::{ForkGuard, Storage};
use crate::limits::{
    BATCH_POINTS_MAX, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_FIRST, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN, STREAM_BYTES_MAX,
};
use crate::util::{IdHash, KeyHash, now_ms, random_u64, same_file};
use crate::wal::crc;
use crate::wal::event::{Event, Seal};
use crate::wal::metric::{self, Columns, MetricBatch, STREAM_OP_BYTES_MAX, StreamEncoder};
use crate::wal::record::{
    self, COMMIT_WORD_BYTES, FLAG_COMPRESSED, FRAME_BYTES, RecordType, SEAL_RECORD_BYTES,
    STREAM_HEADER_BYTES_MAX,
};
use crate::wal::segment::{self, HEADER_BYTES, SegmentHeader};

/// Settings of one writer.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Largest preallocated size of a segment. The first segment is `SEGMENT_BYTES_FIRST`
    /// (1 MiB) or this if smaller, and each next one doubles up to this; every record must fit
    /// a segment of this size.
    pub segment_bytes: u64,
    /// msync before every append returns (`Durability::Sync`).
    pub sync_every_append: bool,
}

/// Counters of what a writer appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records appended (a stream counts once).
    pub records: u64,
    /// Metric points appended.
    pub points: u64,
    /// Bytes appended to segments, headers and seals included.
    pub bytes: u64,
    /// Segments created.
    pub segments: u64,
}

/// An exclusive appender to one chain of segments.
pub struct Writer {
    wal_dir: PathBuf,
    id: WriterId,
    /// Unique among this process's writers, so an [`InternedKey`] knows whose id it holds.
    serial: u64,
    storage: Arc<dyn Storage>,
    options: WriterOptions,
    lock_path: PathBuf,
    lock_file: Option<File>,
    next_sequence: SegmentSequence,
    /// Preallocated size of the next segment, before growing it to fit a large record.
    next_segment_bytes: u64,
    active: Option<ActiveSegment>,
    stream: Option<OpenStream>,
    keys: HashMap<RunId, RunKeys, IdHash>,
    poisoned: Option<String>,
    scratch: Vec<u8>,
    compressed: Vec<u8>,
    stats: WriterStats,
    fork_guard: ForkGuard,
}

struct ActiveSegment {
    path: PathBuf,
    file: File,
    map: MmapMut,
    written: usize,
    durable: usize,
    records: u64,
}

struct OpenStream {
    /// File offset of the commit word (a multiple of 8).
    commit_at: usize,
    ops_count: u32,
    ops_bytes: usize,
    /// CRC-32 of the committed ops (`crc.rs`: the same CRC as `crc32fast`, cheaper on the few
    /// bytes each point adds).
    ops_crc: u32,
    encoder: StreamEncoder,
}

/// Records at least this long are written to the segment's file rather than copied into its
/// map (see `write_scratch_record`).
const WRITE_THROUGH_FILE_BYTES_MIN: usize = 64 * 1024;

/// Bits of an [`InternedKey`] that hold the key id; the writer serial takes the rest.
const INTERNED_KEY_ID_BITS: u32 = 24;
const _: () = assert!(crate::limits::KEYS_PER_RUN_MAX <= 1 << INTERNED_KEY_ID_BITS);

/// Serials of this process's writers; 0 is never given, so it marks an empty [`InternedKey`].
static NEXT_WRITER_SERIAL: AtomicU64 = AtomicU64::new(1);

/// One metric key of one run as the writer that last logged it interned it: the id that
/// writer gave the key, and which writer that was. Held by a caller that logs the key often (a
/// metric handle), it lets `Writer::log_point_interned` skip the key lookup whenever the
/// same writer logs it again; any other writer (another thread's lane, a lane's next writer)
/// looks the key up and remembers its own id instead.
///
/// One atomic word, so it is `Sync` and a writer sees a whole (writer, id) pair or none. The
/// 40-bit writer serial cannot wrap within a process (10^12 writers).
#[derive(Debug, Default)]
pub struct InternedKey(AtomicU64);

impl InternedKey {
    /// The key id `writer` gave, if it is the writer remembered.
    #[inline]
    fn get(&self, writer_serial: u64) -> Option<KeyId> {
        let word = self.0.load(Ordering::Relaxed);
        let mask = (1u64 << INTERNED_KEY_ID_BITS) - 1;
        (word >> INTERNED_KEY_ID_BITS == writer_serial).then_some(KeyId((word & mask) as u32))
    }

    fn set(&self, writer_serial: u64, key: KeyId) {
        let word = (writer_serial << INTERNED_KEY_ID_BITS) | u64::from(key.0);
        self.0.store(word, Ordering::Relaxed);
    }
}

impl Clone for InternedKey {
    fn clone(&self) -> Self {
        InternedKey(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

#[derive(Default)]
struct RunKeys {
    by_name: HashMap<Box<str>, KeyId, KeyHash>,
}

impl Writer {
    /// Creates a writer with a fresh id in `wal_dir` and its first segment.
    #[cfg(feature = "testing")]
    pub fn create(
        wal_dir: &Path,
        storage: Arc<dyn Storage>,
        options: WriterOptions,
    ) -> Result<Writer> {
        Writer::create_announced(wal_dir, storage, options, &mut |_| {})
    }

    /// Like [`Writer::create`], calling `claimed` with the new id before the writer's first
    /// segment exists, so that whoever lists that segment can already tell whose it is.
    pub(crate) fn create_announced(
        wal_dir: &Path,
        storage: Arc<dyn Storage>,
        options: WriterOptions,
        claimed: &mut dyn FnMut(WriterId),
    ) -> Result<Writer> {
        let first_segment_bytes = SEGMENT_BYTES_FIRST.min(options.segment_bytes);
        Writer::create_with(
            wal_dir,
            storage,
            options,
            IdRange::Writer,
            first_segment_bytes,
            claimed,
        )
    }

    /// Creates the writer of a metadata chain (compaction's copies of the events of the
    /// segments it takes), with an id below every ordinary writer's (see `IdRange`), and a
    /// first segment of `first_segment_bytes` (see [`segment_bytes_to_hold`]), kept within
    /// `SEGMENT_BYTES_MIN..=options.segment_bytes`.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn create_metadata_chain(
        wal_dir: &Path,
        storage: Arc<dyn Storage>,
        options: WriterOptions,
        first_segment_bytes: u64,
    ) -> Result<Writer> {
        let first_segment_bytes = first_segment_bytes.clamp(
            SEGMENT_BYTES_MIN,
            options.segment_bytes.max(SEGMENT_BYTES_MIN),
        );
        Writer::create_with(
            wal_dir,
            storage,
            options,
            IdRange::MetadataChain,
            first_segment_bytes,
            &mut |_| {},
        )
    }

    fn create_with(
        wal_dir: &Path,
        storage: Arc<dyn Storage>,
        options: WriterOptions,
        range: IdRange,
        first_segment_bytes: u64,
        claimed: &mut dyn FnMut(WriterId),
    ) -> Result<Writer> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&options.segment_bytes) {
            return Err(Error::InvalidInput(format!(
                "segment size {} bytes is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                options.segment_bytes
            )));
        }
        crate::io::create_dirs(wal_dir, storage.as_ref())?;
        let (id, lock_path, lock_file) = claim_writer_id(wal_dir, range)?;
        // The lock file is made durable before the first segment exists: a segment whose
        // writer has no lock file is read as a closed writer's, which must end with its seal
        // (`classify`), so a crash must never keep the segment and lose the lock file.
        if let Err(error) = storage.sync_dir(wal_dir) {
            let _ = storage.remove(&lock_path);
            return Err(Error::io("fsync", wal_dir, error));
        }
        claimed(id);
        let mut writer = Writer {
            wal_dir: wal_dir.to_path_buf(),
            id,
            serial: NEXT_WRITER_SERIAL.fetch_add(1, Ordering::Relaxed),
            storage,
            options,
            lock_path,
            lock_file: Some(lock_file),
            next_sequence: SegmentSequence(0),
            next_segment_bytes: first_segment_bytes,
            active: None,
            stream: None,
            keys: HashMap::default(),
            poisoned: None,
            scratch: Vec::new(),
            compressed: Vec::new(),
            stats: WriterStats::default(),
            fork_guard: ForkGuard::new(),
        };
        writer.open_next_segment(0)?;
        Ok(writer)
    }

    /// This writer's id.
    pub fn id(&self) -> WriterId {
        self.id
    }

    /// What this writer appended so far.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// Whether appends are refused after a failed sync.
    #[cfg(feature = "testing")]
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Why the writer is poisoned, if it is.
    pub fn poison_cause(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Appends a metadata event. Metric points go through [`Writer::log_point`] and
    /// [`Writer::log_columns`], which intern keys.
    pub fn append(&mut self, event: &Event) -> Result<()> {
        self.append_unsynced(event)?;
        self.after_append()
    }

    /// Appends metadata events in order, as [`Writer::append`] does each, and syncs once after
    /// the last under `sync_every_append`. `appended(n)` is told how many of the first events
    /// the log holds once the call is over, so the caller applies exactly those: all of them
    /// after a successful call (after its sync), the ones before a failed append, and none if
    /// the final sync failed (the writer is then poisoned and they may be lost).
    pub fn append_all(&mut self, events: &[Event], appended: &mut dyn FnMut(usize)) -> Result<()> {
        for (index, event) in events.iter().enumerate() {
            if let Err(error) = self.append_unsynced(event) {
                appended(index);
                return Err(error);
            }
        }
        self.after_append()?;
        appended(events.len());
        Ok(())
    }

    fn append_unsynced(&mut self, event: &Event) -> Result<()> {
        if matches!(event, Event::Metrics(_) | Event::MetricKeyDefined { .. }) {
            return Err(Error::InvalidInput(
                "metric events are appended through log_point or log_columns".to_string(),
            ));
        }
        self.check_usable()?;
        self.scratch.clear();
        self.scratch.resize(FRAME_BYTES, 0);
        event.encode_payload(&mut self.scratch);
        self.check_decodes(event.record_type())?;
        self.write_scratch_record(event.record_type(), 0)
    }

    /// Appends one metric point. A key already used by `run` in this writer costs no allocation.
    #[inline]
    pub fn log_point(
        &mut self,
        run: RunId,
        key: &str,
        step: i64,
        timestamp_ms: i64,
        value: f64,
    ) -> Result<()> {
        self.check_usable()?;
        let key_id = self.intern(run, key)?;
        self.stream_point(run, key_id, step, timestamp_ms, value)?;
        self.stats.points += 1;
        self.after_append()
    }

    /// Appends one metric point as [`Writer::log_point`] does, taking the key's id from
    /// `interned` when this writer is the one it remembers, and remembering this writer's id
    /// there otherwise: a key logged again through the same writer costs no lookup at all.
    #[inline]
    pub fn log_point_interned(
        &mut self,
        run: RunId,
        key: &str,
        interned: &InternedKey,
        point: (i64, i64, f64),
    ) -> Result<()> {
        if self.try_log_point_fast(run, interned, point) {
            return Ok(());
        }
        self.check_usable()?;
        let key_id = match interned.get(self.serial) {
            Some(key_id) => key_id,
            None => {
                let key_id = self.intern(run, key)?;
                interned.set(self.serial, key_id);
                key_id
            }
        };
        let (step, timestamp_ms, value) = point;
        self.stream_point(run, key_id, step, timestamp_ms, value)?;
        self.stats.points += 1;
        self.after_append()
    }

    /// Appends points of `run`, each as [`Writer::log_point`] does, and syncs once after the
    /// last under `sync_every_append`: a batch costs one msync, not one per point.
    /// `appended(n)` is told how many of the first points the log holds once the call is over,
    /// as for [`Writer::append_all`], so a caller counts exactly those.
    pub fn log_points<'a>(
        &mut self,
        run: RunId,
        points: impl IntoIterator<Item = (&'a str, i64, i64, f64)>,
        appended: &mut dyn FnMut(usize),
    ) -> Result<()> {
        if let Err(error) = self.check_usable() {
            appended(0);
            return Err(error);
        }
        let mut count = 0;
        for (key, step, timestamp_ms, value) in points {
            let logged = self
                .intern(run, key)
                .and_then(|key_id| self.stream_point(run, key_id, step, timestamp_ms, value));
            if let Err(error) = logged {
                appended(count);
                return Err(error);
            }
            self.stats.points += 1;
            count += 1;
        }
        self.after_append()?;
        appended(count);
        Ok(())
    }

    /// Appends points of one run and key as column-wise batch records (split as needed).
    pub fn log_columns(
        &mut self,
        run: RunId,
        key: &str,
        steps: &[i64],
        timestamps_ms: &[i64],
        values: &[f64],
    ) -> Result<()> {
        self.log_columns_counted(run, key, (steps, timestamps_ms, values), &mut |_| {})
    }

    /// [`Writer::log_columns`], telling `appended(n)` how many of the first points the log
    /// holds once the call is over, as [`Writer::log_points`] does, so a caller counts exactly
    /// those when a batch spans several records and a later one fails.
    pub fn log_columns_counted(
        &mut self,
        run: RunId,
        key: &str,
        (steps, timestamps_ms, values): (&[i64], &[i64], &[f64]),
        appended: &mut dyn FnMut(usize),
    ) -> Result<()> {
        if steps.len() != timestamps_ms.len() || steps.len() != values.len() {
            appended(0);
            return Err(Error::InvalidInput(format!(
                "column lengths differ: {} steps, {} timestamps, {} values",
                steps.len(),
                timestamps_ms.len(),
                values.len()
            )));
        }
        let logged = self.check_usable().and_then(|()| self.intern(run, key));
        let key_id = match logged {
            Ok(key_id) => key_id,
            Err(error) => {
                appended(0);
                return Err(error);
            }
        };
        let key_ids = vec![key_id; steps.len().min(self.chunk_points())];
        let mut start = 0;
        while start < steps.len() {
            let end = (start + self.chunk_points()).min(steps.len());
            let columns = Columns {
                key_ids: &key_ids[..end - start],
                steps: &steps[start..end],
                timestamps_ms: &timestamps_ms[start..end],
                values: &values[start..end],
            };
            if let Err(error) = self.write_columns(run, columns) {
                appended(start);
                return Err(error);
            }
            self.stats.points += (end - start) as u64;
            start = end;
        }
        self.after_append()?;
        appended(steps.len());
        Ok(())
    }

    /// Makes everything appended so far durable (msync), and closes the open stream so that
    /// synced bytes are never rewritten.
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        self.stream = None;
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        if active.durable == active.written {
            return Ok(());
        }
        let (from, len) = (active.durable, active.written - active.durable);
        if let Err(error) = self.storage.sync_map(&active.path, &active.map, from, len) {
            let error = Error::io("msync", active.path.clone(), error);
            return Err(self.poison(error));
        }
        active.durable = active.written;
        Ok(())
    }

    /// Seals the last segment, removes the lock file and releases the lock. Consumes the writer;
    /// on error the lock file stays and the next open repairs the chain from disk.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    /// Simulates this process dying: releases the lock without sealing, syncing or removing
    /// the lock file. What was appended stays in the page cache, as after kill -9. For tests and
    /// crash drills.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.active = None;
        self.lock_file = None;
    }

    fn close_inner(&mut self) -> Result<()> {
        self.check_usable()?;
        self.stream = None;
        if self.active.is_some() {
            self.seal_active(true)?;
        }
        if let Some(lock_file) = self.lock_file.take() {
            self.storage
                .remove(&self.lock_path)
                .map_err(|e| Error::io("remove lock file", self.lock_path.clone(), e))?;
            drop(lock_file);
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        self.fork_guard.check()?;
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                writer: self.id,
                cause: cause.clone(),
            }),
            None if self.lock_file.is_none() => {
                Err(Error::InvalidInput(format!("writer {} is closed", self.id)))
            }
            None => Ok(()),
        }
    }

    fn poison(&mut self, error: Error) -> Error {
        let cause = error.to_string();
        self.poisoned = Some(cause.clone());
        Error::Poisoned {
            writer: self.id,
            cause,
        }
    }

    fn after_append(&mut self) -> Result<()> {
        if self.options.sync_every_append {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Points per columns record such that the worst-case record fits an empty segment.
    fn chunk_points(&self) -> usize {
        let room = self.options.segment_bytes as usize - HEADER_BYTES - SEAL_RECORD_BYTES - 1;
        let per_point = MetricBatch::encoded_bytes_max(1);
        (room
            .min(RECORD_PAYLOAD_BYTES_MAX)
            .saturating_sub(FRAME_BYTES + per_point)
            / per_point)
            .clamp(1, BATCH_POINTS_MAX)
    }

    #[inline]
    fn intern(&mut self, run: RunId, key: &str) -> Result<KeyId> {
        if let Some(id) = self.keys.get(&run).and_then(|keys| keys.by_name.get(key)) {
            return Ok(*id);
        }
        let keys = self.keys.entry(run).or_default();
        if keys.by_name.len() >= crate::limits::KEYS_PER_RUN_MAX {
            return Err(Error::InvalidInput(format!(
                "run {run} already has {} metric keys in this writer, the most it can have",
                crate::limits::KEYS_PER_RUN_MAX
            )));
        }
        let key_id = KeyId(keys.by_name.len() as u32);
        let event = Event::MetricKeyDefined {
            run,
            key_id,
            key: key.to_string(),
        };
        self.scratch.clear();
        self.scratch.resize(FRAME_BYTES, 0);
        event.encode_payload(&mut self.scratch);
        self.check_decodes(RecordType::MetricKeyDefined)?;
        self.write_scratch_record(RecordType::MetricKeyDefined, 0)?;
        // Only remember the key once its definition is in the log.
        self.keys
            .entry(run)
            .or_default()
            .by_name
            .insert(key.into(), key_id);
        Ok(key_id)
    }

    /// Checks that the payload in `self.scratch` decodes, so that nothing a reader would reject
    /// (an over-long string, say) is ever acknowledged.
    fn check_decodes(&self, record_type: RecordType) -> Result<()> {
        let payload = &self.scratch[FRAME_BYTES..];
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(Error::InvalidInput(format!(
                "a {record_type:?} record of {} bytes exceeds the {RECORD_PAYLOAD_BYTES_MAX}-byte \
                 limit",
                payload.len()
            )));
        }
        Event::decode(record_type, 0, payload)
            .map(drop)
            .map_err(|kind| {
                Error::InvalidInput(format!(
                    "the {record_type:?} event cannot be stored: {kind}"
                ))
            })
    }

    fn write_columns(&mut self, run: RunId, columns: Columns<'_>) -> Result<()> {
        self.compressed.clear();
        metric::encode_columns(run, columns, &mut self.compressed);
        self.scratch.clear();
        self.scratch.resize(FRAME_BYTES, 0);
        let flags = if self.compressed.len() >= crate::limits::COMPRESS_PAYLOAD_BYTES_MIN
            && metric::compress(&self.compressed, &mut self.scratch)
        {
            FLAG_COMPRESSED
        } else {
            self.scratch.extend_from_slice(&self.compressed);
            0
        };
        self.write_scratch_record(RecordType::MetricColumns, flags)
    }

    /// Frames `self.scratch` (payload after `FRAME_BYTES` placeholder bytes) and copies it in.
    fn write_scratch_record(&mut self, record_type: RecordType, flags: u8) -> Result<()> {
        self.stream = None;
        record::encode_frame(&mut self.scratch, record_type, flags);
        let len = self.scratch.len();
        if len + HEADER_BYTES + SEAL_RECORD_BYTES >= self.options.segment_bytes as usize {
            return Err(Error::InvalidInput(format!(
                "a {len}-byte record does not fit a {}-byte segment",
                self.options.segment_bytes
            )));
        }
        self.room_for(len)?;
        let Some(active) = &mut self.active else {
            return Err(Error::InvalidInput("no active segment".to_string()));
        };
        if len >= WRITE_THROUGH_FILE_BYTES_MIN {
            // The first touch of a preallocated page through the map makes the kernel fill it
            // with zeros before the copy overwrites it (a third of a large `log_batch`); a
            // write to the file puts whole pages in the page cache directly. The map sees the
            // same pages, and `sync_map` writes back every dirty page of its range however it
            // was dirtied.
            use std::os::unix::fs::FileExt;
            if let Err(error) = active.file.write_all_at(&self.scratch, active.written as u64) {
                // Part of the record may be in the file past `written`: no later record may
                // go in after it.
                let error = Error::io("write segment", active.path.clone(), error);
                return Err(self.poison(error));
            }
        } else {
            active.map[active.written..active.written + len].copy_from_slice(&self.scratch);
        }
        active.written += len;
        active.records += 1;
        self.stats.records += 1;
        self.stats.bytes += len as u64;
        Ok(())
    }

    #[inline]
    fn stream_point(
        &mut self,
        run: RunId,
        key: KeyId,
        step: i64,
        timestamp_ms: i64,
        value: f64,
    ) -> Result<()> {
        let mut ops = [0u8; 2 * STREAM_OP_BYTES_MAX];
        loop {
            if self
                .stream
                .as_ref()
                .is_none_or(|s| s.ops_bytes > STREAM_BYTES_MAX)
            {
                self.open_stream()?;
            }
            let (Some(stream), Some(active)) = (&mut self.stream, &mut self.active) else {
                return Err(Error::InvalidInput("no open stream".to_string()));
            };
            // On the paths that give up below, the whole stream (encoder state included) is
            // dropped, so nothing encoded here needs undoing.
            let encoder = &mut stream.encoder;
            let Some((run_len, run_ops)) = encoder.run(run, &mut ops) else {
                // The stream's run table is full: the next stream starts a new one.
                self.stream = None;
                continue;
            };
            let len = run_len + encoder.point(key, step, timestamp_ms, value, &mut ops[run_len..]);
            if !fits(active, len) {
                // Full: the next segment's fresh stream always has room (see open_stream).
                self.stream = None;
                self.rotate(STREAM_OPEN_BYTES)?;
                continue;
            }
            active.map[active.written..active.written + len].copy_from_slice(&ops[..len]);
            commit_ops(stream, active, len, run_ops + 1);
            self.stats.bytes += len as u64;
            return Ok(());
        }
    }

    /// `log_point_interned` when nothing but the point itself is to be written: the stream is
    /// open with room for two ops, this writer interned the key, and no sync, rotation or
    /// error can follow. The ops are encoded straight into the map. Returns false, having
    /// changed nothing, when the full path must run instead.
    #[inline]
    pub(crate) fn try_log_point_fast(
        &mut self,
        run: RunId,
        interned: &InternedKey,
        point: (i64, i64, f64),
    ) -> bool {
        if self.poisoned.is_some()
            || self.lock_file.is_none()
            || self.options.sync_every_append
            || self.fork_guard.is_forked()
        {
            return false;
        }
        let Some(key) = interned.get(self.serial) else {
            return false;
        };
        let (Some(stream), Some(active)) = (&mut self.stream, &mut self.active) else {
            return false;
        };
        if stream.ops_bytes > STREAM_BYTES_MAX || !fits(active, 2 * STREAM_OP_BYTES_MAX) {
            return false;
        }
        // In bounds: `fits` keeps a seal's room past these bytes.
        let out = &mut active.map[active.written..active.written + 2 * STREAM_OP_BYTES_MAX];
        // A full run table changes nothing in the encoder: the full path starts a new stream.
        let Some((run_len, run_ops)) = stream.encoder.run(run, out) else {
            return false;
        };
        let (step, timestamp_ms, value) = point;
        let len = run_len
            + stream
                .encoder
                .point(key, step, timestamp_ms, value, &mut out[run_len..]);
        commit_ops(stream, active, len, run_ops + 1);
        self.stats.bytes += len as u64;
        self.stats.points += 1;
        true
    }

    fn open_stream(&mut self) -> Result<()> {
        self.stream = None;
        let active = self.room_for(STREAM_OPEN_BYTES)?;
        let start = active.written;
        let padding = record::stream_padding(start);
        let header_bytes = FRAME_BYTES + padding + COMMIT_WORD_BYTES;
        let mut header = [0u8; STREAM_HEADER_BYTES_MAX];
        record::encode_frame(
            &mut header[..FRAME_BYTES + padding],
            RecordType::MetricStream,
            0,
        );
        active.map[start..start + header_bytes].copy_from_slice(&header[..header_bytes]);
        active.written += header_bytes;
        active.records += 1;
        self.stats.records += 1;
        self.stats.bytes += header_bytes as u64;
        self.stream = Some(OpenStream {
            commit_at: start + FRAME_BYTES + padding,
            ops_count: 0,
            ops_bytes: 0,
            ops_crc: 0,
            encoder: StreamEncoder::default(),
        });
        Ok(())
    }

    /// The active segment, rotated first if `len` bytes (plus the seal) do not fit.
    fn room_for(&mut self, len: usize) -> Result<&mut ActiveSegment> {
        if !self.active.as_ref().is_some_and(|active| fits(active, len)) {
            self.rotate(len)?;
        }
        self.active
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("no active segment".to_string()))
    }

    /// Seals the active segment and opens the next, with room for `record_bytes`.
    fn rotate(&mut self, record_bytes: usize) -> Result<()> {
        self.stream = None;
        if self.active.is_some() {
            self.seal_active(false)?;
        }
        self.open_next_segment(record_bytes)
    }

    /// Writes the seal, syncs, unmaps, trims the file to its records and fsyncs it.
    fn seal_active(&mut self, final_segment: bool) -> Result<()> {
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        let mut seal = vec![0u8; FRAME_BYTES];
        Seal {
            record_count: active.records,
            final_segment,
        }
        .encode(&mut seal);
        record::encode_frame(&mut seal, RecordType::Seal, 0);
        debug_assert_eq!(seal.len(), SEAL_RECORD_BYTES);
        let at = active.written;
        active.map[at..at + seal.len()].copy_from_slice(&seal);
        active.written += seal.len();
        self.stats.bytes += seal.len() as u64;
        self.flush()?;
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let ActiveSegment {
            path,
            file,
            map,
            written,
            ..
        } = active;
        drop(map);
        let trimmed = self
            .storage
            .set_len(&path, &file, written as u64)
            .and_then(|()| self.storage.sync_file(&path, &file));
        if let Err(error) = trimmed {
            let error = Error::io("trim sealed segment", path, error);
            return Err(self.poison(error));
        }
        Ok(())
    }

    /// Size of the next segment: the grown size, or more if a `record_bytes` record would not
    /// fit it, never more than the configured `segment_bytes` (which every record fits).
    fn next_segment_bytes(&self, record_bytes: usize) -> u64 {
        let to_fit = segment_bytes_for_records(record_bytes as u64);
        self.next_segment_bytes
            .max(to_fit.next_power_of_two())
            .min(self.options.segment_bytes)
    }

    /// Creates, maps and syncs the header of the next segment, with room for `record_bytes`.
    /// On failure nothing changes, so a later call retries the same sequence and size.
    fn open_next_segment(&mut self, record_bytes: usize) -> Result<()> {
        let sequence = self.next_sequence;
        let path = segment::segment_path(&self.wal_dir, self.id, sequence);
        let bytes = self.next_segment_bytes(record_bytes);
        let file = self
            .storage
            .create_preallocated(&path, bytes)
            .map_err(|e| Error::io("create segment", path.clone(), e))?;
        // SAFETY: the file is ours alone (created with create_new, named by our locked writer id)
        // and is never truncated while this map lives; readers use read(), not maps.
        let map = unsafe { MmapOptions::new().len(bytes as usize).map_mut(&file) };
        let mut map = match map {
            Ok(map) => map,
            Err(error) => {
                let _ = self.storage.remove(&path);
                return Err(Error::io("map segment", path, error));
            }
        };
        let header = SegmentHeader {
            format_version: segment::FORMAT_VERSION,
            writer: self.id,
            sequence,
            created_unix_ms: now_ms(),
            segment_bytes: bytes,
        };
        map[..HEADER_BYTES].copy_from_slice(&header.encode());
        let synced = self
            .storage
            .sync_map(&path, &map, 0, HEADER_BYTES)
            .and_then(|()| self.storage.sync_file(&path, &file))
            .and_then(|()| self.storage.sync_dir(&self.wal_dir));
        if let Err(error) = synced {
            // Nothing was acknowledged in this segment: remove it and report, without poisoning.
            drop(map);
            let _ = self.storage.remove(&path);
            return Err(Error::io("sync new segment", path, error));
        }
        self.next_sequence = SegmentSequence(sequence.0 + 1);
        self.next_segment_bytes = bytes.saturating_mul(2).min(self.options.segment_bytes);
        self.stats.segments += 1;
        self.stats.bytes += HEADER_BYTES as u64;
        self.active = Some(ActiveSegment {
            path,
            file,
            map,
            written: HEADER_BYTES,
            durable: HEADER_BYTES,
            records: 0,
        });
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A forked child closing its copies of the map and the lock file changes nothing for
        // the parent: the flock stays with the parent's open file description.
        if self.poisoned.is_none() && self.lock_file.is_some() && !self.fork_guard.is_forked() {
            // Errors cannot be returned from drop; the chain is then repaired on the next open.
            let _ = self.close_inner();
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("id", &self.id)
            .field("stats", &self.stats)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Room a fresh stream needs: its header and one call's ops.
const STREAM_OPEN_BYTES: usize = STREAM_HEADER_BYTES_MAX + 2 * STREAM_OP_BYTES_MAX;

/// The smallest segment that holds `record_bytes` of records after its header, with room left
/// for the seal and the spare byte (see [`fits`]).
fn segment_bytes_for_records(record_bytes: u64) -> u64 {
    (HEADER_BYTES + SEAL_RECORD_BYTES + 1) as u64 + record_bytes
}

/// The preallocated size of a segment that holds every one of `events` (metadata events, as
/// [`Writer::append`] writes them) and its seal: what a metadata chain's first segment needs.
#[cfg_attr(not(feature = "parquet"), allow(dead_code))]
pub(crate) fn segment_bytes_to_hold(events: &[Event]) -> u64 {
    let mut payload = Vec::new();
    let record_bytes = events
        .iter()
        .map(|event| {
            payload.clear();
            event.encode_payload(&mut payload);
            (FRAME_BYTES + payload.len()) as u64
        })
        .sum();
    segment_bytes_for_records(record_bytes)
}

/// Whether `len` more bytes fit in `active` with room left for the seal and the spare byte.
#[inline]
fn fits(active: &ActiveSegment, len: usize) -> bool {
    active.written + len + SEAL_RECORD_BYTES < active.map.len()
}

/// Commits the `len` bytes of `ops` ops just written at `active.written`: folds them into the
/// stream's CRC, rewrites its commit word and moves `written` past them.
#[inline]
fn commit_ops(stream: &mut OpenStream, active: &mut ActiveSegment, len: usize, ops: u32) {
    stream.ops_crc = crc::update(
        stream.ops_crc,
        &active.map[active.written..active.written + len],
    );
    stream.ops_count += ops;
    stream.ops_bytes += len;
    let word = record::encode_commit_word(stream.ops_count, stream.ops_crc);
    store_commit_word(&mut active.map, stream.commit_at, word);
    active.written += len;
}

/// Rewrites a stream's commit word with one aligned 8-byte atomic store, so that no crash can
/// leave a count from one append beside a CRC from another. The release ordering keeps the ops
/// bytes, written before, from being reordered after it.
#[inline]
fn store_commit_word(map: &mut MmapMut, commit_at: usize, word: [u8; COMMIT_WORD_BYTES]) {
    let slot = &mut map[commit_at..commit_at + COMMIT_WORD_BYTES];
    let pointer = slot.as_mut_ptr().cast::<u64>();
    debug_assert!(
        pointer.is_aligned(),
        "commit word at {commit_at} is not 8-byte aligned"
    );
    // SAFETY: `slot` is 8 bytes inside the map, which is page-aligned, at a file offset the
    // writer made a multiple of 8 (`stream_padding`), so the pointer is aligned for u64; the
    // exclusive borrow of the map means nothing else in this process accesses those bytes.
    let atomic = unsafe { std::sync::atomic::AtomicU64::from_ptr(pointer) };
    atomic.store(
        u64::from_ne_bytes(word),
        std::sync::atomic::Ordering::Release,
    );
}

/// Picks a fresh writer id, creates its lock file with `create_new` and locks it. Ids are the
/// creation time in ms in the high bits (so writers sort roughly by age) and OS randomness
/// below; `create_new` settles collisions.
/// Which ids a new writer takes.
///
/// An ordinary writer's id is the clock in ms shifted left by 22 bits, plus 22 random bits:
/// bit 62 is set for any date since 2004. A metadata chain's id is the same shifted right by
/// one: bit 62 clear, so a reader knows a chain by its id alone, even before a manifest lists
/// it, and its events count as copies (`catalog/lww.rs`); and below every ordinary writer's,
/// so a fresh catalog also applies the copies (older events) first. Chains written before
/// this rule have ordinary ids and are known from the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdRange {
    Writer,
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    MetadataChain,
}

/// Whether `id` was taken by a metadata chain (see `IdRange`).
pub(crate) fn is_metadata_chain(id: WriterId) -> bool {
    id.0 < 1 << 62
}

fn claim_writer_id(wal_dir: &Path, range: IdRange) -> Result<(WriterId, PathBuf, File)> {
    for _ in 0..64 {
        let id = ((now_ms() as u64) << 22) | (random_u64() & ((1 << 22) - 1));
        let id = WriterId(match range {
            IdRange::Writer => id,
            IdRange::MetadataChain => id >> 1,
        });
        let path = segment::lock_path(wal_dir, id);
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(Error::io("create lock file", path, error)),
        };
        match file.try_lock() {
            // Recovery in another process may have locked, judged dead and removed this file
            // between our create and our lock: then we hold a lock on an unlinked file. Only a
            // lock on the file that is still at `path` counts.
            Ok(()) if same_file(&file, &path) => return Ok((id, path, file)),
            Ok(()) => continue,
            // A reader probing liveness holds it for a moment: take another id.
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(Error::io("lock", path, error));
            }
        }
    }
    Err(Error::InvalidInput(
        "could not claim a writer id after 64 attempts".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `segment_bytes_to_hold` is exact: the events fill the segment to its spare byte, with
    /// no rotation, and one event more would not have fit.
    #[test]
    fn a_metadata_chain_segment_holds_its_events_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = (0..100)
            .map(|i| Event::TagSet {
                run: RunId(1),
                time_ms: i,
                key: format!("key{i}"),
                value: "v".repeat(usize::try_from(i).unwrap() * 7),
            })
            .collect();
        let segment_bytes = segment_bytes_to_hold(&events);
        assert!(segment_bytes > SEGMENT_BYTES_MIN, "{segment_bytes}");
        let options = WriterOptions {
            segment_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            sync_every_append: false,
        };
        let storage: Arc<dyn Storage> = Arc::new(crate::io::OsStorage);
        let mut writer =
            Writer::create_metadata_chain(dir.path(), storage, options, segment_bytes).unwrap();
        for event in &events {
            writer.append(event).unwrap();
        }
        assert_eq!(writer.stats().segments, 1);
        let path = segment::segment_path(dir.path(), writer.id(), SegmentSequence(0));
        writer.close().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = SegmentHeader::decode(&bytes).unwrap();
        assert_eq!(header.segment_bytes, segment_bytes);
        // Trimmed after the seal: everything but the spare byte was used.
        assert_eq!(bytes.len() as u64, segment_bytes - 1);
    }
}
