//! Compiles `martix/v1/*.proto` with protox (pure Rust, no `protoc` needed), emits the
//! descriptor set that server reflection serves, and generates proto3 JSON (serde) with pbjson.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "martix/v1/common.proto",
        "martix/v1/history.proto",
        "martix/v1/command.proto",
        "martix/v1/schedule.proto",
        "martix/v1/workflow_service.proto",
        "martix/v1/worker_service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = fds.encode_to_vec();
    std::fs::write(out.join("martix_descriptor.bin"), &descriptor)?;
    // Well-known types from pbjson-types, so every message also has canonical proto3 JSON.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Malformed request bytes are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor)?
        .build(&[".martix"])?;
    Ok(())
}
