//! Time, passed in so that timers and retries are testable without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch: the engine's one representation of an instant.
pub type Millis = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        d.as_millis() as Millis
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(at)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The wall clock plus however far it was skipped: time passes as usual, and jumps ahead when
/// told ([`SkippableClock::skip`]). For test environments: a month of timers fires at once
/// while leases, backoffs and everything else keep running on real time in between.
#[derive(Debug, Default, Clone)]
pub struct SkippableClock(Arc<AtomicI64>);

impl SkippableClock {
    /// A clock showing the wall clock's time, not skipped yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `ms` for good (a negative `ms` is ignored: the clock never
    /// goes back).
    pub fn skip(&self, ms: i64) {
        self.0.fetch_add(ms.max(0), Ordering::SeqCst);
    }

    /// How far the clock was skipped in all, in milliseconds.
    pub fn skipped(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for SkippableClock {
    fn now(&self) -> Millis {
        SystemClock.now() + self.skipped()
    }
}

pub use martix_proto::time::{from_timestamp, to_timestamp};

/// Milliseconds since the epoch as RFC 3339 with milliseconds (times before 1970 as 1970).
pub fn rfc3339(ms: Millis) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_clock_runs_on_from_where_it_jumped_to_and_never_goes_back() {
        let clock = SkippableClock::new();
        let day = 24 * 3_600_000;
        let before = SystemClock.now();
        clock.skip(30 * day);
        clock.skip(-day);
        let now = clock.now();
        assert_eq!(clock.skipped(), 30 * day);
        assert!(now >= before + 30 * day && now < SystemClock.now() + 30 * day + 1_000);
    }
}
