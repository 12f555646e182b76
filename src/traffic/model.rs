//! Data shared by the traffic layer: what a Canary says about routing (resolved from its
//! spec), and the routing state it wants. Plain data; the transforms live in `istio.rs`.

use serde::{Deserialize, Serialize};

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

/// How a header value is matched (Istio `StringMatch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Exact value.
    Exact(String),
    /// Prefix.
    Prefix(String),
    /// RE2 regex.
    Regex(String),
}

/// A header route: requests whose headers match go 100 % to the canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoute {
    /// Route name; must be listed in `managed_routes`.
    pub name: String,
    /// Header matchers, ORed (each is one Istio match entry, as Argo writes setHeaderRoute).
    pub headers: Vec<(String, StringMatch)>,
}

/// One match entry of a mirror route (Argo `RouteMatch`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorMatch {
    /// HTTP method.
    pub method: Option<StringMatch>,
    /// URI path.
    pub path: Option<StringMatch>,
    /// Headers.
    pub headers: Vec<(String, StringMatch)>,
}

/// A mirror route: matching requests follow the weighted route and are also mirrored to the
/// canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorRoute {
    /// Route name; must be listed in `managed_routes`.
    pub name: String,
    /// Percentage of matching requests mirrored (default 100).
    pub percentage: Option<f64>,
    /// Match entries (OR).
    pub matches: Vec<MirrorMatch>,
}

/// The complete routing state a Canary wants. Applying it is idempotent: managed routes not
/// listed here are removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredRouting {
    /// Canary weight on every selected route (0..=max_weight).
    pub canary_weight: i64,
    /// Header routes wanted now.
    pub header_routes: Vec<HeaderRoute>,
    /// Mirror routes wanted now.
    pub mirror_routes: Vec<MirrorRoute>,
}

impl DesiredRouting {
    /// Whether this routing exposes the canary at all (weight, header or mirror routes): only
    /// such a write can leave the routes ahead of what a restarted daemon would resume from.
    pub fn exposes_canary(&self) -> bool {
        self.canary_weight > 0 || !self.header_routes.is_empty() || !self.mirror_routes.is_empty()
    }

    /// Only weights; no header or mirror routes.
    pub fn weight(canary_weight: i64) -> Self {
        DesiredRouting {
            canary_weight,
            header_routes: Vec::new(),
            mirror_routes: Vec::new(),
        }
    }
}

/// Kind of a route in a VirtualService.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RouteKind {
    /// `spec.http[]`
    Http,
    /// `spec.tls[]`
    Tls,
    /// `spec.tcp[]`
    Tcp,
}

/// Weights read from one selected route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteWeights {
    /// VirtualService name.
    pub virtual_service: String,
    /// Route kind.
    pub kind: RouteKind,
    /// Route name, or `#index` for unnamed routes.
    pub route: String,
    /// Stable weight.
    pub stable: i64,
    /// Canary weight.
    pub canary: i64,
    /// Additional destinations and their weights (`host[/subset]`).
    pub others: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_routing_without_weight_header_or_mirror_routes_hides_the_canary() {
        assert!(!DesiredRouting::weight(0).exposes_canary());
        assert!(DesiredRouting::weight(1).exposes_canary());
        assert!(DesiredRouting::weight(100).exposes_canary());
        let header = DesiredRouting {
            header_routes: vec![HeaderRoute {
                name: "beta".into(),
                headers: Vec::new(),
            }],
            ..DesiredRouting::weight(0)
        };
        assert!(header.exposes_canary());
        let mirror = DesiredRouting {
            mirror_routes: vec![MirrorRoute {
                name: "shadow".into(),
                percentage: None,
                matches: Vec::new(),
            }],
            ..DesiredRouting::weight(0)
        };
        assert!(mirror.exposes_canary());
    }
}
