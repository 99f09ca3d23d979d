//! Writing a run's change: the one path by which every change of a run reaches the store.
//! `update` takes the run (from this node's cache when it has it), lets the caller decide with
//! the pollers waiting on this node, and writes; when the store refuses the write because the
//! run moved on, it decides again from the store's copy, up to `MAX_CONFLICT_RETRIES` times.
//! `write` runs the commit in a task of its own, so that the commit and what follows it happen
//! together even if the caller goes away: the tasks the decision leased to waiting pollers are
//! delivered, other pollers are woken, timers armed, and a close announced to result waiters.
//! What a change is, and who holds its tasks, belongs to `history`; this module guarantees
//! that a change is written only onto the version of the run it was decided on (the store
//! checks), as decided, and that what follows a commit happens with it.

use super::Engine;
use super::limits::OverLimit;
use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::{Decided, Run, RunCommit, TaskOp, TimerOp, ToPoller};
use crate::ids::RunId;
use crate::matching::{QueueKey, Reserved, TaskKind};
use crate::store::StoreError;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::Instrument;

/// Distinct times of delayed wake-ups a node keeps (see `Engine::wake_at`).
const MAX_DELAYED_WAKES: usize = 10_000;
/// How far ahead a delayed wake-up is kept: an hour.
const MAX_WAKE_AHEAD_MS: Millis = 3_600_000;

/// How often a conflicting change is redone before giving up with UNAVAILABLE.
pub(super) const MAX_CONFLICT_RETRIES: usize = 20;

impl Engine {
    /// Reads the run, decides, commits; redoes it when the run changed in between. `decide`
    /// is given the run, the time and the pollers waiting on this node (to pass to `history` in
    /// its `Dispatch`); what its decision leases to the reporting worker is its own to hand
    /// over, what it leases to pollers is delivered here once written.
    ///
    /// A change that would take the run over a history limit terminates the run instead (see
    /// `limits`); [`Engine::update_refusing`] refuses it.
    pub(super) async fn update<T, D>(&self, run_id: RunId, decide: D) -> Result<T, EngineError>
    where
        D: FnMut(&Run, Millis, &mut Reserved) -> Result<(Option<Decided>, T), EngineError>,
    {
        self.update_within(run_id, OverLimit::Terminate, decide)
            .await
    }

    /// As `update`, for a change anyone may ask for (a signal, a cancellation request): one
    /// that would take the run over a history limit, or past what may wait for its workflow
    /// task, is refused and the run left as it was.
    pub(super) async fn update_refusing<T, D>(
        &self,
        run_id: RunId,
        decide: D,
    ) -> Result<T, EngineError>
    where
        D: FnMut(&Run, Millis, &mut Reserved) -> Result<(Option<Decided>, T), EngineError>,
    {
        self.update_within(run_id, OverLimit::Refuse, decide).await
    }

