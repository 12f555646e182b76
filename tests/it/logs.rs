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
use super::daemon_kube::{Replica, wait};
use serde_json::json;
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};
use skycanary::testkit::{FakeApiServer, write_kubeconfig};

const SCHEDULED: &str = r#"---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {name: yearly, namespace: bookinfo}
spec:
  schedule: "@yearly"
  templates: [{templateName: apdex}]
  args: [{name: service, value: reviews.bookinfo}]
"#;

/// Checks one parsed line of a log about the `reviews` canary; returns which object it is about
/// ("canary", "scheduled" or "").
fn check_line(v: &Value, line: &str) -> &'static str {
    check_line_of(v, line, &["reviews"])
}

/// [`check_line`] for a log about the canaries `canaries` (all in namespace bookinfo).
fn check_line_of(v: &Value, line: &str, canaries: &[&str]) -> &'static str {
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
    if v.get("canary").is_some() || canaries.iter().any(|c| msg.contains(c)) {
        assert_eq!(v["namespace"], "bookinfo", "{line}");
        let named = v["canary"].as_str().unwrap_or_default();
        assert!(canaries.contains(&named), "{line}");
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
    // The run's name keeps the 0-based index (run ids are stable); its `step` counts from 1.
    assert_eq!(failed[0]["step"], "6/6", "{text}");
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

/// Cluster mode: a Canary from its CRD promoted, and one whose spec the daemon refuses; every
/// line of the JSON log parses, and each line about either names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_log_line_in_cluster_mode_names_its_canary() {
    use std::io::{BufRead, BufReader};
    skycanary::testkit::install_crypto_provider();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    for name in ["reviews", "ratings"] {
        fake.seed(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "bookinfo"},
            "spec": {"hosts": [name], "http": [{"name": "primary", "route": [
                {"destination": {"host": format!("{name}-stable")}, "weight": 100},
                {"destination": {"host": format!("{name}-canary")}, "weight": 0}]}]}
        }))
        .unwrap();
    }
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "apdex", "namespace": "bookinfo"},
        "spec": {"args": [{"name": "service"}], "metrics": [{
            "name": "apdex", "interval": "1s", "count": 2,
            "successCondition": "min(result) >= 9900",
            "provider": {"skywalking": {"window": {"duration": "3m", "alignToStep": false},
                "metric": "service_apdex", "entity": {"serviceName": "{{args.service}}"}}}}]}
    }))
    .unwrap();
    let analysis = json!({"templates": [{"templateName": "apdex"}],
        "args": [{"name": "service", "value": "reviews.bookinfo"}]});
    for (name, background) in [("reviews", Value::Null), ("ratings", json!(9))] {
        let mut spec = json!({"revision": "v2",
            "trafficRouting": {"istio": {"virtualService": {"name": name, "routes": ["primary"]},
                "stableService": format!("{name}-stable"), "canaryService": format!("{name}-canary")}},
            "steps": [{"setWeight": 20}, {"analysis": analysis}, {"setWeight": 50}]});
        if !background.is_null() {
            // Admitted by the schema, refused by the daemon: startingStep past the last step.
            let mut a = analysis.clone();
            a["startingStep"] = background;
            spec["analysis"] = a;
        }
        fake.seed(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": name, "namespace": "bookinfo"}, "spec": spec
        }))
        .unwrap();
    }
    let (addr, _server) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let log = dir.path().join("daemon.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args([
            "run",
            "--kube",
            "--identity",
            "a",
            "--lease",
            "bookinfo/leader",
        ])
        .args(["--skywalking", &running.url(), "--token-file"])
        .arg(dir.path().join("token"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--log-format", "json", "--log-level", "skycanary=info"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let replica = Replica {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = |name: &str| {
        fake.get("skycanary.io", "canaries", "bookinfo", name)
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    };
    wait("reviews Promoted", Duration::from_secs(60), || {
        (status("reviews")["phase"] == "Promoted").then_some(())
    })
    .await;
    wait("ratings Invalid", Duration::from_secs(60), || {
        (status("ratings")["phase"] == "Invalid").then_some(())
    })
    .await;
    drop(replica);

    let text = std::fs::read_to_string(&log).unwrap();
    let mut about = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if check_line_of(&v, line, &["reviews", "ratings"]) == "canary" {
            *about
                .entry(v["canary"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert!(about.get("reviews").is_some_and(|n| *n > 0), "{text}");
    // The refusal is logged about ratings, with its field path.
    assert!(
        text.lines()
            .any(|l| l.contains("\"canary\":\"ratings\"")
                && l.contains("spec.analysis.startingStep")),
        "{text}"
    );
}
