//! Fair use: token buckets per identity and per namespace, and a cap on the long polls one
//! identity may hold open. A refusal carries how long to wait.

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rate: `per_sec` tokens a second, up to `burst` at once. `per_sec == 0`: unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// `per_sec` a second with a burst of twice that.
    pub const fn per_sec(per_sec: u32) -> Rate {
        Rate {
            per_sec,
            burst: per_sec.saturating_mul(2),
        }
    }

    fn quota(self) -> Option<Quota> {
        let per_sec = NonZeroU32::new(self.per_sec)?;
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(per_sec);
        Some(Quota::per_second(per_sec).allow_burst(burst))
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `100` (burst 200), `100/500` (burst 500) or `0` (unlimited).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a rate: write PER_SEC or PER_SEC/BURST, 0 for none");
        match s.split_once('/') {
            None => Ok(Rate::per_sec(s.trim().parse().map_err(|_| bad())?)),
            Some((r, b)) => Ok(Rate {
                per_sec: r.trim().parse().map_err(|_| bad())?,
                burst: b.trim().parse().map_err(|_| bad())?,
            }),
        }
    }
}

/// The limits of one node.
#[derive(Clone, Debug)]
pub struct LimitsConfig {
    /// Requests of one identity, all operations but long polls.
    pub requests_per_identity: Rate,
    /// Workflow starts of one identity.
    pub starts_per_identity: Rate,
    /// Workflow starts into one namespace, all identities together.
    pub starts_per_namespace: Rate,
    /// Long polls one identity may hold open at once (0: unlimited).
    pub max_polls_per_identity: usize,
    /// How long a request that does not wait by design may run (0: no deadline).
    pub request_timeout: Duration,
    /// Failed authentications from one peer address; past them the address is refused
    /// without its token being looked at until the limiter says when.
    pub failed_auth_per_peer: Rate,
    /// Connections each port holds at once; one more is closed as it is accepted (0: none).
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) on one gRPC connection.
    pub max_streams_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_identity: Rate::per_sec(5_000),
            starts_per_identity: Rate::per_sec(2_000),
            starts_per_namespace: Rate::per_sec(10_000),
            max_polls_per_identity: 1_000,
            request_timeout: Duration::from_secs(30),
            failed_auth_per_peer: Rate {
                per_sec: 10,
                burst: 50,
            },
            max_connections: 4_096,
            max_streams_per_connection: 1_024,
        }
    }
}

impl LimitsConfig {
    /// No rate limits at all (benchmarks, some tests).
    pub fn unlimited() -> Self {
        Self {
            requests_per_identity: Rate::UNLIMITED,
            starts_per_identity: Rate::UNLIMITED,
            starts_per_namespace: Rate::UNLIMITED,
            max_polls_per_identity: 0,
            request_timeout: Duration::ZERO,
            failed_auth_per_peer: Rate::UNLIMITED,
            max_connections: 0,
            max_streams_per_connection: 1_024,
        }
    }
}

/// A request over a limit (RESOURCE_EXHAUSTED, HTTP 429).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("rate limit exceeded ({what}); retry after {} ms", retry_after.as_millis())]
pub struct Limited {
    pub what: &'static str,
    pub retry_after: Duration,
}

struct Bucket {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    what: &'static str,
}

impl Bucket {
    fn new(rate: Rate, what: &'static str) -> Self {
        Self {
            limiter: rate.quota().map(DefaultKeyedRateLimiter::keyed),
            what,
        }
    }

    fn take(&self, key: &str) -> Result<(), Limited> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&key.to_owned()).map_err(|not_until| Limited {
            what: self.what,
            retry_after: not_until
                .wait_time_from(l.clock().now())
                .max(Duration::from_millis(1)),
        })
    }

    fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The rate limiter and long-poll counter of one node.
pub struct Limiter {
    requests: Bucket,
    starts_identity: Bucket,
    starts_namespace: Bucket,
    max_polls: usize,
    polls: Arc<Mutex<HashMap<String, usize>>>,
    checks: AtomicU64,
    pub(crate) request_timeout: Duration,
    failed_auth: Bucket,
    /// Peers past their failed-authentication budget, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    pub(crate) max_connections: usize,
    pub(crate) max_streams_per_connection: u32,
}

/// Most peers remembered as blocked; past it the oldest expired go, and if none has, a new
/// one is only rate-limited (not remembered), so memory stays bounded under a spread attack.
const MAX_BLOCKED_PEERS: usize = 10_000;

/// Holds one of an identity's long-poll slots until dropped.
pub struct PollSlot {
    polls: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = polls.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                polls.remove(&self.key);
            }
        }
    }
}

