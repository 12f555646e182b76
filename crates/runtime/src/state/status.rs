//! Where an object's status lives: a JSON file (file mode) or the object's `.status`
//! subresource (cluster mode). One store for Canaries and ScheduledAnalyses, so both are
//! written the same way: the driver persists after every change and reads it back on start.

use std::marker::PhantomData;

use crate::canary::CanaryStatus;
use crate::traffic::gate::GateOpener;
use chrono::{DateTime, Utc};

use super::file::{FileStatusStore, StateError};
use super::kube_status::{KubeStatusStore, StatusError};

/// The status types' storage description (state-file kind, resource kind and plural), in
/// the `skycanary-core` crate.
pub use skycanary_core::status::{CANARY_KIND, PersistedStatus, WriteLane};

/// Why a persisted status could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The stored status does not parse: resetting it would restart a release (or re-fire
    /// a recorded run), so the object is not driven until a human fixes or deletes it.
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

/// Status persistence of objects whose status is `St` (Canaries by default).
#[derive(Debug)]
pub struct StatusStore<St = CanaryStatus> {
    backend: Backend,
    _status: PhantomData<fn() -> St>,
}

impl<St> Clone for StatusStore<St> {
    fn clone(&self) -> Self {
        StatusStore {
            backend: self.backend.clone(),
            _status: PhantomData,
        }
    }
}

#[derive(Debug, Clone)]
enum Backend {
    File(FileStatusStore),
    Kube(KubeStatusStore),
}

impl<St: PersistedStatus> StatusStore<St> {
    /// `--state-dir`: one JSON file per object, replaced atomically.
    pub fn file(store: FileStatusStore) -> Self {
        StatusStore {
            backend: Backend::File(store),
            _status: PhantomData,
        }
    }

    /// Cluster mode: the object's `.status` subresource.
    pub fn kube(store: KubeStatusStore) -> Self {
        StatusStore {
            backend: Backend::Kube(store),
            _status: PhantomData,
        }
    }

    /// The persisted status for a task about to drive the object ([`PersistedStatus::resumed`]),
    /// `None` before the first save. A status that cannot be read is an error, never a silent
    /// restart from scratch.
    pub async fn load(&self, namespace: &str, name: &str) -> Result<Option<St>, LoadError> {
        Ok(self
            .load_raw(namespace, name)
            .await?
            .map(PersistedStatus::resumed))
    }

    /// The persisted status as stored.
    pub async fn load_raw(&self, namespace: &str, name: &str) -> Result<Option<St>, LoadError> {
        match &self.backend {
            Backend::File(f) => f
                .load(St::FILE_KIND, namespace, name)
                .map_err(LoadError::from_file),
            Backend::Kube(k) => k.load(namespace, name).await.map_err(LoadError::from_kube),
        }
    }

    /// Persists `status` as of `now`, first deriving its conditions and (when `generation`,
    /// the object's `metadata.generation`, is known) its `observedGeneration`, so every write
    /// carries both and the caller's copy matches what was written.
    pub async fn save(
        &self,
        namespace: &str,
        name: &str,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        self.save_in(WriteLane::Routine, namespace, name, status, generation, now)
            .await
    }

    /// [`save`](Self::save) in `lane`: a rollback's save does not queue behind the routine
    /// ones of other objects (the API server's writes; a file store has no queue).
    pub async fn save_in(
        &self,
        lane: WriteLane,
        namespace: &str,
        name: &str,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        self.save_opening(lane, namespace, name, status, generation, now, None)
            .await
    }

    /// Starts saving, in the background, the JSON file a [`save_rollback`](Self::save_rollback)
    /// left owed in the journal (file mode; nothing to do in cluster mode). Called once the
    /// rollback's own write is done, so their syncs do not compete.
    pub fn release(&self, namespace: &str, name: &str) {
        if let Backend::File(f) = &self.backend {
            f.release(St::FILE_KIND, namespace, name);
        }
    }

    /// The save a rollback's routing write waits on ([`WriteLane::Rollback`]): `opener` is
    /// opened as saved the moment the status is durable (file mode: on the blocking thread
    /// whose journal write made it so, without waiting for the hop back to the task), and
    /// unsaved when the save fails.
    pub async fn save_rollback(
        &self,
        namespace: &str,
        name: &str,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
        opener: GateOpener,
    ) -> Result<(), String> {
        let lane = WriteLane::Rollback;
        self.save_opening(lane, namespace, name, status, generation, now, Some(opener))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn save_opening(
        &self,
        lane: WriteLane,
        namespace: &str,
        name: &str,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
        opener: Option<GateOpener>,
    ) -> Result<(), String> {
        status.observe(generation, now);
        let status = &*status;
        let saved = |result: &Result<(), String>, opener: Option<GateOpener>| {
            if let (Ok(()), Some(o)) = (result, opener) {
                o.saved();
            }
        };
        match &self.backend {
            Backend::File(f) => {
                // On a blocking thread: the fsyncs must not hold a runtime worker, and a
                // rollback's routing write is prepared meanwhile (`CommitGate`).
                let bytes = serde_json::to_vec_pretty(status).map_err(|e| e.to_string())?;
                let (f, ns, n) = (f.clone(), namespace.to_string(), name.to_string());
                tokio::task::spawn_blocking(move || {
                    let result = match lane {
                        // Durable after one synced journal write; the JSON file follows.
                        WriteLane::Rollback => f.save_journaled(St::FILE_KIND, &ns, &n, &bytes),
                        WriteLane::Routine => f.save_bytes(St::FILE_KIND, &ns, &n, &bytes),
                    }
                    .map_err(|e| e.to_string());
                    saved(&result, opener);
                    result
                })
                .await
                .map_err(|e| format!("state file task failed: {e}"))?
            }
            Backend::Kube(k) => {
                let result = k
                    .save_in(lane, namespace, name, status)
                    .await
                    .map_err(|e| e.to_string());
                saved(&result, opener);
                result
            }
        }
    }
}

pub use skycanary_core::canary::invalid::{mark_invalid, resume_from_invalid};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::CanaryPhase;
    use crate::traffic::{DestinationWeight, HeaderMatch, StringMatch};

