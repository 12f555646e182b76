//! KubeStore against the in-process fake API server.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{Value, json};

use super::*;
use crate::testkit::FakeApiServer;

fn vs(name: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "bookinfo", "annotations": {"keep": "me"}},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": "reviews", "subset": "stable"}, "weight": 100},
                {"destination": {"host": "reviews", "subset": "canary"}, "weight": 0},
            ]}],
            "x-unknown-field": {"survives": true},
        }
    })
}

fn setup() -> (FakeApiServer, KubeStore) {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews")).expect("seed");
    let store = KubeStore::new(fake.client(), IstioApiVersion::V1);
    (fake, store)
}

fn set_canary_weight(obj: &mut Value, w: u64) {
    if let Some(routes) = obj
        .pointer_mut("/spec/http/0/route")
        .and_then(Value::as_array_mut)
    {
        routes[0]["weight"] = json!(100 - w);
        routes[1]["weight"] = json!(w);
    }
}

#[tokio::test]
async fn get_returns_object_and_resource_version() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    let got = store.get(&key).await.expect("get");
    assert_eq!(got.version, fake.resource_version().to_string());
    assert_eq!(
        got.object["spec"]["x-unknown-field"]["survives"],
        json!(true)
    );
    assert_eq!(got.object["metadata"]["annotations"]["keep"], json!("me"));
    assert_eq!(got.object["kind"], json!("VirtualService"));
    assert_eq!(store.describe(), "kube (networking.istio.io/v1)");
}

#[tokio::test]
async fn replace_bumps_version_and_keeps_unknown_fields() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    let mut got = store.get(&key).await.expect("get");
    set_canary_weight(&mut got.object, 20);
    let new_rv = store
        .replace(&key, &got.object, &got.version)
        .await
        .expect("replace");
    assert_ne!(new_rv, got.version);
    let stored = fake.virtual_service("bookinfo", "reviews").expect("stored");
    assert_eq!(stored["metadata"]["resourceVersion"], json!(new_rv));
    assert_eq!(stored["spec"]["http"][0]["route"][1]["weight"], json!(20));
    assert_eq!(stored["spec"]["x-unknown-field"]["survives"], json!(true));
    assert_eq!(stored["metadata"]["generation"], json!(2));
    let put = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PUT")
        .expect("a PUT");
    assert_eq!(
        put.path,
        "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices/reviews"
    );
}

#[tokio::test]
async fn replace_sets_expected_version_even_if_object_carries_another() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    let got = store.get(&key).await.expect("get");
    let mut obj = got.object.clone();
    obj["metadata"]["resourceVersion"] = json!("999999");
    set_canary_weight(&mut obj, 5);
    store
        .replace(&key, &obj, &got.version)
        .await
        .expect("replace uses expected version");
    assert_eq!(
        fake.virtual_service("bookinfo", "reviews").expect("vs")["spec"]["http"][0]["route"][1]["weight"],
        json!(5)
    );
}

#[tokio::test]
async fn stale_version_is_conflict_and_writes_nothing() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    let got = store.get(&key).await.expect("get");
    // Someone else writes in between.
    fake.update(
        "networking.istio.io",
        "virtualservices",
        "bookinfo",
        "reviews",
        |o| set_canary_weight(o, 50),
    )
    .expect("concurrent write");
    let before = fake.virtual_service("bookinfo", "reviews").expect("vs");
    let mut mine = got.object.clone();
    set_canary_weight(&mut mine, 10);
    let err = store
        .replace(&key, &mine, &got.version)
        .await
        .expect_err("conflict");
    assert_eq!(err, StoreError::Conflict(key.clone()));
    assert_eq!(
        fake.virtual_service("bookinfo", "reviews").expect("vs"),
        before
    );
}

#[tokio::test]
async fn missing_object_is_not_found() {
    let (_fake, store) = setup();
    let key = ObjectKey::destination_rule("bookinfo", "nope");
    assert_eq!(
        store.get(&key).await,
        Err(StoreError::NotFound(key.clone()))
    );
    let obj = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "nope"}});
    assert_eq!(
        store.replace(&key, &obj, "5").await,
        Err(StoreError::NotFound(key))
    );
}

