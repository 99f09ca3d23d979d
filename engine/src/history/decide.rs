//! The decisions: one pure function per way a run can change.

use super::retry::may_retry;
use super::*;
use crate::error::EngineError;
use crate::ids::RunId;
use prost::Message;
use std::collections::HashMap;

/// Default start-to-close timeout of an activity that names none.
pub const DEFAULT_ACTIVITY_TIMEOUT_MS: i64 = 10 * 60 * 1000;
/// Default time a worker may hold a workflow task.
pub const DEFAULT_WORKFLOW_TASK_TIMEOUT_MS: i64 = 10_000;
/// Longest wait between attempts of a failing workflow task.
const MAX_WFT_BACKOFF_MS: i64 = 60_000;

/// Kinds of task a token can name.
pub const TOKEN_KIND_WORKFLOW: i32 = 1;
/// An activity task token.
pub const TOKEN_KIND_ACTIVITY: i32 = 2;

/// What a worker hands back to complete a task. Opaque to clients; a forged or stale one names
/// no current lease and is rejected.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskToken {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub run_id: String,
    #[prost(int32, tag = "3")]
    pub kind: i32,
    #[prost(int64, tag = "4")]
    pub scheduled_event_id: i64,
    #[prost(int32, tag = "5")]
    pub attempt: i32,
    #[prost(string, tag = "6")]
    pub lease_id: String,
    /// Workflow tasks: the history length the worker was given.
    #[prost(int64, tag = "7")]
    pub history_len: i64,
}

impl TaskToken {
    /// The token of `run`'s workflow task `wft`, leased as `lease_id`, for a worker given the
    /// run's history as it stands.
    pub fn for_workflow_task(run: &Run, wft: &WorkflowTask, lease_id: &str) -> Self {
        Self {
            namespace: run.namespace.clone(),
            run_id: run.run_id.to_text(),
            kind: TOKEN_KIND_WORKFLOW,
            scheduled_event_id: wft.scheduled_event_id,
            attempt: wft.attempt,
            lease_id: lease_id.to_owned(),
            history_len: run.next_event_id - 1,
        }
    }

    /// Decodes a token from the wire; garbage is an `InvalidArgument`.
    pub fn decode_from(raw: &[u8]) -> Result<(Self, RunId), EngineError> {
        if raw.is_empty() {
            return Err(EngineError::invalid("task_token", "must not be empty"));
        }
        let token = Self::decode(raw)
            .map_err(|_| EngineError::invalid("task_token", "is not a Martix task token"))?;
        let run_id = RunId::parse("task_token", &token.run_id)?;
        if token.lease_id.is_empty() {
            return Err(EngineError::invalid("task_token", "names no lease"));
        }
        Ok((token, run_id))
    }
}

/// A validated request to start a run.
#[derive(Clone, Debug, Default)]
pub struct StartParams {
    pub namespace: String,
    pub workflow_id: String,
    pub workflow_type: String,
    pub task_queue: String,
    pub input: Option<pb::Payload>,
    pub execution_timeout_ms: i64,
    pub run_timeout_ms: i64,
    pub task_timeout_ms: i64,
    pub identity: String,
    pub memo: HashMap<String, pb::Payload>,
    pub continued_from: Option<RunId>,
    pub first_run_id: Option<String>,
    /// Carried along a continue-as-new chain: when the whole workflow times out.
    pub execution_deadline: Option<Millis>,
    /// W3C trace context of the start (empty: none).
    pub traceparent: String,
    /// Signal-with-start: a signal recorded right after the start, in the same transaction.
    pub initial_signal: Option<(String, Option<pb::Payload>)>,
    /// Carried along a continue-as-new chain: events published so far.
    pub events_published: i64,
}

