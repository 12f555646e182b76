//! What the object tasks report to, as small traits the runtime owns; the HTTP server's
//! `Metrics` implements them, so the tasks never depend on the server.

/// Whose status a save was for; `kind` label of `skycanary_state_save_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKind {
    /// A Canary's status.
    Canary,
    /// A ScheduledAnalysis' status.
    Scheduled,
}

impl StateKind {
    /// The label value: `canary` or `scheduled`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Canary => "canary",
            StateKind::Scheduled => "scheduled",
        }
    }
}

/// Outcomes of status saves: a failure is counted
/// (`skycanary_state_save_failures_total`) and keeps `/readyz` failing for that object until
/// a save of it lands.
pub trait SaveMetrics: Send + Sync {
    /// A save of the object's status failed with `error`.
    fn state_save_failed(&self, kind: StateKind, namespace: &str, name: &str, error: &str);
    /// A save of the object's status landed (or nothing will save it any more).
    fn state_saved(&self, kind: StateKind, namespace: &str, name: &str);
}
