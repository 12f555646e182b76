//! [`detect_drift`]: our own writes are never drift, every foreign change of a managed part is,
//! and no foreign change of anything else is.

use serde_json::{Value, json};

use super::*;
use crate::traffic::model::{
    AdditionalDestination, Backend, DestinationRuleRef, HeaderMatch, HeaderRoute, MirrorMatch,
    MirrorRoute, StringMatch, TcpRouteRef, TlsRouteRef,
};

fn host_routing() -> IstioRouting {
    IstioRouting {
        namespace: "bookinfo".into(),
        max_weight: 100,
        managed_routes: vec!["canary-header".into(), "mirror".into()],
        virtual_services: Vec::new(),
        backend: Backend::Host {
            stable: "reviews-stable".into(),
            canary: "reviews-canary".into(),
        },
        additional_destinations: Vec::new(),
    }
}

fn subset_routing() -> IstioRouting {
    IstioRouting {
        backend: Backend::Subset {
            destination_rule: DestinationRuleRef {
                name: "reviews".into(),
                namespace: None,
            },
            stable_subset: "v1".into(),
            canary_subset: "v2".into(),
        },
        ..host_routing()
    }
}

fn vs_ref(routes: &[&str]) -> VirtualServiceRef {
    VirtualServiceRef {
        name: "reviews".into(),
        namespace: None,
        http_routes: routes.iter().map(|r| r.to_string()).collect(),
        tls_routes: Vec::new(),
        tcp_routes: Vec::new(),
    }
}

fn dest(host: &str, weight: i64) -> Value {
    json!({"destination": {"host": host}, "weight": weight})
}

fn vs(spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "7"},
        "spec": spec,
    })
}

/// One weighted route `primary` (with a timeout and a retry policy we do not own) and an
/// unmanaged route `admin` before it.
fn original() -> Value {
    vs(json!({
        "hosts": ["reviews"],
        "http": [
            {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
             "route": [dest("reviews-admin", 100)]},
            {"name": "primary", "timeout": "5s", "retries": {"attempts": 3},
             "route": [dest("reviews-stable", 100), dest("reviews-canary", 0)]},
        ],
    }))
}

fn header_route() -> HeaderRoute {
    HeaderRoute {
        name: "canary-header".into(),
        headers: vec![HeaderMatch::new(
            "x-canary",
            StringMatch::Exact("yes".into()),
        )],
    }
}

fn mirror_route() -> MirrorRoute {
    MirrorRoute {
        name: "mirror".into(),
        percentage: Some(30.0),
        matches: vec![MirrorMatch {
            method: Some(StringMatch::Exact("GET".into())),
            path: Some(StringMatch::Prefix("/api".into())),
            headers: Vec::new(),
        }],
    }
}

/// What the canary wrote: the intended routing applied to `base`.
fn written(
    base: &Value,
    routing: &IstioRouting,
    r: &VirtualServiceRef,
    d: &DesiredRouting,
) -> Value {
    istio::apply(base, r, routing, d).expect("our own write")
}

fn check(
    routing: &IstioRouting,
    r: &VirtualServiceRef,
    d: &DesiredRouting,
    observed: &Value,
) -> Option<Drift> {
    detect_drift(
        &Intended {
            routing,
            vs_ref: r,
            desired: d,
        },
        observed,
    )
}

/// The `primary` route's entries, for edits.
fn primary(v: &mut Value) -> &mut Value {
    &mut v["spec"]["http"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == "primary")
        .unwrap()["route"]
}

fn with_routes(header: bool, mirror: bool, weight: i64) -> DesiredRouting {
    DesiredRouting {
        canary_weight: weight,
        header_routes: if header {
            vec![header_route()]
        } else {
            Vec::new()
        },
        mirror_routes: if mirror {
            vec![mirror_route()]
        } else {
            Vec::new()
        },
    }
}

// ---- our own writes ----------------------------------------------------------------------

#[test]
fn our_own_writes_are_never_drift() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let mut cases = Vec::new();
    for w in [0, 1, 20, 50, 99, 100] {
        for (h, m) in [(false, false), (true, false), (false, true), (true, true)] {
            cases.push(with_routes(h, m, w));
        }
    }
    // Every intended state, written over every other one (the sequence a release goes through).
    for before in &cases {
        let base = written(&original(), &routing, &r, before);
        for d in &cases {
            let ours = written(&base, &routing, &r, d);
            assert_eq!(check(&routing, &r, d, &ours), None, "{before:?} then {d:?}");
        }
    }
}

