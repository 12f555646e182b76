//! Canary spec → routing model: resolves names (`name.namespace`), defaults and the split mode.

use crate::resources::canary::{CanaryDoc, CanaryStep, DEFAULT_MAX_WEIGHT, StringMatchSpec};

use super::key::ObjectKey;
use super::model::*;

/// Splits Argo's `name.namespace` form; a trailing `.svc.cluster.local` is ignored.
pub fn split_name(name: &str, default_namespace: &str) -> (String, String) {
    let n = name.strip_suffix(".svc.cluster.local").unwrap_or(name);
    match n.rsplit_once('.') {
        Some((name, ns)) if !name.is_empty() && !ns.is_empty() => {
            (name.to_string(), ns.to_string())
        }
        _ => (n.to_string(), default_namespace.to_string()),
    }
}

/// The routing model of a Canary living in `namespace`.
pub fn routing_of(canary: &CanaryDoc, namespace: &str) -> IstioRouting {
    let tr = &canary.spec.traffic_routing;
    let istio = &tr.istio;
    let vss = istio
        .virtual_service
        .iter()
        .chain(istio.virtual_services.iter());
    let virtual_services = vss
        .map(|vs| {
            let (name, ns) = split_name(&vs.name, namespace);
            VirtualServiceRef {
                name,
                namespace: Some(ns),
                http_routes: vs.routes.clone(),
                tls_routes: vs
                    .tls_routes
                    .iter()
                    .map(|t| TlsRouteRef {
                        port: t.port,
                        sni_hosts: t.sni_hosts.clone(),
                    })
                    .collect(),
                tcp_routes: vs
                    .tcp_routes
                    .iter()
                    .map(|t| TcpRouteRef { port: t.port })
                    .collect(),
            }
        })
        .collect();
    let backend = match (
        &istio.destination_rule,
        &istio.stable_service,
        &istio.canary_service,
    ) {
        (Some(dr), _, _) => {
            let (name, ns) = split_name(&dr.name, namespace);
            Backend::Subset {
                destination_rule: DestinationRuleRef {
                    name,
                    namespace: Some(ns),
                },
                stable_subset: dr.stable_subset_name.clone(),
                canary_subset: dr.canary_subset_name.clone(),
            }
        }
        (None, stable, canary) => Backend::Host {
            stable: stable.clone().unwrap_or_default(),
            canary: canary.clone().unwrap_or_default(),
        },
    };
    IstioRouting {
        namespace: namespace.to_string(),
        max_weight: tr.max_traffic_weight.unwrap_or(DEFAULT_MAX_WEIGHT),
        managed_routes: tr.managed_routes.iter().map(|r| r.name.clone()).collect(),
        virtual_services,
        backend,
        additional_destinations: istio
            .additional_destinations
            .iter()
            .map(|a| AdditionalDestination {
                host: a.host.clone(),
                subset: a.subset.clone(),
            })
            .collect(),
    }
}

/// Store keys of the VirtualServices, in order.
pub fn virtual_service_keys(routing: &IstioRouting, namespace: &str) -> Vec<ObjectKey> {
    routing
        .virtual_services
        .iter()
        .map(|v| {
            ObjectKey::virtual_service(
                v.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                v.name.clone(),
            )
        })
        .collect()
}

/// Store key of the DestinationRule (subset-level split only).
pub fn destination_rule_key(routing: &IstioRouting, namespace: &str) -> Option<ObjectKey> {
    match &routing.backend {
        Backend::Subset {
            destination_rule, ..
        } => Some(ObjectKey::destination_rule(
            destination_rule
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
            destination_rule.name.clone(),
        )),
        Backend::Host { .. } => None,
    }
}

/// Istio string match of a validated spec (exactly one field is set).
pub fn string_match(s: &StringMatchSpec) -> StringMatch {
    match (&s.exact, &s.prefix, &s.regex) {
        (Some(v), _, _) => StringMatch::Exact(v.clone()),
        (None, Some(v), _) => StringMatch::Prefix(v.clone()),
        (None, None, Some(v)) => StringMatch::Regex(v.clone()),
        (None, None, None) => StringMatch::Exact(String::new()),
    }
}

