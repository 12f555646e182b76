//! An in-memory [`ManifestStore`] for tests: integer versions, injected faults, a hook that
//! plays a concurrent writer, and a log of every call. It lets the router's conflict, retry and
//! undo paths be tested deterministically without a cluster or files.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::store::{ManifestStore, ManifestStoreError, ObjectKey, Versioned};

/// Which store operation a fault or log entry concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`ManifestStore::get`].
    Get,
    /// [`ManifestStore::replace`].
    Replace,
    /// [`ManifestStore::sync_written`] (whatever the target).
    Sync,
}

/// The objects a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every object.
    Any,
    /// One object.
    Key(ObjectKey),
}

impl From<ObjectKey> for Target {
    fn from(key: ObjectKey) -> Self {
        Target::Key(key)
    }
}

impl From<&ObjectKey> for Target {
    fn from(key: &ObjectKey) -> Self {
        Target::Key(key.clone())
    }
}

impl Target {
    fn matches(&self, key: &ObjectKey) -> bool {
        match self {
            Target::Any => true,
            Target::Key(k) => k == key,
        }
    }
}

/// One call made to the store, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEntry {
    /// A `get` and its outcome (the version read).
    Get {
        /// The object asked for.
        key: ObjectKey,
        /// Version read, or the error.
        result: Result<String, ManifestStoreError>,
    },
    /// A `replace` attempt and its outcome (the new version).
    Replace {
        /// The object asked for.
        key: ObjectKey,
        /// Content sent.
        object: Value,
        /// Version the caller expected.
        expected_version: String,
        /// New version, or the error.
        result: Result<String, ManifestStoreError>,
    },
}

type Mutation = Box<dyn FnOnce(&mut Value) + Send>;

struct Fault {
    op: Op,
    target: Target,
    error: ManifestStoreError,
    remaining: u32,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<ObjectKey, (Value, u64)>,
    last_version: u64,
    faults: Vec<Fault>,
    hooks: Vec<(ObjectKey, Mutation)>,
    log: Vec<LogEntry>,
    stamp_resource_version: bool,
}

impl Inner {
    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }

    fn take_fault(&mut self, op: Op, key: &ObjectKey) -> Option<ManifestStoreError> {
        self.take_fault_where(|f| f.op == op && f.target.matches(key))
    }

    fn take_fault_where(&mut self, wanted: impl Fn(&Fault) -> bool) -> Option<ManifestStoreError> {
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && wanted(f))?;
        fault.remaining -= 1;
        let error = fault.error.clone();
        self.faults.retain(|f| f.remaining > 0);
        Some(error)
    }
}

/// Manifests in memory (for tests). Clones share the same objects, so a test can keep a
/// handle after giving one to a `Router`.
#[derive(Clone, Default)]
pub struct MemoryManifestStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryManifestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryManifestStore")
            .finish_non_exhaustive()
    }
}

impl MemoryManifestStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Like Kubernetes: `get` returns objects with `metadata.resourceVersion` set to the
    /// version, so code that compares objects must ignore server-managed metadata.
    pub fn kube_like() -> Self {
        let store = Self::default();
        store.lock().stamp_resource_version = true;
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the store from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or overwrites an object; returns its new version.
    pub fn insert(&self, key: ObjectKey, object: Value) -> String {
        let mut inner = self.lock();
        let v = inner.next_version();
        inner.objects.insert(key, (strip_version(object), v));
        v.to_string()
    }

    /// Removes an object.
    pub fn remove(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.remove(key).map(|(o, _)| o)
    }

    /// The stored content (without a stamped resourceVersion).
    pub fn object(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).map(|(o, _)| o.clone())
    }

    /// The current version.
    pub fn version(&self, key: &ObjectKey) -> Option<String> {
        self.lock().objects.get(key).map(|(_, v)| v.to_string())
    }

    /// The next `times` calls of `op` on `target` fail with `error` (before touching anything).
    pub fn inject(&self, op: Op, target: impl Into<Target>, error: ManifestStoreError, times: u32) {
        if times == 0 {
            return;
        }
        self.lock().faults.push(Fault {
            op,
            target: target.into(),
            error,
            remaining: times,
        });
    }

    /// Plays a concurrent writer: right before the next `replace` of `key` is checked, `mutate`
    /// changes the stored object and its version is bumped, so that replace gets a real conflict.
    pub fn on_next_replace(
        &self,
        key: &ObjectKey,
        mutate: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.lock().hooks.push((key.clone(), Box::new(mutate)));
    }

    /// Every call so far.
    pub fn log(&self) -> Vec<LogEntry> {
        self.lock().log.clone()
    }

    /// Successful replaces so far: object and content written.
    pub fn writes(&self) -> Vec<(ObjectKey, Value)> {
        self.lock()
            .log
            .iter()
            .filter_map(|e| match e {
                LogEntry::Replace {
                    key,
                    object,
                    result: Ok(_),
                    ..
                } => Some((key.clone(), object.clone())),
                _ => None,
            })
            .collect()
    }

    fn get_now(&self, key: &ObjectKey) -> Result<Versioned, ManifestStoreError> {
        let mut inner = self.lock();
        let result = match inner.take_fault(Op::Get, key) {
            Some(e) => Err(e),
            None => match inner.objects.get(key) {
                None => Err(ManifestStoreError::NotFound(key.clone())),
                Some((object, v)) => {
                    let mut object = object.clone();
                    if inner.stamp_resource_version {
                        stamp(&mut object, *v);
                    }
                    Ok(Versioned {
                        object,
                        version: v.to_string(),
                    })
                }
            },
        };
        inner.log.push(LogEntry::Get {
            key: key.clone(),
            result: result
                .as_ref()
                .map(|v| v.version.clone())
                .map_err(Clone::clone),
        });
        result
    }

    fn replace_now(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> Result<String, ManifestStoreError> {
        let mut inner = self.lock();
        let result = replace_locked(&mut inner, key, object, expected_version);
        inner.log.push(LogEntry::Replace {
            key: key.clone(),
            object: object.clone(),
            expected_version: expected_version.to_string(),
            result: result.clone(),
        });
        result
    }
}

