//! The Kubernetes [`ManifestStore`]: Istio objects through `Api<DynamicObject>`, so unknown
//! fields survive a GET → PUT round trip, with `metadata.resourceVersion` as the version.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::events::{
    Event as RuntimeEvent, EventType as RuntimeEventType, Recorder, Reporter,
};
use serde_json::Value;

use skycanary_ports::manifest::{
    ManifestStore, ManifestStoreError, ObjectKey, ObjectKind, Versioned,
};

/// The Istio networking API group.
pub const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";

/// Which `networking.istio.io` version to talk: older Istio installs serve only the betas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IstioApiVersion {
    /// `v1` (Istio 1.22+).
    #[default]
    V1,
    /// `v1beta1`.
    V1beta1,
    /// `v1alpha3`.
    V1alpha3,
}

impl IstioApiVersion {
    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            IstioApiVersion::V1 => "v1",
            IstioApiVersion::V1beta1 => "v1beta1",
            IstioApiVersion::V1alpha3 => "v1alpha3",
        }
    }
}

impl fmt::Display for IstioApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown Istio API version string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown networking.istio.io version {0:?} (expected v1, v1beta1 or v1alpha3)")]
pub struct UnknownIstioVersion(pub String);

impl FromStr for IstioApiVersion {
    type Err = UnknownIstioVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(IstioApiVersion::V1),
            "v1beta1" => Ok(IstioApiVersion::V1beta1),
            "v1alpha3" => Ok(IstioApiVersion::V1alpha3),
            other => Err(UnknownIstioVersion(other.to_string())),
        }
    }
}

/// VirtualServices and DestinationRules in a Kubernetes cluster.
#[derive(Clone)]
pub struct KubeManifestStore {
    client: Client,
    version: IstioApiVersion,
}

impl fmt::Debug for KubeManifestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeManifestStore")
            .field("version", &self.version)
            .finish()
    }
}

/// Most requests the daemon has in flight to the API server at once (a request holds its slot
/// until the response headers arrive, so watches do not hold one). Without a bound, a thousand
/// canaries starting together open a thousand connections and keep them pooled.
pub const MAX_API_REQUESTS_IN_FLIGHT: usize = 64;

impl KubeManifestStore {
    /// A store over an existing client (tests pass the fake API server's in-process client).
    pub fn new(client: Client, version: IstioApiVersion) -> Self {
        KubeManifestStore { client, version }
    }

    /// A store from the ambient configuration: `KUBECONFIG`/`~/.kube/config`, else in-cluster.
    pub async fn from_default_config(version: IstioApiVersion) -> Result<Self, ManifestStoreError> {
        Self::from_default_config_observed(version, None).await
    }

    /// [`KubeManifestStore::from_default_config`], every API request reported to `observer` (the
    /// daemon's `skycanary_kube_request*` metrics).
    pub async fn from_default_config_observed(
        version: IstioApiVersion,
        observer: Option<std::sync::Arc<dyn crate::observe::KubeRequestObserver>>,
    ) -> Result<Self, ManifestStoreError> {
        // kube's TLS stack needs a process-wide rustls provider; ring is the one we build.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::infer().await.map_err(|e| {
            ManifestStoreError::Backend(format!("cannot configure the Kubernetes client: {e}"))
        })?;
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| {
                ManifestStoreError::Backend(format!("cannot configure the Kubernetes client: {e}"))
            })?
            // Inside the concurrency limit: the latency is the API server's, not the queue's.
            .with_layer(&tower::util::option_layer(
                observer.map(crate::observe::ObserveLayer::new),
            ))
            .with_layer(&tower::limit::ConcurrencyLimitLayer::new(
                MAX_API_REQUESTS_IN_FLIGHT,
            ))
            .build();
        Ok(KubeManifestStore::new(client, version))
    }

    /// The client, for other kube calls (events, leases).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The Istio version in use.
    pub fn version(&self) -> IstioApiVersion {
        self.version
    }

    /// The object's `metadata.uid`, for an Event about it (`kubectl describe` lists an
    /// object's Events by uid); `None` when it cannot be read.
    pub async fn uid(&self, key: &ObjectKey) -> Option<String> {
        self.api(key).get(&key.name).await.ok()?.metadata.uid
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(
            ISTIO_NETWORKING_GROUP,
            self.version.as_str(),
            key.kind.as_str(),
        );
        let plural = match key.kind {
            ObjectKind::VirtualService => "virtualservices",
            ObjectKind::DestinationRule => "destinationrules",
        };
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        Api::namespaced_with(self.client.clone(), &key.namespace, &resource)
    }
}

/// A kube client error as one line for statuses, logs and readiness: the API's answer (code,
/// reason, message) when it answered, the transport error otherwise. The one place this is
/// worded, so every caller reports API failures alike.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "Kubernetes API answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => other.to_string(),
    }
}

