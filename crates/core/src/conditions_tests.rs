use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::analysis::{RunSpec, start_run};
use crate::canary::{AbortStatus, AnalysisRunKind, AnalysisRunStatus, PauseStatus, RoutingWrite};
use crate::schedule::model::{RunTrigger, ScheduledRun};
use crate::traffic::DesiredRouting;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

fn get<'a>(c: &'a [StatusCondition], type_: &str) -> &'a StatusCondition {
    c.iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {c:?}"))
}

fn derived(st: &CanaryStatus) -> Vec<StatusCondition> {
    let mut st = st.clone();
    observe_canary(&mut st, Some(3), t(0));
    st.conditions
}

fn status_of(c: &[StatusCondition], type_: &str) -> String {
    get(c, type_).status.clone()
}

fn with_phase(phase: CanaryPhase) -> CanaryStatus {
    CanaryStatus {
        phase,
        message: Some(format!("it is {phase:?}")),
        ..Default::default()
    }
}

const ALL_PHASES: [CanaryPhase; 8] = [
    CanaryPhase::Pending,
    CanaryPhase::Progressing,
    CanaryPhase::Paused,
    CanaryPhase::Promoted,
    CanaryPhase::Aborted,
    CanaryPhase::RolledBack,
    CanaryPhase::Degraded,
    CanaryPhase::Invalid,
];

const TYPES: [&str; 11] = [
    "Ready",
    "Progressing",
    "Reconciling",
    "Stalled",
    "Paused",
    "Promoted",
    "Aborted",
    "RollbackPending",
    "Degraded",
    "InvalidSpec",
    "AnalysisHealthy",
];

/// The table of the module doc, phase by phase: (phase, Ready, Progressing, Reconciling,
/// Stalled, Paused, Promoted, Aborted, InvalidSpec).
#[test]
fn every_phase_maps_to_the_documented_conditions() {
    let table = [
        (
            CanaryPhase::Pending,
            [
                "False", "True", "True", "False", "False", "False", "False", "False",
            ],
        ),
        (
            CanaryPhase::Progressing,
            [
                "False", "True", "True", "False", "False", "False", "False", "False",
            ],
        ),
        (
            CanaryPhase::Paused,
            [
                "False", "Unknown", "False", "False", "True", "False", "False", "False",
            ],
        ),
        (
            CanaryPhase::Promoted,
            [
                "True", "False", "False", "False", "False", "True", "False", "False",
            ],
        ),
        (
            CanaryPhase::Aborted,
            [
                "False", "False", "False", "True", "False", "False", "True", "False",
            ],
        ),
        (
            CanaryPhase::RolledBack,
            [
                "False", "False", "False", "True", "False", "False", "True", "False",
            ],
        ),
        (
            CanaryPhase::Degraded,
            [
                "False", "True", "True", "False", "False", "False", "False", "False",
            ],
        ),
        (
            CanaryPhase::Invalid,
            [
                "False", "False", "False", "True", "False", "False", "False", "True",
            ],
        ),
    ];
    assert_eq!(table.len(), ALL_PHASES.len());
    for (phase, want) in table {
        let mut st = with_phase(phase);
        if phase == CanaryPhase::Paused {
            st.pause = Some(PauseStatus {
                reason: PauseReason::Manual,
                since: t(0),
                until: None,
                message: None,
            });
        }
        let c = derived(&st);
        let types = [
            "Ready",
            "Progressing",
            "Reconciling",
            "Stalled",
            "Paused",
            "Promoted",
            "Aborted",
            "InvalidSpec",
        ];
        let got: Vec<String> = types.iter().map(|ty| status_of(&c, ty)).collect();
        assert_eq!(got, want, "{phase:?}: {c:#?}");
        // Every type, once, in the documented order; each carries the generation.
        let order: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(order, TYPES, "{phase:?}");
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
        // Reasons are CamelCase words, never empty.
        for cond in &c {
            assert!(
                !cond.reason.is_empty()
                    && cond.reason.chars().next().unwrap().is_ascii_uppercase()
                    && cond.reason.chars().all(|ch| ch.is_ascii_alphanumeric()),
                "{phase:?}: reason {:?}",
                cond.reason
            );
        }
    }
}

