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
//!   a calibration off by up to 2x still never lets a millisecond run over.
//! - The TSC is trusted only where the kernel's own clock source is `tsc`: the kernel then
//!   checked that it is constant-rate, runs through sleep states and agrees across CPUs, and
//!   `SystemTime::now()` is itself derived from it. Elsewhere (another clock source, another
//!   architecture) every call reads the clock.
//! - A counter that went backwards (a migration between disagreeing CPUs) reads the clock.
//! - Until the rate is calibrated (10 ms after the first call, from the same reads, with no
//!   spinning), every call reads the clock.
//!
//! So a timestamp is the one `SystemTime::now()` gives at the call, except when the wall clock
//! is stepped (NTP, an administrator) inside the remembered part of a millisecond: it is then
//! seen up to that part of a millisecond later, as if the call had come a moment earlier. Like
//! MLflow's `time.time()`, timestamps follow the wall clock, steps back included.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const NANOS_PER_MS: u64 = 1_000_000;

/// How long the rate is measured before the counter is trusted.
const CALIBRATION_NANOS_MIN: u64 = 10 * NANOS_PER_MS;

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
    let ticks_per_ms = calibration().ticks_per_ms(read_at_ticks);
    // Half the remainder (see the module doc); the product stays far below u64::MAX since
    // `nanos_left` < 10^6 and a counter ticks at a few 10^6 per ms.
    let valid_ticks = match ticks_per_ms {
        Some(rate) => nanos_left.saturating_mul(rate) / NANOS_PER_MS / 2,
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
    if !calibration().usable {
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

/// The counter's rate, measured once per process against the monotonic clock.
struct Calibration {
    usable: bool,
    start: OnceLock<(u64, Instant)>,
    /// 0 until measured.
    ticks_per_ms: AtomicU64,
}

fn calibration() -> &'static Calibration {
    static CALIBRATION: OnceLock<Calibration> = OnceLock::new();
    CALIBRATION.get_or_init(|| Calibration {
        usable: cfg!(target_arch = "x86_64") && kernel_clock_is_tsc(),
        start: OnceLock::new(),
        ticks_per_ms: AtomicU64::new(0),
    })
}

impl Calibration {
    /// The rate, once `CALIBRATION_NANOS_MIN` has passed since the first call; `ticks` is the
    /// counter now.
    fn ticks_per_ms(&self, ticks: u64) -> Option<u64> {
        let rate = self.ticks_per_ms.load(Ordering::Relaxed);
        if rate != 0 {
            return Some(rate);
        }
        let (start_ticks, start) = *self.start.get_or_init(|| (ticks, Instant::now()));
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if nanos < CALIBRATION_NANOS_MIN {
            return None;
        }
        let elapsed_ticks = ticks.checked_sub(start_ticks)?;
        let rate =
            u64::try_from(u128::from(elapsed_ticks) * u128::from(NANOS_PER_MS) / u128::from(nanos))
                .ok()
                .filter(|rate| *rate > 0)?;
        self.ticks_per_ms.store(rate, Ordering::Relaxed);
        Some(rate)
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

    /// Every remembered millisecond lies between two real reads around it: never ahead of
    /// the clock, never behind it, over enough calls to cross many millisecond boundaries
    /// after calibration.
    #[test]
    fn remembered_milliseconds_match_the_clock() {
        let deadline = Instant::now() + std::time::Duration::from_millis(60);
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
        assert!(calls > 1000, "{calls}");
    }
}
