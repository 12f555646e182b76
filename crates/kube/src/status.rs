//! Cluster-mode state: an object's progress (a Canary's or a ScheduledAnalysis') lives in its
//! own `.status`, written only through the status subresource so that users editing the spec
//! and the daemon writing progress never overwrite each other.
//!
//! Every status write of the daemon is one PUT of the status subresource carrying the
//! `metadata.resourceVersion` it replaces (that of our last write, or of a fresh read after
//! someone else's): a conditional, whole replacement. It is the safer of the two ways to write
//! `.status` (the other is a merge patch computed against a fresh read): the API server
//! refuses it with 409 when anyone wrote in between (we then re-read and retry, never write
//! blind), and what is stored afterwards is exactly the daemon's status — no key of an older
//! status can survive because a diff missed it (merge patches keep every key they do not
//! mention, so a cleared field needs an explicit `null`). It also costs one request per change
//! instead of two. The only keys carried over from the stored status are `command` (the
//! CLI's request, never the daemon's) and `observedGeneration` when the write does not know it.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::Resource;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::Value;

use skycanary_api::canary::{CanaryStatus, CommandRequest};
/// API group and served version of skycanary's CRDs, from the CRD generator.
pub use skycanary_api::crd::{GROUP, VERSION};
/// The status types' storage description (file kind, resource kind and plural), in core.
pub use skycanary_core::status::{PersistedStatus, WriteLane};
/// How often a status write is retried when another writer moved the object in between.
const MAX_WRITE_ATTEMPTS: u32 = 5;
/// Status writes in flight at once. Below the client's own bound
/// ([`crate::traffic::MAX_API_REQUESTS_IN_FLIGHT`]), so a burst of measurement updates
/// never queues a rollback's routing write behind it.
pub const MAX_STATUS_WRITES_IN_FLIGHT: usize = 16;
/// Rollback status writes in flight at once, beside [`MAX_STATUS_WRITES_IN_FLIGHT`]: the
/// status saved before a rollback never queues behind a burst of measurement updates.
pub const MAX_ROLLBACK_STATUS_WRITES_IN_FLIGHT: usize = 4;

/// Failures reading or writing an object's status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatusError {
    /// The object does not exist (it was deleted).
    #[error("{kind} {namespace}/{name} not found: it was deleted")]
    NotFound {
        /// `Canary` or `ScheduledAnalysis`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
    },
    /// The stored status cannot be read; resetting it would restart a release (or re-fire a
    /// recorded run), so it is an error.
    #[error("{kind} {namespace}/{name}: stored .status is not valid: {message}")]
    Corrupt {
        /// `Canary` or `ScheduledAnalysis`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// What does not parse, with its field path.
        message: String,
    },
    /// Every attempt met a newer resourceVersion.
    #[error("{kind} {namespace}/{name}: status write conflicted {attempts} times in a row")]
    Conflict {
        /// `Canary` or `ScheduledAnalysis`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Any other API or transport failure.
    #[error("{kind} {namespace}/{name}: {message}")]
    Api {
        /// `Canary` or `ScheduledAnalysis`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The cause.
        message: String,
    },
}

/// The `skycanary.io/v1alpha1` resource whose `.status` holds an `St`, for dynamic APIs.
pub fn resource_of<St: PersistedStatus>() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, St::KIND), St::PLURAL)
}

/// The `skycanary.io/v1alpha1` Canary resource for dynamic APIs.
pub fn canary_resource() -> ApiResource {
    resource_of::<CanaryStatus>()
}

/// The `skycanary.io/v1alpha1` ScheduledAnalysis resource for dynamic APIs.
pub fn scheduled_resource() -> ApiResource {
    resource_of::<skycanary_api::scheduled::ScheduledAnalysisStatus>()
}

/// Parses a Canary's raw `.status` ([`parse_status_as`]).
pub fn parse_status(raw: Option<&Value>) -> Result<Option<CanaryStatus>, String> {
    parse_status_as(raw)
}

