//! Unit tests, one or more per rule; names mirror Argo Rollouts' istio_test.go where a test
//! there covers the same behaviour.

use serde_json::{Value, json};

use super::*;
use crate::traffic::model::{DestinationRuleRef, MirrorMatch};

fn host_routing() -> IstioRouting {
    IstioRouting {
        namespace: "ns".into(),
        max_weight: 100,
        managed_routes: Vec::new(),
        virtual_services: Vec::new(),
        backend: Backend::Host {
            stable: "stable-svc".into(),
            canary: "canary-svc".into(),
        },
        additional_destinations: Vec::new(),
    }
}

fn subset_routing() -> IstioRouting {
    IstioRouting {
        backend: Backend::Subset {
            destination_rule: DestinationRuleRef {
                name: "dr".into(),
                namespace: None,
            },
            stable_subset: "stable".into(),
            canary_subset: "canary".into(),
        },
        ..host_routing()
    }
}

fn managed(mut r: IstioRouting, names: &[&str]) -> IstioRouting {
    r.managed_routes = names.iter().map(|s| s.to_string()).collect();
    r
}

fn http_ref(routes: &[&str]) -> VirtualServiceRef {
    VirtualServiceRef {
        name: "vs".into(),
        namespace: None,
        http_routes: routes.iter().map(|s| s.to_string()).collect(),
        tls_routes: Vec::new(),
        tcp_routes: Vec::new(),
    }
}

fn tls_ref(port: Option<u32>, sni: &[&str]) -> VirtualServiceRef {
    VirtualServiceRef {
        tls_routes: vec![TlsRouteRef {
            port,
            sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
        }],
        ..http_ref(&[])
    }
}

fn tcp_ref(port: u32) -> VirtualServiceRef {
    VirtualServiceRef {
        tcp_routes: vec![TcpRouteRef { port: Some(port) }],
        ..http_ref(&[])
    }
}

fn dest(host: &str, weight: i64) -> Value {
    json!({"destination": {"host": host}, "weight": weight})
}

fn sdest(host: &str, subset: &str, weight: i64) -> Value {
    json!({"destination": {"host": host, "subset": subset}, "weight": weight})
}

fn vs_with(spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "ns", "labels": {"app": "reviews"}},
        "spec": spec,
    })
}

/// The classic Argo fixture: `primary` and `secondary`, both stable 100 / canary 0.
fn two_http() -> Value {
    vs_with(json!({
        "hosts": ["reviews"],
        "gateways": ["mesh"],
        "http": [
            {"name": "primary", "route": [dest("stable-svc", 100), dest("canary-svc", 0)]},
            {"name": "secondary", "route": [dest("stable-svc", 100), dest("canary-svc", 0)]},
        ],
    }))
}

fn tls_route(port: u64, sni: &[&str]) -> Value {
    json!({
        "match": [{"port": port, "sniHosts": sni}],
        "route": [dest("stable-svc", 100), dest("canary-svc", 0)],
    })
}

fn tcp_route(port: u64) -> Value {
    json!({"match": [{"port": port}], "route": [dest("stable-svc", 100), dest("canary-svc", 0)]})
}

/// Weights of `spec.<key>[i]` as (host[/subset], weight) pairs.
fn weights(vs: &Value, key: &str, i: usize) -> Vec<(String, i64)> {
    vs["spec"][key][i]["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let d = &e["destination"];
            let mut name = d["host"].as_str().unwrap().to_string();
            if let Some(s) = d["subset"].as_str() {
                name = format!("{name}/{s}");
            }
            (name, e["weight"].as_i64().unwrap_or(-1))
        })
        .collect()
}

fn pairs(p: &[(&str, i64)]) -> Vec<(String, i64)> {
    p.iter().map(|(h, w)| (h.to_string(), *w)).collect()
}

fn http_names(vs: &Value) -> Vec<String> {
    vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn exact(v: &str) -> StringMatch {
    StringMatch::Exact(v.into())
}

fn header(name: &str, h: &str, m: StringMatch) -> HeaderRoute {
    HeaderRoute {
        name: name.into(),
        headers: vec![HeaderMatch::new(h, m)],
    }
}

fn mirror(name: &str, pct: Option<f64>) -> MirrorRoute {
    MirrorRoute {
        name: name.into(),
        percentage: pct,
        matches: vec![MirrorMatch {
            method: Some(exact("GET")),
            path: Some(StringMatch::Prefix("/".into())),
            headers: Vec::new(),
        }],
    }
}

fn with_routes(w: i64, headers: Vec<HeaderRoute>, mirrors: Vec<MirrorRoute>) -> DesiredRouting {
    DesiredRouting {
        canary_weight: w,
        header_routes: headers,
        mirror_routes: mirrors,
    }
}

// ---------------------------------------------------------------------------------------------
// Base cases

#[test]
fn http_base_case_sets_named_route_only() {
    let vs = two_http();
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc", 90), ("canary-svc", 10)])
    );
    assert_eq!(out["spec"]["http"][1], vs["spec"]["http"][1]);
    assert_eq!(out["spec"]["hosts"], vs["spec"]["hosts"]);
    assert_eq!(out["metadata"]["labels"], vs["metadata"]["labels"]);
}

#[test]
fn http_base_case_mixed_with_tls_leaves_tls_untouched() {
    let mut vs = two_http();
    vs["spec"]["tls"] = json!([tls_route(3000, &[])]);
    let out = apply(
        &vs,
        &http_ref(&["secondary"]),
        &host_routing(),
        &DesiredRouting::weight(20),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 1),
        pairs(&[("stable-svc", 80), ("canary-svc", 20)])
    );
    assert_eq!(out["spec"]["http"][0], vs["spec"]["http"][0]);
    assert_eq!(out["spec"]["tls"], vs["spec"]["tls"]);
}

