//! The `subscription` workflow: started, then for each renewal a billing period on a durable
//! timer and a charge, and finally ended.
//!
//! - Every renewal charged: `subscription.renewed` each time, then `subscription.ended`.
//! - A charge that fails for good (a declined card at once, anything else after its retries):
//!   `subscription.lapsed`, and the customer is told (`notify_customer`; a notice that keeps
//!   failing is recorded in the outcome, it does not change the lapse).
//! - Signal `cancel` before the end: `subscription.canceled`, no further charge. A cancel that
//!   arrives while a renewal is being charged takes effect after that charge.

use super::model::{
    CANCEL_SIGNAL, CancelRequest, Charge, Event, LapseNotice, Outcome, Renewal, Status,
    Subscription, names,
};
use futures::StreamExt;
use martix_sdk::{ActivityFailure, ActivityOptions, SignalError, WorkflowContext, WorkflowError};
use std::time::Duration;

/// A charge may take 10 s per attempt, retried from 100 ms doubling to 2 s, 5 attempts; a
/// declined card is final at once (the activity says so).
fn charge_options() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(100))
        .maximum_interval(Duration::from_secs(2))
        .maximum_attempts(5)
}

fn cause(f: &ActivityFailure) -> String {
    match f.error_type() {
        "" => f.failure.message.clone(),
        t => format!("{t}: {}", f.failure.message),
    }
}

fn publish(ctx: &WorkflowContext, event: &Event) {
    ctx.publish(event.event_type(), &event.body());
}

/// The subscription workflow, type [`super::SUBSCRIPTION`].
pub async fn subscription(
    ctx: WorkflowContext,
    sub: Subscription,
) -> Result<Outcome, WorkflowError> {
    let mut outcome = Outcome {
        subscription_id: sub.subscription_id.clone(),
        status: Status::Ended.as_str().into(),
        renewals: 0,
        charged_cents: 0,
        charges: Vec::new(),
        reason: None,
        customer_notified: false,
    };
    publish(
        &ctx,
        &Event::Started {
            subscription_id: sub.subscription_id.clone(),
            customer: sub.customer.clone(),
            plan: sub.plan.clone(),
            price_cents: sub.price_cents,
            renewals: sub.renewals,
        },
    );
    let mut cancels = ctx.signal_by_name::<CancelRequest>(CANCEL_SIGNAL);
    for renewal in 1..=sub.renewals {
        let mut period = ctx.sleep(Duration::from_millis(sub.period_ms));
        // Biased, not `select!`: when both are ready in one activation, a replay must take the
        // same branch as the first run did.
        let canceled = futures::select_biased! {
            request = cancels.next() => Some(request),
            () = period => None,
        };
        if let Some(request) = canceled {
            return Ok(cancel_now(&ctx, outcome, request));
        }
        let charged = ctx
            .activity_by_name::<_, Charge>(
                names::CHARGE_RENEWAL,
                &Renewal {
                    subscription_id: sub.subscription_id.clone(),
                    customer: sub.customer.clone(),
                    renewal,
                    amount_cents: sub.price_cents,
                },
                charge_options(),
            )
            .await;
        match charged {
            Ok(charge) => {
                outcome.renewals = renewal;
                outcome.charged_cents += charge.amount_cents;
                outcome.charges.push(charge.charge_id.clone());
                publish(
                    &ctx,
                    &Event::Renewed {
                        renewal,
                        charge_id: charge.charge_id,
                        amount_cents: charge.amount_cents,
                    },
                );
            }
            Err(failure) => {
                let reason = cause(&failure);
                publish(
                    &ctx,
                    &Event::Lapsed {
                        renewal,
                        reason: reason.clone(),
                    },
                );
                let notice = LapseNotice {
                    subscription_id: sub.subscription_id.clone(),
                    customer: sub.customer.clone(),
                    reason: reason.clone(),
                };
                let notified = ctx
                    .activity_by_name::<_, ()>(
                        names::NOTIFY_CUSTOMER,
                        &notice,
                        ActivityOptions::new(Duration::from_secs(10))
                            .initial_interval(Duration::from_millis(100))
                            .maximum_attempts(5),
                    )
                    .await;
                outcome.status = Status::Lapsed.as_str().into();
                outcome.reason = Some(reason);
                outcome.customer_notified = notified.is_ok();
                return Ok(outcome);
            }
        }
    }
    // A cancel that came in during the last charge still wins over the end.
    if let Some(request) = cancels.try_next() {
        return Ok(cancel_now(&ctx, outcome, Some(request)));
    }
    publish(
        &ctx,
        &Event::Ended {
            renewals: outcome.renewals,
            charged_cents: outcome.charged_cents,
        },
    );
    Ok(outcome)
}

/// Ends the subscription canceled (a request whose body cannot be read still cancels).
fn cancel_now(
    ctx: &WorkflowContext,
    mut outcome: Outcome,
    request: Option<Result<CancelRequest, SignalError>>,
) -> Outcome {
    let reason = request
        .and_then(Result::ok)
        .map(|r| r.reason)
        .unwrap_or_default();
    publish(
        ctx,
        &Event::Canceled {
            reason: reason.clone(),
        },
    );
    outcome.status = Status::Canceled.as_str().into();
    outcome.reason = Some(reason);
    outcome
}
