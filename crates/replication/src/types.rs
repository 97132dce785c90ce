//! The types openraft is instantiated with.

use serde::{Deserialize, Serialize};
use std::io::Cursor;

pub type NodeId = u64;

/// A member as the replicated membership records it: where its peers reach it, and where its
/// clients do (for `srvr`, `conf` and `/zookeeper/config`). `raft_addr` is
/// `host:peerPort:electionPort` (`host:peerPort` in logs written before reconfiguration existed):
/// see [`crate::Member::to_node`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorralNode {
    pub raft_addr: String,
    pub client_addr: String,
}

impl CorralNode {
    /// `host:peerPort`, the address to dial.
    pub fn peer_addr(&self) -> &str {
        match self.split() {
            Some((peer, _)) => peer,
            None => &self.raft_addr,
        }
    }

    pub fn election_port(&self) -> Option<u16> {
        self.split().map(|(_, port)| port)
    }

    /// `host:peerPort` and the election port, when `raft_addr` has three parts (a bracketed
    /// IPv6 host has colons of its own).
    fn split(&self) -> Option<(&str, u16)> {
        let (peer, election) = self.raft_addr.rsplit_once(':')?;
        let election = election.parse().ok()?;
        let (_, peer_port) = peer.rsplit_once(':')?;
        peer_port.parse::<u16>().ok()?;
        Some((peer, election))
    }
}

/// A log entry's application data: one encoded [`corral_tree::Batch`]. Serialized as one byte
/// string (`serde_bytes`), not a sequence of `u8`s visited one by one; in postcard both are
/// the same bytes (a varint length, then the bytes), so the log format is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(#[serde(with = "serde_bytes")] pub Vec<u8>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Payload,
        R = (),
        NodeId = NodeId,
        Node = CorralNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::runtime::CorralRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, CorralNode>;
pub type SErr = openraft::StorageError<NodeId>;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("serializing to memory cannot fail")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_the_log_format_of_a_plain_byte_vector() {
        // Entries written before the payload was serialized as bytes must still read.
        for bytes in [vec![], vec![0u8, 1, 255], vec![7u8; 300], vec![9u8; 70_000]] {
            let as_bytes = encode(&Payload(bytes.clone()));
            assert_eq!(as_bytes, encode(&bytes), "{} bytes", bytes.len());
            let back: Payload = decode(&encode(&bytes)).unwrap();
            assert_eq!(back.0, bytes);
        }
    }
}
