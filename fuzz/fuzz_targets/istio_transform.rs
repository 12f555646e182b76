//! VirtualService transform on arbitrary JSON: the first byte picks the desired canary weight
//! and the route selection, the rest is the VirtualService. `apply` and `read_weights` return a
//! VirtualService or an error, never panic; when `apply` succeeds, the weights read back are
//! valid (each ≥ 0, summing to maxTrafficWeight, canary = desired), applying again changes
//! nothing, and fields outside the routes survive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use skycanary::traffic::istio::{apply, read_weights};
use skycanary::traffic::{
    AdditionalDestination, Backend, DesiredRouting, IstioRouting, TcpRouteRef, TlsRouteRef,
    VirtualServiceRef,
};

const MAX: i64 = 100;

fn vs_ref(selector: u8) -> VirtualServiceRef {
    VirtualServiceRef {
        name: "reviews".into(),
        namespace: Some("bookinfo".into()),
        http_routes: if selector & 1 == 0 {
            vec!["primary".into()]
        } else {
            Vec::new()
        },
        tls_routes: if selector & 2 == 0 {
            Vec::new()
        } else {
            vec![TlsRouteRef {
                port: Some(443),
                sni_hosts: vec!["reviews.example.com".into()],
            }]
        },
        tcp_routes: if selector & 4 == 0 {
            Vec::new()
        } else {
            vec![TcpRouteRef { port: Some(9000) }]
        },
    }
}

fn routing(r: VirtualServiceRef) -> IstioRouting {
    IstioRouting {
        namespace: "bookinfo".into(),
        max_weight: MAX,
        managed_routes: vec!["canary-header".into()],
        virtual_services: vec![r],
        backend: Backend::Host {
            stable: "reviews-stable".into(),
            canary: "reviews-canary".into(),
        },
        additional_destinations: vec![AdditionalDestination {
            host: Some("reviews-shadow".into()),
            subset: None,
        }],
    }
}

/// Everything but the routes and annotations: what the transform must never touch.
fn untouched(vs: &Value) -> Value {
    let mut v = vs.clone();
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        for key in ["http", "tls", "tcp"] {
            spec.remove(key);
        }
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("annotations");
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(vs) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let r = vs_ref(selector);
    let routing = routing(r.clone());
    let desired = DesiredRouting::weight(i64::from(selector >> 3) * 4);
    let _ = read_weights(&vs, &r, &routing);
    let Ok(out) = apply(&vs, &r, &routing, &desired) else {
        return;
    };
    assert_eq!(untouched(&out), untouched(&vs), "apply changed an unmanaged field");
    let again = apply(&out, &r, &routing, &desired).expect("apply accepts its own output");
    assert_eq!(again, out, "apply is idempotent");
    let weights = read_weights(&out, &r, &routing).expect("its own output reads back");
    for w in &weights {
        let others: i64 = w.others.iter().map(|o| o.weight).sum();
        assert!(w.stable >= 0 && w.canary >= 0, "negative weight: {w:?}");
        assert!(w.others.iter().all(|o| o.weight >= 0), "negative weight: {w:?}");
        assert_eq!(w.stable + w.canary + others, MAX, "weights must sum to max: {w:?}");
        assert_eq!(w.canary, desired.canary_weight, "canary must get the desired weight: {w:?}");
    }
});
