//! The subscriptions read model: how subscription events fold into one row per subscription.
//! Pure; the store runs it inside the projection host's transaction (and so does a rebuild).

use super::model::{Event, Status};
use martix_engine::store::events::StoredEvent;

/// One subscription as the read model holds it. Amounts in integer cents.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub namespace: String,
    pub subscription_id: String,
    pub customer: String,
    pub plan: String,
    pub price_cents: i64,
    /// `active`, then one of `ended`, `canceled`, `lapsed`.
    pub status: String,
    /// Renewals charged.
    pub renewals: i64,
    pub charged_cents: i64,
    pub last_charge_id: Option<String>,
    /// Why it lapsed or was canceled.
    pub reason: Option<String>,
    /// When `subscription.started` occurred (ms since the epoch).
    pub started_at: i64,
    pub updated_at: i64,
    /// The last event folded in.
    pub last_event_id: String,
    pub last_sequence: i64,
}

/// Folds `e` into `row` (`None`: the subscription is not in the read model yet). A
/// `subscription.started` begins the row afresh: a new run of the same subscription id. An
/// event that is not a subscription event with the body its type says is refused.
pub fn fold(row: Option<SubscriptionRow>, e: &StoredEvent) -> Result<SubscriptionRow, String> {
    let event = Event::parse(&e.event_type, &e.body)?;
    let mut r = match (row, &event) {
        (Some(r), ev) if !matches!(ev, Event::Started { .. }) => r,
        _ => SubscriptionRow {
            namespace: e.namespace.clone(),
            subscription_id: e.subject.clone(),
            status: Status::Active.as_str().into(),
            started_at: e.occurred_at,
            ..Default::default()
        },
    };
    match event {
        Event::Started {
            customer,
            plan,
            price_cents,
            ..
        } => {
            r.customer = customer;
            r.plan = plan;
            r.price_cents = price_cents;
        }
        Event::Renewed {
            charge_id,
            amount_cents,
            ..
        } => {
            r.renewals += 1;
            r.charged_cents += amount_cents;
            r.last_charge_id = Some(charge_id);
        }
        Event::Lapsed { reason, .. } => {
            r.status = Status::Lapsed.as_str().into();
            r.reason = Some(reason);
        }
        Event::Canceled { reason } => {
            r.status = Status::Canceled.as_str().into();
            r.reason = Some(reason);
        }
        Event::Ended { .. } => r.status = Status::Ended.as_str().into(),
    }
    r.updated_at = e.occurred_at;
    r.last_event_id = e.event_id.clone();
    r.last_sequence = e.sequence;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sequence: i64, e: &Event) -> StoredEvent {
        StoredEvent {
            position: 0,
            xact: 0,
            shard: 0,
            event_id: format!("run/{sequence}"),
            namespace: "default".into(),
            subject: "s-1".into(),
            workflow_type: super::super::SUBSCRIPTION.into(),
            run_id: "run".into(),
            sequence,
            event_type: e.event_type().into(),
            occurred_at: 1000 + sequence,
            body: e.body().to_string(),
            sent: false,
        }
    }

    #[test]
    fn renewals_add_up_and_the_final_event_sets_the_status() {
        let events = [
            Event::Started {
                subscription_id: "s-1".into(),
                customer: "c".into(),
                plan: "gold".into(),
                price_cents: 500,
                renewals: 2,
            },
            Event::Renewed {
                renewal: 1,
                charge_id: "ch-1".into(),
                amount_cents: 500,
            },
            Event::Renewed {
                renewal: 2,
                charge_id: "ch-2".into(),
                amount_cents: 500,
            },
            Event::Ended {
                renewals: 2,
                charged_cents: 1000,
            },
        ];
        let mut row = None;
        for (i, e) in events.iter().enumerate() {
            row = Some(fold(row, &event(i as i64 + 1, e)).unwrap());
            let r = row.as_ref().unwrap();
            let want = if i == 3 { "ended" } else { "active" };
            assert_eq!(r.status, want);
        }
        let r = row.unwrap();
        assert_eq!((r.renewals, r.charged_cents), (2, 1000));
        assert_eq!(r.last_charge_id.as_deref(), Some("ch-2"));
        assert_eq!(
            (r.started_at, r.updated_at, r.last_sequence),
            (1001, 1004, 4)
        );
        assert_eq!(r.last_event_id, "run/4");
    }

    #[test]
    fn a_body_that_is_not_what_its_type_says_is_refused() {
        let mut e = event(1, &Event::Canceled { reason: "x".into() });
        e.body = "{\"renewal\": 1}".into();
        assert!(fold(None, &e).is_err());
    }
}
