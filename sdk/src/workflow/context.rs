//! `WorkflowContext`: the only door from workflow code to the world.

use super::driver::Shared;
use super::options::{ActivityOptions, dur};
use crate::definition::{Activity, Signal};
use crate::error::{ActivityFailure, ContinueAsNew, Failure, SignalError, WorkflowError};
use crate::payload::{from_payload, to_payload};
use futures::Stream;
use futures::future::FusedFuture;
use futures::stream::FusedStream;
use martix_proto::v1 as pb;
use pb::command::Attributes as C;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;

/// The marker by which a workflow says it waits for an operator (the engine shows it).
const ATTENTION_MARKER: &str = "attention";
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// What a workflow knows about its own run. The same in the worker and in the
/// [`Replayer`](crate::Replayer) (from an exported history that carries the run's ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowInfo {
    /// The namespace of the run.
    pub namespace: String,
    /// The business key (`order-1042`).
    pub workflow_id: String,
    /// This run.
    pub run_id: String,
    /// The first run of the chain of runs continued as new that this one belongs to; this
    /// run's id if it continues none.
    pub first_run_id: String,
    /// The run this one continues (it was started by a continue-as-new), if any.
    pub continued_from_run_id: Option<String>,
    /// The registered type name.
    pub workflow_type: String,
    /// The queue its tasks go to.
    pub task_queue: String,
}

impl WorkflowInfo {
    /// The info of the run `run_id` of `workflow_id` in `namespace` that `started` began: the
    /// type, queue, first run and the run it continues are the start event's.
    pub(crate) fn of_run(
        namespace: String,
        workflow_id: String,
        run_id: String,
        started: &pb::WorkflowExecutionStartedAttributes,
    ) -> Self {
        Self {
            first_run_id: if started.first_run_id.is_empty() {
                run_id.clone()
            } else {
                started.first_run_id.clone()
            },
            continued_from_run_id: Some(started.continued_from_run_id.clone())
                .filter(|id| !id.is_empty()),
            namespace,
            workflow_id,
            run_id,
            workflow_type: started.workflow_type.clone(),
            task_queue: started.task_queue.clone(),
        }
    }
}

/// The workflow's handle on its run: activities, timers, signals, time, randomness,
/// cancellation and versioning, all deterministic on replay. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowContext {
    pub(crate) shared: Arc<Mutex<Shared>>,
    info: Arc<WorkflowInfo>,
    /// What the activities started through this context inherit (see
    /// [`WorkflowContext::with_activity_defaults`]).
    activity_defaults: Arc<ActivityOptions>,
}

impl WorkflowContext {
    pub(crate) fn new(shared: Arc<Mutex<Shared>>, info: WorkflowInfo) -> Self {
        Self {
            shared,
            info: Arc::new(info),
            activity_defaults: Arc::default(),
        }
    }

    /// The same run, whose activities inherit `defaults` for the options their call leaves
    /// unset: timeouts, queue, each retry policy field. A call's own options win; what
    /// neither sets is the engine's default (see [`ActivityOptions`]). Set it once at the top
    /// of a workflow; the defaults are not recorded in history, only the options of each
    /// activity they produce.
    ///
    /// ```no_run
    /// # use martix_sdk::{WorkflowContext, WorkflowError, ActivityOptions};
    /// # use std::time::Duration;
    /// async fn order(ctx: WorkflowContext, sku: String) -> Result<(), WorkflowError> {
    ///     let ctx = ctx.with_activity_defaults(
    ///         ActivityOptions::new(Duration::from_secs(10)).initial_interval(Duration::from_millis(200)),
    ///     );
    ///     // 10 s per attempt, retried from 200 ms, at most 3 attempts.
    ///     let _: String = ctx
    ///         .activity_by_name("reserve", &sku, ActivityOptions::default().maximum_attempts(3))
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub fn with_activity_defaults(&self, defaults: ActivityOptions) -> WorkflowContext {
        WorkflowContext {
            activity_defaults: Arc::new(defaults),
            ..self.clone()
        }
    }