/// A new run: its first events, its first workflow task.
pub fn new_run(p: &StartParams, run_id: RunId, now: Millis) -> RunCommit {
    let task_timeout = if p.task_timeout_ms > 0 {
        p.task_timeout_ms
    } else {
        DEFAULT_WORKFLOW_TASK_TIMEOUT_MS
    };
    let first_run_id = p.first_run_id.clone().unwrap_or_else(|| run_id.to_text());
    let run = Run {
        namespace: p.namespace.clone(),
        workflow_id: p.workflow_id.clone(),
        run_id,
        workflow_type: p.workflow_type.clone(),
        task_queue: p.task_queue.clone(),
        status: pb::WorkflowStatus::Running,
        start_time: now,
        close_time: None,
        next_event_id: 1,
        version: 0,
        wft: None,
        state: RunState {
            workflow_task_timeout_ms: task_timeout,
            first_run_id: first_run_id.clone(),
            traceparent: p.traceparent.clone(),
            events_published: p.events_published,
            ..Default::default()
        },
    };
    let mut t = Transition::for_new_run(run, now);
    let opt = |ms: i64| (ms > 0).then(|| ms_to_duration(ms));
    t.append(Attributes::WorkflowExecutionStarted(
        pb::WorkflowExecutionStartedAttributes {
            workflow_type: p.workflow_type.clone(),
            task_queue: p.task_queue.clone(),
            input: p.input.clone(),
            workflow_execution_timeout: opt(p.execution_timeout_ms),
            workflow_run_timeout: opt(p.run_timeout_ms),
            workflow_task_timeout: Some(ms_to_duration(task_timeout)),
            identity: p.identity.clone(),
            continued_from_run_id: p.continued_from.map(RunId::to_text).unwrap_or_default(),
            first_run_id,
            memo: p.memo.clone(),
            traceparent: p.traceparent.clone(),
        },
    ));
    if let Some((name, input)) = &p.initial_signal {
        t.append(Attributes::WorkflowExecutionSignaled(
            pb::WorkflowExecutionSignaledAttributes {
                signal_name: name.clone(),
                input: input.clone(),
                identity: p.identity.clone(),
            },
        ));
    }
    t.schedule_workflow_task();
    if p.run_timeout_ms > 0 {
        t.push_timer(TimerOp::Insert {
            key: RUN_TIMEOUT_KEY.into(),
            fire_at: now + p.run_timeout_ms,
        });
    }
    let deadline = p
        .execution_deadline
        .unwrap_or(if p.execution_timeout_ms > 0 {
            now + p.execution_timeout_ms
        } else {
            0
        });
    if deadline > 0 {
        t.run_mut().state.execution_deadline = deadline;
        t.push_timer(TimerOp::Insert {
            key: EXECUTION_TIMEOUT_KEY.into(),
            fire_at: deadline,
        });
    }
    t.finish()
}

/// The outcome of a workflow task completion.
#[derive(Debug)]
pub enum WftOutcome {
    /// The commands were applied.
    Applied(RunCommit),
    /// The commands were refused; `commit` records that (and schedules what comes next), and
    /// `error` is the answer to the worker.
    Rejected {
        commit: RunCommit,
        error: EngineError,
    },
}

/// A task token speaks for its run only in the namespace it names: a token edited to name
/// another namespace (where its bearer may be authorized) finds nothing.
pub(crate) fn same_namespace(run: &Run, token: &TaskToken) -> Result<(), EngineError> {
    if run.namespace == token.namespace {
        Ok(())
    } else {
        Err(EngineError::NotFound(
            "the task is no longer current".into(),
        ))
    }
}

fn current_wft<'a>(run: &'a Run, token: &TaskToken) -> Result<&'a WorkflowTask, EngineError> {
    same_namespace(run, token)?;
    if !run.is_open() {
        return Err(EngineError::NotFound(format!(
            "workflow run {} is closed",
            run.run_id
        )));
    }
    let wft = run
        .wft
        .as_ref()
        .filter(|w| w.lease.as_ref().is_some_and(|l| l.id == token.lease_id))
        .ok_or_else(|| {
            EngineError::NotFound(
                "workflow task is no longer current: it was completed, timed out or handed to another worker"
                    .into(),
            )
        })?;
    if token.history_len != run.next_event_id - 1 {
        return Err(EngineError::NotFound(
            "workflow task is no longer current: its lease ran out and new events arrived".into(),
        ));
    }
    Ok(wft)
}

fn is_closing(c: &pb::Command) -> bool {
    use pb::command::Attributes as C;
    matches!(
        c.attributes,
        Some(
            C::CompleteWorkflow(_)
                | C::FailWorkflow(_)
                | C::CancelWorkflow(_)
                | C::ContinueAsNew(_)
        )
    )
}

/// Writes WorkflowTaskScheduled for a retried attempt that has none yet; returns its id.
fn ensure_scheduled(t: &mut Transition, wft: &WorkflowTask) -> i64 {
    if wft.scheduled_event_id > 0 {
        return wft.scheduled_event_id;
    }
    let timeout = t.run().state.workflow_task_timeout_ms;
    t.append(Attributes::WorkflowTaskScheduled(
        pb::WorkflowTaskScheduledAttributes {
            task_queue: wft.queue.clone(),
            start_to_close_timeout: Some(ms_to_duration(timeout)),
            attempt: wft.attempt,
        },
    ))
}

