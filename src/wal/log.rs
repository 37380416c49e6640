//! `Log`: the shared, cloneable handle to a store's `wal/` directory.
//!
//! Appends go to writer *lanes*: each thread is given a lane index the first time it logs, and
//! each lane is its own [`Writer`] with its own segments and lock file. Threads therefore never
//! contend with each other on the append path (until there are more threads than lanes), and
//! processes never coordinate at all. A lane's mutex is taken only by its thread, by `flush`,
//! and by the interval flusher.
//!
//! Invariant: every writer of this handle is reachable from `lanes`, so `flush` and `close`
//! cover everything this handle appended. The one exception: a lane whose thread panicked
//! mid-append abandons its writer (see `lock_lane`), whose unsynced appends then survive a
//! process crash but are covered by no later `flush`; reopening recovers them from disk.
//!
//! Invariant: in a process forked from the one that opened the handle, every append, flush and
//! close fails with `Error::Forked`, and dropping the handle leaves the parent's writers, lock
//! files and flusher thread alone.
//!
//! Invariant: once any writer of this handle is poisoned (a sync failed, so its unsynced
//! appends may be lost), every later append, flush and close of the handle fails with that
//! error, no other lane is synced (not by `flush`, the flusher thread or `close`), and
//! dropping the handle abandons its writers unsealed. Letting another lane, or a fresh writer
//! in the same lane, go on would make durable records that depend on lost ones (points of a
//! run whose creation is gone). The deterministic simulation found exactly that after a failed
//! msync during `compact`; reopen to go on.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::error::{Error, Result};
use crate::ids::{RunId, WriterId};
use crate::io::{ForkGuard, OsStorage, Storage};
use crate::limits::{LANES_DEFAULT, SEGMENT_BYTES_DEFAULT};
use crate::periodic::Periodic;
use crate::wal::durability::Durability;
use crate::wal::event::{Event, Owner};
use crate::wal::reader::{self, ChainEnd, ReadOptions};
use crate::wal::recovery::{self, RecoveryReport};
use crate::wal::writer::{InternedKey, Writer, WriterOptions, WriterStats};

/// How a [`Log`] is opened.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Largest preallocated size of a segment (default 64 MiB). Each writer's first segment is
    /// 1 MiB (or this, if smaller), and each next one doubles up to this size.
    pub segment_bytes: u64,
    /// What an acknowledged append survives (default `Interval(1 s)`).
    pub durability: Durability,
    /// Writer lanes (default 64): the number of threads that can append without sharing a lane.
    pub lanes: usize,
    /// Open without writing anything: no recovery, no appends.
    pub read_only: bool,
    /// Skip corrupt records inside sealed segments when reading, instead of failing.
    pub salvage: bool,
    /// The I/O seam (the OS by default; tests inject faults here).
    pub storage: Arc<dyn Storage>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            durability: Durability::default(),
            lanes: LANES_DEFAULT,
            read_only: false,
            salvage: false,
            storage: Arc::new(OsStorage),
        }
    }
}

/// A cloneable, `Send + Sync` handle to an append-only log directory.
#[derive(Clone, Debug)]
pub struct Log {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    wal_dir: PathBuf,
    options: LogOptions,
    lanes: Box<[Mutex<Option<Writer>>]>,
    /// Every writer this handle ever created, so a reader of the same store can tell its own
    /// appends from other processes'. A writer's id enters it before its first segment exists:
    /// a reader that lists a segment and then asks `is_own` gets the right answer.
    own_writers: Mutex<BTreeSet<WriterId>>,
    flusher: Mutex<Option<Periodic>>,
    /// Set once a writer of this handle is poisoned; read on every append, written once, so
    /// writers share its cache line read-only.
    poisoned: AtomicBool,
    /// The writer and the cause, for the error every later call returns.
    poison: Mutex<Option<(WriterId, String)>>,
    fork_guard: ForkGuard,
    /// The lane each run's and experiment's metadata events go through (see `lane_of`).
    sticky_lanes: Mutex<HashMap<Owner, usize>>,
}

