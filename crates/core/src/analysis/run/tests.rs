use super::*;
use crate::analysis::expr::{Condition, ResultValue};
use chrono::TimeZone;

const MIN: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn meas(phase: Phase, secs: i64) -> Measurement {
    Measurement {
        phase,
        value: Some("1".into()),
        message: Some(format!("measured {phase}")),
        started_at: at(secs),
        finished_at: Some(at(secs)),
        metadata: Default::default(),
        evidence: None,
    }
}

fn metric(name: &str) -> MetricSpec {
    MetricSpec::new(name)
}

fn bounded(name: &str, count: u32) -> MetricSpec {
    let mut m = metric(name);
    m.interval = Some(MIN);
    m.count = Some(count);
    m
}

fn run_of(metrics: Vec<MetricSpec>) -> (RunSpec, RunState) {
    let spec = RunSpec { metrics };
    let state = start_run(&spec, t0());
    (spec, state)
}

/// Records the phases one after another for metric `i`, 60 s apart.
fn feed(spec: &RunSpec, state: &mut RunState, i: usize, phases: &[Phase]) {
    for (k, p) in phases.iter().enumerate() {
        let secs = 60 * (k as i64 + 1);
        record(spec, state, i, meas(*p, secs), at(secs)).expect("recorded");
    }
}

use Phase::{Error as E, Failed as F, Inconclusive as I, Successful as S};

#[test]
fn failure_limit_trips_only_when_strictly_greater() {
    let mut m = bounded("apdex", 5);
    m.failure_limit = 1;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[F]);
    assert_eq!(st.metric_results[0].phase, Phase::Running);
    feed(&spec, &mut st, 0, &[F]);
    let r = &st.metric_results[0];
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(
        r.message.as_deref(),
        Some(
            "Metric \"apdex\" assessed Failed due to failed (2) > failureLimit (1): \"Error Message: measured Failed\""
        )
    );
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(st.message, r.message);
}

#[test]
fn default_failure_limit_fails_on_first_failure() {
    let (spec, mut st) = run_of(vec![bounded("m", 5)]);
    feed(&spec, &mut st, 0, &[F]);
    assert_eq!(st.metric_results[0].phase, Phase::Failed);
}

#[test]
fn failure_limit_minus_one_disables_failure_limit() {
    let mut m = bounded("m", 4);
    m.failure_limit = -1;
    m.consecutive_success_limit = 2;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[F, F, F]);
    assert_eq!(st.metric_results[0].phase, Phase::Running);
    // Count reached with only consecutiveSuccessLimit applicable and not reached → Failed.
    feed(&spec, &mut st, 0, &[S]);
    assert_eq!(st.metric_results[0].phase, Phase::Failed);
    assert!(
        st.metric_results[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("without consecutiveSuccessLimit (2)"))
    );
}

#[test]
fn inconclusive_limit_trips_only_when_strictly_greater() {
    let mut m = bounded("m", 5);
    m.inconclusive_limit = 1;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[I]);
    assert_eq!(st.metric_results[0].phase, Phase::Running);
    feed(&spec, &mut st, 0, &[I]);
    assert_eq!(st.metric_results[0].phase, Phase::Inconclusive);
    assert_eq!(st.phase, Phase::Inconclusive);
}

#[test]
fn consecutive_error_limit_trips_on_the_fifth_error_by_default() {
    let (spec, mut st) = run_of(vec![bounded("m", 5)]);
    feed(&spec, &mut st, 0, &[E, E, E, E]);
    assert_eq!(st.metric_results[0].phase, Phase::Running);
    feed(&spec, &mut st, 0, &[E]);
    let r = &st.metric_results[0];
    assert_eq!(r.phase, Phase::Error);
    let msg = r.message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("due to consecutiveErrors (5) > consecutiveErrorLimit (4)"),
        "{msg}"
    );
    assert!(msg.contains("Error Message: measured Error"), "{msg}");
    assert_eq!(st.phase, Phase::Error);
}

