//! `deploy/`: the manifests render with `kubectl kustomize`, the RBAC grants exactly what the
//! daemon uses (checked against a list and against every request of a real run), the pod is
//! hardened, and the daemon started with the Deployment's own arguments never logs its token.
//!
//! Rendering uses the machine's `kubectl` (part of the machine image). When it is missing, a
//! small renderer of our own (resources, images, strategic-merge patches by name: exactly the
//! kustomize features deploy/ uses) stands in, and the same comparison checks it whenever
//! `kubectl` is there; under CI (`CI` set) a missing kubectl is a failure.
//!
//! The Helm chart (deploy/helm/skycanary) renders, with a real `helm template`, exactly the
//! objects of the kustomize install; skipped without helm unless SKYCANARY_REQUIRE_HELM=1 (CI).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skycanary::resources::yaml::parse_documents;
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};
use skycanary::testkit::{FakeApiServer, RecordedRequest, write_kubeconfig};

/// A bearer token no log line could contain by accident.
const TOKEN: &str = "skc-tok-7f3e9a1c5b2d4e6f8091a2b3c4d5e6f7-do-not-log";

/// Of [`NEEDED`], what only a standby replica uses (handing an alarm to the leader through
/// `status.command`, tests/it/control_kube.rs); the single-replica run here cannot show it.
const STANDBY_ONLY: &[(&str, &str, &str)] = &[("skycanary.io", "canaries/status", "patch")];

/// Of [`NEEDED`], what only a repeat of an identical Event within six minutes uses (the
/// Recorder's series PATCH); the run here repeats none. The PATCH against the fake API server:
/// `traffic::kube::tests::a_repeated_event_becomes_a_series_on_one_object`.
const REPEAT_ONLY: &[(&str, &str, &str)] = &[("events.k8s.io", "events", "patch")];

/// Of [`NEEDED`], what only a Canary whose `workloadRef` is a pod selector or `fromSubset`
/// uses: the Pod watch starts with the first such query. The Bookinfo example names none, so
/// the run here must not list Pods at all (the equality below fails if it does); the watch:
/// `readiness_kube::kube_from_subset_waits_for_ready_pods_and_rolls_back_when_they_are_lost`.
const SELECTOR_ONLY: &[(&str, &str, &str)] = &[("", "pods", "list"), ("", "pods", "watch")];

/// Every permission `skycanary run --kube` needs, and where it is used. Namespace `None` means
/// cluster-wide (ClusterRole); `Some` a Role in the Lease's namespace. Leases are limited to the
/// Lease named by the Deployment's `--lease` (`create` cannot be limited by name).
const NEEDED: &[(&str, &str, &str, Need)] = &[
    // crates/kube/src/watch.rs: list + watch of the four kinds, all namespaces.
    ("skycanary.io", "canaries", "list", Need::Cluster),
    ("skycanary.io", "canaries", "watch", Need::Cluster),
    ("skycanary.io", "analysistemplates", "list", Need::Cluster),
    ("skycanary.io", "analysistemplates", "watch", Need::Cluster),
    (
        "skycanary.io",
        "clusteranalysistemplates",
        "list",
        Need::Cluster,
    ),
    (
        "skycanary.io",
        "clusteranalysistemplates",
        "watch",
        Need::Cluster,
    ),
    ("skycanary.io", "scheduledanalyses", "list", Need::Cluster),
    ("skycanary.io", "scheduledanalyses", "watch", Need::Cluster),
    // crates/runtime/src/daemon/readiness_watch.rs: readiness of the canaries' workloads (spec.workloadRef),
    // watched by every replica.
    ("apps", "deployments", "list", Need::Cluster),
    ("apps", "deployments", "watch", Need::Cluster),
    ("apps", "statefulsets", "list", Need::Cluster),
    ("apps", "statefulsets", "watch", Need::Cluster),
    ("discovery.k8s.io", "endpointslices", "list", Need::Cluster),
    ("discovery.k8s.io", "endpointslices", "watch", Need::Cluster),
    // The same, for pod selectors and DestinationRule subsets (`fromSubset`); started lazily.
    ("", "pods", "list", Need::Cluster),
    ("", "pods", "watch", Need::Cluster),
    // crates/kube/src/status.rs: the status subresource, read then replaced (PUT with
    // resourceVersion); its `write_request`: a standby merge-patches `status.command`.
    ("skycanary.io", "canaries/status", "get", Need::Cluster),
    ("skycanary.io", "canaries/status", "update", Need::Cluster),
    ("skycanary.io", "canaries/status", "patch", Need::Cluster),
    // crates/kube/src/status.rs: ScheduledAnalysis history, written the same way.
    (
        "skycanary.io",
        "scheduledanalyses/status",
        "get",
        Need::Cluster,
    ),
    (
        "skycanary.io",
        "scheduledanalyses/status",
        "update",
        Need::Cluster,
    ),
    // crates/kube/src/traffic.rs: VirtualServices read and replaced (PUT with resourceVersion);
    // DestinationRules only read (subset mode checks the subsets).
    (
        "networking.istio.io",
        "virtualservices",
        "get",
        Need::Cluster,
    ),
    (
        "networking.istio.io",
        "virtualservices",
        "update",
        Need::Cluster,
    ),
    // crates/kube/src/watch.rs: list + watch of the VirtualServices, for drift.
    (
        "networking.istio.io",
        "virtualservices",
        "list",
        Need::Cluster,
    ),
    (
        "networking.istio.io",
        "virtualservices",
        "watch",
        Need::Cluster,
    ),
    (
        "networking.istio.io",
        "destinationrules",
        "get",
        Need::Cluster,
    ),
    // crates/kube/src/traffic.rs emit_event: events.k8s.io/v1 Events on the Canary, created; a
    // repeat within six minutes raises the first one's series count by a merge PATCH
    // (kube-runtime's Recorder).
    ("events.k8s.io", "events", "create", Need::Cluster),
    ("events.k8s.io", "events", "patch", Need::Cluster),
    // crates/kube/src/lease.rs: leader election on one Lease.
    (
        "coordination.k8s.io",
        "leases",
        "create",
        Need::LeaseNamespace,
    ),
    ("coordination.k8s.io", "leases", "get", Need::Lease),
    ("coordination.k8s.io", "leases", "update", Need::Lease),
];

