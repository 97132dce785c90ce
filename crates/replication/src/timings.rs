//! How long the durable parts of replication take, for `mntr` and `/metrics`: the log's fsyncs
//! and the snapshots. Lock-free, because the log's sync runs on a blocking thread while the
//! server reads the numbers from its core.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Count, sum, min and max of durations, in microseconds (shown in milliseconds, as ZooKeeper
/// shows its `fsynctime` and `snapshottime`).
#[derive(Debug)]
pub struct Timing {
    count: AtomicU64,
    sum_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
        }
    }
}

/// A reading of a [`Timing`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingReading {
    pub count: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl TimingReading {
    pub fn avg_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms / self.count as f64
        }
    }
}

impl Timing {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.min_us.fetch_min(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    pub fn read(&self) -> TimingReading {
        let count = self.count.load(Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        TimingReading {
            count,
            sum_ms: ms(self.sum_us.load(Relaxed)),
            min_ms: if count == 0 {
                0.0
            } else {
                ms(self.min_us.load(Relaxed))
            },
            max_ms: ms(self.max_us.load(Relaxed)),
        }
    }
}

/// The timings of one member's replication.
#[derive(Debug, Default)]
pub struct ReplicaTimings {
    /// Each fdatasync of the log (one per batch of appended entries).
    pub fsync: Timing,
    /// Each snapshot, from asking the core for it to the file being durable.
    pub snapshot: Timing,
    /// Snapshots received from the leader and installed (a member too far behind its log).
    pub snapshots_installed: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_reports_count_sum_min_max_in_milliseconds() {
        let t = Timing::default();
        assert_eq!(t.read().count, 0);
        assert_eq!(t.read().min_ms, 0.0);
        t.record(Duration::from_micros(1500));
        t.record(Duration::from_micros(500));
        let r = t.read();
        assert_eq!(r.count, 2);
        assert_eq!(r.sum_ms, 2.0);
        assert_eq!(r.min_ms, 0.5);
        assert_eq!(r.max_ms, 1.5);
        assert_eq!(r.avg_ms(), 1.0);
    }
}
