//! Cluster-mode resource source: Canaries, ScheduledAnalyses, AnalysisTemplates and
//! ClusterAnalysisTemplates read
//! from `skycanary.io/v1alpha1` CRDs, validated exactly like files.
//!
//! Each object is checked on its own and its problems are reported with its id
//! (`kube:<kind>/<ns>/<name>`) instead of failing the whole load, so one bad object never stops
//! the others. [`KubeSource::watch`] lists each kind, watches from the list's resourceVersion,
//! resumes from the last seen version when a watch ends, relists on 410 Expired, and backs off
//! (bounded, exponential) on errors. It emits a new [`Snapshot`] only when something the
//! drivers act on changed: status-only writes (the daemon's own) are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::canary::CommandRequest;
use crate::resources::canary::CanaryDoc;
use crate::resources::canary_validate::validate_canary;
use crate::resources::load::{
    ConfigError, LoadedCanary, LoadedScheduled, LoadedTemplate, Origin, deserialize_all,
    validate_template,
};
use crate::resources::scheduled::ScheduledAnalysisDoc;
use crate::resources::scheduled_validate::validate_scheduled;
use crate::resources::template::AnalysisTemplateDoc;
use crate::resources::yaml::LineIndex;
use crate::state::kube_status::{GROUP, VERSION, parse_status};

/// Page size of LIST requests (kube's watcher uses the same).
const LIST_PAGE: u32 = 500;

/// The kinds this source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `Canary` (namespaced).
    Canary,
    /// `AnalysisTemplate` (namespaced).
    AnalysisTemplate,
    /// `ClusterAnalysisTemplate` (cluster-scoped).
    ClusterAnalysisTemplate,
    /// `ScheduledAnalysis` (namespaced).
    ScheduledAnalysis,
}

impl SourceKind {
    /// All kinds, in listing order.
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Canary,
        SourceKind::AnalysisTemplate,
        SourceKind::ClusterAnalysisTemplate,
        SourceKind::ScheduledAnalysis,
    ];

    /// The kind name.
    pub fn kind(self) -> &'static str {
        match self {
            SourceKind::Canary => "Canary",
            SourceKind::AnalysisTemplate => "AnalysisTemplate",
            SourceKind::ClusterAnalysisTemplate => "ClusterAnalysisTemplate",
            SourceKind::ScheduledAnalysis => "ScheduledAnalysis",
        }
    }

    /// The REST collection name.
    pub fn plural(self) -> &'static str {
        match self {
            SourceKind::Canary => "canaries",
            SourceKind::AnalysisTemplate => "analysistemplates",
            SourceKind::ClusterAnalysisTemplate => "clusteranalysistemplates",
            SourceKind::ScheduledAnalysis => "scheduledanalyses",
        }
    }

    /// False for cluster-scoped kinds, which are read cluster-wide even in namespace mode.
    pub fn namespaced(self) -> bool {
        !matches!(self, SourceKind::ClusterAnalysisTemplate)
    }

    fn resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, self.kind()),
            self.plural(),
        )
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// Identity of one object: kind, namespace (None when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// Kind.
    pub kind: SourceKind,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// A valid Canary as read from the cluster, with what files do not have.
#[derive(Debug, Clone)]
pub struct KubeCanary {
    /// The Canary; `doc.status` holds only `status.command`, when there is one.
    pub canary: LoadedCanary,
    /// `metadata.generation`, to record as `status.observedGeneration`.
    pub generation: Option<i64>,
    /// `metadata.uid`: a deleted and recreated Canary is a different object.
    pub uid: Option<String>,
}

impl KubeCanary {
    /// The pending `status.command` request as of this snapshot (the snapshot keeps no other
    /// part of `.status`: the drivers read their state with `KubeStatusStore::load`). A request
    /// that does not parse is ignored, like one never written.
    pub fn command_request(&self) -> Option<CommandRequest> {
        parse_status(self.canary.doc.status.as_ref())
            .ok()
            .flatten()?
            .command
    }
}

/// resourceVersions the snapshot reflects, one per collection (they are opaque and per-list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceVersions {
    /// Of the Canary list.
    pub canaries: String,
    /// Of the AnalysisTemplate list.
    pub templates: String,
    /// Of the ClusterAnalysisTemplate list.
    pub cluster_templates: String,
    /// Of the ScheduledAnalysis list.
    pub scheduled: String,
}

