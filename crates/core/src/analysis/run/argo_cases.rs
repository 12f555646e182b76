//! Argo Rollouts' own analysis cases, carried over as data.
//!
//! Source: argoproj/argo-rollouts `analysis/analysis_test.go` (read at commit 9f8d111d8). Each
//! case restates the facts a Go test sets up and the outcome it asserts (no code is taken) and
//! runs them through this state machine. Where DESIGN §3 deliberately differs (no evidence is
//! never Successful: the #4479 fix), the case keeps Argo's outcome next to the reason and
//! expects DESIGN's; a difference without a reason fails the table.
//!
//! Not carried over, because skycanary has no such thing: resuming or terminating in-flight
//! Job/Web measurements (`ResumeAt`, `TestGenerateMetricTasksIncomplete`, `...HonorResumeAt`:
//! a SkyWalking measurement completes in one call), secrets, run TTL/garbage collection, and
//! spec validation, which skycanary does at load time (`resources::load` tests).

use super::*;
use crate::analysis::spec::DEFAULT_CONSECUTIVE_ERROR_LIMIT;
use Phase::{
    Error as E, Failed as F, Inconclusive as I, Pending as P, Running as R, Successful as S,
};
use chrono::TimeZone;

/// A metric's limits as Argo's `Metric` sets them; absent fields take Argo's defaults.
#[derive(Clone, Copy)]
struct Limits {
    /// `interval: 60s` set (Argo's tests use 60 s wherever they set one).
    interval: bool,
    count: Option<u32>,
    failure_limit: i32,
    inconclusive_limit: i32,
    consecutive_error_limit: i32,
    consecutive_success_limit: i32,
}

const DEFAULTS: Limits = Limits {
    interval: false,
    count: None,
    failure_limit: 0,
    inconclusive_limit: 0,
    consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
    consecutive_success_limit: 0,
};

const EVERY_MINUTE: Limits = Limits {
    interval: true,
    ..DEFAULTS
};

impl Limits {
    fn spec(self, name: &str) -> MetricSpec {
        let mut m = MetricSpec::new(name);
        m.interval = self.interval.then_some(Duration::from_secs(60));
        m.count = self.count;
        m.failure_limit = self.failure_limit;
        m.inconclusive_limit = self.inconclusive_limit;
        m.consecutive_error_limit = self.consecutive_error_limit;
        m.consecutive_success_limit = self.consecutive_success_limit;
        m
    }
}

/// A `MetricResult`'s counters, as the Go tests preset them.
#[derive(Clone, Copy)]
struct Counters {
    count: u32,
    successful: u32,
    failed: u32,
    inconclusive: u32,
    consecutive_error: u32,
    consecutive_success: u32,
}

const ZERO: Counters = Counters {
    count: 0,
    successful: 0,
    failed: 0,
    inconclusive: 0,
    consecutive_error: 0,
    consecutive_success: 0,
};

