//! One member of the replicated log: start-up, the proposer, the role watcher and the peer server.
//!
//! Every write reaches the log through the proposer of the member the client is connected to.
//! On the leader the proposer batches whatever has queued (its own clients' proposals and those
//! forwarded by other members) into one Raft entry stamped with the leader's clock, and writes it
//! with one `client_write`; while that is in flight the next batch gathers. On any other member
//! the proposer forwards its queue to the leader. A proposal that cannot be placed (no leader for
//! a while) is dropped and its proposer's core told, so its client loses the connection. One that
//! may have been taken is left to the core, which proposes it again, stamped with a newer term,
//! once that term's first entry shows the old one lost it.

use crate::lease::{Lease, LeaseTimes};
use crate::log_store::LogStore;
use crate::membership::{Member, Membership, SharedMembership};
use crate::network::{
    read_frame, write_frame, CallError, NetFactory, PeerClient, PeerRequest, PeerResponse,
    TouchAnswer, TouchRound,
};
use crate::reconfig::ReconfigRefused;
use crate::state_machine::{mark_of, AppliedMark, StateMachine, ToCore};
use crate::types::{decode, encode, CorralNode, NodeId, Payload, Raft};
use corral_io::hash::HashMap;
use corral_io::{BoxStream, Io, Listener};
use corral_storage::snapshot::SnapshotStore;
use corral_tree::{Batch, DataTree, TreeConfig};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::{Config, ServerState, SnapshotMeta, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Most bytes of proposals in one log entry.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Entries per AppendEntries: with `MAX_BATCH_BYTES` a peer frame stays under 64 MiB.
const MAX_PAYLOAD_ENTRIES: u64 = 32;
/// How long a proposal waits for a leader before it is dropped.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a touch round waits for the leader's answer; a late grant would vouch for little.
const TOUCH_TIMEOUT: Duration = Duration::from_millis(500);
/// Heartbeat rounds a leader tries before it gives up confirming its read index.
const READ_INDEX_ROUNDS: usize = 3;
/// How long a member waits for a reconfiguration it forwarded to the leader (the leader's own
/// wait for new members to catch up is bounded by initLimit × tickTime before it).
const RECONFIG_WAIT: Duration = Duration::from_secs(60);
/// How long a member about to initialize a new ensemble waits for each peer to say whether its
/// log has a membership.
const INITIALIZED_WAIT: Duration = Duration::from_millis(500);
/// How many times, and how long each, a member looks whether its leader's peer port is gone.
const PROBES: usize = 5;
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the successor waits after a dead leader is found before it asks for votes, so the
/// other members have given up their vote lease too.
const SUCCESSOR_DELAY: Duration = Duration::from_millis(15);

#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: NodeId,
    pub members: BTreeMap<NodeId, Member>,
    /// A standalone server: a one-member ensemble with no peers, which cannot be reconfigured
    /// (ZooKeeper's standalone mode). An ensemble of one configured member is not standalone
    /// with `standaloneEnabled=false`.
    pub standalone: bool,
    pub data_dir: PathBuf,
    pub tree: TreeConfig,
    pub segment_bytes: u64,
    pub snapshot_retain: usize,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    /// Also openraft's leader lease: a voter that accepted a leader refuses other candidates
    /// for this long.
    pub election_timeout_max_ms: u64,
    /// How long quorum contact lets this member serve (see [`crate::lease`]).
    pub lease: LeaseTimes,
    /// How long a lagging member may take to receive a snapshot (initLimit × tickTime).
    pub install_snapshot_timeout_ms: u64,
    /// The disk, network and clocks (the real ones but in the simulation).
    pub io: Io,
}

impl ReplicaConfig {
    fn voters(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| !m.observer)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// What a member is, in ZooKeeper's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Leader,
    Follower,
    Observer,
    /// Electing, or not yet part of the cluster.
    Looking,
}

