//! Where a ScheduledAnalysis' status lives: the same [`StatusStore`] as a Canary's — a JSON
//! file in `--state-dir` (file mode, atomic replace) or the object's `.status` subresource
//! (cluster mode, a PUT guarded by resourceVersion, retried on conflict; see
//! [`crate::state::kube_status`] for why). Read back on start, so a restarted daemon keeps the
//! history and never fires a recorded run twice.

use super::model::ScheduledAnalysisStatus;
use crate::state::status::StatusStore;
/// State-file kind of ScheduledAnalysis statuses (`<state-dir>/scheduledanalysis/<ns>/<name>.json`),
/// in the `skycanary-core` crate with the rest of its storage description.
pub use skycanary_core::status::SCHEDULED_KIND;
/// The ScheduledAnalysis resource for dynamic APIs, in the `skycanary-kube` crate.
pub use skycanary_kube::status::scheduled_resource;

/// Status persistence of ScheduledAnalyses.
pub type ScheduleStatusStore = StatusStore<ScheduledAnalysisStatus>;