/// Applies the commands of a completed workflow task, all or none.
pub fn complete_workflow_task(
    run: &Run,
    token: &TaskToken,
    commands: &[pb::Command],
    identity: &str,
    sticky_queue: &str,
    now: Millis,
) -> Result<WftOutcome, EngineError> {
    let wft = current_wft(run, token)?.clone();
    let mut t = Transition::new(run, now);
    // The next task goes to the worker that keeps the run cached, with only what it lacks.
    t.run_mut().state.sticky_queue = sticky_queue.to_owned();
    t.run_mut().state.sticky_from = if sticky_queue.is_empty() {
        0
    } else {
        token.history_len + 1
    };

    if commands.iter().any(is_closing) && !run.state.buffered.is_empty() {
        // The workflow would close without seeing these events: refuse, deliver them.
        let n = run.state.buffered.len();
        t.flush_buffered();
        t.run_mut().wft = Some(WorkflowTask {
            lease: None,
            visible_at: now,
            ..wft
        });
        return Ok(WftOutcome::Rejected {
            commit: t.finish(),
            error: EngineError::FailedPrecondition(format!(
                "unhandled events: {n} new event(s) arrived while the workflow task ran; a new workflow task is scheduled"
            )),
        });
    }

    let scheduled = ensure_scheduled(&mut t, &wft);
    let started = t.append(Attributes::WorkflowTaskStarted(
        pb::WorkflowTaskStartedAttributes {
            scheduled_event_id: scheduled,
            identity: identity.to_owned(),
        },
    ));
    let completed = t.append(Attributes::WorkflowTaskCompleted(
        pb::WorkflowTaskCompletedAttributes {
            scheduled_event_id: scheduled,
            started_event_id: started,
            identity: identity.to_owned(),
        },
    ));
    t.run_mut().wft = None;
    t.run_mut().state.wft_last_failure = None;

    for (i, command) in commands.iter().enumerate() {
        let result = if t.run().is_open() {
            apply_command(&mut t, command, completed)
        } else {
            Err("it follows a command that closed the workflow".to_owned())
        };
        if let Err(why) = result {
            let message = format!("command {i} is invalid: {why}");
            let failure = pb::Failure {
                message: message.clone(),
                r#type: "BadCommand".into(),
                ..Default::default()
            };
            let commit = fail_wft(
                run,
                &wft,
                pb::WorkflowTaskFailedCause::BadCommand,
                failure,
                identity,
                now,
            );
            return Ok(WftOutcome::Rejected {
                commit,
                error: EngineError::invalid("commands", message),
            });
        }
    }
    if t.run().is_open() && t.flush_buffered() {
        t.schedule_workflow_task();
    }
    Ok(WftOutcome::Applied(t.finish()))
}

fn check_id(field: &str, id: &str) -> Result<(), String> {
    match id.len() {
        0 => Err(format!("{field} must not be empty")),
        1..=255 => Ok(()),
        n => Err(format!("{field} is {n} bytes, at most 255")),
    }
}

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

