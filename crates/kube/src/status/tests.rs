//! KubeStatusStore against the in-process fake API server.

use chrono::{TimeZone, Utc};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::*;
use skycanary_api::canary::{CanaryPhase, PauseReason, PauseStatus};
use skycanary_testkit::FakeApiServer;

fn canary(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"revision": "v2", "steps": [{"setWeight": 10}]},
    })
}

fn setup() -> (FakeApiServer, KubeStatusStore) {
    let fake = FakeApiServer::new();
    fake.seed(canary("bookinfo", "reviews")).expect("seed");
    let store = KubeStatusStore::new(fake.client());
    (fake, store)
}

fn paused(generation: Option<i64>) -> CanaryStatus {
    let since = Utc
        .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .unwrap_or_default();
    CanaryStatus {
        phase: CanaryPhase::Paused,
        revision: Some("v2".into()),
        current_step_index: 1,
        desired_weight: 10,
        pause: Some(PauseStatus {
            reason: PauseReason::Step,
            since,
            until: None,
            message: Some("waiting".into()),
        }),
        observed_generation: generation,
        ..CanaryStatus::default()
    }
}

fn stored_status(fake: &FakeApiServer) -> Value {
    fake.get("skycanary.io", "canaries", "bookinfo", "reviews")
        .and_then(|o| o.get("status").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn absent_and_empty_status_load_as_none() {
    let (fake, store) = setup();
    assert_eq!(
        store.load::<CanaryStatus>("bookinfo", "reviews").await,
        Ok(None)
    );
    let api: Api<DynamicObject> =
        Api::namespaced_with(fake.client(), "bookinfo", &canary_resource());
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {}})),
    )
    .await
    .expect("empty status");
    assert_eq!(
        store.load::<CanaryStatus>("bookinfo", "reviews").await,
        Ok(None)
    );
}

#[tokio::test]
async fn save_then_load_round_trips_through_the_status_subresource() {
    let (fake, store) = setup();
    fake.clear_requests();
    let status = paused(Some(1));
    store
        .save("bookinfo", "reviews", &status)
        .await
        .expect("save");
    assert_eq!(
        store.load("bookinfo", "reviews").await,
        Ok(Some(status.clone()))
    );
    assert_eq!(stored_status(&fake)["observedGeneration"], json!(1));

    let puts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(
        puts[0].path,
        "/apis/skycanary.io/v1alpha1/namespaces/bookinfo/canaries/reviews/status"
    );
    assert_eq!(puts[0].content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&puts[0].body).expect("json body");
    assert!(body["metadata"]["resourceVersion"].is_string(), "{body}");
    assert_eq!(body["status"]["phase"], json!("Paused"));
}

#[tokio::test]
async fn main_resource_write_keeps_status_and_bumps_generation() {
    let (fake, store) = setup();
    let status = paused(Some(1));
    store
        .save("bookinfo", "reviews", &status)
        .await
        .expect("save");
    let updated = fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |o| {
            o["spec"]["revision"] = json!("v3");
            if let Some(m) = o.as_object_mut() {
                m.remove("status");
            }
        })
        .expect("spec edit");
    assert_eq!(updated["metadata"]["generation"], json!(2));
    assert_eq!(store.load("bookinfo", "reviews").await, Ok(Some(status)));
}

#[tokio::test]
async fn cleared_fields_are_removed_and_observed_generation_kept_when_absent() {
    let (fake, store) = setup();
    store
        .save("bookinfo", "reviews", &paused(Some(1)))
        .await
        .expect("save paused");
    let resumed = CanaryStatus {
        phase: CanaryPhase::Progressing,
        pause: None,
        observed_generation: None,
        ..paused(None)
    };
    store
        .save("bookinfo", "reviews", &resumed)
        .await
        .expect("save resumed");
    let raw = stored_status(&fake);
    assert!(raw.get("pause").is_none(), "pause must be gone: {raw}");
    assert_eq!(raw["observedGeneration"], json!(1));
    assert_eq!(
        store.load("bookinfo", "reviews").await,
        Ok(Some(CanaryStatus {
            observed_generation: Some(1),
            ..resumed
        }))
    );
}

/// An in-memory copy of a `skycanary <action> --kube` request is never written back (the
/// stored one is carried over by the write).
#[test]
fn a_status_never_serialises_the_command_request() {
    let status = CanaryStatus {
        command: Some(skycanary_api::canary::CommandRequest {
            id: "old".into(),
            action: skycanary_api::canary::CommandAction::Abort,
            full: false,
            reason: None,
            requested_at: None,
            requested_by: None,
            alarm: None,
        }),
        ..CanaryStatus::default()
    };
    let v = serde_json::to_value(&status).unwrap();
    assert!(v.get("command").is_none(), "{v}");
}

