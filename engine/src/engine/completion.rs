//! Deciding a workflow task's completion: the commands applied by `history`, the history-length
//! limit enforced (a run that would pass it is terminated instead) and warned about as it nears,
//! and the activities the commands schedule leased at once to the completing worker (eager
//! dispatch). Shared by a workflow task completed as usual (`worker`) and a decision made ahead
//! (`decide_ahead`), so that both are held to the same rules; the caller writes the change.

use super::Engine;
use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::{self, Lease, Run, RunCommit, TaskOp, TaskToken, WftOutcome};
use martix_proto::v1 as pb;

/// A workflow task's completion as decided: applied, or refused with the change that records
/// the refusal and the answer for the worker.
pub(super) enum Completion {
    Applied {
        commit: RunCommit,
        eager: Vec<crate::history::ActivityTask>,
    },
    Refused {
        commit: RunCommit,
        error: EngineError,
    },
}

/// Leases to the completing worker up to `slots` activity tasks the commit creates on `queue`,
/// due now (eager activity dispatch); returns them to hand over with the answer.
fn lease_eagerly(
    commit: &mut RunCommit,
    queue: &str,
    slots: usize,
    now: Millis,
) -> Vec<crate::history::ActivityTask> {
    let mut out = Vec::new();
    for op in &mut commit.tasks {
        if out.len() == slots {
            break;
        }
        if let TaskOp::Insert(task) = op
            && task.task_queue == queue
            && task.visible_at <= now
            && task.lease.is_none()
        {
            task.lease = Some(Lease::new(now, task.first_lease_ms()));
            task.started_at = Some(now);
            out.push(task.clone());
        }
    }
    out
}

impl Engine {
    /// Decides a workflow task's completion: its commands applied (with the history limit
    /// enforced), up to `eager.1` of the activities they schedule on queue `eager.0` leased
    /// to the completing worker from `lease_at`; history is written at `now`. With
    /// `return_history`, the worker applies the appended events itself, so its next sticky
    /// task starts after them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide_completion(
        &self,
        run: &Run,
        token: &TaskToken,
        commands: &[pb::Command],
        ident: &str,
        sticky_queue: &str,
        return_history: bool,
        eager: (&str, usize),
        (now, lease_at): (Millis, Millis),
    ) -> Result<Completion, EngineError> {
        let mut c = match history::complete_workflow_task(
            run,
            token,
            commands,
            ident,
            sticky_queue,
            now,
        )? {
            WftOutcome::Applied(c) => c,
            WftOutcome::Rejected { commit, error } => {
                return Ok(Completion::Refused { commit, error });
            }
        };
        let len = c.run.next_event_id - 1;
        if !c.closed && len > self.config.max_history_events {
            let why = format!(
                "the history would hold {len} events, over the limit of {}: the run is \
                 terminated; a workflow this long should continue as new",
                self.config.max_history_events
            );
            tracing::warn!(run_id = %run.run_id, "{why}");
            return Ok(Completion::Refused {
                commit: history::terminate(run, &why, "martix-engine", now)?,
                error: EngineError::FailedPrecondition(why),
            });
        }
        // Once when the history passes the mark, then once per thousand events.
        let before = run.next_event_id - 1;
        if !c.closed
            && len > self.config.warn_history_events
            && (before <= self.config.warn_history_events || before / 1000 != len / 1000)
        {
            tracing::warn!(
                run_id = %run.run_id,
                events = len,
                limit = self.config.max_history_events,
                "long history: continue as new before the limit terminates the run"
            );
        }
        if return_history {
            c.run.state.sticky_from = c.run.next_event_id;
        }
        let eager = lease_eagerly(&mut c, eager.0, eager.1, lease_at);
        Ok(Completion::Applied { commit: c, eager })
    }
}