    /// The options activities started through this context inherit.
    pub fn activity_defaults(&self) -> &ActivityOptions {
        &self.activity_defaults
    }

    pub(super) fn state(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This run's ids and names.
    pub fn info(&self) -> &WorkflowInfo {
        &self.info
    }

    /// Runs activity `A` with `input` and waits for its final outcome (after the engine's
    /// retries); the input and output types are `A`'s, checked at compile time. Its options
    /// are the context's [defaults](WorkflowContext::with_activity_defaults) over
    /// [`A::options()`](Activity::options); the call can override them with
    /// [`ActivityFuture::with_options`].
    ///
    /// ```no_run
    /// # use martix_sdk::{Activity, WorkflowContext, WorkflowError, ActivityOptions};
    /// # use std::time::Duration;
    /// struct Reserve;
    /// impl Activity for Reserve {
    ///     const NAME: &'static str = "reserve_inventory";
    ///     type Input = String;
    ///     type Output = String;
    /// }
    ///
    /// async fn order(ctx: WorkflowContext, sku: String) -> Result<String, WorkflowError> {
    ///     let reservation = ctx.activity(Reserve, &sku).await?;
    ///     let again = ctx
    ///         .activity(Reserve, &sku)
    ///         .with_options(ActivityOptions::new(Duration::from_secs(30)))
    ///         .await?;
    ///     Ok(reservation + &again)
    /// }
    /// ```
    pub fn activity<A: Activity>(
        &self,
        _activity: A,
        input: &A::Input,
    ) -> ActivityFuture<A::Output> {
        self.schedule(
            A::NAME,
            to_payload(input),
            (*self.activity_defaults).clone().or(&A::options()),
        )
    }

    /// Runs activity `activity_type` by its name, the string form of
    /// [`WorkflowContext::activity`] (for activities without a Rust definition, written in
    /// another language). The input is JSON-encoded; the output decoded from JSON. Options
    /// `options` leaves unset are the context's
    /// [defaults](WorkflowContext::with_activity_defaults).
    ///
    /// ```no_run
    /// # use martix_sdk::{WorkflowContext, WorkflowError, ActivityOptions};
    /// # use std::time::Duration;
    /// async fn order(ctx: WorkflowContext, sku: String) -> Result<String, WorkflowError> {
    ///     let reservation: String = ctx
    ///         .activity_by_name("reserve_inventory", &sku, ActivityOptions::new(Duration::from_secs(10)))
    ///         .await?;
    ///     Ok(reservation)
    /// }
    /// ```
    pub fn activity_by_name<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        activity_type: &str,
        input: &I,
        options: ActivityOptions,
    ) -> ActivityFuture<O> {
        self.schedule(
            activity_type,
            to_payload(input),
            options.or(&self.activity_defaults),
        )
    }

    /// An activity future that schedules `activity_type` when first polled. An input that did
    /// not encode resolves it at once with a failure saying so, scheduling nothing.
    fn schedule<O>(
        &self,
        activity_type: &str,
        input: Result<pb::Payload, serde_json::Error>,
        options: ActivityOptions,
    ) -> ActivityFuture<O> {
        ActivityFuture {
            shared: self.shared.clone(),
            activity_type: activity_type.to_owned(),
            input: input.map(Some).map_err(|e| e.to_string()),
            options,
            id: None,
            done: false,
            _out: PhantomData,
        }
    }

    /// A durable timer: resolves after `duration`, even across crashes and restarts.
    pub fn sleep(&self, duration: Duration) -> TimerFuture {
        TimerFuture {
            shared: self.shared.clone(),
            duration,
            id: None,
            done: false,
        }
    }

