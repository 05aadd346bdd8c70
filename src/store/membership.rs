//! Growing and shrinking the group: a new member is added as a learner,
//! caught up, then promoted to voter; a member is removed by dropping it from
//! the voters and the nodes. Both run on the leader; a follower forwards
//! them over the peer RPC, so a joining server may ask any member.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::command::{NodeId, Raft};
use super::rpc::{RemoteError, RpcRequest, RpcResponse};
use super::{Store, StoreError, admin_error, remote_error};

/// A membership change, as it travels to the leader.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// Add (or re-address) `id` at `addr` and make it a voter.
    AddVoter { id: NodeId, addr: String },
    /// Drop `id` from the group.
    Remove { id: NodeId },
}

type AdminError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// Runs `change` on this member's Raft (which must lead).
pub(super) async fn apply(raft: &Raft, change: &MembershipChange) -> Result<(), AdminError> {
    match change {
        MembershipChange::AddVoter { id, addr } => {
            let metrics = raft.metrics().borrow().clone();
            let known = metrics.membership_config.nodes().find(|(n, _)| *n == id).map(|(_, node)| node.addr.clone());
            match known {
                Some(old) if old == *addr => {}
                Some(_) => {
                    let nodes = BTreeMap::from([(*id, BasicNode::new(addr))]);
                    raft.change_membership(ChangeMembers::SetNodes(nodes), false).await?;
                }
                None => {
                    raft.add_learner(*id, BasicNode::new(addr), true).await?;
                }
            }
            if !raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == *id) {
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false).await?;
            }
            Ok(())
        }
        MembershipChange::Remove { id } => {
            let members = raft.metrics().borrow().membership_config.clone();
            if members.membership().voter_ids().any(|v| v == *id) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false).await?;
            }
            if raft.metrics().borrow().membership_config.nodes().any(|(n, _)| *n == *id) {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false).await?;
            }
            Ok(())
        }
    }
}

/// The peer RPC's answer to a forwarded change.
pub(super) async fn answer(raft: &Raft, change: MembershipChange) -> RpcResponse {
    RpcResponse::Membership(apply(raft, &change).await.map_err(|e| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RemoteError::NotLeader(f.to_string()),
        RaftError::Fatal(openraft::error::Fatal::Stopped) => RemoteError::ShuttingDown,
        other => RemoteError::Other(other.to_string()),
    }))
}

impl Store {
    /// Runs a membership change on the leader, forwarding it when this member
    /// does not lead.
    pub async fn change_members(&self, change: MembershipChange) -> Result<(), StoreError> {
        let e = match apply(&self.inner.raft, &change).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let RaftError::APIError(ClientWriteError::ForwardToLeader(f)) = e else { return Err(admin_error(e)) };
        let (Some(leader), Some(node)) = (f.leader_id, f.leader_node) else {
            return Err(StoreError::NoLeader("no leader is known".into()));
        };
        let peers = &self.inner.proposer.peers;
        match peers.call(leader, &node.addr, RpcRequest::Membership(change)).await? {
            RpcResponse::Membership(r) => r.map_err(remote_error),
            _ => Err(StoreError::Raft("leader answered with the wrong message".into())),
        }
    }

    /// Waits until a leader is known and this member has applied everything
    /// committed before the call (a read index), e.g. after joining.
    pub async fn ready(&self) -> Result<(), StoreError> {
        loop {
            match self.wait_for_leader(std::time::Duration::from_secs(10)).await {
                Ok(_) => {}
                Err(StoreError::ShuttingDown) => return Err(StoreError::ShuttingDown),
                Err(err) => {
                    tracing::warn!(error = %err, "waiting for the store's leader");
                    continue;
                }
            }
            match self.read_barrier().await {
                Ok(()) => return Ok(()),
                Err(StoreError::NoLeader(why)) => {
                    tracing::warn!(%why, "waiting to catch up with the leader");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Makes sure the group knows this member at `addr`: a lone founder that
    /// started without peers (or moved) re-advertises itself.
    pub(super) async fn advertise_self(&self, addr: &str) -> Result<(), StoreError> {
        let known = self.members().get(&self.id()).cloned();
        if known.as_deref() == Some(addr) || !self.is_leader() {
            return Ok(());
        }
        tracing::info!(addr, "advertising this member's new peer address");
        let change = MembershipChange::AddVoter { id: self.id(), addr: addr.to_string() };
        apply(&self.inner.raft, &change).await.map_err(admin_error)
    }
}
