//! An order's steps, read from its history: each activity the saga scheduled, in order, with
//! where it stands.

use martix_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// One step (activity) of an order's saga.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// The activity: `reserve_inventory`, `charge_payment`, `refund_payment`, ...
    pub activity: String,
    /// `scheduled`, `running`, `retrying`, `completed`, `failed`, `timed_out`, `canceled`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// The last error, if an attempt failed.
    pub error: Option<String>,
    #[serde(skip)]
    scheduled_event_id: i64,
}

/// The steps of a run from its history and its pending activities (from describe).
pub fn order_steps(history: &[pb::HistoryEvent], pending: &[pb::PendingActivityInfo]) -> Vec<Step> {
    use pb::history_event::Attributes as A;
    let mut steps: Vec<Step> = history
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::ActivityTaskScheduled(a)) => Some(Step {
                activity: a.activity_type.clone(),
                status: "scheduled".into(),
                attempts: 0,
                error: None,
                scheduled_event_id: e.event_id,
            }),
            _ => None,
        })
        .collect();
    let mut set = |id: i64, f: &mut dyn FnMut(&mut Step)| {
        if let Some(s) = steps.iter_mut().find(|s| s.scheduled_event_id == id) {
            f(s);
        }
    };
    for e in history {
        match &e.attributes {
            Some(A::ActivityTaskStarted(a)) => set(a.scheduled_event_id, &mut |s| {
                s.status = "running".into();
                s.attempts = a.attempt;
                if let Some(f) = &a.last_failure {
                    s.error = Some(f.message.clone());
                }
            }),
            Some(A::ActivityTaskCompleted(a)) => set(a.scheduled_event_id, &mut |s| {
                s.status = "completed".into();
                s.attempts = s.attempts.max(1);
            }),
            Some(A::ActivityTaskFailed(a)) => set(a.scheduled_event_id, &mut |s| {
                s.status = "failed".into();
                s.attempts = s.attempts.max(1);
                s.error = a.failure.as_ref().map(|f| f.message.clone());
            }),
            Some(A::ActivityTaskTimedOut(a)) => set(a.scheduled_event_id, &mut |s| {
                s.status = "timed_out".into();
                s.error = a.failure.as_ref().map(|f| f.message.clone());
            }),
            Some(A::ActivityTaskCanceled(a)) => set(a.scheduled_event_id, &mut |s| {
                s.status = "canceled".into();
            }),
            _ => {}
        }
    }
    for p in pending {
        set(p.scheduled_event_id, &mut |s| {
            s.attempts = p.attempt;
            if let Some(f) = &p.last_failure {
                s.status = "retrying".into();
                s.error = Some(f.message.clone());
            }
        });
    }
    steps
}
