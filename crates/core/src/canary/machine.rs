//! The Canary state machine (DESIGN §2, §3 "Canary reaction", §5, §6), pure: [`step`] takes
//! the spec, the persisted status, one [`Input`] and the time, and returns the next status and
//! the [`Effect`]s the driver performs. No I/O, no clock, no panics.
//!
//! Every decision is derived from the status, so the machine is idempotent: feeding the same
//! input twice emits nothing the second time, and a restarted driver that feeds `Spec` + `Tick`
//! to a persisted status resumes at the same step. Writes in flight are remembered in
//! `status.routing_write`, runs in `status.analysis_runs`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::analysis::{CompareOp, MeasurementEvidence, Phase, RunState, fmt_num};
use crate::resources::canary::{
    ArgValue, CanaryDoc, CanarySpec, CanaryStep, DEFAULT_MAX_WEIGHT, OnAnalysisError,
    OnCanaryUnavailable, OnSuccess, ReadinessSpec, TemplateRef,
};
use crate::resources::duration::{format_duration, parse_duration};
use crate::resources::template::{IntOrString, ObjectMeta};
use crate::traffic::spec::desired_after_steps;
use crate::traffic::{DesiredRouting, RouteKind, RouteWeights};

use super::model::*;

/// A failed routing write is asked for again after this long (DESIGN: never skip the step).
pub const ROUTING_RETRY: Duration = Duration::from_secs(10);
/// First retry of a failed rollback write; doubles up to [`ROLLBACK_RETRY_MAX`].
pub const ROLLBACK_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two tries of a rollback write.
pub const ROLLBACK_RETRY_MAX: Duration = Duration::from_secs(2);

/// The wait after the `failures`-th failed try of a rollback write (1-based).
pub fn rollback_retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    ROLLBACK_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(ROLLBACK_RETRY_MAX)
}

/// A write whose result never came (the driver restarted mid-write) is asked for again after
/// this long.
pub const ROUTING_RESULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Drift reports within one step that pause the canary (reason Drift) instead of fighting.
pub const DRIFT_PAUSE_THRESHOLD: u32 = 3;

/// Event, pause and abort reason of a canary whose workload is not ready (`spec.workloadRef`).
pub const NOT_READY: &str = "CanaryNotReady";

/// How long the readiness gate waits by default before the run aborts
/// (`readiness.progressDeadline`).
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// Ready canary pods a weight needs with `minReadyForWeight`: the canary's share of the
/// stable side's ready pods, rounded up (`ceil(weight / max × stable)`), at least 1.
pub fn ready_for_weight(weight: i64, max_weight: i64, stable_ready: i64) -> i64 {
    if weight <= 0 || max_weight <= 0 {
        return 1;
    }
    let num = i128::from(weight.min(max_weight)) * i128::from(stable_ready.max(0));
    let den = i128::from(max_weight);
    let need = (num + den - 1) / den;
    i64::try_from(need).unwrap_or(i64::MAX).max(1)
}

/// The message of a canary with `spec.workloadRef` that a driver without a readiness source
/// (`DriverContext::readiness` unset: neither `--kube` nor `--manifests`) does not start: its
/// gate would wait for readiness nobody reports.
pub fn workload_unwatched(w: &crate::resources::canary::WorkloadRef) -> String {
    let what = match (&w.kind, &w.name) {
        (Some(k), Some(n)) => format!("{} {n}", k.as_str()),
        _ => "the selected pods".to_string(),
    };
    format!(
        "not started: spec.workloadRef ({what}) needs a readiness source, and this daemon \
         watches no workloads (run it with --kube or --manifests); remove workloadRef to \
         release by spec.revision"
    )
}

/// Event reason of a refused user command (the Event beside [`Effect::CommandRejected`]).
pub const COMMAND_REJECTED: &str = "CommandRejected";

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// At start, the routes as they are now (read before anything is written). A saved status
    /// that says the canary is exposed while every route sends it nothing means a rollback (or
    /// a human) moved the traffic after the last save: the canary is aborted, never resumed
    /// forward from the older status.
    Observed(Vec<RouteWeights>),
    /// The routes carry a rollback marker naming this run ([`run_marker`]): a rollback was
    /// written for it, whether or not its status was saved (at start), or an exposing write
    /// found the marker and was refused. An active canary of that run is aborted, never
    /// resumed forward, even when no exposure of it was ever confirmed.
    RolledBackMarker(String),
    /// The driver (re)started on this status: a routing write the status still shows pending
    /// (a rollback saved before a crash, say) is asked for again at once, not after
    /// [`ROUTING_RESULT_TIMEOUT`] — the result of the earlier attempt died with the process.
    Resumed,
    /// Time passed (ends timed pauses, ends the post-promotion watch, retries writes).
    Tick,
    /// The spec was (re)read: a changed `revision` (or first sight) starts a new run from step 0.
    Spec,
    /// The driver holds back the [`Input::Spec`] that would start a run (see [`starts_run`])
    /// because something the run needs is not there yet (the OAP has not answered): the
    /// canary stays as it is (Pending when new) and its message says why.
    Waiting(String),
    /// An analysis run progressed; `name` is an `AnalysisRunStatus.name` the machine created.
    Analysis {
        /// Run name.
        name: String,
        /// Its state as the driver now knows it.
        status: RunState,
    },
    /// The routing effect finished: Ok(applied routing + weights read back) or Err(message).
    Routing(Result<(DesiredRouting, Vec<RouteWeights>), String>),
    /// Someone else changed our weights (the driver noticed); the routing will be re-applied.
    Drift {
        /// What differed.
        detail: String,
    },
    /// A matching alarm arrived (already matched against rollbackOn by the caller).
    Alarm {
        /// Where it came from (`SkyWalking`, `Alertmanager`), for the reason.
        source: String,
        /// Alarm rule name.
        rule: String,
        /// Entity name.
        entity: String,
        /// Alarm message.
        message: String,
    },
    /// A user command.
    Command(Command),
    /// Weights to stable now, on someone else's verdict (a scheduled analysis): an active
    /// canary is Aborted, a promoted one RolledBack. `at` is replaced by the machine's time.
    Rollback(AbortStatus),
    /// The readiness of the referenced workloads as observed now (`spec.workloadRef`): it
    /// gates every step that exposes the canary more, and losing every ready canary pod under
    /// weight rolls back (or holds).
    Readiness(ReadinessStatus),
    /// `spec.revision` was removed: the canary workload's template (this hash) is recorded as
    /// the one the status' revision stands for, without a run ([`super::revision::Resolution::Adopt`]).
    TemplateAdopted(String),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write this routing state to every VirtualService (idempotent); report `Input::Routing`.
    ApplyRouting(DesiredRouting),
    /// Put the original routes back (onSuccess: Restore).
    RestoreRoutes,
    /// Start an analysis run and report its progress with `Input::Analysis`. `name` is unique
    /// within the canary (it does not contain the canary's name).
    StartAnalysis {
        /// Run name.
        name: String,
        /// Step or background.
        kind: AnalysisRunKind,
        /// Templates, as referenced.
        templates: Vec<TemplateRef>,
        /// Args for the templates.
        args: Vec<ArgValue>,
    },
    /// Stop a run (reported as terminated, never Successful unless it earned it).
    TerminateAnalysis {
        /// Run name.
        name: String,
        /// Why the run is stopped: the run ends terminated with this reason.
        reason: String,
    },
    /// Record an event (Kubernetes Event with an Argo-compatible reason, log, metric).
    Event(CanaryEvent),
    /// Wake me at this time even if nothing else happens.
    WakeAt(DateTime<Utc>),
    /// The input was a user command refused in the current state, for this reason: the
    /// driver answers the command with it (an Event with reason [`COMMAND_REJECTED`] is
    /// emitted as well).
    CommandRejected(String),
}

