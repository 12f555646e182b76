//! Notifications of Canary and ScheduledAnalysis lifecycle events to webhooks and Slack.
//!
//! The pure part ([`canary_transitions`], [`scheduled_run_finished`], [`invalid_spec`]) says
//! which status change produces which [`Notification`], each with a stable `id` (the
//! idempotency key: object, run and transition) so a receiver can drop a retried delivery it
//! already has. [`payload`] turns one into a signed webhook body or a Slack message;
//! [`config`] reads the daemon's sinks; [`sender`] delivers in the background: the canary
//! task only enqueues, so a slow or dead receiver delays no rollback.

pub mod config;
pub mod payload;
pub mod sender;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analysis::{MeasurementEvidence, Phase, RunState};
use crate::canary::{CanaryPhase, CanaryStatus, PauseReason};
use crate::schedule::model::ScheduledRun;

pub use crate::resources::notifications::{NotifyEvent, Subscription};
pub use config::NotifyConfig;
pub use sender::{Notifier, NotifyMetrics};

/// The payload schema; a change that removes or retypes a field gets a new version.
pub const SCHEMA: &str = "skycanary.io/notification/v1";

/// Longest message carried (longer ones are cut): status messages can hold a whole refusal.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// One lifecycle notification: the webhook payload (`schema` first), and what a Slack message
/// is drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// [`SCHEMA`].
    pub schema: String,
    /// Stable idempotency key: `<kind>/<namespace>/<name>/<run>/<event>[/<detail>]`; the same
    /// transition always has the same id (retries, and a later re-send, carry it).
    pub id: String,
    /// What happened.
    pub event: NotifyEvent,
    /// `Canary` or `ScheduledAnalysis`.
    pub kind: String,
    /// The object's namespace, so a receiver can route per team.
    pub namespace: String,
    /// The object's name (Canary or ScheduledAnalysis).
    pub name: String,
    /// The canary's run (`<revision>@<started>`), or the scheduled analysis' run name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The canary's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The phase after the transition (`Progressing`, `Aborted`, `Failed`, ...).
    pub phase: String,
    /// The canary's step, 1-based (`3` of `7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The canary's number of steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// The canary weight the controller wants now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Why paused (`Step`, `Inconclusive`, `AnalysisError`, `Manual`, `Drift`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<PauseReason>,
    /// When a timed pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_until: Option<DateTime<Utc>>,
    /// Human-readable summary.
    pub message: String,
    /// When the transition happened (signed with the body: receivers reject old ones).
    pub occurred_at: DateTime<Utc>,
    /// Aborts, rollbacks and failed runs: what decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// What decided an abort, a rollback or a run's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The reason the status records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The analysis run that measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run: Option<String>,
    /// The metric that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The measured value as displayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The deciding condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The alarm that triggered the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    /// The measurement as data: values and each condition with operator and threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<MeasurementEvidence>,
}