#[test]
fn non_error_measurement_resets_consecutive_errors() {
    let (spec, mut st) = run_of(vec![bounded("m", 10)]);
    feed(&spec, &mut st, 0, &[E, E, E, E, S, E, E, E, E]);
    let r = &st.metric_results[0];
    assert_eq!(r.phase, Phase::Running);
    assert_eq!((r.error, r.consecutive_error), (8, 4));
}

#[test]
fn error_beats_inconclusive_beats_failed() {
    let m = bounded("m", 10);
    let mut r = new_metric_result(&m);
    r.measurements.push(meas(E, 1).into());
    r.failed = 1;
    r.inconclusive = 1;
    assert_eq!(assess_metric(&m, &r, false).0, Phase::Inconclusive);
    r.consecutive_error = 5;
    assert_eq!(assess_metric(&m, &r, false).0, Phase::Error);
    r.inconclusive = 0;
    assert_eq!(assess_metric(&m, &r, false).0, Phase::Error);
    r.consecutive_error = 0;
    assert_eq!(assess_metric(&m, &r, false).0, Phase::Failed);
}

#[test]
fn errors_are_not_counted_in_count() {
    let (spec, mut st) = run_of(vec![bounded("m", 2)]);
    feed(&spec, &mut st, 0, &[E, S, E]);
    let r = &st.metric_results[0];
    assert_eq!((r.count, r.error, r.phase), (1, 2, Phase::Running));
    feed(&spec, &mut st, 0, &[S]);
    let r = &st.metric_results[0];
    assert_eq!((r.count, r.successful, r.phase), (2, 2, Phase::Successful));
}

#[test]
fn error_retry_interval_replaces_interval() {
    let (spec, mut st) = run_of(vec![bounded("m", 5)]);
    record(&spec, &mut st, 0, meas(E, 0), at(0)).expect("recorded");
    assert_eq!(next_due(&spec, &st, at(1)), Some(at(10)));
    assert!(due_metrics(&spec, &st, at(9)).is_empty());
    assert_eq!(due_metrics(&spec, &st, at(10)), vec![0]);
    record(&spec, &mut st, 0, meas(S, 10), at(10)).expect("recorded");
    assert_eq!(next_due(&spec, &st, at(11)), Some(at(70)));
}

#[test]
fn error_retry_interval_is_configurable() {
    let mut m = bounded("m", 5);
    m.error_retry_interval = Duration::from_secs(3);
    let (spec, mut st) = run_of(vec![m]);
    record(&spec, &mut st, 0, meas(E, 0), at(0)).expect("recorded");
    assert_eq!(next_due(&spec, &st, at(0)), Some(at(3)));
}

#[test]
fn interval_is_measured_from_previous_finished_at() {
    let (spec, mut st) = run_of(vec![bounded("m", 5)]);
    let mut x = meas(S, 0);
    x.finished_at = Some(at(5));
    record(&spec, &mut st, 0, x, at(5)).expect("recorded");
    assert_eq!(next_due(&spec, &st, at(5)), Some(at(65)));
}

#[test]
fn consecutive_success_limit_ends_early() {
    let mut m = bounded("m", 5);
    m.failure_limit = 1;
    m.consecutive_success_limit = 2;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S, F, S]);
    assert_eq!(st.metric_results[0].phase, Phase::Running);
    feed(&spec, &mut st, 0, &[S]);
    assert_eq!(st.metric_results[0].phase, Phase::Successful);
    assert_eq!(st.phase, Phase::Successful);
    assert!(st.completed_at.is_some());
}

#[test]
fn count_reached_with_both_limits_unreached_is_inconclusive() {
    let mut m = bounded("m", 3);
    m.failure_limit = 1;
    m.consecutive_success_limit = 2;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S, F, S]);
    assert_eq!(st.metric_results[0].phase, Phase::Inconclusive);
}

