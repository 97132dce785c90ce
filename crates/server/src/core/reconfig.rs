//! `reconfig`, and `/zookeeper/config`.
//!
//! A reconfig request is checked here as ZooKeeper checks it (enabled, allowed, the version it
//! names, the membership it asks for), then carried out by the replicated log
//! ([`Effect::Reconfigure`]: joint consensus on the leader). Its client is answered once this
//! member's tree shows the new membership in `/zookeeper/config`, with that node's data and stat,
//! as ZooKeeper answers. Like a `sync`, it holds the connection's later requests until then.
//!
//! The leader alone writes `/zookeeper/config`: whenever the replicated membership (outside a
//! joint step) differs from what the node shows, it proposes the new text. Reconfigurations,
//! the observers a new ensemble adds and a leader lost halfway all end up there by the same path.

use super::proposals::Origin;
use super::{Core, Effect};
use crate::ensemble::{config_text, reconfig_target};
use crate::watch::ConnId;
use corral_proto::codes::perms;
use corral_proto::records::{GetDataResponse, ReconfigRequest};
use corral_proto::{ErrorCode, Response};
use corral_replication::{Member, ReconfigRefused, Role};
use corral_tree::apply::{config_lines, config_version};
use corral_tree::tree::CONFIG_PATH;
use corral_tree::{acl, Txn};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a reconfiguration the log has carried out may take to show in this member's tree
/// before its client is told the connection is lost (its outcome is then unknown to it).
const PUBLISH_WAIT: Duration = Duration::from_secs(15);
/// How long the leader waits for a membership text it proposed before proposing it again.
const REPUBLISH_AFTER: Duration = Duration::from_secs(5);

/// A reconfig request on its way through the log.
#[derive(Debug)]
pub struct ReconfigCall {
    pub conn: ConnId,
    pub xid: i32,
    pub received: Instant,
    /// The membership it was worked out from: the leader carries it out only from that one.
    pub base: BTreeMap<u64, Member>,
    /// The whole membership asked for.
    pub target: BTreeMap<u64, Member>,
    /// The zxid that last wrote `/zookeeper/config` when it was asked: its answer must show a
    /// later one.
    pub published: i64,
}

/// A reconfiguration the log carried out, waiting to show in `/zookeeper/config` here.
pub(super) struct PublishWait {
    call: ReconfigCall,
    text: String,
    deadline: Instant,
}

impl PublishWait {
    /// Whether `/zookeeper/config` (its data, and the zxid that wrote it) shows it.
    fn shown(&self, data: &[u8], mzxid: i64) -> bool {
        mzxid > self.call.published && config_lines(data) == self.text.as_bytes()
    }
}

