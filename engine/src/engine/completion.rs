//! Deciding a workflow task's completion: the commands applied by `history` (which also leases
//! to the completing worker the activities they schedule on its queue, up to its free slots, and
//! sends the run's next workflow task to its sticky queue), and the history-length limit
//! enforced (a run that would pass it is terminated instead) and warned about as it nears.
//! Shared by a workflow task completed as usual (`worker`) and a decision made ahead
//! (`decide_ahead`), so that both are held to the same rules; the caller writes the change.

use super::Engine;
use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::{self, Dispatch, Run, TaskToken, WftOutcome};
use martix_proto::v1 as pb;

impl Engine {
    /// Decides a workflow task's completion: its commands applied at `now`, with the history
    /// limit enforced, the tasks they create held as `d` allows.
    pub(super) fn decide_completion(
        &self,
        run: &Run,
        token: &TaskToken,
        commands: &[pb::Command],
        ident: &str,
        now: Millis,
        d: Dispatch<'_>,
    ) -> Result<WftOutcome, EngineError> {
        let decided = match history::complete_workflow_task(run, token, commands, ident, now, d)? {
            WftOutcome::Applied(decided) => decided,
            rejected @ WftOutcome::Rejected { .. } => return Ok(rejected),
        };
        let c = &decided.commit;
        let len = c.run.next_event_id - 1;
        if !c.closed && len > self.config.max_history_events {
            let why = format!(
                "the history would hold {len} events, over the limit of {}: the run is \
                 terminated; a workflow this long should continue as new",
                self.config.max_history_events
            );
            tracing::warn!(run_id = %run.run_id, "{why}");
            return Ok(WftOutcome::Rejected {
                decided: history::terminate(run, &why, "martix-engine", now)?.into(),
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
        Ok(WftOutcome::Applied(decided))
    }
}
