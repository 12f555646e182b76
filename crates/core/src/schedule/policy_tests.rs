use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::analysis::{Measurement, MetricResult};
use crate::resources::scheduled::{HistoryLimit, RollbackAction, WebhookAction};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn spec(schedule: &str) -> ScheduledAnalysisSpec {
    ScheduledAnalysisSpec {
        schedule: schedule.into(),
        ..Default::default()
    }
}

fn sched(spec: &ScheduledAnalysisSpec) -> CronSchedule {
    CronSchedule::parse(&spec.schedule, spec.time_zone.as_deref()).unwrap()
}

fn state(phase: Phase) -> RunState {
    RunState {
        phase,
        message: Some(format!("{phase}")),
        metric_results: Vec::new(),
        started_at: t("2024-01-01T00:00:00Z"),
        completed_at: Some(t("2024-01-01T00:01:00Z")),
        terminated: false,
        terminate_reason: None,
    }
}

fn run(name: &str, phase: Phase) -> ScheduledRun {
    ScheduledRun {
        name: name.into(),
        trigger: RunTrigger::Schedule,
        scheduled_time: None,
        status: state(phase),
        actions: Vec::new(),
    }
}

#[test]
fn a_new_object_waits_for_its_first_fire_time() {
    let s = spec("0 * * * *");
    let now = t("2024-01-01T10:30:00Z");
    let st = ScheduledAnalysisStatus {
        tracking_since: Some(now),
        ..Default::default()
    };
    assert_eq!(
        due(&sched(&s), &s, &st, now),
        Due::Wait {
            next: Some(t("2024-01-01T11:00:00Z"))
        }
    );
    // Never seen at all (no trackingSince): the same, nothing before now counts.
    assert_eq!(
        due(&sched(&s), &s, &ScheduledAnalysisStatus::default(), now),
        Due::Wait {
            next: Some(t("2024-01-01T11:00:00Z"))
        }
    );
}

#[test]
fn the_fire_time_is_due_at_and_after_it() {
    let s = spec("0 * * * *");
    let st = ScheduledAnalysisStatus {
        tracking_since: Some(t("2024-01-01T10:30:00Z")),
        ..Default::default()
    };
    for now in [
        "2024-01-01T11:00:00Z",
        "2024-01-01T11:00:00.300Z",
        "2024-01-01T11:59:59Z",
    ] {
        assert_eq!(
            due(&sched(&s), &s, &st, t(now)),
            Due::Run {
                scheduled: t("2024-01-01T11:00:00Z"),
                missed: 0,
                next: Some(t("2024-01-01T12:00:00Z"))
            },
            "{now}"
        );
    }
    // Recorded: not due again.
    let done = ScheduledAnalysisStatus {
        last_schedule_time: Some(t("2024-01-01T11:00:00Z")),
        ..st
    };
    assert_eq!(
        due(&sched(&s), &s, &done, t("2024-01-01T11:00:01Z")),
        Due::Wait {
            next: Some(t("2024-01-01T12:00:00Z"))
        }
    );
}

#[test]
fn after_a_restart_only_the_latest_missed_fire_time_runs() {
    let s = spec("0 * * * *");
    let st = ScheduledAnalysisStatus {
        last_schedule_time: Some(t("2024-01-01T06:00:00Z")),
        ..Default::default()
    };
    assert_eq!(
        due(&sched(&s), &s, &st, t("2024-01-01T10:20:00Z")),
        Due::Run {
            scheduled: t("2024-01-01T10:00:00Z"),
            missed: 3,
            next: Some(t("2024-01-01T11:00:00Z"))
        }
    );
}

