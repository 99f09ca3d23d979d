//! Who placed an order: the order service writes the authenticated caller into the order's
//! `placed_by` on every start over gRPC or from a message (the REST edge does it as it builds
//! the order), overwriting what the client sent, so that the fraud velocity rule counts the
//! orders of someone a client cannot choose. Without a caller (authentication off, or a
//! message) the field is removed and the rule counts per customer.

use martix_engine::engine::StartInput;
use martix_proto::v1 as pb;
use serde_json::Value;

/// The [`StartInput`] of the `order` workflow.
#[derive(Debug, Default)]
pub struct PlacedBy;

impl StartInput for PlacedBy {
    fn stamp(&self, caller: Option<&str>, input: &mut Option<pb::Payload>) {
        // Whatever encoding it names: the SDK decodes any payload as JSON.
        let Some(payload) = input.as_mut() else {
            return;
        };
        let Ok(Value::Object(mut order)) = serde_json::from_slice::<Value>(&payload.data) else {
            return;
        };
        let wanted = caller.map(Value::from);
        if order.get("placed_by") == wanted.as_ref() {
            return;
        }
        match wanted {
            Some(by) => order.insert("placed_by".into(), by),
            None => order.remove("placed_by"),
        };
        payload.data = Value::Object(order).to_string().into_bytes();
        "json/plain".clone_into(&mut payload.encoding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(caller: Option<&str>, body: &str) -> String {
        let mut input = Some(pb::Payload {
            encoding: "json/plain".into(),
            data: body.as_bytes().to_vec(),
        });
        PlacedBy.stamp(caller, &mut input);
        String::from_utf8(input.unwrap().data).unwrap()
    }

    #[test]
    fn the_caller_replaces_what_the_client_sent() {
        let body = r#"{"order_id":"o-1","placed_by":"someone-else"}"#;
        assert_eq!(
            stamped(Some("svc-shop"), body),
            r#"{"order_id":"o-1","placed_by":"svc-shop"}"#
        );
        assert_eq!(
            stamped(Some("svc-shop"), r#"{"order_id":"o-1"}"#),
            r#"{"order_id":"o-1","placed_by":"svc-shop"}"#
        );
        assert_eq!(stamped(None, body), r#"{"order_id":"o-1"}"#);
        // Without a caller an order that names none keeps its very bytes.
        let spaced = r#"{ "order_id": "o-1" }"#;
        assert_eq!(stamped(None, spaced), spaced);
        // What is not an order is left for the saga to refuse.
        assert_eq!(stamped(Some("svc-shop"), "[1]"), "[1]");
    }

    #[test]
    fn an_input_naming_another_encoding_is_stamped_too() {
        let mut input = Some(pb::Payload {
            encoding: String::new(),
            data: br#"{"order_id":"o-1","placed_by":"victim"}"#.to_vec(),
        });
        PlacedBy.stamp(Some("svc-shop"), &mut input);
        let input = input.unwrap();
        assert_eq!(input.encoding, "json/plain");
        assert_eq!(input.data, br#"{"order_id":"o-1","placed_by":"svc-shop"}"#);
    }
}
