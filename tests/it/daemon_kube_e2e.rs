//! Issue 4's acceptance in cluster mode: the real `skycanary run --kube` against the fake API
//! server and the SkyWalking simulator over loopback (the `--manifests` variants are in
//! `daemon.rs`, the two-replica leader test in `daemon_kube.rs`).
//!
//! Checks about order read the fake's watch log: every stored version of the Canary, the
//! VirtualService and the Lease, in resourceVersion order. "Back at stable within one
//! measurement interval" is therefore "no measurement and no other routing write between the
//! failing measurement and the rollback", and "weights never go down" covers every write, not
//! the ones a poll happened to see. Nothing depends on how fast the daemon is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use skycanary::sim::{Fault, OapProfile, RunningSim, SimConfig, SimEntity, Simulator};
use skycanary::testkit::vs_schema::virtual_service_violations;
use skycanary::testkit::{FakeApiServer, ServerHandle, write_kubeconfig};

use super::daemon_kube::{Replica, replica, wait};

const TOKEN: &str = "kube-e2e-token";
/// Generous: a whole rollout here takes seconds; the limit only bounds a broken run.
const LIMIT: Duration = Duration::from_secs(60);
const CANARIES: &str = "apis/skycanary.io/v1alpha1/namespaces/bookinfo/canaries";
const VIRTUAL_SERVICES: &str = "apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices";
const LEASES: &str = "apis/coordination.k8s.io/v1/namespaces/bookinfo/leases";

/// A fake API server holding a VirtualService at stable, an apdex template (`count`
/// measurements one second apart, the first error ends the run) and a Canary that walks
/// 10 → 30 → 60 → 100 % with that analysis after each weight.
struct Cluster {
    fake: FakeApiServer,
    addr: SocketAddr,
    _server: ServerHandle,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(on_error: &str, count: u32) -> Cluster {
        skycanary::testkit::install_crypto_provider();
        let fake = FakeApiServer::new();
        // Keep every version for the history checks (the default log is bounded).
        fake.set_event_log_capacity(1 << 20);
        seed(&fake, on_error, count);
        let (addr, server) = fake.serve().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_kubeconfig(addr, &dir.path().join("kubeconfig")).unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        Cluster {
            fake,
            addr,
            _server: server,
            dir,
        }
    }

    /// `skycanary run --kube` as `identity`, measuring against `skywalking`.
    fn daemon(&self, identity: &str, skywalking: &str) -> Replica {
        let kubeconfig: PathBuf = self.dir.path().join("kubeconfig");
        replica(
            identity,
            &kubeconfig,
            &self.dir.path().join("token"),
            skywalking,
        )
    }

    /// The Canary's `.status` as stored in the fake.
    fn status(&self) -> Value {
        self.fake
            .get("skycanary.io", "canaries", "bookinfo", "reviews")
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// (stable, canary) weights of the VirtualService as stored.
    fn weights(&self) -> (i64, i64) {
        weights(&self.fake.virtual_service("bookinfo", "reviews").unwrap())
    }

    async fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait(what, LIMIT, || Some(self.status()).filter(|s| pred(s))).await
    }

    /// Waits until the daemon has recorded an Event with this reason (Events are written
    /// after the status that caused them).
    async fn wait_event(&self, reason: &str) {
        wait(reason, LIMIT, || {
            self.fake
                .events()
                .iter()
                .any(|e| e["reason"] == reason)
                .then_some(())
        })
        .await;
    }

    /// Event reasons on the Canary, oldest first, with their notes.
    fn events(&self) -> Vec<(String, String)> {
        self.fake
            .events()
            .iter()
            .inspect(|e| {
                assert_eq!(e["regarding"]["kind"], "Canary", "{e:#}");
                assert_eq!(e["regarding"]["name"], "reviews", "{e:#}");
            })
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Every stored version of the objects under `path`, oldest first, replayed from the
    /// fake's watch log: (resourceVersion, object).
    async fn history(&self, path: &str) -> Vec<(u64, Value)> {
        let url = format!(
            "http://{}/{path}?watch=true&resourceVersion=1&timeoutSeconds=1",
            self.addr
        );
        let body = http().get(url).send().await.unwrap().text().await.unwrap();
        body.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .inspect(|e| assert_ne!(e["type"], "ERROR", "{e:#}"))
            .filter(|e| e["type"] == "ADDED" || e["type"] == "MODIFIED")
            .map(|e| {
                let rv = e["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap();
                (rv, e["object"].clone())
            })
            .collect()
    }

    /// The canary weight of every VirtualService version, consecutive repeats collapsed.
    async fn canary_weight_history(&self) -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        for (_, vs) in self.history(VIRTUAL_SERVICES).await {
            let w = weights(&vs).1;
            if out.last() != Some(&w) {
                out.push(w);
            }
        }
        out
    }
}

fn seed(fake: &FakeApiServer, on_error: &str, count: u32) {
    fake.seed(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "reviews-stable"}, "weight": 100},
            {"destination": {"host": "reviews-canary"}, "weight": 0}]}]}
    }))
    .unwrap();
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "apdex", "namespace": "bookinfo"},
        "spec": {"args": [{"name": "service"}], "metrics": [{
            "name": "apdex", "interval": "1s", "count": count,
            "consecutiveErrorLimit": 0, "errorRetryInterval": "1s",
            "successCondition": "min(result) >= 9900",
            "provider": {"skywalking": {"window": {"duration": "3m", "alignToStep": false}, "timeout": "2s", "metric": "service_apdex",
                "entity": {"serviceName": "{{args.service}}"}}}}]}
    }))
    .unwrap();
    let analysis = json!({"analysis": {"templates": [{"templateName": "apdex"}],
        "args": [{"name": "service", "value": "reviews.bookinfo"}]}});
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2", "onAnalysisError": on_error,
            "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
            "steps": [{"setWeight": 10}, analysis, {"setWeight": 30}, analysis,
                      {"setWeight": 60}, analysis]}
    }))
    .unwrap();
}

