use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use skycanary_testkit::FakeApiServer;

use super::*;

/// The next item, bounded: an item that never comes fails the test instead of hanging it.
async fn next<S: Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("an item in time")
        .expect("the stream never ends")
}

fn object(api_version: &str, kind: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {},
    })
}

#[tokio::test]
async fn virtual_service_changes_name_the_listed_then_the_changed_ones() {
    let fake = FakeApiServer::new();
    let vs = |name| object("networking.istio.io/v1", "VirtualService", name);
    fake.seed(vs("a")).unwrap();
    // Another namespace's is not watched.
    let mut other = vs("z");
    other["metadata"]["namespace"] = json!("elsewhere");
    fake.seed(other).unwrap();
    let changes = virtual_service_changes(fake.client(), IstioApiVersion::V1, Some("ns".into()));
    let mut changes = std::pin::pin!(changes);
    assert_eq!(
        next(&mut changes).await,
        ObjectKey::virtual_service("ns", "a")
    );
    fake.seed(vs("b")).unwrap();
    assert_eq!(
        next(&mut changes).await,
        ObjectKey::virtual_service("ns", "b")
    );
    fake.delete("networking.istio.io", "virtualservices", "ns", "a")
        .unwrap();
    assert_eq!(
        next(&mut changes).await,
        ObjectKey::virtual_service("ns", "a")
    );
}

fn name(event: &Relisted<ConfigMap>) -> Option<&str> {
    match event {
        Relisted::InitApply(o) | Relisted::Apply(o) | Relisted::Delete(o) => {
            o.metadata.name.as_deref()
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_failed_watch_is_reported_then_listed_afresh() {
    let fake = FakeApiServer::new();
    fake.seed(object("v1", "ConfigMap", "a")).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
    let events = relisting(api, watcher::Config::default(), "test watch");
    let mut events = std::pin::pin!(events);
    assert_eq!(next(&mut events).await, Relisted::Init);
    assert_eq!(name(&next(&mut events).await), Some("a"));
    assert_eq!(next(&mut events).await, Relisted::InitDone);
    fake.seed(object("v1", "ConfigMap", "b")).unwrap();
    let applied = next(&mut events).await;
    assert!(matches!(applied, Relisted::Apply(_)), "{applied:?}");
    assert_eq!(name(&applied), Some("b"));

    // The watch ends and cannot be resumed: reported, then a complete list again.
    fake.fail_next(Some("GET"), "configmaps", 1, 500);
    fake.drop_watches();
    let failed = next(&mut events).await;
    assert!(matches!(failed, Relisted::Error(_)), "{failed:?}");
    assert_eq!(next(&mut events).await, Relisted::Init);
    let mut listed = vec![
        name(&next(&mut events).await).map(str::to_string),
        name(&next(&mut events).await).map(str::to_string),
    ];
    listed.sort();
    assert_eq!(listed, [Some("a".to_string()), Some("b".to_string())]);
    assert_eq!(next(&mut events).await, Relisted::InitDone);
}

#[tokio::test]
async fn list_all_follows_continue_tokens_past_one_page() {
    let fake = FakeApiServer::new();
    let canary = |ns: &str, i: u32| {
        let mut o = object("skycanary.io/v1alpha1", "Canary", &format!("c{i}"));
        o["metadata"]["namespace"] = json!(ns);
        o
    };
    for i in 0..=LIST_PAGE {
        fake.seed(canary("ns", i)).unwrap();
    }
    fake.seed(canary("elsewhere", 0)).unwrap();
    let api = source_api(&fake.client(), Some("ns"), SourceKind::Canary);
    let (items, rv) = list_all(&api).await.expect("listed");
    assert_eq!(items.len(), LIST_PAGE as usize + 1);
    assert!(
        items
            .iter()
            .all(|o| o.metadata.namespace.as_deref() == Some("ns"))
    );
    assert_eq!(rv, fake.resource_version().to_string());
    let lists = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/canaries"))
        .count();
    assert_eq!(lists, 2, "two pages");
    // Cluster-scoped kinds are listed cluster-wide even for one namespace.
    let cluster = source_api(
        &fake.client(),
        Some("ns"),
        SourceKind::ClusterAnalysisTemplate,
    );
    assert_eq!(
        cluster.resource_url(),
        "/apis/skycanary.io/v1alpha1/clusteranalysistemplates"
    );
}