/// One `assessMetricStatus` case: a metric, its counters and last measurement, and the
/// metric phase Argo asserts while running and while terminating (`None`: not asserted).
struct Assess {
    argo: &'static str,
    limits: Limits,
    counters: Counters,
    /// Phase of the last measurement; `None`: nothing measured yet.
    last: Option<Phase>,
    running: Option<Phase>,
    terminating: Option<Phase>,
    /// Argo's terminating outcome where DESIGN deliberately differs, and why.
    argo_terminating: Option<(Phase, &'static str)>,
    /// The limit text of the metric's message, in Argo's wording.
    message: Option<&'static str>,
}

const ASSESS: Assess = Assess {
    argo: "",
    limits: DEFAULTS,
    counters: ZERO,
    last: None,
    running: None,
    terminating: None,
    argo_terminating: None,
    message: None,
};

/// DESIGN §3, the fix of argo-rollouts#4479.
const FIX_4479: &str = "DESIGN §3 (fix of #4479): a stopped bounded metric that never reached its \
                        count, or a metric stopped before any measurement, has not shown what it \
                        was asked to show: Inconclusive, never Successful";

const FL4_CSL4: Limits = Limits {
    failure_limit: 4,
    consecutive_success_limit: 4,
    ..EVERY_MINUTE
};
const FL4_CSL4_COUNT10: Limits = Limits {
    count: Some(10),
    ..FL4_CSL4
};

const fn fsc(failed: u32, successful: u32, count: u32, consecutive_success: u32) -> Counters {
    Counters {
        count,
        successful,
        failed,
        consecutive_success,
        ..ZERO
    }
}

const ASSESS_CASES: &[Assess] = &[
    Assess {
        argo: "TestAssessMetricStatusNoMeasurements",
        running: Some(P),
        terminating: Some(I),
        argo_terminating: Some((S, FIX_4479)),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusInFlightMeasurement",
        counters: fsc(0, 1, 1, 1),
        last: Some(R),
        running: Some(R),
        terminating: Some(R),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimit (failureLimit 2, failed 3)",
        limits: Limits {
            failure_limit: 2,
            ..EVERY_MINUTE
        },
        counters: fsc(3, 0, 3, 0),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        message: Some("due to failed (3) > failureLimit (2)"),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimit (failureLimit 3, failed 3)",
        limits: Limits {
            failure_limit: 3,
            ..EVERY_MINUTE
        },
        counters: fsc(3, 0, 3, 0),
        last: Some(F),
        running: Some(R),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (indefinite, consecutiveSuccess = limit 3)",
        limits: Limits {
            failure_limit: -1,
            consecutive_success_limit: 3,
            ..EVERY_MINUTE
        },
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(S),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (indefinite, consecutiveSuccess 3 < limit 5)",
        limits: Limits {
            failure_limit: -1,
            consecutive_success_limit: 5,
            ..EVERY_MINUTE
        },
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(R),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 7 reached, 3 < limit 5)",
        limits: Limits {
            failure_limit: -1,
            consecutive_success_limit: 5,
            count: Some(7),
            ..EVERY_MINUTE
        },
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 7 reached, 3 = limit 3)",
        limits: Limits {
            failure_limit: -1,
            consecutive_success_limit: 3,
            count: Some(7),
            ..EVERY_MINUTE
        },
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(S),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 9 not reached, 3 = limit 3)",
        limits: Limits {
            failure_limit: -1,
            consecutive_success_limit: 3,
            count: Some(9),
            ..EVERY_MINUTE
        },
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(S),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveSuccessLimit (count 9 not reached, 3 < limit 5)",
        limits: Limits {
            failure_limit: -1,
            consecutive_success_limit: 5,
            count: Some(9),
            ..EVERY_MINUTE
        },
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(R),
        terminating: Some(I),
        argo_terminating: Some((S, FIX_4479)),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, neither)",
        limits: FL4_CSL4,
        counters: fsc(3, 4, 7, 3),
        last: Some(F),
        running: Some(R),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, failureLimit violated)",
        limits: FL4_CSL4,
        counters: fsc(5, 9, 9, 0),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        message: Some("due to failed (5) > failureLimit (4)"),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, success limit met)",
        limits: FL4_CSL4,
        counters: fsc(3, 5, 8, 4),
        last: Some(F),
        running: Some(S),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (indefinite, both: failure wins)",
        limits: FL4_CSL4,
        counters: fsc(5, 5, 10, 4),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, neither)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(4, 6, 10, 3),
        last: Some(F),
        running: Some(I),
        terminating: Some(I),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, failureLimit violated)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(5, 5, 10, 3),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, success limit met)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(4, 6, 10, 4),
        last: Some(F),
        running: Some(S),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 reached, both: failure wins)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(5, 5, 10, 4),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, neither)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(3, 5, 8, 3),
        last: Some(F),
        running: Some(R),
        terminating: Some(I),
        argo_terminating: Some((S, FIX_4479)),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, failureLimit violated)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(5, 3, 8, 3),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, success limit met)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(3, 5, 8, 4),
        last: Some(F),
        running: Some(S),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit (count 10 not reached, both: failure wins)",
        limits: FL4_CSL4_COUNT10,
        counters: fsc(5, 4, 9, 4),
        last: Some(F),
        running: Some(F),
        terminating: Some(F),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusInconclusiveLimit (inconclusiveLimit 2, inconclusive 3)",
        limits: Limits {
            inconclusive_limit: 2,
            ..EVERY_MINUTE
        },
        counters: Counters {
            inconclusive: 3,
            count: 3,
            ..ZERO
        },
        last: Some(I),
        running: Some(I),
        terminating: Some(I),
        message: Some("due to inconclusive (3) > inconclusiveLimit (2)"),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusInconclusiveLimit (inconclusiveLimit 3, inconclusive 3)",
        limits: Limits {
            inconclusive_limit: 3,
            ..EVERY_MINUTE
        },
        counters: Counters {
            inconclusive: 3,
            count: 3,
            ..ZERO
        },
        last: Some(I),
        running: Some(R),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveErrors (5 > default limit 4)",
        limits: EVERY_MINUTE,
        counters: Counters {
            consecutive_error: 5,
            count: 5,
            ..ZERO
        },
        last: Some(E),
        running: Some(E),
        terminating: Some(E),
        message: Some("due to consecutiveErrors (5) > consecutiveErrorLimit (4)"),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusConsecutiveErrors (4, not > 4)",
        limits: EVERY_MINUTE,
        counters: Counters {
            consecutive_error: 4,
            count: 5,
            ..ZERO
        },
        last: Some(E),
        running: Some(R),
        terminating: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusCountReached (10 of 10 successful)",
        limits: Limits {
            count: Some(10),
            ..DEFAULTS
        },
        counters: Counters {
            successful: 10,
            count: 10,
            ..ZERO
        },
        last: Some(S),
        running: Some(S),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricStatusCountReached (5 successful, 5 inconclusive)",
        limits: Limits {
            count: Some(10),
            ..DEFAULTS
        },
        counters: Counters {
            successful: 5,
            inconclusive: 5,
            count: 10,
            ..ZERO
        },
        last: Some(S),
        running: Some(I),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricFailureInconclusiveOrError (failed 1)",
        counters: Counters { failed: 1, ..ZERO },
        last: Some(F),
        terminating: Some(F),
        message: Some("due to failed (1) > failureLimit (0)"),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricFailureInconclusiveOrError (inconclusive 1)",
        counters: Counters {
            inconclusive: 1,
            ..ZERO
        },
        last: Some(I),
        terminating: Some(I),
        message: Some("due to inconclusive (1) > inconclusiveLimit (0)"),
        ..ASSESS
    },
    Assess {
        argo: "TestAssessMetricFailureInconclusiveOrError (consecutiveError 5)",
        counters: Counters {
            consecutive_error: 5,
            ..ZERO
        },
        last: Some(E),
        terminating: Some(E),
        message: Some("due to consecutiveErrors (5) > consecutiveErrorLimit (4)"),
        ..ASSESS
    },
];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A measurement as the Go tests build them: a phase, optionally a message.
fn measurement(phase: Phase, message: &str, secs: i64) -> Measurement {
    Measurement {
        phase,
        value: None,
        message: (!message.is_empty()).then(|| message.to_string()),
        started_at: at(secs),
        finished_at: phase.is_completed().then(|| at(secs)),
        metadata: Default::default(),
        evidence: None,
    }
}

