//! KubeManifestStore against the in-process fake API server.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{Value, json};

use super::*;
use skycanary_testkit::FakeApiServer;

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

fn setup() -> (FakeApiServer, KubeManifestStore) {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews")).expect("seed");
    let store = KubeManifestStore::new(fake.client(), IstioApiVersion::V1);
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
    assert_eq!(err, ManifestStoreError::Conflict(key.clone()));
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
        Err(ManifestStoreError::NotFound(key.clone()))
    );
    let obj = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "nope"}});
    assert_eq!(
        store.replace(&key, &obj, "5").await,
        Err(ManifestStoreError::NotFound(key))
    );
}

#[tokio::test]
async fn selected_version_uses_its_path() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews")).expect("seed");
    let store = KubeManifestStore::new(fake.client(), "v1beta1".parse().expect("version"));
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
        Err(ManifestStoreError::Invalid { key: k, message }) => {
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
    assert!(matches!(err, ManifestStoreError::Invalid { .. }), "{err:?}");
    // A name mismatch is refused locally.
    let err = store
        .replace(&key, &vs("other"), &got.version)
        .await
        .expect_err("invalid");
    assert!(matches!(err, ManifestStoreError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn server_errors_are_backend_errors() {
    let (fake, store) = setup();
    let key = ObjectKey::virtual_service("bookinfo", "reviews");
    fake.fail_next(Some("GET"), "/virtualservices/reviews", 1, 500);
    match store.get(&key).await {
        Err(ManifestStoreError::Backend(m)) => assert!(m.contains("500"), "{m}"),
        other => panic!("expected Backend, got {other:?}"),
    }
    fake.fail_next(None, "reviews", 1, 409);
    let got = store.get(&key).await;
    assert_eq!(got, Err(ManifestStoreError::Conflict(key.clone())));
}

fn canary_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("skycanary.io/v1alpha1".into()),
        kind: Some("Canary".into()),
        name: Some(name.into()),
        namespace: Some("bookinfo".into()),
        uid: Some("u-1".into()),
        ..ObjectReference::default()
    }
}

#[tokio::test]
async fn emit_event_posts_an_events_k8s_io_event() {
    let fake = FakeApiServer::new();
    let recorder = EventRecorder::new(fake.client());
    let involved = canary_ref("reviews");
    emit_event(
        &recorder,
        "bookinfo",
        &involved,
        "TrafficWeightUpdated",
        "canary weight 20",
        EventType::Normal,
    )
    .await
    .expect("event");
    emit_event(
        &recorder,
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
    assert_eq!(events[0]["action"], json!("SetWeight"));
    assert_eq!(events[0]["type"], json!("Normal"));
    assert_eq!(events[0]["note"], json!("canary weight 20"));
    assert_eq!(events[0]["regarding"]["kind"], json!("Canary"));
    assert_eq!(events[0]["regarding"]["uid"], json!("u-1"));
    assert_eq!(
        events[0]["reportingController"],
        json!(REPORTING_CONTROLLER)
    );
    assert!(events[0]["reportingInstance"].is_string());
    assert!(events[0]["eventTime"].is_string());
    assert!(
        events[0].get("series").is_none(),
        "a first Event is no series"
    );
    assert_eq!(events[1]["type"], json!("Warning"));
    assert_eq!(events[1]["action"], json!("UpdateRoutes"));
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
    let err = emit_event(
        &recorder,
        "bookinfo",
        &involved,
        "X",
        "y",
        EventType::Normal,
    )
    .await
    .expect_err("403");
    assert!(err.to_string().contains("Canary bookinfo/reviews"), "{err}");
}

/// One wording of kube client failures for every caller: the API's answer when it answered,
/// the transport error otherwise.
#[tokio::test]
async fn describe_words_api_answers_and_transport_errors() {
    let fake = skycanary_testkit::FakeApiServer::new();
    fake.fail_next(Some("GET"), "/namespaces", 1, 500);
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(fake.client());
    let answered = api.list(&Default::default()).await.expect_err("500");
    let text = describe(&answered);
    assert!(text.starts_with("Kubernetes API answered 500 "), "{text}");
    let transport = kube::Error::Service("connection refused".into());
    assert_eq!(describe(&transport), "ServiceError: connection refused");
}

/// Issue 18: the same failure twice is one Event with a series count, written by a PATCH;
/// the note, reason, action and object stay those of the Event.
#[tokio::test]
async fn a_repeated_event_becomes_a_series_on_one_object() {
    let fake = FakeApiServer::new();
    let recorder = EventRecorder::new(fake.client());
    let involved = canary_ref("reviews");
    for _ in 0..3 {
        emit_event(
            &recorder,
            "bookinfo",
            &involved,
            "TrafficRoutingError",
            "VirtualService bookinfo/reviews not found",
            EventType::Warning,
        )
        .await
        .expect("event");
    }
    let events = fake.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev["series"]["count"], json!(3));
    assert!(ev["series"]["lastObservedTime"].is_string());
    assert_eq!(ev["reason"], json!("TrafficRoutingError"));
    assert_eq!(ev["action"], json!("UpdateRoutes"));
    assert_eq!(
        ev["note"],
        json!("VirtualService bookinfo/reviews not found")
    );
    assert_eq!(ev["regarding"]["name"], json!("reviews"));
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/events/"))
        .collect();
    assert_eq!(patches.len(), 2);
    assert!(
        patches[0]
            .path
            .starts_with("/apis/events.k8s.io/v1/namespaces/bookinfo/events/"),
        "{}",
        patches[0].path
    );
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );

    // A clone shares the series; another recorder (another process) starts its own.
    emit_event(
        &recorder.clone(),
        "bookinfo",
        &involved,
        "TrafficRoutingError",
        "VirtualService bookinfo/reviews not found",
        EventType::Warning,
    )
    .await
    .expect("event");
    assert_eq!(fake.events()[0]["series"]["count"], json!(4));
}

