//! Argo Rollouts' SkyWalking cases through the real CLI: the docs' template with its condition
//! unchanged, and `metricproviders/skywalking/skywalking_test.go`'s cases (its mock's results
//! made by real SkyWalking queries against the simulator), `skycanary analyze --output json`.

use std::process::Command;

use serde_json::Value;
use skycanary::sim::{Fault, OapProfile, RunningSim, SimConfig, SimEntity, Simulator};

const SERVICE: &str = "reviews.bookinfo";

/// The Argo docs' SkyWalking template (`docs/analysis/skywalking.md`), as written there, but
/// for one measurement (no interval) so the test is quick.
const DOCS_TEMPLATE: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: apdex
spec:
  args:
  - name: service-name
  metrics:
  - name: apdex
    successCondition: "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})"
    failureLimit: 3
    provider:
      skywalking:
        interval: 3m
        address: ADDRESS
        query: |
          query queryData($duration: Duration!) {
            service_apdex: readMetricsValues(
              condition: { name: "service_apdex", entity: { scope: Service, serviceName: "{{ args.service-name }}", normal: true } },
              duration: $duration) { label values { values { value } } } }
"#;

async fn sim() -> (Simulator, RunningSim) {
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    let running = sim
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim starts");
    (sim, running)
}

/// Runs `skycanary analyze` on `template` (with `ADDRESS` set to the simulator) and returns
/// the exit code and the JSON run.
async fn analyze(running: &RunningSim, template: &str) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, template.replace("ADDRESS", &running.url())).expect("write");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(["analyze", &path.display().to_string()])
            .args(["--arg", &format!("service-name={SERVICE}")])
            .args(["--output", "json"])
            .output()
            .expect("run skycanary")
    })
    .await
    .expect("join");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn measurement(v: &Value) -> &Value {
    &v["metricResults"][0]["measurements"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_template_runs_unchanged() {
    let (sim, running) = sim().await;
    sim.set_series("service_apdex", SimEntity::service(SERVICE), |_| {
        Some(9950.0)
    });
    let (code, v) = analyze(&running, DOCS_TEMPLATE).await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["phase"], "Successful", "{v}");
    let m = measurement(&v);
    assert_eq!(m["phase"], "Successful", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap_or_default()
            .contains("asFloat(.value) >= 9900"),
        "{m}"
    );

    // A regression fails it (with failureLimit 0, so one measurement decides).
    sim.set_series("service_apdex", SimEntity::service(SERVICE), |_| {
        Some(9000.0)
    });
    let four = DOCS_TEMPLATE.replace("failureLimit: 3", "failureLimit: 0");
    let (code, v) = analyze(&running, &four).await;
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["phase"], "Failed", "{v}");
    running.shutdown().await;
}

/// A template whose raw query is `query` and whose conditions are `s` and `f`.
fn case(query: &str, s: &str, f: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: case}}
spec:
  args: [{{name: service-name}}]
  metrics:
  - name: m
    consecutiveErrorLimit: 0
    successCondition: {s:?}
    failureCondition: {f:?}
    provider:
      skywalking:
        interval: 3m
        address: ADDRESS
        query: |
          query q($duration: Duration!) {{ {query} }}
"#
    )
}

const ENTITY: &str =
    r#"entity: { scope: Service, serviceName: "{{ args.service-name }}", normal: true }"#;

/// `TestRunSuccessfully`: results `{"count":10}`, S `result.count == 10`, F `result.count != 10`
/// → Successful, value `{"count":10}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skywalking_test_run_successfully() {
    let (sim, running) = sim().await;
    sim.set_series("service_cpm", SimEntity::service(SERVICE), |_| Some(10.0));
    let q = format!(
        "count: readMetricsValue(condition: {{ name: \"service_cpm\", {ENTITY} }}, duration: $duration)"
    );
    let (code, v) = analyze(
        &running,
        &case(&q, "result.count == 10", "result.count != 10"),
    )
    .await;
    assert_eq!(code, Some(0), "{v}");
    let m = measurement(&v);
    assert_eq!(m["phase"], "Successful", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap_or_default()
            .contains(r#"result={"count":10}"#),
        "{m}"
    );
    running.shutdown().await;
}