#[test]
fn count_reached_tolerates_failures_within_limit() {
    let mut m = bounded("m", 3);
    m.failure_limit = 1;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S, F, S]);
    assert_eq!(st.metric_results[0].phase, Phase::Successful);
    assert_eq!(st.phase, Phase::Successful);
}

#[test]
fn no_interval_means_one_measurement() {
    let (spec, mut st) = run_of(vec![metric("m")]);
    assert_eq!(due_metrics(&spec, &st, t0()), vec![0]);
    record(&spec, &mut st, 0, meas(S, 0), at(0)).expect("recorded");
    assert_eq!(st.metric_results[0].phase, Phase::Successful);
    assert_eq!(st.phase, Phase::Successful);
    assert!(due_metrics(&spec, &st, at(1000)).is_empty());
    assert_eq!(next_due(&spec, &st, at(1000)), None);
}

#[test]
fn interval_without_count_is_indefinite() {
    let mut m = metric("m");
    m.interval = Some(MIN);
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S; 50]);
    assert_eq!(st.metric_results[0].phase, Phase::Running);
    assert_eq!(st.phase, Phase::Running);
    assert_eq!(next_due(&spec, &st, at(3000)), Some(at(3060)));
}

#[test]
fn initial_delay_defers_first_measurement() {
    let mut m = bounded("m", 2);
    m.initial_delay = Some(Duration::from_secs(30));
    let (spec, st) = run_of(vec![m]);
    assert!(due_metrics(&spec, &st, at(29)).is_empty());
    assert_eq!(next_due(&spec, &st, at(0)), Some(at(30)));
    assert_eq!(due_metrics(&spec, &st, at(30)), vec![0]);
}

#[test]
fn first_measurement_is_immediate_without_initial_delay() {
    let (spec, st) = run_of(vec![bounded("m", 2)]);
    assert_eq!(due_metrics(&spec, &st, t0()), vec![0]);
    assert_eq!(next_due(&spec, &st, at(5)), Some(at(5)));
}

#[test]
fn dry_run_metric_never_changes_run_phase() {
    let mut dry = bounded("experimental", 2);
    dry.dry_run = true;
    let (spec, mut st) = run_of(vec![dry, bounded("apdex", 2)]);
    feed(&spec, &mut st, 0, &[F]);
    assert_eq!(st.metric_results[0].phase, Phase::Failed);
    assert!(!st.terminated);
    assert_eq!(st.phase, Phase::Running);
    feed(&spec, &mut st, 1, &[S, S]);
    assert_eq!(st.phase, Phase::Successful);
    assert_eq!(st.message, None);
}

#[test]
fn all_dry_run_run_is_successful() {
    let mut dry = metric("m");
    dry.dry_run = true;
    let (spec, mut st) = run_of(vec![dry]);
    feed(&spec, &mut st, 0, &[F]);
    assert_eq!(st.phase, Phase::Successful);
}

#[test]
fn retention_limit_trims_measurements() {
    let mut m = bounded("m", 10);
    m.retention_limit = 3;
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S, S, S, S, S]);
    let r = &st.metric_results[0];
    assert_eq!(r.measurements.len(), 3);
    assert_eq!(r.measurements[2].started_at, at(300));
    assert_eq!(r.measurements[0].started_at, at(180));
    assert_eq!((r.count, r.successful), (5, 5));
}

#[test]
fn run_phase_is_worst_of_metrics() {
    let (spec, mut st) = run_of(vec![metric("a"), metric("b"), metric("c")]);
    feed(&spec, &mut st, 0, &[S]);
    assert_eq!(st.phase, Phase::Running);
    feed(&spec, &mut st, 1, &[S]);
    assert_eq!(st.phase, Phase::Running);
    feed(&spec, &mut st, 2, &[S]);
    assert_eq!(st.phase, Phase::Successful);

    // Failed beats Inconclusive: b ends Inconclusive because the run terminated.
    let (spec, mut st) = run_of(vec![bounded("a", 3), bounded("b", 3)]);
    feed(&spec, &mut st, 1, &[S]);
    feed(&spec, &mut st, 0, &[F]);
    assert_eq!(st.metric_results[1].phase, Phase::Inconclusive);
    assert_eq!(st.phase, Phase::Failed);
}