impl Role {
    pub fn zk_mode(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Observer => "observer",
            Role::Looking => "looking",
        }
    }

    /// Whether this member decides session expiry and may batch writes.
    pub fn leads(self) -> bool {
        matches!(self, Role::Standalone | Role::Leader)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{0}")]
    Storage(#[from] corral_storage::StorageError),
    #[error(
        "the newest usable snapshot covers the log through index {snapshot} but the log starts at \
         {log_first}: entries between are lost; refusing to start"
    )]
    Gap { snapshot: u64, log_first: u64 },
    #[error(
        "no usable snapshot (damaged: {damaged}) and the log does not reach back to its first \
         entry; refusing to serve an incomplete tree"
    )]
    NoValidSnapshot { damaged: String },
    #[error("raft: {0}")]
    Raft(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// The opened log and snapshot store, for [`start`].
pub struct Storage {
    log: LogStore,
    snapshots: Arc<SnapshotStore>,
    /// The snapshot recovery loaded, for openraft's first `get_current_snapshot` at start-up,
    /// which would otherwise read and check the whole file a second time.
    loaded: Option<crate::state_machine::LoadedSnapshot>,
}

/// Opens the log and loads the newest valid snapshot (blocking I/O): the tree, the log position
/// it reflects, and the storage. Entries after the snapshot are re-applied by Raft once it runs.
pub fn recover(cfg: &ReplicaConfig) -> Result<(DataTree, AppliedMark, Storage), ReplicationError> {
    let snapshots = SnapshotStore::open_on(
        cfg.io.disk.clone(),
        &cfg.data_dir.join("snapshots"),
        cfg.snapshot_retain,
    )?;
    // Scanning the log (every record's checksum) and decoding the snapshot are independent:
    // side by side, a restart takes the longer of the two rather than their sum.
    let (log, newest) = std::thread::scope(|scope| {
        let log =
            scope.spawn(|| LogStore::open(&cfg.io, &cfg.data_dir.join("raft"), cfg.segment_bytes));
        let newest = newest_usable_snapshot(&snapshots);
        (log.join().expect("the log scan panicked"), newest)
    });
    let log = log?;
    let (newest, damaged) = newest?;
    let mut loaded = None;
    let (tree, mark) = match newest {
        Some((meta, bytes, mut tree)) => {
            // Settings come from this member's configuration, not from the snapshot.
            tree.set_config(cfg.tree);
            tracing::info!(
                index = meta.last_log_id.map_or(0, |l| l.index),
                nodes = tree.node_count(),
                "loaded snapshot"
            );
            let mark = mark_of(&meta);
            loaded = Some((meta, bytes));
            (tree, mark)
        }
        None => {
            // Without a snapshot the tree can only be rebuilt from a log that still holds
            // every entry. Once anything was purged, an empty tree would silently lose it.
            let purged = log.purged_index().unwrap_or(0);
            if purged > 0 || log.first_index().is_some_and(|f| f > 1) {
                let damaged = if damaged.is_empty() {
                    "none found in snapshots/".to_owned()
                } else {
                    damaged.join("; ")
                };
                return Err(ReplicationError::NoValidSnapshot { damaged });
            }
            (DataTree::new(cfg.tree), AppliedMark::default())
        }
    };
    if let Some(first) = log.first_index() {
        if first > mark.index() + 1 {
            return Err(ReplicationError::Gap {
                snapshot: mark.index(),
                log_first: first,
            });
        }
    }
    let storage = Storage {
        log,
        snapshots: Arc::new(snapshots),
        loaded,
    };
    Ok((tree, mark, storage))
}

/// A snapshot's meta, its bytes and the tree they decode to.
type UsableSnapshot = (SnapshotMeta<NodeId, CorralNode>, Vec<u8>, DataTree);

/// The newest snapshot that passes its checksum *and* decodes, newest first: one that fails
/// either is reported and the next older one is tried.
fn newest_usable_snapshot(
    store: &SnapshotStore,
) -> Result<(Option<UsableSnapshot>, Vec<String>), ReplicationError> {
    let mut damaged = Vec::new();
    for id in store.list()? {
        let loaded = match store.load(id) {
            Ok(s) => s,
            Err(e @ corral_storage::StorageError::Corrupt { .. }) => {
                tracing::warn!(error = %e, "skipping a damaged snapshot");
                damaged.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let path = loaded.path.clone();
        let decoded = crate::state_machine::with_meta(loaded).and_then(|(meta, bytes)| {
            DataTree::decode_snapshot(&bytes)
                .map(|tree| (meta, bytes, tree))
                .map_err(|source| crate::SnapshotError::Tree { path, source })
        });
        match decoded {
            Ok(found) => return Ok((Some(found), damaged)),
            Err(why) => {
                tracing::warn!(error = %why, "skipping a snapshot that does not decode");
                damaged.push(why.to_string());
            }
        }
    }
    Ok((None, damaged))
}

/// What the core holds to reach the replicated log; cheap to clone.
#[derive(Clone)]
pub struct ReplicaHandle {
    id: NodeId,
    outbox: mpsc::UnboundedSender<bytes::Bytes>,
    raft: Arc<OnceLock<Raft>>,
    /// The membership, from the replicated log once it has one.
    membership: SharedMembership,
    /// Peer addresses from this member's own configuration: they win over the replicated ones
    /// (as in ZooKeeper, a member dials its peers where its configuration says).
    local_addrs: Arc<BTreeMap<NodeId, String>>,
    /// Taken while this member, leading, carries out a reconfiguration: one at a time.
    reconfiguring: Arc<tokio::sync::Mutex<()>>,
    /// How long a reconfiguration waits for new members to catch up (initLimit × tickTime).
    catch_up: Duration,
    /// Configured without `server.N` lines: a one-member ensemble that cannot be reconfigured.
    standalone: bool,
    timings: Arc<crate::ReplicaTimings>,
    leader_counters: Arc<crate::LeaderCounters>,
    lease: Arc<Lease>,
    /// The connection to the leader the periodic touch rounds use, kept open between rounds
    /// and used by nothing else, so a slow `sync` never delays a round (and the lease).
    touch_link: Arc<tokio::sync::Mutex<Option<(NodeId, PeerClient)>>>,
    /// The newest term whose leader was found gone (an election already started for it).
    leader_gone_in: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the leader's refusal of this member (removed from the ensemble) was logged.
    told_removed: Arc<std::sync::atomic::AtomicBool>,
    io: Io,
}

/// A touch round's outcome, for the core.
#[derive(Debug)]
pub struct Touched {
    /// When the round was sent: what a grant vouches for.
    pub sent_at: Instant,
    /// `None` when no leader answered.
    pub answer: Option<TouchAnswer>,
}

impl ReplicaHandle {
    /// How long fsyncs and snapshots take on this member.
    pub fn timings(&self) -> &crate::ReplicaTimings {
        &self.timings
    }

    /// The same timings, to keep beyond this handle.
    pub fn timings_shared(&self) -> Arc<crate::ReplicaTimings> {
        self.timings.clone()
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Pending syncs and proposal sizes, as this member counted them while it led.
    pub fn leader_counters(&self) -> &crate::LeaderCounters {
        &self.leader_counters
    }

    /// While this member leads: the members replicating from it and which have caught up with
    /// its term. `None` on any other member.
    pub fn leader_view(&self) -> Option<crate::LeaderView> {
        let raft = self.raft.get()?;
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if m.current_leader != Some(self.id) {
            return None;
        }
        let mut view = crate::LeaderView::default();
        let members = self.membership.get();
        for (id, matched) in m.replication.as_ref()?.iter() {
            if *id == self.id {
                continue;
            }
            view.learners += 1;
            let synced = matched.is_some_and(|l| l.leader_id.term == m.current_term);
            let observer = members.members.get(id).is_some_and(|mm| mm.observer);
            match (synced, observer) {
                (true, false) => view.synced_followers += 1,
                (true, true) => view.synced_observers += 1,
                _ => {}
            }
        }
        Some(view)
    }

    /// While this member leads: each member's acknowledged log index and last contact, beside
    /// the leader's own last index. `None` on any other member.
    pub fn progress(&self, now: Instant) -> Option<crate::Progress> {
        let raft = self.raft.get()?;
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if m.current_leader != Some(self.id) {
            return None;
        }
        let acks = self.lease.acks();
        let members = m
            .replication
            .as_ref()?
            .iter()
            .map(|(id, matched)| crate::MemberProgress {
                id: *id,
                matched: matched.map(|l| l.index),
                last_contact: acks.get(id).map(|t| now.saturating_duration_since(*t)),
            })
            .collect();
        Some(crate::Progress {
            last_index: m.last_log_index.unwrap_or(0),
            members,
        })
    }

    /// Queues an encoded proposal (`Proposal::to_framed_bytes`); refused once replication has
    /// stopped.
    pub fn propose(&self, framed: bytes::Bytes) -> Result<(), crate::LogStopped> {
        self.outbox
            .send(framed)
            .map_err(|_| crate::LogStopped::ShutDown)
    }

    /// The term to stamp a proposal with: the current term (at least 1). A deposed leader still
    /// believes it leads, so what it decided stays bound to its term. (0, "any term", is never
    /// stamped any more; entries logged so by earlier versions still apply as before.)
    pub fn term(&self) -> u64 {
        self.raft
            .get()
            .map_or(0, |r| r.metrics().borrow().current_term)
            .max(1)
    }

    fn leader(&self) -> Option<NodeId> {
        self.raft
            .get()
            .and_then(|r| r.metrics().borrow().current_leader)
    }

    /// The log index a `sync` must wait for: the leader's read index.
    pub async fn read_index(&self) -> Option<u64> {
        let raft = self.raft.get()?;
        let leader = self.leader()?;
        if leader == self.id {
            let _pending = self.leader_counters.sync_started();
            return leader_read_index(raft).await;
        }
        let addr = self.dial_addr(leader)?;
        match PeerClient::new(self.io.net.clone(), &addr)
            .call(&PeerRequest::ReadIndex, Duration::from_secs(5))
            .await
        {
            Ok(PeerResponse::ReadIndex(i)) => i,
            _ => None,
        }
    }

    /// Sends this member's periodic touch round to the leader: the sessions heard from, with
    /// how long ago (ms). A granted round renews this member's lease.
    pub async fn touch(&self, sessions: Vec<(i64, u32)>) -> Touched {
        let mut link = self.touch_link.lock().await;
        // What a grant vouches for starts now, not while the round waited for the link.
        let sent_at = corral_io::now();
        let round = PeerRequest::Touch(TouchRound {
            from: self.id,
            sessions,
        });
        let answer = match self.leader().filter(|l| *l != self.id) {
            Some(leader) => {
                if link.as_ref().is_none_or(|(to, _)| *to != leader) {
                    let addr = self.dial_addr(leader);
                    *link = addr.map(|a| (leader, PeerClient::new(self.io.net.clone(), &a)));
                }
                match link.as_mut() {
                    Some((_, client)) => match client.call(&round, TOUCH_TIMEOUT).await {
                        Ok(PeerResponse::Touched(answer)) => Some(answer),
                        _ => None,
                    },
                    None => None,
                }
            }
            None => None,
        };
        if answer.as_ref().is_some_and(|a| a.granted) {
            self.lease.granted(sent_at);
        }
        let removed = answer.as_ref().is_some_and(|a| a.removed);
        if removed
            && !self
                .told_removed
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "the leader no longer counts this member in the ensemble (a reconfiguration \
                 removed it): it stops serving clients when its lease runs out"
            );
        }
        Touched { sent_at, answer }
    }

    /// Asks the leader whether `session` is alive, and to keep it so for its timeout from now:
    /// a reconnect's revalidation (on its own connection, beside the periodic rounds).
    pub async fn revalidate(&self, session: i64) -> Touched {
        let sent_at = corral_io::now();
        let round = PeerRequest::Touch(TouchRound {
            from: self.id,
            sessions: vec![(session, 0)],
        });
        let addr = self
            .leader()
            .filter(|l| *l != self.id)
            .and_then(|l| self.dial_addr(l));
        let answer = match addr {
            Some(addr) => match PeerClient::new(self.io.net.clone(), &addr)
                .call(&round, TOUCH_TIMEOUT)
                .await
            {
                Ok(PeerResponse::Touched(answer)) => Some(answer),
                _ => None,
            },
            None => None,
        };
        Touched { sent_at, answer }
    }

    /// Until when this member may serve clients, on the quorum contact it has had.
    pub fn serving_until(&self, now: Instant) -> Option<Instant> {
        self.lease.serving_until(now)
    }

    /// While leading: the latest instant a quorum of voters acknowledged this member.
    pub fn quorum_acked(&self, now: Instant) -> Option<Instant> {
        self.lease.quorum_acked(now)
    }

    pub fn lease_times(&self) -> LeaseTimes {
        self.lease.times()
    }

    /// Asks Raft to snapshot now (the core counts applied writes against `snapCount`).
    pub fn trigger_snapshot(&self) {
        if let Some(raft) = self.raft.get() {
            let raft = raft.clone();
            tokio::spawn(async move {
                let _ = raft.trigger().snapshot().await;
            });
        }
    }

    /// Stops Raft (a graceful server stop).
    pub async fn shutdown(&self) {
        if let Some(raft) = self.raft.get() {
            let _ = raft.shutdown().await;
        }
    }

    /// The membership: the replicated one, or this member's configuration before the log has
    /// one.
    pub fn membership(&self) -> Arc<Membership> {
        self.membership.get()
    }

    /// Whether this member, leading, is carrying out a reconfiguration: the membership it shows
    /// meanwhile (learners added, a joint step) is not one to publish.
    pub fn reconfiguring(&self) -> bool {
        self.reconfiguring.try_lock().is_err()
    }

    /// Whether this server was configured as a standalone server (no `server.N` lines).
    pub fn standalone(&self) -> bool {
        self.standalone
    }

    /// Where to reach member `id`'s peer port.
    fn dial_addr(&self, id: NodeId) -> Option<String> {
        match self.local_addrs.get(&id) {
            Some(addr) => Some(addr.clone()),
            None => self
                .membership
                .get()
                .members
                .get(&id)
                .map(|m| m.raft_addr.clone()),
        }
    }

    /// Moves the ensemble from the membership `base` (what the request was worked out from) to
    /// `target` (see `reconfig.rs`): on the leader, or forwarded to it. Tried again only while
    /// nothing was done (no leader yet, or the one asked no longer leads); a leader lost on the
    /// way is `NoLeader`, an unknown outcome.
    pub async fn reconfigure(
        &self,
        base: BTreeMap<NodeId, Member>,
        target: BTreeMap<NodeId, Member>,
    ) -> Result<(), ReconfigRefused> {
        let raft = self.raft.get().ok_or(ReconfigRefused::NoLeader)?;
        let deadline = corral_io::now() + RECONFIG_WAIT;
        loop {
            let outcome = match self.leader() {
                Some(l) if l == self.id => self.lead_reconfig(raft, &base, &target).await,
                Some(l) => self.forward_reconfig(l, &base, &target).await,
                None => Err(ReconfigRefused::NotLeader),
            };
            match outcome {
                Err(ReconfigRefused::NotLeader) if corral_io::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(ReconfigRefused::NotLeader) => return Err(ReconfigRefused::NoLeader),
                outcome => return outcome,
            }
        }
    }

    async fn lead_reconfig(
        &self,
        raft: &Raft,
        base: &BTreeMap<NodeId, Member>,
        target: &BTreeMap<NodeId, Member>,
    ) -> Result<(), ReconfigRefused> {
        let Ok(_one_at_a_time) = self.reconfiguring.try_lock() else {
            return Err(ReconfigRefused::InProgress);
        };
        tracing::info!(?target, "reconfiguring the ensemble");
        let outcome = crate::reconfig::lead(raft, base, target, self.catch_up).await;
        match &outcome {
            Ok(()) => tracing::info!("reconfiguration committed"),
            Err(e) => tracing::warn!(error = %e, "reconfiguration not carried out"),
        }
        outcome
    }

    async fn forward_reconfig(
        &self,
        leader: NodeId,
        base: &BTreeMap<NodeId, Member>,
        target: &BTreeMap<NodeId, Member>,
    ) -> Result<(), ReconfigRefused> {
        let Some(addr) = self.dial_addr(leader) else {
            return Err(ReconfigRefused::NotLeader);
        };
        let wire = |m: &BTreeMap<NodeId, Member>| {
            m.iter()
                .map(|(id, m)| (*id, m.to_node(), m.observer))
                .collect()
        };
        let req = PeerRequest::Reconfig {
            base: wire(base),
            target: wire(target),
        };
        match PeerClient::new(self.io.net.clone(), &addr)
            .call(&req, RECONFIG_WAIT)
            .await
        {
            Ok(PeerResponse::Reconfigured(outcome)) => outcome,
            // Never sent: nothing was done.
            Err(CallError::Unreachable(_)) => Err(ReconfigRefused::NotLeader),
            // Sent, with no answer: the leader may be carrying it out.
            _ => Err(ReconfigRefused::NoLeader),
        }
    }
}

/// Creates the handle the core needs before Raft starts (Raft asks the core for its state).
pub fn handle(cfg: &ReplicaConfig) -> (ReplicaHandle, mpsc::UnboundedReceiver<bytes::Bytes>) {
    let (outbox, proposals) = mpsc::unbounded_channel();
    let handle = ReplicaHandle {
        id: cfg.id,
        outbox,
        raft: Arc::new(OnceLock::new()),
        membership: SharedMembership::new(Membership {
            members: cfg.members.clone(),
            joint: false,
            replicated: false,
        }),
        local_addrs: Arc::new(
            cfg.members
                .iter()
                .map(|(id, m)| (*id, m.raft_addr.clone()))
                .collect(),
        ),
        reconfiguring: Default::default(),
        catch_up: Duration::from_millis(cfg.install_snapshot_timeout_ms),
        standalone: cfg.standalone,
        timings: Default::default(),
        leader_counters: Default::default(),
        lease: Arc::new(Lease::new(cfg.id, cfg.voters(), cfg.lease)),
        touch_link: Default::default(),
        leader_gone_in: Default::default(),
        told_removed: Default::default(),
        io: cfg.io.clone(),
    };
    (handle, proposals)
}

/// Starts Raft on recovered storage, with the core already running behind `core`.
pub async fn start(
    cfg: ReplicaConfig,
    mut recovered: Storage,
    handle: ReplicaHandle,
    proposals: mpsc::UnboundedReceiver<bytes::Bytes>,
    core: mpsc::Sender<ToCore>,
) -> Result<(), ReplicationError> {
    let raft_config = Config {
        cluster_name: "corral".into(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        install_snapshot_timeout: cfg.install_snapshot_timeout_ms,
        // The core decides when to snapshot (every snapCount writes) and what log to keep.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        purge_batch_size: 1,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ReplicationError::Raft(Box::new(e)))?;
    let me = cfg.members.get(&cfg.id).cloned();
    let peer_listener = match &me {
        Some(m) if !cfg.standalone => Some(cfg.io.net.bind(&m.raft_addr).await.map_err(
            |source| ReplicationError::Bind {
                addr: m.raft_addr.clone(),
                source,
            },
        )?),
        _ => None,
    };
    // A member that restarts (its disk held a log or a snapshot) replays; a new one does not.
    let restarted = recovered.loaded.is_some() || recovered.log.first_index().is_some();
    let sm = StateMachine {
        core: core.clone(),
        snapshots: recovered.snapshots.clone(),
        loaded: recovered.loaded.take(),
        raft: handle.raft.clone(),
        timings: handle.timings.clone(),
        io: cfg.io.clone(),
        applied_writes: !restarted,
    };
    let network = NetFactory {
        net: cfg.io.net.clone(),
        addrs: handle.local_addrs.clone(),
        lease: handle.lease.clone(),
    };
    recovered.log.timings = handle.timings.clone();
    let raft = Raft::new(cfg.id, Arc::new(raft_config), network, recovered.log, sm)
        .await
        .map_err(|e| ReplicationError::Raft(Box::new(e)))?;
    let _ = handle.raft.set(raft.clone());
    let is_observer = me.as_ref().is_some_and(|m| m.observer);
    if !is_observer
        && !raft
            .is_initialized()
            .await
            .map_err(|e| ReplicationError::Raft(Box::new(e)))?
    {
        let voters: BTreeMap<NodeId, CorralNode> = cfg
            .members
            .iter()
            .filter(|(_, m)| !m.observer)
            .map(|(id, m)| (*id, m.to_node()))
            .collect();
        // A new ensemble is initialized by its lowest voter at once; each other voter waits its
        // turn and initializes only if no leader has reached it by then (the lower ones may be
        // down). Initializing together makes each vote for itself in term 1: a member that
        // does so after a leader of term 1 exists deposes it, and nobody leads until the vote
        // leases run out.
        //
        // Before it initializes, a member asks its peers whether their logs have a membership: a
        // member started to join an existing ensemble (its configuration names the ensemble and
        // itself, as ZooKeeper's documentation has it) must wait for a reconfiguration to add it,
        // not found an ensemble of its own.
        let rank = voters.keys().position(|id| *id == cfg.id).unwrap_or(0) as u32;
        let wait = Duration::from_millis(2 * cfg.election_timeout_max_ms) * rank;
        let raft = raft.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            loop {
                if raft.is_initialized().await.unwrap_or(true) {
                    return;
                }
                match peers_initialized(&handle, &voters).await {
                    Peers::Initialized(peer) => {
                        tracing::info!(
                            peer,
                            "an ensemble exists: waiting for a reconfiguration to add this member"
                        );
                        return;
                    }
                    Peers::Fresh(fresh) if fresh + 1 > voters.len() / 2 => {
                        if rank > 0 {
                            tracing::info!(
                                "no leader reached this member: initializing the ensemble"
                            );
                        }
                        if let Err(e) = initialize(&raft, voters).await {
                            tracing::warn!(error = %e, "cannot initialize the ensemble");
                        }
                        return;
                    }
                    // Too few peers answered to know: ask again.
                    Peers::Fresh(_) => tokio::time::sleep(INITIALIZED_WAIT).await,
                }
            }
        });
    }

    if let Some(listener) = peer_listener {
        tokio::spawn(serve_peers(
            listener,
            raft.clone(),
            handle.clone(),
            core.clone(),
        ));
    }
    tokio::spawn(proposer(
        raft.clone(),
        handle.clone(),
        proposals,
        core.clone(),
    ));
    tokio::spawn(watch_role(raft, handle, core));
    Ok(())
}

/// Makes `voters` the membership of a new ensemble (a no-op where one already is).
async fn initialize(
    raft: &Raft,
    voters: BTreeMap<NodeId, CorralNode>,
) -> Result<(), ReplicationError> {
    match raft.initialize(voters).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(ReplicationError::Raft(Box::new(e))),
    }
}

/// What the configured voters said when asked whether their logs have a membership.
enum Peers {
    /// This one's has: an ensemble exists.
    Initialized(NodeId),
    /// This many answered that theirs has none (the others did not answer).
    Fresh(usize),
}

/// Asks the other configured voters whether their logs have a membership. A new ensemble is
/// initialized only once a majority (this member included) says none has: a member that cannot
/// reach its peers must not found an ensemble of its own.
async fn peers_initialized(handle: &ReplicaHandle, voters: &BTreeMap<NodeId, CorralNode>) -> Peers {
    let mut fresh = 0;
    for id in voters.keys().filter(|id| **id != handle.id) {
        let Some(addr) = handle.dial_addr(*id) else {
            continue;
        };
        let answer = PeerClient::new(handle.io.net.clone(), &addr)
            .call(&PeerRequest::Initialized, INITIALIZED_WAIT)
            .await;
        match answer {
            Ok(PeerResponse::Initialized(true)) => return Peers::Initialized(*id),
            Ok(PeerResponse::Initialized(false)) => fresh += 1,
            _ => {}
        }
    }
    Peers::Fresh(fresh)
}

async fn proposer(
    raft: Raft,
    handle: ReplicaHandle,
    mut rx: mpsc::UnboundedReceiver<bytes::Bytes>,
    core: mpsc::Sender<ToCore>,
) {
    let mut peers: HashMap<NodeId, PeerClient> = HashMap::default();
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let mut bytes = items[0].len();
        while bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.len();
                    items.push(p);
                }
                Err(_) => break,
            }
        }
        let deadline = corral_io::now() + LEADER_WAIT;
        loop {
            let leader = raft.metrics().borrow().current_leader;
            let attempt = match leader {
                Some(l) if l == handle.id => {
                    let payload = Payload(Batch::encode_framed(handle.io.clock.now_ms(), &items));
                    handle.leader_counters.proposed(payload.0.len());
                    // Bounded: a leader cut off from its quorum keeps its entry uncommitted,
                    // and openraft may never answer it once another leader truncates it; the
                    // proposer must go on (found by the simulation: a member that had led
                    // before a partition took no write again once it healed).
                    let wait =
                        if corral_io::broken::is(corral_io::broken::Broken::UnboundedLogWrite) {
                            Duration::MAX
                        } else {
                            LEADER_WAIT
                        };
                    match tokio::time::timeout(wait, raft.client_write(payload)).await {
                        Ok(Ok(_)) => Placement::Placed,
                        // The entry may have been appended and may still commit under the next
                        // leader: proposing it again could apply it twice.
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                            Placement::Unknown
                        }
                        Err(_) => {
                            tracing::warn!(
                                proposals = items.len(),
                                wait = ?LEADER_WAIT,
                                "a log write went unanswered; going on without its outcome"
                            );
                            Placement::Unknown
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "the replicated log stopped");
                            let why = crate::LogStopped::WriteFailed(e.to_string());
                            let _ = core.send(ToCore::Stopped { why }).await;
                            return;
                        }
                    }
                }
                Some(l) => match handle.dial_addr(l) {
                    Some(addr) => {
                        let client = peers
                            .entry(l)
                            .or_insert_with(|| PeerClient::new(handle.io.net.clone(), &addr));
                        let req = PeerRequest::Propose(items.iter().map(|b| b.to_vec()).collect());
                        match client.call(&req, Duration::from_secs(2)).await {
                            Ok(PeerResponse::Proposed(true)) => Placement::Placed,
                            // Refused outright, or never reached: nothing was taken; try again.
                            Ok(_) | Err(CallError::Unreachable(_)) => Placement::Retry,
                            // Sent, but no answer: the leader may have taken them.
                            Err(CallError::Network(_)) => Placement::Unknown,
                        }
                    }
                    None => Placement::Retry,
                },
                None => Placement::Retry,
            };
            match attempt {
                // Taken, or perhaps taken: once an entry of a newer term is applied, the core
                // proposes again whatever the old term lost.
                Placement::Placed | Placement::Unknown => break,
                Placement::Retry if corral_io::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Placement::Retry => {
                    tracing::warn!(
                        proposals = items.len(),
                        "no leader took these writes; their clients lose the connection"
                    );
                    let seqs = items
                        .iter()
                        .filter_map(|f| corral_tree::ProposalHeader::decode(f).ok())
                        .filter(|h| h.origin_server == handle.id)
                        .map(|h| h.origin_seq)
                        .collect();
                    let _ = core.send(ToCore::Lost { seqs }).await;
                    break;
                }
            }
        }
    }
}

