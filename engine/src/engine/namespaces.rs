//! Namespaces: creating, listing and updating them (their retention), and checking that the
//! one a request names exists. The engine never deletes a namespace, so the names this node
//! has found to exist are kept and the check reads the store only the first time.

use super::Engine;
use crate::clock::Millis;
use crate::error::{EngineError, duration_field};
use crate::ids::Namespace;
use crate::store::{DEFAULT_RETENTION_MS, NamespaceSettings};
use martix_proto::v1 as pb;

impl Engine {
    pub(super) async fn namespace(&self, raw: &str) -> Result<Namespace, EngineError> {
        let raw = if raw.is_empty() { "default" } else { raw };
        let ns = Namespace::parse(raw)?;
        if self
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(raw)
        {
            return Ok(ns);
        }
        if !self.store.namespace_exists(raw).await? {
            return Err(EngineError::invalid(
                "namespace",
                format!("'{raw}' does not exist"),
            ));
        }
        self.namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(raw.to_owned());
        Ok(ns)
    }

    /// Creates a namespace (administrators); an existing one is left as it is.
    pub async fn create_namespace(
        &self,
        req: pb::CreateNamespaceRequest,
    ) -> Result<pb::CreateNamespaceResponse, EngineError> {
        let ns = Namespace::parse(&req.namespace)?;
        let retention = retention(req.retention.as_ref())?.unwrap_or(DEFAULT_RETENTION_MS);
        let created = self
            .store
            .create_namespace(ns.as_str(), retention, self.now())
            .await?;
        if created {
            tracing::info!(namespace = %ns, retention_ms = retention, "namespace created");
        }
        Ok(pb::CreateNamespaceResponse { created })
    }

    /// Every namespace, with its settings.
    pub async fn list_namespaces(
        &self,
        _req: pb::ListNamespacesRequest,
    ) -> Result<pb::ListNamespacesResponse, EngineError> {
        let settings = self.store.namespace_settings().await?;
        Ok(pb::ListNamespacesResponse {
            namespaces: settings.iter().map(|s| s.name.clone()).collect(),
            infos: settings.iter().map(info).collect(),
        })
    }

    /// Changes a namespace's retention (administrators).
    pub async fn update_namespace(
        &self,
        req: pb::UpdateNamespaceRequest,
    ) -> Result<pb::UpdateNamespaceResponse, EngineError> {
        let ns = Namespace::parse(&req.namespace)?;
        let Some(retention) = retention(req.retention.as_ref())? else {
            return Err(EngineError::invalid("retention", "must be given"));
        };
        let settings = self
            .store
            .set_retention(ns.as_str(), retention)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("namespace '{ns}' does not exist")))?;
        tracing::info!(namespace = %ns, retention_ms = retention, "namespace retention changed");
        Ok(pb::UpdateNamespaceResponse {
            info: Some(info(&settings)),
        })
    }
}

/// Shortest retention a namespace may have (tests use it; a second is no production setting).
const MIN_RETENTION_MS: Millis = 1_000;
/// Longest retention: ten years.
const MAX_RETENTION_MS: Millis = 10 * 366 * 24 * 3600 * 1000;

/// A request's retention, if it gives one: 1 second to 10 years.
fn retention(d: Option<&pbjson_types::Duration>) -> Result<Option<Millis>, EngineError> {
    let Some(d) = duration_field("retention", d)? else {
        return Ok(None);
    };
    let ms = Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX);
    if !(MIN_RETENTION_MS..=MAX_RETENTION_MS).contains(&ms) {
        return Err(EngineError::invalid(
            "retention",
            format!("is {ms} ms; it must be between 1s and 10 years"),
        ));
    }
    Ok(Some(ms))
}

fn info(s: &NamespaceSettings) -> pb::NamespaceInfo {
    pb::NamespaceInfo {
        namespace: s.name.clone(),
        retention: Some(crate::history::ms_to_duration(s.retention_ms)),
    }
}
