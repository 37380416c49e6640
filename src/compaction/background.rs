//! The background compactor: a thread of a writing store handle that compacts sealed segments
//! every `StoreOptions::compaction_interval`, so a long job's log stays bounded without anyone
//! calling `compact`.
//!
//! It holds only a weak reference to the store, so it never keeps a dropped store alive, and it
//! leaves the handle's open segments alone (sealing them would start new writer chains every
//! round): what it compacts is what rotation has sealed, plus everything other processes
//! finished. When another process holds the compaction lock it skips the round instead of
//! waiting, so dropping the store never waits for someone else's compaction.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::CompactionReport;
use super::writer::Include;
use crate::error::{Error, Result};
use crate::periodic::Periodic;
use crate::tracking::{Store, StoreInner};
use crate::util::lock;

/// The outcome of the last round that ran (skipped rounds leave it as it was).
type Outcome = Arc<Mutex<Option<std::result::Result<CompactionReport, String>>>>;

/// The thread (stopped when this is dropped) and what its last round did.
#[derive(Debug)]
pub(crate) struct Background {
    _thread: Periodic,
    pub last: Outcome,
}

impl Background {
    /// Starts compacting `store` every `interval`.
    pub fn start(store: &Store, interval: Duration) -> Result<Background> {
        let last: Outcome = Arc::new(Mutex::new(None));
        let weak = store.downgrade();
        let outcome = Arc::clone(&last);
        let mut swept = false;
        let thread = Periodic::start("runlog-compactor", interval, move || {
            // Once per handle (a server's start): killed writers' temporaries do not come
            // back while it runs unless a writer is killed again, and the sweep walks every
            // artifact folder. Best effort, as in `Store::compact`.
            if !swept && let Some(store) = Store::upgrade(&weak) {
                swept = true;
                let _ = store.remove_stale_artifact_temporaries();
            }
            compact_once(&weak, &outcome)
        })
        .map_err(|e| Error::io("spawn compactor thread", store.root(), e))?;
        Ok(Background {
            _thread: thread,
            last,
        })
    }
}

/// One round; false once the store is gone.
fn compact_once(store: &Weak<StoreInner>, last: &Outcome) -> bool {
    let Some(store) = Store::upgrade(store) else {
        return false;
    };
    match store.compact_with(Include::SealedOnly) {
        Ok(Some(report)) => *lock(last) = Some(Ok(report)),
        Ok(None) => {}
        Err(error) => *lock(last) = Some(Err(error.to_string())),
    }
    true
}
