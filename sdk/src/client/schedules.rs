//! Schedules from a client (an operator's calls): a workflow started at each time of a cron
//! expression or an interval. A schedule is a [`Schedule`]: when ([`ScheduleSpec`]), what it
//! starts ([`ScheduleAction`]) and what it does when the last run still runs
//! ([`ScheduleOverlap`]).
//!
//! ```no_run
//! # use martix_sdk::{Client, Workflow};
//! # use martix_sdk::schedule::{Schedule, ScheduleAction, ScheduleSpec};
//! # struct Reconcile;
//! # impl Workflow for Reconcile { const NAME: &'static str = "reconcile"; type Input = String; type Output = (); }
//! # async fn run(client: Client) -> Result<(), martix_sdk::ClientError> {
//! let nightly = Schedule::new(
//!     ScheduleSpec::cron("0 2 * * *").in_timezone("Europe/Paris"),
//!     ScheduleAction::start(Reconcile, "payments", &"all".to_owned())?,
//! );
//! client.create_schedule("nightly-reconcile", nightly).await?;
//! # Ok(()) }
//! ```

use super::Client;
use super::description::time;
use crate::definition::Workflow;
use crate::error::ClientError;
use crate::payload::from_payload;
use crate::workflow::options::dur;
use martix_proto::v1 as pb;
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after its time a time the engine could not act on is still acted on, unless the
/// schedule says otherwise.
pub const DEFAULT_CATCHUP_WINDOW: Duration = Duration::from_secs(3600);

/// When a schedule acts.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleTimes {
    /// Each time of a five-field cron expression (minute hour day-of-month month day-of-week)
    /// in an IANA time zone; times a daylight-saving change skips or repeats are handled as
    /// Vixie cron does.
    Cron {
        /// The expression (`"0 2 * * *"`).
        expression: String,
        /// Its time zone (`"Europe/Paris"`); empty: UTC.
        timezone: String,
    },
    /// Every interval, counted from the Unix epoch (every hour: on the hour, UTC).
    Every(Duration),
}

/// When a schedule acts, and by how much each run may be delayed.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSpec {
    /// The times.
    pub times: ScheduleTimes,
    /// Each run is delayed by up to this much (a fixed share of it per time); zero: none.
    pub jitter: Duration,
}

impl ScheduleSpec {
    /// Each time of a cron expression, in UTC (see [`ScheduleSpec::in_timezone`]).
    pub fn cron(expression: impl Into<String>) -> Self {
        ScheduleSpec {
            times: ScheduleTimes::Cron {
                expression: expression.into(),
                timezone: String::new(),
            },
            jitter: Duration::ZERO,
        }
    }

    /// Every `interval`, counted from the Unix epoch.
    pub fn every(interval: Duration) -> Self {
        ScheduleSpec {
            times: ScheduleTimes::Every(interval),
            jitter: Duration::ZERO,
        }
    }

    /// The cron expression's time zone (an IANA name); an interval has none, and is left as
    /// it is.
    pub fn in_timezone(mut self, zone: impl Into<String>) -> Self {
        if let ScheduleTimes::Cron { timezone, .. } = &mut self.times {
            *timezone = zone.into();
        }
        self
    }

    /// Delays each run by up to `jitter`.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    fn to_proto(&self) -> pb::ScheduleSpec {
        let (cron, interval, timezone) = match &self.times {
            ScheduleTimes::Cron {
                expression,
                timezone,
            } => (expression.clone(), None, timezone.clone()),
            ScheduleTimes::Every(d) => (String::new(), Some(dur(*d)), String::new()),
        };
        pb::ScheduleSpec {
            cron,
            interval,
            timezone,
            jitter: (!self.jitter.is_zero()).then(|| dur(self.jitter)),
        }
    }

    fn from_proto(s: pb::ScheduleSpec) -> Self {
        let times = if s.cron.is_empty() {
            ScheduleTimes::Every(duration(s.interval))
        } else {
            ScheduleTimes::Cron {
                expression: s.cron,
                timezone: s.timezone,
            }
        };
        ScheduleSpec {
            times,
            jitter: duration(s.jitter),
        }
    }
}

