//! Alarm intake under a flood (issue 16, items 4, 5 and 8): the real daemon, `skycanary run`,
//! fed large or numerous alarms over loopback. Its memory stays bounded (measured from
//! `/proc/PID/status`), `/metrics` gains no series per alarm, and a malformed alarm costs only
//! itself.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Daemon, TOKEN, http, setup, sim_with_apdex, start};

/// A canary paused at 20 % for a human, rolled back by one SkyWalking rule on its own service
/// and by Alertmanager's `HighErrorRate` on it.
const CANARY: &str = r#"apiVersion: skycanary.io/v1alpha1
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
  - setWeight: 20
  - pause: {}
  rollbackOn:
    alarms: [{ruleName: "service_sla_rule", name: "reviews\\.bookinfo"}]
    alerts: [{labels: {alertname: HighErrorRate, service: "reviews.*"}}]
"#;

/// A `/proc/PID/status` field (`VmRSS`, `VmHWM`) in MiB.
fn mem_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .parse()
        .unwrap();
    kb / 1024.0
}

async fn phase(d: &Daemon) -> String {
    let s: Value = http()
        .get(format!("{}/api/v1/canaries/bookinfo/reviews", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s["status"]["phase"].as_str().unwrap_or("").to_string()
}

/// Starts the daemon and waits until the canary is paused at 20 % (alarms armed).
async fn paused_daemon(sim_url: &str) -> Daemon {
    let d = start(setup(CANARY), sim_url);
    let start = Instant::now();
    while phase(&d).await != "Paused" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never paused at 20 %"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d
}

/// ~1 MB webhook body: one alarm for another service whose rule, entity and message are each
/// ~330 KB and unique to request `i` (what a de-duplicator keeping text would hold on to).
fn huge_alarm(i: usize) -> Vec<u8> {
    let fill = |c: &str| format!("{i:06}-{}", c.repeat(330_000));
    format!(
        r#"[{{"scopeId":1,"scope":"SERVICE","name":"{}","id0":"id-{i}","id1":"","ruleName":"{}","alarmMessage":"{}","startTime":{}}}]"#,
        fill("n"),
        fill("r"),
        fill("m"),
        chrono::Utc::now().timestamp_millis()
    )
    .into_bytes()
}

/// Requests of ~1 MB non-matching alarms leave the daemon's RSS under 64 MiB (it grew by each
/// alarm's text before: 300 such requests took it from 14 to 365 MiB; 200 keep the debug-build
/// test to a few seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_alarms_leaves_memory_bounded() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let d = paused_daemon(&running.url()).await;
    let pid = d.child.id();
    let c = http();
    let hook = format!("{}/webhooks/skywalking", d.url);
    let started = Instant::now();
    for i in 0..200 {
        let body = huge_alarm(i);
        assert!(body.len() > 990_000 && body.len() <= 1024 * 1024);
        let r = c
            .post(&hook)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        let summary: Value = r.json().await.unwrap();
        assert_eq!(summary["matched"], json!([]), "{summary}");
    }
    let (rss, hwm) = (mem_mib(pid, "VmRSS"), mem_mib(pid, "VmHWM"));
    eprintln!(
        "200 x 1 MB alarms in {:?}: VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB",
        started.elapsed()
    );
    assert!(rss < 64.0, "VmRSS {rss:.1} MiB after the flood");
    assert!(hwm < 64.0, "VmHWM {hwm:.1} MiB during the flood");
    assert_eq!(
        phase(&d).await,
        "Paused",
        "nothing matched, nothing changed"
    );
}

/// 50,000 distinct Alertmanager alerts that all match the canary add no metric series: the
/// matched counter is labelled by the canary and the source only (it had one series per
/// alert's labels), and matches once the canary is aborted are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_alerts_add_no_metric_series() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let d = paused_daemon(&running.url()).await;
    let c = http();
    let hook = format!("{}/webhooks/alertmanager", d.url);
    let starts_at = (chrono::Utc::now() + chrono::Duration::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for batch in 0..20 {
        // Written by hand: building 2,500 objects with serde in a debug build costs seconds.
        let alerts: Vec<String> = (0..2_500)
            .map(|i| {
                let n = batch * 2_500 + i;
                format!(
                    r#"{{"status":"firing","labels":{{"alertname":"HighErrorRate","service":"reviews-canary","pod":"reviews-canary-{n}"}},"annotations":{{"summary":"pod {n} fails"}},"startsAt":"{starts_at}","fingerprint":"{n:016x}"}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
            alerts.join(",")
        );
        let r = c
            .post(&hook)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(60))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "batch {batch}");
    }
    assert_eq!(phase(&d).await, "Aborted");
    let metrics = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let matched: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("skycanary_alarms_matched_total"))
        .collect();
    assert_eq!(
        matched,
        vec![
            r#"skycanary_alarms_matched_total{namespace="bookinfo",name="reviews",source="alertmanager"} 1"#
        ],
        "one series, one match: the rest came after the abort"
    );
    assert!(
        metrics.contains(r#"skycanary_alarms_received_total{source="alertmanager"} 50000"#),
        "{metrics}"
    );
    assert!(
        metrics.len() < 32 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
}

/// One malformed alarm does not drop the valid ones of its payload: the valid one rolls the
/// canary back, the reply is 422 and names the refused element.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_alarm_does_not_drop_the_valid_ones() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let d = paused_daemon(&running.url()).await;
    let body = json!([
        {"scopeId": 1, "name": "reviews.bookinfo", "alarmMessage": "no rule name"},
        {"scopeId": 1, "name": "reviews.bookinfo", "ruleName": "service_sla_rule",
         "alarmMessage": "sla", "startTime": i64::MIN},
    ]);
    let r = http()
        .post(format!("{}/webhooks/skywalking", d.url))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["matched"], json!(["bookinfo/reviews"]), "{reply}");
    assert_eq!(reply["rejected"][0]["index"], 0, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("alarms[0]: missing field `ruleName`"),
        "{reply}"
    );
    assert_eq!(phase(&d).await, "Aborted");
}
