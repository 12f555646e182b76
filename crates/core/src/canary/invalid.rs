//! A Canary whose spec no longer validates: marked Invalid with the reason, the phase it had
//! kept aside, so fixing the spec resumes where it stopped (pure transitions of the status).

use super::model::{CanaryPhase, CanaryStatus};

/// A status read back for a task about to drive the canary: its spec is valid again, so an
/// `Invalid` phase gives way to the phase it interrupted (never seen by the state machine).
pub fn resume_from_invalid(mut st: CanaryStatus) -> CanaryStatus {
    if st.phase == CanaryPhase::Invalid {
        st.phase = st.phase_before_invalid.take().unwrap_or_default();
    }
    st.phase_before_invalid = None;
    st
}

/// `status` marked Invalid with `message` (what `skycanary validate` prints): the phase it
/// had is kept in `phaseBeforeInvalid` (already-Invalid statuses keep the first one), the
/// rest of the release state untouched, so fixing the spec resumes where it stopped.
pub fn mark_invalid(mut status: CanaryStatus, message: &str) -> CanaryStatus {
    if status.phase != CanaryPhase::Invalid {
        status.phase_before_invalid = Some(status.phase).filter(|p| *p != CanaryPhase::Pending);
        status.phase = CanaryPhase::Invalid;
    }
    status.message = Some(message.to_string());
    status
}