#[tokio::test]
async fn unparsable_status_is_an_error_not_a_reset() {
    let (fake, store) = setup();
    let api: Api<DynamicObject> =
        Api::namespaced_with(fake.client(), "bookinfo", &canary_resource());
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Exploded", "currentStepIndex": 2, "desiredWeight": 5}}),
        ),
    )
    .await
    .expect("foreign status");
    match store.load::<CanaryStatus>("bookinfo", "reviews").await {
        Err(StatusError::Corrupt { message, .. }) => {
            assert!(message.contains("phase"), "{message}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_canary_is_not_found() {
    let (fake, store) = setup();
    fake.delete("skycanary.io", "canaries", "bookinfo", "reviews")
        .expect("delete");
    let not_found = StatusError::NotFound {
        kind: "Canary",
        namespace: "bookinfo".into(),
        name: "reviews".into(),
    };
    assert_eq!(
        store.save("bookinfo", "reviews", &paused(None)).await,
        Err(not_found.clone())
    );
    assert_eq!(
        store.load::<CanaryStatus>("bookinfo", "reviews").await,
        Err(not_found)
    );
    assert!(
        StatusError::NotFound {
            kind: "Canary",
            namespace: "a".into(),
            name: "b".into()
        }
        .to_string()
        .contains("deleted")
    );
}

#[tokio::test]
async fn conflicts_are_retried_with_a_fresh_read_then_reported() {
    let (fake, store) = setup();
    fake.fail_next(Some("PUT"), "/status", 2, 409);
    store
        .save("bookinfo", "reviews", &paused(Some(1)))
        .await
        .expect("retried");
    assert_eq!(stored_status(&fake)["phase"], json!("Paused"));

    fake.fail_next(Some("PUT"), "/status", 100, 409);
    assert_eq!(
        store.save("bookinfo", "reviews", &paused(Some(1))).await,
        Err(StatusError::Conflict {
            kind: "Canary",
            namespace: "bookinfo".into(),
            name: "reviews".into(),
            attempts: MAX_WRITE_ATTEMPTS,
        })
    );
}

#[tokio::test]
async fn stale_resource_version_is_refused_by_the_server() {
    // The guard is real: a patch carrying an old resourceVersion conflicts.
    let (fake, _store) = setup();
    let api: Api<DynamicObject> =
        Api::namespaced_with(fake.client(), "bookinfo", &canary_resource());
    let err = api
        .patch_status(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "Paused"}}),
            ),
        )
        .await;
    assert!(
        matches!(err, Err(kube::Error::Api(ref s)) if s.is_conflict()),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_second_save_needs_no_read_and_a_foreign_write_forces_one() {
    let (fake, store) = setup();
    store
        .save("bookinfo", "reviews", &paused(Some(1)))
        .await
        .expect("saved");
    fake.clear_requests();
    let mut next = paused(Some(1));
    next.current_step_index = 2;
    store
        .save("bookinfo", "reviews", &next)
        .await
        .expect("saved");
    let methods: Vec<String> = fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(
        methods,
        ["PUT"],
        "no read before writing our own last status"
    );
    assert_eq!(stored_status(&fake)["currentStepIndex"], json!(2));

    // Someone else changes the status: our remembered version is stale, the write conflicts,
    // is re-read and re-planned, and the other writer's extra field is removed, not kept by
    // accident.
    let api: Api<DynamicObject> =
        Api::namespaced_with(fake.client(), "bookinfo", &canary_resource());
    api.patch_status(
        "reviews",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"message": "edited by someone else"}})),
    )
    .await
    .expect("foreign write");
    fake.clear_requests();
    next.current_step_index = 3;
    store
        .save("bookinfo", "reviews", &next)
        .await
        .expect("saved");
    let methods: Vec<String> = fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["PUT", "GET", "PUT"]);
    let stored = stored_status(&fake);
    assert_eq!(stored["currentStepIndex"], json!(3));
    assert!(stored.get("message").is_none(), "{stored}");
}

