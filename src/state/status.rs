//! Where a Canary's status lives: a JSON file (file mode) or the Canary's `.status` (cluster
//! mode). The driver persists after every change and reads it back on start.

use crate::canary::CanaryStatus;

use super::file::FileStateStore;
use super::kube_status::KubeStatusStore;

/// State-file kind of Canary statuses.
pub const CANARY_KIND: &str = "canary";

/// Status persistence backends.
#[derive(Debug, Clone)]
pub enum StatusStore {
    /// `--state-dir`: one JSON file per Canary.
    File(FileStateStore),
    /// Cluster mode: the Canary's `.status` subresource.
    Kube(KubeStatusStore),
}

impl StatusStore {
    /// The persisted status, `None` before the first run. A status that cannot be read is an
    /// error, never a silent restart from scratch.
    pub async fn load(&self, namespace: &str, name: &str) -> Result<Option<CanaryStatus>, String> {
        match self {
            StatusStore::File(f) => f
                .load(CANARY_KIND, namespace, name)
                .map_err(|e| e.to_string()),
            StatusStore::Kube(k) => k.load(namespace, name).await.map_err(|e| e.to_string()),
        }
    }

    /// Persists `status`.
    pub async fn save(
        &self,
        namespace: &str,
        name: &str,
        status: &CanaryStatus,
    ) -> Result<(), String> {
        match self {
            StatusStore::File(f) => f
                .save(CANARY_KIND, namespace, name, status)
                .map_err(|e| e.to_string()),
            StatusStore::Kube(k) => k
                .save(namespace, name, status)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