#[derive(Debug, Clone, Copy)]
enum Need {
    /// Any namespace (and cluster-scoped kinds).
    Cluster,
    /// Only in the Lease's namespace, any name.
    LeaseNamespace,
    /// Only the Lease itself.
    Lease,
}

/// One grant: API group, resource (with `/subresource`), verb, namespace (None: all), name
/// (None: any).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Perm {
    group: String,
    resource: String,
    verb: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is missing: it is part of the machine image (Debian package `kubectl`)"
        );
    }
    found
}

fn yaml_values(text: &str, origin: &str) -> Vec<Value> {
    parse_documents(text)
        .unwrap_or_else(|e| panic!("{origin}: {e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `kubectl kustomize DIR`, parsed.
fn kubectl_render(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_values(&String::from_utf8_lossy(&out.stdout), "kubectl output")
}

/// Our renderer of the kustomize subset deploy/ uses: `resources` (files and directories with a
/// kustomization), `patches` (strategic merge, lists of named items merged by name) and
/// `images` (newName/newTag).
fn own_render(dir: &Path) -> Vec<Value> {
    let mut objects = Vec::new();
    own_render_into(dir, &mut objects);
    objects
}

/// Renders `dir` onto `objects`: a Kustomization adds its resources first, a Component (listed
/// in `components`) adds its resources and patches what was rendered before it.
fn own_render_into(dir: &Path, objects: &mut Vec<Value>) {
    let k = yaml_values(&read(&dir.join("kustomization.yaml")), "kustomization")
        .pop()
        .expect("a kustomization document");
    let known = [
        "apiVersion",
        "kind",
        "resources",
        "components",
        "patches",
        "images",
    ];
    for key in k.as_object().expect("a mapping").keys() {
        assert!(
            known.contains(&key.as_str()),
            "{}: `{key}` is not understood by the fallback renderer in tests/it/deploy.rs",
            dir.display()
        );
    }
    for r in k["resources"].as_array().cloned().unwrap_or_default() {
        let path = dir.join(r.as_str().expect("a resource path"));
        if path.is_dir() {
            objects.extend(own_render(&path));
        } else {
            objects.extend(yaml_values(&read(&path), &path.display().to_string()));
        }
    }
    for c in k["components"].as_array().cloned().unwrap_or_default() {
        let path = dir.join(c.as_str().expect("a component path"));
        own_render_into(&path, objects);
    }
    for p in k["patches"].as_array().cloned().unwrap_or_default() {
        let path = dir.join(p["path"].as_str().expect("patch path"));
        for patch in yaml_values(&read(&path), &path.display().to_string()) {
            let target = objects
                .iter_mut()
                .find(|o| key_of(o) == key_of(&patch))
                .unwrap_or_else(|| panic!("{}: no object to patch", path.display()));
            strategic_merge(target, &patch);
        }
    }
    for image in k["images"].as_array().cloned().unwrap_or_default() {
        for o in objects.iter_mut() {
            set_image(o, &image);
        }
    }
}

fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) => strategic_merge(existing, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        // Lists of named items merge by name; new items go first, in the patch's order, as
        // kustomize puts them.
        (Value::Array(t), Value::Array(p))
            if p.iter().chain(t.iter()).all(|v| v.get("name").is_some()) =>
        {
            let mut added = Vec::new();
            for item in p {
                match t.iter_mut().find(|x| x["name"] == item["name"]) {
                    Some(existing) => strategic_merge(existing, item),
                    None => added.push(item.clone()),
                }
            }
            t.splice(0..0, added);
        }
        (t, p) => *t = p.clone(),
    }
}

fn set_image(v: &mut Value, image: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(current)) = m.get("image")
                && current.split(':').next() == image["name"].as_str()
            {
                let name = image["newName"].as_str().unwrap_or(current);
                let name = name.split(':').next().unwrap_or(name).to_string();
                let tag = image["newTag"].as_str().map(str::to_string);
                m.insert(
                    "image".into(),
                    Value::String(match tag {
                        Some(t) => format!("{name}:{t}"),
                        None => name,
                    }),
                );
            }
            for (_, child) in m.iter_mut() {
                set_image(child, image);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| set_image(c, image)),
        _ => {}
    }
}

