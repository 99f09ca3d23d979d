//! Schedules, the engine's part: the requests (create, describe, list, patch, delete) and
//! acting on the schedules whose time came (`fire_due_schedules`, from the timer loop). See
//! `crate::schedules` for what a schedule is and why each time starts one run.

use super::Engine;
use super::requests::{identity, payload_len};
use crate::clock::{Millis, from_timestamp, to_timestamp};
use crate::error::EngineError;
use crate::history::{PARKED_UNTIL, duration_to_ms};
use crate::ids::{Namespace, TaskQueue, WorkflowType};
use crate::schedules::{self, ScheduleState, Spec};
use crate::store::ScheduleRow;
use martix_proto::v1 as pb;
use prost::Message;

/// Schedules looked at per round of the timer loop.
const DUE_BATCH: usize = 64;
/// How often a schedule with a time buffered looks whether the run it waits for closed.
const BUFFERED_RECHECK_MS: Millis = 1_000;
/// When a schedule that could not be acted on is looked at again.
const FAILED_RETRY_MS: Millis = 60_000;
/// How often acting on a schedule is tried again when another node wrote it meanwhile.
const MAX_SCHEDULE_CONFLICTS: usize = 5;

/// Why a schedule is acted on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    /// Its time came.
    Due,
    /// An operator asked for a run now.
    Trigger,
}

