//! `skycanary status|promote|abort|retry --kube`: actions written into the Canary's
//! `status.command` against the fake API server, carried out by the leading daemon, answered in
//! `status.lastCommand` — including a request written while no daemon runs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use skycanary::sim::{OapProfile, SimConfig, Simulator};
use skycanary::testkit::{FakeApiServer, write_kubeconfig};

use super::daemon_kube::{replica, wait};

fn seed(fake: &FakeApiServer) {
    seed_vs(fake);
    seed_canary(fake);
}

fn seed_vs(fake: &FakeApiServer) {
    fake.seed(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "reviews-stable"}, "weight": 100},
            {"destination": {"host": "reviews-canary"}, "weight": 0}]}]}
    }))
    .unwrap();
}

fn seed_canary(fake: &FakeApiServer) {
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2",
            "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
            "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}},
                      {"setWeight": 80}]}
    }))
    .unwrap();
}

fn cli(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("SKYCANARY_TOKEN")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status(fake: &FakeApiServer) -> Value {
    fake.get("skycanary.io", "canaries", "bookinfo", "reviews")
        .map(|c| c["status"].clone())
        .unwrap_or(Value::Null)
}

fn canary_weight(fake: &FakeApiServer) -> Value {
    fake.virtual_service("bookinfo", "reviews").unwrap()["spec"]["http"][0]["route"][1]["weight"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_actions_go_through_status_command_and_survive_daemon_absence() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    seed(&fake);
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "control-kube-token").unwrap();
    let kc = kubeconfig.clone();
    let run = move |args: Vec<&'static str>| {
        let kc = kc.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&kc, &args))
                .await
                .unwrap()
        }
    };

    let daemon = replica("replica-a", &kubeconfig, &token, &running.url());
    wait("the pause step", Duration::from_secs(20), || {
        let s = status(&fake);
        (s["phase"] == "Paused" && s["currentStepIndex"] == 1).then_some(())
    })
    .await;
    assert_eq!(canary_weight(&fake), 20);

    // status --kube reads the cluster, not the daemon's API.
    let out = run(vec!["status", "bookinfo/reviews", "--kube"]).await;
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    assert!(
        table.contains("bookinfo/reviews") && table.contains("Paused") && table.contains(" 20%"),
        "{table}"
    );

    // A command the canary's state refuses: exit 1 with the machine's reason, nothing moves.
    let out = run(vec!["retry", "bookinfo/reviews", "--kube"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("cannot retry"),
        "{err}"
    );
    assert_eq!(status(&fake)["lastCommand"]["accepted"], false);
    assert_eq!(canary_weight(&fake), 20);

    // promote: carried out by the daemon before the CLI returns.
    let out = run(vec!["promote", "bookinfo/reviews", "--kube"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = status(&fake);
    assert_eq!(s["lastCommand"]["action"], "promote");
    assert_eq!(s["lastCommand"]["accepted"], true);
    assert_eq!(s["command"]["id"], s["lastCommand"]["id"]);
    wait("the second pause", Duration::from_secs(20), || {
        let s = status(&fake);
        (s["phase"] == "Paused" && s["currentStepIndex"] == 3).then_some(())
    })
    .await;
    assert_eq!(canary_weight(&fake), 50);

    // An unknown canary is named in the error.
    let out = run(vec!["promote", "bookinfo/nope", "--kube", "--wait", "1s"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no Canary bookinfo/nope"),
        "{}",
        text(&out.stderr)
    );

    // No daemon: the request is written and waits in the status; nothing moves meanwhile.
    drop(daemon);
    let out = run(vec![
        "abort",
        "bookinfo/reviews",
        "--kube",
        "--reason",
        "latency budget",
        "--wait",
        "0s",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("requested abort"),
        "{}",
        text(&out.stdout)
    );
    let s = status(&fake);
    assert_eq!(s["command"]["action"], "abort");
    assert_ne!(s["command"]["id"], s["lastCommand"]["id"]);
    assert_eq!(canary_weight(&fake), 50);
    let out = run(vec!["pause", "bookinfo/nope", "--kube", "--wait", "0s"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "unknown canary even without waiting"
    );

    // The next leader carries it out once.
    let daemon = replica("replica-b", &kubeconfig, &token, &running.url());
    let s = wait("the abort", Duration::from_secs(20), || {
        let s = status(&fake);
        (s["phase"] == "Aborted").then_some(s)
    })
    .await;
    assert!(
        s["abort"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("latency budget")),
        "{s:#}"
    );
    assert_eq!(s["lastCommand"]["id"], s["command"]["id"]);
    assert_eq!(s["lastCommand"]["accepted"], true);
    wait("stable at 100 %", Duration::from_secs(10), || {
        (canary_weight(&fake) == 0).then_some(())
    })
    .await;
    let handled_at = s["lastCommand"]["at"].clone();

    // Restarted again with the request still in the status: not applied a second time (a
    // second abort would be refused and overwrite lastCommand).
    drop(daemon);
    let _daemon = replica("replica-c", &kubeconfig, &token, &running.url());
    wait("the new leader", Duration::from_secs(15), || {
        fake.get(
            "coordination.k8s.io",
            "leases",
            "bookinfo",
            "skycanary-leader",
        )
        .filter(|l| l["spec"]["holderIdentity"] == "replica-c")
    })
    .await;
    // Give the leader a moment to spawn drivers and see the (old) request.
    let ready = wait("replica-c drives", Duration::from_secs(15), || {
        let s = status(&fake);
        (s["phase"] == "Aborted").then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status(&fake);
    assert_eq!(s["lastCommand"]["at"], handled_at, "{ready:#}\n{s:#}");
    assert_eq!(s["lastCommand"]["accepted"], true);
}

/// `run --kube --config DIR`: a namespace-less AnalysisTemplate file serves a Canary CRD in
/// another namespace; the Canary is promoted through its analysis step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_templates_serve_crd_canaries_in_cluster_mode() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        skycanary::sim::SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    seed_vs(&fake);
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2",
            "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
            "steps": [{"setWeight": 20},
                      {"analysis": {"templates": [{"templateName": "file-apdex"}],
                                    "args": [{"name": "service", "value": "reviews.bookinfo"}]}},
                      {"setWeight": 60}]}
    }))
    .unwrap();
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "control-kube-token").unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("apdex.yaml"),
        "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: file-apdex}\nspec:\n  args: [{name: service}]\n  metrics:\n  - name: apdex\n    interval: 1s\n    count: 2\n    successCondition: min(result) >= 9900\n    provider: {skywalking: {window: {duration: 3m, alignToStep: false}, metric: service_apdex, entity: {serviceName: \"{{args.service}}\"}}}\n",
    )
    .unwrap();
    let _daemon = super::daemon_kube::replica_with(
        "replica-f",
        &kubeconfig,
        &token,
        &running.url(),
        &["--config", templates.to_str().unwrap()],
    );
    let s = wait("promotion", Duration::from_secs(30), || {
        let s = status(&fake);
        (s["phase"] == "Promoted" || s["phase"] == "Aborted").then_some(s)
    })
    .await;
    assert_eq!(s["phase"], "Promoted", "{s:#}");
    assert!(
        s["analysisRuns"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["templates"][0] == "file-apdex")),
        "{s:#}"
    );
}

