//! `LaneSummaries`: the summary of the points of one series that this handle logged through
//! metric handles, one part per writer lane, so that a handle's call updates it under the lock
//! it holds anyway (its lane's) and takes no lock of the run's.
//!
//! Invariants:
//! - Part `lane` is written only by a thread that holds the log's lane `lane` (the callback
//!   of `Log::log_point_interned`), so its writers are serialized by that lock; it needs no
//!   lock of its own.
//! - Readers take no lock: each part is a sequence lock. A writer makes the sequence odd,
//!   rewrites the summary's words and makes it even again; a reader retries until it reads
//!   the same even sequence before and after copying the words, so it copies a summary as of
//!   some append, never a mix of two.
//! - A point is added only after the log accepted it, before the call that logged it returns:
//!   a read that starts after a call returned sees its point.
//! - Parts are allocated on a lane's first point, so a series costs a pointer per lane until
//!   then.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::summary::{MetricSummary, SUMMARY_WORDS};

/// Reads retried before the reader yields its time slice to a writer that was preempted
/// between its two sequence stores.
const SPINS_BEFORE_YIELD: u32 = 64;

/// One series' summaries of the points logged through each lane.
#[derive(Debug)]
pub(crate) struct LaneSummaries {
    parts: Box<[OnceLock<Box<Part>>]>,
}

#[derive(Debug)]
struct Part {
    /// Odd while a writer rewrites `words`.
    sequence: AtomicU64,
    words: [AtomicU64; SUMMARY_WORDS],
}

impl LaneSummaries {
    /// Empty parts for a log of `lanes` lanes.
    pub fn new(lanes: usize) -> LaneSummaries {
        LaneSummaries {
            parts: (0..lanes).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Adds one point to part `lane`. The caller holds the log's lane `lane` (see the module
    /// doc): two threads adding to one part at once would leave it inconsistent.
    #[inline]
    pub fn add(&self, lane: usize, step: i64, timestamp_ms: i64, value: f64) {
        let Some(slot) = self.parts.get(lane) else {
            debug_assert!(false, "lane {lane} of {}", self.parts.len());
            return;
        };
        let part = slot.get_or_init(|| Box::new(Part::empty()));
        let sequence = part.sequence.load(Ordering::Relaxed);
        part.sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        // The odd sequence is visible before any word changes.
        fence(Ordering::Release);
        let mut summary = MetricSummary::from_words(&part.load_words());
        summary.update(step, timestamp_ms, value);
        for (word, value) in part.words.iter().zip(summary.to_words()) {
            word.store(value, Ordering::Relaxed);
        }
        part.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// The summary of every point added, through every lane.
    pub fn summary(&self) -> MetricSummary {
        let mut summary = MetricSummary::EMPTY;
        for part in self.parts.iter().filter_map(OnceLock::get) {
            summary.merge(&part.read());
        }
        summary
    }
}

impl Part {
    fn empty() -> Part {
        Part {
            sequence: AtomicU64::new(0),
            words: MetricSummary::EMPTY.to_words().map(AtomicU64::new),
        }
    }

    #[inline]
    fn load_words(&self) -> [u64; SUMMARY_WORDS] {
        std::array::from_fn(|index| self.words[index].load(Ordering::Relaxed))
    }

    /// A consistent copy (see the module doc).
    fn read(&self) -> MetricSummary {
        let mut spins = 0u32;
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before.is_multiple_of(2) {
                let words = self.load_words();
                // The words are read before the sequence is read again.
                fence(Ordering::Acquire);
                if self.sequence.load(Ordering::Relaxed) == before {
                    return MetricSummary::from_words(&words);
                }
            }
            spins += 1;
            if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points added through several lanes summarize as if added to one summary (the values are
    /// exact in binary, so the sums agree to the bit).
    #[test]
    fn parts_merge_into_the_summary_of_every_point() {
        let lanes = LaneSummaries::new(4);
        let mut expected = MetricSummary::EMPTY;
        for index in 0..100i64 {
            let value = if index % 17 == 0 {
                f64::NAN
            } else {
                (index % 9) as f64 * 0.5
            };
            let (step, timestamp_ms) = ((index * 7) % 31, 1_000 + index % 5);
            lanes.add((index % 3) as usize, step, timestamp_ms, value);
            expected.update(step, timestamp_ms, value);
        }
        assert_eq!(format!("{:?}", lanes.summary()), format!("{expected:?}"));
        assert_eq!(LaneSummaries::new(2).summary().count, 0);
    }

    /// A reader beside a writer never sees a torn summary: each copy has count equal to the
    /// number of points and a sum that matches it.
    #[test]
    fn a_reader_beside_a_writer_sees_whole_summaries() {
        let lanes = LaneSummaries::new(1);
        let points = 200_000i64;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for index in 0..points {
                    lanes.add(0, index, index, 1.0);
                }
            });
            let mut last = 0;
            while last < points as u64 {
                let summary = lanes.summary();
                assert!(summary.count >= last);
                assert_eq!(summary.finite_count, summary.count);
                assert_eq!(summary.sum, summary.count as f64);
                if summary.count > 0 {
                    assert_eq!(summary.last_step, summary.count as i64 - 1);
                }
                last = summary.count;
            }
        });
    }
}