#[test]
fn argo_assess_metric_status_cases() {
    for case in ASSESS_CASES {
        let name = case.argo;
        if let (Some((argo, why)), Some(ours)) = (case.argo_terminating, case.terminating) {
            assert_ne!(argo, ours, "{name}: a recorded difference must differ");
            assert!(!why.is_empty(), "{name}: a difference needs its reason");
        }
        let m = case.limits.spec("success-rate");
        let mut r = new_metric_result(&m);
        let c = case.counters;
        r.count = c.count;
        r.successful = c.successful;
        r.failed = c.failed;
        r.inconclusive = c.inconclusive;
        r.consecutive_error = c.consecutive_error;
        r.error = c.consecutive_error;
        r.consecutive_success = c.consecutive_success;
        r.measurements = case
            .last
            .map(|p| measurement(p, "", 0).into())
            .into_iter()
            .collect();
        for (terminating, want) in [(false, case.running), (true, case.terminating)] {
            let Some(want) = want else { continue };
            let (phase, message) = assess_metric(&m, &r, terminating);
            assert_eq!(phase, want, "{name} (terminating: {terminating})");
            if let Some(text) = case.message {
                let message = message.unwrap_or_default();
                assert_eq!(
                    message,
                    format!("Metric \"success-rate\" assessed {want} {text}"),
                    "{name}"
                );
            }
        }
    }
}

