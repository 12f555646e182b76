//! Cluster-mode resource source: Canaries, ScheduledAnalyses, AnalysisTemplates and
//! ClusterAnalysisTemplates read
//! from `skycanary.io/v1alpha1` CRDs, validated exactly like files.
//!
//! Each object is checked on its own and its problems are reported with its id
//! (`kube:<kind>/<ns>/<name>`) instead of failing the whole load, so one bad object never stops
//! the others. [`KubeSource::watch`] runs one kube-runtime watcher per kind (list, watch from
//! the list's resourceVersion with bookmarks, resume a closed watch from the last version,
//! relist on 410 Expired), backed off (bounded, doubling) on errors. It emits a new
//! [`Snapshot`] only when something the drivers act on changed: status-only writes (the
//! daemon's own) are ignored. No reflector store: what is kept per object is the trimmed
//! spec (`KeptObject`), a tenth of the object a store would hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::{Map, Value, json};
use skycanary_kube::watch::SourceObject;
use skycanary_kube::watch::{list_all, source_api, source_events};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::canary::CommandRequest;
use crate::canary::preflight::unplannable;
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
use crate::runner::Defaults;
use crate::state::kube_status::{GROUP, VERSION, parse_status};

/// The kinds this source reads, in the `skycanary-kube` crate with their watches.
pub use skycanary_kube::watch::SourceKind;

/// Identity of one object: kind, namespace (None when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// Which watched resource it is.
    pub kind: SourceKind,
    /// Its namespace; `None` for cluster-scoped ones (ClusterAnalysisTemplate).
    pub namespace: Option<String>,
    /// Its name.
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

