//! The Martix SDK.