/// A `--kube` request written between two of the daemon's writes survives the second one, and
/// so does one that was already there (the daemon never holds it, it carries it over).
#[tokio::test]
async fn status_writes_carry_the_command_request_over() {
    let (fake, store) = setup();
    store
        .save("bookinfo", "reviews", &paused(Some(1)))
        .await
        .expect("saved");
    let req = skycanary_api::canary::CommandRequest {
        id: "r1".into(),
        action: skycanary_api::canary::CommandAction::Promote,
        full: false,
        reason: Some("ship it".into()),
        requested_at: None,
        requested_by: None,
        alarm: None,
    };
    write_request(&fake.client(), "bookinfo", "reviews", &req)
        .await
        .expect("request");
    let expected = serde_json::to_value(&req).expect("json");
    for step in [2, 3] {
        let mut next = paused(Some(1));
        next.current_step_index = step;
        store
            .save("bookinfo", "reviews", &next)
            .await
            .expect("saved");
        let stored = stored_status(&fake);
        assert_eq!(stored["currentStepIndex"], json!(step));
        assert_eq!(stored["command"], expected, "{stored}");
    }
    let loaded = store.load("bookinfo", "reviews").await.expect("load");
    assert_eq!(loaded.and_then(|s: CanaryStatus| s.command), Some(req));
}

/// A ScheduledAnalysis' status goes through the same conditional PUT: a key the new status
/// no longer has is gone (nothing of an older status survives), and a write that meets
/// someone else's is retried over a fresh read.
#[tokio::test]
async fn scheduled_statuses_are_replaced_whole_through_the_same_store() {
    use skycanary_api::scheduled::ScheduledAnalysisStatus;
    let fake = FakeApiServer::new();
    fake.seed(json!({
        "apiVersion": "skycanary.io/v1alpha1",
        "kind": "ScheduledAnalysis",
        "metadata": {"name": "nightly", "namespace": "ops"},
        "spec": {"schedule": "@daily", "templates": [{"templateName": "apdex"}]},
    }))
    .expect("seed");
    let store = KubeStatusStore::new(fake.client());
    assert_eq!(
        store
            .load::<ScheduledAnalysisStatus>("ops", "nightly")
            .await,
        Ok(None)
    );
    let first = ScheduledAnalysisStatus {
        message: Some("run nightly-1 started".into()),
        invalid_spec: Some("was refused".into()),
        skipped: 2,
        ..Default::default()
    };
    store.save("ops", "nightly", &first).await.expect("first");
    let second = ScheduledAnalysisStatus {
        skipped: 3,
        ..Default::default()
    };
    fake.fail_next(Some("PUT"), "/scheduledanalyses/nightly/status", 1, 409);
    store.save("ops", "nightly", &second).await.expect("second");
    assert_eq!(
        store
            .load::<ScheduledAnalysisStatus>("ops", "nightly")
            .await,
        Ok(Some(second))
    );
    let api: Api<DynamicObject> = Api::namespaced_with(fake.client(), "ops", &scheduled_resource());
    let raw = api.get_status("nightly").await.expect("get");
    assert_eq!(raw.data["status"], json!({"skipped": 3}));
    fake.delete("skycanary.io", "scheduledanalyses", "ops", "nightly")
        .expect("delete");
    assert_eq!(
        store
            .save("ops", "nightly", &ScheduledAnalysisStatus::default())
            .await,
        Err(StatusError::NotFound {
            kind: "ScheduledAnalysis",
            namespace: "ops".into(),
            name: "nightly".into(),
        })
    );
}

/// A burst of routine status writes holding every slot does not delay the status saved before
/// a rollback: it has a lane of its own (issue 17, failed measurement → rollback).
#[tokio::test]
async fn a_rollback_save_does_not_queue_behind_a_burst_of_routine_saves() {
    let (fake, store) = setup();
    let busy = MAX_STATUS_WRITES_IN_FLIGHT + 1;
    for i in 0..busy {
        fake.seed(canary("bookinfo", &format!("busy-{i}")))
            .expect("seed");
    }
    fake.clear_requests();
    fake.delay_next(
        None,
        "/canaries/busy-",
        busy,
        std::time::Duration::from_secs(3),
    );
    let routine: Vec<_> = (0..busy)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .save("bookinfo", &format!("busy-{i}"), &paused(None))
                    .await
            })
        })
        .collect();
    // Every routine slot is taken (the last one waits for a slot).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while fake.requests().len() < MAX_STATUS_WRITES_IN_FLIGHT {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    store
        .save_in(WriteLane::Rollback, "bookinfo", "reviews", &paused(Some(2)))
        .await
        .expect("rollback save");
    assert!(
        routine.iter().all(|h| !h.is_finished()),
        "the rollback's save waited for the routine ones"
    );
    assert_eq!(stored_status(&fake)["observedGeneration"], 2);
    for h in routine {
        h.await.expect("join").expect("routine save");
    }
}
