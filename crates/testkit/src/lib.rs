//! A fake Kubernetes API server for tests: no cluster can run here, so kube code is tested
//! against this stateful imitation of the apiserver behaviours we rely on.
//!
//! One [`FakeApiServer`] is an `axum::Router` over shared state, usable in-process
//! ([`FakeApiServer::client`]) or served on `127.0.0.1:0` ([`FakeApiServer::serve`]) for the real
//! binary and `kubectl` ([`write_kubeconfig`]).
//!
//! Copied behaviours: one global integer resourceVersion; uid/creationTimestamp/generation on
//! create, generation bumps on spec change, no-op writes keep the RV; GET/LIST (`limit`,
//! `continue`, equality label and field selectors; `resourceVersion` unset, `0` or N with
//! `resourceVersionMatch` checked as the apiserver does, 504 for a version from the future,
//! the pages of a continued list at the first page's version, 410 for an expired `continue`);
//! POST (409 AlreadyExists); PUT (422 without
//! RV, 409 on a stale RV); DELETE; PATCH as JSON Patch (400 undecodable, 422 failed op incl.
//! `test`), merge patch (409 on a stale `metadata.resourceVersion`), strategic merge (415 for
//! custom resources; a plain merge for core kinds); the `/status` subresource; watches with
//! replay from a bounded event log, 410 Expired, bookmarks (at the newest version the watch
//! went past) and `timeoutSeconds`, streaming lists (`sendInitialEvents`, ended by a bookmark
//! annotated `k8s.io/initial-events-end`); plain
//! discovery; and fault injection.
//!
//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) are served like any object and then
//! act as in a cluster: their groups and resources (short names, categories) appear in
//! discovery, bodies of their resources are pruned and validated against the structural
//! schema, CEL rules included (422 `Invalid` naming each field; see `schema.rs` for what is
//! checked), and lists and gets asked for as a `meta.k8s.io/v1` Table use their
//! `additionalPrinterColumns`. Core `v1` Events list the `events.k8s.io/v1` ones too.
//!
//! Not emulated: past states (an `Exact` list of an older, not yet compacted version answers
//! 500 saying so; the pages of a continued list show the current objects, and a watch from the
//! list's version replays what changed meanwhile), periodic bookmarks, server-side apply field ownership and list-type semantics (an apply patch is
//! "create, or merge into the existing object"; YAML apply bodies must be JSON), namespace
//! existence, admission webhooks, defaulting, CRD versions conversion, finalizers,
//! deletecollection, watches of the core Event view, OpenAPI documents (so `kubectl apply`
//! needs `--validate=false`; the server-side schema validation still applies), and protobuf.

mod discovery;
mod http;
mod schema;
#[cfg(test)]
mod schema_tests;
mod store;
mod table;
#[cfg(test)]
mod tests;
/// Istio's VirtualService schema check, in the `skycanary-core` crate.
pub use skycanary_core::testkit::vs_schema;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

pub use store::{
    ApiError, CommittedWrite, DEFAULT_EVENT_LOG, FaultAction, RecordedRequest, ResourceRef,
    kind_for_plural, plural_for_kind,
};
use store::{Fault, Signal, Store};

/// One answered request, as seen by a [`FakeApiServer::set_observer`] hook.
#[derive(Debug, Clone)]
pub struct Answered {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Response status.
    pub status: u16,
    /// When the request reached the handler.
    pub received: std::time::Instant,
    /// When its response (headers, for watches) was handed back to the HTTP server.
    pub answered: std::time::Instant,
}

/// A hook told about every answered request (benchmarks time routing writes with it).
pub type RequestObserver = Arc<dyn Fn(&Answered) + Send + Sync>;

/// Failures of the test API (seeding, updating objects directly).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TestkitError {
    /// The object lacks `apiVersion`, `kind` or `metadata.name`.
    #[error("object needs apiVersion, kind and metadata.name: {0}")]
    Malformed(String),
    /// The fake refused the write as the apiserver would.
    #[error("{} {}: {}", .0.code, .0.reason, .0.message)]
    Api(ApiError),
}

/// The fake API server. Cloning shares the state.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<Store>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("resource_version", &self.resource_version())
            .finish()
    }
}

/// A served fake; the accept loop stops when this is dropped.
#[derive(Debug)]
pub struct ServerHandle {
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting connections (open watches end at their own timeout).
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the ring rustls provider (kube builds a rustls config even for http URLs).
pub fn install_crypto_provider() {
    // Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl FakeApiServer {
    /// An empty server at resourceVersion 1.
    pub fn new() -> Self {
        FakeApiServer {
            state: Arc::new(Mutex::new(Store::new())),
        }
    }

    /// A poisoned lock only means a panicking test thread; the data is still usable.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The router, to serve or to use as a tower service.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(http::handle)
            .with_state(self.clone())
    }

