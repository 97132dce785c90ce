//! # corral-replication
//!
//! Corral's replicated, durable log. Every write of every member, standalone or in an ensemble,
//! goes through it: proposals are batched by the leader into Raft entries (openraft, pinned),
//! stored in Corral's segmented log, and handed in order to the core, which applies them to its
//! tree. Nothing outside this crate names openraft: the server sees [`ReplicaHandle`] (propose,
//! read index, touch), [`ToCore`] (what it must do) and [`Role`].

// openraft's traits fix their error type (`StorageError`, over 200 bytes); results carrying it
// are openraft's shape, not a choice made here.
#![allow(clippy::result_large_err)]

mod leader_stats;
mod lease;
mod log_store;
mod membership;
mod network;
mod node;
mod reconfig;
mod runtime;
mod state_machine;
mod timings;
mod types;

pub use leader_stats::{LeaderCounters, LeaderView, MemberProgress, Progress};
pub use lease::{LeaseTimes, CLOCK_DRIFT_PERCENT};
pub use membership::{Member, Membership};
pub use network::TouchAnswer;
pub use node::{
    handle, recover, start, ReplicaConfig, ReplicaHandle, ReplicationError, Role, Storage, Touched,
};
pub use reconfig::ReconfigRefused;
pub use runtime::seed_elections;
pub use state_machine::{
    seed_data_dir, AppliedMark, Applying, LogStopped, SeedError, SnapshotError, SnapshotStarted,
    SnapshotTaker, ToCore,
};
pub use timings::{ReplicaTimings, Timing, TimingReading};
pub use types::{CorralNode, NodeId};
