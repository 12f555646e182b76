use super::*;
use crate::resources::canary::PodSelector;

fn deploy(name: &str) -> WorkloadRef {
    WorkloadRef {
        kind: Some(WorkloadKind::Deployment),
        name: Some(name.into()),
        selector: None,
        from_subset: false,
    }
}

fn key(ns: &str, name: &str) -> Key {
    (ns.into(), name.into())
}

fn count(ready: i64) -> WorkloadCount {
    WorkloadCount {
        ready: Ok(ready),
        template: None,
    }
}

fn slice(service: &str, ty: &str, ready: i64) -> SliceCount {
    SliceCount {
        service: service.into(),
        address_type: ty.into(),
        ready,
    }
}

fn listed<V>(items: Vec<(Key, V)>) -> Table<V> {
    let mut t = Table::default();
    t.apply(Seen::Init);
    for (k, v) in items {
        t.apply(Seen::InitItem(k, v));
    }
    t.apply(Seen::InitDone);
    t
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

#[test]
fn never_listed_or_failed_watches_are_unknown_until_a_complete_relist() {
    let mut idx = Index::default();
    let r = idx.readiness("ns", &deploy("v2"), None, None, now());
    assert_eq!(r.canary_ready, None);
    assert!(r.message.unwrap().contains("not listed yet"));
    // An unfinished list is not a list.
    idx.deployments.apply(Seen::Init);
    idx.deployments
        .apply(Seen::InitItem(key("ns", "v2"), count(3)));
    assert_eq!(idx.workload_ready("ns", &deploy("v2")).ok(), None);
    idx.deployments.apply(Seen::InitDone);
    assert_eq!(idx.workload_ready("ns", &deploy("v2")), Ok(3));
    // An error forgets nothing but trusts nothing until the relist completes.
    idx.deployments
        .apply(Seen::Error("connection reset".into()));
    let e = idx.workload_ready("ns", &deploy("v2")).unwrap_err();
    assert!(e.contains("connection reset"), "{e}");
    idx.deployments.apply(Seen::Init);
    idx.deployments
        .apply(Seen::Upsert(key("ns", "v2"), count(1)));
    assert!(idx.workload_ready("ns", &deploy("v2")).is_err());
    idx.deployments
        .apply(Seen::InitItem(key("ns", "v2"), count(2)));
    idx.deployments.apply(Seen::InitDone);
    assert_eq!(idx.workload_ready("ns", &deploy("v2")), Ok(2));
}

#[test]
fn updates_deletes_missing_workloads_and_selectors() {
    let mut idx = Index {
        deployments: listed(vec![(key("ns", "v2"), count(0))]),
        ..Index::default()
    };
    assert_eq!(idx.workload_ready("ns", &deploy("v2")), Ok(0));
    idx.deployments
        .apply(Seen::Upsert(key("ns", "v2"), count(2)));
    assert_eq!(idx.workload_ready("ns", &deploy("v2")), Ok(2));
    // Another namespace's Deployment of the same name is another workload.
    assert!(idx.workload_ready("other", &deploy("v2")).is_err());
    idx.deployments.apply(Seen::Delete(key("ns", "v2")));
    let e = idx.workload_ready("ns", &deploy("v2")).unwrap_err();
    assert_eq!(e, "Deployment ns/v2 not found");
    // StatefulSets are their own kind.
    let sts = WorkloadRef {
        kind: Some(WorkloadKind::StatefulSet),
        ..deploy("v2")
    };
    assert!(idx.workload_ready("ns", &sts).is_err());
    idx.stateful_sets = listed(vec![(key("ns", "v2"), count(4))]);
    assert_eq!(idx.workload_ready("ns", &sts), Ok(4));
    // Pods are not listed until a selector asks for them.
    let sel = selector(&[("app", "x")]);
    assert_eq!(
        idx.workload_ready("ns", &sel).unwrap_err(),
        "Pods are not listed yet"
    );
    // An unresolved fromSubset reference is never counted.
    let sub = WorkloadRef {
        from_subset: true,
        ..sel.clone()
    };
    idx.pods = listed(Vec::new());
    assert!(
        idx.workload_ready("ns", &sub)
            .unwrap_err()
            .contains("fromSubset")
    );
}

fn selector(labels: &[(&str, &str)]) -> WorkloadRef {
    WorkloadRef {
        selector: Some(PodSelector {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        ..WorkloadRef::default()
    }
}

fn pod(name: &str, labels: serde_json::Value, ready: &str, terminating: bool) -> Pod {
    let mut meta = serde_json::json!({"name": name, "namespace": "ns", "labels": labels});
    if terminating {
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "status": {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": ready}
        ]}
    }))
    .unwrap()
}

