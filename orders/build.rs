//! Compiles `martix/v1/order_service.proto` (package `martix.v1`, so existing clients keep
//! their paths) with protox, emits its descriptor set for reflection and proto3 JSON (serde).

use prost::Message;

include!("../migrations/embed.rs");
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/martix/v1/order_service.proto";
    println!("cargo:rerun-if-changed={file}");
    embed_migrations(&[
        ("orders_postgres", "../migrations/orders/postgres"),
        ("orders_sqlite", "../migrations/orders/sqlite"),
    ]);
    let fds = protox::compile([file], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = fds.encode_to_vec();
    std::fs::write(out.join("orders_descriptor.bin"), &descriptor)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .codec_path("::martix_proto::codec::Codec")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor)?
        .build(&[".martix"])?;
    Ok(())
}
