use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::{Value, json};

use super::payload::{delivery_id, sign, slack_message, verify, webhook_body};
use super::*;
use crate::canary::{AbortStatus, PauseStatus};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
}

fn running(step: u32, weight: i64) -> CanaryStatus {
    CanaryStatus {
        phase: CanaryPhase::Progressing,
        revision: Some("v2".into()),
        current_step_index: step,
        desired_weight: weight,
        started_at: Some(t(0)),
        ..Default::default()
    }
}

fn events(ns: &[Notification]) -> Vec<(NotifyEvent, String)> {
    ns.iter().map(|n| (n.event, n.id.clone())).collect()
}

const RUN: &str = "v2@2027-01-15T08:00:00.000Z";

#[test]
fn a_release_walk_produces_each_transition_once_with_stable_ids() {
    let pending = CanaryStatus::default();
    let s0 = running(0, 10);
    let start = canary_transitions("prod", "web", 3, &pending, &s0, t(0));
    assert_eq!(
        events(&start),
        [(
            NotifyEvent::Started,
            format!("Canary/prod/web/{RUN}/started")
        )]
    );
    // The same status again (a re-save, a routing result that changes nothing notable).
    assert!(canary_transitions("prod", "web", 3, &s0, &s0, t(1)).is_empty());
    let s1 = running(1, 30);
    let step = canary_transitions("prod", "web", 3, &s0, &s1, t(2));
    assert_eq!(
        events(&step),
        [(
            NotifyEvent::StepReached,
            format!("Canary/prod/web/{RUN}/stepReached/2")
        )]
    );
    assert_eq!(
        (step[0].step, step[0].steps, step[0].weight),
        (Some(2), Some(3), Some(30))
    );
    let mut waiting = running(2, 30);
    waiting.phase = CanaryPhase::Paused;
    waiting.pause = Some(PauseStatus {
        reason: PauseReason::Step,
        since: t(3),
        until: None,
        message: Some("pause step".into()),
    });
    let w = canary_transitions("prod", "web", 3, &s1, &waiting, t(3));
    assert_eq!(
        events(&w),
        [
            (
                NotifyEvent::StepReached,
                format!("Canary/prod/web/{RUN}/stepReached/3")
            ),
            (
                NotifyEvent::WaitingForPromotion,
                format!("Canary/prod/web/{RUN}/waitingForPromotion/2027-01-15T08:00:03.000Z")
            ),
        ]
    );
    // A timed pause is `paused`, with its end.
    let mut timed = waiting.clone();
    timed.pause = Some(PauseStatus {
        reason: PauseReason::Step,
        since: t(4),
        until: Some(t(64)),
        message: None,
    });
    let p = canary_transitions("prod", "web", 3, &waiting, &timed, t(4));
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].event, p[0].pause_until),
        (NotifyEvent::Paused, Some(t(64)))
    );
    // Promoted, but its write still in flight: not yet.
    let mut promoting = running(3, 100);
    promoting.phase = CanaryPhase::Promoted;
    promoting.routing_write = Some(crate::canary::RoutingWrite {
        routing: crate::traffic::DesiredRouting::weight(100),
        requested_at: t(5),
        retry_at: None,
        error: None,
        failures: 0,
    });
    assert!(canary_transitions("prod", "web", 3, &waiting, &promoting, t(5)).is_empty());
    let mut promoted = promoting.clone();
    promoted.routing_write = None;
    let done = canary_transitions("prod", "web", 3, &promoting, &promoted, t(6));
    assert_eq!(
        events(&done),
        [(
            NotifyEvent::Promoted,
            format!("Canary/prod/web/{RUN}/promoted")
        )]
    );
    assert!(canary_transitions("prod", "web", 3, &promoted, &promoted, t(7)).is_empty());
}

fn failed_run() -> crate::canary::AnalysisRunStatus {
    serde_json::from_value(json!({
        "name": "web-v2-step-1",
        "kind": {"type": "step", "index": 1},
        "templates": ["apdex"],
        "status": {
            "phase": "Failed",
            "startedAt": "2027-01-15T08:00:00Z",
            "metricResults": [{
                "name": "apdex",
                "phase": "Failed",
                "measurements": [{
                    "phase": "Failed",
                    "value": "[7000]",
                    "startedAt": "2027-01-15T08:00:01Z",
                    "finishedAt": "2027-01-15T08:00:02Z",
                    "evidence": {
                        "values": [7000.0],
                        "conditions": [{
                            "kind": "success",
                            "expression": "min(result) >= 9900",
                            "holds": false,
                            "decided": true,
                            "operator": ">=",
                            "threshold": 9900.0
                        }]
                    }
                }]
            }]
        }
    }))
    .unwrap()
}