#[test]
fn tls_base_case_selects_by_port() {
    let vs = vs_with(json!({"tls": [tls_route(3000, &[]), tls_route(3001, &[])]}));
    let out = apply(
        &vs,
        &tls_ref(Some(3000), &[]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "tls", 0),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    assert_eq!(out["spec"]["tls"][1], vs["spec"]["tls"][1]);
}

#[test]
fn tls_sni_selects_by_full_host_set_order_insensitive() {
    let vs = vs_with(json!({"tls": [
        tls_route(3000, &["a.example", "b.example"]),
        tls_route(3000, &["a.example"]),
    ]}));
    let r = tls_ref(None, &["b.example", "a.example"]);
    let out = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(30)).unwrap();
    assert_eq!(
        weights(&out, "tls", 0),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    assert_eq!(out["spec"]["tls"][1], vs["spec"]["tls"][1]);
}

#[test]
fn tls_port_and_sni_must_both_match() {
    let vs = vs_with(json!({"tls": [
        tls_route(3000, &["localhost"]),
        tls_route(3001, &["localhost"]),
        tls_route(3001, &["other"]),
    ]}));
    let out = apply(
        &vs,
        &tls_ref(Some(3001), &["localhost"]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    assert_eq!(out["spec"]["tls"][0], vs["spec"]["tls"][0]);
    assert_eq!(
        weights(&out, "tls", 1),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    assert_eq!(out["spec"]["tls"][2], vs["spec"]["tls"][2]);
}

#[test]
fn tls_all_matching_routes_are_selected() {
    let vs = vs_with(json!({"tls": [tls_route(3000, &["a"]), tls_route(3000, &["a"])]}));
    let out = apply(
        &vs,
        &tls_ref(Some(3000), &["a"]),
        &host_routing(),
        &DesiredRouting::weight(5),
    )
    .unwrap();
    for i in 0..2 {
        assert_eq!(
            weights(&out, "tls", i),
            pairs(&[("stable-svc", 95), ("canary-svc", 5)])
        );
    }
}

#[test]
fn tcp_base_case_selects_by_port() {
    let vs = vs_with(json!({"tcp": [tcp_route(3000), tcp_route(3001)]}));
    let out = apply(
        &vs,
        &tcp_ref(3000),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "tcp", 0),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    assert_eq!(out["spec"]["tcp"][1], vs["spec"]["tcp"][1]);
}

#[test]
fn mixed_http_tls_tcp_all_set() {
    let vs = vs_with(json!({
        "http": [{"name": "primary", "route": [dest("stable-svc", 100), dest("canary-svc", 0)]}],
        "tls": [tls_route(3000, &[])],
        "tcp": [tcp_route(3000)],
    }));
    let r = VirtualServiceRef {
        tls_routes: vec![TlsRouteRef {
            port: Some(3000),
            sni_hosts: Vec::new(),
        }],
        tcp_routes: vec![TcpRouteRef { port: Some(3000) }],
        ..http_ref(&["primary"])
    };
    let out = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(20)).unwrap();
    for key in ["http", "tls", "tcp"] {
        assert_eq!(
            weights(&out, key, 0),
            pairs(&[("stable-svc", 80), ("canary-svc", 20)]),
            "{key}"
        );
    }
    let read = read_weights(&out, &r, &host_routing()).unwrap();
    assert_eq!(read.len(), 3);
    assert!(
        read.iter()
            .all(|w| w.stable == 80 && w.canary == 20 && w.others.is_empty())
    );
    assert_eq!(read[0].route, "primary");
    assert_eq!(read[1].kind, RouteKind::Tls);
    assert_eq!(read[2].route, "#0");
}

#[test]
fn ping_pong_services_as_stable_and_canary() {
    let vs = vs_with(
        json!({"http": [{"name": "primary", "route": [dest("ping", 100), dest("pong", 0)]}]}),
    );
    let routing = IstioRouting {
        backend: Backend::Host {
            stable: "ping".into(),
            canary: "pong".into(),
        },
        ..host_routing()
    };
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(20),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("ping", 80), ("pong", 20)])
    );
}

// ---------------------------------------------------------------------------------------------
// Route selection

#[test]
fn inferred_single_http_route() {
    let vs =
        vs_with(json!({"http": [{"route": [dest("stable-svc", 100), dest("canary-svc", 0)]}]}));
    let out = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc", 90), ("canary-svc", 10)])
    );
}

#[test]
fn inferred_single_route_ignores_managed_routes() {
    let vs = vs_with(json!({"http": [
        {"name": "hdr", "match": [{"headers": {"x": {"exact": "1"}}}], "route": [dest("canary-svc", 100)]},
        {"name": "primary", "route": [dest("stable-svc", 100), dest("canary-svc", 0)]},
    ]}));
    let routing = managed(host_routing(), &["hdr"]);
    let out = apply(&vs, &http_ref(&[]), &routing, &DesiredRouting::weight(10)).unwrap();
    // The header route is no longer wanted: removed; the weighted route is inferred.
    assert_eq!(http_names(&out), ["primary"]);
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc", 90), ("canary-svc", 10)])
    );
}

#[test]
fn ambiguous_http_routes_are_an_error() {
    let err = apply(
        &two_http(),
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        RoutingError::AmbiguousRoutes {
            kind: RouteKind::Http,
            found: 2,
            ..
        }
    ));
    assert!(
        err.to_string()
            .contains("must have exactly one route when routes are omitted"),
        "{err}"
    );
    assert!(err.to_string().contains("VirtualService vs"), "{err}");
}

