//! kubectl against the fake API server with the shipped CRDs applied: what an operator sees
//! (schema refusals on `apply`, printer columns, `wait --for=condition`, Events in
//! `describe`). kubectl is part of the machine image; without it the test is skipped, except
//! under CI (`CI` set), where a missing kubectl is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use skycanary::testkit::{FakeApiServer, write_kubeconfig};

pub(crate) fn kubectl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is missing: it is part of the machine image (Debian package `kubectl`)"
        );
        eprintln!("SKIPPED: kubectl not found");
    }
    found
}

/// Runs kubectl against the fake with its own kubeconfig and discovery cache.
pub(crate) struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    pub(crate) fn new(bin: PathBuf, addr: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        write_kubeconfig(addr, &dir.path().join("kubeconfig")).expect("kubeconfig");
        Kubectl { bin, dir }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.display().to_string()
    }

    /// Drops kubectl's discovery cache, as its expiry would: kubectl re-reads discovery for an
    /// unknown name, but not for an unknown category.
    pub(crate) fn forget_discovery(&self) {
        let _ = std::fs::remove_dir_all(self.dir.path().join("cache"));
    }

    /// `apply` gets `--validate=false`: the fake serves no OpenAPI documents for kubectl's
    /// client-side check; the server-side schema validation is what is under test.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        if args.first() == Some(&"apply") {
            cmd.arg("--validate=false");
        }
        cmd.arg(format!(
            "--cache-dir={}",
            self.dir.path().join("cache").display()
        ))
        .arg("--request-timeout=20s")
        .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
        .env("HOME", self.dir.path());
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("run kubectl")
    }

    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn canary(name: &str, steps: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata:
  name: {name}
  namespace: bookinfo
spec:
  trafficRouting:
    istio:
      virtualService:
        name: reviews
      stableService: reviews-stable
      canaryService: reviews-canary
  steps: {steps}
{extra}"#
    )
}

