//! Drift (issue 15 item 9, DESIGN §5): another writer changes the weights a running canary
//! holds. The real daemon notices without a write of its own (file mode: a poll of the
//! manifests and a re-read before each decision; cluster mode: a watch of the
//! VirtualServices), records a `TrafficDrift` event and `skycanary_traffic_drift_total`, writes
//! the intended weights back, and the third drift in one step pauses the canary (reason Drift)
//! instead of fighting. Edits of anything the canary does not manage are left alone.
//!
//! The tests wait for each reaction up to a generous bound and print how long it took; they
//! assert that it happened, not how fast.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skycanary::testkit::{FakeApiServer, write_kubeconfig};

use super::daemon::{Daemon, TOKEN, http, setup, start_with, vs_weights};
use super::daemon_kube::{replica, wait};

/// Bounds a broken run only; detection takes about a second.
const LIMIT: Duration = Duration::from_secs(30);

const CANARY: &str = super::daemon::PAUSED_AT_20;

fn drifts(status: &Value) -> u64 {
    status["drifts"].as_u64().unwrap_or(0)
}

fn pause_reason(status: &Value) -> &str {
    status["pause"]["reason"].as_str().unwrap_or("")
}

/// The value of the sample `name{labels...}` in an OpenMetrics text, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let all = labels
            .iter()
            .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all { value.trim().parse().ok() } else { None }
    })
}

async fn metrics(url: &str) -> String {
    http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `skycanary_traffic_drift_total` and the `TrafficDrift` decisions of bookinfo/reviews.
async fn drift_counters(url: &str) -> (f64, f64) {
    let text = metrics(url).await;
    let canary = [("namespace", "bookinfo"), ("name", "reviews")];
    let drift = sample(
        &text,
        "skycanary_traffic_drift_total",
        &[canary[0], canary[1], ("virtual_service", "reviews")],
    );
    let decisions = sample(
        &text,
        "skycanary_decisions_total",
        &[canary[0], canary[1], ("reason", "TrafficDrift")],
    );
    (drift.unwrap_or(0.0), decisions.unwrap_or(0.0))
}

// ---- file mode ---------------------------------------------------------------------------

async fn file_status(d: &Daemon) -> Value {
    let v: Value = http()
        .get(format!("{}/api/v1/canaries/bookinfo/reviews", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["status"].clone()
}

async fn file_wait(d: &Daemon, what: &str, pred: impl Fn(&Value, (i64, i64)) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = file_status(d).await;
        if pred(&s, vs_weights(&d.manifests)) {
            return s;
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}; status {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Edits the VirtualService document as another tool would: read, change, write the whole
/// file back (as JSON, which is YAML), renamed into place so no half file is ever read.
fn edit_manifest(manifests: &Path, change: impl FnOnce(&mut Value)) {
    let path = manifests.join("reviews.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut vs = skycanary::resources::yaml::parse_documents(&text).unwrap()[0]
        .value
        .clone();
    change(&mut vs);
    let tmp = manifests.join(".reviews.yaml.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&vs).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn read_manifest(manifests: &Path) -> Value {
    let text = std::fs::read_to_string(manifests.join("reviews.yaml")).unwrap();
    skycanary::resources::yaml::parse_documents(&text).unwrap()[0]
        .value
        .clone()
}

/// What another team changes that the canary does not manage: a route of theirs, the managed
/// route's timeout, a header rule on the stable destination.
fn unmanaged_edit(vs: &mut Value) {
    vs["spec"]["http"][0]["timeout"] = json!("7s");
    vs["spec"]["http"][0]["route"][0]["headers"] =
        json!({"request": {"set": {"x-version": "stable"}}});
    vs["spec"]["http"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "legacy", "route": [{"destination": {"host": "reviews-legacy"}}]}));
}

fn unmanaged_edit_kept(vs: &Value) -> bool {
    vs["spec"]["http"][0]["timeout"] == "7s"
        && vs["spec"]["http"][0]["route"][0]["headers"]["request"]["set"]["x-version"] == "stable"
        && vs["spec"]["http"][1]["name"] == "legacy"
}

fn set_weights(vs: &mut Value, stable: i64, canary: i64) {
    vs["spec"]["http"][0]["route"][0]["weight"] = json!(stable);
    vs["spec"]["http"][0]["route"][1]["weight"] = json!(canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_drift_is_corrected_counted_and_pauses_when_repeated() {
    let d = start_with(setup(CANARY), "", &[]);
    file_wait(&d, "paused at 20 %", |s, w| {
        s["phase"] == "Paused" && w == (80, 20)
    })
    .await;

    // Another team's edit of what the canary does not manage.
    edit_manifest(&d.manifests, unmanaged_edit);
    // A command is a decision: the routes are re-read before it (refused here, harmlessly).
    let refused = http()
        .post(format!("{}/api/v1/canaries/bookinfo/reviews/retry", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let s = file_status(&d).await;
    assert_eq!(drifts(&s), 0, "an unmanaged edit is no drift: {s:#}");
    assert_eq!(drift_counters(&d.url).await, (0.0, 0.0));

    // Someone sets the weights back to stable (Argo CD self-heal from Git, say): twice
    // corrected, the third time in this step the canary stops fighting.
    for n in 1..=3u64 {
        edit_manifest(&d.manifests, |vs| set_weights(vs, 100, 0));
        let edited = Instant::now();
        let s = file_wait(&d, &format!("drift {n}"), |s, _| drifts(s) == n).await;
        eprintln!(
            "file mode: drift {n} detected {} ms after the edit",
            edited.elapsed().as_millis()
        );
        if n < 3 {
            file_wait(&d, "the weights written back", |_, w| w == (80, 20)).await;
        } else {
            assert_eq!(s["phase"], "Paused", "{s:#}");
            assert_eq!(pause_reason(&s), "Drift", "{s:#}");
            assert!(
                s["message"].as_str().unwrap_or("").contains("3 times"),
                "{s:#}"
            );
            assert_eq!(vs_weights(&d.manifests), (100, 0), "not fought any more");
        }
        assert!(
            unmanaged_edit_kept(&read_manifest(&d.manifests)),
            "{:#}",
            read_manifest(&d.manifests)
        );
        assert_eq!(drift_counters(&d.url).await, (n as f64, n as f64));
    }
}

// ---- cluster mode ------------------------------------------------------------------------

fn seed_cluster(fake: &FakeApiServer) {
    fake.seed(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "timeout": "5s", "route": [
            {"destination": {"host": "reviews-stable"}, "weight": 100},
            {"destination": {"host": "reviews-canary"}, "weight": 0}]}]}
    }))
    .unwrap();
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2",
            "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
            "steps": [{"setWeight": 20}, {"pause": {}}]}
    }))
    .unwrap();
}

