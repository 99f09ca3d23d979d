//! A read-through cache of settled order views in Redis (`--order-cache-url`).
//!
//! `GET /v1/orders/{id}` builds its answer from the run's description, the head of its
//! history, its result and the read model: about seven reads. Once the order's run is closed
//! and the read model has folded the run's final event, that answer no longer changes for as
//! long as that run stays the order's latest and the read model is not rebuilt. So the cache
//! holds only such answers, each under the order id with the id of the run it was built from
//! and the cache's generation, and a read first asks the store, in one read, which run is the
//! order's latest and whether it is closed. The cached answer is served only when it names
//! that run and the current generation: another run of the id (a duplicate start, a reset, a
//! continue-as-new) or a purge by retention (no run) makes it unused at once, on every node,
//! and a rebuild of the read model moves the generation on (`bump_generation`). The key holds
//! the format's version, so nodes of another version never read an entry they did not write.
//! Entries expire after `ttl`, so Redis holds the orders read in the last `ttl` at most.
//!
//! The cache never decides an answer: Redis slow, down or answering garbage means a read
//! builds the view as without a cache (after an error the cache is skipped for a few seconds,
//! so an outage costs each read nothing), with one warning a minute at most. A connection
//! whose peer vanished without closing is given up after 2 s of unacknowledged data
//! (`TCP_USER_TIMEOUT`), so the cache comes back when Redis does.

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a Redis command may take before the read goes on without it.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the cache is skipped after an error.
const BACK_OFF: Duration = Duration::from_secs(5);
/// At most one warning about the cache in this long.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The entries' format; another format is another key.
const PREFIX: &str = "martix:order-view:v1";
/// The key holding the cache's generation, moved on by a rebuild of the read model.
/// (No entry's key: theirs go on with a number.)
const GENERATION_KEY: &str = "martix:order-view:v1:generation";

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

/// What a cached entry says: the generation and run it was built in and from, and the
/// answer's JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    generation: i64,
    run_id: &'a str,
    json: &'a [u8],
}

impl<'a> Entry<'a> {
    /// `<generation> <run id>\n<json>`.
    pub(crate) fn encode(generation: i64, run_id: &str, json: &[u8]) -> Vec<u8> {
        let mut out = format!("{generation} {run_id}\n").into_bytes();
        out.extend_from_slice(json);
        out
    }

    /// An entry, or None for bytes this cache did not write.
    pub(crate) fn decode(raw: &'a [u8]) -> Option<Self> {
        let cut = raw.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&raw[..cut]).ok()?;
        let (generation, run_id) = head.split_once(' ')?;
        let json = &raw[cut + 1..];
        (!run_id.is_empty() && json.first() == Some(&b'{')).then_some(Self {
            generation: generation.parse().ok()?,
            run_id,
            json,
        })
    }
}

/// What a lookup found: the cached answer, if it was of the run asked about and of the current
/// generation, and the generation to store a freshly built answer under.
pub(crate) struct Lookup {
    pub(crate) hit: Option<Vec<u8>>,
    pub(crate) generation: i64,
}

impl OrderCache {
    /// The cache in the Redis at `url` (`redis://[:password@]host:port[/db]`; TLS is not
    /// built in: keep Redis on a private network). Entries live `ttl`. Only a URL that does
    /// not parse is an error: a Redis that does not answer yet is warned about, and the cache
    /// is used once it does.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, String> {
        let info = url
            .into_connection_info()
            .map_err(|e| format!("order cache URL: {e}"))?
            .set_tcp_settings(
                TcpSettings::default()
                    .set_nodelay(true)
                    .set_keepalive(TcpKeepalive::new().with_time(Duration::from_secs(10)))
                    .set_user_timeout(Duration::from_secs(2)),
            );
        let client = redis::Client::open(info).map_err(|e| format!("order cache URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("order cache: {e}"))?;
        let cache = Self {
            conn,
            ttl: ttl.max(Duration::from_secs(1)),
            health: Arc::new(Health {
                epoch: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                warned_at_ms: AtomicU64::new(0),
            }),
        };
        let mut conn = cache.conn.clone();
        let ping = tokio::time::timeout(
            Duration::from_secs(3),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                cache.failed::<()>(&e.to_string());
            }
            Err(_) => {
                cache.failed::<()>("no answer to PING in 3 s");
            }
        }
        Ok(cache)
    }

