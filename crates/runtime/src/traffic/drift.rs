//! Drift: someone else changed what a canary manages in a VirtualService (the weights of its
//! selected routes, its header and mirror routes) since the canary's last confirmed write.
//!
//! [`detect_drift`] is the pure decision. It asks the same question a write would: would
//! [`istio::apply`] of the canary's intended routing change the routes as they are now? So the
//! canary's own writes are never drift (applying the same routing twice changes nothing), and
//! an edit of anything `apply` leaves alone (another route, a header rule or timeout on the
//! managed route, labels, a zero-weight destination) is not drift either. Comparing against
//! the intended state, not against the last write, also means an edit that someone reverts
//! before we look is no drift: the traffic is as the canary wants it.
//!
//! [`DriftSignals`] carries "this VirtualService may have changed" from the daemon's watchers
//! (a Kubernetes watch in cluster mode, a short poll of the manifests in file mode) to the
//! canary tasks, which re-read their own VirtualServices and decide.

use std::fmt;

use serde_json::Value;
use tokio::sync::broadcast;

use super::istio;
use super::model::{DesiredRouting, IstioRouting, RouteKind, RouteWeights, VirtualServiceRef};
use super::store::ObjectKey;

/// Change notices a slow canary task may fall behind by before it re-checks all of its
/// VirtualServices instead (a lagging receiver loses notices, never the re-check).
pub const SIGNAL_BACKLOG: usize = 1024;

/// What one canary wants one of its VirtualServices to hold.
#[derive(Debug, Clone, Copy)]
pub struct Intended<'a> {
    /// The Canary's routing settings.
    pub routing: &'a IstioRouting,
    /// Which VirtualService, and which of its routes carry the split.
    pub vs_ref: &'a VirtualServiceRef,
    /// The routing state last confirmed written (weights, header and mirror routes).
    pub desired: &'a DesiredRouting,
}

/// A foreign change of the managed parts of one VirtualService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// VirtualService name.
    pub virtual_service: String,
    /// What differs from the intended routing, one entry per route (never empty).
    pub changes: Vec<String>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VirtualService {}: {}",
            self.virtual_service,
            self.changes.join("; ")
        )
    }
}

/// Route lists compared: the parts of a VirtualService [`istio::apply`] may change.
const ROUTE_KEYS: [&str; 3] = ["http", "tls", "tcp"];

/// Whether `observed` (a VirtualService as read now) differs from what the canary intends in
/// the parts it manages; `None` when a write of the intended routing would change nothing.
/// A VirtualService the intended routing can no longer be written to (an unknown destination
/// now carries weight in a managed route, the canary route was removed, ...) is drift too:
/// it was writable at the canary's last confirmed write, so someone changed it since.
pub fn detect_drift(intended: &Intended<'_>, observed: &Value) -> Option<Drift> {
    let drift = |changes: Vec<String>| Drift {
        virtual_service: intended.vs_ref.name.clone(),
        changes,
    };
    let wanted = match istio::apply(
        observed,
        intended.vs_ref,
        intended.routing,
        intended.desired,
    ) {
        Ok(v) => v,
        Err(e) => {
            return Some(drift(vec![format!(
                "the intended routing can no longer be written: {e}"
            )]));
        }
    };
    let routes = |v: &Value, key: &str| v.get("spec").and_then(|s| s.get(key)).cloned();
    if ROUTE_KEYS
        .iter()
        .all(|k| routes(observed, k) == routes(&wanted, k))
    {
        return None;
    }
    let mut changes = weight_changes(intended, observed, &wanted);
    changes.extend(managed_route_changes(intended.routing, observed, &wanted));
    if changes.is_empty() {
        // Only the order of the routes differs (a managed route moved below the weighted
        // one, say): its precedence is ours as well.
        changes.push("the managed routes are not in their intended place".into());
    }
    Some(drift(changes))
}

/// `http route primary: stable 100, canary 0 (intended 80, 20)` for each selected route whose
/// weights differ.
fn weight_changes(intended: &Intended<'_>, observed: &Value, wanted: &Value) -> Vec<String> {
    let read = |v: &Value| istio::read_weights(v, intended.vs_ref, intended.routing);
    let (Ok(now), Ok(want)) = (read(observed), read(wanted)) else {
        return Vec::new();
    };
    let kind = |k: RouteKind| match k {
        RouteKind::Http => "http",
        RouteKind::Tls => "tls",
        RouteKind::Tcp => "tcp",
    };
    let split = |w: &RouteWeights| (w.stable, w.canary);
    now.iter()
        .zip(want.iter())
        .filter(|(n, w)| split(n) != split(w))
        .map(|(n, w)| {
            format!(
                "{} route {}: stable {}, canary {} (intended {}, {})",
                kind(n.kind),
                n.route,
                n.stable,
                n.canary,
                w.stable,
                w.canary
            )
        })
        .collect()
}

/// One entry per managed (header or mirror) route that is missing, unexpected or changed.
fn managed_route_changes(routing: &IstioRouting, observed: &Value, wanted: &Value) -> Vec<String> {
    let named = |v: &Value, name: &str| -> Option<Value> {
        v.get("spec")?
            .get("http")?
            .as_array()?
            .iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    routing
        .managed_routes
        .iter()
        .filter_map(|name| match (named(observed, name), named(wanted, name)) {
            (None, Some(_)) => Some(format!("managed route {name} is missing")),
            (Some(_), None) => Some(format!("managed route {name} is not intended now")),
            (Some(a), Some(b)) if a != b => Some(format!(
                "managed route {name} differs from the intended one"
            )),
            _ => None,
        })
        .collect()
}

/// Notices that VirtualServices may have changed, from the daemon's watchers to every canary
/// task (each re-reads only its own). Clones share the channel.
#[derive(Debug, Clone)]
pub struct DriftSignals {
    tx: broadcast::Sender<ObjectKey>,
    before_decisions: bool,
}

impl DriftSignals {
    /// Signals fed by a watch that sees every change (cluster mode).
    pub fn watched() -> Self {
        DriftSignals {
            tx: broadcast::channel(SIGNAL_BACKLOG).0,
            before_decisions: false,
        }
    }

    /// Signals fed by a poll (file mode): a change may be up to one poll old, so canary tasks
    /// also re-read their VirtualServices before each decision.
    pub fn polled() -> Self {
        DriftSignals {
            before_decisions: true,
            ..Self::watched()
        }
    }

    /// `key` may have changed.
    pub fn changed(&self, key: ObjectKey) {
        // No receiver: no canary task runs now, and a task that starts checks on its own.
        let _ = self.tx.send(key);
    }

    /// The notices from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ObjectKey> {
        self.tx.subscribe()
    }

    /// Whether canary tasks must re-read their VirtualServices before each decision.
    pub fn before_decisions(&self) -> bool {
        self.before_decisions
    }
}

#[cfg(test)]
mod tests;
