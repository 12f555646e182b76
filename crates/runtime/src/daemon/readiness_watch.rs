//! Cluster mode's readiness source ([`ReadinessSource`], docs/workloads.md): kube-runtime
//! watchers of the Deployments, StatefulSets and Service EndpointSlices in the watched
//! namespaces keep a compact index (ready counts only, not whole objects), from which each
//! canary task reads the readiness of its `workloadRef`. Pods are watched only once a canary
//! asks about a pod selector, and only ready pods' labels are kept.
//!
//! Unknown is never ready: a kind not listed yet, a watch error (until the relist after it
//! completes), a missing workload or a generation its controller has not observed yet give
//! no count, with a message saying why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use skycanary_kube::watch::{Relisted, relisting};

use crate::api::canary::ReadinessStatus;
use crate::canary::readiness::{
    ReadinessFuture, ReadinessQuery, ReadinessSource, WorkloadTemplate, workload_template,
};
use crate::resources::canary::{WorkloadKind, WorkloadRef};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Most objects of one kind the index keeps; past it nothing more is kept and the kind is
/// unknown until a list fits again (a watch of a cluster this large should be narrowed with
/// `--namespace`).
pub const MAX_OBJECTS: usize = 100_000;

/// Most labels kept of one pod (in key order); a selector that names a label past them
/// cannot be decided for that pod, which makes the count unknown, never larger.
pub const MAX_POD_LABELS: usize = 64;

/// (namespace, name)
type Key = (String, String);

/// A ready pod as the index keeps it: its labels, nothing else (a pod that is not ready is
/// not kept at all).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyPod {
    /// At most [`MAX_POD_LABELS`], sorted by key.
    labels: Box<[(Box<str>, Box<str>)]>,
    /// The pod has more labels than kept.
    truncated: bool,
}

impl ReadyPod {
    /// Whether the pod carries every label of `sel`; `None` when a label past the kept ones
    /// decides it.
    fn matches(&self, sel: &BTreeMap<String, String>) -> Option<bool> {
        let last = self.labels.last().map(|(k, _)| &**k);
        for (k, v) in sel {
            match self
                .labels
                .binary_search_by(|(lk, _)| (**lk).cmp(k.as_str()))
            {
                Ok(i) if *self.labels[i].1 == **v => {}
                Ok(_) => return Some(false),
                Err(_) if self.truncated && last.is_some_and(|l| k.as_str() > l) => return None,
                Err(_) => return Some(false),
            }
        }
        Some(true)
    }
}

/// The index entry of a Pod: its labels when it is ready (condition `Ready` is `True`) and
/// not terminating (no `deletionTimestamp`); `None` otherwise.
pub fn ready_pod(p: &Pod) -> Option<ReadyPod> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ready = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    let all = p.metadata.labels.as_ref();
    let labels = all
        .into_iter()
        .flatten()
        .take(MAX_POD_LABELS)
        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
        .collect();
    Some(ReadyPod {
        labels,
        truncated: all.is_some_and(|l| l.len() > MAX_POD_LABELS),
    })
}

/// Ready pods of one Deployment or StatefulSet; `None` with why when not known.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadCount {
    /// `status.readyReplicas`, once the controller observed the current generation.
    pub ready: Result<i64, String>,
    /// `spec.template`'s hash and images: kept, not the template (the index stays small).
    pub template: Option<WorkloadTemplate>,
}

/// Ready endpoints of one EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceCount {
    /// Its Service (`kubernetes.io/service-name`).
    pub service: String,
    /// `IPv4`, `IPv6` or `FQDN`: a dual-stack Service has one slice family per type, each
    /// listing the same pods, so types are counted apart.
    pub address_type: String,
    /// Endpoints whose `conditions.ready` is not false (unset means ready).
    pub ready: i64,
}

/// What a watcher reported, in the index's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen<V> {
    /// A (re)list begins.
    Init,
    /// An object of the (re)list.
    InitItem(Key, V),
    /// The (re)list is complete: the index now is what it listed.
    InitDone,
    /// An object was added or changed.
    Upsert(Key, V),
    /// An object was deleted.
    Delete(Key),
    /// The watch failed; unknown until the next complete list.
    Error(String),
}

/// The objects of one kind as last listed and watched.
#[derive(Debug, Clone)]
pub struct Table<V> {
    synced: bool,
    error: Option<String>,
    items: BTreeMap<Key, V>,
    listing: Option<BTreeMap<Key, V>>,
    /// An object was not kept because [`MAX_OBJECTS`] were: in `items`, in `listing`.
    full: bool,
    listing_full: bool,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            synced: false,
            error: None,
            items: BTreeMap::new(),
            listing: None,
            full: false,
            listing_full: false,
        }
    }
}

