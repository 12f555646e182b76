//! A SkyWalking-OAP-compatible simulator: a real GraphQL server on loopback that
//! parses and validates queries the way each OAP release does, serves scripted
//! metric series and alarms, and injects faults. The CLI (`--simulator`), the
//! demo and all integration tests drive it through [`Simulator`].

pub mod blend;
mod duration;
mod faults;
pub mod launch;
mod mqe;
mod profile;
mod resolvers;
pub mod scenario;
pub mod scenario_file;
mod schema;
mod sdl;
mod server;
mod store;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, FixedOffset, Utc};

pub use duration::{Step, format_for_step, tz_string};
pub use faults::Fault;
pub use mqe::format_value;
pub use profile::{OapProfile, UnknownProfile};
pub use store::{Label, SeriesFn, SimAlarm, SimEntity, service_id};

use faults::FaultQueue;
use store::SimData;

/// The simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("failed to bind simulator on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to read the bound simulator address: {0}")]
    LocalAddr(std::io::Error),
}

/// A clock the simulator reads for "now" (future buckets have no data; `getTimeInfo`).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How a simulated OAP behaves.
#[derive(Clone)]
pub struct SimConfig {
    pub profile: OapProfile,
    /// The OAP JVM timezone: duration strings are wall-clock times in this offset.
    pub server_tz: FixedOffset,
    /// Emulates an auth gateway: a missing or different `Authorization: Bearer` → 401.
    pub bearer_token: Option<String>,
    pub clock: Clock,
}

impl SimConfig {
    /// A UTC server without auth, on the real clock.
    pub fn new(profile: OapProfile) -> Self {
        SimConfig {
            profile,
            server_tz: FixedOffset::east_opt(0).unwrap_or_else(|| Utc.fix()),
            bearer_token: None,
            clock: Arc::new(Utc::now),
        }
    }

    pub fn with_tz(mut self, tz: FixedOffset) -> Self {
        self.server_tz = tz;
        self
    }

    pub fn with_bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

use chrono::Offset as _;

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("profile", &self.profile)
            .field("server_tz", &self.server_tz)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// One HTTP request as the simulator received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`application/graphql` bodies appear as `{"query": ...}`); None if unparseable.
    pub body: Option<serde_json::Value>,
    pub raw_body: String,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self) -> Option<&str> {
        self.body.as_ref()?.get("query")?.as_str()
    }

    pub fn variables(&self) -> Option<&serde_json::Value> {
        self.body.as_ref()?.get("variables")
    }
}

/// One answered request, as seen by a [`Simulator::set_observer`] hook.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The request body as received.
    pub body: &'a [u8],
    /// Response status.
    pub status: u16,
    /// When the request reached the handler.
    pub received: std::time::Instant,
    /// When the response was handed back to the HTTP server.
    pub answered: std::time::Instant,
}

/// A hook told about every answered request (benchmarks time measurements with it).
pub type Observer = Arc<dyn Fn(&Exchange<'_>) + Send + Sync>;

/// Shared state behind a [`Simulator`].
pub(crate) struct Inner {
    config: SimConfig,
    store: Mutex<SimData>,
    faults: Mutex<FaultQueue>,
    log: Mutex<Vec<RecordedRequest>>,
    observer: Mutex<Option<Observer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test closure must not wedge the simulator.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, SimData> {
        lock(&self.store)
    }
    fn faults(&self) -> MutexGuard<'_, FaultQueue> {
        lock(&self.faults)
    }
    fn log(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        lock(&self.log)
    }
}

