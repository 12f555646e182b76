//! One test per transition, then invariants over generated input sequences.

use super::*;
use crate::analysis::{
    Condition, Measurement, MetricResult, MetricSpec, Observation, ResultValue, measure,
};
use crate::resources::canary::{
    BackgroundAnalysis, HeaderMatchSpec, PauseStep, PostPromotion, RouteMatchSpec,
    SetHeaderRouteStep, SetMirrorRouteStep, StepAnalysis, StringMatchSpec,
};

// ---- fixtures --------------------------------------------------------------------------

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
}

fn tpl(name: &str) -> TemplateRef {
    TemplateRef {
        template_name: name.into(),
        cluster_scope: false,
    }
}

fn w(n: i64) -> CanaryStep {
    CanaryStep::SetWeight(n)
}

fn pause(secs: Option<i64>) -> CanaryStep {
    CanaryStep::Pause(PauseStep {
        duration: secs.map(IntOrString::Int),
    })
}

fn analysis(name: &str) -> CanaryStep {
    CanaryStep::Analysis(StepAnalysis {
        templates: vec![tpl(name)],
        args: vec![],
    })
}

fn spec(steps: Vec<CanaryStep>) -> CanarySpec {
    CanarySpec {
        revision: Some("v2".into()),
        steps,
        ..CanarySpec::default()
    }
}

fn with_bg(mut s: CanarySpec, starting: Option<u32>) -> CanarySpec {
    s.analysis = Some(BackgroundAnalysis {
        templates: vec![tpl("apdex")],
        starting_step: starting,
        args: vec![],
    });
    s
}

fn with_watch(mut s: CanarySpec, watch: &str) -> CanarySpec {
    s.post_promotion = Some(PostPromotion {
        watch: Some(watch.into()),
    });
    s
}

const FAILED_MSG: &str = "min(result) >= 9900 with result=[9000, 8800] → false; \
                          min(result) < 9500 with result=[9000, 8800] → true: Failed";

/// The judged measurement of a metric with `success`/`failure` conditions (evalexpr) over
/// `values`, or of a provider error when `values` is `None`.
fn judged(success: &str, failure: Option<&str>, values: Option<&[f64]>) -> Measurement {
    let mut spec = MetricSpec::new("apdex");
    spec.success_condition = Some(Condition::compile(success).expect("compiles"));
    spec.failure_condition = failure.map(|f| Condition::compile(f).expect("compiles"));
    let obs = match values {
        Some(v) => Observation::value(ResultValue::Series(v.to_vec())),
        None => Observation::Error {
            message: "connection refused".into(),
        },
    };
    measure(&spec, &obs, &Default::default(), t(0), t(1))
}

/// A completed run whose only metric `apdex` ended in `phase`, its measurement judged by
/// `min(result) >= 9900` / `min(result) < 9500`.
fn run_state(phase: Phase) -> RunState {
    let values: Option<&[f64]> = match phase {
        Phase::Failed => Some(&[9000.0, 8800.0]),
        Phase::Error => None,
        Phase::Inconclusive => Some(&[9600.0, 9700.0]),
        _ => Some(&[9950.0]),
    };
    let measurement = judged("min(result) >= 9900", Some("min(result) < 9500"), values);
    run_with(phase, measurement)
}

/// A completed run whose only metric `apdex` ended in `phase` with this measurement.
fn run_with(phase: Phase, measurement: Measurement) -> RunState {
    let metric_message = match phase {
        Phase::Successful | Phase::Running | Phase::Pending => None,
        p => Some(format!(
            "Metric \"apdex\" assessed {p} due to failed (1) > failureLimit (0)"
        )),
    };
    RunState {
        phase,
        message: metric_message.clone(),
        metric_results: vec![MetricResult {
            name: "apdex".into(),
            phase,
            measurements: vec![measurement.into()],
            message: metric_message,
            count: 1,
            successful: 0,
            failed: 1,
            inconclusive: 0,
            error: 0,
            consecutive_error: 0,
            consecutive_success: 0,
            dry_run: false,
        }],
        started_at: t(0),
        completed_at: phase.is_completed().then(|| t(1)),
        terminated: false,
        terminate_reason: None,
    }
}

/// A driver stand-in: holds the status, feeds inputs, keeps every effect.
struct Sim {
    spec: CanarySpec,
    st: CanaryStatus,
    now: DateTime<Utc>,
}

impl Sim {
    fn new(spec: CanarySpec) -> Self {
        Sim {
            spec,
            st: CanaryStatus::default(),
            now: t(0),
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Effect> {
        let (st, fx) = step(&self.spec, &self.st, &input, self.now);
        self.st = st;
        fx
    }

    fn start(&mut self) -> Vec<Effect> {
        self.feed(Input::Spec)
    }

    /// Confirms the routing write in flight.
    fn ok(&mut self) -> Vec<Effect> {
        let routing = self
            .st
            .routing_write
            .as_ref()
            .map(|w| w.routing.clone())
            .unwrap_or_else(|| DesiredRouting::weight(-1));
        self.feed(Input::Routing(Ok((routing, vec![]))))
    }

    fn tick_at(&mut self, secs: i64) -> Vec<Effect> {
        self.now = t(secs);
        self.feed(Input::Tick)
    }

    fn report(&mut self, name: &str, phase: Phase) -> Vec<Effect> {
        self.feed(Input::Analysis {
            name: name.into(),
            status: run_state(phase),
        })
    }

    fn cmd(&mut self, c: Command) -> Vec<Effect> {
        self.feed(Input::Command(c))
    }

    fn step_run(&self) -> String {
        self.st.step_analysis_run.clone().unwrap_or_default()
    }

    fn bg_run(&self) -> String {
        self.st.background_analysis_run.clone().unwrap_or_default()
    }
}

fn writes(fx: &[Effect]) -> Vec<DesiredRouting> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::ApplyRouting(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn reasons(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Event(ev) => Some(ev.reason.clone()),
            _ => None,
        })
        .collect()
}

fn event<'a>(fx: &'a [Effect], reason: &str) -> Option<&'a CanaryEvent> {
    fx.iter().find_map(|e| match e {
        Effect::Event(ev) if ev.reason == reason => Some(ev),
        _ => None,
    })
}

fn started(fx: &[Effect]) -> Vec<(String, AnalysisRunKind)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::StartAnalysis { name, kind, .. } => Some((name.clone(), kind.clone())),
            _ => None,
        })
        .collect()
}

fn terminated(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::TerminateAnalysis { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn wakes(fx: &[Effect]) -> Vec<DateTime<Utc>> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::WakeAt(t) => Some(*t),
            _ => None,
        })
        .collect()
}

// ---- Spec ------------------------------------------------------------------------------

#[test]
fn spec_first_sight_starts_run_from_step_0() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    let fx = s.start();
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
    assert_eq!(s.st.revision.as_deref(), Some("v2"));
    assert_eq!(s.st.current_step_index, 0);
    assert_eq!(s.st.started_at, Some(t(0)));
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    assert!(event(&fx, "RolloutUpdated").is_some());
}

#[test]
fn spec_new_revision_restarts_from_step_0_and_terminates_old_runs() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), analysis("p99")]), None));
    s.start();
    s.ok();
    let old_step = s.step_run();
    let old_bg = s.bg_run();
    s.cmd(Command::Pause);
    s.spec.revision = Some("v3".into());
    s.now = t(50);
    let fx = s.feed(Input::Spec);
    let mut stopped = terminated(&fx);
    stopped.sort();
    let mut expected = vec![old_step, old_bg];
    expected.sort();
    assert_eq!(stopped, expected);
    assert_eq!(s.st.revision.as_deref(), Some("v3"));
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
    assert_eq!(s.st.pause, None);
    assert_eq!(s.st.started_at, Some(t(50)));
    // Weight 10 goes back to 0 first (the canary's pods are the new revision's now), then
    // step 0 writes it again; once that lands the analysis starts.
    assert_eq!(
        writes(&fx),
        vec![DesiredRouting::weight(0), DesiredRouting::weight(10)]
    );
    assert_eq!(s.st.current_step_index, 0);
    s.ok();
    assert_eq!(
        s.st.analysis_runs
            .iter()
            .map(|r| &r.name)
            .collect::<Vec<_>>(),
        vec!["v3-bg", "v3-step-1"],
        "only the new revision's runs"
    );
    assert_eq!(s.st.current_step_index, 1);
    assert_eq!(s.step_run(), "v3-step-1");
}

/// The next release after a promotion (stable/canary swapped, or `onSuccess: Restore`): the
/// promoted weight is not the new run's, so a first step that does not route (an analysis
/// before any traffic) is never "defended" back to 100 % on the new canary, and the first
/// weight it writes is reported from 0.
#[test]
fn a_new_revision_keeps_a_rollback_that_has_not_landed() {
    // Aborted at 30 % with the rollback write failing; then a new revision whose first step
    // writes nothing (a pause). Dropping the pending rollback would leave the new revision on
    // 30 % it was never analysed for.
    let mut s = Sim::new(spec(vec![pause(Some(10)), w(30), pause(None)]));
    s.start();
    assert_eq!(writes(&s.tick_at(11)), vec![DesiredRouting::weight(30)]);
    s.ok();
    assert_eq!(
        writes(&s.cmd(Command::Abort { reason: "x".into() })),
        vec![DesiredRouting::weight(0)]
    );
    s.feed(Input::Routing(Err("apiserver down".into())));
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    s.spec.revision = Some("v3".into());
    s.now = t(20);
    let fx = s.feed(Input::Spec);
    assert_eq!(s.st.phase, CanaryPhase::Paused, "in its first pause");
    assert_eq!(s.st.current_step_index, 0);
    assert_eq!(
        writes(&fx),
        vec![DesiredRouting::weight(0)],
        "rollback asked for again"
    );
    assert!(
        s.st.routing_write
            .as_ref()
            .is_some_and(|w| w.routing == DesiredRouting::weight(0))
    );
    s.ok();
    assert_eq!(s.st.applied, Some(DesiredRouting::weight(0)));
    // A new revision over a landed rollback writes nothing before its steps ask.
    let mut s = Sim::new(spec(vec![pause(Some(10)), w(30), pause(None)]));
    s.start();
    s.tick_at(11);
    s.ok();
    s.cmd(Command::Abort { reason: "x".into() });
    s.ok();
    s.spec.revision = Some("v3".into());
    assert!(writes(&s.feed(Input::Spec)).is_empty());
}

#[test]
fn a_run_after_a_promotion_starts_from_no_routing_of_its_own() {
    for on_success in [OnSuccess::Keep, OnSuccess::Restore] {
        let mut sp = spec(vec![w(50)]);
        sp.on_success = on_success;
        let mut s = Sim::new(sp);
        s.start();
        s.ok();
        s.ok();
        assert_eq!(s.st.phase, CanaryPhase::Promoted);
        s.spec.revision = Some("v3".into());
        s.spec.steps = vec![analysis("smoke"), w(10)];
        s.now = t(100);
        let fx = s.feed(Input::Spec);
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.current_step_index, 0);
        assert_eq!(s.st.applied, None);
        assert_eq!(defended_routing(&s.spec, &s.st), None, "{on_success:?}");
        // Drift before the first write writes nothing (there is nothing of v3's to defend).
        let fx = s.feed(Input::Drift { detail: "x".into() });
        assert!(writes(&fx).is_empty(), "{fx:?}");
        let fx = s.report("v3-step-0", Phase::Successful);
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
        let fx = s.ok();
        assert_eq!(
            event(&fx, "TrafficWeightUpdated").map(|e| e.message.as_str()),
            Some("Traffic weight updated from 0 to 10")
        );
    }
    // A run replaced mid-way keeps its canary destination, but its pods now run the new
    // revision: the weight goes back to 0 first, then the first step writes it again.
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.ok();
    s.spec.revision = Some("v3".into());
    let fx = s.feed(Input::Spec);
    assert_eq!(
        writes(&fx),
        vec![DesiredRouting::weight(0), DesiredRouting::weight(10)],
        "{fx:?}"
    );
    assert_eq!(s.st.current_step_index, 0);
    s.ok();
    assert_eq!(s.st.applied, Some(DesiredRouting::weight(10)));
    assert_eq!(s.st.current_step_index, 1);
}

