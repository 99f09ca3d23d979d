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

    /// Fires a due timer (called by the timer loop).
    #[tracing::instrument(name = "timer.fire", skip(self), fields(run_id = %run_id))]
    pub async fn fire_timer(&self, run_id: RunId, key: &str) -> Result<(), EngineError> {
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
