//! KubeSource against the in-process fake API server.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::Receiver;

use super::*;
use crate::canary::CanaryPhase;
use crate::state::kube_status::KubeStatusStore;
use crate::testkit::FakeApiServer;

const WAIT: Duration = Duration::from_secs(5);
/// Long enough for a suppressed event to have shown up if it were sent.
const QUIET: Duration = Duration::from_millis(300);

fn canary(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "reviews"}},
        "spec": {
            "revision": "v2",
            "trafficRouting": {"istio": {
                // One VirtualService per Canary: two on one route are refused.
                "virtualService": {"name": name, "routes": ["primary"]},
                "destinationRule": {"name": "reviews", "stableSubsetName": "v1", "canarySubsetName": "v2"},
            }},
            "analysis": {"templates": [{"templateName": "apdex"}], "args": [{"name": "service", "value": "reviews"}]},
            "steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}],
        },
    })
}

fn template(kind: &str, ns: Option<&str>, name: &str) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "skycanary.io/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [{
                "name": "apdex",
                "successCondition": "min(result) >= 9900",
                "provider": {"skywalking": {"window": "5m", "metric": "service_apdex",
                    "entity": {"serviceName": "{{args.service}}"}}},
            }],
        },
    })
}

/// Two namespaces, both template kinds, and one Canary with an unknown field.
fn seeded() -> FakeApiServer {
    let fake = FakeApiServer::new();
    fake.seed(canary("bookinfo", "reviews")).expect("seed");
    fake.seed(canary("shop", "cart")).expect("seed");
    let mut bad = canary("bookinfo", "broken");
    bad["spec"]["trafficRouting"]["bogus"] = json!(true);
    fake.seed(bad).expect("seed");
    fake.seed(template("AnalysisTemplate", Some("bookinfo"), "apdex"))
        .expect("seed");
    fake.seed(template("AnalysisTemplate", Some("shop"), "apdex"))
        .expect("seed");
    fake.seed(template("ClusterAnalysisTemplate", None, "sla"))
        .expect("seed");
    fake
}

fn names(s: &Snapshot) -> Vec<String> {
    s.canaries
        .iter()
        .map(|c| format!("{}/{}", c.canary.namespace(), c.canary.doc.metadata.name))
        .collect()
}

fn template_names(s: &Snapshot) -> Vec<String> {
    s.templates
        .iter()
        .map(|t| {
            format!(
                "{}:{}/{}",
                t.doc.kind,
                t.doc.metadata.namespace.as_deref().unwrap_or("-"),
                t.doc.metadata.name
            )
        })
        .collect()
}

fn source(fake: &FakeApiServer, ns: Option<&str>) -> KubeSource {
    KubeSource::new(fake.client(), ns.map(str::to_string))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// The next Changed snapshot; Error events are returned as Err.
async fn next(rx: &mut Receiver<SourceEvent>) -> Result<Snapshot, String> {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(SourceEvent::Changed(s))) => Ok(*s),
        Ok(Some(SourceEvent::Error(e))) => Err(e),
        Ok(None) => Err("channel closed".into()),
        Err(_) => Err("no event within the deadline".into()),
    }
}

/// Skips Error events (retries in progress) until a snapshot arrives.
async fn next_snapshot(rx: &mut Receiver<SourceEvent>) -> Snapshot {
    for _ in 0..20 {
        match next(rx).await {
            Ok(s) => return s,
            Err(e) if e.contains("deadline") || e.contains("closed") => panic!("{e}"),
            Err(_) => continue,
        }
    }
    panic!("only errors");
}

async fn assert_quiet(rx: &mut Receiver<SourceEvent>) {
    if let Ok(Some(ev)) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("unexpected event {ev:?}");
    }
}

fn canary_lists(fake: &FakeApiServer) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.ends_with("/canaries")
                && !r.query.as_deref().unwrap_or_default().contains("watch=")
        })
        .count()
}

fn set_weight(fake: &FakeApiServer, ns: &str, name: &str, w: i64) {
    fake.update("skycanary.io", "canaries", ns, name, |o| {
        o["spec"]["steps"][0]["setWeight"] = json!(w);
    })
    .expect("spec edit");
}

