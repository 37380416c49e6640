//! The per-series summary the catalog keeps for every (run, key): enough to answer "latest
//! metrics" and "compare runs" without reading history.
//!
//! Invariant: every update is commutative (order-independent): count and min/max obviously; the
//! latest value is the point with the greatest (step, timestamp, value), MLflow's rule, with
//! values ordered by `f64::total_cmp`; min/max ignore NaN and break ties by the smaller step.
//! (The running sum behind the mean is the one exception: floating-point rounding depends on
//! the order of additions, so means from different replay orders agree to rounding only.)
//! So replaying writers in any order gives the same summary.

use std::cmp::Ordering;

/// Summary of one metric series of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricSummary {
    /// Points logged.
    pub count: u64,
    /// Smallest step.
    pub first_step: i64,
    /// Greatest step.
    pub last_step: i64,
    /// Value of the latest point: greatest (step, timestamp, value).
    pub last_value: f64,
    /// Timestamp of the latest point, ms.
    pub last_timestamp_ms: i64,
    /// Smallest non-NaN value (NaN if every value is NaN).
    pub min_value: f64,
    /// Step of the smallest value.
    pub min_step: i64,
    /// Greatest non-NaN value (NaN if every value is NaN).
    pub max_value: f64,
    /// Step of the greatest value.
    pub max_step: i64,
    /// Sum of non-NaN values, for means.
    pub sum: f64,
    /// Number of non-NaN values.
    pub finite_count: u64,
}

impl MetricSummary {
    /// An empty summary (count 0).
    pub const EMPTY: MetricSummary = MetricSummary {
        count: 0,
        first_step: 0,
        last_step: 0,
        last_value: f64::NAN,
        last_timestamp_ms: 0,
        min_value: f64::NAN,
        min_step: 0,
        max_value: f64::NAN,
        max_step: 0,
        sum: 0.0,
        finite_count: 0,
    };

    /// Mean of the non-NaN values (NaN if there are none).
    pub fn mean(&self) -> f64 {
        if self.finite_count == 0 {
            f64::NAN
        } else {
            self.sum / self.finite_count as f64
        }
    }

    /// Adds one point.
    #[inline]
    pub fn update(&mut self, step: i64, timestamp_ms: i64, value: f64) {
        if self.count == 0 {
            self.first_step = step;
            self.last_step = step;
            self.last_value = value;
            self.last_timestamp_ms = timestamp_ms;
        } else {
            // The latest point has the greatest step, so `last_step` is also its step.
            let newer = (step, timestamp_ms)
                .cmp(&(self.last_step, self.last_timestamp_ms))
                .then_with(|| value.total_cmp(&self.last_value));
            if newer == Ordering::Greater {
                self.last_value = value;
                self.last_timestamp_ms = timestamp_ms;
            }
            self.first_step = self.first_step.min(step);
            self.last_step = self.last_step.max(step);
        }
        self.count += 1;
        if value.is_nan() {
            return;
        }
        self.sum += value;
        self.finite_count += 1;
        let smaller = value < self.min_value || (value == self.min_value && step < self.min_step);
        if self.min_value.is_nan() || smaller {
            self.min_value = value;
            self.min_step = step;
        }
        let greater = value > self.max_value || (value == self.max_value && step < self.max_step);
        if self.max_value.is_nan() || greater {
            self.max_value = value;
            self.max_step = step;
        }
    }
}