/// A next release that only changes `revision` after a promotion with `onSuccess: Keep`
/// (roles unchanged): the canary subset holds the promoted release at 100 %, so step 1 would
/// send 90 % of users back to the stable subset, the release before last. Refused with the
/// fix; a swap (or routes back at stable) lets it start.
#[test]
fn a_next_release_over_routes_that_favour_the_canary_is_refused_until_the_roles_swap() {
    use crate::resources::canary::DestinationRuleSpec;
    let mut sp = spec(vec![w(10)]);
    sp.traffic_routing.istio.destination_rule = Some(DestinationRuleSpec {
        name: "reviews".into(),
        stable_subset_name: "v1".into(),
        canary_subset_name: "v2".into(),
    });
    let mut s = Sim::new(sp);
    s.start();
    s.ok();
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    let route = |stable: i64, canary: i64| RouteWeights {
        virtual_service: "reviews".into(),
        kind: RouteKind::Http,
        route: "primary".into(),
        stable,
        canary,
        others: vec![],
    };
    // Same revision: nothing to start, nothing refused.
    assert_eq!(next_release_refusal(&s.spec, &s.st, &[route(0, 100)]), None);
    s.spec.revision = Some("v3".into());
    let why = next_release_refusal(&s.spec, &s.st, &[route(0, 100)]).unwrap();
    assert_eq!(
        why,
        "not starting revision \"v3\": http route primary of VirtualService reviews sends \
         100 % to the canary subset v2, where revision \"v2\" was promoted, and the first step \
         would move users back to the stable one; swap stableSubsetName and canarySubsetName \
         (the promoted subset becomes stable, the new version's the canary), or use \
         onSuccess: Restore (docs/releases.md)"
    );
    // Swapped roles read the promoted subset as stable: it may start.
    assert_eq!(next_release_refusal(&s.spec, &s.st, &[route(100, 0)]), None);
    // Held, the status keeps its phase and says why.
    s.feed(Input::Waiting(why.clone()));
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert_eq!(s.st.message.as_deref(), Some(why.as_str()));
    // Only a promotion is checked: a run replaced mid-way or after an abort starts.
    s.st.phase = CanaryPhase::Aborted;
    assert_eq!(next_release_refusal(&s.spec, &s.st, &[route(0, 100)]), None);
    s.st.phase = CanaryPhase::Paused;
    assert_eq!(next_release_refusal(&s.spec, &s.st, &[route(50, 50)]), None);
}

#[test]
fn an_unstarted_canary_is_stamped_with_the_spec_revision_and_a_started_one_is_not() {
    // A status saved while the first run waits (for its OAP) had no revision (found by the
    // chaos test: every status of a canary names its one revision).
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.feed(Input::Waiting(
        "waiting for SkyWalking OAP at x: down".into(),
    ));
    assert_eq!(s.st.revision, None);
    stamp_unstarted_revision(&s.spec, &mut s.st);
    assert_eq!(s.st.revision, s.spec.revision);
    assert!(starts_run(&s.spec, &s.st), "still starts its run");
    s.spec.revision = Some("v3".into());
    stamp_unstarted_revision(&s.spec, &mut s.st);
    assert_eq!(
        s.st.revision.as_deref(),
        Some("v3"),
        "still unstarted: the new one"
    );
    // A started run keeps its revision until the next run starts.
    s.start();
    s.spec.revision = Some("v4".into());
    stamp_unstarted_revision(&s.spec, &mut s.st);
    assert_eq!(s.st.revision.as_deref(), Some("v3"));
}

/// `status.step` (the STEP printer column) is the CLI's `3/7`: 1-based, the last step once
/// all are done, while `currentStepIndex` and run names stay 0-based.
#[test]
fn the_step_label_written_with_every_status_counts_from_one() {
    let mut s = Sim::new(spec(vec![w(10), pause(None), w(50)]));
    stamp_step_label(&s.spec, &mut s.st);
    assert_eq!(s.st.step.as_deref(), Some("1/3"));
    s.st.current_step_index = 1;
    stamp_step_label(&s.spec, &mut s.st);
    assert_eq!(s.st.step.as_deref(), Some("2/3"));
    s.st.current_step_index = 3;
    stamp_step_label(&s.spec, &mut s.st);
    assert_eq!(s.st.step.as_deref(), Some("3/3"), "all done: the last step");
    let json = serde_json::to_value(&s.st).expect("serialises");
    assert_eq!(json["step"], "3/3");
    assert_eq!(json["currentStepIndex"], 3);
}

#[test]
fn waiting_keeps_a_new_canary_pending_and_only_says_why() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    assert!(starts_run(&s.spec, &s.st));
    let fx = s.feed(Input::Waiting(
        "waiting for SkyWalking OAP at x: down".into(),
    ));
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(s.st.phase, CanaryPhase::Pending);
    assert_eq!(s.st.started_at, None);
    assert_eq!(
        s.st.message.as_deref(),
        Some("waiting for SkyWalking OAP at x: down")
    );
    // Once started, a run keeps its own message: Waiting is only for a run not begun.
    s.start();
    assert!(!starts_run(&s.spec, &s.st));
    let before = s.st.clone();
    assert!(s.feed(Input::Waiting("late".into())).is_empty());
    assert_eq!(s.st, before);
    // A new revision is a run not begun yet: it waits, the old run's weights untouched.
    s.ok();
    s.spec.revision = Some("v3".into());
    assert!(starts_run(&s.spec, &s.st));
    let fx = s.feed(Input::Waiting("why".into()));
    assert!(writes(&fx).is_empty(), "{fx:?}");
    assert_eq!(s.st.message.as_deref(), Some("why"));
    assert_eq!(s.st.revision.as_deref(), Some("v2"));
}

#[test]
fn spec_same_revision_is_a_no_op() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    let before = s.st.clone();
    let fx = s.feed(Input::Spec);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(s.st, before);
}

// ---- steps -----------------------------------------------------------------------------

#[test]
fn set_weight_completes_when_routing_is_applied() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    assert_eq!(s.st.current_step_index, 0, "waits for the write");
    assert_eq!(s.st.desired_weight, 10);
    let fx = s.ok();
    assert_eq!(
        event(&fx, "TrafficWeightUpdated").map(|e| e.message.as_str()),
        Some("Traffic weight updated from 0 to 10")
    );
    assert_eq!(
        event(&fx, "RolloutStepCompleted").map(|e| e.message.as_str()),
        Some("Rollout step 1/2 completed (setWeight: 10)")
    );
    assert_eq!(s.st.current_step_index, 1);
    assert_eq!(s.st.applied, Some(DesiredRouting::weight(10)));
    assert_eq!(s.st.routing_write, None);
}

#[test]
fn set_weight_already_applied_completes_without_write() {
    let mut s = Sim::new(spec(vec![w(10), w(10), pause(Some(60)), w(20)]));
    s.start();
    let fx = s.ok();
    // Steps 0 and 1 complete in the same call; the pause starts.
    let completed = reasons(&fx)
        .iter()
        .filter(|r| *r == "RolloutStepCompleted")
        .count();
    assert_eq!(completed, 2);
    assert!(writes(&fx).is_empty());
    assert_eq!(s.st.current_step_index, 2);
    assert_eq!(s.st.phase, CanaryPhase::Paused);
}

#[test]
fn header_and_mirror_routes_complete_on_routing_ok() {
    let header = CanaryStep::SetHeaderRoute(SetHeaderRouteStep {
        name: "hdr".into(),
        matches: vec![HeaderMatchSpec {
            header_name: "end-user".into(),
            header_value: StringMatchSpec {
                exact: Some("jason".into()),
                ..StringMatchSpec::default()
            },
        }],
    });
    let mirror = CanaryStep::SetMirrorRoute(SetMirrorRouteStep {
        name: "mirror".into(),
        percentage: Some(20.0),
        matches: vec![RouteMatchSpec::default()],
    });
    let mut s = Sim::new(spec(vec![w(10), header, mirror, pause(None)]));
    s.start();
    s.ok();
    assert_eq!(s.st.current_step_index, 1);
    let want = s.st.routing_write.clone().map(|w| w.routing);
    assert_eq!(want.as_ref().map(|r| r.header_routes.len()), Some(1));
    let fx = s.ok();
    assert!(event(&fx, "RolloutStepCompleted").is_some());
    assert!(
        event(&fx, "TrafficWeightUpdated").is_none(),
        "weight unchanged"
    );
    assert_eq!(s.st.current_step_index, 2);
    let want = s.st.routing_write.clone().map(|w| w.routing);
    assert_eq!(want.as_ref().map(|r| r.mirror_routes.len()), Some(1));
    s.ok();
    assert_eq!(s.st.current_step_index, 3);
}

#[test]
fn timed_pause_waits_until_since_plus_duration_then_tick_continues() {
    let mut s = Sim::new(spec(vec![w(10), pause(Some(300)), w(20)]));
    s.start();
    s.now = t(5);
    let fx = s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    let p = s.st.pause.clone();
    assert_eq!(p.as_ref().map(|p| p.reason), Some(PauseReason::Step));
    assert_eq!(p.as_ref().and_then(|p| p.until), Some(t(305)));
    assert_eq!(wakes(&fx), vec![t(305)]);
    assert!(s.tick_at(304).is_empty());
    let fx = s.tick_at(305);
    assert!(event(&fx, "RolloutStepCompleted").is_some());
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
    assert_eq!(s.st.current_step_index, 2);
}

#[test]
fn indefinite_pause_waits_for_promote() {
    let mut s = Sim::new(spec(vec![w(10), pause(None), w(20)]));
    s.start();
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert!(s.tick_at(100_000).is_empty(), "time does not end it");
    let fx = s.cmd(Command::Promote { full: false });
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    assert_eq!(s.st.current_step_index, 2);
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
}

#[test]
fn indefinite_pause_ends_on_resume() {
    let mut s = Sim::new(spec(vec![w(10), pause(None), w(20)]));
    s.start();
    s.ok();
    let fx = s.cmd(Command::Resume);
    assert!(event(&fx, "RolloutResumed").is_some());
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    assert_eq!(s.st.current_step_index, 2);
}

#[test]
fn step_analysis_starts_and_successful_completes_the_step() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(20)]));
    s.start();
    let fx = s.ok();
    assert_eq!(
        started(&fx),
        vec![("v2-step-1".to_string(), AnalysisRunKind::Step { index: 1 })]
    );
    assert!(s.report("v2-step-1", Phase::Running).is_empty());
    let fx = s.report("v2-step-1", Phase::Successful);
    assert!(event(&fx, "AnalysisRunSuccessful").is_some());
    assert!(event(&fx, "RolloutStepCompleted").is_some());
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    assert_eq!(s.st.step_analysis_run, None);
}

#[test]
fn step_analysis_inconclusive_pauses() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(20)]));
    s.start();
    s.ok();
    let fx = s.report("v2-step-1", Phase::Inconclusive);
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert_eq!(
        s.st.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::Inconclusive)
    );
    assert!(writes(&fx).is_empty(), "weights kept");
    assert!(s.tick_at(10_000).is_empty());
}

#[test]
fn step_analysis_failed_aborts_with_evidence() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(20)]));
    s.start();
    s.ok();
    s.now = t(30);
    let fx = s.report("v2-step-1", Phase::Failed);
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    assert!(event(&fx, "AnalysisRunFailed").is_some_and(|e| e.warning));
    let aborted = event(&fx, "RolloutAborted");
    assert!(aborted.is_some_and(|e| e.warning && e.message.contains("v2-step-1 Failed")));
    // Issue 18: both failure Events carry the evidence (metric, values, condition, threshold).
    for reason in ["AnalysisRunFailed", "RolloutAborted"] {
        let m = event(&fx, reason)
            .map(|e| e.message.clone())
            .unwrap_or_default();
        for part in [
            "apdex",
            "[9000, 8800]",
            "min(result) < 9500",
            "threshold < 9500",
        ] {
            assert!(m.contains(part), "{reason}: {part:?} in {m:?}");
        }
    }
    let abort = s.st.abort.clone().unwrap_or_default();
    assert_eq!(abort.metric.as_deref(), Some("apdex"));
    assert_eq!(abort.value.as_deref(), Some("[9000, 8800]"));
    assert_eq!(abort.condition.as_deref(), Some("min(result) < 9500"));
    assert_eq!(abort.at, t(30));
    assert_eq!(s.st.desired_weight, 0);
}

