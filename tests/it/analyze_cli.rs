//! The `skycanary` binary: exit codes, live output, JSON output, validation errors.

use std::process::{Command, Output};

fn skycanary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run skycanary")
}

fn write_template(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

const QUICK: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: quick}
spec:
  args: [{name: service}]
  metrics:
  - name: apdex
    interval: 1s
    count: 3
    successCondition: "min(result) >= 9900"
    provider:
      skywalking:
        window: 5m
        metric: service_apdex
        entity: {serviceName: "{{args.service}}"}
"#;

#[test]
fn quick_template_runs_three_measurements_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let t = write_template(&dir, "quick.yaml", QUICK);
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=reviews.bookinfo",
        "--simulator",
        "healthy",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("apdex #").count(), 3, "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("Successful"),
        "{stdout}"
    );
}

#[test]
fn degraded_exits_1_and_no_traffic_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let t = write_template(&dir, "quick.yaml", QUICK);
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=reviews.bookinfo",
        "--simulator",
        "degraded",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=reviews.bookinfo",
        "--simulator",
        "no-traffic",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unreachable_oap_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let body = QUICK.replace("count: 3", "count: 1\n    consecutiveErrorLimit: 0");
    let t = write_template(&dir, "quick.yaml", &body);
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=x",
        "--skywalking",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let body = QUICK.replace("count: 3", "count: 1");
    let t = write_template(&dir, "quick.yaml", &body);
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=reviews.bookinfo",
        "--simulator",
        "healthy",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["phase"], "Successful");
    let m = &v["metricResults"][0];
    assert_eq!(m["name"], "apdex");
    let meas = &m["measurements"][0];
    for k in ["phase", "value", "message", "startedAt", "finishedAt"] {
        assert!(meas.get(k).is_some(), "missing {k} in {meas}");
    }
    // The window read (OAP time); `analyze` has no routing change to align to.
    let meta = &meas["metadata"];
    for k in ["windowStart", "windowEnd"] {
        assert!(
            meta[k].as_str().is_some_and(|s| s.len() == 15),
            "{k} in {meas}"
        );
    }
    assert!(meta.get("alignedAfter").is_none(), "{meas}");
}

#[test]
fn typo_in_a_field_exits_4_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = write_template(
        &dir,
        "typo.yaml",
        &QUICK.replace("    interval: 1s", "    intreval: 1s"),
    );
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=x",
        "--simulator",
        "healthy",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("typo.yaml:8:") && stderr.contains("intreval"),
        "{stderr}"
    );
}

#[test]
fn missing_required_arg_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let t = write_template(&dir, "quick.yaml", QUICK);
    let out = skycanary(&["analyze", &t, "--simulator", "healthy"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("args.service was not resolved"));
}

#[test]
fn validate_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write_template(
        &dir,
        "a.yaml",
        &QUICK.replace("    interval: 1s", "    intreval: 1s"),
    );
    write_template(
        &dir,
        "b.yaml",
        &QUICK.replace("min(result) >= 9900", "min(result) >="),
    );
    let out = skycanary(&["validate", &dir.path().display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("a.yaml:8:") && stdout.contains("b.yaml:10:"),
        "{stdout}"
    );
}

/// Issue 16's reproduction: 20,000 levels of nesting used to abort the process (stack
/// overflow); now it is an ordinary validation error (exit 1) naming file and line, and so is
/// a symlink loop next to it.
#[test]
fn validate_reports_deep_yaml_and_symlink_loops_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: b}}\nx:\n{}x\n",
        "- ".repeat(20_000)
    );
    let d = write_template(&dir, "d.yaml", &body);
    let out = skycanary(&["validate", &d]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "error: {d}:5: YAML syntax error: YAML nested deeper than 64 levels"
        )),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
        let out = skycanary(&["validate", &dir.path().display().to_string()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("loop: symlink loop: leads back to"),
            "{stdout}"
        );
        assert!(
            stdout.contains("invalid: 2 error(s) in 1 file(s)"),
            "{stdout}"
        );
    }
}

#[test]
fn validate_names_the_condition_language() {
    let dir = tempfile::tempdir().unwrap();
    let argo = QUICK
        .replace("skycanary.io/v1alpha1", "argoproj.io/v1alpha1")
        .replace("min(result) >= 9900", "all(result, {# >= })");
    write_template(&dir, "argo.yaml", &argo);
    let ours = QUICK.replace("min(result) >= 9900", "result[0] >= 9900");
    write_template(&dir, "ours.yaml", &ours);
    let out = skycanary(&["validate", &dir.path().display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // Argo's language, with where and what.
    assert!(stdout.contains("argo.yaml:10:"), "{stdout}");
    assert!(
        stdout.contains("not valid expr (Argo's condition language)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("column 19: expected a value, found `}`"),
        "{stdout}"
    );
    // evalexpr, with the way out for Argo syntax.
    assert!(stdout.contains("ours.yaml:10:"), "{stdout}");
    assert!(stdout.contains("evalexpr condition"), "{stdout}");
    assert!(stdout.contains("conditionLanguage: expr"), "{stdout}");
}

#[test]
fn validate_accepts_the_bundled_templates() {
    let out = skycanary(&["validate", "analysis-templates"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn indefinite_metric_is_refused_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let t = write_template(&dir, "forever.yaml", &QUICK.replace("    count: 3\n", ""));
    let out = skycanary(&[
        "analyze",
        &t,
        "--arg",
        "service=x",
        "--simulator",
        "healthy",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run indefinitely"));
}

#[test]
fn usage_errors_exit_4_not_2() {
    let out = skycanary(&[
        "analyze",
        "analysis-templates/apdex.yaml",
        "--output",
        "yaml",
    ]);
    assert_eq!(out.status.code(), Some(4), "2 would read as Inconclusive");
    let out = skycanary(&[
        "analyze",
        "analysis-templates/apdex.yaml",
        "--timezone",
        "+99",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(skycanary(&["--help"]).status.code(), Some(0));
}
