//! The replay driver of one run: feeds history into the workflow, runs it until it blocks,
//! collects its commands, and checks on replay that it issues the commands history recorded.
//!
//! An *activation* is one run of the workflow code: the inputs that arrived since the last
//! one (activity results, timers, signals, cancellation) are applied, waking the futures that
//! wait for them (see [`super::wake`]), then the workflow future is polled until it is
//! quiescent: polled again as long as a poll woke it, so combinators that poll only woken
//! children get to every child that became ready. The wake-ups follow the order of history,
//! so a replay polls the same futures in the same order. In history, an activation ends at
//! WorkflowTaskCompleted and its commands are the command events that follow it.
//!
//! A live activation that leaves the workflow pending while none of its futures waits on
//! anything durable (no activity or timer in flight, no signal stream or cancellation future
//! waiting) fails its workflow task: nothing the engine can deliver would ever wake it, so it
//! awaits something that is not Martix's (`tokio::time::sleep`, a channel, ...). The engine
//! records the failure and retries the task, where operators see it (`describe`, `stuck`),
//! instead of the run waiting forever in silence.

use super::child::ChildSlot;
use super::wake::{Waiters, WakeFlag};
use super::{WorkflowContext, WorkflowFn, WorkflowInfo};
use crate::error::WorkflowError;
use crate::payload::{from_payload, to_payload};
use futures::future::BoxFuture;
use martix_proto::v1 as pb;
use pb::command::Attributes as C;
use pb::history_event::Attributes as A;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub(crate) const SIDE_EFFECT_MARKER: &str = "side_effect";
pub(crate) const PATCH_MARKER: &str = "patch";

/// How many times one activation may poll the workflow. Each poll after the first follows a
/// wake-up from the previous one; a workflow that never stops waking itself (a busy loop
/// around `yield_now`) would otherwise hold the worker's thread forever. A combinator of
/// thousands of futures needs a handful of polls, far below this.
const MAX_POLLS_PER_ACTIVATION: u32 = 1_000_000;

/// The workflow's replayed code issued other commands than its history holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("non-determinism: {0}")]
pub struct Nondeterminism(pub String);

/// Why a workflow task could not produce commands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActivationError {
    #[error(transparent)]
    Nondeterminism(#[from] Nondeterminism),
    #[error("workflow code panicked: {0}")]
    Panic(String),
    #[error("history is not contiguous: expected event {expected}, got {got}")]
    Gap { expected: i64, got: i64 },
    #[error(
        "workflow is blocked on nothing durable: it awaits a future that is not Martix's \
         (tokio::time::sleep, a channel, a lock...), which no activity result, timer, signal or \
         cancellation can wake; await only futures of the WorkflowContext (ctx.sleep, \
         ctx.activity, ctx.signal, ctx.cancelled)"
    )]
    BlockedOnNothingDurable,
    #[error(
        "workflow code woke itself {0} times in one workflow task without waiting on anything \
         durable (a busy loop?)"
    )]
    Spinning(u32),
}

/// State shared between the driver and the workflow's context and futures.
pub(crate) struct Shared {
    seq: u64,
    commands: Vec<pb::Command>,
    accepting: bool,
    /// Activities in flight by id: `None` pending, `Some` resolved.
    pub(crate) activities: HashMap<String, Option<Result<Option<pb::Payload>, pb::Failure>>>,
    /// Timers by id: fired or not.
    pub(crate) timers: HashMap<String, bool>,
    /// Child workflows the workflow started and still awaits, by their workflow id.
    pub(crate) children: HashMap<String, ChildSlot>,
    pub(crate) signals: HashMap<String, VecDeque<Option<pb::Payload>>>,
    pub(crate) cancel_requested: bool,
    /// The workflow said it undid its effects: its completion ends the run COMPENSATED.
    pub(crate) compensated: bool,
    /// The wakers of the futures waiting on activities, timers, signals and cancellation.
    pub(crate) waiters: Waiters,
    pub(crate) now_ms: i64,
    rng: u64,
    replaying: bool,
    side_effects: HashMap<u64, pb::Payload>,
    patches_in_history: HashSet<String>,
    patches_sent: HashSet<String>,
    /// The query handlers the workflow registered, by query name.
    pub(crate) queries: HashMap<String, QueryHandler>,
    /// The update handlers the workflow registered, by update name.
    pub(crate) updates: HashMap<String, UpdateHandler>,
    /// Set while a query handler runs: a command issued then is the handler's, and refused.
    answering_query: bool,
    /// A command a query handler tried to issue.
    command_in_query: Option<String>,
}

