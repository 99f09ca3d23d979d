//! The operators' and admins' calls of the [`Client`]: namespaces (create, list, retention)
//! and circuit breakers (list, hold by hand).

use super::description::time;
use super::schedules::timestamp;
use super::{Client, NamespaceInfo};
use crate::error::ClientError;
use crate::workflow::options::dur;
use crate::{BreakerHold, BreakerState};
use martix_proto::v1 as pb;
use std::time::{Duration, SystemTime};

/// A circuit breaker of a namespace as the engine sees it: what its workers report, an
/// operator's hold, the tasks parked behind it ([`Client::list_breakers`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerInfo {
    /// Its name (what workers call it).
    pub name: String,
    /// Whether the engine keeps the tasks behind it parked now: a hold open, or the latest
    /// state a worker reported is open or half-open.
    pub open: bool,
    /// An operator's hold, if any, with who set it, why and when.
    pub hold: Option<(BreakerHold, HoldInfo)>,
    /// What each worker reported in the last 5 minutes.
    pub workers: Vec<WorkerBreaker>,
    /// The tasks parked behind it (counted up to 10,000).
    pub parked: i64,
}

/// Who held a breaker, why and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldInfo {
    /// The operator's identity.
    pub by: String,
    /// Their reason.
    pub reason: String,
    /// Since when.
    pub since: Option<SystemTime>,
}

/// What one worker reported of a breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerBreaker {
    /// The worker's identity.
    pub worker: String,
    /// Its breaker's state (none: a state this SDK does not know).
    pub state: Option<BreakerState>,
    /// When the state last changed.
    pub changed_at: Option<SystemTime>,
    /// When the worker last reported.
    pub reported_at: Option<SystemTime>,
}

impl BreakerInfo {
    fn from_proto(b: pb::BreakerInfo) -> Self {
        let hold = match pb::BreakerHold::try_from(b.hold) {
            Ok(pb::BreakerHold::Open) => Some(BreakerHold::Open),
            Ok(pb::BreakerHold::Closed) => Some(BreakerHold::Closed),
            _ => None,
        };
        BreakerInfo {
            name: b.breaker,
            open: b.open,
            hold: hold.map(|h| {
                (
                    h,
                    HoldInfo {
                        by: b.hold_by,
                        reason: b.hold_reason,
                        since: time(b.hold_since),
                    },
                )
            }),
            workers: b
                .workers
                .into_iter()
                .map(|w| WorkerBreaker {
                    state: match w.state.as_str() {
                        "closed" => Some(BreakerState::Closed),
                        "open" => Some(BreakerState::Open),
                        "half-open" => Some(BreakerState::HalfOpen),
                        _ => None,
                    },
                    worker: w.worker,
                    changed_at: time(w.changed_at),
                    reported_at: time(w.reported_at),
                })
                .collect(),
            parked: b.parked,
        }
    }

    /// The engine's message for it, for tools that print the wire form.
    pub fn into_proto(self) -> pb::BreakerInfo {
        let (hold, info) = match self.hold {
            Some((BreakerHold::Open, i)) => (pb::BreakerHold::Open, Some(i)),
            Some((BreakerHold::Closed, i)) => (pb::BreakerHold::Closed, Some(i)),
            None => (pb::BreakerHold::None, None),
        };
        let info = info.unwrap_or(HoldInfo {
            by: String::new(),
            reason: String::new(),
            since: None,
        });
        pb::BreakerInfo {
            breaker: self.name,
            open: self.open,
            hold: hold as i32,
            hold_reason: info.reason,
            hold_by: info.by,
            hold_since: info.since.map(timestamp),
            workers: self
                .workers
                .into_iter()
                .map(|w| pb::WorkerBreakerInfo {
                    worker: w.worker,
                    state: match w.state {
                        Some(BreakerState::Closed) => "closed",
                        Some(BreakerState::Open) => "open",
                        Some(BreakerState::HalfOpen) => "half-open",
                        None => "",
                    }
                    .into(),
                    changed_at: w.changed_at.map(timestamp),
                    reported_at: w.reported_at.map(timestamp),
                })
                .collect(),
            parked: self.parked,
        }
    }
}

impl Client {
    /// Creates a namespace (an admin's call) keeping closed runs for 7 days; `false` when it
    /// existed already, unchanged.
    pub async fn create_namespace(&self, namespace: &str) -> Result<bool, ClientError> {
        self.create_namespace_with_retention(namespace, None).await
    }

    /// Creates a namespace keeping its closed runs for `retention` (none: 7 days; 1 second to
    /// 10 years); `false` when it existed already, unchanged.
    pub async fn create_namespace_with_retention(
        &self,
        namespace: &str,
        retention: Option<Duration>,
    ) -> Result<bool, ClientError> {
        Ok(self
            .inner
            .clone()
            .create_namespace(pb::CreateNamespaceRequest {
                namespace: namespace.to_owned(),
                retention: retention.map(dur),
            })
            .await?
            .into_inner()
            .created)
    }