/// What reading a whole log found for one writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterSummary {
    /// The writer.
    pub writer: WriterId,
    /// How its chain ends.
    pub end: ChainEnd,
    /// Records skipped in salvage mode.
    pub salvaged: Vec<crate::error::Corruption>,
}

static NEXT_LANE_HINT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE_HINT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn lane_hint() -> usize {
    LANE_HINT.with(|hint| match hint.get() {
        Some(value) => value,
        None => {
            let value = NEXT_LANE_HINT.fetch_add(1, Ordering::Relaxed);
            hint.set(Some(value));
            value
        }
    })
}

impl Log {
    /// Opens (creating if needed) the log in `wal_dir`, repairing writers that died.
    pub fn open(wal_dir: impl AsRef<Path>, options: LogOptions) -> Result<(Log, RecoveryReport)> {
        let wal_dir = wal_dir.as_ref().to_path_buf();
        if options.lanes == 0 {
            return Err(Error::InvalidInput(
                "a log needs at least one lane".to_string(),
            ));
        }
        let report = if options.read_only {
            RecoveryReport::default()
        } else {
            crate::io::create_dirs(&wal_dir, options.storage.as_ref())?;
            recovery::recover(&wal_dir, options.storage.as_ref(), options.salvage)?
        };
        let lanes = (0..options.lanes).map(|_| Mutex::new(None)).collect();
        let interval = match options.durability {
            Durability::Interval(interval) if !options.read_only => Some(interval),
            _ => None,
        };
        let inner = Arc::new(Inner {
            wal_dir,
            options,
            lanes,
            own_writers: Mutex::new(BTreeSet::new()),
            flusher: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            poison: Mutex::new(None),
            fork_guard: ForkGuard::new(),
            sticky_lanes: Mutex::new(HashMap::new()),
        });
        if let Some(interval) = interval {
            let weak = Arc::downgrade(&inner);
            let flusher =
                Periodic::start("runlog-flusher", interval, move || flush_lanes(&weak))
                    .map_err(|e| Error::io("spawn flusher thread", inner.wal_dir.clone(), e))?;
            *lock(&inner.flusher) = Some(flusher);
        }
        Ok((Log { inner }, report))
    }

