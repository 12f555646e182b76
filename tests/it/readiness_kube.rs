//! Issue 19 in cluster mode: the real `skycanary run --kube` against the fake API server reads
//! the readiness of a Canary's `workloadRef` from watched Deployments and its canary Service's
//! EndpointSlices, or from watched Pods selected by its DestinationRule subset's labels
//! (docs/workloads.md). Order checks read the fake's watch log (every stored
//! version, in resourceVersion order), so nothing depends on how fast the daemon is.

use std::time::Duration;

use serde_json::{Value, json};
use skycanary::sim::{OapProfile, RunningSim, SimConfig, Simulator};
use skycanary::testkit::{FakeApiServer, ServerHandle, write_kubeconfig};

use super::daemon_kube::{Replica, replica, wait};

/// Generous: the runs here take seconds; the limit only bounds a broken run.
const LIMIT: Duration = Duration::from_secs(60);
const VIRTUAL_SERVICES: &str = "apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices";

struct Cluster {
    fake: FakeApiServer,
    addr: std::net::SocketAddr,
    _server: ServerHandle,
    dir: tempfile::TempDir,
    _sim: (Simulator, RunningSim),
}

impl Cluster {
    /// A VirtualService at stable, the canary Deployment `reviews-v2` (2 ready pods) and the
    /// canary Service's EndpointSlice with two endpoints, ready as `ready`, and a Canary with
    /// `steps` and `readiness`.
    async fn start(steps: Value, readiness: Value, ready: bool) -> Cluster {
        skycanary::testkit::install_crypto_provider();
        let fake = FakeApiServer::new();
        fake.set_event_log_capacity(1 << 20);
        fake.seed(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "reviews-stable"}, "weight": 100},
                {"destination": {"host": "reviews-canary"}, "weight": 0}]}]}
        }))
        .unwrap();
        fake.seed(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "reviews-v2", "namespace": "bookinfo"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "reviews"}},
                "template": {"metadata": {"labels": {"app": "reviews"}},
                    "spec": {"containers": [{"name": "reviews", "image": "reviews:v2"}]}}},
            "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2}
        }))
        .unwrap();
        fake.seed(slice(ready)).unwrap();
        fake.seed(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"revision": "v2",
                "workloadRef": {"kind": "Deployment", "name": "reviews-v2"},
                "readiness": readiness,
                "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                    "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
                "steps": steps}
        }))
        .unwrap();
        let (addr, server) = fake.serve().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(addr, &dir.path().join("kubeconfig")).unwrap();
        std::fs::write(dir.path().join("token"), "readiness-token\n").unwrap();
        let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
        let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Cluster {
            fake,
            addr,
            _server: server,
            dir,
            _sim: (sim, running),
        }
    }

    fn daemon(&self) -> Replica {
        replica(
            "replica-a",
            &self.dir.path().join("kubeconfig"),
            &self.dir.path().join("token"),
            &self._sim.1.url(),
        )
    }

    fn status(&self) -> Value {
        self.fake
            .get("skycanary.io", "canaries", "bookinfo", "reviews")
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait(what, LIMIT, || Some(self.status()).filter(|s| pred(s))).await
    }

    /// Marks every endpoint of the canary Service ready or not; returns the write's
    /// resourceVersion.
    fn set_ready(&self, ready: bool) -> u64 {
        let stored = self
            .fake
            .update(
                "discovery.k8s.io",
                "endpointslices",
                "bookinfo",
                "reviews-canary-x1",
                |o| o["endpoints"] = slice(ready)["endpoints"].clone(),
            )
            .unwrap();
        rv(&stored)
    }

    /// (resourceVersion, canary weight) of every stored VirtualService version.
    async fn canary_weights(&self) -> Vec<(u64, i64)> {
        let url = format!(
            "http://{}/{VIRTUAL_SERVICES}?watch=true&resourceVersion=1&timeoutSeconds=1",
            self.addr
        );
        let body = reqwest::get(url).await.unwrap().text().await.unwrap();
        body.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["type"] == "ADDED" || e["type"] == "MODIFIED")
            .map(|e| (rv(&e["object"]), canary_weight(&e["object"])))
            .collect()
    }
}

fn slice(ready: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "reviews-canary-x1", "namespace": "bookinfo",
            "labels": {"kubernetes.io/service-name": "reviews-canary"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": ready}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": ready}}
        ]
    })
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap()
}

fn canary_weight(vs: &Value) -> i64 {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"]["host"] == "reviews-canary")
        .and_then(|r| r["weight"].as_i64())
        .unwrap_or(0)
}

fn paused_not_ready(s: &Value) -> bool {
    s["phase"] == "Paused" && s["pause"]["reason"] == "CanaryNotReady"
}