#[test]
fn first_terminal_metric_terminates_run() {
    let (spec, mut st) = run_of(vec![bounded("a", 3), bounded("b", 3)]);
    feed(&spec, &mut st, 1, &[S]);
    feed(&spec, &mut st, 0, &[I]);
    assert!(st.terminated);
    assert!(st.phase.is_completed());
    assert_eq!(st.phase, Phase::Inconclusive);
    assert!(due_metrics(&spec, &st, at(10_000)).is_empty());
    assert_eq!(next_due(&spec, &st, at(10_000)), None);
    assert_eq!(
        record(&spec, &mut st, 1, meas(S, 500), at(500)),
        Err(RecordError::RunCompleted)
    );
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.starts_with("Metric \"a\" assessed Inconclusive"))
    );
}

#[test]
fn terminated_bounded_metric_is_not_successful_argo_4479() {
    let (spec, mut st) = run_of(vec![bounded("apdex", 5)]);
    feed(&spec, &mut st, 0, &[S, S]);
    assert!(terminate(&spec, &mut st, "canary completed", at(200)));
    let r = &st.metric_results[0];
    assert_eq!(r.phase, Phase::Inconclusive);
    assert!(
        r.message
            .as_deref()
            .is_some_and(|m| m.contains("before count was reached (2/5)"))
    );
    assert_eq!(st.phase, Phase::Inconclusive);
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.starts_with("Run Terminated: canary completed; Metric"))
    );
    assert_eq!(st.completed_at, Some(at(200)));
}

#[test]
fn terminated_indefinite_metric_is_successful() {
    let mut m = metric("bg");
    m.interval = Some(MIN);
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S, S, S]);
    assert!(terminate(&spec, &mut st, "canary completed", at(200)));
    assert_eq!(st.metric_results[0].phase, Phase::Successful);
    assert_eq!(st.phase, Phase::Successful);
    assert_eq!(
        st.message.as_deref(),
        Some("Run Terminated: canary completed")
    );
}

#[test]
fn terminated_metric_without_measurements_is_inconclusive() {
    let mut m = metric("bg");
    m.interval = Some(MIN);
    m.initial_delay = Some(MIN * 10);
    let (spec, mut st) = run_of(vec![m]);
    terminate(&spec, &mut st, "canary completed", at(5));
    assert_eq!(st.metric_results[0].phase, Phase::Inconclusive);
    assert_eq!(st.phase, Phase::Inconclusive);
}

#[test]
fn terminate_stops_new_measurements_and_is_idempotent() {
    let mut m = metric("bg");
    m.interval = Some(MIN);
    let (spec, mut st) = run_of(vec![m]);
    feed(&spec, &mut st, 0, &[S]);
    assert!(terminate(&spec, &mut st, "x", at(100)));
    assert!(due_metrics(&spec, &st, at(1000)).is_empty());
    assert!(!terminate(&spec, &mut st, "again", at(101)));
    assert_eq!(st.completed_at, Some(at(100)));
}

#[test]
fn in_flight_measurement_marks_metric_running_and_is_replaced() {
    let (spec, mut st) = run_of(vec![bounded("m", 2)]);
    let mut running = meas(Phase::Running, 0);
    running.finished_at = None;
    record(&spec, &mut st, 0, running, at(0)).expect("recorded");
    let r = &st.metric_results[0];
    assert_eq!((r.phase, r.count), (Phase::Running, 0));
    assert!(due_metrics(&spec, &st, at(1000)).is_empty());
    assert_eq!(next_due(&spec, &st, at(1000)), None);
    let mut done = meas(S, 0);
    done.finished_at = None;
    record(&spec, &mut st, 0, done, at(3)).expect("recorded");
    let r = &st.metric_results[0];
    assert_eq!((r.measurements.len(), r.count), (1, 1));
    assert_eq!(r.measurements[0].finished_at, Some(at(3)));
}