impl Evidence {
    /// The deciding conditions' thresholds as `<op> <number>` (`< 0.99`), joined.
    pub fn threshold_text(&self) -> Option<String> {
        let m = self.measurement.as_ref()?;
        let parts: Vec<String> = m
            .decided()
            .filter_map(|c| Some(format!("{} {}", c.operator?, c.threshold?)))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    out.push('…');
    out
}

fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn phase_name(p: CanaryPhase) -> String {
    format!("{p:?}")
}

/// A canary run's identity in ids: the same marker the rollback marker uses.
fn canary_run(st: &CanaryStatus) -> String {
    crate::canary::machine::run_marker(st)
}

/// The evidence of the last measurement of `metric` among the canary's runs (newest first).
fn measured(
    runs: &[(String, &RunState)],
    metric: &str,
) -> (Option<String>, Option<MeasurementEvidence>) {
    for (name, run) in runs.iter().rev() {
        if let Some(m) = run.metric_results.iter().find(|m| m.name == metric) {
            let ev = m.measurements.iter().rev().find_map(|x| x.evidence.clone());
            return (Some(name.clone()), ev);
        }
    }
    (None, None)
}

/// The notifications a canary's status change `prev` → `next` produces (none when nothing
/// notable changed). Aborted, RolledBack and Promoted wait for their routing write: a rollback
/// is never reported before it is written (the driver enqueues after the status is saved).
pub fn canary_transitions(
    namespace: &str,
    name: &str,
    steps: usize,
    prev: &CanaryStatus,
    next: &CanaryStatus,
    now: DateTime<Utc>,
) -> Vec<Notification> {
    let run = canary_run(next);
    let steps_u32 = u32::try_from(steps).unwrap_or(u32::MAX);
    let base = |event: NotifyEvent, detail: Option<String>, message: String| {
        let mut id = format!("Canary/{namespace}/{name}/{run}/{}", event.as_str());
        if let Some(d) = detail {
            id.push('/');
            id.push_str(&d);
        }
        Notification {
            schema: SCHEMA.into(),
            id,
            event,
            kind: "Canary".into(),
            namespace: namespace.into(),
            name: name.into(),
            run: Some(run.clone()),
            revision: next.revision.clone(),
            phase: phase_name(next.phase),
            step: Some(
                next.current_step_index
                    .saturating_add(1)
                    .min(steps_u32.max(1)),
            ),
            steps: Some(steps_u32),
            weight: Some(next.desired_weight),
            pause_reason: None,
            pause_until: None,
            message: clip(&message),
            occurred_at: now,
            evidence: None,
        }
    };
    let mut out = Vec::new();
    let new_run = next.started_at.is_some() && next.started_at != prev.started_at;
    let driving = matches!(next.phase, CanaryPhase::Progressing | CanaryPhase::Paused);
    if new_run && next.phase != CanaryPhase::Pending {
        out.push(base(
            NotifyEvent::Started,
            None,
            format!(
                "Canary {namespace}/{name} started revision {}",
                next.revision.as_deref().unwrap_or("-")
            ),
        ));
    }
    let moved = next.current_step_index > prev.current_step_index
        || (new_run && next.current_step_index > 0);
    if driving && moved && (next.current_step_index as usize) < steps {
        let step = next.current_step_index + 1;
        out.push(base(
            NotifyEvent::StepReached,
            Some(step.to_string()),
            format!(
                "Canary {namespace}/{name} reached step {step}/{steps} (canary weight {})",
                next.desired_weight
            ),
        ));
    }
    if let Some(p) = &next.pause
        && next.phase == CanaryPhase::Paused
        && prev.pause.as_ref().map(|q| q.since) != Some(p.since)
    {
        let waiting = p.reason == PauseReason::Step && p.until.is_none();
        let event = if waiting {
            NotifyEvent::WaitingForPromotion
        } else {
            NotifyEvent::Paused
        };
        let why = p
            .message
            .clone()
            .unwrap_or_else(|| format!("{:?}", p.reason));
        let message = if waiting {
            format!("Canary {namespace}/{name} waits for promotion: {why}")
        } else {
            format!("Canary {namespace}/{name} paused: {why}")
        };
        let mut n = base(event, Some(millis(p.since)), message);
        n.pause_reason = Some(p.reason);
        n.pause_until = p.until;
        out.push(n);
    }
    // Terminal phases count once their routing write landed.
    let settled =
        |st: &CanaryStatus, phase: CanaryPhase| st.phase == phase && st.routing_write.is_none();
    for (phase, event) in [
        (CanaryPhase::Aborted, NotifyEvent::Aborted),
        (CanaryPhase::RolledBack, NotifyEvent::RolledBack),
        (CanaryPhase::Promoted, NotifyEvent::Promoted),
    ] {
        if !settled(next, phase) || (settled(prev, phase) && prev.started_at == next.started_at) {
            continue;
        }
        let mut n = match event {
            NotifyEvent::Promoted => base(
                event,
                None,
                match &next.message {
                    Some(m) => format!("Canary {namespace}/{name} promoted: {m}"),
                    None => format!("Canary {namespace}/{name} promoted"),
                },
            ),
            _ => {
                let abort = next.abort.clone().unwrap_or_default();
                let runs: Vec<(String, &RunState)> = next
                    .analysis_runs
                    .iter()
                    .map(|r| (r.name.clone(), &r.status))
                    .collect();
                let (analysis_run, measurement) = abort
                    .metric
                    .as_deref()
                    .map(|m| measured(&runs, m))
                    .unwrap_or_default();
                let verb = if event == NotifyEvent::Aborted {
                    "aborted and rolled back"
                } else {
                    "rolled back after promotion"
                };
                let mut n = base(
                    event,
                    None,
                    format!("Canary {namespace}/{name} {verb}: {}", abort.reason),
                );
                n.evidence = Some(Evidence {
                    reason: Some(clip(&abort.reason)),
                    analysis_run,
                    metric: abort.metric,
                    value: abort.value,
                    condition: abort.condition,
                    alarm: abort.alarm,
                    measurement,
                });
                n
            }
        };
        n.occurred_at = now;
        out.push(n);
    }
    out
}

/// The notification of a finished scheduled run (`Successful` → `runSucceeded`, ...); None
/// for a phase that is not a verdict.
pub fn scheduled_run_finished(
    namespace: &str,
    name: &str,
    run: &ScheduledRun,
    now: DateTime<Utc>,
) -> Option<Notification> {
    let phase = run.status.phase;
    let event = match phase {
        Phase::Successful => NotifyEvent::RunSucceeded,
        Phase::Failed => NotifyEvent::RunFailed,
        Phase::Error => NotifyEvent::RunError,
        Phase::Inconclusive => NotifyEvent::RunInconclusive,
        Phase::Pending | Phase::Running => return None,
    };
    let decided = run
        .status
        .metric_results
        .iter()
        .find(|m| m.phase == phase && phase != Phase::Successful);
    let evidence = decided.map(|m| {
        let last = m
            .measurements
            .iter()
            .rev()
            .find(|x| x.evidence.is_some() || x.value.is_some());
        let measurement = last.and_then(|x| x.evidence.clone());
        Evidence {
            reason: m
                .message
                .clone()
                .or_else(|| run.status.message.clone())
                .map(|s| clip(&s)),
            analysis_run: Some(run.name.clone()),
            metric: Some(m.name.clone()),
            value: last.and_then(|x| x.value.clone()),
            condition: measurement.as_ref().and_then(|e| e.decided_expression()),
            alarm: None,
            measurement,
        }
    });
    let detail = run
        .status
        .message
        .clone()
        .unwrap_or_else(|| format!("{} metric(s)", run.status.metric_results.len()));
    Some(Notification {
        schema: SCHEMA.into(),
        id: format!(
            "ScheduledAnalysis/{namespace}/{name}/{}/{}",
            run.name,
            event.as_str()
        ),
        event,
        kind: "ScheduledAnalysis".into(),
        namespace: namespace.into(),
        name: name.into(),
        run: Some(run.name.clone()),
        revision: None,
        phase: phase.to_string(),
        step: None,
        steps: None,
        weight: None,
        pause_reason: None,
        pause_until: None,
        message: clip(&format!(
            "ScheduledAnalysis {namespace}/{name} run {} ended {phase}: {detail}",
            run.name
        )),
        occurred_at: run.status.completed_at.unwrap_or(now),
        evidence,
    })
}

/// The notification of a refused spec. Its id names the refused generation (cluster mode) or
/// a digest of the message (file mode), so each refusal is one notification.
pub fn invalid_spec(
    kind: &str,
    namespace: &str,
    name: &str,
    generation: Option<i64>,
    message: &str,
    now: DateTime<Utc>,
) -> Notification {
    use sha2::Digest;
    let detail = match generation {
        Some(g) => format!("generation-{g}"),
        None => {
            let digest = sha2::Sha256::digest(message.as_bytes());
            format!("sha256-{}", &payload::hex(&digest)[..16])
        }
    };
    Notification {
        schema: SCHEMA.into(),
        id: format!("{kind}/{namespace}/{name}/invalidSpec/{detail}"),
        event: NotifyEvent::InvalidSpec,
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        run: None,
        revision: None,
        phase: "Invalid".into(),
        step: None,
        steps: None,
        weight: None,
        pause_reason: None,
        pause_until: None,
        message: clip(&format!(
            "{kind} {namespace}/{name} refused, not driven until fixed: {message}"
        )),
        occurred_at: now,
        evidence: None,
    }
}