/// One transition: the next status and the effects to perform.
pub fn step(
    spec: &CanarySpec,
    status: &CanaryStatus,
    input: &Input,
    now: DateTime<Utc>,
) -> (CanaryStatus, Vec<Effect>) {
    let mut m = Machine {
        spec,
        st: status.clone(),
        fx: Vec::new(),
        now,
        not_ready_since: None,
    };
    match input {
        Input::Observed(routes) => m.on_observed(routes),
        Input::RolledBackMarker(run) => m.on_rolled_back_marker(run),
        Input::Resumed => m.on_resumed(),
        Input::Tick => m.on_tick(),
        Input::Spec => m.on_spec(),
        Input::Waiting(why) => m.on_waiting(why),
        Input::Analysis { name, status } => m.on_analysis(name, status),
        Input::Routing(Ok((routing, weights))) => m.on_routing_ok(routing, weights),
        Input::Routing(Err(message)) => m.on_routing_err(message),
        Input::Drift { detail } => m.on_drift(detail),
        Input::Alarm {
            source,
            rule,
            entity,
            message,
        } => m.on_alarm(source, rule, entity, message),
        Input::Command(c) => m.on_command(c),
        Input::Rollback(why) => m.on_rollback(why),
        Input::Readiness(r) => m.on_readiness(r),
        Input::TemplateAdopted(hash) => m.on_template_adopted(hash),
    }
    (m.st, m.fx)
}

/// The run a status is on, as a rollback marker names it: its revision and when it started
/// (a retry or a new revision starts a new run, so an old marker never aborts it).
pub fn run_marker(status: &CanaryStatus) -> String {
    let started = status.started_at.map_or_else(
        || "-".to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    format!("{}@{started}", status.revision.as_deref().unwrap_or("-"))
}

/// A canary that never started a run is Pending *for the spec's revision*: every status saved
/// before its first run (waiting for its OAP, a reload's handover of an unstarted task) names
/// that revision, so no status of the canary ever carries another one (RELIABILITY invariant
/// 3). It cannot change what [`starts_run`] says: a never-started canary starts a run anyway.
pub fn stamp_unstarted_revision(spec: &CanarySpec, status: &mut CanaryStatus) {
    if status.started_at.is_none() && status.phase == CanaryPhase::Pending {
        status.revision.clone_from(&spec.revision);
    }
}

/// Writes `status.step` (`3/7`) from the index and the spec's step count before a save, so
/// the `kubectl get` STEP column, conditions and the CLI number steps the same way.
pub fn stamp_step_label(spec: &CanarySpec, status: &mut CanaryStatus) {
    status.step = Some(step_label(status.current_step_index, spec.steps.len()));
}

/// True when [`Input::Spec`] starts a new run from step 0 on `status`: the canary has never
/// started, or the spec's revision differs from the status'.
pub fn starts_run(spec: &CanarySpec, status: &CanaryStatus) -> bool {
    let first = status.started_at.is_none() && status.phase == CanaryPhase::Pending;
    first || status.revision != spec.revision
}

/// Why the run the spec asks for must not start yet (None: it may). After a promotion with
/// the roles unchanged, the canary destination still carries the promoted release: the new
/// run's first step would send most users back to the stable destination — the release
/// before last, whose pods may be gone. `routes` are read with the spec's roles. The driver
/// holds the run (the status keeps its phase and says why) until the spec swaps the roles or
/// the routes no longer favour the canary.
pub fn next_release_refusal(
    spec: &CanarySpec,
    status: &CanaryStatus,
    routes: &[RouteWeights],
) -> Option<String> {
    if status.phase != CanaryPhase::Promoted || !starts_run(spec, status) {
        return None;
    }
    let r = routes.iter().find(|r| r.canary > 0)?;
    let istio = &spec.traffic_routing.istio;
    let (canary, fix) = match (&istio.destination_rule, &istio.canary_service) {
        (Some(dr), _) => (
            format!("subset {}", dr.canary_subset_name),
            "swap stableSubsetName and canarySubsetName (the promoted subset becomes stable, \
             the new version's the canary)",
        ),
        (None, Some(svc)) => (
            format!("Service {svc}"),
            "swap stableService and canaryService (the promoted Service becomes stable, the \
             new version's the canary)",
        ),
        (None, None) => ("destination".to_string(), "swap the stable and canary"),
    };
    Some(format!(
        "not starting revision {:?}: {} route {} of VirtualService {} sends {} % to the canary \
         {canary}, where revision {:?} was promoted, and the first step would move users back \
         to the stable one; {fix}, or use onSuccess: Restore (docs/releases.md)",
        spec.revision.as_deref().unwrap_or(""),
        match r.kind {
            RouteKind::Http => "http",
            RouteKind::Tls => "tls",
            RouteKind::Tcp => "tcp",
        },
        r.route,
        r.virtual_service,
        r.canary,
        status.revision.as_deref().unwrap_or(""),
    ))
}

/// True while a matching alarm rolls the canary back: a run is under way (Progressing,
/// Paused, Degraded) or the post-promotion watch lasts.
pub fn alarm_armed(st: &CanaryStatus, now: DateTime<Utc>) -> bool {
    matches!(
        st.phase,
        CanaryPhase::Progressing | CanaryPhase::Paused | CanaryPhase::Degraded
    ) || (st.phase == CanaryPhase::Promoted && st.watch_until.is_some_and(|w| now < w))
}

/// The earliest time the machine has something to do on its own (timed pause end, write
/// retry or result timeout, watch end). A restarted driver sleeps until this, since the
/// `WakeAt` effects of before the restart are gone.
pub fn next_wake(status: &CanaryStatus) -> Option<DateTime<Utc>> {
    let pause = status
        .pause
        .as_ref()
        .filter(|p| {
            status.phase == CanaryPhase::Paused
                && matches!(p.reason, PauseReason::Step | PauseReason::CanaryNotReady)
        })
        .and_then(|p| p.until);
    let write = status.routing_write.as_ref().map(|w| {
        w.retry_at
            .unwrap_or_else(|| add(w.requested_at, ROUTING_RESULT_TIMEOUT))
    });
    let watch = status
        .watch_until
        .filter(|_| status.phase == CanaryPhase::Promoted)
        .filter(|_| status.background_analysis_run.is_some());
    [pause, write, watch].into_iter().flatten().min()
}

/// The routing the VirtualServices must hold now, against which a foreign change is drift:
/// the last confirmed write, while no write of ours is pending (a pending or failed one is
/// sent again anyway, and until it lands the routes are expected to differ). `None` before the
/// first write and after a promotion with `onSuccess: Restore` (the original routes are back;
/// nothing of ours to defend). A rolled-back canary's weight 0 is defended like any other.
pub fn defended_routing<'s>(
    spec: &CanarySpec,
    status: &'s CanaryStatus,
) -> Option<&'s DesiredRouting> {
    if status.phase == CanaryPhase::Pending || status.routing_write.is_some() {
        return None;
    }
    if status.phase == CanaryPhase::Promoted && spec.on_success == OnSuccess::Restore {
        return None;
    }
    status.applied.as_ref()
}

/// Why an analysis run failed, taken from its failing metric's last verdict.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    /// The metric that decided the run.
    pub metric: Option<String>,
    /// The measured value(s) of its last decisive measurement.
    pub value: Option<String>,
    /// The condition(s) that decided it (expressions only, `; ` between two), when the
    /// verdict came from conditions: read from the measurement's typed evidence.
    pub condition: Option<String>,
    /// The deciding condition's comparison, when it is one with a numeric threshold.
    pub threshold: Option<(CompareOp, f64)>,
    /// The measurement's full message (condition, values, outcome), or the metric's.
    pub message: Option<String>,
}

impl Evidence {
    /// `>= 9900`: the deciding condition's operator and threshold, for events and logs.
    pub fn threshold_text(&self) -> Option<String> {
        self.threshold
            .map(|(op, value)| format!("{op} {}", fmt_num(value)))
    }
}

