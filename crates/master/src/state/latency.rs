//! A fixed-bucket histogram of scheduling latency (how long a task waited
//! in the queue before a placement), kept in [`super::Counters`] for the
//! `/metrics` endpoint. Whole milliseconds, no floats; `Copy`, so the
//! counters can be read out of the engine by value.

use berth_core::Millis;

/// Upper bounds of the buckets, in milliseconds (Prometheus `le`).
pub const LATENCY_BUCKETS_MS: [u64; 15] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last slot counts
    /// those above the largest bound.
    pub buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl LatencyHistogram {
    /// Record one wait. A negative wait (a clock step backwards) counts
    /// as zero.
    pub fn observe(&mut self, waited: Millis) {
        let ms = waited.max(0) as u64;
        let slot = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[slot] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }

    /// Cumulative counts per bound, as Prometheus wants them; the last is
    /// the `+Inf` bucket (equal to `count`).
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS_MS.len() + 1] {
        let mut out = self.buckets;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut h = LatencyHistogram::default();
        for ms in [0, 1, 2, 400_000, -5] {
            h.observe(ms);
        }
        assert_eq!(h.buckets[0], 3); // 0, 1 and the clamped -5
        assert_eq!(h.buckets[1], 1); // 2 ≤ 5
        assert_eq!(h.buckets[LATENCY_BUCKETS_MS.len()], 1);
        let c = h.cumulative();
        assert_eq!(c[c.len() - 1], h.count);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(h.sum_ms, 400_003);
    }
}
