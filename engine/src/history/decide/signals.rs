//! Signals and cancellation requests: events from outside the workflow, recorded like an
//! activity's outcome (buffered while a workflow task is in flight, otherwise appended with a
//! workflow task to deliver them). What the workflow does with them is its own decision.

use super::*;

/// A signal for the workflow.
pub fn signal(
    run: &Run,
    name: &str,
    input: Option<pb::Payload>,
    identity: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<Decided, EngineError> {
    require_open(run)?;
    let mut t = Transition::new(run, now);
    t.add_external([Attributes::WorkflowExecutionSignaled(
        pb::WorkflowExecutionSignaledAttributes {
            signal_name: name.to_owned(),
            input,
            identity: identity.to_owned(),
        },
    )]);
    Ok(hand_out(t.finish(), d))
}

/// Asks the workflow to cancel. Asking twice changes nothing (`None`).
pub fn request_cancel(
    run: &Run,
    reason: &str,
    identity: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<Option<Decided>, EngineError> {
    require_open(run)?;
    if run.state.cancel_requested {
        return Ok(None);
    }
    let mut t = Transition::new(run, now);
    t.run_mut().state.cancel_requested = true;
    t.add_external([Attributes::WorkflowExecutionCancelRequested(
        pb::WorkflowExecutionCancelRequestedAttributes {
            reason: reason.to_owned(),
            identity: identity.to_owned(),
        },
    )]);
    Ok(Some(hand_out(t.finish(), d)))
}