/// Extracts the evidence of a run that ended Failed, Error or Inconclusive: the first
/// non-dry-run metric in the run's phase, and its last measurement in that phase.
pub fn evidence(run: &RunState) -> Evidence {
    let metric = run
        .metric_results
        .iter()
        .filter(|r| !r.dry_run)
        .find(|r| r.phase == run.phase)
        .or_else(|| {
            run.metric_results
                .iter()
                .filter(|r| !r.dry_run)
                .find(|r| r.phase.is_unsuccessful_end())
        });
    let Some(metric) = metric else {
        return Evidence {
            message: run.message.clone(),
            ..Evidence::default()
        };
    };
    let measurement = metric
        .measurements
        .iter()
        .rev()
        .find(|m| m.phase == metric.phase)
        .or_else(|| metric.measurements.last());
    let message = measurement
        .and_then(|m| m.message.clone())
        .or_else(|| metric.message.clone());
    let typed = measurement.and_then(|m| m.evidence.as_ref());
    Evidence {
        metric: Some(metric.name.clone()),
        value: measurement.and_then(|m| m.value.clone()),
        condition: typed.and_then(MeasurementEvidence::decided_expression),
        threshold: typed.and_then(MeasurementEvidence::decided_threshold),
        message,
    }
}

/// What an Event and the status say about a finished run: for a bad verdict the deciding
/// metric, its measured value(s), the condition that judged them, its threshold and the
/// judge's message; for a good one the metrics and their counts (never an empty message).
pub fn verdict_detail(run: &RunState) -> String {
    if run.phase.is_unsuccessful_end() {
        let ev = evidence(run);
        let mut parts = Vec::new();
        if let Some(m) = &ev.metric {
            parts.push(format!("metric {m}"));
        }
        if let Some(v) = &ev.value {
            parts.push(format!("measured {v}"));
        }
        if let Some(c) = &ev.condition {
            parts.push(format!("condition {c}"));
        }
        if let Some(t) = ev.threshold_text() {
            parts.push(format!("threshold {t}"));
        }
        let head = parts.join(", ");
        return match (head.is_empty(), ev.message.or_else(|| run.message.clone())) {
            (true, Some(m)) => m,
            (true, None) => "no metric reported a verdict".into(),
            (false, Some(m)) => format!("{head} ({m})"),
            (false, None) => head,
        };
    }
    if let Some(m) = run.message.as_deref().filter(|m| !m.trim().is_empty()) {
        return m.to_string();
    }
    let metrics: Vec<String> = run
        .metric_results
        .iter()
        .map(|m| format!("{} {} ({} measurement(s))", m.name, m.phase, m.count))
        .collect();
    if metrics.is_empty() {
        "no metrics".into()
    } else {
        metrics.join(", ")
    }
}

/// Adds a std duration, saturating instead of panicking.
fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|td| t.checked_add_signed(td))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A pause step's duration (int seconds or a duration string).
fn pause_duration(d: &IntOrString) -> Result<Duration, String> {
    match d {
        IntOrString::Int(s) => u64::try_from(*s)
            .map(Duration::from_secs)
            .map_err(|_| format!("negative pause duration {s}")),
        IntOrString::String(s) => parse_duration(s),
    }
}

/// Argo-style short description of a step for events.
fn describe(step: &CanaryStep) -> String {
    match step {
        CanaryStep::SetWeight(w) => format!("setWeight: {w}"),
        CanaryStep::Pause(p) => match &p.duration {
            None => "pause".into(),
            Some(IntOrString::Int(s)) => format!("pause: {s}s"),
            Some(IntOrString::String(s)) => format!("pause: {s}"),
        },
        CanaryStep::Analysis(a) => {
            let names: Vec<&str> = a
                .templates
                .iter()
                .map(|t| t.template_name.as_str())
                .collect();
            format!("analysis: {}", names.join(", "))
        }
        CanaryStep::SetHeaderRoute(h) => format!("setHeaderRoute: {}", h.name),
        CanaryStep::SetMirrorRoute(m) => format!("setMirrorRoute: {}", m.name),
    }
}

struct Machine<'a> {
    spec: &'a CanarySpec,
    st: CanaryStatus,
    fx: Vec<Effect>,
    now: DateTime<Utc>,
    /// Since when the readiness gate has held the canary, while [`Machine::advance`]
    /// re-checks it (taken from the `CanaryNotReady` pause it lifted to do so).
    not_ready_since: Option<DateTime<Utc>>,
}