/// One metric of a run case.
#[derive(Clone, Copy)]
struct Metric {
    name: &'static str,
    limits: Limits,
    initial_delay: u64,
    dry_run: bool,
}

const METRIC: Metric = Metric {
    name: "",
    limits: DEFAULTS,
    initial_delay: 0,
    dry_run: false,
};

const fn named(name: &'static str) -> Metric {
    Metric { name, ..METRIC }
}

const fn dry(name: &'static str) -> Metric {
    Metric {
        name,
        dry_run: true,
        ..METRIC
    }
}

/// What happens to a run, in order.
enum Step {
    /// Measurements taken at one moment: metric index, phase, message (`""`: none).
    Batch(&'static [(usize, Phase, &'static str)]),
    /// Stopped from outside (Argo: `spec.terminate: true`), with reason "requested".
    Terminate,
}

use Step::{Batch, Terminate};

/// One reconcile-level case: metrics, what happens, and the outcome.
struct RunCase {
    argo: &'static str,
    metrics: &'static [Metric],
    steps: &'static [Step],
    phase: Phase,
    metric_phases: &'static [Phase],
    /// The run's message; `Some("")`: none; `None`: not asserted.
    message: Option<&'static str>,
    /// Argo's run phase where DESIGN deliberately differs, and why.
    argo_phase: Option<(Phase, &'static str)>,
    /// (metric, [count, error, consecutiveError]) after the steps.
    counters: Option<(usize, [u32; 3])>,
    /// Metrics due long after the last step.
    due_after: Option<&'static [usize]>,
}

const RUN: RunCase = RunCase {
    argo: "",
    metrics: &[],
    steps: &[],
    phase: P,
    metric_phases: &[],
    message: None,
    argo_phase: None,
    counters: None,
    due_after: None,
};

const FOREVER_AND_FAILED: &[Metric] = &[named("run-forever"), named("failed-metric")];
const FOREVER_AND_FAILED_DRY: &[Metric] = &[dry("run-forever"), dry("failed-metric")];
const FIVE_ERRORS: &[Step] = &[
    Batch(&[(0, E, "provider down")]),
    Batch(&[(0, E, "provider down")]),
    Batch(&[(0, E, "provider down")]),
    Batch(&[(0, E, "provider down")]),
    Batch(&[(0, E, "provider down")]),
];

const RUN_CASES: &[RunCase] = &[
    RunCase {
        argo: "TestAssessRunStatus (one metric still running)",
        metrics: &[named("latency"), named("success-rate")],
        steps: &[Batch(&[(0, S, "")])],
        phase: R,
        metric_phases: &[S, P],
        message: Some(""),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatus (worst of the completed metrics)",
        metrics: &[named("latency"), named("success-rate")],
        steps: &[Batch(&[(0, S, ""), (1, F, "")])],
        phase: F,
        metric_phases: &[S, F],
        ..RUN
    },
    RunCase {
        argo: "TestGenerateMetricTasksFailing (no new measurement once a metric failed)",
        metrics: &[named("success-rate"), named("latency")],
        steps: &[Batch(&[(1, F, "")])],
        phase: F,
        metric_phases: &[I, F],
        due_after: Some(&[]),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusUpdateResult + TestReconcileAnalysisRunTerminateSiblingAfterFail (Failed)",
        metrics: FOREVER_AND_FAILED,
        steps: &[Batch(&[(0, R, "")]), Batch(&[(1, F, "")])],
        phase: F,
        metric_phases: &[I, F],
        ..RUN
    },
    RunCase {
        argo: "TestReconcileAnalysisRunTerminateSiblingAfterFail (Inconclusive)",
        metrics: FOREVER_AND_FAILED,
        steps: &[Batch(&[(0, R, "")]), Batch(&[(1, I, "")])],
        phase: I,
        metric_phases: &[I, I],
        ..RUN
    },
    RunCase {
        // Argo presets the metric Error; measured, that takes consecutiveErrorLimit + 1 errors.
        argo: "TestReconcileAnalysisRunTerminateSiblingAfterFail (Error)",
        metrics: &[
            named("failed-metric"),
            Metric {
                name: "run-forever",
                limits: EVERY_MINUTE,
                ..METRIC
            },
        ],
        steps: &[
            Batch(&[(1, R, "")]),
            Batch(&[(0, E, "provider down")]),
            Batch(&[(0, E, "provider down")]),
            Batch(&[(0, E, "provider down")]),
            Batch(&[(0, E, "provider down")]),
            Batch(&[(0, E, "provider down")]),
        ],
        phase: E,
        metric_phases: &[E, I],
        message: Some(
            "Metric \"failed-metric\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): \"Error Message: provider down\"",
        ),
        ..RUN
    },
    RunCase {
        argo: "TestReconcileAnalysisRunResumeInProgress",
        metrics: &[named("test")],
        steps: &[Batch(&[(0, R, "")]), Batch(&[(0, S, "")])],
        phase: S,
        metric_phases: &[S],
        ..RUN
    },
    RunCase {
        // Argo presets count 4 next to 4 errors; from measurements errors are not counted.
        argo: "TestRunMeasurementsResetConsecutiveErrorCounter (Error)",
        metrics: &[named("test")],
        steps: FIVE_ERRORS,
        phase: E,
        metric_phases: &[E],
        counters: Some((0, [0, 5, 5])),
        ..RUN
    },
    RunCase {
        argo: "TestRunMeasurementsResetConsecutiveErrorCounter (Successful resets the streak)",
        metrics: &[named("test")],
        steps: &[
            Batch(&[(0, E, "")]),
            Batch(&[(0, E, "")]),
            Batch(&[(0, E, "")]),
            Batch(&[(0, E, "")]),
            Batch(&[(0, S, "")]),
        ],
        phase: S,
        metric_phases: &[S],
        counters: Some((0, [1, 4, 0])),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusErrorMessageAnalysisPhaseFail",
        metrics: FOREVER_AND_FAILED,
        steps: &[Batch(&[(0, S, ""), (1, F, "")])],
        phase: F,
        metric_phases: &[S, F],
        message: Some(
            "Metric \"failed-metric\" assessed Failed due to failed (1) > failureLimit (0)",
        ),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusErrorMessageAnalysisPhaseFailInDryRunMode",
        metrics: FOREVER_AND_FAILED_DRY,
        steps: &[Batch(&[(0, S, ""), (1, F, "")])],
        phase: S,
        metric_phases: &[S, F],
        message: Some(""),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusErrorMessageFromProvider",
        metrics: FOREVER_AND_FAILED,
        steps: &[Batch(&[(0, S, ""), (1, F, "Provider Error")])],
        phase: F,
        metric_phases: &[S, F],
        message: Some(
            "Metric \"failed-metric\" assessed Failed due to failed (1) > failureLimit (0): \"Error Message: Provider Error\"",
        ),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusErrorMessageFromProviderInDryRunMode",
        metrics: FOREVER_AND_FAILED_DRY,
        steps: &[Batch(&[(0, S, ""), (1, F, "Provider Error")])],
        phase: S,
        metric_phases: &[S, F],
        message: Some(""),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusMultipleFailures / ...WorstMessageInReconcileAnalysisRun (first failed metric's message)",
        metrics: FOREVER_AND_FAILED,
        steps: &[Batch(&[(0, F, ""), (1, F, "")])],
        phase: F,
        metric_phases: &[F, F],
        message: Some(
            "Metric \"run-forever\" assessed Failed due to failed (1) > failureLimit (0)",
        ),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusMultipleFailuresInDryRunMode / ...WorstMessageInReconcileAnalysisRunInDryRunMode",
        metrics: FOREVER_AND_FAILED_DRY,
        steps: &[Batch(&[(0, F, ""), (1, F, "")])],
        phase: S,
        metric_phases: &[F, F],
        message: Some(""),
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusWithOnlyDryRunMetrics",
        metrics: &[dry("success-metric")],
        steps: &[Batch(&[(0, S, "")])],
        phase: S,
        metric_phases: &[S],
        ..RUN
    },
    RunCase {
        argo: "TestAssessRunStatusWithMixedMetrics",
        metrics: &[named("run-forever"), dry("success-metric")],
        steps: &[Batch(&[(0, I, ""), (1, F, "")])],
        phase: I,
        metric_phases: &[I, F],
        message: Some(
            "Metric \"run-forever\" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0)",
        ),
        ..RUN
    },
    RunCase {
        argo: "TestTerminateAnalysisRun (terminated before the first measurement)",
        metrics: &[Metric {
            name: "success-rate",
            limits: Limits {
                interval: true,
                ..DEFAULTS
            },
            initial_delay: 20,
            dry_run: false,
        }],
        steps: &[Terminate],
        phase: I,
        metric_phases: &[I],
        message: Some(
            "Run Terminated: requested; Metric \"success-rate\" assessed Inconclusive because the run was terminated before any measurement",
        ),
        argo_phase: Some((S, FIX_4479)),
        ..RUN
    },
    RunCase {
        argo: "TestTerminateAnalysisRunInDryRunMode",
        metrics: &[Metric {
            name: "success-rate",
            limits: Limits {
                interval: true,
                ..DEFAULTS
            },
            initial_delay: 20,
            dry_run: true,
        }],
        steps: &[Terminate],
        phase: S,
        metric_phases: &[I],
        message: Some("Run Terminated: requested"),
        ..RUN
    },
];

/// Runs `case` with its metrics listed in `order` (indices into `case.metrics`).
fn play(case: &RunCase, order: &[usize]) -> (RunSpec, RunState, i64) {
    let name = case.argo;
    let position = |i: usize| order.iter().position(|o| *o == i).expect("in order");
    let spec = RunSpec {
        metrics: order
            .iter()
            .map(|i| &case.metrics[*i])
            .map(|m| {
                let mut s = m.limits.spec(m.name);
                s.dry_run = m.dry_run;
                s.initial_delay =
                    (m.initial_delay > 0).then(|| Duration::from_secs(m.initial_delay));
                s
            })
            .collect(),
    };
    let mut st = start_run(&spec, t0());
    let mut now = 0;
    for step in case.steps {
        now += 60;
        match step {
            Batch(entries) => {
                let batch = entries
                    .iter()
                    .map(|(i, p, msg)| (position(*i), measurement(*p, msg, now)))
                    .collect();
                record_batch(&spec, &mut st, batch, at(now)).expect(name);
            }
            Terminate => {
                terminate(&spec, &mut st, "requested", at(now));
            }
        }
    }
    (spec, st, now)
}

#[test]
fn argo_reconcile_cases() {
    for case in RUN_CASES {
        let name = case.argo;
        if let Some((argo, why)) = case.argo_phase {
            assert_ne!(
                argo, case.phase,
                "{name}: a recorded difference must differ"
            );
            assert!(!why.is_empty(), "{name}: a difference needs its reason");
        }
        let listed: Vec<usize> = (0..case.metrics.len()).collect();
        let (spec, st, now) = play(case, &listed);
        assert_eq!(st.phase, case.phase, "{name}: {st:?}");
        let phases: Vec<Phase> = st.metric_results.iter().map(|r| r.phase).collect();
        assert_eq!(phases, case.metric_phases, "{name}");
        if let Some(want) = case.message {
            assert_eq!(st.message.as_deref().unwrap_or(""), want, "{name}");
        }
        if let Some((i, [count, error, consecutive_error])) = case.counters {
            let r = &st.metric_results[i];
            assert_eq!(
                [r.count, r.error, r.consecutive_error],
                [count, error, consecutive_error],
                "{name}"
            );
        }
        if let Some(due) = case.due_after {
            assert_eq!(due_metrics(&spec, &st, at(now + 100_000)), due, "{name}");
        }
        // The metrics' order in the template never changes a verdict.
        let reversed: Vec<usize> = listed.iter().rev().copied().collect();
        let (_, rst, _) = play(case, &reversed);
        assert_eq!(rst.phase, case.phase, "{name} (metrics reversed)");
        for (r, want) in rst.metric_results.iter().rev().zip(case.metric_phases) {
            assert_eq!(r.phase, *want, "{name} (metrics reversed): {}", r.name);
        }
    }
}

/// One metric of a scheduling case; times are seconds relative to "now".
struct Sched {
    interval: Option<u64>,
    count: Option<u32>,
    initial_delay: Option<u64>,
    /// The last measurement: phase and when it finished (`Running`: started, in flight).
    last: Option<(Phase, i64)>,
}

const SCHED: Sched = Sched {
    interval: None,
    count: None,
    initial_delay: None,
    last: None,
};

/// One `generateMetricTasks` / `calculateNextReconcileTime` case.
struct SchedCase {
    argo: &'static str,
    /// When the run started, relative to now.
    started: i64,
    metrics: &'static [Sched],
    /// Metrics to measure now.
    due: &'static [usize],
    /// Seconds from now to the next due time; `None`: nothing will become due by time.
    next: Option<i64>,
}

const SCHED_CASES: &[SchedCase] = &[
    SchedCase {
        argo: "TestGenerateMetricTasksInterval (within the interval)",
        started: -600,
        metrics: &[Sched {
            interval: Some(60),
            last: Some((S, -50)),
            ..SCHED
        }],
        due: &[],
        next: Some(10),
    },
    SchedCase {
        argo: "TestGenerateMetricTasksInterval (past the interval)",
        started: -600,
        metrics: &[Sched {
            interval: Some(60),
            last: Some((S, -61)),
            ..SCHED
        }],
        due: &[0],
        next: Some(0),
    },
    SchedCase {
        argo: "TestGenerateMetricTasksNoIntervalOrCount (measured once: done)",
        started: -600,
        metrics: &[Sched {
            last: Some((S, -50)),
            ..SCHED
        }],
        due: &[],
        next: None,
    },
    SchedCase {
        argo: "TestGenerateMetricTasksNoIntervalOrCount (not measured yet)",
        started: -50,
        metrics: &[SCHED],
        due: &[0],
        next: Some(0),
    },
    SchedCase {
        argo: "TestGenerateMetricTasksHonorInitialDelay (10 s of 20 s waited)",
        started: -10,
        metrics: &[Sched {
            initial_delay: Some(20),
            ..SCHED
        }],
        due: &[],
        next: Some(10),
    },
    SchedCase {
        argo: "TestGenerateMetricTasksHonorInitialDelay (20 s waited)",
        started: -20,
        metrics: &[Sched {
            initial_delay: Some(20),
            ..SCHED
        }],
        due: &[0],
        next: Some(0),
    },
    SchedCase {
        argo: "TestGenerateMetricTasksError (no interval: an Error is retried)",
        started: -600,
        metrics: &[Sched {
            last: Some((E, -120)),
            ..SCHED
        }],
        due: &[0],
        next: Some(0),
    },
    SchedCase {
        argo: "TestGenerateMetricTasksError (interval 5m: retried after errorRetryInterval)",
        started: -600,
        metrics: &[Sched {
            interval: Some(300),
            last: Some((E, -120)),
            ..SCHED
        }],
        due: &[0],
        next: Some(0),
    },
    SchedCase {
        argo: "TestCalculateNextReconcileTimeInterval (requeue at the interval)",
        started: -600,
        metrics: &[Sched {
            interval: Some(60),
            last: Some((S, -30)),
            ..SCHED
        }],
        due: &[],
        next: Some(30),
    },
    SchedCase {
        argo: "TestCalculateNextReconcileTimeInterval (in flight: no requeue)",
        started: -600,
        metrics: &[Sched {
            interval: Some(60),
            last: Some((R, -30)),
            ..SCHED
        }],
        due: &[],
        next: None,
    },
    SchedCase {
        // Argo presets the phase Successful; here the metric completes by reaching count 1.
        argo: "TestCalculateNextReconcileTimeInterval (completed metric: no requeue)",
        started: -600,
        metrics: &[Sched {
            interval: Some(60),
            count: Some(1),
            last: Some((S, -120)),
            ..SCHED
        }],
        due: &[],
        next: None,
    },
    SchedCase {
        argo: "TestCalculateNextReconcileTimeInitialDelay",
        started: -30,
        metrics: &[
            Sched {
                interval: Some(60),
                last: Some((S, -30)),
                ..SCHED
            },
            Sched {
                interval: Some(60),
                initial_delay: Some(40),
                ..SCHED
            },
        ],
        due: &[],
        next: Some(10),
    },
    SchedCase {
        argo: "TestCalculateNextReconcileTimeNoInterval",
        started: -600,
        metrics: &[Sched {
            count: Some(1),
            last: Some((S, 0)),
            ..SCHED
        }],
        due: &[],
        next: None,
    },
    SchedCase {
        argo: "TestCalculateNextReconcileEarliestMetric",
        started: -600,
        metrics: &[
            Sched {
                interval: Some(60),
                last: Some((S, -30)),
                ..SCHED
            },
            Sched {
                interval: Some(60),
                last: Some((S, -50)),
                ..SCHED
            },
        ],
        due: &[],
        next: Some(10),
    },
    SchedCase {
        argo: "TestCalculateNextReconcileUponError (no interval)",
        started: -600,
        metrics: &[Sched {
            last: Some((E, 0)),
            ..SCHED
        }],
        due: &[],
        next: Some(10),
    },
    SchedCase {
        argo: "TestCalculateNextReconcileUponError (interval 5m)",
        started: -600,
        metrics: &[Sched {
            interval: Some(300),
            last: Some((E, 0)),
            ..SCHED
        }],
        due: &[],
        next: Some(10),
    },
];

#[test]
fn argo_scheduling_cases() {
    const NOW: i64 = 1000;
    for case in SCHED_CASES {
        let name = case.argo;
        let spec = RunSpec {
            metrics: case
                .metrics
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut m = MetricSpec::new(format!("m{i}"));
                    m.interval = s.interval.map(Duration::from_secs);
                    m.count = s.count;
                    m.initial_delay = s.initial_delay.map(Duration::from_secs);
                    m
                })
                .collect(),
        };
        let mut st = start_run(&spec, at(NOW + case.started));
        let batch: Vec<(usize, Measurement)> = case
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.last.map(|(p, t)| (i, measurement(p, "", NOW + t))))
            .collect();
        if !batch.is_empty() {
            record_batch(&spec, &mut st, batch, at(NOW)).expect(name);
        }
        assert_eq!(due_metrics(&spec, &st, at(NOW)), case.due, "{name}");
        assert_eq!(
            next_due(&spec, &st, at(NOW)),
            case.next.map(|s| at(NOW + s)),
            "{name}"
        );
    }
}

