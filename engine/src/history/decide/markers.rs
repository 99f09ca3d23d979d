//! Markers: `RecordMarker` appends what the workflow asks to remember (a side effect's value,
//! a patch it took) so that a replay reads it back instead of doing it again. The engine only
//! records a marker; what it means is the SDK's.

use super::*;

/// `RecordMarker`: the marker event, nothing else.
pub(super) fn record(
    t: &mut Transition,
    c: &pb::RecordMarkerCommand,
    completed: i64,
) -> Result<(), String> {
    check_id("marker_name", &c.marker_name)?;
    t.append(Attributes::MarkerRecorded(pb::MarkerRecordedAttributes {
        marker_name: c.marker_name.clone(),
        details: c.details.clone(),
        workflow_task_completed_event_id: completed,
    }));
    Ok(())
}