fn key_of(o: &Value) -> (String, String, String) {
    (
        o["kind"].as_str().unwrap_or_default().to_string(),
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn by_key(objects: &[Value]) -> BTreeMap<(String, String, String), Value> {
    let mut out = BTreeMap::new();
    for o in objects {
        assert!(
            out.insert(key_of(o), o.clone()).is_none(),
            "{:?} twice",
            key_of(o)
        );
    }
    out
}

/// The rendered objects of a directory of deploy/: kubectl's output when kubectl is there
/// (and then our renderer must agree with it), else our renderer's.
fn render(rel: &str) -> Vec<Value> {
    let dir = repo().join(rel);
    let own = own_render(&dir);
    match kubectl() {
        Some(k) => {
            let real = kubectl_render(&k, &dir);
            let (own_map, real_map) = (by_key(&own), by_key(&real));
            let keys: BTreeSet<_> = own_map.keys().chain(real_map.keys()).collect();
            for key in keys {
                let (a, b) = (own_map.get(key), real_map.get(key));
                assert!(
                    a == b,
                    "the fallback renderer disagrees with kubectl on {rel}, {key:?}:\n  ours: {}\n  kubectl: {}",
                    a.map(Value::to_string).unwrap_or_default(),
                    b.map(Value::to_string).unwrap_or_default()
                );
            }
            real
        }
        None => own,
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything the service account `ns/name` is granted through the rendered bindings.
fn grants_of(objects: &[Value], sa_ns: &str, sa: &str) -> BTreeSet<Perm> {
    let mut out = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == sa_ns)
        {
            continue;
        }
        let binding_ns = (binding["kind"] == "RoleBinding")
            .then(|| {
                binding["metadata"]["namespace"]
                    .as_str()
                    .map(str::to_string)
            })
            .flatten();
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == role_kind
                    && o["metadata"]["name"] == role_name
                    && (role_kind == "ClusterRole"
                        || o["metadata"]["namespace"].as_str() == binding_ns.as_deref())
            })
            .unwrap_or_else(|| panic!("binding to a missing {role_kind} {role_name}"));
        for rule in role["rules"].as_array().cloned().unwrap_or_default() {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "nonResourceURLs granted: {rule}"
            );
            let names = strings(&rule["resourceNames"]);
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "wildcard in {field} of {role_kind} {role_name}: {rule}"
                );
            }
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        let names: Vec<Option<String>> = if names.is_empty() {
                            vec![None]
                        } else {
                            names.iter().cloned().map(Some).collect()
                        };
                        for name in names {
                            out.insert(Perm {
                                group: group.clone(),
                                resource: resource.clone(),
                                verb: verb.clone(),
                                namespace: binding_ns.clone(),
                                name,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

fn needed(lease_ns: &str, lease_name: &str) -> BTreeSet<Perm> {
    NEEDED
        .iter()
        .map(|(group, resource, verb, need)| Perm {
            group: group.to_string(),
            resource: resource.to_string(),
            verb: verb.to_string(),
            namespace: match need {
                Need::Cluster => None,
                Need::LeaseNamespace | Need::Lease => Some(lease_ns.to_string()),
            },
            name: matches!(need, Need::Lease).then(|| lease_name.to_string()),
        })
        .collect()
}

/// The one container named `container` of the Deployment `name`.
fn container<'a>(
    objects: &'a [Value],
    deployment: &str,
    container: &str,
) -> (&'a Value, &'a Value) {
    let d = find(objects, "Deployment", deployment);
    let pod = &d["spec"]["template"]["spec"];
    let c = pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or_else(|| panic!("no container {container} in {deployment}"));
    (pod, c)
}

/// `--flag=value` or `--flag value` in container args.
fn flag(args: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&eq)
            .map(str::to_string)
            .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// The service account and Lease (`namespace`, `name`) a rendered skycanary container runs with.
fn identity(objects: &[Value], deployment: &str, name: &str) -> (String, String, String, String) {
    let d = find(objects, "Deployment", deployment);
    let (pod, c) = container(objects, deployment, name);
    let sa = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let ns = d["metadata"]["namespace"].as_str().expect("namespace");
    let lease = flag(&strings(&c["args"]), "--lease")
        .unwrap_or_else(|| "skycanary/skycanary-leader".to_string());
    let (lease_ns, lease_name) = lease.split_once('/').expect("--lease NS/NAME");
    (
        ns.to_string(),
        sa.to_string(),
        lease_ns.to_string(),
        lease_name.to_string(),
    )
}

#[test]
fn kustomize_renders_the_install_the_sidecar_variant_and_the_examples() {
    let install = render("deploy");
    let kinds: BTreeSet<(String, String)> = install
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    for (kind, name) in [
        ("Namespace", "skycanary"),
        ("ServiceAccount", "skycanary"),
        ("ClusterRole", "skycanary"),
        ("ClusterRoleBinding", "skycanary"),
        ("Role", "skycanary-leader-election"),
        ("RoleBinding", "skycanary-leader-election"),
        ("Deployment", "skycanary"),
        ("Service", "skycanary"),
    ] {
        assert!(
            kinds.contains(&(kind.to_string(), name.to_string())),
            "{kind} {name} missing"
        );
    }
    // Every CRD of deploy/crds, byte-equal in content to the generated files (their own test
    // keeps deploy/crds in sync with the Rust types).
    let crd_files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/crds"))
        .expect("deploy/crds")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    assert!(crd_files.len() >= 3);
    for f in &crd_files {
        for crd in yaml_values(&read(f), &f.display().to_string()) {
            let rendered = find(
                &install,
                "CustomResourceDefinition",
                crd["metadata"]["name"].as_str().unwrap_or_default(),
            );
            assert_eq!(rendered, &crd, "{}", f.display());
        }
    }
    // The Service reaches the Deployment's pods on the port the daemon listens on.
    let service = find(&install, "Service", "skycanary");
    let (_, c) = container(&install, "skycanary", "skycanary");
    let labels =
        &find(&install, "Deployment", "skycanary")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v, "selector {k}");
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(
        flag(&strings(&c["args"]), "--listen").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(c["ports"][0]["containerPort"], 8080);

    // Sidecar: the OAP container is untouched, skycanary joins it and talks to OAP on loopback.
    let sidecar = render("deploy/examples/sidecar-oap");
    let (pod, oap) = container(&sidecar, "skywalking-oap", "oap");
    assert!(
        oap["image"]
            .as_str()
            .unwrap_or_default()
            .contains("skywalking-oap-server")
    );
    let (_, sc) = container(&sidecar, "skywalking-oap", "skycanary");
    let args = strings(&sc["args"]);
    assert_eq!(
        flag(&args, "--skywalking").as_deref(),
        Some("http://127.0.0.1:12800")
    );
    assert_eq!(pod["containers"].as_array().map(Vec::len), Some(2));
    // The variant itself is a Component with no Deployment of its own: applying it can only
    // patch the OAP of the kustomization that includes it, never replace it with a stand-in.
    let component = yaml_values(
        &read(&repo().join("deploy/sidecar/kustomization.yaml")),
        "deploy/sidecar",
    )
    .pop()
    .unwrap();
    assert_eq!(component["kind"], "Component");
    assert_eq!(component["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
    let mut own = Vec::new();
    for r in component["resources"].as_array().unwrap() {
        let path = repo().join("deploy/sidecar").join(r.as_str().unwrap());
        if path.is_file() {
            own.extend(yaml_values(&read(&path), &path.display().to_string()));
        }
    }
    assert!(own.iter().all(|o| o["kind"] != "Deployment"), "{own:?}");
    assert!(pod["volumes"].as_array().is_some_and(|v| {
        v.iter()
            .any(|v| v["secret"]["secretName"] == "skycanary-token")
    }));

    // Examples: exactly the skycanary objects, and they validate.
    let examples = render("deploy/examples/bookinfo");
    let kinds: BTreeSet<&str> = examples.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        kinds.contains("Canary") && kinds.contains("AnalysisTemplate"),
        "{kinds:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .arg("validate")
        .arg(repo().join("deploy/examples"))
        .output()
        .expect("validate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn rbac_grants_exactly_the_needed_permissions_without_wildcards() {
    for (dir, deployment, container_name) in [
        ("deploy", "skycanary", "skycanary"),
        ("deploy/examples/sidecar-oap", "skywalking-oap", "skycanary"),
    ] {
        let objects = render(dir);
        let (ns, sa, lease_ns, lease_name) = identity(&objects, deployment, container_name);
        let granted = grants_of(&objects, &ns, &sa);
        let needed = needed(&lease_ns, &lease_name);
        let extra: Vec<_> = granted.difference(&needed).collect();
        let missing: Vec<_> = needed.difference(&granted).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{dir}: RBAC of {ns}/{sa} differs from NEEDED\n  granted but not needed: {extra:#?}\n  needed but not granted: {missing:#?}"
        );
    }
}

#[test]
fn deployment_runs_hardened() {
    for (dir, deployment) in [
        ("deploy", "skycanary"),
        ("deploy/examples/sidecar-oap", "skywalking-oap"),
    ] {
        let objects = render(dir);
        let (pod, c) = container(&objects, deployment, "skycanary");
        let sc = &c["securityContext"];
        let pod_sc = &pod["securityContext"];
        let either = |field: &str| {
            if sc.get(field).is_some() {
                sc[field].clone()
            } else {
                pod_sc[field].clone()
            }
        };
        assert_eq!(either("runAsNonRoot"), true, "{dir}");
        assert!(
            either("runAsUser").as_u64().is_some_and(|u| u > 0),
            "{dir}: runAsUser"
        );
        assert_eq!(either("seccompProfile")["type"], "RuntimeDefault", "{dir}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{dir}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{dir}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{dir}");
        assert!(sc["capabilities"].get("add").is_none(), "{dir}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{dir}");
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/readyz?exclude=state",
            "{dir}"
        );
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][res].is_string(),
                    "{dir}: resources.{kind}.{res}"
                );
            }
        }
        // The token comes from a Secret mounted as a file, read with --token-file.
        let args = strings(&c["args"]);
        assert_eq!(args.first().map(String::as_str), Some("run"));
        assert!(args.iter().any(|a| a == "--kube"), "{dir}: {args:?}");
        let token_file = flag(&args, "--token-file").expect("--token-file");
        let mount = c["volumeMounts"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| token_file.starts_with(m["mountPath"].as_str().unwrap_or("\0")))
            })
            .unwrap_or_else(|| panic!("{dir}: {token_file} is on no volume"));
        assert_eq!(mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == mount["name"]))
            .expect("the mounted volume");
        assert!(
            volume["secret"]["secretName"].is_string(),
            "{dir}: {volume}"
        );
        assert!(
            c.get("env")
                .and_then(Value::as_array)
                .is_none_or(|env| !env.iter().any(|e| e["name"] == "SKYCANARY_TOKEN")),
            "{dir}: the token must not be an env var"
        );
    }
}

