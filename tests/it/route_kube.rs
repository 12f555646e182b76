//! Traffic routing against the fake Kubernetes API server over loopback: conflicts, concurrent
//! writers, all-or-nothing multi-VirtualService writes, Events, and kubectl.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use skycanary::testkit::{FakeApiServer, http_client, write_kubeconfig};
use skycanary::traffic::kube::{IstioApiVersion, KubeManifestStore};
use skycanary::traffic::planner::DesiredPlanner;
use skycanary::traffic::router::{Router, RouterError};
use skycanary::traffic::store::ObjectKey;
use skycanary::traffic::*;

fn vs(name: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "bookinfo"},
        "spec": {
            "hosts": [name],
            "http": [{"name": "primary", "timeout": "3s", "route": [
                {"destination": {"host": "reviews-stable", "port": {"number": 9080}}, "weight": 100},
                {"destination": {"host": "reviews-canary", "port": {"number": 9080}}, "weight": 0}
            ]}]
        }
    })
}

fn routing(names: &[&str]) -> IstioRouting {
    IstioRouting {
        namespace: "bookinfo".into(),
        max_weight: 100,
        managed_routes: vec![],
        virtual_services: names
            .iter()
            .map(|n| VirtualServiceRef {
                name: n.to_string(),
                namespace: Some("bookinfo".into()),
                http_routes: vec!["primary".into()],
                tls_routes: vec![],
                tcp_routes: vec![],
            })
            .collect(),
        backend: Backend::Host {
            stable: "reviews-stable".into(),
            canary: "reviews-canary".into(),
        },
        additional_destinations: vec![],
    }
}

/// Stable and canary weights of `primary`, after checking that the VirtualService read back
/// from the API server is valid against Istio's CRD schema.
fn weights(v: &Value) -> (i64, i64) {
    skycanary::testkit::vs_schema::assert_valid_virtual_service(v);
    let r = &v["spec"]["http"][0]["route"];
    (
        r[0]["weight"].as_i64().unwrap(),
        r[1]["weight"].as_i64().unwrap(),
    )
}

async fn served(
    names: &[&str],
) -> (
    FakeApiServer,
    Router<KubeManifestStore>,
    skycanary::testkit::ServerHandle,
) {
    let fake = FakeApiServer::new();
    for n in names {
        fake.seed(vs(n)).unwrap();
    }
    let (addr, handle) = fake.serve().await.unwrap();
    let store = KubeManifestStore::new(http_client(addr).unwrap(), IstioApiVersion::V1);
    (fake, Router::new(store), handle)
}

#[tokio::test]
async fn conflict_burst_is_retried_and_weights_sum_to_max() {
    let (fake, router, _h) = served(&["reviews"]).await;
    fake.fail_next(Some("PUT"), "virtualservices/reviews", 3, 409);
    let r = routing(&["reviews"]);
    let desired = DesiredRouting::weight(30);
    let keys = [ObjectKey::virtual_service("bookinfo", "reviews")];
    let report = router
        .apply(
            &keys,
            None,
            &DesiredPlanner {
                routing: &r,
                desired: &desired,
            },
        )
        .await
        .unwrap();
    assert_eq!(report.conflicts_retried, 3);
    let stored = fake.virtual_service("bookinfo", "reviews").unwrap();
    assert_eq!(weights(&stored), (70, 30));
    assert_eq!(stored["spec"]["http"][0]["timeout"], "3s");
}