fn apply_command(t: &mut Transition, command: &pb::Command, completed: i64) -> Result<(), String> {
    use pb::command::Attributes as C;
    let now = t.now();
    match command.attributes.as_ref() {
        None => Err("it has no attributes".into()),
        Some(C::ScheduleActivity(c)) => {
            check_id("activity_id", &c.activity_id)?;
            check_id("activity_type", &c.activity_type)?;
            if t.run()
                .state
                .activities
                .iter()
                .any(|a| a.activity_id == c.activity_id)
            {
                return Err(format!(
                    "activity_id '{}' is already used by a pending activity",
                    c.activity_id
                ));
            }
            let queue = if c.task_queue.is_empty() {
                t.run().task_queue.clone()
            } else {
                check_id("task_queue", &c.task_queue)?;
                c.task_queue.clone()
            };
            let s2c = duration_to_ms(c.schedule_to_close_timeout.as_ref());
            let mut st2c = duration_to_ms(c.start_to_close_timeout.as_ref());
            if st2c <= 0 {
                st2c = if s2c > 0 {
                    s2c
                } else {
                    DEFAULT_ACTIVITY_TIMEOUT_MS
                };
            }
            if s2c < 0 || st2c < 0 {
                return Err("timeouts must not be negative".into());
            }
            let scheduled_event_id = t.append(Attributes::ActivityTaskScheduled(
                pb::ActivityTaskScheduledAttributes {
                    activity_id: c.activity_id.clone(),
                    activity_type: c.activity_type.clone(),
                    task_queue: queue.clone(),
                    input: c.input.clone(),
                    schedule_to_close_timeout: c.schedule_to_close_timeout,
                    schedule_to_start_timeout: c.schedule_to_start_timeout,
                    start_to_close_timeout: Some(ms_to_duration(st2c)),
                    heartbeat_timeout: c.heartbeat_timeout,
                    retry_policy: c.retry_policy.clone(),
                    workflow_task_completed_event_id: completed,
                },
            ));
            t.run_mut().state.activities.push(PendingActivity {
                scheduled_event_id,
                activity_id: c.activity_id.clone(),
                activity_type: c.activity_type.clone(),
                task_queue: queue.clone(),
                attempt: 1,
                scheduled_time: now,
                next_attempt_time: 0,
                last_failure: None,
                retry_policy: c.retry_policy.clone(),
                schedule_to_close_ms: s2c,
                start_to_close_ms: st2c,
                schedule_to_start_timer: duration_to_ms(c.schedule_to_start_timeout.as_ref()) > 0,
            });
            let run = t.run();
            let info = pb::PollActivityTaskResponse {
                task_token: Vec::new(),
                workflow_execution: Some(pb::WorkflowExecution {
                    workflow_id: run.workflow_id.clone(),
                    run_id: run.run_id.to_text(),
                }),
                workflow_type: run.workflow_type.clone(),
                activity_id: c.activity_id.clone(),
                activity_type: c.activity_type.clone(),
                input: c.input.clone(),
                attempt: 0,
                scheduled_time: Some(crate::clock::to_timestamp(now)),
                start_to_close_timeout: Some(ms_to_duration(st2c)),
                heartbeat_timeout: c.heartbeat_timeout,
                heartbeat_details: None,
                namespace: run.namespace.clone(),
                traceparent: run.state.traceparent.clone(),
                // Set, with the token and attempt, when handed out (the row has it).
                scheduled_event_id: 0,
            }
            .encode_to_vec();
            let task = ActivityTask {
                namespace: run.namespace.clone(),
                task_queue: queue,
                run_id: run.run_id,
                scheduled_event_id,
                attempt: 1,
                visible_at: now,
                lease: None,
                lease_ms: st2c,
                info,
                heartbeat_details: None,
                heartbeat_ms: duration_to_ms(c.heartbeat_timeout.as_ref()),
                started_at: None,
            };
            t.push_task(TaskOp::Insert(task));
            if s2c > 0 {
                t.push_timer(TimerOp::Insert {
                    key: schedule_to_close_key(scheduled_event_id),
                    fire_at: now + s2c,
                });
            }
            let s2s = duration_to_ms(c.schedule_to_start_timeout.as_ref());
            if s2s > 0 {
                t.push_timer(TimerOp::Insert {
                    key: schedule_to_start_key(scheduled_event_id),
                    fire_at: now + s2s,
                });
            }
            Ok(())
        }
        Some(C::RequestCancelActivity(c)) => {
            let Some(pos) = t
                .run()
                .state
                .activities
                .iter()
                .position(|a| a.activity_id == c.activity_id)
            else {
                return Err(format!(
                    "no pending activity has activity_id '{}'",
                    c.activity_id
                ));
            };
            let act = t.run_mut().state.activities.remove(pos);
            remove_activity(t, act.scheduled_event_id);
            t.append(Attributes::ActivityTaskCancelRequested(
                pb::ActivityTaskCancelRequestedAttributes {
                    scheduled_event_id: act.scheduled_event_id,
                    workflow_task_completed_event_id: completed,
                },
            ));
            t.append(Attributes::ActivityTaskCanceled(
                pb::ActivityTaskCanceledAttributes {
                    scheduled_event_id: act.scheduled_event_id,
                    details: None,
                },
            ));
            t.push_task(TaskOp::Delete {
                scheduled_event_id: act.scheduled_event_id,
                lease_id: None,
            });
            Ok(())
        }
        Some(C::StartTimer(c)) => {
            check_id("timer_id", &c.timer_id)?;
            if t.run()
                .state
                .timers
                .iter()
                .any(|x| x.timer_id == c.timer_id)
            {
                return Err(format!(
                    "timer_id '{}' is already used by a pending timer",
                    c.timer_id
                ));
            }
            let ms = duration_to_ms(c.start_to_fire_timeout.as_ref());
            if ms <= 0 {
                return Err("start_to_fire_timeout must be positive".into());
            }
            let id = t.append(Attributes::TimerStarted(pb::TimerStartedAttributes {
                timer_id: c.timer_id.clone(),
                start_to_fire_timeout: c.start_to_fire_timeout,
                workflow_task_completed_event_id: completed,
            }));
            t.run_mut().state.timers.push(PendingTimer {
                timer_id: c.timer_id.clone(),
                started_event_id: id,
                fire_at: now + ms,
            });
            t.push_timer(TimerOp::Insert {
                key: user_timer_key(&c.timer_id),
                fire_at: now + ms,
            });
            Ok(())
        }
        Some(C::CancelTimer(c)) => {
            let Some(pos) = t
                .run()
                .state
                .timers
                .iter()
                .position(|x| x.timer_id == c.timer_id)
            else {
                return Err(format!(
                    "timer '{}' was never started or has already fired",
                    c.timer_id
                ));
            };
            let timer = t.run_mut().state.timers.remove(pos);
            t.append(Attributes::TimerCanceled(pb::TimerCanceledAttributes {
                timer_id: timer.timer_id.clone(),
                started_event_id: timer.started_event_id,
                workflow_task_completed_event_id: completed,
            }));
            t.push_timer(TimerOp::Delete {
                key: user_timer_key(&timer.timer_id),
            });
            Ok(())
        }
        Some(C::RecordMarker(c)) => {
            check_id("marker_name", &c.marker_name)?;
            t.append(Attributes::MarkerRecorded(pb::MarkerRecordedAttributes {
                marker_name: c.marker_name.clone(),
                details: c.details.clone(),
                workflow_task_completed_event_id: completed,
            }));
            Ok(())
        }
        Some(C::PublishEvent(c)) => {
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
        Some(C::CompleteWorkflow(c)) => {
            t.close(
                if c.compensated {
                    pb::WorkflowStatus::Compensated
                } else {
                    pb::WorkflowStatus::Completed
                },
                Attributes::WorkflowExecutionCompleted(pb::WorkflowExecutionCompletedAttributes {
                    result: c.result.clone(),
                    workflow_task_completed_event_id: completed,
                    compensated: c.compensated,
                }),
            );
            Ok(())
        }
        Some(C::FailWorkflow(c)) => {
            t.close(
                pb::WorkflowStatus::Failed,
                Attributes::WorkflowExecutionFailed(pb::WorkflowExecutionFailedAttributes {
                    failure: c.failure.clone(),
                    workflow_task_completed_event_id: completed,
                }),
            );
            Ok(())
        }
        Some(C::CancelWorkflow(c)) => {
            t.close(
                pb::WorkflowStatus::Canceled,
                Attributes::WorkflowExecutionCanceled(pb::WorkflowExecutionCanceledAttributes {
                    details: c.details.clone(),
                    workflow_task_completed_event_id: completed,
                }),
            );
            Ok(())
        }
        Some(C::ContinueAsNew(c)) => {
            let run = t.run().clone();
            let workflow_type = if c.workflow_type.is_empty() {
                run.workflow_type.clone()
            } else {
                check_id("workflow_type", &c.workflow_type)?;
                c.workflow_type.clone()
            };
            let task_queue = if c.task_queue.is_empty() {
                run.task_queue.clone()
            } else {
                check_id("task_queue", &c.task_queue)?;
                c.task_queue.clone()
            };
            let new_id = RunId::new();
            t.close(
                pb::WorkflowStatus::ContinuedAsNew,
                Attributes::WorkflowExecutionContinuedAsNew(
                    pb::WorkflowExecutionContinuedAsNewAttributes {
                        new_run_id: new_id.to_text(),
                        workflow_type: workflow_type.clone(),
                        task_queue: task_queue.clone(),
                        input: c.input.clone(),
                        workflow_task_completed_event_id: completed,
                    },
                ),
            );
            let params = StartParams {
                namespace: run.namespace.clone(),
                workflow_id: run.workflow_id.clone(),
                workflow_type,
                task_queue,
                input: c.input.clone(),
                run_timeout_ms: duration_to_ms(c.workflow_run_timeout.as_ref()),
                task_timeout_ms: duration_to_ms(c.workflow_task_timeout.as_ref()),
                continued_from: Some(run.run_id),
                first_run_id: Some(run.state.first_run_id.clone()),
                execution_deadline: (run.state.execution_deadline > 0)
                    .then_some(run.state.execution_deadline),
                traceparent: run.state.traceparent.clone(),
                events_published: run.state.events_published,
                ..Default::default()
            };
            t.set_new_run(new_run(&params, new_id, now));
            Ok(())
        }
    }
}

fn fail_wft(
    run: &Run,
    wft: &WorkflowTask,
    cause: pb::WorkflowTaskFailedCause,
    failure: pb::Failure,
    identity: &str,
    now: Millis,
) -> RunCommit {
    let mut t = Transition::new(run, now);
    if wft.attempt <= 1 {
        // Later attempts of a task that keeps failing leave history alone; the checkpoint
        // keeps the attempt count and the last failure for operators.
        let scheduled = ensure_scheduled(&mut t, wft);
        let started = t.append(Attributes::WorkflowTaskStarted(
            pb::WorkflowTaskStartedAttributes {
                scheduled_event_id: scheduled,
                identity: identity.to_owned(),
            },
        ));
        t.append(Attributes::WorkflowTaskFailed(
            pb::WorkflowTaskFailedAttributes {
                scheduled_event_id: scheduled,
                started_event_id: started,
                cause: cause as i32,
                failure: Some(failure.clone()),
                identity: identity.to_owned(),
            },
        ));
    }
    t.flush_buffered();
    // The worker that failed dropped the run: the retry goes to any worker, with full history.
    t.run_mut().state.sticky_queue.clear();
    t.run_mut().state.sticky_from = 0;
    let backoff = (1000_i64 << (wft.attempt.clamp(1, 7) - 1)).min(MAX_WFT_BACKOFF_MS);
    let delay = if wft.attempt <= 1 { 0 } else { backoff };
    t.run_mut().wft = Some(WorkflowTask {
        queue: run.task_queue.clone(),
        attempt: wft.attempt + 1,
        scheduled_event_id: 0,
        visible_at: now + delay,
        lease: None,
    });
    t.run_mut().state.wft_last_failure = Some(failure);
    t.finish()
}

/// A worker reports that a workflow task failed (non-determinism, a panic): it is retried
/// with backoff; history is never rewritten.
pub fn fail_workflow_task(
    run: &Run,
    token: &TaskToken,
    cause: pb::WorkflowTaskFailedCause,
    failure: pb::Failure,
    identity: &str,
    now: Millis,
) -> Result<RunCommit, EngineError> {
    let wft = current_wft(run, token)?.clone();
    Ok(fail_wft(run, &wft, cause, failure, identity, now))
}

fn current_activity<'a>(
    run: &'a Run,
    token: &TaskToken,
) -> Result<&'a PendingActivity, EngineError> {
    same_namespace(run, token)?;
    if !run.is_open() {
        return Err(EngineError::NotFound(format!(
            "workflow run {} is closed",
            run.run_id
        )));
    }
    run.activity(token.scheduled_event_id)
        .filter(|a| a.attempt == token.attempt)
        .ok_or_else(|| {
            EngineError::NotFound(
                "activity task is no longer current: it was completed, cancelled or retried".into(),
            )
        })
}