impl std::fmt::Display for ScheduleSpec {
    /// `0 2 * * * (Europe/Paris)` or `every 15m`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.times {
            ScheduleTimes::Cron {
                expression,
                timezone,
            } => {
                let tz = if timezone.is_empty() { "UTC" } else { timezone };
                write!(f, "{expression} ({tz})")
            }
            ScheduleTimes::Every(d) => write!(f, "every {}", short(*d)),
        }
    }
}

/// What a schedule does at a time its last run still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScheduleOverlap {
    /// The time is skipped.
    #[default]
    Skip,
    /// One time waits for the last run to close; more are skipped.
    BufferOne,
    /// Every time starts a run.
    AllowAll,
    /// The last run is asked to cancel, and the new one starts.
    CancelOther,
}

impl ScheduleOverlap {
    /// `skip`, `buffer_one`, `allow_all` or `cancel_other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleOverlap::Skip => "skip",
            ScheduleOverlap::BufferOne => "buffer_one",
            ScheduleOverlap::AllowAll => "allow_all",
            ScheduleOverlap::CancelOther => "cancel_other",
        }
    }

    fn to_proto(self) -> pb::ScheduleOverlap {
        match self {
            ScheduleOverlap::Skip => pb::ScheduleOverlap::Skip,
            ScheduleOverlap::BufferOne => pb::ScheduleOverlap::BufferOne,
            ScheduleOverlap::AllowAll => pb::ScheduleOverlap::AllowAll,
            ScheduleOverlap::CancelOther => pb::ScheduleOverlap::CancelOther,
        }
    }

    fn from_proto(n: i32) -> Self {
        match pb::ScheduleOverlap::try_from(n) {
            Ok(pb::ScheduleOverlap::BufferOne) => ScheduleOverlap::BufferOne,
            Ok(pb::ScheduleOverlap::AllowAll) => ScheduleOverlap::AllowAll,
            Ok(pb::ScheduleOverlap::CancelOther) => ScheduleOverlap::CancelOther,
            _ => ScheduleOverlap::Skip,
        }
    }
}

/// The workflow a schedule starts at each time (its id: the schedule's id and the time).
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleAction {
    /// The workflow type.
    pub workflow_type: String,
    /// Its task queue.
    pub task_queue: String,
    /// Its run timeout (none: the engine's).
    pub run_timeout: Option<Duration>,
    /// Its workflow task timeout (none: the engine's).
    pub task_timeout: Option<Duration>,
    input: Option<pb::Payload>,
}

impl ScheduleAction {
    /// Starts workflow `W` on `task_queue` with `input`; fails if the input cannot be encoded.
    pub fn start<W: Workflow>(
        _workflow: W,
        task_queue: impl Into<String>,
        input: &W::Input,
    ) -> Result<Self, ClientError> {
        Ok(Self::new(
            W::NAME,
            task_queue,
            super::encode(input, || format!("the input of workflow '{}'", W::NAME))?,
        ))
    }

    /// Starts the workflow type named `workflow_type` (written in any language) with a JSON
    /// input.
    pub fn start_by_name(
        workflow_type: impl Into<String>,
        task_queue: impl Into<String>,
        input: &serde_json::Value,
    ) -> Result<Self, ClientError> {
        let workflow_type = workflow_type.into();
        let payload = super::encode(input, || format!("the input of workflow '{workflow_type}'"))?;
        Ok(Self::new(workflow_type, task_queue, payload))
    }

    fn new(
        workflow_type: impl Into<String>,
        task_queue: impl Into<String>,
        input: pb::Payload,
    ) -> Self {
        ScheduleAction {
            workflow_type: workflow_type.into(),
            task_queue: task_queue.into(),
            run_timeout: None,
            task_timeout: None,
            input: Some(input),
        }
    }

    /// Each run's run timeout.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = Some(timeout);
        self
    }

    /// Each run's workflow task timeout.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// The input each run is started with, decoded as `T` (none reads as JSON `null`).
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(from_payload(self.input.as_ref())?)
    }

    fn to_proto(&self) -> pb::ScheduleAction {
        pb::ScheduleAction {
            workflow_type: self.workflow_type.clone(),
            task_queue: self.task_queue.clone(),
            input: self.input.clone(),
            workflow_run_timeout: self.run_timeout.map(dur),
            workflow_task_timeout: self.task_timeout.map(dur),
        }
    }

    fn from_proto(a: pb::ScheduleAction) -> Self {
        ScheduleAction {
            workflow_type: a.workflow_type,
            task_queue: a.task_queue,
            run_timeout: a.workflow_run_timeout.map(|d| duration(Some(d))),
            task_timeout: a.workflow_task_timeout.map(|d| duration(Some(d))),
            input: a.input,
        }
    }
}