#[test]
fn ambiguous_tls_and_tcp_routes_are_an_error() {
    let vs = vs_with(json!({"tls": [tls_route(1, &[]), tls_route(2, &[])]}));
    let err = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RoutingError::AmbiguousRoutes {
                kind: RouteKind::Tls,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    let vs = vs_with(json!({"tcp": [tcp_route(1), tcp_route(2)]}));
    let err = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RoutingError::AmbiguousRoutes {
                kind: RouteKind::Tcp,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn single_tls_or_tcp_route_inferred_when_nothing_is_named() {
    let vs = vs_with(json!({"tls": [tls_route(3000, &[])]}));
    let out = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "tls", 0),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    let vs = vs_with(json!({"tcp": [tcp_route(3000)]}));
    let out = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "tcp", 0),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
}

#[test]
fn naming_nothing_moves_the_single_route_of_every_kind_as_argo() {
    // Issue 15 item 6: one http, one tls and one tcp route, a Canary naming none: all move
    // (Argo patches tls[0] and tcp[0] too), never only http.
    let vs = vs_with(json!({
        "hosts": ["reviews"],
        "http": [{"route": [dest("stable-svc", 100), dest("canary-svc", 0)]}],
        "tls": [tls_route(3000, &["reviews.example.com"])],
        "tcp": [tcp_route(9000)],
    }));
    let out = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    for key in ["http", "tls", "tcp"] {
        assert_eq!(
            weights(&out, key, 0),
            pairs(&[("stable-svc", 70), ("canary-svc", 30)]),
            "{key}"
        );
    }
    let rows = read_weights(&out, &http_ref(&[]), &host_routing()).unwrap();
    assert_eq!(rows.len(), 3);
    crate::testkit::vs_schema::assert_valid_virtual_service(&out);
    // Two tls routes and nothing named: which one is meant cannot be told; refused.
    let mut two = vs.clone();
    two["spec"]["tls"] = json!([
        tls_route(3000, &["a.example"]),
        tls_route(3001, &["b.example"])
    ]);
    let err = apply(
        &two,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RoutingError::AmbiguousRoutes {
                kind: RouteKind::Tls,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    // A tls route that is not the Canary's, with nothing named: an error naming it, not a
    // silent http-only move.
    let mut foreign = vs.clone();
    foreign["spec"]["tls"][0]["route"] = json!([dest("other-svc", 100)]);
    let err = apply(
        &foreign,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("stable host \"stable-svc\" not found in tls route \"#0\""),
        "{err}"
    );
    // Naming the http route leaves the kinds it names nothing of alone (Argo would patch them;
    // DESIGN: touch only what the Canary names).
    foreign["spec"]["http"][0]["name"] = json!("primary");
    let out = apply(
        &foreign,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(30),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    assert_eq!(out["spec"]["tls"], foreign["spec"]["tls"]);
    assert_eq!(out["spec"]["tcp"], foreign["spec"]["tcp"]);
}

#[test]
fn route_not_found_names_vs_kind_and_route() {
    let err = apply(
        &two_http(),
        &http_ref(&["missing"]),
        &host_routing(),
        &DesiredRouting::weight(1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "http route \"missing\" not found in VirtualService vs"
    );
    let vs = vs_with(json!({"tls": [tls_route(3000, &["a"])]}));
    let err = apply(
        &vs,
        &tls_ref(Some(3001), &["a"]),
        &host_routing(),
        &DesiredRouting::weight(1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no tls route matching port 3001 and sniHosts [a] found in VirtualService vs"
    );
    let vs = vs_with(json!({"tcp": [tcp_route(3000)]}));
    let err = apply(
        &vs,
        &tcp_ref(3001),
        &host_routing(),
        &DesiredRouting::weight(1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no tcp route matching port 3001 found in VirtualService vs"
    );
}

#[test]
fn no_routes_is_an_error() {
    let vs = vs_with(json!({"hosts": ["x"]}));
    let err = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(1),
    )
    .unwrap_err();
    assert!(matches!(err, RoutingError::NoRoutes { .. }), "{err}");
}

#[test]
fn weighted_route_that_is_also_managed_is_a_config_error() {
    let routing = managed(host_routing(), &["primary"]);
    let err = apply(
        &two_http(),
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(1),
    )
    .unwrap_err();
    assert!(matches!(err, RoutingError::InvalidConfig { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Destination matching

#[test]
fn host_equivalence_in_vs_namespace() {
    for (stable, canary) in [
        ("stable-svc", "canary-svc.ns"),
        ("stable-svc.ns.svc", "canary-svc.ns.svc.cluster.local"),
        ("STABLE-SVC.ns.svc.cluster.local.", "canary-svc"),
    ] {
        let vs = vs_with(
            json!({"http": [{"name": "primary", "route": [dest(stable, 100), dest(canary, 0)]}]}),
        );
        let routing = IstioRouting {
            backend: Backend::Host {
                stable: "stable-svc.ns".into(),
                canary: "canary-svc".into(),
            },
            ..host_routing()
        };
        let out = apply(
            &vs,
            &http_ref(&["primary"]),
            &routing,
            &DesiredRouting::weight(10),
        )
        .unwrap();
        assert_eq!(
            weights(&out, "http", 0),
            pairs(&[(stable, 90), (canary, 10)])
        );
    }
}

#[test]
fn host_in_other_namespace_is_a_different_host() {
    // `canary-svc.other` is not `canary-svc` in namespace `ns` (Argo would treat it as equal).
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        dest("stable-svc", 100), dest("canary-svc.other", 0),
    ]}]}));
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "canary host \"canary-svc\" not found in http route \"primary\" of VirtualService vs; \
         the route's \"canary-svc.other\" is canary-svc.other.svc.cluster.local (hosts in a \
         VirtualService resolve in its namespace ns), not canary-svc.ns.svc.cluster.local: write \
         \"canary-svc\" in the VirtualService"
    );
}

#[test]
fn vs_namespace_falls_back_to_ref_then_default_for_the_vs_hosts() {
    // The VS's short hosts resolve in its own namespace; the Canary (in `team`) names its
    // services short, in `team`.
    let team = IstioRouting {
        namespace: "team".into(),
        ..host_routing()
    };
    let mut vs = vs_with(json!({"http": [{"name": "p", "route": [
        dest("stable-svc", 100), dest("canary-svc.team", 0),
    ]}]}));
    vs["metadata"].as_object_mut().unwrap().remove("namespace");
    let mut r = http_ref(&["p"]);
    // Without metadata.namespace nor a ref namespace the VS is in `default`, so its short
    // `stable-svc` is default's, not team's.
    assert!(apply(&vs, &r, &team, &DesiredRouting::weight(10)).is_err());
    r.namespace = Some("team".into());
    let out = apply(&vs, &r, &team, &DesiredRouting::weight(10)).unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc", 90), ("canary-svc.team", 10)])
    );
}

/// Argo's documented cross-namespace setup: the VirtualService lives in `istio-routes` and
/// names `stable-svc.rollouts`; the Canary lives in `rollouts` with short service names.
fn argo_cross_namespace(hosts: (&str, &str)) -> (Value, IstioRouting) {
    let mut vs = vs_with(
        json!({"hosts": ["reviews.example.com"], "http": [{"name": "primary", "route": [
            dest(hosts.0, 100), dest(hosts.1, 0),
        ]}]}),
    );
    vs["metadata"]["namespace"] = json!("istio-routes");
    let routing = IstioRouting {
        namespace: "rollouts".into(),
        managed_routes: vec!["hdr".into()],
        ..host_routing()
    };
    (vs, routing)
}

#[test]
fn canary_services_resolve_in_the_canary_namespace_as_argo_documents() {
    for hosts in [
        ("stable-svc.rollouts", "canary-svc.rollouts"),
        (
            "stable-svc.rollouts.svc.cluster.local",
            "canary-svc.rollouts.svc",
        ),
    ] {
        let (vs, routing) = argo_cross_namespace(hosts);
        let want = with_routes(30, vec![header("hdr", "x-beta", exact("1"))], Vec::new());
        let out = apply(&vs, &http_ref(&["primary"]), &routing, &want).unwrap();
        assert_eq!(
            weights(&out, "http", 1),
            pairs(&[(hosts.0, 70), (hosts.1, 30)])
        );
        // The header route must reach the same Service from istio-routes: qualified.
        assert_eq!(
            out["spec"]["http"][0]["route"][0]["destination"]["host"],
            "canary-svc.rollouts"
        );
        crate::testkit::vs_schema::assert_valid_virtual_service(&out);
    }
    // A lone stable destination gets the canary added, written so that it resolves to the
    // Canary's Service from the VirtualService's namespace.
    let (mut vs, routing) = argo_cross_namespace(("stable-svc.rollouts", "x"));
    vs["spec"]["http"][0]["route"] = json!([{"destination": {"host": "stable-svc.rollouts"}}]);
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc.rollouts", 90), ("canary-svc.rollouts", 10)])
    );
}

#[test]
fn short_hosts_in_another_namespace_are_other_services_and_refused() {
    // `stable-svc` written in istio-routes is istio-routes' Service, not the Canary's.
    let (vs, routing) = argo_cross_namespace(("stable-svc", "canary-svc"));
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stable host \"stable-svc\" not found in http route \"primary\" of VirtualService vs; \
         the route's \"stable-svc\" is stable-svc.istio-routes.svc.cluster.local (hosts in a \
         VirtualService resolve in its namespace istio-routes), not \
         stable-svc.rollouts.svc.cluster.local: write \"stable-svc.rollouts\" in the VirtualService"
    );
    assert!(read_weights(&vs, &http_ref(&["primary"]), &routing).is_err());
}

#[test]
fn a_misnamed_stable_or_canary_is_named_not_the_real_one_called_unknown() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        dest("reviews-stable", 80), dest("reviews-canary", 20),
    ]}]}));
    let typo = |stable: &str, canary: &str| IstioRouting {
        backend: Backend::Host {
            stable: stable.into(),
            canary: canary.into(),
        },
        ..host_routing()
    };
    let r = http_ref(&["primary"]);
    let err = apply(
        &vs,
        &r,
        &typo("reviews-stabel", "reviews-canary"),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stable host \"reviews-stabel\" not found in http route \"primary\" of VirtualService vs; \
         its destinations: reviews-stable, reviews-canary"
    );
    let err = apply(
        &vs,
        &r,
        &typo("reviews-stable", "reviews-canery"),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RoutingError::DestinationNotFound { role: "canary", name, .. } if name == "reviews-canery"),
        "{err}"
    );
    // Subsets likewise.
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        sdest("reviews", "v1", 80), sdest("reviews", "v2", 20),
    ]}]}));
    let subsets = |stable: &str, canary: &str| IstioRouting {
        backend: Backend::Subset {
            destination_rule: DestinationRuleRef {
                name: "reviews".into(),
                namespace: None,
            },
            stable_subset: stable.into(),
            canary_subset: canary.into(),
        },
        ..host_routing()
    };
    let err = apply(&vs, &r, &subsets("v0", "v2"), &DesiredRouting::weight(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stable subset \"v0\" not found in http route \"primary\" of VirtualService vs; \
         its destinations: reviews/v1, reviews/v2"
    );
    let err = apply(&vs, &r, &subsets("v1", "v3"), &DesiredRouting::weight(10)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("canary subset \"v3\" not found"),
        "{err}"
    );
    // With both named right, a third weighted destination is still the unknown one.
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        sdest("reviews", "v1", 70), sdest("reviews", "v2", 20), sdest("reviews", "v9", 10),
    ]}]}));
    let err = apply(&vs, &r, &subsets("v1", "v2"), &DesiredRouting::weight(10)).unwrap_err();
    assert!(
        matches!(&err, RoutingError::UnknownDestination { destination, .. } if destination == "reviews/v9"),
        "{err}"
    );
}