    /// The signals `S`, in the order they arrived, including those that arrived before this
    /// call, each decoded as `S::Payload`.
    ///
    /// ```no_run
    /// # use martix_sdk::{Signal, WorkflowContext, WorkflowError};
    /// use futures::StreamExt;
    /// struct Approve;
    /// impl Signal for Approve {
    ///     const NAME: &'static str = "approve";
    ///     type Payload = String;
    /// }
    ///
    /// async fn approval(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    ///     let mut approvals = ctx.signal(Approve);
    ///     Ok(approvals.next().await.expect("a signal stream never ends")?)
    /// }
    /// ```
    pub fn signal<S: Signal>(&self, _signal: S) -> SignalStream<S::Payload> {
        self.signal_by_name(S::NAME)
    }

    /// The signals named `name`, in the order they arrived, including those that arrived
    /// before this call, each decoded as `T`: the string form of [`WorkflowContext::signal`].
    pub fn signal_by_name<T: DeserializeOwned>(&self, name: &str) -> SignalStream<T> {
        let token = self.state().waiters.token();
        SignalStream {
            shared: self.shared.clone(),
            name: name.to_owned(),
            token,
            _t: PhantomData,
        }
    }

    /// Whether a signal named `name` has arrived and not been taken from its stream yet.
    pub fn has_signal(&self, name: &str) -> bool {
        self.state()
            .signals
            .get(name)
            .is_some_and(|q| !q.is_empty())
    }

    /// The current time of the workflow: when its current workflow task was scheduled. The
    /// same on every replay.
    pub fn now(&self) -> SystemTime {
        let ms = self.state().now_ms;
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
    }

    /// A random number, the same on every replay.
    pub fn random(&self) -> u64 {
        self.state().next_random()
    }

