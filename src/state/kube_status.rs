//! Cluster-mode state: a Canary's progress lives in its own `.status`, written only through the
//! status subresource so that users editing the spec and the daemon writing progress never
//! overwrite each other.
//!
//! Writes are JSON merge patches guarded by `metadata.resourceVersion` (retried on conflict,
//! never blind). A merge patch keeps every key it does not mention, so fields the new status no
//! longer has (a cleared `pause`, a finished `abort`) are sent as explicit `null`s; arrays are
//! replaced whole.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::canary::CanaryStatus;

/// API group of skycanary's CRDs.
pub const GROUP: &str = "skycanary.io";
/// Served version of skycanary's CRDs.
pub const VERSION: &str = "v1alpha1";
/// How often a status write is retried when another writer moved the object in between.
const MAX_WRITE_ATTEMPTS: u32 = 5;

/// Failures reading or writing a Canary's status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatusError {
    /// The Canary does not exist (it was deleted).
    #[error("Canary {namespace}/{name} not found: it was deleted")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The stored status cannot be read; resetting it would restart a release, so it is an error.
    #[error("Canary {namespace}/{name}: stored .status is not valid: {message}")]
    Corrupt {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What does not parse, with its field path.
        message: String,
    },
    /// Every attempt met a newer resourceVersion.
    #[error("Canary {namespace}/{name}: status write conflicted {attempts} times in a row")]
    Conflict {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Any other API or transport failure.
    #[error("Canary {namespace}/{name}: {message}")]
    Api {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        message: String,
    },
}

/// The `skycanary.io/v1alpha1` Canary resource for dynamic APIs.
pub fn canary_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, "Canary"), "canaries")
}

/// Parses a raw `.status`: absent, `null` or `{}` mean "no state yet"; anything else must be a
/// valid [`CanaryStatus`]. The error names the offending field path.
pub fn parse_status(raw: Option<&Value>) -> Result<Option<CanaryStatus>, String> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(v) => serde_path_to_error::deserialize::<_, CanaryStatus>(v.clone())
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

/// Reads and writes Canary `.status` through the Kubernetes API.
#[derive(Clone)]
pub struct KubeStatusStore {
    client: Client,
    /// Per Canary: the resourceVersion and `.status` our last write left, so the next write
    /// needs no read first (one request per status change instead of two). Anyone else's
    /// write changes the resourceVersion: ours then gets a 409 and re-reads.
    written: Arc<Mutex<HashMap<(String, String), Written>>>,
}

/// resourceVersion and `.status` after one of our writes.
type Written = (String, Value);

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
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &canary_resource())
    }

    /// The Canary's status; `None` when it has none yet. A status that does not parse is an
    /// error, never a silent reset.
    pub async fn load(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CanaryStatus>, StatusError> {
        let obj = self
            .api(namespace)
            .get_status(name)
            .await
            .map_err(|e| map_error(namespace, name, e))?;
        parse_status(obj.data.get("status")).map_err(|message| StatusError::Corrupt {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message,
        })
    }

    /// Replaces the Canary's status with `status` via a merge patch on `/status`, guarded by
    /// the resourceVersion just read. `observedGeneration` is written when the status carries
    /// one and otherwise left as stored.
    pub async fn save(
        &self,
        namespace: &str,
        name: &str,
        status: &CanaryStatus,
    ) -> Result<(), StatusError> {
        let api = self.api(namespace);
        let desired = serde_json::to_value(status).map_err(|e| StatusError::Api {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message: format!("cannot encode the status: {e}"),
        })?;
        let key = (namespace.to_string(), name.to_string());
        let lock = || self.written.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let known = lock().remove(&key);
            let (rv, stored) = match known {
                Some(k) => k,
                None => {
                    let current = api
                        .get_status(name)
                        .await
                        .map_err(|e| map_error(namespace, name, e))?;
                    let rv = current
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_default();
                    let stored = current.data.get("status").cloned().unwrap_or(Value::Null);
                    (rv, stored)
                }
            };
            let stored = (!stored.is_null()).then_some(&stored);
            let status_patch = status_merge_patch(stored, &desired);
            let mut patch = json!({ "status": status_patch });
            if !rv.is_empty() {
                patch["metadata"] = json!({ "resourceVersion": rv });
            }
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    if let (Some(rv), Some(status)) = (
                        written.metadata.resource_version.clone(),
                        written.data.get("status"),
                    ) {
                        lock().insert(key, (rv, status.clone()));
                    }
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(e) => return Err(map_error(namespace, name, e)),
            }
        }
        Err(StatusError::Conflict {
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
    req: &crate::canary::CommandRequest,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &canary_resource());
    let patch = serde_json::json!({ "status": { "command": req } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// The merge patch that turns `stored` into `desired`: `desired` itself, plus `null` for every
/// key (at any object depth) that `stored` has and `desired` lacks, except the top-level keys
/// of [`KEPT_UNLESS_SET`], which are kept unless the new status sets them.
pub fn status_merge_patch(stored: Option<&Value>, desired: &Value) -> Value {
    let mut patch = desired.clone();
    if let Some(old) = stored {
        add_deletions(old, &mut patch);
    }
    if let Some(m) = patch.as_object_mut() {
        for key in KEPT_UNLESS_SET {
            if desired.get(key).is_none() {
                m.remove(key);
            }
        }
    }
    patch
}

/// Status keys the daemon's writes never delete: `observedGeneration` (set only when known) and
/// `command`, which belongs to `skycanary <action> --kube` (the daemon answers in `lastCommand`).
const KEPT_UNLESS_SET: [&str; 2] = ["observedGeneration", "command"];

fn add_deletions(old: &Value, new: &mut Value) {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return;
    };
    for (key, old_value) in old {
        match new.get_mut(key) {
            Some(new_value) => add_deletions(old_value, new_value),
            None => {
                new.insert(key.clone(), Value::Null);
            }
        }
    }
}

fn map_error(namespace: &str, name: &str, err: kube::Error) -> StatusError {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    match err {
        kube::Error::Api(s) if s.is_not_found() => StatusError::NotFound { namespace, name },
        kube::Error::Api(s) => StatusError::Api {
            namespace,
            name,
            message: format!(
                "Kubernetes API answered {} {}: {}",
                s.code, s.reason, s.message
            ),
        },
        other => StatusError::Api {
            namespace,
            name,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "kube_status_tests.rs"]
mod tests;
