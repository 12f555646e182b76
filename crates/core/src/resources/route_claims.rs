//! Which VirtualService routes a Canary manages, so two Canaries that would overwrite each
//! other's weights on one route are refused when loaded instead of fighting at runtime (one
//! reported 90 % while the VirtualService had 0 %). Pure: only the specs are compared, so a
//! selector that *may* pick the same route as another (a TLS port left open, an omitted http
//! route) counts as the same route.

use std::collections::BTreeSet;
use std::fmt;

use super::canary::CanaryDoc;
// The rule the router resolves a VirtualService by, so the claims compared here are the
// objects it will write.
use crate::traffic::spec::split_name;

/// One route of one VirtualService a Canary writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteClaim {
    /// VirtualService namespace, resolved (`name.namespace` as written, else the Canary's).
    pub namespace: String,
    /// VirtualService name.
    pub name: String,
    /// The route on it.
    pub route: RouteRef,
}

/// A route selector of a Canary, as written in its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRef {
    /// A named http route.
    Http(String),
    /// No route named at all: the VirtualService's single http route.
    SingleHttp,
    /// TLS route by port (`None`: any) and SNI host set (empty: any).
    Tls(Option<u32>, BTreeSet<String>),
    /// TCP route by port (`None`: any).
    Tcp(Option<u32>),
    /// A header or mirror route the Canary creates and removes, by name.
    Managed(String),
}

impl RouteRef {
    /// Whether both selectors may designate the same route of one VirtualService.
    fn overlaps(&self, other: &RouteRef) -> bool {
        use RouteRef::*;
        let port = |a: &Option<u32>, b: &Option<u32>| a.is_none() || b.is_none() || a == b;
        match (self, other) {
            // A managed route replaces any route of its name, named http routes included.
            (Http(a) | Managed(a), Http(b) | Managed(b)) => a == b,
            // The single route may be any named one (it is the only one).
            (SingleHttp, Http(_) | SingleHttp) | (Http(_), SingleHttp) => true,
            (Tls(pa, sa), Tls(pb, sb)) => {
                port(pa, pb) && (sa.is_empty() || sb.is_empty() || sa == sb)
            }
            (Tcp(pa), Tcp(pb)) => port(pa, pb),
            _ => false,
        }
    }
}

impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port =
            |p: &Option<u32>| p.map_or_else(|| "any port".to_string(), |p| format!("port {p}"));
        match self {
            RouteRef::Http(n) => write!(f, "http route {n:?}"),
            RouteRef::SingleHttp => f.write_str("its single http route"),
            RouteRef::Tls(p, sni) if sni.is_empty() => write!(f, "tls route on {}", port(p)),
            RouteRef::Tls(p, sni) => {
                let hosts: Vec<&str> = sni.iter().map(String::as_str).collect();
                write!(
                    f,
                    "tls route on {} and sniHosts [{}]",
                    port(p),
                    hosts.join(", ")
                )
            }
            RouteRef::Tcp(p) => write!(f, "tcp route on {}", port(p)),
            RouteRef::Managed(n) => write!(f, "managed route {n:?}"),
        }
    }
}

/// Every route the Canary living in `namespace` writes.
pub fn route_claims(canary: &CanaryDoc, namespace: &str) -> Vec<RouteClaim> {
    let tr = &canary.spec.traffic_routing;
    let mut out = Vec::new();
    for vs in tr
        .istio
        .virtual_service
        .iter()
        .chain(tr.istio.virtual_services.iter())
    {
        let (name, ns) = split_name(&vs.name, namespace);
        let mut push = |route: RouteRef| {
            out.push(RouteClaim {
                namespace: ns.clone(),
                name: name.clone(),
                route,
            })
        };
        if vs.routes.is_empty() && vs.tls_routes.is_empty() && vs.tcp_routes.is_empty() {
            push(RouteRef::SingleHttp);
        }
        for r in &vs.routes {
            push(RouteRef::Http(r.clone()));
        }
        for r in &vs.tls_routes {
            push(RouteRef::Tls(r.port, r.sni_hosts.iter().cloned().collect()));
        }
        for r in &vs.tcp_routes {
            push(RouteRef::Tcp(r.port));
        }
        for m in &tr.managed_routes {
            push(RouteRef::Managed(m.name.clone()));
        }
    }
    out
}

