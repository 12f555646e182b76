//! Pure transforms over Istio VirtualService and DestinationRule JSON.
//!
//! Nothing here does I/O: the router reads an object, calls [`apply`] / [`restore`], and writes
//! the result back only when it differs from what it read (`apply(x) == x` when nothing changes).
//! Every field we do not own (retries, corsPolicy, other routes, labels, status, …) is carried
//! through untouched, because the object is edited as `serde_json::Value`, never re-serialised
//! from a typed view.
//!
//! Decisions that differ from Argo Rollouts (see DESIGN.md §5):
//! - Hosts are compared with Kubernetes name resolution (`svc` = `svc.ns` = `svc.ns.svc` =
//!   `svc.ns.svc.cluster.local`), not by the part before the first dot, so `svc.otherns` is a
//!   different host. Hosts written in the VirtualService resolve in its namespace; the Canary's
//!   `stableService`/`canaryService`/additional hosts in the Canary's namespace. So Argo's
//!   documented setup (VirtualService in `istio-routes` naming `stable-svc.rollouts`, Canary in
//!   `rollouts` with `stableService: stable-svc`) matches, and a short `stable-svc` written in
//!   `istio-routes` (another Service, for Istio) does not.
//! - A destination that is neither stable, canary nor a declared additional destination is an
//!   error when it has a non-zero weight (Argo deletes it silently).
//! - Weights are computed against `max_weight`, and a negative stable weight is an error.
//! - When the reference names no route at all, every kind present is inferred as Argo does:
//!   its single http route (managed routes aside), its single tls route and its single tcp route
//!   all move; several routes of one kind are an error, never a silent partial move. When the
//!   reference names routes, the kinds it names nothing of are left alone (Argo would patch
//!   their first route).
//! - Header routes (`setHeaderRoute`) get one match entry per header matcher (OR), as Argo
//!   writes them.
//! - A selected route holding only the stable destination gets the canary destination added
//!   (a copy of the stable one with host or subset replaced, port kept) once the canary needs
//!   weight.
//! - The routes as they were before our first change are kept in the annotation
//!   [`ORIGINAL_ROUTES_ANNOTATION`] so that [`restore`] can put them back.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::model::{
    AdditionalDestination, Backend, DesiredRouting, DestinationWeight, HeaderMatch, HeaderRoute,
    IstioRouting, MirrorMatch, MirrorRoute, RouteKind, RouteWeights, StringMatch, TcpRouteRef,
    TlsRouteRef, VirtualServiceRef,
};

/// Annotation holding the routes before skycanary's first change and a fingerprint of the
/// routes it last wrote, so that a user's later edit is never overwritten by [`restore`].
pub const ORIGINAL_ROUTES_ANNOTATION: &str = "skycanary.io/original-routes";

/// Annotation written with a rollback's weights, naming the run it rolled back
/// (`<run>; rolled back <time>`): a restarted daemon whose saved status is older than the
/// rollback reads it and aborts that run instead of resuming it forward (RELIABILITY.md, the
/// rollback invariant). Any forward write removes it; a forward write of the run it names is
/// refused.
pub const ROLLED_BACK_ANNOTATION: &str = "skycanary.io/rolled-back";

/// skycanary's bookkeeping annotations: in file mode they live in a sidecar file, not in the
/// manifest (`traffic::sidecar`); they are never drift.
pub const STATE_ANNOTATIONS: [&str; 2] = [ORIGINAL_ROUTES_ANNOTATION, ROLLED_BACK_ANNOTATION];

/// The run a VirtualService's rollback marker names, if it carries one.
pub fn rollback_marker(vs: &Value) -> Option<&str> {
    let raw = vs
        .get("metadata")?
        .get("annotations")?
        .get(ROLLED_BACK_ANNOTATION)?
        .as_str()?;
    Some(raw.split_once("; ").map_or(raw, |(run, _)| run))
}

/// The VirtualService with a rollback marker naming `run`, written at `at` (RFC 3339).
pub fn with_rollback_marker(vs: &Value, run: &str, at: &str) -> Value {
    let mut out = vs.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        if !matches!(meta.get("annotations"), Some(Value::Object(_))) {
            meta.insert("annotations".into(), Value::Object(Map::new()));
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.insert(
                ROLLED_BACK_ANNOTATION.into(),
                Value::String(format!("{run}; rolled back {at}")),
            );
        }
    }
    out
}

/// The VirtualService without a rollback marker (the annotations map goes too when the marker
/// was all it held).
pub fn without_rollback_marker(vs: &Value) -> Value {
    let mut out = vs.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let now_empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => a.remove(ROLLED_BACK_ANNOTATION).is_some() && a.is_empty(),
            None => false,
        };
        if now_empty {
            meta.remove("annotations");
        }
    }
    out
}

/// Route kinds and their key under `spec`.
const KINDS: [(RouteKind, &str); 3] = [
    (RouteKind::Http, "http"),
    (RouteKind::Tls, "tls"),
    (RouteKind::Tcp, "tcp"),
];

/// Lower-case name of a route kind, as used under `spec` and in messages.
fn kind_name(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::Http => "http",
        RouteKind::Tls => "tls",
        RouteKind::Tcp => "tcp",
    }
}

