//! Property tests over generated VirtualServices: unknown fields survive, weights add up,
//! apply is idempotent, restore undoes apply, and applying the current state is the identity.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::traffic::model::{DestinationRuleRef, MirrorMatch};

const NS: &str = "ns1";

/// A host written in one of the forms Kubernetes resolves to the same service.
fn host_form(svc: &str, form: u8) -> String {
    match form % 4 {
        0 => svc.to_string(),
        1 => format!("{svc}.{NS}"),
        2 => format!("{svc}.{NS}.svc"),
        _ => format!("{svc}.{NS}.svc.cluster.local"),
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 ]{0,8}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        (0u32..1000).prop_map(|n| json!({"value": f64::from(n) / 10.0})),
        Just(json!({"attempts": 3, "perTryTimeout": "2s"})),
    ]
}

/// Unknown fields; keys start with `x` so they never collide with fields we own.
fn extras() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x[a-zA-Z]{1,6}", leaf(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

#[derive(Debug, Clone)]
struct Case {
    vs: Value,
    vs_ref: VirtualServiceRef,
    routing: IstioRouting,
    current: i64,
    desired: DesiredRouting,
}

/// One route entry: destination (maybe with port and extras) and weight.
fn entry(
    host: String,
    subset: Option<&str>,
    port: Option<u64>,
    weight: i64,
    extra: &Map<String, Value>,
) -> Value {
    let mut d = Map::new();
    d.insert("host".into(), Value::String(host));
    if let Some(s) = subset {
        d.insert("subset".into(), Value::String(s.into()));
    }
    if let Some(p) = port {
        d.insert("port".into(), json!({"number": p}));
    }
    let mut e = extra.clone();
    e.insert("destination".into(), Value::Object(d));
    e.insert("weight".into(), Value::from(weight));
    Value::Object(e)
}