#[test]
fn naming_the_root_of_a_delegate_virtual_service_points_to_the_delegate() {
    let vs = vs_with(
        json!({"hosts": ["reviews.example.com"], "gateways": ["gw"], "http": [
            {"name": "reviews", "match": [{"uri": {"prefix": "/reviews"}}],
             "delegate": {"name": "reviews-delegate", "namespace": "team"}},
        ]}),
    );
    crate::testkit::vs_schema::assert_valid_virtual_service(&vs);
    for r in [http_ref(&["reviews"]), http_ref(&[])] {
        let err = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "http route \"reviews\" of VirtualService vs delegates to VirtualService \
             reviews-delegate.team and has no destinations to weigh; name the delegate \
             VirtualService (reviews-delegate.team) in the Canary instead"
        );
    }
}

#[test]
fn subset_based_with_additional_destination_keeps_its_weight() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        sdest("reviews", "stable", 80), sdest("reviews", "canary", 0), sdest("reviews", "extra", 20),
    ]}]}));
    let routing = IstioRouting {
        additional_destinations: vec![AdditionalDestination {
            host: None,
            subset: Some("extra".into()),
        }],
        ..subset_routing()
    };
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[
            ("reviews/stable", 70),
            ("reviews/canary", 10),
            ("reviews/extra", 20)
        ])
    );
    let read = read_weights(&out, &http_ref(&["primary"]), &routing).unwrap();
    assert_eq!(
        read[0].others,
        vec![DestinationWeight::new("reviews/extra", 20)]
    );
    assert_eq!((read[0].stable, read[0].canary), (70, 10));
}

#[test]
fn additional_destination_by_host_keeps_its_weight() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        dest("stable-svc", 70), dest("canary-svc", 0), dest("exp-svc.ns.svc.cluster.local", 30),
    ]}]}));
    let routing = IstioRouting {
        additional_destinations: vec![AdditionalDestination {
            host: Some("exp-svc".into()),
            subset: None,
        }],
        ..host_routing()
    };
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0)[..2],
        pairs(&[("stable-svc", 60), ("canary-svc", 10)])
    );
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(80),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RoutingError::NegativeStable {
                others: 30,
                canary: 80,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unknown_destination_with_weight_is_refused() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        dest("stable-svc", 80), dest("canary-svc", 0), dest("rogue", 20),
    ]}]}));
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RoutingError::UnknownDestination { destination, weight: 20, .. } if destination == "rogue")
    );
    assert!(
        err.to_string()
            .contains("http route \"primary\" of VirtualService vs"),
        "{err}"
    );
}

#[test]
fn unknown_destination_with_zero_weight_is_kept() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        dest("stable-svc", 100), dest("canary-svc", 0), dest("rogue", 0),
        {"destination": {"host": "noweight"}},
    ]}]}));
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[
            ("stable-svc", 90),
            ("canary-svc", 10),
            ("rogue", 0),
            ("noweight", -1)
        ])
    );
}

#[test]
fn missing_stable_or_canary_is_an_error() {
    let vs = vs_with(
        json!({"http": [{"name": "primary", "route": [dest("stable-svc", 100), dest("other", 0)]}]}),
    );
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "canary host \"canary-svc\" not found in http route \"primary\" of VirtualService vs; \
         its destinations: stable-svc, other"
    );
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [dest("canary-svc", 100)]}]}));
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stable host \"stable-svc\" not found in http route \"primary\" of VirtualService vs; \
         its destinations: canary-svc"
    );
    // A zero-weight subset of another host is not the previous release's: still missing.
    let vs = vs_with(json!({"http": [{"route": [sdest("r", "stable", 100), sdest("x", "x", 0)]}]}));
    let err = apply(
        &vs,
        &http_ref(&[]),
        &subset_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "canary subset \"canary\" not found in http route \"#0\" of VirtualService vs; \
         its destinations: r/stable, x/x"
    );
}

/// The next release of a subset split: v2 was promoted over v1 (`onSuccess: Keep`), and the
/// Canary now names stable v2, canary v3. The v1 entry (weight 0) becomes the canary; v1 is
/// never given traffic again and the route never names it after the first write.
#[test]
fn next_release_subset_swap_turns_the_old_stable_entry_into_the_canary() {
    let promoted = json!({"http": [{"name": "primary", "route": [
        {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 0},
        {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 100},
    ]}]});
    let vs = vs_with(promoted);
    let routing = |stable: &str, canary: &str| IstioRouting {
        backend: Backend::Subset {
            destination_rule: DestinationRuleRef {
                name: "reviews".into(),
                namespace: None,
            },
            stable_subset: stable.into(),
            canary_subset: canary.into(),
        },
        ..host_routing()
    };
    let r = http_ref(&["primary"]);
    // Before the first write of v3, the routes read as 100 % stable (v2), 0 % canary.
    let read = read_weights(&vs, &r, &routing("v2", "v3")).unwrap();
    assert_eq!((read[0].stable, read[0].canary), (100, 0));
    assert!(read[0].others.is_empty(), "{read:?}");
    let out = apply(&vs, &r, &routing("v2", "v3"), &DesiredRouting::weight(10)).unwrap();
    crate::testkit::vs_schema::assert_valid_virtual_service(&out);
    assert_eq!(
        weights(&out, "http", 0),
        vec![("reviews/v3".into(), 10), ("reviews/v2".into(), 90)]
    );
    // The port is the stable entry's.
    assert_eq!(
        out["spec"]["http"][0]["route"][0]["destination"]["port"],
        json!({"number": 9080})
    );
    // And it repeats: v3 promoted, then stable v3, canary v4.
    let promoted = apply(&out, &r, &routing("v2", "v3"), &DesiredRouting::weight(100)).unwrap();
    let out = apply(
        &promoted,
        &r,
        &routing("v3", "v4"),
        &DesiredRouting::weight(20),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        vec![("reviews/v3".into(), 80), ("reviews/v4".into(), 20)]
    );
    // An abort before any exposure writes the canary subset at 0: v1 is gone from the route.
    let out = apply(&vs, &r, &routing("v2", "v3"), &DesiredRouting::weight(0)).unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        vec![("reviews/v3".into(), 0), ("reviews/v2".into(), 100)]
    );
    // The old stable still carrying traffic is not a previous release: refused, by name.
    let split = vs_with(json!({"http": [{"name": "primary", "route": [
        sdest("reviews", "v1", 30), sdest("reviews", "v2", 70),
    ]}]}));
    let err = apply(
        &split,
        &r,
        &routing("v2", "v3"),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            RoutingError::DestinationNotFound { role: "canary", .. }
        ) && err.to_string().contains("reviews/v1, reviews/v2"),
        "{err}"
    );
}

