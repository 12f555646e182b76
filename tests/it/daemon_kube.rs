//! `skycanary run --kube`: two replicas against one fake API server over loopback; the Lease
//! holder drives the canary from CRDs to promotion, the standby writes nothing and takes over
//! when the leader dies.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};
use skycanary::testkit::{FakeApiServer, write_kubeconfig};

const TOKEN: &str = "cluster-token";

fn seed(fake: &FakeApiServer) {
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
            "name": "apdex", "interval": "1s", "count": 2,
            "successCondition": "min(result) >= 9900",
            "provider": {"skywalking": {"window": {"duration": "3m", "alignToStep": false}, "metric": "service_apdex", "entity": {"serviceName": "{{args.service}}"}}}}]}
    }))
    .unwrap();
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2",
            "trafficRouting": {"istio": {"virtualService": {"name": "reviews", "routes": ["primary"]},
                "stableService": "reviews-stable", "canaryService": "reviews-canary"}},
            "steps": [{"setWeight": 20},
                      {"analysis": {"templates": [{"templateName": "apdex"}], "args": [{"name": "service", "value": "reviews.bookinfo"}]}},
                      {"setWeight": 50}, {"pause": {"duration": 1}}]}
    }))
    .unwrap();
}

pub(crate) struct Replica {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn replica(
    identity: &str,
    kubeconfig: &std::path::Path,
    token: &std::path::Path,
    sim: &str,
) -> Replica {
    replica_with(identity, kubeconfig, token, sim, &[])
}

/// A replica with extra `run` arguments.
pub(crate) fn replica_with(
    identity: &str,
    kubeconfig: &std::path::Path,
    token: &std::path::Path,
    sim: &str,
    extra: &[&str],
) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args([
            "run",
            "--kube",
            "--identity",
            identity,
            "--lease",
            "bookinfo/skycanary-leader",
            "--lease-duration",
            "3",
        ])
        // An empty `sim`: no `--skywalking` at all.
        .args(["--skywalking", sim].iter().filter(|_| !sim.is_empty()))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--token-file"])
        .arg(token)
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("SKYCANARY_SKYWALKING")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("cluster mode"), "{first}");
    Replica {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn holder(fake: &FakeApiServer) -> Option<String> {
    fake.get(
        "coordination.k8s.io",
        "leases",
        "bookinfo",
        "skycanary-leader",
    )
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

pub(crate) async fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_drives_the_canary_and_the_standby_takes_over() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    seed(&fake);
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();

    let a = replica("replica-a", &kubeconfig, &token, &running.url());
    let b = replica("replica-b", &kubeconfig, &token, &running.url());
    let leader = wait("a leader", Duration::from_secs(15), || holder(&fake)).await;
    let canary_status = |fake: &FakeApiServer| {
        fake.get("skycanary.io", "canaries", "bookinfo", "reviews")
            .map(|c| c["status"].clone())
    };
    let status: Value = wait("promotion", Duration::from_secs(40), || {
        canary_status(&fake).filter(|s| s["phase"] == "Promoted")
    })
    .await;
    assert_eq!(status["desiredWeight"], 100);
    let vs = fake.virtual_service("bookinfo", "reviews").unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 100);
    assert_eq!(
        holder(&fake).as_deref(),
        Some(leader.as_str()),
        "no leadership change"
    );
    // Events are written after the status that caused them.
    wait(
        "the RolloutCompleted event",
        Duration::from_secs(10),
        || {
            fake.events()
                .iter()
                .any(|e| e["reason"] == "RolloutCompleted" && e["regarding"]["kind"] == "Canary")
                .then_some(())
        },
    )
    .await;

    // The standby drives nothing and refuses commands.
    let (leader_r, standby_r) = if leader == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!("{}/api/v1/canaries", standby_r.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]), "{list}");
    let r = http
        .post(format!(
            "{}/api/v1/canaries/bookinfo/reviews/abort",
            standby_r.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = http
        .get(format!("{}/api/v1/canaries/bookinfo/reviews", leader_r.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The leader dies without releasing: the standby holds the lease within the lease duration.
    let standby_name = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    drop(leader_r);
    let took_over = Instant::now();
    wait("takeover", Duration::from_secs(10), || {
        holder(&fake).filter(|h| h == standby_name)
    })
    .await;
    assert!(
        took_over.elapsed() < Duration::from_secs(6),
        "{:?}",
        took_over.elapsed()
    );
    drop(standby_r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_analysis_from_its_crd_keeps_status_and_rolls_back_the_promoted_canary() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        move |_| {
            Some(if h.load(Ordering::SeqCst) {
                9950.0
            } else {
                7000.0
            })
        },
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    seed(&fake);
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "ScheduledAnalysis",
        "metadata": {"name": "apdex-check", "namespace": "bookinfo"},
        "spec": {"schedule": "*/2 * * * * *",
            "templates": [{"templateName": "apdex"}],
            "args": [{"name": "service", "value": "reviews.bookinfo"}],
            "onFailure": {"rollback": {"canary": "reviews"}}}
    }))
    .unwrap();
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let _a = replica("replica-a", &kubeconfig, &token, &running.url());
    let canary = |fake: &FakeApiServer| {
        fake.get("skycanary.io", "canaries", "bookinfo", "reviews")
            .map(|c| c["status"].clone())
    };
    let scheduled = |fake: &FakeApiServer| {
        fake.get(
            "skycanary.io",
            "scheduledanalyses",
            "bookinfo",
            "apdex-check",
        )
        .map(|c| c["status"].clone())
    };
    wait("promotion", Duration::from_secs(40), || {
        canary(&fake).filter(|s| s["phase"] == "Promoted")
    })
    .await;
    // The schedule's history lands in its .status.
    let st = wait(
        "a successful scheduled run",
        Duration::from_secs(40),
        || scheduled(&fake).filter(|s| s["lastSuccessfulTime"].is_string()),
    )
    .await;
    assert_eq!(st["history"][0]["status"]["phase"], "Successful", "{st:#}");
    assert!(st["nextScheduleTime"].is_string(), "{st:#}");

    healthy.store(false, Ordering::SeqCst);
    let c = wait("rollback", Duration::from_secs(40), || {
        canary(&fake).filter(|s| s["phase"] == "RolledBack" && s.get("routingWrite").is_none())
    })
    .await;
    assert!(
        c["abort"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("ScheduledAnalysis bookinfo/apdex-check"),
        "{c:#}"
    );
    let vs = fake.virtual_service("bookinfo", "reviews").unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 100);
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 0);
    let st = wait("the failed run in .status", Duration::from_secs(20), || {
        scheduled(&fake).filter(|s| {
            s["history"].as_array().is_some_and(|h| {
                h.iter().any(|r| {
                    r["status"]["phase"] == "Failed" && r["actions"][0]["outcome"] == "Succeeded"
                })
            })
        })
    })
    .await;
    assert!(st["lastScheduleTime"].is_string(), "{st:#}");
}

