//! Durability levels: what an acknowledged append survives.
//!
//! "Acknowledged" means the call returned `Ok`. A process crash (kill -9, abort, OOM kill)
//! leaves the page cache intact; a power loss or kernel crash loses whatever was not synced.

use std::time::Duration;

use crate::limits::FLUSH_INTERVAL_DEFAULT;

/// How hard an append works to reach the disk before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The append is in the page cache when the call returns (every point is written straight
    /// into the mmapped segment; nothing waits in process memory).
    /// - Process crash: every acknowledged append survives.
    /// - Power loss: appends since the last [`flush`](crate::wal::Log::flush) or segment rotation may
    ///   be lost (never half-kept: a torn record ends the log).
    Buffered,
    /// Like `Buffered`, and a background thread syncs every writer at least once per interval.
    /// - Process crash: every acknowledged append survives.
    /// - Power loss: at most the appends of the last interval (plus the time one sync takes) are
    ///   lost.
    Interval(Duration),
    /// Every append is synced (msync) before the call returns.
    /// - Process crash and power loss: every acknowledged append survives, assuming a disk that
    ///   honours flushes.
    Sync,
}

impl Default for Durability {
    /// `Interval(1 s)`.
    fn default() -> Self {
        Durability::Interval(FLUSH_INTERVAL_DEFAULT)
    }
}
