//! The CLI as a kubectl user types it: `NAME -n NS` and the kubeconfig context's namespace,
//! `-o json|yaml|name`, `status --watch --timeout` exit codes against a daemon that promotes /
//! aborts / stays paused, one flag set per action, completion, `version`, the
//! `kubectl-skycanary` plugin name, broken pipes, the simulator subcommand, and the README's
//! "Try the daemon in 2 minutes" commands run as written.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::daemon::{canary, setup, sim_with_apdex, start};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skycanary"));
    c.env_remove("SKYCANARY_TOKEN")
        .env_remove("SKYCANARY_SERVER")
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent-home-for-tests");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the CLI against a daemon (blocking, off the runtime's threads).
async fn cli(server: &str, token: &Path, args: &[&str]) -> Output {
    let mut c = bin();
    c.args(args)
        .args(["--server", server, "--token-file"])
        .arg(token);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: c, user: u, namespace: bookinfo}
- name: other
  context: {cluster: c, user: u, namespace: prod}
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_0_when_promoted_and_names_resolve_like_kubectl() {
    let (_sim, running) = sim_with_apdex(|_| Some(9990.0)).await;
    let d = start(setup(&canary("Abort")), &running.url());
    let token = d.dirs.as_ref().unwrap().path().join("token");
    let kc = d.dirs.as_ref().unwrap().path().join("kubeconfig");
    std::fs::write(&kc, KUBECONFIG).unwrap();
    let kcs = kc.to_str().unwrap();

    // NAME from the kubeconfig's current context namespace (bookinfo), watched to the end.
    let out = cli(
        &d.url,
        &token,
        &[
            "status",
            "reviews",
            "--kubeconfig",
            kcs,
            "-w",
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Promoted"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("6/6"), "{}", text(&out.stdout));

    // Another context's namespace: no such canary there.
    let out = cli(
        &d.url,
        &token,
        &[
            "status",
            "reviews",
            "--kubeconfig",
            kcs,
            "--context",
            "other",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    // An unknown context is refused before any request.
    let out = cli(
        &d.url,
        &token,
        &[
            "status",
            "reviews",
            "--kubeconfig",
            kcs,
            "--context",
            "nope",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("\"nope\""),
        "{}",
        text(&out.stderr)
    );

    // -n wins over the context; one object asked for prints one object, not a list.
    let out = cli(
        &d.url,
        &token,
        &["status", "-n", "bookinfo", "reviews", "-o", "json"],
    )
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "reviews", "{v:#}");
    assert_eq!(v["status"]["phase"], "Promoted");
    // The old flag still works, hidden.
    let out = cli(&d.url, &token, &["status", "bookinfo/reviews", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.is_object(), "{v:#}");
    let out = cli(
        &d.url,
        &token,
        &["status", "-n", "bookinfo", "reviews", "-o", "yaml"],
    )
    .await;
    let y = text(&out.stdout);
    assert!(
        y.contains("name: reviews\n") && y.contains("phase: Promoted"),
        "{y}"
    );
    // Listing: the namespace (none in `default`), or every namespace with -A.
    let out = cli(&d.url, &token, &["status", "-o", "name"]).await;
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let out = cli(&d.url, &token, &["status", "-A", "-o", "name"]).await;
    assert_eq!(text(&out.stdout), "canary.skycanary.io/reviews\n");
    let out = cli(&d.url, &token, &["status", "-A", "-o", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().is_some_and(|a| a.len() == 1), "{v:#}");
    // -n and a qualified name that disagree.
    let out = cli(
        &d.url,
        &token,
        &["status", "-n", "prod", "bookinfo/reviews"],
    )
    .await;
    assert_eq!(out.status.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_1_when_aborted_and_2_on_timeout() {
    let (_sim, running) = sim_with_apdex(|_| Some(5000.0)).await;
    let d = start(setup(&canary("Abort")), &running.url());
    let token = d.dirs.as_ref().unwrap().path().join("token");
    let out = cli(
        &d.url,
        &token,
        &[
            "status",
            "-n",
            "bookinfo",
            "reviews",
            "--watch",
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("Aborted"),
        "{}",
        text(&out.stdout)
    );

    let (_sim2, running2) = sim_with_apdex(|_| Some(9990.0)).await;
    let d2 = start(setup(super::daemon::PAUSED_AT_20), &running2.url());
    let token2 = d2.dirs.as_ref().unwrap().path().join("token");
    let out = cli(
        &d2.url,
        &token2,
        &["status", "bookinfo/reviews", "-w", "--timeout", "3s"],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("timed out after 3s"),
        "{}",
        text(&out.stderr)
    );
    // An action with -n and -o name.
    let out = cli(
        &d2.url,
        &token2,
        &["pause", "-n", "bookinfo", "reviews", "-o", "name"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "canary.skycanary.io/reviews\n");
}

#[test]
fn one_flag_set_per_action() {
    for action in ["abort", "retry", "pause", "resume"] {
        let out = bin().args([action, "--help"]).output().unwrap();
        let help = text(&out.stdout);
        assert!(out.status.success());
        assert!(!help.contains("--full"), "{action}: {help}");
        assert!(
            help.contains("--namespace") && help.contains("--context"),
            "{help}"
        );
    }
    let out = bin().args(["promote", "--help"]).output().unwrap();
    assert!(text(&out.stdout).contains("--full"));
    assert!(!text(&out.stdout).contains("--reason"));
    let out = bin()
        .args(["retry", "x", "--reason", "r", "--full"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unexpected argument"));
}

/// `run --simulator` with an OAP address too: refused, naming both, instead of quietly
/// measuring the simulator while the user believes the real OAP is judged.
#[test]
fn run_refuses_simulator_and_skywalking_together() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = bin()
        .env_remove("SKYCANARY_SKYWALKING")
        .args([
            "run",
            "--config",
            &format!("{root}/deploy/examples/bookinfo"),
        ])
        .args([
            "--manifests",
            &format!("{root}/deploy/examples/bookinfo/istio"),
        ])
        .args(["--state-dir", &dir.path().display().to_string()])
        .args([
            "--simulator",
            &format!("{root}/deploy/examples/bookinfo/simulator.yaml"),
        ])
        .args(["--skywalking", "http://oap.example:12800", "--insecure-api"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let e = text(&out.stderr);
    assert!(
        e.contains("--simulator") && e.contains("http://oap.example:12800"),
        "{e}"
    );
}

#[test]
fn the_daemon_unreachable_names_the_cause_and_server() {
    let out = bin()
        .args([
            "status",
            "-n",
            "bookinfo",
            "reviews",
            "--server",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("cannot reach the daemon at http://127.0.0.1:1: ")
            && e.to_lowercase().contains("refused")
            && e.contains("use --server")
            && !e.contains("error sending request"),
        "{e}"
    );
}

#[test]
fn completion_scripts_for_three_shells() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef skycanary"),
        ("fish", "complete -c skycanary"),
    ] {
        let out = bin().args(["completion", shell]).output().unwrap();
        let s = text(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(
            s.contains(marker) && s.contains("promote") && s.contains("simulator"),
            "{shell}: {s}"
        );
    }
}

#[test]
fn version_names_semver_commit_date_and_target() {
    let out = bin().arg("version").output().unwrap();
    let s = text(&out.stdout);
    assert!(
        s.starts_with(&format!("skycanary {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
    assert!(s.contains(", built 20") && s.contains("linux"), "{s}");
    let out = bin().args(["version", "-o", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["version", "gitCommit", "buildDate", "target"] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {v:#}");
    }
    let out = bin().arg("--version").output().unwrap();
    assert!(
        text(&out.stdout).contains("commit"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn installed_as_kubectl_skycanary_it_is_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-skycanary");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_skycanary"), &plugin).unwrap();
    let out = Command::new(&plugin).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("Usage: kubectl skycanary"),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new(&plugin)
        .args(["status", "--nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("kubectl skycanary status"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(&plugin).arg("version").output().unwrap();
    assert!(
        text(&out.stdout).starts_with("skycanary "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_closed_pipe_ends_quietly_with_0() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["completion", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn validate_skips_what_is_not_a_kubernetes_object() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = bin()
        .args(["validate", &format!("{root}/deploy")])
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(
        s.contains("alarm-settings.yml") && s.contains("not a Kubernetes object"),
        "{s}"
    );
}

/// A template with a schema error (unknown field) and semantic ones, and a Canary with a
/// semantic error, an arg not supplied and a missing template: every one in one run.
#[test]
fn validate_lists_every_layer_of_mistakes_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.yaml"), TEMPLATE_WITH_ERRORS).unwrap();
    std::fs::write(dir.path().join("c.yaml"), CANARY_WITH_ERRORS).unwrap();
    let out = bin().arg("validate").arg(dir.path()).output().unwrap();
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{s}");
    for want in [
        "t.yaml:8: spec.metrics[0].intervall: unknown field",
        "t.yaml:10: spec.metrics[0].successCondition: condition does not compile",
        "c.yaml:12: spec.steps[0].setWeight: weight 120",
        "c.yaml:13: spec.steps[1].analysis.args: template \"apdex\" requires arg \"service\"",
        "c.yaml:14: spec.steps[2].analysis.templates[0].templateName: AnalysisTemplate \"latency\" not found",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    // The template refused for its own errors is not reported missing on top.
    assert!(!s.contains("\"apdex\" not found"), "{s}");
}

const TEMPLATE_WITH_ERRORS: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex, namespace: bookinfo}
spec:
  args: [{name: service}]
  metrics:
  - name: apdex
    intervall: 1m
    count: 3
    successCondition: "min(result) >=="
    provider:
      skywalking:
        metric: service_apdex
        entity: {serviceName: "{{args.service}}"}
"#;

const CANARY_WITH_ERRORS: &str = r#"apiVersion: skycanary.io/v1alpha1
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
  - setWeight: 120
  - analysis: {templates: [{templateName: apdex}]}
  - analysis: {templates: [{templateName: latency}], args: [{name: service, value: x}]}
"#;

fn terminate(child: &std::process::Child) {
    // SAFETY: kill(2) on a child we started and have not waited for.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_serves_a_scenario_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.yaml");
    std::fs::write(
        &scenario,
        "oapVersion: \"9.7\"\nservices:\n- {name: reviews.bookinfo, profile: degraded}\n",
    )
    .unwrap();
    let mut child = bin()
        .arg("simulator")
        .arg(&scenario)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("OAP 9.7"), "{line}");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && !w.contains("graphql"))
        .unwrap()
        .to_string();
    let body: Value = super::daemon::http()
        .post(format!("{url}/graphql"))
        .json(&serde_json::json!({"query": "{ version }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["data"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("9.7")),
        "{body}"
    );
    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // A broken scenario: every mistake, with file and line; exit 4.
    std::fs::write(
        &scenario,
        "services:\n- {name: a, profile: great}\n- {name: b}\n",
    )
    .unwrap();
    let out = bin().arg("simulator").arg(&scenario).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let e = text(&out.stderr);
    assert!(
        e.contains("s.yaml:2") && e.contains("great") && e.contains("s.yaml:3"),
        "{e}"
    );
}

/// The README's "Try the daemon in 2 minutes" block, run by `sh` from the repository root as
/// written, except for its port and scratch directory (so tests can run side by side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_try_the_daemon_commands_run_as_written() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = readme
        .split("## Try the daemon in 2 minutes")
        .nth(1)
        .expect("README has the section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a sh block");
    let scratch = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A cleanup the README does not need: should a command fail, the daemon still stops.
    let script = "trap 'kill $! 2>/dev/null' EXIT\n".to_string()
        + &block
            .replace("/tmp/skycanary-try", scratch.path().to_str().unwrap())
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    assert!(
        block.contains("/tmp/skycanary-try") && block.contains("127.0.0.1:8080"),
        "the block uses the scratch dir and port the test replaces"
    );
    let scratch_path = scratch.path().to_path_buf();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_skycanary"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::task::spawn_blocking(move || {
        // Bounded: a daemon that never answers fails the test instead of hanging it.
        Command::new("timeout")
            .args(["300", "sh", "-ec", &script])
            .current_dir(root)
            .env("PATH", path)
            .env_remove("SKYCANARY_TOKEN")
            .env_remove("KUBECONFIG")
            .env("HOME", "/nonexistent-home-for-tests")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{o}\nstderr:\n{e}");
    // How far the canary got before `promote --full` depends on the machine; the end does not.
    assert!(
        o.contains("bookinfo/reviews") && o.contains("Promoted"),
        "{o}"
    );
    let log = std::fs::read_to_string(scratch_path.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("listening on") && log.contains("simulated SkyWalking OAP"),
        "{log}"
    );
}

/// `--kube` with `--kubeconfig` / `--context`: `NAME` resolves in the context's namespace, a
/// second context's namespace holds nothing, and `-A` lists every namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_mode_takes_the_namespace_from_the_named_context() {
    use skycanary::testkit::{FakeApiServer, kubeconfig_yaml};
    let fake = FakeApiServer::new();
    fake.seed(serde_json::json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"revision": "v2", "steps": [{"setWeight": 20}, {"pause": {}}]},
        "status": {"phase": "Paused", "currentStepIndex": 1, "desiredWeight": 20}
    }))
    .unwrap();
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    // The fake's kubeconfig (context `fake`, namespace default) plus a context in bookinfo.
    let yaml = kubeconfig_yaml(addr).replace(
        "current-context: fake",
        "- name: books\n  context:\n    cluster: fake\n    user: fake\n    namespace: bookinfo\ncurrent-context: fake",
    );
    std::fs::write(&kc, yaml).unwrap();
    let kcs = kc.to_str().unwrap().to_string();
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || bin().args(&args).output().unwrap())
            .await
            .unwrap()
    };
    let args = |a: &[&str]| -> Vec<String> {
        a.iter()
            .map(|s| s.to_string())
            .chain(["--kube".into(), "--kubeconfig".into(), kcs.clone()])
            .collect()
    };
    let out = run(args(&[
        "status",
        "reviews",
        "--context",
        "books",
        "-o",
        "json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["namespace"].as_str(), v["status"]["phase"].as_str()),
        (Some("bookinfo"), Some("Paused"))
    );
    assert!(
        text(&out.stdout).contains("\"steps\": 2"),
        "{}",
        text(&out.stdout)
    );
    // The current context (`fake`) is in `default`: no such canary there.
    let out = run(args(&["status", "reviews"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no Canary default/reviews"),
        "{}",
        text(&out.stderr)
    );
    let out = run(args(&["status", "-A", "-o", "name"])).await;
    assert_eq!(
        text(&out.stdout),
        "canary.skycanary.io/reviews\n",
        "{}",
        text(&out.stderr)
    );
    // Table: the second of two steps.
    let out = run(args(&["status", "-n", "bookinfo"])).await;
    assert!(text(&out.stdout).contains("2/2"), "{}", text(&out.stdout));
}
