//! The subscription domain's contract: the workflow's input and outcome, the activities'
//! inputs and outputs, the signal, and the events the workflow publishes with their bodies.
//! Shared by the workflow, the activities and the read model, so that the three agree.

use serde::{Deserialize, Serialize};

/// The workflow type.
pub const SUBSCRIPTION: &str = "subscription";

/// The signal that cancels a subscription (input [`CancelRequest`]).
pub const CANCEL_SIGNAL: &str = "cancel";

/// The activity types.
pub mod names {
    /// Charges one renewal ([`super::Renewal`] -> [`super::Charge`]).
    pub const CHARGE_RENEWAL: &str = "charge_renewal";
    /// Tells the customer the subscription lapsed ([`super::LapseNotice`] -> `()`).
    pub const NOTIFY_CUSTOMER: &str = "notify_customer";
}

/// The error type of a charge the customer's card refuses: final, never retried.
pub const CARD_DECLINED: &str = "CardDeclined";

/// A subscription to start: its id is also the workflow id (the events' subject).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub subscription_id: String,
    pub customer: String,
    pub plan: String,
    /// Charged at each renewal.
    pub price_cents: i64,
    /// How many renewals before the subscription ends.
    pub renewals: u32,
    /// The billing period: the time before each renewal (a durable timer).
    pub period_ms: u64,
}

/// How a subscription ended: `status` is one of the final [`Status`] names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub subscription_id: String,
    pub status: String,
    /// Renewals charged.
    pub renewals: u32,
    pub charged_cents: i64,
    /// The charge ids, one per renewal, in order.
    pub charges: Vec<String>,
    /// Why the last charge failed (`lapsed`) or why it was canceled (`canceled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the customer was told of a lapse.
    pub customer_notified: bool,
}

/// A subscription's state as the read model and the outcome name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Started, renewing.
    Active,
    /// Every renewal charged.
    Ended,
    /// Canceled by signal.
    Canceled,
    /// A renewal could not be charged.
    Lapsed,
}

impl Status {
    /// The name stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Ended => "ended",
            Status::Canceled => "canceled",
            Status::Lapsed => "lapsed",
        }
    }
}

/// The input of `charge_renewal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub subscription_id: String,
    pub customer: String,
    /// 1 for the first renewal.
    pub renewal: u32,
    pub amount_cents: i64,
}

/// What `charge_renewal` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub charge_id: String,
    pub amount_cents: i64,
}

/// The input of `notify_customer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapseNotice {
    pub subscription_id: String,
    pub customer: String,
    pub reason: String,
}

/// The input of the `cancel` signal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub reason: String,
}

/// The events the workflow publishes, by type, with their bodies (JSON objects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// `subscription.started`: first, once per run.
    Started {
        subscription_id: String,
        customer: String,
        plan: String,
        price_cents: i64,
        /// Renewals planned.
        renewals: u32,
    },
    /// `subscription.renewed`: a renewal was charged.
    Renewed {
        renewal: u32,
        charge_id: String,
        amount_cents: i64,
    },
    /// `subscription.lapsed` (final): renewal `renewal` could not be charged.
    Lapsed { renewal: u32, reason: String },
    /// `subscription.canceled` (final).
    Canceled { reason: String },
    /// `subscription.ended` (final): every renewal was charged.
    Ended { renewals: u32, charged_cents: i64 },
}

/// The event types, as published.
pub mod event_types {
    pub const STARTED: &str = "subscription.started";
    pub const RENEWED: &str = "subscription.renewed";
    pub const LAPSED: &str = "subscription.lapsed";
    pub const CANCELED: &str = "subscription.canceled";
    pub const ENDED: &str = "subscription.ended";
}

impl Event {
    /// The event type it is published under.
    pub fn event_type(&self) -> &'static str {
        use event_types::*;
        match self {
            Event::Started { .. } => STARTED,
            Event::Renewed { .. } => RENEWED,
            Event::Lapsed { .. } => LAPSED,
            Event::Canceled { .. } => CANCELED,
            Event::Ended { .. } => ENDED,
        }
    }

    /// The body it is published with: the variant's fields as a JSON object.
    pub fn body(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(tagged)) => {
                tagged.into_values().next().unwrap_or_default()
            }
            _ => serde_json::Value::Null,
        }
    }

    /// The event of type `event_type` with body `body`, or why it is not one of ours.
    pub fn parse(event_type: &str, body: &str) -> Result<Self, String> {
        let variant = match event_type {
            event_types::STARTED => "Started",
            event_types::RENEWED => "Renewed",
            event_types::LAPSED => "Lapsed",
            event_types::CANCELED => "Canceled",
            event_types::ENDED => "Ended",
            other => return Err(format!("'{other}' is not a subscription event")),
        };
        let body: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("{event_type}: body: {e}"))?;
        serde_json::from_value(serde_json::json!({ variant: body }))
            .map_err(|e| format!("{event_type}: body: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_parses_back_from_its_type_and_body() {
        let events = [
            Event::Started {
                subscription_id: "s-1".into(),
                customer: "c".into(),
                plan: "gold".into(),
                price_cents: 990,
                renewals: 3,
            },
            Event::Renewed {
                renewal: 1,
                charge_id: "ch-1".into(),
                amount_cents: 990,
            },
            Event::Lapsed {
                renewal: 2,
                reason: "declined".into(),
            },
            Event::Canceled { reason: "".into() },
            Event::Ended {
                renewals: 3,
                charged_cents: 2970,
            },
        ];
        for e in events {
            let body = e.body();
            assert!(body.is_object(), "{body}");
            assert_eq!(Event::parse(e.event_type(), &body.to_string()), Ok(e));
        }
    }

    #[test]
    fn other_types_and_bad_bodies_are_refused() {
        assert!(Event::parse("order.placed", "{}").is_err());
        assert!(Event::parse(event_types::RENEWED, "{\"renewal\": \"one\"}").is_err());
        assert!(Event::parse(event_types::ENDED, "not json").is_err());
    }
}
