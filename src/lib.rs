//! balagh: the ticket registry of Muscat Municipality.
//!
//! See `docs/ARCHITECTURE.md` for the code map and the invariants each part keeps.

pub mod admin;
pub mod app;
pub mod auth;
pub mod bench;
pub mod bench_pg;
pub mod bench_sla;
pub mod bench_sync;
pub mod bench_watch;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod kpi_targets;
pub mod leader;
pub mod metrics;
pub mod platform;
pub mod quality;
pub mod report;
pub mod shutdown;
pub mod sla;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod watch_client;
