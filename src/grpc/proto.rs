//! The generated protobuf and gRPC types of `balagh.v1`. They stay in the gRPC layer (and in
//! clients such as the bench tool); the domain and the store never import them.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("balagh.v1");

/// The encoded file descriptor set, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("balagh_descriptor");