fn cluster_weights(fake: &FakeApiServer) -> (i64, i64) {
    let vs = fake.virtual_service("bookinfo", "reviews").unwrap();
    let r = &vs["spec"]["http"][0]["route"];
    (
        r[0]["weight"].as_i64().unwrap_or(0),
        r[1]["weight"].as_i64().unwrap_or(0),
    )
}

fn cluster_status(fake: &FakeApiServer) -> Value {
    fake.get("skycanary.io", "canaries", "bookinfo", "reviews")
        .map(|c| c["status"].clone())
        .unwrap_or(Value::Null)
}

fn edit_cluster(fake: &FakeApiServer, change: impl FnOnce(&mut Value)) {
    fake.update(
        "networking.istio.io",
        "virtualservices",
        "bookinfo",
        "reviews",
        change,
    )
    .unwrap();
}

/// The notes of the TrafficDrift Events, and how many drifts they record in all: an identical
/// repeat raises the first Event's `series.count` instead of adding one.
fn drift_events(fake: &FakeApiServer) -> (Vec<String>, u64) {
    let events: Vec<Value> = fake
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "TrafficDrift")
        .collect();
    let total = events
        .iter()
        .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
        .sum();
    let notes = events
        .iter()
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect();
    (notes, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_drift_is_seen_by_the_watch_corrected_counted_and_pauses_when_repeated() {
    skycanary::testkit::install_crypto_provider();
    let fake = FakeApiServer::new();
    seed_cluster(&fake);
    let (addr, _server) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_kubeconfig(addr, &dir.path().join("kubeconfig")).unwrap();
    std::fs::write(dir.path().join("token"), "drift-token\n").unwrap();
    // No analysis in this canary: the OAP is never asked.
    let r = replica(
        "drift",
        &dir.path().join("kubeconfig"),
        &dir.path().join("token"),
        "http://127.0.0.1:9",
    );
    wait("paused at 20 %", LIMIT, || {
        (cluster_status(&fake)["phase"] == "Paused" && cluster_weights(&fake) == (80, 20))
            .then_some(())
    })
    .await;

    // An unmanaged edit: the daemon reads the VirtualService when the watch reports it, and
    // finds nothing to correct (the managed edit below is then the first drift, not the
    // second).
    fake.clear_requests();
    edit_cluster(&fake, |vs| {
        vs["spec"]["http"][0]["timeout"] = json!("7s");
        vs["metadata"]["labels"] = json!({"team": "books"});
    });
    wait("the daemon to re-read the VirtualService", LIMIT, || {
        fake.requests()
            .iter()
            .any(|q| q.method == "GET" && q.path.ends_with("/virtualservices/reviews"))
            .then_some(())
    })
    .await;

    for n in 1..=3u64 {
        edit_cluster(&fake, |vs| {
            vs["spec"]["http"][0]["route"][0]["weight"] = json!(100);
            vs["spec"]["http"][0]["route"][1]["weight"] = json!(0);
        });
        let edited = Instant::now();
        let s = wait(&format!("drift {n}"), LIMIT, || {
            let s = cluster_status(&fake);
            (drifts(&s) == n).then_some(s)
        })
        .await;
        eprintln!(
            "cluster mode: drift {n} detected {} ms after the edit",
            edited.elapsed().as_millis()
        );
        if n < 3 {
            wait("the weights written back", LIMIT, || {
                (cluster_weights(&fake) == (80, 20)).then_some(())
            })
            .await;
        } else {
            assert_eq!(s["phase"], "Paused", "{s:#}");
            assert_eq!(pause_reason(&s), "Drift", "{s:#}");
            assert_eq!(cluster_weights(&fake), (100, 0), "not fought any more");
        }
        // Events are written after the status that caused them.
        let events = wait("the TrafficDrift event", LIMIT, || {
            let (notes, total) = drift_events(&fake);
            (total == n).then_some(notes)
        })
        .await;
        // The same drift each time: one Event, its series counting the repeats.
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            events[0].contains("VirtualService reviews")
                && events[0].contains("stable 100, canary 0 (intended 80, 20)"),
            "{events:?}"
        );
        assert_eq!(drift_counters(&r.url).await, (n as f64, n as f64));
        let vs = fake.virtual_service("bookinfo", "reviews").unwrap();
        assert_eq!(vs["spec"]["http"][0]["timeout"], "7s", "{vs:#}");
        assert_eq!(vs["metadata"]["labels"]["team"], "books", "{vs:#}");
    }
}

