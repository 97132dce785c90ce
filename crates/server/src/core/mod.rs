//! The core: the state machine that owns the data tree, the live sessions and the watches.
//!
//! It does no I/O and reads no clock. [`Core::handle`] takes an [`Input`] (a packet, an applied
//! entry, a closed connection, a tick...) with the time it happens at, and leaves [`Effect`]s for
//! the driver (`driver.rs`, a tokio task) to carry out: frames for connections' outboxes,
//! proposals for the replicated log, questions for the leader whose answers come back as
//! inputs. Tests drive it directly, with made-up times and no sockets (`tests.rs`).
//!
//! Connections hand requests here in arrival order, and one state machine answers them all, so
//! per-session FIFO holds by construction, and a watch event is queued on a connection before
//! the reply to any later request that could observe the change that fired it.
//!
//! A write becomes a proposal tagged with this server's id and a sequence number, and goes to
//! the replicated log (`proposals.rs`). Every member applies every committed batch in order
//! (`apply.rs`), giving each proposal the next zxid; the member that proposed it answers its
//! client then. Meanwhile a connection's later reads wait in its queue (`ordering.rs`): they must
//! see its own writes. Its later writes are proposed at once, so a pipelining client fills a
//! batch. Reads are answered from the tree (`reads.rs`); sessions come and go in `sessions.rs`;
//! the serving rule and the touch rounds that keep sessions alive live in `lease.rs`; `status.rs`
//! takes the snapshot that the four-letter words and the admin server render.
//!
//! Time is stamped by the leader into each batch; session expiry is decided by the leader only,
//! from liveness the other members report; applying an entry reads no clock.

mod apply;
pub mod driver;
mod lease;
mod messages;
mod ordering;
mod proposals;
mod reads;
mod reconfig;
mod sasl;
mod sessions;
pub mod status;
#[cfg(test)]
mod tests;

pub use driver::CoreMsg;
pub use messages::{Effect, Incoming, Input, Outgoing, Quorum, SaslStep, SyncRequest};
pub use reconfig::ReconfigCall;

use crate::budget::Global;
use crate::config::ServerConfig;
use crate::read_only::ReadOnly;
use crate::serving::Serving;
use crate::session::SessionIds;
use crate::stats::ServerStats;
use crate::watch::{ConnId, WatchManager};
use apply::{ConnectWait, SyncWait};
use corral_io::hash::{HashMap, HashSet};
use corral_replication::{AppliedMark, Role};
use corral_tree::DataTree;
use ordering::Conn;
use proposals::PendingSet;
use sessions::LiveSession;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a proposal may wait for its entry before its client is told the connection is lost.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest interval between a follower's touch rounds (a quarter tick when shorter).
const TOUCH_EVERY_MAX_MS: u64 = 100;

