//! `spec.notifications` of a Canary or ScheduledAnalysis: which lifecycle events go to which
//! of the daemon's named sinks. Only names live in the resource; URLs and secrets are in the
//! daemon's notifications file (`skycanary run --notifications`), never in a CR. The types;
//! their validation (against the loader's errors) is the root package's
//! `resources::notifications`.

use serde::{Deserialize, Serialize};

/// Most subscriptions one object may list.
pub const MAX_SUBSCRIPTIONS: usize = 8;
/// Longest sink name (a DNS label).
pub const MAX_SINK_NAME: usize = 63;

/// A lifecycle event a notification reports.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    /// Canary: a run started for a revision.
    Started,
    /// Canary: a new step was reached.
    StepReached,
    /// Canary: paused (timed pause step, Inconclusive analysis, analysis error, manual, drift).
    Paused,
    /// Canary: a pause step without duration waits for `promote`/`resume`.
    WaitingForPromotion,
    /// Canary: aborted, the rollback written; carries the evidence.
    Aborted,
    /// Canary: all steps done.
    Promoted,
    /// Canary: rolled back after promotion (a scheduled analysis' verdict), the write landed.
    RolledBack,
    /// Canary or ScheduledAnalysis: the spec was refused; not driven until fixed.
    InvalidSpec,
    /// ScheduledAnalysis: a run ended Successful.
    RunSucceeded,
    /// ScheduledAnalysis: a run ended Failed.
    RunFailed,
    /// ScheduledAnalysis: a run ended in Error.
    RunError,
    /// ScheduledAnalysis: a run ended Inconclusive.
    RunInconclusive,
}

impl NotifyEvent {
    /// Every event, in declaration order.
    pub const ALL: [NotifyEvent; 12] = [
        NotifyEvent::Started,
        NotifyEvent::StepReached,
        NotifyEvent::Paused,
        NotifyEvent::WaitingForPromotion,
        NotifyEvent::Aborted,
        NotifyEvent::Promoted,
        NotifyEvent::RolledBack,
        NotifyEvent::InvalidSpec,
        NotifyEvent::RunSucceeded,
        NotifyEvent::RunFailed,
        NotifyEvent::RunError,
        NotifyEvent::RunInconclusive,
    ];

    /// The wire name (`stepReached`), as in subscriptions and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::StepReached => "stepReached",
            NotifyEvent::Paused => "paused",
            NotifyEvent::WaitingForPromotion => "waitingForPromotion",
            NotifyEvent::Aborted => "aborted",
            NotifyEvent::Promoted => "promoted",
            NotifyEvent::RolledBack => "rolledBack",
            NotifyEvent::InvalidSpec => "invalidSpec",
            NotifyEvent::RunSucceeded => "runSucceeded",
            NotifyEvent::RunFailed => "runFailed",
            NotifyEvent::RunError => "runError",
            NotifyEvent::RunInconclusive => "runInconclusive",
        }
    }

    /// Whether a Canary produces it.
    pub fn for_canary(self) -> bool {
        !matches!(
            self,
            NotifyEvent::RunSucceeded
                | NotifyEvent::RunFailed
                | NotifyEvent::RunError
                | NotifyEvent::RunInconclusive
        )
    }

    /// Whether a ScheduledAnalysis produces it.
    pub fn for_scheduled(self) -> bool {
        !self.for_canary() || self == NotifyEvent::InvalidSpec
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One subscription: the events of this object that go to a sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// A sink named in the daemon's notifications file.
    #[schemars(length(min = 1, max = 63))]
    pub sink: String,
    /// The events sent; empty or absent: every event of the object's kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 12))]
    pub events: Vec<NotifyEvent>,
}

impl Subscription {
    /// Whether `event` goes to this sink.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}