/// Why a VirtualService or DestinationRule cannot be read or changed. Every message names the
/// object, and where it applies the route kind, the route and the missing name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The Canary's routing settings contradict themselves (caught before touching anything).
    #[error("invalid routing configuration for VirtualService {vs}: {reason}")]
    InvalidConfig {
        /// VirtualService name.
        vs: String,
        /// What is wrong.
        reason: String,
    },
    /// A field does not have the shape Istio defines.
    #[error("VirtualService {vs} is malformed at {path}: {reason}")]
    Malformed {
        /// VirtualService name.
        vs: String,
        /// JSON path of the field.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A route named in the Canary does not exist.
    #[error("{} route \"{route}\" not found in VirtualService {vs}", kind_name(*kind))]
    RouteNotFound {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// Route name.
        route: String,
    },
    /// A TLS/TCP selector matched no route.
    #[error("no {} route matching {selector} found in VirtualService {vs}", kind_name(*kind))]
    NoMatchingRoute {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// The selector, e.g. `port 443 and sniHosts [a.example]`.
        selector: String,
    },
    /// No route names were given and the route to manage cannot be inferred.
    #[error(
        "VirtualService {vs} must have exactly one route when routes are omitted, \
         found {found} {} routes (managed routes excluded)",
        kind_name(*kind)
    )]
    AmbiguousRoutes {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// How many candidates were found.
        found: usize,
    },
    /// Nothing to split: the VirtualService has no route the Canary could manage.
    #[error("VirtualService {vs} has no http, tls or tcp route to manage")]
    NoRoutes {
        /// VirtualService name.
        vs: String,
    },
    /// The stable or canary destination is missing from a selected route.
    #[error("{role} {what} \"{name}\" not found in {} route \"{route}\" of VirtualService {vs}{hint}", kind_name(*kind))]
    DestinationNotFound {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// Route name or `#index` (boxed, like `hint`, to keep the error small).
        route: Box<str>,
        /// `stable` or `canary`.
        role: &'static str,
        /// `host` or `subset`.
        what: &'static str,
        /// The host or subset looked for.
        name: String,
        /// What the route holds instead (starts with `; `), or empty.
        hint: Box<str>,
    },
    /// A selected http route delegates to another VirtualService: the weights live there.
    #[error(
        "http route \"{route}\" of VirtualService {vs} delegates to VirtualService {delegate} and has \
         no destinations to weigh; name the delegate VirtualService ({delegate}) in the Canary instead"
    )]
    Delegated {
        /// VirtualService name (the root).
        vs: String,
        /// Route name or `#index`.
        route: String,
        /// `name` or `name.namespace` of the delegate.
        delegate: String,
    },
    /// More than one destination of a route is the stable (or canary) one.
    #[error(
        "{role} {what} \"{name}\" matches {count} destinations in {} route \"{route}\" of VirtualService {vs}",
        kind_name(*kind)
    )]
    AmbiguousDestination {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// Route name or `#index`.
        route: String,
        /// `stable` or `canary`.
        role: &'static str,
        /// `host` or `subset`.
        what: &'static str,
        /// The host or subset.
        name: String,
        /// Number of matching destinations.
        count: usize,
    },
    /// A destination we do not know carries traffic; we refuse rather than drop it.
    #[error(
        "destination \"{destination}\" with weight {weight} in {} route \"{route}\" of VirtualService {vs} \
         is neither stable, canary nor an additional destination; list it in additionalDestinations \
         or set its weight to 0",
        kind_name(*kind)
    )]
    UnknownDestination {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// Route name or `#index`.
        route: String,
        /// `host[/subset]` of the destination.
        destination: String,
        /// Its weight.
        weight: i64,
    },
    /// The desired canary weight is outside `0..=max_weight`.
    #[error("canary weight {weight} for VirtualService {vs} is outside 0..={max}")]
    WeightOutOfRange {
        /// VirtualService name.
        vs: String,
        /// Desired canary weight.
        weight: i64,
        /// `max_weight`.
        max: i64,
    },
    /// Additional destinations leave too little weight for stable.
    #[error(
        "additional destinations hold {others} of {max} in {} route \"{route}\" of VirtualService {vs}: \
         canary weight {canary} would leave a negative stable weight",
        kind_name(*kind)
    )]
    NegativeStable {
        /// VirtualService name.
        vs: String,
        /// Route kind.
        kind: RouteKind,
        /// Route name or `#index`.
        route: String,
        /// Sum of the additional destinations' weights.
        others: i64,
        /// Desired canary weight.
        canary: i64,
        /// `max_weight`.
        max: i64,
    },
    /// A header or mirror route is not listed in `managedRoutes`.
    #[error("http route \"{route}\" for VirtualService {vs} is not listed in managedRoutes")]
    UnmanagedRoute {
        /// VirtualService name.
        vs: String,
        /// Route name.
        route: String,
    },
    /// A desired header or mirror route cannot be built.
    #[error("cannot build http route \"{route}\" in VirtualService {vs}: {reason}")]
    InvalidManagedRoute {
        /// VirtualService name.
        vs: String,
        /// Route name.
        route: String,
        /// What is wrong.
        reason: String,
    },
    /// The original-routes annotation cannot be read.
    #[error("VirtualService {vs}: annotation {ORIGINAL_ROUTES_ANNOTATION} is unreadable: {reason}")]
    BadSnapshot {
        /// VirtualService name.
        vs: String,
        /// What is wrong.
        reason: String,
    },
    /// A DestinationRule does not have the shape Istio defines.
    #[error("DestinationRule {dr} is malformed: {reason}")]
    MalformedDestinationRule {
        /// DestinationRule name.
        dr: String,
        /// What is wrong.
        reason: String,
    },
    /// A subset the Canary splits between is missing from the DestinationRule.
    #[error("{role} subset \"{subset}\" not found in DestinationRule {dr}")]
    SubsetNotFound {
        /// DestinationRule name.
        dr: String,
        /// `stable` or `canary`.
        role: &'static str,
        /// Subset name.
        subset: String,
    },
}

/// Outcome of [`restore`].
#[derive(Debug, Clone, PartialEq)]
pub enum Restore {
    /// The VirtualService with its original routes back and the annotation removed.
    Restored(Value),
    /// No annotation: skycanary never changed this VirtualService (or already restored it).
    NothingRecorded,
    /// Someone changed the routes after skycanary's last write; they are kept as they are.
    Drift {
        /// Human-readable explanation.
        reason: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Host names

/// Fully qualifies a Kubernetes service host relative to `ns`, so that the forms Istio and
/// cluster DNS treat as one service compare equal. Hosts that are not service names
/// (`api.example.com`, wildcards) are returned as they are (lower-cased).
fn canonical_host(host: &str, ns: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.contains('*') {
        return host;
    }
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [svc] => format!("{svc}.{ns}.svc.cluster.local"),
        [svc, n] => format!("{svc}.{n}.svc.cluster.local"),
        [svc, n, "svc"] => format!("{svc}.{n}.svc.cluster.local"),
        _ => host,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the object

/// `metadata.<key>` as a string, if present.
fn meta_str<'v>(vs: &'v Value, key: &str) -> Option<&'v str> {
    vs.get("metadata")?.get(key)?.as_str()
}

/// Role of one destination in a managed route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Stable,
    Canary,
    Additional,
    Other,
}

/// What we need from one `route[]` entry.
struct Dest<'v> {
    host: &'v str,
    subset: Option<&'v str>,
    weight: Option<i64>,
}

impl Dest<'_> {
    /// `host[/subset]`, how destinations are named in messages and [`RouteWeights::others`].
    fn label(&self) -> String {
        match self.subset {
            Some(s) => format!("{}/{s}", self.host),
            None => self.host.to_string(),
        }
    }
}

/// Indices of the selected routes of each kind.
#[derive(Debug, Default)]
struct Selection {
    http: Vec<usize>,
    tls: Vec<usize>,
    tcp: Vec<usize>,
}

impl Selection {
    fn of(&self, kind: RouteKind) -> &[usize] {
        match kind {
            RouteKind::Http => &self.http,
            RouteKind::Tls => &self.tls,
            RouteKind::Tcp => &self.tcp,
        }
    }

    fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty()
    }
}

/// One selected route, classified.
struct Analysis {
    /// Role and weight (as written) of each destination.
    dests: Vec<(Role, Option<i64>, String)>,
    stable: usize,
    canary: Option<usize>,
    /// With no canary destination: a zero-weight destination of the stable's host whose
    /// subset is neither role (the release before last), which the canary replaces.
    stale: Option<usize>,
}

impl Analysis {
    /// The weight Istio gives a destination: the one written, or everything for a lone
    /// destination, or nothing.
    fn effective(&self, i: usize, max: i64) -> i64 {
        match self.dests[i].1 {
            Some(w) => w,
            None if self.dests.len() == 1 => max,
            None => 0,
        }
    }

    fn others(&self, max: i64) -> Vec<DestinationWeight> {
        (0..self.dests.len())
            .filter(|&i| self.dests[i].0 == Role::Additional)
            .map(|i| DestinationWeight::new(self.dests[i].2.clone(), self.effective(i, max)))
            .collect()
    }
}

/// Per-call context: the VirtualService name and namespace, and the routing settings.
struct Ctx<'a> {
    vs: &'a str,
    /// Where hosts written in the VirtualService resolve.
    ns: String,
    /// Where the Canary's service names resolve (its own namespace).
    canary_ns: &'a str,
    routing: &'a IstioRouting,
}