#[test]
fn step_analysis_error_with_abort_policy_aborts() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99")]));
    s.start();
    s.ok();
    let fx = s.report("v2-step-1", Phase::Error);
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert!(event(&fx, "AnalysisRunError").is_some());
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    assert_eq!(
        s.st.abort.as_ref().and_then(|a| a.metric.as_deref()),
        Some("apdex")
    );
}

#[test]
fn step_analysis_error_with_hold_policy_pauses_and_keeps_weights() {
    let mut sp = spec(vec![w(10), analysis("p99")]);
    sp.on_analysis_error = OnAnalysisError::Hold;
    let mut s = Sim::new(sp);
    s.start();
    s.ok();
    let fx = s.report("v2-step-1", Phase::Error);
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert_eq!(
        s.st.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::AnalysisError)
    );
    assert!(writes(&fx).is_empty());
    assert_eq!(s.st.applied, Some(DesiredRouting::weight(10)));
}

// ---- background analysis ---------------------------------------------------------------

#[test]
fn background_analysis_starts_at_starting_step() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), pause(None), w(20)]), Some(1)));
    let fx = s.start();
    assert!(started(&fx).is_empty(), "not before step 1");
    let fx = s.ok();
    assert_eq!(
        started(&fx),
        vec![("v2-bg".to_string(), AnalysisRunKind::Background)]
    );
    // It keeps running across steps; never started twice.
    let fx = s.cmd(Command::Promote { full: false });
    assert!(started(&fx).is_empty());
    assert_eq!(s.bg_run(), "v2-bg");
}

#[test]
fn background_analysis_is_terminated_on_promotion() {
    let mut s = Sim::new(with_bg(spec(vec![w(10)]), None));
    s.start();
    s.ok();
    let fx = s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert_eq!(terminated(&fx), vec!["v2-bg".to_string()]);
    assert_eq!(s.st.background_analysis_run, None);
}

#[test]
fn background_analysis_runs_through_the_watch_then_is_terminated() {
    let mut s = Sim::new(with_watch(with_bg(spec(vec![w(10)]), None), "30m"));
    s.start();
    s.ok();
    s.now = t(100);
    let fx = s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert!(terminated(&fx).is_empty());
    assert_eq!(s.st.watch_until, Some(t(1900)));
    assert_eq!(wakes(&fx), vec![t(1900)]);
    assert!(s.tick_at(1899).is_empty());
    let fx = s.tick_at(1900);
    assert_eq!(terminated(&fx), vec!["v2-bg".to_string()]);
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert!(s.tick_at(1901).is_empty());
}

#[test]
fn background_analysis_failing_during_the_watch_aborts() {
    let mut s = Sim::new(with_watch(with_bg(spec(vec![w(10)]), None), "30m"));
    s.start();
    s.ok();
    s.ok();
    s.now = t(60);
    let fx = s.report("v2-bg", Phase::Failed);
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
}

#[test]
fn background_analysis_successful_early_changes_nothing() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), pause(None), w(20)]), None));
    s.start();
    s.ok();
    let before = s.st.phase;
    let fx = s.report("v2-bg", Phase::Successful);
    assert_eq!(reasons(&fx), vec!["AnalysisRunSuccessful".to_string()]);
    assert_eq!(s.st.phase, before);
    assert_eq!(s.st.current_step_index, 1);
}

#[test]
fn background_analysis_failed_aborts() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), pause(None), w(20)]), None));
    s.start();
    s.ok();
    let fx = s.report("v2-bg", Phase::Failed);
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert!(
        s.st.abort
            .as_ref()
            .is_some_and(|a| a.reason.starts_with("Background analysis run v2-bg Failed"))
    );
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
}

#[test]
fn background_analysis_inconclusive_pauses() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), w(20)]), None));
    s.start();
    s.report("v2-bg", Phase::Inconclusive);
    assert_eq!(
        s.st.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::Inconclusive)
    );
    // Resuming starts a fresh background run so the canary stays protected.
    let fx = s.cmd(Command::Resume);
    assert_eq!(
        started(&fx),
        vec![("v2-bg-2".to_string(), AnalysisRunKind::Background)]
    );
}

// ---- abort -----------------------------------------------------------------------------

#[test]
fn alarm_during_the_run_aborts() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.ok();
    let fx = s.feed(Input::Alarm {
        source: "SkyWalking".into(),
        rule: "service_sla_rule".into(),
        entity: "reviews".into(),
        message: "SLA below 99%".into(),
    });
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let abort = s.st.abort.clone().unwrap_or_default();
    assert!(abort.reason.contains("service_sla_rule"));
    assert_eq!(abort.alarm.as_deref(), Some("service_sla_rule (reviews)"));
    assert_eq!(s.st.pause, None);
}

#[test]
fn alarm_within_the_watch_aborts() {
    let mut s = Sim::new(with_watch(spec(vec![w(10)]), "10m"));
    s.start();
    s.ok();
    s.ok();
    s.now = t(599);
    let fx = s.feed(Input::Alarm {
        source: "SkyWalking".into(),
        rule: "r".into(),
        entity: "e".into(),
        message: "m".into(),
    });
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
}

#[test]
fn alarm_after_the_watch_is_ignored() {
    let mut s = Sim::new(with_watch(spec(vec![w(10)]), "10m"));
    s.start();
    s.ok();
    s.ok();
    s.now = t(600);
    let fx = s.feed(Input::Alarm {
        source: "SkyWalking".into(),
        rule: "r".into(),
        entity: "e".into(),
        message: "m".into(),
    });
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert_eq!(reasons(&fx), vec!["AlarmIgnored".to_string()]);
}

#[test]
fn alarm_while_aborted_has_no_effect() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.ok();
    s.cmd(Command::Abort {
        reason: "bad".into(),
    });
    let before = s.st.clone();
    let fx = s.feed(Input::Alarm {
        source: "SkyWalking".into(),
        rule: "r".into(),
        entity: "e".into(),
        message: "m".into(),
    });
    assert!(fx.is_empty());
    assert_eq!(s.st, before);
}

#[test]
fn abort_command_aborts_with_one_write() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), analysis("p99")]), None));
    s.start();
    s.ok();
    let fx = s.cmd(Command::Abort {
        reason: "looks wrong".into(),
    });
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let mut stopped = terminated(&fx);
    stopped.sort();
    assert_eq!(stopped, vec!["v2-bg".to_string(), "v2-step-1".to_string()]);
    assert_eq!(
        s.st.abort.as_ref().map(|a| a.reason.as_str()),
        Some("Rollout aborted by user: looks wrong")
    );
    let fx = s.ok();
    assert_eq!(
        event(&fx, "TrafficWeightUpdated").map(|e| e.message.as_str()),
        Some("Traffic weight updated from 10 to 0")
    );
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
}

// ---- completion ------------------------------------------------------------------------

#[test]
fn completion_applies_max_weight_then_promotes() {
    let mut sp = spec(vec![w(10), w(50)]);
    sp.traffic_routing.max_traffic_weight = Some(1000);
    let mut s = Sim::new(sp);
    s.start();
    s.ok();
    let fx = s.ok();
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(1000)]);
    assert_eq!(
        s.st.phase,
        CanaryPhase::Progressing,
        "not before it is written"
    );
    s.now = t(42);
    let fx = s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert_eq!(s.st.promoted_at, Some(t(42)));
    assert_eq!(s.st.current_step_index, 2);
    assert_eq!(s.st.watch_until, None);
    assert!(event(&fx, "RolloutCompleted").is_some());
    assert!(!fx.contains(&Effect::RestoreRoutes));
}

#[test]
fn completion_with_restore_puts_original_routes_back() {
    let mut sp = spec(vec![w(10)]);
    sp.on_success = OnSuccess::Restore;
    let mut s = Sim::new(sp);
    s.start();
    s.ok();
    let fx = s.ok();
    assert!(fx.contains(&Effect::RestoreRoutes));
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
}

// ---- commands --------------------------------------------------------------------------

#[test]
fn promote_terminates_a_running_step_analysis_and_moves_on() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(20)]));
    s.start();
    s.ok();
    let fx = s.cmd(Command::Promote { full: false });
    assert_eq!(terminated(&fx), vec!["v2-step-1".to_string()]);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    assert_eq!(s.st.current_step_index, 2);
    // The run's late verdict no longer counts.
    let fx = s.report("v2-step-1", Phase::Failed);
    assert!(fx.is_empty());
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
}

#[test]
fn promote_does_not_skip_a_routing_step() {
    let mut s = Sim::new(spec(vec![w(10), w(20)]));
    s.start();
    let fx = s.cmd(Command::Promote { full: false });
    assert!(writes(&fx).is_empty(), "the write is already in flight");
    assert_eq!(s.st.current_step_index, 0);
}

#[test]
fn promote_full_skips_to_completion() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), analysis("p99"), w(20)]), None));
    s.start();
    s.ok();
    let fx = s.cmd(Command::Promote { full: true });
    assert_eq!(terminated(&fx), vec!["v2-step-1".to_string()]);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(100)]);
    let fx = s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    assert_eq!(terminated(&fx), vec!["v2-bg".to_string()]);
}

#[test]
fn retry_after_abort_restarts_with_new_run_names() {
    let mut s = Sim::new(with_bg(spec(vec![w(10), analysis("p99")]), None));
    s.start();
    s.ok();
    s.report("v2-step-1", Phase::Failed);
    s.ok();
    s.now = t(500);
    let fx = s.cmd(Command::Retry);
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
    assert_eq!(s.st.abort, None);
    assert_eq!(s.st.started_at, Some(t(500)));
    assert_eq!(s.st.current_step_index, 0);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    assert_eq!(
        started(&fx),
        vec![("v2-bg-2".to_string(), AnalysisRunKind::Background)]
    );
    let fx = s.ok();
    assert_eq!(
        started(&fx),
        vec![(
            "v2-step-1-2".to_string(),
            AnalysisRunKind::Step { index: 1 }
        )]
    );
    s.report("v2-step-1-2", Phase::Failed);
    s.ok();
    s.cmd(Command::Retry);
    s.ok();
    assert_eq!(s.step_run(), "v2-step-1-3");
}

#[test]
fn retry_while_progressing_is_rejected() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    let before = s.st.clone();
    let fx = s.cmd(Command::Retry);
    assert_eq!(s.st, before);
    let ev = event(&fx, "CommandRejected");
    assert!(ev.is_some_and(|e| e.warning && e.message.contains("Progressing")));
    // The refusal itself is a typed effect the driver answers with; the Event reports it.
    assert_eq!(fx.len(), 2);
    assert!(
        matches!(&fx[0], Effect::CommandRejected(why) if why.contains("Progressing")),
        "{fx:?}"
    );
}

#[test]
fn invalid_commands_are_rejected_without_change() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    for c in [
        Command::Promote { full: false },
        Command::Abort { reason: "x".into() },
        Command::Pause,
        Command::Resume,
    ] {
        let fx = s.cmd(c);
        assert_eq!(reasons(&fx), vec!["CommandRejected".to_string()]);
        assert_eq!(s.st, CanaryStatus::default());
    }
    s.start();
    s.ok();
    s.cmd(Command::Pause);
    let before = s.st.clone();
    let fx = s.cmd(Command::Pause);
    assert_eq!(
        reasons(&fx),
        vec!["CommandRejected".to_string()],
        "already paused"
    );
    assert_eq!(s.st, before);
}

#[test]
fn pause_command_pauses_manually_and_keeps_weights() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(20)]));
    s.start();
    s.ok();
    let fx = s.cmd(Command::Pause);
    assert!(writes(&fx).is_empty());
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert_eq!(
        s.st.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::Manual)
    );
    // A verdict arriving meanwhile is kept; the step waits for resume.
    let fx = s.report("v2-step-1", Phase::Successful);
    assert!(writes(&fx).is_empty());
    assert_eq!(s.st.current_step_index, 1);
    let fx = s.cmd(Command::Resume);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
}

