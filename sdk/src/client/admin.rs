//! The operators' and admins' calls of the [`Client`]: namespaces (create, list, retention)
//! and circuit breakers (list, hold by hand).

use super::{Client, NamespaceInfo};
use crate::error::ClientError;
use crate::workflow::options::dur;
use martix_proto::v1 as pb;
use std::time::Duration;

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
    pub async fn list_breakers(&self) -> Result<Vec<pb::BreakerInfo>, ClientError> {
        Ok(self
            .inner
            .clone()
            .list_breakers(pb::ListBreakersRequest {
                namespace: self.namespace.clone(),
            })
            .await?
            .into_inner()
            .breakers)
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
