//! Argo Rollouts' `analysis/analysis_test.go` cases end to end: `skycanary analyze --output
//! json` against the SkyWalking simulator over HTTP.
//!
//! The same cases run through the pure state machine in `crates/core/src/analysis/run/argo_cases.rs`
//! (with Argo's preset counters). Here every measurement is real: the simulator serves each
//! metric a scripted sequence of values, one per request that reads it, and the template's
//! conditions turn them into phases: `1` is Successful (`successCondition: last(result) == 1`),
//! `2` Failed (`failureCondition: last(result) == 2`), `3` Inconclusive (neither holds), and no
//! data at all is an Error (`noData: Error`; a provider failure would hit every metric of the
//! batch's one request, and the cases need one metric to fail alone). Intervals are 50 ms
//! (Argo's tests use 60 s; only the order of measurements matters to these outcomes).
//!
//! Every case name in `argo_cases.rs` is either run here ([`CASES`]) or listed in
//! [`NOT_CLI`] with the reason the CLI cannot reproduce it; the test fails if one is missing.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};

/// One metric of a CLI case.
struct M {
    name: &'static str,
    /// The metric's YAML fields besides name, conditions and provider, one per line.
    limits: &'static str,
    /// What the simulator serves, one letter per measurement: S, F, I, E.
    script: &'static str,
    dry_run: bool,
}

const fn m(name: &'static str, limits: &'static str, script: &'static str) -> M {
    M {
        name,
        limits,
        script,
        dry_run: false,
    }
}

const fn dry(name: &'static str, limits: &'static str, script: &'static str) -> M {
    M {
        name,
        limits,
        script,
        dry_run: true,
    }
}

/// One case: an `argo:` name of `argo_cases.rs`, how it is set up here, and its outcome.
struct Case {
    argo: &'static str,
    /// How the setup differs from the Go test, and why (empty: it does not).
    note: &'static str,
    metrics: &'static [M],
    /// `spec.measurementRetention`, as YAML flow (empty: none).
    retention: &'static str,
    phase: &'static str,
    metric_phases: &'static [&'static str],
    /// Measurements kept per metric (empty: all of the script).
    kept: &'static [usize],
    /// The run's message starts with this (`Some("")`: no message).
    message: Option<&'static str>,
}

const CASE: Case = Case {
    argo: "",
    note: "",
    metrics: &[],
    retention: "",
    phase: "",
    metric_phases: &[],
    kept: &[],
    message: None,
};

const COUNT_ADDED: &str = "count added: analyze refuses indefinite metrics; it is never reached";
const LATER: &str = "initialDelay: 1h";
const UNMEASURED: &str = "the Go test's metric in flight (or never measured) is one whose \
                          initialDelay has not passed: an analyze measurement completes in one call";