/// A different note is a different Event: the Recorder's series would show the first note
/// only, and the weights or failures a note tells of would be lost.
#[tokio::test]
async fn events_with_different_notes_are_separate_objects() {
    let fake = FakeApiServer::new();
    let recorder = EventRecorder::new(fake.client());
    for w in [10, 20, 10] {
        emit_event(
            &recorder,
            "bookinfo",
            &canary_ref("reviews"),
            "TrafficWeightUpdated",
            &format!("canary weight {w}"),
            EventType::Normal,
        )
        .await
        .expect("event");
    }
    // Another object with the same note is another Event too.
    emit_event(
        &recorder,
        "bookinfo",
        &canary_ref("ratings"),
        "TrafficWeightUpdated",
        "canary weight 10",
        EventType::Normal,
    )
    .await
    .expect("event");
    let events = fake.events();
    let mut notes: Vec<(String, String, Value)> = events
        .iter()
        .map(|e| {
            (
                e["regarding"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
                e["series"]["count"].clone(),
            )
        })
        .collect();
    notes.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        notes,
        [
            ("ratings".into(), "canary weight 10".into(), Value::Null),
            ("reviews".into(), "canary weight 10".into(), json!(2)),
            ("reviews".into(), "canary weight 20".into(), Value::Null),
        ]
    );
}

/// The series' Event deleted meanwhile (someone cleaned up): the repeat is created anew
/// instead of failing until the series expires.
#[tokio::test]
async fn a_series_whose_event_was_deleted_starts_again() {
    let fake = FakeApiServer::new();
    let recorder = EventRecorder::new(fake.client());
    let involved = canary_ref("reviews");
    let emit = || {
        emit_event(
            &recorder,
            "bookinfo",
            &involved,
            "AnalysisRunFailed",
            "apdex below 0.99",
            EventType::Warning,
        )
    };
    emit().await.expect("event");
    let name = fake.events()[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    fake.delete("events.k8s.io", "events", "bookinfo", &name)
        .expect("delete");
    emit().await.expect("recreated");
    let events = fake.events();
    assert_eq!(events.len(), 1);
    assert_ne!(events[0]["metadata"]["name"], json!(name));
    emit().await.expect("series again");
    assert_eq!(fake.events()[0]["series"]["count"], json!(2));
}

/// An object named near the 253-character limit: the Recorder's `<name>.<time>` would be too
/// long, so the Event is named after a prefix (and recorded, without a series).
#[tokio::test]
async fn an_event_about_a_long_named_object_is_recorded() {
    let fake = FakeApiServer::new();
    let recorder = EventRecorder::new(fake.client());
    let long = "r".repeat(250);
    let note = "é".repeat(600);
    for _ in 0..2 {
        emit_event(
            &recorder,
            "bookinfo",
            &canary_ref(&long),
            "RolloutPaused",
            &note,
            EventType::Normal,
        )
        .await
        .expect("event");
    }
    let events = fake.events();
    assert_eq!(events.len(), 2);
    let name = events[0]["metadata"]["name"].as_str().unwrap_or_default();
    assert!(name.len() <= 253 && name.starts_with("rrr"), "{name}");
    assert_eq!(events[0]["regarding"]["name"], json!(long));
    let kept = events[0]["note"].as_str().unwrap_or_default();
    assert_eq!(kept.len(), 1024, "cut to the API's 1024 bytes");
    assert!(note.starts_with(kept));
}

/// Distinct notes in progress are bounded; the oldest is forgotten, never an Event.
#[tokio::test]
async fn series_notes_are_bounded() {
    let fake = FakeApiServer::new();
    let recorder = EventRecorder::new(fake.client());
    for i in 0..MAX_EVENT_SERIES_NOTES + 5 {
        let _ = recorder.recorder(&format!("note {i}"), false);
    }
    assert_eq!(recorder.series_notes(), MAX_EVENT_SERIES_NOTES);
}
