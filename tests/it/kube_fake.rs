//! KubeManifestStore over loopback HTTP against the served fake API server (feature `testkit`, enabled
//! for tests by the self dev-dependency in Cargo.toml).

use serde_json::json;
use skycanary::testkit::{FakeApiServer, http_client};
use skycanary::traffic::kube::{IstioApiVersion, KubeManifestStore};
use skycanary::traffic::store::{ManifestStore, ManifestStoreError, ObjectKey};

#[tokio::test]
async fn kube_store_over_http_sees_concurrent_writers() {
    let fake = FakeApiServer::new();
    fake.seed(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": 100}]}]},
    }))
    .expect("seed");
    let (addr, handle) = fake.serve().await.expect("serve");
    let store = KubeManifestStore::new(http_client(addr).expect("client"), IstioApiVersion::V1);
    let key = ObjectKey::virtual_service("bookinfo", "reviews");

    let first = store.get(&key).await.expect("get");
    fake.update(
        "networking.istio.io",
        "virtualservices",
        "bookinfo",
        "reviews",
        |o| {
            o["spec"]["gateways"] = json!(["mesh"]);
        },
    )
    .expect("another writer");
    assert_eq!(
        store.replace(&key, &first.object, &first.version).await,
        Err(ManifestStoreError::Conflict(key.clone()))
    );
    let second = store.get(&key).await.expect("re-read");
    let rv = store
        .replace(&key, &second.object, &second.version)
        .await
        .expect("replace");
    assert_eq!(rv, second.version, "an unchanged object is a no-op write");
    handle.shutdown();
}
