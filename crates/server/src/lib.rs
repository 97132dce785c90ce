//! # corral-server
//!
//! The network server: it accepts ZooKeeper clients ([`connection`]), keeps their sessions and
//! watches, and orders their writes into the data tree ([`core`]). Configuration comes from a
//! zoo.cfg ([`config`]); status comes out as four-letter words ([`four_letter`]).

pub mod admin;
pub mod admin_http;
pub mod auth;
pub mod budget;
pub mod config;
pub mod connection;
pub mod console;
pub mod core;
pub mod ensemble;
pub mod four_letter;
pub mod gate;
pub mod metrics;
pub mod read_only;
pub mod server;
pub mod serving;
pub mod session;
pub mod stats;
pub mod status;
pub mod tls;
pub mod watch;

pub use config::{ConfigError, ServerConfig};
pub use corral_replication::ReplicaTimings;
pub use server::{Server, ServerError};
