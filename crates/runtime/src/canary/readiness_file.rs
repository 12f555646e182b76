//! File mode's [`ReadinessSource`]: the `--manifests` directory also holds the workloads'
//! manifests, kept current by whoever stands in for the cluster (a script, the demo). Read:
//! `apps/v1` Deployments and StatefulSets (`status.readyReplicas`, at most `spec.replicas`),
//! Pods (`status.conditions[type=Ready]`, for selector refs) and `discovery.k8s.io/v1`
//! EndpointSlices (endpoints with `conditions.ready: true`, by label
//! `kubernetes.io/service-name`). A workload that is missing, defined twice, or may be hidden
//! in a manifest that cannot be read is an unknown count: never ready.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::readiness::{
    Count, ReadinessFuture, ReadinessQuery, ReadinessSource, WorkloadTemplate, status_of,
    workload_template,
};
use crate::resources::canary::{WorkloadKind, WorkloadRef};
use crate::resources::yaml::{MANIFEST_LIMITS, parse_documents_with, read_file};
use crate::traffic::file::MAX_MANIFEST_FILE_BYTES;

/// Most manifest files looked at in one scan; past it the scan is a problem (unknown).
pub const MAX_FILES: usize = 10_000;
/// Deepest directory walked under `--manifests`.
pub const MAX_DEPTH: usize = 16;

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Reads readiness from a manifests directory; one scan serves every canary asking within
/// one interval.
#[derive(Debug, Clone)]
pub struct FileReadiness(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    every: Duration,
    last: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl FileReadiness {
    /// A source over `root`, scanned at most once per `every`.
    pub fn new(root: impl Into<PathBuf>, every: Duration) -> Self {
        FileReadiness(Arc::new(Shared {
            root: root.into(),
            every,
            last: Mutex::new(None),
        }))
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, s)) = &*last
            && at.elapsed() < self.every / 2
        {
            return s.clone();
        }
        let s = Arc::new(Snapshot::scan(&self.root));
        *last = Some((Instant::now(), s.clone()));
        s
    }
}

impl ReadinessSource for FileReadiness {
    fn readiness<'a>(
        &'a self,
        query: &'a ReadinessQuery,
        now: DateTime<Utc>,
    ) -> ReadinessFuture<'a> {
        Box::pin(async move {
            let shared = self.0.clone();
            let snap = match tokio::task::spawn_blocking(move || shared.snapshot()).await {
                Ok(s) => s,
                Err(e) => Arc::new(Snapshot::failed(format!("manifest scan failed: {e}"))),
            };
            snap.status(query, now)
        })
    }

    fn interval(&self) -> Duration {
        self.0.every
    }
}

/// A Deployment or StatefulSet as read.
#[derive(Debug, Clone, PartialEq)]
struct Workload {
    kind: WorkloadKind,
    namespace: String,
    name: String,
    /// `min(status.readyReplicas, spec.replicas)`.
    ready: i64,
    /// `spec.template`'s hash and images (none without a template).
    template: Option<WorkloadTemplate>,
}

/// Everything one scan found.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    workloads: Vec<Workload>,
    /// Ready pods: namespace and labels.
    pods: Vec<(String, BTreeMap<String, String>)>,
    /// Per (namespace, service), ready endpoints over all its slices.
    endpoints: BTreeMap<(String, String), i64>,
    /// Files or documents of a relevant kind that could not be read (file: why).
    problems: Vec<String>,
}

impl Snapshot {
    fn failed(why: String) -> Self {
        Snapshot {
            problems: vec![why],
            ..Snapshot::default()
        }
    }

    /// Reads every `*.yaml`/`*.yml` under `root` (hidden entries skipped, bounded).
    pub fn scan(root: &Path) -> Self {
        let mut snap = Snapshot::default();
        let mut files = Vec::new();
        walk(root, 0, &mut files, &mut snap.problems);
        for file in files {
            match read_file(&file, MAX_MANIFEST_FILE_BYTES) {
                Ok(text) => snap.add_text(&file.display().to_string(), &text),
                Err(e) => snap.problems.push(format!("{}: {e}", file.display())),
            }
        }
        snap
    }