#[allow(clippy::too_many_arguments)]
fn build(
    subset_based: bool,
    n: usize,
    others: i64,
    current: i64,
    desired_w: i64,
    route_extras: Vec<Map<String, Value>>,
    forms: Vec<u8>,
    mask: u64,
    infer: bool,
    top: Map<String, Value>,
    port: Option<u64>,
    hdr: bool,
    mirror_pct: Option<Option<u8>>,
) -> Case {
    let stable_w = 100 - others - current;
    // Half the cases put the Canary in another namespace than the VirtualService: its service
    // names must then be qualified to mean the VirtualService's Services.
    let canary_ns = if mask & (1 << 40) != 0 {
        "rollouts"
    } else {
        NS
    };
    let canary_form = |svc: &str, form: u8| {
        if canary_ns == NS {
            host_form(svc, form)
        } else {
            host_form(svc, 1 + form % 3)
        }
    };
    let infer = infer && n == 1;
    let mut http = Vec::new();
    for i in 0..n {
        let ex = &route_extras[i % route_extras.len()];
        let f = |k: usize| forms[(i * 3 + k) % forms.len()];
        let mut dests = if subset_based {
            let h = host_form("reviews", f(0));
            vec![
                entry(h.clone(), Some("stable"), port, stable_w, ex),
                entry(h.clone(), Some("canary"), port, current, ex),
            ]
        } else {
            vec![
                entry(host_form("stable", f(0)), None, port, stable_w, ex),
                entry(host_form("canary", f(1)), None, port, current, ex),
            ]
        };
        if others > 0 {
            let extra = if subset_based {
                entry(host_form("reviews", f(2)), Some("extra"), port, others, ex)
            } else {
                entry(host_form("extra", f(2)), None, port, others, ex)
            };
            dests.insert(i % 3, extra);
        }
        // A zero-weight stranger is allowed and must stay.
        if i == 1 {
            dests.push(entry("stranger.example.com".into(), None, None, 0, ex));
        }
        let mut r = ex.clone();
        if !infer {
            r.insert("name".into(), Value::String(format!("route-{i}")));
        }
        r.insert("route".into(), Value::Array(dests));
        http.push(Value::Object(r));
    }
    let mut spec = top.clone();
    spec.insert("hosts".into(), json!(["reviews"]));
    spec.insert("http".into(), Value::Array(http));
    let mut metadata = json!({"name": "reviews", "namespace": NS, "labels": {"app": "reviews"}});
    if let Some((k, v)) = top.iter().next() {
        metadata["annotations"] = json!({ k.clone(): v.to_string() });
    }
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": spec,
        "status": {"observedGeneration": 2},
    });

    let selected = (mask % ((1 << n) - 1)) + 1;
    let http_routes = if infer {
        Vec::new()
    } else {
        (0..n)
            .filter(|i| selected & (1 << i) != 0)
            .map(|i| format!("route-{i}"))
            .collect()
    };
    let backend = if subset_based {
        Backend::Subset {
            destination_rule: DestinationRuleRef {
                name: "reviews".into(),
                namespace: None,
            },
            stable_subset: "stable".into(),
            canary_subset: "canary".into(),
        }
    } else {
        Backend::Host {
            stable: canary_form("stable", forms[0].wrapping_add(1)),
            canary: canary_form("canary", forms[0].wrapping_add(2)),
        }
    };
    let additional = if subset_based {
        AdditionalDestination {
            host: None,
            subset: Some("extra".into()),
        }
    } else {
        AdditionalDestination {
            host: Some(canary_form("extra", forms[0])),
            subset: None,
        }
    };
    let routing = IstioRouting {
        namespace: canary_ns.into(),
        max_weight: 100,
        managed_routes: vec!["hdr".into(), "mirror".into()],
        virtual_services: Vec::new(),
        backend,
        additional_destinations: vec![additional],
    };
    let vs_ref = VirtualServiceRef {
        name: "reviews".into(),
        namespace: None,
        http_routes,
        tls_routes: Vec::new(),
        tcp_routes: Vec::new(),
    };
    let mut desired = DesiredRouting::weight(desired_w);
    if hdr {
        desired.header_routes.push(HeaderRoute {
            name: "hdr".into(),
            headers: vec![HeaderMatch::new("x-canary", StringMatch::Exact("1".into()))],
        });
    }
    if let Some(p) = mirror_pct {
        desired.mirror_routes.push(MirrorRoute {
            name: "mirror".into(),
            percentage: p.map(|p| f64::from(p.min(100))),
            matches: vec![MirrorMatch {
                method: Some(StringMatch::Exact("POST".into())),
                ..MirrorMatch::default()
            }],
        });
    }
    Case {
        vs,
        vs_ref,
        routing,
        current,
        desired,
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            any::<bool>(),
            1usize..=4,
            prop_oneof![Just(0i64), 1i64..=30],
            0i64..=70,
            0i64..=70,
        ),
        (
            prop::collection::vec(extras(), 1..4),
            prop::collection::vec(0u8..4, 1..8),
            any::<u64>(),
            any::<bool>(),
            extras(),
        ),
        (
            prop::option::of(1u64..65535),
            any::<bool>(),
            prop::option::of(prop::option::of(0u8..=100)),
        ),
    )
        .prop_map(
            |((sb, n, others, cur, want), (rex, forms, mask, infer, top), (port, hdr, mir))| {
                build(
                    sb, n, others, cur, want, rex, forms, mask, infer, top, port, hdr, mir,
                )
            },
        )
}

/// The VirtualService with everything skycanary may change taken out: our annotation, the
/// managed routes and all weights. What remains must be identical before and after.
fn without_ours(vs: &Value) -> Value {
    let mut v = vs.clone();
    if let Some(a) = v["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(ORIGINAL_ROUTES_ANNOTATION);
        if a.is_empty() {
            v["metadata"].as_object_mut().unwrap().remove("annotations");
        }
    }
    if let Some(http) = v["spec"].get_mut("http").and_then(Value::as_array_mut) {
        http.retain(|r| {
            !matches!(
                r.get("name").and_then(Value::as_str),
                Some("hdr" | "mirror")
            )
        });
        for r in http {
            for e in r["route"].as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("weight");
            }
        }
    }
    v
}