fn first_weight(s: &Snapshot, name: &str) -> Option<(i64, Option<i64>)> {
    let c = s
        .canaries
        .iter()
        .find(|c| c.canary.doc.metadata.name == name)?;
    let v = serde_json::to_value(&c.canary.doc.spec.steps).ok()?;
    Some((v[0]["setWeight"].as_i64()?, c.generation))
}

#[tokio::test]
async fn snapshot_returns_valid_objects_and_reports_invalid_ones() {
    let fake = seeded();
    let snap = source(&fake, None).snapshot().await.expect("snapshot");
    assert_eq!(names(&snap), ["bookinfo/reviews", "shop/cart"]);
    assert_eq!(
        template_names(&snap),
        [
            "AnalysisTemplate:bookinfo/apdex",
            "AnalysisTemplate:shop/apdex",
            "ClusterAnalysisTemplate:-/sla"
        ]
    );
    let reviews = &snap.canaries[0];
    assert_eq!(reviews.generation, Some(1));
    assert!(reviews.uid.is_some());
    assert_eq!(reviews.canary.origin.file, "kube:Canary/bookinfo/reviews");
    assert!(snap.templates.iter().any(|t| t.cluster_scoped()));

    assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
    let (id, errs) = &snap.errors[0];
    assert_eq!(id.to_string(), "Canary/bookinfo/broken");
    assert!(
        errs.iter().any(|e| e.path.contains("trafficRouting")
            && e.message.contains("bogus")
            && e.file == "kube:Canary/bookinfo/broken"
            && e.line.is_none()),
        "{errs:?}"
    );
    let rv = fake.resource_version().to_string();
    assert_eq!(snap.resource_version.canaries, rv);
    assert_eq!(snap.resource_version.cluster_templates, rv);
}

#[tokio::test]
async fn snapshot_keeps_only_the_command_request_of_a_canary_status() {
    let fake = seeded();
    let client = fake.client();
    let store = KubeStatusStore::new(client.clone());
    let status = crate::canary::CanaryStatus {
        phase: CanaryPhase::Progressing,
        current_step_index: 1,
        desired_weight: 10,
        observed_generation: Some(1),
        ..Default::default()
    };
    store
        .save("bookinfo", "reviews", &status)
        .await
        .expect("save");
    let snap = source(&fake, None).snapshot().await.expect("snapshot");
    assert_eq!(snap.canaries[0].canary.doc.status, None);
    assert_eq!(snap.canaries[0].command_request(), None);
    let req: crate::canary::CommandRequest = serde_json::from_value(json!({
        "id": "r1", "action": "abort", "requestedAt": "2026-01-01T00:00:00Z"
    }))
    .expect("request");
    crate::state::kube_status::write_request(&client, "bookinfo", "reviews", &req)
        .await
        .expect("request written");
    let snap = source(&fake, None).snapshot().await.expect("snapshot");
    assert_eq!(snap.canaries[0].command_request(), Some(req.clone()));
    assert_eq!(
        snap.canaries[0].canary.doc.status,
        Some(json!({ "command": serde_json::to_value(&req).expect("json") }))
    );
    assert_eq!(snap.canaries[1].command_request(), None);
    let reqs = snap.command_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].0.as_str(), reqs[0].1.as_str()),
        ("bookinfo", "reviews")
    );
}

