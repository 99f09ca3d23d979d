//! `Saga`: compensations registered after each successful step, run in reverse on failure.

use crate::error::ActivityFailure;
use crate::workflow::{ActivityOptions, WorkflowContext};
use martix_proto::v1 as pb;
use serde::Serialize;

#[derive(Clone, Debug)]
struct Compensation {
    activity_type: String,
    input: Option<pb::Payload>,
    options: ActivityOptions,
    /// A business event published when the compensation succeeded.
    event: Option<(String, serde_json::Value)>,
}

/// The compensations of a saga, in the order their steps succeeded.
///
/// ```no_run
/// # use martix_sdk::{Saga, WorkflowContext, WorkflowError, ActivityOptions};
/// # use std::time::Duration;
/// async fn order(ctx: WorkflowContext, order_id: String) -> Result<(), WorkflowError> {
///     let opts = ActivityOptions::new(Duration::from_secs(10));
///     let mut saga = Saga::new();
///     let r: String = ctx.activity("reserve", &order_id, opts.clone()).await?;
///     saga.add("release", &r, opts.clone());
///     if let Err(declined) = ctx.activity::<_, String>("charge", &order_id, opts.clone()).await {
///         saga.compensate(&ctx).await;
///         return Err(declined.into());
///     }
///     Ok(())
/// }
/// ```
#[derive(Default)]
pub struct Saga {
    steps: Vec<Compensation>,
    parallel: bool,
}

/// A compensation that failed after all its retries. It can be run again
/// ([`CompensationFailure::retry`]), for example once an operator fixed its cause.
#[derive(Debug, Clone)]
pub struct CompensationFailure {
    /// The compensating activity's type.
    pub activity_type: String,
    /// Why it failed.
    pub failure: ActivityFailure,
    compensation: Compensation,
}

impl CompensationFailure {
    /// Runs the compensation again (a new activity, with its own retries); publishes its event
    /// when it succeeds, or gives back the new failure.
    pub async fn retry(self, ctx: &WorkflowContext) -> Result<(), CompensationFailure> {
        run(ctx, self.compensation).await.map_or(Ok(()), Err)
    }
}

/// Runs one compensation: `None` when it succeeded (its event published).
async fn run(ctx: &WorkflowContext, c: Compensation) -> Option<CompensationFailure> {
    let fut = ctx.activity::<(), serde_json::Value>(&c.activity_type, &(), c.options.clone());
    match fut.with_payload(c.input.clone()).await {
        Ok(_) => {
            if let Some((event_type, body)) = &c.event {
                ctx.publish(event_type, body);
            }
            None
        }
        Err(failure) => Some(CompensationFailure {
            activity_type: c.activity_type.clone(),
            failure,
            compensation: c,
        }),
    }
}

impl Saga {
    /// An empty saga that compensates one step at a time, last first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the compensations concurrently instead of one at a time.
    pub fn parallel(mut self) -> Self {
        self.parallel = true;
        self
    }

    /// Registers the activity that undoes the step that just succeeded.
    pub fn add<I: Serialize>(&mut self, activity_type: &str, input: &I, options: ActivityOptions) {
        self.steps.push(Compensation {
            activity_type: activity_type.to_owned(),
            input: crate::payload::to_payload(input).ok(),
            options,
            event: None,
        });
    }

    /// Adds a compensation that, once it succeeded, publishes the business event
    /// `event_type` with `body` (see [`WorkflowContext::publish`]).
    pub fn add_with_event<I: Serialize, B: Serialize>(
        &mut self,
        activity_type: &str,
        input: &I,
        options: ActivityOptions,
        event_type: &str,
        body: &B,
    ) {
        self.add(activity_type, input, options);
        if let (Some(last), Ok(body)) = (self.steps.last_mut(), serde_json::to_value(body)) {
            last.event = Some((event_type.to_owned(), body));
        }
    }

    /// How many compensations are registered.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The compensating activities' types, in the order they were registered.
    pub fn activity_types(&self) -> Vec<String> {
        self.steps.iter().map(|c| c.activity_type.clone()).collect()
    }

    /// Whether no compensation is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs the compensations, last registered first, each an ordinary activity with its own
    /// retry policy. Returns every compensation that failed; none is silently dropped.
    pub async fn compensate(self, ctx: &WorkflowContext) -> Vec<CompensationFailure> {
        let steps: Vec<_> = self.steps.into_iter().rev().collect();
        let run = |c: Compensation| run(ctx, c);
        if self.parallel {
            futures::future::join_all(steps.into_iter().map(run))
                .await
                .into_iter()
                .flatten()
                .collect()
        } else {
            let mut failed = Vec::new();
            for c in steps {
                if let Some(f) = run(c).await {
                    failed.push(f);
                }
            }
            failed
        }
    }
}
