//! The OpenAPI document against a live daemon: schemathesis (PyPI) generates requests for
//! every operation from `/api/v1/openapi.json` (with the token) and checks that no answer is a
//! 5xx, has a status, content type or headers the document does not list, or a body its schema
//! refuses. The daemon runs the Bookinfo example on the in-process simulator, so the canary is
//! mid-release with analysis runs, and the document's links lead the stateful phase to the real
//! canary and scheduled analysis. Skipped without schemathesis unless
//! SKYCANARY_REQUIRE_SCHEMATHESIS=1 (as in CI, which installs a pinned version).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::daemon::{TOKEN, start_with, wait_for};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `SKYCANARY_SCHEMATHESIS` (a path), else `schemathesis` on PATH.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SKYCANARY_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("schemathesis"))
            .find(|candidate| candidate.is_file())
    })
}

/// The checks run: every one about the answers matching the document.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Runs schemathesis on `schema` (a URL or a file) against `base`, in `work` (it keeps its
/// example database there); returns whether it passed, and its output.
async fn run(tool: &Path, schema: &str, base: &str, work: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(["run", schema, "--url", base])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", CHECKS])
        .args(["--request-timeout", "30", "--no-color"])
        .args(extra)
        .current_dir(work)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("schemathesis starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_outside_the_openapi_document() {
    let Some(tool) = schemathesis() else {
        if std::env::var("SKYCANARY_REQUIRE_SCHEMATHESIS").as_deref() == Ok("1") {
            panic!(
                "schemathesis is required (SKYCANARY_REQUIRE_SCHEMATHESIS=1) but neither \
                 SKYCANARY_SCHEMATHESIS nor PATH has it"
            );
        }
        eprintln!("SKIPPED schemathesis: not installed (pip install schemathesis)");
        return;
    };

    // The Bookinfo example, as README's "try the daemon" runs it.
    let dirs = tempfile::tempdir().unwrap();
    let example = repo("deploy/examples/bookinfo");
    for d in ["config", "istio", "state", "work"] {
        std::fs::create_dir_all(dirs.path().join(d)).unwrap();
    }
    for file in ["canary.yaml", "apdex.yaml", "scheduled.yaml"] {
        std::fs::copy(example.join(file), dirs.path().join("config").join(file)).unwrap();
    }
    for entry in std::fs::read_dir(example.join("istio")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(
                &path,
                dirs.path().join("istio").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let work = dirs.path().join("work");
    let scenario = example.join("simulator.yaml");
    let d = start_with(dirs, "", &["--simulator", scenario.to_str().unwrap()]);
    // Mid-release, with a measured analysis run: the richest status to check.
    let get = |s: &serde_json::Value| s["status"]["analysisRuns"].as_array().map_or(0, Vec::len);
    wait_for(&d, "a first analysis run", Duration::from_secs(90), |s| {
        get(s) > 0
    })
    .await;

    let schema = format!("{}/api/v1/openapi.json", d.url);
    let (passed, output) = run(
        &tool,
        &schema,
        &d.url,
        &work,
        &["--max-examples", "25", "--seed", "1"],
    )
    .await;
    assert!(passed, "schemathesis found violations:\n{output}");
    assert!(output.contains("No issues found"), "{output}");

    // The same run catches a document that lies: a canary never has more than 0 steps here.
    let mut doc: serde_json::Value = crate::daemon::http()
        .get(&schema)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["components"]["schemas"]["CanarySummary"]["properties"]["steps"]["maximum"] = 0.into();
    let lying = work.join("lying.json");
    std::fs::write(&lying, doc.to_string()).unwrap();
    let (passed, output) = run(
        &tool,
        lying.to_str().unwrap(),
        &d.url,
        &work,
        &[
            "--max-examples",
            "3",
            "--seed",
            "1",
            "--include-operation-id",
            "listCanaries",
        ],
    )
    .await;
    assert!(!passed, "a wrong schema went unnoticed:\n{output}");
    assert!(output.contains("Response violates schema"), "{output}");
}
