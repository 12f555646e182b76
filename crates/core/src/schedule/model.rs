//! ScheduledAnalysis status (the `.status` of the resource; the state file in file mode) and
//! the API's summary. Shared by the policy, the driver, the HTTP API and the CLI. The status
//! types are defined in [`skycanary_api::scheduled`] and re-exported here.

use serde::{Deserialize, Serialize};

pub use skycanary_api::scheduled::*;

/// What the API shows of a ScheduledAnalysis (`GET /api/v1/scheduled-analyses`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSummary {
    /// The ScheduledAnalysis' namespace; with the name, its key in the API.
    pub namespace: String,
    /// The ScheduledAnalysis' name.
    pub name: String,
    /// The cron expression.
    pub schedule: String,
    /// IANA zone (UTC when unset).
    pub time_zone: String,
    /// Forbid, Replace or Allow.
    pub concurrency_policy: crate::resources::scheduled::ConcurrencyPolicy,
    /// Scheduled runs are off.
    pub suspend: bool,
    /// Template names.
    pub templates: Vec<String>,
    /// The status.
    pub status: ScheduledAnalysisStatus,
}

/// `POST /api/v1/scheduled-analyses/{ns}/{name}/run` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStarted {
    /// The namespace of the ScheduledAnalysis the run belongs to.
    pub namespace: String,
    /// The name of the ScheduledAnalysis the run belongs to.
    pub name: String,
    /// The new run.
    pub run: String,
    /// Runs stopped to make room (Replace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
}