impl<'a> Ctx<'a> {
    /// Validates the routing settings and finds the namespace hosts are resolved in.
    fn new(
        vs: &Value,
        vs_ref: &'a VirtualServiceRef,
        routing: &'a IstioRouting,
    ) -> Result<Self, RoutingError> {
        let name = vs_ref.name.as_str();
        let ns = match vs.get("metadata").and_then(|m| m.get("namespace")) {
            None | Some(Value::Null) => {
                vs_ref.namespace.clone().unwrap_or_else(|| "default".into())
            }
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(RoutingError::Malformed {
                    vs: name.into(),
                    path: "metadata.namespace".into(),
                    reason: "not a non-empty string".into(),
                });
            }
        };
        let canary_ns = if routing.namespace.is_empty() {
            "default"
        } else {
            routing.namespace.as_str()
        };
        let ctx = Ctx {
            vs: name,
            ns,
            canary_ns,
            routing,
        };
        ctx.validate_config(vs_ref)?;
        Ok(ctx)
    }

    fn config_err(&self, reason: impl Into<String>) -> RoutingError {
        RoutingError::InvalidConfig {
            vs: self.vs.into(),
            reason: reason.into(),
        }
    }

    fn malformed(&self, path: impl Into<String>, reason: impl Into<String>) -> RoutingError {
        RoutingError::Malformed {
            vs: self.vs.into(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Refuses settings under which the split would be ambiguous.
    fn validate_config(&self, vs_ref: &VirtualServiceRef) -> Result<(), RoutingError> {
        let r = self.routing;
        if r.max_weight <= 0 {
            return Err(
                self.config_err(format!("maxTrafficWeight {} is not positive", r.max_weight))
            );
        }
        match &r.backend {
            Backend::Host { stable, canary } => {
                if stable.is_empty() || canary.is_empty() {
                    return Err(self.config_err("stable and canary hosts must be set"));
                }
                if self.same_service(stable, canary) {
                    return Err(self.config_err(format!(
                        "stable host \"{stable}\" and canary host \"{canary}\" are the same service"
                    )));
                }
            }
            Backend::Subset {
                stable_subset,
                canary_subset,
                ..
            } => {
                if stable_subset.is_empty() || canary_subset.is_empty() {
                    return Err(self.config_err("stable and canary subsets must be set"));
                }
                if stable_subset == canary_subset {
                    return Err(self.config_err(format!(
                        "stable and canary subsets are both \"{stable_subset}\""
                    )));
                }
            }
        }
        if r.additional_destinations
            .iter()
            .any(|a| a.host.is_none() && a.subset.is_none())
        {
            return Err(self.config_err("an additional destination has neither host nor subset"));
        }
        if let Some(n) = vs_ref
            .http_routes
            .iter()
            .find(|n| r.managed_routes.contains(n))
        {
            return Err(self.config_err(format!(
                "http route \"{n}\" is both a weighted route and a managed route"
            )));
        }
        Ok(())
    }

    /// Whether two of the Canary's service names are one Service.
    fn same_service(&self, a: &str, b: &str) -> bool {
        canonical_host(a, self.canary_ns) == canonical_host(b, self.canary_ns)
    }

    /// Whether a host written in the VirtualService is the Canary's service `svc`.
    fn is_service(&self, vs_host: &str, svc: &str) -> bool {
        canonical_host(vs_host, &self.ns) == canonical_host(svc, self.canary_ns)
    }

    /// The Canary's service `svc` as it must be written in the VirtualService to mean the same
    /// Service: as given, unless it is a short name and the namespaces differ (then
    /// `svc.<canary namespace>`).
    fn vs_host(&self, svc: &str) -> String {
        if self.is_service(svc, svc) {
            svc.to_string()
        } else {
            format!("{svc}.{}", self.canary_ns)
        }
    }

    fn check_weight(&self, weight: i64) -> Result<(), RoutingError> {
        if (0..=self.routing.max_weight).contains(&weight) {
            Ok(())
        } else {
            Err(RoutingError::WeightOutOfRange {
                vs: self.vs.into(),
                weight,
                max: self.routing.max_weight,
            })
        }
    }

    /// `spec` as an object.
    fn spec<'v>(&self, vs: &'v Value) -> Result<&'v Map<String, Value>, RoutingError> {
        if !vs.is_object() {
            return Err(self.malformed("$", "not an object"));
        }
        vs.get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| self.malformed("spec", "missing or not an object"))
    }

    /// `spec.<kind>` as a slice; absent or null means no routes.
    fn routes<'v>(
        &self,
        spec: &'v Map<String, Value>,
        key: &str,
    ) -> Result<&'v [Value], RoutingError> {
        match spec.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => {
                if let Some(i) = a.iter().position(|r| !r.is_object()) {
                    return Err(self.malformed(format!("spec.{key}[{i}]"), "not an object"));
                }
                Ok(a)
            }
            Some(_) => Err(self.malformed(format!("spec.{key}"), "not an array")),
        }
    }

    /// The `name` of an http route.
    fn route_name<'v>(&self, route: &'v Value, i: usize) -> Result<Option<&'v str>, RoutingError> {
        match route.get("name") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.malformed(format!("spec.http[{i}].name"), "not a string")),
        }
    }

    /// How a route is called in messages: its name, or `#index`.
    fn label(&self, kind: RouteKind, route: &Value, i: usize) -> String {
        match (kind, route.get("name").and_then(Value::as_str)) {
            (RouteKind::Http, Some(n)) => n.to_string(),
            _ => format!("#{i}"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Route selection

    /// Finds the routes whose weights the Canary controls.
    fn select(
        &self,
        spec: &Map<String, Value>,
        vs_ref: &VirtualServiceRef,
    ) -> Result<Selection, RoutingError> {
        let http = self.routes(spec, "http")?;
        let tls = self.routes(spec, "tls")?;
        let tcp = self.routes(spec, "tcp")?;
        let managed: HashSet<&str> = self
            .routing
            .managed_routes
            .iter()
            .map(String::as_str)
            .collect();
        let mut sel = Selection::default();

        let mut names = Vec::with_capacity(http.len());
        for (i, r) in http.iter().enumerate() {
            names.push(self.route_name(r, i)?);
        }
        if vs_ref.http_routes.is_empty() {
            let candidates: Vec<usize> = (0..http.len())
                .filter(|&i| !names[i].is_some_and(|n| managed.contains(n)))
                .collect();
            match candidates.len() {
                0 | 1 => sel.http = candidates,
                found => {
                    return Err(RoutingError::AmbiguousRoutes {
                        vs: self.vs.into(),
                        kind: RouteKind::Http,
                        found,
                    });
                }
            }
        } else {
            for want in &vs_ref.http_routes {
                let found: Vec<usize> = (0..http.len())
                    .filter(|&i| names[i] == Some(want.as_str()))
                    .collect();
                if found.is_empty() {
                    return Err(RoutingError::RouteNotFound {
                        vs: self.vs.into(),
                        kind: RouteKind::Http,
                        route: want.clone(),
                    });
                }
                sel.http.extend(found);
            }
            sel.http.sort_unstable();
            sel.http.dedup();
        }

        for r in &vs_ref.tls_routes {
            let found = self.matching(tls, "tls", r.port, &r.sni_hosts)?;
            if found.is_empty() {
                return Err(RoutingError::NoMatchingRoute {
                    vs: self.vs.into(),
                    kind: RouteKind::Tls,
                    selector: describe_tls(r),
                });
            }
            sel.tls.extend(found);
        }
        for r in &vs_ref.tcp_routes {
            let found = self.matching(tcp, "tcp", r.port, &[])?;
            if found.is_empty() {
                return Err(RoutingError::NoMatchingRoute {
                    vs: self.vs.into(),
                    kind: RouteKind::Tcp,
                    selector: describe_tcp(r),
                });
            }
            sel.tcp.extend(found);
        }
        sel.tls.sort_unstable();
        sel.tls.dedup();
        sel.tcp.sort_unstable();
        sel.tcp.dedup();

        // A reference that names nothing means the single route of every kind present, as in
        // Argo (`TestSingleTlsRouteReconcile`, and an http + tls + tcp VirtualService moves all
        // three): never only the http one, silently.
        let nothing_named = vs_ref.http_routes.is_empty()
            && vs_ref.tls_routes.is_empty()
            && vs_ref.tcp_routes.is_empty();
        if nothing_named {
            for (kind, routes, chosen) in [
                (RouteKind::Tls, tls, &mut sel.tls),
                (RouteKind::Tcp, tcp, &mut sel.tcp),
            ] {
                match routes.len() {
                    0 => {}
                    1 => *chosen = vec![0],
                    found => {
                        return Err(RoutingError::AmbiguousRoutes {
                            vs: self.vs.into(),
                            kind,
                            found,
                        });
                    }
                }
            }
        }
        if sel.is_empty() {
            return Err(RoutingError::NoRoutes { vs: self.vs.into() });
        }
        Ok(sel)
    }

    /// Indices of tls/tcp routes whose every match entry uses `port` (when set) and whose SNI
    /// host set equals `sni` (when not empty).
    fn matching(
        &self,
        routes: &[Value],
        key: &str,
        port: Option<u32>,
        sni: &[String],
    ) -> Result<Vec<usize>, RoutingError> {
        let want_sni: BTreeSet<&str> = sni.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let matches: &[Value] = match route.get("match") {
                None | Some(Value::Null) => &[],
                Some(Value::Array(a)) => a,
                Some(_) => {
                    return Err(self.malformed(format!("spec.{key}[{i}].match"), "not an array"));
                }
            };
            let mut ports_ok = !matches.is_empty() || port.is_none();
            let mut hosts = BTreeSet::new();
            for (j, m) in matches.iter().enumerate() {
                let path = format!("spec.{key}[{i}].match[{j}]");
                if !m.is_object() {
                    return Err(self.malformed(path, "not an object"));
                }
                if let Some(p) = port {
                    ports_ok &= m.get("port").and_then(Value::as_u64) == Some(u64::from(p));
                }
                match m.get("sniHosts") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) => {
                        for h in a {
                            hosts.insert(h.as_str().ok_or_else(|| {
                                self.malformed(
                                    format!("{path}.sniHosts"),
                                    "not an array of strings",
                                )
                            })?);
                        }
                    }
                    Some(_) => {
                        return Err(self.malformed(format!("{path}.sniHosts"), "not an array"));
                    }
                }
            }
            if ports_ok && (want_sni.is_empty() || hosts == want_sni) {
                out.push(i);
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Destinations

    fn dest<'v>(&self, entry: &'v Value, path: &str) -> Result<Dest<'v>, RoutingError> {
        let obj = entry
            .as_object()
            .ok_or_else(|| self.malformed(path, "not an object"))?;
        let d = obj
            .get("destination")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                self.malformed(format!("{path}.destination"), "missing or not an object")
            })?;
        let host = d.get("host").and_then(Value::as_str).ok_or_else(|| {
            self.malformed(
                format!("{path}.destination.host"),
                "missing or not a string",
            )
        })?;
        let subset = match d.get("subset") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(self.malformed(format!("{path}.destination.subset"), "not a string"));
            }
        };
        let weight = match obj.get("weight") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().filter(|w| *w >= 0).ok_or_else(|| {
                self.malformed(format!("{path}.weight"), "not a non-negative integer")
            })?),
        };
        Ok(Dest {
            host,
            subset,
            weight,
        })
    }

    fn role(&self, d: &Dest<'_>) -> Role {
        let r = self.routing;
        match &r.backend {
            Backend::Host { stable, canary } => {
                if self.is_service(d.host, stable) {
                    return Role::Stable;
                }
                if self.is_service(d.host, canary) {
                    return Role::Canary;
                }
            }
            Backend::Subset {
                stable_subset,
                canary_subset,
                ..
            } => {
                if d.subset == Some(stable_subset.as_str()) {
                    return Role::Stable;
                }
                if d.subset == Some(canary_subset.as_str()) {
                    return Role::Canary;
                }
            }
        }
        if r.additional_destinations
            .iter()
            .any(|a| self.is_additional(a, d))
        {
            Role::Additional
        } else {
            Role::Other
        }
    }

    fn is_additional(&self, a: &AdditionalDestination, d: &Dest<'_>) -> bool {
        a.host.as_deref().is_none_or(|h| self.is_service(d.host, h))
            && a.subset.as_deref().is_none_or(|s| d.subset == Some(s))
    }

    /// `(what, name)` of the stable or canary destination, for messages.
    fn wanted(&self, role: Role) -> (&'static str, String) {
        match (&self.routing.backend, role) {
            (Backend::Host { stable, .. }, Role::Stable) => ("host", stable.clone()),
            (Backend::Host { canary, .. }, _) => ("host", canary.clone()),
            (Backend::Subset { stable_subset, .. }, Role::Stable) => {
                ("subset", stable_subset.clone())
            }
            (Backend::Subset { canary_subset, .. }, _) => ("subset", canary_subset.clone()),
        }
    }

    /// Why a route has no stable (or canary) destination, beyond "not found": a destination
    /// that names the same Service but resolves elsewhere from the VirtualService's namespace,
    /// else the destinations the route does hold.
    fn missing_hint(&self, role: Role, dests: &[(Role, Option<i64>, String)]) -> String {
        if let (Backend::Host { stable, canary }, Role::Stable | Role::Canary) =
            (&self.routing.backend, role)
        {
            let svc = if role == Role::Stable { stable } else { canary };
            let want = canonical_host(svc, self.canary_ns);
            let short = |h: &str| h.split('.').next().unwrap_or("").to_ascii_lowercase();
            if let Some((_, _, host)) = dests
                .iter()
                .find(|(r, _, h)| *r == Role::Other && short(h) == short(&want))
            {
                return format!(
                    "; the route's \"{host}\" is {} (hosts in a VirtualService resolve in its \
                     namespace {}), not {want}: write \"{}\" in the VirtualService",
                    canonical_host(host, &self.ns),
                    self.ns,
                    self.vs_host(svc)
                );
            }
        }
        let present: Vec<&str> = dests.iter().map(|(_, _, l)| l.as_str()).collect();
        format!("; its destinations: {}", present.join(", "))
    }

    /// Classifies the destinations of a selected route and checks that the split is ours to
    /// make: exactly one stable, at most one canary (absent only next to a lone stable), and no
    /// unknown destination carrying traffic. A missing stable or canary is reported before an
    /// unknown destination, since a misspelt name makes the real one look unknown.
    fn analyze(
        &self,
        route: &Value,
        kind: RouteKind,
        key: &str,
        i: usize,
    ) -> Result<Analysis, RoutingError> {
        let label = self.label(kind, route, i);
        if kind == RouteKind::Http
            && route.get("route").is_none()
            && let Some(d) = route.get("delegate")
        {
            let name = d.get("name").and_then(Value::as_str).unwrap_or("");
            let delegate = match d.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() => format!("{name}.{ns}"),
                _ => name.to_string(),
            };
            return Err(RoutingError::Delegated {
                vs: self.vs.into(),
                route: label,
                delegate,
            });
        }
        let entries = route
            .get("route")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                self.malformed(
                    format!("spec.{key}[{i}].route"),
                    "missing, empty or not an array",
                )
            })?;
        let mut dests = Vec::with_capacity(entries.len());
        let mut hosts = Vec::with_capacity(entries.len());
        for (j, e) in entries.iter().enumerate() {
            let d = self.dest(e, &format!("spec.{key}[{i}].route[{j}]"))?;
            dests.push((self.role(&d), d.weight, d.label()));
            hosts.push(canonical_host(d.host, &self.ns));
        }
        let lone = dests.len() == 1;
        let find = |role: Role, role_name: &'static str| -> Result<Option<usize>, RoutingError> {
            let found: Vec<usize> = (0..dests.len()).filter(|&j| dests[j].0 == role).collect();
            if found.len() > 1 {
                let (what, name) = self.wanted(role);
                return Err(RoutingError::AmbiguousDestination {
                    vs: self.vs.into(),
                    kind,
                    route: label.clone(),
                    role: role_name,
                    what,
                    name,
                    count: found.len(),
                });
            }
            Ok(found.first().copied())
        };
        let stable = find(Role::Stable, "stable")?;
        let canary = find(Role::Canary, "canary")?;
        let missing = |role: Role, role_name: &'static str| {
            let (what, name) = self.wanted(role);
            RoutingError::DestinationNotFound {
                vs: self.vs.into(),
                kind,
                route: label.as_str().into(),
                role: role_name,
                what,
                name,
                hint: self.missing_hint(role, &dests).into(),
            }
        };
        let stable = stable.ok_or_else(|| missing(Role::Stable, "stable"))?;
        // The next release of a subset split swaps the roles (stable v2, canary v3) over
        // routes that still name the previous stable (v1) at weight 0: that entry becomes the
        // canary. Only for subsets, which the DestinationRule check proves exist before any
        // write; a host that is not in the route is more likely a typo than a release.
        let stale = match (&self.routing.backend, canary) {
            (Backend::Subset { .. }, None) if !lone => (0..dests.len()).find(|&j| {
                dests[j].0 == Role::Other
                    && dests[j].1.unwrap_or(0) == 0
                    && hosts[j] == hosts[stable]
            }),
            _ => None,
        };
        if canary.is_none() && !lone && stale.is_none() {
            return Err(missing(Role::Canary, "canary"));
        }
        for (role, weight, name) in &dests {
            let w = weight.unwrap_or(0);
            if *role == Role::Other && w != 0 && !lone {
                return Err(RoutingError::UnknownDestination {
                    vs: self.vs.into(),
                    kind,
                    route: label,
                    destination: name.clone(),
                    weight: w,
                });
            }
        }
        Ok(Analysis {
            dests,
            stable,
            canary,
            stale,
        })
    }

    /// Sets stable/canary weights on one selected route; additional destinations keep theirs.
    fn reweight(
        &self,
        route: &mut Value,
        kind: RouteKind,
        key: &str,
        i: usize,
        canary_w: i64,
    ) -> Result<(), RoutingError> {
        let a = self.analyze(route, kind, key, i)?;
        let max = self.routing.max_weight;
        let others = a
            .others(max)
            .iter()
            .fold(0i64, |acc, o| acc.saturating_add(o.weight));
        let stable_w = max.saturating_sub(canary_w).saturating_sub(others);
        if stable_w < 0 {
            return Err(RoutingError::NegativeStable {
                vs: self.vs.into(),
                kind,
                route: self.label(kind, route, i),
                others,
                canary: canary_w,
                max,
            });
        }
        let Some(entries) = route.get_mut("route").and_then(Value::as_array_mut) else {
            return Err(self.malformed(format!("spec.{key}[{i}].route"), "not an array"));
        };
        match (a.canary, a.stale) {
            (Some(c), _) => {
                set_weight(&mut entries[a.stable], stable_w);
                set_weight(&mut entries[c], canary_w);
            }
            // In its place, a copy of the stable entry with the canary subset, as below.
            (None, Some(s)) => {
                let mut replaced = entries[a.stable].clone();
                self.make_canary(&mut replaced);
                set_weight(&mut replaced, canary_w);
                set_weight(&mut entries[a.stable], stable_w);
                entries[s] = replaced;
            }
            // A lone stable destination already carries everything: leave it as written.
            (None, None) if canary_w == 0 => {
                if a.dests[a.stable].1.is_some() {
                    set_weight(&mut entries[a.stable], stable_w);
                }
            }
            (None, None) => {
                let mut added = entries[a.stable].clone();
                self.make_canary(&mut added);
                set_weight(&mut added, canary_w);
                set_weight(&mut entries[a.stable], stable_w);
                entries.insert(a.stable + 1, added);
            }
        }
        Ok(())
    }

    /// Turns a copy of the stable route entry into the canary one: host or subset replaced,
    /// port and everything else kept (a host-level split drops the subset, which belongs to the
    /// stable host).
    fn make_canary(&self, entry: &mut Value) {
        if let Some(d) = entry.get_mut("destination").and_then(Value::as_object_mut) {
            match &self.routing.backend {
                Backend::Host { canary, .. } => {
                    d.insert("host".into(), Value::String(self.vs_host(canary)));
                    d.remove("subset");
                }
                Backend::Subset { canary_subset, .. } => {
                    d.insert("subset".into(), Value::String(canary_subset.clone()));
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Header and mirror routes

    /// Checks names and contents of the wanted header and mirror routes.
    fn check_desired(&self, desired: &DesiredRouting) -> Result<(), RoutingError> {
        let mut seen = HashSet::new();
        let names = desired
            .header_routes
            .iter()
            .map(|h| h.name.as_str())
            .chain(desired.mirror_routes.iter().map(|m| m.name.as_str()));
        for name in names {
            if !self.routing.managed_routes.iter().any(|m| m == name) {
                return Err(RoutingError::UnmanagedRoute {
                    vs: self.vs.into(),
                    route: name.into(),
                });
            }
            if !seen.insert(name) {
                return Err(self.invalid_route(
                    name,
                    "the name is used by more than one header/mirror route",
                ));
            }
        }
        for h in &desired.header_routes {
            if h.headers.is_empty() {
                return Err(self.invalid_route(&h.name, "a header route needs at least one header"));
            }
            check_headers(&h.headers).map_err(|r| self.invalid_route(&h.name, r))?;
        }
        for m in &desired.mirror_routes {
            if m.matches.is_empty() {
                return Err(self.invalid_route(&m.name, "a mirror route needs at least one match"));
            }
            for mm in &m.matches {
                if mm.method.is_none() && mm.path.is_none() && mm.headers.is_empty() {
                    return Err(self
                        .invalid_route(&m.name, "a mirror match entry matches nothing specific"));
                }
                check_headers(&mm.headers).map_err(|r| self.invalid_route(&m.name, r))?;
            }
            if let Some(p) = m.percentage
                && !(p.is_finite() && (0.0..=100.0).contains(&p))
            {
                return Err(self
                    .invalid_route(&m.name, format!("mirror percentage {p} is outside 0..=100")));
            }
        }
        Ok(())
    }

    fn invalid_route(&self, route: &str, reason: impl Into<String>) -> RoutingError {
        RoutingError::InvalidManagedRoute {
            vs: self.vs.into(),
            route: route.into(),
            reason: reason.into(),
        }
    }

    /// The canary `destination` for header routes and the `mirror` target: the canary host
    /// (host split) or the weighted route's stable host with the canary subset (subset split),
    /// and the port of the weighted route's first destination.
    fn canary_target(&self, weighted: &Value) -> Value {
        let entries = weighted.get("route").and_then(Value::as_array);
        let first = entries
            .and_then(|e| e.first())
            .and_then(|e| e.get("destination"));
        let mut d = Map::new();
        match &self.routing.backend {
            Backend::Host { canary, .. } => {
                d.insert("host".into(), Value::String(self.vs_host(canary)));
            }
            Backend::Subset { canary_subset, .. } => {
                let stable_host = entries
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let dest = self.dest(e, "").ok()?;
                        (self.role(&dest) == Role::Stable).then(|| dest.host.to_string())
                    })
                    .next()
                    .unwrap_or_default();
                d.insert("host".into(), Value::String(stable_host));
                d.insert("subset".into(), Value::String(canary_subset.clone()));
            }
        }
        if let Some(port) = first.and_then(|f| f.get("port")) {
            d.insert("port".into(), port.clone());
        }
        Value::Object(d)
    }

    fn header_route(&self, h: &HeaderRoute, weighted: &Value) -> Value {
        let mut route = Map::new();
        route.insert("name".into(), Value::String(h.name.clone()));
        // One match entry per matcher: Istio ORs match entries, as Argo's setHeaderRoute means.
        let matches = h
            .headers
            .iter()
            .map(|one| {
                let mut m = Map::new();
                m.insert("headers".into(), headers_value(std::slice::from_ref(one)));
                Value::Object(m)
            })
            .collect();
        route.insert("match".into(), Value::Array(matches));
        let mut dest = Map::new();
        dest.insert("destination".into(), self.canary_target(weighted));
        dest.insert("weight".into(), Value::from(self.routing.max_weight));
        route.insert("route".into(), Value::Array(vec![Value::Object(dest)]));
        Value::Object(route)
    }

    fn mirror_route(&self, m: &MirrorRoute, weighted: &Value) -> Value {
        let mut route = Map::new();
        route.insert("name".into(), Value::String(m.name.clone()));
        route.insert(
            "match".into(),
            Value::Array(m.matches.iter().map(mirror_match_value).collect()),
        );
        route.insert(
            "route".into(),
            weighted
                .get("route")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
        );
        route.insert("mirror".into(), self.canary_target(weighted));
        let mut pct = Map::new();
        pct.insert(
            "value".into(),
            percentage_value(m.percentage.unwrap_or(100.0)),
        );
        route.insert("mirrorPercentage".into(), Value::Object(pct));
        Value::Object(route)
    }
}

fn describe_tls(r: &TlsRouteRef) -> String {
    let port = r
        .port
        .map_or_else(|| "any port".to_string(), |p| format!("port {p}"));
    if r.sni_hosts.is_empty() {
        port
    } else {
        format!("{port} and sniHosts [{}]", r.sni_hosts.join(", "))
    }
}

fn describe_tcp(r: &TcpRouteRef) -> String {
    r.port
        .map_or_else(|| "any port".to_string(), |p| format!("port {p}"))
}

fn set_weight(entry: &mut Value, weight: i64) {
    if let Some(o) = entry.as_object_mut() {
        o.insert("weight".into(), Value::from(weight));
    }
}

/// Header names must be non-empty and unique: one Istio match entry is a map of headers.
fn check_headers(headers: &[HeaderMatch]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for HeaderMatch { name, .. } in headers {
        if name.is_empty() {
            return Err("empty header name".into());
        }
        if !seen.insert(name.as_str()) {
            return Err(format!("header \"{name}\" listed twice"));
        }
    }
    Ok(())
}

fn string_match_value(m: &StringMatch) -> Value {
    let (k, v) = match m {
        StringMatch::Exact(v) => ("exact", v),
        StringMatch::Prefix(v) => ("prefix", v),
        StringMatch::Regex(v) => ("regex", v),
    };
    let mut o = Map::new();
    o.insert(k.into(), Value::String(v.clone()));
    Value::Object(o)
}

fn headers_value(headers: &[HeaderMatch]) -> Value {
    Value::Object(
        headers
            .iter()
            .map(|h| (h.name.clone(), string_match_value(&h.value)))
            .collect(),
    )
}

fn mirror_match_value(m: &MirrorMatch) -> Value {
    let mut o = Map::new();
    if let Some(method) = &m.method {
        o.insert("method".into(), string_match_value(method));
    }
    if let Some(path) = &m.path {
        o.insert("uri".into(), string_match_value(path));
    }
    if !m.headers.is_empty() {
        o.insert("headers".into(), headers_value(&m.headers));
    }
    Value::Object(o)
}

/// Integral percentages are written as integers, the way the API server hands them back, so
/// that a round trip does not look like a change.
fn percentage_value(p: f64) -> Value {
    if p.fract() == 0.0 && (0.0..=100.0).contains(&p) {
        Value::from(p as i64)
    } else {
        Value::from(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Original-routes snapshot

/// The routes part of a spec: the present `http`/`tls`/`tcp` keys.
fn routes_of(spec: &Map<String, Value>) -> Map<String, Value> {
    KINDS
        .iter()
        .filter_map(|(_, k)| spec.get(*k).map(|v| ((*k).to_string(), v.clone())))
        .collect()
}

/// Deterministic fingerprint (FNV-1a 64 over a canonical encoding: sorted keys, integral
/// numbers as integers) so that a round trip through the API server does not change it.
fn fingerprint(routes: &Map<String, Value>) -> String {
    let mut s = String::new();
    canonical(&Value::Object(routes.clone()), &mut s);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(':');
                canonical(&o[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                let _ = write!(out, "{}", f as i64);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        other => out.push_str(&other.to_string()),
    }
}

/// What `metadata.annotations` was before we added ours, so removing ours restores it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnnotationsWas {
    Object,
    Absent,
    Null,
}

/// The parsed annotation.
struct Snapshot {
    routes: Map<String, Value>,
    applied: String,
    annotations: AnnotationsWas,
}

impl Snapshot {
    fn to_annotation(&self) -> String {
        let mut o = Map::new();
        o.insert("routes".into(), Value::Object(self.routes.clone()));
        o.insert("applied".into(), Value::String(self.applied.clone()));
        match self.annotations {
            AnnotationsWas::Object => {}
            AnnotationsWas::Absent => {
                o.insert("annotations".into(), Value::String("absent".into()));
            }
            AnnotationsWas::Null => {
                o.insert("annotations".into(), Value::String("null".into()));
            }
        }
        Value::Object(o).to_string()
    }
}

fn read_snapshot(vs: &Value, name: &str) -> Result<Option<Snapshot>, RoutingError> {
    let bad = |reason: &str| RoutingError::BadSnapshot {
        vs: name.into(),
        reason: reason.into(),
    };
    let Some(raw) = vs
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ORIGINAL_ROUTES_ANNOTATION))
    else {
        return Ok(None);
    };
    let raw = raw.as_str().ok_or_else(|| bad("not a string"))?;
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let routes = v
        .get("routes")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"routes\" object"))?;
    if routes.keys().any(|k| !KINDS.iter().any(|(_, n)| n == k)) {
        return Err(bad("\"routes\" has keys other than http, tls and tcp"));
    }
    let applied = v
        .get("applied")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"applied\" fingerprint"))?;
    let annotations = match v.get("annotations").and_then(Value::as_str) {
        None => AnnotationsWas::Object,
        Some("absent") => AnnotationsWas::Absent,
        Some("null") => AnnotationsWas::Null,
        Some(_) => return Err(bad("unknown \"annotations\" marker")),
    };
    Ok(Some(Snapshot {
        routes: routes.clone(),
        applied: applied.into(),
        annotations,
    }))
}