/// Parses a raw `.status`: absent, `null` or `{}` mean "no state yet"; anything else must be a
/// valid `St`. The error names the offending field path.
pub fn parse_status_as<St: serde::de::DeserializeOwned>(
    raw: Option<&Value>,
) -> Result<Option<St>, String> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(v) => serde_path_to_error::deserialize::<_, St>(v.clone())
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." || path.is_empty() {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                }
            }),
    }
}

/// Reads and writes the `.status` of skycanary's objects through the Kubernetes API.
#[derive(Clone)]
pub struct KubeStatusStore {
    client: Client,
    /// Per object (kind, namespace, name): what our last write left that a write must carry over (see [`Kept`]), so
    /// the next write needs no read first (one request per status change instead of two).
    /// Anyone else's write changes the resourceVersion: ours then gets a 409 and re-reads.
    written: Arc<Mutex<HashMap<WrittenKey, Kept>>>,
    /// Bounds concurrent status writes ([`MAX_STATUS_WRITES_IN_FLIGHT`]).
    writes: Arc<tokio::sync::Semaphore>,
    /// Bounds concurrent rollback status writes ([`MAX_ROLLBACK_STATUS_WRITES_IN_FLIGHT`]).
    rollback_writes: Arc<tokio::sync::Semaphore>,
}

/// An object's kind, namespace and name.
type WrittenKey = (&'static str, String, String);

/// Of a stored `.status`, what a status write keeps: the resourceVersion it replaces, the
/// `--kube` request in `status.command` (the CLI's key, never the daemon's) and
/// `observedGeneration` for writes that do not know it. Everything else is the daemon's and
/// is replaced whole, so the daemon holds no copy of what it wrote.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
struct Kept {
    #[serde(skip)]
    resource_version: String,
    #[serde(default)]
    command: Option<Value>,
    #[serde(default, rename = "observedGeneration")]
    observed_generation: Option<i64>,
}

/// The parts of an object the status writes read back; the rest of the answer is skipped
/// while parsing, never built.
#[derive(serde::Deserialize)]
struct StoredObject {
    metadata: StoredMeta,
    #[serde(default)]
    status: Option<Kept>,
}

#[derive(serde::Deserialize)]
struct StoredMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

impl StoredObject {
    fn kept(self) -> Kept {
        Kept {
            resource_version: self.metadata.resource_version.unwrap_or_default(),
            ..self.status.unwrap_or_default()
        }
    }
}

/// The body of a `/status` PUT: the new status plus what [`Kept`] carries over.
#[derive(serde::Serialize)]
struct StatusPut<'a, St> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: PutMeta<'a>,
    status: PutStatus<'a, St>,
}

#[derive(serde::Serialize)]
struct PutMeta<'a> {
    name: &'a str,
    namespace: &'a str,
    #[serde(rename = "resourceVersion")]
    resource_version: &'a str,
}

#[derive(serde::Serialize)]
struct PutStatus<'a, St> {
    #[serde(flatten)]
    status: &'a St,
    // Statuses never serialise `command`, and `observedGeneration` only when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a Value>,
    #[serde(rename = "observedGeneration", skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

/// `apiVersion` of skycanary's CRDs.
const API_VERSION: &str = "skycanary.io/v1alpha1";

impl fmt::Debug for KubeStatusStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeStatusStore").finish_non_exhaustive()
    }
}

