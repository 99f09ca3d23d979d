//! The Martix gRPC contract, `martix.v1`, and the tonic/prost code generated from it.
//!
//! Everything that crosses a process boundary is defined here: the engine implements the
//! services, the SDK and the CLI call them. The descriptor set is exported for server
//! reflection.

pub mod codec;
pub mod decide_ahead;
pub mod time;
pub mod trace;

/// `martix.v1`: messages and services.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)] // generated code
pub mod v1 {
    tonic::include_proto!("martix.v1");
    include!(concat!(env!("OUT_DIR"), "/martix.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of `martix.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("martix_descriptor");

pub use pbjson_types;