/// resourceVersions the snapshot reflects, one per collection (opaque): of the list, for
/// [`KubeSource::snapshot`]; of the newest object event seen, for a watched snapshot (the
/// list's and bookmarks' versions are the watcher's own business).
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
    /// `metadata.uid` of the refused objects: their Warning Event names it, as `kubectl
    /// describe` finds an object's Events by uid.
    pub refused_uids: BTreeMap<ObjectId, String>,
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
    Changed(Box<Snapshot>),
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

    /// Lists the three kinds once and validates every object.
    pub async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let mut objects = BTreeMap::new();
        let mut rvs = ResourceVersions::default();
        for kind in SourceKind::ALL {
            let api = source_api(&self.client, self.namespace.as_deref(), kind);
            let (listed, rv) = list_kind(&api, kind)
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

    /// One kube-runtime watcher per kind ([`source_events`]: list, watch from the list's
    /// version, resume a closed watch, relist on 410, each backed off on errors), merged into
    /// one view.
    async fn run(self, tx: mpsc::Sender<SourceEvent>) {
        // Dropping the merged stream (when this task ends) ends every watch.
        let mut events = source_events(
            &self.client,
            self.namespace.as_deref(),
            self.watch_timeout_secs,
            Backoff::new(self.backoff_min, self.backoff_max),
        );
        let mut view = View::default();
        loop {
            let first = tokio::select! {
                e = events.next() => e,
                () = tx.closed() => return,
            };
            let Some(first) = first else { return };
            let mut errors = Vec::new();
            view.apply(first, &mut errors);
            // Coalesce what is already at hand into one snapshot.
            while let Some(Some(next)) = events.next().now_or_never() {
                view.apply(next, &mut errors);
            }
            for e in errors {
                if tx.send(SourceEvent::Error(e)).await.is_err() {
                    return;
                }
            }
            if let Some(snapshot) = view.snapshot()
                && tx
                    .send(SourceEvent::Changed(Box::new(snapshot)))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

/// The merged view of the four watches, and what the last snapshot sent reflected: a pure
/// state machine over watcher events, so "emit only when a spec changed" is tested without
/// a server.
#[derive(Default)]
struct View {
    /// Every object of the kinds listed so far.
    objects: BTreeMap<ObjectId, KeptObject>,
    /// Objects of a (re)list in progress, per kind: they replace the kind's objects at once
    /// when the list is complete, so an object missing from it counts as deleted.
    relisting: BTreeMap<SourceKind, BTreeMap<ObjectId, KeptObject>>,
    /// Kinds whose first list completed: no snapshot before all have.
    listed: BTreeSet<SourceKind>,
    rvs: ResourceVersions,
    /// What drivers act on, per object, and each Canary's `status.command`, as of the last
    /// snapshot sent (None: none sent yet; shared with `objects`, not copied).
    sent: Option<BTreeMap<ObjectId, Print>>,
    sent_commands: BTreeMap<ObjectId, Print>,
    /// Objects touched since the last snapshot: only those are compared, so a status-only
    /// write costs one object's comparison, not the whole set's.
    touched: BTreeSet<ObjectId>,
}

impl View {
    /// Folds one watcher event (or error, described into `errors`) into the view.
    fn apply(
        &mut self,
        (kind, event): (
            SourceKind,
            Result<watcher::Event<SourceObject>, watcher::Error>,
        ),
        errors: &mut Vec<String>,
    ) {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                if let Some(message) = describe_watch_error(kind, &e) {
                    tracing::warn!(%kind, error = %message, "retrying");
                    errors.push(message);
                } else {
                    tracing::info!(%kind, "resourceVersion expired; relisting");
                }
                return;
            }
        };
        match event {
            watcher::Event::Init => {
                self.relisting.insert(kind, BTreeMap::new());
            }
            watcher::Event::InitApply(o) => {
                self.note_version(kind, &o);
                let (id, obj) = kept_object(kind, o);
                self.relisting.entry(kind).or_default().insert(id, obj);
            }
            watcher::Event::InitDone => {
                let items = self.relisting.remove(&kind).unwrap_or_default();
                let old = self.objects.keys().filter(|id| id.kind == kind).cloned();
                self.touched.extend(old);
                self.touched.extend(items.keys().cloned());
                self.objects.retain(|id, _| id.kind != kind);
                self.objects.extend(items);
                self.listed.insert(kind);
            }
            watcher::Event::Apply(o) => {
                self.note_version(kind, &o);
                let (id, obj) = kept_object(kind, o);
                self.touched.insert(id.clone());
                self.objects.insert(id, obj);
            }
            watcher::Event::Delete(o) => {
                self.note_version(kind, &o);
                let (id, _) = kept_object(kind, o);
                self.touched.insert(id.clone());
                self.objects.remove(&id);
            }
        }
    }

    fn note_version(&mut self, kind: SourceKind, o: &SourceObject) {
        if let Some(rv) = o
            .metadata
            .resource_version
            .as_deref()
            .filter(|v| !v.is_empty())
        {
            self.rvs.set(kind, rv.to_string());
        }
    }

    /// The snapshot to send now: the first once every kind is listed, then one whenever a
    /// spec-relevant part or a `status.command` changed; None otherwise.
    fn snapshot(&mut self) -> Option<Snapshot> {
        if self.listed.len() < SourceKind::ALL.len() {
            return None;
        }
        let (specs_changed, commands_changed) = match &mut self.sent {
            None => {
                let prints = self.objects.iter();
                self.sent = Some(prints.map(|(id, o)| (id.clone(), o.body.clone())).collect());
                self.sent_commands = self
                    .objects
                    .iter()
                    .filter_map(|(id, o)| Some((id.clone(), o.command.clone()?)))
                    .collect();
                (true, true)
            }
            Some(prints) => {
                let (mut specs, mut commands) = (false, false);
                for id in &self.touched {
                    let obj = self.objects.get(id);
                    specs |= update(prints, id, obj.map(|o| o.body.clone()));
                    let command = obj.and_then(|o| o.command.clone());
                    commands |= update(&mut self.sent_commands, id, command);
                }
                (specs, commands)
            }
        };
        self.touched.clear();
        if !specs_changed && !commands_changed {
            return None;
        }
        let mut snapshot = build_snapshot(&self.objects, self.rvs.clone());
        snapshot.specs_changed = specs_changed;
        Some(snapshot)
    }
}

/// What to report for a watcher error; None for a 410 Expired, which the watcher answers by
/// relisting (routine after a compaction, not a failure).
fn describe_watch_error(kind: SourceKind, e: &watcher::Error) -> Option<String> {
    match e {
        watcher::Error::WatchError(s) if s.code == 410 => None,
        watcher::Error::InitialListFailed(e) => Some(format!(
            "listing {kind} objects: {}",
            crate::traffic::kube::describe(e)
        )),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => Some(format!(
            "watching {kind} objects: {}",
            crate::traffic::kube::describe(e)
        )),
        watcher::Error::WatchError(s) => Some(format!(
            "watching {kind} objects: Kubernetes API answered {} {}: {}",
            s.code, s.reason, s.message
        )),
        watcher::Error::NoResourceVersion => Some(format!(
            "watching {kind} objects: the server sent no resourceVersion"
        )),
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

/// All objects of one kind (following `continue` pages) and the list's resourceVersion.
async fn list_kind(
    api: &Api<SourceObject>,
    kind: SourceKind,
) -> Result<(BTreeMap<ObjectId, KeptObject>, String), String> {
    let (items, rv) = list_all(api).await?;
    let out = items.into_iter().map(|o| kept_object(kind, o)).collect();
    Ok((out, rv))
}

/// The object as JSON with `apiVersion` and `kind` set (list items omit them), trimmed to what
/// the daemon reads from a snapshot: the spec and the identifying metadata (no
/// resourceVersion, managedFields or kubectl's last-applied copy), and apart from it, of a
/// Canary's `.status`, only the `command` request. Drivers read their status through the
/// status store; keeping every status here cost a Canary's whole status (all runs and
/// measurements) per object, replaced by every measurement's status write.
fn trimmed_object(kind: SourceKind, o: SourceObject) -> (ObjectId, Value, Option<Value>) {
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
fn kept_object(kind: SourceKind, o: SourceObject) -> (ObjectId, KeptObject) {
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
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            snap.refused_uids.insert(id.clone(), uid.to_string());
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
    snap.refused_uids.retain(|id, _| refused.contains(id));
    snap
}

/// Canaries and ScheduledAnalyses whose analyses cannot be planned with `templates` (the
/// cluster's, merged with `--config`'s) and `defaults` — a template that does not exist, an arg
/// not given, no OAP address in the template and no `--skywalking` — are moved to the refused
/// objects (issue 14): a Canary is never driven, so never exposed, before every analysis it
/// will need can run; its status says which analysis and why (phase Invalid), and it is driven
/// once a change makes it plannable. File mode refuses the same configuration at start (exit 4).
pub fn refuse_unplannable(
    snap: &mut Snapshot,
    templates: &[LoadedTemplate],
    defaults: &Defaults,
    notifications: Option<&crate::notify::config::NotifyConfig>,
) {
    // (object, why, metadata.generation, metadata.uid)
    type Refused = (ObjectId, Vec<ConfigError>, Option<i64>, Option<String>);
    let mut refused: Vec<Refused> = Vec::new();
    snap.canaries.retain(|c| {
        let (doc, ns) = (&c.canary.doc, c.canary.namespace());
        let what = format!("Canary {ns}/{}", doc.metadata.name);
        let mut errs: Vec<ConfigError> = unplannable(doc, ns, templates, defaults)
            .into_iter()
            .map(|(path, why)| {
                c.canary
                    .origin
                    .error(&path, format!("{what}: this analysis cannot run: {why}"))
            })
            .collect();
        // A subscription to a sink the daemon does not have would lose every notification.
        errs.extend(
            crate::notify::config::unknown_sinks(doc.spec.notifications.as_deref(), notifications)
                .into_iter()
                .map(|(path, why)| c.canary.origin.error(&path, format!("{what}: {why}"))),
        );
        if errs.is_empty() {
            return true;
        }
        let id = ObjectId {
            kind: SourceKind::Canary,
            namespace: Some(ns.to_string()),
            name: doc.metadata.name.clone(),
        };
        refused.push((id, errs, c.generation, c.uid.clone()));
        false
    });
    snap.scheduled.retain(|s| {
        let (doc, ns) = (&s.doc, s.namespace());
        let what = format!("ScheduledAnalysis {ns}/{}", doc.metadata.name);
        let mut errs: Vec<ConfigError> =
            crate::notify::config::unknown_sinks(doc.spec.notifications.as_deref(), notifications)
                .into_iter()
                .map(|(path, why)| s.origin.error(&path, format!("{what}: {why}")))
                .collect();
        if let Err(why) = crate::schedule::driver::plan(doc, ns, templates, defaults) {
            errs.push(s.origin.error("spec.templates", format!("{what}: {why}")));
        }
        if errs.is_empty() {
            return true;
        }
        let id = ObjectId {
            kind: SourceKind::ScheduledAnalysis,
            namespace: Some(ns.to_string()),
            name: doc.metadata.name.clone(),
        };
        let generation = doc
            .metadata
            .server_fields
            .get("generation")
            .and_then(Value::as_i64);
        let uid = doc
            .metadata
            .server_fields
            .get("uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        refused.push((id, errs, generation, uid));
        false
    });
    for (id, errs, generation, uid) in refused {
        if let Some(g) = generation {
            snap.refused_generations.insert(id.clone(), g);
        }
        if let Some(uid) = uid {
            snap.refused_uids.insert(id.clone(), uid);
        }
        snap.errors.push((id, errs));
    }
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