/// Two replicas: an alarm webhook that reaches the standby is handed to the leader through the
/// Canary's `status.command` and rolls the canary back (OAP never retries a webhook).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_that_reaches_the_standby_rolls_back_through_the_leader() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    seed_vs(&fake);
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2",
            "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
            "rollbackOn": {"alarms": [{"ruleName": "service_sla_rule", "name": "reviews\\.bookinfo"}]},
            "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}
    }))
    .unwrap();
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "control-kube-token").unwrap();
    let a = replica("replica-a", &kubeconfig, &token, &running.url());
    let b = replica("replica-b", &kubeconfig, &token, &running.url());
    wait("the pause step", Duration::from_secs(20), || {
        let s = status(&fake);
        (s["phase"] == "Paused" && s["currentStepIndex"] == 1).then_some(())
    })
    .await;
    assert_eq!(canary_weight(&fake), 20);
    let leader = fake
        .get(
            "coordination.k8s.io",
            "leases",
            "bookinfo",
            "skycanary-leader",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .unwrap();
    let standby = if leader == "replica-a" { &b } else { &a };
    // The standby has read the Canaries (ready) before it can match alarms for them.
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let ready = http
            .get(format!("{}/readyz", standby.url))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let alarm = json!([{"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo",
        "id0": "cmV2aWV3cy5ib29raW5mbw==.1", "id1": "", "ruleName": "service_sla_rule",
        "alarmMessage": "Successful rate of service reviews.bookinfo is lower than 99%",
        "startTime": now_ms, "uuid": "forwarded-1"}]);
    let r = http
        .post(format!("{}/webhooks/skywalking", standby.url))
        .bearer_auth("control-kube-token")
        .json(&alarm)
        .send()
        .await
        .unwrap();
    let code = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["forwarded"], json!(["bookinfo/reviews"]), "{body}");
    let s = wait("the rollback", Duration::from_secs(20), || {
        let s = status(&fake);
        (s["phase"] == "Aborted").then_some(s)
    })
    .await;
    assert!(
        s["abort"]["alarm"]
            .as_str()
            .is_some_and(|a| a.contains("service_sla_rule")),
        "{s:#}"
    );
    assert_eq!(s["lastCommand"]["action"], "alarm");
    assert_eq!(s["lastCommand"]["accepted"], true);
    wait("stable at 100 %", Duration::from_secs(10), || {
        (canary_weight(&fake) == 0).then_some(())
    })
    .await;
    // Nothing matches: the standby forwards nothing and nothing changes.
    let other = json!([{"scopeId": 1, "scope": "SERVICE", "name": "ratings.bookinfo",
        "id0": "x", "ruleName": "service_sla_rule", "alarmMessage": "m",
        "startTime": now_ms, "uuid": "forwarded-2"}]);
    let r = http
        .post(format!("{}/webhooks/skywalking", standby.url))
        .bearer_auth("control-kube-token")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["forwarded"], json!([]), "{body}");
}
