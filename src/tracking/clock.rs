//! The wall clock of the logging hot path, in ms since the Unix epoch: exactly what
//! `SystemTime::now()` reads, truncated to the millisecond, at a fraction of its cost.
//!
//! Reading the wall clock through the vDSO costs about 20-25 ns, a third of a handle's whole
//! logging call, yet a program logging millions of points a second reads the same millisecond
//! tens of thousands of times. Each thread therefore remembers the last millisecond it read and
//! how much of it was left, measured in ticks of the CPU's time-stamp counter (TSC, one
//! instruction, a few ns); a call that finds fewer ticks elapsed than that returns the
//! remembered millisecond without reading the clock.
//!
//! Invariants (why a remembered millisecond is exact):
//! - The TSC is read *before* the clock, so the ticks a later call counts from it overstate the
//!   time elapsed since the clock was read: the remembered millisecond is returned only while
//!   the clock has certainly not reached the next one.
//! - The ticks that may elapse are half of the millisecond's remainder at the calibrated rate:
//!   a calibrated rate up to 2x the true one still never lets a millisecond run over.
//! - The rate is measured so that it cannot be far off: each end of a measuring window pairs a
//!   monotonic-clock read with the counter read just before and just after it (retried while
//!   those two are far apart, as when the thread was preempted between them), and the rate
//!   kept is the lowest the window allows. Two consecutive windows must agree within
//!   `RATE_DISAGREEMENT_PER_MILLE`; if they do not, the counter is never used and every call
//!   reads the clock.
//! - The TSC is trusted only while the kernel's own clock source is `tsc`: the kernel then
//!   checked that it is constant-rate, runs through sleep states and agrees across CPUs, and
//!   `SystemTime::now()` is itself derived from it. The clock source is read again about once a
//!   second (from a call that reads the clock anyway); once it is anything else, the counter is
//!   never used again in the process. On hosts whose clock source is not `tsc` (a virtual
//!   machine on `kvm-clock`, another architecture) every call reads the clock.
//! - A counter that went backwards (a migration between disagreeing CPUs) reads the clock.
//! - Until both measuring windows (at least `CALIBRATION_NANOS_MIN` each, taken from calls
//!   that read the clock anyway, with no spinning) are done, every call reads the clock.
//!
//! So a timestamp is the one `SystemTime::now()` gives at the call, except when the wall clock
//! is stepped (NTP, an administrator) inside the remembered part of a millisecond: it is then
//! seen up to that part of a millisecond later, as if the call had come a moment earlier. Like
//! MLflow's `time.time()`, timestamps follow the wall clock, steps back included.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const NANOS_PER_MS: u64 = 1_000_000;

/// How long each measuring window lasts at least.
const CALIBRATION_NANOS_MIN: u64 = 10 * NANOS_PER_MS;

/// The widest gap between the counter reads around a monotonic-clock read that still counts
/// as "together": a clock read takes ~100 ticks; a preemption takes millions.
const BRACKET_TICKS_MAX: u64 = 20_000;

/// How often a bracket is retried before the window end is left to a later call.
const BRACKET_TRIES_MAX: u32 = 8;

/// How far apart (in thousandths) the two windows' rates may be.
const RATE_DISAGREEMENT_PER_MILLE: u64 = 10;

/// The slowest counter believed (100 MHz): a lower rate means a bad measurement.
const TICKS_PER_MS_MIN: u64 = 100_000;

/// How often (ms of wall clock) the kernel's clock source is read again.
const CLOCKSOURCE_RECHECK_MS: i64 = 1_000;

/// `ticks_per_ms` once the windows disagreed: the counter is never used.
const RATE_REJECTED: u64 = u64::MAX;

/// The wall clock now, in ms since the Unix epoch (0 before 1970), as `SystemTime::now()`
/// would give it (see the module doc).
#[inline]
pub(crate) fn now_ms() -> i64 {
    let Some(ticks) = ticks() else {
        return read_clock().0;
    };
    let remembered = REMEMBERED.with(Cell::get);
    if ticks.wrapping_sub(remembered.read_at_ticks) < remembered.valid_ticks {
        return remembered.ms;
    }
    now_ms_slow(ticks)
}

/// What a thread remembers of its last clock read.
#[derive(Clone, Copy)]
struct Remembered {
    /// The counter just before the read.
    read_at_ticks: u64,
    /// Ticks after `read_at_ticks` during which the millisecond certainly has not changed.
    valid_ticks: u64,
    /// The millisecond read.
    ms: i64,
}

thread_local! {
    static REMEMBERED: Cell<Remembered> = const {
        Cell::new(Remembered { read_at_ticks: 0, valid_ticks: 0, ms: 0 })
    };
}

#[cold]
#[inline(never)]
fn now_ms_slow(read_at_ticks: u64) -> i64 {
    let (ms, nanos_left) = read_clock();
    let calibration = calibration();
    calibration.recheck_source(ms);
    let valid_ticks = match calibration.ticks_per_ms() {
        Some(rate) => valid_ticks(nanos_left, rate),
        None => 0,
    };
    REMEMBERED.with(|cell| {
        cell.set(Remembered {
            read_at_ticks,
            valid_ticks,
            ms,
        });
    });
    ms
}