/// A registered query handler: the arguments' payload in, the answer's payload out.
pub(crate) type QueryHandler =
    Arc<dyn Fn(Option<&pb::Payload>) -> Result<pb::Payload, QueryFailure> + Send + Sync>;

/// A registered update: its validator (read only, as a query handler) and its handler (a
/// future the driver runs beside the workflow's).
#[derive(Clone)]
pub(crate) struct UpdateHandler {
    pub(crate) validate: UpdateValidator,
    pub(crate) run: UpdateRun,
}

/// An update's validator: its arguments' payload in, accepted or why not out.
pub(crate) type UpdateValidator =
    Arc<dyn Fn(Option<&pb::Payload>) -> Result<(), QueryFailure> + Send + Sync>;

/// An update's handler: a context and its arguments' payload in, the future of its result.
pub(crate) type UpdateRun = Arc<
    dyn Fn(
            WorkflowContext,
            Option<pb::Payload>,
        ) -> BoxFuture<'static, Result<pb::Payload, WorkflowError>>
        + Send
        + Sync,
>;

/// Why a query has no answer: the failure's type and message the engine hands the caller.
#[derive(Debug)]
pub(crate) struct QueryFailure {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl QueryFailure {
    pub(crate) fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl Shared {
    fn new(seed: u64) -> Self {
        Self {
            seq: 0,
            commands: Vec::new(),
            accepting: true,
            activities: HashMap::new(),
            timers: HashMap::new(),
            children: HashMap::new(),
            signals: HashMap::new(),
            cancel_requested: false,
            compensated: false,
            waiters: Waiters::default(),
            now_ms: 0,
            rng: seed,
            replaying: false,
            side_effects: HashMap::new(),
            patches_in_history: HashSet::new(),
            patches_sent: HashSet::new(),
            queries: HashMap::new(),
            updates: HashMap::new(),
            answering_query: false,
            command_in_query: None,
        }
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn push_command(&mut self, c: C) {
        if self.answering_query {
            let command = pb::Command {
                attributes: Some(c),
            };
            self.command_in_query
                .get_or_insert_with(|| command_key(&command));
            return;
        }
        if self.accepting {
            self.commands.push(pb::Command {
                attributes: Some(c),
            });
        }
    }

    pub(crate) fn push_marker_command(&mut self, name: &str, seq: u64, value: pb::Payload) {
        let mut details = HashMap::new();
        details.insert("seq".to_owned(), to_payload(&seq).unwrap_or_default());
        details.insert("value".to_owned(), value);
        self.push_command(C::RecordMarker(pb::RecordMarkerCommand {
            marker_name: name.to_owned(),
            details,
        }));
    }

    pub(crate) fn recorded_side_effect(&self, seq: u64) -> Option<pb::Payload> {
        self.side_effects.get(&seq).cloned()
    }

    pub(crate) fn patched(&mut self, change_id: &str) -> bool {
        let yes = !self.replaying || self.patches_in_history.contains(change_id);
        if yes && self.patches_sent.insert(change_id.to_owned()) {
            let mut details = HashMap::new();
            details.insert("id".to_owned(), to_payload(change_id).unwrap_or_default());
            self.push_command(C::RecordMarker(pb::RecordMarkerCommand {
                marker_name: PATCH_MARKER.to_owned(),
                details,
            }));
        }
        yes
    }

    /// Whether the workflow waits on something the engine will deliver: an activity or a timer
    /// in flight, or a signal stream or cancellation future that was polled and waits.
    fn waits_on_something_durable(&self) -> bool {
        self.activities.values().any(Option::is_none)
            || self.timers.values().any(|fired| !fired)
            || self.children.values().any(|c| c.closed.is_none())
            || self.waiters.waits_for_signal_or_cancellation()
    }

    /// SplitMix64: small, stable across versions, good enough for workflow randomness.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn seed_of(run_id: &str) -> u64 {
    // FNV-1a: a fixed function of the run id, so every replay draws the same numbers.
    run_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn command_key(c: &pb::Command) -> String {
    match &c.attributes {
        Some(C::ScheduleActivity(a)) => {
            format!(
                "ScheduleActivity(id={}, type={})",
                a.activity_id, a.activity_type
            )
        }
        Some(C::RequestCancelActivity(a)) => format!("RequestCancelActivity(id={})", a.activity_id),
        Some(C::StartTimer(a)) => format!("StartTimer(id={})", a.timer_id),
        Some(C::CancelTimer(a)) => format!("CancelTimer(id={})", a.timer_id),
        Some(C::RecordMarker(a)) => format!("RecordMarker({})", a.marker_name),
        Some(C::PublishEvent(a)) => format!("PublishEvent({})", a.event_type),
        Some(C::CompleteWorkflow(_)) => "CompleteWorkflow".into(),
        Some(C::FailWorkflow(_)) => "FailWorkflow".into(),
        Some(C::CancelWorkflow(_)) => "CancelWorkflow".into(),
        Some(C::ContinueAsNew(_)) => "ContinueAsNew".into(),
        Some(C::StartChildWorkflow(a)) => format!(
            "StartChildWorkflow(id={}, type={})",
            a.workflow_id, a.workflow_type
        ),
        Some(C::RequestCancelChildWorkflow(a)) => {
            format!("RequestCancelChildWorkflow(id={})", a.workflow_id)
        }
        Some(C::CompleteUpdate(a)) => format!("CompleteUpdate(id={})", a.update_id),
        Some(C::UpsertSearchAttributes(_)) => "UpsertSearchAttributes".into(),
        None => "empty command".into(),
    }
}

/// The driver of one run. Lives in the worker's cache between workflow tasks.
pub(crate) struct RunDriver {
    shared: Arc<Mutex<Shared>>,
    info: WorkflowInfo,
    workflow: WorkflowFn,
    future: Option<BoxFuture<'static, Result<pb::Payload, WorkflowError>>>,
    /// The waker `future` is polled with: set when something asks for another poll.
    wake_flag: Arc<WakeFlag>,
    input: Option<pb::Payload>,
    /// The last event applied.
    pub(crate) processed: i64,
    expected: VecDeque<pb::Command>,
    pending: Vec<pb::HistoryEvent>,
    sent_live: Option<Vec<pb::Command>>,
    pub(crate) finished: bool,
    activity_ids: HashMap<i64, String>,
    /// The workflow id of each child, by its initiated event.
    child_ids: HashMap<i64, String>,
    /// Updates accepted since the last activation, to start once the workflow registered its
    /// handlers.
    accepted: Vec<pb::WorkflowUpdateAcceptedAttributes>,
    /// The handlers of accepted updates still running, in the order they were accepted.
    handlers: Vec<(
        String,
        BoxFuture<'static, Result<pb::Payload, WorkflowError>>,
    )>,
    /// The workflow's code was polled once: its handlers are registered.
    code_ran: bool,
    last_time: i64,
    /// When `last_time` was last moved, by this process's monotonic clock.
    last_time_seen: std::time::Instant,
}

impl RunDriver {
    /// The driver of the run `info` names, before any event. The workflow's randomness is
    /// seeded from `info.run_id`: each run of a chain continued as new draws its own numbers,
    /// and every replay of a run draws that run's.
    pub(crate) fn new(workflow: WorkflowFn, info: WorkflowInfo) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared::new(seed_of(&info.run_id)))),
            info,
            workflow,
            future: None,
            wake_flag: Arc::default(),
            input: None,
            processed: 0,
            expected: VecDeque::new(),
            pending: Vec::new(),
            sent_live: None,
            finished: false,
            activity_ids: HashMap::new(),
            child_ids: HashMap::new(),
            accepted: Vec::new(),
            handlers: Vec::new(),
            code_ran: false,
            last_time: 0,
            last_time_seen: std::time::Instant::now(),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the events after the last one applied, replaying completed activations.
    pub(crate) fn apply_history(
        &mut self,
        events: &[pb::HistoryEvent],
    ) -> Result<(), ActivationError> {
        let start = events.partition_point(|e| e.event_id <= self.processed);
        let new = &events[start..];
        if let Some(first) = new.first()
            && first.event_id != self.processed + 1
        {
            return Err(ActivationError::Gap {
                expected: self.processed + 1,
                got: first.event_id,
            });
        }
        self.prescan(new);
        for ev in new {
            self.apply(ev)?;
        }
        Ok(())
    }

    fn prescan(&mut self, events: &[pb::HistoryEvent]) {
        let mut s = self.shared();
        for ev in events {
            if let Some(A::MarkerRecorded(m)) = &ev.attributes {
                match m.marker_name.as_str() {
                    SIDE_EFFECT_MARKER => {
                        let seq: Option<u64> = from_payload(m.details.get("seq")).ok();
                        if let (Some(seq), Some(v)) = (seq, m.details.get("value")) {
                            s.side_effects.insert(seq, v.clone());
                        }
                    }
                    PATCH_MARKER => {
                        if let Ok(id) = from_payload::<String>(m.details.get("id")) {
                            s.patches_in_history.insert(id);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn time_of(ev: &pb::HistoryEvent) -> i64 {
        ev.event_time
            .as_ref()
            .map_or(0, martix_proto::time::from_timestamp)
    }

    fn apply(&mut self, ev: &pb::HistoryEvent) -> Result<(), ActivationError> {
        self.processed = ev.event_id;
        let Some(attrs) = &ev.attributes else {
            return Ok(());
        };
        let counts_for_time = !matches!(
            attrs,
            A::WorkflowTaskStarted(_) | A::WorkflowTaskCompleted(_)
        ) && !matches!(attrs, A::WorkflowTaskScheduled(s) if s.attempt > 1);
        // The local instant goes with a new time only: events the engine returns at a time
        // this copy already had (a decision made ahead) must not make it look newer.
        if counts_for_time && Self::time_of(ev) != self.last_time {
            self.last_time = Self::time_of(ev);
            self.last_time_seen = std::time::Instant::now();
        }
        match attrs {
            A::WorkflowExecutionStarted(s) => self.input = s.input.clone(),
            A::WorkflowTaskCompleted(_) => match self.sent_live.take() {
                Some(sent) => self.expected.extend(sent),
                None => {
                    self.check_all_matched()?;
                    let commands = self.activate(true)?;
                    self.expected.extend(commands);
                }
            },
            A::WorkflowTaskFailed(_) => self.sent_live = None,
            A::ActivityTaskScheduled(a) => {
                self.activity_ids.insert(ev.event_id, a.activity_id.clone());
                self.match_command(
                    ev,
                    format!(
                        "ScheduleActivity(id={}, type={})",
                        a.activity_id, a.activity_type
                    ),
                )?;
            }
            A::ActivityTaskCancelRequested(a) => {
                let id = self
                    .activity_ids
                    .get(&a.scheduled_event_id)
                    .cloned()
                    .unwrap_or_default();
                self.match_command(ev, format!("RequestCancelActivity(id={id})"))?;
            }
            A::TimerStarted(a) => {
                self.match_command(ev, format!("StartTimer(id={})", a.timer_id))?
            }
            A::TimerCanceled(a) => {
                self.match_command(ev, format!("CancelTimer(id={})", a.timer_id))?
            }
            A::MarkerRecorded(a) => {
                self.match_command(ev, format!("RecordMarker({})", a.marker_name))?
            }
            A::EventPublished(a) => {
                self.match_command(ev, format!("PublishEvent({})", a.event_type))?
            }
            A::WorkflowExecutionCompleted(_) => {
                self.match_command(ev, "CompleteWorkflow".into())?;
                self.finished = true;
            }
            A::WorkflowExecutionFailed(_) => {
                self.match_command(ev, "FailWorkflow".into())?;
                self.finished = true;
            }
            A::WorkflowExecutionCanceled(_) => {
                self.match_command(ev, "CancelWorkflow".into())?;
                self.finished = true;
            }
            A::WorkflowExecutionContinuedAsNew(_) => {
                self.match_command(ev, "ContinueAsNew".into())?;
                self.finished = true;
            }
            A::WorkflowExecutionTerminated(_) | A::WorkflowExecutionTimedOut(_) => {
                self.finished = true;
            }
            A::StartChildWorkflowExecutionInitiated(a) => {
                self.child_ids.insert(ev.event_id, a.workflow_id.clone());
                self.match_command(
                    ev,
                    format!(
                        "StartChildWorkflow(id={}, type={})",
                        a.workflow_id, a.workflow_type
                    ),
                )?;
            }
            A::ChildWorkflowExecutionCancelRequested(a) => self.match_command(
                ev,
                format!("RequestCancelChildWorkflow(id={})", a.workflow_id),
            )?,
            A::ChildWorkflowExecutionStarted(_)
            | A::StartChildWorkflowExecutionFailed(_)
            | A::ChildWorkflowExecutionClosed(_)
            | A::WorkflowUpdateAccepted(_) => self.pending.push(ev.clone()),
            A::WorkflowUpdateCompleted(a) => {
                self.match_command(ev, format!("CompleteUpdate(id={})", a.update_id))?
            }
            A::UpsertSearchAttributes(_) => {
                self.match_command(ev, "UpsertSearchAttributes".into())?
            }
            A::ActivityTaskCompleted(_)
            | A::ActivityTaskFailed(_)
            | A::ActivityTaskTimedOut(_)
            | A::TimerFired(_)
            | A::WorkflowExecutionSignaled(_)
            | A::WorkflowExecutionCancelRequested(_) => self.pending.push(ev.clone()),
            A::WorkflowTaskScheduled(_)
            | A::WorkflowTaskStarted(_)
            | A::ActivityTaskStarted(_)
            | A::ActivityTaskCanceled(_) => {}
        }
        Ok(())
    }

    fn match_command(
        &mut self,
        ev: &pb::HistoryEvent,
        recorded: String,
    ) -> Result<(), Nondeterminism> {
        match self.expected.pop_front() {
            Some(cmd) if command_key(&cmd) == recorded => Ok(()),
            Some(cmd) => Err(Nondeterminism(format!(
                "history event {} is {recorded}, but the workflow issued {}; the code changed \
                 incompatibly (put the change behind ctx.patched(...))",
                ev.event_id,
                command_key(&cmd)
            ))),
            None => Err(Nondeterminism(format!(
                "history event {} is {recorded}, but the workflow no longer issues it; the code \
                 changed incompatibly (put the change behind ctx.patched(...))",
                ev.event_id
            ))),
        }
    }

    fn check_all_matched(&self) -> Result<(), Nondeterminism> {
        match self.expected.front() {
            None => Ok(()),
            Some(cmd) => Err(Nondeterminism(format!(
                "the workflow issued {} after event {}, which history does not hold; the code \
                 changed incompatibly (put the change behind ctx.patched(...))",
                command_key(cmd),
                self.processed
            ))),
        }
    }

    /// Whether this copy is the recorded history exactly: every command it sent was recorded
    /// and no event waits for an activation. Only then can it decide ahead of the engine.
    pub(crate) fn is_current(&self) -> bool {
        self.processed > 0
            && !self.finished
            && self.sent_live.is_none()
            && self.expected.is_empty()
            && self.pending.is_empty()
    }

    /// A time for a decision made now, on the engine's clock without reading it: the last
    /// event's time (written by the engine before this process saw it) plus the time passed
    /// here since. Never after the engine's clock, whatever this machine's clock says.
    pub(crate) fn decision_time(&self) -> i64 {
        self.last_time + self.last_time_seen.elapsed().as_millis() as i64
    }

    /// Activities the workflow scheduled whose outcome it has not seen.
    pub(crate) fn activities_in_flight(&self) -> usize {
        self.shared()
            .activities
            .values()
            .filter(|a| a.is_none())
            .count()
    }

    /// Runs the live activation (the current workflow task) and returns its commands.
    pub(crate) fn activate_live(&mut self) -> Result<Vec<pb::Command>, ActivationError> {
        self.check_all_matched()?;
        if self.finished {
            return Ok(Vec::new());
        }
        let commands = self.activate(false)?;
        self.sent_live = Some(commands.clone());
        Ok(commands)
    }

    /// The replayer's last check: every command of the last activation was recorded.
    pub(crate) fn finish_replay(&self) -> Result<(), Nondeterminism> {
        self.check_all_matched()
    }

    fn activate(&mut self, replaying: bool) -> Result<Vec<pb::Command>, ActivationError> {
        {
            let mut s = self.shared();
            s.replaying = replaying;
            s.now_ms = self.last_time;
            s.commands.clear();
        }
        // Woken outside the lock: a waker may run code of its own.
        for waker in self.apply_pending() {
            waker.wake();
        }
        if self.future.is_none() {
            let ctx = WorkflowContext::new(self.shared.clone(), self.info.clone());
            self.future = Some((self.workflow)(ctx, self.input.clone()));
        }
        let polled = self.poll_until_quiescent()?;
        match polled {
            Poll::Ready(outcome) => {
                self.future = None;
                let compensated = self.shared().compensated;
                let close = match outcome {
                    Ok(result) => C::CompleteWorkflow(pb::CompleteWorkflowExecutionCommand {
                        result: Some(result),
                        compensated,
                    }),
                    Err(WorkflowError::ContinueAsNew(c)) => C::ContinueAsNew(c.command),
                    Err(WorkflowError::Canceled) => {
                        C::CancelWorkflow(pb::CancelWorkflowExecutionCommand { details: None })
                    }
                    Err(e) => C::FailWorkflow(pb::FailWorkflowExecutionCommand {
                        failure: Some(e.to_failure()),
                    }),
                };
                let mut s = self.shared();
                s.push_command(close);
                s.accepting = false;
            }
            // Only live: a replay reproduces what was recorded, stuck or not.
            Poll::Pending if !replaying && !self.shared().waits_on_something_durable() => {
                return Err(ActivationError::BlockedOnNothingDurable);
            }
            Poll::Pending => {}
        }
        Ok(std::mem::take(&mut self.shared().commands))
    }

    /// Applies the events that arrived since the last activation to the shared state and
    /// returns the wakers of the futures they resolve, in the order of the events.
    fn apply_pending(&mut self) -> Vec<Waker> {
        let pending = std::mem::take(&mut self.pending);
        let mut wake = Vec::new();
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        for ev in pending {
            let (scheduled_event_id, outcome) = match ev.attributes {
                Some(A::ActivityTaskCompleted(a)) => (a.scheduled_event_id, Ok(a.result)),
                Some(A::ActivityTaskFailed(a)) => {
                    (a.scheduled_event_id, Err(a.failure.unwrap_or_default()))
                }
                Some(A::ActivityTaskTimedOut(a)) => (
                    a.scheduled_event_id,
                    Err(a.failure.unwrap_or(pb::Failure {
                        message: "activity timed out".into(),
                        r#type: "TimedOut".into(),
                        ..Default::default()
                    })),
                ),
                Some(A::TimerFired(t)) => {
                    if let Some(fired) = s.timers.get_mut(&t.timer_id) {
                        *fired = true;
                        s.waiters.timer_fired(&t.timer_id, &mut wake);
                    }
                    continue;
                }
                Some(A::WorkflowExecutionSignaled(sig)) => {
                    s.waiters.signal_arrived(&sig.signal_name, &mut wake);
                    s.signals
                        .entry(sig.signal_name)
                        .or_default()
                        .push_back(sig.input);
                    continue;
                }
                Some(A::WorkflowExecutionCancelRequested(_)) => {
                    s.cancel_requested = true;
                    s.waiters.cancellation_requested(&mut wake);
                    continue;
                }
                Some(A::ChildWorkflowExecutionStarted(a)) => {
                    let run_id = a.workflow_execution.unwrap_or_default().run_id;
                    self.child_event(s, a.initiated_event_id, &mut wake, |c| {
                        c.started = Some(Ok(run_id))
                    });
                    continue;
                }
                Some(A::StartChildWorkflowExecutionFailed(a)) => {
                    let failure = a.failure.unwrap_or_default();
                    self.child_event(s, a.initiated_event_id, &mut wake, |c| {
                        c.started = Some(Err(failure.clone()));
                        c.closed = Some(Err(failure));
                    });
                    continue;
                }
                Some(A::WorkflowUpdateAccepted(a)) => {
                    self.accepted.push(a);
                    continue;
                }
                Some(A::ChildWorkflowExecutionClosed(a)) => {
                    let done = pb::WorkflowStatus::try_from(a.status).is_ok_and(|st| {
                        matches!(
                            st,
                            pb::WorkflowStatus::Completed | pb::WorkflowStatus::Compensated
                        )
                    });
                    let outcome = if done {
                        Ok(a.result)
                    } else {
                        Err(a.failure.unwrap_or_default())
                    };
                    let status = a.status;
                    self.child_event(s, a.initiated_event_id, &mut wake, |c| {
                        c.status = status;
                        c.closed = Some(outcome);
                    });
                    continue;
                }
                _ => continue,
            };
            if let Some(id) = self.activity_ids.get(&scheduled_event_id)
                && let Some(slot) = s.activities.get_mut(id)
            {
                *slot = Some(outcome);
                s.waiters.activity_resolved(id, &mut wake);
            }
        }
        wake
    }

    /// Applies `change` to the child initiated by event `initiated`, if the workflow still
    /// awaits it, and takes its waker.
    fn child_event(
        &self,
        s: &mut Shared,
        initiated: i64,
        wake: &mut Vec<Waker>,
        change: impl FnOnce(&mut ChildSlot),
    ) {
        if let Some(id) = self.child_ids.get(&initiated)
            && let Some(slot) = s.children.get_mut(id)
        {
            change(slot);
            s.waiters.child_resolved(id, wake);
        }
    }

    /// Polls the workflow's future until it is ready or a poll ends without a wake-up: every
    /// future woken by the events just applied, or by another future during a poll (a
    /// combinator that yields, a channel between two branches), is polled in this activation.
    fn poll_until_quiescent(
        &mut self,
    ) -> Result<Poll<Result<pb::Payload, WorkflowError>>, ActivationError> {
        let waker = Waker::from(self.wake_flag.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..MAX_POLLS_PER_ACTIVATION {
            // Wake-ups from before this poll are served by it.
            self.wake_flag.take();
            // Updates accepted since the last activation start before the workflow's code
            // goes on: an update was recorded before the events that came after it (an
            // activity's result), so its handler changes the state before the code reacts to
            // those. Only a run's first activation polls the code first: its handlers are not
            // registered before (a run started with an update).
            if self.code_ran {
                for accepted in std::mem::take(&mut self.accepted) {
                    self.start_update(accepted);
                }
                self.poll_updates(&mut cx)?;
            }
            let fut = self.future.as_mut().expect("created before polling");
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fut.as_mut().poll(&mut cx)
            }))
            .map_err(|panic| ActivationError::Panic(panic_message(&*panic)))?;
            self.code_ran = true;
            for accepted in std::mem::take(&mut self.accepted) {
                self.start_update(accepted);
            }
            self.poll_updates(&mut cx)?;
            match polled {
                Poll::Pending if self.wake_flag.take() => continue,
                p => return Ok(p),
            }
        }
        Err(ActivationError::Spinning(MAX_POLLS_PER_ACTIVATION))
    }
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Drop for RunDriver {
    fn drop(&mut self) {
        // Futures dropped with an evicted run must not issue cancel commands.
        self.shared().accepting = false;
        self.future = None;
    }
}

mod handlers;

#[cfg(test)]
mod tests;
