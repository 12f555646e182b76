//! Issue 18: structured context on every log line. A daemon in file mode with
//! `--log-format json` drives a canary through a passing analysis, a failing measurement and
//! the rollback, and runs a ScheduledAnalysis once; every line of its log is parsed and the
//! lines about either object must name it with top-level fields.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::{TOKEN, canary, http, phase, setup, start_logging, wait_for};
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};

const SCHEDULED: &str = r#"---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {name: yearly, namespace: bookinfo}
spec:
  schedule: "@yearly"
  templates: [{templateName: apdex}]
  args: [{name: service, value: reviews.bookinfo}]
"#;

/// Checks one parsed line; returns which object it is about ("canary", "scheduled" or "").
fn check_line(v: &Value, line: &str) -> &'static str {
    for key in ["ts", "level", "msg", "target"] {
        assert!(v.get(key).is_some_and(Value::is_string), "no {key}: {line}");
    }
    for nested in ["fields", "span", "spans"] {
        assert!(v.get(nested).is_none(), "nested {nested}: {line}");
    }
    let msg = v["msg"].as_str().unwrap_or_default();
    if let Some(m) = v.get("metric") {
        // A measurement: which metric, in which run, of which object.
        assert!(m.is_string(), "{line}");
        assert!(
            v["run"].as_str().is_some_and(|r| !r.is_empty()),
            "a measurement line without its run: {line}"
        );
        assert!(
            v.get("canary").is_some() || v.get("scheduledanalysis").is_some(),
            "a measurement line without its object: {line}"
        );
    }
    if v.get("scheduledanalysis").is_some() {
        assert_eq!(v["namespace"], "bookinfo", "{line}");
        assert_eq!(v["scheduledanalysis"], "yearly", "{line}");
        assert_eq!(v["kind"], "ScheduledAnalysis", "{line}");
        return "scheduled";
    }
    if v.get("canary").is_some() || msg.contains("reviews") {
        assert_eq!(v["namespace"], "bookinfo", "{line}");
        assert_eq!(v["canary"], "reviews", "{line}");
        return "canary";
    }
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_log_line_about_a_canary_names_it() {
    let failing = Arc::new(AtomicBool::new(false));
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    let f = failing.clone();
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        move |_| {
            Some(if f.load(Ordering::SeqCst) {
                5000.0
            } else {
                9950.0
            })
        },
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let yaml = format!("{}{SCHEDULED}", canary("Abort"));
    let d = start_logging(
        setup(&yaml),
        &running.url(),
        &["--log-format", "json"],
        Stdio::from(log.reopen().unwrap()),
    );

    // One scheduled run, while the service is healthy.
    let r = http()
        .post(format!(
            "{}/api/v1/scheduled-analyses/bookinfo/yearly/run",
            d.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let start = Instant::now();
    loop {
        let list: Value = http()
            .get(format!("{}/api/v1/scheduled-analyses", d.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let history = &list["items"][0]["status"]["history"];
        if history.as_array().is_some_and(|h| !h.is_empty()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{list:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The first analysis passes; the second one measures a failing apdex and rolls back.
    wait_for(&d, "the first analysis", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"].as_u64() >= Some(2)
    })
    .await;
    failing.store(true, Ordering::SeqCst);
    wait_for(&d, "the rollback", Duration::from_secs(40), |s| {
        phase(s) == "Aborted" && s["status"].get("routingWrite").is_none()
    })
    .await;
    drop(d);

    let text = std::fs::read_to_string(log.path()).unwrap();
    let mut canary_lines = Vec::new();
    let mut scheduled_lines = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match check_line(&v, line) {
            "canary" => canary_lines.push(v),
            "scheduled" => scheduled_lines += 1,
            _ => {}
        }
    }
    assert!(scheduled_lines > 0, "{text}");
    let with = |key: &str, value: &str| {
        canary_lines
            .iter()
            .filter(|v| v[key] == value)
            .collect::<Vec<_>>()
    };
    // Measurements carry their metric and run; the failing one is there with its value.
    let failed: Vec<_> = with("phase", "Failed")
        .into_iter()
        .filter(|v| v["metric"] == "apdex")
        .collect();
    assert!(!failed.is_empty(), "no failed measurement line: {text}");
    assert!(
        failed[0]["run"].as_str().unwrap().contains("step-5"),
        "{text}"
    );
    assert!(
        failed[0]["value"].as_str().unwrap().contains("5000"),
        "{text}"
    );
    // Step transitions say the step from 1, as `skycanary status` does, in the field and in
    // the message; every event line carries one.
    for v in canary_lines.iter().filter(|v| v.get("reason").is_some()) {
        let step = v["step"].as_str().unwrap_or_default();
        let (n, total) = step.split_once('/').unwrap_or(("", ""));
        assert!(
            total == "6" && n.parse::<u32>().is_ok_and(|n| (1..=6).contains(&n)),
            "{v}"
        );
    }
    let completed = with("reason", "RolloutStepCompleted");
    let first = completed.first().expect("no RolloutStepCompleted line");
    assert_eq!(first["step"], "1/6", "{first}");
    assert!(
        first["msg"]
            .as_str()
            .unwrap()
            .starts_with("Rollout step 1/6 completed"),
        "{first}"
    );
    let aborted = with("reason", "RolloutAborted");
    assert_eq!(aborted.len(), 1, "{text}");
    assert_eq!(aborted[0]["step"], "6/6", "{text}");
    assert_eq!(aborted[0]["level"], "WARN", "{text}");
    assert!(
        canary_lines.iter().any(|v| v["msg"]
            .as_str()
            .unwrap()
            .starts_with("starting step 6/6 analysis")),
        "{text}"
    );
}
