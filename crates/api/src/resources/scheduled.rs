//! ScheduledAnalysis: analysis templates run on a cron schedule, with actions on the result
//! (DESIGN §2). The serde shape of the resource; checks live in `scheduled_validate.rs`.

use serde::{Deserialize, Serialize};

use super::canary::{ArgValue, TemplateRef};
use super::template::{HeaderDef, ObjectMeta};

/// Runs kept per outcome when `historyLimit` leaves it out (CronJob's defaults).
pub const DEFAULT_SUCCESSFUL_HISTORY: u32 = 3;
/// Unsuccessful (Failed, Error, Inconclusive) runs kept by default.
pub const DEFAULT_FAILED_HISTORY: u32 = 1;

/// A whole ScheduledAnalysis document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduledAnalysisDoc {
    /// `skycanary.io/v1alpha1`.
    pub api_version: String,
    /// Must be `ScheduledAnalysis`: the kind this document is read as.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What to run when.
    pub spec: ScheduledAnalysisSpec,
    /// Status written by the daemon is ignored when reading files.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// What a ScheduledAnalysis wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduledAnalysisSpec {
    /// CronJob syntax: 5 fields (weekday 0 and 7 = Sunday, names allowed), 6 with seconds
    /// first, or @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly.
    pub schedule: String,
    /// IANA time zone of the schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What a fire time does while a run is still going (default Forbid).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A fire time missed by more than this (daemon down, suspended) is skipped; default: no
    /// deadline (only the latest missed fire time runs, as CronJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// No scheduled runs while true (runs started by hand still work).
    #[serde(default)]
    pub suspend: bool,
    /// Templates run together as one analysis run.
    #[schemars(length(min = 1))]
    pub templates: Vec<TemplateRef>,
    /// Args for the templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgValue>,
    /// Actions when a run ends Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<ActionsSpec>,
    /// Actions when a run ends Inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_inconclusive: Option<ActionsSpec>,
    /// Actions when a run ends in Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ActionsSpec>,
    /// Finished runs kept in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<HistoryLimit>,
    /// Run notifications to the daemon's named sinks; absent: the daemon's defaults, `[]`:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::notifications::MAX_SUBSCRIPTIONS))]
    pub notifications: Option<Vec<super::notifications::Subscription>>,
}

/// What a fire time does while an earlier run is still going.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    /// Skip the new run (default: two runs of one analysis only load the OAP twice).
    #[default]
    Forbid,
    /// Stop the running one, start the new one.
    Replace,
    /// Run both.
    Allow,
}

/// Actions on one outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.rollback) || has(self.webhook)",
    "message": "set rollback and/or webhook"
}]))]
pub struct ActionsSpec {
    /// Roll a canary back to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackAction>,
    /// POST the run's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookAction>,
}

/// The `rollback` action: a failed run rolls this Canary back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackAction {
    /// The Canary: `name` (same namespace) or `namespace/name`.
    pub canary: String,
}

/// The `webhook` action: the run's result is POSTed to this URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookAction {
    /// `http://` or `https://` URL.
    #[schemars(pattern(r"^[hH][tT][tT][pP][sS]?://[^/?#\s]+"))]
    pub url: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderDef>,
    /// Per-attempt timeout (Go duration, default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub timeout: Option<String>,
}

/// `historyLimit`: how many finished runs the status keeps, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryLimit {
    /// Successful runs kept (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful: Option<u32>,
    /// Failed, Error and Inconclusive runs kept (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u32>,
}

impl ScheduledAnalysisSpec {
    /// (successful, failed) history limits with defaults applied.
    pub fn history_limits(&self) -> (u32, u32) {
        let h = self.history_limit.clone().unwrap_or_default();
        (
            h.successful.unwrap_or(DEFAULT_SUCCESSFUL_HISTORY),
            h.failed.unwrap_or(DEFAULT_FAILED_HISTORY),
        )
    }
}

/// `canary` of a rollback action as (namespace, name), relative to `namespace`.
pub fn canary_ref(canary: &str, namespace: &str) -> (String, String) {
    match canary.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (namespace.to_string(), canary.to_string()),
    }
}