/// Issue 14 item 7, cluster mode: the ScheduledAnalysis' `.status` cannot be read, then not
/// written, for a while. The task reads again (never gives up, never starts from scratch),
/// keeps scheduling, and its saves land once the API server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_analysis_outlasts_failing_status_reads_and_saves() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    seed(&fake);
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "ScheduledAnalysis",
        "metadata": {"name": "nightly", "namespace": "bookinfo"},
        "spec": {"schedule": "*/2 * * * * *",
            "templates": [{"templateName": "apdex"}],
            "args": [{"name": "service", "value": "reviews.bookinfo"}]}
    }))
    .unwrap();
    let status_path = "/scheduledanalyses/nightly/status";
    fake.fail_next(Some("GET"), status_path, 3, 500);
    fake.fail_next(Some("PUT"), status_path, 4, 503);
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let _a = replica("replica-a", &kubeconfig, &token, &running.url());
    let st = wait("a successful run saved", Duration::from_secs(60), || {
        fake.get("skycanary.io", "scheduledanalyses", "bookinfo", "nightly")
            .map(|o| o["status"].clone())
            .filter(|s| s["lastSuccessfulTime"].is_string())
    })
    .await;
    assert_eq!(st["history"][0]["status"]["phase"], "Successful", "{st:#}");
    let count = |method: &str| {
        fake.requests()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(status_path))
            .count()
    };
    // Every failed read and write was tried again until one went through.
    assert!(count("GET") > 3, "{} reads", count("GET"));
    assert!(count("PUT") > 4, "{} writes", count("PUT"));
}
