//! Planners: the pure Istio transforms, packaged for the router.

use serde_json::Value;

use super::istio;
use super::model::{DesiredRouting, IstioRouting};
use super::router::Planner;

/// Applies a complete desired routing state (what the canary controller wants after a step).
pub struct DesiredPlanner<'a> {
    /// The Canary's routing.
    pub routing: &'a IstioRouting,
    /// The wanted state; managed routes it does not list are removed.
    pub desired: &'a DesiredRouting,
}

impl Planner for DesiredPlanner<'_> {
    fn plan_virtual_service(&self, index: usize, current: &Value) -> Result<Value, String> {
        let vs_ref = self
            .routing
            .virtual_services
            .get(index)
            .ok_or_else(|| format!("no VirtualService #{index} in the Canary"))?;
        istio::apply(current, vs_ref, self.routing, self.desired).map_err(|e| e.to_string())
    }

    fn check_destination_rule(&self, current: &Value) -> Result<(), String> {
        istio::check_destination_rule(current, self.routing).map_err(|e| e.to_string())
    }
}

/// Manual weight changes (`route set-weight`): existing header and mirror routes are kept
/// (mirror routes re-weighted with their route), except at weight 0, which removes them so
/// that no request reaches the canary.
pub struct WeightPlanner<'a> {
    /// The Canary's routing.
    pub routing: &'a IstioRouting,
    /// Canary weight.
    pub weight: i64,
}

impl Planner for WeightPlanner<'_> {
    fn plan_virtual_service(&self, index: usize, current: &Value) -> Result<Value, String> {
        let desired = if self.weight == 0 {
            DesiredRouting::weight(0)
        } else {
            istio::current_managed_routes(current, self.routing, self.weight)
                .map_err(|e| e.to_string())?
        };
        DesiredPlanner {
            routing: self.routing,
            desired: &desired,
        }
        .plan_virtual_service(index, current)
    }

    fn check_destination_rule(&self, current: &Value) -> Result<(), String> {
        istio::check_destination_rule(current, self.routing).map_err(|e| e.to_string())
    }
}

/// What a routing write does with the rollback marker ([`istio::ROLLED_BACK_ANNOTATION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerOp {
    /// Leaves it as it is (a move to stable that is no rollback: promotion, a step at 0).
    Keep,
    /// A rollback of `run`: the marker goes in the same write as the weights.
    Set {
        /// The run rolled back ([`crate::canary::machine::run_marker`]).
        run: String,
        /// When (RFC 3339).
        at: String,
    },
    /// A write that exposes the canary of `run`: refused where the marker names `run` (that
    /// run was rolled back), and any other run's marker is removed.
    Guard {
        /// The run the write is for.
        run: String,
    },
}

/// Wraps a planner with the rollback marker: set by rollbacks, checked and cleared by
/// exposing writes. The check runs on the version the write replaces, so a marker written
/// between read and write makes the write conflict, re-read, and be refused.
pub struct MarkedPlanner<'a> {
    inner: &'a dyn Planner,
    op: MarkerOp,
    refused: std::sync::atomic::AtomicBool,
}

impl<'a> MarkedPlanner<'a> {
    /// `inner` with `op`.
    pub fn new(inner: &'a dyn Planner, op: MarkerOp) -> Self {
        MarkedPlanner {
            inner,
            op,
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a VirtualService carried a marker for the run this exposing write was for.
    pub fn refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Planner for MarkedPlanner<'_> {
    fn plan_virtual_service(&self, index: usize, current: &Value) -> Result<Value, String> {
        match &self.op {
            MarkerOp::Keep => self.inner.plan_virtual_service(index, current),
            MarkerOp::Set { run, at } => {
                let planned = self.inner.plan_virtual_service(index, current)?;
                if istio::rollback_marker(&planned) == Some(run.as_str()) {
                    Ok(planned)
                } else {
                    Ok(istio::with_rollback_marker(&planned, run, at))
                }
            }
            MarkerOp::Guard { run } => {
                if istio::rollback_marker(current) == Some(run.as_str()) {
                    self.refused
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(format!(
                        "the VirtualService carries a rollback marker for this run ({run}); a \
                         rolled-back canary is not exposed again until retried"
                    ));
                }
                let planned = self.inner.plan_virtual_service(index, current)?;
                Ok(istio::without_rollback_marker(&planned))
            }
        }
    }

    fn check_destination_rule(&self, current: &Value) -> Result<(), String> {
        self.inner.check_destination_rule(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Returns the VirtualService with one field set, so the tests see what the wrapper adds.
    struct Touch;

    impl Planner for Touch {
        fn plan_virtual_service(&self, _: usize, current: &Value) -> Result<Value, String> {
            let mut v = current.clone();
            v["spec"]["touched"] = json!(true);
            Ok(v)
        }
        fn check_destination_rule(&self, _: &Value) -> Result<(), String> {
            Ok(())
        }
    }

    fn vs() -> Value {
        json!({"metadata": {"name": "reviews"}, "spec": {}})
    }

    #[test]
    fn a_rollback_writes_the_marker_once_with_the_weights() {
        let set = MarkedPlanner::new(
            &Touch,
            MarkerOp::Set {
                run: "r1@t0".into(),
                at: "t1".into(),
            },
        );
        let once = set.plan_virtual_service(0, &vs()).unwrap();
        assert_eq!(once["spec"]["touched"], json!(true));
        assert_eq!(istio::rollback_marker(&once), Some("r1@t0"));
        assert_eq!(
            once["metadata"]["annotations"][istio::ROLLED_BACK_ANNOTATION],
            json!("r1@t0; rolled back t1")
        );
        // A repeated rollback keeps the first marker (no write for the time alone).
        let later = MarkedPlanner::new(
            &Touch,
            MarkerOp::Set {
                run: "r1@t0".into(),
                at: "t9".into(),
            },
        );
        assert_eq!(later.plan_virtual_service(0, &once).unwrap(), once);
    }

    #[test]
    fn an_exposing_write_of_the_marked_run_is_refused_and_others_clear_it() {
        let marked = istio::with_rollback_marker(&vs(), "r1@t0", "t1");
        let same = MarkedPlanner::new(
            &Touch,
            MarkerOp::Guard {
                run: "r1@t0".into(),
            },
        );
        let e = same.plan_virtual_service(0, &marked).unwrap_err();
        assert!(e.contains("rollback marker"), "{e}");
        assert!(same.refused());
        // A retry is a new run: it goes through and removes the old marker.
        let retry = MarkedPlanner::new(
            &Touch,
            MarkerOp::Guard {
                run: "r1@t5".into(),
            },
        );
        let planned = retry.plan_virtual_service(0, &marked).unwrap();
        assert!(!retry.refused());
        assert_eq!(istio::rollback_marker(&planned), None);
        assert_eq!(planned["metadata"], json!({"name": "reviews"}));
        // Keep changes nothing about the marker.
        let keep = MarkedPlanner::new(&Touch, MarkerOp::Keep);
        assert_eq!(
            istio::rollback_marker(&keep.plan_virtual_service(0, &marked).unwrap()),
            Some("r1@t0")
        );
    }
}