fn aborted(written: bool) -> CanaryStatus {
    let mut s = running(1, 0);
    s.phase = CanaryPhase::Aborted;
    s.analysis_runs = vec![failed_run()];
    s.abort = Some(AbortStatus {
        reason: "metric apdex failed".into(),
        metric: Some("apdex".into()),
        value: Some("[7000]".into()),
        condition: Some("min(result) >= 9900".into()),
        alarm: None,
        not_ready: None,
        at: t(9),
    });
    if !written {
        s.routing_write = Some(crate::canary::RoutingWrite {
            routing: crate::traffic::DesiredRouting::weight(0),
            requested_at: t(9),
            retry_at: None,
            error: None,
            failures: 0,
        });
    }
    s
}

#[test]
fn an_abort_is_announced_once_its_rollback_is_written_with_typed_evidence() {
    let before = running(1, 30);
    // Decided, not written: nothing yet (never reported before it is written).
    assert!(canary_transitions("prod", "web", 3, &before, &aborted(false), t(9)).is_empty());
    let n = canary_transitions("prod", "web", 3, &aborted(false), &aborted(true), t(10));
    assert_eq!(
        events(&n),
        [(
            NotifyEvent::Aborted,
            format!("Canary/prod/web/{RUN}/aborted")
        )]
    );
    let ev = n[0].evidence.as_ref().unwrap();
    assert_eq!(ev.metric.as_deref(), Some("apdex"));
    assert_eq!(ev.analysis_run.as_deref(), Some("web-v2-step-1"));
    assert_eq!(ev.condition.as_deref(), Some("min(result) >= 9900"));
    let m = ev.measurement.as_ref().unwrap();
    assert_eq!(m.values, [7000.0]);
    assert_eq!(ev.threshold_text().as_deref(), Some(">= 9900"));
    // The payload carries it typed.
    let body: Value = serde_json::from_slice(&webhook_body(&n[0])).unwrap();
    assert_eq!(body["schema"], SCHEMA);
    assert_eq!(
        body["evidence"]["measurement"]["conditions"][0]["threshold"],
        9900.0
    );
    assert_eq!(
        body["evidence"]["measurement"]["conditions"][0]["operator"],
        ">="
    );
    assert_eq!(body["event"], "aborted");
    // A later save of the same aborted status says nothing more.
    assert!(canary_transitions("prod", "web", 3, &aborted(true), &aborted(true), t(11)).is_empty());
    // Resumed at restart with the rollback pending: announced once it lands.
    let resumed = canary_transitions("prod", "web", 3, &aborted(false), &aborted(true), t(12));
    assert_eq!(resumed[0].id, n[0].id);
}

#[test]
fn a_rollback_after_promotion_is_rolled_back() {
    let mut promoted = running(3, 100);
    promoted.phase = CanaryPhase::Promoted;
    let mut rb = aborted(true);
    rb.phase = CanaryPhase::RolledBack;
    let n = canary_transitions("prod", "web", 3, &promoted, &rb, t(20));
    assert_eq!(
        events(&n),
        [(
            NotifyEvent::RolledBack,
            format!("Canary/prod/web/{RUN}/rolledBack")
        )]
    );
    assert!(n[0].evidence.is_some());
}

#[test]
fn scheduled_runs_and_invalid_specs_have_their_own_ids() {
    let run = crate::schedule::model::ScheduledRun {
        name: "nightly-1800000000".into(),
        trigger: crate::schedule::model::RunTrigger::Schedule,
        scheduled_time: None,
        status: failed_run().status,
        actions: Vec::new(),
    };
    let n = scheduled_run_finished("prod", "nightly", &run, t(0)).unwrap();
    assert_eq!(n.event, NotifyEvent::RunFailed);
    assert_eq!(
        n.id,
        "ScheduledAnalysis/prod/nightly/nightly-1800000000/runFailed"
    );
    let ev = n.evidence.unwrap();
    assert_eq!(ev.metric.as_deref(), Some("apdex"));
    assert_eq!(ev.condition.as_deref(), Some("min(result) >= 9900"));
    let a = invalid_spec("Canary", "prod", "web", None, "spec.steps: bad", t(0));
    let b = invalid_spec("Canary", "prod", "web", None, "spec.steps: worse", t(0));
    assert_ne!(a.id, b.id);
    assert!(
        a.id.starts_with("Canary/prod/web/invalidSpec/sha256-"),
        "{}",
        a.id
    );
    assert_eq!(
        invalid_spec("ScheduledAnalysis", "prod", "n", Some(4), "x", t(0)).id,
        "ScheduledAnalysis/prod/n/invalidSpec/generation-4"
    );
}