fn started_event(act: &PendingActivity, identity: &str) -> Attributes {
    Attributes::ActivityTaskStarted(pb::ActivityTaskStartedAttributes {
        scheduled_event_id: act.scheduled_event_id,
        attempt: act.attempt,
        identity: identity.to_owned(),
        last_failure: act.last_failure.clone(),
    })
}

/// The activity is resolved: it leaves the checkpoint, its timeout timers go.
/// Drops a resolved activity and the timer rows it has (only those: a delete of a row that
/// was never written is a statement for nothing on every activity).
fn remove_activity(t: &mut Transition, id: i64) {
    let (s2c, s2s) = t.run().activity(id).map_or((true, true), |a| {
        (a.schedule_to_close_ms > 0, a.schedule_to_start_timer)
    });
    t.run_mut()
        .state
        .activities
        .retain(|a| a.scheduled_event_id != id);
    if s2c {
        t.push_timer(TimerOp::Delete {
            key: schedule_to_close_key(id),
        });
    }
    if s2s {
        t.push_timer(TimerOp::Delete {
            key: schedule_to_start_key(id),
        });
    }
}

/// An activity attempt succeeded: its result reaches the workflow.
pub fn complete_activity(
    run: &Run,
    token: &TaskToken,
    result: Option<pb::Payload>,
    identity: &str,
    now: Millis,
) -> Result<RunCommit, EngineError> {
    let act = current_activity(run, token)?.clone();
    let mut t = Transition::new(run, now);
    remove_activity(&mut t, act.scheduled_event_id);
    t.add_external([
        started_event(&act, identity),
        Attributes::ActivityTaskCompleted(pb::ActivityTaskCompletedAttributes {
            scheduled_event_id: act.scheduled_event_id,
            started_event_id: 0,
            result,
            identity: identity.to_owned(),
        }),
    ]);
    t.push_task(TaskOp::Delete {
        scheduled_event_id: act.scheduled_event_id,
        lease_id: Some(token.lease_id.clone()),
    });
    Ok(t.finish())
}

