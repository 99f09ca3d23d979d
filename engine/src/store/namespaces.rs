//! Namespaces: the names runs are kept apart by. A namespace is created once and never
//! changes; runs, tasks and events of one never meet another's.

use crate::clock::Millis;
use crate::store::StoreError;

/// The namespaces. Every method is atomic.
#[async_trait::async_trait]
pub trait NamespaceStore: Send + Sync {
    /// Whether the namespace exists.
    async fn namespace_exists(&self, namespace: &str) -> Result<bool, StoreError>;

    /// Creates a namespace (true) or finds it exists (false, nothing changed).
    async fn create_namespace(&self, namespace: &str, now: Millis) -> Result<bool, StoreError>;

    /// All namespaces, by name.
    async fn list_namespaces(&self) -> Result<Vec<String>, StoreError>;
}
