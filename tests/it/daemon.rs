//! `skycanary run` end to end: the real binary, the SkyWalking simulator and a directory of
//! Istio manifests, over loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skycanary::sim::{OapProfile, SimAlarm, SimConfig, SimEntity, Simulator};

pub(crate) const TOKEN: &str = "test-token-123";

/// A canary that takes 20 % and then waits for a human: it never finishes on its own.
pub(crate) const PAUSED_AT_20: &str = r#"apiVersion: skycanary.io/v1alpha1
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
"#;

const VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: primary
    timeout: 5s
    route:
    - destination: {host: reviews-stable}
      weight: 100
    - destination: {host: reviews-canary}
      weight: 0
"#;

pub(crate) fn canary(on_error: &str) -> String {
    format!(
        r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  revision: v2
  onAnalysisError: {on_error}
  trafficRouting:
    istio:
      virtualService: {{name: reviews, routes: [primary]}}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 10
  - analysis: {{templates: [{{templateName: apdex}}], args: [{{name: service, value: reviews.bookinfo}}]}}
  - setWeight: 30
  - pause: {{duration: 1s}}
  - setWeight: 60
  - analysis: {{templates: [{{templateName: apdex}}], args: [{{name: service, value: reviews.bookinfo}}]}}
---
apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: apdex, namespace: bookinfo}}
spec:
  args: [{{name: service}}]
  metrics:
  - name: apdex
    interval: 1s
    count: 2
    consecutiveErrorLimit: 0
    errorRetryInterval: 1s
    successCondition: "min(result) >= 9900"
    # Wall-clock tests of the controller: minute buckets since each weight change would take
    # minutes (step-aligned windows are tested in step_windows.rs).
    provider:
      skywalking:
        window: {{duration: 3m, alignToStep: false}}
        timeout: 2s
        metric: service_apdex
        entity: {{serviceName: "{{{{args.service}}}}"}}
"#
    )
}

pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) dirs: Option<tempfile::TempDir>,
    pub(crate) manifests: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) config: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn start(dirs: tempfile::TempDir, sim_url: &str) -> Daemon {
    start_with(dirs, sim_url, &[])
}

pub(crate) fn start_with(dirs: tempfile::TempDir, sim_url: &str, extra: &[&str]) -> Daemon {
    start_logging(dirs, sim_url, extra, Stdio::null())
}

/// [`start_with`], the daemon's log (stderr) going to `stderr`.
pub(crate) fn start_logging(
    dirs: tempfile::TempDir,
    sim_url: &str,
    extra: &[&str],
    stderr: Stdio,
) -> Daemon {
    let root = dirs.path().to_path_buf();
    let (config, manifests, state) = (root.join("config"), root.join("istio"), root.join("state"));
    let token_file = root.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    // An empty `sim_url` starts the daemon without `--skywalking`.
    let oap: &[&str] = if sim_url.is_empty() {
        &[]
    } else {
        &["--skywalking", sim_url]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--manifests")
        .arg(&manifests)
        .arg("--state-dir")
        .arg(&state)
        .args(oap)
        .env_remove("SKYCANARY_SKYWALKING")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--token-file"])
        .arg(&token_file)
        .args(extra)
        .env("RUST_LOG", "skycanary=info")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start daemon");
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.contains("listening on"), "{first}");
    Daemon {
        child,
        url: format!("http://127.0.0.1:{port}"),
        dirs: Some(dirs),
        manifests,
        state,
        config,
    }
}

pub(crate) fn setup(canary_yaml: &str) -> tempfile::TempDir {
    let dirs = tempfile::tempdir().unwrap();
    for d in ["config", "istio", "state"] {
        std::fs::create_dir_all(dirs.path().join(d)).unwrap();
    }
    std::fs::write(dirs.path().join("config/canary.yaml"), canary_yaml).unwrap();
    std::fs::write(dirs.path().join("istio/reviews.yaml"), VS).unwrap();
    dirs
}

pub(crate) async fn sim_with_apdex(
    f: impl Fn(chrono::DateTime<chrono::Utc>) -> Option<f64> + Send + Sync + 'static,
) -> (Simulator, skycanary::sim::RunningSim) {
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series("service_apdex", SimEntity::service("reviews.bookinfo"), f);
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, running)
}

pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub(crate) async fn status(d: &Daemon) -> Value {
    http()
        .get(format!("{}/api/v1/canaries/bookinfo/reviews", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The canary's status, or why it cannot be had yet (the daemon still starting).
async fn try_status(d: &Daemon) -> Result<Value, reqwest::Error> {
    http()
        .get(format!("{}/api/v1/canaries/bookinfo/reviews", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await
}

/// Polls until `pred` holds on the canary's status (bounded).
pub(crate) async fn wait_for(
    d: &Daemon,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let s = status(d).await;
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; last status: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stable and canary weights of the reviews route, after checking that every
/// VirtualService the daemon wrote there is one Istio's CRD schema admits.
pub(crate) fn vs_weights(manifests: &Path) -> (i64, i64) {
    let text = std::fs::read_to_string(manifests.join("reviews.yaml")).unwrap();
    skycanary::testkit::vs_schema::assert_valid_virtual_services_in(&text);
    let v = &skycanary::resources::yaml::parse_documents(&text).unwrap()[0].value;
    let r = &v["spec"]["http"][0]["route"];
    (
        r[0]["weight"].as_i64().unwrap(),
        r[1]["weight"].as_i64().unwrap(),
    )
}

/// Aborted, and the rollback write confirmed (the phase is published before the write ends).
fn aborted_and_written(s: &Value) -> bool {
    phase(s) == "Aborted" && s["status"].get("routingWrite").is_none()
}

pub(crate) fn phase(s: &Value) -> &str {
    s["status"]["phase"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_promoted_on_its_own() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let d = start(setup(&canary("Abort")), &running.url());
    let s = wait_for(&d, "Promoted", Duration::from_secs(40), |s| {
        phase(s) == "Promoted"
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (0, 100));
    assert_eq!(s["status"]["desiredWeight"], 100);
    let runs = s["status"]["analysisRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter().all(|r| r["status"]["phase"] == "Successful"),
        "{runs:#?}"
    );
    // The state file and the metrics agree with the API.
    let persisted: Value = serde_json::from_slice(
        &std::fs::read(d.state.join("canary/bookinfo/reviews.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(persisted["phase"], "Promoted");
    let metrics = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"skycanary_canary_phase{namespace="bookinfo",name="reviews",phase="Promoted"} 1"#
        ),
        "{metrics}"
    );
    // Every OAP request is timed, by kind.
    let measured = metrics
        .lines()
        .find(|l| {
            l.starts_with("skycanary_provider_request_duration_seconds_count{")
                && l.contains(r#"kind="metrics""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(measured.is_some_and(|n| n > 0), "{metrics}");
    let _ = &d.config;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_analysis_rolls_back_to_stable_with_evidence() {
    let (_sim, running) = sim_with_apdex(|_| Some(7000.0)).await;
    let d = start(setup(&canary("Abort")), &running.url());
    let s = wait_for(&d, "Aborted", Duration::from_secs(30), |s| {
        aborted_and_written(s)
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let abort = &s["status"]["abort"];
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
    // The abort reason carries the typed threshold; the measurement keeps its evidence.
    assert!(
        abort["reason"]
            .as_str()
            .unwrap_or("")
            .contains("threshold >= 9900"),
        "{abort:#}"
    );
    let runs = s["status"]["analysisRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let evidence = runs
        .iter()
        .flat_map(|r| {
            r["status"]["metricResults"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|m| m["measurements"].as_array().cloned().unwrap_or_default())
        .find_map(|m| m.get("evidence").cloned())
        .unwrap_or_default();
    assert_eq!(evidence["values"][0], 7000.0, "{evidence:#}");
    assert_eq!(
        evidence["conditions"][0]["threshold"], 9900.0,
        "{evidence:#}"
    );
    // /metrics: the threshold gauge next to the value gauge, for the same run and metric.
    let metrics = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(r#"metric="apdex""#)
                    && (name != "skycanary_measurement_threshold"
                        || l.contains(r#"condition="success""#))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        sample("skycanary_measurement_value"),
        Some(7000.0),
        "{metrics}"
    );
    assert_eq!(
        sample("skycanary_measurement_threshold"),
        Some(9900.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_pauses_inconclusive_and_keeps_the_weight() {
    let (_sim, running) = sim_with_apdex(|_| None).await;
    let d = start(setup(&canary("Abort")), &running.url());
    let s = wait_for(&d, "Paused", Duration::from_secs(30), |s| {
        phase(s) == "Paused"
    })
    .await;
    assert_eq!(s["status"]["pause"]["reason"], "Inconclusive", "{s:#}");
    assert_eq!(
        vs_weights(&d.manifests),
        (90, 10),
        "not promoted, not aborted"
    );
}

/// A simulator that answers the version probe but whose storage fails every metric query:
/// an OAP outage that begins after the canary was exposed.
async fn sim_with_failing_storage() -> (Simulator, skycanary::sim::RunningSim) {
    let (sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    sim.inject_fault(skycanary::sim::Fault::StorageError, None);
    (sim, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oap_outage_holds_or_aborts_as_configured() {
    // Every measurement is an Error.
    let (_sim, running) = sim_with_failing_storage().await;
    let d = start(setup(&canary("Hold")), &running.url());
    let s = wait_for(&d, "Paused", Duration::from_secs(30), |s| {
        phase(s) == "Paused"
    })
    .await;
    assert_eq!(s["status"]["pause"]["reason"], "AnalysisError", "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (90, 10), "weight frozen");

    let d = start(setup(&canary("Abort")), &running.url());
    wait_for(&d, "Aborted", Duration::from_secs(30), |s| {
        aborted_and_written(s)
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
}

/// `skycanary_provider_errors_total` of `address` and `kind`, summed over request kinds.
async fn provider_errors(d: &Daemon, address: &str, kind: &str) -> u64 {
    let metrics = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!(r#"skycanary_provider_errors_total{{address="{address}",kind="{kind}""#);
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_stays_pending_until_its_oap_answers_then_progresses() {
    // Nothing listens there yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let d = start(setup(&canary("Abort")), &url);
    let want = format!("waiting for SkyWalking OAP at {url}: ");
    let s = wait_for(&d, "the waiting message", Duration::from_secs(30), |s| {
        s["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&want))
    })
    .await;
    assert_eq!(phase(&s), "Pending", "{s:#}");
    // The waiting status names the revision it waits to start (found by the chaos test).
    assert_eq!(s["status"]["revision"], "v2", "{s:#}");
    // Probed again (with backoff), and still nothing routed to the canary.
    let start = Instant::now();
    while provider_errors(&d, &url, "transport").await < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not probed again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status(&d).await;
    assert_eq!(phase(&s), "Pending", "{s:#}");
    assert!(s["status"].get("startedAt").is_none(), "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (100, 0), "never exposed");

    // The OAP comes up: the release starts on its own and completes.
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let _running = sim
        .serve(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    wait_for(&d, "Promoted", Duration::from_secs(60), |s| {
        phase(s) == "Promoted"
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (0, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_need_the_token_and_work() {
    let (_sim, running) = sim_with_apdex(|_| None).await;
    let d = start(setup(&canary("Abort")), &running.url());
    wait_for(&d, "Paused", Duration::from_secs(30), |s| {
        phase(s) == "Paused"
    })
    .await;
    let c = http();
    let abort = format!("{}/api/v1/canaries/bookinfo/reviews/abort", d.url);
    assert_eq!(c.post(&abort).send().await.unwrap().status(), 401);
    assert_eq!(
        c.post(&abort)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .post(&abort)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"reason": "manual test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = wait_for(&d, "Aborted", Duration::from_secs(10), |s| {
        aborted_and_written(s)
    })
    .await;
    assert!(
        s["status"]["abort"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("manual test"),
        "{s:#}"
    );
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    // A command the canary's state refuses is a 409 with the machine's reason, not a 200.
    let pause = format!("{}/api/v1/canaries/bookinfo/reviews/pause", d.url);
    let r = c.post(&pause).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot pause")),
        "{body}"
    );
    let retry = format!("{}/api/v1/canaries/bookinfo/reviews/retry", d.url);
    assert_eq!(
        c.post(&retry)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    wait_for(&d, "Progressing again", Duration::from_secs(10), |s| {
        phase(s) != "Aborted"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_resume_the_same_step_without_lowering_weights() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {duration: 4s}");
    let mut d = start(setup(&yaml), &running.url());
    let before = wait_for(&d, "the pause step", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    let runs_before = before["status"]["analysisRuns"].as_array().unwrap().len();
    // SIGKILL: no chance to clean up.
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    let d = start(dirs, &running.url());
    let after = status(&d).await;
    assert_eq!(after["status"]["currentStepIndex"], 3, "{after:#}");
    assert_eq!(
        after["status"]["analysisRuns"].as_array().unwrap().len(),
        runs_before,
        "completed runs are not repeated"
    );
    assert_eq!(
        vs_weights(&d.manifests),
        (70, 30),
        "weights never go down on restart"
    );
    let mut last = 30;
    let done = {
        let start = Instant::now();
        loop {
            let (_, canary_w) = vs_weights(&d.manifests);
            assert!(
                canary_w >= last,
                "weight went down from {last} to {canary_w}"
            );
            last = canary_w;
            let s = status(&d).await;
            if phase(&s) == "Promoted" {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "not promoted after restart: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(done["status"]["analysisRuns"].as_array().unwrap().len(), 2);
}

/// Every `*.json` under `dir` (the state directory's per-object files).
pub(crate) fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(json_files(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out
}

/// Makes the state store refuse every save of object `name` (namespace bookinfo): a directory
/// takes the temporary file the save writes first, while the saved status stays readable.
/// Returns the state file and the blocker (remove it to let saves land again).
/// The state directory's rollback journal lost (as by a disk that never kept the write): the
/// abort [`block_state_saves`] kept out of the JSON file is then not saved anywhere, which is
/// what the tests of an unsaved abort need (the journal writes into preallocated blocks, so a
/// blocked or full directory does not stop it).
pub(crate) fn lose_the_journal(d: &Daemon) {
    std::fs::remove_file(d.state.join(".rollback-journal")).unwrap();
}

/// Makes the JSON saves of `name`'s status fail (a directory at its temporary file's name).
/// A rollback's status still reaches the state directory's journal.
pub(crate) fn block_state_saves(d: &Daemon, name: &str) -> (PathBuf, PathBuf) {
    let file = json_files(&d.state)
        .into_iter()
        .find(|p| p.ends_with(format!("bookinfo/{name}.json")))
        .expect("the object's state file");
    let blocker = file
        .parent()
        .unwrap()
        .join(format!(".{name}.tmp-{}", d.child.id()));
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    (file, blocker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_saved_before_a_crash_is_written_first_at_restart() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let mut d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause step", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    // The crash came after the abort was saved and before its write landed: the saved
    // status says Aborted with the rollback write pending, the routes still say 30 %.
    let file = json_files(&d.state)
        .into_iter()
        .find(|p| p.ends_with("bookinfo/reviews.json"))
        .expect("the canary's state file");
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let now = chrono::Utc::now().to_rfc3339();
    let mut routing = saved["applied"].clone();
    assert!(routing.is_object(), "applied routing in {saved:#}");
    routing["canaryWeight"] = 0.into();
    saved["phase"] = "Aborted".into();
    saved["desiredWeight"] = 0.into();
    saved["pause"] = Value::Null;
    saved["abort"] = serde_json::json!({"reason": "test: crash after the abort save", "at": now});
    saved["routingWrite"] = serde_json::json!({"routing": routing, "requestedAt": now});
    std::fs::write(&file, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();

    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    let started = Instant::now();
    let d = start(dirs, &running.url());
    let s = wait_for(
        &d,
        "the rollback write",
        Duration::from_secs(10),
        aborted_and_written,
    )
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0), "{s:#}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "re-sent at start, not after the 60 s result timeout"
    );
}

pub(crate) fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_and_promote_talk_to_the_daemon() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    // A pause that waits for promote.
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the indefinite pause", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    let token_file = d
        .dirs
        .as_ref()
        .unwrap()
        .path()
        .join("token")
        .display()
        .to_string();
    let server = d.url.clone();
    let out = tokio::task::spawn_blocking({
        let (server, token_file) = (server.clone(), token_file.clone());
        // -A: without it kubectl-style listing shows the default namespace only.
        move || {
            cli(&[
                "status",
                "-A",
                "--server",
                &server,
                "--token-file",
                &token_file,
            ])
        }
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.contains("bookinfo/reviews")
            && table.contains("Paused")
            && table.contains("4/6") // the fourth step (pause), numbered from 1
            && table.contains(" 30%"),
        "{table}"
    );
    let out = tokio::task::spawn_blocking({
        let server = server.clone();
        move || cli(&["promote", "bookinfo/reviews", "--server", &server])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "no token: refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = tokio::task::spawn_blocking(move || {
        cli(&[
            "promote",
            "bookinfo/reviews",
            "--server",
            &server,
            "--token-file",
            &token_file,
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&d, "Promoted", Duration::from_secs(30), |s| {
        phase(s) == "Promoted"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_skywalking_alarm_rolls_back_at_once() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{ruleName: \"service_resp_time_rule\", name: \"^reviews\\\\.bookinfo$\"}]\n");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    let now = chrono::Utc::now().timestamp_millis();
    let payload = serde_json::json!([
        {"scopeId": 1, "scope": "SERVICE", "name": "ratings.bookinfo", "id0": "x", "id1": "", "ruleName": "service_resp_time_rule", "alarmMessage": "other", "startTime": now},
        {"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo", "id0": "cmV2aWV3cy5ib29raW5mbw==.1", "id1": "", "ruleName": "service_resp_time_rule",
         "alarmMessage": "Response time of service reviews.bookinfo is more than 1000ms", "startTime": now, "uuid": "u-1"}
    ]);
    let c = http();
    let hook = format!("{}/webhooks/skywalking", d.url);
    assert_eq!(
        c.post(&hook).json(&payload).send().await.unwrap().status(),
        401
    );
    let r = c
        .post(&hook)
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["matched"],
        serde_json::json!(["bookinfo/reviews"]),
        "{body}"
    );
    // The rollback happened while the webhook was handled: no polling interval involved.
    let s = status(&d).await;
    assert_eq!(phase(&s), "Aborted", "{s:#}");
    assert!(
        s["status"]["abort"]["alarm"]
            .as_str()
            .unwrap_or("")
            .contains("service_resp_time_rule"),
        "{s:#}"
    );
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    // Re-delivery is handled once; a malformed body changes nothing.
    let again: Value = c
        .post(&hook)
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Only the alarm that rolled the canary back is remembered; the other matched nothing.
    assert_eq!(again["duplicates"], 1, "{again}");
    assert_eq!(again["matched"], serde_json::json!([]), "{again}");
    let bad = c
        .post(&hook)
        .bearer_auth(TOKEN)
        .body("{\"not\": \"an array\"}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// Issue 15 item 8: another team's YAML typo in an unrelated Istio file under `--manifests`
/// must not block the rollback of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_unrelated_manifest_does_not_block_a_rollback() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{ruleName: \"service_resp_time_rule\", name: \"^reviews\\\\.bookinfo$\"}]\n");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    let broken = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: bookinfo}\nspec:\n  hosts: [ratings\n  http: []\n";
    std::fs::write(d.manifests.join("other.yaml"), broken).unwrap();
    let payload = serde_json::json!([
        {"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo", "id0": "cmV2aWV3cy5ib29raW5mbw==.1", "id1": "", "ruleName": "service_resp_time_rule",
         "alarmMessage": "Response time of service reviews.bookinfo is more than 1000ms", "startTime": chrono::Utc::now().timestamp_millis(), "uuid": "u-2"}
    ]);
    let r = http()
        .post(format!("{}/webhooks/skywalking", d.url))
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["matched"],
        serde_json::json!(["bookinfo/reviews"]),
        "{body}"
    );
    wait_for(
        &d,
        "the rollback written",
        Duration::from_secs(10),
        aborted_and_written,
    )
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    assert_eq!(
        std::fs::read_to_string(d.manifests.join("other.yaml")).unwrap(),
        broken
    );
}

/// Issue 15 item 11, the rollback path's order in file mode: the Aborted status is durable in
/// the state directory's journal (one synced write) before the VirtualService is renamed, and
/// its JSON file is saved right after, in the background. That save is held here (a FIFO at
/// its temporary file's name blocks its `open`) and the daemon killed at that point, after the
/// alarm was answered: the JSON file still says Paused, the manifest holds the rollback. The
/// restarted daemon puts the journal's Aborted status into the file before reading it: it
/// stays aborted and never exposes the canary again. Without the journal's replay the restart
/// would resume the pause at 30 % from the file... and find the routes at 0 (aborted "not
/// resuming forward"): the test tells them apart by the abort's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_abort_is_journaled_keeps_the_rollback_and_its_reason() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{ruleName: \"service_resp_time_rule\", name: \"^reviews\\\\.bookinfo$\"}]\n");
    let mut d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    let file = json_files(&d.state)
        .into_iter()
        .find(|p| p.ends_with("bookinfo/reviews.json"))
        .expect("the state file");
    let fifo = file
        .parent()
        .unwrap()
        .join(format!(".reviews.tmp-{}", d.child.id()));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let payload = serde_json::json!([
        {"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo", "id0": "cmV2aWV3cy5ib29raW5mbw==.1", "id1": "", "ruleName": "service_resp_time_rule",
         "alarmMessage": "Response time of service reviews.bookinfo is more than 1000ms", "startTime": chrono::Utc::now().timestamp_millis(), "uuid": "u-held"}
    ]);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        http()
            .post(format!("{}/webhooks/skywalking", d.url))
            .bearer_auth(TOKEN)
            .json(&payload)
            .send(),
    )
    .await
    .expect("the alarm waited for the JSON file")
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        saved["phase"], "Paused",
        "the JSON save was not held: {saved:#}"
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    std::fs::remove_file(&fifo).unwrap();

    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    // What the restarted daemon reads is in the file before it listens.
    let d = start(dirs, &running.url());
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["phase"], "Aborted", "{saved:#}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(vs_weights(&d.manifests), (100, 0), "exposed again");
        if let Ok(s) = try_status(&d).await
            && aborted_and_written(&s)
        {
            let message = s["status"]["message"].to_string();
            assert!(
                message.contains("service_resp_time_rule"),
                "not the alarm's abort: {s:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the restart lost the abort");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_are_picked_up_and_invalid_ones_refused() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the indefinite pause", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    let file = d.config.join("canary.yaml");
    // A typo is refused: the running canary keeps its state.
    std::fs::write(&file, yaml.replace("  revision: v2", "  revison: v3")).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = status(&d).await;
    assert_eq!(s["status"]["revision"], "v2", "{s:#}");
    assert_eq!(s["status"]["currentStepIndex"], 3);
    // A new revision starts a new run from step 0.
    std::fs::write(&file, yaml.replace("  revision: v2", "  revision: v3")).unwrap();
    wait_for(&d, "the v3 run", Duration::from_secs(20), |s| {
        s["status"]["revision"] == "v3"
    })
    .await;
    // A canary that is no longer declared leaves /metrics; the new one appears.
    assert!(yaml.contains("{name: reviews, "), "{yaml}");
    std::fs::write(&file, yaml.replace("{name: reviews, ", "{name: ratings, ")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = http()
            .get(format!("{}/metrics", d.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Gauges describe the present and go; counters keep their history (Prometheus style).
        let gauge_of_reviews = m.lines().any(|l| {
            (l.starts_with("skycanary_canary_phase{")
                || l.starts_with("skycanary_canary_weight{")
                || l.starts_with("skycanary_measurement_value{"))
                && l.contains(r#"name="reviews""#)
        });
        if m.contains(r#"name="ratings""#) && !gauge_of_reviews {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains(r#"skycanary_canary_phase{namespace="bookinfo",name="ratings""#),
        "{metrics}"
    );
}

fn alertmanager_payload(status: &str, service: &str, starts_at: &str, fingerprint: &str) -> Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "skycanary",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "service": service},
        "commonAnnotations": {"summary": "5xx ratio above 5%"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HighErrorRate", "namespace": "bookinfo", "service": service},
            "annotations": {"summary": "5xx ratio above 5%"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": fingerprint
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_alertmanager_alert_rolls_back_at_once() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alerts: [{labels: {alertname: HighErrorRate, service: \"reviews.*\"}}]\n");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    let c = http();
    let hook = format!("{}/webhooks/alertmanager", d.url);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let post = |body: Value| {
        let c = c.clone();
        let hook = hook.clone();
        async move {
            let r = c
                .post(&hook)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let firing = alertmanager_payload("firing", "reviews-canary", &now, "c2e8d2a1f0b3e4d5");

    // No token: 401, nothing changes.
    let r = c.post(&hook).json(&firing).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Resolved, another service, older than the run, malformed: nothing changes.
    let (s, body) = post(alertmanager_payload(
        "resolved",
        "reviews-canary",
        &now,
        "c2e8d2a1f0b3e4d5",
    ))
    .await;
    assert_eq!(
        (s, &body["resolved"]),
        (200, &serde_json::json!(1)),
        "{body}"
    );
    let (s, body) = post(alertmanager_payload("firing", "ratings", &now, "9a1b")).await;
    assert_eq!(
        (s, &body["matched"]),
        (200, &serde_json::json!([])),
        "{body}"
    );
    let (s, body) = post(alertmanager_payload(
        "firing",
        "reviews-canary",
        "2020-01-01T00:00:00Z",
        "0ld",
    ))
    .await;
    assert_eq!(
        (s, &body["olderThanRun"]),
        (200, &serde_json::json!(1)),
        "{body}"
    );
    // No startsAt: kept with an unknown start (never older than the run); this one matches
    // nothing. A malformed alert is refused alone: 422 naming it.
    let (s, body) = post(serde_json::json!({"version": "4", "alerts": [
        {"status": "firing", "labels": {}},
        {"status": "pending", "labels": {}, "startsAt": now}
    ]}))
    .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["received"], 1, "{body}");
    assert_eq!(body["matched"], serde_json::json!([]), "{body}");
    assert_eq!(body["rejected"][0]["index"], 1, "{body}");
    let st = status(&d).await;
    assert_eq!(phase(&st), "Paused", "{st:#}");
    assert_eq!(vs_weights(&d.manifests), (70, 30));

    // The matching alert: rolled back when the POST returns.
    let (s, body) = post(firing.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(
        body["matched"],
        serde_json::json!(["bookinfo/reviews"]),
        "{body}"
    );
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let st = status(&d).await;
    assert_eq!(phase(&st), "Aborted", "{st:#}");
    let abort = &st["status"]["abort"];
    assert!(
        abort["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("Alertmanager alarm HighErrorRate"),
        "{abort:#}"
    );
    assert!(
        abort["alarm"]
            .as_str()
            .unwrap_or("")
            .contains("service=\"reviews-canary\""),
        "{abort:#}"
    );
    // Alertmanager repeats a firing alert every repeat_interval: handled once.
    let (_, again) = post(firing).await;
    assert_eq!(again["duplicates"], 1, "{again}");
    let metrics = c
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("skycanary_alarms_matched_total{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(
        line,
        r#"skycanary_alarms_matched_total{namespace="bookinfo",name="reviews",source="alertmanager"} 1"#,
        "labelled by the canary and the source only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_skywalking_alarm_rolls_back() {
    let (sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{scope: Service, name: \"reviews\\\\.bookinfo\"}]\n");
    let d = start_with(
        setup(&yaml),
        &running.url(),
        &["--alarm-poll-interval", "200ms"],
    );
    let st = wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    let run_start: chrono::DateTime<chrono::Utc> = st["status"]["startedAt"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{st:#}"));
    // Another service, and an alarm from before this run: no rollback.
    sim.add_alarm(SimAlarm::new(
        SimEntity::service("ratings.bookinfo"),
        chrono::Utc::now(),
        "Response time of service ratings.bookinfo is more than 1000ms",
    ));
    sim.add_alarm(SimAlarm::new(
        SimEntity::service("reviews.bookinfo"),
        run_start - chrono::Duration::seconds(1),
        "an earlier release",
    ));
    let polls_before = sim.requests().len();
    let start = Instant::now();
    while sim
        .requests()
        .iter()
        .skip(polls_before)
        .filter(|r| r.raw_body.contains("SkycanaryAlarms"))
        .count()
        < 3
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no poll reached the OAP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = status(&d).await;
    assert_eq!(phase(&st), "Paused", "{st:#}");
    assert_eq!(vs_weights(&d.manifests), (70, 30));

    sim.add_alarm(SimAlarm::new(
        SimEntity::service("reviews.bookinfo"),
        chrono::Utc::now(),
        "Response time of service reviews.bookinfo is more than 1000ms",
    ));
    let st = wait_for(&d, "the polled rollback", Duration::from_secs(30), |s| {
        aborted_and_written(s)
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let abort = &st["status"]["abort"];
    assert!(
        abort["alarm"]
            .as_str()
            .unwrap_or("")
            .contains("(reviews.bookinfo)"),
        "{abort:#}"
    );
    assert!(
        abort["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("SkyWalking alarm Response time"),
        "{abort:#}"
    );
}

#[test]
fn alarm_polling_needs_an_oap() {
    // The template names its OAP, so only the poller lacks one.
    let yaml = canary("Abort").replace(
        "        window: {duration: 3m, alignToStep: false}",
        "        address: http://127.0.0.1:1\n        window: {duration: 3m, alignToStep: false}",
    );
    let dirs = setup(&yaml);
    let root = dirs.path();
    let token = root.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(["run", "--config"])
        .arg(root.join("config"))
        .arg("--manifests")
        .arg(root.join("istio"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--alarm-poll-interval",
            "30s",
            "--token-file",
        ])
        .arg(&token)
        .env_remove("SKYCANARY_SKYWALKING")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--alarm-poll-interval needs --skywalking"),
        "{err}"
    );
}

#[test]
fn run_refuses_analyses_without_an_oap_before_exposing_the_canary() {
    let dirs = setup(&canary("Abort"));
    let root = dirs.path();
    let token = root.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let vs_before = std::fs::read(root.join("istio/reviews.yaml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(["run", "--config"])
        .arg(root.join("config"))
        .arg("--manifests")
        .arg(root.join("istio"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token)
        .env_remove("SKYCANARY_SKYWALKING")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    // Both analysis steps are named, with file, line and field.
    for step in ["spec.steps[1].analysis", "spec.steps[5].analysis"] {
        assert!(
            err.lines().any(|l| l.contains("canary.yaml")
                && l.contains(step)
                && l.contains("Canary bookinfo/reviews")),
            "{step} in {err}"
        );
    }
    assert!(err.contains("--skywalking"), "says what to add: {err}");
    assert_eq!(
        std::fs::read(root.join("istio/reviews.yaml")).unwrap(),
        vs_before,
        "nothing was routed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_analyses_cannot_be_planned_is_refused() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let address = format!(
        "        address: {}\n        window: {{duration: 3m, alignToStep: false}}",
        running.url()
    );
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace(
            "        window: {duration: 3m, alignToStep: false}",
            &address,
        );
    let d = start(setup(&yaml), "");
    wait_for(&d, "the indefinite pause", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    // A new revision whose template lost its address, with no --skywalking to fall back on.
    let broken = yaml
        .replace(
            &address,
            "        window: {duration: 3m, alignToStep: false}",
        )
        .replace("  revision: v2", "  revision: v3");
    std::fs::write(d.config.join("canary.yaml"), broken).unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let s = status(&d).await;
    assert_eq!(s["status"]["revision"], "v2", "reload refused: {s:#}");
    assert_eq!(s["status"]["currentStepIndex"], 3, "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (70, 30));
}

/// A CA file that vanishes after the config loaded: the next analysis cannot build its
/// client, so it does not start; the driver records it as an Error run that says why, and
/// `onAnalysisError: Abort` rolls back, as for any analysis Error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_whose_ca_file_vanished_is_an_error_that_says_why() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, params.self_signed(&key).unwrap().pem()).unwrap();
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {duration: 5s}")
        .replace(
            "        timeout: 2s\n",
            &format!(
                "        timeout: 2s\n        caFile: {}\n",
                ca_file.display()
            ),
        );
    let d = start(setup(&yaml), &running.url());
    wait_for(
        &d,
        "the pause after the first analysis",
        Duration::from_secs(30),
        |s| s["status"]["currentStepIndex"] == 3,
    )
    .await;
    std::fs::remove_file(&ca_file).unwrap();
    let s = wait_for(&d, "Aborted", Duration::from_secs(30), aborted_and_written).await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let runs = s["status"]["analysisRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = runs.last().expect("analysis runs");
    assert_eq!(last["status"]["phase"], "Error", "{s:#}");
    let message = last["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("cannot read CA file {}", ca_file.display())),
        "{s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsaved_abort_survives_a_config_reload() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {duration: 5s}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{ruleName: \"service_resp_time_rule\"}]\n");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the timed pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    // The state store stops taking writes: the temporary file the next save needs is taken
    // by a directory (the saved status itself stays readable, at "Paused").
    let (file, blocker) = block_state_saves(&d, "reviews");
    let saved_before = std::fs::read(&file).unwrap();

    let now = chrono::Utc::now().timestamp_millis();
    let payload = serde_json::json!([{"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo",
        "id0": "x", "id1": "", "ruleName": "service_resp_time_rule", "alarmMessage": "slow",
        "startTime": now, "uuid": "u-unsaved"}]);
    let r = http()
        .post(format!("{}/webhooks/skywalking", d.url))
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    assert_eq!(phase(&status(&d).await), "Aborted");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        saved_before,
        "the abort is not saved"
    );

    // A valid edit of the Canary (same revision) while the abort lives only in memory.
    let edited = yaml.replace(
        "service_resp_time_rule",
        "service_resp_time_rule|service_sla_rule",
    );
    assert_ne!(edited, yaml);
    std::fs::write(d.config.join("canary.yaml"), edited).unwrap();
    // Past the reload and past the end of the 5 s pause the old status would resume.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let s = status(&d).await;
    assert_eq!(phase(&s), "Aborted", "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (100, 0), "never exposed again");

    // The store recovers: the abort is saved.
    std::fs::remove_dir_all(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        if saved["phase"] == "Aborted" {
            break;
        }
        assert!(Instant::now() < deadline, "abort never saved: {saved:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_removed_mid_release_is_rolled_back() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    // Only the template stays: the Canary is gone (default onDelete: Rollback).
    let template = yaml.split("---\n").nth(1).expect("the template document");
    std::fs::write(d.config.join("canary.yaml"), template).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vs_weights(&d.manifests) != (100, 0) {
        assert!(
            Instant::now() < deadline,
            "traffic left on the removed canary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_metrics_report_a_status_that_cannot_be_saved() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    let c = http();
    let readyz = format!("{}/readyz", d.url);
    assert_eq!(c.get(&readyz).send().await.unwrap().status(), 200);
    // The state store stops taking writes (a directory where the temporary file goes).
    let (file, blocker) = block_state_saves(&d, "reviews");
    // Any status change now needs a save: an abort (its reply may say the save failed).
    let _ = c
        .post(format!("{}/api/v1/canaries/bookinfo/reviews/abort", d.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"reason": "readiness test"}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = c.get(&readyz).send().await.unwrap();
        if r.status() == 503 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "still ready with an unsavable status"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("status cannot be saved: canary bookinfo/reviews"),
        "{body:#}"
    );
    assert_eq!(body["unsaved"][0]["kind"], "canary", "{body:#}");
    let metrics = c
        .get(format!("{}/metrics", d.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("skycanary_state_save_failures_total{")
                && l.contains(r#"kind="canary""#)
                && l.contains(r#"namespace="bookinfo""#)
                && l.contains(r#"name="reviews""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no save failure counted:\n{metrics}"));
    assert!(failures >= 1.0, "{failures}");

    // The store recovers: the retried save lands and the daemon is ready again.
    std::fs::remove_dir_all(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["phase"], "Aborted", "{saved:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_never_re_exposes_a_canary_whose_rollback_was_not_saved() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {duration: 3s}");
    let mut d = start(setup(&yaml), &running.url());
    wait_for(&d, "the timed pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    // The rollback landed in the routes, its status never reached the disk (full state disk,
    // then a crash): the saved status still says "Paused at 30 %" with a pause that has ended.
    let vs = d.manifests.join("reviews.yaml");
    let text = std::fs::read_to_string(&vs).unwrap();
    let rolled_back =
        text.replacen("weight: 70", "weight: 100", 1)
            .replacen("weight: 30", "weight: 0", 1);
    assert_ne!(text, rolled_back);
    std::fs::write(&vs, rolled_back).unwrap();
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    let d = start(dirs, &running.url());
    let s = wait_for(
        &d,
        "the abort",
        Duration::from_secs(10),
        aborted_and_written,
    )
    .await;
    assert!(
        s["status"]["abort"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("saved status says 30 %"),
        "{s:#}"
    );
    // Well past the pause's end: never moved forward again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    assert_eq!(phase(&status(&d).await), "Aborted");
}

/// Issue 14, item 1: a rollback written while the status could not be saved, then SIGKILL
/// (its JSON save blocked, its journal record lost). The saved status still says Paused at
/// 30 % with a timed pause: resuming from it would move on to 60 %. The restarted daemon sees the routes at stable and aborts instead. Unlike
/// `a_restart_never_re_exposes_a_canary_whose_rollback_was_not_saved`, the rollback is the
/// daemon's own, written during a real store outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsaved_abort_survives_a_sigkill() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {duration: 3s}");
    let mut d = start(setup(&yaml), &running.url());
    wait_for(&d, "the timed pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    let (file, blocker) = block_state_saves(&d, "reviews");
    let _ = http()
        .post(format!("{}/api/v1/canaries/bookinfo/reviews/abort", d.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"reason": "unsaved"}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vs_weights(&d.manifests) != (100, 0) {
        assert!(Instant::now() < deadline, "never rolled back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        saved["phase"], "Paused",
        "the abort is not saved: {saved:#}"
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    std::fs::remove_dir_all(&blocker).unwrap();
    lose_the_journal(&d);

    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    let d = start(dirs, &running.url());
    let s = wait_for(
        &d,
        "the rollback again",
        Duration::from_secs(10),
        aborted_and_written,
    )
    .await;
    assert!(
        s["status"]["abort"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not resuming forward"),
        "{s:#}"
    );
    assert_eq!(vs_weights(&d.manifests), (100, 0), "never exposed again");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["phase"], "Aborted", "{saved:#}");
}

/// Issue 14, RELIABILITY.md window (1): the first exposure was never confirmed in the saved
/// status (only its write is pending), the canary was rolled back and the daemon killed before
/// any save (JSON save blocked, journal record lost). Routes at 0 cannot tell this from "the first write never landed", and the pending
/// write would be re-sent; the rollback marker the rollback left (file mode: in the sidecar
/// state file, not in the manifest) makes the restarted daemon abort instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_marker_stops_a_restart_from_re_sending_an_unconfirmed_first_exposure() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let mut d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    let manifest_before_abort = std::fs::read_to_string(d.manifests.join("reviews.yaml")).unwrap();
    let (file, blocker) = block_state_saves(&d, "reviews");
    let _ = http()
        .post(format!("{}/api/v1/canaries/bookinfo/reviews/abort", d.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"reason": "unsaved"}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vs_weights(&d.manifests) != (100, 0) {
        assert!(Instant::now() < deadline, "never rolled back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    std::fs::remove_dir_all(&blocker).unwrap();
    lose_the_journal(&d);
    // The marker is in the sidecar; the manifest changed only in its weight lines.
    let sidecar = d
        .manifests
        .join(".skycanary/virtualservice_bookinfo_reviews.state");
    let kept = std::fs::read_to_string(&sidecar).expect("the sidecar state file");
    assert!(kept.contains("skycanary.io/rolled-back"), "{kept}");
    let manifest = std::fs::read_to_string(d.manifests.join("reviews.yaml")).unwrap();
    assert!(!manifest.contains("skycanary.io"), "{manifest}");
    assert_eq!(
        manifest.lines().count(),
        manifest_before_abort.lines().count()
    );
    // Make the saved status the first exposure's: asked for (pending), never confirmed.
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        saved["phase"], "Paused",
        "the abort is not saved: {saved:#}"
    );
    let exposure = saved["applied"].clone();
    assert_eq!(exposure["canaryWeight"], 30, "{saved:#}");
    let obj = saved.as_object_mut().unwrap();
    obj.remove("applied");
    obj.remove("pause");
    obj.insert("phase".into(), "Progressing".into());
    obj.insert(
        "routingWrite".into(),
        serde_json::json!({"routing": exposure, "requestedAt": obj["stepStartedAt"], "failures": 0}),
    );
    std::fs::write(&file, serde_json::to_vec(&saved).unwrap()).unwrap();

    let dirs = d.dirs.take().expect("dirs");
    drop(d);
    let d = start(dirs, &running.url());
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        assert_eq!(vs_weights(&d.manifests), (100, 0), "exposed again");
        if let Ok(s) = try_status(&d).await
            && aborted_and_written(&s)
        {
            break s;
        }
        assert!(Instant::now() < deadline, "never aborted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = s["status"]["abort"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("rollback marker"), "{s:#}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vs_weights(&d.manifests), (100, 0), "never exposed again");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["phase"], "Aborted", "{saved:#}");
}

/// A Canary `name` (no analyses) on its own VirtualService `name`, rolled back by the
/// SkyWalking alarm `service_resp_time_rule` on `name.bookinfo` when `alarmed`; `pauses`
/// indefinite pauses after its 10 % step.
fn plain_canary(name: &str, alarmed: bool, pauses: usize) -> String {
    let rollback = if alarmed {
        format!(
            "  rollbackOn:\n    alarms: [{{ruleName: service_resp_time_rule, name: '^{name}\\.bookinfo$'}}]\n"
        )
    } else {
        String::new()
    };
    let steps = "  - pause: {}\n".repeat(pauses);
    format!(
        "apiVersion: skycanary.io/v1alpha1\nkind: Canary\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  revision: v2\n{rollback}  trafficRouting:\n    istio:\n      virtualService: {{name: {name}, routes: [primary]}}\n      stableService: reviews-stable\n      canaryService: reviews-canary\n  steps:\n  - setWeight: 10\n{steps}"
    )
}

fn named_vs_weights(manifests: &Path, name: &str) -> (i64, i64) {
    let text = std::fs::read_to_string(manifests.join(format!("{name}.yaml"))).unwrap();
    let v = &skycanary::resources::yaml::parse_documents(&text).unwrap()[0].value;
    let r = &v["spec"]["http"][0]["route"];
    (
        r[0]["weight"].as_i64().unwrap(),
        r[1]["weight"].as_i64().unwrap(),
    )
}

async fn get_json(url: &str) -> Value {
    http()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_alarm_rolls_back_while_the_config_reloads() {
    const TARGETS: [&str; 3] = ["svc-0", "svc-1", "svc-2"];
    let dirs = tempfile::tempdir().unwrap();
    for d in ["config", "istio", "state"] {
        std::fs::create_dir_all(dirs.path().join(d)).unwrap();
    }
    let targets: Vec<String> = TARGETS.iter().map(|n| plain_canary(n, true, 1)).collect();
    std::fs::write(
        dirs.path().join("config/targets.yaml"),
        targets.join("---\n"),
    )
    .unwrap();
    let ratings = dirs.path().join("config/ratings.yaml");
    std::fs::write(&ratings, plain_canary("ratings", false, 1)).unwrap();
    for n in TARGETS.iter().chain(&["ratings"]) {
        let vs = VS.replace("name: reviews,", &format!("name: {n},"));
        std::fs::write(dirs.path().join(format!("istio/{n}.yaml")), vs).unwrap();
    }
    let d = start_with(dirs, "", &[]);
    let api = format!("{}/api/v1/canaries/bookinfo", d.url);
    for n in TARGETS {
        let deadline = Instant::now() + Duration::from_secs(30);
        while phase(&get_json(&format!("{api}/{n}")).await) != "Paused" {
            assert!(Instant::now() < deadline, "{n} never paused at 10 %");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // 20 reloads, each an edit of the unrelated canary seen through the API.
    let reloads = tokio::spawn({
        let api = api.clone();
        async move {
            for i in 0..20usize {
                let pauses = 2 + i % 2;
                std::fs::write(&ratings, plain_canary("ratings", false, pauses)).unwrap();
                let deadline = Instant::now() + Duration::from_secs(15);
                while get_json(&format!("{api}/ratings")).await["steps"] != pauses + 1 {
                    assert!(Instant::now() < deadline, "reload {i} not picked up");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });

    // Meanwhile an alarm every 5 ms, round robin; a rolled-back canary is retried before its
    // next alarm, so every alarm is sent to an armed canary and must roll it back.
    let hook = format!("{}/webhooks/skywalking", d.url);
    let c = http();
    let mut aborted = [false; 3];
    let (mut alarms, mut n) = (0, 0usize);
    while !reloads.is_finished() {
        n += 1;
        let i = n % TARGETS.len();
        let name = TARGETS[i];
        if aborted[i] {
            let r = c
                .post(format!("{api}/{name}/retry"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "retry {name}: {}", r.status());
            assert_eq!(named_vs_weights(&d.manifests, name), (90, 10));
            aborted[i] = false;
        } else {
            let payload = serde_json::json!([{"scopeId": 1, "scope": "SERVICE",
                "name": format!("{name}.bookinfo"), "id0": "x", "id1": "",
                "ruleName": "service_resp_time_rule", "alarmMessage": "slow",
                "startTime": chrono::Utc::now().timestamp_millis(), "uuid": format!("u-{n}")}]);
            let r = c
                .post(&hook)
                .bearer_auth(TOKEN)
                .json(&payload)
                .send()
                .await
                .unwrap();
            let code = r.status();
            let body: Value = r.json().await.unwrap();
            assert_eq!(code, 200, "alarm {n}: {body}");
            assert_eq!(
                body["matched"],
                serde_json::json!([format!("bookinfo/{name}")]),
                "alarm {n} matched nothing during a reload: {body}"
            );
            // Answered only once written.
            assert_eq!(named_vs_weights(&d.manifests, name), (100, 0), "alarm {n}");
            aborted[i] = true;
            alarms += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reloads.await.unwrap();
    assert!(alarms >= 20, "only {alarms} alarms during 20 reloads");
}

/// Sets the daemon's soft RLIMIT_NOFILE to `n` while it runs (the hard limit stays, so it
/// can be raised again without privileges).
#[cfg(target_os = "linux")]
fn set_nofile(d: &Daemon, n: u64) {
    let pid = d.child.id() as libc::pid_t;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: with a null new limit, prlimit only writes the current one into `old`.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: n.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads `lim` and writes nothing (old limit pointer is null).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_an_alarm_is_answered_200_only_once_written() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{ruleName: \"service_resp_time_rule\"}]\n");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    // One connection opened before the flood carries the alarm.
    let c = http();
    assert!(
        c.get(format!("{}/healthz", d.url))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let open = std::fs::read_dir(format!("/proc/{}/fd", d.child.id()))
        .unwrap()
        .count() as u64;
    set_nofile(&d, open + 2);
    // A connection flood takes the last descriptors (and waits in the backlog beyond them).
    let addr = d.url.trim_start_matches("http://").to_string();
    let flood: Vec<_> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let payload = serde_json::json!([{"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo",
        "id0": "x", "id1": "", "ruleName": "service_resp_time_rule", "alarmMessage": "slow",
        "startTime": chrono::Utc::now().timestamp_millis(), "uuid": "u-emfile"}]);
    let r = c
        .post(format!("{}/webhooks/skywalking", d.url))
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let weights = vs_weights(&d.manifests);
    match code {
        200 => assert_eq!(
            weights,
            (100, 0),
            "200 before the rollback was written: {body}"
        ),
        503 => assert!(body.to_string().contains("rollbackPending"), "{body}"),
        other => panic!("{other}: {body}"),
    }

    // Descriptors come back: the rollback lands (if it had not) and the abort is saved.
    drop(flood);
    set_nofile(&d, 4096);
    wait_for(&d, "Aborted and written", Duration::from_secs(30), |s| {
        aborted_and_written(s)
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saved: Value = serde_json::from_slice(
            &std::fs::read(d.state.join("canary/bookinfo/reviews.json")).unwrap(),
        )
        .unwrap();
        if saved["phase"] == "Aborted" {
            break;
        }
        assert!(Instant::now() < deadline, "abort never saved: {saved:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The daemon's open files that are prepared rollback texts: unnamed files in `dir`
/// (`O_TMPFILE`, shown by the kernel as `DIR/#INODE (deleted)`).
#[cfg(target_os = "linux")]
fn prepared_rollbacks(pid: u32, dir: &std::path::Path) -> Vec<u64> {
    let prefix = format!("{}/#", std::fs::canonicalize(dir).unwrap().display());
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix(&prefix)?
                .strip_suffix(" (deleted)")?
                .parse()
                .ok()
        })
        .collect()
}

/// File mode: once the canary is exposed, its rollback is already written and synced in an
/// unnamed file beside the manifest (nothing appears in the directory); the alarm's rollback
/// uses it (the file is gone after the answer) and writes the stable weights.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_canary_has_its_rollback_prepared_and_the_alarm_renames_it() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  - pause: {duration: 1s}", "  - pause: {}")
        .replace("  onAnalysisError: Abort\n", "  onAnalysisError: Abort\n  rollbackOn:\n    alarms: [{ruleName: \"service_resp_time_rule\"}]\n");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the pause at 30%", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    let pid = d.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let prepared = loop {
        if let [inode] = prepared_rollbacks(pid, &d.manifests)[..] {
            break inode;
        }
        assert!(Instant::now() < deadline, "no rollback prepared at 30%");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let names: Vec<String> = std::fs::read_dir(&d.manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(
        names.is_empty(),
        "temporary files in the manifests: {names:?}"
    );
    let payload = serde_json::json!([{"scopeId": 1, "scope": "SERVICE", "name": "reviews.bookinfo",
        "id0": "x", "id1": "", "ruleName": "service_resp_time_rule", "alarmMessage": "slow",
        "startTime": chrono::Utc::now().timestamp_millis(), "uuid": "u-prepared"}]);
    let r = http()
        .post(format!("{}/webhooks/skywalking", d.url))
        .bearer_auth(TOKEN)
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    // The manifest now is the file prepared at 30 %.
    let vs = std::fs::read_dir(&d.manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "yaml"))
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&vs).unwrap().ino(), prepared);
    assert!(prepared_rollbacks(pid, &d.manifests).is_empty());
}

/// Issue 15 item 5, file mode: an abort while one of two VirtualServices is missing writes the
/// other at once, says "rollback pending" naming the missing one, and lands the rest by itself
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_writes_every_virtual_service_it_can_and_retries_the_rest() {
    let two = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    istio:
      virtualServices:
      - {name: reviews, routes: [primary]}
      - {name: reviews-edge, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 10
  - pause: {}
"#;
    let dirs = setup(two);
    let edge = VS.replace("name: reviews,", "name: reviews-edge,");
    std::fs::write(dirs.path().join("istio/edge.yaml"), &edge).unwrap();
    let d = start(dirs, "");
    wait_for(&d, "Paused at 10", Duration::from_secs(30), |s| {
        phase(s) == "Paused" && s["status"].get("routingWrite").is_none()
    })
    .await;
    assert_eq!(vs_weights(&d.manifests), (90, 10));
    let aside = d.manifests.parent().unwrap().join("edge.yaml.aside");
    std::fs::rename(d.manifests.join("edge.yaml"), &aside).unwrap();
    let r = http()
        .post(format!("{}/api/v1/canaries/bookinfo/reviews/abort", d.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = wait_for(&d, "rollback pending", Duration::from_secs(10), |s| {
        s["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rollback pending"))
    })
    .await;
    assert_eq!(phase(&s), "Aborted");
    assert!(
        s["status"]["message"]
            .as_str()
            .unwrap()
            .contains("reviews-edge"),
        "{s:#}"
    );
    // The VirtualService that exists is rolled back already.
    assert_eq!(vs_weights(&d.manifests), (100, 0));
    std::fs::rename(&aside, d.manifests.join("edge.yaml")).unwrap();
    wait_for(
        &d,
        "rollback landed",
        Duration::from_secs(30),
        aborted_and_written,
    )
    .await;
    let text = std::fs::read_to_string(d.manifests.join("edge.yaml")).unwrap();
    let v = &skycanary::resources::yaml::parse_documents(&text).unwrap()[0].value;
    assert_eq!(v["spec"]["http"][0]["route"][1]["weight"], 0);
}

/// Issue 18: a Canary that fails validation on a reload is never silent: phase Invalid and
/// condition InvalidSpec with the message `validate` prints, in its state file and in the
/// API (`skycanary status`); a valid spec clears both. The running canary is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_canary_says_so_in_its_status_until_fixed() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    let d = start(setup(&yaml), &running.url());
    wait_for(&d, "the indefinite pause", Duration::from_secs(30), |s| {
        s["status"]["currentStepIndex"] == 3
    })
    .await;
    std::fs::write(
        d.manifests.join("ratings.yaml"),
        VS.replace("reviews", "ratings"),
    )
    .unwrap();
    let ratings = canary("Abort")
        .split("\n---\n")
        .next()
        .unwrap()
        .replace("reviews", "ratings");
    let file = d.config.join("ratings.yaml");
    std::fs::write(&file, ratings.replace("setWeight: 30", "setWeight: 150")).unwrap();
    let get = |name: &'static str| {
        let url = format!("{}/api/v1/canaries/bookinfo/{name}", d.url);
        async move {
            let r = http().get(url).bearer_auth(TOKEN).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let condition = |s: &Value, ty: &str| {
        s["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == ty).cloned())
            .unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let s = get("ratings").await;
        if s["status"]["phase"] == "Invalid" {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = shown["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ratings.yaml") && message.contains("spec.steps[2].setWeight"),
        "{shown:#}"
    );
    let inv = condition(&shown["status"], "InvalidSpec");
    assert_eq!(inv["status"], "True", "{shown:#}");
    assert_eq!(inv["message"], message);
    let saved: Value = serde_json::from_slice(
        &std::fs::read(d.state.join("canary/bookinfo/ratings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["phase"], "Invalid");
    assert_eq!(condition(&saved, "InvalidSpec")["message"], message);
    // The running canary goes on as it was.
    let s = status(&d).await;
    assert_eq!(s["status"]["currentStepIndex"], 3);
    assert_eq!(condition(&s["status"], "InvalidSpec")["status"], "False");
    assert_eq!(condition(&s["status"], "Paused")["status"], "True");
    // Fixed: driven, and the state file says the spec is valid.
    std::fs::write(&file, &ratings).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let saved: Value = serde_json::from_slice(
            &std::fs::read(d.state.join("canary/bookinfo/ratings.json")).unwrap(),
        )
        .unwrap();
        let api = get("ratings").await;
        if saved["phase"] != "Invalid"
            && condition(&saved, "InvalidSpec")["status"] == "False"
            && api["steps"] == 6
        {
            break;
        }
        assert!(Instant::now() < deadline, "{saved:#} {api:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 18: a plain log redirected to a file holds no ANSI escape bytes; a JSON log is one
/// flat object per line (`ts`, `level`, `msg` and the fields at the top level; every line of
/// a whole release is checked in `it logs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_in_files_and_flat_in_json() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace("  - pause: {duration: 1s}", "  - pause: {}");
    for format in ["plain", "json"] {
        let log = tempfile::NamedTempFile::new().unwrap();
        let d = start_logging(
            setup(&yaml),
            &running.url(),
            &["--log-format", format],
            Stdio::from(log.reopen().unwrap()),
        );
        wait_for(&d, "the indefinite pause", Duration::from_secs(30), |s| {
            s["status"]["currentStepIndex"] == 3
        })
        .await;
        drop(d);
        let text = std::fs::read(log.path()).unwrap();
        assert!(!text.is_empty(), "{format}: no log");
        assert!(
            !text.contains(&0x1b),
            "{format}: escape bytes in {}",
            String::from_utf8_lossy(&text)
        );
        if format == "json" {
            let text = String::from_utf8(text).unwrap();
            let mut canary_lines = 0;
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                for key in ["ts", "level", "msg"] {
                    assert!(v.get(key).is_some(), "no {key}: {line}");
                }
                assert!(v.get("fields").is_none(), "nested fields: {line}");
                if let Some(c) = v.get("canary") {
                    canary_lines += 1;
                    assert_eq!(c, "reviews", "{line}");
                    assert_eq!(v["namespace"], "bookinfo", "{line}");
                }
            }
            assert!(canary_lines > 0, "{text}");
        }
    }
}

/// The canary Deployment's manifest as file mode reads it (`status.readyReplicas`).
fn reviews_v2(ready: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: reviews-v2, namespace: bookinfo}}\n\
         spec: {{replicas: 2}}\nstatus: {{replicas: 2, readyReplicas: {ready}}}\n"
    )
}

/// Issue 19, file mode: a canary gated on a Deployment in `--manifests` waits, Paused with
/// reason CanaryNotReady and no exposing write, while the Deployment has no ready replica;
/// progresses by itself once it has; and is rolled back when its ready replicas drop to 0
/// under weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mode_canary_waits_for_its_deployment_and_rolls_back_when_it_is_lost() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace(
            "  onAnalysisError: Abort\n",
            "  onAnalysisError: Abort\n  workloadRef: {kind: Deployment, name: reviews-v2}\n",
        )
        .replace("  - pause: {duration: 1s}", "  - pause: {}");
    assert!(yaml.contains("workloadRef") && yaml.contains("pause: {}"));
    let dirs = setup(&yaml);
    let deployment = dirs.path().join("istio/reviews-v2.yaml");
    std::fs::write(&deployment, reviews_v2(0)).unwrap();
    let d = start(dirs, &running.url());
    let s = wait_for(
        &d,
        "the CanaryNotReady pause",
        Duration::from_secs(60),
        |s| s["status"]["pause"]["reason"] == "CanaryNotReady",
    )
    .await;
    assert_eq!(phase(&s), "Paused", "{s:#}");
    assert_eq!(s["status"]["readiness"]["canaryReady"], 0, "{s:#}");
    let message = s["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("0 of 1 canary pod(s) needed"), "{message}");
    let paused = s["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Paused"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(paused["reason"], "CanaryNotReady", "{s:#}");
    // Several readiness polls later, the route still sends nothing to the canary.
    for _ in 0..20 {
        assert_eq!(
            vs_weights(&d.manifests),
            (100, 0),
            "exposed while not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(phase(&status(&d).await), "Paused");
    // Ready: it resumes by itself and reaches the indefinite pause at 30 %.
    std::fs::write(&deployment, reviews_v2(2)).unwrap();
    let s = wait_for(&d, "the pause at 30 %", Duration::from_secs(90), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    assert_eq!(s["status"]["readiness"]["canaryReady"], 2, "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    // Every pod unready under weight: rolled back.
    std::fs::write(&deployment, reviews_v2(0)).unwrap();
    let s = wait_for(
        &d,
        "the rollback",
        Duration::from_secs(60),
        aborted_and_written,
    )
    .await;
    let reason = s["status"]["abort"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("CanaryNotReady:"), "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (100, 0));
}

/// Bookinfo's reviews split by DestinationRule subsets (v1 stable, v2 canary), as file mode
/// reads it.
const SUBSET_VS_AND_DR: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: primary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 100
    - destination: {host: reviews, subset: v2}
      weight: 0
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

/// Pod manifests: `reviews-v2-a` ready as `ready`, and a ready pod of another app that
/// carries the subset's `version: v2` label too.
fn v2_pods(ready: bool) -> String {
    let pod = |name: &str, app: &str, ready: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bookinfo, \
             labels: {{app: {app}, version: v2}}}}\nstatus:\n  conditions:\n  \
             - {{type: Ready, status: \"{}\"}}\n",
            if ready { "True" } else { "False" }
        )
    };
    format!(
        "{}---\n{}",
        pod("reviews-v2-a", "reviews", ready),
        pod("ratings-v2-a", "ratings", true)
    )
}

/// Issue 19, file mode, `workloadRef: {fromSubset: true}`: the canary's pods are the Pod
/// manifests carrying the DestinationRule's `v2` labels (and `app: reviews`). It waits while
/// none is ready (another app's ready `version: v2` pod does not count), progresses once one
/// is, and rolls back when it turns unready under weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mode_from_subset_canary_waits_for_the_subsets_pods() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace(
            "      stableService: reviews-stable\n      canaryService: reviews-canary\n",
            "      destinationRule: {name: reviews, stableSubsetName: v1, canarySubsetName: v2}\n",
        )
        .replace(
            "  onAnalysisError: Abort\n",
            "  onAnalysisError: Abort\n  \
             workloadRef: {fromSubset: true, selector: {matchLabels: {app: reviews}}}\n",
        )
        .replace("  - pause: {duration: 1s}", "  - pause: {}");
    assert!(yaml.contains("fromSubset") && yaml.contains("destinationRule"));
    let dirs = setup(&yaml);
    std::fs::write(dirs.path().join("istio/reviews.yaml"), SUBSET_VS_AND_DR).unwrap();
    let pods = dirs.path().join("istio/pods.yaml");
    std::fs::write(&pods, v2_pods(false)).unwrap();
    let d = start(dirs, &running.url());
    let s = wait_for(
        &d,
        "the CanaryNotReady pause",
        Duration::from_secs(60),
        |s| s["status"]["pause"]["reason"] == "CanaryNotReady",
    )
    .await;
    assert_eq!(s["status"]["readiness"]["canaryReady"], 0, "{s:#}");
    for _ in 0..20 {
        assert_eq!(
            vs_weights(&d.manifests),
            (100, 0),
            "exposed while not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&pods, v2_pods(true)).unwrap();
    let s = wait_for(&d, "the pause at 30 %", Duration::from_secs(90), |s| {
        s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused"
    })
    .await;
    assert_eq!(s["status"]["readiness"]["canaryReady"], 1, "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (70, 30));
    std::fs::write(&pods, v2_pods(false)).unwrap();
    let s = wait_for(
        &d,
        "the rollback",
        Duration::from_secs(60),
        aborted_and_written,
    )
    .await;
    let reason = s["status"]["abort"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("CanaryNotReady:"), "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (100, 0));
}

/// A Deployment missing from `--manifests` is unknown readiness: the canary waits, the
/// reason in its status, and gets no traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mode_canary_whose_deployment_is_missing_is_held_with_the_reason() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort").replace(
        "  onAnalysisError: Abort\n",
        "  onAnalysisError: Abort\n  workloadRef: {kind: Deployment, name: reviews-v2}\n",
    );
    let d = start(setup(&yaml), &running.url());
    let s = wait_for(
        &d,
        "the CanaryNotReady pause",
        Duration::from_secs(60),
        |s| s["status"]["pause"]["reason"] == "CanaryNotReady",
    )
    .await;
    let why = s["status"]["readiness"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("Deployment bookinfo/reviews-v2 not found in --manifests"),
        "{s:#}"
    );
    assert!(
        s["status"]["readiness"].get("canaryReady").is_none(),
        "{s:#}"
    );
    assert_eq!(vs_weights(&d.manifests), (100, 0), "never exposed");
}

/// A daemon whose stdout is closed (a supervisor that read its first line, `| head -1`) keeps
/// running: its announcements are best effort, its log goes to stderr. (It used to exit on
/// the broken pipe of its second line; found by the OpenAPI test under load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_stdout_is_closed_keeps_running() {
    let root = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/bookinfo");
    let (config, istio, state) = (
        root.path().join("config"),
        root.path().join("istio"),
        root.path().join("state"),
    );
    for d in [&config, &istio, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(example.join("canary.yaml"), config.join("canary.yaml")).unwrap();
    std::fs::copy(example.join("apdex.yaml"), config.join("apdex.yaml")).unwrap();
    std::fs::copy(
        example.join("istio/reviews.yaml"),
        istio.join("reviews.yaml"),
    )
    .unwrap();
    let token = root.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--manifests")
        .arg(&istio)
        .arg("--state-dir")
        .arg(&state)
        .arg("--simulator")
        .arg(example.join("simulator.yaml"))
        .env_remove("SKYCANARY_SKYWALKING")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--token-file"])
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    // Closed before the daemon writes anything: every announcement meets a broken pipe.
    drop(child.stdout.take());
    let url = format!("http://127.0.0.1:{port}/healthz");
    let start = Instant::now();
    let mut answered = 0;
    while answered < 5 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited ({status}) after its stdout was closed");
        }
        if http()
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            answered += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let _ = child.kill();
    let _ = child.wait();
}

/// `reviews-v2` with a pod template running `image`.
fn reviews_v2_image(image: &str, ready: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: reviews-v2, namespace: bookinfo}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: reviews, version: v2}}}}\n  \
         template:\n    metadata: {{labels: {{app: reviews, version: v2}}}}\n    spec:\n      \
         containers:\n      - {{name: reviews, image: \"{image}\"}}\n\
         status: {{replicas: 2, readyReplicas: {ready}}}\n"
    )
}

/// Issue 19, file mode: a Canary without `spec.revision` takes its revision from the
/// Deployment's pod template in `--manifests`. The first run is for the template it finds;
/// editing the manifest's image starts a new run by itself (from step 0, the canary's weight
/// back at 0 first, held until the new pods are ready), its revision the new template's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_mode_image_edit_starts_a_run_by_itself() {
    let (_sim, running) = sim_with_apdex(|_| Some(9950.0)).await;
    let yaml = canary("Abort")
        .replace("  revision: v2\n", "")
        .replace(
            "  onAnalysisError: Abort\n",
            "  onAnalysisError: Abort\n  workloadRef: {kind: Deployment, name: reviews-v2}\n",
        )
        .replace("  - pause: {duration: 1s}", "  - pause: {}");
    assert!(!yaml.contains("revision:") && yaml.contains("pause: {}"));
    let dirs = setup(&yaml);
    let deployment = dirs.path().join("istio/reviews-v2.yaml");
    std::fs::write(&deployment, reviews_v2_image("reviews:2.1.0", 2)).unwrap();
    let d = start(dirs, &running.url());
    let at_30 = |s: &Value| s["status"]["currentStepIndex"] == 3 && phase(s) == "Paused";
    let s = wait_for(&d, "the first run at 30 %", Duration::from_secs(90), at_30).await;
    let first = s["status"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(first.len(), 10, "{s:#}");
    assert_eq!(s["status"]["templateHash"], first.as_str(), "{s:#}");
    assert_eq!(
        s["status"]["readiness"]["images"][0], "reviews:2.1.0",
        "{s:#}"
    );
    assert_eq!(vs_weights(&d.manifests), (70, 30));

    // A new image, its pods not ready yet.
    std::fs::write(&deployment, reviews_v2_image("reviews:2.2.0", 0)).unwrap();
    let s = wait_for(
        &d,
        "a run for the new image",
        Duration::from_secs(60),
        |s| {
            s["status"]["revision"] != first.as_str()
                && s["status"]["pause"]["reason"] == "CanaryNotReady"
        },
    )
    .await;
    let second = s["status"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(second.len(), 10, "{s:#}");
    assert_eq!(s["status"]["currentStepIndex"], 0, "{s:#}");
    assert!(s["status"]["abort"].is_null(), "no rollback: {s:#}");
    let withdrawn = wait_for(&d, "the weight back at 0", Duration::from_secs(30), |_| {
        vs_weights(&d.manifests) == (100, 0)
    })
    .await;
    assert_eq!(withdrawn["status"]["revision"], second.as_str());
    for _ in 0..10 {
        assert_eq!(vs_weights(&d.manifests), (100, 0), "exposed before ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&deployment, reviews_v2_image("reviews:2.2.0", 2)).unwrap();
    let s = wait_for(&d, "the new run at 30 %", Duration::from_secs(90), at_30).await;
    assert_eq!(s["status"]["revision"], second.as_str(), "{s:#}");
    assert_eq!(vs_weights(&d.manifests), (70, 30));
}
