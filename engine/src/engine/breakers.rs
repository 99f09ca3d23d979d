//! What workers report, and what their polls show: the engine records each worker's breaker
//! states (its own `breakers` table) so that operators see open ones in `DescribeWorkflow`,
//! `martix stuck` and `/metrics`, whatever adapters the worker guards; and the workers seen
//! polling each task queue (`pollers`), so that a run on a queue nobody polls says so.
//!
//! An attempt a worker's breaker refused without calling is no attempt: its task is parked
//! behind that breaker (`history::fail_activity`), costing no attempt and no poll, and released
//! here. While the latest change reported of the breaker is to open (or half-open: a trial
//! call is under way), one parked task goes every 5 seconds: the probe (a worker whose breaker
//! has waited long enough lets it through as its trial call; one whose breaker has not refuses
//! it again, and it is parked again). Once a worker reports the breaker closed, the parked
//! tasks go paced: 1, then 4, 16, 64, ... a second, up to 256 a second per node, so the system
//! that just came back is not met by all of them at once.

use super::Engine;
use super::requests::identity;
use crate::clock::Millis;
use crate::clock::to_timestamp;
use crate::error::EngineError;
use crate::history::{self, Dispatch};
use crate::store::{
    BREAKER_REPORT_FRESH_MS, BreakerHold, BreakerReport, BreakerState, WorkerBreaker,
};
use martix_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often parked tasks are looked at.
const RELEASE_EVERY: Duration = Duration::from_secs(1);
/// While a breaker is open, one of its parked tasks goes this often.
const PROBE_EVERY_MS: Millis = 5_000;
/// The most tasks released per breaker and second once it lets calls through.
const MAX_RELEASED_PER_PASS: usize = 256;

/// How fast the tasks parked behind one breaker go.
struct Pace {
    /// Tasks the next pass may release if the breaker lets calls through.
    allowance: usize,
    /// When the last probe went while it was open.
    last_probe: Millis,
}

/// An unchanged breaker report is written at most this often (workers report every few
/// seconds to learn the holds; a report stands for `BREAKER_REPORT_FRESH_MS`).
const REPORT_WRITE_EVERY_MS: Millis = 60_000;
/// Workers whose last report a node remembers; past it every report is written.
const MAX_BREAKERS_NOTED: usize = 10_000;

/// The most breakers held by hand in a namespace (what the store reads of them).
const MAX_HOLDS: usize = 100;

/// The breaker reports a node wrote last, by namespace and worker, with when.
pub(super) type BreakersNoted = HashMap<(String, String), (Vec<BreakerReport>, Millis)>;

/// The API's name of a hold's state.
fn hold_of(state: BreakerState) -> pb::BreakerHold {
    match state {
        BreakerState::Open => pb::BreakerHold::Open,
        _ => pb::BreakerHold::Closed,
    }
}

/// Releases the tasks parked behind breakers, paced (see the module doc), until `shutdown`.
pub(crate) async fn run_release(engine: Arc<Engine>, shutdown: CancellationToken) {
    let mut paces = HashMap::new();
    // A pass spreads its releases over the second: the next starts when it ends, if later.
    let mut every = tokio::time::interval(RELEASE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        if let Err(e) = engine.release_parked(&mut paces).await {
            tracing::warn!(error = %e, "releasing tasks parked behind breakers failed; will retry");
        }
    }
}

/// Most breakers one report carries.
const MAX_REPORTS: usize = 64;