/// The Prometheus Operator monitors scrape the port the Service and the pods name, on the
/// pods the Deployment labels, in its namespace; neither is in the default install.
#[test]
fn service_and_pod_monitors_scrape_the_named_http_port() {
    let install = render("deploy");
    assert!(
        install
            .iter()
            .all(|o| o["apiVersion"] != "monitoring.coreos.com/v1"),
        "the default install must apply without the Prometheus Operator"
    );
    let service = find(&install, "Service", "skycanary");
    let service_port = &service["spec"]["ports"][0];
    let (_, c) = container(&install, "skycanary", "skycanary");
    let deployment = find(&install, "Deployment", "skycanary");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let namespace = deployment["metadata"]["namespace"].clone();

    let monitoring = render("deploy/monitoring");
    assert_eq!(monitoring.len(), 1, "the kustomization applies one monitor");
    let sm = find(&monitoring, "ServiceMonitor", "skycanary");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], namespace);
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service_port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "Service label {k}");
    }
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"][0], namespace);

    let path = repo().join("deploy/monitoring/podmonitor.yaml");
    let pm = yaml_values(&read(&path), "podmonitor.yaml").pop().unwrap();
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["namespace"], namespace);
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let container_port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .unwrap_or_else(|| panic!("no container port named {}", endpoint["port"]));
    // The Service targets the same named port.
    assert_eq!(service_port["targetPort"], container_port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "pod label {k}");
    }
}