    /// Adds the workloads, pods and slices of one file's text.
    fn add_text(&mut self, file: &str, text: &str) {
        // Only files that may hold a kind read here are parsed.
        if !(text.contains("apps/v1") || text.contains("discovery.k8s.io") || text.contains("Pod"))
        {
            return;
        }
        let docs = match parse_documents_with(text, &MANIFEST_LIMITS) {
            Ok(d) => d,
            Err(e) => {
                self.problems
                    .push(format!("{file} line {}: {}", e.line, e.message));
                return;
            }
        };
        for d in docs {
            self.add(&d.value);
        }
    }

    fn add(&mut self, v: &Value) {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str);
        let (Some(api), Some(kind), Some(name)) =
            (s("/apiVersion"), s("/kind"), s("/metadata/name"))
        else {
            return;
        };
        let namespace = s("/metadata/namespace").unwrap_or("default").to_string();
        let int = |p: &str| v.pointer(p).and_then(Value::as_i64);
        match (api, kind) {
            ("apps/v1", "Deployment" | "StatefulSet") => {
                let kind = if kind == "Deployment" {
                    WorkloadKind::Deployment
                } else {
                    WorkloadKind::StatefulSet
                };
                // Kubernetes omits zero counts; replicas defaults to 1.
                let ready = int("/status/readyReplicas").unwrap_or(0).max(0);
                let wanted = int("/spec/replicas").unwrap_or(1).max(0);
                self.workloads.push(Workload {
                    kind,
                    namespace,
                    name: name.to_string(),
                    ready: ready.min(wanted),
                    template: v.pointer("/spec/template").map(workload_template),
                });
            }
            ("v1", "Pod") => {
                let ready = v
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.get("type").and_then(Value::as_str) == Some("Ready")
                                && c.get("status").and_then(Value::as_str) == Some("True")
                        })
                    });
                let terminating = v.pointer("/metadata/deletionTimestamp").is_some();
                if ready && !terminating {
                    self.pods.push((namespace, labels(v)));
                }
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let Some(service) = labels(v).remove(SERVICE_NAME_LABEL) else {
                    return;
                };
                let ready = v
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .map_or(0, |eps| {
                        eps.iter()
                            .filter(|e| {
                                e.pointer("/conditions/ready").and_then(Value::as_bool)
                                    == Some(true)
                            })
                            .count()
                    });
                *self.endpoints.entry((namespace, service)).or_default() +=
                    i64::try_from(ready).unwrap_or(i64::MAX);
            }
            _ => {}
        }
    }

    /// Why an answer that depends on what is *not* found cannot be trusted now.
    fn unreadable(&self) -> Option<String> {
        let first = self.problems.first()?;
        Some(format!(
            "{} manifest(s) cannot be read ({first})",
            self.problems.len()
        ))
    }

    /// Ready pods of one reference in `namespace`.
    fn count(&self, namespace: &str, r: &WorkloadRef) -> Count {
        if r.from_subset {
            // The canary task turns it into a selector first (readiness::read).
            return Err("a fromSubset reference is not resolved to its subset's labels".into());
        }
        if let (Some(kind), Some(name)) = (r.kind, &r.name) {
            let found: Vec<&Workload> = self
                .workloads
                .iter()
                .filter(|w| w.kind == kind && w.namespace == namespace && &w.name == name)
                .collect();
            return match found.as_slice() {
                [w] => Ok(w.ready),
                [] => Err(match self.unreadable() {
                    Some(why) => format!(
                        "{} {namespace}/{name} not found in --manifests; {why}",
                        kind.as_str()
                    ),
                    None => format!(
                        "{} {namespace}/{name} not found in --manifests",
                        kind.as_str()
                    ),
                }),
                more => Err(format!(
                    "{} {namespace}/{name} is defined {} times in --manifests",
                    kind.as_str(),
                    more.len()
                )),
            };
        }
        let Some(sel) = &r.selector else {
            return Err("workloadRef names no workload".into());
        };
        if let Some(why) = self.unreadable() {
            return Err(format!("ready pods cannot be counted: {why}"));
        }
        let n = self
            .pods
            .iter()
            .filter(|(ns, l)| {
                ns == namespace && sel.match_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .count();
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The readiness `query` asks for.
    pub fn status(
        &self,
        query: &ReadinessQuery,
        now: DateTime<Utc>,
    ) -> super::model::ReadinessStatus {
        let ns = &query.namespace;
        let mut canary = self.count(ns, &query.workload);
        // Traffic reaches the canary Service's endpoints: with slices for it, fewer ready
        // endpoints than pods bound the count.
        if let (Ok(n), Some(svc)) = (&mut canary, &query.canary_service)
            && let Some(eps) = self.endpoints.get(&(ns.clone(), svc.clone()))
        {
            *n = (*n).min(*eps);
        }
        let stable = query.stable.as_ref().map(|s| self.count(ns, s));
        super::readiness::with_template(
            status_of(canary, stable, now),
            self.template(ns, &query.workload),
        )
    }

    /// The pod template of a workload named by kind and name, when it is defined once.
    fn template(&self, namespace: &str, r: &WorkloadRef) -> Option<WorkloadTemplate> {
        let (Some(kind), Some(name)) = (r.kind, &r.name) else {
            return None;
        };
        let mut found = self
            .workloads
            .iter()
            .filter(|w| w.kind == kind && w.namespace == namespace && &w.name == name);
        match (found.next(), found.next()) {
            (Some(w), None) => w.template.clone(),
            _ => None,
        }
    }
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `*.yaml`/`*.yml` under `dir`, sorted, hidden entries and symlinked directories skipped,
/// at most [`MAX_FILES`] files and [`MAX_DEPTH`] levels.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        problems.push(format!(
            "{}: deeper than {MAX_DEPTH} directories, not read",
            dir.display()
        ));
        return;
    }
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(r) => r.filter_map(Result::ok).collect(),
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&path, depth + 1, out, problems),
            Ok(_) if name.ends_with(".yaml") || name.ends_with(".yml") => {
                if out.len() >= MAX_FILES {
                    problems.push(format!(
                        "{}: more than {MAX_FILES} manifest files, the rest not read",
                        dir.display()
                    ));
                    return;
                }
                out.push(path);
            }
            Ok(_) => {}
            Err(err) => problems.push(format!("{}: {err}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::canary::PodSelector;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn deploy(name: &str, replicas: i64, ready: Option<i64>) -> String {
        let status = ready.map_or(String::new(), |r| {
            format!("status: {{readyReplicas: {r}}}\n")
        });
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec: {{replicas: {replicas}}}\n{status}"
        )
    }

    fn query(workload: WorkloadRef, service: Option<&str>) -> ReadinessQuery {
        ReadinessQuery {
            namespace: "bookinfo".into(),
            workload,
            stable: Some(named(WorkloadKind::Deployment, "reviews-v1")),
            canary_service: service.map(String::from),
        }
    }

    fn named(kind: WorkloadKind, name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: Some(kind),
            name: Some(name.into()),
            selector: None,
            from_subset: false,
        }
    }

    fn snap(texts: &[&str]) -> Snapshot {
        let mut s = Snapshot::default();
        for (i, t) in texts.iter().enumerate() {
            s.add_text(&format!("f{i}.yaml"), t);
        }
        s
    }

    #[test]
    fn deployments_and_stateful_sets_count_ready_replicas_up_to_spec_replicas() {
        let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: bookinfo}\nspec: {replicas: 2}\nstatus: {readyReplicas: 5}\n";
        let text = format!(
            "{}---\n{}---\n{sts}",
            deploy("reviews-v2", 3, Some(2)),
            deploy("reviews-v1", 4, None)
        );
        let s = snap(&[&text]);
        let r = s.status(
            &query(named(WorkloadKind::Deployment, "reviews-v2"), None),
            at(1),
        );
        assert_eq!((r.canary_ready, r.stable_ready), (Some(2), Some(0)));
        assert_eq!(r.message, None);
        assert_eq!(r.observed_at, at(1));
        let r = s.status(&query(named(WorkloadKind::StatefulSet, "db"), None), at(1));
        assert_eq!(r.canary_ready, Some(2), "capped by spec.replicas");
        // Same name, other kind or namespace: not it.
        let r = s.status(
            &query(named(WorkloadKind::StatefulSet, "reviews-v2"), None),
            at(1),
        );
        assert_eq!(r.canary_ready, None);
    }

    #[test]
    fn the_canary_workloads_template_is_reported_with_its_images() {
        let with_image = |image: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: reviews-v2, namespace: bookinfo}}\nspec:\n  replicas: 1\n  template:\n    metadata: {{labels: {{app: reviews}}}}\n    spec:\n      containers:\n      - {{name: reviews, image: \"{image}\"}}\nstatus: {{readyReplicas: 1}}\n"
            )
        };
        let q = query(named(WorkloadKind::Deployment, "reviews-v2"), None);
        let a = snap(&[&with_image("reviews:2.1.0")]).status(&q, at(0));
        assert_eq!(a.canary_ready, Some(1), "{a:?}");
        assert_eq!(a.images, ["reviews:2.1.0"]);
        let hash = a.template_hash.clone().unwrap();
        assert_eq!(hash.len(), 10);
        let b = snap(&[&with_image("reviews:2.2.0")]).status(&q, at(0));
        assert_ne!(b.template_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(b.images, ["reviews:2.2.0"]);
        // The same manifest read again: the same hash.
        let again = snap(&[&with_image("reviews:2.1.0")]).status(&q, at(5));
        assert_eq!(again.template_hash, a.template_hash);
        // Missing, duplicated or without a template: no hash.
        let v1 = deploy("reviews-v1", 1, Some(1));
        assert_eq!(snap(&[&v1]).status(&q, at(0)).template_hash, None);
        let twice = with_image("reviews:2.1.0");
        assert_eq!(
            snap(&[&twice, &twice]).status(&q, at(0)).template_hash,
            None
        );
        let bare = deploy("reviews-v2", 1, Some(1));
        assert_eq!(snap(&[&bare]).status(&q, at(0)).template_hash, None);
    }

    #[test]
    fn missing_duplicated_or_possibly_unreadable_workloads_are_unknown() {
        let v1 = deploy("reviews-v1", 1, Some(1));
        let q = query(named(WorkloadKind::Deployment, "reviews-v2"), None);
        let r = snap(&[&v1]).status(&q, at(0));
        assert_eq!(r.canary_ready, None);
        let m = r.message.unwrap();
        assert!(
            m.contains("Deployment bookinfo/reviews-v2 not found"),
            "{m}"
        );
        let v2 = deploy("reviews-v2", 1, Some(1));
        let r = snap(&[&v1, &v2, &v2]).status(&q, at(0));
        assert!(r.message.unwrap().contains("defined 2 times"));
        let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: [\n";
        let r = snap(&[&v1, broken]).status(&q, at(0));
        assert_eq!(r.canary_ready, None);
        let m = r.message.unwrap();
        assert!(
            m.contains("1 manifest(s) cannot be read (f1.yaml line"),
            "{m}"
        );
        // Found elsewhere: a broken unrelated file does not hide it.
        let r = snap(&[&v1, &v2, broken]).status(&q, at(0));
        assert_eq!(r.canary_ready, Some(1));
        // Istio-only files are not parsed here at all.
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: [\n";
        assert!(snap(&[vs]).problems.is_empty());
    }

    #[test]
    fn selector_refs_count_ready_pods_with_every_label() {
        let pod = |name: &str, version: &str, ready: &str, extra: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bookinfo, labels: {{app: reviews, version: {version}}}{extra}}}\nstatus:\n  conditions:\n  - {{type: Ready, status: \"{ready}\"}}\n"
            )
        };
        let text = [
            pod("a", "v2", "True", ""),
            pod("b", "v2", "False", ""),
            pod("c", "v1", "True", ""),
            pod(
                "d",
                "v2",
                "True",
                ", deletionTimestamp: \"2026-01-01T00:00:00Z\"",
            ),
            pod("e", "v2", "True", ""),
        ]
        .join("---\n");
        let sel = WorkloadRef {
            selector: Some(PodSelector {
                match_labels: [("app", "reviews"), ("version", "v2")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            ..WorkloadRef::default()
        };
        let s = snap(&[&text]);
        assert_eq!(s.count("bookinfo", &sel), Ok(2));
        assert_eq!(s.count("other", &sel), Ok(0));
        // A broken manifest may hide ready pods: unknown, not zero (zero would roll back).
        let s = snap(&[&text, "apiVersion: v1\nkind: Pod\nmetadata: [\n"]);
        assert!(s.count("bookinfo", &sel).is_err());
    }

    #[test]
    fn ready_endpoints_of_the_canary_service_bound_the_count() {
        let slice = |name: &str, svc: &str, ready: &[&str]| {
            let eps: String = ready
                .iter()
                .map(|r| format!("- addresses: [10.0.0.1]\n  conditions: {{ready: {r}}}\n"))
                .collect();
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: bookinfo\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\nendpoints:\n{eps}"
            )
        };
        let text = [
            deploy("reviews-v2", 3, Some(3)),
            slice("c1", "reviews-canary", &["true", "false"]),
            slice("c2", "reviews-canary", &["true"]),
            slice("s1", "reviews-stable", &["true", "true", "true", "true"]),
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: c3, namespace: bookinfo, labels: {kubernetes.io/service-name: reviews-canary}}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.9]\n".to_string(),
        ]
        .join("---\n");
        let s = snap(&[&text]);
        let w = named(WorkloadKind::Deployment, "reviews-v2");
        let r = s.status(&query(w.clone(), Some("reviews-canary")), at(0));
        assert_eq!(
            r.canary_ready,
            Some(2),
            "ready: true only, over every slice"
        );
        // No slices for the service (or subset mode): the workload's count alone.
        assert_eq!(
            s.status(&query(w.clone(), Some("nope")), at(0))
                .canary_ready,
            Some(3)
        );
        assert_eq!(s.status(&query(w, None), at(0)).canary_ready, Some(3));
    }

    #[test]
    fn scans_past_the_depth_or_file_count_limit_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for i in 0..=MAX_DEPTH {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("v2.yaml"), deploy("reviews-v2", 1, Some(1))).unwrap();
        let s = Snapshot::scan(dir.path());
        assert!(s.workloads.is_empty(), "{s:?}");
        assert_eq!(s.problems.len(), 1, "{s:?}");
        assert!(
            s.problems[0].contains("deeper than 16 directories"),
            "{s:?}"
        );
        let many = tempfile::tempdir().unwrap();
        for i in 0..=MAX_FILES {
            std::fs::write(many.path().join(format!("f{i:05}.yaml")), "").unwrap();
        }
        let s = Snapshot::scan(many.path());
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(
            s.problems[0].contains("more than 10000 manifest files"),
            "{:?}",
            s.problems
        );
    }

    #[test]
    fn a_scan_reads_nested_files_skips_hidden_ones_and_reports_oversized_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("apps/.git")).unwrap();
        std::fs::write(
            dir.path().join("apps/v2.yaml"),
            deploy("reviews-v2", 2, Some(2)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("apps/.git/x.yaml"),
            deploy("reviews-v1", 2, Some(2)),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "kind: Pod [").unwrap();
        let s = Snapshot::scan(dir.path());
        assert_eq!(s.workloads.len(), 1, "{s:?}");
        assert!(s.problems.is_empty(), "{s:?}");
        let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
        big.set_len(MAX_MANIFEST_FILE_BYTES + 1).unwrap();
        let s = Snapshot::scan(dir.path());
        assert_eq!(s.problems.len(), 1, "{s:?}");
        assert!(s.problems[0].contains("big.yaml"), "{s:?}");
    }
}
