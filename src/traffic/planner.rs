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
