//! Deciding a workflow task's completion: the commands applied by `history` (which also leases
//! to the completing worker the activities they schedule on its queue, up to its free slots, and
//! sends the run's next workflow task to its sticky queue), and the history limits enforced
//! (a run that would pass one is terminated instead, see `limits`) and warned about as it
//! nears them.
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
        if !c.closed
            && let Some(why) = self.over_history_limit(&c.run)
        {
            let terminated = self.terminate_over_limit(run, &why, now)?;
            return Ok(WftOutcome::Rejected {
                decided: terminated,
                error: EngineError::FailedPrecondition(format!(
                    "{why}: the run is terminated; a workflow this long should continue as new"
                )),
            });
        }
        if !c.closed {
            self.warn_long_history(run, &c.run);
        }
        Ok(WftOutcome::Applied(decided))
    }
}
