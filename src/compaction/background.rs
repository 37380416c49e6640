//! The background compactor: a thread of a writing store handle that compacts sealed segments
//! every `StoreOptions::compaction_interval`, so a long job's log stays bounded without anyone
//! calling `compact`.
//!
//! It holds only a weak reference to the store, so it never keeps a dropped store alive, and it
//! leaves the handle's open segments alone (sealing them would start new writer chains every
//! round): what it compacts is what rotation has sealed, plus everything other processes
//! finished. When another process holds the compaction lock it skips the round instead of
//! waiting, so dropping the store never waits for someone else's compaction.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::CompactionReport;
use super::writer::Include;
use crate::catalog::lock;
use crate::error::{Error, Result};
use crate::tracking::{Store, StoreInner};

/// The thread, and how to stop it.
#[derive(Debug)]
pub(crate) struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
    /// The outcome of the last round that ran (skipped rounds leave it as it was).
    pub last: Arc<Mutex<Option<std::result::Result<CompactionReport, String>>>>,
}

impl Background {
    /// Starts compacting `store` every `interval`.
    pub fn start(store: &Store, interval: Duration) -> Result<Background> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let last = Arc::new(Mutex::new(None));
        let weak = Arc::downgrade(&store.inner);
        let (thread_stop, thread_last) = (Arc::clone(&stop), Arc::clone(&last));
        let handle = std::thread::Builder::new()
            .name("runlog-compactor".to_string())
            .spawn(move || run(weak, thread_stop, thread_last, interval))
            .map_err(|e| Error::io("spawn compactor thread", store.root(), e))?;
        Ok(Background {
            stop,
            handle: Some(handle),
            last,
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        // The thread itself may drop the last strong reference (it upgrades one per round);
        // then it is already on its way out and must not join itself.
        if let Some(handle) = self.handle.take()
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }
}

type Outcome = Arc<Mutex<Option<std::result::Result<CompactionReport, String>>>>;

fn run(
    store: Weak<StoreInner>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    last: Outcome,
    interval: Duration,
) {
    let (stopped, wake) = &*stop;
    let mut guard = lock(stopped);
    loop {
        if *guard {
            return;
        }
        guard = wake
            .wait_timeout(guard, interval)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if *guard {
            return;
        }
        drop(guard);
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = Store { inner };
        match store.compact_with(Include::SealedOnly) {
            Ok(Some(report)) => *lock(&last) = Some(Ok(report)),
            Ok(None) => {}
            Err(error) => *lock(&last) = Some(Err(error.to_string())),
        }
        drop(store);
        guard = lock(stopped);
    }
}
