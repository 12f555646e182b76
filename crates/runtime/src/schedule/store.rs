//! Where a ScheduledAnalysis' status lives: the same [`StatusStore`] as a Canary's — a JSON
//! file in `--state-dir` (file mode, atomic replace) or the object's `.status` subresource
//! (cluster mode, a PUT guarded by resourceVersion, retried on conflict; see
//! [`crate::state::kube_status`] for why). Read back on start, so a restarted daemon keeps the
//! history and never fires a recorded run twice.

use chrono::{DateTime, Utc};
use kube::api::{ApiResource, GroupVersionKind};

use super::model::ScheduledAnalysisStatus;
use crate::state::kube_status::{GROUP, VERSION};
use crate::state::status::{PersistedStatus, StatusStore};

/// State-file kind of ScheduledAnalysis statuses (`<state-dir>/scheduledanalysis/<ns>/<name>.json`).
pub const SCHEDULED_KIND: &str = "scheduledanalysis";

/// Status persistence of ScheduledAnalyses.
pub type ScheduleStatusStore = StatusStore<ScheduledAnalysisStatus>;

/// The `skycanary.io/v1alpha1` ScheduledAnalysis resource for dynamic APIs.
pub fn scheduled_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "ScheduledAnalysis"),
        "scheduledanalyses",
    )
}

impl PersistedStatus for ScheduledAnalysisStatus {
    const FILE_KIND: &'static str = SCHEDULED_KIND;
    const KIND: &'static str = "ScheduledAnalysis";
    fn resource() -> ApiResource {
        scheduled_resource()
    }
    fn observe(&mut self, generation: Option<i64>, now: DateTime<Utc>) {
        crate::state::conditions::observe_scheduled(self, generation, now);
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