/// `TestTrimMeasurementHistory`: metric1 holds measurement "1", metric2 "2" then "3"; the
/// limit per metric (Argo: the default passed in, or a `measurementRetention` rule for
/// metric2) keeps the newest.
#[test]
fn argo_trim_measurement_history_cases() {
    /// Case name, retention limit per metric, values kept per metric.
    type Trim = (&'static str, [usize; 2], [&'static [&'static str]; 2]);
    let cases: [Trim; 3] = [
        ("default limit 2", [2, 2], [&["1"], &["2", "3"]]),
        ("default limit 1", [1, 1], [&["1"], &["3"]]),
        (
            "default limit 1, metric2 rule limit 2",
            [1, 2],
            [&["1"], &["2", "3"]],
        ),
    ];
    for (name, limits, kept) in cases {
        let spec = RunSpec {
            metrics: ["metric1", "metric2"]
                .iter()
                .zip(limits)
                .map(|(n, limit)| {
                    let mut m = EVERY_MINUTE.spec(n);
                    m.retention_limit = limit;
                    m
                })
                .collect(),
        };
        let mut st = start_run(&spec, t0());
        let with_value = |v: &str, secs: i64| Measurement {
            value: Some(v.to_string()),
            ..measurement(S, "", secs)
        };
        record_batch(
            &spec,
            &mut st,
            vec![(0, with_value("1", 60)), (1, with_value("2", 60))],
            at(60),
        )
        .expect(name);
        record(&spec, &mut st, 1, with_value("3", 120), at(120)).expect(name);
        for (r, want) in st.metric_results.iter().zip(kept) {
            let values: Vec<&str> = r
                .measurements
                .iter()
                .filter_map(|m| m.value.as_deref())
                .collect();
            assert_eq!(values, want, "{name}: {}", r.name);
        }
        // Counters still count trimmed measurements.
        assert_eq!(st.metric_results[1].count, 2, "{name}");
    }
}