    /// The key of an order's view.
    pub(crate) fn key(namespace: &str, order_id: &str) -> String {
        // The namespace's length first: no two (namespace, id) pairs share a key.
        format!("{PREFIX}:{}:{namespace}:{order_id}", namespace.len())
    }

    /// The cached answer for `key` if it was built from `run_id` in the current generation;
    /// None when the cache is skipped.
    pub(crate) async fn get(&self, key: &str, run_id: &str) -> Option<Lookup> {
        if self.skipping() {
            return None;
        }
        let mut conn = self.conn.clone();
        let got = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("MGET")
                .arg(GENERATION_KEY)
                .arg(key)
                .query_async::<(Option<i64>, Option<Vec<u8>>)>(&mut conn),
        )
        .await;
        let (generation, raw) = match got {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return self.failed(&e.to_string()),
            Err(_) => return self.failed("no answer in time"),
        };
        let generation = generation.unwrap_or(0);
        let hit = raw.as_deref().and_then(Entry::decode).and_then(|e| {
            (e.run_id == run_id && e.generation == generation).then(|| e.json.to_vec())
        });
        Some(Lookup { hit, generation })
    }

    /// Moves the generation on: every entry kept so far is unused from now on. Called after
    /// the read model was rebuilt.
    pub async fn bump_generation(&self) {
        let mut conn = self.conn.clone();
        let bumped = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("INCR")
                .arg(GENERATION_KEY)
                .query_async::<i64>(&mut conn),
        )
        .await;
        if !matches!(bumped, Ok(Ok(_))) {
            tracing::warn!(
                "order cache (Redis) did not take the rebuild's new generation: views cached \
                 before the rebuild may be answered until they expire (--order-cache-ttl); \
                 run FLUSHDB on the cache's Redis database to drop them now"
            );
        }
    }

    /// Keeps `json`, built from `run_id` in `generation`, under `key` for the cache's time to
    /// live.
    pub(crate) async fn put(&self, key: &str, generation: i64, run_id: &str, json: &[u8]) {
        if self.skipping() {
            return;
        }
        let mut conn = self.conn.clone();
        let put = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("SET")
                .arg(key)
                .arg(Entry::encode(generation, run_id, json))
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

    /// Whether the cache is being skipped after an error.
    pub(crate) fn skipping(&self) -> bool {
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
    fn entries_name_their_generation_and_run_and_foreign_bytes_are_not_entries() {
        let raw = Entry::encode(3, "run-1", br#"{"a":1}"#);
        assert_eq!(
            Entry::decode(&raw),
            Some(Entry {
                generation: 3,
                run_id: "run-1",
                json: br#"{"a":1}"#
            })
        );
        assert_eq!(Entry::decode(b"3 run-1"), None);
        assert_eq!(Entry::decode(b"run-1\n{}"), None);
        assert_eq!(Entry::decode(b"3 \n{}"), None);
        assert_eq!(Entry::decode(b"x run-1\n{}"), None);
        assert_eq!(Entry::decode(b"3 run-1\nnot json"), None);
        assert_eq!(Entry::decode(b"3 \xff\n{}"), None);
    }

    #[test]
    fn keys_of_different_namespaces_and_ids_differ() {
        assert_ne!(OrderCache::key("a:b", "c"), OrderCache::key("a", "b:c"));
        assert_eq!(
            OrderCache::key("default", "o-1"),
            "martix:order-view:v1:7:default:o-1"
        );
    }
}
