//! Changing the membership, as ZooKeeper's `reconfig` asks: carried out by the leader with
//! openraft's joint consensus.
//!
//! A reconfiguration names the whole membership wanted (the core works it out from the request,
//! incremental or not) and the membership it was worked out from. The leader takes one at a
//! time, and only if the membership is still that one (or already the one wanted): a request
//! worked out from an older view must not undo a newer change.
//!
//! 1. Members new to the ensemble (or at a new address) join as learners: they catch up without
//!    voting, through a snapshot when the log they need is purged.
//! 2. It waits until a majority of the new voters has caught up with its log. If none does in
//!    time the learners it added are removed again and the request fails (ZooKeeper's
//!    NewConfigNoQuorum): a configuration whose quorum cannot keep up would stop all writes.
//! 3. Observers that leave are removed (they never vote, so this needs no joint step).
//! 4. The voters change: a joint configuration, then the new one. Every voter that is not a
//!    voter of the new configuration leaves the membership with it; one that is to observe is
//!    added back as a learner in a last step. A joint configuration therefore always means
//!    "the old voters that are not new ones leave", so the leader after one that stopped between
//!    the two steps finishes it the same way (`finish_joint`). A leader that is not among the new
//!    voters leads until the new configuration is committed, then steps down.
//!
//! A leader lost on the way leaves the outcome unknown to the client (as ZooKeeper's connection
//! loss does); `/zookeeper/config`, which the next leader publishes, shows what happened.

use crate::membership::{Member, Membership};
use crate::types::{CorralNode, NodeId, Raft};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Why a reconfiguration was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReconfigRefused {
    #[error("another reconfiguration is in progress, or the membership changed since")]
    InProgress,
    #[error("no quorum of the new configuration caught up with the leader in time")]
    NoQuorum,
    /// The leader was lost while it carried the reconfiguration out: its outcome is unknown.
    #[error("the leader was lost on the way; the outcome is unknown")]
    NoLeader,
    /// The member asked does not lead: nothing was done, and the request may go to the leader.
    #[error("not the leader")]
    NotLeader,
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

/// The leader's side: moves the membership from `base` to `target`. `catch_up` bounds step 2.
pub(crate) async fn lead(
    raft: &Raft,
    base: &BTreeMap<NodeId, Member>,
    target: &BTreeMap<NodeId, Member>,
    catch_up: Duration,
) -> Result<(), ReconfigRefused> {
    let current = {
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(m.id) {
            return Err(ReconfigRefused::NotLeader);
        }
        m.membership_config.membership().clone()
    };
    if current.get_joint_config().len() > 1 {
        return Err(ReconfigRefused::InProgress);
    }
    let now = &Membership::of_log(&current).members;
    if now == target {
        return Ok(());
    }
    if now != base {
        return Err(ReconfigRefused::InProgress);
    }
    let added = add_learners(raft, &current, target).await?;
    let voters: BTreeSet<NodeId> = target
        .iter()
        .filter(|(_, m)| !m.observer)
        .map(|(id, _)| *id)
        .collect();
    if let Err(why) = caught_up(raft, &voters, catch_up).await {
        if !added.is_empty() {
            remove_nodes(raft, added).await;
        }
        return Err(why);
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
        raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(refused)?;
    }
    // Voters that are to observe left with the change above; they come back as learners.
    let now = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    add_learners(raft, &now, target).await?;
    Ok(())
}

/// Adds the members of `target` that `current` lacks (or holds at another address) as
/// learners; returns the ones added.
async fn add_learners(
    raft: &Raft,
    current: &openraft::Membership<NodeId, CorralNode>,
    target: &BTreeMap<NodeId, Member>,
) -> Result<BTreeSet<NodeId>, ReconfigRefused> {
    let mut added = BTreeSet::new();
    for (id, member) in target {
        let node = member.to_node();
        match current.get_node(id) {
            None => {
                if let Err(e) = raft.add_learner(*id, node, false).await {
                    remove_nodes(raft, added).await;
                    return Err(refused(e));
                }
                added.insert(*id);
            }
            Some(known) if *known != node => {
                let change = ChangeMembers::SetNodes([(*id, node)].into());
                raft.change_membership(change, false)
                    .await
                    .map_err(refused)?;
            }
            Some(_) => {}
        }
    }
    Ok(added)
}

/// Takes back the learners a failed reconfiguration added, a few times while this member leads.
async fn remove_nodes(raft: &Raft, nodes: BTreeSet<NodeId>) {
    if nodes.is_empty() {
        return;
    }
    for _ in 0..10 {
        let leads = {
            let m = raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
        };
        if !leads {
            break;
        }
        match raft
            .change_membership(ChangeMembers::RemoveNodes(nodes.clone()), false)
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "removing the learners again; will retry");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::warn!(
        ?nodes,
        "the learners a failed reconfiguration added are still in the ensemble (as observers)"
    );
}

/// Whether a majority of `voters` has caught up with the leader's log as it is now, within
/// `within` (the leader counts itself as caught up). Losing the leadership meanwhile is
/// `NoLeader`; the time running out, `NoQuorum`.
async fn caught_up(
    raft: &Raft,
    voters: &BTreeSet<NodeId>,
    within: Duration,
) -> Result<(), ReconfigRefused> {
    let mut metrics = raft.metrics();
    let goal = metrics.borrow().last_log_index.unwrap_or(0);
    let deadline = corral_io::now() + within;
    loop {
        {
            let m = metrics.borrow();
            if m.current_leader != Some(m.id) {
                return Err(ReconfigRefused::NoLeader);
            }
            let matched = |id: &NodeId| {
                *id == m.id
                    || m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .is_some_and(|l| l.index >= goal)
            };
            if voters.iter().filter(|id| matched(id)).count() > voters.len() / 2 {
                return Ok(());
            }
        }
        let left = deadline.saturating_duration_since(corral_io::now());
        if left.is_zero() {
            return Err(ReconfigRefused::NoQuorum);
        }
        match tokio::time::timeout(left, metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ReconfigRefused::NoLeader),
            // Looked at once more above before giving up.
            Err(_) => {}
        }
    }
}

/// A new leader that finds the membership in its joint step (the last leader stopped between
/// the two) moves on to the new configuration, as the last leader would have: the old voters
/// that are not new ones leave. Retried while this member leads: right after an election the
/// joint entry may not be known to be committed yet.
pub(crate) async fn finish_joint(raft: Raft) {
    loop {
        let last = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.current_leader != Some(m.id) {
                return;
            }
            let configs = m.membership_config.membership().get_joint_config();
            if configs.len() < 2 {
                return;
            }
            configs.last().cloned().unwrap_or_default()
        };
        tracing::info!(voters = ?last, "finishing a reconfiguration its leader left joint");
        match raft
            .change_membership(ChangeMembers::ReplaceAllVoters(last), false)
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "finishing the joint configuration; will retry");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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
