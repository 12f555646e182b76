//! A run's status as data: Argo's `AnalysisRun.status` (phase, metricResults with their
//! measurements) plus what resuming needs. Scheduling, recording and assessment are the core's
//! (`skycanary_core::analysis`); both a Canary's and a ScheduledAnalysis's status embed these.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::evidence::MeasurementEvidence;
use super::metadata::MeasurementMetadata;
use super::phase::Phase;

/// One measurement as kept in status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: DateTime<Utc>,
    /// `None` while in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Facts about how it was taken (Argo's `metadata`): the query window (`windowStart`,
    /// `windowEnd`, OAP time), the routing change it was aligned to (`alignedAfter`) and the
    /// returned points that were not evidence for the window (`droppedPoints`, ...).
    #[serde(default, skip_serializing_if = "MeasurementMetadata::is_empty")]
    pub metadata: MeasurementMetadata,
    /// The verdict as data: values, each condition's outcome, which decided, thresholds.
    /// Not one of Argo's fields (its readers ignore it); absent in statuses saved before it
    /// existed, and for measurements without a value (no data, provider error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<MeasurementEvidence>,
}

impl Measurement {
    /// Still being taken (Pending/Running): the next measurement recorded for its metric
    /// replaces it, and it is not counted.
    pub fn in_flight(&self) -> bool {
        !self.phase.is_completed()
    }
}

/// Per-metric status (Argo's `MetricResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    pub phase: Phase,
    /// Newest last, at most the metric's retention limit.
    // Shared, never changed once recorded: the copies of a status the daemon holds (the
    // task's, the API's, the analysis run's) and sends with every measurement share them
    // instead of copying each one. (A comment, not a doc: docs are the CRD's descriptions.)
    #[serde(default)]
    pub measurements: Vec<Arc<Measurement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// successful + failed + inconclusive: errors are not counted.
    #[serde(default)]
    pub count: u32,
    #[serde(default)]
    pub successful: u32,
    #[serde(default)]
    pub failed: u32,
    #[serde(default)]
    pub inconclusive: u32,
    #[serde(default)]
    pub error: u32,
    #[serde(default)]
    pub consecutive_error: u32,
    #[serde(default)]
    pub consecutive_success: u32,
    #[serde(default)]
    pub dry_run: bool,
}

impl MetricResult {
    /// Whether the newest measurement is still being taken.
    pub fn last_in_flight(&self) -> bool {
        self.measurements.last().is_some_and(|m| m.in_flight())
    }
}

/// Run status (Argo's `AnalysisRun.status` plus what resuming needs).
// The field docs are the CRDs' descriptions, unchanged since this type left the core: the
// `terminate` they name is `skycanary_core::analysis::terminate`, which rustdoc cannot link here.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub metric_results: Vec<MetricResult>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// No new measurements: set by [`terminate`] or by the first non-dry-run metric that
    /// ends Failed, Error or Inconclusive.
    #[serde(default)]
    pub terminated: bool,
    /// Why [`terminate`] was called (external termination only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate_reason: Option<String>,
}