#[test]
fn termination_drops_in_flight_measurements() {
    let (spec, mut st) = run_of(vec![bounded("a", 2), bounded("b", 2)]);
    let mut running = meas(Phase::Running, 0);
    running.finished_at = None;
    record(&spec, &mut st, 1, running, at(0)).expect("recorded");
    feed(&spec, &mut st, 0, &[F]);
    let b = &st.metric_results[1];
    assert!(b.measurements.is_empty());
    assert_eq!(b.phase, Phase::Inconclusive);
    assert_eq!(st.phase, Phase::Failed);
}

#[test]
fn record_rejects_unknown_and_completed_metrics() {
    let (spec, mut st) = run_of(vec![metric("a"), bounded("b", 2)]);
    assert_eq!(
        record(&spec, &mut st, 7, meas(S, 0), at(0)),
        Err(RecordError::UnknownMetric(7))
    );
    feed(&spec, &mut st, 0, &[S]);
    assert_eq!(
        record(&spec, &mut st, 0, meas(S, 1), at(1)),
        Err(RecordError::MetricCompleted("a".into()))
    );
}

#[test]
fn no_data_never_reaches_conditions() {
    let mut m = bounded("m", 3);
    // Would be Error if evaluated.
    m.success_condition = Some(Condition::compile("result + 1").expect("compiles"));
    let (spec, mut st) = run_of(vec![m]);
    let obs = Observation::NoData {
        reason: "no point in window".into(),
    };
    let x = measure(&spec.metrics[0], &obs, &BTreeMap::new(), at(0), at(1));
    assert_eq!(x.phase, Phase::Inconclusive);
    assert_eq!(x.value, None);
    record(&spec, &mut st, 0, x, at(1)).expect("recorded");
    assert_eq!(st.phase, Phase::Inconclusive);
}

#[test]
fn measure_keeps_value_and_explanation() {
    let mut m = metric("apdex");
    m.success_condition = Some(Condition::compile("min(result) >= 9900").expect("compiles"));
    let obs = Observation::value(ResultValue::Series(vec![9950.0, 9930.0, 9910.0]));
    let x = measure(&m, &obs, &BTreeMap::new(), at(0), at(1));
    assert_eq!(x.phase, Phase::Successful);
    assert_eq!(x.value.as_deref(), Some("[9950, 9930, 9910]"));
    assert_eq!(
        x.message.as_deref(),
        Some("min(result) >= 9900 with result=[9950, 9930, 9910] → true: Successful")
    );
}

#[test]
fn empty_run_is_error() {
    let (spec, st) = run_of(vec![]);
    assert_eq!(st.phase, Phase::Error);
    assert_eq!(st.message.as_deref(), Some("no metrics specified"));
    assert_eq!(next_due(&spec, &st, t0()), None);
}

#[test]
fn status_serializes_like_argo() {
    let (spec, mut st) = run_of(vec![bounded("apdex", 2)]);
    feed(&spec, &mut st, 0, &[S]);
    let json = serde_json::to_value(&st).expect("serializes");
    assert_eq!(json["phase"], "Running");
    assert_eq!(json["metricResults"][0]["name"], "apdex");
    assert_eq!(json["metricResults"][0]["consecutiveSuccess"], 1);
    assert_eq!(
        json["metricResults"][0]["measurements"][0]["phase"],
        "Successful"
    );
    assert!(json["metricResults"][0]["measurements"][0]["finishedAt"].is_string());
    assert!(json["startedAt"].is_string());
    let back: RunState = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, st);
}

#[test]
fn resumed_state_schedules_the_same() {
    let (spec, mut st) = run_of(vec![bounded("m", 3)]);
    feed(&spec, &mut st, 0, &[S]);
    let json = serde_json::to_string(&st).expect("serializes");
    let back: RunState = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(next_due(&spec, &back, at(61)), next_due(&spec, &st, at(61)));
}