/// A simulated OAP. Cheap to clone; clones share data, faults and the request log.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
    schema: Arc<async_graphql::dynamic::Schema>,
    model: Arc<schema::TypeModel>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Builds the profile's schema. The SDL is ours and covered by tests; if it
    /// ever failed to build, the simulator serves an empty schema instead of panicking.
    pub fn new(config: SimConfig) -> Self {
        let (schema, model) = match schema::build(config.profile) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "simulator schema failed to build");
                fallback_schema()
            }
        };
        Simulator {
            inner: Arc::new(Inner {
                config,
                store: Mutex::new(SimData::default()),
                faults: Mutex::new(FaultQueue::default()),
                log: Mutex::new(Vec::new()),
                observer: Mutex::new(None),
            }),
            schema: Arc::new(schema),
            model: Arc::new(model),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    pub fn profile(&self) -> OapProfile {
        self.inner.config.profile
    }

    /// The axum router (all paths; non-`/graphql` answer 404).
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(server::handle)
            .with_state(self.clone())
    }

    /// Binds `addr` (use `127.0.0.1:0`) and serves until the handle is dropped or shut down.
    pub async fn serve(&self, addr: SocketAddr) -> Result<RunningSim, SimError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(SimError::LocalAddr)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        Ok(RunningSim {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Scripts a metric for an entity: `f(minute_start)` → value, `None` = no data.
    pub fn set_series(
        &self,
        metric: &str,
        entity: SimEntity,
        f: impl Fn(DateTime<Utc>) -> Option<f64> + Send + Sync + 'static,
    ) {
        let mut s = self.inner.store();
        s.services.insert(entity.service_name().to_string());
        s.series
            .push((metric.to_string(), entity.id(), Arc::new(f)));
    }

    /// Scripts one label of a labeled metric. `label` is `"p=99"` (10.x percentiles)
    /// or a bare `"4"` (≤ 9.7 percentile index, key `_`).
    pub fn set_labeled_series(
        &self,
        metric: &str,
        entity: SimEntity,
        label: &str,
        f: impl Fn(DateTime<Utc>) -> Option<f64> + Send + Sync + 'static,
    ) {
        let mut s = self.inner.store();
        s.services.insert(entity.service_name().to_string());
        s.labeled.push((
            metric.to_string(),
            entity.id(),
            Label::parse(label),
            Arc::new(f),
        ));
    }

    /// Makes `findService`/`searchService` know a service without any data.
    pub fn add_service(&self, service: &str) {
        self.inner.store().services.insert(service.to_string());
    }

    /// Registers an instance for `listInstances`/`getServiceInstances`.
    pub fn add_instance(&self, service: &str, instance_name: &str) {
        let mut s = self.inner.store();
        s.services.insert(service.to_string());
        let pair = (service.to_string(), instance_name.to_string());
        if !s.instances.contains(&pair) {
            s.instances.push(pair);
        }
    }

    /// Adds an alarm served by `getAlarm`.
    pub fn add_alarm(&self, alarm: SimAlarm) {
        let mut s = self.inner.store();
        s.services.insert(alarm.entity.service_name().to_string());
        s.alarms.push(alarm);
    }

    /// Injects a fault for the next `times` matching requests (None = until cleared).
    /// Transport faults count HTTP requests; `MqeError`/`StorageError` count resolver calls.
    pub fn inject_fault(&self, fault: Fault, times: Option<usize>) {
        self.inner.faults().push(fault, times);
    }

    pub fn clear_faults(&self) {
        self.inner.faults().clear();
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log().clone()
    }

    pub fn clear_requests(&self) {
        self.inner.log().clear();
    }

    /// Calls `observer` once per answered request, after its response is ready (replacing a
    /// previous observer).
    pub fn set_observer(&self, observer: impl Fn(&Exchange<'_>) + Send + Sync + 'static) {
        *lock(&self.inner.observer) = Some(Arc::new(observer));
    }

    /// Formats an instant the way a correct client must for this server (its TZ, `step`'s pattern).
    pub fn format_time(&self, t: DateTime<Utc>, step: Step) -> String {
        format_for_step(t, self.inner.config.server_tz, step)
    }
}

fn fallback_schema() -> (async_graphql::dynamic::Schema, schema::TypeModel) {
    use async_graphql::dynamic::{Field, FieldFuture, Object, Schema, TypeRef};
    let q = Object::new("Query").field(Field::new(
        "version",
        TypeRef::named(TypeRef::STRING),
        |_| FieldFuture::from_value(None),
    ));
    match Schema::build("Query", None, None).register(q).finish() {
        Ok(s) => (s, schema::TypeModel::default()),
        // Unreachable in practice: a one-field schema always builds.
        Err(_) => std::process::abort(),
    }
}

/// A served simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSim {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT` (append `/graphql` for the endpoint).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The GraphQL endpoint URL.
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Stops accepting connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
