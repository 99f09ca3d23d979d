//! The history limits, held on every change that appends: a run's history may hold at most
//! `max_history_events` events and `max_history_bytes` bytes, and at most
//! `max_buffered_events` / `max_buffered_bytes` may wait for its workflow task. What happens
//! to a change over them depends on who asked for it: a change the workflow's own progress
//! makes (a workflow task's commands, an activity's result, a timer) terminates the run with the
//! reason, since the run cannot go on without it; a signal or a cancellation request, which
//! anyone with a client token may send, is refused and the run keeps going.

use super::Engine;
use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::{self, Decided, Run};

/// What a change that would pass a history limit becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OverLimit {
    /// The run is terminated instead, with the reason.
    Terminate,
    /// The change is refused; the run is left as it was.
    Refuse,
}

impl Engine {
    /// Why `after` (a change's run, not closed) is over a history limit, if it is.
    pub(super) fn over_history_limit(&self, after: &Run) -> Option<String> {
        let len = after.next_event_id - 1;
        let bytes = after.state.history_bytes + after.state.buffered_bytes() as i64;
        if len > self.config.max_history_events {
            Some(format!(
                "the history would hold {len} events, over the limit of {}",
                self.config.max_history_events
            ))
        } else if bytes > self.config.max_history_bytes {
            Some(format!(
                "the history would hold {bytes} bytes, over the limit of {}",
                self.config.max_history_bytes
            ))
        } else {
            None
        }
    }

    /// Holds a decided change to the history limits (see the module): the change as decided,
    /// the run terminated instead, or an error for the caller.
    pub(super) fn hold_to_limits(
        &self,
        run: &Run,
        decided: Decided,
        now: Millis,
        over: OverLimit,
    ) -> Result<Decided, EngineError> {
        let after = &decided.commit.run;
        if decided.commit.closed {
            return Ok(decided);
        }
        if let Some(why) = self.over_history_limit(after) {
            return match over {
                OverLimit::Refuse => Err(EngineError::FailedPrecondition(format!(
                    "workflow {} run {}: {why}; the request is refused (the run continues)",
                    run.workflow_id, run.run_id
                ))),
                OverLimit::Terminate => Ok(self.terminate_over_limit(run, &why, now)?),
            };
        }
        let buffered = after.state.buffered.len();
        if over == OverLimit::Refuse
            && buffered > run.state.buffered.len()
            && (buffered > self.config.max_buffered_events
                || after.state.buffered_bytes() > self.config.max_buffered_bytes)
        {
            return Err(EngineError::Unavailable(format!(
                "workflow {} run {} has {} events waiting for its workflow task, the most it \
                 holds; try again once the task is done",
                run.workflow_id,
                run.run_id,
                run.state.buffered.len()
            )));
        }
        self.warn_long_history(run, after);
        Ok(decided)
    }

    /// The run terminated because a change would take it over a limit (`why`).
    pub(super) fn terminate_over_limit(
        &self,
        run: &Run,
        why: &str,
        now: Millis,
    ) -> Result<Decided, EngineError> {
        let reason =
            format!("{why}: the run is terminated; a workflow this long should continue as new");
        tracing::warn!(run_id = %run.run_id, "{reason}");
        Ok(history::terminate(run, &reason, "martix-engine", now)?.into())
    }

    /// Warns as a run's history nears its limits: once when it passes a fifth of either, then
    /// once per thousand events or per megabyte.
    pub(super) fn warn_long_history(&self, before: &Run, after: &Run) {
        let (was, len) = (before.next_event_id - 1, after.next_event_id - 1);
        let warn_events = self.config.warn_history_events;
        let events = len > warn_events && (was <= warn_events || was / 1000 != len / 1000);
        let warn_bytes = self.config.max_history_bytes / 5;
        let (was_b, bytes) = (before.state.history_bytes, after.state.history_bytes);
        const MIB: i64 = 1024 * 1024;
        let size = bytes > warn_bytes && (was_b <= warn_bytes || was_b / MIB != bytes / MIB);
        if events || size {
            tracing::warn!(
                run_id = %after.run_id,
                events = len,
                bytes,
                max_events = self.config.max_history_events,
                max_bytes = self.config.max_history_bytes,
                "long history: continue as new before a limit terminates the run"
            );
        }
    }
}
