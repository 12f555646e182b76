//! Data shared by the traffic layer: what a Canary says about routing (resolved from its
//! spec), and the routing state it wants. Plain data; the transforms live in `istio.rs`. The
//! routing state and the weights read back are status data, in `skycanary-api`'s `routing`
//! (re-exported here under their old paths).

use serde::{Deserialize, Serialize};

pub use skycanary_api::routing::{
    DesiredRouting, DestinationWeight, HeaderMatch, HeaderRoute, MirrorMatch, MirrorRoute,
    RouteKind, RouteWeights, StringMatch,
};

/// A VirtualService a Canary manages, and which of its routes carry the split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceRef {
    /// Object name.
    pub name: String,
    /// Namespace; `None` means the Canary's namespace (file mode: the manifest's, or `default`).
    pub namespace: Option<String>,
    /// Named HTTP routes; empty means "infer the single route".
    pub http_routes: Vec<String>,
    /// TLS routes selected by port and the set of SNI hosts.
    pub tls_routes: Vec<TlsRouteRef>,
    /// TCP routes selected by port.
    pub tcp_routes: Vec<TcpRouteRef>,
}

/// Selects TLS routes: every `match` entry uses this port (when set) and the route's SNI host
/// set equals `sni_hosts` (order-insensitive; empty = not constrained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRouteRef {
    /// Port of the match entries.
    pub port: Option<u32>,
    /// SNI hosts of the match entries, as a set.
    pub sni_hosts: Vec<String>,
}

/// Selects TCP routes by the port of their match entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRouteRef {
    /// Port of the match entries.
    pub port: Option<u32>,
}

/// How stable and canary are told apart in destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// Host-level split: two Kubernetes Services.
    Host {
        /// Stable Service host (short, `svc.ns` or FQDN).
        stable: String,
        /// Canary Service host.
        canary: String,
    },
    /// Subset-level split: one host, two DestinationRule subsets.
    Subset {
        /// The DestinationRule.
        destination_rule: DestinationRuleRef,
        /// Subset of the stable version.
        stable_subset: String,
        /// Subset of the canary version.
        canary_subset: String,
    },
}

/// A DestinationRule by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleRef {
    /// Object name.
    pub name: String,
    /// Namespace; `None` = the Canary's.
    pub namespace: Option<String>,
}

/// A destination that is neither stable nor canary but may share a managed route; it keeps
/// its weight. Matches by host (Kubernetes name equivalence) and/or subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalDestination {
    /// Host, if constrained.
    pub host: Option<String>,
    /// Subset, if constrained.
    pub subset: Option<String>,
}

/// Everything a Canary says about Istio routing, resolved from its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// The Canary's namespace: `stableService`, `canaryService` and additional destination
    /// hosts are Services there when written short (as Kubernetes and Argo read them), while
    /// hosts written in a VirtualService resolve in the VirtualService's namespace.
    pub namespace: String,
    /// Total weight of a route (default 100).
    pub max_weight: i64,
    /// Names of routes skycanary may create and delete (header/mirror), in precedence order.
    pub managed_routes: Vec<String>,
    /// The VirtualServices, in order.
    pub virtual_services: Vec<VirtualServiceRef>,
    /// Host- or subset-level split.
    pub backend: Backend,
    /// Destinations that keep their weight.
    pub additional_destinations: Vec<AdditionalDestination>,
}