#[test]
fn our_writes_read_back_through_the_api_server_are_not_drift() {
    // The server adds metadata and status and hands integral numbers back as integers.
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let d = with_routes(true, true, 30);
    let mut ours = written(&original(), &routing, &r, &d);
    ours["metadata"]["resourceVersion"] = json!("8");
    ours["metadata"]["generation"] = json!(2);
    ours["status"] = json!({"observedGeneration": 2});
    let round_trip: Value = serde_json::from_str(&ours.to_string()).unwrap();
    assert_eq!(check(&routing, &r, &d, &round_trip), None);
}

#[test]
fn an_untouched_original_at_weight_zero_is_no_drift() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    assert_eq!(
        check(&routing, &r, &DesiredRouting::weight(0), &original()),
        None
    );
    // A lone stable destination already sends everything to stable.
    let mut lone = original();
    *primary(&mut lone) = json!([{"destination": {"host": "reviews-stable"}}]);
    assert_eq!(check(&routing, &r, &DesiredRouting::weight(0), &lone), None);
}

#[test]
fn subset_tls_and_tcp_splits_written_by_us_are_not_drift() {
    let r = VirtualServiceRef {
        tls_routes: vec![TlsRouteRef {
            port: Some(443),
            sni_hosts: vec!["reviews.example.com".into()],
        }],
        tcp_routes: vec![TcpRouteRef { port: Some(3306) }],
        ..vs_ref(&["primary"])
    };
    let base = vs(json!({
        "hosts": ["reviews"],
        "http": [{"name": "primary", "route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}],
        "tls": [{"match": [{"port": 443, "sniHosts": ["reviews.example.com"]}], "route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}],
        "tcp": [{"match": [{"port": 3306}], "route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}],
    }));
    let routing = subset_routing();
    for w in [0, 10, 100] {
        let d = with_routes(true, false, w);
        let ours = written(&base, &routing, &r, &d);
        assert_eq!(check(&routing, &r, &d, &ours), None, "{w}");
        // A foreign change of the tcp split alone is drift, named by its kind.
        let mut edited = ours.clone();
        edited["spec"]["tcp"][0]["route"][0]["weight"] = json!(100 - w + 5);
        edited["spec"]["tcp"][0]["route"][1]["weight"] = json!(w - 5);
        let drift = check(&routing, &r, &d, &edited);
        if w >= 5 {
            let drift = drift.expect("tcp drift");
            assert_eq!(drift.changes.len(), 1, "{drift}");
            assert!(drift.changes[0].starts_with("tcp route #0"), "{drift}");
        }
    }
}

// ---- foreign changes of managed parts ---------------------------------------------------

#[test]
fn a_foreign_weight_change_is_drift_naming_route_weights_and_intent() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let d = DesiredRouting::weight(20);
    let mut edited = written(&original(), &routing, &r, &d);
    *primary(&mut edited) = json!([dest("reviews-stable", 100), dest("reviews-canary", 0)]);
    let drift = check(&routing, &r, &d, &edited).expect("drift");
    assert_eq!(drift.virtual_service, "reviews");
    assert_eq!(
        drift.changes,
        vec!["http route primary: stable 100, canary 0 (intended 80, 20)"]
    );
    assert_eq!(
        drift.to_string(),
        "VirtualService reviews: http route primary: stable 100, canary 0 (intended 80, 20)"
    );
}

#[test]
fn any_split_but_the_intended_one_is_drift() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    for want in [0, 20, 100] {
        let d = DesiredRouting::weight(want);
        let ours = written(&original(), &routing, &r, &d);
        for (stable, canary) in [(100, 0), (80, 20), (50, 50), (0, 100), (90, 20), (40, 40)] {
            let mut edited = ours.clone();
            *primary(&mut edited) = json!([
                dest("reviews-stable", stable),
                dest("reviews-canary", canary)
            ]);
            let drift = check(&routing, &r, &d, &edited);
            let same = (stable, canary) == (100 - want, want);
            assert_eq!(
                drift.is_none(),
                same,
                "want {want}, saw {stable}/{canary}: {drift:?}"
            );
        }
    }
}

#[test]
fn removing_the_canary_destination_is_drift_only_while_it_has_weight() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let lone = |v: &mut Value| *primary(v) = json!([dest("reviews-stable", 100)]);
    let d = DesiredRouting::weight(20);
    let mut edited = written(&original(), &routing, &r, &d);
    lone(&mut edited);
    let drift = check(&routing, &r, &d, &edited).expect("drift");
    assert!(
        drift.changes[0].contains("canary 0 (intended 80, 20)"),
        "{drift}"
    );
    let d = DesiredRouting::weight(0);
    let mut edited = written(&original(), &routing, &r, &d);
    lone(&mut edited);
    assert_eq!(check(&routing, &r, &d, &edited), None, "the same traffic");
}

#[test]
fn one_drifted_route_of_two_is_named_alone() {
    let routing = host_routing();
    let r = vs_ref(&["primary", "secondary"]);
    let base = vs(json!({"hosts": ["reviews"], "http": [
        {"name": "primary", "route": [dest("reviews-stable", 100), dest("reviews-canary", 0)]},
        {"name": "secondary", "route": [dest("reviews-stable", 100), dest("reviews-canary", 0)]},
    ]}));
    let d = DesiredRouting::weight(40);
    let mut edited = written(&base, &routing, &r, &d);
    edited["spec"]["http"][1]["route"] =
        json!([dest("reviews-stable", 100), dest("reviews-canary", 0)]);
    let drift = check(&routing, &r, &d, &edited).expect("drift");
    assert_eq!(
        drift.changes,
        vec!["http route secondary: stable 100, canary 0 (intended 60, 40)"]
    );
}

#[test]
fn managed_routes_removed_added_changed_or_moved_are_drift() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let both = with_routes(true, true, 10);
    let ours = written(&original(), &routing, &r, &both);
    let http = |v: &mut Value| v["spec"]["http"].as_array_mut().unwrap().clone();

    // Removed.
    let mut removed = ours.clone();
    let kept: Vec<Value> = http(&mut removed)
        .into_iter()
        .filter(|x| x["name"] != "canary-header")
        .collect();
    removed["spec"]["http"] = Value::Array(kept);
    let drift = check(&routing, &r, &both, &removed).expect("drift");
    assert_eq!(
        drift.changes,
        vec!["managed route canary-header is missing"]
    );

    // Present while not intended (someone restored an old copy of the VirtualService).
    let weight_only = DesiredRouting::weight(10);
    let drift = check(&routing, &r, &weight_only, &ours).expect("drift");
    assert_eq!(
        drift.changes,
        vec![
            "managed route canary-header is not intended now",
            "managed route mirror is not intended now"
        ]
    );

    // Changed: another header value, another mirror percentage.
    let mut changed = ours.clone();
    for route in changed["spec"]["http"].as_array_mut().unwrap() {
        if route["name"] == "canary-header" {
            route["match"][0]["headers"]["x-canary"] = json!({"exact": "always"});
        }
        if route["name"] == "mirror" {
            route["mirrorPercentage"]["value"] = json!(100);
        }
    }
    let drift = check(&routing, &r, &both, &changed).expect("drift");
    assert_eq!(
        drift.changes,
        vec![
            "managed route canary-header differs from the intended one",
            "managed route mirror differs from the intended one"
        ]
    );

    // Moved below the weighted route: it would never match.
    let mut moved = ours.clone();
    let mut routes = http(&mut moved);
    let header = routes.remove(0);
    routes.push(header);
    moved["spec"]["http"] = Value::Array(routes);
    let drift = check(&routing, &r, &both, &moved).expect("drift");
    assert_eq!(
        drift.changes,
        vec!["the managed routes are not in their intended place"]
    );
}

#[test]
fn a_managed_route_that_cannot_be_written_any_more_is_drift_with_the_reason() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let d = DesiredRouting::weight(20);
    let ours = written(&original(), &routing, &r, &d);
    // An unknown destination now carries traffic in the managed route.
    let mut foreign = ours.clone();
    primary(&mut foreign)
        .as_array_mut()
        .unwrap()
        .push(dest("reviews-experiment", 10));
    let drift = check(&routing, &r, &d, &foreign).expect("drift");
    assert!(
        drift.changes[0].starts_with("the intended routing can no longer be written")
            && drift.changes[0].contains("reviews-experiment"),
        "{drift}"
    );
    // The weighted route was renamed away.
    let mut renamed = ours.clone();
    for route in renamed["spec"]["http"].as_array_mut().unwrap() {
        if route["name"] == "primary" {
            route["name"] = json!("main");
        }
    }
    let drift = check(&routing, &r, &d, &renamed).expect("drift");
    assert!(drift.changes[0].contains("primary"), "{drift}");
}

// ---- foreign changes of what we do not manage -------------------------------------------

/// A named foreign edit of a VirtualService.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn foreign_changes_of_unmanaged_parts_are_left_alone() {
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let d = with_routes(true, false, 20);
    let ours = written(&original(), &routing, &r, &d);
    let edits: Vec<(&str, Edit)> = vec![
        (
            "a rollback marker (skycanary's own bookkeeping, never drift)",
            Box::new(|v| *v = istio::with_rollback_marker(v, "v2@2026-01-01T00:00:00.000Z", "t")),
        ),
        (
            "another route added",
            Box::new(|v| {
                v["spec"]["http"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "legacy", "route": [dest("reviews-legacy", 100)]}))
            }),
        ),
        (
            "another route's weights",
            Box::new(|v| {
                v["spec"]["http"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|x| x["name"] == "admin")
                    .unwrap()["route"] =
                    json!([dest("reviews-admin", 50), dest("reviews-admin-v2", 50)])
            }),
        ),
        (
            "a header rule on the stable destination",
            Box::new(|v| {
                primary(v)[0]["headers"] = json!({"request": {"set": {"x-version": "stable"}}})
            }),
        ),
        (
            "another destination without weight",
            Box::new(|v| {
                primary(v)
                    .as_array_mut()
                    .unwrap()
                    .push(dest("reviews-shadow", 0))
            }),
        ),
        (
            "the managed route's timeout and retries",
            Box::new(|v| {
                for route in v["spec"]["http"].as_array_mut().unwrap() {
                    if route["name"] == "primary" {
                        route["timeout"] = json!("9s");
                        route.as_object_mut().unwrap().remove("retries");
                    }
                }
            }),
        ),
        (
            "hosts, gateways, labels and annotations",
            Box::new(|v| {
                v["spec"]["hosts"] = json!(["reviews", "reviews.example.com"]);
                v["spec"]["gateways"] = json!(["mesh", "public"]);
                v["metadata"]["labels"] = json!({"team": "books"});
                v["metadata"]["annotations"]["example.com/owner"] = json!("books");
            }),
        ),
        (
            "a tcp route nobody selected",
            Box::new(|v| {
                v["spec"]["tcp"] =
                    json!([{"match": [{"port": 3306}], "route": [dest("mysql", 100)]}])
            }),
        ),
    ];
    for (what, edit) in &edits {
        let mut edited = ours.clone();
        edit(&mut edited);
        assert_ne!(edited, ours, "{what}: the edit changes something");
        assert_eq!(check(&routing, &r, &d, &edited), None, "{what}");
    }
    // All at once, too.
    let mut all = ours.clone();
    for (_, edit) in &edits {
        edit(&mut all);
    }
    assert_eq!(check(&routing, &r, &d, &all), None);
}