#[tokio::test]
async fn a_concurrent_writer_is_never_lost() {
    let (fake, router, _h) = served(&["reviews"]).await;
    // Our PUT is held back while another writer changes the object: the PUT must conflict,
    // and the retry must keep the other writer's change.
    fake.delay_next(
        Some("PUT"),
        "virtualservices/reviews",
        1,
        Duration::from_millis(600),
    );
    let r = routing(&["reviews"]);
    let desired = DesiredRouting::weight(20);
    let keys = [ObjectKey::virtual_service("bookinfo", "reviews")];
    let apply = async {
        router
            .apply(
                &keys,
                None,
                &DesiredPlanner {
                    routing: &r,
                    desired: &desired,
                },
            )
            .await
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fake.update(
            "networking.istio.io",
            "virtualservices",
            "bookinfo",
            "reviews",
            |o| {
                o["spec"]["gateways"] = json!(["mesh", "bookinfo-gateway"]);
            },
        )
        .unwrap();
    };
    let (report, ()) = tokio::join!(apply, other);
    let report = report.unwrap();
    assert!(report.conflicts_retried >= 1, "{report:?}");
    let stored = fake.virtual_service("bookinfo", "reviews").unwrap();
    assert_eq!(
        stored["spec"]["gateways"],
        json!(["mesh", "bookinfo-gateway"]),
        "the other change survived"
    );
    assert_eq!(weights(&stored), (80, 20));
}

#[tokio::test]
async fn failure_on_a_later_virtual_service_undoes_earlier_writes() {
    let (fake, router, _h) = served(&["reviews", "reviews-edge"]).await;
    fake.fail_next(Some("PUT"), "virtualservices/reviews-edge", 1, 500);
    let r = routing(&["reviews", "reviews-edge"]);
    let desired = DesiredRouting::weight(50);
    let keys = [
        ObjectKey::virtual_service("bookinfo", "reviews"),
        ObjectKey::virtual_service("bookinfo", "reviews-edge"),
    ];
    let err = router
        .apply(
            &keys,
            None,
            &DesiredPlanner {
                routing: &r,
                desired: &desired,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RouterError::PartialWrite { .. }), "{err}");
    assert!(!err.left_partial_state(), "{err}");
    for n in ["reviews", "reviews-edge"] {
        assert_eq!(
            weights(&fake.virtual_service("bookinfo", n).unwrap()),
            (100, 0),
            "{n}"
        );
    }
}

#[tokio::test]
async fn no_change_means_no_write() {
    let (fake, router, _h) = served(&["reviews"]).await;
    let r = routing(&["reviews"]);
    let desired = DesiredRouting::weight(0);
    let keys = [ObjectKey::virtual_service("bookinfo", "reviews")];
    fake.clear_requests();
    let report = router
        .apply(
            &keys,
            None,
            &DesiredPlanner {
                routing: &r,
                desired: &desired,
            },
        )
        .await
        .unwrap();
    assert_eq!(report.unchanged, keys.to_vec());
    assert!(
        fake.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        fake.requests()
    );
}