/// A schedule: when, what, and what to do at a time its last run still runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// When it acts.
    pub spec: ScheduleSpec,
    /// What it starts.
    pub action: ScheduleAction,
    /// At a time the last run still runs. Default: skip the time.
    pub overlap: ScheduleOverlap,
    /// A time the engine could not act on when it came (the engine was down) is acted on if
    /// at most this old. Default: [`DEFAULT_CATCHUP_WINDOW`] (1 hour).
    pub catchup_window: Duration,
    /// Whether it is paused (acts on no time).
    pub paused: bool,
    /// Why it is paused (or the note of its last pause or resume).
    pub note: String,
}

impl Schedule {
    /// A schedule acting on `spec`'s times with `action`, skipping a time its last run still
    /// runs, catching up times up to an hour old.
    pub fn new(spec: ScheduleSpec, action: ScheduleAction) -> Self {
        Schedule {
            spec,
            action,
            overlap: ScheduleOverlap::Skip,
            catchup_window: DEFAULT_CATCHUP_WINDOW,
            paused: false,
            note: String::new(),
        }
    }

    /// What to do at a time the last run still runs.
    pub fn overlap(mut self, overlap: ScheduleOverlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// How old a missed time may be and still be acted on.
    pub fn catchup_window(mut self, window: Duration) -> Self {
        self.catchup_window = window;
        self
    }

    /// Created paused, saying why.
    pub fn paused(mut self, note: impl Into<String>) -> Self {
        self.paused = true;
        self.note = note.into();
        self
    }

    /// The engine's message for it.
    pub fn into_proto(self) -> pb::Schedule {
        pb::Schedule {
            spec: Some(self.spec.to_proto()),
            action: Some(self.action.to_proto()),
            overlap: self.overlap.to_proto() as i32,
            catchup_window: Some(dur(self.catchup_window)),
            paused: self.paused,
            note: self.note,
        }
    }

    fn from_proto(s: pb::Schedule) -> Self {
        Schedule {
            spec: ScheduleSpec::from_proto(s.spec.unwrap_or_default()),
            action: ScheduleAction::from_proto(s.action.unwrap_or_default()),
            overlap: ScheduleOverlap::from_proto(s.overlap),
            catchup_window: s
                .catchup_window
                .map_or(DEFAULT_CATCHUP_WINDOW, |d| duration(Some(d))),
            paused: s.paused,
            note: s.note,
        }
    }
}

/// A run a schedule started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledRun {
    /// Its workflow id (the schedule's id and the time).
    pub workflow_id: String,
    /// Its run id.
    pub run_id: String,
}

impl ScheduledRun {
    fn from_proto(e: Option<pb::WorkflowExecution>) -> Option<Self> {
        e.map(|e| ScheduledRun {
            workflow_id: e.workflow_id,
            run_id: e.run_id,
        })
    }

    fn to_proto(&self) -> pb::WorkflowExecution {
        pb::WorkflowExecution {
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id.clone(),
        }
    }
}

/// What a schedule did at one of its times.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleActionRecord {
    /// The time it acted on.
    pub scheduled_time: Option<SystemTime>,
    /// When it acted.
    pub taken_time: Option<SystemTime>,
    /// What it did, in words (`started`, `skipped: the last run still runs`, ...).
    pub outcome: String,
    /// The run it started, if it started one.
    pub run: Option<ScheduledRun>,
}

impl ScheduleActionRecord {
    fn from_proto(a: pb::ScheduleActionRecord) -> Self {
        ScheduleActionRecord {
            scheduled_time: time(a.scheduled_time),
            taken_time: time(a.taken_time),
            outcome: a.outcome,
            run: ScheduledRun::from_proto(a.workflow_execution),
        }
    }

