//! What the timer loop (`crate::timers`) asks of the engine when time runs out: activity
//! attempts whose lease expired are recorded as timed out (and retried per their policy), and
//! due timers fire. Both are changes like any other, decided by `history` and written through
//! `commit`, so a lease or timer that a worker or another node dealt with first is left alone.

use super::Engine;
use crate::error::EngineError;
use crate::history::{self, Dispatch, TOKEN_KIND_ACTIVITY, TaskToken};
use crate::ids::RunId;
use martix_proto::v1 as pb;

impl Engine {
    /// Records the attempts whose lease ran out as timed out, and retries them per their
    /// policy (called by the timer loop). An attempt completed meanwhile is left alone.
    pub async fn reap_expired_leases(&self) -> Result<usize, EngineError> {
        let expired = self.store.expired_activity_leases(self.now(), 256).await?;
        let n = expired.len();
        for e in expired {
            let token = TaskToken {
                namespace: e.namespace.clone(),
                run_id: e.run_id.to_text(),
                kind: TOKEN_KIND_ACTIVITY,
                scheduled_event_id: e.scheduled_event_id,
                attempt: e.attempt,
                lease_id: e.lease_id.clone(),
                history_len: 0,
            };
            let (kind, what) = if e.heartbeat {
                (
                    "HeartbeatTimeout",
                    "no heartbeat within the heartbeat timeout",
                )
            } else {
                (
                    "StartToCloseTimeout",
                    "the attempt did not finish within its start-to-close timeout",
                )
            };
            let failure = pb::Failure {
                message: format!("attempt {} timed out: {what}", e.attempt),
                r#type: kind.into(),
                ..Default::default()
            };
            let jitter: f64 = rand::random();
            let result = self
                .activity_update(
                    e.run_id,
                    e.scheduled_event_id,
                    "timed_out",
                    |run, now, d| {
                        history::fail_activity(
                            run,
                            &token,
                            failure.clone(),
                            "engine",
                            now,
                            jitter,
                            true,
                            d,
                        )
                    },
                )
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(run_id = %e.run_id, attempt = e.attempt, kind, "activity attempt timed out")
                }
                Err(EngineError::NotFound(_)) => {}
                Err(err) => {
                    tracing::warn!(run_id = %e.run_id, error = %err, "cannot record an activity timeout")
                }
            }
        }
        Ok(n)
    }

    /// Fires every timer due by the engine's clock, in batches until none is left (called by
    /// the timer loop); returns how many fired. A timer that cannot be fired now is logged and
    /// left for the next look.
    pub async fn fire_due_timers(&self) -> Result<usize, EngineError> {
        const BATCH: usize = 256;
        let mut fired = 0;
        loop {
            let due = self.store.due_timers(self.now(), BATCH).await?;
            let full = due.len() == BATCH;
            for t in due {
                match self.fire_timer(t.run_id, &t.key).await {
                    Ok(()) => fired += 1,
                    Err(e) => {
                        tracing::warn!(run_id = %t.run_id, timer = %t.key, error = %e, "timer not fired; will retry")
                    }
                }
            }
            if !full {
                return Ok(fired);
            }
        }
    }

    /// Catches up with a clock that jumped ahead (a test environment's skipped clock): fires
    /// the timers now due, acts on the schedules whose time came, records the activity
    /// attempts whose lease ran out, and wakes the pollers of tasks written for a time now past
    /// (a retry's backoff); returns once all of that is committed, with the number of timers
    /// fired. The timer loops do the same on
    /// their own, but only once their sleep on real time (up to `timer_poll_interval`) ends.
    pub async fn catch_up(&self) -> Result<usize, EngineError> {
        let fired = self.fire_due_timers().await?;
        self.fire_due_schedules().await?;
        self.reap_expired_leases().await?;
        self.wake_due(self.now());
        // The wake loop sleeps towards a wake-up that may be past now: let it look again.
        self.wakes_changed.notify_one();
        Ok(fired)
    }

    /// Fires a due timer (called by the timer loop).
    #[tracing::instrument(name = "timer.fire", skip(self), fields(run_id = %run_id))]
    pub async fn fire_timer(&self, run_id: RunId, key: &str) -> Result<(), EngineError> {
        if let Some(done) = self.fire_family_timer(run_id, key).await {
            return done;
        }
        // A schedule-to-start timeout only counts if no worker holds the activity.
        let started = if let Some(id) = key
            .strip_prefix("a:")
            .and_then(|r| r.strip_suffix(":s2s"))
            .and_then(|id| id.parse::<i64>().ok())
        {
            let now = self.now();
            self.store
                .activity_leases(run_id)
                .await?
                .iter()
                .any(|l| l.scheduled_event_id == id && l.lease_until.is_some_and(|u| u > now))
        } else {
            false
        };
        let result = self
            .update(run_id, |run, now, pollers| {
                let d = Dispatch::pollers(pollers, now);
                match history::fire_timer(run, key, now, started, d) {
                    Some(c) => Ok((Some(c), true)),
                    None => Ok((None, false)),
                }
            })
            .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Ok(self.store.delete_timer(run_id, key).await?),
            // Fired by another node meanwhile.
            Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