    /// A random UUID, the same on every replay.
    pub fn uuid(&self) -> uuid::Uuid {
        let mut s = self.state();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&s.next_random().to_be_bytes());
        bytes[8..].copy_from_slice(&s.next_random().to_be_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// Runs `f` once, records its result in history, and returns the recorded result on
    /// every replay. For reading something non-deterministic (a config value, the clock).
    pub fn side_effect<T: Serialize + DeserializeOwned>(&self, f: impl FnOnce() -> T) -> T {
        let mut s = self.state();
        let seq = s.next_seq();
        if let Some(recorded) = s.recorded_side_effect(seq)
            && let Ok(v) = from_payload(Some(&recorded))
        {
            s.push_marker_command(crate::workflow::driver::SIDE_EFFECT_MARKER, seq, recorded);
            return v;
        }
        drop(s);
        let value = f();
        // A value that cannot be recorded would be computed again on every replay, silently
        // different: the workflow task fails instead, naming why (panics in workflow code fail
        // the task and are retried, visible in describe).
        let payload = to_payload(&value).unwrap_or_else(|e| {
            panic!(
                "side_effect: a {} cannot be recorded as JSON: {e}",
                std::any::type_name::<T>()
            )
        });
        self.state()
            .push_marker_command(crate::workflow::driver::SIDE_EFFECT_MARKER, seq, payload);
        value
    }

    /// Publishes a business event about this workflow (its workflow id is the subject, for an
    /// order the order id), for example `ctx.publish("payment.charged", &charge)`. The engine
    /// writes it to its outbox in the same transaction as this workflow task's other commands:
    /// it exists if and only if the step is in the history, and a replay never publishes it
    /// again. `body` must serialize to a JSON object; the engine refuses anything else (the
    /// workflow task fails and is retried, visible to operators).
    pub fn publish<T: Serialize>(&self, event_type: &str, body: &T) {
        // A body that cannot be encoded fails the workflow task, naming the event, rather than
        // publishing an empty one.
        let body = to_payload(body).unwrap_or_else(|e| {
            panic!("publish {event_type}: the body cannot be encoded as JSON: {e}")
        });
        self.state()
            .push_command(pb::command::Attributes::PublishEvent(
                pb::PublishEventCommand {
                    event_type: event_type.to_owned(),
                    body: Some(body),
                },
            ));
    }

    /// Says the run waits for an operator, and why: describe, list and `martix stuck` show the
    /// reason and since when until [`WorkflowContext::attention_resolved`]. The workflow then
    /// typically waits for a signal carrying the operator's decision. Recorded in history, so
    /// a replay says it at the same point.
    pub fn needs_attention(&self, reason: &str) {
        let mut details = std::collections::HashMap::new();
        details.insert(
            "reason".to_owned(),
            to_payload(&reason).expect("a string encodes as JSON"),
        );
        self.state()
            .push_command(C::RecordMarker(pb::RecordMarkerCommand {
                marker_name: ATTENTION_MARKER.to_owned(),
                details,
            }));
    }

    /// Says the run no longer waits for an operator.
    pub fn attention_resolved(&self) {
        self.state()
            .push_command(C::RecordMarker(pb::RecordMarkerCommand {
                marker_name: ATTENTION_MARKER.to_owned(),
                details: std::collections::HashMap::new(),
            }));
    }

    /// Whether the code after a change identified by `change_id` should run. New runs (and
    /// runs that reached this point after the change shipped) get `true`; runs that passed
    /// this point under the old code replay with `false`, so they stay deterministic.
    pub fn patched(&self, change_id: &str) -> bool {
        self.state().patched(change_id)
    }

    /// Says that the workflow undid its effects (a saga that compensated): when it returns
    /// `Ok`, the run ends `COMPENSATED` instead of `COMPLETED`, with the result saying why.
    pub fn mark_compensated(&self) {
        self.state().compensated = true;
    }

    /// Whether cancellation of the run was asked for.
    pub fn is_cancel_requested(&self) -> bool {
        self.state().cancel_requested
    }

    /// Resolves when cancellation of the run is asked for.
    pub fn cancelled(&self) -> CancelledFuture {
        let token = self.state().waiters.token();
        CancelledFuture {
            shared: self.shared.clone(),
            token,
            done: false,
        }
    }

    /// Ends this run and starts a new one of the same workflow with `input`; return it:
    /// `return Err(ctx.continue_as_new(&next))`.
    pub fn continue_as_new<I: Serialize>(&self, input: &I) -> WorkflowError {
        match to_payload(input) {
            Ok(p) => WorkflowError::ContinueAsNew(Box::new(ContinueAsNew {
                command: pb::ContinueAsNewWorkflowExecutionCommand {
                    input: Some(p),
                    ..Default::default()
                },
            })),
            Err(e) => WorkflowError::Payload(e),
        }
    }
}

/// An activity in flight. Dropping it before it resolves asks the engine to cancel it.
#[must_use = "an activity runs only when awaited"]
pub struct ActivityFuture<O> {
    shared: Arc<Mutex<Shared>>,
    activity_type: String,
    /// The encoded input, or why it could not be encoded.
    input: Result<Option<pb::Payload>, String>,
    options: ActivityOptions,
    id: Option<String>,
    done: bool,
    _out: PhantomData<fn() -> O>,
}

impl<O> Unpin for ActivityFuture<O> {}

impl<O> ActivityFuture<O> {
    /// These options over the call's: what `options` sets wins, what it leaves unset stays
    /// as the call had it (the context's defaults over the activity type's). Only before the
    /// future is first polled, when the activity is scheduled.
    ///
    /// ```no_run
    /// # use martix_sdk::{WorkflowContext, WorkflowError, ActivityOptions};
    /// # async fn f(ctx: WorkflowContext) -> Result<(), WorkflowError> {
    /// let _: () = ctx
    ///     .activity_by_name("notify", &"o-1", ActivityOptions::default())
    ///     .with_options(ActivityOptions::default().maximum_attempts(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_options(mut self, options: ActivityOptions) -> Self {
        self.options = options.or(&self.options);
        self
    }

