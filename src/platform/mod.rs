//! The national platform for suggestions, complaints and reports: its contract, balagh's
//! client of it, the mapping between its codes and balagh's, and a simulator of it.
//!
//! No public API of the platform exists, so balagh defines the one it speaks
//! (`docs/platform-api.md`, `docs/platform-api.openapi.yaml`) and ships [`simulator`] so that
//! tests, demos and benchmarks run against it over real HTTP.
//!
//! Architecture invariant: the platform's JSON types ([`contract`]) never leave this module.
//! The sync worker talks to [`client::PlatformClient`] with values built by [`convert`] from
//! domain tickets, and gets domain values back from [`convert`]; codes cross over only through
//! the versioned tables of [`mapping`].

pub mod client;
pub mod contract;
pub mod convert;
pub mod mapping;
pub mod simulator;

pub use client::{
    ClientSecret, IdempotencyKey, PlatformClient, PlatformClientConfig, PlatformError, RetryCause,
    WriteOutcome,
};
pub use mapping::Mapping;
