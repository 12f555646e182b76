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
        Cluster::start_with(steps, readiness, ready, Some("v2"), None).await
    }

    /// As [`Cluster::start`], the Canary's `spec.revision` as given (none: the revision comes
    /// from the Deployment's pod template) and a `.status` as a previous daemon left it.
    async fn start_with(
        steps: Value,
        readiness: Value,
        ready: bool,
        revision: Option<&str>,
        status: Option<Value>,
    ) -> Cluster {
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
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                "readyReplicas": 2}
        }))
        .unwrap();
        fake.seed(slice(ready)).unwrap();
        let mut canary = json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {
                "workloadRef": {"kind": "Deployment", "name": "reviews-v2"},
                "readiness": readiness,
                "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                    "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
                "steps": steps}
        });
        if let Some(r) = revision {
            canary["spec"]["revision"] = r.into();
        }
        if let Some(st) = status {
            canary["status"] = st;
        }
        fake.seed(canary).unwrap();
        Cluster::serving(fake).await
    }

    /// Serves the seeded fake, a kubeconfig with a token file and a simulated OAP.
    async fn serving(fake: FakeApiServer) -> Cluster {
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

    /// Argo CD syncs a new image into `reviews-v2`: its pod template (and generation)
    /// changes; its controller has not observed it yet. Returns the write's resourceVersion.
    fn set_image(&self, image: &str) -> u64 {
        let stored = self
            .fake
            .update("apps", "deployments", "bookinfo", "reviews-v2", |o| {
                o["spec"]["template"]["spec"]["containers"][0]["image"] = image.into();
            })
            .unwrap();
        rv(&stored)
    }

    /// The Deployment controller has observed the current generation and rolled it out:
    /// `replicas` pods, `updated` of the current template, `ready` ready (old ones included).
    fn observe_deployment(&self, replicas: i64, updated: i64, ready: i64) {
        let generation = self
            .fake
            .get("apps", "deployments", "bookinfo", "reviews-v2")
            .unwrap()["metadata"]["generation"]
            .clone();
        self.fake
            .update_status("apps", "deployments", "bookinfo", "reviews-v2", |o| {
                o["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                        "updatedReplicas": updated, "readyReplicas": ready});
            })
            .unwrap();
    }

    /// Notes of the Events with `reason`, oldest first.
    fn event_notes(&self, reason: &str) -> Vec<String> {
        self.fake
            .events()
            .iter()
            .filter(|e| e["reason"] == reason)
            .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
            .map(String::from)
            .collect()
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
struct SubsetCluster(Cluster);

impl std::ops::Deref for SubsetCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
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
        SubsetCluster(Cluster::serving(fake).await)
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

fn paused_at_30(s: &Value) -> bool {
    s["phase"] == "Paused" && s["pause"]["reason"] == "Step" && s["currentStepIndex"] == 3
}

/// Issue 19's automatic start, against the fake API server. The Canary has no
/// `spec.revision`; its last release was by `spec.revision: v1` (promoted, routes back at
/// stable). The daemon adopts the current pod template without a run; an image change of the
/// Deployment starts a run by itself (revision = the template's hash, the image in its
/// Event), held until the new pods' endpoints are ready; a second image change mid-run at
/// 30 % restarts from step 0 with the canary's weight back at 0 first, and no VirtualService
/// version gives the new template weight before its endpoints are ready (over the write log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_an_image_change_starts_the_canary_and_a_second_one_restarts_it_at_weight_0() {
    let c = Cluster::start_with(
        json!([{"setWeight": 10}, {"pause": {"duration": "1s"}}, {"setWeight": 30}, {"pause": {}}]),
        json!({"minReady": 1}),
        true,
        None,
        Some(
            json!({"phase": "Promoted", "revision": "v1", "currentStepIndex": 4,
            "startedAt": "2026-01-01T00:00:00Z", "promotedAt": "2026-01-01T00:10:00Z"}),
        ),
    )
    .await;
    let _d = c.daemon();
    let s = c
        .wait_status("the template adopted", |s| s["templateHash"].is_string())
        .await;
    assert_eq!(
        (&s["phase"], &s["revision"]),
        (&json!("Promoted"), &json!("v1")),
        "{s:#}"
    );
    let adopted = s["templateHash"].as_str().unwrap().to_string();
    assert_eq!(c.event_notes("RevisionAdopted").len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        c.status()["phase"],
        "Promoted",
        "no run for the adopted template"
    );

    // Release 1: the image changes; the controller rolls new pods, not ready yet.
    let change_rv = c.set_image("reviews:v3");
    let s = c
        .wait_status("a run for the new template", |s| {
            s["templateHash"] != adopted.as_str() && paused_not_ready(s)
        })
        .await;
    let first = s["revision"].as_str().unwrap().to_string();
    assert_eq!(s["templateHash"], first.as_str(), "{s:#}");
    assert_eq!(first.len(), 10, "{s:#}");
    assert!(
        c.event_notes("RolloutUpdated")
            .iter()
            .any(|n| n.contains(&first) && n.contains("reviews:v3")),
        "{:?}",
        c.event_notes("RolloutUpdated")
    );
    c.set_ready(false);
    c.observe_deployment(2, 2, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(paused_not_ready(&c.status()), "{:#}", c.status());
    let ready_rv = c.set_ready(true);
    let s = c.wait_status("release 1 at 30 %", paused_at_30).await;
    assert_eq!(s["revision"], first.as_str());
    let weights = c.canary_weights().await;
    for (rv, w) in &weights {
        assert!(
            *w == 0 || *rv > ready_rv,
            "weight {w} at rv {rv} before the new pods were ready (rv {ready_rv}): {weights:?}"
        );
    }
    assert!(
        weights.iter().any(|(rv, w)| *w == 30 && *rv > change_rv),
        "{weights:?}"
    );

    // Release 2 while release 1 holds 30 %: restart from step 0, weight 0 first.
    let change2_rv = c.set_image("reviews:v4");
    let s = c
        .wait_status("a restart for the second template", |s| {
            s["revision"] != first.as_str() && paused_not_ready(s)
        })
        .await;
    let second = s["revision"].as_str().unwrap().to_string();
    assert_eq!(s["currentStepIndex"], 0, "{s:#}");
    assert!(s["abort"].is_null(), "a new template is no rollback: {s:#}");
    wait("the weight back at 0", LIMIT, || {
        c.fake
            .virtual_service("bookinfo", "reviews")
            .filter(|vs| canary_weight(vs) == 0)
    })
    .await;
    // Mid-rollout: one new pod (not ready) beside the two old ones, whose endpoints are
    // still ready. Ready pods of the new template: at most 2 - (3 - 1) = 0.
    c.observe_deployment(3, 1, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = c.status();
    assert!(
        paused_not_ready(&s),
        "old pods are not the new template's: {s:#}"
    );
    assert_eq!(s["readiness"]["canaryReady"], 0, "{s:#}");
    c.set_ready(false);
    c.observe_deployment(2, 2, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = c.status();
    assert!(paused_not_ready(&s), "{s:#}");
    assert!(s["abort"].is_null(), "{s:#}");
    let ready2_rv = c.set_ready(true);
    let s = c.wait_status("release 2 at 30 %", paused_at_30).await;
    assert_eq!(s["revision"], second.as_str());
    let weights = c.canary_weights().await;
    let after: Vec<&(u64, i64)> = weights.iter().filter(|(rv, _)| *rv > change2_rv).collect();
    assert_eq!(after.first().map(|(_, w)| *w), Some(0), "{weights:?}");
    for (rv, w) in &after {
        assert!(
            *w == 0 || *rv > ready2_rv,
            "weight {w} at rv {rv} before the second template's pods were ready (rv {ready2_rv}): {weights:?}"
        );
    }
    assert_eq!(after.last().map(|(_, w)| *w), Some(30), "{weights:?}");
}
