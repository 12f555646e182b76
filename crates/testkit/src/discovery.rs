//! Plain (non-aggregated) discovery documents: enough for kubectl to resolve `vs`, `dr` and the
//! kinds the daemon touches. kubectl falls back to these when it asks for aggregated discovery.
//!
//! Custom resources (`skycanary.io`) are discoverable only once their CustomResourceDefinitions
//! are stored, and then as those describe them (names, short names, categories, scope, status
//! subresource), as in a cluster.

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
        "events.k8s.io",
        &["v1"],
        &[("events", "Event", &["ev"], true, false)],
    ),
    (
        "apiextensions.k8s.io",
        &["v1"],
        &[(
            "customresourcedefinitions",
            "CustomResourceDefinition",
            &["crd", "crds"],
            false,
            true,
        )],
    ),
    (
        "apps",
        &["v1"],
        &[
            ("deployments", "Deployment", &["deploy"], true, true),
            ("statefulsets", "StatefulSet", &["sts"], true, true),
        ],
    ),
    (
        "discovery.k8s.io",
        &["v1"],
        &[("endpointslices", "EndpointSlice", &[], true, false)],
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

/// CRDs of one group.
fn crds_of<'a>(crds: &'a [Value], group: &str) -> Vec<&'a Value> {
    crds.iter()
        .filter(|c| c.pointer("/spec/group").and_then(Value::as_str) == Some(group))
        .collect()
}

/// Served versions of a group's CRDs, in the order of the first CRD.
fn crd_versions(crds: &[&Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in crds {
        for v in c
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if v.get("served").is_some_and(|s| s == false) {
                continue;
            }
            if let Some(name) = v.get("name").and_then(Value::as_str)
                && !out.iter().any(|o| o == name)
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Every group served: the built-in ones (a CRD group replaces its built-in rows) and the CRDs'.
fn all_groups(crds: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (g, vs, _) in GROUPS {
        let mine = crds_of(crds, g);
        let versions = if mine.is_empty() {
            vs.iter().map(|v| (*v).to_string()).collect()
        } else {
            crd_versions(&mine)
        };
        groups.push(((*g).to_string(), versions));
    }
    for c in crds {
        if let Some(g) = c.pointer("/spec/group").and_then(Value::as_str)
            && !groups.iter().any(|(n, _)| n == g)
        {
            groups.push((g.to_string(), crd_versions(&crds_of(crds, g))));
        }
    }
    groups.retain(|(_, vs)| !vs.is_empty());
    groups
}

/// `GET /apis`.
pub fn group_list(crds: &[Value]) -> Value {
    let groups: Vec<Value> = all_groups(crds)
        .iter()
        .map(|(g, vs)| group_doc(g, &vs.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn group(name: &str, crds: &[Value]) -> Option<Value> {
    all_groups(crds)
        .into_iter()
        .find(|(g, _)| g == name)
        .map(|(g, vs)| {
            let mut doc = group_doc(&g, &vs.iter().map(String::as_str).collect::<Vec<_>>());
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

/// The resources of a group version, from its CRDs.
fn crd_resource_list(group_version: &str, version: &str, crds: &[&Value]) -> Value {
    let mut resources = Vec::new();
    for c in crds {
        let Some(v) = super::store::crd_version(c, version) else {
            continue;
        };
        let names = c.pointer("/spec/names").cloned().unwrap_or_default();
        let namespaced = c.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
        let mut row = json!({
            "name": names.get("plural"), "singularName": names.get("singular"),
            "namespaced": namespaced, "kind": names.get("kind"), "verbs": VERBS,
        });
        for k in ["shortNames", "categories"] {
            if let Some(list) = names.get(k) {
                row[k] = list.clone();
            }
        }
        resources.push(row);
        if v.pointer("/subresources/status").is_some() {
            resources.push(json!({
                "name": format!("{}/status", names.get("plural").and_then(Value::as_str).unwrap_or_default()),
                "singularName": "", "namespaced": namespaced, "kind": names.get("kind"),
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; None for unknown group versions.
pub fn resources(group: &str, version: &str, crds: &[Value]) -> Option<Value> {
    if group.is_empty() {
        return (version == "v1").then(|| resource_list("v1", CORE));
    }
    let gv = format!("{group}/{version}");
    let mine = crds_of(crds, group);
    if !mine.is_empty() {
        return crd_versions(&mine)
            .iter()
            .any(|v| v == version)
            .then(|| crd_resource_list(&gv, version, &mine));
    }
    GROUPS
        .iter()
        .find(|(g, vs, _)| *g == group && vs.contains(&version))
        .map(|(_, _, rows)| resource_list(&gv, rows))
}