    /// The engine's message for it.
    pub fn into_proto(self) -> pb::ScheduleActionRecord {
        pb::ScheduleActionRecord {
            scheduled_time: self.scheduled_time.map(timestamp),
            taken_time: self.taken_time.map(timestamp),
            outcome: self.outcome,
            workflow_execution: self.run.as_ref().map(ScheduledRun::to_proto),
        }
    }
}

/// A schedule as the engine keeps it, with what it did lately and its next times.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleDescription {
    /// The schedule.
    pub schedule: Schedule,
    /// Its last actions, newest last.
    pub recent_actions: Vec<ScheduleActionRecord>,
    /// Its next times (none while paused).
    pub next_times: Vec<SystemTime>,
    /// Runs it started.
    pub started: i64,
    /// Times it skipped (overlap).
    pub skipped: i64,
    /// Times it missed (older than the catch-up window when the engine could act).
    pub missed: i64,
    /// The run it started last, while that run runs.
    pub running: Option<ScheduledRun>,
    /// A time waiting for the running run to close (overlap `buffer_one`).
    pub buffered_time: Option<SystemTime>,
    /// When it was created.
    pub created_time: Option<SystemTime>,
}

impl ScheduleDescription {
    fn from_proto(d: pb::DescribeScheduleResponse) -> Self {
        let info = d.info.unwrap_or_default();
        ScheduleDescription {
            schedule: Schedule::from_proto(d.schedule.unwrap_or_default()),
            recent_actions: info
                .recent_actions
                .into_iter()
                .map(ScheduleActionRecord::from_proto)
                .collect(),
            next_times: info
                .next_times
                .into_iter()
                .filter_map(|t| time(Some(t)))
                .collect(),
            started: info.started,
            skipped: info.skipped,
            missed: info.missed,
            running: ScheduledRun::from_proto(info.running),
            buffered_time: time(info.buffered_time),
            created_time: time(info.created_time),
        }
    }

    /// The engine's answer as it came, for tools that print the wire form.
    pub fn into_proto(self) -> pb::DescribeScheduleResponse {
        pb::DescribeScheduleResponse {
            schedule: Some(self.schedule.into_proto()),
            info: Some(pb::ScheduleInfo {
                recent_actions: self
                    .recent_actions
                    .into_iter()
                    .map(ScheduleActionRecord::into_proto)
                    .collect(),
                next_times: self.next_times.into_iter().map(timestamp).collect(),
                started: self.started,
                skipped: self.skipped,
                missed: self.missed,
                running: self.running.as_ref().map(ScheduledRun::to_proto),
                buffered_time: self.buffered_time.map(timestamp),
                created_time: self.created_time.map(timestamp),
            }),
        }
    }
}

/// One schedule as a listing shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSummary {
    /// Its id.
    pub schedule_id: String,
    /// When it acts.
    pub spec: ScheduleSpec,
    /// The workflow type it starts.
    pub workflow_type: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Its next time (none while paused).
    pub next_time: Option<SystemTime>,
}

impl ScheduleSummary {
    fn from_proto(s: pb::ScheduleListEntry) -> Self {
        ScheduleSummary {
            schedule_id: s.schedule_id,
            spec: ScheduleSpec::from_proto(s.spec.unwrap_or_default()),
            workflow_type: s.workflow_type,
            paused: s.paused,
            next_time: time(s.next_time),
        }
    }

    /// The engine's message for it, for tools that print the wire form.
    pub fn into_proto(self) -> pb::ScheduleListEntry {
        pb::ScheduleListEntry {
            schedule_id: self.schedule_id,
            spec: Some(self.spec.to_proto()),
            workflow_type: self.workflow_type,
            paused: self.paused,
            next_time: self.next_time.map(timestamp),
        }
    }
}

/// `2h`, `15m`, `90s` or `1500ms`: an interval in its largest whole unit.
fn short(d: Duration) -> String {
    let (s, ms) = (d.as_secs(), d.subsec_millis());
    match (s, ms) {
        (0, 0) => "0s".into(),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// A protobuf duration as a duration (negative: zero).
fn duration(d: Option<pbjson_types::Duration>) -> Duration {
    d.map_or(Duration::ZERO, |d| {
        Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        )
    })
}

/// A system time as a protobuf timestamp (before 1970 too).
pub(super) fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => pbjson_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        },
        Err(e) => {
            let d = e.duration();
            let (mut seconds, mut nanos) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i32));
            if nanos < 0 {
                seconds -= 1;
                nanos += 1_000_000_000;
            }
            pbjson_types::Timestamp { seconds, nanos }
        }
    }
}