#[test]
fn resume_continues_a_timed_pause_where_it_was() {
    let mut s = Sim::new(spec(vec![w(10), pause(Some(100)), w(20)]));
    s.start();
    s.ok();
    s.now = t(10);
    s.cmd(Command::Pause);
    s.now = t(50);
    let fx = s.cmd(Command::Resume);
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert_eq!(s.st.pause.as_ref().and_then(|p| p.until), Some(t(100)));
    assert_eq!(wakes(&fx), vec![t(100)]);
    let fx = s.tick_at(100);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
}

#[test]
fn resume_passes_an_inconclusive_step_analysis() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(20)]));
    s.start();
    s.ok();
    s.report("v2-step-1", Phase::Inconclusive);
    let fx = s.cmd(Command::Resume);
    assert!(event(&fx, "RolloutStepCompleted").is_some());
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
}

#[test]
fn resume_reruns_an_errored_step_analysis_on_hold() {
    let mut sp = spec(vec![w(10), analysis("p99"), w(20)]);
    sp.on_analysis_error = OnAnalysisError::Hold;
    let mut s = Sim::new(sp);
    s.start();
    s.ok();
    s.report("v2-step-1", Phase::Error);
    let fx = s.cmd(Command::Resume);
    assert_eq!(
        started(&fx),
        vec![(
            "v2-step-1-2".to_string(),
            AnalysisRunKind::Step { index: 1 }
        )]
    );
    assert_eq!(s.st.current_step_index, 1);
}

// ---- routing failures and drift --------------------------------------------------------

#[test]
fn routing_error_degrades_and_retries_the_same_write_on_tick() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.now = t(5);
    let fx = s.feed(Input::Routing(Err("409 conflict".into())));
    assert_eq!(s.st.phase, CanaryPhase::Degraded);
    assert!(s.st.message.as_deref().is_some_and(|m| m.contains("409")));
    assert_eq!(wakes(&fx), vec![t(15)]);
    assert!(event(&fx, "TrafficRoutingError").is_some_and(|e| e.warning));
    assert!(s.tick_at(14).is_empty());
    let fx = s.tick_at(15);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    assert_eq!(s.st.current_step_index, 0, "never skipped");
    assert!(s.tick_at(16).is_empty(), "one retry per failure");
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert_eq!(s.st.current_step_index, 1);
}

#[test]
fn drift_is_counted_and_the_routing_re_applied() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.ok();
    let fx = s.feed(Input::Drift {
        detail: "canary weight 0, want 10".into(),
    });
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    assert_eq!(s.st.step_drifts, 1);
    assert_eq!(s.st.drifts, 1);
    assert!(event(&fx, "TrafficDrift").is_some());
}

#[test]
fn the_routing_change_time_is_when_a_write_is_confirmed() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99"), w(30), pause(None)]));
    s.start();
    assert_eq!(s.st.routing_changed_at, None, "nothing applied yet");
    s.now = t(5);
    s.ok();
    assert_eq!(s.st.routing_changed_at, Some(t(5)));
    // Time passing and read-backs of the same routing are no change.
    s.tick_at(40);
    s.feed(Input::Routing(Ok((DesiredRouting::weight(10), vec![]))));
    assert_eq!(s.st.routing_changed_at, Some(t(5)));
    // Drift: someone moved the traffic; ours written back is a change again.
    s.feed(Input::Drift {
        detail: "canary weight 0, want 10".into(),
    });
    s.now = t(50);
    s.ok();
    assert_eq!(s.st.routing_changed_at, Some(t(50)));
    // The next weight, confirmed later than asked for: the confirmation counts.
    let run = s.step_run();
    s.report(&run, Phase::Successful);
    assert_eq!(s.st.desired_weight, 30);
    s.now = t(70);
    s.ok();
    assert_eq!(s.st.applied, Some(DesiredRouting::weight(30)));
    assert_eq!(s.st.routing_changed_at, Some(t(70)));
}

#[test]
fn three_drifts_in_one_step_pause_with_reason_drift() {
    let mut s = Sim::new(spec(vec![w(10), analysis("p99")]));
    s.start();
    s.ok();
    for _ in 0..2 {
        s.feed(Input::Drift { detail: "x".into() });
        s.ok();
    }
    let fx = s.feed(Input::Drift { detail: "x".into() });
    assert!(writes(&fx).is_empty(), "stops fighting");
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    assert_eq!(
        s.st.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::Drift)
    );
    let fx = s.cmd(Command::Resume);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    assert_eq!(s.st.step_drifts, 0);
}

#[test]
fn only_a_confirmed_routing_is_defended_against_drift() {
    let mut s = Sim::new(spec(vec![w(10), pause(None), w(30), pause(None)]));
    assert_eq!(defended_routing(&s.spec, &s.st), None, "Pending");
    s.start();
    assert_eq!(
        defended_routing(&s.spec, &s.st),
        None,
        "our first write in flight"
    );
    s.ok();
    assert_eq!(
        defended_routing(&s.spec, &s.st),
        Some(&DesiredRouting::weight(10))
    );
    // A write that failed is retried as it is; until it lands, the old routes are no drift.
    s.cmd(Command::Resume);
    assert_eq!(defended_routing(&s.spec, &s.st), None);
    s.feed(Input::Routing(Err("503".into())));
    assert_eq!(defended_routing(&s.spec, &s.st), None, "retry pending");
    s.tick_at(60);
    s.ok();
    assert_eq!(
        defended_routing(&s.spec, &s.st),
        Some(&DesiredRouting::weight(30))
    );
    // Paused for drift: still the intended routing (drift is still reported, not fought).
    for _ in 0..DRIFT_PAUSE_THRESHOLD {
        s.feed(Input::Drift { detail: "x".into() });
        if s.st.routing_write.is_some() {
            s.ok();
        }
    }
    assert_eq!(
        s.st.pause.as_ref().map(|p| p.reason),
        Some(PauseReason::Drift)
    );
    assert_eq!(
        defended_routing(&s.spec, &s.st),
        Some(&DesiredRouting::weight(30))
    );
    // An aborted canary's weight 0 is defended.
    s.cmd(Command::Abort {
        reason: "by hand".into(),
    });
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(
        defended_routing(&s.spec, &s.st),
        Some(&DesiredRouting::weight(0))
    );
}

#[test]
fn a_promotion_defends_its_weights_unless_the_original_routes_were_restored() {
    for restore in [false, true] {
        let mut sp = spec(vec![w(10)]);
        if restore {
            sp.on_success = OnSuccess::Restore;
        }
        let mut s = Sim::new(sp);
        s.start();
        s.ok();
        s.ok();
        assert_eq!(s.st.phase, CanaryPhase::Promoted);
        let defended = defended_routing(&s.spec, &s.st);
        if restore {
            assert_eq!(defended, None);
        } else {
            assert_eq!(defended, Some(&DesiredRouting::weight(100)));
        }
    }
}

// ---- helpers ---------------------------------------------------------------------------

#[test]
fn evidence_names_metric_value_and_condition() {
    let ev = evidence(&run_state(Phase::Failed));
    assert_eq!(ev.metric.as_deref(), Some("apdex"));
    assert_eq!(ev.value.as_deref(), Some("[9000, 8800]"));
    assert_eq!(ev.condition.as_deref(), Some("min(result) < 9500"));
    assert_eq!(ev.threshold, Some((CompareOp::Lt, 9500.0)));
    assert_eq!(ev.threshold_text().as_deref(), Some("< 9500"));
    assert_eq!(ev.message.as_deref(), Some(FAILED_MSG));
    let ev = evidence(&run_state(Phase::Error));
    assert_eq!(ev.condition, None);
    assert_eq!(ev.threshold, None);
    assert!(ev.message.is_some_and(|m| m.contains("connection refused")));
    // Neither condition held: both took part.
    let ev = evidence(&run_state(Phase::Inconclusive));
    assert_eq!(
        ev.condition.as_deref(),
        Some("min(result) >= 9900; min(result) < 9500")
    );
    assert_eq!(ev.threshold, Some((CompareOp::Ge, 9900.0)));
}

/// The decided condition is read from the measurement's data, so separators the judge's
/// message uses (` with `, `; `, ` → `) inside an expression cannot cut it.
#[test]
fn evidence_keeps_conditions_with_message_separators_whole() {
    let tricky = "min(result) < 9500 && str::from(\"a with b; c → true\") != \"\"";
    let failed = judged("max(result) > 0", Some(tricky), Some(&[9000.0]));
    assert_eq!(failed.phase, Phase::Failed);
    let ev = evidence(&run_with(Phase::Failed, failed));
    assert_eq!(ev.condition.as_deref(), Some(tricky));
    // `&&` makes it more than one comparison: no threshold.
    assert_eq!(ev.threshold, None);
    // A success condition that failed alone decides, with its (reversed) threshold.
    let s = "9900 <= min(result) || str::from(\"x → true; y\") == \"z\"";
    let failed = judged(s, None, Some(&[9000.0]));
    assert_eq!(failed.phase, Phase::Failed);
    let ev = evidence(&run_with(Phase::Failed, failed));
    assert_eq!(ev.condition.as_deref(), Some(s));
    let lone = judged("9900 <= min(result)", None, Some(&[9000.0]));
    let ev = evidence(&run_with(Phase::Failed, lone));
    assert_eq!(ev.condition.as_deref(), Some("9900 <= min(result)"));
    assert_eq!(ev.threshold_text().as_deref(), Some(">= 9900"));
}

/// A status saved before measurements carried typed evidence still yields metric, value and
/// message (no condition: it is never guessed from the message).
#[test]
fn evidence_of_a_measurement_without_typed_evidence() {
    let mut m = judged(
        "min(result) >= 9900",
        Some("min(result) < 9500"),
        Some(&[9000.0, 8800.0]),
    );
    m.evidence = None;
    let ev = evidence(&run_with(Phase::Failed, m));
    assert_eq!(ev.metric.as_deref(), Some("apdex"));
    assert_eq!(ev.value.as_deref(), Some("[9000, 8800]"));
    assert_eq!(ev.condition, None);
    assert_eq!(ev.message.as_deref(), Some(FAILED_MSG));
}

#[test]
fn next_wake_covers_pause_retry_and_watch() {
    let mut s = Sim::new(spec(vec![w(10), pause(Some(60))]));
    s.start();
    assert_eq!(next_wake(&s.st), Some(t(60)), "result timeout of the write");
    s.now = t(1);
    s.ok();
    assert_eq!(next_wake(&s.st), Some(t(61)));
}

// ---- invariants ------------------------------------------------------------------------

#[test]
fn restarted_driver_continues_at_the_same_step() {
    let mut s = Sim::new(with_bg(
        spec(vec![w(10), analysis("p99"), w(30), pause(Some(600)), w(60)]),
        None,
    ));
    s.start();
    s.ok();
    s.report("v2-step-1", Phase::Successful);
    s.now = t(20);
    s.ok();
    assert_eq!(s.st.current_step_index, 3);
    // Persist and reload, as the driver does.
    let json = serde_json::to_string(&s.st).unwrap_or_default();
    let persisted: CanaryStatus = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(persisted, s.st);
    let mut r = Sim {
        spec: s.spec.clone(),
        st: persisted,
        now: t(300),
    };
    let mut fx = r.feed(Input::Spec);
    fx.extend(r.feed(Input::Tick));
    assert!(fx.is_empty(), "nothing repeated: {fx:?}");
    assert_eq!(r.st.current_step_index, 3);
    assert_eq!(next_wake(&r.st), Some(t(620)));
    let fx = r.tick_at(620);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(60)]);
    assert!(started(&fx).is_empty());
}

#[test]
fn restarted_driver_re_asks_for_a_write_that_never_reported() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    let mut r = Sim {
        spec: s.spec.clone(),
        st: s.st.clone(),
        now: t(30),
    };
    assert!(r.feed(Input::Spec).is_empty());
    assert!(r.feed(Input::Tick).is_empty());
    let fx = r.tick_at(60);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
}