/// `out` without the generated unknown fields (keys `x` + letters; header names have dashes).
fn without_generated_extras(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    !(k.starts_with('x')
                        && k.len() > 1
                        && k.chars().all(|c| c.is_ascii_alphabetic()))
                })
                .map(|(k, v)| (k.clone(), without_generated_extras(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_generated_extras).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn apply_properties(c in case()) {
        let out = apply(&c.vs, &c.vs_ref, &c.routing, &c.desired).unwrap();

        // Every field we do not own survives.
        prop_assert_eq!(without_ours(&out), without_ours(&c.vs));
        // What we write is a VirtualService Istio admits (the generated unknown `x…` fields
        // aside, which only show that foreign fields survive).
        crate::testkit::vs_schema::assert_valid_virtual_service(&without_generated_extras(&out));

        // Weights are in range and add up on every selected route.
        let read = read_weights(&out, &c.vs_ref, &c.routing).unwrap();
        prop_assert!(!read.is_empty());
        for w in &read {
            prop_assert_eq!(w.canary, c.desired.canary_weight);
            prop_assert!(w.stable >= 0);
            prop_assert_eq!(w.stable + w.canary + w.others.iter().map(|o| o.weight).sum::<i64>(), 100);
        }
        // Routes not selected are untouched.
        for (i, r) in c.vs["spec"]["http"].as_array().unwrap().iter().enumerate() {
            let name = r.get("name").and_then(Value::as_str);
            let selected = c.vs_ref.http_routes.is_empty()
                || name.is_some_and(|n| c.vs_ref.http_routes.iter().any(|s| s == n));
            if !selected {
                let found = out["spec"]["http"].as_array().unwrap().iter().find(|o| o.get("name") == r.get("name"));
                prop_assert_eq!(found, Some(r), "route {} changed", i);
            }
        }

        // Managed routes come first, in managedRoutes order.
        let names: Vec<&str> = out["spec"]["http"].as_array().unwrap().iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .filter(|n| *n == "hdr" || *n == "mirror")
            .collect();
        let mut expected = Vec::new();
        if !c.desired.header_routes.is_empty() { expected.push("hdr"); }
        if !c.desired.mirror_routes.is_empty() { expected.push("mirror"); }
        prop_assert_eq!(&names, &expected);
        for (i, n) in names.iter().enumerate() {
            prop_assert_eq!(out["spec"]["http"][i]["name"].as_str(), Some(*n));
        }

        // Idempotent.
        prop_assert_eq!(&apply(&out, &c.vs_ref, &c.routing, &c.desired).unwrap(), &out);

        // Restore undoes apply exactly.
        let restored = restore(&out).unwrap();
        if out == c.vs {
            prop_assert_eq!(restored, Restore::NothingRecorded);
        } else {
            prop_assert_eq!(restored, Restore::Restored(c.vs.clone()));
        }

        // Applying the current state is the identity (no write).
        let same = apply(&c.vs, &c.vs_ref, &c.routing, &DesiredRouting::weight(c.current)).unwrap();
        prop_assert_eq!(&same, &c.vs);

        // Going back to the current weight without managed routes returns to the original.
        let back = apply(&out, &c.vs_ref, &c.routing, &DesiredRouting::weight(c.current)).unwrap();
        prop_assert_eq!(&back, &c.vs);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arbitrary_json(), w in -5i64..120) {
        let c = build(false, 1, 0, 0, 0, vec![Map::new()], vec![0], 0, true, Map::new(), None, false, None);
        let _ = apply(&v, &c.vs_ref, &c.routing, &DesiredRouting::weight(w));
        let _ = read_weights(&v, &c.vs_ref, &c.routing);
        let _ = restore(&v);
        let mut spliced = c.vs.clone();
        spliced["spec"]["http"][0]["route"][1] = v.clone();
        let _ = apply(&spliced, &c.vs_ref, &c.routing, &DesiredRouting::weight(w.clamp(0, 100)));
        spliced["spec"]["http"] = v;
        let _ = apply(&spliced, &c.vs_ref, &c.routing, &DesiredRouting::weight(w.clamp(0, 100)));
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        prop_oneof![
            Just("stable"),
            Just("canary"),
            Just("route"),
            Just("destination"),
            Just("host"),
            Just("x")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("spec".to_string()),
                    Just("http".to_string()),
                    Just("route".to_string()),
                    Just("destination".to_string()),
                    Just("host".to_string()),
                    Just("weight".to_string()),
                    Just("metadata".to_string()),
                    Just("annotations".to_string()),
                    Just(ORIGINAL_ROUTES_ANNOTATION.to_string()),
                    Just("name".to_string()),
                ],
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
