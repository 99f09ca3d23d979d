//! A read-through cache of settled order views in Redis (`--order-cache-url`).
//!
//! `GET /v1/orders/{id}` builds its answer from the run's description, the head of its
//! history, its result and the read model: about seven reads. Once the order's run is closed
//! and the read model has folded the run's final event, that answer no longer changes for as
//! long as that run stays the order's latest. So the cache holds only such answers, each
//! under the order id with the id of the run it was built from, and a read first asks the
//! store, in one read, which run is the order's latest and whether it is closed. The cached
//! answer is served only when it names that run: a reset (a new latest run) or a purge by
//! retention (no run) makes it unused at once, on every node, with nothing to invalidate.
//! Entries expire after `ttl`, so Redis holds the orders read in the last `ttl` at most.
//!
//! The cache never decides an answer: Redis slow, down or answering garbage means a read
//! builds the view as without a cache (after an error the cache is skipped for a few seconds,
//! so an outage costs each read nothing), with one warning a minute at most.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a Redis command may take before the read goes on without it.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the cache is skipped after an error.
const BACK_OFF: Duration = Duration::from_secs(5);
/// At most one warning about the cache in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The settled order views of one namespace's orders, in Redis.
#[derive(Clone)]
pub struct OrderCache {
    conn: ConnectionManager,
    ttl: Duration,
    health: Arc<Health>,
}

impl std::fmt::Debug for OrderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// When the cache may be used again and when it last warned, in milliseconds since `epoch`.
struct Health {
    epoch: Instant,
    skip_until_ms: AtomicU64,
    warned_at_ms: AtomicU64,
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// What a cached entry says: the run it was built from and the answer's JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub run_id: &'a str,
    pub json: &'a [u8],
}

impl<'a> Entry<'a> {
    /// `<run id>\n<json>`.
    pub(crate) fn encode(run_id: &str, json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(run_id.len() + 1 + json.len());
        out.extend_from_slice(run_id.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(json);
        out
    }

    /// An entry, or None for bytes this cache did not write.
    pub(crate) fn decode(raw: &'a [u8]) -> Option<Self> {
        let cut = raw.iter().position(|b| *b == b'\n')?;
        let run_id = std::str::from_utf8(&raw[..cut]).ok()?;
        let json = &raw[cut + 1..];
        (!run_id.is_empty() && json.first() == Some(&b'{')).then_some(Self { run_id, json })
    }
}

impl OrderCache {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`, or
    /// `rediss://` for TLS is not built in) and checks it answers. Entries live `ttl`.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("order cache URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("order cache: cannot reach Redis: {e}"))?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| format!("order cache: Redis does not answer PING: {e}"))?;
        Ok(Self {
            conn,
            ttl: ttl.max(Duration::from_secs(1)),
            health: Arc::new(Health {
                epoch: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                warned_at_ms: AtomicU64::new(0),
            }),
        })
    }

    /// The key of an order's view.
    pub(crate) fn key(namespace: &str, order_id: &str) -> String {
        // The namespace's length first: no two (namespace, id) pairs share a key.
        format!(
            "martix:order-view:{}:{namespace}:{order_id}",
            namespace.len()
        )
    }

    /// The cached answer for `key` if it was built from `run_id`.
    pub(crate) async fn get(&self, key: &str, run_id: &str) -> Option<Vec<u8>> {
        if self.skipping() {
            return None;
        }
        let mut conn = self.conn.clone();
        let got = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await;
        let raw = match got {
            Ok(Ok(raw)) => raw?,
            Ok(Err(e)) => return self.failed(&e.to_string()),
            Err(_) => return self.failed("no answer in time"),
        };
        match Entry::decode(&raw) {
            Some(e) if e.run_id == run_id => Some(e.json.to_vec()),
            _ => None,
        }
    }

    /// Keeps `json`, built from `run_id`, under `key` for the cache's time to live.
    pub(crate) async fn put(&self, key: &str, run_id: &str, json: &[u8]) {
        if self.skipping() {
            return;
        }
        let mut conn = self.conn.clone();
        let put = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("SET")
                .arg(key)
                .arg(Entry::encode(run_id, json))
                .arg("EX")
                .arg(self.ttl.as_secs())
                .query_async::<()>(&mut conn),
        )
        .await;
        match put {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.failed::<()>(&e.to_string());
            }
            Err(_) => {
                self.failed::<()>("no answer in time");
            }
        }
    }

    fn skipping(&self) -> bool {
        self.health.now_ms() < self.health.skip_until_ms.load(Ordering::Relaxed)
    }

    /// Skips the cache for a while and warns, at most once a minute.
    fn failed<T>(&self, why: &str) -> Option<T> {
        let now = self.health.now_ms();
        self.health
            .skip_until_ms
            .store(now + BACK_OFF.as_millis() as u64, Ordering::Relaxed);
        let warned = self.health.warned_at_ms.load(Ordering::Relaxed);
        if (warned == 0 || now >= warned + WARN_EVERY.as_millis() as u64)
            && self
                .health
                .warned_at_ms
                .compare_exchange(warned, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = why,
                "order cache (Redis) failed: reads build order views without it for {}s",
                BACK_OFF.as_secs()
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_their_run_and_foreign_bytes_are_not_entries() {
        let raw = Entry::encode("run-1", br#"{"a":1}"#);
        assert_eq!(
            Entry::decode(&raw),
            Some(Entry {
                run_id: "run-1",
                json: br#"{"a":1}"#
            })
        );
        assert_eq!(Entry::decode(b"run-1"), None);
        assert_eq!(Entry::decode(b"\n{}"), None);
        assert_eq!(Entry::decode(b"run-1\nnot json"), None);
        assert_eq!(Entry::decode(b"\xff\n{}"), None);
    }

    #[test]
    fn keys_of_different_namespaces_and_ids_differ() {
        assert_ne!(OrderCache::key("a:b", "c"), OrderCache::key("a", "b:c"));
        assert_eq!(
            OrderCache::key("default", "o-1"),
            "martix:order-view:7:default:o-1"
        );
    }
}
