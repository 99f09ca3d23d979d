//! Decide-ahead: a worker completing an activity may send the workflow's next decision, made
//! on its own copy of the history. The decision is recorded with the result as one change only
//! if that copy was the whole history (the run's sticky worker, no workflow task, nothing
//! buffered, the same length) and its time is plausible; otherwise the result is recorded alone
//! and the decision is made again in a workflow task, as if it had never been sent. This module
//! checks the decision and decides whether it fits; the completion itself is `completion`'s, and
//! the request is answered by `worker`. Which events the worker expected for the result is
//! agreed in `martix_proto::decide_ahead`.

use super::Engine;
use super::completion::Completion;
use super::requests::sticky_queue_field;
use crate::clock::{Millis, from_timestamp};
use crate::error::EngineError;
use crate::history::{self, Lease, Run, RunCommit, TaskToken};
use crate::ids::TaskQueue;
use martix_proto::decide_ahead::ResultEvents;
use martix_proto::v1 as pb;
use prost::Message;

/// How long before the engine's clock the time of a decision made ahead may be for it to be
/// recorded at that time. The worker derives it from the engine's own event times plus the
/// time passed locally, so it lags only by the time answers and requests spend in transit and
/// in queues: ten seconds allows a loaded machine.
const DECISION_CLOCK_SKEW_MS: i64 = 10_000;

/// A decision made ahead, validated: its time, its eager activity slots, and whether its
/// commands are within the payload limit.
#[derive(Clone, Copy)]
pub(super) struct CheckedDecision {
    at: Millis,
    slots: usize,
    within_limit: bool,
}

impl Engine {
    /// Validates a decision made ahead. (Commands over the payload limit are not an error
    /// here: the result is recorded alone, and the workflow task that follows refuses them as
    /// usual.)
    pub(super) fn check_decision(
        &self,
        d: &pb::WorkflowDecision,
    ) -> Result<CheckedDecision, EngineError> {
        sticky_queue_field("decision.sticky_queue", &d.sticky_queue)?;
        if d.history_len < 1 {
            return Err(EngineError::invalid(
                "decision.history_len",
                "must be at least 1",
            ));
        }
        let at = d
            .decided_at
            .as_ref()
            .map(from_timestamp)
            .ok_or_else(|| EngineError::invalid("decision.decided_at", "is required"))?;
        let slots = usize::try_from(d.eager_activity_slots.clamp(0, 64)).unwrap_or(0);
        if slots > 0 {
            TaskQueue::parse(&d.eager_activity_queue)?;
        }
        let size: usize = d.commands.iter().map(Message::encoded_len).sum();
        Ok(CheckedDecision {
            at,
            slots,
            within_limit: size <= self.config.max_payload_bytes,
        })
    }

    /// The result and a decision made ahead as one change, if the decision saw everything:
    /// the run's history is the copy of the worker that keeps it (its sticky queue; no
    /// workflow task, nothing buffered, the same length) and the decision's time is at most
    /// `DECISION_CLOCK_SKEW_MS` before the engine's and not after it. `None`: record the result
    /// alone. The events are written at the decision's time, so that a replay sees the time
    /// the decision saw.
    pub(super) fn decide_ahead(
        &self,
        run: &Run,
        token: &TaskToken,
        result: Option<pb::Payload>,
        ident: &str,
        (d, checked): (&pb::WorkflowDecision, CheckedDecision),
        now: Millis,
    ) -> Result<Option<(RunCommit, Vec<crate::history::ActivityTask>)>, EngineError> {
        let CheckedDecision {
            at,
            slots,
            within_limit,
        } = checked;
        // The decision's time: not after the engine's (history's times never go back), and
        // not so long before that the worker's copy may be older than it looks.
        let fits = run.wft.is_none()
            && run.state.buffered.is_empty()
            && run.next_event_id - 1 == d.history_len
            && !run.state.sticky_queue.is_empty()
            && run.state.sticky_queue == d.sticky_queue
            && at <= now
            && now.saturating_sub(at) <= DECISION_CLOCK_SKEW_MS
            && within_limit;
        if !fits {
            return Ok(None);
        }
        let first = history::complete_activity(run, token, result, ident, at)?;
        // The decision was made after the events the worker expected for the result: they
        // must be the ones appended.
        if !ResultEvents::new(d.history_len, token.scheduled_event_id).recorded_in(&first.events) {
            return Ok(None);
        }
        let mut base = first.run.clone();
        let timeout = base.state.workflow_task_timeout_ms;
        let Some(wft) = base.wft.as_mut().filter(|w| w.lease.is_none()) else {
            return Ok(None);
        };
        let lease = Lease::new(at, timeout);
        let wft_token = TaskToken::for_workflow_task(&first.run, wft, &lease.id);
        wft.lease = Some(lease);
        match self.decide_completion(
            &base,
            &wft_token,
            &d.commands,
            ident,
            &d.sticky_queue,
            true,
            (&d.eager_activity_queue, slots),
            // History at the decision's time, leases from the engine's clock.
            (at, now),
        )? {
            Completion::Applied { commit, eager } => Ok(Some((first.then(commit), eager))),
            // A decision the engine refuses is made again in a workflow task, which records
            // the refusal as usual.
            Completion::Refused { .. } => Ok(None),
        }
    }
}