    /// Holds circuit breaker `breaker` of this client's namespace open or closed by hand
    /// (`reason` required), or lifts the hold (`None`): its workers apply the hold within
    /// seconds, whatever their breaker's state (an operator's call).
    pub async fn set_breaker(
        &self,
        breaker: &str,
        hold: Option<crate::BreakerHold>,
        reason: &str,
    ) -> Result<(), ClientError> {
        let hold = match hold {
            None => pb::BreakerHold::None,
            Some(crate::BreakerHold::Open) => pb::BreakerHold::Open,
            Some(crate::BreakerHold::Closed) => pb::BreakerHold::Closed,
        };
        self.inner
            .clone()
            .set_breaker(pb::SetBreakerRequest {
                namespace: self.namespace.clone(),
                breaker: breaker.to_owned(),
                hold: hold as i32,
                reason: reason.to_owned(),
                identity: self.identity.clone(),
            })
            .await?;
        Ok(())
    }

    /// The circuit breakers of this client's namespace: what each worker reports, an
    /// operator's hold, the tasks parked behind each (an operator's call).
    pub async fn list_breakers(&self) -> Result<Vec<BreakerInfo>, ClientError> {
        Ok(self
            .inner
            .clone()
            .list_breakers(pb::ListBreakersRequest {
                namespace: self.namespace.clone(),
            })
            .await?
            .into_inner()
            .breakers
            .into_iter()
            .map(BreakerInfo::from_proto)
            .collect())
    }

    /// Every namespace's name (an admin's call).
    pub async fn list_namespaces(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .namespaces()
            .await?
            .into_iter()
            .map(|n| n.name)
            .collect())
    }

    /// Every namespace with its settings (an admin's call).
    pub async fn namespaces(&self) -> Result<Vec<NamespaceInfo>, ClientError> {
        let r = self
            .inner
            .clone()
            .list_namespaces(pb::ListNamespacesRequest {})
            .await?
            .into_inner();
        Ok(r.infos.into_iter().map(namespace_info).collect())
    }

    /// Sets how long a namespace keeps its closed runs (an admin's call).
    pub async fn set_retention(
        &self,
        namespace: &str,
        retention: Duration,
    ) -> Result<NamespaceInfo, ClientError> {
        let r = self
            .inner
            .clone()
            .update_namespace(pb::UpdateNamespaceRequest {
                namespace: namespace.to_owned(),
                retention: Some(dur(retention)),
            })
            .await?
            .into_inner();
        Ok(namespace_info(r.info.unwrap_or_default()))
    }
}

fn namespace_info(i: pb::NamespaceInfo) -> NamespaceInfo {
    NamespaceInfo {
        name: i.namespace,
        retention: i.retention.map_or(Duration::ZERO, |d| {
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_reads_its_hold_and_its_workers_states() {
        let b = BreakerInfo::from_proto(pb::BreakerInfo {
            breaker: "payment".into(),
            open: true,
            hold: pb::BreakerHold::Open as i32,
            hold_reason: "gateway down".into(),
            hold_by: "ops".into(),
            hold_since: Some(pbjson_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            workers: ["closed", "open", "half-open", "sideways"]
                .map(|s| pb::WorkerBreakerInfo {
                    worker: format!("w-{s}"),
                    state: s.into(),
                    ..Default::default()
                })
                .into(),
            parked: 20,
        });
        assert_eq!(b.name, "payment");
        assert!(b.open);
        assert_eq!(b.parked, 20);
        let (hold, info) = b.hold.clone().unwrap();
        assert_eq!(hold, BreakerHold::Open);
        assert_eq!(
            (info.by.as_str(), info.reason.as_str()),
            ("ops", "gateway down")
        );
        assert_eq!(
            info.since,
            Some(std::time::UNIX_EPOCH + Duration::from_secs(10))
        );
        let states: Vec<_> = b.workers.iter().map(|w| w.state).collect();
        assert_eq!(
            states,
            [
                Some(BreakerState::Closed),
                Some(BreakerState::Open),
                Some(BreakerState::HalfOpen),
                None
            ]
        );
        assert_eq!(b.workers[3].worker, "w-sideways");
        let closed = BreakerInfo::from_proto(pb::BreakerInfo {
            hold: pb::BreakerHold::Closed as i32,
            ..Default::default()
        });
        assert_eq!(closed.hold.unwrap().0, BreakerHold::Closed);
        assert!(
            BreakerInfo::from_proto(pb::BreakerInfo::default())
                .hold
                .is_none()
        );
        let again = BreakerInfo::from_proto(b.clone().into_proto());
        assert_eq!(again.workers[..3], b.workers[..3]);
        assert_eq!((again.hold, again.parked), (b.hold, 20));
    }
}
