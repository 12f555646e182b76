//! Kubernetes conditions of Canary and ScheduledAnalysis statuses, derived (pure) from the rest
//! of the status on every status write, so `kubectl wait --for=condition=…`, kstatus, Flux and
//! Argo CD can read a canary without knowing its phases.
//!
//! # Status contract (shared with the CRD schema, printer columns and health checks)
//!
//! `status.observedGeneration` (int): the `metadata.generation` the status was written for
//! (cluster mode; file mode when the manifest sets `metadata.generation`).
//!
//! `status.conditions[]`, one entry per type, always all of them, in this order:
//! `{type, status: "True"|"False"|"Unknown", reason (CamelCase), message, lastTransitionTime,
//! observedGeneration}`. `lastTransitionTime` moves only when `status` flips.
//!
//! Canary (`status.phase` ∈ Pending, Progressing, Paused, Promoted, Aborted, RolledBack,
//! Degraded, Invalid):
//!
//! | type            | True when                                                          |
//! |-----------------|--------------------------------------------------------------------|
//! | Ready           | phase Promoted (kstatus: desired state reached)                    |
//! | Progressing     | phase Pending / Progressing / Degraded (Unknown while Paused)      |
//! | Reconciling     | kstatus: work is under way (Pending, Progressing, Degraded, timed step pause) |
//! | Stalled         | kstatus: needs a human (Aborted, RolledBack, Invalid; paused for Inconclusive, AnalysisError, Drift) |
//! | Paused          | phase Paused; reason = the pause reason (Step, Inconclusive, …)    |
//! | Promoted        | phase Promoted                                                     |
//! | Aborted         | phase Aborted or RolledBack; reason AnalysisRunFailed, AlarmTriggered, RolledBack or RolloutAborted; message names metric, value, condition or alarm |
//! | RollbackPending | a rollback write is not acknowledged yet (`rollback pending: <why>`) |
//! | Degraded        | phase Degraded or a routing write failing (message: the error)     |
//! | InvalidSpec     | phase Invalid; message = what `skycanary validate` prints          |
//! | AnalysisHealthy | False when a current analysis run ended Failed, Error or Inconclusive (message: run, metric, value, condition); Unknown before any run |
//!
//! ScheduledAnalysis: `Ready` (True unless the spec is invalid or the last run did not end
//! Successful), `Progressing` (a run is active), `InvalidSpec` (`status.invalidSpec` set),
//! `AnalysisHealthy` (the last finished run).

use chrono::{DateTime, Utc};

use crate::analysis::{Phase, RunState};
use crate::canary::machine::evidence;
use crate::canary::{CanaryPhase, CanaryStatus, PauseReason, StatusCondition};
use crate::schedule::model::ScheduledAnalysisStatus;

/// Messages longer than this are cut (the API allows 32 KiB; a condition is a summary).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

impl CondStatus {
    fn as_str(self) -> &'static str {
        match self {
            CondStatus::True => "True",
            CondStatus::False => "False",
            CondStatus::Unknown => "Unknown",
        }
    }

    fn of(b: bool) -> Self {
        if b {
            CondStatus::True
        } else {
            CondStatus::False
        }
    }
}

/// A condition before its transition time is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The condition type (`Ready`, `Progressing`, `InvalidSpec`, ...).
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: CondStatus,
    /// CamelCase reason.
    pub reason: String,
    /// The human-readable detail, shown by `kubectl describe`.
    pub message: String,
}

