//! Plain (non-aggregated) discovery documents: enough for kubectl to resolve `vs`, `dr` and the
//! kinds the daemon touches. kubectl falls back to these when it asks for aggregated discovery.

use serde_json::{Value, json};

/// (plural, kind, short names, namespaced, has status subresource)
type ResourceRow = (
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    bool,
);

/// Groups served, each with versions (preferred first) and resources.
const GROUPS: &[(&str, &[&str], &[ResourceRow])] = &[
    (
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        &[
            ("virtualservices", "VirtualService", &["vs"], true, true),
            ("destinationrules", "DestinationRule", &["dr"], true, true),
            ("gateways", "Gateway", &["gw"], true, true),
            ("serviceentries", "ServiceEntry", &["se"], true, true),
        ],
    ),
    (
        "skycanary.io",
        &["v1alpha1"],
        &[
            ("canaries", "Canary", &["can"], true, true),
            ("analysistemplates", "AnalysisTemplate", &[], true, false),
            (
                "clusteranalysistemplates",
                "ClusterAnalysisTemplate",
                &[],
                false,
                false,
            ),
            ("scheduledanalyses", "ScheduledAnalysis", &[], true, true),
        ],
    ),
    (
        "events.k8s.io",
        &["v1"],
        &[("events", "Event", &["ev"], true, false)],
    ),
    (
        "coordination.k8s.io",
        &["v1"],
        &[("leases", "Lease", &[], true, false)],
    ),
];

const CORE: &[ResourceRow] = &[
    ("namespaces", "Namespace", &["ns"], false, true),
    ("configmaps", "ConfigMap", &["cm"], true, false),
    ("events", "Event", &["ev"], true, false),
    ("services", "Service", &["svc"], true, true),
    ("pods", "Pod", &["po"], true, true),
    ("secrets", "Secret", &[], true, false),
];

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// `GET /version`. kubectl's version dispatcher reads `gitVersion`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|(g, vs, _)| group_doc(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn group(name: &str) -> Option<Value> {
    GROUPS
        .iter()
        .find(|(g, _, _)| *g == name)
        .map(|(g, vs, _)| {
            let mut doc = group_doc(g, vs);
            if let Some(m) = doc.as_object_mut() {
                m.insert("kind".into(), json!("APIGroup"));
                m.insert("apiVersion".into(), json!("v1"));
            }
            doc
        })
}

fn resource_list(group_version: &str, rows: &[ResourceRow]) -> Value {
    let mut resources = Vec::new();
    for (plural, kind, short, namespaced, status) in rows {
        let singular = kind.to_lowercase();
        resources.push(json!({
            "name": plural, "singularName": singular, "namespaced": namespaced, "kind": kind,
            "verbs": VERBS, "shortNames": short,
        }));
        if *status {
            resources.push(json!({
                "name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced,
                "kind": kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; None for unknown group versions.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    if group.is_empty() {
        return (version == "v1").then(|| resource_list("v1", CORE));
    }
    GROUPS
        .iter()
        .find(|(g, vs, _)| *g == group && vs.contains(&version))
        .map(|(_, _, rows)| resource_list(&format!("{group}/{version}"), rows))
}