/// Host splits never replace a destination: a canary Service missing from the route is more
/// likely a typo than a release (there is no DestinationRule to prove the name), so the
/// ping-pong of host mode swaps two Services that both stay in the route.
#[test]
fn next_release_host_swap_reweights_both_services_in_place() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        dest("reviews-a", 0), dest("reviews-b", 100),
    ]}]}));
    let swapped = IstioRouting {
        backend: Backend::Host {
            stable: "reviews-b".into(),
            canary: "reviews-a".into(),
        },
        ..host_routing()
    };
    let r = http_ref(&["primary"]);
    let read = read_weights(&vs, &r, &swapped).unwrap();
    assert_eq!((read[0].stable, read[0].canary), (100, 0));
    let out = apply(&vs, &r, &swapped, &DesiredRouting::weight(10)).unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        vec![("reviews-a".into(), 10), ("reviews-b".into(), 90)]
    );
    let typo = IstioRouting {
        backend: Backend::Host {
            stable: "reviews-b".into(),
            canary: "reviews-c".into(),
        },
        ..host_routing()
    };
    let err = apply(&vs, &r, &typo, &DesiredRouting::weight(10)).unwrap_err();
    assert!(
        matches!(
            &err,
            RoutingError::DestinationNotFound { role: "canary", .. }
        ),
        "{err}"
    );
}

#[test]
fn duplicate_stable_destination_is_an_error() {
    let vs = vs_with(json!({"http": [{"name": "p", "route": [
        dest("stable-svc", 50), dest("stable-svc.ns", 50), dest("canary-svc", 0),
    ]}]}));
    let err = apply(
        &vs,
        &http_ref(&["p"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RoutingError::AmbiguousDestination {
                count: 2,
                role: "stable",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn lone_stable_destination_gets_canary_added() {
    let vs = vs_with(json!({"http": [{"name": "p", "route": [
        {"destination": {"host": "stable-svc", "subset": "v1", "port": {"number": 8080}}, "headers": {"request": {"set": {"x": "1"}}}},
    ]}]}));
    let out = apply(
        &vs,
        &http_ref(&["p"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["http"][0]["route"],
        json!([
            {"destination": {"host": "stable-svc", "subset": "v1", "port": {"number": 8080}}, "headers": {"request": {"set": {"x": "1"}}}, "weight": 90},
            {"destination": {"host": "canary-svc", "port": {"number": 8080}}, "headers": {"request": {"set": {"x": "1"}}}, "weight": 10},
        ])
    );
    // Subset split: same host, canary subset.
    let vs =
        vs_with(json!({"http": [{"route": [{"destination": {"host": "r", "subset": "stable"}}]}]}));
    let out = apply(
        &vs,
        &http_ref(&[]),
        &subset_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("r/stable", 90), ("r/canary", 10)])
    );
}

#[test]
fn lone_stable_destination_at_weight_zero_is_unchanged() {
    let vs = vs_with(
        json!({"http": [{"name": "p", "route": [{"destination": {"host": "stable-svc"}}]}]}),
    );
    let out = apply(
        &vs,
        &http_ref(&["p"]),
        &host_routing(),
        &DesiredRouting::weight(0),
    )
    .unwrap();
    assert_eq!(out, vs);
    let read = read_weights(&vs, &http_ref(&["p"]), &host_routing()).unwrap();
    assert_eq!((read[0].stable, read[0].canary), (100, 0));
}

#[test]
fn weight_out_of_range_is_an_error() {
    for w in [-1, 101] {
        let err = apply(
            &two_http(),
            &http_ref(&["primary"]),
            &host_routing(),
            &DesiredRouting::weight(w),
        )
        .unwrap_err();
        assert!(
            matches!(err, RoutingError::WeightOutOfRange { max: 100, .. }),
            "{err}"
        );
    }
}

#[test]
fn max_weight_is_honoured() {
    let routing = IstioRouting {
        max_weight: 1000,
        ..host_routing()
    };
    let vs =
        vs_with(json!({"http": [{"route": [dest("stable-svc", 1000), dest("canary-svc", 0)]}]}));
    let out = apply(&vs, &http_ref(&[]), &routing, &DesiredRouting::weight(250)).unwrap();
    assert_eq!(
        weights(&out, "http", 0),
        pairs(&[("stable-svc", 750), ("canary-svc", 250)])
    );
}

// ---------------------------------------------------------------------------------------------
// Header routes

#[test]
fn header_route_host_based_first_and_removed_when_not_wanted() {
    let routing = managed(host_routing(), &["hdr"]);
    let r = http_ref(&["primary"]);
    let want = with_routes(
        10,
        vec![header("hdr", "agent", exact("firefox"))],
        Vec::new(),
    );
    let out = apply(&two_http(), &r, &routing, &want).unwrap();
    assert_eq!(http_names(&out), ["hdr", "primary", "secondary"]);
    assert_eq!(
        out["spec"]["http"][0],
        json!({
            "name": "hdr",
            "match": [{"headers": {"agent": {"exact": "firefox"}}}],
            "route": [{"destination": {"host": "canary-svc"}, "weight": 100}],
        })
    );
    assert_eq!(
        weights(&out, "http", 1),
        pairs(&[("stable-svc", 90), ("canary-svc", 10)])
    );
    let removed = apply(&out, &r, &routing, &DesiredRouting::weight(10)).unwrap();
    assert_eq!(http_names(&removed), ["primary", "secondary"]);
}

#[test]
fn header_route_subset_based_uses_dr_host_and_canary_subset() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        sdest("reviews.ns.svc.cluster.local", "stable", 100), sdest("reviews.ns.svc.cluster.local", "canary", 0),
    ]}]}));
    let routing = managed(subset_routing(), &["hdr"]);
    let want = with_routes(
        0,
        vec![header(
            "hdr",
            "agent",
            StringMatch::Regex(".*fire.*".into()),
        )],
        Vec::new(),
    );
    let out = apply(&vs, &http_ref(&["primary"]), &routing, &want).unwrap();
    assert_eq!(
        out["spec"]["http"][0],
        json!({
            "name": "hdr",
            "match": [{"headers": {"agent": {"regex": ".*fire.*"}}}],
            "route": [{"destination": {"host": "reviews.ns.svc.cluster.local", "subset": "canary"}, "weight": 100}],
        })
    );
}

#[test]
fn header_route_with_extra_fields_copies_port_and_keeps_extras() {
    let vs = vs_with(json!({"http": [{
        "name": "primary",
        "retries": {"attempts": 3, "perTryTimeout": "10s"},
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "maxAge": "24h"},
        "route": [
            {"destination": {"host": "stable-svc", "port": {"number": 8443}}, "weight": 100},
            {"destination": {"host": "canary-svc", "port": {"number": 8443}}, "weight": 0},
        ],
    }]}));
    let routing = managed(host_routing(), &["hdr"]);
    let want = with_routes(
        0,
        vec![header("hdr", "agent", StringMatch::Prefix("fire".into()))],
        Vec::new(),
    );
    let out = apply(&vs, &http_ref(&["primary"]), &routing, &want).unwrap();
    assert_eq!(
        out["spec"]["http"][0]["route"][0]["destination"],
        json!({"host": "canary-svc", "port": {"number": 8443}})
    );
    assert_eq!(
        out["spec"]["http"][0]["match"][0]["headers"]["agent"],
        json!({"prefix": "fire"})
    );
    assert_eq!(out["spec"]["http"][1], vs["spec"]["http"][0]);
    // Removing the managed route gives back exactly the input (weights unchanged).
    let removed = apply(
        &out,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(0),
    )
    .unwrap();
    assert_eq!(removed, vs);
}