impl Machine<'_> {
    // ---- helpers -------------------------------------------------------------------------

    fn event(&mut self, warning: bool, reason: &str, message: impl Into<String>) {
        self.fx.push(Effect::Event(CanaryEvent {
            warning,
            reason: reason.into(),
            message: message.into(),
            step: self.st.current_step_index,
        }));
    }

    fn reject(&mut self, message: impl Into<String>) {
        let message = message.into();
        self.fx.push(Effect::CommandRejected(message.clone()));
        self.event(true, COMMAND_REJECTED, message);
    }

    fn max_weight(&self) -> i64 {
        self.spec
            .traffic_routing
            .max_traffic_weight
            .unwrap_or(DEFAULT_MAX_WEIGHT)
    }

    /// The current step as `skycanary status` shows it (`3/7`), for Event messages.
    fn step_now(&self) -> String {
        step_label(self.st.current_step_index, self.spec.steps.len())
    }

    fn steps_len(&self) -> u32 {
        u32::try_from(self.spec.steps.len()).unwrap_or(u32::MAX)
    }

    /// Routing after steps `0..=i`; `desired_after_steps` reads only the steps of the doc.
    fn desired(&self, i: usize) -> DesiredRouting {
        let doc = CanaryDoc {
            api_version: String::new(),
            kind: String::new(),
            metadata: ObjectMeta::default(),
            spec: self.spec.clone(),
            status: None,
        };
        desired_after_steps(&doc, i)
    }

    fn in_watch(&self) -> bool {
        self.st.phase == CanaryPhase::Promoted && self.st.watch_until.is_some_and(|w| self.now < w)
    }

    /// A run is under way and its verdicts move the canary.
    fn is_active(&self) -> bool {
        matches!(
            self.st.phase,
            CanaryPhase::Progressing | CanaryPhase::Paused | CanaryPhase::Degraded
        )
    }

    /// `<revision>-step-<i>` / `<revision>-bg`, then `-2`, `-3`… when taken (retries, reruns).
    fn run_name(&self, kind: &AnalysisRunKind) -> String {
        let rev = self.st.revision.as_deref().unwrap_or("rev");
        let base = match kind {
            AnalysisRunKind::Step { index } => format!("{rev}-step-{index}"),
            AnalysisRunKind::Background => format!("{rev}-bg"),
        };
        let taken = |n: &str| self.st.analysis_runs.iter().any(|r| r.name == n);
        if !taken(&base) {
            return base;
        }
        (2u32..)
            .map(|n| format!("{base}-{n}"))
            .find(|n| !taken(n))
            .unwrap_or(base)
    }

    fn start_analysis(
        &mut self,
        kind: AnalysisRunKind,
        templates: &[TemplateRef],
        args: &[ArgValue],
    ) -> String {
        let name = self.run_name(&kind);
        self.st.analysis_runs.push(AnalysisRunStatus {
            name: name.clone(),
            kind: kind.clone(),
            templates: templates.iter().map(|t| t.template_name.clone()).collect(),
            status: RunState {
                phase: Phase::Pending,
                message: None,
                metric_results: Vec::new(),
                started_at: self.now,
                completed_at: None,
                terminated: false,
                terminate_reason: None,
            },
        });
        self.fx.push(Effect::StartAnalysis {
            name: name.clone(),
            kind,
            templates: templates.to_vec(),
            args: args.to_vec(),
        });
        name
    }

    /// Terminates a run once: marked in its stored state so no second TerminateAnalysis.
    fn terminate_run(&mut self, name: &str, reason: &str) {
        let Some(run) = self.st.analysis_runs.iter_mut().find(|r| r.name == name) else {
            return;
        };
        if run.status.phase.is_completed() || run.status.terminated {
            return;
        }
        run.status.terminated = true;
        run.status.terminate_reason = Some(reason.to_string());
        self.fx.push(Effect::TerminateAnalysis {
            name: name.to_string(),
            reason: reason.to_string(),
        });
    }

    fn terminate_all(&mut self, reason: &str) {
        let names: Vec<String> = self
            .st
            .analysis_runs
            .iter()
            .map(|r| r.name.clone())
            .collect();
        for name in names {
            self.terminate_run(&name, reason);
        }
        self.st.step_analysis_run = None;
        self.st.background_analysis_run = None;
    }

    fn run(&self, name: &str) -> Option<&AnalysisRunStatus> {
        self.st.analysis_runs.iter().find(|r| r.name == name)
    }

    fn emit_write(&mut self, target: DesiredRouting) {
        self.st.desired_weight = target.canary_weight;
        self.st.routing_write = Some(RoutingWrite {
            routing: target.clone(),
            requested_at: self.now,
            retry_at: None,
            error: None,
            failures: 0,
        });
        self.fx.push(Effect::ApplyRouting(target));
    }

    /// Asks for `target` unless that exact write is already in flight or awaiting its retry.
    fn request_routing(&mut self, target: DesiredRouting) {
        if self
            .st
            .routing_write
            .as_ref()
            .is_some_and(|w| w.routing == target)
        {
            return;
        }
        self.emit_write(target);
    }

    /// `target` is what the VirtualServices hold, and no write of ours can still change that
    /// (a write in flight, even of the same routing, is waited for).
    fn confirmed(&self, target: &DesiredRouting) -> bool {
        self.st.applied.as_ref() == Some(target) && self.st.routing_write.is_none()
    }

    /// What the canary wants written now (re-applied after drift).
    fn current_target(&self) -> Option<DesiredRouting> {
        self.st
            .routing_write
            .as_ref()
            .map(|w| w.routing.clone())
            .or_else(|| self.st.applied.clone())
    }

    fn set_pause(&mut self, reason: PauseReason, message: String) {
        self.st.pause = Some(PauseStatus {
            reason,
            since: self.now,
            until: None,
            message: Some(message.clone()),
        });
        self.st.phase = CanaryPhase::Paused;
        self.st.message = Some(message.clone());
        self.event(false, "RolloutPaused", message);
    }

    // ---- the walk over the steps ---------------------------------------------------------

    /// Executes steps from `current_step_index` until one has to wait. Idempotent: it only
    /// emits what the status says has not been asked for yet.
    fn advance(&mut self) {
        let mut budget = self.spec.steps.len() + 2;
        while budget > 0 {
            budget -= 1;
            let on_pause_step = matches!(
                self.spec.steps.get(self.st.current_step_index as usize),
                Some(CanaryStep::Pause(_))
            );
            let step_pause = self
                .st
                .pause
                .as_ref()
                .is_some_and(|p| p.reason == PauseReason::Step);
            let gate_pause = self
                .st
                .pause
                .as_ref()
                .filter(|p| p.reason == PauseReason::CanaryNotReady && p.until.is_some())
                .map(|p| p.since);
            match self.st.phase {
                CanaryPhase::Progressing => {}
                // The readiness gate held the canary: the step re-checks it (and holds again,
                // keeping the pause's start, or goes on).
                CanaryPhase::Paused if gate_pause.is_some() => {
                    self.not_ready_since = gate_pause;
                    self.st.pause = None;
                    self.st.phase = CanaryPhase::Progressing;
                    self.st.message = None;
                }
                // A pause step re-checks its timer; a stale step pause (spec edited) ends.
                CanaryPhase::Paused if step_pause => {
                    if !on_pause_step {
                        self.st.pause = None;
                        self.st.phase = CanaryPhase::Progressing;
                    }
                }
                _ => return,
            }
            let i = self.st.current_step_index as usize;
            self.ensure_background(i);
            let Some(step) = self.spec.steps.get(i).cloned() else {
                self.complete_run();
                return;
            };
            let done = match &step {
                CanaryStep::SetWeight(_)
                | CanaryStep::SetHeaderRoute(_)
                | CanaryStep::SetMirrorRoute(_) => self.routing_step(i),
                CanaryStep::Pause(p) => self.pause_step(p.duration.as_ref()),
                CanaryStep::Analysis(a) => self.analysis_step(i, &a.templates, &a.args),
            };
            if !done {
                return;
            }
            self.complete_step();
        }
    }

    fn routing_step(&mut self, i: usize) -> bool {
        let target = self.desired(i);
        if self.confirmed(&target) {
            self.st.desired_weight = target.canary_weight;
            return true;
        }
        if !self.gate(&target) {
            return false;
        }
        self.request_routing(target);
        false
    }

    // ---- the readiness gate (spec.workloadRef) -----------------------------------------

    /// True when `target` may be written: it exposes the canary no more than now, or the
    /// canary workload is ready enough for it. Otherwise the canary is held (Paused, reason
    /// CanaryNotReady), or aborted once the progress deadline has passed.
    fn gate(&mut self, target: &DesiredRouting) -> bool {
        if self.spec.workload_ref.is_none() || !self.exposes_more(target) {
            self.not_ready_since = None;
            return true;
        }
        match self.not_ready_for(target) {
            None => {
                if self.not_ready_since.take().is_some() {
                    let message = format!("Resumed: the canary is ready ({})", self.ready_counts());
                    self.st.message = None;
                    self.event(false, "RolloutResumed", message);
                }
                true
            }
            Some(why) => {
                self.hold_not_ready(why);
                false
            }
        }
    }

    /// `target` routes more to the canary than what is written or asked for now: a higher
    /// weight, or a header or mirror route it does not have yet.
    fn exposes_more(&self, target: &DesiredRouting) -> bool {
        let now = self
            .current_target()
            .unwrap_or_else(|| DesiredRouting::weight(0));
        exposes_more(target, &now)
    }

    /// The write in flight exposes the canary more than `held`.
    fn exposes_more_than(&self, held: &DesiredRouting) -> bool {
        self.st
            .routing_write
            .as_ref()
            .is_some_and(|w| exposes_more(&w.routing, held))
    }
}

/// `target` routes more to the canary than `now`: a higher weight, or a header or mirror route
/// `now` does not have.
fn exposes_more(target: &DesiredRouting, now: &DesiredRouting) -> bool {
    target.canary_weight > now.canary_weight
        || target
            .header_routes
            .iter()
            .any(|h| !now.header_routes.contains(h))
        || target
            .mirror_routes
            .iter()
            .any(|m| !now.mirror_routes.contains(m))
}