#[tokio::test]
async fn selected_version_uses_its_path() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews")).expect("seed");
    let store = KubeStore::new(fake.client(), "v1beta1".parse().expect("version"));
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    let got = store.get(&key).await.expect("get");
    assert_eq!(
        got.object["apiVersion"],
        json!("networking.istio.io/v1beta1")
    );
    store
        .replace(&key, &got.object, &got.version)
        .await
        .expect("replace");
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert!(!paths.is_empty());
    assert!(
        paths.iter().all(|p| p
            .starts_with("/apis/networking.istio.io/v1beta1/namespaces/bookinfo/virtualservices/")),
        "{paths:?}"
    );
    assert_eq!(store.describe(), "kube (networking.istio.io/v1beta1)");
    assert!("v2".parse::<IstioApiVersion>().is_err());
    assert_eq!(IstioApiVersion::V1alpha3.to_string(), "v1alpha3");
}

#[tokio::test]
async fn invalid_is_surfaced_with_server_message() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    let got = store.get(&key).await.expect("get");
    fake.fail_next(Some("PUT"), "/virtualservices/reviews", 1, 422);
    match store.replace(&key, &got.object, &got.version).await {
        Err(StoreError::Invalid { key: k, message }) => {
            assert_eq!(k, key);
            assert!(message.contains("injected fault"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A body that is not an object never reaches the server.
    let err = store
        .replace(&key, &json!([1, 2]), &got.version)
        .await
        .expect_err("invalid");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    // A name mismatch is refused locally.
    let err = store
        .replace(&key, &vs("other"), &got.version)
        .await
        .expect_err("invalid");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn server_errors_are_backend_errors() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    fake.fail_next(Some("GET"), "/virtualservices/reviews", 1, 500);
    match store.get(&key).await {
        Err(StoreError::Backend(m)) => assert!(m.contains("500"), "{m}"),
        other => panic!("expected Backend, got {other:?}"),
    }
    fake.fail_next(None, "reviews", 1, 409);
    let got = store.get(&key).await;
    assert_eq!(got, Err(StoreError::Conflict(key.clone())));
}

#[tokio::test]
async fn emit_event_posts_an_events_k8s_io_event() {
    let fake = FakeApiServer::new();
    let client = fake.client();
    let involved = ObjectReference {
        api_version: Some("skycanary.io/v1alpha1".into()),
        kind: Some("Canary".into()),
        name: Some("reviews".into()),
        namespace: Some("bookinfo".into()),
        uid: Some("u-1".into()),
        ..ObjectReference::default()
    };
    let ev = emit_event(
        &client,
        "bookinfo",
        &involved,
        "TrafficWeightUpdated",
        "canary weight 20",
        EventType::Normal,
    )
    .await
    .expect("event");
    assert!(ev.metadata.resource_version.is_some());
    emit_event(
        &client,
        "bookinfo",
        &involved,
        "TrafficRoutingError",
        "boom",
        EventType::Warning,
    )
    .await
    .expect("second event, distinct name");
    let events = fake.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["reason"], json!("TrafficWeightUpdated"));
    assert_eq!(events[0]["type"], json!("Normal"));
    assert_eq!(events[0]["note"], json!("canary weight 20"));
    assert_eq!(events[0]["regarding"]["kind"], json!("Canary"));
    assert_eq!(
        events[0]["reportingController"],
        json!(REPORTING_CONTROLLER)
    );
    assert!(events[0]["eventTime"].is_string());
    assert_eq!(events[1]["type"], json!("Warning"));
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("POST");
    assert_eq!(
        post.path,
        "/apis/events.k8s.io/v1/namespaces/bookinfo/events"
    );

    fake.fail_next(Some("POST"), "/events", 1, 403);
    let err = emit_event(&client, "bookinfo", &involved, "X", "y", EventType::Normal)
        .await
        .expect_err("403");
    assert!(err.to_string().contains("Canary bookinfo/reviews"), "{err}");
}

/// One wording of kube client failures for every caller: the API's answer when it answered,
/// the transport error otherwise.
#[tokio::test]
async fn describe_words_api_answers_and_transport_errors() {
    let fake = crate::testkit::FakeApiServer::new();
    fake.fail_next(Some("GET"), "/namespaces", 1, 500);
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(fake.client());
    let answered = api.list(&Default::default()).await.expect_err("500");
    let text = describe(answered);
    assert!(text.starts_with("Kubernetes API answered 500 "), "{text}");
    let transport = kube::Error::Service("connection refused".into());
    assert_eq!(describe(transport), "ServiceError: connection refused");
}