/// The first route both Canaries may write, described for an error message
/// (`VirtualService bookinfo/reviews: http route "primary"`); `None` when they share none.
pub fn shared_route(a: &[RouteClaim], b: &[RouteClaim]) -> Option<String> {
    a.iter().find_map(|x| {
        b.iter()
            .find(|y| x.namespace == y.namespace && x.name == y.name && x.route.overlaps(&y.route))
            .map(|y| {
                let what = if x.route == y.route {
                    x.route.to_string()
                } else {
                    format!("{} / {}", x.route, y.route)
                };
                format!("VirtualService {}/{}: {what}", x.namespace, x.name)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary(istio: serde_json::Value, managed: &[&str]) -> CanaryDoc {
        let managed: Vec<_> = managed.iter().map(|n| json!({"name": n})).collect();
        serde_json::from_value(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "c"},
            "spec": {
                "trafficRouting": {"managedRoutes": managed, "istio": istio},
                "steps": [{"setWeight": 10}],
            },
        }))
        .expect("canary")
    }

    fn vs(spec: serde_json::Value) -> serde_json::Value {
        json!({"virtualService": spec, "stableService": "s", "canaryService": "c"})
    }

    /// (case, canary A in `bookinfo`, canary B and its namespace, expected shared route)
    type Case = (
        &'static str,
        CanaryDoc,
        (CanaryDoc, &'static str),
        Option<&'static str>,
    );

    #[test]
    fn shared_routes_table() {
        let none: &[&str] = &[];
        let cases: Vec<Case> = vec![
            (
                "same named http route",
                canary(vs(json!({"name": "reviews", "routes": ["primary"]})), none),
                (
                    canary(vs(json!({"name": "reviews", "routes": ["primary"]})), none),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/reviews: http route \"primary\""),
            ),
            (
                "name vs name.namespace from another namespace",
                canary(vs(json!({"name": "reviews", "routes": ["primary"]})), none),
                (
                    canary(
                        vs(json!({"name": "reviews.bookinfo", "routes": ["primary"]})),
                        none,
                    ),
                    "shop",
                ),
                Some("VirtualService bookinfo/reviews: http route \"primary\""),
            ),
            (
                "same name in other namespaces",
                canary(vs(json!({"name": "reviews", "routes": ["primary"]})), none),
                (
                    canary(vs(json!({"name": "reviews", "routes": ["primary"]})), none),
                    "shop",
                ),
                None,
            ),
            (
                "different http routes",
                canary(vs(json!({"name": "reviews", "routes": ["a"]})), none),
                (
                    canary(vs(json!({"name": "reviews", "routes": ["b"]})), none),
                    "bookinfo",
                ),
                None,
            ),
            (
                "route omitted = the single route",
                canary(vs(json!({"name": "reviews"})), none),
                (
                    canary(vs(json!({"name": "reviews", "routes": ["b"]})), none),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/reviews: its single http route / http route \"b\""),
            ),
            (
                "both omitted",
                canary(vs(json!({"name": "reviews"})), none),
                (
                    canary(
                        vs(json!({"name": "reviews.bookinfo.svc.cluster.local"})),
                        none,
                    ),
                    "x",
                ),
                Some("VirtualService bookinfo/reviews: its single http route"),
            ),
            (
                "http and tcp of one VirtualService",
                canary(vs(json!({"name": "reviews", "routes": ["a"]})), none),
                (
                    canary(
                        vs(json!({"name": "reviews", "tcpRoutes": [{"port": 9000}]})),
                        none,
                    ),
                    "bookinfo",
                ),
                None,
            ),
            (
                "tcp port left open",
                canary(vs(json!({"name": "r", "tcpRoutes": [{}]})), none),
                (
                    canary(
                        vs(json!({"name": "r", "tcpRoutes": [{"port": 9000}]})),
                        none,
                    ),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/r: tcp route on any port / tcp route on port 9000"),
            ),
            (
                "tls by other sni hosts",
                canary(
                    vs(json!({"name": "r", "tlsRoutes": [{"port": 443, "sniHosts": ["a"]}]})),
                    none,
                ),
                (
                    canary(
                        vs(json!({"name": "r", "tlsRoutes": [{"port": 443, "sniHosts": ["b"]}]})),
                        none,
                    ),
                    "bookinfo",
                ),
                None,
            ),
            (
                "tls by the same sni set, in another order",
                canary(
                    vs(json!({"name": "r", "tlsRoutes": [{"port": 443, "sniHosts": ["a", "b"]}]})),
                    none,
                ),
                (
                    canary(
                        vs(
                            json!({"name": "r", "tlsRoutes": [{"port": 443, "sniHosts": ["b", "a"]}]}),
                        ),
                        none,
                    ),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/r: tls route on port 443 and sniHosts [a, b]"),
            ),
            (
                "same managed header route name",
                canary(
                    vs(json!({"name": "reviews", "routes": ["a"]})),
                    &["canary-header"],
                ),
                (
                    canary(
                        vs(json!({"name": "reviews", "routes": ["b"]})),
                        &["canary-header"],
                    ),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/reviews: managed route \"canary-header\""),
            ),
            (
                "managed route named like the other's http route",
                canary(vs(json!({"name": "reviews", "routes": ["a"]})), &["b"]),
                (
                    canary(vs(json!({"name": "reviews", "routes": ["b"]})), none),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/reviews: managed route \"b\" / http route \"b\""),
            ),
            (
                "one of several VirtualServices",
                canary(
                    json!({"virtualServices": [{"name": "a", "routes": ["p"]}, {"name": "b", "routes": ["p"]}],
                           "stableService": "s", "canaryService": "c"}),
                    none,
                ),
                (
                    canary(vs(json!({"name": "b", "routes": ["p"]})), none),
                    "bookinfo",
                ),
                Some("VirtualService bookinfo/b: http route \"p\""),
            ),
        ];
        for (case, a, (b, b_ns), want) in cases {
            let got = shared_route(&route_claims(&a, "bookinfo"), &route_claims(&b, b_ns));
            assert_eq!(got.as_deref(), want, "{case}");
            // Symmetric as to whether they clash.
            let back = shared_route(&route_claims(&b, b_ns), &route_claims(&a, "bookinfo"));
            assert_eq!(back.is_some(), want.is_some(), "{case} (reversed)");
        }
    }
}
