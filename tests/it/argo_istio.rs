//! Argo Rollouts' Istio cases (`tests/data/argo_istio/cases.yaml`), run through the pure
//! transform after the Canary's steps and, for weight-only cases, through
//! `skycanary route set-weight` on a manifests directory. Every VirtualService in and out is
//! checked against Istio's CRD schema.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use skycanary::resources::load_str;
use skycanary::resources::yaml::parse_documents;
use skycanary::testkit::vs_schema::{assert_valid_virtual_service, virtual_service_violations};
use skycanary::traffic::istio::{self, ORIGINAL_ROUTES_ANNOTATION, Restore};
use skycanary::traffic::spec::{desired_after_steps, routing_of};

const KINDS: [&str; 3] = ["http", "tls", "tcp"];

struct Case {
    name: String,
    doc: Value,
    namespace: String,
    vs: Value,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/argo_istio/cases.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<Value> = parse_documents(&text)
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect();
    let fixtures = &docs[0];
    assert_eq!(fixtures["kind"], "fixtures");
    docs[1..]
        .iter()
        .map(|d| {
            let name = d["case"].as_str().expect("case name").to_string();
            assert!(
                d["argo"].is_string(),
                "{name}: says which Argo case it restates"
            );
            let spec = match d["vs"].get("fixture").and_then(Value::as_str) {
                Some(f) => fixtures
                    .get(f)
                    .unwrap_or_else(|| panic!("{name}: no fixture {f}"))
                    .clone(),
                None => d["vs"]["spec"].clone(),
            };
            let metadata = d["vs"]
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({"name": "vsvc", "namespace": "default"}));
            let vs = json!({
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "VirtualService",
                "metadata": metadata,
                "spec": spec,
            });
            Case {
                namespace: d["namespace"].as_str().unwrap_or("default").to_string(),
                name,
                doc: d.clone(),
                vs,
            }
        })
        .collect()
}

/// The Canary of a case, as a YAML (JSON) document.
fn canary_text(c: &Case) -> String {
    json!({
        "apiVersion": "skycanary.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "rollout", "namespace": c.namespace},
        "spec": {"trafficRouting": c.doc["trafficRouting"], "steps": c.doc["steps"]},
    })
    .to_string()
}

/// `vs` without our annotation (and without the annotations map if only ours was there).
fn without_annotation(vs: &Value) -> Value {
    let mut v = vs.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        let empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(ORIGINAL_ROUTES_ANNOTATION);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            meta.remove("annotations");
        }
    }
    v
}

/// Compares a written VirtualService with the case's expectation; `Err` says how it differs.
fn check_routes(c: &Case, out: &Value) -> Result<(), String> {
    let errs = virtual_service_violations(out);
    if !errs.is_empty() {
        return Err(format!("not valid against Istio's schema: {errs:?}"));
    }
    let expect = &c.doc["expect"];
    let out = without_annotation(out);
    if expect.get("unchanged").is_some() {
        return if out == c.vs {
            Ok(())
        } else {
            Err(format!("expected no change, got {out}"))
        };
    }
    let routes = expect
        .get("routes")
        .ok_or_else(|| format!("expected an error, got {out}"))?;
    let mut want = c.vs.clone();
    for k in KINDS {
        if let Some(r) = routes.get(k) {
            want["spec"][k] = r.clone();
        }
    }
    if out == want {
        Ok(())
    } else {
        Err(format!(
            "routes differ\n  want {}\n  got  {}",
            want["spec"], out["spec"]
        ))
    }
}

fn expected_error(c: &Case) -> Option<&str> {
    c.doc["expect"].get("error").and_then(Value::as_str)
}

/// Runs one case through `apply`; `Err` describes a mismatch.
fn run_transform(c: &Case) -> Result<(), String> {
    let loaded = load_str("case.yaml", &canary_text(c));
    if !loaded.errors.is_empty() {
        return Err(format!("Canary does not load: {:?}", loaded.errors));
    }
    let canary = &loaded.canaries[0].doc;
    let routing = routing_of(canary, &c.namespace);
    let desired = desired_after_steps(canary, canary.spec.steps.len().saturating_sub(1));
    let outcome = (|| {
        if let Some(dr) = c.doc.get("destinationRule") {
            istio::check_destination_rule(dr, &routing)?;
        }
        istio::apply(&c.vs, &routing.virtual_services[0], &routing, &desired)
    })();
    match (outcome, expected_error(c)) {
        (Err(e), Some(want)) if e.to_string().contains(want) => Ok(()),
        (Err(e), Some(want)) => Err(format!("error {e:?} does not contain {want:?}")),
        (Err(e), None) => Err(format!("unexpected error: {e}")),
        (Ok(out), Some(want)) => Err(format!("expected error {want:?}, got {out}")),
        (Ok(out), None) => {
            check_routes(c, &out)?;
            // What was written can be undone exactly.
            match istio::restore(&out) {
                Ok(Restore::NothingRecorded) if out == c.vs => Ok(()),
                Ok(Restore::Restored(back)) if back == c.vs => Ok(()),
                other => Err(format!("restore does not give the input back: {other:?}")),
            }
        }
    }
}

