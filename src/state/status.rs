//! Where a Canary's status lives: a JSON file (file mode) or the Canary's `.status` (cluster
//! mode). The driver persists after every change and reads it back on start.

use chrono::{DateTime, Utc};

use crate::canary::{CanaryPhase, CanaryStatus};

use super::file::{FileStateStore, StateError};
use super::kube_status::{KubeStatusStore, StatusError};

/// State-file kind of Canary statuses.
pub const CANARY_KIND: &str = "canary";

/// Why a persisted status could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The stored status does not parse: resetting it would restart a release, so the canary
    /// is not driven until a human fixes or deletes it.
    #[error("{0}")]
    Corrupt(String),
    /// The store could not be reached or answered an error (API 5xx, timeout, I/O): worth
    /// trying again, since nothing is known about the status yet.
    #[error("{0}")]
    Unavailable(String),
}

impl LoadError {
    fn from_file(e: StateError) -> Self {
        match e {
            StateError::Corrupt { .. } | StateError::InvalidName(_) => {
                LoadError::Corrupt(e.to_string())
            }
            other => LoadError::Unavailable(other.to_string()),
        }
    }

    fn from_kube(e: StatusError) -> Self {
        match e {
            StatusError::Corrupt { .. } => LoadError::Corrupt(e.to_string()),
            other => LoadError::Unavailable(other.to_string()),
        }
    }
}

/// Status persistence backends.
#[derive(Debug, Clone)]
pub enum StatusStore {
    /// `--state-dir`: one JSON file per Canary.
    File(FileStateStore),
    /// Cluster mode: the Canary's `.status` subresource.
    Kube(KubeStatusStore),
}

impl StatusStore {
    /// The persisted status for a task about to drive the canary, `None` before the first
    /// run: an `Invalid` phase gives way to the one it interrupted ([`resume_from_invalid`]).
    /// A status that cannot be read is an error, never a silent restart from scratch.
    pub async fn load(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CanaryStatus>, LoadError> {
        Ok(self
            .load_raw(namespace, name)
            .await?
            .map(resume_from_invalid))
    }

    /// The persisted status as stored.
    pub async fn load_raw(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CanaryStatus>, LoadError> {
        match self {
            StatusStore::File(f) => f
                .load(CANARY_KIND, namespace, name)
                .map_err(LoadError::from_file),
            StatusStore::Kube(k) => k.load(namespace, name).await.map_err(LoadError::from_kube),
        }
    }

    /// Persists `status` as of `now`, first deriving its conditions and (when `generation`,
    /// the Canary's `metadata.generation`, is known) its `observedGeneration`, so every write
    /// carries both and the caller's copy matches what was written.
    pub async fn save(
        &self,
        namespace: &str,
        name: &str,
        status: &mut CanaryStatus,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        super::conditions::observe_canary(status, generation, now);
        let status = &*status;
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

/// A status read back for a task about to drive the canary: its spec is valid again, so an
/// `Invalid` phase gives way to the phase it interrupted (never seen by the state machine).
pub fn resume_from_invalid(mut st: CanaryStatus) -> CanaryStatus {
    if st.phase == CanaryPhase::Invalid {
        st.phase = st.phase_before_invalid.take().unwrap_or_default();
    }
    st.phase_before_invalid = None;
    st
}

/// `status` marked Invalid with `message` (what `skycanary validate` prints): the phase it
/// had is kept in `phaseBeforeInvalid` (already-Invalid statuses keep the first one), the
/// rest of the release state untouched, so fixing the spec resumes where it stopped.
pub fn mark_invalid(mut status: CanaryStatus, message: &str) -> CanaryStatus {
    if status.phase != CanaryPhase::Invalid {
        status.phase_before_invalid = Some(status.phase).filter(|p| *p != CanaryPhase::Pending);
        status.phase = CanaryPhase::Invalid;
    }
    status.message = Some(message.to_string());
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unparseable_file_is_corrupt_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = StatusStore::File(FileStateStore::open(dir.path()).unwrap());
        assert_eq!(store.load("ns", "c").await, Ok(None));
        store
            .save(
                "ns",
                "c",
                &mut CanaryStatus::default(),
                None,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let file = dir.path().join(CANARY_KIND).join("ns").join("c.json");
        std::fs::write(&file, b"{not json").unwrap();
        assert!(matches!(
            store.load("ns", "c").await,
            Err(LoadError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn api_errors_are_unavailable_and_a_bad_status_is_corrupt() {
        let fake = crate::testkit::FakeApiServer::new();
        fake.seed(serde_json::json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"steps": []},
            "status": {"phase": "NoSuchPhase"}
        }))
        .unwrap();
        let store = StatusStore::Kube(KubeStatusStore::new(fake.client()));
        fake.fail_next(Some("GET"), "/canaries/c/status", 1, 500);
        assert!(matches!(
            store.load("ns", "c").await,
            Err(LoadError::Unavailable(m)) if m.contains("500")
        ));
        assert!(matches!(
            store.load("ns", "c").await,
            Err(LoadError::Corrupt(m)) if m.contains("NoSuchPhase")
        ));
    }
}
