//! ScheduledAnalysis end to end: the real binary, the SkyWalking simulator, file manifests, a
//! loopback webhook receiver, the API and the `schedules` CLI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::{
    Daemon, TOKEN, block_state_saves, cli, http, json_files, setup, sim_with_apdex, start,
    vs_weights,
};

const CANARY_AND_TEMPLATE: &str = r#"apiVersion: skycanary.io/v1alpha1
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
"#;

async fn get(d: &Daemon, path: &str) -> Value {
    http()
        .get(format!("{}{path}", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `path` until `pred` holds (bounded; no timing is asserted).
async fn wait_for(d: &Daemon, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = get(d, path).await;
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; last answer: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn schedule_of<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn history_phases(s: &Value) -> Vec<String> {
    s["status"]["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|r| r["status"]["phase"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Webhook calls received: (X-Test header, body).
type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A loopback webhook receiver: every POST body (with its X-Test header) is kept.
async fn receiver() -> (String, Received) {
    use axum::routing::post;
    let got: Received = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let keep = keep.clone();
                async move {
                    let h = headers
                        .get("x-test")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    keep.lock().unwrap().push((h, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_a_failed_run_rolls_back_the_promoted_canary_and_calls_the_webhook() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let (_sim, running) = sim_with_apdex(move |_| {
        Some(if h.load(Ordering::SeqCst) {
            9950.0
        } else {
            7000.0
        })
    })
    .await;
    let (hook, got) = receiver().await;
    let yaml = format!(
        r#"{CANARY_AND_TEMPLATE}---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {{name: apdex-check, namespace: bookinfo}}
spec:
  schedule: "*/2 * * * * *"
  templates: [{{templateName: apdex}}]
  args: [{{name: service, value: reviews.bookinfo}}]
  onFailure:
    rollback: {{canary: reviews}}
    webhook: {{url: "{hook}", headers: [{{name: X-Test, value: from-skycanary}}]}}
  historyLimit: {{successful: 2, failed: 3}}
"#
    );
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "/api/v1/canaries/bookinfo/reviews", "Promoted", |s| {
        s["status"]["phase"] == "Promoted"
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (0, 100));
    // Healthy runs are recorded, and trimmed to the history limit.
    let list = wait_for(&d, "/api/v1/scheduled-analyses", "3 successful runs", |l| {
        l["items"][0]["status"]["lastSuccessfulTime"].is_string()
            && history_phases(schedule_of(l, "apdex-check")).len() >= 2
    })
    .await;
    let s = schedule_of(&list, "apdex-check");
    assert_eq!(s["schedule"], "*/2 * * * * *");
    assert_eq!(s["timeZone"], "UTC");
    assert!(s["status"]["nextScheduleTime"].is_string(), "{s:#}");
    assert!(history_phases(s).iter().all(|p| p == "Successful"), "{s:#}");
    let first = &s["status"]["history"][0];
    assert_eq!(first["trigger"], "Schedule");
    let value = first["status"]["metricResults"][0]["measurements"][0]["value"]
        .as_str()
        .unwrap_or("");
    assert!(value.contains("9950"), "{first:#}");
    assert!(got.lock().unwrap().is_empty(), "no webhook for successes");

    // The service degrades: the next run fails and the canary goes back to stable.
    healthy.store(false, Ordering::SeqCst);
    // RolledBack is published before its write ends: wait for the write to be confirmed.
    let c = wait_for(&d, "/api/v1/canaries/bookinfo/reviews", "RolledBack", |s| {
        s["status"]["phase"] == "RolledBack" && s["status"].get("routingWrite").is_none()
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0), "{c:#}");
    let reason = c["status"]["abort"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("ScheduledAnalysis bookinfo/apdex-check")
            && reason.contains("metric apdex")
            && reason.contains("7000")
            && reason.contains("min(result) >= 9900"),
        "{reason}"
    );
    let list = wait_for(&d, "/api/v1/scheduled-analyses", "the failed run", |l| {
        let s = schedule_of(l, "apdex-check");
        s["status"]["history"].as_array().is_some_and(|h| {
            h.iter().any(|r| {
                r["status"]["phase"] == "Failed"
                    && r["actions"]
                        .as_array()
                        .is_some_and(|a| a.len() == 2 && a[1]["outcome"] == "Succeeded")
            })
        })
    })
    .await;
    let failed = schedule_of(&list, "apdex-check")["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"]["phase"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["actions"][0]["kind"], "Rollback");
    assert_eq!(failed["actions"][0]["target"], "bookinfo/reviews");
    assert_eq!(failed["actions"][0]["outcome"], "Succeeded");
    assert_eq!(failed["actions"][1]["kind"], "Webhook");
    // The receiver got the run's result with the configured header.
    let hooks = got.lock().unwrap().clone();
    let (header, body) = hooks.first().expect("a webhook call");
    assert_eq!(header.as_deref(), Some("from-skycanary"));
    assert_eq!(body["scheduledAnalysis"]["name"], "apdex-check");
    assert_eq!(body["phase"], "Failed");
    assert_eq!(body["metricResults"][0]["name"], "apdex");
    let value = body["metricResults"][0]["measurements"][0]["value"]
        .as_str()
        .unwrap_or("");
    assert!(value.contains("7000"), "{body:#}");
    // Later failures leave the canary as it is (already at stable).
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    // Persisted in the state dir, and counted in /metrics.
    let persisted: Value = serde_json::from_slice(
        &std::fs::read(d.state.join("scheduledanalysis/bookinfo/apdex-check.json")).unwrap(),
    )
    .unwrap();
    assert!(persisted["lastScheduleTime"].is_string(), "{persisted:#}");
    let metrics = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Runs fire every 2 s: by now one or more failed runs asked for the rollback, each
    // successfully (a canary already rolled back stays so); none failed.
    let rollbacks = |outcome: &str| {
        let prefix = format!(
            r#"skycanary_scheduled_actions_total{{namespace="bookinfo",name="apdex-check",action="rollback",outcome="{outcome}"}} "#
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        metrics.contains(
            r#"skycanary_scheduled_runs_total{namespace="bookinfo",name="apdex-check",phase="Failed"}"#
        ) && rollbacks("Succeeded") >= 1
            && rollbacks("Failed") == 0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_from_cli_and_api_respects_forbid_and_survives_a_restart() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    // Once a year: only runs started by hand happen during the test. Three measurements one
    // second apart keep the run going long enough to meet Forbid.
    let yaml = format!(
        r#"{}---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {{name: yearly, namespace: bookinfo}}
spec:
  schedule: "@yearly"
  timeZone: Asia/Shanghai
  templates: [{{templateName: apdex}}]
  args: [{{name: service, value: reviews.bookinfo}}]
"#,
        CANARY_AND_TEMPLATE.replace(
            "    successCondition",
            "    interval: 1s\n    count: 3\n    successCondition"
        )
    );
    let d = start(setup(&yaml), &running.url());
    let token_file = d
        .dirs
        .as_ref()
        .unwrap()
        .path()
        .join("token")
        .display()
        .to_string();
    let server = d.url.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&refs)
        })
    };
    let base = |v: Vec<&str>| -> Vec<String> {
        let mut o: Vec<String> = v.into_iter().map(str::to_string).collect();
        o.extend([
            "--server".to_string(),
            server.clone(),
            "--token-file".to_string(),
            token_file.clone(),
        ]);
        o
    };
    let out = run(base(vec!["schedules", "run", "bookinfo/yearly"]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("started run yearly-manual-"), "{text}");
    // Forbid: a second run while the first is going is refused with 409.
    let r = http()
        .post(format!(
            "{}/api/v1/scheduled-analyses/bookinfo/yearly/run",
            d.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let missing = http()
        .post(format!(
            "{}/api/v1/scheduled-analyses/bookinfo/nope/run",
            d.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let unauthenticated = http()
        .post(format!(
            "{}/api/v1/scheduled-analyses/bookinfo/yearly/run",
            d.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let list = wait_for(&d, "/api/v1/scheduled-analyses", "the manual run", |l| {
        history_phases(schedule_of(l, "yearly")) == ["Successful"]
    })
    .await;
    let s = schedule_of(&list, "yearly");
    assert_eq!(s["status"]["history"][0]["trigger"], "Manual");
    assert_eq!(
        s["status"]["history"][0]["status"]["metricResults"][0]["count"],
        3
    );
    assert!(s["status"].get("lastScheduleTime").is_none(), "{s:#}");
    // The table.
    let out = run(base(vec!["schedules", "-A"])).await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.contains("bookinfo/yearly")
            && table.contains("@yearly")
            && table.contains("Asia/Shanghai")
            && table.contains("Forbid")
            && table.contains("(in ")
            && table.contains("finished yearly-manual-")
            && table.contains("Successful (apdex Successful = [9950"),
        "{table}"
    );
    let out = run(base(vec!["schedules", "-A", "--output", "json"]))
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "yearly");
    // Without a token: refused.
    let out = run(vec!["schedules".into(), "--server".into(), d.url.clone()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    // A restart keeps the history.
    let mut d = d;
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    let d = start(dirs, &running.url());
    let list = get(&d, "/api/v1/scheduled-analyses").await;
    let list = if history_phases(schedule_of(&list, "yearly")).is_empty() {
        // The task may not have read its state yet.
        wait_for(
            &d,
            "/api/v1/scheduled-analyses",
            "history after restart",
            |l| !history_phases(schedule_of(l, "yearly")).is_empty(),
        )
        .await
    } else {
        list
    };
    assert_eq!(history_phases(schedule_of(&list, "yearly")), ["Successful"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_save_is_retried_until_it_lands() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = format!(
        r#"{CANARY_AND_TEMPLATE}---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {{name: yearly, namespace: bookinfo}}
spec:
  schedule: "@yearly"
  templates: [{{templateName: apdex}}]
  args: [{{name: service, value: reviews.bookinfo}}]
"#
    );
    let d = start(setup(&yaml), &running.url());
    while !json_files(&d.state)
        .iter()
        .any(|p| p.ends_with("bookinfo/yearly.json"))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The store stops taking writes for this object.
    let (file, blocker) = block_state_saves(&d, "yearly");
    let r = http()
        .post(format!(
            "{}/api/v1/scheduled-analyses/bookinfo/yearly/run",
            d.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_for(&d, "/api/v1/scheduled-analyses", "the run's verdict", |v| {
        history_phases(schedule_of(v, "yearly")) == ["Successful"]
    })
    .await;
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(!saved.contains("yearly-manual-"), "not saved yet: {saved}");
    // Readiness says which status cannot be saved.
    let readyz = format!("{}/readyz", d.url);
    let r = http().get(&readyz).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("scheduled bookinfo/yearly"),
        "{body:#}"
    );
    // Nothing changes any more; the store recovers and the status lands anyway.
    std::fs::remove_dir_all(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&file)
        .unwrap()
        .contains("yearly-manual-")
    {
        assert!(
            Instant::now() < deadline,
            "the failed save was never retried"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Ready again once the save has landed (it is marked just after the file is renamed).
    while http().get(&readyz).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 14 item 7, file mode: a status that cannot be read at start is read again (never
/// given up on, never replaced), the task then runs, and its saves — failing for a while —
/// land once the store recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_store_that_fails_reads_then_saves_is_outlasted() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = format!(
        r#"{CANARY_AND_TEMPLATE}---
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {{name: yearly, namespace: bookinfo}}
spec:
  schedule: "@yearly"
  templates: [{{templateName: apdex}}]
  args: [{{name: service, value: reviews.bookinfo}}]
"#
    );
    let dirs = setup(&yaml);
    // A directory where the status file goes: every read and write of it fails.
    let file = dirs
        .path()
        .join("state/scheduledanalysis/bookinfo/yearly.json");
    std::fs::create_dir_all(file.join("blocked")).unwrap();
    let d = start(dirs, &running.url());
    // Reads keep failing (retried with backoff): the task drives nothing meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = get(&d, "/api/v1/scheduled-analyses").await;
    assert!(
        schedule_of(&list, "yearly")["status"]["trackingSince"].is_null(),
        "{list:#}"
    );
    std::fs::remove_dir_all(&file).unwrap();
    // The next read finds no status: the task starts and its first save lands.
    wait_for(&d, "/api/v1/scheduled-analyses", "the task to start", |v| {
        schedule_of(v, "yearly")["status"]["trackingSince"].is_string()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.is_file() {
        assert!(
            Instant::now() < deadline,
            "the first status was never saved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now its saves fail: a run still goes on and is held in memory ...
    let (file, blocker) = block_state_saves(&d, "yearly");
    let r = http()
        .post(format!(
            "{}/api/v1/scheduled-analyses/bookinfo/yearly/run",
            d.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_for(&d, "/api/v1/scheduled-analyses", "the run's verdict", |v| {
        history_phases(schedule_of(v, "yearly")) == ["Successful"]
    })
    .await;
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains("yearly-manual-")
    );
    // ... and saved once the store takes writes again.
    std::fs::remove_dir_all(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&file)
        .unwrap()
        .contains("yearly-manual-")
    {
        assert!(Instant::now() < deadline, "the failed save never landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