#[test]
fn a_new_port_on_the_weighted_route_is_drift_only_for_the_header_route_that_copies_it() {
    // Header and mirror routes send to the canary on the weighted route's port, so after a
    // port change the one we wrote points at the old port: re-written, and reported.
    let routing = host_routing();
    let r = vs_ref(&["primary"]);
    let port = |v: &mut Value| primary(v)[0]["destination"]["port"] = json!({"number": 9080});
    let d = DesiredRouting::weight(20);
    let mut edited = written(&original(), &routing, &r, &d);
    port(&mut edited);
    assert_eq!(check(&routing, &r, &d, &edited), None);
    let d = with_routes(true, false, 20);
    let mut edited = written(&original(), &routing, &r, &d);
    port(&mut edited);
    let drift = check(&routing, &r, &d, &edited).expect("drift");
    assert_eq!(
        drift.changes,
        vec!["managed route canary-header differs from the intended one"]
    );
}

#[test]
fn an_additional_destination_keeps_its_weight_and_a_balanced_edit_of_it_is_no_drift() {
    let routing = IstioRouting {
        additional_destinations: vec![AdditionalDestination {
            host: Some("reviews-experiment".into()),
            subset: None,
        }],
        ..host_routing()
    };
    let r = vs_ref(&["primary"]);
    let mut base = original();
    *primary(&mut base) = json!([
        dest("reviews-stable", 90),
        dest("reviews-canary", 0),
        dest("reviews-experiment", 10)
    ]);
    let d = DesiredRouting::weight(20);
    let ours = written(&base, &routing, &r, &d);
    assert_eq!(check(&routing, &r, &d, &ours), None);
    // The owner of the experiment takes 10 more from stable: the canary keeps its 20.
    let mut edited = ours.clone();
    primary(&mut edited)[0]["weight"] = json!(60);
    primary(&mut edited)[2]["weight"] = json!(20);
    assert_eq!(check(&routing, &r, &d, &edited), None);
    // Taking it from the canary is drift.
    let mut edited = ours.clone();
    primary(&mut edited)[1]["weight"] = json!(10);
    primary(&mut edited)[2]["weight"] = json!(20);
    assert!(check(&routing, &r, &d, &edited).is_some());
}

// ---- signals -----------------------------------------------------------------------------

#[tokio::test]
async fn signals_reach_every_subscriber_and_say_whether_to_check_before_decisions() {
    let signals = DriftSignals::polled();
    assert!(signals.before_decisions());
    assert!(!DriftSignals::watched().before_decisions());
    // Nobody listening is no error.
    signals.changed(ObjectKey::virtual_service("bookinfo", "ignored"));
    let (mut a, mut b) = (signals.subscribe(), signals.clone().subscribe());
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    signals.changed(key.clone());
    assert_eq!(a.recv().await.unwrap(), key);
    assert_eq!(b.recv().await.unwrap(), key);
}
