//! Notifications end to end: the real daemon (file mode) with `--notifications`, the simulator
//! as its OAP, and loopback receivers on 127.0.0.1:0 — a signed webhook that fails at first, a
//! Slack-compatible one, and a black hole that accepts connections and never answers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use skycanary::notify::payload::verify;

use super::daemon::{canary, phase, setup, sim_with_apdex, start_with, wait_for};

const SECRET: &str = "notify-test-secret";

/// One request a receiver got: path, headers, body, and the status it answered.
#[derive(Clone)]
struct Got {
    path: String,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
    status: u16,
}

type Log = Arc<Mutex<Vec<Got>>>;

/// A receiver serving `/hook` and `/slack`; the first statuses of `/hook` come from `fail`.
async fn receiver(fail: Vec<u16>) -> (String, Log) {
    let log: Log = Arc::default();
    let fail = Arc::new(Mutex::new(VecDeque::from(fail)));
    let handler = {
        let log = log.clone();
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let log = log.clone();
            let fail = fail.clone();
            async move {
                let path = uri.path().to_string();
                let status = if path == "/hook" {
                    fail.lock().unwrap().pop_front().unwrap_or(200)
                } else {
                    200
                };
                log.lock().unwrap().push(Got {
                    path,
                    headers,
                    body,
                    status,
                });
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handler.clone()))
        .route("/slack", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, log)
}

/// Accepts connections and never answers; counts them.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (url, accepted)
}

/// The daemon's test Canary, subscribing `ops` to everything and `team` (Slack) to its end.
fn subscribed_canary() -> String {
    canary("Abort").replacen(
        "\n---\n",
        "\n  notifications:\n  - sink: ops\n  - sink: team\n    events: [promoted, aborted]\n---\n",
        1,
    )
}