#[test]
fn restarted_driver_re_sends_a_pending_rollback_at_once() {
    // The abort was saved (write pending) and the process died before the write landed.
    let mut s = Sim::new(spec(vec![w(30), pause(None)]));
    s.start();
    s.ok();
    s.now = t(5);
    let fx = s.feed(Input::Rollback(rollback_why()));
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let persisted = s.st.clone();
    // One second later a new driver starts on the saved status: the rollback goes out first,
    // not after the 60 s result timeout.
    let mut r = Sim {
        spec: s.spec.clone(),
        st: persisted,
        now: t(6),
    };
    let fx = r.feed(Input::Resumed);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    assert!(r.feed(Input::Spec).is_empty());
    assert!(r.feed(Input::Tick).is_empty(), "asked for once");
    assert_eq!(
        next_wake(&r.st),
        Some(t(6) + chrono::TimeDelta::seconds(60)),
        "a lost result is waited for from the re-send"
    );
    let fx = r.ok();
    assert!(writes(&fx).is_empty());
    assert_eq!(r.st.routing_write, None);
}

#[test]
fn resumed_without_a_pending_write_does_nothing() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.ok();
    let before = s.st.clone();
    assert!(s.feed(Input::Resumed).is_empty());
    assert_eq!(s.st, before);
}

#[test]
fn a_failed_rollback_write_is_retried_within_two_seconds_and_says_it_is_pending() {
    let mut s = Sim::new(spec(vec![w(30), pause(None)]));
    s.start();
    s.ok();
    s.now = t(10);
    let fx = s.feed(Input::Rollback(rollback_why()));
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let mut expected_ms = [250, 500, 1000, 2000, 2000].into_iter();
    for attempt in 1..=5 {
        let fx = s.feed(Input::Routing(Err("409 Conflict".into())));
        let w = s.st.routing_write.clone().expect("still pending");
        let delay = w.retry_at.expect("retry scheduled") - s.now;
        assert_eq!(
            delay.num_milliseconds(),
            expected_ms.next().unwrap_or_default(),
            "attempt {attempt}"
        );
        assert_eq!(wakes(&fx), vec![w.retry_at.unwrap_or_default()]);
        assert_eq!(
            s.st.message.as_deref(),
            Some("rollback pending: 409 Conflict")
        );
        assert_eq!(s.st.phase, CanaryPhase::Aborted);
        s.now = w.retry_at.unwrap_or_default();
        assert_eq!(
            writes(&s.feed(Input::Tick)),
            vec![DesiredRouting::weight(0)]
        );
    }
    s.ok();
    assert_eq!(s.st.routing_write, None);
    let reason = s.st.abort.as_ref().map(|a| a.reason.clone());
    assert_eq!(s.st.message, reason, "the message says why again");
}

#[test]
fn rollback_retry_delays_double_from_a_quarter_second_to_two_seconds() {
    let ms: Vec<u128> = (0..=6)
        .map(|n| rollback_retry_delay(n).as_millis())
        .collect();
    assert_eq!(ms, vec![250, 250, 500, 1000, 2000, 2000, 2000]);
    assert_eq!(rollback_retry_delay(u32::MAX), ROLLBACK_RETRY_MAX);
}

fn routes_at(canary: i64) -> Vec<RouteWeights> {
    vec![RouteWeights {
        virtual_service: "reviews".into(),
        kind: crate::traffic::RouteKind::Http,
        route: "primary".into(),
        stable: 100 - canary,
        canary,
        others: vec![],
    }]
}

#[test]
fn an_exposed_status_over_withdrawn_routes_is_aborted_not_resumed() {
    // Saved at 30 % in a timed pause; the rollback that followed was written but not saved.
    let mut s = Sim::new(spec(vec![w(30), pause(Some(60)), w(60)]));
    s.start();
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    let mut r = Sim {
        spec: s.spec.clone(),
        st: s.st.clone(),
        now: t(30),
    };
    let fx = r.feed(Input::Observed(routes_at(0)));
    assert_eq!(r.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    assert_eq!(reasons(&fx), vec!["RolloutAborted".to_string()]);
    let reason =
        r.st.abort
            .as_ref()
            .map(|a| a.reason.clone())
            .unwrap_or_default();
    assert!(reason.contains("saved status says 30 %"), "{reason}");
    // The pause's end no longer moves it forward.
    r.ok();
    assert!(writes(&r.tick_at(120)).is_empty());
    assert_eq!(r.st.phase, CanaryPhase::Aborted);
}

#[test]
fn withdrawn_routes_under_a_pending_write_are_aborted_too() {
    // Saved at 30 % with the write of 60 % asked for: it landed, then its confirmation and the
    // rollback that followed were never saved (a status outage, then a crash). Re-sending the
    // pending write would expose a rolled-back canary again (found by the chaos test).
    let mut s = Sim::new(spec(vec![w(30), pause(Some(60)), w(60)]));
    s.start();
    s.ok();
    assert_eq!(writes(&s.tick_at(120)), vec![DesiredRouting::weight(60)]);
    assert!(s.st.routing_write.is_some());
    let fx = s.feed(Input::Observed(routes_at(0)));
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
}

#[test]
fn withdrawn_routes_under_an_in_flight_first_write_are_aborted() {
    // Saved with the first write (30 %) asked for and no result: it landed, then its
    // confirmation and the rollback that followed were never saved (a status outage, then a
    // crash). Over routes at 0 this cannot be told from a write that never went out, so it is
    // not re-sent (found by the chaos test: the re-sent write exposed a rolled-back canary).
    let mut s = Sim::new(spec(vec![w(30), pause(Some(60)), w(60)]));
    assert_eq!(writes(&s.start()), vec![DesiredRouting::weight(30)]);
    assert!(s.st.applied.is_none());
    let fx = s.feed(Input::Observed(routes_at(0)));
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let reason =
        s.st.abort
            .as_ref()
            .map(|a| a.reason.clone())
            .unwrap_or_default();
    assert!(reason.contains("a write of 30 % in flight"), "{reason}");
    // Resumed then sends the rollback, never the exposing write.
    assert!(
        writes(&s.feed(Input::Resumed))
            .iter()
            .all(|w| !w.exposes_canary())
    );
}

#[test]
fn observed_routes_that_match_or_a_pending_write_change_nothing() {
    let mut s = Sim::new(spec(vec![w(30), pause(Some(60)), w(60)]));
    s.start();
    // The write of 30 % failed and waits for its retry (saved so): it never landed, and
    // Resumed re-sends it.
    s.feed(Input::Routing(Err("apiserver down".into())));
    assert!(
        s.st.routing_write
            .as_ref()
            .is_some_and(|w| w.retry_at.is_some())
    );
    let before = s.st.clone();
    assert!(s.feed(Input::Observed(routes_at(0))).is_empty());
    assert_eq!(s.st, before);
    s.ok();
    let before = s.st.clone();
    assert!(s.feed(Input::Observed(routes_at(30))).is_empty());
    assert!(s.feed(Input::Observed(vec![])).is_empty(), "nothing read");
    assert_eq!(s.st, before);
    // A finished release is not judged by its routes (onSuccess: Restore may have reset them).
    let mut p = Sim::new(spec(vec![w(10)]));
    p.start();
    p.ok();
    p.ok();
    assert_eq!(p.st.phase, CanaryPhase::Promoted);
    assert!(p.feed(Input::Observed(routes_at(0))).is_empty());
}

/// Issue 14, RELIABILITY.md window (1): the first exposure was asked for (pending, never
/// confirmed), the canary was rolled back and the daemon killed before any save. The saved
/// status cannot tell this from "the first write never landed"; the marker the rollback left
/// on the routes can: the run is aborted, and the pending exposing write is not re-sent.
#[test]
fn a_rollback_marker_for_this_run_aborts_even_an_unconfirmed_first_exposure() {
    let mut s = Sim::new(spec(vec![w(30), pause(Some(60)), w(60)]));
    s.start();
    assert!(s.st.routing_write.is_some(), "the first write is pending");
    assert!(s.st.applied.is_none(), "and was never confirmed");
    let run = run_marker(&s.st);
    let restarted = || Sim {
        spec: s.spec.clone(),
        st: s.st.clone(),
        now: t(5),
    };
    // Routes at 0 under a first exposure still in flight abort it (it may have landed and
    // been rolled back since: the chaos merge's rule in `on_observed`)...
    let mut o = restarted();
    o.feed(Input::Observed(routes_at(0)));
    assert_eq!(o.st.phase, CanaryPhase::Aborted);
    // ...and the marker does, whatever the routes say.
    let mut r = restarted();
    let fx = r.feed(Input::RolledBackMarker(run.clone()));
    assert_eq!(r.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let reason =
        r.st.abort
            .as_ref()
            .map(|a| a.reason.clone())
            .unwrap_or_default();
    assert!(
        reason.contains("rollback marker") && reason.contains(&run),
        "{reason}"
    );
    // Resumed then re-sends the rollback, never the exposure.
    assert_eq!(
        writes(&r.feed(Input::Resumed)),
        vec![DesiredRouting::weight(0)]
    );
}

#[test]
fn a_marker_of_another_run_or_over_a_finished_canary_changes_nothing() {
    let mut s = Sim::new(spec(vec![w(30), pause(Some(60)), w(60)]));
    s.start();
    s.ok();
    let before = s.st.clone();
    // An older run of the same revision (retried since) and another revision.
    for other in ["rev-1@2020-01-01T00:00:00.000Z", "other@-"] {
        assert!(s.feed(Input::RolledBackMarker(other.into())).is_empty());
        assert_eq!(s.st, before);
    }
    // A retry starts a new run: the old run's marker no longer applies.
    let run = run_marker(&s.st);
    s.feed(Input::RolledBackMarker(run.clone()));
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    s.ok();
    s.now = t(10);
    s.cmd(Command::Retry);
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
    assert_ne!(run_marker(&s.st), run);
    let retried = s.st.clone();
    assert!(s.feed(Input::RolledBackMarker(run)).is_empty());
    assert_eq!(s.st, retried);
    // A promoted canary is not judged by a marker.
    let mut p = Sim::new(spec(vec![w(10)]));
    p.start();
    p.ok();
    p.ok();
    assert_eq!(p.st.phase, CanaryPhase::Promoted);
    let m = run_marker(&p.st);
    assert!(p.feed(Input::RolledBackMarker(m)).is_empty());
}

/// Small deterministic generator (no extra dependency; reproducible failures).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn random_input(rng: &mut Rng, st: &CanaryStatus) -> Input {
    let runs: Vec<String> = st.analysis_runs.iter().map(|r| r.name.clone()).collect();
    let phases = [
        Phase::Running,
        Phase::Successful,
        Phase::Successful,
        Phase::Inconclusive,
        Phase::Failed,
        Phase::Error,
    ];
    match rng.below(14) {
        0..=2 => Input::Tick,
        // The driver reports results of the writes it was asked for.
        3..=6 => match &st.routing_write {
            Some(w) if rng.below(4) == 0 => Input::Routing(Err("boom".into())),
            Some(w) => Input::Routing(Ok((w.routing.clone(), vec![]))),
            None => Input::Tick,
        },
        7 | 8 if !runs.is_empty() => Input::Analysis {
            name: runs[rng.below(runs.len() as u64) as usize].clone(),
            status: run_state(phases[rng.below(phases.len() as u64) as usize]),
        },
        9 => Input::Drift { detail: "d".into() },
        10 if rng.below(4) == 0 => Input::Alarm {
            source: "SkyWalking".into(),
            rule: "r".into(),
            entity: "e".into(),
            message: "m".into(),
        },
        11 => Input::Spec,
        12 if rng.below(4) == 0 => Input::Resumed,
        _ => Input::Command(match rng.below(7) {
            0 => Command::Promote { full: false },
            1 => Command::Promote {
                full: rng.below(3) == 0,
            },
            2 if rng.below(3) == 0 => Command::Abort { reason: "x".into() },
            3 => Command::Retry,
            4 => Command::Pause,
            _ => Command::Resume,
        }),
    }
}

fn specs() -> Vec<CanarySpec> {
    let mut hold = with_bg(
        spec(vec![w(10), pause(Some(30)), analysis("a"), w(40), w(80)]),
        Some(1),
    );
    hold.on_analysis_error = OnAnalysisError::Hold;
    vec![
        spec(vec![w(10), pause(Some(60)), w(20), analysis("p99"), w(50)]),
        with_watch(
            with_bg(spec(vec![w(5), analysis("a"), pause(None), w(25)]), None),
            "5m",
        ),
        hold,
        spec(vec![pause(Some(10)), w(30), w(30), analysis("x")]),
    ]
}

#[test]
fn invariants_hold_over_random_input_sequences() {
    let mut seen = std::collections::BTreeSet::new();
    for (k, sp) in specs().into_iter().enumerate() {
        for seed in 1..=60u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64 + 1));
            let mut s = Sim::new(sp.clone());
            s.start();
            for _ in 0..120 {
                s.now += TimeDelta::seconds(rng.below(40) as i64);
                let input = random_input(&mut rng, &s.st);
                let prev = s.st.clone();
                let fx = s.feed(input.clone());
                seen.insert(format!("{:?}", s.st.phase));
                let ctx = format!("spec {k} seed {seed} input {input:?}\nprev {prev:?}\nfx {fx:?}");

                // The desired weight never decreases during a run except by abort.
                let same_run = prev.started_at == s.st.started_at;
                if same_run && s.st.phase != CanaryPhase::Aborted {
                    assert!(s.st.desired_weight >= prev.desired_weight, "{ctx}");
                }
                // Exactly one abort write, in the call that aborts.
                if prev.phase != CanaryPhase::Aborted && s.st.phase == CanaryPhase::Aborted {
                    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)], "{ctx}");
                    assert!(s.st.abort.is_some(), "{ctx}");
                }
                if s.st.phase == CanaryPhase::Aborted {
                    assert!(writes(&fx).iter().all(|r| r.canary_weight == 0), "{ctx}");
                }
                // Promoted only with the final routing confirmed.
                if s.st.phase == CanaryPhase::Promoted && prev.phase != CanaryPhase::Promoted {
                    assert_eq!(s.st.applied, Some(DesiredRouting::weight(100)), "{ctx}");
                }
                // Idempotent: the same input again emits nothing (drift, commands and driver
                // restarts are new occurrences each time, so they are not repeated here).
                let ignored_alarm =
                    matches!(input, Input::Alarm { .. }) && s.st.phase != CanaryPhase::Aborted;
                if !matches!(
                    input,
                    Input::Drift { .. } | Input::Command(_) | Input::Resumed
                ) && !ignored_alarm
                {
                    let (again, fx2) = step(&s.spec, &s.st, &input, s.now);
                    assert!(fx2.is_empty(), "repeat emitted {fx2:?}\n{ctx}");
                    assert_eq!(again, s.st, "{ctx}");
                }
                // A restart (persist + Spec + Tick) of a settled status repeats nothing.
                if input != Input::Tick {
                    continue;
                }
                let json = serde_json::to_string(&s.st).unwrap_or_default();
                let persisted: CanaryStatus = serde_json::from_str(&json).unwrap_or_default();
                assert_eq!(persisted, s.st, "{ctx}");
                let (st2, fx_spec) = step(&s.spec, &persisted, &Input::Spec, s.now);
                assert!(
                    fx_spec.is_empty(),
                    "restart Spec emitted {fx_spec:?}\n{ctx}"
                );
                let (_, fx_tick) = step(&s.spec, &st2, &Input::Tick, s.now);
                assert!(
                    fx_tick.is_empty(),
                    "restart Tick emitted {fx_tick:?}\n{ctx}"
                );
            }
        }
    }
    for phase in ["Progressing", "Paused", "Degraded", "Promoted", "Aborted"] {
        assert!(seen.contains(phase), "never reached {phase}: {seen:?}");
    }
}