/// Maps kube errors to store errors; 409 is the one the router retries.
fn map_error(key: &ObjectKey, err: kube::Error) -> ManifestStoreError {
    match err {
        kube::Error::Api(status) => match status.code {
            409 => ManifestStoreError::Conflict(key.clone()),
            404 => ManifestStoreError::NotFound(key.clone()),
            422 => ManifestStoreError::Invalid {
                key: key.clone(),
                message: status.message.clone(),
            },
            code => ManifestStoreError::Backend(format!(
                "{key}: Kubernetes API answered {code} {}: {}",
                status.reason, status.message
            )),
        },
        other => ManifestStoreError::Backend(format!("{key}: {other}")),
    }
}

fn resource_version(key: &ObjectKey, obj: &DynamicObject) -> Result<String, ManifestStoreError> {
    obj.metadata
        .resource_version
        .clone()
        .filter(|rv| !rv.is_empty())
        .ok_or_else(|| {
            ManifestStoreError::Backend(format!("{key}: the server returned no resourceVersion"))
        })
}

impl ManifestStore for KubeManifestStore {
    fn describe(&self) -> String {
        format!("kube ({ISTIO_NETWORKING_GROUP}/{})", self.version)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Versioned, ManifestStoreError> {
        let obj = self
            .api(key)
            .get(&key.name)
            .await
            .map_err(|e| map_error(key, e))?;
        let version = resource_version(key, &obj)?;
        let object = serde_json::to_value(&obj).map_err(|e| {
            ManifestStoreError::Backend(format!("{key}: cannot encode the object: {e}"))
        })?;
        Ok(Versioned { object, version })
    }

    async fn replace(
        &self,
        key: &ObjectKey,
        object: &Value,
        expected_version: &str,
    ) -> Result<String, ManifestStoreError> {
        let invalid = |message: String| ManifestStoreError::Invalid {
            key: key.clone(),
            message,
        };
        if expected_version.is_empty() {
            return Err(invalid(
                "no resourceVersion to replace at: read the object first".into(),
            ));
        }
        let mut obj: DynamicObject = serde_json::from_value(object.clone())
            .map_err(|e| invalid(format!("not a Kubernetes object: {e}")))?;
        match obj.metadata.name.as_deref() {
            Some(n) if n != key.name => {
                return Err(invalid(format!(
                    "metadata.name is {n:?}, expected {:?}",
                    key.name
                )));
            }
            _ => obj.metadata.name = Some(key.name.clone()),
        }
        match obj.metadata.namespace.as_deref() {
            Some(ns) if ns != key.namespace => {
                return Err(invalid(format!(
                    "metadata.namespace is {ns:?}, expected {:?}",
                    key.namespace
                )));
            }
            _ => obj.metadata.namespace = Some(key.namespace.clone()),
        }
        // Never a blind write: the server checks this version and answers 409 if it moved.
        obj.metadata.resource_version = Some(expected_version.to_string());
        let written = self
            .api(key)
            .replace(&key.name, &PostParams::default(), &obj)
            .await
            .map_err(|e| map_error(key, e))?;
        resource_version(key, &written)
    }
}

/// `type` of a Kubernetes Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Failure to record an Event.
#[derive(Debug, thiserror::Error)]
#[error("cannot record event {reason} on {object}: {source}")]
pub struct EventError {
    /// The event reason.
    pub reason: String,
    /// `kind namespace/name` of the involved object.
    pub object: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// The Event's `action` (what the controller did, a verb) for a `reason` (why): Kubernetes
/// shows both, so repeating the reason says nothing.
pub fn action_for(reason: &str) -> &'static str {
    match reason {
        r if r.starts_with("AnalysisRun") => "Analyze",
        "TrafficWeightUpdated" => "SetWeight",
        "TrafficRoutingRestored" => "RestoreRoutes",
        r if r.starts_with("TrafficRouting") || r == "TrafficDrift" => "UpdateRoutes",
        "RolloutAborted" | "RolloutRolledBack" | "RollbackIgnored" => "RollBack",
        "RolloutCompleted" | "RolloutPromoted" => "Promote",
        "RolloutStepCompleted" => "Advance",
        "RolloutPaused" => "Pause",
        "RolloutResumed" => "Resume",
        "RolloutRetried" => "Retry",
        "RolloutUpdated" => "Start",
        "PostPromotionWatchEnded" => "Watch",
        "AlarmIgnored" => "HandleAlarm",
        "CommandRejected" => "HandleCommand",
        "InvalidSpec" => "Validate",
        _ => "Reconcile",
    }
}

/// Reporting controller name written into Events.
pub const REPORTING_CONTROLLER: &str = "skycanary.io/skycanary";

/// Longest `note` the API accepts, in bytes.
const NOTE_MAX_BYTES: usize = 1024;

/// Longest involved-object name kube-runtime's Recorder can name an Event after: it appends
/// `.` and up to 16 hex digits of the time, and Event names are at most 253 characters.
const RECORDER_NAME_MAX: usize = 253 - 17;

/// Most distinct notes with a series in progress; past it the least recently used one is
/// forgotten (its next repeat becomes a new Event: nothing is lost, a count is split).
pub const MAX_EVENT_SERIES_NOTES: usize = 1024;

/// How long kube-runtime's Recorder continues a series (its cache lifetime); a Recorder unused
/// this long has nothing left to continue.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Records `events.k8s.io/v1` Events through kube-runtime's [`Recorder`], so an Event repeated
/// within six minutes — same type, reason, action, note and object — becomes a series on the
/// first one (`series.count`, `series.lastObservedTime`, written by a PATCH) instead of a new
/// object. Cheap to clone; clones share the series.
///
/// The Recorder's own series key leaves the note out, so two different notes would be counted
/// as one series showing only the first note; one Recorder per note keeps every note visible.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    by_note: Arc<Mutex<HashMap<String, (Recorder, Instant)>>>,
}