    async fn update_within<T, D>(
        &self,
        run_id: RunId,
        over: OverLimit,
        mut decide: D,
    ) -> Result<T, EngineError>
    where
        D: FnMut(&Run, Millis, &mut Reserved) -> Result<(Option<Decided>, T), EngineError>,
    {
        let mut trust_cache = true;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let cached = if trust_cache {
                self.cached(run_id)
            } else {
                None
            };
            let from_cache = cached.is_some();
            let run = match cached {
                Some(run) => run,
                None => self.load(run_id).await?,
            };
            let mut pollers = self.matching.reserving();
            let now = self.now();
            let decided = decide(&run, now, &mut pollers).and_then(|(d, out)| match d {
                Some(d) => Ok((Some(self.hold_to_limits(&run, d, now, over)?), out)),
                None => Ok((None, out)),
            });
            let (decided, out) = match decided {
                Ok((Some(decided), out)) => (decided, out),
                Ok((None, out)) if !from_cache => return Ok(out),
                Err(e) if !from_cache => return Err(e),
                // Nothing to write, or refused, on the strength of the cached checkpoint:
                // decide again from the store (another node may have moved the run on).
                _ => {
                    trust_cache = false;
                    continue;
                }
            };
            match self.write(decided, pollers).await {
                // A request id recorded before: the change was applied then.
                Ok(()) | Err(StoreError::Duplicate) => return Ok(out),
                Err(StoreError::Conflict { .. }) => {
                    trust_cache = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Unavailable(format!(
            "run {run_id} kept changing concurrently; try again"
        )))
    }

    /// Writes a decided change, then hands its tasks to the pollers it leased them to (taken
    /// from `pollers`, which gives back any other it holds). What it leased to the reporting
    /// worker is the caller's to hand over (taken out of `decided` before).
    ///
    /// Runs in its own task: a queued commit is written even if the caller goes away (a client
    /// disconnect drops its request), and what follows a commit (handing tasks to the pollers
    /// taken for them, waking others, arming timers) must happen with it.
    pub(super) async fn write(
        &self,
        decided: Decided,
        pollers: Reserved,
    ) -> Result<(), StoreError> {
        let Some(me) = self.me.upgrade() else {
            return Err(StoreError::Unavailable("the engine is stopping".into()));
        };
        tokio::spawn(async move { me.write_now(decided, pollers).await }.in_current_span())
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("commit task failed: {e}"))))
    }

    async fn write_now(&self, decided: Decided, mut pollers: Reserved) -> Result<(), StoreError> {
        let Decided {
            commit,
            to_reporter,
            to_pollers,
        } = decided;
        debug_assert!(
            to_reporter.is_empty(),
            "the tasks leased to the reporting worker are its caller's to hand over"
        );
        let span = tracing::info_span!(
            "store.commit",
            run_id = %commit.run.run_id,
            events = commit.events.len()
        );
        let began = Instant::now();
        let commit = Arc::new(commit);
        let result = self
            .store
            .commit_shared(commit.clone())
            .instrument(span)
            .await;
        if result.is_ok() && !commit.outbox.is_empty() {
            self.outbox_wake.notify_one();
        }
        self.metrics.commit(
            began.elapsed(),
            matches!(result, Err(StoreError::Conflict { .. })),
        );
        match &result {
            Ok(()) => self.remember(&commit),
            Err(_) => self.forget(commit.run.run_id),
        }
        // On a failure, dropping `pollers` gives back every poller taken for the change.
        result?;
        if commit.closed {
            self.metrics.closed(&commit.run);
        }
        if let Some(next) = &commit.new_run {
            self.metrics.started(&next.run.workflow_type);
        }
        self.after_commit(&commit, to_pollers, &mut pollers);
        Ok(())
    }

    /// After a commit: deliver the tasks leased to pollers, wake pollers for the rest, arm
    /// timers.
    fn after_commit(&self, commit: &RunCommit, to_pollers: Vec<ToPoller>, pollers: &mut Reserved) {
        let now = self.now();
        for ToPoller { poller, task } in to_pollers {
            pollers.deliver(poller, task, now);
        }
        let one = |c: &RunCommit| {
            let ns = &c.run.namespace;
            if let Some(wft) = &c.run.wft
                && wft.lease.is_none()
            {
                self.wake_at(
                    QueueKey::new(ns, &wft.queue, TaskKind::Workflow),
                    wft.visible_at,
                );
            }
            for op in &c.tasks {
                match op {
                    TaskOp::Insert(t) if t.lease.is_none() => self.wake_at(
                        QueueKey::new(ns, &t.task_queue, TaskKind::Activity),
                        t.visible_at,
                    ),
                    TaskOp::RetryNow {
                        scheduled_event_id,
                        visible_at,
                        ..
                    }
                    | TaskOp::Hold {
                        scheduled_event_id,
                        visible_at,
                    }
                    | TaskOp::Unpark {
                        scheduled_event_id,
                        visible_at,
                        ..
                    } => {
                        if let Some(a) = c.run.activity(*scheduled_event_id) {
                            self.wake_at(
                                QueueKey::new(ns, &a.task_queue, TaskKind::Activity),
                                *visible_at,
                            );
                        }
                    }
                    TaskOp::Retry { visible_at, .. } => {
                        if let Some(a) = c
                            .run
                            .state
                            .activities
                            .iter()
                            .find(|a| a.next_attempt_time == *visible_at)
                        {
                            self.wake_at(
                                QueueKey::new(ns, &a.task_queue, TaskKind::Activity),
                                *visible_at,
                            );
                        }
                    }
                    _ => {}
                }
            }
            for op in &c.timers {
                if let TimerOp::Insert { fire_at, .. } = op {
                    self.arm_timer(*fire_at);
                }
            }
            for t in &c.foreign_timers {
                self.arm_timer(t.fire_at);
            }
            if c.closed {
                self.announce_close(&c.run, c.events.last());
            }
        };
        let updated = commit.closed
            || commit.events.iter().any(|e| {
                matches!(
                    e.attributes,
                    Some(martix_proto::v1::history_event::Attributes::WorkflowUpdateCompleted(_))
                )
            });
        if updated {
            self.updates_changed.notify_waiters();
        }
        one(commit);
        if let Some(next) = commit.new_run.as_deref() {
            one(next);
        }
    }

    /// Wakes a poller of `key` at `at` (now if it is due): a task written for later. Kept in
    /// one map for the wake loop (`timers::run_wakes`), at most `MAX_DELAYED_WAKES` times
    /// and `MAX_WAKE_AHEAD` ahead: past those, waiting pollers find the task by their
    /// periodic look in the store instead (a second later at most).
    fn wake_at(&self, key: QueueKey, at: Millis) {
        let now = self.now();
        if at <= now {
            self.matching.notify(&key);
            return;
        }
        if at - now > MAX_WAKE_AHEAD_MS {
            return;
        }
        let mut wakes = self.delayed_wakes.lock().unwrap_or_else(|p| p.into_inner());
        if wakes.len() >= MAX_DELAYED_WAKES && !wakes.contains_key(&at) {
            return;
        }
        let earliest = wakes.first_key_value().is_none_or(|(first, _)| at < *first);
        wakes.entry(at).or_default().insert(key);
        drop(wakes);
        if earliest {
            self.wakes_changed.notify_one();
        }
    }

    /// Wakes the queues whose delayed tasks are due at `now`; returns when the next one is.
    pub(crate) fn wake_due(&self, now: Millis) -> Option<Millis> {
        let due = {
            let mut wakes = self.delayed_wakes.lock().unwrap_or_else(|p| p.into_inner());
            let later = wakes.split_off(&(now + 1));
            std::mem::replace(&mut *wakes, later)
        };
        for key in due.into_values().flatten() {
            self.matching.notify(&key);
        }
        self.delayed_wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_key_value()
            .map(|(at, _)| *at)
    }

    pub(super) fn arm_timer(&self, fire_at: Millis) {
        let mut next = self.next_timer.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_none_or(|n| fire_at < n) {
            *next = Some(fire_at);
            self.timer_wake.notify_one();
        }
    }
}
