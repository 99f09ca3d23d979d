//! The orders read model: how order events fold into one `OrderView` row. Pure; the store
//! runs it inside the projection transaction, and a rebuild runs it over the histories.
//!
//! The event types and their bodies are the order contract's (`martix_order_contract::events`).
//! Bodies are read here as JSON values, field by field, with a default for what is missing:
//! a body of an older run, or one that does not parse, still folds.

use martix_engine::clock::Millis;
use martix_engine::store::events::StoredEvent;
use martix_order_contract::ORDER_WORKFLOW_TYPE;
use martix_order_contract::events::{
    INVENTORY_RELEASED, INVENTORY_RESERVED, ORDER_CANCELED, ORDER_COMPENSATED, ORDER_COMPLETED,
    ORDER_FAILED, ORDER_NEEDS_ATTENTION, ORDER_PLACED, ORDER_PRICED, ORDER_REJECTED,
    PAYMENT_CHARGED, PAYMENT_DECLINED, PAYMENT_REFUNDED, SHIPMENT_CREATED,
};
use serde_json::Value;

/// One order as the read model holds it. Amounts in integer cents.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OrderView {
    pub namespace: String,
    pub order_id: String,
    pub customer_id: String,
    /// `placed`, `priced`, `reserved`, `charged`, `shipped`, `compensating`,
    /// `needs_attention` (a compensation failed for good; an operator decides), then one of
    /// the final ones: `completed`, `compensated`, `canceled`, `failed`, `rejected`.
    pub status: String,
    /// The type of the last event folded in.
    pub step: String,
    pub currency: String,
    /// The order's lines, as JSON.
    pub items: String,
    pub subtotal_cents: i64,
    pub discount_cents: i64,
    pub tax_cents: i64,
    pub total_cents: i64,
    pub charged_cents: i64,
    pub refunded_cents: i64,
    pub shipment: Option<String>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub last_sequence: i64,
}

/// Filters and page position of an order listing, newest first.
#[derive(Clone, Debug, Default)]
pub struct OrderQuery {
    pub namespace: String,
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// Created at or after.
    pub created_after: Option<Millis>,
    /// Created before.
    pub created_before: Option<Millis>,
    /// Continue after this `(created_at, order_id)`.
    pub after: Option<(Millis, String)>,
    pub limit: usize,
}

/// Whether the read model folds this event.
pub fn is_order_event(e: &StoredEvent) -> bool {
    e.workflow_type == ORDER_WORKFLOW_TYPE
}

fn cents(body: &Value, field: &str) -> i64 {
    body.get(field).and_then(Value::as_i64).unwrap_or(0)
}

/// A text field; NUL (which PostgreSQL text cannot hold) becomes U+FFFD, so no body can make
/// a fold fail.
fn text(body: &Value, field: &str) -> Option<String> {
    match body.get(field) {
        Some(Value::String(s)) => Some(s.replace('\0', "\u{FFFD}")),
        _ => None,
    }
}

/// The order after `e`. A first event other than `order.placed` still makes a row (with what
/// it knows); `order.placed` starts the row afresh (an order id used again).
pub fn fold(view: Option<OrderView>, e: &StoredEvent) -> OrderView {
    let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
    let fresh = || OrderView {
        namespace: e.namespace.clone(),
        order_id: e.subject.clone(),
        items: "[]".into(),
        created_at: e.occurred_at,
        ..Default::default()
    };
    let mut v = match view {
        Some(v) if e.event_type != ORDER_PLACED => v,
        _ => fresh(),
    };
    let status = match e.event_type.as_str() {
        ORDER_PLACED => {
            v.customer_id = text(&body, "customer_id").unwrap_or_default();
            v.currency = text(&body, "currency").unwrap_or_default();
            v.items = body
                .get("items")
                .map_or_else(|| "[]".to_owned(), Value::to_string);
            Some("placed")
        }
        ORDER_PRICED => {
            v.subtotal_cents = cents(&body, "subtotal_cents");
            v.discount_cents = cents(&body, "discount_cents");
            v.tax_cents = cents(&body, "tax_cents");
            v.total_cents = cents(&body, "total_cents");
            Some("priced")
        }
        ORDER_REJECTED => {
            v.last_error = text(&body, "reason");
            Some("rejected")
        }
        INVENTORY_RESERVED => Some("reserved"),
        PAYMENT_CHARGED => {
            v.charged_cents += cents(&body, "amount_cents");
            Some("charged")
        }
        PAYMENT_DECLINED => {
            v.last_error = text(&body, "reason");
            Some("compensating")
        }
        SHIPMENT_CREATED => {
            v.shipment = text(&body, "shipment");
            Some("shipped")
        }
        PAYMENT_REFUNDED => {
            v.refunded_cents += cents(&body, "amount_cents");
            Some("compensating")
        }
        INVENTORY_RELEASED => Some("compensating"),
        ORDER_NEEDS_ATTENTION => {
            if let Some(Value::Array(failed)) = body.get("failed") {
                let failed: Vec<&str> = failed.iter().filter_map(Value::as_str).collect();
                v.last_error = Some(failed.join("; "));
            }
            Some("needs_attention")
        }
        t @ (ORDER_COMPLETED | ORDER_COMPENSATED | ORDER_CANCELED | ORDER_FAILED) => {
            if let Some(cause) = text(&body, "cause") {
                v.last_error = Some(cause);
            }
            Some(t.trim_start_matches("order."))
        }
        _ => None,
    };
    if let Some(s) = status {
        v.status = s.to_owned();
    }
    v.step = e.event_type.clone();
    v.updated_at = e.occurred_at;
    v.last_sequence = e.sequence;
    v
}