impl fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecorder")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// A recorder writing through `client`, reporting as [`REPORTING_CONTROLLER`] from this
    /// pod (`HOSTNAME`, else `skycanary`).
    pub fn new(client: Client) -> Self {
        let instance = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "skycanary".to_string());
        EventRecorder {
            client,
            reporter: Reporter {
                controller: REPORTING_CONTROLLER.to_string(),
                instance: Some(instance),
            },
            by_note: Arc::default(),
        }
    }

    /// The Recorder that continues `note`'s series, made when there is none; `fresh` forgets
    /// the one there is (its cached Event is gone from the server).
    fn recorder(&self, note: &str, fresh: bool) -> Recorder {
        let now = Instant::now();
        let mut map = self.by_note.lock().unwrap_or_else(|e| e.into_inner());
        if fresh {
            map.remove(note);
        }
        if let Some((recorder, used)) = map.get_mut(note) {
            *used = now;
            return recorder.clone();
        }
        map.retain(|_, (_, used)| now.duration_since(*used) < SERIES_WINDOW);
        if map.len() >= MAX_EVENT_SERIES_NOTES
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        map.insert(note.to_string(), (recorder.clone(), now));
        recorder
    }

    /// Distinct notes with a series in progress (for tests of the bound).
    pub fn series_notes(&self) -> usize {
        self.by_note.lock().map(|m| m.len()).unwrap_or_default()
    }
}

/// `message` cut to the API's note limit, on a character boundary.
fn note_of(message: &str) -> String {
    let mut end = message.len().min(NOTE_MAX_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

/// Records an `events.k8s.io/v1` Event about `involved` (reasons such as
/// `TrafficWeightUpdated`, `TrafficRoutingError`), so `kubectl describe` shows what we did. A
/// repeat of an Event within six minutes raises its series count instead (see
/// [`EventRecorder`]). The Event is written in the involved object's namespace (`namespace`
/// when the reference has none).
pub async fn emit_event(
    events: &EventRecorder,
    namespace: &str,
    involved: &ObjectReference,
    reason: &str,
    message: &str,
    event_type: EventType,
) -> Result<(), EventError> {
    let mut regarding = involved.clone();
    regarding
        .namespace
        .get_or_insert_with(|| namespace.to_string());
    let note = note_of(message);
    let event = RuntimeEvent {
        type_: match event_type {
            EventType::Normal => RuntimeEventType::Normal,
            EventType::Warning => RuntimeEventType::Warning,
        },
        reason: reason.to_string(),
        note: Some(note.clone()),
        action: action_for(reason).to_string(),
        secondary: None,
    };
    let long_name = regarding
        .name
        .as_deref()
        .is_some_and(|n| n.len() > RECORDER_NAME_MAX);
    let result = if long_name {
        create_event(events, &regarding, &event, event_type).await
    } else {
        let mut result = events
            .recorder(&note, false)
            .publish(&event, &regarding)
            .await;
        match &result {
            // The series' Event is gone (deleted, or expired on the server): start anew.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                result = events
                    .recorder(&note, true)
                    .publish(&event, &regarding)
                    .await;
            }
            // Two Events named after the same nanosecond: the retry is named after another.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                result = events
                    .recorder(&note, false)
                    .publish(&event, &regarding)
                    .await;
            }
            _ => {}
        }
        result
    };
    result.map_err(|source| EventError {
        reason: reason.to_string(),
        object: format!(
            "{} {}/{}",
            regarding.kind.as_deref().unwrap_or_default(),
            regarding.namespace.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default(),
        ),
        source,
    })
}

/// Distinguishes Events created in the same nanosecond by [`create_event`].
static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A new Event (no series) about an object whose name is too long for the Recorder's naming:
/// named after the name's first characters, within the API's 253.
async fn create_event(
    events: &EventRecorder,
    regarding: &ObjectReference,
    event: &RuntimeEvent,
    event_type: EventType,
) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let seq = EVENT_SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(".{:x}{:x}", now.as_nanosecond(), seq);
    let base = regarding.name.as_deref().unwrap_or("skycanary");
    let keep = 253usize.saturating_sub(suffix.len());
    let name = format!("{}{suffix}", base.chars().take(keep).collect::<String>());
    let namespace = regarding.namespace.clone().unwrap_or_default();
    let body = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        type_: Some(event_type.as_str().to_string()),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(events.reporter.controller.clone()),
        reporting_instance: events.reporter.instance.clone(),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(events.client.clone(), &namespace);
    api.create(&PostParams::default(), &body).await.map(|_| ())
}

#[cfg(test)]
mod tests;
