//! The order domain's inbound message shape: AMQP type (or routing key)
//! `order.cancel_requested` with body `{"order_id": "...", "reason": "..."}` (namespace
//! optional) signals `cancel` to the order workflow, which then cancels exactly as
//! `martix workflow cancel` does.

use martix_engine::events::inbound::{Inbound, Translator, field, json_payload};
use martix_proto::v1 as pb;

/// The message type this module translates.
pub const CANCEL_REQUESTED: &str = "order.cancel_requested";

/// `order.cancel_requested` -> signal `cancel`.
#[derive(Debug, Default)]
pub struct CancelRequested;

impl Translator for CancelRequested {
    fn translate(
        &self,
        message_id: &str,
        kind: &str,
        namespace: &str,
        body: &serde_json::Value,
    ) -> Option<Result<Inbound, String>> {
        if kind != CANCEL_REQUESTED {
            return None;
        }
        Some(field(body, "order_id").map(|order_id| {
            let reason = body
                .get("reason")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            Inbound::Signal(pb::SignalWorkflowRequest {
                namespace: namespace.to_owned(),
                execution: Some(pb::WorkflowExecution {
                    workflow_id: order_id.to_owned(),
                    run_id: String::new(),
                }),
                signal_name: martix_order_contract::CANCEL_SIGNAL.into(),
                input: Some(json_payload(&serde_json::json!({ "reason": reason }))),
                identity: "amqp".into(),
                request_id: message_id.to_owned(),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use martix_engine::events::inbound::parse;
    use std::sync::Arc;

    #[test]
    fn a_cancel_request_signals_the_order() {
        let domains: Vec<Arc<dyn Translator>> = vec![Arc::new(CancelRequested)];
        match parse(
            Some("m-1"),
            CANCEL_REQUESTED,
            br#"{"order_id":"o-1"}"#,
            &domains,
        ) {
            Ok(Inbound::Signal(r)) => {
                assert_eq!(r.signal_name, "cancel");
                assert_eq!(r.request_id, "m-1");
                assert_eq!(r.namespace, "default");
                assert_eq!(r.execution.unwrap().workflow_id, "o-1");
            }
            other => panic!("{other:?}"),
        }
        let err = parse(Some("m"), CANCEL_REQUESTED, b"{}", &domains).unwrap_err();
        assert!(err.contains("'order_id' is missing"), "{err}");
    }
}