/// Issue 17 item 7: the daemon's Canary watch (kube-runtime's watcher) finds its version
/// compacted away while it was reconnecting: it relists (410 Expired) and still sees the spec
/// change made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_sees_a_spec_change_made_while_its_watch_expired() {
    skycanary::testkit::install_crypto_provider();
    let fake = FakeApiServer::new();
    seed_cluster(&fake);
    let (addr, _server) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_kubeconfig(addr, &dir.path().join("kubeconfig")).unwrap();
    std::fs::write(dir.path().join("token"), "drift-token\n").unwrap();
    let _r = replica(
        "relist",
        &dir.path().join("kubeconfig"),
        &dir.path().join("token"),
        "http://127.0.0.1:9",
    );
    wait("paused at 20 %", LIMIT, || {
        (cluster_status(&fake)["phase"] == "Paused" && cluster_weights(&fake) == (80, 20))
            .then_some(())
    })
    .await;
    assert_eq!(cluster_status(&fake)["observedGeneration"], 1);
    let lists = || {
        fake.requests()
            .iter()
            .filter(|q| {
                q.method == "GET"
                    && q.path.ends_with("/canaries")
                    && !q.query.as_deref().unwrap_or_default().contains("watch=")
            })
            .count()
    };
    let before = lists();
    // The re-watches are held until the change and the compaction are done.
    fake.delay_next(Some("GET"), "watch=", 8, Duration::from_millis(300));
    fake.drop_watches();
    fake.update("skycanary.io", "canaries", "bookinfo", "reviews", |c| {
        c["spec"]["steps"]
            .as_array_mut()
            .expect("steps")
            .push(json!({"setWeight": 50}));
    })
    .unwrap();
    fake.compact();
    wait("the change seen (observedGeneration 2)", LIMIT, || {
        (cluster_status(&fake)["observedGeneration"] == 2).then_some(())
    })
    .await;
    assert!(lists() > before, "410 must relist");
    assert_eq!(cluster_status(&fake)["phase"], "Paused");
}