// ---- rollback on a scheduled analysis' verdict ----------------------------------------

fn rollback_why() -> AbortStatus {
    AbortStatus {
        not_ready: None,
        reason: "ScheduledAnalysis bookinfo/nightly run nightly-1 ended Failed: metric apdex value [7000]".into(),
        metric: Some("apdex".into()),
        value: Some("[7000]".into()),
        condition: Some("min(result) >= 9900".into()),
        alarm: None,
        at: t(0),
    }
}

#[test]
fn rollback_of_a_promoted_canary_goes_to_stable_as_rolled_back() {
    let mut s = Sim::new(with_watch(with_bg(spec(vec![w(10)]), None), "10m"));
    s.start();
    s.ok();
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Promoted);
    let bg = s.bg_run();
    s.now = t(3600);
    let fx = s.feed(Input::Rollback(rollback_why()));
    assert_eq!(s.st.phase, CanaryPhase::RolledBack);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    assert_eq!(terminated(&fx), vec![bg]);
    assert_eq!(reasons(&fx), vec!["RolloutRolledBack".to_string()]);
    let abort = s.st.abort.clone().unwrap();
    assert_eq!(abort.at, t(3600), "the machine's time, not the caller's");
    assert_eq!(abort.metric.as_deref(), Some("apdex"));
    assert!(abort.reason.contains("ScheduledAnalysis bookinfo/nightly"));
    assert_eq!(s.st.watch_until, None);
    assert_eq!(s.st.desired_weight, 0);
    // The write is confirmed; the phase stays, and the weight 0 is defended against drift.
    let fx = s.ok();
    assert_eq!(s.st.phase, CanaryPhase::RolledBack);
    assert_eq!(
        event(&fx, "TrafficWeightUpdated").map(|e| e.message.as_str()),
        Some("Traffic weight updated from 100 to 0")
    );
    let fx = s.feed(Input::Drift {
        detail: "canary 50".into(),
    });
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
}

#[test]
fn rollback_of_an_active_canary_aborts() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    s.start();
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    let fx = s.feed(Input::Rollback(rollback_why()));
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    assert_eq!(reasons(&fx), vec!["RolloutAborted".to_string()]);
    assert_eq!(
        s.st.abort.as_ref().and_then(|a| a.condition.as_deref()),
        Some("min(result) >= 9900")
    );
}

#[test]
fn rollback_when_already_at_stable_or_not_started_changes_nothing() {
    let mut s = Sim::new(spec(vec![w(10), pause(None)]));
    let fx = s.feed(Input::Rollback(rollback_why()));
    assert_eq!(s.st.phase, CanaryPhase::Pending);
    assert_eq!(reasons(&fx), vec!["CommandRejected".to_string()]);
    assert!(writes(&fx).is_empty());
    s.start();
    s.ok();
    s.feed(Input::Rollback(rollback_why()));
    s.ok();
    let before = s.st.clone();
    let fx = s.feed(Input::Rollback(rollback_why()));
    assert_eq!(reasons(&fx), vec!["RollbackIgnored".to_string()]);
    assert!(writes(&fx).is_empty());
    assert_eq!(s.st, before);
}

#[test]
fn a_rolled_back_canary_ignores_alarms_and_can_be_retried() {
    let mut s = Sim::new(spec(vec![w(10)]));
    s.start();
    s.ok();
    s.ok();
    s.feed(Input::Rollback(rollback_why()));
    s.ok();
    let before = s.st.clone();
    let fx = s.feed(Input::Alarm {
        source: "SkyWalking".into(),
        rule: "r".into(),
        entity: "e".into(),
        message: "m".into(),
    });
    assert!(fx.is_empty());
    assert_eq!(s.st, before);
    let fx = s.cmd(Command::Abort { reason: "x".into() });
    assert_eq!(reasons(&fx), vec!["CommandRejected".to_string()]);
    let fx = s.cmd(Command::Retry);
    assert_eq!(s.st.phase, CanaryPhase::Progressing);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
}

#[test]
fn alarm_while_paused_aborts_and_names_its_source() {
    let mut s = Sim::new(spec(vec![w(10), pause(None), w(50)]));
    s.start();
    s.ok();
    assert_eq!(s.st.phase, CanaryPhase::Paused);
    let fx = s.feed(Input::Alarm {
        source: "Alertmanager".into(),
        rule: "HighErrorRate".into(),
        entity: "{service=\"reviews\"}".into(),
        message: "5xx above 5%".into(),
    });
    assert_eq!(s.st.phase, CanaryPhase::Aborted);
    assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
    let abort = s.st.abort.clone().unwrap_or_default();
    assert!(
        abort.reason.starts_with("Alertmanager alarm HighErrorRate"),
        "{}",
        abort.reason
    );
}

#[test]
fn alarms_are_armed_only_while_running_or_watching() {
    let st = |phase, watch_until| CanaryStatus {
        phase,
        watch_until,
        ..CanaryStatus::default()
    };
    for phase in [
        CanaryPhase::Progressing,
        CanaryPhase::Paused,
        CanaryPhase::Degraded,
    ] {
        assert!(alarm_armed(&st(phase, None), t(0)), "{phase:?}");
    }
    for phase in [
        CanaryPhase::Pending,
        CanaryPhase::Aborted,
        CanaryPhase::RolledBack,
    ] {
        assert!(!alarm_armed(&st(phase, Some(t(100))), t(0)), "{phase:?}");
    }
    assert!(alarm_armed(&st(CanaryPhase::Promoted, Some(t(100))), t(99)));
    assert!(!alarm_armed(
        &st(CanaryPhase::Promoted, Some(t(100))),
        t(100)
    ));
    assert!(!alarm_armed(&st(CanaryPhase::Promoted, None), t(0)));
}

// ---- proptest: safety over generated plans and input sequences ------------------------------

mod safety {
    use proptest::prelude::*;

    use super::*;

    /// A generated step: weight (0..=max), timed pause, or analysis.
    fn gen_step() -> impl Strategy<Value = CanaryStep> {
        prop_oneof![
            (0i64..=100).prop_map(w),
            (1i64..60).prop_map(|s| pause(Some(s))),
            Just(analysis("a")),
        ]
    }

    fn gen_spec() -> impl Strategy<Value = CanarySpec> {
        (
            prop::collection::vec(gen_step(), 1..7),
            any::<bool>(),
            prop::option::of(0u32..4),
        )
            .prop_map(|(steps, hold, bg)| {
                let mut s = spec(steps);
                if hold {
                    s.on_analysis_error = OnAnalysisError::Hold;
                }
                match bg {
                    Some(start) => with_bg(s, Some(start)),
                    None => s,
                }
            })
    }

    /// One input chosen by `(kind, pick, phase)`; commands that force progress (promote,
    /// resume) are left out so every advance must be earned by the analysis.
    fn input(st: &CanaryStatus, kind: u8, pick: u8, phase: u8) -> Input {
        let phases = [
            Phase::Running,
            Phase::Successful,
            Phase::Inconclusive,
            Phase::Failed,
            Phase::Error,
        ];
        match kind % 8 {
            0 | 1 => Input::Tick,
            2 | 3 => match &st.routing_write {
                Some(_) if pick.is_multiple_of(4) => Input::Routing(Err("injected".into())),
                Some(w) => Input::Routing(Ok((w.routing.clone(), vec![]))),
                None => Input::Tick,
            },
            4 | 5 if !st.analysis_runs.is_empty() => Input::Analysis {
                name: st.analysis_runs[usize::from(pick) % st.analysis_runs.len()]
                    .name
                    .clone(),
                status: run_state(phases[usize::from(phase) % phases.len()]),
            },
            6 => Input::Drift {
                detail: "foreign weights".into(),
            },
            7 if pick.is_multiple_of(8) => Input::Command(Command::Abort {
                reason: "user".into(),
            }),
            _ => Input::Spec,
        }
    }