/// Removes our annotation, and the annotations map itself if we created it.
fn strip_snapshot(vs: &mut Value, was: AnnotationsWas) {
    let Some(meta) = vs.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let now_empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
        Some(a) => {
            a.remove(ORIGINAL_ROUTES_ANNOTATION);
            a.is_empty()
        }
        None => false,
    };
    if now_empty {
        match was {
            AnnotationsWas::Object => {}
            AnnotationsWas::Absent => {
                meta.remove("annotations");
            }
            AnnotationsWas::Null => {
                meta.insert("annotations".into(), Value::Null);
            }
        }
    }
}

/// Writes our annotation, creating the annotations map if needed; returns what it was.
fn put_annotation(
    vs: &mut Value,
    name: &str,
    value: impl FnOnce(AnnotationsWas) -> String,
) -> Result<(), RoutingError> {
    let malformed = |path: &str, reason: &str| RoutingError::Malformed {
        vs: name.into(),
        path: path.into(),
        reason: reason.into(),
    };
    let meta = vs
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| malformed("metadata", "missing or not an object"))?;
    let was = match meta.get("annotations") {
        None => AnnotationsWas::Absent,
        Some(Value::Null) => AnnotationsWas::Null,
        Some(Value::Object(_)) => AnnotationsWas::Object,
        Some(_) => return Err(malformed("metadata.annotations", "not an object")),
    };
    if was != AnnotationsWas::Object {
        meta.insert("annotations".into(), Value::Object(Map::new()));
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.insert(ORIGINAL_ROUTES_ANNOTATION.into(), Value::String(value(was)));
    }
    Ok(())
}