/// Writes the notifications file (and its secret) next to the daemon's directories.
fn notifications_file(dirs: &tempfile::TempDir, hook: &str, slack: &str, extra: &str) -> String {
    let secret = dirs.path().join("hook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let path = dirs.path().join("notifications.yaml");
    std::fs::write(
        &path,
        format!(
            "sinks:\n- name: ops\n  type: webhook\n  url: {hook}\n  secretFile: {}\n{extra}- name: team\n  type: slack\n  url: {slack}\ndelivery: {{maxAttempts: 5, initialBackoff: 50ms, maxBackoff: 200ms}}\n",
            secret.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Waits (bounded) until `pred` holds on the log.
async fn until(log: &Log, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let start = Instant::now();
    loop {
        let got = log.lock().unwrap().clone();
        if pred(&got) {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; got {:#?}",
            got.iter()
                .map(|g| (g.path.clone(), g.status, json(g)["id"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json(g: &Got) -> Value {
    serde_json::from_slice(&g.body).unwrap_or(Value::Null)
}

fn event(g: &Got) -> String {
    g.headers["x-skycanary-event"].to_str().unwrap().to_string()
}

/// Every `/hook` request is signed; the accepted ones, one per id (a retry repeats the id
/// and the bytes of the attempt it retries), in order.
fn accepted_once(got: &[Got]) -> Vec<Value> {
    let hooks: Vec<&Got> = got.iter().filter(|g| g.path == "/hook").collect();
    for g in &hooks {
        let sig = g.headers["x-skycanary-signature"].to_str().unwrap();
        assert!(
            verify(SECRET.as_bytes(), &g.body, sig),
            "bad signature on {:?}",
            json(g)["id"]
        );
        assert_eq!(
            g.headers["x-skycanary-delivery"].to_str().unwrap(),
            json(g)["id"].as_str().unwrap()
        );
        assert_eq!(json(g)["schema"], "skycanary.io/notification/v1");
    }
    let ok: Vec<Value> = hooks
        .iter()
        .filter(|g| g.status == 200)
        .map(|g| json(g))
        .collect();
    let mut ids: Vec<&str> = ok.iter().map(|v| v["id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id was accepted twice: {ok:#?}");
    // Every failed attempt was retried with the same id and bytes until accepted.
    for failed in hooks.iter().filter(|g| g.status != 200) {
        assert!(
            hooks
                .iter()
                .any(|g| g.status == 200 && g.body == failed.body),
            "a failed delivery was not retried with the same body"
        );
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_run_notifies_each_transition_once_signed_with_retries_deduplicated() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let (url, log) = receiver(vec![500, 503]).await;
    let dirs = setup(&subscribed_canary());
    let file = notifications_file(&dirs, &format!("{url}/hook"), &format!("{url}/slack"), "");
    let d = start_with(dirs, &running.url(), &["--notifications", &file]);
    wait_for(&d, "Promoted", Duration::from_secs(60), |s| {
        phase(s) == "Promoted"
    })
    .await;
    let got = until(&log, "promoted on both sinks", |got| {
        got.iter()
            .filter(|g| event(g) == "promoted" && g.status == 200)
            .count()
            == 2
    })
    .await;
    let ok = accepted_once(&got);
    let events: Vec<&str> = ok.iter().map(|v| v["event"].as_str().unwrap()).collect();
    // Steps 2..6 of 6 reached (step 1 is the start), the 1s pause step (step 4), the end.
    assert_eq!(
        events,
        [
            "started",
            "stepReached",
            "stepReached",
            "stepReached",
            "paused",
            "stepReached",
            "stepReached",
            "promoted"
        ]
    );
    let steps: Vec<u64> = ok
        .iter()
        .filter(|v| v["event"] == "stepReached" || v["event"] == "paused")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 3, 4, 4, 5, 6]);
    // The first delivery failed twice and was accepted at the third attempt, same id.
    let first: Vec<&Got> = got.iter().filter(|g| g.path == "/hook").take(3).collect();
    assert_eq!(
        first.iter().map(|g| g.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    assert!(first.iter().all(|g| json(g)["id"] == ok[0]["id"]));
    let started = &ok[0];
    assert_eq!(started["kind"], "Canary");
    assert_eq!(
        (started["namespace"].as_str(), started["name"].as_str()),
        (Some("bookinfo"), Some("reviews"))
    );
    assert!(
        started["id"]
            .as_str()
            .unwrap()
            .starts_with("Canary/bookinfo/reviews/v2@"),
        "{started}"
    );
    // Slack got only what `team` subscribed to, as text + blocks.
    let slack: Vec<Value> = got
        .iter()
        .filter(|g| g.path == "/slack")
        .map(json)
        .collect();
    assert_eq!(slack.len(), 1, "{slack:#?}");
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .contains("bookinfo/reviews")
    );
    assert_eq!(slack[0]["blocks"][0]["type"], "header");
    // A little later nothing was sent twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    accepted_once(&log.lock().unwrap());
    let metrics = super::daemon::http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent = format!(
        r#"skycanary_notifications_sent_total{{sink="ops"}} {}"#,
        ok.len()
    );
    assert!(metrics.contains(&sent), "{sent} in {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_is_notified_after_its_rollback_with_the_evidence() {
    let (_sim, running) = sim_with_apdex(|_| Some(7000.0)).await;
    let (url, log) = receiver(vec![]).await;
    let dirs = setup(&subscribed_canary());
    let file = notifications_file(&dirs, &format!("{url}/hook"), &format!("{url}/slack"), "");
    let d = start_with(dirs, &running.url(), &["--notifications", &file]);
    let got = until(&log, "aborted on both sinks", |got| {
        got.iter().filter(|g| event(g) == "aborted").count() == 2
    })
    .await;
    // Announced only once written: the weights are back at stable by now.
    assert_eq!(super::daemon::vs_weights(&d.manifests), (100, 0));
    let ok = accepted_once(&got);
    let aborted = ok.iter().find(|v| v["event"] == "aborted").unwrap();
    assert_eq!(aborted["phase"], "Aborted");
    let ev = &aborted["evidence"];
    assert_eq!(ev["metric"], "apdex", "{ev:#}");
    assert!(ev["value"].as_str().unwrap().contains("7000"), "{ev:#}");
    assert_eq!(ev["condition"], "min(result) >= 9900", "{ev:#}");
    let cond = &ev["measurement"]["conditions"][0];
    assert_eq!(
        (cond["operator"].as_str(), cond["threshold"].as_f64()),
        (Some(">="), Some(9900.0)),
        "{ev:#}"
    );
    assert!(
        ev["measurement"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == 7000.0),
        "{ev:#}"
    );
    assert!(ev["analysisRun"].as_str().is_some(), "{ev:#}");
    let slack = got.iter().find(|g| g.path == "/slack").map(json).unwrap();
    let fields = slack["blocks"][2]["fields"].to_string();
    assert!(
        fields.contains("apdex") && fields.contains("9900"),
        "{slack:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_receiver_delays_no_rollback() {
    let (_sim, running) = sim_with_apdex(|_| Some(7000.0)).await;
    let (hole, accepted) = black_hole().await;
    let (url, _log) = receiver(vec![]).await;
    let dirs = setup(&subscribed_canary());
    // One attempt that hangs for 5 minutes: the `started` notification is stuck in flight
    // for the whole test, and everything after it waits in the queue.
    let file = notifications_file(&dirs, &hole, &format!("{url}/slack"), "  timeout: 300s\n");
    let file_text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("maxAttempts: 5", "maxAttempts: 1");
    std::fs::write(&file, file_text).unwrap();
    let d = start_with(dirs, &running.url(), &["--notifications", &file]);
    let s = wait_for(&d, "Aborted and written", Duration::from_secs(60), |s| {
        phase(s) == "Aborted" && s["status"].get("routingWrite").is_none()
    })
    .await;
    assert_eq!(super::daemon::vs_weights(&d.manifests), (100, 0), "{s:#}");
    // The webhook sink is still holding its first notification: nothing was sent or given up.
    assert!(accepted.load(Ordering::SeqCst) >= 1);
    let metrics = super::daemon::http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in ["sent", "failed"] {
        assert!(
            !metrics.contains(&format!(
                r#"skycanary_notifications_{family}_total{{sink="ops"}}"#
            )),
            "{family}: {metrics}"
        );
    }
}

#[test]
fn a_subscription_to_an_undefined_sink_is_refused_at_start() {
    let dirs = setup(&subscribed_canary());
    let file = dirs.path().join("n.yaml");
    // The daemon started on `file`: it refuses to run (exit 4) with what is wrong.
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(["run", "--config"])
            .arg(dirs.path().join("config"))
            .arg("--manifests")
            .arg(dirs.path().join("istio"))
            .arg("--state-dir")
            .arg(dirs.path().join("state"))
            .args([
                "--skywalking",
                "http://127.0.0.1:9",
                "--insecure-api",
                "--listen",
                "127.0.0.1:0",
                "--notifications",
            ])
            .arg(&file)
            .output()
            .unwrap()
    };
    std::fs::write(
        &file,
        "sinks:\n- {name: ops, type: slack, url: 'http://127.0.0.1:9/x'}\n",
    )
    .unwrap();
    let out = start();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canary.yaml:")
            && err.contains("spec.notifications[1].sink: no sink \"team\""),
        "{err}"
    );
    // A broken notifications file names its line and field.
    std::fs::write(
        &file,
        "sinks:\n- name: ops\n  type: webhook\n  url: http://127.0.0.1:9/x\n",
    )
    .unwrap();
    let out = start();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("n.yaml:2: sinks[0].secretFile: give exactly one of secretFile, secretEnv"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scheduled_run_notifies_the_rollback_then_the_run() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = healthy.clone();
    let (_sim, running) = sim_with_apdex(move |_| {
        Some(if h.load(Ordering::SeqCst) {
            9950.0
        } else {
            7000.0
        })
    })
    .await;
    let (url, log) = receiver(vec![]).await;
    let yaml = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    istio:
      virtualService: {name: reviews, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 50
  notifications: [{sink: ops, events: [rolledBack]}]
---
apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex, namespace: bookinfo}
spec:
  args: [{name: service}]
  metrics:
  - name: apdex
    successCondition: "min(result) >= 9900"
    provider:
      skywalking:
        window: 3m
        timeout: 2s
        metric: service_apdex
        entity: {serviceName: "{{args.service}}"}
---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {name: apdex-check, namespace: bookinfo}
spec:
  schedule: "*/2 * * * * *"
  templates: [{templateName: apdex}]
  args: [{name: service, value: reviews.bookinfo}]
  onFailure:
    rollback: {canary: reviews}
  notifications: [{sink: ops, events: [runFailed]}]
"#;
    let dirs = setup(yaml);
    let file = notifications_file(&dirs, &format!("{url}/hook"), &format!("{url}/slack"), "");
    let d = start_with(dirs, &running.url(), &["--notifications", &file]);
    wait_for(&d, "Promoted", Duration::from_secs(60), |s| {
        phase(s) == "Promoted"
    })
    .await;
    healthy.store(false, Ordering::SeqCst);
    let got = until(&log, "rolledBack and runFailed", |got| {
        let e: Vec<String> = got.iter().map(event).collect();
        e.iter().any(|e| e == "rolledBack") && e.iter().any(|e| e == "runFailed")
    })
    .await;
    let ok = accepted_once(&got);
    let events: Vec<&str> = ok.iter().map(|v| v["event"].as_str().unwrap()).collect();
    // The rollback the run asked for is handled (and announced) before the run's verdict.
    assert_eq!(events[0], "rolledBack", "{events:?}");
    assert!(events[1..].iter().all(|e| *e == "runFailed"), "{events:?}");
    let rb = &ok[0];
    assert_eq!(rb["evidence"]["metric"], "apdex", "{rb:#}");
    let run = &ok[1];
    assert_eq!(run["kind"], "ScheduledAnalysis");
    assert!(
        run["id"]
            .as_str()
            .unwrap()
            .starts_with("ScheduledAnalysis/bookinfo/apdex-check/apdex-check-"),
        "{run:#}"
    );
    assert!(
        run["id"].as_str().unwrap().ends_with("/runFailed"),
        "{run:#}"
    );
    assert_eq!(
        run["evidence"]["condition"], "min(result) >= 9900",
        "{run:#}"
    );
    assert!(
        run["evidence"]["value"].as_str().unwrap().contains("7000"),
        "{run:#}"
    );
}
