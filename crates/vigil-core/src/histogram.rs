//! A lock-free fixed-bucket histogram, for recording on hot paths.
//!
//! Vigil records a latency or a size on every request and every batch, from many threads at
//! once; a mutex there (which the Prometheus client's own histogram takes on each
//! observation) would serialise the workers on one lock. Here an observation is two relaxed
//! `fetch_add`s (its bucket and the sum) and no lock. The metrics endpoint reads a
//! [`HistogramSnapshot`] at scrape time; a snapshot taken while observations land may be off
//! by those few observations, which Prometheus tolerates.
//!
//! The sum is kept as an integer in units of `1 / scale` (nanoseconds for seconds with a
//! scale of 1e9, whole rows with a scale of 1), so it too is a single atomic add.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket upper bounds for request latencies, in seconds (100 µs to 10 s).
pub const LATENCY_SECONDS_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Scale that keeps a seconds histogram's sum in nanoseconds.
pub const NANOS_PER_SECOND: f64 = 1e9;

/// A histogram with fixed upper bounds and an implicit `+Inf` bucket.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds, increasing.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`, the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// Sum of observations, in units of `1 / scale`.
    scaled_sum: AtomicU64,
    scale: f64,
}

/// A histogram's state at one moment, in the shape the Prometheus encoders take.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// `(upper bound, observations in this bucket alone)`, ending with the `+Inf` bucket;
    /// not cumulative, as the Prometheus client's encoder (which sums them) takes them.
    pub buckets: Vec<(f64, u64)>,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds whose sum is kept in units of `1 / scale`.
    pub fn new(bounds: &'static [f64], scale: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        debug_assert!(scale > 0.0);
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            scaled_sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram in seconds ([`LATENCY_SECONDS_BOUNDS`]).
    pub fn latency_seconds() -> Self {
        Self::new(LATENCY_SECONDS_BOUNDS, NANOS_PER_SECOND)
    }

    /// Records one observation. Negative or NaN values count as zero.
    pub fn observe(&self, value: f64) {
        let value = if value.is_nan() { 0.0 } else { value.max(0.0) };
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // `as` saturates: an absurd value cannot wrap the sum.
        let scaled = (value * self.scale).round() as u64;
        self.scaled_sum.fetch_add(scaled, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }

    /// The buckets, count and sum now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(position, bucket)| {
                let bound = self.bounds.get(position).copied().unwrap_or(f64::INFINITY);
                (bound, bucket.load(Ordering::Relaxed))
            })
            .collect();
        HistogramSnapshot {
            sum: self.scaled_sum.load(Ordering::Relaxed) as f64 / self.scale,
            count: buckets.iter().map(|(_, count)| count).sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histogram = AtomicHistogram::new(&[1.0, 10.0, 100.0], 1.0);
        for value in [0.0, 1.0, 2.0, 10.0, 11.0, 1000.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.buckets,
            vec![(1.0, 2), (10.0, 2), (100.0, 1), (f64::INFINITY, 1)]
        );
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.sum, 1024.0);
        assert_eq!(histogram.count(), 6);
    }

    #[test]
    fn seconds_sums_keep_nanosecond_precision() {
        let histogram = AtomicHistogram::latency_seconds();
        histogram.observe(0.000_123_456);
        histogram.observe(1.5);
        let snapshot = histogram.snapshot();
        assert!(
            (snapshot.sum - 1.500_123_456).abs() < 1e-12,
            "{}",
            snapshot.sum
        );
        assert_eq!(snapshot.count, 2);
    }

    #[test]
    fn nonsense_values_count_as_zero() {
        let histogram = AtomicHistogram::new(&[1.0], 1.0);
        histogram.observe(f64::NAN);
        histogram.observe(-3.0);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets, vec![(1.0, 2), (f64::INFINITY, 0)]);
        assert_eq!(snapshot.sum, 0.0);
    }
}