fn bookinfo_canary(dir: &std::path::Path) -> String {
    let p = dir.join("canary.yaml");
    std::fs::write(
        &p,
        r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  trafficRouting:
    istio:
      virtualService: {name: reviews, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
"#,
    )
    .unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn set_weight_with_kube_is_visible_to_kubectl_and_recorded_as_events() {
    let (fake, _router, _h) = served(&["reviews"]).await;
    let (addr, _h2) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let canary = bookinfo_canary(dir.path());
    let kc = kubeconfig.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(["route", "set-weight", "--canary", &canary, "25", "--kube"])
            .env("KUBECONFIG", &kc)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        weights(&fake.virtual_service("bookinfo", "reviews").unwrap()),
        (75, 25)
    );
    let events = fake.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "TrafficWeightUpdated" && e["regarding"]["name"] == "reviews"),
        "{events:?}"
    );
    // Named by uid, or `kubectl describe virtualservice reviews` would not list it.
    let uid = fake.virtual_service("bookinfo", "reviews").unwrap()["metadata"]["uid"].clone();
    assert!(uid.is_string(), "the fake gives objects a uid");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "TrafficWeightUpdated" && e["regarding"]["uid"] == uid),
        "{events:?}"
    );

    let kubectl = std::path::Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        eprintln!("kubectl not installed: skipping the kubectl half of this test");
        return;
    }
    let cache = dir.path().join("kube-cache");
    let k = tokio::task::spawn_blocking(move || {
        Command::new(kubectl)
            .args([
                "get",
                "virtualservice",
                "reviews",
                "-n",
                "bookinfo",
                "-o",
                "yaml",
                "--cache-dir",
            ])
            .arg(&cache)
            .env("KUBECONFIG", &kubeconfig)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let yaml = String::from_utf8_lossy(&k.stdout);
    assert!(
        k.status.success(),
        "{yaml}{}",
        String::from_utf8_lossy(&k.stderr)
    );
    assert!(
        yaml.contains("weight: 75") && yaml.contains("weight: 25"),
        "{yaml}"
    );
    assert!(yaml.contains("skycanary.io/original-routes"), "{yaml}");
}

/// Issue 20: `route` takes kubectl's `--kubeconfig`, `--context` and `-n`. A Canary without a
/// namespace lands in the context's namespace, `-n` overrides it, the current context (which
/// points nowhere) is not used when `--context` names another; without --kube the cluster
/// flags are refused.
#[tokio::test]
async fn route_takes_kubeconfig_context_and_namespace_like_kubectl() {
    let (fake, _router, _h) = served(&["reviews"]).await;
    let (addr, _h2) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The current context points at a closed port; `bench` names the fake, namespace bookinfo.
    let kubeconfig = dir.path().join("kubeconfig");
    let kc_yaml = skycanary::testkit::kubeconfig_yaml(addr)
        .replace("current-context: fake", "current-context: broken")
        .replace(
            "contexts:\n",
            "contexts:\n- name: broken\n  context:\n    cluster: nowhere\n    user: fake\n- name: bench\n  context:\n    cluster: fake\n    user: fake\n    namespace: bookinfo\n",
        )
        .replace(
            "clusters:\n",
            "clusters:\n- name: nowhere\n  cluster:\n    server: http://127.0.0.1:1\n",
        );
    std::fs::write(&kubeconfig, kc_yaml).unwrap();
    let canary = dir.path().join("canary.yaml");
    std::fs::write(
        &canary,
        std::fs::read_to_string(bookinfo_canary(dir.path()))
            .unwrap()
            .replace(
                "metadata: {name: reviews, namespace: bookinfo}",
                "metadata: {name: reviews}",
            ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_skycanary"))
                .args(&args)
                .env_remove("KUBECONFIG")
                .env("HOME", "/nonexistent")
                .output()
                .unwrap()
        })
    };
    let base = |weight: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["route", "set-weight", "--canary"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push(canary.display().to_string());
        v.push(weight.into());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let kc = kubeconfig.display().to_string();
    // The context's namespace (bookinfo) is where the Canary's VirtualService is.
    let out = run(base(
        "25",
        &["--kube", "--kubeconfig", &kc, "--context", "bench"],
    ))
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        weights(&fake.virtual_service("bookinfo", "reviews").unwrap()),
        (75, 25)
    );
    // `-n` wins over the context's namespace: there is no VirtualService in `other`.
    let out = run(base(
        "30",
        &[
            "--kube",
            "--kubeconfig",
            &kc,
            "--context",
            "bench",
            "-n",
            "other",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other/reviews"), "{stderr}");
    // `--namespace bookinfo` with `show`, through the same context.
    let mut show: Vec<String> = ["route", "show", "--canary"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    show.push(canary.display().to_string());
    show.extend(
        [
            "--kube",
            "--kubeconfig",
            &kc,
            "--context",
            "bench",
            "--namespace",
            "bookinfo",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = run(show).await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("75") && stdout.contains("25"), "{stdout}");
    // An unknown context is named.
    let out = run(base(
        "30",
        &["--kube", "--kubeconfig", &kc, "--context", "nope"],
    ))
    .await
    .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Cluster flags without --kube are refused, not ignored.
    let out = run(base(
        "30",
        &[
            "--manifests",
            &dir.path().display().to_string(),
            "--context",
            "bench",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use them with --kube"));
    assert_eq!(
        weights(&fake.virtual_service("bookinfo", "reviews").unwrap()),
        (75, 25)
    );
}