/// Where a batch of proposals ended up.
enum Placement {
    Placed,
    /// Nothing was taken; it may be tried again.
    Retry,
    /// It may or may not commit; it must not be proposed again here (its proposer's core does,
    /// stamped anew, once a newer term shows it lost).
    Unknown,
}

/// Reports role, leader and membership changes to the core, and keeps the handle's membership and
/// the lease's voters up to date.
async fn watch_role(raft: Raft, handle: ReplicaHandle, core: mpsc::Sender<ToCore>) {
    let configured = handle.membership.get().members.clone();
    let mut metrics = raft.metrics();
    let mut last = None;
    let mut last_membership = None;
    loop {
        let (state, leader, fatal, member, term) = {
            let m = metrics.borrow();
            let stored = &m.membership_config;
            let membership = stored.membership();
            let member = membership.get_node(&m.id).is_some();
            let fatal =
                matches!(&m.running_state, Err(f) if !matches!(f, openraft::error::Fatal::Stopped));
            // Before its first membership the log has none; the configuration stands in.
            if stored.log_id().is_some() && last_membership != Some(*stored.log_id()) {
                last_membership = Some(*stored.log_id());
                membership_changed(&handle, membership, m.id);
            }
            (m.state, m.current_leader, fatal, member, m.current_term)
        };
        if fatal {
            tracing::error!(
                "the replicated log stopped after a storage failure; writes are refused"
            );
            let why = crate::LogStopped::StorageFailed;
            let _ = core.send(ToCore::Stopped { why }).await;
            return;
        }
        let role = match state {
            ServerState::Leader if handle.standalone => Role::Standalone,
            ServerState::Leader => Role::Leader,
            ServerState::Follower if member => Role::Follower,
            // An uninitialised node is a learner too; it observes once the leader added it.
            ServerState::Learner if member => Role::Observer,
            _ => Role::Looking,
        };
        let membership = last_membership;
        if last != Some((role, leader, term, membership)) {
            let role_changed = last.is_none_or(|(r, l, t, _)| (r, l, t) != (role, leader, term));
            last = Some((role, leader, term, membership));
            let msg = if role_changed {
                ToCore::Role { role, leader, term }
            } else {
                ToCore::Membership
            };
            if core.send(msg).await.is_err() {
                return;
            }
            if role_changed && role == Role::Leader {
                tokio::spawn(crate::reconfig::finish_joint(raft.clone()));
                tokio::spawn(crate::reconfig::add_configured_observers(
                    raft.clone(),
                    configured.clone(),
                ));
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A new membership was appended to this member's log: the handle, and the voters the lease
/// counts, follow it.
fn membership_changed(
    handle: &ReplicaHandle,
    membership: &openraft::Membership<NodeId, CorralNode>,
    me: NodeId,
) {
    let known = Membership::of_log(membership);
    let was_member = handle.membership.get().members.contains_key(&me);
    if !known.members.contains_key(&me) && was_member {
        tracing::warn!(
            "this member is not in the ensemble's membership any more (a reconfiguration \
             removed it): it serves no clients and takes no part in the quorum"
        );
    }
    let configs = membership
        .get_joint_config()
        .iter()
        .map(|c| c.iter().copied().collect())
        .collect();
    handle.lease.set_voters(configs);
    handle.lease.set_member(known.members.contains_key(&me));
    handle.membership.set(known);
}

async fn serve_peers(
    mut listener: Box<dyn Listener>,
    raft: Raft,
    handle: ReplicaHandle,
    core: mpsc::Sender<ToCore>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(serve_peer(
            stream,
            raft.clone(),
            handle.clone(),
            core.clone(),
        ));
    }
}

async fn serve_peer(
    mut s: BoxStream,
    raft: Raft,
    handle: ReplicaHandle,
    core: mpsc::Sender<ToCore>,
) {
    // The leader whose AppendEntries this connection carried and this member accepted.
    let mut leader_link = None;
    while let Ok(bytes) = read_frame(&mut s).await {
        let Ok(req) = decode::<PeerRequest>(&bytes) else {
            tracing::warn!("undecodable peer request; closing the connection");
            return;
        };
        let resp = match req {
            PeerRequest::Append(r) => {
                let from = r.vote.leader_id().voted_for();
                let resp = raft.append_entries(r).await;
                if matches!(&resp, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    leader_link = from;
                }
                PeerResponse::Append(resp)
            }
            PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::Snapshot(r) => PeerResponse::Snapshot(raft.install_snapshot(r).await),
            PeerRequest::Propose(items) => {
                let leads = raft.metrics().borrow().current_leader == Some(handle.id);
                // A log that has stopped takes none: the forwarder tries elsewhere.
                let taken = leads
                    && items
                        .into_iter()
                        .all(|i| handle.propose(bytes::Bytes::from(i)).is_ok());
                PeerResponse::Proposed(taken)
            }
            PeerRequest::ReadIndex => {
                let _pending = handle.leader_counters.sync_started();
                PeerResponse::ReadIndex(leader_read_index(&raft).await)
            }
            PeerRequest::Touch(round) => {
                PeerResponse::Touched(answer_touch(&raft, &handle, &core, round).await)
            }
            PeerRequest::Reconfig { base, target } => {
                let members = |wire: Vec<(NodeId, CorralNode, bool)>| {
                    wire.iter()
                        .map(|(id, node, observer)| (*id, Member::from_node(node, *observer)))
                        .collect::<BTreeMap<_, _>>()
                };
                let (base, target) = (members(base), members(target));
                let outcome = handle.lead_reconfig(&raft, &base, &target).await;
                // The membership to publish is final now.
                let _ = core.send(ToCore::Membership).await;
                PeerResponse::Reconfigured(outcome)
            }
            PeerRequest::Initialized => {
                PeerResponse::Initialized(raft.is_initialized().await.unwrap_or(false))
            }
        };
        if write_frame(&mut s, &encode(&resp)).await.is_err() {
            break;
        }
    }
    tracing::debug!(?leader_link, "a peer connection closed");
    if let Some(leader) = leader_link {
        suspect_leader(raft, handle, leader).await;
    }
}

/// The leader's side of a touch round: the core keeps the sessions alive, then the round is
/// granted if this member still leads and may vouch that no other leader exists.
async fn answer_touch(
    raft: &Raft,
    handle: &ReplicaHandle,
    core: &mpsc::Sender<ToCore>,
    round: TouchRound,
) -> TouchAnswer {
    let member = handle.membership.get().members.contains_key(&round.from);
    if !member {
        // A member a reconfiguration removed gets no lease: it must stop serving.
        return TouchAnswer {
            removed: true,
            ..TouchAnswer::default()
        };
    }
    let (reply, unknown) = tokio::sync::oneshot::channel();
    let touch = ToCore::Touch {
        sessions: round.sessions,
        reply,
    };
    if core.send(touch).await.is_err() {
        return TouchAnswer::default();
    }
    let unknown = unknown.await.unwrap_or_default();
    let leading_term = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(handle.id))
            .then_some(m.current_term)
    };
    let granted = leading_term.is_some_and(|term| handle.lease.exclusive(term, corral_io::now()));
    TouchAnswer {
        granted,
        unknown,
        removed: false,
    }
}

/// This member's read index as leader: its commit point, once a quorum has confirmed it still
/// leads (one heartbeat round, each peer given a heartbeat interval). A round that misses (a peer
/// slow under load, one just killed) is tried again a few times before the `sync` fails.
async fn leader_read_index(raft: &Raft) -> Option<u64> {
    for _ in 0..READ_INDEX_ROUNDS {
        match raft.get_read_log_id().await {
            Ok((read, _)) => return Some(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_))) => {
                return None
            }
            Err(_) => {}
        }
    }
    None
}