    /// The `wal/` directory.
    pub fn dir(&self) -> &Path {
        &self.inner.wal_dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    /// Appends a metadata event through its owner's lane (see [`Log::lane_of`]).
    pub fn append(&self, event: &Event) -> Result<()> {
        self.with_lane_at(self.lane_of(event.owner()), |writer| writer.append(event))
    }

    /// The lane an event of `owner` goes through. A run's or experiment's first event in this
    /// handle picks the calling thread's lane, and every later one of that owner uses the same
    /// lane, whatever thread sends it: the log is replayed writer by writer, so events of one
    /// owner on two lanes within one millisecond could replay in the wrong order and revert an
    /// acknowledged change after a restart. A single-threaded program uses its one lane, as
    /// before. Events without an owner (metric points) use the thread's lane.
    pub fn lane_of(&self, owner: Option<Owner>) -> usize {
        let lanes = self.inner.lanes.len();
        let thread_lane = lane_hint() % lanes;
        match owner {
            None => thread_lane,
            Some(owner) => *lock(&self.inner.sticky_lanes)
                .entry(owner)
                .or_insert(thread_lane),
        }
    }

    /// Appends metadata events through this thread's lane, durable together: under
    /// `Durability::Sync` one msync for all of them (see `Writer::append_all`).
    ///
    /// They go through the lane of the first event's owner: a caller that wants each owner's
    /// order kept passes events of owners sharing one lane ([`Log::lane_of`]).
    pub fn append_all(&self, events: &[Event], appended: &mut dyn FnMut(usize)) -> Result<()> {
        let lane = self.lane_of(events.first().and_then(Event::owner));
        self.with_lane_at(lane, |writer| writer.append_all(events, appended))
    }

    /// Appends one metric point through this thread's lane.
    #[inline]
    pub fn log_point(
        &self,
        run: RunId,
        key: &str,
        step: i64,
        timestamp_ms: i64,
        value: f64,
    ) -> Result<()> {
        self.with_lane(|writer| writer.log_point(run, key, step, timestamp_ms, value))
    }

    /// Appends one metric point through this thread's lane, the key's id taken from
    /// `interned` when the lane's writer is the one it remembers (see
    /// `Writer::log_point_interned`). `point` is (step, timestamp in ms, value).
    ///
    /// Once the log holds the point, `appended(lane)` is called with the lane's index while
    /// the lane is still locked, so what it updates per lane needs no lock of its own
    /// (`catalog::LaneSummaries`). It is not called if the append fails.
    #[inline]
    pub fn log_point_interned(
        &self,
        run: RunId,
        key: &str,
        interned: &InternedKey,
        point: (i64, i64, f64),
        appended: impl FnOnce(usize),
    ) -> Result<()> {
        let inner = &*self.inner;
        let lane = lane_hint() % inner.lanes.len();
        // The common case, with no `Result` moved through the generic lane code: the lane's
        // writer exists and the point needs nothing but its bytes. The checks `with_lane_at`
        // makes before locking a lane come first, the fork check above all (a child must not
        // wait on a lane a parent thread held at the fork).
        if !inner.options.read_only
            && !inner.fork_guard.is_forked()
            && !inner.poisoned.load(Ordering::Acquire)
            && let Ok(mut guard) = inner.lanes[lane].lock()
            && let Some(writer) = guard.as_mut()
            && writer.try_log_point_fast(run, interned, point)
        {
            appended(lane);
            return Ok(());
        }
        self.with_lane_at(lane, |writer| {
            writer.log_point_interned(run, key, interned, point)?;
            appended(lane);
            Ok(())
        })
    }

    /// Appends points of one run through this thread's lane, durable together: under
    /// `Durability::Sync` one msync for the batch (see `Writer::log_points`).
    pub fn log_points<'a>(
        &self,
        run: RunId,
        points: impl IntoIterator<Item = (&'a str, i64, i64, f64)>,
        appended: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.with_lane(|writer| writer.log_points(run, points, appended))
    }

    /// Appends a column-wise batch of one run and key through this thread's lane.
    pub fn log_columns(
        &self,
        run: RunId,
        key: &str,
        steps: &[i64],
        timestamps_ms: &[i64],
        values: &[f64],
    ) -> Result<()> {
        self.with_lane(|writer| writer.log_columns(run, key, steps, timestamps_ms, values))
    }

    /// [`Log::log_columns`], telling `appended(n)` how many of the first points the log holds
    /// once the call is over (`Writer::log_columns_counted`).
    pub fn log_columns_counted(
        &self,
        run: RunId,
        key: &str,
        columns: (&[i64], &[i64], &[f64]),
        appended: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.with_lane(|writer| writer.log_columns_counted(run, key, columns, appended))
    }

    /// Syncs every lane: when this returns `Ok`, everything appended through this handle before
    /// the call survives a power loss.
    pub fn flush(&self) -> Result<()> {
        self.inner.fork_guard.check()?;
        for lane in self.inner.lanes.iter() {
            // Checked before each lane: once one writer is poisoned, syncing the others could
            // make durable what depends on its lost appends.
            self.check_poison()?;
            if let Some(writer) = lock_lane(&self.inner, lane).as_mut() {
                let flushed = writer.flush();
                self.note_poison(writer);
                flushed?;
            }
        }
        Ok(())
    }

    /// The poison error, if a writer of this handle was poisoned.
    fn check_poison(&self) -> Result<()> {
        if !self.inner.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        match lock(&self.inner.poison).as_ref() {
            Some((writer, cause)) => Err(Error::Poisoned {
                writer: *writer,
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn note_poison(&self, writer: &Writer) {
        note_poison(&self.inner, writer);
    }

    /// `Error::Forked` in a process forked from the one that opened this handle. Reads check
    /// it too: a child skips the parent's writers as its own, so it would never see what the
    /// parent appends after the fork.
    pub(crate) fn check_fork(&self) -> Result<()> {
        self.inner.fork_guard.check()
    }

    /// Ids of every writer this handle created.
    pub fn own_writers(&self) -> BTreeSet<WriterId> {
        lock(&self.inner.own_writers).clone()
    }

    /// Whether this handle created `writer`. Ask after listing the writer's segments: a set
    /// copied before the listing misses writers created in between, whose appends a reader
    /// would then count as another writer's as well.
    pub(crate) fn is_own(&self, writer: WriterId) -> bool {
        lock(&self.inner.own_writers).contains(&writer)
    }

    /// Totals of what this handle's lanes appended. In a forked child, whose lanes are the
    /// parent's, nothing: the child appended nothing through them, and a lane a parent thread
    /// held at the fork is never released in the child, so it must not be locked.
    pub fn stats(&self) -> WriterStats {
        let mut total = WriterStats::default();
        if self.inner.fork_guard.is_forked() {
            return total;
        }
        for lane in self.inner.lanes.iter() {
            if let Some(writer) = lock_lane(&self.inner, lane).as_ref() {
                let stats = writer.stats();
                total.records += stats.records;
                total.points += stats.points;
                total.bytes += stats.bytes;
                total.segments += stats.segments;
            }
        }
        total
    }

    /// Seals every lane's segment and releases its lock. Later appends start new writers.
    pub fn close(&self) -> Result<()> {
        self.inner.fork_guard.check()?;
        let mut first_error = None;
        for lane in self.inner.lanes.iter() {
            self.check_poison()?;
            let mut guard = lock_lane(&self.inner, lane);
            let Some(writer) = guard.as_mut() else {
                continue;
            };
            // Sync first, so that a failure poisons the handle before the lane can start a
            // fresh writer.
            let flushed = writer.flush();
            self.note_poison(writer);
            if let Err(error) = flushed {
                first_error.get_or_insert(error);
                continue;
            }
            if let Some(writer) = guard.take()
                && let Err(error) = writer.close()
            {
                // Sealing syncs again; a failure there poisons the writer as it goes.
                if let Error::Poisoned { writer, cause } = &error {
                    poison(&self.inner, *writer, cause);
                }
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Simulates a process crash of every lane (see [`Writer::abandon`]). For tests.
    #[doc(hidden)]
    pub fn abandon(&self) {
        // A child's lanes are the parent's (and may be locked forever): its drop lets them go.
        if self.inner.fork_guard.is_forked() {
            return;
        }
        for lane in self.inner.lanes.iter() {
            if let Some(writer) = lock_lane(&self.inner, lane).take() {
                writer.abandon();
            }
        }
    }

    /// Reads every writer's log, calling `visit(writer, event)` in each writer's order
    /// (writers one after another, oldest id first).
    pub fn read(&self, visit: &mut dyn FnMut(WriterId, Event)) -> Result<Vec<WriterSummary>> {
        read_dir(
            &self.inner.wal_dir,
            ReadOptions {
                salvage: self.inner.options.salvage,
                writer_locked: false,
            },
            visit,
        )
    }

    fn with_lane<T>(&self, append: impl FnOnce(&mut Writer) -> Result<T>) -> Result<T> {
        self.with_lane_at(lane_hint() % self.inner.lanes.len(), append)
    }

    fn with_lane_at<T>(
        &self,
        lane: usize,
        append: impl FnOnce(&mut Writer) -> Result<T>,
    ) -> Result<T> {
        if self.inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        // Before the lane: a child must not start a writer of its own under its parent's handle.
        self.inner.fork_guard.check()?;
        self.check_poison()?;
        let lane = &self.inner.lanes[lane % self.inner.lanes.len()];
        let mut guard = lock_lane(&self.inner, lane);
        let writer = match guard.as_mut() {
            Some(writer) => writer,
            None => {
                // Again under the lane, off the hot path: taking it may have found a panicked
                // append, dropped its writer and stopped the handle; no fresh writer then.
                self.check_poison()?;
                let writer = Writer::create_announced(
                    &self.inner.wal_dir,
                    Arc::clone(&self.inner.options.storage),
                    WriterOptions {
                        segment_bytes: self.inner.options.segment_bytes,
                        sync_every_append: self.inner.options.durability == Durability::Sync,
                    },
                    &mut |id| {
                        lock(&self.inner.own_writers).insert(id);
                    },
                )?;
                guard.insert(writer)
            }
        };
        let result = append(writer);
        if result.is_err() {
            self.note_poison(writer);
        }
        result
    }
}

/// Reads every writer's chain in `wal_dir` without opening a handle (read-only).
pub fn read_dir(
    wal_dir: &Path,
    options: ReadOptions,
    visit: &mut dyn FnMut(WriterId, Event),
) -> Result<Vec<WriterSummary>> {
    let mut summaries = Vec::new();
    for (writer, files) in reader::list_writers(wal_dir)? {
        let read = reader::read_chain(wal_dir, writer, &files.segments, options, &mut |event| {
            visit(writer, event)
        })?;
        summaries.push(WriterSummary {
            writer,
            end: read.end,
            salvaged: read.salvaged,
        });
    }
    Ok(summaries)
}

/// Locks a lane. If a thread panicked while appending, the in-memory writer state may be
/// inconsistent with the disk, so it is abandoned without sealing (its lock file stays, and the
/// next open repairs the chain from what is on disk) and the handle is poisoned, as after a
/// failed sync: its appends fail from then on.
fn lock_lane<'a>(inner: &Inner, lane: &'a Mutex<Option<Writer>>) -> MutexGuard<'a, Option<Writer>> {
    match lane.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            let mut guard = poisoned.into_inner();
            if let Some(writer) = guard.take() {
                // Its unsynced appends are covered by no later flush: the handle stops, as
                // after a failed sync.
                poison(inner, writer.id(), "a thread panicked while appending");
                std::mem::forget(writer);
            }
            lane.clear_poison();
            guard
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The interval flusher's task; false once the log is gone.
fn flush_lanes(inner: &Weak<Inner>) -> bool {
    let Some(inner) = inner.upgrade() else {
        return false;
    };
    for lane in inner.lanes.iter() {
        if inner.poisoned.load(Ordering::Acquire) {
            // Syncing other lanes now could make durable what depends on lost appends.
            break;
        }
        if let Some(writer) = lock_lane(&inner, lane).as_mut() {
            // A failure poisons the writer and the handle; the next call reports it.
            let _ = writer.flush();
            note_poison(&inner, writer);
        }
    }
    true
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.fork_guard.is_forked() {
            // The writers are the parent's. Locking nothing (a lock held by a parent thread at
            // the fork is never released here), let them go without sealing or syncing; the
            // flusher guards its own drop.
            for lane in self.lanes.iter_mut() {
                if let Some(writer) = lane
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    writer.abandon();
                }
            }
            return;
        }
        // A healthy writer seals itself when dropped, which syncs it. After a poisoning that
        // could make durable what depends on lost appends, so every writer is let go as a
        // crash would; the next open repairs their chains from disk.
        if self.poisoned.load(Ordering::Acquire) {
            for lane in self.lanes.iter() {
                if let Some(writer) = lock_lane(self, lane).take() {
                    writer.abandon();
                }
            }
        }
    }
}

/// Poisons the handle if `writer` is poisoned.
fn note_poison(inner: &Inner, writer: &Writer) {
    if let Some(cause) = writer.poison_cause() {
        poison(inner, writer.id(), cause);
    }
}

fn poison(inner: &Inner, writer: WriterId, cause: &str) {
    lock(&inner.poison).get_or_insert_with(|| (writer, cause.to_string()));
    inner.poisoned.store(true, Ordering::Release);
}