impl KubeStatusStore {
    /// A store over an existing client.
    pub fn new(client: Client) -> Self {
        KubeStatusStore {
            client,
            written: Arc::default(),
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_STATUS_WRITES_IN_FLIGHT)),
            rollback_writes: Arc::new(tokio::sync::Semaphore::new(
                MAX_ROLLBACK_STATUS_WRITES_IN_FLIGHT,
            )),
        }
    }

    /// The object's status; `None` when it has none yet. A status that does not parse is an
    /// error, never a silent reset.
    pub async fn load<St: PersistedStatus>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<St>, StatusError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource_of::<St>());
        let obj = api
            .get_status(name)
            .await
            .map_err(|e| map_error(St::KIND, namespace, name, e))?;
        parse_status_as(obj.data.get("status")).map_err(|message| StatusError::Corrupt {
            kind: St::KIND,
            namespace: namespace.to_string(),
            name: name.to_string(),
            message,
        })
    }

    /// Replaces the object's status with `status` (a PUT of the status subresource, guarded
    /// by the resourceVersion of our last write or of a fresh read). `status.command` is
    /// carried over as stored, and `observedGeneration` when the status has none.
    pub async fn save<St: PersistedStatus>(
        &self,
        namespace: &str,
        name: &str,
        status: &St,
    ) -> Result<(), StatusError> {
        self.save_in(WriteLane::Routine, namespace, name, status)
            .await
    }

    /// [`save`](Self::save), waiting for a free slot of `lane` only.
    pub async fn save_in<St: PersistedStatus>(
        &self,
        lane: WriteLane,
        namespace: &str,
        name: &str,
        status: &St,
    ) -> Result<(), StatusError> {
        let kind = St::KIND;
        let key = (kind, namespace.to_string(), name.to_string());
        let lock = || self.written.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |message: String| StatusError::Api {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            message,
        };
        let slots = match lane {
            WriteLane::Routine => &self.writes,
            WriteLane::Rollback => &self.rollback_writes,
        };
        let _slot = slots
            .acquire()
            .await
            .map_err(|_| fail("status writes closed".into()))?;
        let request = kube::core::Request::new(DynamicObject::url_path(
            &resource_of::<St>(),
            Some(namespace),
        ));
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let known = lock().remove(&key);
            let kept = match known {
                Some(k) => k,
                None => {
                    let req = request
                        .get_subresource("status", name)
                        .map_err(|e| fail(e.to_string()))?;
                    self.client
                        .request::<StoredObject>(req)
                        .await
                        .map_err(|e| map_error(kind, namespace, name, e))?
                        .kept()
                }
            };
            let body = StatusPut {
                api_version: API_VERSION,
                kind,
                metadata: PutMeta {
                    name,
                    namespace,
                    resource_version: &kept.resource_version,
                },
                status: PutStatus {
                    status,
                    command: kept.command.as_ref().filter(|c| !c.is_null()),
                    observed_generation: status
                        .observed_generation()
                        .is_none()
                        .then_some(kept.observed_generation)
                        .flatten(),
                },
            };
            let body = serde_json::to_vec(&body)
                .map_err(|e| fail(format!("cannot encode the status: {e}")))?;
            let mut req = request
                .replace_subresource("status", name, &PostParams::default(), body)
                .map_err(|e| fail(e.to_string()))?;
            req.extensions_mut().insert("replace_status");
            match self.client.request::<StoredObject>(req).await {
                Ok(written) => {
                    lock().insert(key, written.kept());
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(e) => return Err(map_error(kind, namespace, name, e)),
            }
        }
        Err(StatusError::Conflict {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }
}

/// Writes `req` into the Canary's `status.command`: a merge patch of that one key through the
/// status subresource, so it never races the daemon's own status writes (which keep the key).
pub async fn write_request(
    client: &Client,
    namespace: &str,
    name: &str,
    req: &CommandRequest,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &canary_resource());
    let patch = serde_json::json!({ "status": { "command": req } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

fn map_error(kind: &'static str, namespace: &str, name: &str, err: kube::Error) -> StatusError {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    match err {
        kube::Error::Api(s) if s.is_not_found() => StatusError::NotFound {
            kind,
            namespace,
            name,
        },
        other => StatusError::Api {
            kind,
            namespace,
            name,
            message: crate::traffic::describe(&other),
        },
    }
}

#[cfg(test)]
mod tests;
