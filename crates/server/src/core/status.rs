//! The status snapshot: what the four-letter words, the admin commands and `/metrics` show of
//! the core, copied out of it in one step. They render it on their own tasks, where reading
//! `/proc` and walking the data directory delay no request.

use super::Core;
use crate::stats::{ConnStats, ServerStats};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How much a status request needs beyond the counters (the lists cost a pass over the tables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Detail {
    /// Every watch, by connection and by path (`wchc`, `wchp`).
    pub watches: bool,
    /// Every session with its expiry, timeout and ephemerals (`dump`).
    pub sessions: bool,
    /// The tree's digest (`hash`): a pass over every node.
    pub digest: bool,
}

/// One client connection as status shows it.
#[derive(Debug, Clone)]
pub struct ConnStatus {
    pub peer: SocketAddr,
    pub session_id: i64,
    pub timeout_ms: i32,
    pub stats: ConnStats,
}

/// One live session, for `dump`.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub id: i64,
    pub timeout_ms: i32,
    /// When the leader expires it unless heard from (ms since the epoch).
    pub expires_ms: i64,
}

/// The core's state at one instant, as status shows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// ZooKeeper's word for this member's mode (`leader`, `follower`, `read-only`...).
    pub mode: &'static str,
    pub serving: bool,
    pub read_only: bool,
    pub draining: bool,
    pub leader_id: Option<u64>,
    /// How long this member has led, if it leads.
    pub leading_for: Option<Duration>,
    pub uptime: Duration,
    /// When the snapshot was taken (ms since the epoch).
    pub taken_ms: i64,
    pub last_zxid: i64,
    pub node_count: usize,
    pub data_size: usize,
    pub digest: Option<u64>,
    /// Ephemeral znodes per session that has any, sorted by session.
    pub ephemerals: Vec<(i64, Vec<String>)>,
    pub ephemeral_count: usize,
    /// The zxid and time (seconds since the epoch) of the last snapshot started here.
    pub last_snapshot: (i64, i64),
    /// `/zookeeper/config` as this member's tree has it.
    pub config: Vec<u8>,
    pub stats: ServerStats,
    /// Client connections with a session, in the order they were made.
    pub conns: Vec<ConnStatus>,
    pub outstanding_requests: usize,
    pub session_count: usize,
    /// With [`Detail::sessions`]: every session this member tracks, with its expiry.
    pub sessions: Vec<SessionStatus>,
    /// With [`Detail::sessions`]: the sessions in the replicated tree, with their timeouts.
    pub replicated_sessions: Vec<(i64, i32)>,
    /// Watches in total, paths watched, connections watching.
    pub watch_counts: (usize, usize, usize),
    pub watch_count: usize,
    /// With [`Detail::watches`]: each watching session's paths.
    pub watches_by_session: Vec<(i64, Vec<String>)>,
    /// With [`Detail::watches`]: each watched path's sessions.
    pub watches_by_path: Vec<(String, Vec<i64>)>,
}

impl Snapshot {
    /// Whether status requests get real answers: while serving, and in read-only mode.
    pub fn answers_status(&self) -> bool {
        self.serving || self.read_only
    }
}

impl Core {
    /// The status snapshot at `now`, with the lists `detail` asks for. The serving rule is
    /// applied first, as before any answer.
    pub fn status(&mut self, detail: Detail, now: Instant) -> Snapshot {
        self.now = self.now.max(now);
        self.check_serving();
        let session_of = |conn| self.conns.get(&conn).map_or(0, |c| c.session_id);
        let mut conns: Vec<_> = self.conns.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        let mut ephemerals: Vec<(i64, Vec<String>)> = if detail.sessions {
            self.tree
                .ephemeral_counts()
                .map(|(id, _)| (id, self.tree.ephemerals_of(id)))
                .collect()
        } else {
            Vec::new()
        };
        ephemerals.sort();
        Snapshot {
            mode: self.mode(),
            serving: self.serving.is_serving(),
            read_only: self.read_only.is_active(),
            draining: self.draining,
            leader_id: self.leader,
            leading_for: self
                .leading_since
                .map(|s| self.now.saturating_duration_since(s)),
            uptime: self.now.saturating_duration_since(self.stats.started),
            taken_ms: self.epoch_ms(),
            last_zxid: self.tree.last_zxid(),
            node_count: self.tree.node_count(),
            data_size: self.tree.data_size(),
            digest: detail.digest.then(|| self.tree.digest()),
            ephemerals,
            ephemeral_count: self.tree.ephemeral_counts().map(|(_, n)| n).sum(),
            last_snapshot: self.last_snapshot,
            config: self
                .tree
                .get(corral_tree::tree::CONFIG_PATH)
                .map(|n| n.data.to_vec())
                .unwrap_or_default(),
            stats: self.stats.clone(),
            conns: conns
                .into_iter()
                .map(|(_, c)| ConnStatus {
                    peer: c.peer,
                    session_id: c.session_id,
                    timeout_ms: c.timeout_ms,
                    stats: c.stats.clone(),
                })
                .collect(),
            outstanding_requests: self.limits.inbox()
                + self
                    .conns
                    .values()
                    .map(|c| c.request_sizes.len())
                    .sum::<usize>(),
            session_count: self.sessions.len(),
            sessions: if detail.sessions {
                let mut all: Vec<_> = self
                    .sessions
                    .iter()
                    .map(|(id, s)| SessionStatus {
                        id: *id,
                        timeout_ms: s.timeout_ms,
                        expires_ms: self.epoch_ms_of(s.deadline),
                    })
                    .collect();
                all.sort_by_key(|s| s.id);
                all
            } else {
                Vec::new()
            },
            replicated_sessions: if detail.sessions {
                self.tree.sessions().collect()
            } else {
                Vec::new()
            },
            watch_counts: self.watches.counts(),
            watch_count: self.watches.watch_count(),
            watches_by_session: if detail.watches {
                self.watches
                    .by_connection()
                    .into_iter()
                    .map(|(conn, paths)| (session_of(conn), paths))
                    .collect()
            } else {
                Vec::new()
            },
            watches_by_path: if detail.watches {
                self.watches
                    .by_path()
                    .into_iter()
                    .map(|(path, conns)| (path, conns.into_iter().map(session_of).collect()))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}