#[test]
fn signatures_verify_and_ids_are_header_safe() {
    let body = br#"{"a":1}"#;
    let sig = sign(b"s3cret", body);
    assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
    assert!(verify(b"s3cret", body, &sig));
    assert!(!verify(b"other", body, &sig));
    assert!(!verify(b"s3cret", br#"{"a":2}"#, &sig));
    assert_eq!(
        delivery_id("Canary/ns/web/v2 é@x/started"),
        "Canary/ns/web/v2%20%C3%A9@x/started"
    );
    assert_eq!(delivery_id("a%b"), "a%25b");
}

#[test]
fn hmac_matches_the_rfc_4231_test_vector() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert_eq!(
        sign(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn slack_messages_have_text_blocks_and_escaped_evidence() {
    let n = &canary_transitions("prod", "web", 3, &aborted(false), &aborted(true), t(10))[0];
    let mut n = n.clone();
    n.message = "a <b> & c".into();
    let m = slack_message(&n);
    assert!(m["text"].as_str().unwrap().contains("a <b> & c"));
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(
        blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("a &lt;b&gt; &amp; c")
    );
    let fields: Vec<&str> = blocks[2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.iter().any(|f| f.contains("apdex")), "{fields:?}");
    assert!(
        fields.iter().any(|f| f.contains("&gt;= 9900")),
        "{fields:?}"
    );
    assert!(fields.len() <= 10);
    // Over-long messages are cut to Slack's limits.
    n.message = "x".repeat(10_000);
    let m = slack_message(&n);
    assert!(
        m["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 3000
    );
}

// ---- configuration --------------------------------------------------------------------

fn env(k: &str) -> Option<String> {
    (k == "HOOK_SECRET").then(|| "from-env".to_string())
}

#[test]
fn a_valid_file_reads_sinks_defaults_and_delivery() {
    let cfg = config::parse(
        "n.yaml",
        r#"
sinks:
- name: ops
  type: webhook
  url: https://hooks.example.com/x
  secretEnv: HOOK_SECRET
  timeout: 2s
- name: team
  type: slack
  url: https://hooks.slack.com/services/T/B/C
defaults:
- sink: ops
  events: [aborted, runFailed]
delivery: {queueSize: 10, maxAttempts: 3, initialBackoff: 100ms, maxBackoff: 1s}
"#,
        &env,
    )
    .unwrap();
    assert_eq!(cfg.sinks.len(), 2);
    assert_eq!(
        cfg.sink("ops").unwrap().secret.as_deref(),
        Some(&b"from-env"[..])
    );
    assert_eq!(cfg.sink("ops").unwrap().timeout, Duration::from_secs(2));
    assert_eq!(cfg.sink("team").unwrap().secret, None);
    assert_eq!((cfg.queue_size, cfg.max_attempts), (10, 3));
    assert_eq!(
        cfg.defaults[0].events,
        [NotifyEvent::Aborted, NotifyEvent::RunFailed]
    );
    // No secret in Debug output.
    assert!(!format!("{cfg:?}").contains("from-env"));
    assert!(!format!("{cfg:?}").contains("services/T/B/C"));
}

#[test]
fn bad_files_are_refused_with_line_and_field() {
    let errs = config::parse(
        "n.yaml",
        "sinks:\n- name: Ops!\n  type: webhook\n  url: ftp://x\n  secretEnv: MISSING\n- name: s\n  type: slack\n  url: https://h/x\n  secretEnv: HOOK_SECRET\n  timeout: 1h\ndefaults:\n- sink: nowhere\n  events: [aborted, aborted]\ndelivery: {queueSize: 0, maxAttempts: 99}\n",
        &env,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("n.yaml:2: sinks[0].name: \"Ops!\" is not a sink name"),
        "{text:#?}"
    );
    assert!(
        has("n.yaml:4: sinks[0].url: must be an http:// or https:// URL"),
        "{text:#?}"
    );
    assert!(
        has("sinks[0].secretEnv: environment variable MISSING is not set"),
        "{text:#?}"
    );
    assert!(
        has("sinks[1].secretFile: Slack incoming webhooks are not signed"),
        "{text:#?}"
    );
    assert!(has("n.yaml:10: sinks[1].timeout:"), "{text:#?}");
    assert!(
        has("n.yaml:12: defaults[0].sink: no sink named \"nowhere\""),
        "{text:#?}"
    );
    assert!(
        has("defaults[0].events[1]: aborted is listed twice"),
        "{text:#?}"
    );
    assert!(
        has("delivery.queueSize: must be between 1 and 10000, got 0"),
        "{text:#?}"
    );
    assert!(
        has("delivery.maxAttempts: must be between 1 and 20, got 99"),
        "{text:#?}"
    );
    // Unknown fields and types are schema errors with their line.
    let errs = config::parse(
        "n.yaml",
        "sinks:\n- name: a\n  type: pager\n  url: https://h\n",
        &env,
    )
    .unwrap_err();
    assert!(
        errs[0].to_string().starts_with("n.yaml:3: sinks[0].type:"),
        "{errs:?}"
    );
    let errs = config::parse("n.yaml", "sinks: []\nextra: 1\n", &env).unwrap_err();
    assert!(errs[0].to_string().contains("extra"), "{errs:?}");
    // Bounded counts.
    let many: String = (0..40)
        .map(|i| format!("- {{name: s{i}, type: slack, url: 'https://h/{i}'}}\n"))
        .collect();
    let errs = config::parse("n.yaml", &format!("sinks:\n{many}"), &env).unwrap_err();
    assert!(errs[0].to_string().contains("at most 32 sinks"), "{errs:?}");
}

#[test]
fn secrets_come_from_files_and_unknown_subscribed_sinks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "file-secret\n").unwrap();
    let cfg = config::parse(
        "n.yaml",
        &format!(
            "sinks:\n- name: ops\n  type: webhook\n  url: http://127.0.0.1:1/\n  secretFile: {}\n",
            secret.display()
        ),
        &env,
    )
    .unwrap();
    assert_eq!(
        cfg.sink("ops").unwrap().secret.as_deref(),
        Some(&b"file-secret"[..])
    );
    let loaded = crate::resources::load_str(
        "c.yaml",
        r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: web, namespace: prod}
spec:
  trafficRouting:
    istio:
      virtualService: {name: web, routes: [primary]}
      stableService: web-stable
      canaryService: web-canary
  steps: [{setWeight: 10}]
  notifications:
  - sink: ops
  - sink: pager
    events: [aborted]
"#,
    );
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let errs = config::check_subscribers(&loaded, Some(&cfg));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "c.yaml:13: spec.notifications[1].sink: no sink \"pager\" in the daemon's --notifications file"
    );
    assert_eq!(config::check_subscribers(&loaded, None).len(), 2);
}

#[test]
fn resource_subscriptions_are_validated_at_load() {
    let loaded = crate::resources::load_str(
        "c.yaml",
        r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: web, namespace: prod}
spec:
  trafficRouting:
    istio:
      virtualService: {name: web, routes: [primary]}
      stableService: web-stable
      canaryService: web-canary
  steps: [{setWeight: 10}]
  notifications:
  - sink: ops
    events: [aborted, runFailed]
  - sink: ops
  - sink: Bad_Name
    events: [nonsense]
"#,
    );
    let text: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("c.yaml:16: spec.notifications[2].events[0]: unknown variant `nonsense`"),
        "{text:#?}"
    );
    assert!(
        has("spec.notifications[0].events[1]: a Canary never sends runFailed"),
        "{text:#?}"
    );
    assert!(
        has("spec.notifications[1].sink: sink \"ops\" is subscribed twice"),
        "{text:#?}"
    );
    assert!(
        has("spec.notifications[2].sink: \"Bad_Name\" is not a sink name"),
        "{text:#?}"
    );
}