    /// An in-process client (no sockets, no retry layer), default namespace `default`.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// Serves on `127.0.0.1:0`.
    pub async fn serve(&self) -> std::io::Result<(SocketAddr, ServerHandle)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((addr, ServerHandle { task }))
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version()
    }

    /// Creates an object as a POST would (RV, uid, generation set); group, version and plural
    /// come from `apiVersion` and `kind`.
    pub fn seed(&self, object: Value) -> Result<Value, TestkitError> {
        let (res, ns, _) = locate(&object)?;
        self.lock()
            .create(&res, &ns, object)
            .map_err(TestkitError::Api)
    }

    /// Reads an object as stored (with the apiVersion it was created with).
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock().stored(group, plural, namespace, name)
    }

    /// Shortcut for a `networking.istio.io` VirtualService.
    pub fn virtual_service(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get("networking.istio.io", "virtualservices", namespace, name)
    }

    /// All objects of a collection, in every namespace.
    pub fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        self.lock().stored_all(group, plural)
    }

    /// Changes an object as another writer would (bumps RV when something changed, emits a
    /// watch event). Returns the stored object.
    pub fn update(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, TestkitError> {
        self.update_part(group, plural, namespace, name, change, false)
    }

    /// Changes an object's `status` as its controller would (the `/status` subresource:
    /// [`FakeApiServer::update`] keeps the stored status, as a PUT of the object does).
    pub fn update_status(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, TestkitError> {
        self.update_part(group, plural, namespace, name, change, true)
    }

    fn update_part(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
        status_only: bool,
    ) -> Result<Value, TestkitError> {
        let Some(mut obj) = self.get(group, plural, namespace, name) else {
            return Err(TestkitError::Api(ApiError::new(
                404,
                format!("{plural} \"{name}\" not found"),
            )));
        };
        let version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or("v1")
            .to_string();
        change(&mut obj);
        let res = ResourceRef::new(group, &version, plural);
        let mut store = self.lock();
        if let Some(cur) = store
            .get(&res, namespace, name)
            .ok()
            .and_then(|c| c.pointer("/metadata/resourceVersion").cloned())
            && let Some(m) = obj.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            m.insert("resourceVersion".into(), cur);
        }
        store
            .replace(&res, namespace, name, obj, status_only)
            .map_err(TestkitError::Api)
    }

    /// Deletes an object directly.
    pub fn delete(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, TestkitError> {
        self.lock()
            .delete(&ResourceRef::new(group, "v1", plural), namespace, name)
            .map_err(TestkitError::Api)
    }

    /// Events posted to `events.k8s.io/v1` or core `v1`, oldest first.
    pub fn events(&self) -> Vec<Value> {
        let store = self.lock();
        let mut all = store.stored_all("events.k8s.io", "events");
        all.extend(store.stored_all("", "events"));
        all.sort_by_key(|e| {
            e.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
        });
        all
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Starts keeping every committed change (create, update, patch, status write, delete,
    /// including [`FakeApiServer::update`]) with the version it replaced; see
    /// [`FakeApiServer::writes`].
    pub fn record_writes(&self) {
        let mut store = self.lock();
        if store.writes.is_none() {
            store.writes = Some(Vec::new());
        }
    }

    /// The committed changes since [`FakeApiServer::record_writes`], oldest first (empty when
    /// recording is off).
    pub fn writes(&self) -> Vec<CommittedWrite> {
        self.lock().writes.clone().unwrap_or_default()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The next `count` requests with this method (None = any) whose `path?query` contains
    /// `path_contains` answer `status` with a matching `Status` body, without being handled.
    pub fn fail_next(&self, method: Option<&str>, path_contains: &str, count: usize, status: u16) {
        self.add_fault(method, path_contains, count, FaultAction::Status(status));
    }

    /// The next `count` matching requests are delayed by `delay`, then handled.
    pub fn delay_next(
        &self,
        method: Option<&str>,
        path_contains: &str,
        count: usize,
        delay: Duration,
    ) {
        self.add_fault(method, path_contains, count, FaultAction::Delay(delay));
    }

    fn add_fault(
        &self,
        method: Option<&str>,
        path_contains: &str,
        count: usize,
        action: FaultAction,
    ) {
        if count == 0 {
            return;
        }
        self.lock().faults.push(Fault {
            method: method.map(str::to_string),
            path_contains: path_contains.to_string(),
            remaining: count,
            action,
        });
    }

    /// Forgets every injected fault not yet used up (latency stays; see
    /// [`FakeApiServer::set_latency`]).
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Calls `observer` once per answered request, after its response is ready (replacing a
    /// previous observer). Unlike [`FakeApiServer::requests`], nothing is kept.
    pub fn set_observer(&self, observer: impl Fn(&Answered) + Send + Sync + 'static) {
        self.lock().observer = Some(Arc::new(observer));
    }

    /// Latency added to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Ends every open watch stream now (clients see EOF and must re-watch).
    pub fn drop_watches(&self) {
        let _ = self.lock().tx.send(Signal::DropWatches);
    }

    /// Forgets the watch event log: watches from any older RV get 410 Expired.
    pub fn compact(&self) {
        self.lock().compact();
    }

    /// Bounds the watch event log (default [`DEFAULT_EVENT_LOG`]).
    pub fn set_event_log_capacity(&self, capacity: usize) {
        self.lock().set_log_capacity(capacity);
    }
}

/// Resource, namespace and name of a full object.
fn locate(object: &Value) -> Result<(ResourceRef, String, String), TestkitError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        return Err(TestkitError::Malformed(object.to_string()));
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok((
        ResourceRef::new(group, version, &plural_for_kind(kind)),
        ns.to_string(),
        name.to_string(),
    ))
}

/// A kubeconfig pointing at a served fake (plain http, no credentials), namespace `default`.
pub fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// Writes [`kubeconfig_yaml`] to `path`.
pub fn write_kubeconfig(addr: SocketAddr, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, kubeconfig_yaml(addr))
}

/// A client for a served fake over loopback HTTP, without kube's 429/503/504 retries so that
/// injected faults surface at once.
pub fn http_client(addr: SocketAddr) -> Result<kube::Client, kube::Error> {
    install_crypto_provider();
    let uri: axum::http::Uri = format!("http://{addr}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| kube::Error::Service(Box::new(e)))?;
    let mut config = kube::Config::new(uri);
    config.default_retry = false;
    kube::Client::try_from(config)
}