#[test]
fn kept_objects_drop_server_bookkeeping_and_kubectl_copies() {
    let object = |rv: &str, weight: i64, command: Value| -> SourceObject {
        serde_json::from_value(json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "generation": 3,
                         "resourceVersion": rv, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "managedFields": [{"manager": "kubectl"}],
                         "labels": {"team": "a"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                                         "note": "kept"}},
            "spec": {"steps": [{"setWeight": weight}]},
            "status": {"phase": "Progressing", "analysisRuns": [{"name": "r"}], "command": command}
        }))
        .expect("object")
    };
    let (id, body, command) = trimmed_object(SourceKind::Canary, object("77", 10, Value::Null));
    assert_eq!(id.name, "c");
    assert_eq!(command, None);
    assert_eq!(
        body,
        json!({
            "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "generation": 3,
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"team": "a"}, "annotations": {"note": "kept"}},
            "spec": {"steps": [{"setWeight": 10}]}
        })
    );
    // What is kept does not change with the resourceVersion or the rest of the status; the
    // command is kept apart, and the spec is compared.
    let (_, a) = kept_object(SourceKind::Canary, object("77", 10, Value::Null));
    let (_, b) = kept_object(SourceKind::Canary, object("78", 10, json!({"id": "x"})));
    let (_, c) = kept_object(SourceKind::Canary, object("79", 20, Value::Null));
    assert_eq!(a.body, b.body);
    assert_eq!((a.command.is_none(), b.command.is_some()), (true, true));
    assert_ne!(a.body, c.body);
    assert_eq!(object_value(&b)["status"], json!({"command": {"id": "x"}}));
    assert_eq!(object_value(&a).get("status"), None);
}

#[tokio::test]
async fn namespace_scoped_source_lists_one_namespace_and_cluster_templates() {
    let fake = seeded();
    fake.clear_requests();
    let snap = source(&fake, Some("bookinfo"))
        .snapshot()
        .await
        .expect("snapshot");
    assert_eq!(names(&snap), ["bookinfo/reviews"]);
    assert_eq!(
        template_names(&snap),
        [
            "AnalysisTemplate:bookinfo/apdex",
            "ClusterAnalysisTemplate:-/sla"
        ]
    );
    assert_eq!(snap.errors.len(), 1);
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/apis/skycanary.io/v1alpha1/namespaces/bookinfo/canaries",
            "/apis/skycanary.io/v1alpha1/namespaces/bookinfo/analysistemplates",
            "/apis/skycanary.io/v1alpha1/clusteranalysistemplates",
            "/apis/skycanary.io/v1alpha1/namespaces/bookinfo/scheduledanalyses",
        ]
    );
}