    fn analysis_steps(spec: &CanarySpec) -> Vec<u32> {
        spec.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, CanaryStep::Analysis(_)))
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn last_step_run(st: &CanaryStatus, k: u32) -> Option<&AnalysisRunStatus> {
        st.analysis_runs
            .iter()
            .rev()
            .find(|r| r.kind == AnalysisRunKind::Step { index: k })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn weights_stay_in_range_advances_are_earned_and_abort_ends_at_zero(
            sp in gen_spec(),
            inputs in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 0i64..90), 1..80),
        ) {
            let max = DEFAULT_MAX_WEIGHT;
            let mut s = Sim::new(sp);
            s.start();
            for (kind, pick, phase, secs) in inputs {
                s.now += TimeDelta::seconds(secs);
                let input = input(&s.st, kind, pick, phase);
                let prev = s.st.clone();
                let fx = s.feed(input.clone());
                let ctx = format!("input {input:?}\nprev {prev:?}\nnow {:?}\nfx {fx:?}", s.st);
                for r in writes(&fx) {
                    prop_assert!((0..=max).contains(&r.canary_weight), "{}", ctx);
                }
                prop_assert!((0..=max).contains(&s.st.desired_weight), "{}", ctx);
                // Past an analysis step only with that step's run Successful.
                for k in analysis_steps(&s.spec) {
                    if prev.current_step_index <= k && s.st.current_step_index > k {
                        let run = last_step_run(&s.st, k);
                        prop_assert!(
                            run.is_some_and(|r| r.status.phase == Phase::Successful),
                            "advanced past analysis step {} on {:?}\n{}",
                            k,
                            run.map(|r| r.status.phase),
                            ctx
                        );
                    }
                }
                // Max weight only when every step is done or a passed step set it.
                if s.st.desired_weight == max && prev.desired_weight != max {
                    let done = s.st.current_step_index as usize >= s.spec.steps.len();
                    let set = s.spec.steps.iter().take(s.st.current_step_index as usize + 1)
                        .any(|st| matches!(st, CanaryStep::SetWeight(w) if *w == max));
                    prop_assert!(done || set, "{}", ctx);
                }
                // An abort asks for weight 0 and nothing else, and stays at 0.
                if s.st.phase == CanaryPhase::Aborted {
                    prop_assert_eq!(s.st.desired_weight, 0, "{}", ctx);
                    prop_assert!(writes(&fx).iter().all(|r| r.canary_weight == 0), "{}", ctx);
                }
                if prev.phase == CanaryPhase::Aborted {
                    prop_assert_eq!(s.st.phase, CanaryPhase::Aborted, "{}", ctx);
                }
                // Never rewound within a run.
                prop_assert!(s.st.current_step_index >= prev.current_step_index, "{}", ctx);
            }
        }
    }
}

/// Issue 18: a run's Event names metric, measured values and condition; a successful run's
/// Event never ends in an empty message.
#[test]
fn run_verdicts_name_the_evidence_and_are_never_empty() {
    let failed = verdict_detail(&run_state(Phase::Failed));
    for part in [
        "metric apdex",
        "measured [9000, 8800]",
        "condition min(result) < 9500",
        "threshold < 9500",
    ] {
        assert!(failed.contains(part), "{part}: {failed}");
    }
    let error = verdict_detail(&run_state(Phase::Error));
    assert!(error.contains("connection refused"), "{error}");
    let ok = verdict_detail(&run_state(Phase::Successful));
    assert_eq!(ok, "apdex Successful (1 measurement(s))");
    let mut empty = run_state(Phase::Successful);
    empty.metric_results.clear();
    assert_eq!(verdict_detail(&empty), "no metrics");
    // The event the machine emits carries it.
    let mut s = Sim::new(spec(vec![w(10), analysis("p99")]));
    s.start();
    s.ok();
    let name = s.step_run();
    assert!(!name.is_empty(), "a step run: {:?}", s.st);
    let fx = s.report(&name, Phase::Failed);
    let ev = fx
        .iter()
        .find_map(|e| match e {
            Effect::Event(ev) if ev.reason == "AnalysisRunFailed" => Some(ev.message.clone()),
            _ => None,
        })
        .expect("an AnalysisRunFailed event");
    assert!(
        ev.contains("measured [9000, 8800]") && ev.contains("condition min(result) < 9500"),
        "{ev}"
    );
}

// ---- readiness gate (spec.workloadRef, issue 19) ------------------------------------------

mod readiness {
    use super::*;
    use crate::resources::canary::{OnCanaryUnavailable, ReadinessSpec, WorkloadKind, WorkloadRef};

    fn deployment(name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: Some(WorkloadKind::Deployment),
            name: Some(name.into()),
            selector: None,
            from_subset: false,
        }
    }

    /// A spec whose canary side is the Deployment `reviews-v2`.
    fn gated(steps: Vec<CanaryStep>) -> CanarySpec {
        let mut s = spec(steps);
        s.workload_ref = Some(deployment("reviews-v2"));
        s
    }

    fn ready(canary: Option<i64>, stable: Option<i64>, at: i64) -> Input {
        Input::Readiness(ReadinessStatus {
            canary_ready: canary,
            stable_ready: stable,
            observed_at: t(at),
            message: canary.is_none().then(|| "read failed".to_string()),
            template_hash: None,
            images: Vec::new(),
        })
    }

    fn pause_reason(s: &Sim) -> Option<PauseReason> {
        s.st.pause.as_ref().map(|p| p.reason)
    }

    #[test]
    fn ready_for_weight_is_the_canarys_share_of_stable_rounded_up() {
        for (weight, max, stable, need) in [
            (10, 100, 10, 1),
            (30, 100, 10, 3),
            (25, 100, 10, 3),
            (50, 100, 0, 1),
            (100, 100, 7, 7),
            (5, 1000, 100, 1),
            (500, 1000, 9, 5),
            (0, 100, 10, 1),
            (i64::MAX, i64::MAX, i64::MAX, i64::MAX),
        ] {
            assert_eq!(
                ready_for_weight(weight, max, stable),
                need,
                "{weight}/{max} of {stable}"
            );
        }
    }

    #[test]
    fn a_canary_without_readiness_is_held_before_its_first_weight_then_resumes() {
        let mut s = Sim::new(gated(vec![w(10), pause(None)]));
        let fx = s.start();
        assert!(writes(&fx).is_empty(), "no weight before readiness: {fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        assert_eq!(pause_reason(&s), Some(PauseReason::CanaryNotReady));
        let ev = event(&fx, NOT_READY).expect("a CanaryNotReady event");
        assert!(ev.warning);
        assert!(ev.message.contains("not observed yet"), "{}", ev.message);
        assert_eq!(wakes(&fx), vec![t(600)], "woken at the default deadline");
        assert_eq!(next_wake(&s.st), Some(t(600)));
        // Pods not ready yet: still held, the message names the counts, no second event.
        s.now = t(30);
        let fx = s.feed(ready(Some(0), None, 30));
        assert!(writes(&fx).is_empty() && reasons(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        let msg = s.st.message.clone().unwrap_or_default();
        assert!(
            msg.contains("0 of 1 canary pod(s) needed are ready for canary weight 10"),
            "{msg}"
        );
        // The same again changes nothing.
        let before = s.st.clone();
        assert!(s.feed(ready(Some(0), None, 30)).is_empty());
        assert_eq!(s.st, before);
        // Ready: the weight goes out and the canary resumes by itself.
        s.now = t(90);
        let fx = s.feed(ready(Some(1), None, 90));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
        assert!(event(&fx, "RolloutResumed").is_some(), "{fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Progressing);
        assert_eq!(s.st.pause, None);
        s.ok();
        assert_eq!(s.st.current_step_index, 1);
    }

    #[test]
    fn unknown_readiness_is_not_ready() {
        let mut s = Sim::new(gated(vec![w(10), pause(Some(60)), w(20)]));
        s.feed(ready(Some(3), None, 0));
        s.start();
        s.ok();
        assert_eq!(s.st.applied, Some(DesiredRouting::weight(10)));
        // A read error: the next increase waits, the canary keeps its weight.
        s.feed(ready(None, None, 5));
        let fx = s.tick_at(60);
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.current_step_index, 2);
        assert_eq!(pause_reason(&s), Some(PauseReason::CanaryNotReady));
        assert!(
            s.st.message
                .as_deref()
                .is_some_and(|m| m.contains("unknown") && m.contains("read failed")),
            "{:?}",
            s.st.message
        );
        let fx = s.feed(ready(Some(3), None, 61));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
    }

    #[test]
    fn min_ready_for_weight_asks_for_the_weights_share_of_stable_pods() {
        let mut sp = gated(vec![w(10), w(30), w(50)]);
        sp.stable_workload_ref = Some(deployment("reviews-v1"));
        sp.readiness = Some(ReadinessSpec {
            min_ready: Some(1),
            min_ready_for_weight: true,
            ..ReadinessSpec::default()
        });
        let mut s = Sim::new(sp);
        s.feed(ready(Some(2), Some(10), 0));
        let fx = s.start();
        assert_eq!(
            writes(&fx),
            vec![DesiredRouting::weight(10)],
            "1 of 10 needed"
        );
        let fx = s.ok();
        assert!(writes(&fx).is_empty(), "30 % needs 3 of 10: {fx:?}");
        assert!(
            s.st.message
                .as_deref()
                .is_some_and(|m| m.contains("2 of 3") && m.contains("10 stable")),
            "{:?}",
            s.st.message
        );
        let fx = s.feed(ready(Some(3), Some(10), 20));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(30)]);
        let fx = s.ok();
        assert!(writes(&fx).is_empty(), "50 % needs 5: {fx:?}");
        // Stable readiness unknown: not ready either.
        let fx = s.feed(ready(Some(9), None, 30));
        assert!(writes(&fx).is_empty(), "{fx:?}");
        let fx = s.feed(ready(Some(5), Some(10), 40));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(50)]);
    }

    #[test]
    fn min_ready_is_an_absolute_floor() {
        let mut sp = gated(vec![w(10)]);
        sp.readiness = Some(ReadinessSpec {
            min_ready: Some(3),
            ..ReadinessSpec::default()
        });
        let mut s = Sim::new(sp);
        s.feed(ready(Some(2), None, 0));
        assert!(writes(&s.start()).is_empty());
        let fx = s.feed(ready(Some(3), None, 1));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    }

    #[test]
    fn the_progress_deadline_aborts_with_canary_not_ready() {
        let mut sp = gated(vec![w(10), w(50)]);
        sp.readiness = Some(ReadinessSpec {
            progress_deadline: Some("2m".into()),
            ..ReadinessSpec::default()
        });
        let mut s = Sim::new(sp);
        s.feed(ready(Some(1), None, 0));
        s.start();
        s.now = t(10);
        s.feed(ready(None, None, 10));
        let fx = s.ok();
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(
            wakes(&fx),
            vec![t(130)],
            "deadline from when the hold began"
        );
        // Restarted driver: Resumed, Spec, Tick keep the hold and its start.
        for input in [Input::Resumed, Input::Spec, Input::Tick] {
            s.now = t(60);
            let fx = s.feed(input);
            assert!(writes(&fx).is_empty() && reasons(&fx).is_empty(), "{fx:?}");
        }
        assert_eq!(s.st.pause.as_ref().map(|p| p.since), Some(t(10)));
        assert_eq!(next_wake(&s.st), Some(t(130)));
        let fx = s.tick_at(129);
        assert!(fx.is_empty(), "{fx:?}");
        let fx = s.tick_at(130);
        assert_eq!(s.st.phase, CanaryPhase::Aborted);
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
        assert!(event(&fx, NOT_READY).is_some() && event(&fx, "RolloutAborted").is_some());
        let abort = s.st.abort.clone().expect("abort");
        assert!(
            abort.reason.starts_with("CanaryNotReady:"),
            "{}",
            abort.reason
        );
        assert!(abort.reason.contains("2m"), "{}", abort.reason);
        // `not_ready` is what the runtime's `Aborted` condition reads its reason from
        // (`state::conditions`, tested there).
        assert!(abort.not_ready.is_some());
    }

    #[test]
    fn readiness_lost_under_weight_rolls_back() {
        let mut s = Sim::new(gated(vec![w(10), w(30), pause(None)]));
        s.feed(ready(Some(2), None, 0));
        s.start();
        s.ok();
        s.ok();
        assert_eq!(s.st.applied, Some(DesiredRouting::weight(30)));
        s.now = t(40);
        let fx = s.feed(ready(Some(1), None, 40));
        assert!(fx.is_empty(), "still one ready: {fx:?}");
        let fx = s.feed(ready(Some(0), None, 41));
        assert_eq!(s.st.phase, CanaryPhase::Aborted);
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)]);
        let abort = s.st.abort.clone().expect("abort");
        assert!(
            abort.reason.contains("weight 30") && abort.reason.starts_with("CanaryNotReady"),
            "{}",
            abort.reason
        );
        // A read error is not a loss: it only holds further increases.
        let mut s = Sim::new(gated(vec![w(10), pause(None)]));
        s.feed(ready(Some(2), None, 0));
        s.start();
        s.ok();
        let fx = s.feed(ready(None, None, 5));
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        assert_eq!(pause_reason(&s), Some(PauseReason::Step));
    }

    #[test]
    fn readiness_lost_with_hold_keeps_the_weight_and_resumes_when_ready() {
        let mut sp = gated(vec![w(10), w(30), w(60)]);
        sp.readiness = Some(ReadinessSpec {
            on_canary_unavailable: OnCanaryUnavailable::Hold,
            ..ReadinessSpec::default()
        });
        let mut s = Sim::new(sp);
        s.feed(ready(Some(2), None, 0));
        s.start();
        s.ok();
        // Weight 30 is in flight when the pods go: it is undone, 10 stays.
        assert_eq!(s.st.desired_weight, 30);
        let fx = s.feed(ready(Some(0), None, 5));
        assert_eq!(
            writes(&fx),
            vec![DesiredRouting::weight(10)],
            "the weight stays"
        );
        s.ok();
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        assert_eq!(pause_reason(&s), Some(PauseReason::CanaryNotReady));
        assert_eq!(
            s.st.pause.as_ref().and_then(|p| p.until),
            None,
            "no deadline"
        );
        assert!(event(&fx, NOT_READY).is_some());
        // A write confirmation or a tick does not move it on.
        assert!(writes(&s.tick_at(5000)).is_empty());
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        let fx = s.feed(ready(Some(1), None, 5001));
        assert!(event(&fx, "RolloutResumed").is_some(), "{fx:?}");
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(30)]);
    }

    #[test]
    fn header_and_mirror_routes_are_exposures_and_decreases_are_not_gated() {
        let mut sp = gated(vec![
            CanaryStep::SetHeaderRoute(SetHeaderRouteStep {
                name: "h".into(),
                matches: vec![HeaderMatchSpec {
                    header_name: "x-canary".into(),
                    header_value: StringMatchSpec {
                        exact: Some("1".into()),
                        ..StringMatchSpec::default()
                    },
                }],
            }),
            w(0),
        ]);
        sp.traffic_routing.managed_routes =
            vec![crate::resources::canary::ManagedRoute { name: "h".into() }];
        let mut s = Sim::new(sp);
        let fx = s.start();
        assert!(writes(&fx).is_empty(), "a header route waits too: {fx:?}");
        let fx = s.feed(ready(Some(1), None, 1));
        assert_eq!(writes(&fx).len(), 1);
        assert!(writes(&fx)[0].exposes_canary());
        s.ok();
        // setWeight 0 after the header route exposes nothing more: it goes out unready.
        s.feed(ready(Some(0), None, 2));
        assert_eq!(
            s.st.phase,
            CanaryPhase::Aborted,
            "lost under a header route"
        );
    }

    #[test]
    fn without_workload_ref_readiness_changes_nothing() {
        let mut s = Sim::new(spec(vec![w(10), w(30)]));
        s.feed(ready(Some(0), None, 0));
        let fx = s.start();
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
        s.ok();
        let fx = s.feed(ready(Some(0), None, 1));
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Progressing);
    }

    #[test]
    fn promotion_to_max_weight_is_gated_too() {
        let mut s = Sim::new(gated(vec![w(10)]));
        s.feed(ready(Some(1), None, 0));
        s.start();
        s.feed(ready(None, None, 1));
        let fx = s.ok();
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        let fx = s.feed(ready(Some(1), None, 2));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(100)]);
        s.ok();
        assert_eq!(s.st.phase, CanaryPhase::Promoted);
    }

    mod safety {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the order of readiness reports, confirmations and ticks, no write
            /// exposes the canary more than before while the last readiness seen was not
            /// ready; and losing every pod under weight ends the run at 0.
            #[test]
            fn no_exposure_without_ready_pods(
                weights in prop::collection::vec(0i64..=100, 1..6),
                inputs in prop::collection::vec((0u8..5, prop::option::of(0i64..3), 0i64..200), 1..60),
            ) {
                let mut s = Sim::new(gated(weights.into_iter().map(w).collect()));
                let mut last: Option<i64> = None;
                s.start();
                for (kind, count, secs) in inputs {
                    s.now += TimeDelta::seconds(secs);
                    let input = match kind {
                        0 | 1 => ready(count, None, 0),
                        2 => Input::Tick,
                        _ => match &s.st.routing_write {
                            Some(w) => Input::Routing(Ok((w.routing.clone(), vec![]))),
                            None => Input::Tick,
                        },
                    };
                    if let Input::Readiness(r) = &input {
                        last = r.canary_ready;
                    }
                    let before = s.st.routing_write.as_ref().map(|w| w.routing.clone())
                        .or_else(|| s.st.applied.clone())
                        .map_or(0, |r| r.canary_weight);
                    let prev = s.st.clone();
                    let fx = s.feed(input.clone());
                    let ctx = format!("input {input:?}\nprev {prev:?}\nnow {:?}\nfx {fx:?}", s.st);
                    for r in writes(&fx) {
                        if r.canary_weight > before {
                            prop_assert!(last.is_some_and(|n| n >= 1), "{}", ctx);
                        }
                    }
                    if matches!(input, Input::Readiness(_)) && last == Some(0) && before > 0
                        && matches!(prev.phase, CanaryPhase::Progressing | CanaryPhase::Paused | CanaryPhase::Degraded)
                    {
                        prop_assert_eq!(s.st.phase, CanaryPhase::Aborted, "{}", ctx);
                    }
                }
            }
        }
    }
}

