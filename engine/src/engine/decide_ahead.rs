//! Decide-ahead: a worker completing an activity may send the workflow's next decision, made
//! on its own copy of the history. The decision is recorded with the result as one change only
//! if that copy was the whole history (the run's sticky worker, no workflow task, nothing
//! buffered, the same length) and its time is plausible; otherwise the result is recorded alone
//! and the decision is made again in a workflow task, as if it had never been sent. This module
//! checks the decision and decides whether it fits; the completion itself is `completion`'s, and
//! the request is answered by `worker`. Which events the worker expected for the result is
//! agreed in `martix_proto::decide_ahead`.

use super::Engine;
use super::requests::sticky_queue_field;
use crate::clock::{Millis, from_timestamp};
use crate::error::EngineError;
use crate::history::{
    self, Decided, Dispatch, EagerSlots, Pollers, Run, Sticky, TaskToken, WftOutcome,
};
use crate::ids::TaskQueue;
use martix_proto::decide_ahead::ResultEvents;
use martix_proto::v1 as pb;
use prost::Message;

/// How long before the engine's clock the time of a decision made ahead may be for it to be
/// recorded at that time. The worker derives it from the engine's own event times plus the
/// time passed locally, so it lags only by the time answers and requests spend in transit and
/// in queues: ten seconds allows a loaded machine.
const DECISION_CLOCK_SKEW_MS: i64 = 10_000;

/// A decision made ahead, validated: the decision, its worker's sticky queue, its time, its
/// eager activity slots (and their queue), and whether its commands are within the payload
/// limit.
pub(super) struct CheckedDecision<'a> {
    decision: &'a pb::WorkflowDecision,
    sticky_queue: TaskQueue,
    at: Millis,
    slots: usize,
    eager_queue: Option<TaskQueue>,
    within_limit: bool,
}

impl Engine {
    /// Validates a decision made ahead. (Commands over the payload limit are not an error
    /// here: the result is recorded alone, and the workflow task that follows refuses them as
    /// usual.)
    pub(super) fn check_decision<'a>(
        &self,
        d: &'a pb::WorkflowDecision,
    ) -> Result<CheckedDecision<'a>, EngineError> {
        let sticky_queue = sticky_queue_field("decision.sticky_queue", &d.sticky_queue)?;
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
        let eager_queue = if slots > 0 {
            Some(TaskQueue::parse_field(
                "decision.eager_activity_queue",
                &d.eager_activity_queue,
            )?)
        } else {
            None
        };
        let size: usize = d.commands.iter().map(Message::encoded_len).sum();
        Ok(CheckedDecision {
            decision: d,
            sticky_queue,
            at,
            slots,
            eager_queue,
            within_limit: size <= self.config.max_payload_bytes,
        })
    }

    /// The result and a decision made ahead as one change, if the decision saw everything:
    /// the run's history is the copy of the worker that keeps it (its sticky queue; no
    /// workflow task, nothing buffered, the same length) and the decision's time is at most
    /// `DECISION_CLOCK_SKEW_MS` before the engine's and not after it. `None`: record the result
    /// alone. The events are written at the decision's time, so that a replay sees the time
    /// the decision saw; the tasks of the change are held as usual, from the engine's clock,
    /// with `pollers` waiting.
    // The report (run, token, result, identity), the decision, the time and the pollers
    // waiting: each an input of the decision, which a struct would only rename.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide_ahead(
        &self,
        run: &Run,
        token: &TaskToken,
        result: Option<pb::Payload>,
        ident: &str,
        checked: &CheckedDecision<'_>,
        now: Millis,
        pollers: &mut dyn Pollers,
    ) -> Result<Option<Decided>, EngineError> {
        let &CheckedDecision {
            decision: d,
            ref sticky_queue,
            at,
            slots,
            ref eager_queue,
            within_limit,
        } = checked;
        // The decision's time: not after the engine's (history's times never go back), and
        // not so long before that the worker's copy may be older than it looks.
        let fits = run.wft.is_none()
            && run.state.buffered.is_empty()
            && run.next_event_id - 1 == d.history_len
            && !run.state.sticky_queue.is_empty()
            && *sticky_queue == run.state.sticky_queue
            && at <= now
            && now.saturating_sub(at) <= DECISION_CLOCK_SKEW_MS
            && within_limit;
        if !fits {
            return Ok(None);
        }
        // The result, with the workflow task that delivers it taken by the reporting worker:
        // the one whose decision it made.
        let first = history::complete_activity(
            run,
            token,
            result,
            ident,
            at,
            Dispatch {
                eager_workflow_queue: Some(sticky_queue),
                ..Dispatch::nobody(now)
            },
        )?;
        // The decision was made after the events the worker expected for the result: they
        // must be the ones appended.
        let expected = ResultEvents::new(d.history_len, token.scheduled_event_id);
        let (Some(lease), Some(wft)) = (&first.to_reporter.workflow_task, &first.commit.run.wft)
        else {
            return Ok(None);
        };
        if !expected.recorded_in(&first.commit.events) {
            return Ok(None);
        }
        let wft_token = TaskToken::for_workflow_task(&first.commit.run, wft, &lease.id);
        let completion = Dispatch {
            sticky: Some(Sticky {
                queue: sticky_queue,
                returns_history: true,
            }),
            eager_activities: EagerSlots {
                queue: eager_queue.as_deref().unwrap_or_default(),
                slots,
            },
            ..Dispatch::pollers(pollers, now)
        };
        // History at the decision's time.
        match self.decide_completion(
            &first.commit.run,
            &wft_token,
            &d.commands,
            ident,
            at,
            completion,
        )? {
            WftOutcome::Applied(second) => Ok(Some(Decided {
                commit: first.commit.then(second.commit),
                ..second
            })),
            // A decision the engine refuses is made again in a workflow task, which records
            // the refusal as usual.
            WftOutcome::Rejected { .. } => Ok(None),
        }
    }
}