#[tokio::test]
async fn snapshot_list_failure_is_an_error() {
    let fake = seeded();
    fake.fail_next(Some("GET"), "analysistemplates", 1, 500);
    match source(&fake, None).snapshot().await {
        Err(SourceError::List { kind, message }) => {
            assert_eq!(kind, SourceKind::AnalysisTemplate);
            assert!(message.contains("500"), "{message}");
        }
        other => panic!("expected a list error, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_reports_spec_changes_and_new_canaries_but_not_status_writes() {
    let fake = seeded();
    let mut rx = source(&fake, None).watch();
    let first = next_snapshot(&mut rx).await;
    assert_eq!(names(&first), ["bookinfo/reviews", "shop/cart"]);
    assert_eq!(first.errors.len(), 1);

    set_weight(&fake, "bookinfo", "reviews", 20);
    let s = next_snapshot(&mut rx).await;
    assert_eq!(first_weight(&s, "reviews"), Some((20, Some(2))));

    fake.seed(canary("bookinfo", "ratings")).expect("seed");
    let s = next_snapshot(&mut rx).await;
    assert_eq!(
        names(&s),
        ["bookinfo/ratings", "bookinfo/reviews", "shop/cart"]
    );

    // The daemon's own status write: no event.
    let store = KubeStatusStore::new(fake.client());
    let status = crate::canary::CanaryStatus {
        phase: CanaryPhase::Paused,
        current_step_index: 1,
        desired_weight: 20,
        observed_generation: Some(2),
        ..Default::default()
    };
    store
        .save("bookinfo", "reviews", &status)
        .await
        .expect("status");
    assert_quiet(&mut rx).await;

    // The next event is the next spec change (drivers read the status from the store).
    set_weight(&fake, "bookinfo", "reviews", 30);
    let s = next_snapshot(&mut rx).await;
    assert_eq!(first_weight(&s, "reviews"), Some((30, Some(3))));
    assert_eq!(
        store.load("bookinfo", "reviews").await.expect("load"),
        Some(status)
    );

    // Deleting a Canary and fixing the broken one.
    fake.delete("skycanary.io", "canaries", "shop", "cart")
        .expect("delete");
    let s = next_snapshot(&mut rx).await;
    assert_eq!(names(&s), ["bookinfo/ratings", "bookinfo/reviews"]);
    fake.update("skycanary.io", "canaries", "bookinfo", "broken", |o| {
        if let Some(tr) = o
            .pointer_mut("/spec/trafficRouting")
            .and_then(Value::as_object_mut)
        {
            tr.remove("bogus");
        }
    })
    .expect("fix");
    let s = next_snapshot(&mut rx).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.canaries.len(), 3);
}

#[tokio::test]
async fn watch_sees_template_changes() {
    let fake = seeded();
    let mut rx = source(&fake, Some("bookinfo")).watch();
    let first = next_snapshot(&mut rx).await;
    assert_eq!(first.templates.len(), 2);
    fake.seed(template("ClusterAnalysisTemplate", None, "latency"))
        .expect("seed");
    let s = next_snapshot(&mut rx).await;
    assert_eq!(s.templates.len(), 3);
    // Another namespace is not watched.
    fake.seed(template("AnalysisTemplate", Some("shop"), "other"))
        .expect("seed");
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn watch_resumes_after_a_dropped_watch_without_relisting() {
    let fake = seeded();
    let mut rx = source(&fake, None).watch();
    next_snapshot(&mut rx).await;
    let lists = canary_lists(&fake);
    // Hold the re-watches so the change lands while no watch is open.
    fake.delay_next(Some("GET"), "watch=", 3, Duration::from_millis(200));
    fake.drop_watches();
    set_weight(&fake, "bookinfo", "reviews", 40);
    let s = next_snapshot(&mut rx).await;
    assert_eq!(first_weight(&s, "reviews"), Some((40, Some(2))));
    assert_eq!(canary_lists(&fake), lists, "a dropped watch resumes");
}

#[tokio::test]
async fn watch_relists_after_compaction() {
    let fake = seeded();
    let mut rx = source(&fake, None).watch();
    next_snapshot(&mut rx).await;
    let lists = canary_lists(&fake);
    fake.delay_next(Some("GET"), "watch=", 3, Duration::from_millis(200));
    fake.drop_watches();
    set_weight(&fake, "bookinfo", "reviews", 60);
    fake.seed(canary("bookinfo", "ratings")).expect("seed");
    fake.compact();
    let s = next_snapshot(&mut rx).await;
    assert_eq!(first_weight(&s, "reviews"), Some((60, Some(2))));
    assert_eq!(
        names(&s),
        ["bookinfo/ratings", "bookinfo/reviews", "shop/cart"]
    );
    assert!(canary_lists(&fake) > lists, "410 must relist");
    // Still watching after the relist.
    set_weight(&fake, "bookinfo", "reviews", 70);
    let s = next_snapshot(&mut rx).await;
    assert_eq!(first_weight(&s, "reviews"), Some((70, Some(3))));
}

#[tokio::test]
async fn watch_reports_errors_and_retries() {
    let fake = seeded();
    fake.fail_next(Some("GET"), "/canaries", 2, 500);
    let mut rx = source(&fake, None).watch();
    let err = next(&mut rx).await.err().unwrap_or_default();
    assert!(err.contains("listing Canary objects"), "{err}");
    let s = next_snapshot(&mut rx).await;
    assert_eq!(names(&s), ["bookinfo/reviews", "shop/cart"]);
}

#[tokio::test]
async fn watch_stops_when_the_receiver_is_dropped() {
    let fake = seeded();
    let mut rx = source(&fake, None).watch();
    next_snapshot(&mut rx).await;
    drop(rx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = fake.requests().len();
    fake.drop_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.requests().len(),
        before,
        "no re-watch after the receiver is gone"
    );
}

/// Issue 15 item 10: of two Canaries on one route, the later one (by creationTimestamp, then
/// name) is refused as an invalid object; the earlier one and unrelated ones run.
#[test]
fn the_later_of_two_canaries_on_one_route_is_refused() {
    let object = |ns: &str, name: &str, created: Option<&str>, vs: &str| {
        let mut v = canary(ns, name);
        v["spec"]["trafficRouting"]["istio"]["virtualService"]["name"] = json!(vs);
        if let Some(t) = created {
            v["metadata"]["creationTimestamp"] = json!(t);
        }
        let o: SourceObject = serde_json::from_value(v).expect("object");
        kept_object(SourceKind::Canary, o)
    };
    let snapshot = |objects: Vec<(ObjectId, KeptObject)>| {
        build_snapshot(&objects.into_iter().collect(), ResourceVersions::default())
    };
    // "a-new" sorts first by name but was created later; "shop/z" names the VS as
    // `reviews.bookinfo`; "late" has the same timestamp as "a-new" and loses on the name.
    let snap = snapshot(vec![
        object("bookinfo", "a-new", Some("2026-03-01T00:00:00Z"), "reviews"),
        object("bookinfo", "old", Some("2026-01-01T00:00:00Z"), "reviews"),
        object(
            "shop",
            "z",
            Some("2026-02-01T00:00:00Z"),
            "reviews.bookinfo",
        ),
        object("bookinfo", "late", Some("2026-03-01T00:00:00Z"), "reviews"),
        object("bookinfo", "ratings", None, "ratings"),
    ]);
    assert_eq!(names(&snap), ["bookinfo/old", "bookinfo/ratings"]);
    let refused: Vec<String> = snap.errors.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        refused,
        [
            "Canary/shop/z",
            "Canary/bookinfo/a-new",
            "Canary/bookinfo/late"
        ]
    );
    let e = &snap.errors[0].1[0];
    assert_eq!(e.file, "kube:Canary/shop/z");
    assert_eq!(e.path, "spec.trafficRouting");
    assert!(
        e.message.starts_with(
            "Canary shop/z manages the same route as Canary bookinfo/old, created earlier: \
             VirtualService bookinfo/reviews: http route \"primary\""
        ),
        "{e}"
    );
    // Without timestamps the name decides.
    let snap = snapshot(vec![
        object("bookinfo", "b", None, "reviews"),
        object("bookinfo", "a", None, "reviews"),
    ]);
    assert_eq!(names(&snap), ["bookinfo/a"]);
    assert_eq!(snap.errors[0].0.to_string(), "Canary/bookinfo/b");
}

/// Issue 14, item 4 in cluster mode: a Canary whose analyses cannot be planned (no OAP
/// address in its template and none given with `--skywalking`; a template that does not exist)
/// is moved to the refused objects — never driven, so never exposed — naming the analysis
/// field and why; the same Canary with an address to use runs.
#[test]
fn canaries_whose_analyses_cannot_be_planned_are_refused() {
    let object = |kind: SourceKind, v: Value| {
        let o: SourceObject = serde_json::from_value(v).expect("object");
        kept_object(kind, o)
    };
    let mut missing = canary("bookinfo", "ratings");
    missing["spec"]["analysis"]["templates"][0]["templateName"] = json!("missing");
    missing["metadata"]["generation"] = json!(3);
    let objects: BTreeMap<_, _> = [
        object(SourceKind::Canary, canary("bookinfo", "reviews")),
        object(SourceKind::Canary, missing),
        object(
            SourceKind::AnalysisTemplate,
            template("AnalysisTemplate", Some("bookinfo"), "apdex"),
        ),
    ]
    .into_iter()
    .collect();
    let snap = build_snapshot(&objects, ResourceVersions::default());
    assert_eq!(names(&snap), ["bookinfo/ratings", "bookinfo/reviews"]);
    let refused = |defaults: &Defaults| {
        let mut s = snap.clone();
        refuse_unplannable(&mut s, &snap.templates, defaults, None);
        s
    };

    let s = refused(&Defaults::default());
    assert!(names(&s).is_empty(), "{:?}", names(&s));
    let errors: BTreeMap<String, &Vec<ConfigError>> =
        s.errors.iter().map(|(id, e)| (id.to_string(), e)).collect();
    let reviews = &errors["Canary/bookinfo/reviews"][0];
    assert_eq!(reviews.file, "kube:Canary/bookinfo/reviews");
    assert_eq!(reviews.path, "spec.analysis");
    assert!(
        reviews
            .message
            .starts_with("Canary bookinfo/reviews: this analysis cannot run: ")
            && reviews.message.contains("--skywalking"),
        "{reviews}"
    );
    assert!(
        errors["Canary/bookinfo/ratings"][0]
            .message
            .contains("missing"),
        "{:?}",
        errors["Canary/bookinfo/ratings"]
    );
    // The refused spec's generation is recorded for its status.
    let ratings_id = &s
        .errors
        .iter()
        .find(|(id, _)| id.name == "ratings")
        .unwrap()
        .0;
    assert_eq!(s.refused_generations.get(ratings_id), Some(&3));

    // With an OAP to use, only the Canary whose template does not exist stays refused.
    let s = refused(&Defaults {
        skywalking: Some("http://oap:12800".into()),
        ..Defaults::default()
    });
    assert_eq!(names(&s), ["bookinfo/reviews"]);
    let refused_ids: Vec<String> = s.errors.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(refused_ids, ["Canary/bookinfo/ratings"]);
}

/// A Canary subscribed to a notification sink the daemon does not have is refused in cluster
/// mode too (file mode refuses it at start): it would lose every notification silently.
#[test]
fn canaries_subscribed_to_an_unknown_sink_are_refused() {
    let object = |kind: SourceKind, v: Value| {
        let o: SourceObject = serde_json::from_value(v).expect("object");
        kept_object(kind, o)
    };
    let mut subscribed = canary("bookinfo", "ratings");
    subscribed["spec"]["notifications"] = json!([{"sink": "ops"}]);
    subscribed["metadata"]["uid"] = json!("u-ratings");
    let objects: BTreeMap<_, _> = [
        object(SourceKind::Canary, canary("bookinfo", "reviews")),
        object(SourceKind::Canary, subscribed),
        object(
            SourceKind::AnalysisTemplate,
            template("AnalysisTemplate", Some("bookinfo"), "apdex"),
        ),
    ]
    .into_iter()
    .collect();
    let snap = build_snapshot(&objects, ResourceVersions::default());
    let defaults = Defaults {
        skywalking: Some("http://oap:12800".into()),
        ..Defaults::default()
    };
    let mut s = snap.clone();
    refuse_unplannable(&mut s, &snap.templates, &defaults, None);
    assert_eq!(names(&s), ["bookinfo/reviews"]);
    let (id, errs) = &s.errors[0];
    assert_eq!(id.to_string(), "Canary/bookinfo/ratings");
    assert_eq!(errs[0].path, "spec.notifications[0].sink");
    assert!(errs[0].message.contains("no sink \"ops\""), "{}", errs[0]);
    // The refusal's Warning Event names the Canary's uid.
    assert_eq!(
        s.refused_uids.get(id).map(String::as_str),
        Some("u-ratings")
    );
}

/// The view as a pure state machine over watcher events.
mod view {
    use super::*;

    fn obj(v: Value, rv: &str) -> SourceObject {
        let mut v = v;
        v["metadata"]["resourceVersion"] = json!(rv);
        serde_json::from_value(v).expect("object")
    }

    type Ev = (
        SourceKind,
        Result<watcher::Event<SourceObject>, watcher::Error>,
    );

    /// Every kind listed, with `canaries` as the Canaries and one template.
    fn listed(canaries: Vec<SourceObject>) -> Vec<Ev> {
        let mut out = Vec::new();
        for kind in SourceKind::ALL {
            out.push((kind, Ok(watcher::Event::Init)));
            let items = match kind {
                SourceKind::Canary => canaries.clone(),
                SourceKind::AnalysisTemplate => vec![obj(
                    template("AnalysisTemplate", Some("bookinfo"), "apdex"),
                    "1",
                )],
                _ => Vec::new(),
            };
            for o in items {
                out.push((kind, Ok(watcher::Event::InitApply(o))));
            }
            out.push((kind, Ok(watcher::Event::InitDone)));
        }
        out
    }

    fn feed(view: &mut View, events: Vec<Ev>) -> Vec<String> {
        let mut errors = Vec::new();
        for e in events {
            view.apply(e, &mut errors);
        }
        errors
    }

    #[test]
    fn no_snapshot_before_every_kind_is_listed_then_one() {
        let mut view = View::default();
        let mut events = listed(vec![obj(canary("bookinfo", "reviews"), "5")]);
        let last = events.pop().expect("last");
        feed(&mut view, events);
        assert!(view.snapshot().is_none(), "one kind is still listing");
        feed(&mut view, vec![last]);
        let s = view.snapshot().expect("first snapshot");
        assert!(s.specs_changed);
        assert_eq!(names(&s), ["bookinfo/reviews"]);
        assert_eq!(s.templates.len(), 1);
        assert_eq!(s.resource_version.canaries, "5");
        assert!(view.snapshot().is_none(), "nothing changed since");
    }

    #[test]
    fn status_writes_are_ignored_and_commands_are_heard() {
        let mut view = View::default();
        feed(
            &mut view,
            listed(vec![obj(canary("bookinfo", "reviews"), "5")]),
        );
        view.snapshot().expect("first");
        let mut with_status = canary("bookinfo", "reviews");
        with_status["status"] = json!({"phase": "Progressing", "currentStepIndex": 1});
        with_status["metadata"]["managedFields"] = json!([{"manager": "skycanary"}]);
        let apply =
            |v: Value, rv: &str| (SourceKind::Canary, Ok(watcher::Event::Apply(obj(v, rv))));
        feed(&mut view, vec![apply(with_status.clone(), "6")]);
        assert!(view.snapshot().is_none(), "a status write is no change");
        with_status["status"]["command"] =
            json!({"id": "r1", "action": "abort", "requestedAt": "2026-01-01T00:00:00Z"});
        feed(&mut view, vec![apply(with_status, "7")]);
        let s = view.snapshot().expect("a command is heard");
        assert!(!s.specs_changed, "but it is no spec change");
        assert_eq!(s.command_requests().len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_kind_and_drops_what_is_gone() {
        let mut view = View::default();
        feed(
            &mut view,
            listed(vec![
                obj(canary("bookinfo", "reviews"), "5"),
                obj(canary("shop", "cart"), "6"),
            ]),
        );
        view.snapshot().expect("first");
        // A relist after 410: "cart" was deleted meanwhile, "ratings" added.
        let relist = vec![
            (SourceKind::Canary, Ok(watcher::Event::Init)),
            (
                SourceKind::Canary,
                Ok(watcher::Event::InitApply(obj(
                    canary("bookinfo", "reviews"),
                    "5",
                ))),
            ),
            (
                SourceKind::Canary,
                Ok(watcher::Event::InitApply(obj(
                    canary("bookinfo", "ratings"),
                    "9",
                ))),
            ),
        ];
        feed(&mut view, relist);
        assert!(
            view.snapshot().is_none(),
            "a relist half done changes nothing"
        );
        feed(
            &mut view,
            vec![(SourceKind::Canary, Ok(watcher::Event::InitDone))],
        );
        let s = view.snapshot().expect("changed");
        assert_eq!(names(&s), ["bookinfo/ratings", "bookinfo/reviews"]);
        // Deleting one.
        let del = watcher::Event::Delete(obj(canary("bookinfo", "ratings"), "10"));
        feed(&mut view, vec![(SourceKind::Canary, Ok(del))]);
        assert_eq!(
            names(&view.snapshot().expect("deleted")),
            ["bookinfo/reviews"]
        );
    }

    #[test]
    fn errors_are_reported_except_expiry() {
        let mut view = View::default();
        let status = |code: u16| kube::core::Status {
            code,
            ..kube::core::Status::failure("too old resource version", "Expired")
        };
        let errors = feed(
            &mut view,
            vec![
                (
                    SourceKind::Canary,
                    Err(watcher::Error::WatchError(Box::new(status(410)))),
                ),
                (
                    SourceKind::ScheduledAnalysis,
                    Err(watcher::Error::WatchError(Box::new(status(500)))),
                ),
            ],
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("watching ScheduledAnalysis objects: Kubernetes API answered 500"),
            "{errors:?}"
        );
    }
}
