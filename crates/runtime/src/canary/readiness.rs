//! The readiness port (issue 19): where a canary task learns how many pods of its
//! `spec.workloadRef` (and `stableWorkloadRef`) are ready. File mode reads manifests
//! ([`super::readiness_file::FileReadiness`]); cluster mode plugs its watchers into the same
//! trait. The task asks at start and then every [`ReadinessSource::interval`], and feeds the
//! machine an `Input::Readiness` on every change. What the answers mean (counts, changes,
//! template hashes, `fromSubset` resolution) is pure and lives in `skycanary-core`,
//! re-exported here under its old paths.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::model::ReadinessStatus;
/// The pure part, in `skycanary-core`.
pub use skycanary_core::canary::readiness::*;

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

/// The readiness of `query` from `source`, its `fromSubset` references first turned into
/// the selectors of their DestinationRule subsets (`subsets`: which ones, and the
/// DestinationRule as last read; see [`plan_read`]). A side whose subset cannot be read is
/// unknown with why — not ready — and is not asked of the source.
pub async fn read(
    source: &dyn ReadinessSource,
    query: &ReadinessQuery,
    subsets: Option<(&SubsetRefs, &Result<serde_json::Value, String>)>,
    now: DateTime<Utc>,
) -> ReadinessStatus {
    match plan_read(query, subsets, now) {
        ReadPlan::Unknown(status) => status,
        ReadPlan::Ask {
            query,
            stable_error,
        } => complete_read(source.readiness(&query, now).await, stable_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::canary::WorkloadRef;

    /// A source that records what it is asked and answers 2 canary / 5 stable ready pods.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<ReadinessQuery>>);

    impl ReadinessSource for Recording {
        fn readiness<'a>(
            &'a self,
            query: &'a ReadinessQuery,
            now: DateTime<Utc>,
        ) -> ReadinessFuture<'a> {
            self.0.lock().unwrap().push(query.clone());
            let stable = query.stable.as_ref().map(|_| Ok(5));
            Box::pin(std::future::ready(status_of(Ok(2), stable, now)))
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(1)
        }
    }

    /// `read` asks the source what the pure plan resolved, never what it could not, and
    /// completes the answer with the stable side's reason.
    #[tokio::test]
    async fn read_asks_the_source_the_resolved_query_only() {
        let src = Recording::default();
        let now = DateTime::from_timestamp(0, 0).unwrap();
        let subset_ref = WorkloadRef {
            from_subset: true,
            ..WorkloadRef::default()
        };
        let q = ReadinessQuery {
            namespace: "bookinfo".into(),
            workload: subset_ref.clone(),
            stable: Some(subset_ref),
            canary_service: None,
        };
        let refs = SubsetRefs {
            destination_rule: "DestinationRule bookinfo/reviews".into(),
            canary: "v2".into(),
            stable: "v1".into(),
        };
        let v2_only = Ok(serde_json::json!({"spec": {"host": "reviews",
            "subsets": [{"name": "v2", "labels": {"version": "v2"}}]}}));
        let s = read(&src, &q, Some((&refs, &v2_only)), now).await;
        assert_eq!((s.canary_ready, s.stable_ready), (Some(2), None));
        assert_eq!(
            s.message.as_deref(),
            Some("stable: DestinationRule bookinfo/reviews: subset v1 not found")
        );
        let asked = src.0.lock().unwrap().clone();
        assert_eq!(asked.len(), 1);
        assert!(!asked[0].workload.from_subset && asked[0].stable.is_none());

        let gone = Err("DestinationRule bookinfo/reviews not found".to_string());
        let s = read(&src, &q, Some((&refs, &gone)), now).await;
        assert_eq!((s.canary_ready, s.stable_ready), (None, None));
        assert_eq!(src.0.lock().unwrap().len(), 1, "nothing more was asked");

        let s = read(&src, &q, None, now).await;
        assert_eq!((s.canary_ready, s.stable_ready), (Some(2), Some(5)));
        assert_eq!(src.0.lock().unwrap()[1], q, "asked as it is");
    }
}