impl ResourceVersions {
    fn set(&mut self, kind: SourceKind, rv: String) {
        match kind {
            SourceKind::Canary => self.canaries = rv,
            SourceKind::AnalysisTemplate => self.templates = rv,
            SourceKind::ClusterAnalysisTemplate => self.cluster_templates = rv,
            SourceKind::ScheduledAnalysis => self.scheduled = rv,
        }
    }
}

/// Every object of the three kinds, validated.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Valid Canaries, ordered by namespace and name.
    pub canaries: Vec<KubeCanary>,
    /// Valid templates (namespaced and cluster-scoped).
    pub templates: Vec<LoadedTemplate>,
    /// Valid ScheduledAnalyses, ordered by namespace and name.
    pub scheduled: Vec<LoadedScheduled>,
    /// Objects that failed validation, with all their problems.
    pub errors: Vec<(ObjectId, Vec<ConfigError>)>,
    /// `metadata.generation` of the refused objects that have one: their status records
    /// which version of the spec was refused (`observedGeneration`).
    pub refused_generations: BTreeMap<ObjectId, i64>,
    /// Where the lists were taken.
    pub resource_version: ResourceVersions,
    /// False when only `status.command` requests changed since the previous snapshot: the
    /// drivers keep running and just hear the requests.
    pub specs_changed: bool,
}

impl Snapshot {
    /// The pending `status.command` requests, per canary (namespace, name).
    pub fn command_requests(&self) -> Vec<(String, String, CommandRequest)> {
        self.canaries
            .iter()
            .filter_map(|c| {
                let req = c.command_request()?;
                let name = c.canary.doc.metadata.name.clone();
                Some((c.canary.namespace().to_string(), name, req))
            })
            .collect()
    }
}

/// What [`KubeSource::watch`] reports.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The first complete view, and every later one whose specs changed.
    Changed(Snapshot),
    /// A list or watch failed; the source retries by itself.
    Error(String),
}

/// Failures of [`KubeSource::snapshot`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// Listing a collection failed.
    #[error("listing {kind} objects: {message}")]
    List {
        /// The collection.
        kind: SourceKind,
        /// The cause.
        message: String,
    },
}