/// Whether nothing listens at a peer's address any more: its process is gone. A connection
/// refused says so; one reset (while connecting or once accepted) met the listener of a process
/// still being torn down (its connections close before its listener does), so look again. A
/// peer that cannot be reached at all (a partition) is not gone.
async fn peer_is_gone(net: &dyn corral_io::Net, addr: &str) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
    use tokio::io::AsyncReadExt;
    for _ in 0..PROBES {
        match tokio::time::timeout(PROBE_TIMEOUT, net.connect(addr)).await {
            Ok(Err(e)) if e.kind() == ConnectionRefused => return true,
            Ok(Err(e)) if e.kind() == ConnectionReset => {}
            Ok(Ok(mut s)) => {
                // A live peer server waits for a request; a dying listener resets at once.
                let mut byte = [0u8; 1];
                match tokio::time::timeout(PROBE_TIMEOUT, s.read(&mut byte)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {}
                    _ => return false,
                }
            }
            _ => return false,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// The connection that carried the leader's AppendEntries closed. If the leader's peer port now
/// refuses connections, its process is gone (a SIGKILL, a crash): rather than wait out the vote
/// lease and an election timeout, the members elect at once. A leader that is merely
/// unreachable (a partition) is left to the timers: only a refused connection proves it cannot
/// be serving anyone.
async fn suspect_leader(raft: Raft, handle: ReplicaHandle, leader: NodeId) {
    let current = raft.metrics().borrow().current_leader;
    if current != Some(leader) || leader == handle.id {
        tracing::debug!(
            leader,
            ?current,
            "the leader's link closed, but it no longer leads"
        );
        return;
    }
    let Some(addr) = handle.dial_addr(leader) else {
        return;
    };
    if !peer_is_gone(&*handle.io.net, &addr).await {
        return;
    }
    let (voters, term): (Vec<NodeId>, u64) = {
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(leader) {
            return;
        }
        let voters = m.membership_config.membership().voter_ids().collect();
        (voters, m.current_term)
    };
    // The dead leader had several connections here, which all close at once: one election.
    let first = handle
        .leader_gone_in
        .fetch_max(term, std::sync::atomic::Ordering::Relaxed)
        < term;
    if !first || !voters.contains(&handle.id) {
        return;
    }
    tracing::info!(
        leader,
        "the leader's peer port refuses connections: it is gone; electing now"
    );
    // Every voter's first election gives up the vote lease it held for the dead leader (its vote
    // is no longer a leader's); the successor's second one, a term later, can then win at once.
    let _ = raft.trigger().elect().await;
    let successor = voters.iter().copied().filter(|v| *v != leader).min();
    if successor == Some(handle.id) {
        tokio::time::sleep(SUCCESSOR_DELAY).await;
        if still_leaderless(&raft, handle.id) {
            let _ = raft.trigger().elect().await;
        }
    }
}

/// Whether the successor should elect again: no leader is known, and its vote is still its own.
/// A vote it gave another candidate meanwhile means that candidate may have won already, and
/// its heartbeat is on the way: a second election would depose it (and close its clients'
/// connections whose sessions it can no longer confirm).
fn still_leaderless(raft: &Raft, me: NodeId) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.current_leader.is_none() && m.vote.leader_id().voted_for() == Some(me)
}