impl Machine<'_> {
    /// The last observation is of another pod template than the one this run stands for
    /// (runs that know theirs: no `spec.revision`).
    fn new_template(&self) -> bool {
        let observed = self
            .st
            .readiness
            .as_ref()
            .and_then(|r| r.template_hash.as_ref());
        matches!((observed, &self.st.template_hash), (Some(o), Some(t)) if o != t)
    }

    fn readiness_spec(&self) -> ReadinessSpec {
        self.spec.readiness.clone().unwrap_or_default()
    }

    fn min_ready(&self) -> i64 {
        self.readiness_spec().min_ready.unwrap_or(1).max(1)
    }

    fn progress_deadline(&self) -> Duration {
        self.readiness_spec()
            .progress_deadline
            .and_then(|d| parse_duration(&d).ok())
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE)
    }

    /// `3 canary / 10 stable pod(s) ready`, for messages.
    fn ready_counts(&self) -> String {
        let count = |n: Option<i64>| n.map_or_else(|| "unknown".to_string(), |n| n.to_string());
        match &self.st.readiness {
            None => "readiness not observed yet".into(),
            Some(r) => {
                let mut s = format!("{} canary pod(s) ready", count(r.canary_ready));
                if self.spec.stable_workload_ref.is_some() {
                    s.push_str(&format!(", {} stable", count(r.stable_ready)));
                }
                if let Some(m) = &r.message {
                    s.push_str(&format!(": {m}"));
                }
                s
            }
        }
    }

    /// Why the canary is not ready enough for `target`; `None` when it is. Unknown readiness
    /// (never observed, a read error) is not ready.
    fn not_ready_for(&self, target: &DesiredRouting) -> Option<String> {
        let rd = self.readiness_spec();
        let Some(obs) = &self.st.readiness else {
            return Some("the canary workload's readiness is not observed yet".into());
        };
        if self.new_template() {
            return Some(
                "the canary workload has a new pod template; the run restarts for it".into(),
            );
        }
        let Some(ready) = obs.canary_ready else {
            return Some(format!(
                "the canary workload's readiness is unknown ({})",
                self.ready_counts()
            ));
        };
        let mut need = self.min_ready();
        if rd.min_ready_for_weight && target.canary_weight > 0 {
            let Some(stable) = obs.stable_ready else {
                return Some(format!(
                    "the stable workload's readiness is unknown ({})",
                    self.ready_counts()
                ));
            };
            need = need.max(ready_for_weight(
                target.canary_weight,
                self.max_weight(),
                stable,
            ));
        }
        (ready < need).then(|| {
            format!(
                "{ready} of {need} canary pod(s) needed are ready for canary weight {} ({})",
                target.canary_weight,
                self.ready_counts()
            )
        })
    }

    /// Holds the canary before an exposure it is not ready for; past the progress deadline
    /// (counted from when the hold began) aborts with reason CanaryNotReady.
    fn hold_not_ready(&mut self, why: String) {
        let held = self.not_ready_since.take();
        let since = held.unwrap_or(self.now);
        let deadline = self.progress_deadline();
        let until = add(since, deadline);
        if self.now >= until {
            let reason = format!(
                "CanaryNotReady: the canary was not ready within the progress deadline of {}: \
                 {why}",
                format_duration(deadline)
            );
            self.event(true, NOT_READY, reason.clone());
            self.abort(AbortStatus {
                reason,
                not_ready: Some(self.ready_counts()),
                at: self.now,
                ..AbortStatus::default()
            });
            return;
        }
        let message = format!(
            "Paused at step {}: waiting for the canary to be ready: {why}",
            self.step_now()
        );
        self.st.pause = Some(PauseStatus {
            reason: PauseReason::CanaryNotReady,
            since,
            until: Some(until),
            message: Some(message.clone()),
        });
        self.st.phase = CanaryPhase::Paused;
        self.st.message = Some(message.clone());
        if held.is_none() {
            self.event(true, NOT_READY, message);
            self.fx.push(Effect::WakeAt(until));
        }
    }

    fn on_readiness(&mut self, r: &ReadinessStatus) {
        self.st.readiness = Some(r.clone());
        if self.spec.workload_ref.is_none() || !self.is_active() || self.new_template() {
            // A new template is not a loss: the run restarts for it (the driver feeds the
            // spec next), its weight back at 0 first.
            return;
        }
        let held = self
            .st
            .pause
            .as_ref()
            .filter(|_| self.st.phase == CanaryPhase::Paused)
            .filter(|p| p.reason == PauseReason::CanaryNotReady && p.until.is_none())
            .is_some();
        // What the canary carries once our writes land: a withdrawal in flight (a restarted
        // run's move to 0) is no exposure to lose.
        let exposed = self.current_target().is_some_and(|t| t.exposes_canary());
        if r.canary_ready == Some(0) && exposed && !held {
            let weight = self.current_target().map_or(0, |t| t.canary_weight);
            let what = format!(
                "every canary pod became unready while the canary carries traffic (weight \
                 {weight}; {})",
                self.ready_counts()
            );
            match self.readiness_spec().on_canary_unavailable {
                OnCanaryUnavailable::Rollback => {
                    let reason = format!("CanaryNotReady: {what}");
                    self.event(true, NOT_READY, reason.clone());
                    self.abort(AbortStatus {
                        reason,
                        not_ready: Some(self.ready_counts()),
                        at: self.now,
                        ..AbortStatus::default()
                    });
                }
                OnCanaryUnavailable::Hold => {
                    let holdable = match self.st.phase {
                        CanaryPhase::Progressing | CanaryPhase::Degraded => true,
                        CanaryPhase::Paused => self.st.pause.as_ref().is_some_and(|p| {
                            matches!(p.reason, PauseReason::Step | PauseReason::CanaryNotReady)
                        }),
                        _ => false,
                    };
                    if holdable {
                        // Keep the confirmed weight: an increase still in flight is undone.
                        let held = self
                            .st
                            .applied
                            .clone()
                            .unwrap_or_else(|| DesiredRouting::weight(0));
                        if self.exposes_more_than(&held) {
                            self.emit_write(held);
                        }
                        let message = format!("Paused (onCanaryUnavailable: Hold): {what}");
                        self.st.pause = Some(PauseStatus {
                            reason: PauseReason::CanaryNotReady,
                            since: self.now,
                            until: None,
                            message: Some(message.clone()),
                        });
                        self.st.phase = CanaryPhase::Paused;
                        self.st.message = Some(message.clone());
                        self.event(true, NOT_READY, message);
                    }
                }
            }
            return;
        }
        if held && r.canary_ready.is_some_and(|n| n >= self.min_ready()) {
            self.st.pause = None;
            self.st.phase = CanaryPhase::Progressing;
            self.st.message = None;
            let message = format!(
                "Resumed: the canary is ready again ({})",
                self.ready_counts()
            );
            self.event(false, "RolloutResumed", message);
        }
        self.advance();
    }

    fn pause_step(&mut self, duration: Option<&IntOrString>) -> bool {
        let since = self.st.step_started_at.unwrap_or(self.now);
        let at = self.step_now();
        let (until, message) = match duration.map(pause_duration) {
            None => (None, format!("Paused at step {at} until promoted")),
            Some(Ok(d)) => (
                Some(add(since, d)),
                format!("Paused at step {at} for {}", format_duration(d)),
            ),
            // Never continue on an ambiguous duration: wait for a human instead.
            Some(Err(e)) => (None, format!("Paused until promoted: {e}")),
        };
        if until.is_some_and(|u| self.now >= u) {
            return true;
        }
        let already = self
            .st
            .pause
            .as_ref()
            .is_some_and(|p| p.reason == PauseReason::Step);
        if !already {
            self.st.pause = Some(PauseStatus {
                reason: PauseReason::Step,
                since,
                until,
                message: Some(message.clone()),
            });
            self.st.phase = CanaryPhase::Paused;
            self.st.message = Some(message.clone());
            if let Some(u) = until {
                self.fx.push(Effect::WakeAt(u));
            }
            self.event(false, "RolloutPaused", message);
        }
        false
    }

    fn analysis_step(&mut self, i: usize, templates: &[TemplateRef], args: &[ArgValue]) -> bool {
        let current = self.st.step_analysis_run.clone();
        match current.as_deref().and_then(|n| self.run(n)) {
            Some(run) => run.status.phase == Phase::Successful,
            None => {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                let name = self.start_analysis(AnalysisRunKind::Step { index }, templates, args);
                self.st.step_analysis_run = Some(name);
                false
            }
        }
    }

    fn ensure_background(&mut self, i: usize) {
        let Some(bg) = &self.spec.analysis else {
            return;
        };
        let starting = bg.starting_step.unwrap_or(0) as usize;
        if self.st.background_analysis_run.is_some() || i < starting || i >= self.spec.steps.len() {
            return;
        }
        let name = self.start_analysis(AnalysisRunKind::Background, &bg.templates, &bg.args);
        self.st.background_analysis_run = Some(name);
    }

    fn complete_step(&mut self) {
        let i = self.st.current_step_index;
        if let Some(run) = self.st.step_analysis_run.take() {
            self.terminate_run(&run, "step completed");
        }
        let what = self
            .spec
            .steps
            .get(i as usize)
            .map(describe)
            .unwrap_or_default();
        let at = self.step_now();
        self.event(
            false,
            "RolloutStepCompleted",
            format!("Rollout step {at} completed ({what})"),
        );
        self.st.current_step_index = i.saturating_add(1);
        self.st.step_started_at = Some(self.now);
        self.st.step_drifts = 0;
        self.st.pause = None;
        if self.st.phase == CanaryPhase::Paused {
            self.st.phase = CanaryPhase::Progressing;
        }
    }

    /// Past the last step: the canary takes maxTrafficWeight, managed routes go; promoted
    /// only once that write is confirmed (never promote on missing evidence).
    fn complete_run(&mut self) {
        let target = DesiredRouting::weight(self.max_weight());
        if !self.confirmed(&target) {
            if self.gate(&target) {
                self.request_routing(target);
            }
            return;
        }
        self.st.phase = CanaryPhase::Promoted;
        self.st.promoted_at = Some(self.now);
        self.st.pause = None;
        self.st.desired_weight = target.canary_weight;
        self.st.current_step_index = self.steps_len();
        if let Some(run) = self.st.step_analysis_run.take() {
            self.terminate_run(&run, "promoted");
        }
        let watch = self
            .spec
            .post_promotion
            .as_ref()
            .and_then(|p| p.watch.as_deref())
            .and_then(|w| parse_duration(w).ok())
            .filter(|d| !d.is_zero());
        self.st.watch_until = watch.map(|d| add(self.now, d));
        if self.st.watch_until.is_none()
            && let Some(bg) = self.st.background_analysis_run.take()
        {
            self.terminate_run(&bg, "promoted");
        }
        if self.spec.on_success == OnSuccess::Restore {
            self.fx.push(Effect::RestoreRoutes);
        }
        let message = match watch {
            Some(d) => format!(
                "Rollout completed: canary at weight {}; watching for {}",
                target.canary_weight,
                format_duration(d)
            ),
            None => format!(
                "Rollout completed: canary at weight {}",
                target.canary_weight
            ),
        };
        self.st.message = Some(message.clone());
        self.event(false, "RolloutCompleted", message);
        if let Some(w) = self.st.watch_until {
            self.fx.push(Effect::WakeAt(w));
        }
    }

    /// Rolls back: one weight-0 write (managed routes removed), every run terminated.
    fn abort(&mut self, abort: AbortStatus) {
        if self.st.phase == CanaryPhase::Aborted {
            return;
        }
        self.terminate_all("rollout aborted");
        self.st.pause = None;
        self.emit_write(DesiredRouting::weight(0));
        self.st.phase = CanaryPhase::Aborted;
        self.st.message = Some(abort.reason.clone());
        let reason = abort.reason.clone();
        self.st.abort = Some(abort);
        self.event(true, "RolloutAborted", reason);
    }

    /// Rollback on a scheduled analysis' verdict: an active canary (or one in its watch) is
    /// aborted; a promoted one goes back to stable as RolledBack; one already at stable or
    /// not started changes nothing.
    fn on_rollback(&mut self, why: &AbortStatus) {
        let abort = AbortStatus {
            at: self.now,
            ..why.clone()
        };
        match self.st.phase {
            CanaryPhase::Aborted | CanaryPhase::RolledBack => {
                let message = format!(
                    "Rollback ignored: the canary is already {:?} ({})",
                    self.st.phase, abort.reason
                );
                self.event(false, "RollbackIgnored", message);
            }
            CanaryPhase::Pending => {
                self.reject(format!(
                    "cannot roll back: the canary has not started ({})",
                    abort.reason
                ));
            }
            CanaryPhase::Promoted => {
                self.terminate_all("rolled back");
                self.st.pause = None;
                self.st.watch_until = None;
                self.emit_write(DesiredRouting::weight(0));
                self.st.phase = CanaryPhase::RolledBack;
                self.st.message = Some(abort.reason.clone());
                let reason = abort.reason.clone();
                self.st.abort = Some(abort);
                self.event(true, "RolloutRolledBack", reason);
            }
            // Invalid never reaches the machine (a status is resumed first); were it to, going
            // back to stable is the safe reading.
            CanaryPhase::Progressing
            | CanaryPhase::Paused
            | CanaryPhase::Degraded
            | CanaryPhase::Invalid => self.abort(abort),
        }
    }

    /// Starts a new run from step 0 (new revision or retry).
    fn begin_run(&mut self) {
        self.st.phase = CanaryPhase::Progressing;
        self.st.current_step_index = 0;
        self.st.step_started_at = Some(self.now);
        self.st.started_at = Some(self.now);
        self.st.desired_weight = 0;
        self.st.pause = None;
        self.st.abort = None;
        self.st.promoted_at = None;
        self.st.watch_until = None;
        self.st.step_analysis_run = None;
        self.st.background_analysis_run = None;
        self.st.step_drifts = 0;
        self.st.drifts = 0;
    }

    // ---- inputs --------------------------------------------------------------------------

    fn on_spec(&mut self) {
        if !starts_run(self.spec, &self.st) {
            self.advance();
            return;
        }
        let rev = self.spec.revision.clone().unwrap_or_default();
        // A run replaced mid-way sends the canary nothing until the new one's first step
        // (Argo semantics): its pods are being replaced by the new version's, which must pass
        // the readiness gate before they take traffic.
        let exposed = self.is_active() && self.current_target().is_some_and(|t| t.exposes_canary());
        self.terminate_all(&format!("superseded by revision {rev:?}"));
        self.st.analysis_runs.clear();
        // A withdrawal still pending (a rollback that has not landed) is not dropped by the
        // new run: it is asked for again below, so the new revision never inherits traffic
        // the old one was judged unfit for. The run's first step may then replace it.
        let withdrawal = self
            .st
            .routing_write
            .take()
            .filter(|w| !w.routing.exposes_canary())
            .map(|w| w.routing);
        // A promotion ended the release: its routes are the next one's starting point, read
        // with the roles the spec now names (swapped stable/canary, or restored routes). What
        // it wrote says nothing under those roles, so it is neither defended against drift
        // nor taken as a step already done. (A run replaced mid-way keeps its canary
        // destination, so the weight it holds is still the truth; an abort's 0 is too.)
        if self.st.phase == CanaryPhase::Promoted {
            self.st.applied = None;
        }
        self.st.revision = self.spec.revision.clone();
        self.begin_run();
        // The run stands for the observed pod template when its revision is that template's
        // hash (no spec.revision): a different template later starts the next run.
        let template = self
            .st
            .readiness
            .as_ref()
            .filter(|r| r.template_hash.is_some() && r.template_hash == self.spec.revision);
        let images = template.and_then(|r| super::revision::images_text(&r.images));
        self.st.template_hash = template.and_then(|r| r.template_hash.clone());
        let message = match images {
            Some(images) => format!("Rollout of revision {rev:?} ({images}) started"),
            None => format!("Rollout of revision {rev:?} started"),
        };
        self.st.message = Some(message.clone());
        self.event(false, "RolloutUpdated", message);
        match withdrawal {
            Some(routing) => self.emit_write(routing),
            None if exposed => self.emit_write(DesiredRouting::weight(0)),
            None => {}
        }
        self.advance();
    }

    fn on_template_adopted(&mut self, hash: &str) {
        if self.st.template_hash.as_deref() == Some(hash) {
            return;
        }
        self.st.template_hash = Some(hash.to_string());
        let images = self
            .st
            .readiness
            .as_ref()
            .and_then(|r| super::revision::images_text(&r.images))
            .map_or_else(String::new, |i| format!(" ({i})"));
        let message = format!(
            "spec.revision was removed: pod template {hash}{images} of the canary workload is \
             taken as revision {:?} without a new run; its next template change starts one",
            self.st.revision.as_deref().unwrap_or("")
        );
        self.event(false, "RevisionAdopted", message);
    }

    fn on_waiting(&mut self, why: &str) {
        // Only a run that has not started yet waits; a running one keeps its own message.
        if starts_run(self.spec, &self.st) {
            self.st.message = Some(why.to_string());
        }
    }

    fn on_observed(&mut self, routes: &[RouteWeights]) {
        // `applied` is the last write confirmed (read back). A write still pending does not
        // matter: only a rollback writes 0 after a weight above 0, and the confirmation of the
        // pending write may be what the outage lost (it landed, then the rollback did).
        //
        // A write that exposes the canary and was in flight when the status was saved (asked
        // for, no result: `retryAt` unset) may have landed too, with its confirmation and the
        // rollback that followed lost (a status outage, then a crash). Over routes at 0 that
        // cannot be told from a write that never went out, so it is not sent again: sending it
        // would expose a canary that may have been rolled back (found by the chaos test). A
        // write that failed and waits for its retry (`retryAt` set) never landed; it resumes.
        let saved = self.st.applied.as_ref().map_or(0, |a| a.canary_weight);
        let in_flight = self
            .st
            .routing_write
            .as_ref()
            .filter(|w| w.retry_at.is_none() && w.routing.exposes_canary())
            .map(|w| w.routing.canary_weight);
        let withdrawn = self.is_active()
            && (saved > 0 || in_flight.is_some())
            && !routes.is_empty()
            && routes.iter().all(|r| r.canary == 0);
        if !withdrawn {
            return;
        }
        let reason = match in_flight {
            Some(w) if saved == 0 => format!(
                "the routes send 0 % to the canary while the saved status has a write of {w} % \
                 in flight: it may have landed and been rolled back since (a rollback whose \
                 status was not saved); not resuming forward"
            ),
            _ => format!(
                "the routes send 0 % to the canary while the saved status says {saved} %: a \
                 rollback whose status was not saved, or a manual change; not resuming forward"
            ),
        };
        self.abort(AbortStatus {
            not_ready: None,
            reason,
            metric: None,
            value: None,
            condition: None,
            alarm: None,
            at: self.now,
        });
    }

    fn on_rolled_back_marker(&mut self, run: &str) {
        if !self.is_active() || run_marker(&self.st) != run {
            return;
        }
        self.abort(AbortStatus {
            not_ready: None,
            reason: format!(
                "the routes carry a rollback marker for this run ({run}): a rollback whose \
                 status was not saved; not resuming forward"
            ),
            metric: None,
            value: None,
            condition: None,
            alarm: None,
            at: self.now,
        });
    }

    fn on_resumed(&mut self) {
        if let Some(w) = self.st.routing_write.as_mut() {
            w.retry_at = None;
            w.requested_at = self.now;
            let routing = w.routing.clone();
            self.fx.push(Effect::ApplyRouting(routing));
        }
    }

    fn on_tick(&mut self) {
        if self.st.phase == CanaryPhase::Pending {
            return;
        }
        if self.st.phase == CanaryPhase::Promoted
            && self.st.watch_until.is_some_and(|w| self.now >= w)
            && let Some(bg) = self.st.background_analysis_run.take()
        {
            self.terminate_run(&bg, "post-promotion watch ended");
            self.event(
                false,
                "PostPromotionWatchEnded",
                "Post-promotion watch ended; background analysis stopped",
            );
        }
        if let Some(w) = self.st.routing_write.as_mut() {
            let due = match w.retry_at {
                Some(t) => self.now >= t,
                None => self.now >= add(w.requested_at, ROUTING_RESULT_TIMEOUT),
            };
            if due {
                w.retry_at = None;
                w.requested_at = self.now;
                let routing = w.routing.clone();
                self.fx.push(Effect::ApplyRouting(routing));
            }
        }
        self.advance();
    }

    fn on_routing_ok(&mut self, routing: &DesiredRouting, weights: &[RouteWeights]) {
        let from = self.st.applied.as_ref().map_or(0, |a| a.canary_weight);
        let matched = self
            .st
            .routing_write
            .as_ref()
            .is_some_and(|w| &w.routing == routing);
        if matched {
            self.st.routing_write = None;
        }
        self.st.weights = weights.to_vec();
        // A new routing, or ours written back (after drift, a failure or a restart): traffic
        // follows it from about now. Confirmed now, so no bucket that began earlier is
        // taken as evidence for it.
        if matched || self.st.applied.as_ref() != Some(routing) {
            self.st.routing_changed_at = Some(self.now);
        }
        self.st.applied = Some(routing.clone());
        if from != routing.canary_weight {
            self.event(
                false,
                "TrafficWeightUpdated",
                format!(
                    "Traffic weight updated from {from} to {}",
                    routing.canary_weight
                ),
            );
        }
        if matched && self.st.phase == CanaryPhase::Degraded {
            self.st.phase = CanaryPhase::Progressing;
            self.st.message = None;
        }
        if matched
            && matches!(
                self.st.phase,
                CanaryPhase::Aborted | CanaryPhase::RolledBack
            )
            && let Some(abort) = &self.st.abort
        {
            // The rollback landed: the message says why again, not that it is pending.
            self.st.message = Some(abort.reason.clone());
        }
        self.advance();
    }

    fn on_routing_err(&mut self, message: &str) {
        let rolling_back = matches!(
            self.st.phase,
            CanaryPhase::Aborted | CanaryPhase::RolledBack
        );
        let Some(w) = self.st.routing_write.as_mut() else {
            // Nothing of ours in flight (e.g. RestoreRoutes failed): report, change nothing.
            self.event(true, "TrafficRoutingError", message.to_string());
            return;
        };
        if w.retry_at.is_some() {
            return; // already failed; the retry is scheduled
        }
        w.failures = w.failures.saturating_add(1);
        let failures = w.failures;
        // A rollback that did not land leaves users on a canary judged bad: it is retried
        // within seconds, not at the pace of a forward step.
        let delay = if rolling_back {
            rollback_retry_delay(failures)
        } else {
            ROUTING_RETRY
        };
        let retry_at = add(self.now, delay);
        w.retry_at = Some(retry_at);
        w.error = Some(message.to_string());
        self.fx.push(Effect::WakeAt(retry_at));
        self.event(
            true,
            "TrafficRoutingError",
            format!(
                "Traffic routing failed (attempt {failures}), retrying in {}: {message}",
                format_duration(delay)
            ),
        );
        if self.st.phase == CanaryPhase::Progressing {
            self.st.phase = CanaryPhase::Degraded;
        }
        self.st.message = Some(if rolling_back {
            format!("rollback pending: {message}")
        } else {
            format!("Traffic routing failed: {message}")
        });
    }

    fn on_drift(&mut self, detail: &str) {
        if self.st.phase == CanaryPhase::Pending {
            return;
        }
        self.st.drifts = self.st.drifts.saturating_add(1);
        self.event(
            true,
            "TrafficDrift",
            format!("Weights changed by someone else: {detail}"),
        );
        let in_run = self.is_active();
        if in_run {
            self.st.step_drifts = self.st.step_drifts.saturating_add(1);
            let drift_paused = self
                .st
                .pause
                .as_ref()
                .is_some_and(|p| p.reason == PauseReason::Drift);
            if drift_paused {
                return; // not fighting any more; a human decides
            }
            if self.st.step_drifts >= DRIFT_PAUSE_THRESHOLD {
                let n = self.st.step_drifts;
                self.set_pause(
                    PauseReason::Drift,
                    format!("Paused: weights were changed by someone else {n} times in this step ({detail})"),
                );
                return;
            }
        }
        if self.st.phase == CanaryPhase::Promoted && self.spec.on_success == OnSuccess::Restore {
            return; // the original routes are back; nothing of ours to defend
        }
        if let Some(target) = self.current_target() {
            self.emit_write(target);
        }
    }

    fn on_alarm(&mut self, source: &str, rule: &str, entity: &str, message: &str) {
        let armed = alarm_armed(&self.st, self.now);
        if matches!(
            self.st.phase,
            CanaryPhase::Aborted | CanaryPhase::RolledBack
        ) {
            return;
        }
        if !armed {
            self.event(
                false,
                "AlarmIgnored",
                format!(
                    "Alarm {rule} on {entity} ignored: the canary is {:?}",
                    self.st.phase
                ),
            );
            return;
        }
        self.abort(AbortStatus {
            not_ready: None,
            reason: format!("{source} alarm {rule} on {entity}: {message}"),
            metric: None,
            value: None,
            condition: None,
            alarm: Some(format!("{rule} ({entity})")),
            at: self.now,
        });
    }

    fn on_analysis(&mut self, name: &str, reported: &RunState) {
        let Some(run) = self.st.analysis_runs.iter_mut().find(|r| r.name == name) else {
            return; // not ours, or of a previous revision
        };
        if run.status.phase.is_completed() {
            return; // a verdict is final; late or repeated reports change nothing
        }
        let mut state = reported.clone();
        state.terminated |= run.status.terminated;
        if state.terminate_reason.is_none() {
            state.terminate_reason = run.status.terminate_reason.clone();
        }
        run.status = state;
        let is_step = self.st.step_analysis_run.as_deref() == Some(name);
        let is_bg = self.st.background_analysis_run.as_deref() == Some(name);
        let phase = reported.phase;
        if !phase.is_completed() || !(is_step || is_bg) {
            return;
        }
        let label = if is_step { "Step-based" } else { "Background" };
        let summary = format!(
            "{label} analysis run {name} {phase}: {}",
            verdict_detail(reported)
        );
        let (warning, reason) = match phase {
            Phase::Failed => (true, "AnalysisRunFailed"),
            Phase::Error => (true, "AnalysisRunError"),
            Phase::Inconclusive => (true, "AnalysisRunInconclusive"),
            _ => (false, "AnalysisRunSuccessful"),
        };
        self.event(warning, reason, summary.clone());
        // Verdicts count during a run, and for the background run during the watch.
        let counts = self.is_active() || (is_bg && self.in_watch());
        if !counts {
            return;
        }
        let hold = self.spec.on_analysis_error == OnAnalysisError::Hold;
        match phase {
            Phase::Failed => self.abort_on(reported, summary),
            Phase::Error if !hold => self.abort_on(reported, summary),
            Phase::Error | Phase::Inconclusive if self.is_active() => {
                let reason = if phase == Phase::Error {
                    PauseReason::AnalysisError
                } else {
                    PauseReason::Inconclusive
                };
                self.set_pause(reason, summary);
            }
            _ => {}
        }
        self.advance();
    }

    fn abort_on(&mut self, run: &RunState, summary: String) {
        let ev = evidence(run);
        self.abort(AbortStatus {
            not_ready: None,
            reason: summary,
            metric: ev.metric,
            value: ev.value,
            condition: ev.condition,
            alarm: None,
            at: self.now,
        });
    }

    fn on_command(&mut self, c: &Command) {
        match c {
            Command::Promote { full } => self.promote(*full),
            Command::Abort { reason } => {
                if !(self.is_active() || self.in_watch()) {
                    let why = format!("cannot abort: the canary is {:?}", self.st.phase);
                    self.reject(why);
                    return;
                }
                let reason = if reason.trim().is_empty() {
                    "Rollout aborted by user".to_string()
                } else {
                    format!("Rollout aborted by user: {reason}")
                };
                self.abort(AbortStatus {
                    reason,
                    at: self.now,
                    ..AbortStatus::default()
                });
            }
            Command::Retry => {
                if !matches!(
                    self.st.phase,
                    CanaryPhase::Aborted | CanaryPhase::RolledBack
                ) {
                    let why = format!(
                        "cannot retry: the canary is {:?} (retry restarts an aborted canary)",
                        self.st.phase
                    );
                    self.reject(why);
                    return;
                }
                self.begin_run();
                let message = "Rollout retried from step 1 with new analysis runs".to_string();
                self.st.message = Some(message.clone());
                self.event(false, "RolloutRetried", message);
                self.advance();
            }
            Command::Pause => {
                // A timed pause step may be held too; its timer still counts from the step's start.
                let step_pause = self.st.phase == CanaryPhase::Paused
                    && self
                        .st
                        .pause
                        .as_ref()
                        .is_some_and(|p| p.reason == PauseReason::Step);
                if !step_pause
                    && !matches!(
                        self.st.phase,
                        CanaryPhase::Progressing | CanaryPhase::Degraded
                    )
                {
                    let why = format!("cannot pause: the canary is {:?}", self.st.phase);
                    self.reject(why);
                    return;
                }
                self.set_pause(PauseReason::Manual, "Paused by user".into());
            }
            Command::Resume => {
                let Some(pause) = self
                    .st
                    .pause
                    .clone()
                    .filter(|_| self.st.phase == CanaryPhase::Paused)
                else {
                    let why = format!("cannot resume: the canary is {:?}", self.st.phase);
                    self.reject(why);
                    return;
                };
                self.unpause(false);
                self.event(
                    false,
                    "RolloutResumed",
                    format!("Resumed by user (was paused: {:?})", pause.reason),
                );
                if pause.reason == PauseReason::Step {
                    self.complete_step();
                }
                self.advance();
            }
        }
    }

    /// Ends a pause. A step run that ended Inconclusive counts as passed (Argo's promote);
    /// one that ended in Error is run again unless `pass_errors`; a background run that ended
    /// Inconclusive or Error is started again so the canary stays protected.
    fn unpause(&mut self, pass_errors: bool) {
        let reason = self.st.pause.take().map(|p| p.reason);
        if self.st.phase == CanaryPhase::Paused {
            self.st.phase = CanaryPhase::Progressing;
        }
        self.st.message = None;
        let step_phase = self
            .st
            .step_analysis_run
            .as_deref()
            .and_then(|n| self.run(n))
            .map(|r| r.status.phase);
        match step_phase {
            Some(Phase::Inconclusive) => self.complete_step(),
            Some(Phase::Error) if pass_errors => self.complete_step(),
            Some(Phase::Error) => self.st.step_analysis_run = None,
            _ => {}
        }
        let bg_phase = self
            .st
            .background_analysis_run
            .as_deref()
            .and_then(|n| self.run(n))
            .map(|r| r.status.phase);
        if matches!(bg_phase, Some(Phase::Inconclusive | Phase::Error)) {
            self.st.background_analysis_run = None;
        }
        if reason == Some(PauseReason::Drift) {
            self.st.step_drifts = 0;
            if let Some(target) = self.current_target() {
                self.emit_write(target);
            }
        }
    }

    /// Promote: finish the current step now (a running step analysis is terminated, a pause
    /// ends) or, with `full`, skip to completion. A routing step is never skipped: it
    /// completes as soon as its write is confirmed.
    fn promote(&mut self, full: bool) {
        if !self.is_active() {
            let why = format!("cannot promote: the canary is {:?}", self.st.phase);
            self.reject(why);
            return;
        }
        let before = self.st.current_step_index;
        // An Inconclusive/Error step analysis counts as passed (Argo's promote).
        self.unpause(true);
        if full {
            if let Some(run) = self.st.step_analysis_run.take() {
                self.terminate_run(&run, "promoted (full)");
            }
            self.st.current_step_index = self.steps_len();
            self.st.step_started_at = Some(self.now);
            self.event(
                false,
                "RolloutPromoted",
                "Promoted by user: skipping all remaining steps",
            );
            self.advance();
            return;
        }
        let i = self.st.current_step_index;
        let total = self.spec.steps.len();
        let message = if i != before {
            format!(
                "Promoted by user: step {} passed",
                step_label(before, total)
            )
        } else {
            match self.spec.steps.get(i as usize) {
                Some(CanaryStep::Analysis(_) | CanaryStep::Pause(_)) => {
                    if let Some(run) = self.st.step_analysis_run.take() {
                        self.terminate_run(&run, "promoted");
                    }
                    self.complete_step();
                    format!("Promoted by user: step {} skipped", step_label(i, total))
                }
                Some(_) => format!(
                    "Promoted by user: step {} completes when its routing is applied",
                    step_label(i, total)
                ),
                None => "Promoted by user".to_string(),
            }
        };
        self.event(false, "RolloutPromoted", message);
        self.advance();
    }
}

#[cfg(test)]
mod tests;