/// `TestRunWithTimeseries`: results `[{"count":10},{"count":20},{"count":30}]`, S
/// `result[0].count == 10`, F `result[2].count < 20` → Successful. GraphQL `data` is an
/// object, so the array is one alias's list (a labeled metric's three series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skywalking_test_run_with_timeseries() {
    let (sim, running) = sim().await;
    for (label, v) in [("0", 10.0), ("1", 20.0), ("2", 30.0)] {
        sim.set_labeled_series(
            "service_percentile",
            SimEntity::service(SERVICE),
            label,
            move |_| Some(v),
        );
    }
    let q = format!(
        "s: readLabeledMetricsValues(condition: {{ name: \"service_percentile\", {ENTITY} }}, labels: [\"0\", \"1\", \"2\"], duration: $duration) {{ label values {{ values {{ value }} }} }}"
    );
    let (code, v) = analyze(
        &running,
        &case(
            &q,
            "result.s[0].values.values[0].value == 10",
            "result.s[2].values.values[0].value < 20",
        ),
    )
    .await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(measurement(&v)["phase"], "Successful", "{v}");
    // And the failure side, with the same data: 30 < 40 holds.
    let (code, v) = analyze(
        &running,
        &case(
            &q,
            "result.s[0].values.values[0].value == 10",
            "result.s[2].values.values[0].value < 40",
        ),
    )
    .await;
    assert_eq!(code, Some(1), "{v}");
    running.shutdown().await;
}

/// `TestRunWithQueryError` and `TestRunWithEvaluationError`: the query fails or returns no
/// `data` → Error with the message, never a verdict from the conditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skywalking_test_query_errors_are_errors() {
    let (sim, running) = sim().await;
    sim.set_series("service_cpm", SimEntity::service(SERVICE), |_| Some(10.0));
    sim.inject_fault(
        Fault::GraphqlError("no results returned from SkyWalking query".into()),
        None,
    );
    let q = format!(
        "count: readMetricsValue(condition: {{ name: \"service_cpm\", {ENTITY} }}, duration: $duration)"
    );
    let (code, v) = analyze(&running, &case(&q, "result == 10", "result != 10")).await;
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(v["phase"], "Error", "{v}");
    let m = measurement(&v);
    assert_eq!(m["phase"], "Error", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no results returned from SkyWalking query"),
        "{m}"
    );
    running.shutdown().await;
}

/// A misconfigured condition (number vs string) is an Error, not a Failed that looks like a
/// regression; `validate`-time errors name the language.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_mismatch_is_error_not_failed() {
    let (sim, running) = sim().await;
    sim.set_series("service_cpm", SimEntity::service(SERVICE), |_| Some(10.0));
    let q = format!(
        "count: readMetricsValue(condition: {{ name: \"service_cpm\", {ENTITY} }}, duration: $duration)"
    );
    let (code, v) = analyze(
        &running,
        &case(&q, r#"result.count == "10""#, "result.count < 0"),
    )
    .await;
    assert_eq!(code, Some(3), "{v}");
    let m = measurement(&v);
    assert_eq!(m["phase"], "Error", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mismatched types float64 and string"),
        "{m}"
    );
    // A computed operand too: expr's `==` would answer false, which read as a regression.
    let (code, v) = analyze(
        &running,
        &case(&q, "result.count >= 0", r#"result.count * 1 == "10""#),
    )
    .await;
    assert_eq!(code, Some(3), "{v}");
    let m = measurement(&v);
    assert_eq!(m["phase"], "Error", "{m}");
    assert!(
        m["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid operation: == (mismatched types float64 and string)"),
        "{m}"
    );
    running.shutdown().await;
}
