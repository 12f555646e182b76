//! Canary status (the `.status` of the resource, Argo-like) and the inputs and effects of the
//! pure state machine. Shared by the state machine, the driver, the HTTP API and the CLI. The
//! status types are defined in [`skycanary_api::canary`] (the resource's types, which the CRDs
//! need without the controller) and re-exported here.

use serde::{Deserialize, Serialize};

pub use skycanary_api::canary::*;

/// An event to record (Kubernetes Event with an Argo-compatible reason, log line, metric).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryEvent {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// Argo-compatible reason: `RolloutStepCompleted`, `TrafficWeightUpdated`, `AnalysisRunFailed`,
    /// `RolloutAborted`, `RolloutCompleted`, `RolloutPaused`, `RolloutResumed`, ...
    pub reason: String,
    /// The event's text, for humans (Event message, log line).
    pub message: String,
    /// `status.currentStepIndex` when the event was decided (0-based; a step-completed
    /// event names the step it completed). Logged 1-based as `step: "3/7"`, as `status` shows it.
    #[serde(default)]
    pub step: u32,
}

/// `3/7`: step `current_step_index` (0-based) of `steps`, numbered from 1 (the last one once
/// all are done), as `skycanary status`, log lines and Event messages all show it.
pub fn step_label(current_step_index: u32, steps: usize) -> String {
    if steps == 0 {
        return "0/0".into();
    }
    let shown = (current_step_index as usize).saturating_add(1).min(steps);
    format!("{shown}/{steps}")
}
