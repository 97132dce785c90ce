//! # corral-proto
//!
//! Apache ZooKeeper's client wire protocol as plain data: jute encoding ([`jute`]), the records of
//! `zookeeper.jute` ([`records`]), opcodes and error codes ([`codes`]), typed requests and
//! responses ([`message`]), length-prefixed framing ([`frame`]) and what a server writes back
//! ([`reply`]).
//!
//! This crate performs no I/O and holds no state, so it can be property-tested and fuzzed alone.
//! Both the server and Corral's own clients (tests, benchmark) use it.

pub mod codes;
pub mod frame;
pub mod jute;
pub mod message;
pub mod quota;
pub mod records;
pub mod reply;
pub mod time;

pub use codes::{CreateMode, ErrorCode, EventType, OpCode};
pub use jute::{DecodeError, Jute, Reader};
pub use message::{MultiResult, Request, Response};
pub use records::*;