/// An activity attempt failed (or, with `timed_out`, its lease ran out): retried per its
/// policy, or its failure reaches the workflow. `jitter` in `[0, 1)` spreads the retry delay.
pub fn fail_activity(
    run: &Run,
    token: &TaskToken,
    failure: pb::Failure,
    identity: &str,
    now: Millis,
    jitter: f64,
    timed_out: bool,
) -> Result<RunCommit, EngineError> {
    let act = current_activity(run, token)?.clone();
    let mut t = Transition::new(run, now);
    let policy = act.retry_policy.as_ref();
    let delay_ms = match failure.next_retry_delay.as_ref() {
        Some(hint) if duration_to_ms(Some(hint)) > 0 => duration_to_ms(Some(hint)),
        _ => retry_delay(policy, act.attempt, jitter).as_millis() as i64,
    };
    let next_at = now + delay_ms;
    let in_time =
        act.schedule_to_close_ms == 0 || next_at < act.scheduled_time + act.schedule_to_close_ms;
    if !failure.non_retryable && in_time && may_retry(policy, act.attempt, &failure.r#type) {
        let pending = t
            .run_mut()
            .state
            .activities
            .iter_mut()
            .find(|a| a.scheduled_event_id == act.scheduled_event_id)
            .expect("checked above");
        pending.attempt += 1;
        pending.last_failure = Some(failure);
        pending.next_attempt_time = next_at;
        t.push_task(TaskOp::Retry {
            scheduled_event_id: act.scheduled_event_id,
            attempt: act.attempt + 1,
            visible_at: next_at,
            lease_id: token.lease_id.clone(),
        });
    } else {
        remove_activity(&mut t, act.scheduled_event_id);
        let outcome = if timed_out {
            Attributes::ActivityTaskTimedOut(pb::ActivityTaskTimedOutAttributes {
                scheduled_event_id: act.scheduled_event_id,
                started_event_id: 0,
                failure: Some(failure),
            })
        } else {
            Attributes::ActivityTaskFailed(pb::ActivityTaskFailedAttributes {
                scheduled_event_id: act.scheduled_event_id,
                started_event_id: 0,
                failure: Some(failure),
                identity: identity.to_owned(),
            })
        };
        t.add_external([started_event(&act, identity), outcome]);
        t.push_task(TaskOp::Delete {
            scheduled_event_id: act.scheduled_event_id,
            lease_id: Some(token.lease_id.clone()),
        });
    }
    Ok(t.finish())
}