fn replace_locked(
    inner: &mut Inner,
    key: &ObjectKey,
    object: &Value,
    expected_version: &str,
) -> Result<String, ManifestStoreError> {
    if let Some(e) = inner.take_fault(Op::Replace, key) {
        return Err(e);
    }
    if let Some(pos) = inner.hooks.iter().position(|(k, _)| k == key) {
        let (_, mutate) = inner.hooks.remove(pos);
        let v = inner.next_version();
        if let Some((stored, version)) = inner.objects.get_mut(key) {
            mutate(stored);
            *version = v;
        }
    }
    let v = inner.next_version();
    match inner.objects.get_mut(key) {
        None => Err(ManifestStoreError::NotFound(key.clone())),
        Some((_, current)) if current.to_string() != expected_version => {
            Err(ManifestStoreError::Conflict(key.clone()))
        }
        Some(entry) => {
            *entry = (strip_version(object.clone()), v);
            Ok(v.to_string())
        }
    }
}

fn stamp(object: &mut Value, version: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(version.to_string()));
    }
}

fn strip_version(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    object
}

impl ManifestStore for MemoryManifestStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn get(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Versioned, ManifestStoreError>> + Send {
        // Lazy, like a real store: nothing happens until the future is polled.
        let this = self.clone();
        let key = key.clone();
        async move { this.get_now(&key) }
    }

    fn replace(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> impl Future<Output = Result<String, ManifestStoreError>> + Send {
        let this = self.clone();
        let (key, object, expected) = (key.clone(), object.clone(), expected_version.to_string());
        async move { this.replace_now(&key, &object, &expected) }
    }

    fn sync_written(&self) -> impl Future<Output = Result<(), ManifestStoreError>> + Send {
        let this = self.clone();
        async move {
            match this
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_fault_where(|f| f.op == Op::Sync)
            {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey::virtual_service("ns", "vs")
    }

    #[tokio::test]
    async fn version_check_and_conflict() {
        let s = MemoryManifestStore::new();
        let v1 = s.insert(key(), json!({"spec": 1}));
        let got = s.get(&key()).await.unwrap();
        assert_eq!(got.version, v1);
        let v2 = s.replace(&key(), &json!({"spec": 2}), &v1).await.unwrap();
        assert_ne!(v1, v2);
        assert_eq!(
            s.replace(&key(), &json!({"spec": 3}), &v1).await,
            Err(ManifestStoreError::Conflict(key()))
        );
        assert_eq!(s.object(&key()), Some(json!({"spec": 2})));
        let missing = ObjectKey::virtual_service("ns", "nope");
        assert_eq!(
            s.get(&missing).await,
            Err(ManifestStoreError::NotFound(missing.clone()))
        );
    }

    #[tokio::test]
    async fn injected_faults_are_counted() {
        let s = MemoryManifestStore::new();
        s.insert(key(), json!({}));
        s.inject(
            Op::Get,
            Target::Any,
            ManifestStoreError::Backend("down".into()),
            2,
        );
        assert!(s.get(&key()).await.is_err());
        assert!(s.get(&key()).await.is_err());
        assert!(s.get(&key()).await.is_ok());
        assert_eq!(s.log().len(), 3);
    }

    #[tokio::test]
    async fn concurrent_writer_hook_causes_conflict() {
        let s = MemoryManifestStore::new();
        let v = s.insert(key(), json!({"a": 1}));
        s.on_next_replace(&key(), |o| o["b"] = json!(2));
        assert_eq!(
            s.replace(&key(), &json!({"a": 9}), &v).await,
            Err(ManifestStoreError::Conflict(key()))
        );
        assert_eq!(s.object(&key()), Some(json!({"a": 1, "b": 2})));
        let fresh = s.get(&key()).await.unwrap();
        assert!(
            s.replace(&key(), &json!({"a": 9}), &fresh.version)
                .await
                .is_ok()
        );
        assert_eq!(s.writes().len(), 1);
    }

    #[tokio::test]
    async fn kube_like_stamps_resource_version() {
        let s = MemoryManifestStore::kube_like();
        s.insert(key(), json!({"metadata": {"name": "vs"}}));
        let got = s.get(&key()).await.unwrap();
        assert_eq!(
            got.object["metadata"]["resourceVersion"],
            json!(got.version)
        );
        assert_eq!(s.object(&key()), Some(json!({"metadata": {"name": "vs"}})));
    }
}
