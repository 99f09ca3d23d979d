//! Decide-ahead: what a worker and the engine agree on when a worker reports an activity's
//! result together with the workflow's next decision (`WorkflowDecision`), made on its cached
//! copy of the run before the engine recorded that result.
//!
//! To decide, the worker applies to its copy the events the engine will append for the
//! result, so both sides must agree on them: the attempt's `ActivityTaskStarted` and
//! `ActivityTaskCompleted`, then the `WorkflowTaskScheduled` of the workflow task that delivers
//! them (on the worker's sticky queue), with ids following the copy's `history_len` events, all
//! at the decision's time. The worker builds them with [`ResultEvents::events`]; the engine
//! records the decision only if the change it decided for the result appended exactly these
//! ([`ResultEvents::recorded_in`]), and otherwise records the result alone so that the decision
//! is made again in an ordinary workflow task. The decision's own events (the workflow task's
//! started and completed events, then its commands') follow these. Fields no workflow reads
//! (an attempt's last failure, the workflow task's timeout) are left empty in the worker's copy;
//! the engine's answer carries the events as recorded.

use crate::v1 as pb;
use pb::history_event::Attributes;

/// The events the engine appends for an activity's result reported with a decision made
/// ahead, on a history of `history_len` events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultEvents {
    history_len: i64,
    scheduled_event_id: i64,
}

/// How many events the engine appends for the result, before the decision's own.
pub const RESULT_EVENT_COUNT: usize = 3;

impl ResultEvents {
    /// The events of the result of the activity scheduled by event `scheduled_event_id`,
    /// after the `history_len` events the worker's copy holds.
    pub fn new(history_len: i64, scheduled_event_id: i64) -> Self {
        Self {
            history_len,
            scheduled_event_id,
        }
    }

    /// The id of the result's `ActivityTaskStarted`, the first of them.
    pub fn activity_started_id(self) -> i64 {
        self.history_len + 1
    }

    /// The id of the `WorkflowTaskScheduled` of the workflow task that delivers the result
    /// (the task the decision completes), the last of them.
    pub fn workflow_task_scheduled_id(self) -> i64 {
        self.history_len + RESULT_EVENT_COUNT as i64
    }

    /// The events as the worker applies them to its copy: attempt `attempt` by `identity`
    /// returned `result`, and the workflow task is scheduled on `sticky_queue`, all at
    /// `decided_at`.
    pub fn events(
        self,
        attempt: i32,
        identity: &str,
        result: Option<pb::Payload>,
        sticky_queue: &str,
        decided_at: pbjson_types::Timestamp,
    ) -> [pb::HistoryEvent; RESULT_EVENT_COUNT] {
        let event = |offset: i64, attributes| pb::HistoryEvent {
            event_id: self.activity_started_id() + offset,
            event_time: Some(decided_at),
            attributes: Some(attributes),
        };
        [
            event(
                0,
                Attributes::ActivityTaskStarted(pb::ActivityTaskStartedAttributes {
                    scheduled_event_id: self.scheduled_event_id,
                    attempt,
                    identity: identity.to_owned(),
                    last_failure: None,
                }),
            ),
            event(
                1,
                Attributes::ActivityTaskCompleted(pb::ActivityTaskCompletedAttributes {
                    scheduled_event_id: self.scheduled_event_id,
                    started_event_id: 0,
                    result,
                    identity: identity.to_owned(),
                }),
            ),
            event(
                2,
                Attributes::WorkflowTaskScheduled(pb::WorkflowTaskScheduledAttributes {
                    task_queue: sticky_queue.to_owned(),
                    start_to_close_timeout: None,
                    attempt: 1,
                }),
            ),
        ]
    }

    /// Whether `appended`, the events the engine's change for the result appended, are these:
    /// the same three kinds in the same order, with these ids, for this activity, and a first
    /// workflow task attempt.
    pub fn recorded_in(self, appended: &[pb::HistoryEvent]) -> bool {
        let [started, completed, scheduled] = appended else {
            return false;
        };
        let ids_follow = [started, completed, scheduled]
            .iter()
            .zip(self.activity_started_id()..)
            .all(|(e, id)| e.event_id == id);
        let activity = self.scheduled_event_id;
        ids_follow
            && matches!(&started.attributes,
                Some(Attributes::ActivityTaskStarted(a)) if a.scheduled_event_id == activity)
            && matches!(&completed.attributes,
                Some(Attributes::ActivityTaskCompleted(a)) if a.scheduled_event_id == activity)
            && matches!(&scheduled.attributes,
                Some(Attributes::WorkflowTaskScheduled(w)) if w.attempt == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> pbjson_types::Timestamp {
        crate::time::to_timestamp(1_700_000_000_000)
    }

    #[test]
    fn the_result_events_follow_the_workers_history_in_order_at_the_decisions_time() {
        let contract = ResultEvents::new(7, 5);
        let result = pb::Payload {
            data: b"42".to_vec(),
            ..Default::default()
        };
        let events = contract.events(2, "worker-1", Some(result.clone()), "sticky-1", at());
        let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, [8, 9, 10]);
        assert_eq!(contract.workflow_task_scheduled_id(), 10);
        assert!(events.iter().all(|e| e.event_time == Some(at())));
        assert!(matches!(&events[0].attributes,
            Some(Attributes::ActivityTaskStarted(a)) if a.scheduled_event_id == 5));
        assert!(matches!(&events[0].attributes,
            Some(Attributes::ActivityTaskStarted(a)) if a.attempt == 2));
        assert!(matches!(&events[1].attributes,
            Some(Attributes::ActivityTaskCompleted(a)) if a.result.as_ref() == Some(&result)));
        assert!(matches!(&events[2].attributes,
            Some(Attributes::WorkflowTaskScheduled(w)) if w.task_queue == "sticky-1"));
        assert!(
            contract.recorded_in(&events),
            "what the worker builds is what is agreed"
        );
    }

    #[test]
    fn other_events_than_the_agreed_ones_are_not_the_result_events() {
        let contract = ResultEvents::new(7, 5);
        let events = contract.events(1, "w", None, "s", at());
        assert!(!contract.recorded_in(&events[..2]), "too few");
        assert!(
            !ResultEvents::new(8, 5).recorded_in(&events),
            "a longer history: the ids do not follow it"
        );
        assert!(
            !ResultEvents::new(7, 6).recorded_in(&events),
            "another activity's result"
        );
        let mut swapped = events.clone();
        swapped.swap(0, 1);
        swapped[0].event_id = 8;
        swapped[1].event_id = 9;
        assert!(!contract.recorded_in(&swapped), "out of order");
        let mut retried = events;
        retried[2].attributes = Some(Attributes::WorkflowTaskScheduled(
            pb::WorkflowTaskScheduledAttributes {
                attempt: 2,
                ..Default::default()
            },
        ));
        assert!(!contract.recorded_in(&retried), "a retried workflow task");
    }
}