#[test]
fn too_many_missed_fire_times_are_capped_and_the_latest_still_runs() {
    let s = spec("*/2 * * * * *");
    let st = ScheduledAnalysisStatus {
        last_schedule_time: Some(t("2024-01-01T00:00:00Z")),
        ..Default::default()
    };
    match due(&sched(&s), &s, &st, t("2024-01-02T00:00:01Z")) {
        Due::Run {
            scheduled, missed, ..
        } => {
            assert_eq!(scheduled, t("2024-01-02T00:00:00Z"));
            assert_eq!(missed, MISSED_COUNT_CAP + 1, "counted up to the cap");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn starting_deadline_skips_a_fire_time_that_is_too_old() {
    let mut s = spec("0 * * * *");
    s.starting_deadline_seconds = Some(300);
    let st = ScheduledAnalysisStatus {
        last_schedule_time: Some(t("2024-01-01T09:00:00Z")),
        ..Default::default()
    };
    // 4 min late: within the deadline.
    assert!(matches!(
        due(&sched(&s), &s, &st, t("2024-01-01T10:04:00Z")),
        Due::Run { .. }
    ));
    // 6 min late: missed.
    assert_eq!(
        due(&sched(&s), &s, &st, t("2024-01-01T10:06:00Z")),
        Due::TooLate {
            scheduled: t("2024-01-01T10:00:00Z"),
            missed: 0,
            next: Some(t("2024-01-01T11:00:00Z"))
        }
    );
    // Exactly at the deadline: still runs.
    assert!(matches!(
        due(&sched(&s), &s, &st, t("2024-01-01T10:05:00Z")),
        Due::Run { .. }
    ));
}

#[test]
fn suspended_runs_nothing_and_has_no_next_time() {
    let mut s = spec("* * * * * *");
    s.suspend = true;
    let st = ScheduledAnalysisStatus {
        last_schedule_time: Some(t("2024-01-01T00:00:00Z")),
        ..Default::default()
    };
    assert_eq!(
        due(&sched(&s), &s, &st, t("2024-01-01T01:00:00Z")),
        Due::Wait { next: None }
    );
}

#[test]
fn dst_fire_times_in_new_york_are_due_once_each() {
    let mut s = spec("30 1 * * *");
    s.time_zone = Some("America/New_York".into());
    let first = t("2024-11-03T01:30:00-04:00");
    let second = t("2024-11-03T01:30:00-05:00");
    let st = ScheduledAnalysisStatus {
        last_schedule_time: Some(t("2024-11-02T01:30:00-04:00")),
        ..Default::default()
    };
    assert_eq!(
        due(&sched(&s), &s, &st, first),
        Due::Run {
            scheduled: first,
            missed: 0,
            next: Some(second)
        }
    );
    let st = ScheduledAnalysisStatus {
        last_schedule_time: Some(first),
        ..st
    };
    assert_eq!(
        due(&sched(&s), &s, &st, first + TimeDelta::minutes(30)),
        Due::Wait { next: Some(second) }
    );
}

#[test]
fn concurrency_policies() {
    let active = vec![run("a-1", Phase::Running)];
    assert_eq!(admit(ConcurrencyPolicy::Forbid, &[]), Admission::Start);
    assert_eq!(admit(ConcurrencyPolicy::Replace, &[]), Admission::Start);
    assert_eq!(admit(ConcurrencyPolicy::Allow, &[]), Admission::Start);
    assert_eq!(
        admit(ConcurrencyPolicy::Forbid, &active),
        Admission::Skip(vec!["a-1".into()])
    );
    assert_eq!(
        admit(ConcurrencyPolicy::Replace, &active),
        Admission::Replace(vec!["a-1".into()])
    );
    assert_eq!(admit(ConcurrencyPolicy::Allow, &active), Admission::Start);
}

#[test]
fn run_names_are_stable_per_fire_time_and_unique_for_manual_runs() {
    let at = t("2024-01-01T00:00:10Z");
    let mut st = ScheduledAnalysisStatus::default();
    assert_eq!(
        run_name("nightly", RunTrigger::Schedule, at, &st),
        "nightly-1704067210"
    );
    assert_eq!(
        run_name("nightly", RunTrigger::Manual, at, &st),
        "nightly-manual-1704067210"
    );
    st.history
        .push(run("nightly-manual-1704067210", Phase::Successful));
    st.active
        .push(run("nightly-manual-1704067210-2", Phase::Running));
    assert_eq!(
        run_name("nightly", RunTrigger::Manual, at, &st),
        "nightly-manual-1704067210-3"
    );
    assert!(is_recorded(&st, "nightly-manual-1704067210-2"));
    assert!(!is_recorded(&st, "nightly-1704067210"));
}

#[test]
fn actions_follow_the_phase_and_never_fire_for_stopped_runs() {
    let hook = ActionsSpec {
        webhook: Some(WebhookAction {
            url: "http://x".into(),
            ..Default::default()
        }),
        rollback: None,
    };
    let rb = ActionsSpec {
        rollback: Some(RollbackAction {
            canary: "reviews".into(),
        }),
        webhook: None,
    };
    let s = ScheduledAnalysisSpec {
        on_failure: Some(rb.clone()),
        on_error: Some(hook.clone()),
        ..spec("@daily")
    };
    assert_eq!(actions_for(&s, &state(Phase::Failed)), Some(&rb));
    assert_eq!(actions_for(&s, &state(Phase::Error)), Some(&hook));
    assert_eq!(actions_for(&s, &state(Phase::Inconclusive)), None);
    assert_eq!(actions_for(&s, &state(Phase::Successful)), None);
    let mut stopped = state(Phase::Failed);
    stopped.terminate_reason = Some("replaced by x".into());
    assert_eq!(actions_for(&s, &stopped), None);
}

#[test]
fn finishing_moves_the_run_to_history_and_trims_per_outcome() {
    let now = t("2024-01-02T00:00:00Z");
    let mut st = ScheduledAnalysisStatus::default();
    for i in 0..4 {
        st.history.push(run(&format!("ok-{i}"), Phase::Successful));
    }
    st.history.push(run("bad-0", Phase::Failed));
    st.active.push(run("new", Phase::Running));
    let mut done = state(Phase::Failed);
    done.completed_at = None;
    let finished = finish(&mut st, "new", done, (3, 1), now).unwrap();
    assert_eq!(finished.status.phase, Phase::Failed);
    assert_eq!(finished.status.completed_at, Some(now));
    assert!(st.active.is_empty());
    let names: Vec<&str> = st.history.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["new", "ok-0", "ok-1", "ok-2"]);
    assert_eq!(st.last_successful_time, None);
    // Unknown or repeated: nothing.
    assert!(finish(&mut st, "new", state(Phase::Failed), (3, 1), now).is_none());

    st.active.push(run("good", Phase::Running));
    finish(&mut st, "good", state(Phase::Successful), (3, 1), now).unwrap();
    assert_eq!(st.last_successful_time, Some(t("2024-01-01T00:01:00Z")));
    let names: Vec<&str> = st.history.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["good", "new", "ok-0", "ok-1"]);
}

#[test]
fn history_limit_zero_keeps_nothing_of_that_outcome() {
    let mut h = vec![
        run("a", Phase::Successful),
        run("b", Phase::Error),
        run("c", Phase::Inconclusive),
    ];
    trim_history(&mut h, 0, 5);
    assert_eq!(h.len(), 2);
    trim_history(&mut h, 0, 0);
    assert!(h.is_empty());
    let limits = ScheduledAnalysisSpec {
        history_limit: Some(HistoryLimit {
            successful: Some(7),
            failed: None,
        }),
        ..spec("@daily")
    };
    assert_eq!(limits.history_limits(), (7, 1));
    assert_eq!(spec("@daily").history_limits(), (3, 1));
}

/// `min(result) >= 9900` judging `[7000]`, as the judge records it.
fn judged_7000() -> Measurement {
    let mut spec = crate::analysis::MetricSpec::new("apdex");
    spec.success_condition =
        Some(crate::analysis::Condition::compile("min(result) >= 9900").expect("compiles"));
    let obs =
        crate::analysis::Observation::value(crate::analysis::ResultValue::Series(vec![7000.0]));
    crate::analysis::measure(
        &spec,
        &obs,
        &Default::default(),
        t("2024-01-01T00:00:00Z"),
        t("2024-01-01T00:00:01Z"),
    )
}

fn failed_run() -> ScheduledRun {
    let mut st = state(Phase::Failed);
    st.metric_results.push(MetricResult {
        name: "apdex".into(),
        phase: Phase::Failed,
        measurements: vec![judged_7000().into()],
        message: None,
        count: 1,
        successful: 0,
        failed: 1,
        inconclusive: 0,
        error: 0,
        consecutive_error: 0,
        consecutive_success: 0,
        dry_run: false,
    });
    ScheduledRun {
        name: "nightly-1".into(),
        trigger: RunTrigger::Schedule,
        scheduled_time: Some(t("2024-01-01T00:00:00Z")),
        status: st,
        actions: Vec::new(),
    }
}

#[test]
fn the_rollback_reason_names_analysis_metric_value_and_condition() {
    let a = rollback_abort(
        "bookinfo",
        "nightly",
        &failed_run(),
        t("2024-01-01T00:02:00Z"),
    );
    assert_eq!(
        a.reason,
        "ScheduledAnalysis bookinfo/nightly run nightly-1 ended Failed: metric apdex value [7000] condition min(result) >= 9900 threshold >= 9900"
    );
    assert_eq!(a.metric.as_deref(), Some("apdex"));
    assert_eq!(a.value.as_deref(), Some("[7000]"));
    assert_eq!(a.condition.as_deref(), Some("min(result) >= 9900"));
    // Without metrics (a run that could not start): the run's message.
    let mut r = failed_run();
    r.status.metric_results.clear();
    r.status.phase = Phase::Error;
    r.status.message = Some("analysis template \"x\" not found".into());
    let a = rollback_abort("ns", "n", &r, t("2024-01-01T00:02:00Z"));
    assert!(
        a.reason
            .ends_with("ended Error: analysis template \"x\" not found"),
        "{}",
        a.reason
    );
}

#[test]
fn the_webhook_body_carries_the_result() {
    let b = webhook_body("bookinfo", "nightly", &failed_run());
    assert_eq!(b["scheduledAnalysis"]["namespace"], "bookinfo");
    assert_eq!(b["scheduledAnalysis"]["name"], "nightly");
    assert_eq!(b["run"], "nightly-1");
    assert_eq!(b["phase"], "Failed");
    assert_eq!(b["trigger"], "Schedule");
    assert_eq!(b["metricResults"][0]["name"], "apdex");
    assert_eq!(b["metricResults"][0]["measurements"][0]["value"], "[7000]");
}

#[test]
fn webhook_retries_are_bounded_and_only_for_transient_failures() {
    let net = Delivery::Network("connection refused".into());
    assert_eq!(webhook_retry(1, &net), Some(Duration::from_secs(1)));
    assert_eq!(webhook_retry(2, &net), Some(Duration::from_secs(2)));
    assert_eq!(
        webhook_retry(3, &Delivery::Status(503)),
        Some(Duration::from_secs(4))
    );
    assert_eq!(webhook_retry(WEBHOOK_ATTEMPTS, &net), None);
    assert_eq!(
        webhook_retry(1, &Delivery::Status(429)),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        webhook_retry(1, &Delivery::Status(408)),
        Some(Duration::from_secs(1))
    );
    assert_eq!(webhook_retry(1, &Delivery::Status(400)), None);
    assert_eq!(webhook_retry(1, &Delivery::Status(401)), None);
    assert_eq!(webhook_retry(1, &Delivery::Status(200)), None);
}