    /// A status as the daemon wrote it before issue 18: header matchers and destination
    /// weights as `[name, match]` / `[host, weight]` pairs.
    const TUPLE_FORM: &str = include_str!("../../../../tests/data/status/canary-tuple-form.json");

    /// What [`TUPLE_FORM`] holds, read field by field.
    fn check_tuple_form_read(st: &CanaryStatus) {
        assert_eq!(st.phase, CanaryPhase::Paused);
        assert_eq!(st.current_step_index, 3);
        let applied = st.applied.as_ref().expect("applied");
        assert_eq!(applied.canary_weight, 30);
        assert_eq!(
            applied.header_routes[0].headers,
            vec![
                HeaderMatch::new("end-user", StringMatch::Exact("jason".into())),
                HeaderMatch::new("x-beta", StringMatch::Prefix("yes".into())),
            ]
        );
        assert_eq!(
            applied.mirror_routes[0].matches[0].headers,
            vec![HeaderMatch::new("x-debug", StringMatch::Regex(".*".into()))]
        );
        assert_eq!(
            st.weights[0].others,
            vec![DestinationWeight::new("reviews/v3", 10)]
        );
        let pending = st.routing_write.as_ref().expect("routing write");
        assert_eq!(
            pending.routing.header_routes[0].headers,
            vec![HeaderMatch::new(
                "end-user",
                StringMatch::Exact("jason".into())
            )]
        );
    }

    /// A state file written by an older daemon loads (the restarted daemon resumes from it);
    /// the next save writes named fields, which load to the same status.
    #[tokio::test]
    async fn a_file_status_with_header_and_weight_pairs_resumes_and_is_rewritten_with_names() {
        let dir = tempfile::tempdir().unwrap();
        let store: StatusStore = StatusStore::file(FileStatusStore::open(dir.path()).unwrap());
        let file = dir
            .path()
            .join(CANARY_KIND)
            .join("bookinfo")
            .join("reviews.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, TUPLE_FORM).unwrap();
        let mut st = store
            .load("bookinfo", "reviews")
            .await
            .expect("loads")
            .expect("present");
        check_tuple_form_read(&st);
        store
            .save("bookinfo", "reviews", &mut st, None, chrono::Utc::now())
            .await
            .unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            written["applied"]["headerRoutes"][0]["headers"][0],
            serde_json::json!({"name": "end-user", "match": {"exact": "jason"}})
        );
        assert_eq!(
            written["weights"][0]["others"][0],
            serde_json::json!({"destination": "reviews/v3", "weight": 10})
        );
        let again = store.load("bookinfo", "reviews").await.unwrap().unwrap();
        assert_eq!(again, st);
    }

    /// The same in cluster mode: a `.status` an older daemon wrote resumes.
    #[tokio::test]
    async fn a_cluster_status_with_header_and_weight_pairs_resumes() {
        let fake = crate::testkit::FakeApiServer::new();
        let status: serde_json::Value = serde_json::from_str(TUPLE_FORM).unwrap();
        fake.seed(serde_json::json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"steps": []},
            "status": status,
        }))
        .unwrap();
        let store: StatusStore = StatusStore::kube(KubeStatusStore::new(fake.client()));
        let mut st = store
            .load("bookinfo", "reviews")
            .await
            .expect("loads")
            .expect("present");
        check_tuple_form_read(&st);
        store
            .save("bookinfo", "reviews", &mut st, None, chrono::Utc::now())
            .await
            .unwrap();
        let stored = fake
            .get("skycanary.io", "canaries", "bookinfo", "reviews")
            .and_then(|o| o.get("status").cloned())
            .expect("status");
        assert_eq!(
            stored["routingWrite"]["routing"]["headerRoutes"][0]["headers"][0],
            serde_json::json!({"name": "end-user", "match": {"exact": "jason"}})
        );
        assert_eq!(
            stored["weights"][0]["others"][0],
            serde_json::json!({"destination": "reviews/v3", "weight": 10})
        );
        assert_eq!(store.load("bookinfo", "reviews").await.unwrap(), Some(st));
    }

    #[tokio::test]
    async fn an_unparseable_file_is_corrupt_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store: StatusStore = StatusStore::file(FileStatusStore::open(dir.path()).unwrap());
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
        let store: StatusStore = StatusStore::kube(KubeStatusStore::new(fake.client()));
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