#[test]
fn only_ready_pods_that_are_not_terminating_are_kept_with_their_labels() {
    let v2 = serde_json::json!({"app": "reviews", "version": "v2"});
    let kept = ready_pod(&pod("a", v2.clone(), "True", false)).unwrap();
    assert_eq!(
        kept.matches(
            &selector(&[("version", "v2")])
                .selector
                .unwrap()
                .match_labels
        ),
        Some(true)
    );
    assert_eq!(ready_pod(&pod("b", v2.clone(), "False", false)), None);
    assert_eq!(ready_pod(&pod("c", v2.clone(), "True", true)), None);
    let mut no_status = pod("d", v2, "True", false);
    no_status.status = None;
    assert_eq!(ready_pod(&no_status), None);
}

#[test]
fn selectors_count_ready_pods_in_the_namespace_with_every_label() {
    let entry = |name: &str, labels: serde_json::Value| {
        let mut p = pod(name, labels, "True", false);
        p.metadata.namespace = Some(
            if name.starts_with("other") {
                "other"
            } else {
                "ns"
            }
            .into(),
        );
        (
            key(p.metadata.namespace.as_deref().unwrap(), name),
            ready_pod(&p).unwrap(),
        )
    };
    let mut idx = Index {
        pods: listed(vec![
            entry(
                "r2-a",
                serde_json::json!({"app": "reviews", "version": "v2"}),
            ),
            entry(
                "r2-b",
                serde_json::json!({"app": "reviews", "version": "v2", "x": "y"}),
            ),
            entry(
                "r1-a",
                serde_json::json!({"app": "reviews", "version": "v1"}),
            ),
            // bookinfo's other apps carry version labels too.
            entry(
                "ratings",
                serde_json::json!({"app": "ratings", "version": "v2"}),
            ),
            entry(
                "other-r2",
                serde_json::json!({"app": "reviews", "version": "v2"}),
            ),
        ]),
        ..Index::default()
    };
    let r2 = selector(&[("app", "reviews"), ("version", "v2")]);
    assert_eq!(idx.workload_ready("ns", &r2), Ok(2));
    assert_eq!(
        idx.workload_ready("ns", &selector(&[("version", "v2")])),
        Ok(3)
    );
    assert_eq!(idx.workload_ready("other", &r2), Ok(1));
    assert_eq!(idx.workload_ready("empty", &r2), Ok(0));
    assert_eq!(
        idx.workload_ready("ns", &selector(&[("app", "nope")])),
        Ok(0)
    );
    // A pod turning unready is dropped; one turning ready is added.
    idx.pods.apply(Seen::Delete(key("ns", "r2-a")));
    assert_eq!(idx.workload_ready("ns", &r2), Ok(1));
    let r = idx.readiness(
        "ns",
        &r2,
        Some(&selector(&[("version", "v1")])),
        None,
        now(),
    );
    assert_eq!(
        (r.canary_ready, r.stable_ready, r.message),
        (Some(1), Some(1), None)
    );
    // A watch error: unknown until listed again.
    idx.pods.apply(Seen::Error("gone".into()));
    assert!(
        idx.workload_ready("ns", &r2)
            .unwrap_err()
            .contains("Pods failed")
    );
}

