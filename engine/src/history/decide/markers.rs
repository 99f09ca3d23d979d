//! Markers: `RecordMarker` appends what the workflow asks to remember (a side effect's value,
//! a patch it took) so that a replay reads it back instead of doing it again. The engine only
//! records a marker; what it means is the SDK's, except [`ATTENTION_MARKER`]: the workflow
//! says it waits for an operator (detail `reason`, a JSON string; none or empty: no longer),
//! which the checkpoint keeps so that describe, list and `martix stuck` show it.

use super::*;

/// The marker by which a workflow says it waits for an operator, or no longer does.
pub(crate) const ATTENTION_MARKER: &str = "attention";
/// The longest reason an attention marker may give.
const MAX_ATTENTION_BYTES: usize = 4096;

/// The reason an attention marker's details give (empty: the workflow no longer waits).
pub(crate) fn attention_reason(details: &std::collections::HashMap<String, pb::Payload>) -> String {
    details
        .get("reason")
        .and_then(|p| serde_json::from_slice::<String>(&p.data).ok())
        .unwrap_or_default()
}

/// `RecordMarker`: the marker event (and, for [`ATTENTION_MARKER`], the checkpoint's note).
pub(super) fn record(
    t: &mut Transition,
    c: &pb::RecordMarkerCommand,
    completed: i64,
) -> Result<(), String> {
    check_id("marker_name", &c.marker_name)?;
    if c.marker_name == ATTENTION_MARKER {
        let reason = attention_reason(&c.details);
        if reason.len() > MAX_ATTENTION_BYTES {
            return Err(format!(
                "the attention reason is {} bytes, at most {MAX_ATTENTION_BYTES}",
                reason.len()
            ));
        }
        t.run.state.attention_since = if reason.is_empty() { 0 } else { t.now };
        t.run.state.attention = reason;
    }
    t.append(Attributes::MarkerRecorded(pb::MarkerRecordedAttributes {
        marker_name: c.marker_name.clone(),
        details: c.details.clone(),
        workflow_task_completed_event_id: completed,
    }));
    Ok(())
}
