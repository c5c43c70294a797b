//! Latency histograms: buckets 1 % wide from 1 µs to about 20 minutes, recorded lock-free from many tasks and
//! merged across processes (sent as sparse `[bucket, count]` pairs).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

const GROWTH: f64 = 1.01;
const BUCKETS: usize = 2800;

fn bucket(us: u64) -> usize {
    (((us.max(1) as f64).ln() / GROWTH.ln()).floor() as usize).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in milliseconds.
fn upper_ms(b: usize) -> f64 {
    GROWTH.powi(b as i32 + 1) / 1000.0
}

/// A histogram many tasks record into at once.
pub(crate) struct Recorder {
    counts: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), max_us: AtomicU64::new(0) }
    }
}

impl Recorder {
    pub(crate) fn record_us(&self, us: u64) {
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// What was recorded so far, and the recorder emptied.
    pub(crate) fn take(&self) -> Histogram {
        let mut h = Histogram::default();
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                h.buckets.push((i as u32, n));
            }
        }
        h.max_us = self.max_us.swap(0, Ordering::Relaxed);
        h
    }

    /// What was recorded so far (the recorder keeps it).
    pub(crate) fn snapshot(&self) -> Histogram {
        let mut h = Histogram::default();
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                h.buckets.push((i as u32, n));
            }
        }
        h.max_us = self.max_us.load(Ordering::Relaxed);
        h
    }
}

/// A recorded distribution.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Histogram {
    /// (bucket, count), ascending.
    pub(crate) buckets: Vec<(u32, u64)>,
    pub(crate) max_us: u64,
}

impl Histogram {
    #[cfg(test)]
    fn from_samples_ms(samples: &[f64]) -> Self {
        let r = Recorder::default();
        for s in samples {
            r.record_us((s * 1000.0).round().max(0.0) as u64);
        }
        r.take()
    }

    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        let mut dense = vec![0u64; BUCKETS];
        for (b, n) in self.buckets.iter().chain(&other.buckets) {
            dense[*b as usize] += n;
        }
        self.buckets = dense.into_iter().enumerate().filter(|(_, n)| *n > 0).map(|(b, n)| (b as u32, n)).collect();
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The `p`th percentile in milliseconds (within 1 %), NaN when empty. The 100th is the exact maximum.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        if p >= 100.0 {
            return self.max_us as f64 / 1000.0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return upper_ms(*b as usize).min(self.max_us as f64 / 1000.0);
            }
        }
        self.max_us as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_one_percent_and_merge_adds() {
        let samples: Vec<f64> = (1..=1000).map(|i| i as f64 * 0.1).collect();
        let h = Histogram::from_samples_ms(&samples);
        for (p, exact) in [(50.0, 50.0), (90.0, 90.0), (99.0, 99.0)] {
            let got = h.percentile_ms(p);
            assert!((got - exact).abs() / exact <= 0.011, "p{p}: {got} vs {exact}");
        }
        assert_eq!(h.percentile_ms(100.0), 100.0);
        let mut both = h.clone();
        both.merge(&Histogram::from_samples_ms(&[5000.0]));
        assert_eq!(both.count(), 1001);
        assert_eq!(both.percentile_ms(100.0), 5000.0);
        assert!(Histogram::default().percentile_ms(50.0).is_nan());
    }
}