impl Core {
    pub(super) fn reconfig(
        &mut self,
        conn: ConnId,
        xid: i32,
        req: ReconfigRequest,
        received: Instant,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.in_flight += 1;
            c.syncs_in_flight += 1;
        }
        let (base, target) = match self.check_reconfig(conn, &req) {
            Ok(change) => change,
            Err(code) => return self.refuse_reconfig(conn, xid, received, code),
        };
        let published = self.tree.get(CONFIG_PATH).map_or(0, |n| n.mzxid);
        self.effect(Effect::Reconfigure(ReconfigCall {
            conn,
            xid,
            received,
            base,
            target,
            published,
        }));
    }

    /// ZooKeeper's checks, in its order (the ACL last: a caller without WRITE on
    /// `/zookeeper/config` still learns that its request was malformed). Gives the membership
    /// now and the one asked for.
    #[allow(clippy::type_complexity)]
    fn check_reconfig(
        &self,
        conn: ConnId,
        req: &ReconfigRequest,
    ) -> Result<(BTreeMap<u64, Member>, BTreeMap<u64, Member>), ErrorCode> {
        if !self.cfg.reconfig_enabled {
            return Err(ErrorCode::ReconfigDisabled);
        }
        if self.quorum.standalone() {
            // ZooKeeper: "standalone mode - reconfiguration currently not supported".
            return Err(ErrorCode::Unimplemented);
        }
        let membership = self.quorum.membership();
        let published = self.config_data();
        if membership.joint
            || !self.publishing.is_empty()
            || config_lines(&published) != self.text_of(&membership.members).as_bytes()
        {
            return Err(ErrorCode::ReconfigInProgress);
        }
        if req.cur_config_id != -1 && req.cur_config_id != config_version(&published) {
            return Err(ErrorCode::BadVersion);
        }
        let target = reconfig_target(&membership.members, req, self.cfg.standalone_enabled)?;
        if !self.cfg.skip_acl {
            let node = self.tree.get(CONFIG_PATH).ok_or(ErrorCode::NoNode)?;
            let auth = self.conns.get(&conn).map_or(&[][..], |c| &c.auth[..]);
            acl::check(self.tree.acl(node), perms::WRITE, auth)?;
        }
        Ok((membership.members.clone(), target))
    }

    /// `/zookeeper/config`'s lines for `members`. A member logged before reconfiguration
    /// existed has no election port in the log; this member's configuration gives it, when it
    /// names that member at the same address.
    fn text_of(&self, members: &BTreeMap<u64, Member>) -> String {
        let mut members = members.clone();
        for (id, m) in members.iter_mut().filter(|(_, m)| m.election_port == 0) {
            if let Some(line) = self.cfg.servers.get(id) {
                if m.raft_addr == format!("{}:{}", line.host, line.peer_port) {
                    m.election_port = line.election_port;
                }
            }
        }
        config_text(&members)
    }

    fn config_data(&self) -> Vec<u8> {
        self.tree
            .get(CONFIG_PATH)
            .map(|n| n.data.to_vec())
            .unwrap_or_default()
    }

    /// Answers a refused reconfig as ZooKeeper does: through the log, as an error entry that
    /// spends a zxid.
    fn refuse_reconfig(&mut self, conn: ConnId, xid: i32, received: Instant, code: ErrorCode) {
        self.stats.reconfigs_refused += 1;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (session_id, auth) = (c.session_id, c.auth.clone());
        let origin = Origin::Reconfig {
            conn,
            xid,
            received,
        };
        let txn = Txn::Error { code: code.code() };
        self.propose(session_id, auth, txn, origin);
    }

    /// The log's answer to a reconfiguration.
    pub(super) fn reconfigured(
        &mut self,
        call: ReconfigCall,
        outcome: Result<(), ReconfigRefused>,
    ) {
        let code = match outcome {
            Ok(()) => {
                let text = self.text_of(&call.target);
                if call.base == call.target {
                    // The membership does not change: a new version of it, as ZooKeeper
                    // commits one for every reconfig.
                    let txn = Txn::SetConfig { text: text.clone() };
                    self.propose(0, Vec::new(), txn, Origin::Nobody);
                }
                let deadline = self.now + PUBLISH_WAIT;
                self.publishing.push(PublishWait {
                    call,
                    text,
                    deadline,
                });
                self.publish_config();
                return self.finish_reconfigs();
            }
            Err(ReconfigRefused::InProgress) => ErrorCode::ReconfigInProgress,
            Err(ReconfigRefused::NoQuorum) => ErrorCode::NewConfigNoQuorum,
            Err(ReconfigRefused::Failed(why)) => {
                tracing::warn!(%why, "reconfig refused by the replicated log");
                ErrorCode::NewConfigNoQuorum
            }
            Err(ReconfigRefused::NoLeader | ReconfigRefused::NotLeader) => {
                // Its outcome is unknown: the client learns it as a lost connection. Closed
                // first, so that nothing held behind it is answered or proposed.
                self.close_connection(call.conn);
                return self.release(call.conn);
            }
        };
        self.refuse_reconfig(call.conn, call.xid, call.received, code);
    }

    /// A reconfig's hold on its connection ends.
    pub(super) fn release(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.syncs_in_flight = c.syncs_in_flight.saturating_sub(1);
        }
        self.drain(conn);
    }

    /// Answers the reconfigurations `/zookeeper/config` now shows; gives up on those past their
    /// deadline.
    pub(super) fn finish_reconfigs(&mut self) {
        if self.publishing.is_empty() {
            return;
        }
        let data = self.config_data();
        let mzxid = self.tree.get(CONFIG_PATH).map_or(0, |n| n.mzxid);
        let now = self.now;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.publishing)
            .into_iter()
            .partition(|w| w.shown(&data, mzxid) || now >= w.deadline);
        self.publishing = waiting;
        for w in done {
            if !w.shown(&data, mzxid) {
                let call = w.call;
                tracing::warn!("a reconfiguration did not show in /zookeeper/config in time");
                self.close_connection(call.conn);
                self.release(call.conn);
                continue;
            }
            let call = w.call;
            self.stats.reconfigs += 1;
            let stat = self
                .tree
                .get(CONFIG_PATH)
                .map(|n| n.stat())
                .unwrap_or_default();
            let reply = Response::GetData(GetDataResponse {
                data: Some(data.clone().into()),
                stat,
            });
            let zxid = self.tree.last_zxid();
            self.finish(call.conn, call.xid, zxid, Ok(reply), call.received);
            self.release(call.conn);
        }
    }

    /// On the leader: proposes the replicated membership's text for `/zookeeper/config` when
    /// the node shows another (and the same text is not already on its way).
    pub(super) fn publish_config(&mut self) {
        if self.role != Role::Leader || self.refusing_writes {
            return;
        }
        let membership = self.quorum.membership();
        if !membership.replicated
            || membership.joint
            || membership.members.is_empty()
            || self.quorum.reconfiguring()
        {
            return;
        }
        let text = self.text_of(&membership.members);
        if config_lines(&self.config_data()) == text.as_bytes() {
            self.config_proposed = None;
            return;
        }
        let now = self.now;
        if matches!(&self.config_proposed, Some((t, at)) if *t == text && now < *at + REPUBLISH_AFTER)
        {
            return;
        }
        tracing::info!(%text, "publishing the membership in /zookeeper/config");
        self.config_proposed = Some((text.clone(), now));
        self.propose(0, Vec::new(), Txn::SetConfig { text }, Origin::Nobody);
    }
}