// ---- revisions from the workload's pod template (issue 19) --------------------------------

/// The driver hands the machine the template's hash as `spec.revision`
/// (`canary::revision::resolve`); these feed it as the driver does: the observation first,
/// then the spec.
mod template {
    use super::*;
    use crate::resources::canary::{WorkloadKind, WorkloadRef};

    fn auto(steps: Vec<CanaryStep>, hash: &str) -> CanarySpec {
        let mut s = spec(steps);
        s.revision = Some(hash.into());
        s.workload_ref = Some(WorkloadRef {
            kind: Some(WorkloadKind::Deployment),
            name: Some("reviews-v2".into()),
            selector: None,
            from_subset: false,
        });
        s
    }

    fn seen(ready: Option<i64>, hash: &str, image: &str, at: i64) -> Input {
        Input::Readiness(ReadinessStatus {
            canary_ready: ready,
            stable_ready: None,
            observed_at: t(at),
            message: ready
                .is_none()
                .then(|| "generation not observed".to_string()),
            template_hash: Some(hash.into()),
            images: vec![image.into()],
        })
    }

    #[test]
    fn a_run_for_a_template_records_it_and_names_its_images() {
        let mut s = Sim::new(auto(vec![w(20), pause(None)], "aaaa000001"));
        s.feed(seen(Some(2), "aaaa000001", "reviews:2.1.0", 0));
        let fx = s.start();
        assert_eq!(s.st.template_hash.as_deref(), Some("aaaa000001"));
        assert_eq!(s.st.revision.as_deref(), Some("aaaa000001"));
        let ev = event(&fx, "RolloutUpdated").expect("started");
        assert_eq!(
            ev.message,
            "Rollout of revision \"aaaa000001\" (reviews:2.1.0) started"
        );
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(20)]);
        // An explicit revision never records a template (a later switch adopts one).
        let mut s = Sim::new(auto(vec![w(20)], "v2"));
        s.feed(seen(Some(2), "aaaa000001", "reviews:2.1.0", 0));
        let fx = s.start();
        assert_eq!(s.st.template_hash, None);
        assert_eq!(
            event(&fx, "RolloutUpdated").map(|e| e.message.as_str()),
            Some("Rollout of revision \"v2\" started")
        );
    }

    /// A template change at 30 %: the new template's pods are not ready, which is no loss
    /// (no rollback); the restarted run writes weight 0 first and holds step 0 until the new
    /// pods are ready.
    #[test]
    fn a_new_template_mid_run_restarts_from_step_0_at_weight_0_until_ready() {
        let mut s = Sim::new(auto(vec![w(10), w(30), pause(None)], "aaaa000001"));
        s.feed(seen(Some(2), "aaaa000001", "reviews:2.1.0", 0));
        s.start();
        s.ok();
        s.ok();
        assert_eq!(s.st.applied, Some(DesiredRouting::weight(30)));
        s.now = t(50);
        let fx = s.feed(seen(None, "bbbb000002", "reviews:2.2.0", 50));
        assert!(fx.is_empty(), "a new template is not a loss: {fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        // Even a count of 0 for the new template before the spec is looked at.
        let fx = s.feed(seen(Some(0), "bbbb000002", "reviews:2.2.0", 50));
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(s.st.abort, None);
        s.spec.revision = Some("bbbb000002".into());
        let fx = s.feed(Input::Spec);
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(0)], "{fx:?}");
        assert_eq!(s.st.current_step_index, 0);
        assert_eq!(s.st.template_hash.as_deref(), Some("bbbb000002"));
        assert_eq!(s.st.phase, CanaryPhase::Paused);
        assert_eq!(
            s.st.pause.as_ref().map(|p| p.reason),
            Some(PauseReason::CanaryNotReady)
        );
        assert!(
            event(&fx, "RolloutUpdated").is_some_and(|e| e.message.contains("reviews:2.2.0")),
            "{fx:?}"
        );
        s.ok();
        assert_eq!(s.st.applied, Some(DesiredRouting::weight(0)));
        // Ready 0 at weight 0 is no loss either; ready pods let step 0 write its weight.
        let fx = s.feed(seen(Some(0), "bbbb000002", "reviews:2.2.0", 51));
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.abort, None);
        let fx = s.feed(seen(Some(2), "bbbb000002", "reviews:2.2.0", 52));
        assert_eq!(writes(&fx), vec![DesiredRouting::weight(10)]);
    }

    /// While the observation is of another template than the run's, nothing is exposed
    /// more, whatever its count says.
    #[test]
    fn a_run_never_progresses_on_another_templates_pods() {
        let mut s = Sim::new(auto(vec![w(10), pause(Some(5)), w(30)], "aaaa000001"));
        s.feed(seen(Some(2), "aaaa000001", "reviews:2.1.0", 0));
        s.start();
        s.ok();
        s.feed(seen(Some(3), "bbbb000002", "reviews:2.2.0", 1));
        let fx = s.tick_at(10);
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert!(
            s.st.message
                .as_deref()
                .is_some_and(|m| m.contains("new pod template")),
            "{:?}",
            s.st.message
        );
    }

    #[test]
    fn an_adopted_template_is_recorded_without_a_run() {
        let mut s = Sim::new(auto(vec![w(50)], "v2"));
        s.feed(seen(Some(2), "aaaa000001", "reviews:2.1.0", 0));
        s.start();
        s.ok();
        s.ok();
        assert_eq!(s.st.phase, CanaryPhase::Promoted);
        let before = s.st.clone();
        // spec.revision removed: the driver keeps "v2" as the effective revision and
        // adopts the template.
        let fx = s.feed(Input::TemplateAdopted("aaaa000001".into()));
        assert!(writes(&fx).is_empty(), "{fx:?}");
        assert_eq!(s.st.template_hash.as_deref(), Some("aaaa000001"));
        let ev = event(&fx, "RevisionAdopted").expect("an event");
        assert!(ev.message.contains("reviews:2.1.0") && ev.message.contains("\"v2\""));
        assert_eq!(
            CanaryStatus {
                template_hash: None,
                ..s.st.clone()
            },
            before,
            "nothing else changes"
        );
        let fx = s.feed(Input::Spec);
        assert!(writes(&fx).is_empty(), "no run: {fx:?}");
        assert_eq!(s.st.phase, CanaryPhase::Promoted);
        assert!(
            s.feed(Input::TemplateAdopted("aaaa000001".into()))
                .is_empty()
        );
    }
}