    /// Replaces the input with an already encoded payload.
    pub(crate) fn with_payload(mut self, input: Option<pb::Payload>) -> Self {
        self.input = Ok(input);
        self
    }
}

impl<O: DeserializeOwned> Future for ActivityFuture<O> {
    type Output = Result<O, ActivityFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            // Polled after it resolved (a `select!` loop): it never resolves again.
            return Poll::Pending;
        }
        if let (None, Err(why)) = (&this.id, &this.input) {
            // Nothing was scheduled: the same on every replay, as the encoding is.
            this.done = true;
            return Poll::Ready(Err(ActivityFailure {
                failure: Failure::new(
                    "BadPayload",
                    format!(
                        "activity '{}': cannot encode its input: {why}",
                        this.activity_type
                    ),
                ),
            }));
        }
        let mut s = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        let id = match &this.id {
            Some(id) => id.clone(),
            None => {
                let id = s.next_seq().to_string();
                let input = std::mem::replace(&mut this.input, Ok(None)).unwrap_or_default();
                s.push_command(C::ScheduleActivity(this.options.schedule_command(
                    id.clone(),
                    this.activity_type.clone(),
                    input,
                )));
                s.activities.insert(id.clone(), None);
                this.id = Some(id.clone());
                id
            }
        };
        match s.activities.get(&id).cloned().flatten() {
            None => {
                // Woken when the driver applies the activity's outcome.
                s.waiters.wait_activity(&id, cx.waker());
                Poll::Pending
            }
            Some(outcome) => {
                s.activities.remove(&id);
                s.waiters.forget_activity(&id);
                this.done = true;
                Poll::Ready(match outcome {
                    Ok(p) => from_payload(p.as_ref()).map_err(|e| ActivityFailure {
                        failure: Failure::new(
                            "BadPayload",
                            format!(
                                "activity '{}': cannot decode its result: {e}",
                                this.activity_type
                            ),
                        ),
                    }),
                    Err(failure) => Err(ActivityFailure {
                        failure: failure.into(),
                    }),
                })
            }
        }
    }
}

/// Terminated once it resolved: `futures::select!` skips it then, so it needs no `.fuse()`.
impl<O: DeserializeOwned> FusedFuture for ActivityFuture<O> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<O> Drop for ActivityFuture<O> {
    fn drop(&mut self) {
        if let (Some(id), false) = (&self.id, self.done) {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            s.waiters.forget_activity(id);
            if s.activities.remove(id).is_some() {
                s.push_command(C::RequestCancelActivity(
                    pb::RequestCancelActivityTaskCommand {
                        activity_id: id.clone(),
                    },
                ));
            }
        }
    }
}

/// A durable timer. Dropping it before it fires cancels it.
#[must_use = "a timer runs only when awaited"]
pub struct TimerFuture {
    shared: Arc<Mutex<Shared>>,
    duration: Duration,
    id: Option<String>,
    done: bool,
}

impl Future for TimerFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.done {
            return Poll::Pending;
        }
        let mut s = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        let id = match &this.id {
            Some(id) => id.clone(),
            None => {
                let id = s.next_seq().to_string();
                s.push_command(C::StartTimer(pb::StartTimerCommand {
                    timer_id: id.clone(),
                    start_to_fire_timeout: Some(dur(this.duration.max(Duration::from_millis(1)))),
                }));
                s.timers.insert(id.clone(), false);
                this.id = Some(id.clone());
                id
            }
        };
        if s.timers.get(&id).copied().unwrap_or(false) {
            s.timers.remove(&id);
            s.waiters.forget_timer(&id);
            this.done = true;
            Poll::Ready(())
        } else {
            // Woken when the driver applies the timer's firing.
            s.waiters.wait_timer(&id, cx.waker());
            Poll::Pending
        }
    }
}