pub(crate) fn crd_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/crds")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_schema_refusals_printer_columns_conditions_and_events() {
    let Some(bin) = kubectl() else { return };
    let fake = FakeApiServer::new();
    let (addr, _handle) = fake.serve().await.expect("serve");
    let k = Kubectl::new(bin, addr);

    // The shipped CRDs, applied as an operator would; their CEL rules compile.
    k.ok(&["apply", "-k", &crd_dir()]).await;
    let crds = k.ok(&["get", "crds", "-o", "name"]).await;
    // Discovery comes from the CRDs: the category lists every kind.
    k.forget_discovery();
    let all = k.ok(&["get", "skycanary", "-A", "-o", "name"]).await;
    assert_eq!(all.trim(), "", "no objects yet");
    assert!(
        crds.contains("canaries.skycanary.io"),
        "kubectl get crds: {crds}"
    );

    // Refused by the schema: a bound (minimum), an enum, and a CEL cross-field rule.
    let bad = k.file(
        "bad.yaml",
        &canary(
            "bad",
            "[{setWeight: 150}, {setWeight: -5}]",
            "  onSuccess: Bogus\n  workloadRef: {fromSubset: true, kind: Deployment, name: r}\n",
        ),
    );
    let err = k.refused(&["apply", "-f", &bad]).await;
    assert!(err.contains("is invalid"), "{err}");
    assert!(
        err.contains("spec.steps[1].setWeight") && err.contains("greater than or equal to 0"),
        "{err}"
    );
    assert!(
        err.contains("spec.onSuccess") && err.contains("Unsupported value: \"Bogus\""),
        "{err}"
    );
    assert!(
        err.contains("spec.steps") && err.contains("setWeight must not exceed"),
        "{err}"
    );
    // fromSubset needs subset-level routing, and no kind or name.
    assert!(
        err.contains("needs trafficRouting.istio.destinationRule"),
        "{err}"
    );
    assert!(
        err.contains("spec.workloadRef") && err.contains("remove kind and name"),
        "{err}"
    );
    assert!(
        fake.get("skycanary.io", "canaries", "bookinfo", "bad")
            .is_none()
    );

    // A one-of the schema states as a CEL rule.
    let both = k.file(
        "both.yaml",
        &canary(
            "both",
            "[{setWeight: 10}]",
            "  postPromotion: {watch: 5x}\n",
        )
        .replace(
            "      canaryService: reviews-canary\n",
            "      canaryService: reviews-canary\n      destinationRule: {name: reviews, stableSubsetName: a, canarySubsetName: b}\n",
        ),
    );
    let err = k.refused(&["apply", "-f", &both]).await;
    assert!(
        err.contains("spec.trafficRouting.istio") && err.contains("not both"),
        "{err}"
    );
    assert!(
        err.contains("spec.postPromotion.watch") && err.contains("should match"),
        "{err}"
    );

    // A valid Canary is stored, under its short name too.
    let good = k.file(
        "good.yaml",
        &canary(
            "reviews",
            "[{setWeight: 10}, {pause: {}}, {setWeight: 30}, {pause: {duration: 1m}}, {setWeight: 60}, {pause: {}}, {setWeight: 100}]",
            "",
        ),
    );
    k.ok(&["apply", "-f", &good]).await;
    let status = json!({"status": {
        "phase": "Progressing", "currentStepIndex": 3, "step": "4/7", "desiredWeight": 30,
        "message": "step 4/7: pausing 1m",
        "conditions": [{"type": "Promoted", "status": "False", "reason": "Progressing",
                        "message": "not promoted yet", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "applied": {"canaryWeight": 30, "mirrorRoutes": [], "headerRoutes": [
            {"name": "canary-header", "headers": [{"name": "end-user", "match": {"exact": "jason"}}]}]},
        "weights": [{"virtualService": "reviews", "kind": "Http", "route": "primary",
                     "stable": 60, "canary": 30,
                     "others": [{"destination": "reviews/v3", "weight": 10}]}],
    }});
    k.ok(&[
        "patch",
        "canary",
        "reviews",
        "-n",
        "bookinfo",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
    .await;

    // Printer columns, served as a Table.
    let table = k.ok(&["get", "canaries", "-n", "bookinfo"]).await;
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "PHASE", "STEP", "WEIGHT", "MESSAGE", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("reviews"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // STEP numbers steps as `skycanary status` does (1-based of all), not currentStepIndex.
    assert_eq!(
        cells[..4],
        ["reviews", "Progressing", "4/7", "30"],
        "{table}"
    );
    assert!(row.contains("step 4/7: pausing 1m"), "{table}");
    let short = k.ok(&["get", "skc", "-n", "bookinfo", "-o", "name"]).await;
    assert_eq!(short.trim(), "canary.skycanary.io/reviews");
    let all = k.ok(&["get", "skycanary", "-A", "-o", "name"]).await;
    assert_eq!(all.trim(), "canary.skycanary.io/reviews");

    // The status' header matchers and destination weights are named fields: `describe`
    // prints them as such (as tuples they printed `[end-user map[exact:jason]]`).
    let described = k
        .ok(&["describe", "canary", "reviews", "-n", "bookinfo"])
        .await;
    let lines: Vec<String> = described
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "Step: 4/7",
        "Exact: jason",
        "Name: end-user",
        "Destination: reviews/v3",
        "Weight: 10",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} in\n{described}");
    }
    assert!(!described.contains("map["), "{described}");
    // A status in the old pair form is refused by the schema now (it was unchecked).
    let pairs = json!({"status": {"weights": [{"virtualService": "reviews", "kind": "Http",
        "route": "primary", "stable": 60, "canary": 30, "others": [["reviews/v3", 10]]}]}});
    let err = k
        .refused(&[
            "patch",
            "canary",
            "reviews",
            "-n",
            "bookinfo",
            "--subresource=status",
            "--type=merge",
            "-p",
            &pairs.to_string(),
        ])
        .await;
    assert!(err.contains("status.weights[0].others[0]"), "{err}");

    // `kubectl wait` does not return while Promoted is False ...
    let err = k
        .refused(&[
            "wait",
            "--for=condition=Promoted",
            "canary/reviews",
            "-n",
            "bookinfo",
            "--timeout=1s",
        ])
        .await;
    assert!(err.contains("timed out"), "{err}");
    // ... and does once the status says True.
    let promoted = json!({"status": {
        "phase": "Promoted", "currentStepIndex": 7, "desiredWeight": 100,
        "conditions": [{"type": "Promoted", "status": "True", "reason": "AllStepsCompleted",
                        "message": "promoted", "lastTransitionTime": "2026-01-01T00:05:00Z"}],
    }});
    k.ok(&[
        "patch",
        "canary",
        "reviews",
        "-n",
        "bookinfo",
        "--subresource=status",
        "--type=merge",
        "-p",
        &promoted.to_string(),
    ])
    .await;
    let waited = k
        .ok(&[
            "wait",
            "--for=condition=Promoted",
            "canary/reviews",
            "-n",
            "bookinfo",
            "--timeout=30s",
        ])
        .await;
    assert!(waited.contains("condition met"), "{waited}");

    // An events.k8s.io/v1 Event about the Canary shows in `kubectl describe` (core view).
    let uid = fake
        .get("skycanary.io", "canaries", "bookinfo", "reviews")
        .and_then(|c| c.pointer("/metadata/uid").cloned())
        .expect("uid");
    fake.seed(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "reviews.1", "namespace": "bookinfo"},
        "eventTime": "2026-01-01T00:04:00.000000Z",
        "reportingController": "skycanary.io/controller", "reportingInstance": "skycanary-0",
        "action": "Analyze", "reason": "AnalysisRunFailed", "type": "Warning",
        "note": "metric apdex measured 0.71, condition result >= 0.9 failed",
        "regarding": {"apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
                      "namespace": "bookinfo", "name": "reviews", "uid": uid},
    }))
    .expect("event");
    let described = k
        .ok(&["describe", "canary", "reviews", "-n", "bookinfo"])
        .await;
    assert!(described.contains("AnalysisRunFailed"), "{described}");
    assert!(
        described.contains("metric apdex measured 0.71, condition result >= 0.9 failed"),
        "{described}"
    );
}
