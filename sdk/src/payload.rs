//! Payloads: values crossing the wire as bytes with an encoding. The SDK uses JSON.

use martix_proto::v1::Payload;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The encoding the SDK writes and reads.
pub const JSON: &str = "json/plain";

/// Encodes a value as a JSON payload.
///
/// ```
/// let p = martix_sdk::payload::to_payload(&42).unwrap();
/// assert_eq!(p.data, b"42");
/// ```
pub fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
    Ok(Payload {
        encoding: JSON.into(),
        data: serde_json::to_vec(value)?,
    })
}

/// Decodes a JSON payload; a missing payload reads as JSON `null`.
///
/// ```
/// let p = martix_sdk::payload::to_payload(&vec![1, 2]).unwrap();
/// let v: Vec<u8> = martix_sdk::payload::from_payload(Some(&p)).unwrap();
/// assert_eq!(v, [1, 2]);
/// ```
pub fn from_payload<T: DeserializeOwned>(
    payload: Option<&Payload>,
) -> Result<T, serde_json::Error> {
    match payload {
        Some(p) if !p.data.is_empty() => serde_json::from_slice(&p.data),
        _ => serde_json::from_slice(b"null"),
    }
}