/// Runs now the activities waiting for their next attempt (`activity_id` empty: all of
/// them), optionally from attempt 1 again. Returns the ids it retried.
pub fn retry_activities_now(
    run: &Run,
    activity_id: &str,
    reset_attempts: bool,
    now: Millis,
) -> Result<(RunCommit, Vec<String>), EngineError> {
    require_open(run)?;
    let mut t = Transition::new(run, now);
    let mut retried = Vec::new();
    let mut found = false;
    for a in &mut t.run_mut().state.activities {
        if !activity_id.is_empty() && a.activity_id != activity_id {
            continue;
        }
        found = true;
        if a.next_attempt_time <= now {
            continue;
        }
        a.next_attempt_time = 0;
        if reset_attempts {
            a.attempt = 1;
        }
        retried.push((a.scheduled_event_id, a.attempt, a.activity_id.clone()));
    }
    if !activity_id.is_empty() && !found {
        return Err(EngineError::NotFound(format!(
            "run {} has no pending activity '{activity_id}'",
            run.run_id
        )));
    }
    if retried.is_empty() {
        return Err(EngineError::FailedPrecondition(if activity_id.is_empty() {
            "no activity of this run is waiting for its next attempt".into()
        } else {
            format!("activity '{activity_id}' is not waiting for its next attempt")
        }));
    }
    let ids = retried.iter().map(|r| r.2.clone()).collect();
    for (scheduled_event_id, attempt, _) in retried {
        t.push_task(TaskOp::RetryNow {
            scheduled_event_id,
            attempt,
            visible_at: now,
        });
    }
    Ok((t.finish(), ids))
}

fn require_open(run: &Run) -> Result<(), EngineError> {
    if run.is_open() {
        Ok(())
    } else {
        Err(EngineError::FailedPrecondition(format!(
            "workflow {} run {} is already closed",
            run.workflow_id, run.run_id
        )))
    }
}

/// A signal for the workflow.
pub fn signal(
    run: &Run,
    name: &str,
    input: Option<pb::Payload>,
    identity: &str,
    now: Millis,
) -> Result<RunCommit, EngineError> {
    require_open(run)?;
    let mut t = Transition::new(run, now);
    t.add_external([Attributes::WorkflowExecutionSignaled(
        pb::WorkflowExecutionSignaledAttributes {
            signal_name: name.to_owned(),
            input,
            identity: identity.to_owned(),
        },
    )]);
    Ok(t.finish())
}

