//! balagh: the ticket registry of Muscat Municipality.
//!
//! See `docs/ARCHITECTURE.md` for the code map and the invariants each part keeps.

pub mod app;
pub mod bench;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod watch_client;
