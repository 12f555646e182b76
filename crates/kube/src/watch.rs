//! The watches the daemon keeps, as streams of what changed (kube-runtime's `watcher`), and
//! the listing of its own kinds; what a change means is the runtime's: a new snapshot of the
//! resources, a drift notice to the canary tasks, an entry of the readiness index.

use std::fmt;
use std::time::Duration;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use skycanary_ports::manifest::ObjectKey;

use crate::backoff::Backoff;
use crate::status::{GROUP, VERSION};
use crate::traffic::{ISTIO_NETWORKING_GROUP, IstioApiVersion};

/// The first and the longest wait between two attempts of a failed watch.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The VirtualServices of `namespace` (None: all namespaces) that are added, modified or
/// deleted, and every one listed by each (re)list: kube-runtime's watcher resumes a closed
/// watch from its last version and relists on 410 Expired, backed off (bounded, doubling) on
/// errors, so the stream never ends.
pub fn virtual_service_changes(
    client: Client,
    version: IstioApiVersion,
    namespace: Option<String>,
) -> impl Stream<Item = ObjectKey> + Send {
    let gvk = GroupVersionKind::gvk(ISTIO_NETWORKING_GROUP, version.as_str(), "VirtualService");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    watcher(api, watcher::Config::default())
        .backoff(Backoff::new(RETRY_MIN, RETRY_MAX))
        .filter_map(|event| {
            std::future::ready(match event {
                Ok(
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o),
                ) => virtual_service_key(&o),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                    tracing::debug!("VirtualService watch expired; relisting");
                    None
                }
                Err(e) => {
                    tracing::warn!("watching VirtualServices for drift: {e}; retrying");
                    None
                }
            })
        })
}

fn virtual_service_key(o: &DynamicObject) -> Option<ObjectKey> {
    Some(ObjectKey::virtual_service(
        o.metadata.namespace.clone()?,
        o.metadata.name.clone()?,
    ))
}

/// Page size of the one-shot LIST requests (kube's watcher uses the same).
const LIST_PAGE: u32 = 500;

/// The skycanary kinds the daemon reads from the cluster (its resource source).
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

/// The API of one kind: of `namespace` (None: all namespaces) when the kind is namespaced,
/// cluster-wide otherwise.
pub fn source_api(client: &Client, namespace: Option<&str>, kind: SourceKind) -> Api<SourceObject> {
    match (namespace, kind.namespaced()) {
        (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &kind.resource()),
        _ => Api::all_with(client.clone(), &kind.resource()),
    }
}

/// Every object of `api`, listed in pages of `LIST_PAGE` (500), and the resourceVersion of the
/// last page; the error is the API's answer in words ([`crate::traffic::describe`]).
pub async fn list_all(api: &Api<SourceObject>) -> Result<(Vec<SourceObject>, String), String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(LIST_PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api
            .list(&lp)
            .await
            .map_err(|e| crate::traffic::describe(&e))?;
        let rv = page.metadata.resource_version.clone().unwrap_or_default();
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => token = Some(next),
            None => return Ok((out, rv)),
        }
    }
}

/// One kube-runtime watcher per [`SourceKind`] (list, watch from the list's version with
/// watches of `timeout_secs`, resume a closed watch from the last version, relist on 410
/// Expired), each backed off with its own copy of `backoff` on errors, merged into one stream
/// of (kind, event). Dropping it ends every watch.
pub fn source_events(
    client: &Client,
    namespace: Option<&str>,
    timeout_secs: u32,
    backoff: Backoff,
) -> SelectAll<BoxStream<'static, (SourceKind, watcher::Result<watcher::Event<SourceObject>>)>> {
    let streams = SourceKind::ALL.map(|kind| {
        let config = watcher::Config::default().timeout(timeout_secs);
        watcher(source_api(client, namespace, kind), config)
            .backoff(backoff.clone())
            .map(move |event| (kind, event))
            .boxed()
    });
    futures_util::stream::select_all(streams)
}

/// What a [`relisting`] watch reports: kube-runtime's watcher events, and its failures as an
/// item of their own.
#[derive(Debug, Clone, PartialEq)]
pub enum Relisted<K> {
    /// A (re)list begins.
    Init,
    /// An object of the (re)list.
    InitApply(K),
    /// The (re)list is complete: what it listed is all there is.
    InitDone,
    /// An object was added or changed.
    Apply(K),
    /// An object was deleted.
    Delete(K),
    /// The watch failed: what was listed may be stale until the next [`Relisted::InitDone`].
    Error(String),
}

/// A watch of `api` that trusts nothing it may have missed: after any error (reported as
/// [`Relisted::Error`], logged as `what`) or an ended watch it waits (doubling from 500 ms up
/// to 30 s, back to 500 ms after a complete list) and starts over with a fresh list. The
/// stream never ends.
pub fn relisting<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
) -> impl Stream<Item = Relisted<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
    <K as Resource>::DynamicType: Default,
{
    struct State<K: Resource + Clone + 'static> {
        api: Api<K>,
        config: watcher::Config,
        backoff: Backoff,
        events: Option<BoxStream<'static, watcher::Result<watcher::Event<K>>>>,
        started: bool,
    }
    let state = State {
        api,
        config,
        backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
        events: None,
        started: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            let events = match &mut st.events {
                Some(events) => events,
                None => {
                    if st.started {
                        tokio::time::sleep(st.backoff.next_delay()).await;
                    }
                    st.started = true;
                    st.events
                        .insert(watcher(st.api.clone(), st.config.clone()).boxed())
                }
            };
            let item = match events.next().await {
                Some(Ok(watcher::Event::Init)) => Relisted::Init,
                Some(Ok(watcher::Event::InitApply(o))) => Relisted::InitApply(o),
                Some(Ok(watcher::Event::InitDone)) => {
                    st.backoff.reset();
                    Relisted::InitDone
                }
                Some(Ok(watcher::Event::Apply(o))) => Relisted::Apply(o),
                Some(Ok(watcher::Event::Delete(o))) => Relisted::Delete(o),
                Some(Err(e)) => {
                    tracing::warn!("{what}: {e}; relisting");
                    st.events = None;
                    Relisted::Error(e.to_string())
                }
                None => {
                    st.events = None;
                    continue;
                }
            };
            return Some((item, st));
        }
    })
}

mod object;
pub use object::SourceObject;

#[cfg(test)]
mod tests;
