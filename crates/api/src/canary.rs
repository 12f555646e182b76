//! `.status` of a Canary (Argo-like) and the user actions it records: the resource's status
//! types, shared by the controller, the HTTP API, the CLI and the CRD schema. Plain data, so
//! `resources` (the CRDs) needs nothing from the controller that writes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analysis::RunState;
use crate::routing::{DesiredRouting, RouteWeights};

/// Lifecycle phase of a Canary (DESIGN §2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum CanaryPhase {
    /// Not started yet (no run for the current revision).
    #[default]
    Pending,
    /// Walking its steps.
    Progressing,
    /// Waiting: a pause step, an Inconclusive analysis, an analysis error (Hold), a manual
    /// pause, or repeated drift.
    Paused,
    /// All steps done; the canary carries maxTrafficWeight (or the original routes are back).
    Promoted,
    /// Rolled back to stable.
    Aborted,
    /// Rolled back to stable after it had been promoted (a scheduled analysis failed).
    RolledBack,
    /// Traffic routing failed; weights may not be what the canary wants.
    Degraded,
    /// The spec failed validation; nothing drives the canary until it is fixed (`message`
    /// and the `InvalidSpec` condition say why). Never an input of the state machine: a
    /// status read back with it resumes from `phaseBeforeInvalid`.
    Invalid,
}

/// Why a canary is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PauseReason {
    /// A `pause` step.
    Step,
    /// An analysis ended Inconclusive.
    Inconclusive,
    /// An analysis ended in Error with `onAnalysisError: Hold`.
    AnalysisError,
    /// Paused by a user.
    Manual,
    /// Someone else keeps changing the weights.
    Drift,
    /// The canary workload is not ready enough for the next exposure (resumes by itself;
    /// `until` is the progress deadline), or lost every ready pod under weight with
    /// `onCanaryUnavailable: Hold` (`until` unset).
    CanaryNotReady,
}

/// Pause details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStatus {
    /// What paused the canary: a step, a verdict, a user, drift or readiness.
    #[schemars(description = "Why.")]
    pub reason: PauseReason,
    /// Since when.
    pub since: DateTime<Utc>,
    /// When a timed pause ends; `None` waits for promote/resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The detail behind the reason, for humans (the UI and `kubectl` show it).
    #[schemars(description = "Explanation.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a canary was rolled back: the evidence, not just the verdict.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortStatus {
    /// Human-readable reason.
    pub reason: String,
    /// Metric that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Measured value(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The condition that judged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The alarm that triggered the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    /// The readiness that failed (ready counts), when the canary workload was not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    /// When the rollback was decided; the abort timeline starts here.
    #[schemars(description = "When.")]
    pub at: DateTime<Utc>,
}

/// Which analysis a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum AnalysisRunKind {
    /// The blocking analysis of step `index`.
    Step {
        /// Step index.
        index: u32,
    },
    /// Background analysis (from `startingStep` until the end, and during `postPromotion.watch`).
    Background,
}

/// One analysis run of the current release (Argo `AnalysisRun.status` inside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// Unique name: `<canary>-<revision>-<step|bg>[-<n>]`.
    pub name: String,
    /// Step or background.
    pub kind: AnalysisRunKind,
    /// Template names, as referenced.
    pub templates: Vec<String>,
    /// The run's state (phase, metricResults with measurements, ...).
    pub status: RunState,
}

/// A Kubernetes-style condition (`metav1.Condition`), derived from the rest of the status on
/// every status write (`src/state/conditions.rs` documents each type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    /// Condition type (`Ready`, `Progressing`, `Paused`, `Promoted`, `Aborted`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` / `False` / `Unknown`.
    pub status: String,
    /// Machine-readable reason, CamelCase.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// When `status` last flipped (a new reason or message alone does not move it).
    pub last_transition_time: DateTime<Utc>,
    /// The object's `metadata.generation` the condition was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `.status` of a Canary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Phase. (Every field has a default so a status holding only a `command` request, written
    /// before the daemon first saw the Canary, is valid.)
    #[serde(default)]
    pub phase: CanaryPhase,
    /// The revision this run is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Index of the step being executed, 0-based (== steps.len() when all are done).
    #[serde(default)]
    pub current_step_index: u32,
    /// The current step as `skycanary status`, Events, logs and conditions show it: 1-based
    /// of the spec's steps (`3/7`; the last once all are done). Rewritten on every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<DateTime<Utc>>,
    /// The canary weight the controller wants now.
    #[serde(default)]
    pub desired_weight: i64,
    /// The routing last written successfully (what is in the VirtualServices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<DesiredRouting>,
    /// When the applied routing (weight, header or mirror route) last changed: a canary's
    /// analysis windows start at the first bucket after it (`window.alignToStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_changed_at: Option<DateTime<Utc>>,
    /// Weights read back per VirtualService and route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<RouteWeights>,
    /// Pause details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStatus>,
    /// Abort details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortStatus>,
    /// Analysis runs of this release, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_runs: Vec<AnalysisRunStatus>,
    /// Kubernetes conditions (Ready, Progressing, Reconciling, Stalled, Paused, Promoted,
    /// Aborted, RollbackPending, Degraded, InvalidSpec, AnalysisHealthy), for `kubectl wait`,
    /// kstatus and GitOps health checks; derived on every status write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatusCondition>,
    /// Generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// While `phase` is `Invalid`: the phase the canary had before its spec became invalid,
    /// resumed once the spec is valid again (a release is never restarted by a typo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_before_invalid: Option<CanaryPhase>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<DateTime<Utc>>,
    /// Background analysis and alarm rollback stay armed until then (postPromotion.watch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_until: Option<DateTime<Utc>>,
    /// Last human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The routing write asked for and not yet seen succeed (in flight, or failed and waiting
    /// for its retry); persisted so a restarted driver neither loses nor repeats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_write: Option<RoutingWrite>,
    /// Name of the current step's analysis run; `None` once the step moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_analysis_run: Option<String>,
    /// Name of the background analysis run whose verdicts still count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_analysis_run: Option<String>,
    /// The readiness of the referenced workloads as last observed (`spec.workloadRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessStatus>,
    /// The canary workload's pod template hash the current revision stands for, when
    /// skycanary derives revisions from it (no `spec.revision`): a different template starts
    /// a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// Drift reports during the current step (3 pause the canary with reason Drift).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step_drifts: u32,
    /// Drift reports during this run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drifts: u32,
    /// A command requested by `skycanary <action> --kube`, which patches only this key. The
    /// daemon never writes it (it is read, never serialised), so a request cannot be lost to a
    /// concurrent status write; `lastCommand` says whether it was carried out.
    #[serde(default, skip_serializing)]
    pub command: Option<CommandRequest>,
    /// The last command request the daemon handled (by id), so none is applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<CommandOutcome>,
}