/// Every ordering of `items` (Heap's algorithm), so order-independence is checked exhaustively.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn heap<T: Clone>(k: usize, a: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut a = items.to_vec();
    let mut out = Vec::new();
    heap(a.len(), &mut a, &mut out);
    out
}

/// One single-measurement metric per phase (dry-run ones marked), listed in `order`, all
/// measured at the same moment and recorded as one batch. consecutiveErrorLimit 0, so one
/// Error measurement ends its metric in the same batch as the others.
fn batch_run(order: &[(&str, Phase, bool)]) -> RunState {
    let metrics = order
        .iter()
        .map(|(name, _, dry)| {
            let mut m = metric(name);
            m.dry_run = *dry;
            m.consecutive_error_limit = 0;
            m
        })
        .collect();
    let (spec, mut st) = run_of(metrics);
    let batch = order
        .iter()
        .enumerate()
        .map(|(i, (_, p, _))| (i, meas(*p, 0)))
        .collect();
    record_batch(&spec, &mut st, batch, at(0)).expect("recorded");
    st
}

#[test]
fn batch_verdict_does_not_depend_on_metric_order() {
    let metrics = [
        ("inconclusive", I, false),
        ("failed", F, false),
        ("error", E, false),
        ("ok", S, false),
        ("dry", F, true),
    ];
    for order in permutations(&metrics) {
        let st = batch_run(&order);
        let names: Vec<_> = order.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(st.phase, Phase::Failed, "order {names:?}");
        assert!(
            st.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Metric \"failed\" assessed Failed")),
            "order {names:?}: {:?}",
            st.message
        );
        // No measurement of the batch is lost, dry-run and Successful ones included.
        for (r, (name, p, _)) in st.metric_results.iter().zip(&order) {
            assert_eq!(r.measurements.len(), 1, "{name} in order {names:?}");
            assert_eq!(r.measurements[0].phase, *p, "{name} in order {names:?}");
            assert_eq!(r.count + r.error, 1, "{name} in order {names:?}");
        }
    }
}

#[test]
fn batch_worst_phase_wins_for_each_pair() {
    // The verdict of the reproductions, in both orders.
    for (a, b, want) in [(I, F, F), (E, F, F), (I, E, E), (S, I, I), (S, F, F)] {
        for order in [
            [("a", a, false), ("b", b, false)],
            [("b", b, false), ("a", a, false)],
        ] {
            assert_eq!(batch_run(&order).phase, want, "{order:?}");
        }
    }
}

#[test]
fn batch_keeps_dry_run_and_successful_measurements_of_a_terminating_run() {
    let st = batch_run(&[("bad", F, false), ("ok", S, false), ("dry", S, true)]);
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(st.metric_results[1].phase, Phase::Successful);
    assert_eq!(st.metric_results[2].phase, Phase::Successful);
    assert!(st.metric_results[2].dry_run);
    assert!(
        st.metric_results
            .iter()
            .all(|r| r.measurements.len() == 1 && r.count == 1)
    );
}

#[test]
fn batch_with_dry_run_failure_only_does_not_decide() {
    let st = batch_run(&[("dry", F, true), ("ok", S, false)]);
    assert_eq!(st.phase, Phase::Successful);
    assert_eq!(st.metric_results[0].phase, Phase::Failed);
    assert_eq!(st.message, None);
}

#[test]
fn batch_terminates_unmeasured_bounded_metrics_after_recording() {
    // "later" is not in the batch: it is assessed as terminated (never Successful, #4479).
    let (spec, mut st) = run_of(vec![metric("bad"), metric("ok"), bounded("later", 3)]);
    let batch = vec![(1, meas(S, 0)), (0, meas(F, 0))];
    record_batch(&spec, &mut st, batch, at(0)).expect("recorded");
    assert_eq!(st.metric_results[1].phase, Phase::Successful);
    assert_eq!(st.metric_results[2].phase, Phase::Inconclusive);
    assert_eq!(st.phase, Phase::Failed);
}

