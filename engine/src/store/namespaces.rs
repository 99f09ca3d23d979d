//! Namespaces: the names runs are kept apart by, and their settings (how long closed runs are
//! kept). A namespace is created once and never deleted; runs, tasks and events of one never
//! meet another's.

use crate::clock::Millis;
use crate::store::StoreError;

/// The namespaces. Every method is atomic.
#[async_trait::async_trait]
pub trait NamespaceStore: Send + Sync {
    /// Whether the namespace exists.
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, StoreError>;

    /// Creates a namespace keeping closed runs for `retention_ms` (true), or finds it exists
    /// (false, nothing changed).
    async fn create_namespace(
        &self,
        namespace: &str,
        retention_ms: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// All namespaces, by name.
    async fn list_namespaces(&self) -> Result<Vec<String>, StoreError>;

    /// All namespaces with their settings, by name.
    async fn namespace_settings(&self) -> Result<Vec<NamespaceSettings>, StoreError>;

    /// Sets how long a namespace keeps its closed runs; `None` if there is no such namespace.
    async fn set_retention(
        &self,
        namespace: &str,
        retention_ms: Millis,
    ) -> Result<Option<NamespaceSettings>, StoreError>;
}

/// A namespace and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub name: String,
    /// How long a closed run is kept, from its close, before it is deleted with its history.
    pub retention_ms: Millis,
}

/// How long closed runs are kept unless a namespace says otherwise: 7 days.
pub const DEFAULT_RETENTION_MS: Millis = 7 * 24 * 3600 * 1000;