/// Terminated once it fired: `futures::select!` needs no `.fuse()`.
impl FusedFuture for TimerFuture {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for TimerFuture {
    fn drop(&mut self) {
        if let (Some(id), false) = (&self.id, self.done) {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            s.waiters.forget_timer(id);
            if s.timers.remove(id).is_some() {
                s.push_command(C::CancelTimer(pb::CancelTimerCommand {
                    timer_id: id.clone(),
                }));
            }
        }
    }
}

/// The signals of one name, in the order they arrived, as a stream that never ends (it is
/// never terminated, so `futures::select!` takes it without `.fuse()`).
///
/// Each signal's payload is decoded once, when it is taken: an item is the value, or a
/// [`SignalError`] naming the signal and why its payload is not a `T`. A bad signal is an
/// item like any other, never skipped in silence; the workflow decides (`?` fails the run).
///
/// ```no_run
/// # use martix_sdk::{WorkflowContext, WorkflowError};
/// use futures::StreamExt;
/// async fn approval(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
///     let mut approvals = ctx.signal_by_name::<String>("approve");
///     // One that already arrived, without waiting...
///     if let Some(early) = approvals.try_next() {
///         return Ok(early?);
///     }
///     // ...else the next to arrive.
///     Ok(approvals.next().await.expect("a signal stream never ends")?)
/// }
/// ```
pub struct SignalStream<T> {
    shared: Arc<Mutex<Shared>>,
    name: String,
    /// Its key among the futures waiting for signals (see `Waiters`).
    token: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Unpin for SignalStream<T> {}

impl<T: DeserializeOwned> SignalStream<T> {
    /// The signal's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next signal that already arrived and was not taken yet, without waiting; `None`
    /// when there is none. Deterministic: on replay it sees the signals the run saw at this
    /// point.
    ///
    /// This inherent method takes precedence over `futures::TryStreamExt::try_next` (a future
    /// that waits); use `StreamExt::next` to wait.
    pub fn try_next(&mut self) -> Option<Result<T, SignalError>> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let payload = s.signals.get_mut(&self.name).and_then(|q| q.pop_front())?;
        drop(s);
        Some(self.decode(payload))
    }

    fn decode(&self, payload: Option<pb::Payload>) -> Result<T, SignalError> {
        from_payload(payload.as_ref()).map_err(|e| SignalError {
            signal: self.name.clone(),
            reason: e.to_string(),
        })
    }
}

impl<T: DeserializeOwned> Stream for SignalStream<T> {
    type Item = Result<T, SignalError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match s.signals.get_mut(&self.name).and_then(|q| q.pop_front()) {
            Some(p) => {
                s.waiters.forget_signal(self.token);
                drop(s);
                Poll::Ready(Some(self.decode(p)))
            }
            None => {
                // Woken when the driver applies a signal of this name.
                s.waiters.wait_signal(self.token, &self.name, cx.waker());
                Poll::Pending
            }
        }
    }
}

/// Never terminated: a workflow's signal stream ends only with its run.
impl<T: DeserializeOwned> FusedStream for SignalStream<T> {
    fn is_terminated(&self) -> bool {
        false
    }
}

impl<T> Drop for SignalStream<T> {
    fn drop(&mut self) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiters
            .forget_signal(self.token);
    }
}

/// Resolves when cancellation is asked for.
pub struct CancelledFuture {
    shared: Arc<Mutex<Shared>>,
    /// Its key among the futures waiting for cancellation (see `Waiters`).
    token: u64,
    done: bool,
}

impl Future for CancelledFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Pending;
        }
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if s.cancel_requested {
            s.waiters.forget_cancellation(self.token);
            drop(s);
            self.done = true;
            Poll::Ready(())
        } else {
            // Woken when the driver applies the cancellation request.
            s.waiters.wait_cancellation(self.token, cx.waker());
            Poll::Pending
        }
    }
}

/// Terminated once it resolved: `futures::select!` needs no `.fuse()`.
impl FusedFuture for CancelledFuture {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for CancelledFuture {
    fn drop(&mut self) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiters
            .forget_cancellation(self.token);
    }
}