pub struct Core {
    cfg: Arc<ServerConfig>,
    tree: DataTree,
    mark: AppliedMark,
    watches: WatchManager,
    sessions: HashMap<i64, LiveSession>,
    /// Sessions whose close is proposed but not yet applied.
    closing: HashSet<i64>,
    /// Sessions with traffic here since the last report to the leader.
    active: HashSet<i64>,
    conns: HashMap<ConnId, Conn>,
    ids: SessionIds,
    stats: ServerStats,
    next_reap: Instant,
    quorum: Box<dyn Quorum>,
    role: Role,
    leader: Option<u64>,
    /// The Raft term this member last saw (0 before the first report).
    term: u64,
    /// This member's proposals not yet applied, by sequence number (ordered, so refusals go out
    /// in request order).
    pending: PendingSet,
    /// Connections whose next write waits for room among the proposals in flight.
    waiting_for_log: VecDeque<ConnId>,
    /// When each of `pending` was proposed, oldest first, to time out proposals lost on the way.
    proposed_at: VecDeque<(u64, Instant)>,
    next_seq: u64,
    refusing_writes: bool,
    applied_since_snapshot: u64,
    syncs: Vec<SyncWait>,
    reconnects: Vec<ConnectWait>,
    /// Set by a graceful stop: [`Effect::Drained`] once no proposal of this member is pending.
    draining: bool,
    /// Since when this member has known no leader (for the `election_time` metric).
    leaderless_since: Option<Instant>,
    /// Since when this member has led (for the `leader_uptime` metric).
    leading_since: Option<Instant>,
    /// The zxid and time (seconds since the epoch) of the last snapshot started here.
    last_snapshot: (i64, i64),
    /// Whether this member may serve clients now (see `serving`).
    serving: Serving,
    /// Read-only mode, while this member does not serve (see `read_only`).
    read_only: ReadOnly,
    /// What all connections hold against the limits, and how often the limits were reached.
    limits: Arc<Global>,
    /// A touch round is on its way to the leader.
    touching: bool,
    next_touch: Instant,
    /// How often a follower or observer sends a touch round and checks its sessions.
    touch_every: Duration,
    /// The time of the input being handled.
    now: Instant,
    /// An instant and the wall-clock time it fell at (ms since the epoch), given at start: the
    /// core's wall clock is that plus the inputs' time since.
    epoch: (Instant, i64),
    effects: VecDeque<Effect>,
    /// Reconfigurations the log carried out, waiting to show in `/zookeeper/config`.
    publishing: Vec<reconfig::PublishWait>,
    /// The membership text this member, leading, last proposed for `/zookeeper/config`, and
    /// when.
    config_proposed: Option<(String, Instant)>,
    /// Connections whose connect request waits for an answer from the leader.
    asking: HashSet<ConnId>,
    /// Of those, the ones that closed meanwhile: their answer is dropped.
    abandoned: HashSet<ConnId>,
}

impl Core {
    /// A core for `tree` as recovered up to `mark`, started at `now`, which the wall clock
    /// reads as `epoch_ms`.
    pub fn new(
        cfg: Arc<ServerConfig>,
        tree: DataTree,
        mark: AppliedMark,
        quorum: Box<dyn Quorum>,
        limits: Arc<Global>,
        now: Instant,
        epoch_ms: i64,
    ) -> Self {
        let reap_every = Duration::from_millis(cfg.container_check_interval_ms);
        let sessions = tree
            .sessions()
            .map(|(id, timeout_ms)| (id, LiveSession::new(timeout_ms, now, None)))
            .collect();
        let touch_every =
            Duration::from_millis((cfg.tick_time_ms as u64 / 4).clamp(10, TOUCH_EVERY_MAX_MS));
        let server_id = quorum.id().min(255) as u8;
        let read_only = ReadOnly::new(
            cfg.read_only_mode,
            Duration::from_millis(cfg.tick_time_ms.into()),
            now,
        );
        Core {
            cfg,
            tree,
            mark,
            watches: WatchManager::default(),
            sessions,
            closing: HashSet::default(),
            active: HashSet::default(),
            conns: HashMap::default(),
            ids: SessionIds::new(server_id, epoch_ms),
            stats: ServerStats::new(now),
            next_reap: now + reap_every,
            quorum,
            role: Role::Looking,
            leader: None,
            term: 0,
            pending: PendingSet::default(),
            waiting_for_log: VecDeque::new(),
            proposed_at: VecDeque::new(),
            // Unique across restarts: entries a previous run proposed may still be applied after
            // this one starts, and must not be taken for this run's.
            next_seq: (epoch_ms as u64) << 20,
            refusing_writes: false,
            applied_since_snapshot: 0,
            syncs: Vec::new(),
            reconnects: Vec::new(),
            draining: false,
            leaderless_since: Some(now),
            leading_since: None,
            last_snapshot: (0, epoch_ms / 1000),
            serving: Serving::new(),
            read_only,
            limits,
            touching: false,
            next_touch: now,
            touch_every,
            now,
            epoch: (now, epoch_ms),
            effects: VecDeque::new(),
            publishing: Vec::new(),
            config_proposed: None,
            asking: HashSet::default(),
            abandoned: HashSet::default(),
        }
    }