impl Engine {
    /// Creates a schedule.
    pub async fn create_schedule(
        &self,
        req: pb::CreateScheduleRequest,
    ) -> Result<pb::CreateScheduleResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let id = schedule_id(&req.schedule_id)?;
        identity(&req.identity)?;
        let schedule = req
            .schedule
            .ok_or_else(|| EngineError::invalid("schedule", "is required"))?;
        let spec = self.check_schedule(&schedule)?;
        let now = self.now();
        let state = ScheduleState {
            last_time: now,
            created: now,
            ..Default::default()
        };
        let row = ScheduleRow {
            namespace: ns.to_string(),
            schedule_id: id.to_owned(),
            spec: schedule.encode_to_vec(),
            next_fire_at: next_look(&schedule, &spec, id, &state, now),
            state: state.encode_to_vec(),
            version: 1,
        };
        if !self.store.create_schedule(&row).await? {
            return Err(EngineError::AlreadyExists(format!(
                "schedule '{id}' exists in namespace '{ns}'; delete it first, or pick another id"
            )));
        }
        self.note_schedule(row.next_fire_at);
        tracing::info!(namespace = %ns, schedule = id, "schedule created");
        Ok(pb::CreateScheduleResponse {})
    }

    /// A schedule, what it did lately and its next times.
    pub async fn describe_schedule(
        &self,
        req: pb::DescribeScheduleRequest,
    ) -> Result<pb::DescribeScheduleResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let row = self.schedule_row(&ns, &req.schedule_id).await?;
        let (schedule, state) = decode(&row)?;
        let spec = Spec::parse(schedule.spec.as_ref().unwrap_or(&Default::default()))?;
        let next_times = if schedule.paused {
            Vec::new()
        } else {
            spec.next_times(state.last_time, 5)
                .into_iter()
                .map(|t| to_timestamp(t + spec.jitter(&row.schedule_id, t)))
                .collect()
        };
        let running = if state.running_workflow_id.is_empty() {
            None
        } else {
            let latest = self
                .store
                .latest_run(ns.as_str(), &state.running_workflow_id)
                .await?;
            latest
                .filter(|r| r.is_open())
                .map(|r| pb::WorkflowExecution {
                    workflow_id: r.workflow_id.to_string(),
                    run_id: r.run_id.to_text(),
                })
        };
        Ok(pb::DescribeScheduleResponse {
            schedule: Some(schedule),
            info: Some(pb::ScheduleInfo {
                recent_actions: state.recent,
                next_times,
                started: state.started,
                skipped: state.skipped,
                missed: state.missed,
                running,
                buffered_time: (state.buffered_time != 0)
                    .then(|| to_timestamp(state.buffered_time)),
                created_time: Some(to_timestamp(state.created)),
            }),
        })
    }

    /// A page of a namespace's schedules, by id.
    pub async fn list_schedules(
        &self,
        req: pb::ListSchedulesRequest,
    ) -> Result<pb::ListSchedulesResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let size = match req.page_size {
            0 => 100,
            n @ 1..=1000 => n as usize,
            _ => {
                return Err(EngineError::invalid(
                    "page_size",
                    "must be 1 to 1000 (0: 100)",
                ));
            }
        };
        let after = String::from_utf8(req.next_page_token)
            .map_err(|_| EngineError::invalid("next_page_token", "is not one this engine made"))?;
        let rows = self.store.list_schedules(ns.as_str(), &after, size).await?;
        let next_page_token = if rows.len() == size {
            rows.last()
                .map(|r| r.schedule_id.clone().into_bytes())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut schedules = Vec::with_capacity(rows.len());
        for row in rows {
            let (schedule, _) = decode(&row)?;
            schedules.push(pb::ScheduleListEntry {
                schedule_id: row.schedule_id,
                workflow_type: schedule
                    .action
                    .as_ref()
                    .map(|a| a.workflow_type.clone())
                    .unwrap_or_default(),
                paused: schedule.paused,
                next_time: (!schedule.paused).then(|| to_timestamp(row.next_fire_at)),
                spec: schedule.spec,
            });
        }
        Ok(pb::ListSchedulesResponse {
            schedules,
            next_page_token,
        })
    }

    /// Pauses, resumes, triggers or backfills a schedule.
    pub async fn patch_schedule(
        &self,
        req: pb::PatchScheduleRequest,
    ) -> Result<pb::PatchScheduleResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let id = schedule_id(&req.schedule_id)?.to_owned();
        identity(&req.identity)?;
        let backfill = req.backfill_start.is_some() || req.backfill_end.is_some();
        let asked = [
            !req.pause.is_empty(),
            !req.resume.is_empty(),
            req.trigger,
            backfill,
        ];
        if asked.iter().filter(|a| **a).count() != 1 {
            return Err(EngineError::invalid(
                "request",
                "must ask exactly one of pause, resume, trigger and backfill",
            ));
        }
        if req.trigger {
            let actions = self.act_on_schedule(&ns, &id, Look::Trigger).await?;
            return Ok(pb::PatchScheduleResponse { actions });
        }
        if backfill {
            let (Some(start), Some(end)) = (req.backfill_start, req.backfill_end) else {
                return Err(EngineError::invalid(
                    "backfill_end",
                    "a backfill needs a start and an end",
                ));
            };
            let (start, end) = (from_timestamp(&start), from_timestamp(&end));
            if end < start {
                return Err(EngineError::invalid(
                    "backfill_end",
                    "is before backfill_start",
                ));
            }
            return self.backfill(&ns, &id, start, end).await;
        }
        let pause = !req.pause.is_empty();
        let note = if pause { req.pause } else { req.resume };
        for _ in 0..MAX_SCHEDULE_CONFLICTS {
            let mut row = self.schedule_row(&ns, &id).await?;
            let (mut schedule, mut state) = decode(&row)?;
            let spec = Spec::parse(schedule.spec.as_ref().unwrap_or(&Default::default()))?;
            let now = self.now();
            if !pause && schedule.paused {
                // Times that came while it was paused are not acted on.
                state.last_time = state.last_time.max(now);
            }
            schedule.paused = pause;
            schedule.note.clone_from(&note);
            row.next_fire_at = next_look(&schedule, &spec, &id, &state, now);
            row.spec = schedule.encode_to_vec();
            row.state = state.encode_to_vec();
            if self.store.save_schedule(&row).await? {
                self.note_schedule(row.next_fire_at);
                tracing::info!(namespace = %ns, schedule = %id, paused = pause, note = %note, "schedule paused or resumed");
                return Ok(pb::PatchScheduleResponse::default());
            }
        }
        Err(busy(&id))
    }

    /// Deletes a schedule; the runs it started go on.
    pub async fn delete_schedule(
        &self,
        req: pb::DeleteScheduleRequest,
    ) -> Result<pb::DeleteScheduleResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let id = schedule_id(&req.schedule_id)?;
        if !self.store.delete_schedule(ns.as_str(), id).await? {
            return Err(not_found(&ns, id));
        }
        tracing::info!(namespace = %ns, schedule = id, "schedule deleted");
        Ok(pb::DeleteScheduleResponse {})
    }

    /// Acts on every schedule whose time came; returns how many were looked at.
    pub async fn fire_due_schedules(&self) -> Result<usize, EngineError> {
        // The timer loop runs often under load: the schedules are read only when one this node
        // knows of is due, or a poll interval after the last look.
        let now = self.now();
        {
            let mut next = self
                .next_schedule_look
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if *next > now {
                return Ok(0);
            }
            *next = now + self.config.timer_poll_interval.as_millis() as Millis;
        }
        let mut looked = std::collections::HashSet::new();
        loop {
            let due = self.store.due_schedules(self.now(), DUE_BATCH).await?;
            let full = due.len() == DUE_BATCH;
            let mut fresh = false;
            for (ns, id) in due {
                // A schedule this sweep looked at and that is still due failed: not again now.
                if !looked.insert((ns.clone(), id.clone())) {
                    continue;
                }
                fresh = true;
                let Ok(ns) = Namespace::parse(&ns) else {
                    continue;
                };
                if let Err(e) = self.act_on_schedule(&ns, &id, Look::Due).await {
                    tracing::warn!(namespace = %ns, schedule = %id, error = %e, "schedule not acted on; will retry in a minute");
                    self.postpone_schedule(&ns, &id).await;
                }
            }
            if !full || !fresh {
                return Ok(looked.len());
            }
        }
    }

    /// A schedule of this node's is due at `at`: the timer loop looks then (not later than
    /// its poll interval).
    fn note_schedule(&self, at: Millis) {
        {
            let mut next = self
                .next_schedule_look
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *next = (*next).min(at);
        }
        self.arm_timer(at);
    }

    /// Looks at a schedule that failed again in a minute (best effort: a schedule that moved
    /// on meanwhile is left as it is).
    async fn postpone_schedule(&self, ns: &Namespace, id: &str) {
        if let Ok(Some(mut row)) = self.store.load_schedule(ns.as_str(), id).await {
            row.next_fire_at = self.now() + FAILED_RETRY_MS;
            let _ = self.store.save_schedule(&row).await;
        }
    }

    /// Acts on the times of schedule `id` that came (or, triggered, on now), and writes what
    /// it did; the actions taken.
    async fn act_on_schedule(
        &self,
        ns: &Namespace,
        id: &str,
        look: Look,
    ) -> Result<Vec<pb::ScheduleActionRecord>, EngineError> {
        // A trigger's time is taken once: acted on again after a conflict, it names the same
        // run, which the reject-duplicate start finds.
        let triggered_at = self.now();
        for _ in 0..MAX_SCHEDULE_CONFLICTS {
            let mut row = self.schedule_row(ns, id).await?;
            let (schedule, mut state) = decode(&row)?;
            let spec = Spec::parse(schedule.spec.as_ref().unwrap_or(&Default::default()))?;
            let now = self.now();
            let mut more = false;
            let mut running = self.still_running(ns, &state).await?;
            if state.buffered_time != 0 && !running {
                let t = std::mem::take(&mut state.buffered_time);
                self.start_for(ns, id, &schedule, &mut state, t, "started (was buffered)")
                    .await?;
                running = true;
            }
            match look {
                Look::Trigger => {
                    self.take_time(
                        ns,
                        id,
                        &schedule,
                        &mut state,
                        triggered_at,
                        running,
                        "triggered",
                    )
                    .await?;
                }
                Look::Due if !schedule.paused => {
                    let catchup = match duration_to_ms(schedule.catchup_window.as_ref()) {
                        0 => schedules::DEFAULT_CATCHUP_MS,
                        ms => ms,
                    };
                    let mut steps = 0;
                    while let Some(t) = spec.next_after(state.last_time) {
                        if t + spec.jitter(id, t) > now {
                            break;
                        }
                        steps += 1;
                        if steps > schedules::MAX_STEPS_PER_LOOK {
                            if now - t > catchup {
                                // A long outage: the rest of the missed times go at once (the
                                // times after are within the window, so this happens once).
                                state.last_time = t.max(now - catchup);
                                state.record(record(
                                    t,
                                    now,
                                    "missed, with every time up to the catch-up window (too \
                                     many to count one by one)",
                                    None,
                                ));
                                steps = 0;
                                continue;
                            }
                            // Within the window: the rest on the next look, right away.
                            more = true;
                            break;
                        }
                        state.last_time = t;
                        if now - t > catchup {
                            state.missed += 1;
                            state.record(record(
                                t,
                                now,
                                "missed (older than the catch-up window)",
                                None,
                            ));
                            continue;
                        }
                        running = self
                            .take_time(ns, id, &schedule, &mut state, t, running, "")
                            .await?;
                    }
                }
                Look::Due => {}
            }
            let taken = match look {
                Look::Trigger => state.recent.last().cloned().into_iter().collect(),
                Look::Due => Vec::new(),
            };
            row.next_fire_at = if more {
                now
            } else {
                next_look(&schedule, &spec, id, &state, now)
            };
            row.state = state.encode_to_vec();
            if self.store.save_schedule(&row).await? {
                self.note_schedule(row.next_fire_at);
                return Ok(taken);
            }
            // Another node acted meanwhile: what it started, this look finds started.
        }
        Err(busy(id))
    }

    /// Acts on time `t` by the schedule's overlap policy, given whether its last run still
    /// runs; returns whether a run of it runs after.
    #[allow(clippy::too_many_arguments)]
    async fn take_time(
        &self,
        ns: &Namespace,
        id: &str,
        schedule: &pb::Schedule,
        state: &mut ScheduleState,
        t: Millis,
        running: bool,
        how: &str,
    ) -> Result<bool, EngineError> {
        let now = self.now();
        let prefix = |what: &str| {
            if how.is_empty() {
                what.to_owned()
            } else {
                format!("{how}: {what}")
            }
        };
        if running {
            match schedules::overlap(schedule.overlap) {
                pb::ScheduleOverlap::Skip | pb::ScheduleOverlap::Unspecified => {
                    state.skipped += 1;
                    state.record(record(
                        t,
                        now,
                        &prefix("skipped (the last run still runs)"),
                        None,
                    ));
                    return Ok(true);
                }
                pb::ScheduleOverlap::BufferOne => {
                    if state.buffered_time == 0 {
                        state.buffered_time = t;
                        state.record(record(
                            t,
                            now,
                            &prefix("buffered (the last run still runs)"),
                            None,
                        ));
                    } else {
                        state.skipped += 1;
                        state.record(record(
                            t,
                            now,
                            &prefix("skipped (one time already waits)"),
                            None,
                        ));
                    }
                    return Ok(true);
                }
                pb::ScheduleOverlap::CancelOther => {
                    self.cancel_running(ns, state).await;
                    self.start_for(
                        ns,
                        id,
                        schedule,
                        state,
                        t,
                        &prefix("cancelled the last run, started"),
                    )
                    .await?;
                    return Ok(true);
                }
                pb::ScheduleOverlap::AllowAll => {}
            }
        }
        self.start_for(ns, id, schedule, state, t, &prefix("started"))
            .await?;
        Ok(true)
    }

    /// Starts the schedule's run for time `t` (or finds it started), and records it.
    async fn start_for(
        &self,
        ns: &Namespace,
        id: &str,
        schedule: &pb::Schedule,
        state: &mut ScheduleState,
        t: Millis,
        outcome: &str,
    ) -> Result<(), EngineError> {
        let action = schedule.action.clone().unwrap_or_default();
        let workflow_id = schedules::workflow_id(id, t);
        let mut req = pb::StartWorkflowRequest {
            namespace: ns.to_string(),
            workflow_id: workflow_id.clone(),
            workflow_type: action.workflow_type,
            task_queue: action.task_queue,
            input: action.input,
            workflow_run_timeout: action.workflow_run_timeout,
            workflow_task_timeout: action.workflow_task_timeout,
            // One run per time: a second start (another node, a retry) finds it.
            id_reuse_policy: pb::IdReusePolicy::RejectDuplicate as i32,
            identity: format!("schedule {id}"),
            ..Default::default()
        };
        // As a start from a message: a domain's stamp (a field recording the caller) names none.
        self.stamp_start(&mut req, None);
        let now = self.now();
        match self.start_workflow(req).await {
            // A backfill of a time that ran: that run stands, none is started again. (A time
            // started before by a node that crashed before writing the schedule, or by another
            // node, is this look's run all the same.)
            Ok(started) if !started.started && outcome.starts_with("backfilled") => {
                state.record(record(
                    t,
                    now,
                    "backfilled: already ran, not run again",
                    Some(pb::WorkflowExecution {
                        workflow_id,
                        run_id: started.run_id,
                    }),
                ));
                Ok(())
            }
            Ok(started) => {
                state.started += 1;
                state.running_workflow_id.clone_from(&workflow_id);
                state.running_run_id.clone_from(&started.run_id);
                state.record(record(
                    t,
                    now,
                    outcome,
                    Some(pb::WorkflowExecution {
                        workflow_id,
                        run_id: started.run_id,
                    }),
                ));
                Ok(())
            }
            // The id ran another start (by hand, with other input): not this schedule's.
            Err(EngineError::AlreadyExists(why)) => {
                state.skipped += 1;
                state.record(record(t, now, &format!("not started: {why}"), None));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the schedule's last run still runs.
    async fn still_running(
        &self,
        ns: &Namespace,
        state: &ScheduleState,
    ) -> Result<bool, EngineError> {
        if state.running_workflow_id.is_empty() {
            return Ok(false);
        }
        Ok(self
            .store
            .latest_run(ns.as_str(), &state.running_workflow_id)
            .await?
            .is_some_and(|r| r.is_open()))
    }

    /// Asks the schedule's last run to cancel (CANCEL_OTHER); a run that closed meanwhile
    /// has nothing to cancel.
    async fn cancel_running(&self, ns: &Namespace, state: &ScheduleState) {
        let req = pb::CancelWorkflowRequest {
            namespace: ns.to_string(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: state.running_workflow_id.clone(),
                run_id: state.running_run_id.clone(),
            }),
            reason: "its schedule started the next run (overlap: cancel other)".into(),
            identity: "schedule".into(),
        };
        if let Err(e) = self.cancel_workflow(req).await {
            tracing::debug!(workflow_id = %state.running_workflow_id, error = %e, "the last run was not cancelled");
        }
    }

    /// Starts the schedule's run for every time in [start, end], whatever runs.
    async fn backfill(
        &self,
        ns: &Namespace,
        id: &str,
        start: Millis,
        end: Millis,
    ) -> Result<pb::PatchScheduleResponse, EngineError> {
        let row = self.schedule_row(ns, id).await?;
        let (schedule, _) = decode(&row)?;
        let spec = Spec::parse(schedule.spec.as_ref().unwrap_or(&Default::default()))?;
        let mut times = Vec::new();
        let mut t = start - 1;
        while let Some(next) = spec.next_after(t) {
            if next > end {
                break;
            }
            if times.len() == schedules::MAX_BACKFILL {
                return Err(EngineError::invalid(
                    "backfill_end",
                    format!(
                        "the range holds more than {} times; backfill it in parts",
                        schedules::MAX_BACKFILL
                    ),
                ));
            }
            times.push(next);
            t = next;
        }
        // The runs are recorded in the schedule's state as its own actions.
        let mut actions = Vec::new();
        for t in times {
            let mut scratch = ScheduleState::default();
            self.start_for(ns, id, &schedule, &mut scratch, t, "backfilled: started")
                .await?;
            actions.extend(scratch.recent);
        }
        for _ in 0..MAX_SCHEDULE_CONFLICTS {
            let mut row = self.schedule_row(ns, id).await?;
            let (_, mut state) = decode(&row)?;
            for a in &actions {
                state.started += i64::from(a.outcome == "backfilled: started");
                state.record(a.clone());
            }
            row.state = state.encode_to_vec();
            if self.store.save_schedule(&row).await? {
                return Ok(pb::PatchScheduleResponse { actions });
            }
        }
        Err(busy(id))
    }

    /// Checks a schedule as a request gives it: its spec, action and windows.
    fn check_schedule(&self, schedule: &pb::Schedule) -> Result<Spec, EngineError> {
        let spec = Spec::parse(
            schedule
                .spec
                .as_ref()
                .ok_or_else(|| EngineError::invalid("schedule.spec", "is required"))?,
        )?;
        let action = schedule
            .action
            .as_ref()
            .ok_or_else(|| EngineError::invalid("schedule.action", "is required"))?;
        WorkflowType::parse_field("schedule.action.workflow_type", &action.workflow_type)?;
        TaskQueue::parse_field("schedule.action.task_queue", &action.task_queue)?;
        self.check_payload("schedule.action.input", payload_len(action.input.as_ref()))?;
        crate::history::check_task_timeout(duration_to_ms(action.workflow_task_timeout.as_ref()))
            .map_err(|e| EngineError::invalid("schedule.action.workflow_task_timeout", e))?;
        pb::ScheduleOverlap::try_from(schedule.overlap)
            .map_err(|_| EngineError::invalid("schedule.overlap", "is not a known policy"))?;
        let catchup = duration_to_ms(schedule.catchup_window.as_ref());
        if catchup != 0 && catchup < schedules::MIN_CATCHUP_MS {
            return Err(EngineError::invalid(
                "schedule.catchup_window",
                "must be at least 10s (or unset for 1h)",
            ));
        }
        if schedule.note.len() > 1024 {
            return Err(EngineError::invalid(
                "schedule.note",
                "is longer than 1 KiB",
            ));
        }
        Ok(spec)
    }

    async fn schedule_row(&self, ns: &Namespace, id: &str) -> Result<ScheduleRow, EngineError> {
        let id = schedule_id(id)?;
        self.store
            .load_schedule(ns.as_str(), id)
            .await?
            .ok_or_else(|| not_found(ns, id))
    }
}

/// When a schedule must be looked at next: its next time with jitter, soon while a time is
/// buffered, never while paused.
fn next_look(
    schedule: &pb::Schedule,
    spec: &Spec,
    id: &str,
    state: &ScheduleState,
    now: Millis,
) -> Millis {
    if schedule.paused {
        return PARKED_UNTIL;
    }
    let next = spec
        .next_after(state.last_time)
        .map_or(PARKED_UNTIL, |t| t + spec.jitter(id, t));
    if state.buffered_time != 0 {
        next.min(now + BUFFERED_RECHECK_MS)
    } else {
        next
    }
}

fn record(
    t: Millis,
    now: Millis,
    outcome: &str,
    run: Option<pb::WorkflowExecution>,
) -> pb::ScheduleActionRecord {
    pb::ScheduleActionRecord {
        scheduled_time: Some(to_timestamp(t)),
        taken_time: Some(to_timestamp(now)),
        outcome: outcome.to_owned(),
        workflow_execution: run,
    }
}

fn decode(row: &ScheduleRow) -> Result<(pb::Schedule, ScheduleState), EngineError> {
    let corrupt = |what: &str| {
        EngineError::Internal(format!(
            "schedule '{}' has a {what} this engine cannot read",
            row.schedule_id
        ))
    };
    Ok((
        pb::Schedule::decode(&row.spec[..]).map_err(|_| corrupt("spec"))?,
        ScheduleState::decode(&row.state[..]).map_err(|_| corrupt("state"))?,
    ))
}

/// A schedule id: 1 to 200 bytes without control characters (its runs' ids append a time).
fn schedule_id(raw: &str) -> Result<&str, EngineError> {
    if raw.is_empty() || raw.len() > 200 || raw.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "schedule_id",
            "must be 1 to 200 bytes without control characters",
        ));
    }
    Ok(raw)
}

fn not_found(ns: &Namespace, id: &str) -> EngineError {
    EngineError::NotFound(format!(
        "schedule '{id}' does not exist in namespace '{ns}'"
    ))
}

fn busy(id: &str) -> EngineError {
    EngineError::Unavailable(format!(
        "schedule '{id}' kept changing concurrently; try again"
    ))
}