#[test]
fn header_route_idempotent_no_duplicates() {
    let routing = managed(host_routing(), &["hdr"]);
    let r = http_ref(&["primary"]);
    let want = with_routes(
        10,
        vec![header("hdr", "agent", exact("firefox"))],
        Vec::new(),
    );
    let once = apply(&two_http(), &r, &routing, &want).unwrap();
    let twice = apply(&once, &r, &routing, &want).unwrap();
    assert_eq!(once, twice);
    assert_eq!(http_names(&twice), ["hdr", "primary", "secondary"]);
}

#[test]
fn header_and_mirror_routes_must_be_managed_and_valid() {
    let routing = managed(host_routing(), &["hdr"]);
    let r = http_ref(&["primary"]);
    let err = apply(
        &two_http(),
        &r,
        &routing,
        &with_routes(0, vec![header("other", "a", exact("b"))], Vec::new()),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "http route \"other\" for VirtualService vs is not listed in managedRoutes"
    );
    let empty = HeaderRoute {
        name: "hdr".into(),
        headers: Vec::new(),
    };
    let err = apply(
        &two_http(),
        &r,
        &routing,
        &with_routes(0, vec![empty], Vec::new()),
    )
    .unwrap_err();
    assert!(
        matches!(err, RoutingError::InvalidManagedRoute { .. }),
        "{err}"
    );
    let err = apply(
        &two_http(),
        &r,
        &routing,
        &with_routes(0, Vec::new(), vec![mirror("hdr", Some(101.0))]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside 0..=100"), "{err}");
    let err = apply(
        &two_http(),
        &r,
        &routing,
        &with_routes(
            0,
            vec![header("hdr", "a", exact("b"))],
            vec![mirror("hdr", None)],
        ),
    )
    .unwrap_err();
    assert!(
        matches!(err, RoutingError::InvalidManagedRoute { .. }),
        "{err}"
    );
}

#[test]
fn header_route_without_weighted_http_route_is_an_error() {
    let vs = vs_with(json!({"tls": [tls_route(3000, &[])], "http": []}));
    let routing = managed(host_routing(), &["hdr"]);
    let want = with_routes(0, vec![header("hdr", "a", exact("b"))], Vec::new());
    let err = apply(&vs, &tls_ref(Some(3000), &[]), &routing, &want).unwrap_err();
    assert!(
        matches!(err, RoutingError::InvalidManagedRoute { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Mirror routes

#[test]
fn mirror_route_default_100_and_explicit_percentage() {
    let routing = managed(host_routing(), &["mirror"]);
    let r = http_ref(&["primary"]);
    let out = apply(
        &two_http(),
        &r,
        &routing,
        &with_routes(20, Vec::new(), vec![mirror("mirror", None)]),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["http"][0],
        json!({
            "name": "mirror",
            "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/"}}],
            "route": [dest("stable-svc", 80), dest("canary-svc", 20)],
            "mirror": {"host": "canary-svc"},
            "mirrorPercentage": {"value": 100},
        })
    );
    let out = apply(
        &out,
        &r,
        &routing,
        &with_routes(20, Vec::new(), vec![mirror("mirror", Some(90.5))]),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["http"][0]["mirrorPercentage"],
        json!({"value": 90.5})
    );
    assert_eq!(http_names(&out), ["mirror", "primary", "secondary"]);
    let removed = apply(&out, &r, &routing, &DesiredRouting::weight(20)).unwrap();
    assert_eq!(http_names(&removed), ["primary", "secondary"]);
}

#[test]
fn mirror_route_with_extra_fields_keeps_ports_and_extras() {
    let vs = vs_with(json!({"http": [{
        "name": "primary",
        "timeout": "5s",
        "route": [
            {"destination": {"host": "stable-svc", "port": {"number": 8443}}, "weight": 100},
            {"destination": {"host": "canary-svc", "port": {"number": 8443}}, "weight": 0},
        ],
    }]}));
    let routing = managed(host_routing(), &["mirror"]);
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &with_routes(30, Vec::new(), vec![mirror("mirror", None)]),
    )
    .unwrap();
    let m = &out["spec"]["http"][0];
    assert_eq!(
        m["mirror"],
        json!({"host": "canary-svc", "port": {"number": 8443}})
    );
    assert_eq!(m["route"], out["spec"]["http"][1]["route"]);
    assert_eq!(m["route"][0]["weight"], 70);
    assert_eq!(out["spec"]["http"][1]["timeout"], "5s");
    assert_eq!(
        out["spec"]["http"][1]["route"][1]["destination"]["port"],
        json!({"number": 8443})
    );
}

#[test]
fn mirror_route_order_follows_managed_routes() {
    let routing = managed(host_routing(), &["m1", "m2", "m3"]);
    let r = http_ref(&["primary"]);
    let want = with_routes(
        10,
        Vec::new(),
        vec![mirror("m3", None), mirror("m1", None), mirror("m2", None)],
    );
    let out = apply(&two_http(), &r, &routing, &want).unwrap();
    assert_eq!(http_names(&out), ["m1", "m2", "m3", "primary", "secondary"]);
    let want = with_routes(10, Vec::new(), vec![mirror("m3", None), mirror("m1", None)]);
    let out = apply(&out, &r, &routing, &want).unwrap();
    assert_eq!(http_names(&out), ["m1", "m3", "primary", "secondary"]);
}

#[test]
fn mirror_route_order_single_unnamed_route() {
    let vs =
        vs_with(json!({"http": [{"route": [dest("stable-svc", 100), dest("canary-svc", 0)]}]}));
    let routing = managed(host_routing(), &["m1", "m2"]);
    let want = with_routes(
        30,
        Vec::new(),
        vec![mirror("m2", None), mirror("m1", Some(50.0))],
    );
    let out = apply(&vs, &http_ref(&[]), &routing, &want).unwrap();
    assert_eq!(http_names(&out), ["m1", "m2", ""]);
    assert_eq!(
        weights(&out, "http", 2),
        pairs(&[("stable-svc", 70), ("canary-svc", 30)])
    );
    assert_eq!(out["spec"]["http"][0]["mirrorPercentage"]["value"], 50);
    // Idempotent, and the inferred weighted route is still the unnamed one.
    assert_eq!(apply(&out, &http_ref(&[]), &routing, &want).unwrap(), out);
}

#[test]
fn mirror_route_subset_based() {
    let vs = vs_with(json!({"http": [{"name": "primary", "route": [
        sdest("reviews", "stable", 100), sdest("reviews", "canary", 0),
    ]}]}));
    let routing = managed(subset_routing(), &["mirror"]);
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &with_routes(10, Vec::new(), vec![mirror("mirror", None)]),
    )
    .unwrap();
    let m = &out["spec"]["http"][0];
    assert_eq!(m["mirror"], json!({"host": "reviews", "subset": "canary"}));
    assert_eq!(
        m["route"],
        json!([
            sdest("reviews", "stable", 90),
            sdest("reviews", "canary", 10)
        ])
    );
}

#[test]
fn removal_of_managed_routes_keeps_user_routes() {
    let vs = vs_with(json!({"http": [
        {"name": "hdr", "match": [{"headers": {"a": {"exact": "b"}}}], "route": [dest("canary-svc", 100)]},
        {"name": "user-a", "match": [{"uri": {"prefix": "/a"}}], "route": [dest("a", 100)]},
        {"name": "m", "route": [dest("stable-svc", 100)], "mirror": {"host": "canary-svc"}},
        {"name": "primary", "route": [dest("stable-svc", 100), dest("canary-svc", 0)]},
        {"route": [dest("fallback", 100)]},
    ]}));
    let routing = managed(host_routing(), &["hdr", "m"]);
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &routing,
        &DesiredRouting::weight(0),
    )
    .unwrap();
    assert_eq!(http_names(&out), ["user-a", "primary", ""]);
    assert_eq!(out["spec"]["http"][0], vs["spec"]["http"][1]);
    assert_eq!(out["spec"]["http"][2], vs["spec"]["http"][4]);
}

