//! Last-writer-wins registers: the catalog's rule for every mutable field; and the mirror
//! rule, first-writer-wins, for the values MLflow keeps from their first logging.
//!
//! Writers (threads, processes) do not coordinate, so the catalog may see their events in any
//! order. Each mutable field keeps the time of the event that set it and only takes an event at
//! least as recent. Within one writer, events come in log order, so of two events in the same
//! millisecond the later one wins. Across writers in the same millisecond the one applied last
//! wins: the only order-dependent case, and a race the callers created.
//!
//! One exception keeps the within-writer rule true across compaction: events read from a
//! metadata chain are *copies* of events of compacted segments, which precede every event
//! still in their writer's log. So in the same millisecond a copy never replaces an original,
//! and an original always replaces a copy. Without it a copy, applied after the original
//! writer's later events, undid them: a run finished in the millisecond it was created showed
//! as RUNNING again after a compaction (found by the simulation, seeds 715 and 1565;
//! regression test `a_copy_from_a_metadata_chain_never_undoes_a_later_event`). A chain is
//! known by its manifest entry or by its id (`wal::writer::IdRange`).
//!
//! First-writer-wins values (a dataset's fields, an input's tags: MLflow keeps the first
//! logging and ignores later ones) follow the mirror rule, `Stamp::precedes`: a value is
//! replaced only by one from an event that surely came before it, an earlier millisecond, or
//! in the same millisecond a copy replacing an original (a copy precedes every event still in
//! its writer's log, so it is the earlier logging). A copy never replaces a copy, nor an
//! original an original, in the same millisecond: the one applied first stays, which within
//! one writer is the earlier; across writers in one millisecond it is the same race as above,
//! decided here by whichever was applied first.

/// Where an event was read from: the log of the writer that wrote it, or a metadata chain
/// that compaction wrote as a copy of compacted segments' events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The event as its writer wrote it (this handle's own, or another writer's log).
    Writer,
    /// A copy from a metadata chain; it precedes every event still in its writer's log.
    MetadataChain,
}

/// When an event happened, and where it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The event's time.
    pub time_ms: i64,
    /// Its writer's log, or a metadata chain.
    pub origin: Origin,
}

impl Stamp {
    /// An event as its writer wrote it.
    #[cfg(test)]
    pub fn original(time_ms: i64) -> Stamp {
        Stamp {
            time_ms,
            origin: Origin::Writer,
        }
    }

    /// Whether an event at `self` surely came before one at `current`: an earlier millisecond,
    /// or in the same one a copy before an original. For first-writer-wins values (a
    /// dataset's fields, an input's tags), the mirror of `replaces`; of two originals in one
    /// millisecond the one applied first stays, which within one writer is the earlier.
    pub fn precedes(self, current: Stamp) -> bool {
        match self.time_ms.cmp(&current.time_ms) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => {
                self.origin == Origin::MetadataChain && current.origin == Origin::Writer
            }
        }
    }

    /// Whether an event at `self` replaces a value set at `current`.
    fn replaces(self, current: Stamp) -> bool {
        match self.time_ms.cmp(&current.time_ms) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                self.origin == Origin::Writer || current.origin == Origin::MetadataChain
            }
        }
    }
}

/// A value and the time (ms) of the event that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lww<T> {
    /// When it was set.
    pub time_ms: i64,
    /// Where the event that set it was read from.
    pub origin: Origin,
    /// The value.
    pub value: T,
}

impl<T> Lww<T> {
    /// A register set at `at`.
    pub fn new(at: Stamp, value: T) -> Self {
        Lww {
            time_ms: at.time_ms,
            origin: at.origin,
            value,
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            time_ms: self.time_ms,
            origin: self.origin,
        }
    }

    /// Takes `value` if an event at `at` replaces the current one (see the module doc).
    pub fn set(&mut self, at: Stamp, value: T) {
        if at.replaces(self.stamp()) {
            *self = Lww::new(at, value);
        }
    }
}

/// Sets the register in `slot`, creating it if absent.
pub fn set<T>(slot: &mut Option<Lww<T>>, at: Stamp, value: T) {
    match slot {
        Some(register) => register.set(at, value),
        None => *slot = Some(Lww::new(at, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_one_millisecond_originals_beat_copies_and_copies_never_beat_originals() {
        let copy = Stamp {
            time_ms: 5,
            origin: Origin::MetadataChain,
        };
        let original = Stamp::original(5);
        let mut register = Lww::new(original, "finished");
        register.set(copy, "running");
        assert_eq!(register.value, "finished");
        let mut register = Lww::new(copy, "running");
        register.set(original, "finished");
        assert_eq!(register.value, "finished");
        register.set(Stamp::original(5), "killed");
        assert_eq!(register.value, "killed", "the later of two originals wins");
        register.set(Stamp::original(4), "older");
        assert_eq!(register.value, "killed");
        register.set(
            Stamp {
                time_ms: 6,
                origin: Origin::MetadataChain,
            },
            "newer copy",
        );
        assert_eq!(register.value, "newer copy");
    }
}