#[test]
fn pods_with_more_labels_than_kept_are_unknown_for_a_selector_past_them() {
    let many: serde_json::Map<String, serde_json::Value> = (0..MAX_POD_LABELS + 1)
        .map(|i| (format!("l{i:03}"), "x".into()))
        .collect();
    let p = ready_pod(&pod("big", many.into(), "True", false)).unwrap();
    assert_eq!(p.labels.len(), MAX_POD_LABELS);
    let idx = Index {
        pods: listed(vec![(key("ns", "big"), p)]),
        ..Index::default()
    };
    // Labels within the kept ones decide; one past them cannot be decided: unknown, not 0.
    assert_eq!(idx.workload_ready("ns", &selector(&[("l000", "x")])), Ok(1));
    assert_eq!(idx.workload_ready("ns", &selector(&[("l000", "z")])), Ok(0));
    let e = idx
        .workload_ready("ns", &selector(&[(&format!("l{MAX_POD_LABELS:03}"), "x")]))
        .unwrap_err();
    assert!(e.contains("more than 64 labels"), "{e}");
}

#[test]
fn an_unobserved_generation_is_unknown_and_missing_ready_replicas_is_zero() {
    let mut d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "v2", "namespace": "ns", "generation": 2},
        "status": {"observedGeneration": 1, "readyReplicas": 3}
    }))
    .unwrap();
    assert!(
        deployment_count(&d)
            .ready
            .unwrap_err()
            .contains("generation 2")
    );
    d.status.as_mut().unwrap().observed_generation = Some(2);
    assert_eq!(deployment_count(&d).ready, Ok(3));
    d.status.as_mut().unwrap().ready_replicas = None;
    assert_eq!(deployment_count(&d).ready, Ok(0));
    d.status = None;
    assert!(deployment_count(&d).ready.is_err());
}

#[test]
fn slices_count_ready_endpoints_per_service_and_address_type() {
    let s: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "reviews-canary-abc", "namespace": "ns",
                     "labels": {"kubernetes.io/service-name": "reviews-canary"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"]}
        ]
    }))
    .unwrap();
    assert_eq!(slice_count(&s), Some(slice("reviews-canary", "IPv4", 2)));
    let mut orphan = s.clone();
    orphan.metadata.labels = None;
    assert_eq!(slice_count(&orphan), None);

    let idx = Index {
        deployments: listed(vec![(key("ns", "v2"), count(3))]),
        slices: listed(vec![
            (key("ns", "a"), slice("reviews-canary", "IPv4", 1)),
            (key("ns", "b"), slice("reviews-canary", "IPv4", 1)),
            // The same pods in the IPv6 family: not counted twice.
            (key("ns", "c"), slice("reviews-canary", "IPv6", 2)),
            (key("ns", "d"), slice("reviews", "IPv4", 5)),
            (key("other", "e"), slice("reviews-canary", "IPv4", 9)),
        ]),
        ..Index::default()
    };
    assert_eq!(idx.service_ready("ns", "reviews-canary"), Ok(2));
    assert_eq!(
        idx.service_ready("x", "reviews-canary.ns.svc.cluster.local"),
        Ok(2)
    );
    assert_eq!(idx.service_ready("other", "reviews-canary"), Ok(9));
    assert_eq!(idx.service_ready("ns", "ratings"), Ok(0));
    // The canary counts the fewer of its workload's ready pods and its Service's endpoints.
    let r = idx.readiness("ns", &deploy("v2"), None, Some("reviews-canary"), now());
    assert_eq!((r.canary_ready, r.message), (Some(2), None));
    let r = idx.readiness(
        "ns",
        &deploy("v2"),
        Some(&deploy("v1")),
        Some("ratings"),
        now(),
    );
    assert_eq!(r.canary_ready, Some(0));
    assert_eq!(r.stable_ready, None);
    assert!(
        r.message
            .unwrap()
            .contains("stable: Deployment ns/v1 not found")
    );
    let r = idx.readiness("other", &deploy("v2"), None, Some("reviews-canary"), now());
    assert_eq!(r.canary_ready, None);
}