fn condition<'a>(s: &'a Value, type_: &str) -> &'a Value {
    s["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// No VirtualService version gives the canary weight while its Service has no ready
/// endpoint; endpoints turning ready let it progress; losing them at 30 % rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_no_weight_without_ready_endpoints_then_progress_and_loss_at_30_rolls_back() {
    let c = Cluster::start(
        json!([{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 30}, {"pause": {}}]),
        json!({"minReady": 1}),
        false,
    )
    .await;
    let _d = c.daemon();
    let s = c.wait_status("held CanaryNotReady", paused_not_ready).await;
    assert_eq!(s["readiness"]["canaryReady"], 0, "{s:#}");
    assert_eq!(condition(&s, "Paused")["reason"], "CanaryNotReady", "{s:#}");
    // Held: a while passes (the watchers re-list nothing new) and still no weight.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(paused_not_ready(&c.status()));

    let ready_rv = c.set_ready(true);
    c.wait_status("paused at 30 %", |s| {
        s["phase"] == "Paused"
            && s["pause"]["reason"] != "CanaryNotReady"
            && s["currentStepIndex"] == 3
    })
    .await;
    let weights = c.canary_weights().await;
    for (rv, w) in &weights {
        assert!(
            *w == 0 || *rv > ready_rv,
            "weight {w} written at rv {rv} before endpoints were ready (rv {ready_rv}): {weights:?}"
        );
    }
    assert!(weights.iter().any(|(_, w)| *w == 30), "{weights:?}");

    let lost_rv = c.set_ready(false);
    let s = c.wait_status("Aborted", |s| s["phase"] == "Aborted").await;
    assert!(
        s["abort"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("CanaryNotReady:")),
        "{s:#}"
    );
    wait("the rollback write", LIMIT, || {
        c.fake
            .virtual_service("bookinfo", "reviews")
            .filter(|vs| canary_weight(vs) == 0)
    })
    .await;
    let weights = c.canary_weights().await;
    let after: Vec<i64> = weights
        .iter()
        .filter(|(rv, _)| *rv > lost_rv)
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(after, [0], "only the rollback after the loss: {weights:?}");
}

/// Endpoints that never turn ready abort the run at `progressDeadline`, with nothing exposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_progress_deadline_aborts_with_canary_not_ready() {
    let c = Cluster::start(
        json!([{"setWeight": 10}, {"pause": {}}]),
        json!({"progressDeadline": "3s"}),
        false,
    )
    .await;
    let _d = c.daemon();
    let s = c.wait_status("Aborted", |s| s["phase"] == "Aborted").await;
    assert!(
        s["abort"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("CanaryNotReady:")),
        "{s:#}"
    );
    assert_eq!(
        condition(&s, "Aborted")["reason"],
        "CanaryNotReady",
        "{s:#}"
    );
    let weights = c.canary_weights().await;
    assert!(weights.iter().all(|(_, w)| *w == 0), "{weights:?}");
}

/// Subset-level routing with `workloadRef: {fromSubset: true}`: the canary's pods are those
/// with the labels of the DestinationRule's `v2` subset (and `app: reviews`), watched as Pods.
struct SubsetCluster {
    fake: FakeApiServer,
    addr: std::net::SocketAddr,
    _server: ServerHandle,
    dir: tempfile::TempDir,
    sim: (Simulator, RunningSim),
}

fn pod(name: &str, app: &str, version: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bookinfo",
            "labels": {"app": app, "version": version}},
        "spec": {"containers": [{"name": app, "image": format!("{app}:{version}")}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

impl SubsetCluster {
    async fn start(subsets: Value) -> SubsetCluster {
        skycanary::testkit::install_crypto_provider();
        let fake = FakeApiServer::new();
        fake.set_event_log_capacity(1 << 20);
        fake.seed(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]}
        }))
        .unwrap();
        fake.seed(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"host": "reviews", "subsets": subsets}
        }))
        .unwrap();
        for p in [
            pod("reviews-v1-a", "reviews", "v1", true),
            pod("reviews-v2-a", "reviews", "v2", false),
            pod("reviews-v2-b", "reviews", "v2", false),
            // Another app's pod with the subset's label: not the canary's (`app: reviews`).
            pod("ratings-v2-a", "ratings", "v2", true),
        ] {
            fake.seed(p).unwrap();
        }
        fake.seed(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"revision": "v2",
                "workloadRef": {"fromSubset": true, "selector": {"matchLabels": {"app": "reviews"}}},
                "readiness": {"minReady": 1},
                "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                    "destinationRule": {"name": "reviews", "stableSubsetName": "v1", "canarySubsetName": "v2"}}},
                "steps": [{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 30}, {"pause": {}}]}
        }))
        .unwrap();
        let (addr, server) = fake.serve().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(addr, &dir.path().join("kubeconfig")).unwrap();
        std::fs::write(dir.path().join("token"), "readiness-token\n").unwrap();
        let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
        let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        SubsetCluster {
            fake,
            addr,
            _server: server,
            dir,
            sim: (sim, running),
        }
    }

    fn daemon(&self) -> Replica {
        replica(
            "replica-a",
            &self.dir.path().join("kubeconfig"),
            &self.dir.path().join("token"),
            &self.sim.1.url(),
        )
    }

    fn status(&self) -> Value {
        self.fake
            .get("skycanary.io", "canaries", "bookinfo", "reviews")
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait(what, LIMIT, || Some(self.status()).filter(|s| pred(s))).await
    }

    /// Sets a pod's Ready condition as the kubelet would; returns the write's resourceVersion.
    fn set_pod_ready(&self, name: &str, ready: bool) -> u64 {
        let stored = self
            .fake
            .update_status("", "pods", "bookinfo", name, |o| {
                o["status"]["conditions"][0]["status"] =
                    if ready { "True" } else { "False" }.into();
            })
            .unwrap();
        rv(&stored)
    }

    /// (resourceVersion, weight of subset v2) of every stored VirtualService version.
    async fn canary_weights(&self) -> Vec<(u64, i64)> {
        let url = format!(
            "http://{}/{VIRTUAL_SERVICES}?watch=true&resourceVersion=1&timeoutSeconds=1",
            self.addr
        );
        let body = reqwest::get(url).await.unwrap().text().await.unwrap();
        body.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["type"] == "ADDED" || e["type"] == "MODIFIED")
            .map(|e| (rv(&e["object"]), subset_weight(&e["object"])))
            .collect()
    }
}

