//! Canary status (the `.status` of the resource, Argo-like) and the inputs and effects of the
//! pure state machine. Shared by the state machine, the driver, the HTTP API and the CLI. The
//! status types are defined in [`crate::api::canary`] (the resource's types, which the CRDs
//! need without the controller) and re-exported here.

use serde::{Deserialize, Serialize};

pub use crate::api::canary::*;

/// An event to record (Kubernetes Event with an Argo-compatible reason, log line, metric).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryEvent {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// Argo-compatible reason: `RolloutStepCompleted`, `TrafficWeightUpdated`, `AnalysisRunFailed`,
    /// `RolloutAborted`, `RolloutCompleted`, `RolloutPaused`, `RolloutResumed`, ...
    pub reason: String,
    /// Message.
    pub message: String,
}
