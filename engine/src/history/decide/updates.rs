//! Updates: recording an accepted update, and the command that completes one. Whether an
//! update is accepted is its validator's to say, run by a worker on the run's state (see
//! `engine::updates`); it is recorded here only if the run is still where the validator looked
//! (no event since, no workflow task outstanding), so the handler starts from the state the
//! validator accepted. A run started with an update (update-with-start) records it unvalidated:
//! the workflow runs the validator first.

use super::*;

/// Most updates a run may have accepted and not completed.
pub const MAX_UPDATES_IN_FLIGHT: usize = 100;

/// An update to record: what the caller asked, and where the validator looked.
#[derive(Clone, Debug)]
pub struct UpdateRequest {
    pub update_id: String,
    pub name: String,
    pub args: Option<pb::Payload>,
    pub identity: String,
}

impl UpdateRequest {
    fn accepted(&self, validate: bool) -> Attributes {
        Attributes::WorkflowUpdateAccepted(pb::WorkflowUpdateAcceptedAttributes {
            update_id: self.update_id.clone(),
            update_name: self.name.clone(),
            args: self.args.clone(),
            identity: self.identity.clone(),
            validate,
        })
    }
}

/// Records update `u`, validated on the run's first `validated_len` events. `None` when the
/// run moved on since the validator looked (an event, a workflow task outstanding): nothing
/// is written; validate again.
pub fn accept_update(
    run: &Run,
    u: &UpdateRequest,
    validated_len: i64,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<Option<Decided>, EngineError> {
    require_open(run)?;
    if run.wft.is_some() || run.next_event_id - 1 != validated_len {
        return Ok(None);
    }
    has_room(run)?;
    let mut t = Transition::new(run, now);
    record(&mut t, u, false);
    Ok(Some(hand_out(t.finish(), d)))
}

/// Records update `u` for the workflow to validate first (update-with-start meeting a run
/// whose code has not run yet, so no worker can validate it): the handler's validator runs in
/// the workflow, and a refusal completes the update `Rejected`.
pub fn accept_unvalidated(
    run: &Run,
    u: &UpdateRequest,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<Decided, EngineError> {
    require_open(run)?;
    has_room(run)?;
    let mut t = Transition::new(run, now);
    record(&mut t, u, true);
    Ok(hand_out(t.finish(), d))
}

/// Refuses an update to a run with [`MAX_UPDATES_IN_FLIGHT`] updates in flight.
fn has_room(run: &Run) -> Result<(), EngineError> {
    if run.state.updates.len() >= MAX_UPDATES_IN_FLIGHT {
        return Err(EngineError::Overloaded {
            what: format!(
                "workflow {} has {MAX_UPDATES_IN_FLIGHT} updates whose handlers have not \
                 completed",
                run.workflow_id
            ),
            retry_after: std::time::Duration::from_secs(1),
        });
    }
    Ok(())
}

/// Appends the accepted event (the run has no workflow task in flight) and keeps the update
/// pending; `validate`: the workflow runs the validator first.
pub(super) fn record(t: &mut Transition, u: &UpdateRequest, validate: bool) {
    // Its event id once appended (a buffered event gets its id when flushed: 0 until then,
    // and callers find it by the update id).
    let in_flight = t.run().wft.as_ref().is_some_and(|w| w.in_flight(t.now()));
    let accepted_event_id = if in_flight { 0 } else { t.run().next_event_id };
    t.add_external([u.accepted(validate)]);
    t.run_mut().state.updates.push(PendingUpdate {
        update_id: u.update_id.clone(),
        accepted_event_id,
    });
}

/// `CompleteUpdate`: the handler's result (or failure) for the caller.
pub(super) fn complete(
    t: &mut Transition,
    c: &pb::CompleteUpdateCommand,
    completed: i64,
) -> Result<(), String> {
    let Some(pos) = t
        .run()
        .state
        .updates
        .iter()
        .position(|u| u.update_id == c.update_id)
    else {
        return Err(format!(
            "no accepted update has update_id '{}' (never accepted, or already completed)",
            c.update_id
        ));
    };
    let u = t.run_mut().state.updates.remove(pos);
    t.append(Attributes::WorkflowUpdateCompleted(
        pb::WorkflowUpdateCompletedAttributes {
            update_id: u.update_id,
            accepted_event_id: u.accepted_event_id,
            result: c.result.clone(),
            failure: c.failure.clone(),
            workflow_task_completed_event_id: completed,
        },
    ));
    Ok(())
}