fn cond(
    type_: &'static str,
    status: CondStatus,
    reason: &str,
    message: impl Into<String>,
) -> Desired {
    Desired {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// Turns `desired` into conditions: `lastTransitionTime` is kept from `previous` when the
/// status of the same type did not change, else `now`.
pub fn merge(
    previous: &[StatusCondition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<StatusCondition> {
    desired
        .into_iter()
        .map(|d| {
            let status = d.status.as_str();
            let since = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map_or(now, |p| p.last_transition_time);
            StatusCondition {
                type_: d.type_.to_string(),
                status: status.to_string(),
                reason: d.reason,
                message: d.message.chars().take(MAX_MESSAGE_CHARS).collect(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

fn phase_name(p: CanaryPhase) -> &'static str {
    match p {
        CanaryPhase::Pending => "Pending",
        CanaryPhase::Progressing => "Progressing",
        CanaryPhase::Paused => "Paused",
        CanaryPhase::Promoted => "Promoted",
        CanaryPhase::Aborted => "Aborted",
        CanaryPhase::RolledBack => "RolledBack",
        CanaryPhase::Degraded => "Degraded",
        CanaryPhase::Invalid => "Invalid",
    }
}

fn pause_reason_name(r: PauseReason) -> &'static str {
    match r {
        PauseReason::Step => "Step",
        PauseReason::Inconclusive => "Inconclusive",
        PauseReason::AnalysisError => "AnalysisError",
        PauseReason::Manual => "Manual",
        PauseReason::Drift => "Drift",
        PauseReason::CanaryNotReady => "CanaryNotReady",
    }
}

/// Why a run ended badly, in one line: `run r: metric apdex Failed, value [9000], condition
/// min(result) >= 9500, threshold >= 9500`.
fn run_evidence(name: &str, run: &RunState) -> String {
    let ev = evidence(run);
    let threshold = ev.threshold_text();
    let mut parts = vec![format!("analysis run {name} {:?}", run.phase)];
    if let Some(m) = ev.metric {
        parts.push(format!("metric {m}"));
    }
    if let Some(v) = ev.value {
        parts.push(format!("value {v}"));
    }
    if let Some(c) = ev.condition {
        parts.push(format!("condition {c}"));
        if let Some(t) = threshold {
            parts.push(format!("threshold {t}"));
        }
    } else if let Some(m) = ev.message {
        parts.push(m);
    }
    parts.join(", ")
}

fn analysis_healthy(st: &CanaryStatus) -> Desired {
    const T: &str = "AnalysisHealthy";
    // The runs whose verdicts count now; else the latest run of the release.
    let current: Vec<_> = st
        .analysis_runs
        .iter()
        .filter(|r| {
            Some(&r.name) == st.step_analysis_run.as_ref()
                || Some(&r.name) == st.background_analysis_run.as_ref()
        })
        .collect();
    let runs = if current.is_empty() {
        st.analysis_runs.last().into_iter().collect()
    } else {
        current
    };
    let Some(worst) = runs.iter().max_by_key(|r| r.status.phase.severity()) else {
        return cond(
            T,
            CondStatus::Unknown,
            "NoAnalysisRun",
            "no analysis has run yet",
        );
    };
    match worst.status.phase {
        Phase::Failed | Phase::Error | Phase::Inconclusive => cond(
            T,
            CondStatus::False,
            &format!("AnalysisRun{:?}", worst.status.phase),
            run_evidence(&worst.name, &worst.status),
        ),
        phase => {
            let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
            cond(
                T,
                CondStatus::True,
                &format!("AnalysisRun{phase:?}"),
                format!("analysis run(s) {}: {phase:?}", names.join(", ")),
            )
        }
    }
}

/// The conditions a Canary status implies (see the module doc for the contract).
pub fn canary_desired(st: &CanaryStatus) -> Vec<Desired> {
    use CanaryPhase as P;
    let phase = st.phase;
    let name = phase_name(phase);
    let message = st.message.clone().unwrap_or_default();
    let pause = st.pause.as_ref().filter(|_| phase == P::Paused);
    let pause_reason = pause.map(|p| p.reason);
    let progress = progress(st);

    let ready = match phase {
        P::Promoted => cond("Ready", CondStatus::True, "Promoted", message.clone()),
        _ => cond("Ready", CondStatus::False, name, message.clone()),
    };
    let progressing = match phase {
        P::Pending => cond(
            "Progressing",
            CondStatus::True,
            "Pending",
            "waiting to start",
        ),
        P::Progressing => cond(
            "Progressing",
            CondStatus::True,
            "RolloutProgressing",
            progress,
        ),
        P::Degraded => cond(
            "Progressing",
            CondStatus::True,
            "TrafficRoutingRetrying",
            message.clone(),
        ),
        P::Paused => cond(
            "Progressing",
            CondStatus::Unknown,
            "RolloutPaused",
            progress,
        ),
        P::Promoted => cond(
            "Progressing",
            CondStatus::False,
            "RolloutCompleted",
            message.clone(),
        ),
        P::Aborted | P::RolledBack => cond(
            "Progressing",
            CondStatus::False,
            "RolloutAborted",
            message.clone(),
        ),
        P::Invalid => cond(
            "Progressing",
            CondStatus::False,
            "InvalidSpec",
            message.clone(),
        ),
    };
    let waits_for_human = matches!(
        pause_reason,
        Some(PauseReason::Inconclusive | PauseReason::AnalysisError | PauseReason::Drift)
    );
    let reconciling = matches!(phase, P::Pending | P::Progressing | P::Degraded)
        || pause_reason == Some(PauseReason::Step) && pause.is_some_and(|p| p.until.is_some());
    let reconciling = cond(
        "Reconciling",
        CondStatus::of(reconciling),
        name,
        if reconciling {
            progress_or(&message, st)
        } else {
            String::new()
        },
    );
    let stalled = matches!(phase, P::Aborted | P::RolledBack | P::Invalid) || waits_for_human;
    let stalled = cond(
        "Stalled",
        CondStatus::of(stalled),
        pause_reason
            .filter(|_| waits_for_human)
            .map_or(name, pause_reason_name),
        if stalled {
            message.clone()
        } else {
            String::new()
        },
    );
    let paused = match pause {
        Some(p) => cond(
            "Paused",
            CondStatus::True,
            pause_reason_name(p.reason),
            p.message.clone().unwrap_or_else(|| message.clone()),
        ),
        None => cond("Paused", CondStatus::False, "NotPaused", ""),
    };
    let promoted = cond(
        "Promoted",
        CondStatus::of(phase == P::Promoted),
        name,
        if phase == P::Promoted {
            message.clone()
        } else {
            String::new()
        },
    );
    let aborted = match (&st.abort, phase) {
        (Some(a), P::Aborted | P::RolledBack) => {
            let reason = if phase == P::RolledBack {
                "RolledBack"
            } else if a.not_ready.is_some() {
                "CanaryNotReady"
            } else if a.alarm.is_some() {
                "AlarmTriggered"
            } else if a.metric.is_some() {
                "AnalysisRunFailed"
            } else {
                "RolloutAborted"
            };
            let mut m = a.reason.clone();
            for (label, v) in [
                ("metric", &a.metric),
                ("value", &a.value),
                ("condition", &a.condition),
                ("alarm", &a.alarm),
            ] {
                if let Some(v) = v.as_ref().filter(|v| !m.contains(v.as_str())) {
                    m.push_str(&format!("; {label} {v}"));
                }
            }
            cond("Aborted", CondStatus::True, reason, m)
        }
        (None, P::Aborted | P::RolledBack) => cond(
            "Aborted",
            CondStatus::True,
            "RolloutAborted",
            message.clone(),
        ),
        _ => cond("Aborted", CondStatus::False, "NotAborted", ""),
    };
    let rollback = st
        .routing_write
        .as_ref()
        .filter(|w| !w.routing.exposes_canary())
        .filter(|_| matches!(phase, P::Aborted | P::RolledBack));
    let rollback_pending = match rollback {
        Some(w) => cond(
            "RollbackPending",
            CondStatus::True,
            "RollbackNotAcknowledged",
            format!(
                "rollback pending: {}",
                w.error.as_deref().unwrap_or("write not acknowledged yet")
            ),
        ),
        None => cond(
            "RollbackPending",
            CondStatus::False,
            "NoRollbackPending",
            "",
        ),
    };
    let failing_write = st.routing_write.as_ref().and_then(|w| w.error.clone());
    let degraded = match (phase, failing_write) {
        (P::Degraded, e) => cond(
            "Degraded",
            CondStatus::True,
            "TrafficRoutingFailed",
            e.unwrap_or_else(|| message.clone()),
        ),
        (_, Some(e)) => cond("Degraded", CondStatus::True, "TrafficRoutingFailed", e),
        _ => cond("Degraded", CondStatus::False, "TrafficRoutingHealthy", ""),
    };
    let invalid = if phase == P::Invalid {
        cond(
            "InvalidSpec",
            CondStatus::True,
            "InvalidSpec",
            message.clone(),
        )
    } else {
        cond("InvalidSpec", CondStatus::False, "SpecValid", "")
    };
    vec![
        ready,
        progressing,
        reconciling,
        stalled,
        paused,
        promoted,
        aborted,
        rollback_pending,
        degraded,
        invalid,
        analysis_healthy(st),
    ]
}

/// `step 3/7 at canary weight 30`, numbered as `skycanary status` numbers steps (1-based, the
/// driver's `status.step`); a status without it (written before that field) counts from 1 too.
fn progress(st: &CanaryStatus) -> String {
    let step = st
        .step
        .clone()
        .unwrap_or_else(|| (u64::from(st.current_step_index) + 1).to_string());
    format!("step {step} at canary weight {}", st.desired_weight)
}

fn progress_or(message: &str, st: &CanaryStatus) -> String {
    if message.is_empty() {
        progress(st)
    } else {
        message.to_string()
    }
}

/// Sets `status.conditions` and `status.observedGeneration` (when `generation` is known) for
/// a write at `now`. Called by every Canary status write.
pub fn observe_canary(st: &mut CanaryStatus, generation: Option<i64>, now: DateTime<Utc>) {
    if generation.is_some() {
        st.observed_generation = generation;
    }
    let desired = canary_desired(st);
    st.conditions = merge(&st.conditions, desired, st.observed_generation, now);
}

/// The conditions a ScheduledAnalysis status implies (see the module doc for the contract).
pub fn scheduled_desired(st: &ScheduledAnalysisStatus) -> Vec<Desired> {
    let last = st.history.first();
    let invalid = match &st.invalid_spec {
        Some(m) => cond("InvalidSpec", CondStatus::True, "InvalidSpec", m.clone()),
        None => cond("InvalidSpec", CondStatus::False, "SpecValid", ""),
    };
    let healthy = match last {
        None => cond(
            "AnalysisHealthy",
            CondStatus::Unknown,
            "NoAnalysisRun",
            "no run has finished yet",
        ),
        Some(r) => match r.phase() {
            Phase::Successful => cond(
                "AnalysisHealthy",
                CondStatus::True,
                "AnalysisRunSuccessful",
                format!("analysis run {}: Successful", r.name),
            ),
            p => cond(
                "AnalysisHealthy",
                CondStatus::False,
                &format!("AnalysisRun{p:?}"),
                run_evidence(&r.name, &r.status),
            ),
        },
    };
    let ready = if let Some(m) = &st.invalid_spec {
        cond("Ready", CondStatus::False, "InvalidSpec", m.clone())
    } else if healthy.status == CondStatus::False {
        cond(
            "Ready",
            CondStatus::False,
            &healthy.reason,
            healthy.message.clone(),
        )
    } else {
        cond(
            "Ready",
            CondStatus::True,
            "Scheduled",
            st.message.clone().unwrap_or_default(),
        )
    };
    let progressing = match st.active.first() {
        Some(r) => cond(
            "Progressing",
            CondStatus::True,
            "AnalysisRunning",
            format!("analysis run {} is running", r.name),
        ),
        None => cond("Progressing", CondStatus::False, "Idle", ""),
    };
    vec![ready, progressing, invalid, healthy]
}

/// Sets a ScheduledAnalysis' conditions and observedGeneration for a write at `now`.
pub fn observe_scheduled(
    st: &mut ScheduledAnalysisStatus,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    if generation.is_some() {
        st.observed_generation = generation;
    }
    let desired = scheduled_desired(st);
    st.conditions = merge(&st.conditions, desired, st.observed_generation, now);
}

/// Whether `conditions` hold `type_` with status `True`.
pub fn is_true(conditions: &[StatusCondition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// `metadata.generation` as the loaders keep it (cluster objects; file manifests that set it).
pub fn generation_of(meta: &crate::resources::template::ObjectMeta) -> Option<i64> {
    meta.server_fields
        .get("generation")
        .and_then(serde_json::Value::as_i64)
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod tests;