#[test]
fn argo_istio_cases_hold_in_the_pure_transform() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        assert_valid_virtual_service(&c.vs);
        if let Err(e) = run_transform(c) {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Cases where DESIGN deliberately differs from Argo say so.
    let differing = cases
        .iter()
        .filter(|c| c.doc["differs"].is_string())
        .count();
    assert!(differing >= 5, "{differing}");
}

/// The weight of a case whose only step is `setWeight`, with no managed routes.
fn weight_only(c: &Case) -> Option<i64> {
    let steps = c.doc["steps"].as_array()?;
    let managed = c.doc["trafficRouting"].get("managedRoutes").is_some();
    match steps.as_slice() {
        [s] if !managed => s.get("setWeight").and_then(Value::as_i64),
        _ => None,
    }
}

#[test]
fn argo_istio_weight_cases_hold_through_route_set_weight() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for c in cases() {
        let Some(weight) = weight_only(&c) else {
            continue;
        };
        ran += 1;
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let mut text = format!("{}\n", c.vs);
        if let Some(dr) = c.doc.get("destinationRule") {
            text.push_str(&format!("---\n{dr}\n"));
        }
        let file = manifests.join("istio.yaml");
        std::fs::write(&file, &text).unwrap();
        let canary = dir.path().join("canary.yaml");
        std::fs::write(&canary, canary_text(&c)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(["route", "set-weight", "--canary"])
            .arg(&canary)
            .arg(weight.to_string())
            .arg("--manifests")
            .arg(&manifests)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let after = std::fs::read_to_string(&file).unwrap();
        let result = match expected_error(&c) {
            Some(want) => {
                if out.status.code() != Some(1) || !stderr.contains(want) {
                    Err(format!(
                        "expected exit 1 with {want:?}, got {:?}: {stderr}",
                        out.status.code()
                    ))
                } else if after != text {
                    Err("a refused change wrote the manifest".to_string())
                } else {
                    Ok(())
                }
            }
            None if out.status.code() != Some(0) => Err(format!("exit {:?}: {stderr}", out.status)),
            None if c.doc["expect"].get("unchanged").is_some() => {
                if after == text && stdout.contains("not written") {
                    Ok(())
                } else {
                    Err(format!("expected no write: {stdout}"))
                }
            }
            None => {
                let docs = parse_documents(&after).unwrap();
                check_routes(&c, &docs[0].value)
            }
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", c.name));
        }
    }
    assert!(ran >= 20, "only {ran} weight-only cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Argo's documented cross-namespace setup through the daemon's steps: the VirtualService in
/// `istio-routes` names `reviews-stable.rollouts`, the Canary lives in `rollouts` with short
/// service names, and its header route has two matchers (ORed, one match entry each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cross_namespace_setup_and_ored_header_route_through_the_daemon() {
    use crate::daemon::{TOKEN, http, setup, sim_with_apdex, start};
    let canary = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: rollouts}
spec:
  revision: v2
  trafficRouting:
    managedRoutes: [{name: beta}]
    istio:
      virtualService: {name: reviews.istio-routes, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setHeaderRoute:
      name: beta
      match:
      - {headerName: end-user, headerValue: {exact: jason}}
      - {headerName: x-beta, headerValue: {prefix: "yes"}}
  - setWeight: 20
  - pause: {}
"#;
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: istio-routes}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-routes/gateway]
  http:
  - name: primary
    route:
    - destination: {host: reviews-stable.rollouts, port: {number: 9080}}
      weight: 100
    - destination: {host: reviews-canary.rollouts, port: {number: 9080}}
      weight: 0
"#;
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let dirs = setup(canary);
    std::fs::write(dirs.path().join("istio/reviews.yaml"), vs).unwrap();
    let d = start(dirs, &running.url());
    let start = std::time::Instant::now();
    let status = loop {
        let s: Value = http()
            .get(format!("{}/api/v1/canaries/rollouts/reviews", d.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"]["phase"] == "Paused" && s["status"].get("routingWrite").is_none() {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "never paused at 20 %: {s:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(d.manifests.join("reviews.yaml")).unwrap();
    assert_eq!(
        skycanary::testkit::vs_schema::assert_valid_virtual_services_in(&text),
        1
    );
    let vs = &parse_documents(&text).unwrap()[0].value;
    let http = &vs["spec"]["http"];
    assert_eq!(http[0]["name"], "beta", "{status:#}");
    assert_eq!(
        http[0]["match"],
        json!([
            {"headers": {"end-user": {"exact": "jason"}}},
            {"headers": {"x-beta": {"prefix": "yes"}}},
        ])
    );
    assert_eq!(
        http[0]["route"],
        json!([{"destination": {"host": "reviews-canary.rollouts", "port": {"number": 9080}}, "weight": 100}]),
        "the header route's target resolves to the Canary's Service from istio-routes"
    );
    assert_eq!(http[1]["route"][0]["weight"], 80);
    assert_eq!(http[1]["route"][1]["weight"], 20);
}
