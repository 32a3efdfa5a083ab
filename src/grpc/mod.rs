//! The gRPC edge: generated types, the services, request parsing and error mapping.
//!
//! Architecture invariant: generated protobuf types do not leave this module (clients such
//! as the bench tool use them too, as any client would).

pub mod catalog_service;
pub mod codec;
pub mod connection;
pub mod convert;
pub mod encoded_tickets;
pub mod error;
pub mod proto;
pub mod quality_service;
pub mod reporting_service;
pub mod request;
pub mod satisfaction_service;
pub mod shed;
pub mod sla_service;
pub mod sync_service;
pub mod ticket_service;
pub mod watch;
