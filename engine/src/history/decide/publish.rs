//! Publishing: `PublishEvent` records a business event the workflow publishes, as a history
//! event and an outbox row in the same change (invariant 2), numbered per workflow id from 1
//! without gaps. The relay sends the outbox; here its type and body are checked, since they
//! become a routing key and a JSON message.

use super::*;

/// Event types are routing keys: letters, digits, '.', '_' and '-', at most 255 bytes.
fn check_event_type(event_type: &str) -> Result<(), String> {
    check_id("event_type", event_type)?;
    match event_type
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "event_type '{}' holds {c:?}; only letters, digits, '.', '_' and '-' are allowed",
            event_type.escape_default()
        )),
        None => Ok(()),
    }
}

/// `PublishEvent`: checks the event and records it (see `Transition::publish`).
pub(super) fn publish(
    t: &mut Transition,
    c: &pb::PublishEventCommand,
    completed: i64,
) -> Result<(), String> {
    check_event_type(&c.event_type)?;
    let body = c.body.clone().unwrap_or_default();
    if !(body.encoding.is_empty() || body.encoding == "json/plain") {
        return Err(format!(
            "the body of event '{}' must be JSON (encoding json/plain), not '{}'",
            c.event_type, body.encoding
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(&body.data) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => {
            return Err(format!(
                "the body of event '{}' must be a JSON object",
                c.event_type
            ));
        }
        Err(e) => {
            return Err(format!(
                "the body of event '{}' is not JSON: {e}",
                c.event_type
            ));
        }
    }
    t.publish(&c.event_type, body, completed);
    Ok(())
}
