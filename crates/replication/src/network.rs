//! The peer protocol: Raft's RPCs and Corral's own (forwarded proposals, read index for `sync`,
//! session liveness), as postcard records in 4-byte length-prefixed frames over TCP, one request
//! at a time per connection. Connections are made lazily and dropped on any error.

use crate::lease::Lease;
use crate::types::{decode, encode, CorralNode, NodeId, TypeConfig};
use corral_io::{BoxStream, Net};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frames larger than this are refused: a peer never needs more (snapshots travel in chunks).
const MAX_PEER_FRAME: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Encoded proposals for the leader to batch.
    Propose(Vec<Vec<u8>>),
    /// The leader's read index, for `sync`.
    ReadIndex,
    /// A follower's or observer's touch round (see [`TouchRound`]).
    Touch(TouchRound),
    /// A reconfiguration forwarded to the leader: the membership it was worked out from and the
    /// whole membership wanted, each node with whether it observes.
    Reconfig {
        base: Vec<(NodeId, CorralNode, bool)>,
        target: Vec<(NodeId, CorralNode, bool)>,
    },
    /// Whether the receiver's log has a membership: a member about to initialize a new
    /// ensemble asks first, so that one joining an existing ensemble never does.
    Initialized,
}

/// What a follower or observer tells the leader every round: the sessions its clients were heard
/// from since its last granted round, each with how many milliseconds ago. The leader keeps each
/// of them alive for its timeout from then, and grants the round (renewing the sender's lease)
/// only while it can vouch that it is the only leader.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TouchRound {
    /// The sender: a member the membership no longer holds is refused.
    pub from: NodeId,
    pub sessions: Vec<(i64, u32)>,
}

#[derive(Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// Whether the receiver took the proposals (it is the leader).
    Proposed(bool),
    ReadIndex(Option<u64>),
    Touched(TouchAnswer),
    Reconfigured(Result<(), crate::ReconfigRefused>),
    Initialized(bool),
}

/// The leader's answer to a touch round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TouchAnswer {
    /// The leader vouched for the round: the sender may serve on it.
    pub granted: bool,
    /// Sessions of the round the leader does not know, or is closing.
    pub unknown: Vec<i64>,
    /// The leader's membership does not hold the sender (a reconfiguration removed it).
    pub removed: bool,
}

pub async fn read_frame<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32().await? as usize;
    if len > MAX_PEER_FRAME {
        return Err(std::io::Error::other(format!("peer frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

pub async fn write_frame<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    s.write_all(&out).await
}

/// A connection to one peer, reopened on demand.
pub struct PeerClient {
    net: Arc<dyn Net>,
    addr: String,
    conn: Option<BoxStream>,
}

impl PeerClient {
    pub fn new(net: Arc<dyn Net>, addr: &str) -> Self {
        PeerClient {
            net,
            addr: addr.to_owned(),
            conn: None,
        }
    }

    pub async fn call(
        &mut self,
        req: &PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, CallError> {
        let started = corral_io::now();
        if self.conn.is_none() {
            // Not connected in time: nothing was sent, so the caller may try again (a write
            // forwarded to a leader that never got it is not of unknown outcome).
            let connect = tokio::time::timeout(ttl, self.net.connect(&self.addr)).await;
            let s = match connect {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(CallError::Unreachable(e)),
                Err(_) => {
                    return Err(CallError::Unreachable(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("cannot connect to {} within {ttl:?}", self.addr),
                    )))
                }
            };
            self.conn = Some(s);
        }
        let ttl = ttl.saturating_sub(corral_io::now() - started);
        let result = tokio::time::timeout(ttl, self.call_inner(req)).await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(CallError::Network(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from {} within {ttl:?}", self.addr),
                )))
            }
        }
    }

    async fn call_inner(&mut self, req: &PeerRequest) -> Result<PeerResponse, CallError> {
        let s = self.conn.as_mut().expect("connected by call");
        // A frame that could not be written whole is never taken (the peer drops what it
        // cannot decode), so a failed write is as good as unsent.
        write_frame(s, &encode(req))
            .await
            .map_err(CallError::Unreachable)?;
        let bytes = read_frame(s).await.map_err(CallError::Network)?;
        decode(&bytes).map_err(|e| CallError::Network(std::io::Error::other(e)))
    }
}

#[derive(Debug)]
pub enum CallError {
    Unreachable(std::io::Error),
    Network(std::io::Error),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, CorralNode, E> {
        match self {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

/// Makes connections to peers at the addresses this member's own configuration gives them (as
/// ZooKeeper does), falling back to the address recorded in the replicated membership (a member
/// a reconfiguration added).
pub struct NetFactory {
    pub net: Arc<dyn Net>,
    pub addrs: std::sync::Arc<std::collections::BTreeMap<NodeId, String>>,
    /// Where accepted AppendEntries are recorded, as the leader's lease.
    pub lease: std::sync::Arc<Lease>,
}

pub struct PeerConn {
    target: NodeId,
    client: PeerClient,
    lease: std::sync::Arc<Lease>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &CorralNode) -> PeerConn {
        let addr = self
            .addrs
            .get(&target)
            .map_or(node.peer_addr(), String::as_str);
        PeerConn {
            target,
            client: PeerClient::new(self.net.clone(), addr),
            lease: self.lease.clone(),
        }
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<NodeId, CorralNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(
        "unexpected peer response",
    )))
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, CorralNode, RaftError<NodeId>>>
    {
        // The instant this request vouches for, should the target accept it: its send time.
        let sent_at = corral_io::now();
        let term = rpc.vote.leader_id().term;
        match self
            .client
            .call(&PeerRequest::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Append(Ok(r))) => {
                // Any answer but HigherVote means the target took this member as its leader (and
                // refuses other candidates for a while): evidence for the lease.
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                    self.lease.acked(term, self.target, sent_at);
                }
                Ok(r)
            }
            Ok(PeerResponse::Append(Err(e))) => Err(RPCError::RemoteError(
                openraft::error::RemoteError::new(self.target, e),
            )),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, CorralNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .client
            .call(&PeerRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Snapshot(Ok(r))) => Ok(r),
            Ok(PeerResponse::Snapshot(Err(e))) => Err(RPCError::RemoteError(
                openraft::error::RemoteError::new(self.target, e),
            )),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, CorralNode, RaftError<NodeId>>> {
        match self
            .client
            .call(&PeerRequest::Vote(rpc), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::Vote(Ok(r))) => Ok(r),
            Ok(PeerResponse::Vote(Err(e))) => Err(RPCError::RemoteError(
                openraft::error::RemoteError::new(self.target, e),
            )),
            Ok(_) => Err(unexpected()),
            Err(e) => Err(e.into_rpc()),
        }
    }
}