// ---------------------------------------------------------------------------------------------
// No change, snapshot, restore

#[test]
fn no_change_returns_input_unchanged() {
    let vs = two_http();
    assert_eq!(
        apply(
            &vs,
            &http_ref(&["primary"]),
            &host_routing(),
            &DesiredRouting::weight(0)
        )
        .unwrap(),
        vs
    );
    let vs = vs_with(json!({"tls": [tls_route(3000, &[])]}));
    assert_eq!(
        apply(
            &vs,
            &tls_ref(Some(3000), &[]),
            &host_routing(),
            &DesiredRouting::weight(0)
        )
        .unwrap(),
        vs
    );
    let vs = vs_with(json!({"tcp": [tcp_route(3000)]}));
    assert_eq!(
        apply(
            &vs,
            &tcp_ref(3000),
            &host_routing(),
            &DesiredRouting::weight(0)
        )
        .unwrap(),
        vs
    );
}

#[test]
fn snapshot_recorded_once_and_restored() {
    let vs = two_http();
    let r = http_ref(&["primary"]);
    let at10 = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(10)).unwrap();
    let raw = at10["metadata"]["annotations"][ORIGINAL_ROUTES_ANNOTATION]
        .as_str()
        .unwrap();
    let snap: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(snap["routes"]["http"], vs["spec"]["http"]);
    assert_eq!(snap["annotations"], "absent");
    assert!(snap["applied"].as_str().unwrap().starts_with("fnv1a64:"));

    let at20 = apply(&at10, &r, &host_routing(), &DesiredRouting::weight(20)).unwrap();
    let raw20 = at20["metadata"]["annotations"][ORIGINAL_ROUTES_ANNOTATION]
        .as_str()
        .unwrap();
    let snap20: Value = serde_json::from_str(raw20).unwrap();
    assert_eq!(
        snap20["routes"], snap["routes"],
        "the original is recorded once"
    );
    assert_ne!(
        snap20["applied"], snap["applied"],
        "the fingerprint follows our writes"
    );

    assert_eq!(restore(&at20).unwrap(), Restore::Restored(vs.clone()));
    assert_eq!(restore(&vs).unwrap(), Restore::NothingRecorded);
}

#[test]
fn snapshot_keeps_other_annotations() {
    let mut vs = two_http();
    vs["metadata"]["annotations"] = json!({"team": "x"});
    let r = http_ref(&["primary"]);
    let out = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(10)).unwrap();
    assert_eq!(out["metadata"]["annotations"]["team"], "x");
    assert_eq!(restore(&out).unwrap(), Restore::Restored(vs));
}

#[test]
fn returning_to_original_routes_drops_the_annotation() {
    let vs = two_http();
    let r = http_ref(&["primary"]);
    let at10 = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(10)).unwrap();
    assert_eq!(
        apply(&at10, &r, &host_routing(), &DesiredRouting::weight(0)).unwrap(),
        vs
    );
}

#[test]
fn restore_reports_drift_after_user_edit() {
    let vs = two_http();
    let r = http_ref(&["primary"]);
    let mut at10 = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(10)).unwrap();
    at10["spec"]["http"][1]["timeout"] = json!("3s");
    match restore(&at10).unwrap() {
        Restore::Drift { reason } => assert!(reason.contains("VirtualService vs"), "{reason}"),
        other => panic!("expected drift, got {other:?}"),
    }
    // Reverting to the original by hand is not drift: the annotation is cleaned up.
    let mut reverted = at10.clone();
    reverted["spec"] = vs["spec"].clone();
    assert_eq!(restore(&reverted).unwrap(), Restore::Restored(vs));
}

#[test]
fn restore_survives_number_reformatting() {
    // The API server may hand back `100.0` as `100`; the fingerprint must not change.
    let vs = two_http();
    let routing = managed(host_routing(), &["m"]);
    let r = http_ref(&["primary"]);
    let out = apply(
        &vs,
        &r,
        &routing,
        &with_routes(10, Vec::new(), vec![mirror("m", Some(40.0))]),
    )
    .unwrap();
    let round_trip: Value = serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap();
    assert_eq!(restore(&round_trip).unwrap(), Restore::Restored(vs));
}

#[test]
fn bad_snapshot_is_an_error() {
    let mut vs = two_http();
    vs["metadata"]["annotations"] = json!({ORIGINAL_ROUTES_ANNOTATION: "{not json"});
    assert!(matches!(
        restore(&vs),
        Err(RoutingError::BadSnapshot { .. })
    ));
    let err = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(ORIGINAL_ROUTES_ANNOTATION),
        "{err}"
    );
}

