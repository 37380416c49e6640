//! Last-writer-wins registers: the catalog's rule for every mutable field.
//!
//! Writers (threads, processes) do not coordinate, so the catalog may see their events in any
//! order. Each mutable field keeps the time of the event that set it and only takes an event at
//! least as recent. Within one writer, events come in log order, so of two events in the same
//! millisecond the later one wins. Across writers in the same millisecond the one applied last
//! wins: the only order-dependent case, and a race the callers created.

/// A value and the time (ms) of the event that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lww<T> {
    /// When it was set.
    pub time_ms: i64,
    /// The value.
    pub value: T,
}

impl<T> Lww<T> {
    /// A register set at `time_ms`.
    pub fn new(time_ms: i64, value: T) -> Self {
        Lww { time_ms, value }
    }

    /// Takes `value` if `time_ms` is not older than the current one.
    pub fn set(&mut self, time_ms: i64, value: T) {
        if time_ms >= self.time_ms {
            self.time_ms = time_ms;
            self.value = value;
        }
    }
}

/// Sets the register in `slot`, creating it if absent.
pub fn set<T>(slot: &mut Option<Lww<T>>, time_ms: i64, value: T) {
    match slot {
        Some(register) => register.set(time_ms, value),
        None => *slot = Some(Lww::new(time_ms, value)),
    }
}