// ---- delivery ---------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    sent: StdMutex<Vec<String>>,
    failed: StdMutex<Vec<String>>,
    dropped: StdMutex<Vec<String>>,
}

impl NotifyMetrics for Counts {
    fn notification_sent(&self, sink: &str) {
        self.sent.lock().unwrap().push(sink.into());
    }
    fn notification_failed(&self, sink: &str) {
        self.failed.lock().unwrap().push(sink.into());
    }
    fn notification_dropped(&self, sink: &str) {
        self.dropped.lock().unwrap().push(sink.into());
    }
}

type Seen = Arc<StdMutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>;

/// A receiver on 127.0.0.1:0 answering `statuses` in turn (then 200), recording requests.
async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let queue = Arc::new(StdMutex::new(std::collections::VecDeque::from(statuses)));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let s = s.clone();
            let queue = queue.clone();
            async move {
                s.lock().unwrap().push((headers, body));
                let code = queue.lock().unwrap().pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn webhook_config(url: &str, attempts: u32, queue: usize, timeout: &str) -> NotifyConfig {
    config::parse(
        "n.yaml",
        &format!(
            "sinks:\n- {{name: ops, type: webhook, url: '{url}', secretEnv: HOOK_SECRET, timeout: {timeout}}}\ndefaults:\n- sink: ops\ndelivery: {{queueSize: {queue}, maxAttempts: {attempts}, initialBackoff: 10ms, maxBackoff: 40ms}}\n"
        ),
        &env,
    )
    .unwrap()
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sample() -> Notification {
    canary_transitions(
        "prod",
        "web",
        3,
        &CanaryStatus::default(),
        &running(0, 10),
        t(0),
    )
    .remove(0)
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_signed_delivery_until_it_accepts() {
    let (url, seen) = receiver(vec![503, 500]).await;
    let counts = Arc::new(Counts::default());
    let notifier = Notifier::start(&webhook_config(&url, 5, 8, "5s"), counts.clone());
    let n = sample();
    notifier.notify(None, &n);
    until("sent", || counts.sent.lock().unwrap().len() == 1).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (headers, body) in seen.iter() {
        assert_eq!(body, &seen[0].1, "every attempt sends the same bytes");
        assert_eq!(headers["x-skycanary-delivery"], n.id.as_str());
        assert_eq!(headers["x-skycanary-event"], "started");
        assert!(
            headers["x-skycanary-timestamp"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
        let sig = headers["x-skycanary-signature"].to_str().unwrap();
        assert!(verify(b"from-env", body, sig));
    }
    let v: Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(v["id"], n.id.as_str());
    assert!(counts.failed.lock().unwrap().is_empty());
    assert_eq!(notifier.pending(), 0);
}

#[tokio::test]
async fn a_refusing_receiver_is_not_retried_and_attempts_are_bounded() {
    let (url, seen) = receiver(vec![400]).await;
    let counts = Arc::new(Counts::default());
    let notifier = Notifier::start(&webhook_config(&url, 5, 8, "5s"), counts.clone());
    notifier.notify(None, &sample());
    until("failed", || counts.failed.lock().unwrap().len() == 1).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    let (url, seen) = receiver(vec![500; 10]).await;
    let counts = Arc::new(Counts::default());
    let notifier = Notifier::start(&webhook_config(&url, 3, 8, "5s"), counts.clone());
    notifier.notify(None, &sample());
    until("failed", || counts.failed.lock().unwrap().len() == 1).await;
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(counts.sent.lock().unwrap().is_empty());
}

/// Accepts connections and never answers.
async fn black_hole() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_notify_never_waits() {
    let (url, accepted) = black_hole().await;
    let counts = Arc::new(Counts::default());
    let notifier = Notifier::start(&webhook_config(&url, 1, 2, "300s"), counts.clone());
    notifier.notify(None, &sample());
    // The worker holds the first one (in flight against the black hole).
    until("connected", || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    for _ in 0..5 {
        notifier.notify(None, &sample());
    }
    // 1 in flight + 2 queued; 3 of the 5 made room.
    assert_eq!(notifier.pending(), 3);
    assert_eq!(counts.dropped.lock().unwrap().len(), 3);
    assert!(counts.sent.lock().unwrap().is_empty() && counts.failed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn subscriptions_pick_sinks_and_events() {
    let (url, seen) = receiver(vec![]).await;
    let counts = Arc::new(Counts::default());
    let notifier = Notifier::start(&webhook_config(&url, 1, 8, "5s"), counts.clone());
    let n = sample();
    // The object opted out.
    notifier.notify(Some(&[]), &n);
    // Only aborts wanted.
    let only_aborts = [Subscription {
        sink: "ops".into(),
        events: vec![NotifyEvent::Aborted],
    }];
    notifier.notify(Some(&only_aborts), &n);
    // A sink nobody defined (cluster mode CR): counted as failed, under a fixed label.
    let unknown = [Subscription {
        sink: "nowhere".into(),
        events: vec![],
    }];
    notifier.notify(Some(&unknown), &n);
    assert_eq!(*counts.failed.lock().unwrap(), [sender::UNKNOWN_SINK]);
    // Defaults (every event).
    notifier.notify(None, &n);
    until("sent", || counts.sent.lock().unwrap().len() == 1).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    Notifier::disabled().notify(None, &n);
}
