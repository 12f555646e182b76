//! The readiness port (issue 19): where a canary task learns how many pods of its
//! `spec.workloadRef` (and `stableWorkloadRef`) are ready. File mode reads manifests
//! ([`super::readiness_file::FileReadiness`]); cluster mode plugs its watchers into the same
//! trait. The task asks at start and then every [`ReadinessSource::interval`], and feeds the
//! machine an `Input::Readiness` on every change.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::model::ReadinessStatus;
use crate::resources::canary::{CanaryDoc, WorkloadRef};

/// What a canary asks about: its workloads, in its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessQuery {
    /// The Canary's namespace (workloads are looked up there).
    pub namespace: String,
    /// `spec.workloadRef`.
    pub workload: WorkloadRef,
    /// `spec.stableWorkloadRef`.
    pub stable: Option<WorkloadRef>,
    /// `trafficRouting.istio.canaryService` (host mode): its EndpointSlices' ready endpoints
    /// also bound the canary's count, since they are what its traffic reaches.
    pub canary_service: Option<String>,
}

impl ReadinessQuery {
    /// The query of a canary, `None` when it names no workload (no gate, nothing to read).
    pub fn of(doc: &CanaryDoc, namespace: &str) -> Option<Self> {
        Some(ReadinessQuery {
            namespace: namespace.to_string(),
            workload: doc.spec.workload_ref.clone()?,
            stable: doc.spec.stable_workload_ref.clone(),
            canary_service: doc.spec.traffic_routing.istio.canary_service.clone(),
        })
    }
}

/// The future a [`ReadinessSource`] returns.
pub type ReadinessFuture<'a> = Pin<Box<dyn Future<Output = ReadinessStatus> + Send + 'a>>;

/// Something that can tell a canary's ready pods. It never fails: a workload it cannot read
/// or find is an unknown count (`None`) with the reason in `message`, which the machine
/// treats as not ready.
pub trait ReadinessSource: Send + Sync {
    /// The readiness of `query`'s workloads now, stamped `now`.
    fn readiness<'a>(
        &'a self,
        query: &'a ReadinessQuery,
        now: DateTime<Utc>,
    ) -> ReadinessFuture<'a>;
    /// How long until asking again.
    fn interval(&self) -> Duration;
}

/// One side's count: ready pods, or why it is unknown.
pub type Count = Result<i64, String>;

/// The status of a canary side (and optionally the stable side), the reasons of unknown
/// counts joined into its message.
pub fn status_of(canary: Count, stable: Option<Count>, now: DateTime<Utc>) -> ReadinessStatus {
    let mut why = Vec::new();
    let canary_ready = canary.map_err(|e| why.push(format!("canary: {e}"))).ok();
    let stable_ready = stable.and_then(|s| s.map_err(|e| why.push(format!("stable: {e}"))).ok());
    ReadinessStatus {
        canary_ready,
        stable_ready,
        observed_at: now,
        message: (!why.is_empty()).then(|| why.join("; ")),
    }
}

/// Whether `now` says something `prev` did not (its time aside): the machine is fed only
/// changes, so an unchanged poll costs no status write.
pub fn changed(prev: Option<&ReadinessStatus>, now: &ReadinessStatus) -> bool {
    prev.is_none_or(|p| {
        p.canary_ready != now.canary_ready
            || p.stable_ready != now.stable_ready
            || p.message != now.message
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn unknown_counts_carry_their_reason() {
        let s = status_of(Err("no Deployment x".into()), Some(Ok(3)), at(0));
        assert_eq!(s.canary_ready, None);
        assert_eq!(s.stable_ready, Some(3));
        assert_eq!(s.message.as_deref(), Some("canary: no Deployment x"));
        let s = status_of(Ok(2), None, at(0));
        assert_eq!(
            (s.canary_ready, s.stable_ready, s.message),
            (Some(2), None, None)
        );
    }

    #[test]
    fn only_changes_count_not_the_time() {
        let a = status_of(Ok(1), None, at(0));
        assert!(changed(None, &a));
        assert!(!changed(Some(&a), &status_of(Ok(1), None, at(5))));
        assert!(changed(Some(&a), &status_of(Ok(0), None, at(5))));
        assert!(changed(
            Some(&a),
            &status_of(Err("gone".into()), None, at(5))
        ));
    }
}