impl Client {
    /// Creates schedule `id` in this client's namespace; ALREADY_EXISTS if it exists.
    pub async fn create_schedule(&self, id: &str, schedule: Schedule) -> Result<(), ClientError> {
        self.inner
            .clone()
            .create_schedule(pb::CreateScheduleRequest {
                namespace: self.namespace.clone(),
                schedule_id: id.to_owned(),
                schedule: Some(schedule.into_proto()),
                identity: self.identity.clone(),
            })
            .await?;
        Ok(())
    }

    /// Schedule `id`, what it did lately and its next times.
    pub async fn describe_schedule(&self, id: &str) -> Result<ScheduleDescription, ClientError> {
        let d = self
            .inner
            .clone()
            .describe_schedule(pb::DescribeScheduleRequest {
                namespace: self.namespace.clone(),
                schedule_id: id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ScheduleDescription::from_proto(d))
    }

    /// Every schedule of this client's namespace, by id.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleSummary>, ClientError> {
        let mut all = Vec::new();
        let mut token = Vec::new();
        loop {
            let page = self
                .inner
                .clone()
                .list_schedules(pb::ListSchedulesRequest {
                    namespace: self.namespace.clone(),
                    page_size: 1000,
                    next_page_token: token,
                })
                .await?
                .into_inner();
            all.extend(page.schedules.into_iter().map(ScheduleSummary::from_proto));
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Pauses schedule `id`, saying why: it acts on no time until resumed.
    pub async fn pause_schedule(&self, id: &str, reason: &str) -> Result<(), ClientError> {
        self.patch_schedule(pb::PatchScheduleRequest {
            schedule_id: id.to_owned(),
            pause: reason.to_owned(),
            ..Default::default()
        })
        .await
        .map(drop)
    }

    /// Resumes schedule `id`, saying why; times that came while it was paused are not acted
    /// on.
    pub async fn resume_schedule(&self, id: &str, reason: &str) -> Result<(), ClientError> {
        self.patch_schedule(pb::PatchScheduleRequest {
            schedule_id: id.to_owned(),
            resume: reason.to_owned(),
            ..Default::default()
        })
        .await
        .map(drop)
    }

    /// Starts schedule `id`'s workflow now, by its overlap policy; what it did.
    pub async fn trigger_schedule(
        &self,
        id: &str,
    ) -> Result<Vec<ScheduleActionRecord>, ClientError> {
        self.patch_schedule(pb::PatchScheduleRequest {
            schedule_id: id.to_owned(),
            trigger: true,
            ..Default::default()
        })
        .await
    }

    /// Starts schedule `id`'s workflow for every time it would have acted on from `from` to
    /// `to` (both included, at most 1,000 times), whatever runs; what it did at each.
    pub async fn backfill_schedule(
        &self,
        id: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<ScheduleActionRecord>, ClientError> {
        self.patch_schedule(pb::PatchScheduleRequest {
            schedule_id: id.to_owned(),
            backfill_start: Some(timestamp(from)),
            backfill_end: Some(timestamp(to)),
            ..Default::default()
        })
        .await
    }

    async fn patch_schedule(
        &self,
        mut request: pb::PatchScheduleRequest,
    ) -> Result<Vec<ScheduleActionRecord>, ClientError> {
        request.namespace.clone_from(&self.namespace);
        request.identity.clone_from(&self.identity);
        Ok(self
            .inner
            .clone()
            .patch_schedule(request)
            .await?
            .into_inner()
            .actions
            .into_iter()
            .map(ScheduleActionRecord::from_proto)
            .collect())
    }

    /// Deletes schedule `id`; the runs it started go on.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ClientError> {
        self.inner
            .clone()
            .delete_schedule(pb::DeleteScheduleRequest {
                namespace: self.namespace.clone(),
                schedule_id: id.to_owned(),
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nightly;
    impl Workflow for Nightly {
        const NAME: &'static str = "nightly";
        type Input = Vec<u32>;
        type Output = ();
    }

    #[test]
    fn a_schedule_goes_to_the_wire_and_back_unchanged() {
        let s = Schedule::new(
            ScheduleSpec::cron("0 2 * * *")
                .in_timezone("Europe/Paris")
                .jitter(Duration::from_secs(30)),
            ScheduleAction::start(Nightly, "q", &vec![1, 2])
                .unwrap()
                .run_timeout(Duration::from_secs(600)),
        )
        .overlap(ScheduleOverlap::BufferOne)
        .catchup_window(Duration::from_secs(60))
        .paused("maintenance");
        let p = s.clone().into_proto();
        let spec = p.spec.clone().unwrap();
        assert_eq!(spec.cron, "0 2 * * *");
        assert_eq!(spec.timezone, "Europe/Paris");
        assert_eq!(spec.jitter.unwrap().seconds, 30);
        assert!(spec.interval.is_none());
        let action = p.action.clone().unwrap();
        assert_eq!(action.workflow_type, "nightly");
        assert_eq!(action.input.as_ref().unwrap().data, b"[1,2]");
        assert_eq!(action.workflow_run_timeout.unwrap().seconds, 600);
        assert!(action.workflow_task_timeout.is_none());
        assert_eq!(p.overlap, pb::ScheduleOverlap::BufferOne as i32);
        assert_eq!(p.catchup_window.unwrap().seconds, 60);
        assert!(p.paused);
        assert_eq!(p.note, "maintenance");
        let back = Schedule::from_proto(p);
        assert_eq!(back, s);
        assert_eq!(back.action.input::<Vec<u32>>().unwrap(), [1, 2]);
    }

    #[test]
    fn an_interval_has_no_time_zone_and_defaults_are_the_engines() {
        let spec = ScheduleSpec::every(Duration::from_secs(900)).in_timezone("Europe/Paris");
        assert_eq!(spec.times, ScheduleTimes::Every(Duration::from_secs(900)));
        assert_eq!(spec.to_string(), "every 15m");
        let p = spec.to_proto();
        assert_eq!((p.cron.as_str(), p.timezone.as_str()), ("", ""));
        assert_eq!(p.interval.unwrap().seconds, 900);
        assert!(p.jitter.is_none(), "no jitter is sent as none");
        assert_eq!(
            ScheduleSpec::cron("* * * * *").to_string(),
            "* * * * * (UTC)"
        );
        for (d, text) in [(7200, "2h"), (120, "2m"), (90, "90s"), (0, "0s")] {
            assert_eq!(short(Duration::from_secs(d)), text);
        }
        assert_eq!(short(Duration::from_millis(1500)), "1500ms");
        let d = Schedule::from_proto(pb::Schedule::default());
        assert_eq!(d.overlap, ScheduleOverlap::Skip);
        assert_eq!(d.catchup_window, DEFAULT_CATCHUP_WINDOW);
        assert_eq!(d.action.input::<Option<u8>>().unwrap(), None);
        for o in [
            ScheduleOverlap::Skip,
            ScheduleOverlap::BufferOne,
            ScheduleOverlap::AllowAll,
            ScheduleOverlap::CancelOther,
        ] {
            assert_eq!(ScheduleOverlap::from_proto(o.to_proto() as i32), o);
        }
    }

    #[test]
    fn times_before_and_after_1970_survive_the_wire() {
        for t in [
            UNIX_EPOCH + Duration::new(1_764_554_400, 5),
            UNIX_EPOCH - Duration::new(10, 250_000_000),
            UNIX_EPOCH,
        ] {
            let ts = timestamp(t);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ts:?}");
            assert_eq!(time(Some(ts)), Some(t));
        }
        let d = ScheduleDescription::from_proto(pb::DescribeScheduleResponse {
            schedule: None,
            info: Some(pb::ScheduleInfo {
                next_times: vec![timestamp(UNIX_EPOCH + Duration::from_secs(60))],
                running: Some(pb::WorkflowExecution {
                    workflow_id: "s-1".into(),
                    run_id: "r".into(),
                }),
                started: 3,
                ..Default::default()
            }),
        });
        assert_eq!(d.next_times, [UNIX_EPOCH + Duration::from_secs(60)]);
        assert_eq!(d.running.as_ref().unwrap().workflow_id, "s-1");
        let again = ScheduleDescription::from_proto(d.clone().into_proto());
        assert_eq!(again, d);
    }
}