#[test]
fn more_objects_than_the_bound_are_not_kept_and_make_the_kind_unknown() {
    let many = |n: usize| {
        (0..n)
            .map(|i| (key("ns", &format!("d{i}")), count(1)))
            .collect()
    };
    let mut idx = Index {
        deployments: listed(many(MAX_OBJECTS + 1)),
        ..Index::default()
    };
    assert_eq!(idx.deployments.items.len(), MAX_OBJECTS);
    let e = idx.workload_ready("ns", &deploy("d0")).unwrap_err();
    assert!(e.contains("--namespace"), "{e}");
    // A list that fits again is trusted again; an update past the bound is not.
    idx.deployments = listed(many(MAX_OBJECTS));
    assert_eq!(idx.workload_ready("ns", &deploy("d0")), Ok(1));
    idx.deployments
        .apply(Seen::Upsert(key("ns", "d0"), count(2)));
    assert_eq!(idx.workload_ready("ns", &deploy("d0")), Ok(2));
    idx.deployments
        .apply(Seen::Upsert(key("ns", "new"), count(2)));
    assert!(idx.workload_ready("ns", &deploy("d0")).is_err());
    assert_eq!(idx.deployments.items.len(), MAX_OBJECTS);
}

/// Polls `f` until it holds (generous deadline; no timing is asserted).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_watchers_follow_the_api_server_and_a_failed_watch_is_unknown_until_relisted() {
    crate::testkit::install_crypto_provider();
    let fake = crate::testkit::FakeApiServer::new();
    fake.seed(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "v2", "namespace": "ns"},
        "spec": {"selector": {"matchLabels": {"app": "r"}},
            "template": {"metadata": {"labels": {"app": "r"}}, "spec": {"containers": []}}},
        "status": {"observedGeneration": 1, "readyReplicas": 2}
    }))
    .unwrap();
    fake.seed(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "c-1", "namespace": "ns",
            "labels": {"kubernetes.io/service-name": "canary"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false}}]
    }))
    .unwrap();
    // The first lists of Deployments fail: unknown, with why, until one succeeds.
    fake.fail_next(Some("GET"), "/deployments", 3, 500);
    let (feed, tasks) = ClusterReadiness::start(fake.client(), Some("ns".into()));
    let read = || feed.current("ns", &deploy("v2"), None, Some("canary"), now());
    eventually("the failed list is reported", || {
        let r = read();
        r.canary_ready.is_none() && r.message.is_some_and(|m| m.contains("Deployments failed"))
    })
    .await;
    // Listed: the fewer of 2 ready pods and 0 ready endpoints.
    eventually("listed", || read().canary_ready == Some(0)).await;
    fake.update("discovery.k8s.io", "endpointslices", "ns", "c-1", |o| {
        o["endpoints"][0]["conditions"]["ready"] = true.into();
    })
    .unwrap();
    eventually("the endpoint is ready", || read().canary_ready == Some(1)).await;
    // A watch that cannot be resumed: unknown until listed again.
    fake.fail_next(Some("GET"), "endpointslices", 3, 500);
    fake.drop_watches();
    eventually("the failed watch is reported", || {
        read()
            .message
            .is_some_and(|m| m.contains("EndpointSlices failed"))
    })
    .await;
    eventually("listed again", || read().canary_ready == Some(1)).await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn pods_are_watched_only_once_a_selector_is_asked_about() {
    crate::testkit::install_crypto_provider();
    let fake = crate::testkit::FakeApiServer::new();
    fake.seed(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "r2-a", "namespace": "ns", "labels": {"app": "r", "version": "v2"}},
        "spec": {"containers": [{"name": "r", "image": "r:2"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}
    }))
    .unwrap();
    let (feed, tasks) = ClusterReadiness::start(fake.client(), Some("ns".into()));
    let pods_requested = || fake.requests().iter().any(|r| r.path.ends_with("/pods"));
    eventually("Deployments listed", || {
        feed.current("ns", &deploy("v2"), None, None, now())
            .message
            .is_some_and(|m| m.contains("not found"))
    })
    .await;
    // Names only: the Pods are never listed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pods_requested(), "{:?}", fake.requests());
    // The first selector starts the Pod watch; the count follows the pod's readiness.
    let sel = selector(&[("version", "v2")]);
    let read = || feed.current("ns", &sel, None, None, now());
    assert_eq!(read().message.as_deref(), Some("Pods are not listed yet"));
    eventually("listed", || read().canary_ready == Some(0)).await;
    assert!(pods_requested());
    fake.update_status("", "pods", "ns", "r2-a", |o| {
        o["status"]["conditions"][0]["status"] = "True".into();
    })
    .unwrap();
    eventually("the pod is ready", || read().canary_ready == Some(1)).await;
    fake.delete("", "pods", "ns", "r2-a").unwrap();
    eventually("the pod is gone", || read().canary_ready == Some(0)).await;
    for t in tasks {
        t.abort();
    }
}