impl<V> Table<V> {
    /// Applies one watcher report.
    pub fn apply(&mut self, seen: Seen<V>) {
        match seen {
            Seen::Init => {
                self.listing = Some(BTreeMap::new());
                self.listing_full = false;
            }
            Seen::InitItem(k, v) => {
                if let Some(l) = &mut self.listing {
                    self.listing_full |= !bounded_insert(l, k, v);
                }
            }
            Seen::InitDone => {
                if let Some(l) = self.listing.take() {
                    self.items = l;
                    self.full = self.listing_full;
                    self.synced = true;
                    self.error = None;
                }
            }
            Seen::Upsert(k, v) => {
                self.full |= !bounded_insert(&mut self.items, k, v);
            }
            Seen::Delete(k) => {
                self.items.remove(&k);
            }
            Seen::Error(e) => {
                self.synced = false;
                self.listing = None;
                self.error = Some(e);
            }
        }
    }

    /// The items, or why they are not known now.
    fn known(&self, what: &str) -> Result<&BTreeMap<Key, V>, String> {
        if let Some(e) = &self.error {
            return Err(format!("watching {what} failed: {e}"));
        }
        if !self.synced {
            return Err(format!("{what} are not listed yet"));
        }
        if self.full {
            return Err(format!(
                "more than {MAX_OBJECTS} {what} are watched; narrow the daemon with --namespace"
            ));
        }
        Ok(&self.items)
    }
}

/// Inserts unless that would make `map` hold more than [`MAX_OBJECTS`]; false when refused.
fn bounded_insert<V>(map: &mut BTreeMap<Key, V>, k: Key, v: V) -> bool {
    if map.len() >= MAX_OBJECTS && !map.contains_key(&k) {
        return false;
    }
    map.insert(k, v);
    true
}

/// Everything the watchers know.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// The watched Deployments' ready replicas, as last listed and watched.
    pub deployments: Table<WorkloadCount>,
    /// The watched StatefulSets' ready replicas, as last listed and watched.
    pub stateful_sets: Table<WorkloadCount>,
    /// EndpointSlices that belong to a Service.
    pub slices: Table<SliceCount>,
    /// Ready Pods (watched once a canary asks about a selector).
    pub pods: Table<ReadyPod>,
}

/// The ready count a workload's status gives, once its controller has seen its spec.
fn workload_count(
    kind: &str,
    generation: Option<i64>,
    observed: Option<i64>,
    ready: Option<i32>,
) -> WorkloadCount {
    let ready = match (generation, observed) {
        (Some(g), o) if o.is_none_or(|o| o < g) => Err(format!(
            "its controller has not observed generation {g} of the {kind} yet"
        )),
        _ => Ok(i64::from(ready.unwrap_or(0))),
    };
    WorkloadCount {
        ready,
        template: None,
    }
}

/// Ready pods that surely run the current template: during a rollout `readyReplicas` also
/// counts old pods, so at most `readyReplicas − (replicas − updatedReplicas)` of them are
/// new (every old pod counted as ready; exact once the rollout is done). Kubernetes omits
/// zero counts: absent is 0.
fn current_template_ready(
    mut count: WorkloadCount,
    replicas: Option<i32>,
    updated: Option<i32>,
) -> WorkloadCount {
    let old = i64::from(replicas.unwrap_or(0)) - i64::from(updated.unwrap_or(0));
    if let Ok(n) = &mut count.ready {
        *n = (*n - old.max(0)).max(0);
    }
    count
}