const CASES: &[Case] = &[
    Case {
        argo: "TestAssessMetricStatusFailureLimit (failureLimit 2, failed 3)",
        note: COUNT_ADDED,
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 2\ncount: 10",
            "FFF",
        )],
        phase: "Failed",
        metric_phases: &["Failed"],
        message: Some(
            "Metric \"success-rate\" assessed Failed due to failed (3) > failureLimit (2)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (indefinite, consecutiveSuccess = limit 3)",
        note: COUNT_ADDED,
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: -1\nconsecutiveSuccessLimit: 3\ncount: 20",
            "SFFFSSS",
        )],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 7 reached, 3 < limit 5)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: -1\nconsecutiveSuccessLimit: 5\ncount: 7",
            "SFFFSSS",
        )],
        phase: "Failed",
        metric_phases: &["Failed"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 7 reached, 3 = limit 3)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: -1\nconsecutiveSuccessLimit: 3\ncount: 7",
            "SFFFSSS",
        )],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 9 not reached, 3 = limit 3)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: -1\nconsecutiveSuccessLimit: 3\ncount: 9",
            "SFFFSSS",
        )],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, failureLimit violated)",
        note: "count added (never reached); Argo presets successful 9 and count 9 next to failed \
               5, which no sequence of measurements gives: the fifth failure ends the metric",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 20",
            "FFFFF",
        )],
        phase: "Failed",
        metric_phases: &["Failed"],
        message: Some(
            "Metric \"success-rate\" assessed Failed due to failed (5) > failureLimit (4)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, success limit met)",
        note: COUNT_ADDED,
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 20",
            "SFFFSSSS",
        )],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, neither)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 10",
            "SSSFFFFSSS",
        )],
        phase: "Inconclusive",
        metric_phases: &["Inconclusive"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, failureLimit violated)",
        note: "measured, the tenth measurement is the fifth failure, so consecutiveSuccess is 0 \
               (Argo presets 3)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 10",
            "SSSFSSFFFF",
        )],
        phase: "Failed",
        metric_phases: &["Failed"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, success limit met)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 10",
            "SSFFFFSSSS",
        )],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, failureLimit violated)",
        note: "measured, the eighth measurement is the fifth failure, so consecutiveSuccess is 0 \
               (Argo presets 3)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 10",
            "SSSFFFFF",
        )],
        phase: "Failed",
        metric_phases: &["Failed"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, success limit met)",
        metrics: &[m(
            "success-rate",
            "interval: 50ms\nfailureLimit: 4\nconsecutiveSuccessLimit: 4\ncount: 10",
            "SFFFSSSS",
        )],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusInconclusiveLimit (inconclusiveLimit 2, inconclusive 3)",
        note: COUNT_ADDED,
        metrics: &[m(
            "success-rate",
            "interval: 50ms\ninconclusiveLimit: 2\ncount: 10",
            "III",
        )],
        phase: "Inconclusive",
        metric_phases: &["Inconclusive"],
        message: Some(
            "Metric \"success-rate\" assessed Inconclusive due to inconclusive (3) > inconclusiveLimit (2)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusConsecutiveErrors (5 > default limit 4)",
        note: COUNT_ADDED,
        metrics: &[m("success-rate", "interval: 50ms\ncount: 10", "EEEEE")],
        phase: "Error",
        metric_phases: &["Error"],
        message: Some(
            "Metric \"success-rate\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusCountReached (10 of 10 successful)",
        note: "an interval added, so that ten measurements are ten requests over time",
        metrics: &[m("success-rate", "interval: 50ms\ncount: 10", "SSSSSSSSSS")],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricStatusCountReached (5 successful, 5 inconclusive)",
        note: "an interval added; measured, the first Inconclusive already exceeds \
               inconclusiveLimit 0 and ends the metric (Argo presets all ten)",
        metrics: &[m("success-rate", "interval: 50ms\ncount: 10", "SSSSSI")],
        phase: "Inconclusive",
        metric_phases: &["Inconclusive"],
        ..CASE
    },
    Case {
        argo: "TestAssessMetricFailureInconclusiveOrError (failed 1)",
        metrics: &[m("success-rate", "", "F")],
        phase: "Failed",
        metric_phases: &["Failed"],
        message: Some(
            "Metric \"success-rate\" assessed Failed due to failed (1) > failureLimit (0)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessMetricFailureInconclusiveOrError (inconclusive 1)",
        metrics: &[m("success-rate", "", "I")],
        phase: "Inconclusive",
        metric_phases: &["Inconclusive"],
        message: Some(
            "Metric \"success-rate\" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessMetricFailureInconclusiveOrError (consecutiveError 5)",
        note: "no interval: the Errors are retried after errorRetryInterval (50 ms here)",
        metrics: &[m("success-rate", "", "EEEEE")],
        phase: "Error",
        metric_phases: &["Error"],
        message: Some(
            "Metric \"success-rate\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatus (worst of the completed metrics)",
        metrics: &[m("latency", "", "S"), m("success-rate", "", "F")],
        phase: "Failed",
        metric_phases: &["Successful", "Failed"],
        ..CASE
    },
    Case {
        argo: "TestGenerateMetricTasksFailing (no new measurement once a metric failed)",
        note: UNMEASURED,
        metrics: &[m("success-rate", LATER, ""), m("latency", "", "F")],
        phase: "Failed",
        metric_phases: &["Inconclusive", "Failed"],
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusUpdateResult + TestReconcileAnalysisRunTerminateSiblingAfterFail (Failed)",
        note: UNMEASURED,
        metrics: &[m("run-forever", LATER, ""), m("failed-metric", "", "F")],
        phase: "Failed",
        metric_phases: &["Inconclusive", "Failed"],
        ..CASE
    },
    Case {
        argo: "TestReconcileAnalysisRunTerminateSiblingAfterFail (Inconclusive)",
        note: UNMEASURED,
        metrics: &[m("run-forever", LATER, ""), m("failed-metric", "", "I")],
        phase: "Inconclusive",
        metric_phases: &["Inconclusive", "Inconclusive"],
        ..CASE
    },
    Case {
        argo: "TestReconcileAnalysisRunTerminateSiblingAfterFail (Error)",
        note: "the sibling has a count (analyze refuses indefinite metrics) and an initialDelay \
               that does not pass",
        metrics: &[
            m("failed-metric", "", "EEEEE"),
            m(
                "run-forever",
                "interval: 50ms\ncount: 5\ninitialDelay: 1h",
                "",
            ),
        ],
        phase: "Error",
        metric_phases: &["Error", "Inconclusive"],
        message: Some(
            "Metric \"failed-metric\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): \"Error Message: ",
        ),
        ..CASE
    },
    Case {
        argo: "TestRunMeasurementsResetConsecutiveErrorCounter (Error)",
        metrics: &[m("test", "", "EEEEE")],
        phase: "Error",
        metric_phases: &["Error"],
        ..CASE
    },
    Case {
        argo: "TestRunMeasurementsResetConsecutiveErrorCounter (Successful resets the streak)",
        metrics: &[m("test", "", "EEEES")],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusErrorMessageAnalysisPhaseFail",
        metrics: &[m("run-forever", "", "S"), m("failed-metric", "", "F")],
        phase: "Failed",
        metric_phases: &["Successful", "Failed"],
        message: Some(
            "Metric \"failed-metric\" assessed Failed due to failed (1) > failureLimit (0)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusErrorMessageFromProvider",
        note: "the failed measurement's own message is the condition's verdict, not a provider's",
        metrics: &[m("run-forever", "", "S"), m("failed-metric", "", "F")],
        phase: "Failed",
        metric_phases: &["Successful", "Failed"],
        message: Some(
            "Metric \"failed-metric\" assessed Failed due to failed (1) > failureLimit (0): \"Error Message: ",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusErrorMessageAnalysisPhaseFailInDryRunMode",
        metrics: &[dry("run-forever", "", "S"), dry("failed-metric", "", "F")],
        phase: "Successful",
        metric_phases: &["Successful", "Failed"],
        message: Some(""),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusErrorMessageFromProviderInDryRunMode",
        metrics: &[dry("run-forever", "", "S"), dry("failed-metric", "", "F")],
        phase: "Successful",
        metric_phases: &["Successful", "Failed"],
        message: Some(""),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusMultipleFailures / ...WorstMessageInReconcileAnalysisRun (first failed metric's message)",
        metrics: &[m("run-forever", "", "F"), m("failed-metric", "", "F")],
        phase: "Failed",
        metric_phases: &["Failed", "Failed"],
        message: Some(
            "Metric \"run-forever\" assessed Failed due to failed (1) > failureLimit (0)",
        ),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusMultipleFailuresInDryRunMode / ...WorstMessageInReconcileAnalysisRunInDryRunMode",
        metrics: &[dry("run-forever", "", "F"), dry("failed-metric", "", "F")],
        phase: "Successful",
        metric_phases: &["Failed", "Failed"],
        message: Some(""),
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusWithOnlyDryRunMetrics",
        metrics: &[dry("success-metric", "", "S")],
        phase: "Successful",
        metric_phases: &["Successful"],
        ..CASE
    },
    Case {
        argo: "TestAssessRunStatusWithMixedMetrics",
        metrics: &[m("run-forever", "", "I"), dry("success-metric", "", "F")],
        phase: "Inconclusive",
        metric_phases: &["Inconclusive", "Failed"],
        message: Some(
            "Metric \"run-forever\" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0)",
        ),
        ..CASE
    },
    Case {
        argo: "TestTrimMeasurementHistory (default limit 1)",
        note: "Argo passes the default limit in; a template states it as a rule for every metric",
        metrics: &[
            m("metric1", "", "S"),
            m("metric2", "interval: 50ms\ncount: 2", "SS"),
        ],
        retention: "[{metricName: \".*\", limit: 1}]",
        phase: "Successful",
        metric_phases: &["Successful", "Successful"],
        kept: &[1, 1],
        ..CASE
    },
    Case {
        argo: "TestTrimMeasurementHistory (default limit 1, metric2 rule limit 2)",
        note: "Argo passes the default limit in; a template states it as a rule for every \
               metric, listed first (the last matching rule wins)",
        metrics: &[
            m("metric1", "", "S"),
            m("metric2", "interval: 50ms\ncount: 2", "SS"),
        ],
        retention: "[{metricName: \".*\", limit: 1}, {metricName: metric2, limit: 2}]",
        phase: "Successful",
        metric_phases: &["Successful", "Successful"],
        kept: &[1, 2],
        ..CASE
    },
];

/// Cases of `argo_cases.rs` the CLI cannot reproduce, and why.
const NOT_CLI: &[(&str, &str)] = &[
    (
        "TestAssessMetricStatusNoMeasurements",
        "a run stopped before its first measurement: analyze measures at once and cannot be terminated",
    ),
    (
        "TestAssessMetricStatusInFlightMeasurement",
        "an in-flight measurement: a SkyWalking measurement completes in one call",
    ),
    (
        "TestAssessMetricStatusFailureLimit (failureLimit 3, failed 3)",
        RUNNING,
    ),
    (
        "TestAssessMetricStatusConsecutiveSuccessLimit (indefinite, consecutiveSuccess 3 < limit 5)",
        RUNNING,
    ),
    (
        "TestAssessMetricStatusConsecutiveSuccessLimit (count 9 not reached, 3 < limit 5)",
        RUNNING,
    ),
    (
        "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, neither)",
        RUNNING,
    ),
    (
        "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, both: failure wins)",
        BOTH,
    ),
    (
        "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, both: failure wins)",
        BOTH,
    ),
    (
        "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, neither)",
        RUNNING,
    ),
    (
        "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, both: failure wins)",
        BOTH,
    ),
    (
        "TestAssessMetricStatusInconclusiveLimit (inconclusiveLimit 3, inconclusive 3)",
        RUNNING,
    ),
    (
        "TestAssessMetricStatusConsecutiveErrors (4, not > 4)",
        RUNNING,
    ),
    (
        "TestAssessRunStatus (one metric still running)",
        "asserts a run still Running: analyze runs to the end",
    ),
    (
        "TestReconcileAnalysisRunResumeInProgress",
        "resumes an in-flight measurement: a SkyWalking measurement completes in one call",
    ),
    (
        "TestTerminateAnalysisRun (terminated before the first measurement)",
        TERMINATE,
    ),
    ("TestTerminateAnalysisRunInDryRunMode", TERMINATE),
    (
        "TestGenerateMetricTasksInterval (within the interval)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksInterval (past the interval)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksNoIntervalOrCount (measured once: done)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksNoIntervalOrCount (not measured yet)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksHonorInitialDelay (10 s of 20 s waited)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksHonorInitialDelay (20 s waited)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksError (no interval: an Error is retried)",
        SCHEDULE,
    ),
    (
        "TestGenerateMetricTasksError (interval 5m: retried after errorRetryInterval)",
        SCHEDULE,
    ),
    (
        "TestCalculateNextReconcileTimeInterval (requeue at the interval)",
        SCHEDULE,
    ),
    (
        "TestCalculateNextReconcileTimeInterval (in flight: no requeue)",
        SCHEDULE,
    ),
    (
        "TestCalculateNextReconcileTimeInterval (completed metric: no requeue)",
        SCHEDULE,
    ),
    ("TestCalculateNextReconcileTimeInitialDelay", SCHEDULE),
    ("TestCalculateNextReconcileTimeNoInterval", SCHEDULE),
    ("TestCalculateNextReconcileEarliestMetric", SCHEDULE),
    (
        "TestCalculateNextReconcileUponError (no interval)",
        SCHEDULE,
    ),
    (
        "TestCalculateNextReconcileUponError (interval 5m)",
        SCHEDULE,
    ),
    (
        "TestTrimMeasurementHistory (default limit 2)",
        "the default retention (Argo: passed in by the caller) is 10 in a template; limit 2 of \
         at most 2 measurements is the `metric2 rule limit 2` case",
    ),
];

const RUNNING: &str = "asserts a metric still Running at preset counters: analyze only shows \
                       where a metric ends, and its terminating outcome needs a terminate";
const BOTH: &str = "preset counters no sequence of measurements reaches (a fifth failure and a \
                    fourth consecutive success at once): one of them ends the metric first";
const TERMINATE: &str = "analyze has no terminate request";
const SCHEDULE: &str = "when the next measurement is due, at preset times: tests make no timing \
                        assertions; the cases above run interval, count, initialDelay and \
                        errorRetryInterval for real";

/// The value the simulator serves for an outcome letter (`None`: no data, Error).
fn value_of(letter: u8) -> Option<f64> {
    match letter {
        b'S' => Some(1.0),
        b'F' => Some(2.0),
        b'I' => Some(3.0),
        _ => None,
    }
}

fn phase_of(letter: u8) -> &'static str {
    match letter {
        b'S' => "Successful",
        b'F' => "Failed",
        b'I' => "Inconclusive",
        _ => "Error",
    }
}

fn service(metric: &str) -> String {
    format!("case-{metric}")
}

/// The case as a skycanary template, its metrics listed in `order`.
fn template(case: &Case, order: &[usize], address: &str) -> String {
    let mut t = String::from(
        "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: case}\nspec:\n  metrics:\n",
    );
    for &i in order {
        let metric = &case.metrics[i];
        t.push_str(&format!("  - name: {}\n", metric.name));
        for line in metric.limits.lines() {
            t.push_str(&format!("    {line}\n"));
        }
        t.push_str(&format!(
            "    errorRetryInterval: 50ms\n    noData: Error\n    successCondition: \"last(result) == 1\"\n    failureCondition: \"last(result) == 2\"\n    provider:\n      skywalking:\n        address: {address}\n        window: 5m\n        metric: service_cpm\n        entity: {{serviceName: {}}}\n",
            service(metric.name)
        ));
    }
    let dry: Vec<String> = case
        .metrics
        .iter()
        .filter(|m| m.dry_run)
        .map(|m| format!("{{metricName: {}}}", m.name))
        .collect();
    if !dry.is_empty() {
        t.push_str(&format!("  dryRun: [{}]\n", dry.join(", ")));
    }
    if !case.retention.is_empty() {
        t.push_str(&format!("  measurementRetention: {}\n", case.retention));
    }
    t
}

/// Runs `case` with its metrics listed in `order`; `Err` says how the outcome differs.
async fn play(case: &Case, order: &[usize]) -> Result<(), String> {
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    // Requests that read each metric so far: the script's position.
    let served: BTreeMap<String, Arc<AtomicUsize>> = case
        .metrics
        .iter()
        .map(|m| (service(m.name), Arc::new(AtomicUsize::new(0))))
        .collect();
    for metric in case.metrics {
        let n = served[&service(metric.name)].clone();
        let script = metric.script.as_bytes();
        sim.set_series(
            "service_cpm",
            SimEntity::service(service(metric.name)),
            move |_| {
                // Past the script: no data (an Error measurement nobody expects).
                script
                    .get(n.load(Ordering::SeqCst))
                    .copied()
                    .and_then(value_of)
            },
        );
    }
    let counters = served.clone();
    sim.set_observer(move |ex| {
        let body = String::from_utf8_lossy(ex.body);
        // Only metric reads name the service (the probes ask for version and time zone).
        for (name, n) in &counters {
            if body.contains(&format!("\"{name}\"")) {
                n.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let running = sim
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("t.yaml");
    let text = template(case, order, &running.url());
    std::fs::write(&path, &text).map_err(|e| e.to_string())?;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(["analyze", &path.display().to_string(), "--output", "json"])
            .output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    running.shutdown().await;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{e}: {}\n{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    check(case, order, &v, out.status.code()).map_err(|e| format!("{e}\n{v:#}\n{text}"))
}

fn check(case: &Case, order: &[usize], v: &Value, code: Option<i32>) -> Result<(), String> {
    let want_code = match case.phase {
        "Successful" => 0,
        "Failed" => 1,
        "Inconclusive" => 2,
        _ => 3,
    };
    if v["phase"] != case.phase || code != Some(want_code) {
        return Err(format!(
            "phase {} (exit {code:?}), want {} (exit {want_code})",
            v["phase"], case.phase
        ));
    }
    for (position, &i) in order.iter().enumerate() {
        let metric = &case.metrics[i];
        let r = &v["metricResults"][position];
        if r["name"] != metric.name || r["phase"] != case.metric_phases[i] {
            return Err(format!(
                "metric {}: {} {}, want {}",
                metric.name, r["name"], r["phase"], case.metric_phases[i]
            ));
        }
        let measured: Vec<&str> = r["measurements"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["phase"].as_str()).collect())
            .unwrap_or_default();
        let script: Vec<&str> = metric.script.bytes().map(phase_of).collect();
        let kept = case.kept.get(i).copied().unwrap_or(script.len());
        if measured != script[script.len() - kept..] {
            return Err(format!(
                "metric {}: measurements {measured:?}, want the last {kept} of {script:?}",
                metric.name
            ));
        }
    }
    // Which metric's message the run shows depends on the order (Argo: the first listed).
    let listed = order.windows(2).all(|w| w[0] < w[1]);
    if let (Some(want), true) = (case.message, listed) {
        let got = v["message"].as_str().unwrap_or("");
        let ok = if want.is_empty() {
            got.is_empty()
        } else {
            got.starts_with(want)
        };
        if !ok {
            return Err(format!("message {got:?}, want {want:?}..."));
        }
    }
    Ok(())
}

/// Every `argo:` case name of the pure table, and the trim cases' names.
fn pure_case_names() -> Vec<String> {
    let text = include_str!("../../crates/core/src/analysis/run/argo_cases.rs");
    let argo = regex::Regex::new(r#"argo: "([^"]+)""#).expect("static regex");
    let trim = regex::Regex::new(r#"\(\s*"(default limit[^"]*)",\s*\["#).expect("static regex");
    argo.captures_iter(text)
        .map(|c| c[1].to_string())
        .chain(
            trim.captures_iter(text)
                .map(|c| format!("TestTrimMeasurementHistory ({})", &c[1])),
        )
        .collect()
}

#[test]
fn every_argo_case_is_run_through_the_cli_or_says_why_not() {
    let names = pure_case_names();
    assert!(names.len() > 60, "{names:?}");
    let here: Vec<&str> = CASES
        .iter()
        .map(|c| c.argo)
        .chain(NOT_CLI.iter().map(|(n, _)| *n))
        .collect();
    for name in &names {
        assert_eq!(
            here.iter().filter(|h| **h == name).count(),
            1,
            "{name}: run it through the CLI or list it in NOT_CLI with the reason"
        );
    }
    for h in &here {
        assert!(
            names.iter().any(|n| n == h),
            "{h}: not a case of argo_cases.rs"
        );
    }
    for case in CASES {
        assert_eq!(
            case.metrics.len(),
            case.metric_phases.len(),
            "{}",
            case.argo
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_analysis_cases_agree_through_the_cli() {
    use futures_util::StreamExt;
    let runs = CASES.iter().flat_map(|case| {
        let listed: Vec<usize> = (0..case.metrics.len()).collect();
        let reversed: Vec<usize> = listed.iter().rev().copied().collect();
        let mut orders = vec![listed];
        if case.metrics.len() > 1 {
            orders.push(reversed);
        }
        orders.into_iter().map(move |order| async move {
            let r = play(case, &order).await;
            (case, order, r)
        })
    });
    let results: Vec<_> = futures_util::stream::iter(runs)
        .buffer_unordered(3)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(case, order, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("{} (order {order:?}; {}): {e}", case.argo, case.note))
        })
        .collect();
    eprintln!(
        "{} of {} Argo analysis cases agree through the CLI ({} runs, both metric orders)",
        CASES.len() - {
            let mut names: Vec<&str> = results
                .iter()
                .filter(|(_, _, r)| r.is_err())
                .map(|(c, _, _)| c.argo)
                .collect();
            names.sort_unstable();
            names.dedup();
            names.len()
        },
        CASES.len(),
        results.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
