//! Where a ScheduledAnalysis' status lives: a JSON file in `--state-dir` (file mode, atomic
//! replace) or the object's `.status` subresource (cluster mode, merge patches guarded by
//! resourceVersion, retried on conflict). Read back on start, so a restarted daemon keeps the
//! history and never fires a recorded run twice.

use std::fmt;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use super::model::ScheduledAnalysisStatus;
use crate::state::FileStateStore;
use crate::state::kube_status::{GROUP, VERSION, status_merge_patch};

/// State-file kind of ScheduledAnalysis statuses (`<state-dir>/scheduledanalysis/<ns>/<name>.json`).
pub const SCHEDULED_KIND: &str = "scheduledanalysis";
/// Status writes retried this often when another writer moved the object in between.
const MAX_WRITE_ATTEMPTS: u32 = 5;

/// Status persistence failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleStoreError {
    /// The stored status cannot be read (resetting it would lose history and re-fire runs).
    #[error("ScheduledAnalysis {id}: stored status is not valid: {message}")]
    Corrupt {
        /// `namespace/name`.
        id: String,
        /// What does not parse.
        message: String,
    },
    /// Reading or writing failed.
    #[error("ScheduledAnalysis {id}: {message}")]
    Io {
        /// `namespace/name`.
        id: String,
        /// The cause.
        message: String,
    },
}

/// The `skycanary.io/v1alpha1` ScheduledAnalysis resource for dynamic APIs.
pub fn scheduled_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "ScheduledAnalysis"),
        "scheduledanalyses",
    )
}

/// Parses a raw `.status`: absent, `null` or `{}` mean "none yet".
pub fn parse_scheduled_status(
    raw: Option<&Value>,
) -> Result<Option<ScheduledAnalysisStatus>, String> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(v) => serde_path_to_error::deserialize::<_, ScheduledAnalysisStatus>(v.clone())
            .map(Some)
            .map_err(|e| format!("{}: {}", e.path(), e.inner())),
    }
}

/// Status persistence backends.
#[derive(Clone)]
pub enum ScheduleStore {
    /// `--state-dir`.
    File(FileStateStore),
    /// The `.status` subresource.
    Kube(Client),
}

impl fmt::Debug for ScheduleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleStore::File(s) => f.debug_tuple("File").field(s).finish(),
            ScheduleStore::Kube(_) => f.write_str("Kube"),
        }
    }
}

impl ScheduleStore {
    /// The persisted status, `None` before the first save.
    pub async fn load(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ScheduledAnalysisStatus>, ScheduleStoreError> {
        let id = format!("{namespace}/{name}");
        match self {
            ScheduleStore::File(f) => {
                f.load(SCHEDULED_KIND, namespace, name)
                    .map_err(|e| match e {
                        crate::state::StateError::Corrupt { message, .. } => {
                            ScheduleStoreError::Corrupt { id, message }
                        }
                        other => ScheduleStoreError::Io {
                            id,
                            message: other.to_string(),
                        },
                    })
            }
            ScheduleStore::Kube(client) => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &scheduled_resource());
                let obj = api
                    .get_status(name)
                    .await
                    .map_err(|e| ScheduleStoreError::Io {
                        id: id.clone(),
                        message: describe(e),
                    })?;
                parse_scheduled_status(obj.data.get("status"))
                    .map_err(|message| ScheduleStoreError::Corrupt { id, message })
            }
        }
    }

    /// Persists `status` as of `now`, first deriving its conditions and (when `generation`,
    /// the object's `metadata.generation`, is known) its `observedGeneration`.
    pub async fn save(
        &self,
        namespace: &str,
        name: &str,
        status: &mut ScheduledAnalysisStatus,
        generation: Option<i64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ScheduleStoreError> {
        crate::state::conditions::observe_scheduled(status, generation, now);
        let status = &*status;
        let id = format!("{namespace}/{name}");
        let io = |message: String| ScheduleStoreError::Io {
            id: id.clone(),
            message,
        };
        match self {
            ScheduleStore::File(f) => f
                .save(SCHEDULED_KIND, namespace, name, status)
                .map_err(|e| io(e.to_string())),
            ScheduleStore::Kube(client) => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &scheduled_resource());
                let desired = serde_json::to_value(status).map_err(|e| io(e.to_string()))?;
                for _ in 0..MAX_WRITE_ATTEMPTS {
                    let current = api.get_status(name).await.map_err(|e| io(describe(e)))?;
                    let rv = current
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_default();
                    let mut patch = json!({ "status": status_merge_patch(current.data.get("status"), &desired) });
                    if !rv.is_empty() {
                        patch["metadata"] = json!({ "resourceVersion": rv });
                    }
                    match api
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                        Err(e) => return Err(io(describe(e))),
                    }
                }
                Err(io(format!(
                    "status write conflicted {MAX_WRITE_ATTEMPTS} times in a row"
                )))
            }
        }
    }
}

fn describe(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "Kubernetes API answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => other.to_string(),
    }
}
