//! Namespaces: creating and listing them, and checking that the one a request names exists.
//! The engine never deletes a namespace, so the names this node has found to exist are kept
//! and the check reads the store only the first time.

use super::Engine;
use crate::error::EngineError;
use crate::ids::Namespace;
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
        let created = self.store.create_namespace(ns.as_str(), self.now()).await?;
        if created {
            tracing::info!(namespace = %ns, "namespace created");
        }
        Ok(pb::CreateNamespaceResponse { created })
    }

    /// Every namespace.
    pub async fn list_namespaces(
        &self,
        _req: pb::ListNamespacesRequest,
    ) -> Result<pb::ListNamespacesResponse, EngineError> {
        Ok(pb::ListNamespacesResponse {
            namespaces: self.store.list_namespaces().await?,
        })
    }
}