/// Ready pods of the canary (and stable) workload, as last observed. Unknown (`None`) is
/// never ready: not read yet, a read error, or a workload that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessStatus {
    /// Ready pods of the canary workload's current pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready: Option<i64>,
    /// Ready pods of the stable workload, when `stableWorkloadRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ready: Option<i64>,
    /// When this was observed.
    pub observed_at: DateTime<Utc>,
    /// Why a count is unknown (read error, workload missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Hash of the canary workload's pod template (`spec.template`), when the workload was
    /// found: without `spec.revision` it is the revision (docs/workloads.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// The images of that template's containers, for messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A routing write the state machine asked the driver for (`Effect::ApplyRouting`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingWrite {
    /// What was asked for.
    pub routing: DesiredRouting,
    /// When it was (last) asked for.
    pub requested_at: DateTime<Utc>,
    /// Set after a failure: the write is asked for again at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failures so far.
    #[serde(default)]
    pub failures: u32,
}

/// A user action (CLI / API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Go to the next step (skipping a running step analysis); `full` skips all remaining steps.
    Promote {
        /// Skip every remaining step.
        full: bool,
    },
    /// Roll back to stable.
    Abort {
        /// Why (shown in status).
        reason: String,
    },
    /// After an abort: start again from step 0 with new analysis runs.
    Retry,
    /// Pause (reason Manual).
    Pause,
    /// Resume a paused canary.
    Resume,
}

/// Which user action a [`CommandRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CommandAction {
    /// Next step (all remaining with `full`).
    Promote,
    /// Roll back to stable.
    Abort,
    /// Start again after an abort.
    Retry,
    /// Pause (reason Manual).
    Pause,
    /// Resume a paused canary.
    Resume,
    /// A matching alarm received by a standby replica, forwarded to the leader (`alarm`).
    Alarm,
}

impl CommandAction {
    /// The lower-case name used by the CLI and the API paths.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Promote => "promote",
            CommandAction::Abort => "abort",
            CommandAction::Retry => "retry",
            CommandAction::Pause => "pause",
            CommandAction::Resume => "resume",
            CommandAction::Alarm => "alarm",
        }
    }
}

/// `status.command`: a user action written into the Canary's status by the CLI (`--kube`), for
/// the leading daemon to carry out. `id` is unique per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandRequest {
    /// Unique request id; a request whose id is `lastCommand.id` was already handled.
    pub id: String,
    /// The action.
    pub action: CommandAction,
    /// promote: skip every remaining step.
    #[serde(default)]
    pub full: bool,
    /// abort: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
    /// Who asked (user and host, for the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// action alarm: the alarm, as the standby that received it matched it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<ForwardedAlarm>,
}

/// An alarm a standby replica matched against the canary's `rollbackOn` and handed to the
/// leader through `status.command` (a webhook delivery is never retried by OAP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedAlarm {
    /// `SkyWalking` or `Alertmanager`.
    pub source: String,
    /// Rule name (alertname).
    pub rule: String,
    /// Entity name (labels).
    pub entity: String,
    /// Alarm message.
    pub message: String,
    /// When the alarm started; one older than the canary's run is ignored by the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

impl CommandRequest {
    /// A request id unique across clients and replicas: time, process and a per-process counter.
    pub fn new_id() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!(
            "{nanos:x}-{:x}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The state-machine command this request asks for.
    pub fn command(&self) -> Command {
        match self.action {
            CommandAction::Promote => Command::Promote { full: self.full },
            CommandAction::Abort => Command::Abort {
                reason: self.reason.clone().unwrap_or_default(),
            },
            CommandAction::Retry => Command::Retry,
            CommandAction::Pause => Command::Pause,
            CommandAction::Resume => Command::Resume,
            // Never written without its alarm; if it were, rolling back is the safe reading.
            CommandAction::Alarm => Command::Abort {
                reason: "forwarded alarm without details".into(),
            },
        }
    }
}

/// `status.lastCommand`: what became of the last [`CommandRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandOutcome {
    /// The request's id.
    pub id: String,
    /// The action.
    pub action: CommandAction,
    /// Carried out (false: refused in the canary's state; `message` says why).
    pub accepted: bool,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the daemon handled it.
    pub at: DateTime<Utc>,
}