/// Replaces the routes part of `spec` (absent keys removed).
fn set_routes(vs: &mut Value, routes: &Map<String, Value>) {
    if let Some(spec) = vs.get_mut("spec").and_then(Value::as_object_mut) {
        for (_, k) in KINDS {
            match routes.get(k) {
                Some(v) => {
                    spec.insert(k.into(), v.clone());
                }
                None => {
                    spec.remove(k);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public API

/// Returns the VirtualService with the desired weights on every selected route, exactly the
/// desired header/mirror routes (first, in `managed_routes` order), and the original-routes
/// annotation recorded or updated. Returns an equal value when nothing needs to change, so the
/// caller can skip the write.
pub fn apply(
    vs: &Value,
    vs_ref: &VirtualServiceRef,
    routing: &IstioRouting,
    desired: &DesiredRouting,
) -> Result<Value, RoutingError> {
    let ctx = Ctx::new(vs, vs_ref, routing)?;
    ctx.check_weight(desired.canary_weight)?;
    ctx.check_desired(desired)?;
    let spec = ctx.spec(vs)?;
    let sel = ctx.select(spec, vs_ref)?;
    let snapshot = read_snapshot(vs, ctx.vs)?;

    let before = routes_of(spec);
    let mut after = before.clone();
    for (kind, key) in KINDS {
        let idx = sel.of(kind);
        if idx.is_empty() {
            continue;
        }
        let Some(routes) = after.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for &i in idx {
            ctx.reweight(&mut routes[i], kind, key, i, desired.canary_weight)?;
        }
    }

    if let Some(Value::Array(http)) = after.get("http") {
        let managed = &routing.managed_routes;
        let is_managed = |r: &Value| {
            r.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| managed.iter().any(|m| m == n))
        };
        let wanted = !desired.header_routes.is_empty() || !desired.mirror_routes.is_empty();
        let weighted = sel.http.first().map(|&i| &http[i]);
        let mut new_http = Vec::with_capacity(http.len() + managed.len());
        for name in managed {
            let weighted = match weighted {
                Some(w) => w,
                None if wanted => {
                    return Err(
                        ctx.invalid_route(name, "no weighted http route is selected to copy from")
                    );
                }
                None => break,
            };
            if let Some(h) = desired.header_routes.iter().find(|h| &h.name == name) {
                new_http.push(ctx.header_route(h, weighted));
            } else if let Some(m) = desired.mirror_routes.iter().find(|m| &m.name == name) {
                new_http.push(ctx.mirror_route(m, weighted));
            }
        }
        new_http.extend(http.iter().filter(|r| !is_managed(r)).cloned());
        after.insert("http".into(), Value::Array(new_http));
    } else if let Some(first) = desired
        .header_routes
        .first()
        .map(|h| &h.name)
        .or(desired.mirror_routes.first().map(|m| &m.name))
    {
        return Err(ctx.invalid_route(first, "the VirtualService has no http routes"));
    }

    if after == before {
        return Ok(vs.clone());
    }
    let mut out = vs.clone();
    set_routes(&mut out, &after);
    match snapshot {
        Some(snap) if snap.routes == after => strip_snapshot(&mut out, snap.annotations),
        Some(snap) => {
            let updated = Snapshot {
                applied: fingerprint(&after),
                ..snap
            };
            put_annotation(&mut out, ctx.vs, |_| updated.to_annotation())?;
        }
        None => {
            let applied = fingerprint(&after);
            put_annotation(&mut out, ctx.vs, |was| {
                Snapshot {
                    routes: before,
                    applied,
                    annotations: was,
                }
                .to_annotation()
            })?;
        }
    }
    Ok(out)
}

/// Reads stable, canary and additional weights of every selected route, with the same checks
/// as [`apply`]. A route holding only the stable destination reads as stable = max, canary = 0.
pub fn read_weights(
    vs: &Value,
    vs_ref: &VirtualServiceRef,
    routing: &IstioRouting,
) -> Result<Vec<RouteWeights>, RoutingError> {
    let ctx = Ctx::new(vs, vs_ref, routing)?;
    let spec = ctx.spec(vs)?;
    let sel = ctx.select(spec, vs_ref)?;
    let max = routing.max_weight;
    let mut out = Vec::new();
    for (kind, key) in KINDS {
        let routes = ctx.routes(spec, key)?;
        for &i in sel.of(kind) {
            let a = ctx.analyze(&routes[i], kind, key, i)?;
            out.push(RouteWeights {
                virtual_service: vs_ref.name.clone(),
                kind,
                route: ctx.label(kind, &routes[i], i),
                stable: a.effective(a.stable, max),
                canary: a.canary.map_or(0, |c| a.effective(c, max)),
                others: a.others(max),
            });
        }
    }
    Ok(out)
}

/// Checks that the DestinationRule defines both subsets of a subset-level split. A host-level
/// split has nothing to check.
pub fn check_destination_rule(dr: &Value, routing: &IstioRouting) -> Result<(), RoutingError> {
    let Backend::Subset {
        destination_rule,
        stable_subset,
        canary_subset,
    } = &routing.backend
    else {
        return Ok(());
    };
    let name = meta_str(dr, "name")
        .unwrap_or(&destination_rule.name)
        .to_string();
    let malformed = |reason: &str| RoutingError::MalformedDestinationRule {
        dr: name.clone(),
        reason: reason.into(),
    };
    let spec = dr
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("spec is missing or not an object"))?;
    let subsets: &[Value] = match spec.get("subsets") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => return Err(malformed("spec.subsets is not an array")),
    };
    let mut names = HashSet::new();
    for (i, s) in subsets.iter().enumerate() {
        let n = s.get("name").and_then(Value::as_str).ok_or_else(|| {
            malformed(&format!(
                "spec.subsets[{i}].name is missing or not a string"
            ))
        })?;
        names.insert(n);
    }
    for (role, subset) in [("stable", stable_subset), ("canary", canary_subset)] {
        if !names.contains(subset.as_str()) {
            return Err(RoutingError::SubsetNotFound {
                dr: name,
                role,
                subset: subset.clone(),
            });
        }
    }
    Ok(())
}

/// Most labels a subset may have for its pods to be counted (`workloadRef.fromSubset`): the
/// bound of a workload selector (`canary_validate::SELECTOR_LABELS_MAX` is this constant).
pub const SUBSET_LABELS_MAX: usize = 32;

/// The labels of the DestinationRule subset `subset` (`spec.subsets[].labels`): the pods
/// Istio sends that subset's traffic to, read for `workloadRef.fromSubset`. A subset that is
/// missing, has no labels (it would select every pod) or more than [`SUBSET_LABELS_MAX`], or
/// a malformed DestinationRule, is an error saying so: its pods cannot be counted.
pub fn subset_labels(
    dr: &Value,
    subset: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let subsets = match dr.pointer("/spec/subsets") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err("spec.subsets is not an array".into()),
    };
    let mut found = subsets
        .iter()
        .enumerate()
        .filter(|(_, s)| s.get("name").and_then(Value::as_str) == Some(subset));
    let Some((i, s)) = found.next() else {
        return Err(format!("subset {subset} not found"));
    };
    if found.next().is_some() {
        return Err(format!("subset {subset} is defined more than once"));
    }
    let labels = match s.get("labels") {
        None | Some(Value::Null) => return Err(format!("subset {subset} has no labels")),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(format!("spec.subsets[{i}].labels is not a map")),
    };
    if labels.is_empty() {
        return Err(format!("subset {subset} has no labels"));
    }
    if labels.len() > SUBSET_LABELS_MAX {
        return Err(format!(
            "subset {subset} has {} labels; at most {SUBSET_LABELS_MAX} are matched",
            labels.len()
        ));
    }
    labels
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(v) => Ok((k.clone(), v.to_string())),
            None => Err(format!("spec.subsets[{i}].labels.{k} is not a string")),
        })
        .collect()
}

