//! `WorkflowHistory`: one run's events with the ids that name the run, as operators export it
//! (`martix workflow history ID --output json`) and the [`Replayer`](crate::Replayer) reads it.
//!
//! The events alone do not say which run they are: the run's own id, its workflow id and its
//! namespace are not in them. Workflow code sees those ids (`ctx.info()`) and its randomness
//! (`ctx.random()`, `ctx.uuid()`) is seeded from the run id, so a replay needs them to give
//! the code what the run gave it.

use martix_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// One run's history and the ids that name the run. Its JSON is proto3 JSON for the events
/// and camelCase names for the rest:
///
/// ```json
/// {"namespace": "default", "workflowId": "order-17", "runId": "0190...", "firstRunId": "0190...",
///  "continuedFromRunId": "0190...", "events": [{"eventId": "1", ...}]}
/// ```
///
/// A `GetWorkflowHistoryResponse` in proto3 JSON (`{"events": [...]}`, what exports looked
/// like before they carried the ids) reads as one whose ids are empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowHistory {
    /// The run's namespace; empty if the export did not say.
    #[serde(default)]
    pub namespace: String,
    /// The run's workflow id; empty if the export did not say.
    #[serde(default)]
    pub workflow_id: String,
    /// The run's id; empty if the export did not say.
    #[serde(default)]
    pub run_id: String,
    /// The first run of the chain of continued runs this one belongs to (this run's id when it
    /// continues none). Also in the first event; here for readers of the file.
    #[serde(default)]
    pub first_run_id: String,
    /// The run this one continues, if it was started by a continue-as-new. Also in the first
    /// event; here for readers of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued_from_run_id: Option<String>,
    /// The run's events, from its `WorkflowExecutionStarted`.
    #[serde(default)]
    pub events: Vec<pb::HistoryEvent>,
}

impl WorkflowHistory {
    /// The history of the run `run_id` of `workflow_id` in `namespace`: its first and
    /// continued-from run ids are read from its first event.
    pub fn new(
        namespace: impl Into<String>,
        workflow_id: impl Into<String>,
        run_id: impl Into<String>,
        events: Vec<pb::HistoryEvent>,
    ) -> Self {
        let started = started(&events);
        Self {
            namespace: namespace.into(),
            workflow_id: workflow_id.into(),
            run_id: run_id.into(),
            first_run_id: started.map(|s| s.first_run_id.clone()).unwrap_or_default(),
            continued_from_run_id: started
                .map(|s| s.continued_from_run_id.clone())
                .filter(|id| !id.is_empty()),
            events,
        }
    }

    /// A history as JSON: this type's, a `GetWorkflowHistoryResponse` in proto3 JSON
    /// (`{"events": [...]}`, ids empty) or a bare array of events (ids empty).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        if value.is_array() {
            Ok(Self {
                events: serde_json::from_value(value)?,
                ..Self::default()
            })
        } else {
            serde_json::from_value(value)
        }
    }

    /// The attributes of the first event, if it is the run's start.
    pub fn started(&self) -> Option<&pb::WorkflowExecutionStartedAttributes> {
        started(&self.events)
    }
}

/// The attributes of `events`' first event, if it is a run's start.
pub(crate) fn started(
    events: &[pb::HistoryEvent],
) -> Option<&pb::WorkflowExecutionStartedAttributes> {
    match events.first().and_then(|e| e.attributes.as_ref()) {
        Some(pb::history_event::Attributes::WorkflowExecutionStarted(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(first_run_id: &str, continued_from: &str) -> Vec<pb::HistoryEvent> {
        vec![pb::HistoryEvent {
            event_id: 1,
            event_time: None,
            attributes: Some(pb::history_event::Attributes::WorkflowExecutionStarted(
                pb::WorkflowExecutionStartedAttributes {
                    workflow_type: "t".into(),
                    first_run_id: first_run_id.into(),
                    continued_from_run_id: continued_from.into(),
                    ..Default::default()
                },
            )),
        }]
    }

    #[test]
    fn the_ids_go_out_and_come_back_with_the_events() {
        let h = WorkflowHistory::new("ns", "wf-1", "run-2", events("run-1", "run-1"));
        assert_eq!(h.first_run_id, "run-1");
        assert_eq!(h.continued_from_run_id.as_deref(), Some("run-1"));
        let json = serde_json::to_string(&h).unwrap();
        for field in [
            "\"namespace\":\"ns\"",
            "\"workflowId\":\"wf-1\"",
            "\"runId\":\"run-2\"",
            "\"firstRunId\":\"run-1\"",
            "\"continuedFromRunId\":\"run-1\"",
            "\"workflowExecutionStarted\"",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
        assert_eq!(WorkflowHistory::from_json(&json).unwrap(), h);
        let first = WorkflowHistory::new("ns", "wf-1", "run-1", events("run-1", ""));
        assert!(
            !serde_json::to_string(&first)
                .unwrap()
                .contains("continuedFromRunId"),
            "a run that continues none says nothing of it"
        );
    }

    #[test]
    fn older_exports_read_with_empty_ids() {
        let old = serde_json::to_string(&pb::GetWorkflowHistoryResponse {
            events: events("run-1", ""),
            next_page_token: Vec::new(),
        })
        .unwrap();
        let h = WorkflowHistory::from_json(&old).unwrap();
        assert_eq!((h.namespace.as_str(), h.run_id.as_str()), ("", ""));
        assert_eq!(h.events, events("run-1", ""));
        let bare = serde_json::to_string(&events("run-1", "")).unwrap();
        assert_eq!(WorkflowHistory::from_json(&bare).unwrap().events.len(), 1);
        assert!(WorkflowHistory::from_json("{\"events\": 3}").is_err());
    }
}