/// The routing a Canary wants after its steps `0..=step_index` ran: the last `setWeight`
/// (0 before any), and the header/mirror routes set by those steps (an empty match removes).
pub fn desired_after_steps(canary: &CanaryDoc, step_index: usize) -> DesiredRouting {
    let mut desired = DesiredRouting::weight(0);
    for step in canary.spec.steps.iter().take(step_index.saturating_add(1)) {
        match step {
            CanaryStep::SetWeight(w) => desired.canary_weight = *w,
            CanaryStep::SetHeaderRoute(h) => {
                desired.header_routes.retain(|r| r.name != h.name);
                if !h.matches.is_empty() {
                    desired.header_routes.push(HeaderRoute {
                        name: h.name.clone(),
                        headers: h
                            .matches
                            .iter()
                            .map(|m| {
                                HeaderMatch::new(
                                    m.header_name.clone(),
                                    string_match(&m.header_value),
                                )
                            })
                            .collect(),
                    });
                }
            }
            CanaryStep::SetMirrorRoute(m) => {
                desired.mirror_routes.retain(|r| r.name != m.name);
                if !m.matches.is_empty() {
                    desired.mirror_routes.push(MirrorRoute {
                        name: m.name.clone(),
                        percentage: m.percentage,
                        matches: m
                            .matches
                            .iter()
                            .map(|rm| MirrorMatch {
                                method: rm.method.as_ref().map(string_match),
                                path: rm.path.as_ref().map(string_match),
                                headers: rm
                                    .headers
                                    .iter()
                                    .map(|(k, v)| HeaderMatch::new(k.clone(), string_match(v)))
                                    .collect(),
                            })
                            .collect(),
                    });
                }
            }
            CanaryStep::Pause(_) | CanaryStep::Analysis(_) => {}
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::yaml::parse_documents;

    const CANARY: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  trafficRouting:
    maxTrafficWeight: 1000
    managedRoutes: [{name: hdr}, {name: mirror}]
    istio:
      virtualServices:
      - {name: reviews, routes: [primary], tlsRoutes: [{port: 443, sniHosts: [a.example]}]}
      - {name: reviews-edge.gateways, tcpRoutes: [{port: 9000}]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 100
  - setHeaderRoute: {name: hdr, match: [{headerName: end-user, headerValue: {exact: jason}}]}
  - setMirrorRoute: {name: mirror, percentage: 20, match: [{method: {exact: GET}}]}
  - setWeight: 500
  - setHeaderRoute: {name: hdr}
"#;

    /// The fixture as the loader reads it (YAML to JSON, then the resource's serde shape);
    /// its validation is the runtime's, and the fixture is valid.
    fn canary() -> CanaryDoc {
        let docs = parse_documents(CANARY).expect("the fixture is YAML");
        serde_json::from_value(docs[0].value.clone()).expect("the fixture is a Canary")
    }

    #[test]
    fn names_resolve_with_namespaces() {
        assert_eq!(
            split_name("reviews", "bookinfo"),
            ("reviews".into(), "bookinfo".into())
        );
        assert_eq!(
            split_name("reviews.gw", "bookinfo"),
            ("reviews".into(), "gw".into())
        );
        assert_eq!(
            split_name("reviews.gw.svc.cluster.local", "x"),
            ("reviews".into(), "gw".into())
        );
        let r = routing_of(&canary(), "bookinfo");
        let keys = virtual_service_keys(&r, "bookinfo");
        assert_eq!(keys[0], ObjectKey::virtual_service("bookinfo", "reviews"));
        assert_eq!(
            keys[1],
            ObjectKey::virtual_service("gateways", "reviews-edge")
        );
        assert_eq!(r.max_weight, 1000);
        assert_eq!(r.virtual_services[0].tls_routes[0].port, Some(443));
        assert!(destination_rule_key(&r, "bookinfo").is_none());
    }

    #[test]
    fn desired_state_follows_steps() {
        let c = canary();
        assert_eq!(desired_after_steps(&c, 0), DesiredRouting::weight(100));
        let d = desired_after_steps(&c, 2);
        assert_eq!(d.canary_weight, 100);
        assert_eq!(d.header_routes.len(), 1);
        assert_eq!(d.mirror_routes[0].percentage, Some(20.0));
        let d = desired_after_steps(&c, 4);
        assert_eq!(d.canary_weight, 500);
        assert!(
            d.header_routes.is_empty(),
            "an empty match removes the route"
        );
        assert_eq!(d.mirror_routes.len(), 1);
    }
}
