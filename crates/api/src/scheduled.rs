//! `.status` of a ScheduledAnalysis (the state file in file mode): the resource's status types,
//! shared by the scheduling policy, the driver, the HTTP API, the CLI and the CRD schema.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analysis::{Phase, RunState};

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RunTrigger {
    /// A fire time of the schedule.
    Schedule,
    /// `POST .../run` or `skycanary schedules run`.
    Manual,
}

/// What an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ActionOutcome {
    /// Under way (webhook retries).
    Pending,
    /// It worked: the webhook got a 2xx answer, or the Canary is rolled back (or aborted).
    #[schemars(description = "Done.")]
    Succeeded,
    /// Gave up; `message` says why.
    Failed,
}

/// Which action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ActionKind {
    /// Canary rolled back to stable.
    Rollback,
    /// Result POSTed.
    Webhook,
}

/// One action taken on a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// Rollback or webhook.
    pub kind: ActionKind,
    /// The canary (`ns/name`) or the URL.
    pub target: String,
    /// How it went.
    pub outcome: ActionOutcome,
    /// Details (canary phase after the rollback, HTTP status, last error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Webhook attempts made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When the outcome was recorded.
    pub at: DateTime<Utc>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One run of a ScheduledAnalysis (Argo `AnalysisRun.status` inside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRun {
    /// `<name>-<unix seconds of the fire time>`, or `<name>-manual-<unix seconds>`.
    pub name: String,
    /// Schedule or manual.
    pub trigger: RunTrigger,
    /// The fire time it is for (scheduled runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<DateTime<Utc>>,
    /// Phase, message, metricResults with measurements (values and verdicts), times.
    pub status: RunState,
    /// Actions taken on its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
}

impl ScheduledRun {
    /// The run's phase.
    pub fn phase(&self) -> Phase {
        self.status.phase
    }
}

/// `.status` of a ScheduledAnalysis.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledAnalysisStatus {
    /// The latest fire time dealt with: run, skipped (Forbid) or missed (deadline). Missed runs
    /// after a restart are counted from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// The next fire time (absent while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<DateTime<Utc>>,
    /// When the last Successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<DateTime<Utc>>,
    /// When the daemon first saw this object: fire times before it are not "missed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_since: Option<DateTime<Utc>>,
    /// Runs under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ScheduledRun>,
    /// Finished runs, newest first, trimmed to the history limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ScheduledRun>,
    /// Fire times skipped because a run was going (Forbid).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u32,
    /// Fire times missed (daemon down, suspended, past the starting deadline).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u32,
    /// Last human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Generation of the spec this status reflects (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the spec was refused (what `skycanary validate` prints, field path included);
    /// absent while the spec is valid. No run fires while it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_spec: Option<String>,
    /// Kubernetes conditions (Ready, Progressing, InvalidSpec, AnalysisHealthy), derived on
    /// every status write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<super::canary::StatusCondition>,
}
