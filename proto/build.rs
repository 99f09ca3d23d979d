//! Compiles `martix/v1/*.proto` with protox (pure Rust, no `protoc` needed) and emits the
//! descriptor set that server reflection serves.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "martix/v1/common.proto",
        "martix/v1/history.proto",
        "martix/v1/command.proto",
        "martix/v1/workflow_service.proto",
        "martix/v1/worker_service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("martix_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