/// Puts back the routes recorded before skycanary's first change and removes the annotation —
/// unless the routes changed since skycanary last wrote them, in which case the user's version
/// is kept ([`Restore::Drift`]).
pub fn restore(vs: &Value) -> Result<Restore, RoutingError> {
    let name = meta_str(vs, "name").unwrap_or("<unnamed>");
    let Some(snap) = read_snapshot(vs, name)? else {
        return Ok(Restore::NothingRecorded);
    };
    let spec =
        vs.get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| RoutingError::Malformed {
                vs: name.into(),
                path: "spec".into(),
                reason: "missing or not an object".into(),
            })?;
    let current = routes_of(spec);
    if current != snap.routes {
        let now = fingerprint(&current);
        if now != snap.applied {
            return Ok(Restore::Drift {
                reason: format!(
                    "the routes of VirtualService {name} changed since skycanary last wrote them \
                     ({now}, recorded {}); keeping them",
                    snap.applied
                ),
            });
        }
    }
    let mut out = vs.clone();
    set_routes(&mut out, &snap.routes);
    strip_snapshot(&mut out, snap.annotations);
    Ok(Restore::Restored(out))
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// Reading managed routes back

fn string_match_of(v: &Value) -> Option<StringMatch> {
    let o = v.as_object()?;
    if let Some(s) = o.get("exact").and_then(Value::as_str) {
        return Some(StringMatch::Exact(s.to_string()));
    }
    if let Some(s) = o.get("prefix").and_then(Value::as_str) {
        return Some(StringMatch::Prefix(s.to_string()));
    }
    o.get("regex")
        .and_then(Value::as_str)
        .map(|s| StringMatch::Regex(s.to_string()))
}

