//! # corral-tree
//!
//! The data tree: Corral's replicated state machine. It holds the znodes, their ACLs, the live
//! sessions and their ephemerals, and changes only by [`DataTree::apply`] of an [`Entry`] that
//! was stamped (zxid, time, session, identities) before it was ordered. It does no I/O and reads
//! no clock, so applying the same entries in the same order gives the same tree everywhere.
//!
//! Reads (getData, getChildren, ...) are queries on the tree; the server answers them itself.

pub mod acl;
pub mod apply;
pub mod codec;
pub mod path;
pub mod quota;
mod store;
pub mod tree;

pub use apply::{Applied, Entry, Event, Txn};
pub use codec::{Batch, Proposal, ProposalHeader};
/// The error of every decoder here (entries, proposals, snapshots).
pub use corral_proto::DecodeError;
pub use tree::{Data, DataTree, ImportError, ImportedNode, Node, TreeConfig};