#[test]
fn invalid_spec_carries_the_validation_message() {
    let st = crate::canary::invalid::mark_invalid(
        with_phase(CanaryPhase::Paused),
        "canary.yaml:9: spec.steps[0].setWeight: 150 is above maxTrafficWeight 100",
    );
    assert_eq!(st.phase, CanaryPhase::Invalid);
    assert_eq!(st.phase_before_invalid, Some(CanaryPhase::Paused));
    let c = derived(&st);
    let inv = get(&c, "InvalidSpec");
    assert_eq!(
        (inv.status.as_str(), inv.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        inv.message.contains("spec.steps[0].setWeight: 150"),
        "{inv:?}"
    );
    assert_eq!(get(&c, "Ready").reason, "Invalid");
    // Marking twice keeps the phase it interrupted; resuming restores it.
    let again = crate::canary::invalid::mark_invalid(st, "other");
    assert_eq!(again.phase_before_invalid, Some(CanaryPhase::Paused));
    let resumed = crate::canary::invalid::resume_from_invalid(again);
    assert_eq!(resumed.phase, CanaryPhase::Paused);
    assert_eq!(resumed.phase_before_invalid, None);
    // A canary that never started resumes Pending.
    let fresh = crate::canary::invalid::mark_invalid(CanaryStatus::default(), "bad");
    assert_eq!(fresh.phase_before_invalid, None);
    assert_eq!(
        crate::canary::invalid::resume_from_invalid(fresh).phase,
        CanaryPhase::Pending
    );
    // A valid status is left alone.
    let ok = with_phase(CanaryPhase::Progressing);
    assert_eq!(crate::canary::invalid::resume_from_invalid(ok.clone()), ok);
}

#[test]
fn transition_time_moves_only_when_the_status_flips() {
    let mut st = with_phase(CanaryPhase::Progressing);
    observe_canary(&mut st, Some(1), t(0));
    assert_eq!(get(&st.conditions, "Ready").last_transition_time, t(0));
    // Same statuses, new message and generation: times kept.
    st.message = Some("step 2".into());
    st.current_step_index = 2;
    observe_canary(&mut st, Some(2), t(10));
    let ready = get(&st.conditions, "Ready");
    assert_eq!(ready.last_transition_time, t(0));
    assert_eq!(ready.message, "step 2");
    assert_eq!(ready.observed_generation, Some(2));
    assert_eq!(
        get(&st.conditions, "Progressing").last_transition_time,
        t(0)
    );
    // Promoted: Ready and Progressing flip, Paused does not.
    st.phase = CanaryPhase::Promoted;
    observe_canary(&mut st, None, t(20));
    assert_eq!(get(&st.conditions, "Ready").last_transition_time, t(20));
    assert_eq!(get(&st.conditions, "Ready").status, "True");
    assert_eq!(
        get(&st.conditions, "Progressing").last_transition_time,
        t(20)
    );
    assert_eq!(get(&st.conditions, "Paused").last_transition_time, t(0));
    // An unknown generation keeps the recorded one.
    assert_eq!(st.observed_generation, Some(2));
    assert!(
        st.conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    // Conditions someone else wrote are not kept; ours are all there.
    st.conditions.push(StatusCondition {
        type_: "Foreign".into(),
        status: "True".into(),
        reason: "X".into(),
        message: String::new(),
        last_transition_time: t(0),
        observed_generation: None,
    });
    observe_canary(&mut st, None, t(30));
    assert_eq!(st.conditions.len(), TYPES.len());
}

#[test]
fn pause_reasons_decide_stalled_and_reconciling() {
    let cases = [
        (PauseReason::Step, Some(t(60)), "False", "True"),
        (PauseReason::Step, None, "False", "False"),
        (PauseReason::Manual, None, "False", "False"),
        (PauseReason::Inconclusive, None, "True", "False"),
        (PauseReason::AnalysisError, None, "True", "False"),
        (PauseReason::Drift, None, "True", "False"),
    ];
    for (reason, until, stalled, reconciling) in cases {
        let mut st = with_phase(CanaryPhase::Paused);
        st.pause = Some(PauseStatus {
            reason,
            since: t(0),
            until,
            message: Some("why".into()),
        });
        let c = derived(&st);
        assert_eq!(status_of(&c, "Stalled"), stalled, "{reason:?} {until:?}");
        assert_eq!(
            status_of(&c, "Reconciling"),
            reconciling,
            "{reason:?} {until:?}"
        );
        let paused = get(&c, "Paused");
        assert_eq!(paused.reason, format!("{reason:?}"));
        assert_eq!(paused.message, "why");
    }
    // A stale pause record on a canary that is not paused is not Paused.
    let mut st = with_phase(CanaryPhase::Progressing);
    st.pause = Some(PauseStatus {
        reason: PauseReason::Manual,
        since: t(0),
        until: None,
        message: None,
    });
    assert_eq!(status_of(&derived(&st), "Paused"), "False");
}

fn abort(metric: Option<&str>, alarm: Option<&str>) -> AbortStatus {
    AbortStatus {
        not_ready: None,
        reason: "Step-based analysis run r Failed".into(),
        metric: metric.map(Into::into),
        value: metric.map(|_| "[9000, 8800]".into()),
        condition: metric.map(|_| "min(result) >= 9500".into()),
        alarm: alarm.map(Into::into),
        at: t(0),
    }
}

#[test]
fn aborted_names_the_evidence() {
    let mut st = with_phase(CanaryPhase::Aborted);
    st.abort = Some(abort(Some("apdex"), None));
    let a = get(&derived(&st), "Aborted").clone();
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("True", "AnalysisRunFailed")
    );
    for part in [
        "metric apdex",
        "value [9000, 8800]",
        "condition min(result) >= 9500",
    ] {
        assert!(a.message.contains(part), "{part}: {}", a.message);
    }
    st.abort = Some(abort(None, Some("service_sla_rule (reviews)")));
    let a = get(&derived(&st), "Aborted").clone();
    assert_eq!(a.reason, "AlarmTriggered");
    assert!(
        a.message.contains("alarm service_sla_rule (reviews)"),
        "{}",
        a.message
    );
    st.abort = Some(abort(None, None));
    assert_eq!(get(&derived(&st), "Aborted").reason, "RolloutAborted");
    // An abort for an unready canary (the machine sets `not_ready`) is named with the reason
    // of the machine's event.
    st.abort = Some(AbortStatus {
        not_ready: Some("canary 0/2 ready for 2m".into()),
        reason: "CanaryNotReady: canary 0/2 ready for 2m".into(),
        ..abort(None, None)
    });
    assert_eq!(
        get(&derived(&st), "Aborted").reason,
        crate::canary::machine::NOT_READY
    );
    st.phase = CanaryPhase::RolledBack;
    assert_eq!(get(&derived(&st), "Aborted").reason, "RolledBack");
    st.abort = None;
    assert_eq!(get(&derived(&st), "Aborted").status, "True");
    // A past abort on a new run is history, not the current state.
    let mut st = with_phase(CanaryPhase::Progressing);
    st.abort = Some(abort(Some("apdex"), None));
    assert_eq!(status_of(&derived(&st), "Aborted"), "False");
}

fn write(weight: i64, error: Option<&str>) -> RoutingWrite {
    RoutingWrite {
        routing: DesiredRouting::weight(weight),
        requested_at: t(0),
        retry_at: None,
        error: error.map(Into::into),
        failures: u32::from(error.is_some()),
    }
}

#[test]
fn a_rollback_not_acknowledged_is_rollback_pending_and_degraded() {
    let mut st = with_phase(CanaryPhase::Aborted);
    st.routing_write = Some(write(0, Some("503 from the API server")));
    let c = derived(&st);
    let rp = get(&c, "RollbackPending");
    assert_eq!(rp.status, "True");
    assert_eq!(rp.message, "rollback pending: 503 from the API server");
    assert_eq!(status_of(&c, "Degraded"), "True");
    // In flight, no error yet: pending, not degraded.
    st.routing_write = Some(write(0, None));
    let c = derived(&st);
    assert_eq!(
        get(&c, "RollbackPending").message,
        "rollback pending: write not acknowledged yet"
    );
    assert_eq!(status_of(&c, "Degraded"), "False");
    // A forward write is no rollback.
    let mut st = with_phase(CanaryPhase::Degraded);
    st.routing_write = Some(write(30, Some("409")));
    let c = derived(&st);
    assert_eq!(status_of(&c, "RollbackPending"), "False");
    assert_eq!(get(&c, "Degraded").message, "409");
    // Acknowledged: nothing pending.
    st.routing_write = None;
    st.phase = CanaryPhase::Aborted;
    assert_eq!(status_of(&derived(&st), "RollbackPending"), "False");
}

fn run(name: &str, phase: Phase) -> AnalysisRunStatus {
    let mut status = start_run(&RunSpec::default(), t(0));
    status.phase = phase;
    status.message = Some(format!("{name} says {phase:?}"));
    AnalysisRunStatus {
        name: name.into(),
        kind: AnalysisRunKind::Background,
        templates: vec!["apdex".into()],
        status,
    }
}

#[test]
fn analysis_healthy_follows_the_current_runs() {
    let st = with_phase(CanaryPhase::Progressing);
    let h = get(&derived(&st), "AnalysisHealthy").clone();
    assert_eq!(
        (h.status.as_str(), h.reason.as_str()),
        ("Unknown", "NoAnalysisRun")
    );
    for (phase, want, reason) in [
        (Phase::Pending, "True", "AnalysisRunPending"),
        (Phase::Running, "True", "AnalysisRunRunning"),
        (Phase::Successful, "True", "AnalysisRunSuccessful"),
        (Phase::Inconclusive, "False", "AnalysisRunInconclusive"),
        (Phase::Error, "False", "AnalysisRunError"),
        (Phase::Failed, "False", "AnalysisRunFailed"),
    ] {
        let mut st = with_phase(CanaryPhase::Progressing);
        st.analysis_runs = vec![run("old", Phase::Failed), run("bg", phase)];
        st.background_analysis_run = Some("bg".into());
        let h = get(&derived(&st), "AnalysisHealthy").clone();
        assert_eq!(
            (h.status.as_str(), h.reason.as_str()),
            (want, reason),
            "{phase:?}"
        );
        assert!(h.message.contains("bg"), "{h:?}");
    }
    // Of step and background runs, the worst decides.
    let mut st = with_phase(CanaryPhase::Progressing);
    st.analysis_runs = vec![run("bg", Phase::Running), run("step", Phase::Inconclusive)];
    st.background_analysis_run = Some("bg".into());
    st.step_analysis_run = Some("step".into());
    let h = get(&derived(&st), "AnalysisHealthy").clone();
    assert_eq!(h.reason, "AnalysisRunInconclusive");
    assert!(h.message.contains("step says Inconclusive"), "{h:?}");
    // With no current run, the latest one of the release speaks.
    st.background_analysis_run = None;
    st.step_analysis_run = None;
    st.analysis_runs = vec![run("a", Phase::Failed), run("b", Phase::Successful)];
    assert_eq!(status_of(&derived(&st), "AnalysisHealthy"), "True");
}

#[test]
fn messages_are_bounded() {
    let mut st = with_phase(CanaryPhase::Invalid);
    st.message = Some("x".repeat(10 * MAX_MESSAGE_CHARS));
    let c = derived(&st);
    assert!(
        c.iter()
            .all(|c| c.message.chars().count() <= MAX_MESSAGE_CHARS)
    );
    assert_eq!(get(&c, "InvalidSpec").message.len(), MAX_MESSAGE_CHARS);
}

fn finished(name: &str, phase: Phase) -> ScheduledRun {
    let mut status = start_run(&RunSpec::default(), t(0));
    status.phase = phase;
    status.message = Some("no data".into());
    ScheduledRun {
        name: name.into(),
        trigger: RunTrigger::Schedule,
        scheduled_time: Some(t(0)),
        status,
        actions: Vec::new(),
    }
}

#[test]
fn scheduled_analysis_conditions() {
    let sc = |st: &ScheduledAnalysisStatus| {
        let mut st = st.clone();
        observe_scheduled(&mut st, Some(5), t(0));
        assert_eq!(st.observed_generation, Some(5));
        st.conditions
    };
    let types = |c: &[StatusCondition]| {
        ["Ready", "Progressing", "InvalidSpec", "AnalysisHealthy"]
            .map(|ty| status_of(c, ty))
            .to_vec()
    };
    let mut st = ScheduledAnalysisStatus::default();
    assert_eq!(types(&sc(&st)), ["True", "False", "False", "Unknown"]);
    st.active = vec![finished("now", Phase::Running)];
    assert_eq!(types(&sc(&st)), ["True", "True", "False", "Unknown"]);
    st.active.clear();
    st.history = vec![
        finished("new", Phase::Successful),
        finished("old", Phase::Failed),
    ];
    assert_eq!(types(&sc(&st)), ["True", "False", "False", "True"]);
    st.history.reverse();
    let c = sc(&st);
    assert_eq!(types(&c), ["False", "False", "False", "False"]);
    assert_eq!(get(&c, "Ready").reason, "AnalysisRunFailed");
    assert!(get(&c, "AnalysisHealthy").message.contains("old"));
    st.invalid_spec = Some("s.yaml:4: spec.schedule: bad cron".into());
    let c = sc(&st);
    assert_eq!(types(&c), ["False", "False", "True", "False"]);
    assert_eq!(get(&c, "Ready").reason, "InvalidSpec");
    assert!(get(&c, "InvalidSpec").message.contains("spec.schedule"));
    // Transition times as for canaries.
    let mut st = ScheduledAnalysisStatus::default();
    observe_scheduled(&mut st, None, t(0));
    st.invalid_spec = Some("bad".into());
    observe_scheduled(&mut st, None, t(5) + TimeDelta::seconds(1));
    assert_eq!(
        get(&st.conditions, "InvalidSpec").last_transition_time,
        t(6)
    );
    assert_eq!(
        get(&st.conditions, "Progressing").last_transition_time,
        t(0)
    );
    assert_eq!(st.observed_generation, None);
}

/// Conditions number steps as `skycanary status`, Events and the STEP column do: 1-based of
/// all steps (`3/7`), never the 0-based `currentStepIndex`.
#[test]
fn progress_messages_number_steps_from_one_as_the_cli_does() {
    let mut st = CanaryStatus {
        phase: CanaryPhase::Progressing,
        current_step_index: 2,
        step: Some("3/7".into()),
        desired_weight: 30,
        ..Default::default()
    };
    let c = derived(&st);
    assert_eq!(
        get(&c, "Progressing").message,
        "step 3/7 at canary weight 30"
    );
    assert_eq!(
        get(&c, "Reconciling").message,
        "step 3/7 at canary weight 30"
    );
    st.phase = CanaryPhase::Paused;
    st.pause = Some(PauseStatus {
        reason: PauseReason::Step,
        since: t(0),
        until: None,
        message: None,
    });
    assert_eq!(
        get(&derived(&st), "Progressing").message,
        "step 3/7 at canary weight 30"
    );
    // A status saved before `step` existed still counts from 1.
    st.step = None;
    assert_eq!(
        get(&derived(&st), "Progressing").message,
        "step 3 at canary weight 30"
    );
}