/// The hash and images of a typed pod template (serialized as the API server stores it).
fn template_of(t: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<WorkloadTemplate> {
    serde_json::to_value(t).ok().map(|v| workload_template(&v))
}

/// The index entry of a Deployment.
pub fn deployment_count(d: &Deployment) -> WorkloadCount {
    let s = d.status.as_ref();
    let count = workload_count(
        "Deployment",
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
    );
    WorkloadCount {
        template: d.spec.as_ref().and_then(|s| template_of(&s.template)),
        ..current_template_ready(
            count,
            s.and_then(|s| s.replicas),
            s.and_then(|s| s.updated_replicas),
        )
    }
}

/// The index entry of a StatefulSet.
pub fn stateful_set_count(d: &StatefulSet) -> WorkloadCount {
    let s = d.status.as_ref();
    let count = workload_count(
        "StatefulSet",
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
    );
    WorkloadCount {
        template: d.spec.as_ref().and_then(|s| template_of(&s.template)),
        ..current_template_ready(
            count,
            s.map(|s| s.replicas),
            s.and_then(|s| s.updated_replicas),
        )
    }
}

/// The index entry of an EndpointSlice; none for a slice of no Service.
pub fn slice_count(s: &EndpointSlice) -> Option<SliceCount> {
    let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let ready = s
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .count();
    Some(SliceCount {
        service,
        address_type: s.address_type.clone(),
        ready: i64::try_from(ready).unwrap_or(i64::MAX),
    })
}

impl Index {
    /// Ready pods of `w` in `namespace`, or why not known.
    pub fn workload_ready(&self, namespace: &str, w: &WorkloadRef) -> Result<i64, String> {
        if w.from_subset {
            // The canary task turns it into a selector first (canary::readiness::read).
            return Err("a fromSubset reference is not resolved to its subset's labels".into());
        }
        let (Some(kind), Some(name)) = (w.kind, &w.name) else {
            return match &w.selector {
                Some(sel) => self.pods_ready(namespace, &sel.match_labels),
                None => Err("workloadRef names no workload".into()),
            };
        };
        let (table, what) = match kind {
            WorkloadKind::Deployment => (&self.deployments, "Deployment"),
            WorkloadKind::StatefulSet => (&self.stateful_sets, "StatefulSet"),
        };
        let items = table.known(&format!("{what}s"))?;
        match items.get(&(namespace.to_string(), name.clone())) {
            None => Err(format!("{what} {namespace}/{name} not found")),
            Some(c) => c
                .ready
                .clone()
                .map_err(|e| format!("{what} {namespace}/{name}: {e}")),
        }
    }

    /// Ready pods in `namespace` carrying every label of `sel`, or why not known.
    pub fn pods_ready(
        &self,
        namespace: &str,
        sel: &BTreeMap<String, String>,
    ) -> Result<i64, String> {
        let items = self.pods.known("Pods")?;
        let from = (namespace.to_string(), String::new());
        let mut n: i64 = 0;
        for ((ns, name), pod) in items.range(from..) {
            if ns != namespace {
                break;
            }
            match pod.matches(sel) {
                Some(true) => n = n.saturating_add(1),
                Some(false) => {}
                None => {
                    return Err(format!(
                        "Pod {ns}/{name} has more than {MAX_POD_LABELS} labels and the \
                         selector names one past them"
                    ));
                }
            }
        }
        Ok(n)
    }

    /// The pod template of `w` (named by kind and name) in `namespace`, when known.
    pub fn workload_template(&self, namespace: &str, w: &WorkloadRef) -> Option<WorkloadTemplate> {
        let (Some(kind), Some(name)) = (w.kind, &w.name) else {
            return None;
        };
        let table = match kind {
            WorkloadKind::Deployment => &self.deployments,
            WorkloadKind::StatefulSet => &self.stateful_sets,
        };
        let items = table.known("workloads").ok()?;
        items
            .get(&(namespace.to_string(), name.clone()))?
            .template
            .clone()
    }

    /// Ready endpoints of the Service `host` (short, `svc.ns` or FQDN; short names are in
    /// `namespace`), or why not known. Address types count apart; the largest counts.
    pub fn service_ready(&self, namespace: &str, host: &str) -> Result<i64, String> {
        let mut labels = host.split('.');
        let service = labels.next().unwrap_or_default();
        let ns = labels.next().unwrap_or(namespace);
        let items = self.slices.known("EndpointSlices")?;
        let mut by_type: BTreeMap<&str, i64> = BTreeMap::new();
        for ((slice_ns, _), c) in items {
            if slice_ns == ns && c.service == service {
                let n = by_type.entry(c.address_type.as_str()).or_default();
                *n = n.saturating_add(c.ready);
            }
        }
        Ok(by_type.into_values().max().unwrap_or(0))
    }

    /// The readiness of a canary: its workload's ready pods, at most its Service's ready
    /// endpoints when it has its own Service; the stable workload's when named.
    pub fn readiness(
        &self,
        namespace: &str,
        canary: &WorkloadRef,
        stable: Option<&WorkloadRef>,
        canary_service: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ReadinessStatus {
        let mut why = Vec::new();
        let workload = self.workload_ready(namespace, canary);
        let service = canary_service.map(|h| {
            self.service_ready(namespace, h)
                .map_err(|e| format!("Service {h}: {e}"))
        });
        let canary_ready = match (workload, service) {
            (Ok(w), None) => Some(w),
            (Ok(w), Some(Ok(s))) => Some(w.min(s)),
            (w, s) => {
                why.extend(w.err());
                why.extend(s.and_then(Result::err));
                None
            }
        };
        let stable_ready = stable.and_then(|s| match self.workload_ready(namespace, s) {
            Ok(n) => Some(n),
            Err(e) => {
                why.push(format!("stable: {e}"));
                None
            }
        });
        why.dedup();
        let status = crate::canary::readiness::status_from(canary_ready, stable_ready, &why, now);
        crate::canary::readiness::with_template(status, self.workload_template(namespace, canary))
    }
}

/// The cluster-mode readiness source: the index the watchers keep. Tasks ask it every
/// [`ReadinessSource::interval`] (an in-memory lookup).
pub struct ClusterReadiness {
    index: Mutex<Index>,
    /// Set by the first query about a pod selector; starts the Pod watch (once).
    pods_asked: AtomicBool,
    pods_wanted: tokio::sync::Notify,
}

/// How often a canary task asks: the watchers keep the index current, so this is only the
/// delay between a watch event and the task hearing of it.
pub const POLL: Duration = Duration::from_millis(250);

impl ReadinessSource for ClusterReadiness {
    fn readiness<'a>(
        &'a self,
        query: &'a ReadinessQuery,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ReadinessFuture<'a> {
        let status = self.current(
            &query.namespace,
            &query.workload,
            query.stable.as_ref(),
            query.canary_service.as_deref(),
            now,
        );
        Box::pin(std::future::ready(status))
    }

    fn interval(&self) -> Duration {
        POLL
    }
}

impl ClusterReadiness {
    /// The readiness of a canary as the index knows it now.
    pub fn current(
        &self,
        namespace: &str,
        canary: &WorkloadRef,
        stable: Option<&WorkloadRef>,
        canary_service: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ReadinessStatus {
        let selects = |w: &WorkloadRef| w.kind.is_none() && w.selector.is_some();
        if (selects(canary) || stable.is_some_and(selects))
            && !self.pods_asked.swap(true, Ordering::Relaxed)
        {
            // A stored permit: the Pod watch starts even if it is not waiting yet.
            self.pods_wanted.notify_one();
        }
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.readiness(namespace, canary, stable, canary_service, now)
    }

    /// Starts the watchers over `namespace` (None: all namespaces); they run until the
    /// returned tasks are aborted. The Pod watcher waits for the first query about a pod
    /// selector: a daemon whose canaries name only Deployments and StatefulSets never lists
    /// the cluster's pods.
    pub fn start(
        client: Client,
        namespace: Option<String>,
    ) -> (Arc<ClusterReadiness>, Vec<tokio::task::JoinHandle<()>>) {
        let this = Arc::new(ClusterReadiness {
            index: Mutex::new(Index::default()),
            pods_asked: AtomicBool::new(false),
            pods_wanted: tokio::sync::Notify::new(),
        });
        let all = watcher::Config::default();
        let slices = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let tasks = vec![
            tokio::spawn(run_watch(
                api::<Deployment>(&client, &namespace),
                all.clone(),
                this.clone(),
                |i| &mut i.deployments,
                |d| Some(deployment_count(d)),
            )),
            tokio::spawn(run_watch(
                api::<StatefulSet>(&client, &namespace),
                all,
                this.clone(),
                |i| &mut i.stateful_sets,
                |d| Some(stateful_set_count(d)),
            )),
            tokio::spawn(run_watch(
                api::<EndpointSlice>(&client, &namespace),
                slices,
                this.clone(),
                |i| &mut i.slices,
                slice_count,
            )),
            tokio::spawn({
                let (this, api) = (this.clone(), api::<Pod>(&client, &namespace));
                async move {
                    this.pods_wanted.notified().await;
                    let config = watcher::Config::default();
                    run_watch(api, config, this, |i| &mut i.pods, ready_pod).await;
                }
            }),
        ];
        (this, tasks)
    }

    fn apply<V>(&self, table: fn(&mut Index) -> &mut Table<V>, seen: Seen<V>) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        table(&mut index).apply(seen);
    }
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn key_of<K: Resource>(o: &K) -> Option<Key> {
    Some((o.meta().namespace.clone()?, o.meta().name.clone()?))
}

/// Feeds one kind's watch into its table. A watch error makes the kind unknown and starts
/// over with a fresh list (backed off: [`relisting`]), so nothing is trusted that may have been
/// missed.
async fn run_watch<K, V>(
    api: Api<K>,
    config: watcher::Config,
    this: Arc<ClusterReadiness>,
    table: fn(&mut Index) -> &mut Table<V>,
    convert: fn(&K) -> Option<V>,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    <K as Resource>::DynamicType: Default,
{
    let events = relisting(api, config, "readiness watch");
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let seen = match event {
            Relisted::Init => Seen::Init,
            Relisted::InitDone => Seen::InitDone,
            Relisted::InitApply(o) => match (key_of(&o), convert(&o)) {
                (Some(k), Some(v)) => Seen::InitItem(k, v),
                _ => continue,
            },
            Relisted::Apply(o) => match (key_of(&o), convert(&o)) {
                (Some(k), Some(v)) => Seen::Upsert(k, v),
                (Some(k), None) => Seen::Delete(k),
                _ => continue,
            },
            Relisted::Delete(o) => match key_of(&o) {
                Some(k) => Seen::Delete(k),
                None => continue,
            },
            Relisted::Error(e) => Seen::Error(e),
        };
        this.apply(table, seen);
    }
}

#[cfg(test)]
#[path = "readiness_watch_tests.rs"]
mod tests;