impl Limiter {
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            requests: Bucket::new(config.requests_per_identity, "requests per identity"),
            starts_identity: Bucket::new(config.starts_per_identity, "starts per identity"),
            starts_namespace: Bucket::new(config.starts_per_namespace, "starts per namespace"),
            max_polls: config.max_polls_per_identity,
            polls: Arc::default(),
            checks: AtomicU64::new(0),
            request_timeout: config.request_timeout,
            failed_auth: Bucket::new(
                config.failed_auth_per_peer,
                "failed authentications per address",
            ),
            blocked: Mutex::default(),
            max_connections: config.max_connections,
            max_streams_per_connection: config.max_streams_per_connection,
        }
    }

    /// Refuses `peer` while it is past its failed-authentication budget: its token is not even
    /// verified then.
    pub fn auth_allowed(&self, peer: IpAddr) -> Result<(), Limited> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&peer) {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Err(Limited {
                    what: self.failed_auth.what,
                    retry_after: left,
                }),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Counts a failed authentication of `peer`; past the budget the peer is blocked for the
    /// time the bucket gives, and that refusal is returned.
    pub fn auth_failed(&self, peer: IpAddr) -> Result<(), Limited> {
        let Err(limited) = self.failed_auth.take(&peer.to_string()) else {
            return Ok(());
        };
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if blocked.len() >= MAX_BLOCKED_PEERS {
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < MAX_BLOCKED_PEERS {
            blocked.insert(peer, now + limited.retry_after);
        }
        Err(limited)
    }

    /// Counts one request of `identity` (not a long poll).
    pub fn request(&self, identity: &str) -> Result<(), Limited> {
        // Buckets of identities gone quiet are dropped now and then, so memory stays bounded.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 65_536 == 65_535 {
            self.requests.forget_idle();
            self.starts_identity.forget_idle();
            self.starts_namespace.forget_idle();
            self.failed_auth.forget_idle();
            let now = Instant::now();
            self.blocked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, until| *until > now);
        }
        self.requests.take(identity)
    }

    /// Counts one workflow start of `identity` into `namespace`.
    pub fn start(&self, identity: &str, namespace: &str) -> Result<(), Limited> {
        self.starts_identity.take(identity)?;
        self.starts_namespace.take(namespace)
    }

    /// Takes a long-poll slot of `identity`, or refuses when it holds its maximum.
    pub fn poll(&self, identity: &str) -> Result<PollSlot, Limited> {
        let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        let n = polls.entry(identity.to_owned()).or_default();
        if self.max_polls > 0 && *n >= self.max_polls {
            return Err(Limited {
                what: "concurrent long polls per identity",
                retry_after: Duration::from_secs(1),
            });
        }
        *n += 1;
        Ok(PollSlot {
            polls: self.polls.clone(),
            key: identity.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_limits_one_key_and_not_another() {
        let l = Limiter::new(&LimitsConfig {
            requests_per_identity: Rate {
                per_sec: 1,
                burst: 3,
            },
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            l.request("a").unwrap();
        }
        let e = l.request("a").unwrap_err();
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_secs(1));
        l.request("b").unwrap();
    }

    #[test]
    fn poll_slots_are_returned_on_drop() {
        let l = Limiter::new(&LimitsConfig {
            max_polls_per_identity: 2,
            ..LimitsConfig::default()
        });
        let a = l.poll("w").unwrap();
        let _b = l.poll("w").unwrap();
        assert!(l.poll("w").is_err());
        l.poll("other").unwrap();
        drop(a);
        l.poll("w").unwrap();
    }

    #[test]
    fn a_peer_failing_to_authenticate_is_blocked_then_let_back() {
        let l = Limiter::new(&LimitsConfig {
            failed_auth_per_peer: Rate {
                per_sec: 20,
                burst: 2,
            },
            ..LimitsConfig::default()
        });
        let (bad, good): (IpAddr, IpAddr) = (
            "203.0.113.9".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        );
        l.auth_failed(bad).unwrap();
        l.auth_failed(bad).unwrap();
        l.auth_allowed(bad).unwrap();
        let e = l.auth_failed(bad).unwrap_err();
        assert!(e.what.contains("failed authentications"));
        let refused = l.auth_allowed(bad).unwrap_err();
        assert!(
            refused.retry_after <= Duration::from_millis(50),
            "{refused:?}"
        );
        l.auth_allowed(good).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        l.auth_allowed(bad).unwrap();
    }

    #[test]
    fn rates_parse() {
        assert_eq!("100".parse::<Rate>().unwrap(), Rate::per_sec(100));
        assert_eq!(
            "5/9".parse::<Rate>().unwrap(),
            Rate {
                per_sec: 5,
                burst: 9
            }
        );
        assert!("x".parse::<Rate>().is_err());
        assert!(Rate::UNLIMITED.quota().is_none());
    }
}
