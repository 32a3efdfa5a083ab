//! balagh: the ticket registry of Muscat Municipality.
//!
//! See `docs/ARCHITECTURE.md` for the code map and the invariants each part keeps.

pub mod domain;
pub mod grpc;
