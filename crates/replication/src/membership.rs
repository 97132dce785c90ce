//! The ensemble's membership as this member knows it: from its own configuration until the
//! replicated log has one, from the log after (a reconfiguration changes it there, through
//! openraft's joint consensus, see `reconfig.rs`).

use crate::types::{CorralNode, NodeId};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A member as the configuration names it (`server.N=host:peerPort:electionPort[:role][;client]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `host:peerPort`, where its peers reach it.
    pub raft_addr: String,
    /// ZooKeeper's election port. Corral elects over the peer port and does not listen here; the
    /// port is kept so that `/zookeeper/config` shows each member as it was configured. 0 when
    /// unknown (a membership logged before reconfiguration existed).
    pub election_port: u16,
    /// `host:port` where its clients reach it.
    pub client_addr: String,
    pub observer: bool,
}

impl Member {
    /// How the replicated membership records it: the election port rides in the peer address
    /// (`host:peerPort:electionPort`), which keeps the log's encoding of a node unchanged.
    pub fn to_node(&self) -> CorralNode {
        let raft_addr = match self.election_port {
            0 => self.raft_addr.clone(),
            port => format!("{}:{port}", self.raft_addr),
        };
        CorralNode {
            raft_addr,
            client_addr: self.client_addr.clone(),
        }
    }

    pub fn from_node(node: &CorralNode, observer: bool) -> Member {
        Member {
            raft_addr: node.peer_addr().to_owned(),
            election_port: node.election_port().unwrap_or(0),
            client_addr: node.client_addr.clone(),
            observer,
        }
    }
}

/// The membership: who is in the ensemble and in which role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
    /// A reconfiguration is between its two steps: `members` holds both configurations' nodes,
    /// a voter of either counted as a voter.
    pub joint: bool,
    /// Whether it comes from the replicated log (a new member's log has none until the leader
    /// adds it); otherwise it is this member's own configuration.
    pub replicated: bool,
}

impl Membership {
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| !m.observer)
            .map(|(id, _)| *id)
    }

    pub(crate) fn of_log(m: &openraft::Membership<NodeId, CorralNode>) -> Membership {
        let voters: std::collections::BTreeSet<NodeId> = m.voter_ids().collect();
        let members = m
            .nodes()
            .map(|(id, node)| (*id, Member::from_node(node, !voters.contains(id))))
            .collect();
        Membership {
            members,
            joint: m.get_joint_config().len() > 1,
            replicated: true,
        }
    }
}

/// The membership, shared between the role watcher (which updates it) and its readers.
#[derive(Debug, Clone)]
pub(crate) struct SharedMembership(Arc<RwLock<Arc<Membership>>>);

impl SharedMembership {
    pub(crate) fn new(m: Membership) -> Self {
        SharedMembership(Arc::new(RwLock::new(Arc::new(m))))
    }

    pub(crate) fn get(&self) -> Arc<Membership> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, m: Membership) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_round_trips_through_the_logged_node() {
        let m = Member {
            raft_addr: "10.0.0.1:2888".into(),
            election_port: 3888,
            client_addr: "0.0.0.0:2181".into(),
            observer: false,
        };
        assert_eq!(m.to_node().raft_addr, "10.0.0.1:2888:3888");
        assert_eq!(m.to_node().peer_addr(), "10.0.0.1:2888");
        assert_eq!(Member::from_node(&m.to_node(), false), m);
    }

    #[test]
    fn nodes_logged_without_an_election_port_still_read() {
        let old = CorralNode {
            raft_addr: "zk1:2888".into(),
            client_addr: "zk1:2181".into(),
        };
        let m = Member::from_node(&old, true);
        assert_eq!((m.raft_addr.as_str(), m.election_port), ("zk1:2888", 0));
        assert_eq!(m.to_node(), old);
        let v6 = CorralNode {
            raft_addr: "[::1]:2888".into(),
            client_addr: String::new(),
        };
        assert_eq!((v6.peer_addr(), v6.election_port()), ("[::1]:2888", None));
        let v6 = CorralNode {
            raft_addr: "[::1]:2888:3888".into(),
            client_addr: String::new(),
        };
        assert_eq!(
            (v6.peer_addr(), v6.election_port()),
            ("[::1]:2888", Some(3888))
        );
    }
}
