//! Clocks. The monotonic clock is tokio's ([`now`]), which a paused runtime simulates; the wall
//! clock (znode times, the leader's stamp on each entry, seeds for proposal numbers) is a trait,
//! since tokio does not simulate it.

use std::fmt::Debug;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock: real time, or simulated time under a paused tokio runtime.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Milliseconds since the Unix epoch.
pub trait WallClock: Send + Sync + Debug + 'static {
    fn now_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