#[test]
fn unknown_fields_survive() {
    let mut vs = two_http();
    vs["status"] = json!({"observedGeneration": 3});
    vs["spec"]["exportTo"] = json!(["."]);
    vs["spec"]["http"][0]["fault"] =
        json!({"delay": {"fixedDelay": "1s", "percentage": {"value": 0.5}}});
    vs["spec"]["http"][0]["route"][0]["headers"] = json!({"response": {"add": {"x": "y"}}});
    let out = apply(
        &vs,
        &http_ref(&["primary"]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap();
    assert_eq!(out["status"], vs["status"]);
    assert_eq!(out["spec"]["exportTo"], vs["spec"]["exportTo"]);
    assert_eq!(
        out["spec"]["http"][0]["fault"],
        vs["spec"]["http"][0]["fault"]
    );
    assert_eq!(
        out["spec"]["http"][0]["route"][0]["headers"],
        vs["spec"]["http"][0]["route"][0]["headers"]
    );
    assert_eq!(out["apiVersion"], vs["apiVersion"]);
}

// ---------------------------------------------------------------------------------------------
// Malformed input

#[test]
fn invalid_virtual_services_are_errors_not_panics() {
    let r = http_ref(&[]);
    let cases = [
        json!(null),
        json!([]),
        json!({"metadata": {}}),
        vs_with(json!({"http": {}})),
        vs_with(json!({"http": [1]})),
        vs_with(json!({"http": [{"name": 1, "route": []}]})),
        vs_with(json!({"http": [{"route": "x"}]})),
        vs_with(json!({"http": [{"route": []}]})),
        vs_with(json!({"http": [{"route": [{"weight": 1}]}]})),
        vs_with(json!({"http": [{"route": [{"destination": {"host": 1}}]}]})),
        vs_with(
            json!({"http": [{"route": [{"destination": {"host": "stable-svc", "subset": 2}}]}]}),
        ),
        vs_with(
            json!({"http": [{"route": [dest("stable-svc", 1), {"destination": {"host": "canary-svc"}, "weight": "9"}]}]}),
        ),
        vs_with(json!({"http": [{"route": [dest("stable-svc", -1), dest("canary-svc", 0)]}]})),
        vs_with(json!({"tls": [{"match": "x", "route": []}]})),
        vs_with(json!({"tls": [{"match": [{"sniHosts": [1]}], "route": []}]})),
        json!({"metadata": {"namespace": 5}, "spec": {}}),
    ];
    for vs in cases {
        let res = apply(&vs, &r, &host_routing(), &DesiredRouting::weight(10));
        assert!(res.is_err(), "{vs}");
        let res = read_weights(&vs, &r, &host_routing());
        assert!(res.is_err(), "{vs}");
    }
    let tls = VirtualServiceRef {
        ..tls_ref(Some(1), &[])
    };
    assert!(
        apply(
            &vs_with(json!({"tls": [{"match": [7], "route": []}]})),
            &tls,
            &host_routing(),
            &DesiredRouting::weight(1)
        )
        .is_err()
    );
}

#[test]
fn malformed_messages_name_the_path() {
    let vs = vs_with(json!({"http": [{"route": [dest("stable-svc", 1), {"destination": {}}]}]}));
    let err = apply(
        &vs,
        &http_ref(&[]),
        &host_routing(),
        &DesiredRouting::weight(10),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService vs is malformed at spec.http[0].route[1].destination.host: missing or not a string"
    );
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

fn dr(subsets: Value) -> Value {
    json!({"metadata": {"name": "reviews-dr"}, "spec": {"host": "reviews", "subsets": subsets}})
}

#[test]
fn destination_rule_with_both_subsets_is_ok() {
    let d =
        dr(json!([{"name": "stable", "labels": {"v": "1"}}, {"name": "canary"}, {"name": "x"}]));
    assert_eq!(check_destination_rule(&d, &subset_routing()), Ok(()));
    assert_eq!(
        check_destination_rule(&json!(null), &host_routing()),
        Ok(())
    );
}

#[test]
fn destination_rule_missing_subset_is_named() {
    let err =
        check_destination_rule(&dr(json!([{"name": "stable"}])), &subset_routing()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "canary subset \"canary\" not found in DestinationRule reviews-dr"
    );
    let err = check_destination_rule(&json!({"spec": {}}), &subset_routing()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stable subset \"stable\" not found in DestinationRule dr"
    );
    let err = check_destination_rule(&dr(json!([{"labels": {}}])), &subset_routing()).unwrap_err();
    assert!(
        matches!(err, RoutingError::MalformedDestinationRule { .. }),
        "{err}"
    );
    assert!(check_destination_rule(&json!(7), &subset_routing()).is_err());
}

#[test]
fn canonical_host_forms() {
    let c = |h| canonical_host(h, "ns");
    assert_eq!(c("svc"), "svc.ns.svc.cluster.local");
    assert_eq!(c("svc.ns"), c("svc"));
    assert_eq!(c("svc.ns.svc"), c("svc"));
    assert_eq!(c("svc.ns.svc.cluster.local"), c("svc"));
    assert_ne!(c("svc.other"), c("svc"));
    assert_eq!(c("api.example.com"), "api.example.com");
    assert_eq!(c("*.example.com"), "*.example.com");
}

#[test]
fn managed_routes_read_back_reapply_as_identity() {
    use crate::traffic::*;
    let routing = IstioRouting {
        namespace: "bookinfo".into(),
        max_weight: 100,
        managed_routes: vec!["hdr".into(), "mirror".into()],
        virtual_services: vec![VirtualServiceRef {
            name: "reviews".into(),
            namespace: Some("bookinfo".into()),
            http_routes: vec!["primary".into()],
            tls_routes: vec![],
            tcp_routes: vec![],
        }],
        backend: Backend::Host {
            stable: "reviews-stable".into(),
            canary: "reviews-canary".into(),
        },
        additional_destinations: vec![],
    };
    let vs = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "reviews-stable"}, "weight": 100},
            {"destination": {"host": "reviews-canary"}, "weight": 0}]}]}
    });
    let desired = DesiredRouting {
        canary_weight: 20,
        header_routes: vec![HeaderRoute {
            name: "hdr".into(),
            headers: vec![
                HeaderMatch::new("end-user", StringMatch::Exact("jason".into())),
                HeaderMatch::new("x-beta", StringMatch::Prefix("yes".into())),
            ],
        }],
        mirror_routes: vec![MirrorRoute {
            name: "mirror".into(),
            percentage: Some(30.0),
            matches: vec![MirrorMatch {
                method: Some(StringMatch::Exact("GET".into())),
                path: Some(StringMatch::Prefix("/api".into())),
                headers: vec![],
            }],
        }],
    };
    let vs_ref = &routing.virtual_services[0];
    let applied = apply(&vs, vs_ref, &routing, &desired).unwrap();
    let back = current_managed_routes(&applied, &routing, 20).unwrap();
    assert_eq!(back, desired);
    assert_eq!(apply(&applied, vs_ref, &routing, &back).unwrap(), applied);
    // A new weight keeps both routes and re-weights the mirror route's copy.
    let moved = apply(
        &applied,
        vs_ref,
        &routing,
        &current_managed_routes(&applied, &routing, 50).unwrap(),
    )
    .unwrap();
    let rows = read_weights(&moved, vs_ref, &routing).unwrap();
    assert_eq!((rows[0].stable, rows[0].canary), (50, 50));
    let http = moved["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 3);
    let mirror = http.iter().find(|r| r["name"] == "mirror").unwrap();
    assert_eq!(mirror["route"][1]["weight"], 50);
    // The header route is ORed, one match entry per matcher (as Argo writes it), and a new
    // weight keeps every entry (issue 15 item 3).
    let hdr = http.iter().find(|r| r["name"] == "hdr").unwrap();
    assert_eq!(
        hdr["match"],
        serde_json::json!([
            {"headers": {"end-user": {"exact": "jason"}}},
            {"headers": {"x-beta": {"prefix": "yes"}}},
        ])
    );
    crate::testkit::vs_schema::assert_valid_virtual_service(&moved);
    // A match entry skycanary would not write (two headers ANDed) is not silently rewritten.
    let mut anded = applied.clone();
    anded["spec"]["http"][0]["match"] = serde_json::json!([
        {"headers": {"end-user": {"exact": "jason"}, "x-beta": {"prefix": "yes"}}},
    ]);
    let err = current_managed_routes(&anded, &routing, 50).unwrap_err();
    assert!(
        err.to_string()
            .contains("match[0] is not a single header matcher"),
        "{err}"
    );
}

#[test]
fn subset_labels_are_read_and_unusable_subsets_say_why() {
    let dr = json!({"spec": {"host": "reviews", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2", "app": "reviews"}},
        {"name": "all"},
        {"name": "empty", "labels": {}},
        {"name": "num", "labels": {"version": 2}},
        {"name": "twice", "labels": {"a": "b"}},
        {"name": "twice", "labels": {"a": "c"}}
    ]}});
    let v2 = subset_labels(&dr, "v2").unwrap();
    assert_eq!(
        v2.into_iter().collect::<Vec<_>>(),
        [
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v2".to_string())
        ]
    );
    for (subset, why) in [
        ("v3", "subset v3 not found"),
        // No labels would select every pod in the namespace: refused, not counted.
        ("all", "subset all has no labels"),
        ("empty", "subset empty has no labels"),
        ("num", "spec.subsets[4].labels.version is not a string"),
        ("twice", "subset twice is defined more than once"),
    ] {
        assert_eq!(subset_labels(&dr, subset).unwrap_err(), why, "{subset}");
    }
    assert_eq!(
        subset_labels(&json!({"spec": {"subsets": {}}}), "v1").unwrap_err(),
        "spec.subsets is not an array"
    );
    assert_eq!(
        subset_labels(&json!({"spec": {}}), "v1").unwrap_err(),
        "subset v1 not found"
    );
    let many: serde_json::Map<String, Value> = (0..=SUBSET_LABELS_MAX)
        .map(|i| (format!("l{i}"), json!("x")))
        .collect();
    let dr = json!({"spec": {"subsets": [{"name": "big", "labels": many}]}});
    assert!(
        subset_labels(&dr, "big")
            .unwrap_err()
            .contains("at most 32")
    );
}