/// Asks the workflow to cancel. Asking twice changes nothing (`None`).
pub fn request_cancel(
    run: &Run,
    reason: &str,
    identity: &str,
    now: Millis,
) -> Result<Option<RunCommit>, EngineError> {
    require_open(run)?;
    if run.state.cancel_requested {
        return Ok(None);
    }
    let mut t = Transition::new(run, now);
    t.run_mut().state.cancel_requested = true;
    t.add_external([Attributes::WorkflowExecutionCancelRequested(
        pb::WorkflowExecutionCancelRequestedAttributes {
            reason: reason.to_owned(),
            identity: identity.to_owned(),
        },
    )]);
    Ok(Some(t.finish()))
}

/// Stops the run now. Buffered events are kept in history before the end.
pub fn terminate(
    run: &Run,
    reason: &str,
    identity: &str,
    now: Millis,
) -> Result<RunCommit, EngineError> {
    require_open(run)?;
    let mut t = Transition::new(run, now);
    t.flush_buffered();
    t.close(
        pb::WorkflowStatus::Terminated,
        Attributes::WorkflowExecutionTerminated(pb::WorkflowExecutionTerminatedAttributes {
            reason: reason.to_owned(),
            identity: identity.to_owned(),
        }),
    );
    Ok(t.finish())
}

/// A timer row came due. `None` when it no longer matters (cancelled, or the run closed);
/// the caller then only deletes the row.
/// `activity_started`: for a schedule-to-start timer, whether the activity was picked up.
pub fn fire_timer(run: &Run, key: &str, now: Millis, activity_started: bool) -> Option<RunCommit> {
    if !run.is_open() {
        return None;
    }
    if key == RUN_TIMEOUT_KEY || key == EXECUTION_TIMEOUT_KEY {
        let mut t = Transition::new(run, now);
        t.flush_buffered();
        t.close(
            pb::WorkflowStatus::TimedOut,
            Attributes::WorkflowExecutionTimedOut(pb::WorkflowExecutionTimedOutAttributes {}),
        );
        t.set_fired_timer(key.to_owned());
        return Some(t.finish());
    }
    if let Some(rest) = key.strip_prefix("a:") {
        let (id, kind) = rest.split_once(':')?;
        let act = run.activity(id.parse().ok()?)?.clone();
        let (error_type, message) = match kind {
            "s2c" => (
                "ScheduleToCloseTimeout",
                "the activity did not finish within its schedule-to-close timeout",
            ),
            "s2s" if !activity_started && act.attempt == 1 => (
                "ScheduleToStartTimeout",
                "no worker picked the activity up within its schedule-to-start timeout",
            ),
            _ => return None,
        };
        let mut t = Transition::new(run, now);
        remove_activity(&mut t, act.scheduled_event_id);
        t.add_external([Attributes::ActivityTaskTimedOut(
            pb::ActivityTaskTimedOutAttributes {
                scheduled_event_id: act.scheduled_event_id,
                started_event_id: 0,
                failure: Some(pb::Failure {
                    message: message.into(),
                    r#type: error_type.into(),
                    ..Default::default()
                }),
            },
        )]);
        t.push_task(TaskOp::Delete {
            scheduled_event_id: act.scheduled_event_id,
            lease_id: None,
        });
        // The row being fired is deleted by the guard; drop the duplicate delete.
        let mut commit = t.finish();
        commit
            .timers
            .retain(|op| !matches!(op, TimerOp::Delete { key: k } if k == key));
        commit.fired_timer = Some(key.to_owned());
        return Some(commit);
    }
    let timer_id = key.strip_prefix("t:")?;
    let timer = run.state.timers.iter().find(|x| x.timer_id == timer_id)?;
    let mut t = Transition::new(run, now);
    let started = timer.started_event_id;
    t.run_mut().state.timers.retain(|x| x.timer_id != timer_id);
    t.add_external([Attributes::TimerFired(pb::TimerFiredAttributes {
        timer_id: timer_id.to_owned(),
        started_event_id: started,
    })]);
    t.set_fired_timer(key.to_owned());
    Some(t.finish())
}

/// After a workflow task was claimed from the store whose run has buffered events (its
/// previous lease ran out): appends them so the new holder sees them.
pub fn flush_for_claim(run: &Run, now: Millis) -> Option<RunCommit> {
    if run.state.buffered.is_empty() {
        return None;
    }
    let mut t = Transition::new(run, now);
    t.flush_buffered();
    Some(t.finish())
}

#[cfg(test)]
mod tests;