/// The ticks after a clock read, with `nanos_left` of its millisecond left, during which the
/// millisecond certainly has not changed, for a counter calibrated at `ticks_per_ms`: half the
/// remainder, so that a calibrated rate up to 2x the true one stays safe.
fn valid_ticks(nanos_left: u64, ticks_per_ms: u64) -> u64 {
    let ticks = u128::from(nanos_left.min(NANOS_PER_MS)) * u128::from(ticks_per_ms)
        / u128::from(NANOS_PER_MS)
        / 2;
    u64::try_from(ticks).unwrap_or(0)
}

/// The wall clock in ms, and the ns left in that millisecond.
fn read_clock() -> (i64, u64) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => {
            let nanos_left = NANOS_PER_MS - u64::from(since.subsec_nanos()) % NANOS_PER_MS;
            (
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
                nanos_left,
            )
        }
        // Before 1970: not remembered (nothing is left of the millisecond).
        Err(_) => (0, 0),
    }
}

/// The time-stamp counter, where it can be trusted (see the module doc).
#[inline]
fn ticks() -> Option<u64> {
    if !calibration().usable.load(Ordering::Relaxed) {
        return None;
    }
    read_ticks()
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn read_ticks() -> Option<u64> {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no preconditions; it only reads a
    // counter.
    Some(unsafe { core::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn read_ticks() -> Option<u64> {
    None
}

/// A monotonic-clock read with the counter read just before and just after it.
#[derive(Clone, Copy)]
struct Bracket {
    ticks_before: u64,
    at: Instant,
    ticks_after: u64,
}

/// A bracket whose counter reads are close together, or `None` after `BRACKET_TRIES_MAX`
/// tries.
fn read_bracket() -> Option<Bracket> {
    (0..BRACKET_TRIES_MAX).find_map(|_| {
        let ticks_before = read_ticks()?;
        let at = Instant::now();
        let ticks_after = read_ticks()?;
        let gap = ticks_after.checked_sub(ticks_before)?;
        (gap <= BRACKET_TICKS_MAX).then_some(Bracket {
            ticks_before,
            at,
            ticks_after,
        })
    })
}

/// The lowest rate (ticks per ms) consistent with the counter reads of a window from `start`
/// to `end`; `None` for a window shorter than `CALIBRATION_NANOS_MIN`, a counter that went
/// backwards, or an implausibly slow counter.
fn window_rate(start: &Bracket, end: &Bracket) -> Option<u64> {
    let nanos = u64::try_from(end.at.checked_duration_since(start.at)?.as_nanos()).ok()?;
    if nanos < CALIBRATION_NANOS_MIN {
        return None;
    }
    // The two clock reads lie inside their brackets, so at least this many ticks lie between.
    let ticks = end.ticks_before.checked_sub(start.ticks_after)?;
    let rate = u128::from(ticks) * u128::from(NANOS_PER_MS) / u128::from(nanos);
    u64::try_from(rate)
        .ok()
        .filter(|rate| *rate >= TICKS_PER_MS_MIN)
}

/// The rate to use given two windows' rates: the lower one if they agree, `None` if not.
fn agreed_rate(first: u64, second: u64) -> Option<u64> {
    let (low, high) = (first.min(second), first.max(second));
    let allowed = u128::from(low) * u128::from(1_000 + RATE_DISAGREEMENT_PER_MILLE) / 1_000;
    (u128::from(high) <= allowed).then_some(low)
}

/// Where the measuring of the rate stands.
enum Phase {
    NotStarted,
    First { start: Bracket },
    Second { start: Bracket, first_rate: u64 },
}

/// The counter's rate, measured once per process against the monotonic clock, and whether the
/// counter may be used at all.
struct Calibration {
    usable: AtomicBool,
    /// The wall-clock ms at which the clock source was last read.
    source_checked_ms: AtomicI64,
    phase: Mutex<Phase>,
    /// 0 until measured; `RATE_REJECTED` if the windows disagreed.
    ticks_per_ms: AtomicU64,
}

fn calibration() -> &'static Calibration {
    static CALIBRATION: OnceLock<Calibration> = OnceLock::new();
    CALIBRATION.get_or_init(|| Calibration {
        usable: AtomicBool::new(cfg!(target_arch = "x86_64") && kernel_clock_is_tsc()),
        source_checked_ms: AtomicI64::new(read_clock().0),
        phase: Mutex::new(Phase::NotStarted),
        ticks_per_ms: AtomicU64::new(0),
    })
}

impl Calibration {
    /// The measured rate, or `None` while measuring (or after the windows disagreed). Never
    /// waits: a call that finds another thread measuring just reads the clock.
    fn ticks_per_ms(&self) -> Option<u64> {
        match self.ticks_per_ms.load(Ordering::Relaxed) {
            0 => self.measure(),
            RATE_REJECTED => None,
            rate => Some(rate),
        }
    }

    fn measure(&self) -> Option<u64> {
        let mut phase = match self.phase.try_lock() {
            Ok(phase) => phase,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let now = read_bracket()?;
        match *phase {
            Phase::NotStarted => *phase = Phase::First { start: now },
            Phase::First { start } => {
                if let Some(first_rate) = window_rate(&start, &now) {
                    *phase = Phase::Second {
                        start: now,
                        first_rate,
                    };
                }
            }
            Phase::Second { start, first_rate } => {
                let second_rate = window_rate(&start, &now)?;
                let rate = agreed_rate(first_rate, second_rate).unwrap_or(RATE_REJECTED);
                self.ticks_per_ms.store(rate, Ordering::Relaxed);
                return (rate != RATE_REJECTED).then_some(rate);
            }
        }
        None
    }

    /// Reads the kernel's clock source again if `CLOCKSOURCE_RECHECK_MS` have passed (or the
    /// wall clock went back) since it was last read; `now_ms` is the wall clock now.
    fn recheck_source(&self, now_ms: i64) {
        let checked_ms = self.source_checked_ms.load(Ordering::Relaxed);
        let due =
            now_ms.saturating_sub(checked_ms) >= CLOCKSOURCE_RECHECK_MS || now_ms < checked_ms;
        if !due
            || self
                .source_checked_ms
                .compare_exchange(checked_ms, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if !kernel_clock_is_tsc() {
            self.usable.store(false, Ordering::Relaxed);
        }
    }
}

/// Whether the kernel keeps time with the TSC (Linux; false wherever that cannot be read).
fn kernel_clock_is_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|source| source.trim() == "tsc")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every remembered millisecond lies between two real reads around it: never ahead of
    /// the clock, never behind it, across millisecond boundaries during and after calibration.
    #[test]
    fn remembered_milliseconds_match_the_clock() {
        let deadline = Instant::now() + Duration::from_millis(60);
        let mut calls = 0u64;
        while Instant::now() < deadline {
            let before = read_clock().0;
            let ms = now_ms();
            let after = read_clock().0;
            assert!(
                before <= ms && ms <= after,
                "{before} <= {ms} <= {after} after {calls} calls"
            );
            calls += 1;
        }
    }

    /// For a counter truly ticking at `true_rate`, a calibrated rate from far too low up to
    /// 2x too high never lets a remembered millisecond last past the real clock's next one.
    #[test]
    fn window_never_outlasts_the_millisecond_up_to_twice_the_true_rate() {
        let true_rate = 3_000_000u64;
        for calibrated in [true_rate / 10, true_rate, true_rate * 3 / 2, true_rate * 2] {
            for nanos_left in [1, 2, 333, 499_999, 500_000, 999_999, NANOS_PER_MS] {
                let valid = valid_ticks(nanos_left, calibrated);
                // The tick at which the real clock reaches its next millisecond.
                let boundary =
                    u128::from(nanos_left) * u128::from(true_rate) / u128::from(NANOS_PER_MS);
                assert!(
                    u128::from(valid) <= boundary,
                    "rate {calibrated}, {nanos_left} ns left: {valid} > {boundary}"
                );
            }
        }
    }

    fn bracket(start: Instant, nanos: u64, ticks_before: u64, ticks_after: u64) -> Bracket {
        Bracket {
            ticks_before,
            at: start + Duration::from_nanos(nanos),
            ticks_after,
        }
    }

    /// A window end read late (the thread preempted between its counter reads) widens the
    /// bracket; the rate taken is the lowest the window allows, never a too-high one.
    #[test]
    fn window_rate_takes_the_lowest_rate_the_brackets_allow() {
        let t0 = Instant::now();
        let start = bracket(t0, 0, 1_000, 1_100);
        let end = bracket(t0, CALIBRATION_NANOS_MIN, 30_001_100, 30_001_200);
        assert_eq!(window_rate(&start, &end), Some(3_000_000));
        let short = bracket(t0, CALIBRATION_NANOS_MIN - 1, 30_001_100, 30_001_200);
        assert_eq!(window_rate(&start, &short), None);
        let backwards = bracket(t0, CALIBRATION_NANOS_MIN, 500, 600);
        assert_eq!(window_rate(&start, &backwards), None);
    }

    /// A second window disagreeing with the first (one of them measured wrong) rejects the
    /// counter, so that every call reads the clock; agreeing windows give the lower rate.
    #[test]
    fn disagreeing_windows_reject_the_counter() {
        assert_eq!(agreed_rate(3_000_000, 3_010_000), Some(3_000_000));
        assert_eq!(agreed_rate(3_010_000, 3_000_000), Some(3_000_000));
        assert_eq!(agreed_rate(6_000_000, 3_000_000), None);
        assert_eq!(agreed_rate(3_000_000, 3_100_000), None);
    }
}
