//! Cluster mode's readiness source ([`ReadinessSource`], docs/workloads.md): kube-runtime
//! watchers of the Deployments, StatefulSets and Service EndpointSlices in the watched
//! namespaces keep a compact index (ready counts only, not whole objects), from which each
//! canary task reads the readiness of its `workloadRef`.
//!
//! Unknown is never ready: a kind not listed yet, a watch error (until the relist after it
//! completes), a missing workload or a generation its controller has not observed yet give
//! no count, with a message saying why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::canary::ReadinessStatus;
use crate::backoff::Backoff;
use crate::canary::readiness::{ReadinessFuture, ReadinessQuery, ReadinessSource};
use crate::resources::canary::{WorkloadKind, WorkloadRef};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Most objects of one kind the index keeps; past it nothing more is kept and the kind is
/// unknown until a list fits again (a watch of a cluster this large should be narrowed with
/// `--namespace`).
pub const MAX_OBJECTS: usize = 100_000;

/// (namespace, name)
type Key = (String, String);

/// Ready pods of one Deployment or StatefulSet; `None` with why when not known.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadCount {
    /// `status.readyReplicas`, once the controller observed the current generation.
    pub ready: Result<i64, String>,
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
    WorkloadCount { ready }
}

/// The index entry of a Deployment.
pub fn deployment_count(d: &Deployment) -> WorkloadCount {
    let s = d.status.as_ref();
    workload_count(
        "Deployment",
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
    )
}

/// The index entry of a StatefulSet.
pub fn stateful_set_count(d: &StatefulSet) -> WorkloadCount {
    let s = d.status.as_ref();
    workload_count(
        "StatefulSet",
        d.metadata.generation,
        s.and_then(|s| s.observed_generation),
        s.and_then(|s| s.ready_replicas),
    )
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
        let (Some(kind), Some(name)) = (w.kind, &w.name) else {
            return Err(
                "a pod selector is not watched in cluster mode; name a Deployment \
                        or StatefulSet in workloadRef"
                    .into(),
            );
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
        ReadinessStatus {
            canary_ready,
            stable_ready,
            observed_at: now,
            message: (!why.is_empty()).then(|| why.join("; ")),
        }
    }
}

/// The cluster-mode readiness source: the index the watchers keep. Tasks ask it every
/// [`ReadinessSource::interval`] (an in-memory lookup).
pub struct ClusterReadiness {
    index: Mutex<Index>,
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
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        index.readiness(namespace, canary, stable, canary_service, now)
    }

    /// Starts the three watchers over `namespace` (None: all namespaces); they run until
    /// the returned tasks are aborted.
    pub fn start(
        client: Client,
        namespace: Option<String>,
    ) -> (Arc<ClusterReadiness>, Vec<tokio::task::JoinHandle<()>>) {
        let this = Arc::new(ClusterReadiness {
            index: Mutex::new(Index::default()),
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

/// Feeds one kind's watcher into its table. A watch error makes the kind unknown and starts
/// over with a fresh list (backed off), so nothing is trusted that may have been missed.
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
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let events = watcher(api.clone(), config.clone());
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let seen = match event {
                Ok(watcher::Event::Init) => Seen::Init,
                Ok(watcher::Event::InitDone) => {
                    backoff.reset();
                    Seen::InitDone
                }
                Ok(watcher::Event::InitApply(o)) => match (key_of(&o), convert(&o)) {
                    (Some(k), Some(v)) => Seen::InitItem(k, v),
                    _ => continue,
                },
                Ok(watcher::Event::Apply(o)) => match (key_of(&o), convert(&o)) {
                    (Some(k), Some(v)) => Seen::Upsert(k, v),
                    (Some(k), None) => Seen::Delete(k),
                    _ => continue,
                },
                Ok(watcher::Event::Delete(o)) => match key_of(&o) {
                    Some(k) => Seen::Delete(k),
                    None => continue,
                },
                Err(e) => {
                    tracing::warn!("readiness watch: {e}; relisting");
                    this.apply(table, Seen::Error(e.to_string()));
                    break;
                }
            };
            this.apply(table, seen);
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
#[path = "readiness_watch_tests.rs"]
mod tests;