fn headers_of(v: Option<&Value>) -> Vec<HeaderMatch> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, m)| string_match_of(m).map(|m| HeaderMatch::new(k.clone(), m)))
                .collect()
        })
        .unwrap_or_default()
}

/// The managed header and mirror routes present in `vs`, as a desired state with
/// `canary_weight`: re-applying it changes only the weights (mirror routes are re-weighted
/// with their weighted route). Used by manual weight changes, which keep those routes.
pub fn current_managed_routes(
    vs: &Value,
    routing: &IstioRouting,
    canary_weight: i64,
) -> Result<DesiredRouting, RoutingError> {
    let mut desired = DesiredRouting::weight(canary_weight);
    let http = vs
        .get("spec")
        .and_then(|s| s.get("http"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for route in &http {
        let Some(name) = route.get("name").and_then(Value::as_str) else {
            continue;
        };
        if !routing.managed_routes.iter().any(|m| m == name) {
            continue;
        }
        let matches = route
            .get("match")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if route.get("mirror").is_some() {
            desired.mirror_routes.push(MirrorRoute {
                name: name.to_string(),
                percentage: route
                    .get("mirrorPercentage")
                    .and_then(|p| p.get("value"))
                    .and_then(Value::as_f64),
                matches: matches
                    .iter()
                    .map(|m| MirrorMatch {
                        method: m.get("method").and_then(string_match_of),
                        path: m.get("uri").and_then(string_match_of),
                        headers: headers_of(m.get("headers")),
                    })
                    .collect(),
            });
        } else {
            // Each match entry is one matcher (OR); an entry of another shape is not one
            // skycanary writes, and re-writing it as ours would change what it matches.
            let mut headers = Vec::with_capacity(matches.len());
            for (j, m) in matches.iter().enumerate() {
                let one = m
                    .as_object()
                    .filter(|o| o.len() == 1)
                    .and_then(|o| o.get("headers"))
                    .map(|h| headers_of(Some(h)))
                    .filter(|h| h.len() == 1);
                match one {
                    Some(mut h) => headers.append(&mut h),
                    None => {
                        return Err(RoutingError::InvalidManagedRoute {
                            vs: meta_str(vs, "name").unwrap_or("<unnamed>").into(),
                            route: name.into(),
                            reason: format!(
                                "match[{j}] is not a single header matcher (a header route has \
                                 one match entry per header); set weight 0 to remove the route"
                            ),
                        });
                    }
                }
            }
            if !headers.is_empty() {
                desired.header_routes.push(HeaderRoute {
                    name: name.to_string(),
                    headers,
                });
            }
        }
    }
    Ok(desired)
}
