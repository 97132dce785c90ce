//! Changing the membership, as ZooKeeper's `reconfig` asks: carried out by the leader with
//! openraft's joint consensus.
//!
//! A reconfiguration names the whole membership wanted (the core works it out from the request,
//! incremental or not). The leader takes one at a time:
//!
//! 1. Members new to the ensemble (or at a new address) join as learners: they catch up without
//!    voting, through a snapshot when the log they need is purged.
//! 2. It waits until a majority of the new voters has caught up with its log. If none does in
//!    time the learners it added are removed again and the request fails (ZooKeeper's
//!    NewConfigNoQuorum): a configuration whose quorum cannot keep up would stop all writes.
//! 3. Observers that leave are removed (they never vote, so this needs no joint step).
//! 4. The voters change: a joint configuration, then the new one. Voters that become observers
//!    stay as learners; voters that leave go. A leader that is not among the new voters leads
//!    until the new configuration is committed, then steps down.
//!
//! Every step moves towards the same target, so a reconfiguration interrupted by a change of
//! leader is finished by sending the same target to the next leader (`ReplicaHandle::reconfigure`),
//! and a new leader that finds a joint configuration completes it at once (`finish_joint`).

use crate::membership::Member;
use crate::types::{CorralNode, NodeId, Raft};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a reconfiguration was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReconfigRefused {
    #[error("another reconfiguration is in progress")]
    InProgress,
    #[error("no quorum of the new configuration caught up with the leader in time")]
    NoQuorum,
    #[error("no leader could carry it out")]
    NoLeader,
    #[error("the replicated log refused it: {0}")]
    Failed(String),
}

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, CorralNode>>;

fn refused(e: WriteError) -> ReconfigRefused {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ReconfigRefused::NoLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => ReconfigRefused::InProgress,
        e => ReconfigRefused::Failed(e.to_string()),
    }
}

/// The leader's side: moves the membership to `target`. `catch_up` bounds step 2.
pub(crate) async fn lead(
    raft: &Raft,
    target: &BTreeMap<NodeId, Member>,
    catch_up: Duration,
) -> Result<(), ReconfigRefused> {
    let current = {
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(m.id) {
            return Err(ReconfigRefused::NoLeader);
        }
        m.membership_config.membership().clone()
    };
    if current.get_joint_config().len() > 1 {
        return Err(ReconfigRefused::InProgress);
    }
    let mut added = BTreeSet::new();
    for (id, member) in target {
        let node = member.to_node();
        match current.get_node(id) {
            None => {
                raft.add_learner(*id, node, false).await.map_err(refused)?;
                added.insert(*id);
            }
            Some(known) if *known != node => {
                let change = ChangeMembers::SetNodes([(*id, node)].into());
                raft.change_membership(change, true)
                    .await
                    .map_err(refused)?;
            }
            Some(_) => {}
        }
    }
    let voters: BTreeSet<NodeId> = target
        .iter()
        .filter(|(_, m)| !m.observer)
        .map(|(id, _)| *id)
        .collect();
    if !caught_up(raft, &voters, catch_up).await {
        if !added.is_empty() {
            let _ = raft
                .change_membership(ChangeMembers::RemoveNodes(added), false)
                .await;
        }
        return Err(ReconfigRefused::NoQuorum);
    }
    let old_voters: BTreeSet<NodeId> = current.voter_ids().collect();
    let leaving_learners: BTreeSet<NodeId> = current
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !target.contains_key(id) && !old_voters.contains(id))
        .collect();
    if !leaving_learners.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(leaving_learners), false)
            .await
            .map_err(refused)?;
    }
    if voters != old_voters {
        // Voters that stay as observers must be kept as learners; the others go with the
        // same change. (With both kinds, the leaving ones are removed by the retry below.)
        let keep = old_voters
            .iter()
            .any(|id| target.get(id).is_some_and(|m| m.observer));
        raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), keep)
            .await
            .map_err(refused)?;
        if keep {
            let leaving: BTreeSet<NodeId> = old_voters
                .iter()
                .copied()
                .filter(|id| !target.contains_key(id))
                .collect();
            if !leaving.is_empty() {
                raft.change_membership(ChangeMembers::RemoveNodes(leaving), false)
                    .await
                    .map_err(refused)?;
            }
        }
    }
    Ok(())
}

/// Whether a majority of `voters` has caught up with the leader's log as it is now, within
/// `within` (the leader counts itself as caught up).
async fn caught_up(raft: &Raft, voters: &BTreeSet<NodeId>, within: Duration) -> bool {
    let mut metrics = raft.metrics();
    let goal = metrics.borrow().last_log_index.unwrap_or(0);
    let deadline = corral_io::now() + within;
    loop {
        {
            let m = metrics.borrow();
            if m.current_leader != Some(m.id) {
                return false;
            }
            let matched = |id: &NodeId| {
                *id == m.id
                    || m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .is_some_and(|l| l.index >= goal)
            };
            if voters.iter().filter(|id| matched(id)).count() > voters.len() / 2 {
                return true;
            }
        }
        let left = deadline.saturating_duration_since(corral_io::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            // Looked at once more above before giving up.
            Err(_) => {}
        }
    }
}

/// A new leader that finds the membership in its joint step (the last leader stopped between
/// the two) moves on to the new configuration.
pub(crate) async fn finish_joint(raft: Raft) {
    let last = {
        let m = raft.metrics();
        let m = m.borrow();
        let configs = m.membership_config.membership().get_joint_config();
        if configs.len() < 2 {
            return;
        }
        configs.last().cloned().unwrap_or_default()
    };
    tracing::info!(voters = ?last, "finishing a reconfiguration its leader left joint");
    if let Err(e) = raft
        .change_membership(ChangeMembers::ReplaceAllVoters(last), true)
        .await
    {
        tracing::warn!(error = %e, "cannot finish the joint configuration");
    }
}

/// The observers a new ensemble's configuration names, added by its first leader in one change
/// while the membership is still the one the ensemble was initialized with (log index 0):
/// afterwards only reconfigurations change it, so an observer a reconfiguration removed is not
/// added back by the next leader from its configuration file.
pub(crate) async fn add_configured_observers(raft: Raft, configured: BTreeMap<NodeId, Member>) {
    loop {
        let missing: BTreeMap<NodeId, CorralNode> = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.current_leader != Some(m.id) {
                return;
            }
            let initial = m.membership_config.log_id().is_some_and(|l| l.index == 0);
            if !initial {
                return;
            }
            let membership = m.membership_config.membership();
            configured
                .iter()
                .filter(|(id, m)| m.observer && membership.get_node(id).is_none())
                .map(|(id, m)| (*id, m.to_node()))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        match raft
            .change_membership(ChangeMembers::AddNodes(missing), true)
            .await
        {
            Ok(_) => {
                tracing::info!("observers added");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "adding the observers; will retry");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