/// Reads skycanary resources from the Kubernetes API.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    namespace: Option<String>,
    backoff_min: Duration,
    backoff_max: Duration,
    watch_timeout_secs: u32,
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source over `client`: Canaries and AnalysisTemplates of `namespace` (None = all
    /// namespaces); ClusterAnalysisTemplates always.
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        KubeSource {
            client,
            namespace,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            watch_timeout_secs: 290,
        }
    }

    /// Retry delays after errors: doubling from `min`, capped at `max`.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Server-side duration of one watch request (it is then resumed).
    pub fn with_watch_timeout(mut self, secs: u32) -> Self {
        self.watch_timeout_secs = secs.max(1);
        self
    }

    fn api(&self, kind: SourceKind) -> Api<DynamicObject> {
        match (&self.namespace, kind.namespaced()) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &kind.resource()),
            _ => Api::all_with(self.client.clone(), &kind.resource()),
        }
    }

    /// Lists the three kinds once and validates every object.
    pub async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let mut objects = BTreeMap::new();
        let mut rvs = ResourceVersions::default();
        for kind in SourceKind::ALL {
            let (listed, rv) = list_kind(&self.api(kind), kind)
                .await
                .map_err(|message| SourceError::List { kind, message })?;
            objects.extend(listed);
            rvs.set(kind, rv);
        }
        Ok(build_snapshot(&objects, rvs))
    }

    /// Starts watching (needs a tokio runtime). The first event is the initial snapshot; the
    /// background tasks stop when the receiver is dropped.
    pub fn watch(self) -> mpsc::Receiver<SourceEvent> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.run(tx));
        rx
    }

    async fn run(self, tx: mpsc::Sender<SourceEvent>) {
        let (itx, mut irx) = mpsc::channel::<KindMsg>(256);
        // Dropping the set (when this task ends) aborts the per-kind watchers.
        let mut watchers = JoinSet::new();
        for kind in SourceKind::ALL {
            watchers.spawn(watch_kind(
                self.api(kind),
                kind,
                itx.clone(),
                WatchConfig {
                    backoff_min: self.backoff_min,
                    backoff_max: self.backoff_max,
                    timeout_secs: self.watch_timeout_secs,
                },
            ));
        }
        drop(itx);
        let mut objects: BTreeMap<ObjectId, KeptObject> = BTreeMap::new();
        let mut listed: BTreeSet<SourceKind> = BTreeSet::new();
        let mut rvs = ResourceVersions::default();
        // What drivers act on, per object, and each Canary's `status.command`, as of the last
        // snapshot sent (None: none sent yet; shared with `objects`, not copied), and the
        // objects touched since: only those are compared, so a status-only write costs one
        // object's comparison, not the whole set's.
        let mut sent: Option<BTreeMap<ObjectId, Print>> = None;
        let mut sent_commands: BTreeMap<ObjectId, Print> = BTreeMap::new();
        let mut touched: BTreeSet<ObjectId> = BTreeSet::new();
        loop {
            let msg = tokio::select! {
                m = irx.recv() => m,
                _ = tx.closed() => return,
            };
            let Some(msg) = msg else { return };
            let mut batch = vec![msg];
            // Coalesce what is already queued into one snapshot.
            while let Ok(m) = irx.try_recv() {
                batch.push(m);
            }
            for m in batch {
                match m {
                    KindMsg::Listed(kind, items, rv) => {
                        touched.extend(objects.keys().filter(|id| id.kind == kind).cloned());
                        touched.extend(items.keys().cloned());
                        objects.retain(|id, _| id.kind != kind);
                        objects.extend(items);
                        listed.insert(kind);
                        rvs.set(kind, rv);
                    }
                    KindMsg::Applied(id, obj, rv) => {
                        rvs.set(id.kind, rv);
                        touched.insert(id.clone());
                        objects.insert(id, obj);
                    }
                    KindMsg::Deleted(id, rv) => {
                        rvs.set(id.kind, rv);
                        touched.insert(id.clone());
                        objects.remove(&id);
                    }
                    KindMsg::Error(e) => {
                        if tx.send(SourceEvent::Error(e)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if listed.len() < SourceKind::ALL.len() {
                continue;
            }
            let (specs_changed, commands_changed) = match &mut sent {
                None => {
                    sent = Some(
                        objects
                            .iter()
                            .map(|(id, o)| (id.clone(), o.body.clone()))
                            .collect(),
                    );
                    sent_commands = objects
                        .iter()
                        .filter_map(|(id, o)| Some((id.clone(), o.command.clone()?)))
                        .collect();
                    (true, true)
                }
                Some(prints) => {
                    let (mut specs, mut commands) = (false, false);
                    for id in &touched {
                        let obj = objects.get(id);
                        specs |= update(prints, id, obj.map(|o| o.body.clone()));
                        commands |=
                            update(&mut sent_commands, id, obj.and_then(|o| o.command.clone()));
                    }
                    (specs, commands)
                }
            };
            touched.clear();
            if !specs_changed && !commands_changed {
                continue;
            }
            let mut snapshot = build_snapshot(&objects, rvs.clone());
            snapshot.specs_changed = specs_changed;
            if tx.send(SourceEvent::Changed(snapshot)).await.is_err() {
                return;
            }
        }
    }
}

/// Compact JSON, shared between the object set and what was last sent.
type Print = Arc<[u8]>;

/// An object as the source keeps it between snapshots: what drivers act on as compact JSON
/// (parsed again only when a snapshot is built, i.e. when something changed), and a Canary's
/// `status.command` apart. A `Value` tree of a Canary cost ~9 KiB; its JSON, a tenth of that.
#[derive(Debug, Clone, PartialEq)]
struct KeptObject {
    /// apiVersion, kind, the identifying metadata, spec (see [`kept_object`]).
    body: Print,
    /// A Canary's `status.command`, when it has one.
    command: Option<Print>,
}

/// Per-kind updates sent by the watcher tasks to the merging task.
enum KindMsg {
    Listed(SourceKind, BTreeMap<ObjectId, KeptObject>, String),
    Applied(ObjectId, KeptObject, String),
    Deleted(ObjectId, String),
    Error(String),
}

#[derive(Clone, Copy)]
struct WatchConfig {
    backoff_min: Duration,
    backoff_max: Duration,
    timeout_secs: u32,
}

/// Why a watch session ended.
enum WatchEnd {
    /// The server closed it (timeout, dropped connection): resume from the last version.
    Closed { events: bool },
    /// 410 Expired: the version is gone, relist.
    Gone,
    /// An error: report, back off, resume.
    Failed(String),
    /// Nobody listens any more.
    Stop,
}

/// List, then watch from the list's version; resume on a closed watch, relist on 410.
async fn watch_kind(
    api: Api<DynamicObject>,
    kind: SourceKind,
    tx: mpsc::Sender<KindMsg>,
    cfg: WatchConfig,
) {
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    loop {
        let (items, mut rv) = match list_kind(&api, kind).await {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("listing {kind} objects: {e}");
                tracing::warn!(%kind, error = %e, "list failed; retrying");
                if tx.send(KindMsg::Error(msg)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if tx
            .send(KindMsg::Listed(kind, items, rv.clone()))
            .await
            .is_err()
        {
            return;
        }
        backoff.reset();
        loop {
            let started = Instant::now();
            match watch_once(&api, kind, &mut rv, &tx, cfg.timeout_secs).await {
                WatchEnd::Stop => return,
                WatchEnd::Gone => {
                    tracing::info!(%kind, "resourceVersion expired; relisting");
                    break;
                }
                WatchEnd::Closed { events } => {
                    if events {
                        backoff.reset();
                    } else if started.elapsed() < Duration::from_secs(1) {
                        // A server that closes at once must not make us spin.
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                WatchEnd::Failed(e) => {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying");
                    if tx
                        .send(KindMsg::Error(format!("watching {kind} objects: {e}")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

/// One watch request from `rv`, advancing `rv` with every event and bookmark.
async fn watch_once(
    api: &Api<DynamicObject>,
    kind: SourceKind,
    rv: &mut String,
    tx: &mpsc::Sender<KindMsg>,
    timeout_secs: u32,
) -> WatchEnd {
    let wp = WatchParams::default().timeout(timeout_secs);
    let stream = match api.watch(&wp, rv).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Gone,
        Err(e) => return WatchEnd::Failed(e.to_string()),
    };
    let mut stream = std::pin::pin!(stream);
    let mut events = false;
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                advance(rv, &o);
                let (id, obj) = kept_object(kind, o);
                KindMsg::Applied(id, obj, rv.clone())
            }
            Ok(WatchEvent::Deleted(o)) => {
                advance(rv, &o);
                let (id, _) = kept_object(kind, o);
                KindMsg::Deleted(id, rv.clone())
            }
            Ok(WatchEvent::Bookmark(b)) => {
                if !b.metadata.resource_version.is_empty() {
                    *rv = b.metadata.resource_version;
                }
                continue;
            }
            Ok(WatchEvent::Error(s)) if s.code == 410 => return WatchEnd::Gone,
            Ok(WatchEvent::Error(s)) => {
                return WatchEnd::Failed(format!("{} {}: {}", s.code, s.reason, s.message));
            }
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        events = true;
        if tx.send(msg).await.is_err() {
            return WatchEnd::Stop;
        }
    }
    WatchEnd::Closed { events }
}

fn advance(rv: &mut String, obj: &DynamicObject) {
    if let Some(v) = obj
        .metadata
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty())
    {
        *rv = v.to_string();
    }
}

/// All objects of one kind (following `continue` pages) and the list's resourceVersion.
async fn list_kind(
    api: &Api<DynamicObject>,
    kind: SourceKind,
) -> Result<(BTreeMap<ObjectId, KeptObject>, String), String> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(LIST_PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.map_err(describe_error)?;
        let rv = page.metadata.resource_version.clone().unwrap_or_default();
        for o in page.items {
            let (id, obj) = kept_object(kind, o);
            out.insert(id, obj);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => token = Some(next),
            None => return Ok((out, rv)),
        }
    }
}

fn describe_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "Kubernetes API answered {} {}: {}",
            s.code, s.reason, s.message
        ),
        other => other.to_string(),
    }
}

/// The object as JSON with `apiVersion` and `kind` set (list items omit them), trimmed to what
/// the daemon reads from a snapshot: the spec and the identifying metadata (no
/// resourceVersion, managedFields or kubectl's last-applied copy), and apart from it, of a
/// Canary's `.status`, only the `command` request. Drivers read their status through the
/// status store; keeping every status here cost a Canary's whole status (all runs and
/// measurements) per object, replaced by every measurement's status write.
fn trimmed_object(kind: SourceKind, o: DynamicObject) -> (ObjectId, Value, Option<Value>) {
    let id = ObjectId {
        kind,
        namespace: if kind.namespaced() {
            o.metadata.namespace.clone()
        } else {
            None
        },
        name: o.metadata.name.clone().unwrap_or_default(),
    };
    let mut data = o.data;
    let command = match (kind, data.get_mut("status")) {
        (SourceKind::Canary, Some(status)) => status.get_mut("command").map(Value::take),
        _ => None,
    };
    let mut v = match data {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    v.remove("status");
    let m = o.metadata;
    let mut meta = Map::new();
    let mut keep = |k: &str, x: Option<Value>| {
        if let Some(x) = x.filter(|x| !x.is_null()) {
            meta.insert(k.into(), x);
        }
    };
    keep("name", m.name.map(Value::from));
    keep("namespace", m.namespace.map(Value::from));
    keep("uid", m.uid.map(Value::from));
    // Orders Canaries that share a route: the later one is refused.
    keep(
        "creationTimestamp",
        m.creation_timestamp.map(|t| Value::from(t.0.to_string())),
    );
    keep("generation", m.generation.map(Value::from));
    keep("labels", m.labels.map(|l| json!(l)));
    // kubectl's last-applied copy of the object is as large as the spec and says nothing more.
    let annotations = m.annotations.map(|mut a| {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        a
    });
    keep(
        "annotations",
        annotations.filter(|a| !a.is_empty()).map(|a| json!(a)),
    );
    v.insert("metadata".into(), Value::Object(meta));
    v.insert("apiVersion".into(), json!(format!("{GROUP}/{VERSION}")));
    v.insert("kind".into(), json!(kind.kind()));
    (id, Value::Object(v), command.filter(|c| !c.is_null()))
}

/// [`trimmed_object`] as kept: compact JSON. (serde_json maps are ordered, so equal objects
/// print equally and comparing the bytes compares the objects.)
fn kept_object(kind: SourceKind, o: DynamicObject) -> (ObjectId, KeptObject) {
    let (id, body, command) = trimmed_object(kind, o);
    let print = |v: &Value| -> Print { serde_json::to_vec(v).unwrap_or_default().into() };
    let kept = KeptObject {
        body: print(&body),
        command: command.as_ref().map(print),
    };
    (id, kept)
}

/// The object for validation: the kept body with its `status.command`, if any.
fn object_value(kept: &KeptObject) -> Value {
    let mut v: Value = serde_json::from_slice(&kept.body).unwrap_or_else(|_| json!({}));
    if let (Some(cmd), Some(m)) = (&kept.command, v.as_object_mut()) {
        let cmd: Value = serde_json::from_slice(cmd).unwrap_or(Value::Null);
        m.insert("status".into(), json!({ "command": cmd }));
    }
    v
}

/// Records `now` as `id`'s entry in `prints` (None: no entry); true when it differs from the
/// entry before.
fn update(prints: &mut BTreeMap<ObjectId, Print>, id: &ObjectId, now: Option<Print>) -> bool {
    if now.as_ref() == prints.get(id) {
        return false;
    }
    match now {
        Some(p) => prints.insert(id.clone(), p),
        None => prints.remove(id),
    };
    true
}

/// Validates every object like the file loader does, collecting errors per object.
fn build_snapshot(objects: &BTreeMap<ObjectId, KeptObject>, rvs: ResourceVersions) -> Snapshot {
    let mut snap = Snapshot {
        resource_version: rvs,
        ..Snapshot::default()
    };
    for (id, kept) in objects {
        let value = object_value(kept);
        let obj = &value;
        if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64) {
            snap.refused_generations.insert(id.clone(), g);
        }
        let origin = Origin {
            file: format!("kube:{id}"),
            lines: LineIndex::default(),
        };
        match id.kind {
            SourceKind::Canary => {
                let (parsed, mut errs) = deserialize_all::<CanaryDoc>(obj, &origin);
                if let Some(doc) = parsed {
                    errs.extend(validate_canary(&doc, &origin));
                    if errs.is_empty() {
                        let meta = obj.get("metadata");
                        snap.canaries.push(KubeCanary {
                            canary: LoadedCanary { doc, origin },
                            generation: meta
                                .and_then(|m| m.get("generation"))
                                .and_then(Value::as_i64),
                            uid: meta
                                .and_then(|m| m.get("uid"))
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        });
                    }
                }
                if !errs.is_empty() {
                    snap.errors.push((id.clone(), errs));
                }
            }
            SourceKind::ScheduledAnalysis => {
                let (parsed, mut errs) = deserialize_all::<ScheduledAnalysisDoc>(obj, &origin);
                if let Some(doc) = parsed {
                    errs.extend(validate_scheduled(&doc, &origin));
                    if errs.is_empty() {
                        snap.scheduled.push(LoadedScheduled { doc, origin });
                    }
                }
                if !errs.is_empty() {
                    snap.errors.push((id.clone(), errs));
                }
            }
            SourceKind::AnalysisTemplate | SourceKind::ClusterAnalysisTemplate => {
                let (parsed, mut errs) = deserialize_all::<AnalysisTemplateDoc>(obj, &origin);
                if let Some(doc) = parsed {
                    errs.extend(validate_template(&doc, &origin));
                    if errs.is_empty() {
                        snap.templates.push(LoadedTemplate { doc, origin });
                    }
                }
                if !errs.is_empty() {
                    snap.errors.push((id.clone(), errs));
                }
            }
        }
    }
    refuse_shared_routes(&mut snap);
    // Kept for the refused objects only.
    let refused: BTreeSet<&ObjectId> = snap.errors.iter().map(|(id, _)| id).collect();
    snap.refused_generations
        .retain(|id, _| refused.contains(id));
    snap
}

/// Two valid Canaries writing one route would overwrite each other's weights: the later one
/// (by creationTimestamp, then name and namespace) is removed from the snapshot and reported
/// as an invalid object. A Canary without a readable timestamp counts as the latest.
fn refuse_shared_routes(snap: &mut Snapshot) {
    use crate::resources::route_claims::{RouteClaim, route_claims, shared_route};
    let created = |c: &KubeCanary| {
        c.canary
            .doc
            .metadata
            .server_fields
            .get("creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let rank = |c: &KubeCanary| {
        let t = created(c);
        (
            t.is_none(),
            t,
            c.canary.doc.metadata.name.clone(),
            c.canary.namespace().to_string(),
        )
    };
    let mut order: Vec<usize> = (0..snap.canaries.len()).collect();
    order.sort_by_cached_key(|&i| rank(&snap.canaries[i]));
    let mut kept: Vec<(usize, Vec<RouteClaim>)> = Vec::new();
    let mut refused = BTreeSet::new();
    for i in order {
        let later = &snap.canaries[i].canary;
        let claims = route_claims(&later.doc, later.namespace());
        let clash = kept
            .iter()
            .find_map(|(k, first)| shared_route(first, &claims).map(|route| (*k, route)));
        let Some((k, route)) = clash else {
            kept.push((i, claims));
            continue;
        };
        let first = &snap.canaries[k].canary;
        let error = later.origin.error(
            "spec.trafficRouting",
            format!(
                "Canary {}/{} manages the same route as Canary {}/{}, created earlier: {route}; \
                 two Canaries on one route would overwrite each other's weights",
                later.namespace(),
                later.doc.metadata.name,
                first.namespace(),
                first.doc.metadata.name,
            ),
        );
        let id = ObjectId {
            kind: SourceKind::Canary,
            namespace: Some(later.namespace().to_string()),
            name: later.doc.metadata.name.clone(),
        };
        snap.errors.push((id, vec![error]));
        refused.insert(i);
    }
    snap.canaries = std::mem::take(&mut snap.canaries)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(i))
        .map(|(_, c)| c)
        .collect();
}

#[cfg(test)]
#[path = "kube_source_tests.rs"]
mod tests;