/// The read model of a set of events (a rebuild): events grouped by order, each order's
/// folded by sequence; duplicates (one id twice, as a reset copies history) count once.
pub fn fold_all(mut events: Vec<StoredEvent>) -> (Vec<OrderView>, Vec<StoredEvent>) {
    events.retain(is_order_event);
    martix_engine::events::projection::rebuild_order(&mut events);
    let mut orders: Vec<OrderView> = Vec::new();
    for e in &events {
        match orders.last_mut() {
            Some(v) if v.namespace == e.namespace && v.order_id == e.subject => {
                *v = fold(Some(std::mem::take(v)), e);
            }
            _ => orders.push(fold(None, e)),
        }
    }
    (orders, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64, t: &str, body: &str) -> StoredEvent {
        StoredEvent {
            position: seq,
            xact: 0,
            shard: 0,
            event_id: format!("run/{seq}"),
            namespace: "default".into(),
            subject: "o-1".into(),
            workflow_type: ORDER_WORKFLOW_TYPE.into(),
            run_id: "run".into(),
            sequence: seq,
            event_type: t.into(),
            occurred_at: 1_000 + seq,
            body: body.into(),
            sent: false,
        }
    }

    #[test]
    fn a_compensated_order_folds_to_its_amounts() {
        let events = vec![
            ev(
                1,
                "order.placed",
                r#"{"customer_id":"c-1","currency":"EUR","items":[{"sku":"a","qty":2,"unit_price_cents":500}]}"#,
            ),
            ev(
                2,
                "order.priced",
                r#"{"subtotal_cents":1000,"discount_cents":0,"tax_cents":200,"total_cents":1200}"#,
            ),
            ev(3, "inventory.reserved", r#"{"reservation":"r"}"#),
            ev(
                4,
                "payment.charged",
                r#"{"charge":"k","amount_cents":1200}"#,
            ),
            ev(
                5,
                "payment.refunded",
                r#"{"charge":"k","amount_cents":1200}"#,
            ),
            ev(6, "inventory.released", r#"{"reservation":"r"}"#),
            ev(
                7,
                "order.canceled",
                r#"{"status":"compensated","failed_step":"cancel","cause":"cancelled before shipment"}"#,
            ),
        ];
        let mut view = None;
        for e in &events {
            view = Some(fold(view, e));
        }
        let v = view.unwrap();
        assert_eq!(v.status, "canceled");
        assert_eq!(v.customer_id, "c-1");
        assert_eq!(
            (v.total_cents, v.charged_cents, v.refunded_cents),
            (1200, 1200, 1200)
        );
        assert_eq!(v.last_error.as_deref(), Some("cancelled before shipment"));
        assert_eq!(
            (v.created_at, v.updated_at, v.last_sequence),
            (1001, 1007, 7)
        );
        assert_eq!(v.step, "order.canceled");

        // The same events shuffled and one duplicated fold to the same row.
        let mut shuffled = events.clone();
        shuffled.reverse();
        shuffled.push(events[3].clone());
        let (orders, kept) = fold_all(shuffled);
        assert_eq!(orders, vec![v]);
        assert_eq!(kept.len(), 7);
    }

    #[test]
    fn a_nul_in_a_body_never_reaches_the_row() {
        let v = fold(
            None,
            &ev(1, "order.placed", r#"{"customer_id":"a\u0000b"}"#),
        );
        assert_eq!(v.customer_id, "a\u{FFFD}b");
    }

    #[test]
    fn events_of_other_workflows_are_not_folded() {
        let mut e = ev(1, "order.placed", "{}");
        e.workflow_type = "billing".into();
        assert!(!is_order_event(&e));
        assert!(fold_all(vec![e]).0.is_empty());
    }
}