#[test]
fn dockerfile_builds_in_stages_and_runs_as_the_deployments_user() {
    let text = read(&repo().join("Dockerfile"));
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last = froms.last().copied().unwrap_or_default();
    assert!(
        last.contains("distroless") || last.contains("scratch"),
        "final stage: {last}"
    );
    let final_stage = &text[text.rfind("\nFROM ").unwrap_or(0)..];
    let user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the final stage");
    let uid: u64 = user
        .split(':')
        .next()
        .and_then(|u| u.trim().parse().ok())
        .expect("numeric USER (runAsNonRoot needs a number)");
    assert!(uid > 0);
    assert!(!final_stage.contains("RUN "), "no shell in the final stage");
    // The image's daemon is built without the simulator and the demo (docs/operations.md).
    let build = text
        .lines()
        .find(|l| l.contains("cargo auditable build"))
        .expect("a cargo build in the build stage");
    assert!(
        build.contains("--release") && build.contains("--no-default-features"),
        "{build}"
    );
    // Multi-arch: the build maps buildx's TARGETARCH to a musl triple for both platforms, and
    // the binary carries its dependency list (cargo auditable).
    let build_stage = &text[..text.rfind("\nFROM ").unwrap_or(0)];
    assert!(build_stage.contains("ARG TARGETARCH"), "{build_stage}");
    for triple in ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"] {
        assert!(build_stage.contains(triple), "{triple}");
    }
    assert!(build_stage.contains("cargo auditable build --release --locked --no-default-features"));
    assert!(text.contains("--platform linux/amd64,linux/arm64"));
    let objects = render("deploy");
    let (pod, _) = container(&objects, "skycanary", "skycanary");
    assert_eq!(pod["securityContext"]["runAsUser"], uid);
}