/// A worker polling one queue for one kind of task: (namespace, queue, kind, identity).
pub(super) type PollerKey = (String, String, &'static str, String);
/// A node records a poller at most this often.
const POLLER_NOTE_EVERY_MS: Millis = 15_000;
/// Pollers seen within this long count as polling the queue now.
pub(super) const POLLERS_RECENT_MS: Millis = 60_000;
/// Pollers remembered per node; past it a new one is not recorded until the map is swept (the
/// table stays bounded whatever identities callers make up).
const MAX_POLLERS_NOTED: usize = 10_000;
/// Pollers not seen for a day are deleted by the retention loop.
pub(super) const POLLERS_KEPT_MS: Millis = 24 * 3600 * 1000;

impl Engine {
    /// Records a worker's breaker states.
    pub async fn report_breakers(
        &self,
        req: pb::ReportBreakersRequest,
    ) -> Result<pb::ReportBreakersResponse, EngineError> {
        let namespace = self.namespace(&req.namespace).await?;
        let worker = identity(&req.identity)?;
        if worker.is_empty() {
            return Err(EngineError::invalid("identity", "must name the worker"));
        }
        if req.breakers.len() > MAX_REPORTS {
            return Err(EngineError::invalid(
                "breakers",
                format!("has {} reports, at most {MAX_REPORTS}", req.breakers.len()),
            ));
        }
        let mut reports = Vec::with_capacity(req.breakers.len());
        for (i, b) in req.breakers.iter().enumerate() {
            history::check_breaker_name("breakers.adapter", &b.adapter).map_err(|_| {
                EngineError::invalid(
                    "breakers.adapter",
                    format!("of report {i} must be 1 to 255 bytes without control characters"),
                )
            })?;
            let state = match pb::BreakerState::try_from(b.state) {
                Ok(pb::BreakerState::Closed) => BreakerState::Closed,
                Ok(pb::BreakerState::Open) => BreakerState::Open,
                Ok(pb::BreakerState::HalfOpen) => BreakerState::HalfOpen,
                _ => {
                    return Err(EngineError::invalid(
                        "breakers.state",
                        format!("of report {i} must be CLOSED, OPEN or HALF_OPEN"),
                    ));
                }
            };
            reports.push(BreakerReport {
                adapter: b.adapter.clone(),
                state,
            });
        }
        if self.breakers_changed(&namespace, worker, &reports) {
            self.store()
                .record_breakers(&namespace, worker, &reports, self.now())
                .await?;
        }
        let holds = self
            .store()
            .breaker_holds(&namespace)
            .await?
            .into_iter()
            .map(|(breaker, h)| pb::BreakerHoldInfo {
                breaker,
                hold: hold_of(h.state) as i32,
            })
            .collect();
        Ok(pb::ReportBreakersResponse { holds })
    }

    /// [`Self::set_breaker`] by `caller`: the authenticated subject, when there is one, is who
    /// holds it.
    pub async fn set_breaker_as(
        &self,
        mut req: pb::SetBreakerRequest,
        caller: Option<String>,
    ) -> Result<pb::SetBreakerResponse, EngineError> {
        req.identity = caller.unwrap_or(req.identity);
        self.set_breaker(req).await
    }

    /// Holds a breaker open or closed by hand, or lifts the hold.
    pub async fn set_breaker(
        &self,
        req: pb::SetBreakerRequest,
    ) -> Result<pb::SetBreakerResponse, EngineError> {
        let namespace = self.namespace(&req.namespace).await?;
        let by = identity(&req.identity)?;
        history::check_breaker_name("breaker", &req.breaker)?;
        let state = match pb::BreakerHold::try_from(req.hold) {
            Ok(pb::BreakerHold::None) => None,
            Ok(pb::BreakerHold::Open) => Some(BreakerState::Open),
            Ok(pb::BreakerHold::Closed) => Some(BreakerState::Closed),
            Err(_) => {
                return Err(EngineError::invalid(
                    "hold",
                    format!("{} is not NONE, OPEN or CLOSED", req.hold),
                ));
            }
        };
        let hold = match state {
            None => None,
            Some(state) => {
                if req.reason.trim().is_empty() {
                    return Err(EngineError::invalid(
                        "reason",
                        "must say why the breaker is held",
                    ));
                }
                if req.reason.len() > 1_000 {
                    return Err(EngineError::invalid("reason", "is over 1,000 bytes"));
                }
                Some(BreakerHold {
                    state,
                    reason: req.reason.clone(),
                    by: by.to_owned(),
                    since: self.now(),
                })
            }
        };
        if hold.is_some() {
            let held = self.store().breaker_holds(&namespace).await?;
            if held.len() >= MAX_HOLDS && !held.iter().any(|h| h.0 == req.breaker) {
                return Err(EngineError::FailedPrecondition(format!(
                    "namespace {namespace} has {MAX_HOLDS} breakers held already; release one first"
                )));
            }
        }
        self.store()
            .set_breaker_hold(&namespace, &req.breaker, hold.as_ref())
            .await?;
        tracing::info!(%namespace, breaker = %req.breaker, hold = ?state, identity = by, reason = %req.reason, "breaker hold set");
        Ok(pb::SetBreakerResponse {})
    }

    /// The namespace's breakers: what workers report, holds, tasks parked behind each.
    pub async fn list_breakers(
        &self,
        req: pb::ListBreakersRequest,
    ) -> Result<pb::ListBreakersResponse, EngineError> {
        let namespace = self.namespace(&req.namespace).await?;
        let now = self.now();
        let store = self.store();
        let holds = store.breaker_holds(&namespace).await?;
        let reports = store
            .breaker_reports(&namespace, now - BREAKER_REPORT_FRESH_MS)
            .await?;
        let parked = store.parked_counts(&namespace).await?;
        let mut names: Vec<&str> = holds
            .iter()
            .map(|h| h.0.as_str())
            .chain(reports.iter().map(|r| r.adapter.as_str()))
            .chain(parked.iter().map(|p| p.0.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(100);
        let breakers = names
            .into_iter()
            .map(|name| {
                let hold = holds.iter().find(|h| h.0 == name).map(|h| &h.1);
                let workers: Vec<&WorkerBreaker> =
                    reports.iter().filter(|r| r.adapter == name).collect();
                let reported_open = workers
                    .iter()
                    .max_by_key(|w| w.changed_at)
                    .is_some_and(|w| w.state != BreakerState::Closed);
                pb::BreakerInfo {
                    breaker: name.to_owned(),
                    open: match hold {
                        Some(h) => h.state == BreakerState::Open,
                        None => reported_open,
                    },
                    hold: hold.map_or(pb::BreakerHold::None, |h| hold_of(h.state)) as i32,
                    hold_reason: hold.map(|h| h.reason.clone()).unwrap_or_default(),
                    hold_by: hold.map(|h| h.by.clone()).unwrap_or_default(),
                    hold_since: hold.map(|h| to_timestamp(h.since)),
                    workers: workers
                        .iter()
                        .map(|w| pb::WorkerBreakerInfo {
                            worker: w.worker.clone(),
                            state: w.state.as_str().to_owned(),
                            changed_at: Some(to_timestamp(w.changed_at)),
                            reported_at: Some(to_timestamp(w.reported_at)),
                        })
                        .collect(),
                    parked: parked.iter().find(|p| p.0 == name).map_or(0, |p| p.1),
                }
            })
            .collect();
        Ok(pb::ListBreakersResponse { breakers })
    }
}

impl Engine {
    /// Notes that `identity` polls `kind` tasks of `queue`: written to the store at most every
    /// 15 s per poller and node, off the poll's path.
    pub(super) fn note_poller(
        &self,
        namespace: &str,
        queue: &str,
        kind: &'static str,
        identity: &str,
    ) {
        let now = self.now();
        let key: PollerKey = (
            namespace.to_owned(),
            queue.to_owned(),
            kind,
            identity.to_owned(),
        );
        {
            let mut noted = self.pollers_noted.lock().unwrap_or_else(|p| p.into_inner());
            if noted
                .get(&key)
                .is_some_and(|at| now - at < POLLER_NOTE_EVERY_MS)
            {
                return;
            }
            if noted.len() >= MAX_POLLERS_NOTED {
                noted.retain(|_, at| now - *at < POLLER_NOTE_EVERY_MS);
                if noted.len() >= MAX_POLLERS_NOTED {
                    return;
                }
            }
            noted.insert(key.clone(), now);
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let (ns, queue, kind, identity) = key;
            if let Err(e) = store.record_poller(&ns, &queue, kind, &identity, now).await {
                tracing::debug!(error = %e, "poller not recorded");
            }
        });
    }
}

impl Engine {
    /// Whether `worker`'s report must be written: it differs from the last one this node
    /// wrote, or that one is a minute old.
    fn breakers_changed(&self, namespace: &str, worker: &str, reports: &[BreakerReport]) -> bool {
        let now = self.now();
        let key = (namespace.to_owned(), worker.to_owned());
        let mut noted = self
            .breakers_noted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if noted
            .get(&key)
            .is_some_and(|(r, at)| r == reports && now - at < REPORT_WRITE_EVERY_MS)
        {
            return false;
        }
        if noted.len() >= MAX_BREAKERS_NOTED {
            noted.retain(|_, (_, at)| now - *at < REPORT_WRITE_EVERY_MS);
        }
        if noted.len() < MAX_BREAKERS_NOTED {
            noted.insert(key, (reports.to_vec(), now));
        }
        true
    }

    /// One pass of `run_release`.
    async fn release_parked(
        &self,
        paces: &mut HashMap<(String, String), Pace>,
    ) -> Result<(), EngineError> {
        let parked = self.store().parked_breakers().await?;
        paces.retain(|key, _| parked.contains(key));
        let mut holds: HashMap<String, Vec<(String, BreakerHold)>> = HashMap::new();
        for key in parked {
            let now = self.now();
            let (namespace, breaker) = &key;
            if !holds.contains_key(namespace) {
                let held = self.store().breaker_holds(namespace).await?;
                holds.insert(namespace.clone(), held);
            }
            let hold = holds[namespace]
                .iter()
                .find(|h| h.0 == *breaker)
                .map(|h| h.1.state);
            let open = match hold {
                // Held open: no probe either.
                Some(BreakerState::Open) => continue,
                Some(_) => false,
                None => {
                    self.store()
                        .breaker_open(namespace, breaker, now - BREAKER_REPORT_FRESH_MS)
                        .await?
                }
            };
            let pace = paces.entry(key.clone()).or_insert(Pace {
                allowance: 1,
                last_probe: 0,
            });
            let n = if open {
                pace.allowance = 1;
                if now - pace.last_probe < PROBE_EVERY_MS {
                    continue;
                }
                pace.last_probe = now;
                1
            } else {
                let n = pace.allowance;
                pace.allowance = (n * 4).min(MAX_RELEASED_PER_PASS);
                n
            };
            // Spread over the second, so the system behind the breaker meets them one by one.
            let gap = RELEASE_EVERY / u32::try_from(n).unwrap_or(u32::MAX).max(1);
            for (i, (run_id, scheduled_event_id)) in self
                .store()
                .parked_tasks(namespace, breaker, n)
                .await?
                .into_iter()
                .enumerate()
            {
                if i > 0 && !open {
                    tokio::time::sleep(gap).await;
                }
                let released = self
                    .update(run_id, |run, now, pollers| {
                        let d = Dispatch::pollers(pollers, now);
                        Ok((
                            history::unpark(run, scheduled_event_id, breaker, now, d),
                            (),
                        ))
                    })
                    .await;
                if let Err(e) = released {
                    // Another node released it, or the run closed meanwhile.
                    tracing::debug!(%run_id, error = %e, "parked task not released");
                }
            }
        }
        Ok(())
    }
}