#[test]
fn workloads_report_their_template_hash_and_images() {
    let deployment = |image: &str| -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "v2", "namespace": "ns", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "r"}},
                "template": {"metadata": {"labels": {"app": "r"}},
                    "spec": {"containers": [{"name": "r", "image": image}]}}},
            // The controller has not seen generation 3: the count is unknown, the
            // template is not (a new template starts a run before its pods exist).
            "status": {"observedGeneration": 2, "readyReplicas": 3}
        }))
        .unwrap()
    };
    let a = deployment_count(&deployment("reviews:2.1.0"));
    assert!(a.ready.is_err());
    let t = a.template.clone().unwrap();
    assert_eq!(t.images, ["reviews:2.1.0"]);
    assert_eq!(t.hash.len(), 10);
    let b = deployment_count(&deployment("reviews:2.2.0"));
    assert_ne!(b.template.as_ref().unwrap().hash, t.hash);
    let mut idx = Index::default();
    idx.deployments.apply(Seen::Init);
    idx.deployments
        .apply(Seen::InitItem(("ns".into(), "v2".into()), a));
    idx.deployments.apply(Seen::InitDone);
    let w = WorkloadRef {
        kind: Some(WorkloadKind::Deployment),
        name: Some("v2".into()),
        selector: None,
        from_subset: false,
    };
    let r = idx.readiness("ns", &w, None, None, chrono::DateTime::UNIX_EPOCH);
    assert_eq!(r.canary_ready, None);
    assert_eq!(r.template_hash.as_deref(), Some(t.hash.as_str()));
    assert_eq!(r.images, ["reviews:2.1.0"]);
    // Missing workload or a failed watch: no template.
    let r = idx.readiness("other", &w, None, None, chrono::DateTime::UNIX_EPOCH);
    assert_eq!((r.template_hash, r.images.len()), (None, 0));
    idx.deployments.apply(Seen::Error("gone".into()));
    assert_eq!(idx.workload_template("ns", &w), None);
    // A StatefulSet's template too.
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "db:7"}]}}}
    }))
    .unwrap();
    assert_eq!(
        stateful_set_count(&sts).template.map(|t| t.images),
        Some(vec!["db:7".to_string()])
    );
}

#[test]
fn during_a_rollout_only_pods_surely_of_the_new_template_count() {
    let d = |status: serde_json::Value| -> Deployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "v2", "namespace": "ns", "generation": 2},
            "status": status
        }))
        .unwrap()
    };
    let ready = |status| deployment_count(&d(status)).ready;
    // Two old pods ready, one new pod (surge) not ready: none surely new.
    assert_eq!(
        ready(serde_json::json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 1, "readyReplicas": 2})),
        Ok(0)
    );
    // The new pod ready too: at least one new.
    assert_eq!(
        ready(serde_json::json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 1, "readyReplicas": 3})),
        Ok(1)
    );
    // No new pod yet (Kubernetes omits updatedReplicas: 0).
    assert_eq!(
        ready(serde_json::json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2})),
        Ok(0)
    );
    // Rolled out.
    assert_eq!(
        ready(serde_json::json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 2})),
        Ok(2)
    );
    // A StatefulSet the same way.
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "ns", "generation": 1},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}}},
        "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1,
            "readyReplicas": 3}
    }))
    .unwrap();
    assert_eq!(stateful_set_count(&sts).ready, Ok(1));
}