fn subset_weight(vs: &Value) -> i64 {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"]["subset"] == "v2")
        .and_then(|r| r["weight"].as_i64())
        .unwrap_or(0)
}

fn subsets() -> Value {
    json!([
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}}
    ])
}

/// `fromSubset`: no VirtualService version gives subset v2 weight while no pod with the
/// subset's labels (and `app: reviews`) is ready — a ready pod of another app with the same
/// `version` label does not count; one pod turning ready lets it progress to 30 %; every
/// matching pod turning unready there rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_from_subset_waits_for_ready_pods_and_rolls_back_when_they_are_lost() {
    let c = SubsetCluster::start(subsets()).await;
    let _d = c.daemon();
    // Unknown until the Pods are listed, then 0 ready (ratings-v2-a is not counted).
    let s = c
        .wait_status("held CanaryNotReady with 0 ready", |s| {
            paused_not_ready(s) && s["readiness"]["canaryReady"] == 0
        })
        .await;
    assert_eq!(s["readiness"]["message"], Value::Null, "{s:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(paused_not_ready(&c.status()));
    assert!(
        c.fake
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/pods" || r.path.ends_with("/pods")),
        "the Pods are watched"
    );

    let ready_rv = c.set_pod_ready("reviews-v2-a", true);
    let s = c
        .wait_status("paused at 30 %", |s| {
            s["phase"] == "Paused"
                && s["pause"]["reason"] != "CanaryNotReady"
                && s["currentStepIndex"] == 3
        })
        .await;
    assert_eq!(s["readiness"]["canaryReady"], 1, "{s:#}");
    let weights = c.canary_weights().await;
    for (rv, w) in &weights {
        assert!(
            *w == 0 || *rv > ready_rv,
            "weight {w} written at rv {rv} before a v2 pod was ready (rv {ready_rv}): {weights:?}"
        );
    }
    assert!(weights.iter().any(|(_, w)| *w == 30), "{weights:?}");

    let lost_rv = c.set_pod_ready("reviews-v2-a", false);
    let s = c.wait_status("Aborted", |s| s["phase"] == "Aborted").await;
    assert!(
        s["abort"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("CanaryNotReady:")),
        "{s:#}"
    );
    wait("the rollback write", LIMIT, || {
        c.fake
            .virtual_service("bookinfo", "reviews")
            .filter(|vs| subset_weight(vs) == 0)
    })
    .await;
    let weights = c.canary_weights().await;
    let after: Vec<i64> = weights
        .iter()
        .filter(|(rv, _)| *rv > lost_rv)
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(after, [0], "only the rollback after the loss: {weights:?}");
}

/// A DestinationRule without the canary's subset: the count is unknown with a message naming
/// the subset and the DestinationRule; the canary is held, nothing is exposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_from_subset_without_the_subset_is_held_with_the_reason() {
    let c = SubsetCluster::start(json!([{"name": "v1", "labels": {"version": "v1"}}])).await;
    c.set_pod_ready("reviews-v2-a", true);
    let _d = c.daemon();
    let s = c.wait_status("held CanaryNotReady", paused_not_ready).await;
    assert_eq!(s["readiness"]["canaryReady"], Value::Null, "{s:#}");
    let m = s["readiness"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("DestinationRule bookinfo/reviews: subset v2 not found"),
        "{s:#}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(paused_not_ready(&c.status()));
    let weights = c.canary_weights().await;
    assert!(weights.iter().all(|(_, w)| *w == 0), "{weights:?}");
}
