//! The order cache in a build without it (feature `redis-cache` off, the default `martix`
//! binary): `--order-cache-url` is refused with how to build it in. No `OrderCache` is ever
//! made (`connect` is the only way to one), so the gateway's cache paths are never taken.

use std::time::Duration;

/// No cache: `connect` refuses, so none is made.
#[derive(Clone, Debug)]
pub struct OrderCache {
    _none: (),
}

/// What a lookup found (never made in this build).
pub(crate) struct Lookup {
    pub(crate) hit: Option<Vec<u8>>,
    pub(crate) generation: i64,
}

impl OrderCache {
    /// Always an error: this build has no order cache.
    pub async fn connect(_url: &str, _ttl: Duration) -> Result<Self, String> {
        Err(
            "this martix was built without the order cache: build it with \
             `cargo build --release --features order-cache`"
                .into(),
        )
    }

    pub(crate) fn key(_namespace: &str, _order_id: &str) -> String {
        String::new()
    }

    pub(crate) async fn get(&self, _key: &str, _run_id: &str) -> Option<Lookup> {
        None
    }

    pub async fn bump_generation(&self) {}

    pub(crate) async fn put(&self, _key: &str, _generation: i64, _run_id: &str, _json: &[u8]) {}

    pub(crate) fn skipping(&self) -> bool {
        true
    }
}