/// One Kubernetes API request as RBAC sees it.
fn attributes(r: &RecordedRequest) -> Option<Perm> {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", group, _v, rest @ ..] => (*group, rest),
        _ => return None, // discovery and version: granted to every authenticated user
    };
    let (group, rest) = rest;
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [res] => (res.to_string(), None),
        [res, name] => (res.to_string(), Some(name.to_string())),
        [res, name, sub] => (format!("{res}/{sub}"), Some(name.to_string())),
        _ => return None,
    };
    let watch = r
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match (r.method.as_str(), name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => panic!("unexpected method {m}"),
    };
    Some(Perm {
        group: group.to_string(),
        resource,
        verb: verb.to_string(),
        namespace,
        name,
    })
}

fn allowed(granted: &BTreeSet<Perm>, request: &Perm) -> bool {
    granted.iter().any(|g| {
        g.group == request.group
            && g.resource == request.resource
            && g.verb == request.verb
            && g.namespace
                .as_ref()
                .is_none_or(|ns| request.namespace.as_ref() == Some(ns))
            && g.name
                .as_ref()
                .is_none_or(|n| request.name.as_ref() == Some(n))
    })
}

/// `$(VAR)` in container args, as the kubelet expands them from the container's env.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real daemon, started with the rendered Deployment's arguments (only the listen address,
/// the token file and the OAP are pointed at the test's loopback servers), drives the Bookinfo
/// example against the fake API server: every request it sends must be allowed by the rendered
/// RBAC, every needed permission must be used, and its logs (debug level) must not contain the
/// API token, though requests with the right token and with near misses were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_uses_only_granted_permissions_and_never_logs_its_token() {
    skycanary::testkit::install_crypto_provider();
    let objects = render("deploy");
    let (ns, sa, lease_ns, lease_name) = identity(&objects, "skycanary", "skycanary");
    let granted = grants_of(&objects, &ns, &sa);
    let (_, c) = container(&objects, "skycanary", "skycanary");

    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fake = FakeApiServer::new();
    for o in render("deploy/examples/bookinfo")
        .into_iter()
        .chain(yaml_values(
            &read(&repo().join("deploy/examples/bookinfo/istio/reviews.yaml")),
            "istio",
        ))
    {
        fake.seed(o).unwrap();
    }
    let (addr, _h) = fake.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let env: BTreeMap<String, String> = c["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => "skycanary-7d9f-test".to_string(),
                    Some("metadata.namespace") => ns.clone(),
                    other => panic!("env {name}: unsupported source {other:?}"),
                },
            };
            (name, value)
        })
        .collect();
    let mut args = Vec::new();
    for a in strings(&c["args"]) {
        let a = expand(&a, &env);
        let replaced = match a.split_once('=') {
            Some(("--listen", _)) => format!("--listen=127.0.0.1:{port}"),
            Some(("--token-file", _)) => format!("--token-file={}", token_file.display()),
            Some(("--skywalking", _)) => format!("--skywalking={}", running.url()),
            _ => a,
        };
        args.push(replaced);
    }
    // Renew the Lease often, so `update` is seen in a short run.
    args.push("--lease-duration=2".into());
    let stdout = dir.path().join("stdout.log");
    let stderr = dir.path().join("stderr.log");
    let _daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "debug")
            .env_remove("SKYCANARY_TOKEN")
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .expect("start the daemon"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Leader, canary at 10 % behind the header route, background analysis measuring.
    let status = |fake: &FakeApiServer| {
        fake.get("skycanary.io", "canaries", "bookinfo", "reviews")
            .map(|c| c["status"].clone())
    };
    wait_for(
        "the canary at its pause step",
        Duration::from_secs(30),
        || {
            status(&fake)
                .filter(|s| s["currentStepIndex"].as_u64() >= Some(2) && s["phase"] == "Paused")
        },
    )
    .await;
    let vs = fake.virtual_service("bookinfo", "reviews").unwrap();
    assert_eq!(vs["spec"]["http"][0]["name"], "canary-header", "{vs}");

    for (header, expected) in [
        (format!("Bearer {TOKEN}"), 200),
        (format!("Bearer {TOKEN}x"), 401),
        (format!("Bearer {}", &TOKEN[1..]), 401),
        (format!("Basic {TOKEN}"), 401),
        (format!("bearer {}", TOKEN.to_uppercase()), 401),
    ] {
        let r = http
            .get(format!("{url}/api/v1/canaries/bookinfo/reviews"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expected);
    }
    // Abort through the API: rollback writes, status and events.
    let r = http
        .post(format!("{url}/api/v1/canaries/bookinfo/reviews/abort"))
        .bearer_auth(TOKEN)
        .json(&json!({"reason": "RBAC test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The status is saved before the rollback write: wait for the write to be confirmed.
    wait_for("the abort", Duration::from_secs(30), || {
        status(&fake).filter(|s| s["phase"] == "Aborted" && s.get("routingWrite").is_none())
    })
    .await;
    let vs = fake.virtual_service("bookinfo", "reviews").unwrap();
    let route = &vs["spec"]["http"].as_array().unwrap().last().unwrap()["route"];
    assert_eq!(route[0]["weight"], 100, "{vs}");
    wait_for("a Lease renewal", Duration::from_secs(10), || {
        fake.requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/leases/"))
            .then_some(())
    })
    .await;

    let mut used = BTreeSet::new();
    for r in fake.requests() {
        let Some(p) = attributes(&r) else { continue };
        assert!(
            allowed(&granted, &p),
            "{} {}?{} is not allowed by deploy/'s RBAC: {p:?}",
            r.method,
            r.path,
            r.query.as_deref().unwrap_or("")
        );
        used.insert((p.group, p.resource, p.verb));
    }
    let needed_kinds: BTreeSet<(String, String, String)> = needed(&lease_ns, &lease_name)
        .into_iter()
        .map(|p| (p.group, p.resource, p.verb))
        .filter(|(g, r, v)| {
            let p = (g.as_str(), r.as_str(), v.as_str());
            !STANDBY_ONLY.contains(&p) && !REPEAT_ONLY.contains(&p) && !SELECTOR_ONLY.contains(&p)
        })
        .collect();
    assert_eq!(used, needed_kinds, "permissions used vs NEEDED");

    // Nothing the daemon printed contains the token (or its tail, in case of truncation).
    drop(_daemon);
    let logs = read(&stdout) + &read(&stderr);
    assert!(
        logs.contains("cluster mode"),
        "the logs were captured: {logs}"
    );
    assert!(logs.lines().count() > 20, "debug logs were written");
    for needle in [TOKEN, &TOKEN[TOKEN.len() - 16..], &TOKEN.to_uppercase()] {
        assert!(
            !logs.contains(needle),
            "the API token appears in the daemon's logs"
        );
    }
}

/// `SKYCANARY_HELM` (a path), else `helm` on PATH; `None` skips the chart test unless
/// SKYCANARY_REQUIRE_HELM=1 (as in CI, which installs Helm from a pinned PyPI wheel).
fn helm() -> Option<PathBuf> {
    let found = std::env::var_os("SKYCANARY_HELM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("helm"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        assert!(
            std::env::var("SKYCANARY_REQUIRE_HELM").as_deref() != Ok("1"),
            "helm is required (SKYCANARY_REQUIRE_HELM=1) but neither SKYCANARY_HELM nor PATH has it"
        );
        eprintln!("SKIPPED helm chart: helm is not installed");
    }
    found
}

/// `helm template skycanary deploy/helm/skycanary --include-crds -n NAMESPACE ARGS`, parsed.
fn helm_render(helm: &Path, namespace: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm)
        .args(["template", "skycanary"])
        .arg(repo().join("deploy/helm/skycanary"))
        .args(["--include-crds", "--namespace", namespace])
        .args(args)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_values(&String::from_utf8_lossy(&out.stdout), "helm output")
}

/// The chart passes `helm lint --strict` and renders the kustomize install object for object (CRDs and ClusterRole included:
/// the chart links to deploy/crds and deploy/rbac); without `createNamespace` it leaves out
/// only the Namespace (helm's `--create-namespace` makes it); another namespace and image tag
/// move every namespaced object, the bindings' subjects and the Lease.
#[test]
fn helm_chart_renders_the_objects_of_the_kustomize_install() {
    let Some(helm) = helm() else { return };
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(repo().join("deploy/helm/skycanary"))
        .output()
        .expect("run helm");
    assert!(
        lint.status.success(),
        "helm lint --strict: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let install = by_key(&render("deploy"));
    let chart = by_key(&helm_render(
        &helm,
        "skycanary",
        &["--set", "createNamespace=true"],
    ));
    let keys: BTreeSet<_> = install.keys().chain(chart.keys()).collect();
    assert!(keys.len() >= 12, "{keys:?}");
    for key in keys {
        let (a, b) = (install.get(key), chart.get(key));
        assert!(
            a == b,
            "the chart and `kubectl kustomize deploy` differ on {key:?}:\n  kustomize: {}\n  helm: {}",
            a.map(Value::to_string).unwrap_or_default(),
            b.map(Value::to_string).unwrap_or_default()
        );
    }

    let plain = by_key(&helm_render(&helm, "skycanary", &[]));
    let missing: Vec<_> = install.keys().filter(|k| !plain.contains_key(*k)).collect();
    assert_eq!(
        missing,
        vec![&(
            "Namespace".to_string(),
            String::new(),
            "skycanary".to_string()
        )]
    );

    let moved = helm_render(
        &helm,
        "canaries",
        &[
            "--set",
            "image.tag=1.2.3",
            "--set",
            "extraArgs={--namespace=bookinfo}",
        ],
    );
    for o in &moved {
        let cluster_scoped = [
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ]
        .contains(&o["kind"].as_str().unwrap_or_default());
        if !cluster_scoped {
            assert_eq!(o["metadata"]["namespace"], "canaries", "{o}");
        }
        for subject in o["subjects"].as_array().into_iter().flatten() {
            assert_eq!(subject["namespace"], "canaries", "{o}");
        }
    }
    let deployment = find(&moved, "Deployment", "skycanary");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "skycanary:1.2.3");
    let args = strings(&c["args"]);
    assert_eq!(
        flag(&args, "--lease").as_deref(),
        Some("canaries/skycanary-leader")
    );
    assert_eq!(flag(&args, "--namespace").as_deref(), Some("bookinfo"));
}