    /// Acts on one input that happened at `now`; the effects wait in [`Core::poll_effect`].
    pub fn handle(&mut self, input: Input, now: Instant) {
        // Inputs can be handed in late (a busy driver); the core's time never goes back.
        self.now = self.now.max(now);
        // Before anything is answered: a member that wakes from a long pause (SIGSTOP, a
        // stalled VM) past its lease must not answer a single request first.
        self.check_serving();
        match input {
            Input::Connect(incoming) => self.connect(incoming, false),
            Input::ConnectIndex { incoming, index } => self.connect_index(incoming, index),
            Input::Resume { conn } => self.drain(conn),
            Input::Packet {
                conn,
                xid,
                op,
                size,
                request,
                received,
            } => {
                self.limits.taken();
                self.packet(conn, xid, op, size, request, received)
            }
            Input::Closed { conn } => {
                if self.asking.remove(&conn) {
                    self.abandoned.insert(conn);
                }
                self.connection_closed(conn)
            }
            Input::Drain => {
                tracing::info!(
                    pending = self.pending.len(),
                    "stopping: answering the writes in flight"
                );
                self.draining = true;
                self.check_drained();
            }
            Input::Touched { touched, sessions } => self.touched(touched, sessions),
            Input::Revalidated { incoming, touched } => self.revalidated(incoming, touched),
            Input::SyncIndex { sync, index } => self.sync_index(sync, index),
            Input::ResetStats { connections } => self.reset_stats(connections),
            Input::Apply(entries) => {
                for applying in entries {
                    self.apply_entry(applying);
                }
                self.finish_syncs();
                self.finish_reconfigs();
                self.wake_writers();
                self.check_drained();
            }
            Input::Install { tree, mark } => self.install(*tree, mark),
            Input::SnapshotTaken => {
                self.last_snapshot = (self.tree.last_zxid(), self.epoch_ms() / 1000);
            }
            Input::Lost { seqs } => {
                self.lost(seqs);
                self.wake_writers();
            }
            Input::Stopped { why } => self.stop_writes(&why),
            Input::Role { role, leader, term } => {
                self.role_changed(role, leader, term);
                self.serving.forget_lease();
                self.check_serving();
                self.publish_config();
            }
            Input::Membership => {
                self.serving.forget_lease();
                self.check_serving();
                self.publish_config();
            }
            Input::Reconfigured { call, outcome } => self.reconfigured(call, outcome),
            Input::Sasl { step, outcome } => self.sasl_done(step, outcome),
            Input::Tick => {
                self.tick();
                self.publish_config();
                self.finish_reconfigs();
                self.wake_writers();
            }
            Input::Alarm => self.alarm(),
        }
    }

    /// The next thing the driver must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn effect(&mut self, effect: Effect) {
        match &effect {
            Effect::ConnectIndex(inc) | Effect::Revalidate(inc) => {
                self.asking.insert(inc.conn);
            }
            _ => {}
        }
        self.effects.push_back(effect);
    }

    /// An answer about a connection's connect request came back: whether it is still wanted
    /// (the connection did not close meanwhile).
    fn still_asked(&mut self, conn: ConnId) -> bool {
        self.asking.remove(&conn);
        !self.abandoned.remove(&conn)
    }

    /// The tree as applied so far (a snapshot is taken of it).
    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    /// How far the log has been applied.
    pub fn mark(&self) -> &AppliedMark {
        &self.mark
    }

    /// The wall-clock time now, in milliseconds since the epoch.
    fn epoch_ms(&self) -> i64 {
        let (at, ms) = self.epoch;
        ms + self.now.saturating_duration_since(at).as_millis() as i64
    }

    /// The wall-clock time (ms since the epoch) at which `instant` falls.
    fn epoch_ms_of(&self, instant: Instant) -> i64 {
        let (at, ms) = self.epoch;
        if instant >= at {
            ms + (instant - at).as_millis() as i64
        } else {
            ms - (at - instant).as_millis() as i64
        }
    }

    fn reset_stats(&mut self, connections: bool) {
        if connections {
            for c in self.conns.values_mut() {
                c.stats.reset();
            }
        } else {
            self.stats.reset();
        }
    }

    /// This member's mode in ZooKeeper's words, as srvr and the admin commands show it. A member
    /// that serves without knowing a leader (an election is on; its lease holds) serves as a
    /// follower.
    fn mode(&self) -> &'static str {
        match self.role {
            _ if !self.serving.is_serving() && self.read_only.is_active() => "read-only",
            Role::Looking if self.serving.is_serving() => Role::Follower.zk_mode(),
            role => role.zk_mode(),
        }
    }
}
