//! Compiles `proto/balagh/v1/*.proto` with protox (a protobuf compiler in Rust), so no system
//! `protoc` is needed, and keeps the encoded descriptor set for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/balagh/v1/common.proto",
        "proto/balagh/v1/catalog.proto",
        "proto/balagh/v1/sla.proto",
        "proto/balagh/v1/ticket.proto",
        "proto/balagh/v1/sync.proto",
        "proto/balagh/v1/reporting.proto",
        "proto/balagh/v1/quality.proto",
        "proto/balagh/v1/satisfaction.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    // `sqlx::migrate!` embeds these directories: a new migration must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("balagh_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::grpc::codec::BalaghCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
