//! What the status store needs to know of a status type (a Canary's, a ScheduledAnalysis'),
//! as data: where its state file goes, which resource's `.status` holds it, which derived
//! fields every write refreshes. The stores themselves do I/O and are above: the file store
//! in the runtime, the `.status` store in `skycanary-kube`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::canary::invalid::resume_from_invalid;
use crate::conditions::{observe_canary, observe_scheduled};
use skycanary_api::canary::CanaryStatus;
use skycanary_api::scheduled::ScheduledAnalysisStatus;

/// State-file kind of Canary statuses (`<state-dir>/canary/<ns>/<name>.json`).
pub const CANARY_KIND: &str = "canary";
/// State-file kind of ScheduledAnalysis statuses (`<state-dir>/scheduledanalysis/<ns>/<name>.json`).
pub const SCHEDULED_KIND: &str = "scheduledanalysis";

/// Which queue a status write waits in when many are in flight. A burst of measurement
/// updates (one write per canary per measurement) must not delay the write that precedes a
/// rollback: rollbacks have a lane of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteLane {
    /// Every write but a rollback's.
    Routine,
    /// The status saved before a rollback's routing write.
    Rollback,
}

/// A status type the status store persists: what distinguishes a Canary's status from a
/// ScheduledAnalysis' one for storage (where its file goes, which resource holds it, which
/// derived fields every write refreshes).
pub trait PersistedStatus:
    Serialize + DeserializeOwned + Clone + Default + PartialEq + Send + Sync + 'static
{
    /// Directory of its state files (`<state-dir>/<FILE_KIND>/<ns>/<name>.json`).
    const FILE_KIND: &'static str;
    /// The resource's kind (`Canary`, `ScheduledAnalysis`): in messages, and with
    /// [`PLURAL`](Self::PLURAL) the `skycanary.io` resource whose `.status` holds it in cluster
    /// mode.
    const KIND: &'static str;
    /// The resource's plural name in API paths (`canaries`, `scheduledanalyses`).
    const PLURAL: &'static str;
    /// Derives the conditions (and `observedGeneration` when `generation` is known) before a
    /// write, so every write carries them and the caller's copy matches what was written.
    fn observe(&mut self, generation: Option<i64>, now: DateTime<Utc>);
    /// `observedGeneration` as it will be written; a write without it keeps the stored one.
    fn observed_generation(&self) -> Option<i64>;
    /// A status that says only why the object is not driven (its stored one is unreadable).
    fn idle(message: String) -> Self;
    /// The status as a task about to drive the object takes it over (the spec is valid
    /// again, since a task runs it); the stored one by default.
    fn resumed(self) -> Self {
        self
    }
}

impl PersistedStatus for CanaryStatus {
    const FILE_KIND: &'static str = CANARY_KIND;
    const KIND: &'static str = "Canary";
    const PLURAL: &'static str = "canaries";
    fn observe(&mut self, generation: Option<i64>, now: DateTime<Utc>) {
        observe_canary(self, generation, now);
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn idle(message: String) -> Self {
        CanaryStatus {
            message: Some(message),
            ..Default::default()
        }
    }
    /// An `Invalid` phase gives way to the one it interrupted ([`resume_from_invalid`]).
    fn resumed(self) -> Self {
        resume_from_invalid(self)
    }
}

impl PersistedStatus for ScheduledAnalysisStatus {
    const FILE_KIND: &'static str = SCHEDULED_KIND;
    const KIND: &'static str = "ScheduledAnalysis";
    const PLURAL: &'static str = "scheduledanalyses";
    fn observe(&mut self, generation: Option<i64>, now: DateTime<Utc>) {
        observe_scheduled(self, generation, now);
    }
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn idle(message: String) -> Self {
        ScheduledAnalysisStatus {
            message: Some(message),
            ..Default::default()
        }
    }
    /// The spec is valid again (a task runs it): a refusal recorded while it was not is
    /// cleared by the task's first write.
    fn resumed(self) -> Self {
        ScheduledAnalysisStatus {
            invalid_spec: None,
            ..self
        }
    }
}