#[test]
fn batch_is_all_or_nothing() {
    let (spec, mut st) = run_of(vec![metric("a"), bounded("b", 2)]);
    let before = st.clone();
    assert_eq!(
        record_batch(
            &spec,
            &mut st,
            vec![(0, meas(S, 0)), (9, meas(S, 0))],
            at(0)
        ),
        Err(RecordError::UnknownMetric(9))
    );
    assert_eq!(
        record_batch(
            &spec,
            &mut st,
            vec![(1, meas(S, 0)), (1, meas(S, 0))],
            at(0)
        ),
        Err(RecordError::TwiceInBatch("b".into()))
    );
    assert_eq!(st, before);
    record(&spec, &mut st, 0, meas(S, 0), at(0)).expect("recorded");
    let before = st.clone();
    assert_eq!(
        record_batch(
            &spec,
            &mut st,
            vec![(1, meas(S, 1)), (0, meas(S, 1))],
            at(1)
        ),
        Err(RecordError::MetricCompleted("a".into()))
    );
    assert_eq!(st, before);
}

#[test]
fn fail_run_ends_a_run_as_error_once() {
    let (_, mut st) = run_of(vec![bounded("m", 3)]);
    assert!(fail_run(&mut st, "state does not match the plan", at(5)));
    assert_eq!(st.phase, Phase::Error);
    assert!(st.terminated);
    assert_eq!(st.completed_at, Some(at(5)));
    assert!(!fail_run(&mut st, "again", at(6)));
    assert_eq!(st.message.as_deref(), Some("state does not match the plan"));
}

/// A run status saved before measurements carried typed evidence (this file was written by
/// the code of that time) still loads, with no evidence; one saved now keeps its evidence and
/// its Argo fields unchanged, and an older reader that ignores `evidence` sees the same status.
#[test]
fn statuses_load_with_and_without_typed_evidence() {
    let old: RunState = serde_json::from_str(include_str!("status_before_evidence.json"))
        .expect("old status loads");
    let m = &old.metric_results[0].measurements[0];
    assert_eq!(m.phase, Phase::Failed);
    assert_eq!(m.value.as_deref(), Some("[7000, 6900]"));
    assert_eq!(m.metadata["windowStart"], "2025-01-01T00:00:00Z");
    assert_eq!(m.evidence, None);
    // Written back, it is what it was: no `evidence` key appears.
    let again = serde_json::to_value(&old).expect("serialize");
    assert!(
        again["metricResults"][0]["measurements"][0]
            .get("evidence")
            .is_none()
    );

    let mut spec = metric("apdex");
    spec.success_condition = Some(Condition::compile("min(result) >= 9900").expect("compiles"));
    let obs = Observation::value(ResultValue::Series(vec![7000.0, 6900.0]));
    let new = measure(&spec, &obs, &BTreeMap::new(), at(60), at(60));
    let json = serde_json::to_value(&new).expect("serialize");
    assert_eq!(json["value"], "[7000, 6900]");
    assert_eq!(
        json["evidence"]["values"],
        serde_json::json!([7000.0, 6900.0])
    );
    let c = &json["evidence"]["conditions"][0];
    assert_eq!(c["kind"], "success");
    assert_eq!(c["expression"], "min(result) >= 9900");
    assert_eq!(c["operator"], ">=");
    assert_eq!(c["threshold"], 9900.0);
    assert_eq!(c["decided"], true);
    let back: Measurement = serde_json::from_value(json.clone()).expect("round trip");
    assert_eq!(back, new);
    // An older reader's view (no `evidence` field) of the new status.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Before {
        phase: Phase,
        value: Option<String>,
        message: Option<String>,
    }
    let before: Before = serde_json::from_value(json).expect("older shape reads it");
    assert_eq!(before.phase, Phase::Failed);
    assert_eq!(before.value, new.value);
    assert_eq!(before.message, new.message);
}
