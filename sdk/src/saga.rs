//! `Saga`: compensations registered after each successful step, run in reverse on failure.

use crate::definition::Activity;
use crate::error::{ActivityFailure, Failure};
use crate::workflow::{ActivityOptions, WorkflowContext};
use martix_proto::v1 as pb;
use serde::Serialize;

#[derive(Clone, Debug)]
struct Compensation {
    activity_type: String,
    /// The encoded input, or why it could not be encoded.
    input: Result<pb::Payload, String>,
    options: ActivityOptions,
    /// Whether `options` are the activity type's defaults, which the context's override.
    typed: bool,
    /// A business event published when the compensation succeeded: its type and body, or why
    /// the body could not be encoded.
    event: Option<(String, Result<serde_json::Value, String>)>,
}

/// The compensations of a saga, in the order their steps succeeded.
///
/// ```no_run
/// # use martix_sdk::{Activity, Saga, WorkflowContext, WorkflowError};
/// struct Reserve;
/// impl Activity for Reserve {
///     const NAME: &'static str = "reserve";
///     type Input = String;
///     type Output = String;
/// }
/// struct Release;
/// impl Activity for Release {
///     const NAME: &'static str = "release";
///     type Input = String;
///     type Output = ();
/// }
/// struct Charge;
/// impl Activity for Charge {
///     const NAME: &'static str = "charge";
///     type Input = String;
///     type Output = u64;
/// }
///
/// async fn order(ctx: WorkflowContext, order_id: String) -> Result<(), WorkflowError> {
///     let mut saga = Saga::new();
///     let reservation = ctx.activity(Reserve, &order_id).await?;
///     saga.add(Release, &reservation);
///     if let Err(declined) = ctx.activity(Charge, &order_id).await {
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

/// Runs one compensation: `None` when it succeeded (its event published). An input or event
/// body that could not be encoded fails it at once, naming what.
async fn run(ctx: &WorkflowContext, c: Compensation) -> Option<CompensationFailure> {
    let bad = |what: &str, why: &str| ActivityFailure {
        failure: Failure::new(
            "BadPayload",
            format!(
                "compensation '{}': cannot encode its {what}: {why}",
                c.activity_type
            ),
        ),
    };
    let encoded = match (&c.input, &c.event) {
        (Err(why), _) => Err(bad("input", why)),
        (_, Some((_, Err(why)))) => Err(bad("event body", why)),
        (Ok(input), _) => Ok(input.clone()),
    };
    let outcome = match encoded {
        Err(failure) => Err(failure),
        Ok(input) => {
            let options = if c.typed {
                ctx.activity_defaults().clone().or(&c.options)
            } else {
                c.options.clone().or(ctx.activity_defaults())
            };
            ctx.activity_by_name::<(), serde_json::Value>(&c.activity_type, &(), options)
                .with_payload(Some(input))
                .await
        }
    };
    match outcome {
        Ok(_) => {
            if let Some((event_type, Ok(body))) = &c.event {
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

fn event<B: Serialize>(event_type: &str, body: &B) -> (String, Result<serde_json::Value, String>) {
    (
        event_type.to_owned(),
        serde_json::to_value(body).map_err(|e| e.to_string()),
    )
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

    /// Registers activity `A` with `input` to undo the step that just succeeded. It runs with
    /// the options an activity call of `A` would have then (the context's defaults over
    /// `A::options()`).
    pub fn add<A: Activity>(&mut self, _activity: A, input: &A::Input) {
        self.steps.push(Compensation {
            activity_type: A::NAME.to_owned(),
            input: crate::payload::to_payload(input).map_err(|e| e.to_string()),
            options: A::options(),
            typed: true,
            event: None,
        });
    }

    /// Like [`Saga::add`], and once the compensation succeeded publishes the business event
    /// `event_type` with `body` (see [`WorkflowContext::publish`]).
    pub fn add_with_event<A: Activity, B: Serialize>(
        &mut self,
        activity: A,
        input: &A::Input,
        event_type: &str,
        body: &B,
    ) {
        self.add(activity, input);
        if let Some(last) = self.steps.last_mut() {
            last.event = Some(event(event_type, body));
        }
    }

    /// Registers the activity named `activity_type` to undo the step that just succeeded: the
    /// string form of [`Saga::add`].
    pub fn add_by_name<I: Serialize>(
        &mut self,
        activity_type: &str,
        input: &I,
        options: ActivityOptions,
    ) {
        self.steps.push(Compensation {
            activity_type: activity_type.to_owned(),
            input: crate::payload::to_payload(input).map_err(|e| e.to_string()),
            options,
            typed: false,
            event: None,
        });
    }

    /// Like [`Saga::add_by_name`], and once the compensation succeeded publishes the business
    /// event `event_type` with `body`.
    pub fn add_by_name_with_event<I: Serialize, B: Serialize>(
        &mut self,
        activity_type: &str,
        input: &I,
        options: ActivityOptions,
        event_type: &str,
        body: &B,
    ) {
        self.add_by_name(activity_type, input, options);
        if let Some(last) = self.steps.last_mut() {
            last.event = Some(event(event_type, body));
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
