use super::*;
use crate::resources::canary::PodSelector;

fn deploy(name: &str) -> WorkloadRef {
    WorkloadRef {
        kind: Some(WorkloadKind::Deployment),
        name: Some(name.into()),
        selector: None,
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
    let sel = WorkloadRef {
        kind: None,
        name: None,
        selector: Some(PodSelector {
            match_labels: [("app".to_string(), "x".to_string())].into(),
        }),
    };
    assert!(
        idx.workload_ready("ns", &sel)
            .unwrap_err()
            .contains("pod selector")
    );
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
