//! # corral-io
//!
//! Every way Corral's server, replication and storage reach the machine, behind small traits:
//! the [`disk`], the [`net`]work, the wall [`clock`] and the monotonic one, and where blocking
//! work runs. Production uses the real ones ([`Io::real`]); the deterministic simulation
//! (`crates/sim`) swaps in an in-memory disk with a crash model ([`mem_disk::MemDisk`]), a
//! simulated network and simulated time, and runs the same server code on them.
//!
//! The monotonic clock is tokio's: under a runtime whose clock is paused (the simulation's), it
//! is simulated time; anywhere else it is the real one. Code reads it through [`now`], never
//! through `std::time::Instant::now`.

pub mod broken;
pub mod clock;
pub mod disk;
pub mod hash;
pub mod mem_disk;
pub mod net;

pub use clock::{now, WallClock};
pub use disk::{Disk, DiskFile, OpenMode};
pub use net::{BoxStream, Listener, Net, Stream};

use std::fmt;
use std::sync::Arc;

/// The machine a member runs on.
#[derive(Clone)]
pub struct Io {
    pub disk: Arc<dyn Disk>,
    pub net: Arc<dyn Net>,
    pub clock: Arc<dyn WallClock>,
    /// Whether blocking work (fsync, snapshot files) runs inline on the calling task rather than
    /// on tokio's blocking threads: a simulation must not let real threads decide the order of
    /// events, and its disk is memory anyway.
    pub inline_blocking: bool,
    /// Whether a snapshot may be written by a forked child process (the real server's way of
    /// not pausing). A simulated disk lives in this process's memory, so a child's writes would
    /// be lost; the tree is copied instead.
    pub fork_snapshots: bool,
}

impl Io {
    /// The real disk, network and clocks.
    pub fn real() -> Io {
        Io {
            disk: Arc::new(disk::RealDisk),
            net: Arc::new(net::RealNet),
            clock: Arc::new(clock::SystemClock),
            inline_blocking: false,
            fork_snapshots: true,
        }
    }

    /// Runs blocking work: on tokio's blocking pool, or inline in a simulation.
    pub async fn blocking<T, F>(&self, work: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.inline_blocking {
            work()
        } else {
            tokio::task::spawn_blocking(work)
                .await
                .expect("blocking work panicked")
        }
    }
}

impl Default for Io {
    fn default() -> Self {
        Io::real()
    }
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("disk", &self.disk)
            .field("net", &self.net)
            .field("inline_blocking", &self.inline_blocking)
            .finish()
    }
}
