//! Timers: fires durable timers when they come due, reaps activity attempts whose lease ran
//! out (start-to-close or heartbeat timeout), so they are retried per their policy, gives
//! back workflow tasks held for polls that did not come, and forgets idle queues.
//!
//! Timers live in the store; this loop only decides when to look. It sleeps until the
//! earliest timer committed on this node, or at most `timer_poll_interval` (for timers
//! committed on other nodes or before a restart). Firing is a commit that deletes the timer
//! row, so a timer fires once even when several nodes see it due. A clock that jumps ahead (a
//! test environment's) is caught up at once with `Engine::catch_up`, not by this loop.

use crate::engine::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often idle queues' matching entries are looked for (one sweep marks, the next forgets).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Runs the timer loop until `shutdown` is cancelled.
///
/// # Cancel safety
/// Stopping between firings loses nothing: due timers stay in the store.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let poll = engine.config().timer_poll_interval;
    let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
    loop {
        if let Err(e) = engine.fire_due_timers().await {
            tracing::warn!(error = %e, "cannot read due timers");
        }
        if let Err(e) = engine.reap_expired_leases().await {
            tracing::warn!(error = %e, "cannot read expired activity leases");
        }
        if let Err(e) = engine.fire_due_schedules().await {
            tracing::warn!(error = %e, "cannot read due schedules");
        }
        engine.release_stale_holds().await;
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
            engine.sweep_idle_queues();
        }
        let sleep = {
            let mut next = engine.next_timer.lock().unwrap_or_else(|p| p.into_inner());
            let now = engine.now();
            match *next {
                Some(at) if at > now => Duration::from_millis((at - now) as u64).min(poll),
                _ => {
                    *next = None;
                    poll
                }
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = engine.timer_wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Wakes pollers when tasks written for later (a retry's backoff) come due, until `shutdown`
/// is cancelled: one loop for every such task of the node (`Engine::wake_at`).
pub async fn run_wakes(engine: Arc<Engine>, shutdown: CancellationToken) {
    loop {
        let next = engine.wake_due(engine.now());
        let sleep = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis((at - engine.now()).max(1) as u64)
        });
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = engine.wakes_changed.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}
