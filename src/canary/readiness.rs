//! Where the readiness gate's observations come from (`spec.workloadRef`, docs/workloads.md):
//! a port the canary driver reads, implemented by the cluster-mode watchers
//! ([`crate::daemon::readiness_watch`]). A daemon without a source keeps canaries that set
//! `workloadRef` from starting.

use crate::api::canary::ReadinessStatus;
use crate::resources::canary::WorkloadRef;

/// The ready pods of a canary's workloads as known now. Unknown (never synced, a watch error,
/// a missing workload) is a `None` count with a message, never a guess.
pub trait ReadinessSource: Send + Sync {
    /// Readiness of `canary` (and `stable`, when set) in `namespace`.
    fn readiness(
        &self,
        namespace: &str,
        canary: &WorkloadRef,
        stable: Option<&WorkloadRef>,
    ) -> ReadinessStatus;

    /// As [`ReadinessSource::readiness`], for a canary whose canary side is also the Service
    /// `canary_service` (host-level routing: short, `svc.ns` or FQDN), whose ready endpoints a
    /// source may count too. Sources that do not read endpoints ignore it.
    fn readiness_with_service(
        &self,
        namespace: &str,
        canary: &WorkloadRef,
        stable: Option<&WorkloadRef>,
        canary_service: Option<&str>,
    ) -> ReadinessStatus {
        let _ = canary_service;
        self.readiness(namespace, canary, stable)
    }
}

/// A readiness source for canary tasks, and a signal that ticks whenever what it knows may
/// have changed (each task then reads its own workloads again).
#[derive(Clone)]
pub struct ReadinessFeed {
    /// The observations.
    pub source: std::sync::Arc<dyn ReadinessSource>,
    /// Bumped on every change.
    pub changed: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for ReadinessFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessFeed").finish_non_exhaustive()
    }
}