/// A simulator whose `service_apdex` of reviews.bookinfo is `f(minute)`.
async fn sim(
    f: impl Fn(chrono::DateTime<chrono::Utc>) -> Option<f64> + Send + Sync + 'static,
) -> (Simulator, RunningSim) {
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series("service_apdex", SimEntity::service("reviews.bookinfo"), f);
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, running)
}

fn http() -> reqwest::Client {
    skycanary::testkit::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// (stable, canary) weights of the `primary` route; a destination left out weighs 0. Checks
/// first that the VirtualService (read back, or a version from the watch history) is one
/// Istio's CRD schema admits: every VirtualService these tests see written is checked
/// (issue 15).
fn weights(vs: &Value) -> (i64, i64) {
    let errs = virtual_service_violations(vs);
    assert!(
        errs.is_empty(),
        "not valid against Istio's schema: {errs:?}\n{vs:#}"
    );
    let route = vs["spec"]["http"][0]["route"].as_array().unwrap();
    let of = |host: &str| {
        route
            .iter()
            .filter(|d| d["destination"]["host"] == host)
            .map(|d| d["weight"].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    (of("reviews-stable"), of("reviews-canary"))
}

fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or("")
}

/// Every measurement of every run in a status, oldest run first.
fn measurements(s: &Value) -> Vec<&Value> {
    s["analysisRuns"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| {
            r["status"]["metricResults"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .flat_map(|m| m["measurements"].as_array().into_iter().flatten())
        .collect()
}

fn run_names(s: &Value) -> Vec<String> {
    s["analysisRuns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// The first metric result of the run named `name`.
fn metric_of<'a>(s: &'a Value, run: &str) -> &'a Value {
    s["analysisRuns"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["name"] == run))
        .map(|r| &r["status"]["metricResults"][0])
        .unwrap_or(&Value::Null)
}

fn count_of(s: &Value, run: &str) -> u64 {
    metric_of(s, run)["measurements"]
        .as_array()
        .map_or(0, |m| m.len() as u64)
}

/// GET /metrics with the token (it is public, the token does no harm).
async fn metrics(r: &Replica) -> String {
    let resp = http()
        .get(format!("{}/metrics", r.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let all = labels.iter().all(|(k, v)| {
            let want = format!("{k}=\"{v}\"");
            set.split(',').any(|kv| kv == want)
        });
        if all { value.trim().parse().ok() } else { None }
    })
}

/// POST an action; `token` None sends no Authorization header.
async fn post(r: &Replica, action: &str, token: Option<&str>) -> reqwest::StatusCode {
    let mut req = http().post(format!(
        "{}/api/v1/canaries/bookinfo/reviews/{action}",
        r.url
    ));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status()
}

/// Injects `fault` for good once the daemon's version probe (the first `getTimeInfo`) was
/// answered: an outage that begins after the canary was exposed.
fn fail_after_the_version_probe(sim: &Simulator, fault: Fault) {
    let once = std::sync::atomic::AtomicBool::new(false);
    let inject = sim.clone();
    sim.set_observer(move |ex| {
        let probe = std::str::from_utf8(ex.body).is_ok_and(|b| b.contains("getTimeInfo"));
        if probe && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            inject.inject_fault(fault.clone(), None);
        }
    });
}

/// A loopback address where nothing listens.
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_healthy_canary_is_promoted_and_events_and_metrics_agree() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    let c = Cluster::start("Abort", 2).await;
    let d = c.daemon("replica-a", &running.url());
    let s = c.wait_status("Promoted", |s| phase(s) == "Promoted").await;
    c.wait_event("RolloutCompleted").await;

    assert_eq!(c.weights(), (0, 100));
    assert_eq!(c.canary_weight_history().await, [0, 10, 30, 60, 100]);
    assert_eq!(s["desiredWeight"], 100, "{s:#}");
    assert_eq!(s["weights"][0]["canary"], 100, "{s:#}");
    let runs = s["analysisRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{s:#}");
    for r in runs {
        assert_eq!(r["status"]["phase"], "Successful", "{r:#}");
        assert_eq!(r["status"]["metricResults"][0]["count"], 2, "{r:#}");
    }
    let taken = measurements(&s);
    assert_eq!(taken.len(), 6);
    assert!(taken.iter().all(|m| m["phase"] == "Successful"), "{s:#}");

    // Events: one weight update per step, in order, and the completion.
    let events = c.events();
    let updates: Vec<&str> = events
        .iter()
        .filter(|(r, _)| r == "TrafficWeightUpdated")
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(
        updates,
        [
            "Traffic weight updated from 0 to 10",
            "Traffic weight updated from 10 to 30",
            "Traffic weight updated from 30 to 60",
            "Traffic weight updated from 60 to 100",
        ],
        "{events:#?}"
    );
    let reasons = |r: &str| events.iter().filter(|(x, _)| x == r).count();
    assert_eq!(reasons("RolloutCompleted"), 1, "{events:#?}");
    assert_eq!(reasons("AnalysisRunSuccessful"), 3, "{events:#?}");
    assert_eq!(reasons("RolloutAborted"), 0, "{events:#?}");

    // Metrics: the phase state set, the weight read back, one decision per recorded Event and
    // one counted measurement per measurement in the status.
    let text = metrics(&d).await;
    let canary = [("namespace", "bookinfo"), ("name", "reviews")];
    for p in [
        "Pending",
        "Progressing",
        "Paused",
        "Promoted",
        "Aborted",
        "Degraded",
    ] {
        let labels = [canary[0], canary[1], ("phase", p)];
        let want = if p == "Promoted" { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&text, "skycanary_canary_phase", &labels),
            Some(want),
            "{p}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "skycanary_canary_weight",
            &[canary[0], canary[1], ("route", "primary")]
        ),
        Some(100.0),
        "{text}"
    );
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, _) in &events {
        *by_reason.entry(r.as_str()).or_default() += 1;
    }
    for (reason, n) in by_reason {
        let labels = [canary[0], canary[1], ("reason", reason)];
        assert_eq!(
            sample(&text, "skycanary_decisions_total", &labels),
            Some(n as f64),
            "{reason}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "skycanary_measurements_total",
            &[canary[0], canary[1], ("phase", "Successful")]
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "skycanary_analysis_runs_total",
            &[canary[0], canary[1], ("phase", "Successful")]
        ),
        Some(3.0),
        "one per run in the status: {text}"
    );
    // The kube client's requests are counted through its tower layer: every weight write (a
    // replace of the VirtualService), every Event, and the Canary watch.
    let kube = |verb, resource| {
        sample(
            &text,
            "skycanary_kube_requests_total",
            &[("verb", verb), ("resource", resource), ("status", "2xx")],
        )
        .unwrap_or(0.0)
    };
    assert!(kube("replace", "virtualservices") >= 4.0, "{text}");
    assert_eq!(kube("create", "events"), events.len() as f64, "{text}");
    assert!(kube("watch", "canaries") >= 1.0, "{text}");
    assert!(
        sample(
            &text,
            "skycanary_kube_request_duration_seconds_count",
            &[("verb", "replace"), ("resource", "virtualservices")]
        )
        .is_some_and(|n| n >= 4.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apdex_drop_at_30_percent_rolls_back_before_the_next_measurement() {
    // The canary's apdex collapses as soon as it takes 30 % of the traffic: the failure comes
    // from the state of the world, not from a timer racing the daemon.
    let fake_view: std::sync::Arc<std::sync::OnceLock<FakeApiServer>> = Default::default();
    let view = fake_view.clone();
    let (_sim, running) = sim(move |_| {
        let at_30 = view
            .get()
            .and_then(|f| f.virtual_service("bookinfo", "reviews"))
            .is_some_and(|vs| weights(&vs).1 >= 30);
        Some(if at_30 { 7000.0 } else { 9950.0 })
    })
    .await;
    let c = Cluster::start("Abort", 2).await;
    fake_view.set(c.fake.clone()).unwrap();
    let _d = c.daemon("replica-a", &running.url());
    let s = c.wait_status("Aborted", |s| phase(s) == "Aborted").await;
    c.wait_event("RolloutAborted").await;

    assert_eq!(c.weights(), (100, 0), "back at stable");
    let abort = &s["abort"];
    assert_eq!(abort["metric"], "apdex", "{abort:#}");
    assert!(
        abort["value"].as_str().unwrap_or("").contains("7000"),
        "{abort:#}"
    );
    assert!(
        abort["condition"]
            .as_str()
            .unwrap_or("")
            .contains("min(result) >= 9900"),
        "{abort:#}"
    );
    assert_eq!(s["currentStepIndex"], 3, "the analysis at 30 %: {s:#}");

    // Order of writes: the first status holding the failed measurement, then the rollback as
    // the very next VirtualService write, with no measurement taken in between.
    let canaries = c.history(CANARIES).await;
    let vss = c.history(VIRTUAL_SERVICES).await;
    let (failed_rv, at_failure) = canaries
        .iter()
        .find(|(_, o)| {
            measurements(&o["status"])
                .iter()
                .any(|m| m["phase"] == "Failed")
        })
        .expect("the failed measurement was persisted");
    let taken = measurements(&at_failure["status"]).len();
    let (rollback_rv, first_after) = vss
        .iter()
        .find(|(rv, _)| rv > failed_rv)
        .expect("a VirtualService write after the failure");
    assert_eq!(
        weights(first_after),
        (100, 0),
        "the next routing write is the rollback"
    );
    for (rv, o) in &canaries {
        if rv > failed_rv && rv < rollback_rv {
            assert_eq!(
                measurements(&o["status"]).len(),
                taken,
                "a measurement was taken before the rollback: {o:#}"
            );
        }
    }
    assert_eq!(c.canary_weight_history().await, [0, 10, 30, 0]);
    let events = c.events();
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "AnalysisRunFailed" && n.contains("apdex")),
        "{events:#?}"
    );
    // Issue 18: the failure Events name the measured value and the threshold.
    for reason in ["AnalysisRunFailed", "RolloutAborted"] {
        assert!(
            events
                .iter()
                .any(|(r, n)| r == reason && n.contains("7000") && n.contains("threshold >= 9900")),
            "{reason}: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_no_traffic_pauses_inconclusive_without_promoting_or_aborting() {
    let (_sim, running) = sim(|_| None).await;
    let c = Cluster::start("Abort", 2).await;
    let _d = c.daemon("replica-a", &running.url());
    let s = c.wait_status("Paused", |s| phase(s) == "Paused").await;
    c.wait_event("AnalysisRunInconclusive").await;

    assert_eq!(s["pause"]["reason"], "Inconclusive", "{s:#}");
    assert_eq!(s["currentStepIndex"], 1, "{s:#}");
    assert_eq!(c.weights(), (90, 10), "weight unchanged");
    assert_eq!(c.canary_weight_history().await, [0, 10]);
    for (_, o) in c.history(CANARIES).await {
        let p = phase(&o["status"]);
        assert!(p != "Promoted" && p != "Aborted", "{o:#}");
    }
    assert!(
        measurements(&s)
            .iter()
            .all(|m| m["phase"] == "Inconclusive"),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_oap_outage_with_hold_freezes_the_weight() {
    let (sim, running) = sim(|_| Some(9950.0)).await;
    // The OAP answers the version probe, then 503 to everything.
    fail_after_the_version_probe(&sim, Fault::Status(503));
    let c = Cluster::start("Hold", 2).await;
    let d = c.daemon("replica-a", &running.url());
    let s = c.wait_status("Paused", |s| phase(s) == "Paused").await;
    c.wait_event("AnalysisRunError").await;

    assert_eq!(s["pause"]["reason"], "AnalysisError", "{s:#}");
    assert_eq!(s["currentStepIndex"], 1, "{s:#}");
    assert_eq!(c.weights(), (90, 10), "weight frozen");
    assert_eq!(c.canary_weight_history().await, [0, 10]);
    for (_, o) in c.history(CANARIES).await {
        let p = phase(&o["status"]);
        assert!(p != "Promoted" && p != "Aborted", "{o:#}");
    }
    let text = metrics(&d).await;
    assert_eq!(
        sample(
            &text,
            "skycanary_canary_phase",
            &[("name", "reviews"), ("phase", "Paused")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "skycanary_analysis_runs_total",
            &[("name", "reviews"), ("phase", "Error")]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_canary_waits_pending_while_its_oap_never_answers() {
    let c = Cluster::start("Abort", 2).await;
    let dead = dead_address();
    let _d = c.daemon("replica-a", &dead);
    let want = format!("waiting for SkyWalking OAP at {dead}: ");
    let s = c
        .wait_status("the waiting message", |s| {
            s["message"].as_str().is_some_and(|m| m.starts_with(&want))
        })
        .await;
    assert_eq!(phase(&s), "Pending", "{s:#}");
    assert_eq!(c.weights(), (100, 0), "never exposed");
    assert_eq!(c.canary_weight_history().await, [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_oap_outage_with_abort_rolls_back() {
    let (sim, running) = sim(|_| Some(9950.0)).await;
    fail_after_the_version_probe(&sim, Fault::Status(503));
    let c = Cluster::start("Abort", 2).await;
    let _d = c.daemon("replica-a", &running.url());
    let s = c.wait_status("Aborted", |s| phase(s) == "Aborted").await;
    c.wait_event("RolloutAborted").await;

    assert_eq!(c.weights(), (100, 0), "stable takes everything");
    assert_eq!(c.canary_weight_history().await, [0, 10, 0]);
    assert_eq!(s["currentStepIndex"], 1, "{s:#}");
    assert!(
        measurements(&s).iter().all(|m| m["phase"] == "Error"),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_sigkill_mid_step_resumes_with_the_same_counts_and_never_lowers_weights() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    // Five measurements per analysis: the daemon dies with the first analysis half done.
    let c = Cluster::start("Abort", 5).await;
    let mut a = c.daemon("replica-a", &running.url());
    let mid = c
        .wait_status("two measurements of step 1", |s| {
            s["currentStepIndex"] == 1 && measurements(s).len() >= 2
        })
        .await;
    let run = mid["stepAnalysisRun"].as_str().unwrap().to_string();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drop(a);

    // A new pod: it takes the lease once the dead one's expires.
    let b = c.daemon("replica-b", &running.url());
    let s = c.wait_status("Promoted", |s| phase(s) == "Promoted").await;
    c.wait_event("RolloutCompleted").await;

    // What replica-a had persisted when replica-b took over, from the write history.
    let leases = c.history(LEASES).await;
    let (takeover_rv, _) = leases
        .iter()
        .find(|(_, l)| l["spec"]["holderIdentity"] == "replica-b")
        .expect("replica-b took the lease");
    let canaries = c.history(CANARIES).await;
    let killed = &canaries
        .iter()
        .rev()
        .find(|(rv, _)| rv < takeover_rv)
        .expect("replica-a wrote a status")
        .1["status"];
    assert_eq!(killed["currentStepIndex"], 1, "{killed:#}");
    assert_eq!(killed["stepAnalysisRun"], run.as_str(), "{killed:#}");
    let killed_count = count_of(killed, &run);
    assert!(
        (2..5).contains(&killed_count),
        "killed mid-analysis: {killed:#}"
    );
    let killed_runs = run_names(killed);

    // Every status replica-b wrote: never behind what replica-a left, same runs kept.
    let after: Vec<&Value> = canaries
        .iter()
        .filter(|(rv, _)| rv > takeover_rv)
        .map(|(_, o)| &o["status"])
        .collect();
    let first = after.first().expect("replica-b wrote the status");
    assert_eq!(first["currentStepIndex"], 1, "same step: {first:#}");
    assert_eq!(
        first["stepAnalysisRun"],
        run.as_str(),
        "same run: {first:#}"
    );
    for st in &after {
        assert!(
            st["currentStepIndex"].as_u64() >= killed["currentStepIndex"].as_u64(),
            "{st:#}"
        );
        assert!(
            count_of(st, &run) >= killed_count,
            "count went back: {st:#}"
        );
        assert_eq!(
            run_names(st)[..killed_runs.len()],
            killed_runs[..],
            "{st:#}"
        );
    }
    // The interrupted run finished with exactly its count: none lost, none repeated.
    let m = metric_of(&s, &run);
    assert_eq!(m["count"], 5, "{m:#}");
    assert_eq!(m["successful"], 5, "{m:#}");
    assert_eq!(count_of(&s, &run), 5, "{m:#}");
    assert_eq!(run_names(&s).len(), 3, "{s:#}");

    // Weights never went down, and no step's side effects happened twice.
    let all: Vec<i64> = c
        .history(VIRTUAL_SERVICES)
        .await
        .iter()
        .map(|(_, vs)| weights(vs).1)
        .collect();
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "{all:?}");
    assert_eq!(c.canary_weight_history().await, [0, 10, 30, 60, 100]);
    let events = c.events();
    let n = |r: &str| events.iter().filter(|(x, _)| x == r).count();
    assert_eq!(n("TrafficWeightUpdated"), 4, "{events:#?}");
    assert_eq!(n("RolloutStepCompleted"), 6, "{events:#?}");
    assert_eq!(n("RolloutUpdated"), 1, "one release run: {events:#?}");
    drop(b);
}

/// Every VirtualService version, in write order, exposes the canary no more than the Canary's
/// persisted `desiredWeight` at that moment: a daemon restarted from the persisted status
/// would otherwise lower the weight.
async fn assert_routes_never_ahead_of_the_saved_status(c: &Cluster) {
    let canaries = c.history(CANARIES).await;
    let vss = c.history(VIRTUAL_SERVICES).await;
    for (rv, vs) in &vss {
        let saved = canaries
            .iter()
            .rev()
            .find(|(c_rv, _)| c_rv < rv)
            .and_then(|(_, o)| o["status"]["desiredWeight"].as_i64())
            .unwrap_or(0);
        assert!(
            weights(vs).1 <= saved,
            "rv {rv}: canary weight {} while the saved status wants {saved}",
            weights(vs).1
        );
    }
}

/// Waits for the daemon's Event saying routing waits for the status to be saved.
async fn wait_held_for_status(c: &Cluster) {
    wait("routing held for the status", LIMIT, || {
        c.events()
            .iter()
            .any(|(reason, note)| {
                reason == "TrafficRoutingError" && note.contains("status could not be saved")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_status_outage_holds_the_weight_and_a_restart_never_lowers_it() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    let c = Cluster::start("Abort", 3).await;
    let mut a = c.daemon("replica-a", &running.url());
    c.wait_status("measuring step 1", |s| {
        s["currentStepIndex"] == 1 && !measurements(s).is_empty()
    })
    .await;
    // The status can no longer be written; the analysis passes and 30 % is wanted.
    c.fake.fail_next(Some("PUT"), "/canaries/", 1_000_000, 500);
    wait_held_for_status(&c).await;
    assert_eq!(c.weights(), (90, 10), "held at the saved step's weight");
    assert_eq!(c.status()["desiredWeight"], 10, "{:#}", c.status());

    // The daemon dies before it could save; its successor resumes from what was saved.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drop(a);
    c.fake.clear_faults();
    let b = c.daemon("replica-b", &running.url());
    c.wait_status("Promoted", |s| phase(s) == "Promoted").await;

    assert_eq!(c.canary_weight_history().await, [0, 10, 30, 60, 100]);
    assert_routes_never_ahead_of_the_saved_status(&c).await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_status_outage_still_rolls_back_and_saves_the_abort_once_it_can() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bad = failing.clone();
    let (_sim, running) = sim(move |_| {
        Some(if bad.load(std::sync::atomic::Ordering::SeqCst) {
            7000.0
        } else {
            9950.0
        })
    })
    .await;
    let c = Cluster::start("Abort", 5).await;
    let d = c.daemon("replica-a", &running.url());
    c.wait_status("measuring step 1", |s| {
        s["currentStepIndex"] == 1 && !measurements(s).is_empty()
    })
    .await;
    c.fake.fail_next(Some("PUT"), "/canaries/", 1_000_000, 500);
    failing.store(true, std::sync::atomic::Ordering::SeqCst);

    // Back at stable although the abort could not be saved: safety first.
    wait("back at stable", LIMIT, || {
        (c.weights() == (100, 0)).then_some(())
    })
    .await;
    assert_ne!(phase(&c.status()), "Aborted", "{:#}", c.status());

    // Once the API server takes writes again, the retry saves the abort with nothing else
    // happening.
    c.fake.clear_faults();
    let s = c.wait_status("Aborted", |s| phase(s) == "Aborted").await;
    assert_eq!(s["desiredWeight"], 0, "{s:#}");
    assert_eq!(c.canary_weight_history().await, [0, 10, 0]);
    assert_routes_never_ahead_of_the_saved_status(&c).await;
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_promote_abort_retry_need_the_token_and_work() {
    // No traffic: every analysis pauses Inconclusive, so only commands move the canary.
    let (_sim, running) = sim(|_| None).await;
    let c = Cluster::start("Abort", 2).await;
    let d = c.daemon("replica-a", &running.url());
    let paused_at = |step: u64| {
        move |s: &Value| {
            phase(s) == "Paused"
                && s["currentStepIndex"] == step
                && s["pause"]["reason"] == "Inconclusive"
        }
    };
    c.wait_status("paused at step 1", paused_at(1)).await;

    for action in ["promote", "abort", "retry", "promote?full=true"] {
        assert_eq!(post(&d, action, None).await, 401, "{action}");
        assert_eq!(post(&d, action, Some("wrong")).await, 401, "{action}");
    }
    let s = c.status();
    assert!(paused_at(1)(&s), "refused commands change nothing: {s:#}");
    assert_eq!(c.weights(), (90, 10));

    // promote: past the inconclusive analysis to 30 %, where the next one pauses again.
    assert_eq!(post(&d, "promote", Some(TOKEN)).await, 200);
    c.wait_status("paused at step 3", paused_at(3)).await;
    assert_eq!(c.weights(), (70, 30));

    // abort: the reply comes after the status and the rollback were written.
    assert_eq!(post(&d, "abort", Some(TOKEN)).await, 200);
    let s = c.status();
    assert_eq!(phase(&s), "Aborted", "{s:#}");
    assert_eq!(c.weights(), (100, 0));

    // retry: a new run from step 0 with new analysis runs.
    let runs_before = run_names(&c.status());
    assert_eq!(post(&d, "retry", Some(TOKEN)).await, 200);
    let s = c.wait_status("paused at step 1 again", paused_at(1)).await;
    assert_eq!(c.weights(), (90, 10));
    let runs_after = run_names(&s);
    assert!(
        runs_after.iter().any(|r| !runs_before.contains(r)),
        "{runs_before:?} → {runs_after:?}"
    );

    // promote --full: straight to the end.
    assert_eq!(post(&d, "promote?full=true", Some(TOKEN)).await, 200);
    c.wait_status("Promoted", |s| phase(s) == "Promoted").await;
    assert_eq!(c.weights(), (0, 100));
    assert_eq!(c.canary_weight_history().await, [0, 10, 30, 0, 10, 100]);
    c.wait_event("RolloutCompleted").await;
    let events = c.events();
    for reason in ["RolloutPromoted", "RolloutAborted", "RolloutRetried"] {
        assert!(events.iter().any(|(r, _)| r == reason), "{events:#?}");
    }
}

/// Deletes the Canary once it is paused at 10 % (no traffic: its first analysis pauses
/// Inconclusive) with `onDelete` as given (None: the default).
async fn delete_mid_release(on_delete: Option<&str>) -> (Cluster, Replica) {
    let (sim, running) = sim(|_| None).await;
    let c = Cluster::start("Abort", 2).await;
    if let Some(policy) = on_delete {
        c.fake
            .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
                o["spec"]["onDelete"] = json!(policy);
            })
            .unwrap();
    }
    let d = c.daemon("replica-a", &running.url());
    c.wait_status("Paused at 10 %", |s| phase(s) == "Paused")
        .await;
    assert_eq!(c.weights(), (90, 10));
    c.fake
        .delete("skycanary.io", "canaries", "bookinfo", "reviews")
        .unwrap();
    // The daemon has dropped the Canary once its API no longer lists it.
    let list = format!("{}/api/v1/canaries", d.url);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let v: Value = http()
            .get(&list)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !v.to_string().contains("\"reviews\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still listed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sim);
    (c, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_canary_deleted_mid_release_is_rolled_back_by_default() {
    let (c, d) = delete_mid_release(None).await;
    // Rolled back before its task stopped, with an event saying why.
    assert_eq!(c.weights(), (100, 0));
    assert_eq!(c.canary_weight_history().await, [0, 10, 0]);
    c.wait_event("RolloutAborted").await;
    assert!(
        c.events()
            .iter()
            .any(|(reason, note)| reason == "RolloutAborted" && note.contains("onDelete: Rollback")),
        "{:?}",
        c.events()
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_canary_deleted_with_on_delete_keep_keeps_its_routes() {
    let (c, d) = delete_mid_release(Some("Keep")).await;
    assert_eq!(c.weights(), (90, 10));
    assert_eq!(c.canary_weight_history().await, [0, 10]);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_an_alarm_while_status_and_routes_refuse_writes_is_503_until_the_rollback_lands() {
    let (_sim, running) = sim(|_| None).await;
    let c = Cluster::start("Abort", 2).await;
    c.fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["rollbackOn"] = json!({"alarms": [{"ruleName": "service_resp_time_rule"}]});
        })
        .unwrap();
    let d = c.daemon("replica-a", &running.url());
    c.wait_status("Paused at 10 %", |s| phase(s) == "Paused")
        .await;
    // Neither the status nor the VirtualService takes writes.
    c.fake.fail_next(Some("PUT"), "/canaries/", 1_000_000, 500);
    c.fake
        .fail_next(Some("PUT"), "/virtualservices/", 1_000_000, 500);
    let payload = json!([{"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo",
        "id0": "x", "id1": "", "ruleName": "service_resp_time_rule", "alarmMessage": "slow",
        "startTime": chrono::Utc::now().timestamp_millis(), "uuid": "u-kube-1"}]);
    let r = http()
        .post(format!("{}/webhooks/skywalking", d.url))
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    let code = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.to_string().contains("rollbackPending")
            && body.to_string().contains("rollback pending"),
        "{body}"
    );
    assert_eq!(c.weights(), (90, 10), "nothing written");

    // The routes take writes again (the status still does not): the retry lands on its own.
    c.fake.clear_faults();
    c.fake.fail_next(Some("PUT"), "/canaries/", 1_000_000, 500);
    wait("back at stable", LIMIT, || {
        (c.weights() == (100, 0)).then_some(())
    })
    .await;
    assert_ne!(
        phase(&c.status()),
        "Aborted",
        "the status still cannot be saved"
    );
    // And once the status can be written, the abort is saved.
    c.fake.clear_faults();
    let s = c.wait_status("Aborted", |s| phase(s) == "Aborted").await;
    assert_eq!(s["desiredWeight"], 0, "{s:#}");
    assert_eq!(c.canary_weight_history().await, [0, 10, 0]);
}

/// The condition of `type_` in a stored status.
fn condition<'a>(s: &'a Value, type_: &str) -> &'a Value {
    s["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// An edit the CRD schema admits but the daemon refuses (`startingStep` past the last step:
/// a cross-field rule no CEL rule covers) turns the Canary Invalid: `InvalidSpec` carries the
/// validate message with its field path, a Warning Event says so, and the status names the
/// generation it refused. The fixed spec drives again and the status follows its generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_an_invalid_edit_is_invalid_for_its_generation_until_fixed() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    let c = Cluster::start("Abort", 2).await;
    let _d = c.daemon("replica-a", &running.url());
    let s = c.wait_status("driven", |s| phase(s) == "Progressing").await;
    assert_eq!(s["observedGeneration"], 1, "{s:#}");

    let edited = c
        .fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["analysis"] = json!({"templates": [{"templateName": "apdex"}],
                "args": [{"name": "service", "value": "reviews.bookinfo"}], "startingStep": 9});
        })
        .unwrap();
    let generation = edited["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(generation, 2);
    let s = c
        .wait_status("Invalid", |s| {
            phase(s) == "Invalid" && s["observedGeneration"] == generation
        })
        .await;
    let inv = condition(&s, "InvalidSpec");
    assert_eq!(inv["status"], "True", "{s:#}");
    assert_eq!(inv["observedGeneration"], generation, "{s:#}");
    let message = inv["message"].as_str().unwrap();
    assert!(
        message.contains("spec.analysis.startingStep") && message.contains("step 9 does not exist"),
        "{s:#}"
    );
    assert_eq!(s["message"], message, "{s:#}");
    c.wait_event("InvalidSpec").await;
    let events = c.fake.events();
    let warning = events
        .iter()
        .find(|e| e["reason"] == "InvalidSpec")
        .unwrap();
    assert_eq!(warning["type"], "Warning", "{warning:#}");
    assert_eq!(warning["regarding"]["name"], "reviews", "{warning:#}");
    assert!(
        warning["note"]
            .as_str()
            .unwrap()
            .contains("spec.analysis.startingStep"),
        "{warning:#}"
    );

    // Fixed: driven again from where it stopped, the status written for the new generation.
    let fixed = c
        .fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["analysis"]["startingStep"] = json!(1);
        })
        .unwrap();
    let generation = fixed["metadata"]["generation"].as_i64().unwrap();
    assert_eq!(generation, 3);
    let s = c
        .wait_status("valid again", |s| {
            phase(s) != "Invalid" && s["observedGeneration"] == generation
        })
        .await;
    assert_eq!(condition(&s, "InvalidSpec")["status"], "False", "{s:#}");
    assert_eq!(
        condition(&s, "InvalidSpec")["observedGeneration"],
        generation,
        "{s:#}"
    );
}

/// The next release in cluster mode (docs/releases.md, host mode): after v2 is promoted onto
/// `reviews-canary`, an edit that only changes `revision` is held (still Promoted, the reason
/// in the status, nothing written); the edit that swaps the Services starts v3 on
/// `reviews-stable` from the promoted state. Over the API server's write history the canary
/// Service's weight never jumps: up to 100 % for v2, then down step by step as v3 rises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_next_release_is_held_until_the_services_swap_then_starts_from_the_promoted_state() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    let c = Cluster::start("Abort", 1).await;
    let _d = c.daemon("replica-a", &running.url());
    c.wait_status("v2 promoted", |s| phase(s) == "Promoted")
        .await;
    assert_eq!(c.weights(), (0, 100));

    c.fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["revision"] = json!("v3");
        })
        .unwrap();
    let s = c
        .wait_status("v3 held", |s| {
            s["message"]
                .as_str()
                .is_some_and(|m| m.contains("not starting revision \"v3\""))
        })
        .await;
    assert_eq!(phase(&s), "Promoted", "{s:#}");
    assert_eq!(s["revision"], "v2", "{s:#}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("swap stableService and canaryService"),
        "{s:#}"
    );
    assert_eq!(c.weights(), (0, 100));

    c.fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            let istio = &mut o["spec"]["trafficRouting"]["istio"];
            istio["stableService"] = json!("reviews-canary");
            istio["canaryService"] = json!("reviews-stable");
        })
        .unwrap();
    c.wait_status("v3 promoted", |s| {
        s["revision"] == "v3" && phase(s) == "Promoted"
    })
    .await;
    assert_eq!(c.weights(), (100, 0));
    assert_eq!(
        c.canary_weight_history().await,
        [0, 10, 30, 60, 100, 90, 70, 40, 0]
    );
}

/// Issue 14, item 1 in cluster mode: the analysis fails while `.status` refuses every write,
/// so the rollback lands in the VirtualService but the abort lives only in memory; then
/// SIGKILL. The saved status still says step 1 at 10 %: resuming from it would expose the
/// canary again. The next replica sees the rollback (routes at 0, and the rollback marker) and
/// aborts instead: the canary never gets traffic again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_an_unsaved_abort_survives_a_sigkill() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bad = failing.clone();
    let (_sim, running) = sim(move |_| {
        Some(if bad.load(std::sync::atomic::Ordering::SeqCst) {
            7000.0
        } else {
            9950.0
        })
    })
    .await;
    let c = Cluster::start("Abort", 5).await;
    let mut a = c.daemon("replica-a", &running.url());
    c.wait_status("measuring step 1", |s| {
        s["currentStepIndex"] == 1 && !measurements(s).is_empty()
    })
    .await;
    c.fake.fail_next(Some("PUT"), "/canaries/", 1_000_000, 500);
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    wait("back at stable", LIMIT, || {
        (c.weights() == (100, 0)).then_some(())
    })
    .await;
    let saved = c.status();
    assert_eq!(saved["currentStepIndex"], 1, "{saved:#}");
    assert_ne!(
        phase(&saved),
        "Aborted",
        "the abort is not saved: {saved:#}"
    );
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drop(a);
    c.fake.clear_faults();

    let b = c.daemon("replica-b", &running.url());
    let s = c.wait_status("Aborted", |s| phase(s) == "Aborted").await;
    assert_eq!(s["desiredWeight"], 0, "{s:#}");
    // Measurements go on failing, so any resumed step would write again; give it time to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(phase(&c.status()), "Aborted", "{:#}", c.status());
    assert_eq!(
        c.canary_weight_history().await,
        [0, 10, 0],
        "never exposed again"
    );
    drop(b);
}

/// Issue 14, item 1 in cluster mode, without a crash: the abort lives only in memory (`.status`
/// refuses writes) when a valid spec edit replaces the canary's task. The successor takes over
/// the in-memory abort, not the older saved step, so the canary is never exposed again, and the
/// abort is saved once `.status` takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_an_unsaved_abort_survives_a_spec_edit() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bad = failing.clone();
    let (_sim, running) = sim(move |_| {
        Some(if bad.load(std::sync::atomic::Ordering::SeqCst) {
            7000.0
        } else {
            9950.0
        })
    })
    .await;
    let c = Cluster::start("Abort", 5).await;
    let a = c.daemon("replica-a", &running.url());
    c.wait_status("measuring step 1", |s| {
        s["currentStepIndex"] == 1 && !measurements(s).is_empty()
    })
    .await;
    c.fake.fail_next(Some("PUT"), "/canaries/", 1_000_000, 500);
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    wait("back at stable", LIMIT, || {
        (c.weights() == (100, 0)).then_some(())
    })
    .await;
    assert_ne!(phase(&c.status()), "Aborted", "the abort is not saved");

    // A spec edit (same revision): one more step at the end. The daemon shows it once the
    // canary's task was replaced.
    c.fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["steps"]
                .as_array_mut()
                .unwrap()
                .push(json!({"pause": {"duration": "1s"}}));
        })
        .unwrap();
    let api = format!("{}/api/v1/canaries/bookinfo/reviews", a.url);
    let client = http();
    let mut steps = Value::Null;
    let deadline = std::time::Instant::now() + LIMIT;
    while steps != 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "edit never picked up: {steps}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(r) = client.get(&api).bearer_auth(TOKEN).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            steps = v["steps"].clone();
        }
    }
    // Measurements go on failing, so a successor resumed from the saved step would write
    // 10 % again before failing; give it time to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        c.canary_weight_history().await,
        [0, 10, 0],
        "never exposed again"
    );

    c.fake.clear_faults();
    let s = c.wait_status("Aborted", |s| phase(s) == "Aborted").await;
    assert_eq!(s["desiredWeight"], 0, "{s:#}");
    assert_eq!(c.canary_weight_history().await, [0, 10, 0]);
    drop(a);
}

/// Issue 14, item 3 in cluster mode: the crash came after the abort was saved and before its
/// write landed (the saved status says Aborted with the rollback write pending, the routes
/// still give the canary 10 %). The next replica writes the rollback first, not after the
/// pending write's 60 s result timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_rollback_saved_before_a_crash_is_written_first_at_restart() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    let c = Cluster::start("Abort", 5).await;
    let mut a = c.daemon("replica-a", &running.url());
    c.wait_status("measuring step 1", |s| {
        s["currentStepIndex"] == 1 && !measurements(s).is_empty()
    })
    .await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    drop(a);
    assert_eq!(c.weights(), (90, 10));

    // Written as the daemon writes it: through the status subresource.
    let now = chrono::Utc::now().to_rfc3339();
    let mut obj = c
        .fake
        .get("skycanary.io", "canaries", "bookinfo", "reviews")
        .unwrap();
    let saved = &mut obj["status"];
    let mut routing = saved["applied"].clone();
    assert!(routing.is_object(), "applied routing in {saved:#}");
    routing["canaryWeight"] = 0.into();
    saved["phase"] = "Aborted".into();
    saved["desiredWeight"] = 0.into();
    saved["abort"] = json!({"reason": "test: crash after the abort save", "at": now});
    saved["routingWrite"] = json!({"routing": routing, "requestedAt": now});
    let r = http()
        .put(format!("http://{}/{CANARIES}/reviews/status", c.addr))
        .json(&obj)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert_eq!(phase(&c.status()), "Aborted");

    let b = c.daemon("replica-b", &running.url());
    // Well under the 60 s after which a pending write is re-sent anyway.
    wait("the rollback write", Duration::from_secs(30), || {
        (c.weights() == (100, 0)).then_some(())
    })
    .await;
    let s = c
        .wait_status("the rollback confirmed", |s| {
            phase(s) == "Aborted" && s["routingWrite"].is_null()
        })
        .await;
    assert_eq!(s["desiredWeight"], 0, "{s:#}");
    assert_eq!(c.canary_weight_history().await, [0, 10, 0]);
    drop(b);
}

/// Issue 14, item 4 in cluster mode: without `--skywalking` the template (no address of its
/// own) cannot be planned, so the Canary is refused like an invalid one — phase Invalid, the
/// analysis field and what to add in its message — and never exposed. Once an edit makes it
/// plannable (the template gets an address) it is driven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_canary_whose_analyses_cannot_be_planned_is_refused_and_never_exposed() {
    let c = Cluster::start("Abort", 3).await;
    let a = c.daemon("replica-a", "");
    let s = c.wait_status("Invalid", |s| phase(s) == "Invalid").await;
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.steps[1].analysis")
            && message.contains("this analysis cannot run")
            && message.contains("--skywalking"),
        "{s:#}"
    );
    c.wait_event("InvalidSpec").await;
    // Well past the moment a driven canary would have written 10 %.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.weights(), (100, 0));
    assert_eq!(c.canary_weight_history().await, [0], "never exposed");

    let (_sim, running) = sim(|_| Some(9950.0)).await;
    c.fake
        .update(
            "skycanary.io",
            "analysistemplates",
            "bookinfo",
            "apdex",
            |o| {
                o["spec"]["metrics"][0]["provider"]["skywalking"]["address"] = json!(running.url());
            },
        )
        .unwrap();
    wait("driven once plannable", LIMIT, || {
        (c.weights() == (90, 10)).then_some(())
    })
    .await;
    drop(a);
}

/// Issue 19: cluster mode has no readiness source yet, so a canary gated on a workload is
/// never started (it would wait for readiness forever and abort at its deadline): it stays
/// Pending, says why, and gets no traffic. (File mode reads readiness from `--manifests`:
/// `daemon::a_file_mode_canary_waits_for_its_deployment_and_rolls_back_when_it_is_lost`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_canary_with_a_workload_ref_is_not_started_without_a_readiness_source() {
    let (_sim, running) = sim(|_| Some(9950.0)).await;
    let c = Cluster::start("Abort", 2).await;
    c.fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["workloadRef"] = json!({"kind": "Deployment", "name": "reviews-v2"});
        })
        .unwrap();
    let _d = c.daemon("replica-a", &running.url());
    let s = c
        .wait_status("the not-started message", |s| {
            s["message"].as_str().is_some_and(|m| {
                m.contains("spec.workloadRef (Deployment reviews-v2) needs a readiness source")
            })
        })
        .await;
    assert_eq!(phase(&s), "Pending", "{s:#}");
    assert!(s.get("startedAt").is_none(), "{s:#}");
    assert_eq!(c.weights(), (100, 0), "never exposed");
    assert_eq!(c.canary_weight_history().await, [0]);
}
