//! Tests of the fake API server: through kube's own client (in-process and over loopback) and
//! through kubectl.

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};

use super::*;

fn vs(name: &str, canary: u64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "bookinfo"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": "reviews", "subset": "stable"}, "weight": 100 - canary},
                {"destination": {"host": "reviews", "subset": "canary"}, "weight": canary},
            ]}],
        }
    })
}

fn vs_api(client: kube::Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", version, "VirtualService");
    Api::namespaced_with(client, "bookinfo", &ApiResource::from_gvk(&gvk))
}

fn rv(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn status_code(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => (0, String::new(), other.to_string()),
    }
}

fn to_dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("dynamic object")
}

#[tokio::test]
async fn crud_and_metadata() {
    let fake = FakeApiServer::new();
    let api = vs_api(fake.client(), "v1");
    let created = api
        .create(&PostParams::default(), &to_dynamic(vs("reviews", 0)))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(rv(&created), fake.resource_version());

    let (code, reason, msg) = status_code(
        api.create(&PostParams::default(), &to_dynamic(vs("reviews", 0)))
            .await
            .expect_err("dup"),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert!(msg.contains("already exists"), "{msg}");

    let got = api.get("reviews").await.expect("get");
    assert_eq!(got.data["spec"]["hosts"], json!(["reviews"]));
    let (code, reason, msg) = status_code(api.get("nope").await.expect_err("404"));
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(
        msg,
        "virtualservices.networking.istio.io \"nope\" not found"
    );

    // Replace: spec change bumps generation; a no-op keeps the RV.
    let mut changed = got.clone();
    changed.data["spec"]["http"][0]["route"][1]["weight"] = json!(10);
    changed.data["spec"]["http"][0]["route"][0]["weight"] = json!(90);
    let replaced = api
        .replace("reviews", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert!(rv(&replaced) > rv(&got));
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.metadata.uid, got.metadata.uid);
    let same = api
        .replace("reviews", &PostParams::default(), &replaced)
        .await
        .expect("no-op");
    assert_eq!(rv(&same), rv(&replaced));

    // Stale RV → 409 with the real message; no RV → 422.
    let (code, reason, msg) = status_code(
        api.replace("reviews", &PostParams::default(), &changed)
            .await
            .expect_err("409"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        msg,
        "Operation cannot be fulfilled on virtualservices.networking.istio.io \"reviews\": the object has been \
         modified; please apply your changes to the latest version and try again"
    );
    let mut blind = replaced.clone();
    blind.metadata.resource_version = None;
    let (code, reason, msg) = status_code(
        api.replace("reviews", &PostParams::default(), &blind)
            .await
            .expect_err("422"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(msg.contains("must be specified for an update"), "{msg}");

    // Other versions share storage.
    let beta = vs_api(fake.client(), "v1beta1")
        .get("reviews")
        .await
        .expect("v1beta1 get");
    assert_eq!(
        beta.types.as_ref().map(|t| t.api_version.as_str()),
        Some("networking.istio.io/v1beta1")
    );
    assert_eq!(rv(&beta), rv(&replaced));

    api.delete("reviews", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(fake.virtual_service("bookinfo", "reviews").is_none());
}

#[tokio::test]
async fn list_with_paging_and_selectors() {
    let fake = FakeApiServer::new();
    for i in 0..5 {
        let mut o = vs(&format!("vs-{i}"), 0);
        o["metadata"]["labels"] = json!({"app": if i % 2 == 0 { "even" } else { "odd" }});
        fake.seed(o).expect("seed");
    }
    let mut other = vs("elsewhere", 0);
    other["metadata"]["namespace"] = json!("other");
    fake.seed(other).expect("seed");
    let api = vs_api(fake.client(), "v1");
    let all = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 5);
    assert_eq!(
        all.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );

    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    for _ in 0..10 {
        let page = api.list(&lp).await.expect("page");
        names.extend(page.items.iter().filter_map(|o| o.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["vs-0", "vs-1", "vs-2", "vs-3", "vs-4"]);

    let even = api
        .list(&ListParams::default().labels("app=even"))
        .await
        .expect("labels");
    assert_eq!(even.items.len(), 3);
    let one = api
        .list(&ListParams::default().fields("metadata.name=vs-3"))
        .await
        .expect("fields");
    assert_eq!(one.items.len(), 1);
    let everywhere: Api<DynamicObject> = Api::all_with(
        fake.client(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "networking.istio.io",
            "v1",
            "VirtualService",
        )),
    );
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .expect("all ns")
            .items
            .len(),
        6
    );
}

#[tokio::test]
async fn patch_types() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let api = vs_api(fake.client(), "v1");
    let pp = PatchParams::default();

    // JSON Patch with a passing test guard.
    let ok: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/http/0/route/1/destination/subset", "value": "canary"},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 30},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 70},
    ]))
    .expect("patch");
    let patched = api
        .patch("reviews", &pp, &Patch::Json::<()>(ok))
        .await
        .expect("json patch");
    assert_eq!(
        patched.data["spec"]["http"][0]["route"][1]["weight"],
        json!(30)
    );
    assert_eq!(patched.metadata.generation, Some(2));

    // A failing test op → 422, nothing written.
    let bad: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 0},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 50},
    ]))
    .expect("patch");
    let (code, reason, _) = status_code(
        api.patch("reviews", &pp, &Patch::Json::<()>(bad))
            .await
            .expect_err("422"),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        fake.virtual_service("bookinfo", "reviews").expect("vs")["spec"]["http"][0]["route"][1]["weight"],
        json!(30)
    );

    // Merge patch: fine without RV, 409 with a stale one.
    let merged = api
        .patch(
            "reviews",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("merge");
    assert_eq!(
        merged
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("a"))
            .map(String::as_str),
        Some("b")
    );
    assert_eq!(
        merged.metadata.generation,
        Some(2),
        "metadata changes keep the generation"
    );
    let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"hosts": ["x"]}});
    let (code, _, _) = status_code(
        api.patch("reviews", &pp, &Patch::Merge(stale))
            .await
            .expect_err("409"),
    );
    assert_eq!(code, 409);

    // Strategic merge on a custom resource → 415.
    let (code, reason, _) = status_code(
        api.patch(
            "reviews",
            &pp,
            &Patch::Strategic(json!({"spec": {"hosts": ["x"]}})),
        )
        .await
        .expect_err("415"),
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));

    // Apply: creates when absent, merges when present.
    let apply = PatchParams::apply("skycanary");
    let created = api
        .patch("fresh", &apply, &Patch::Apply(vs("fresh", 0)))
        .await
        .expect("apply create");
    assert_eq!(created.metadata.generation, Some(1));
    let applied = api
        .patch("fresh", &apply, &Patch::Apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "fresh"}, "spec": {"gateways": ["mesh"]}})))
        .await
        .expect("apply merge");
    assert_eq!(applied.data["spec"]["gateways"], json!(["mesh"]));
    assert_eq!(applied.data["spec"]["hosts"], json!(["reviews"]));

    // The requests carry the right content types.
    let types: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.content_type)
        .collect();
    assert!(
        types.iter().any(|t| t == "application/json-patch+json"),
        "{types:?}"
    );
    assert!(
        types.iter().any(|t| t == "application/apply-patch+yaml"),
        "{types:?}"
    );
}

#[tokio::test]
async fn raw_patch_errors() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let mut store = fake.lock();
    let res = ResourceRef::new("networking.istio.io", "v1", "virtualservices");
    let err = store
        .patch(
            &res,
            "bookinfo",
            "reviews",
            "application/json-patch+json",
            b"{not json",
            None,
            false,
        )
        .expect_err("400");
    assert_eq!(err.code, 400);
    let err = store
        .patch(
            &res,
            "bookinfo",
            "reviews",
            "text/plain",
            b"{}",
            None,
            false,
        )
        .expect_err("415");
    assert_eq!(err.code, 415);
    let err = store
        .patch(
            &res,
            "bookinfo",
            "reviews",
            "application/apply-patch+yaml",
            b"{}",
            None,
            false,
        )
        .expect_err("fieldManager required");
    assert_eq!(err.code, 400);
    let err = store
        .patch(
            &res,
            "bookinfo",
            "reviews",
            "application/merge-patch+json",
            br#"{"metadata":{"name":"other"}}"#,
            None,
            false,
        )
        .expect_err("rename");
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn status_subresource_touches_only_status() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let api = vs_api(fake.client(), "v1");
    let pp = PatchParams::default();
    let st = api
        .patch_status(
            "reviews",
            &pp,
            &Patch::Merge(
                json!({"status": {"observedGeneration": 1}, "spec": {"hosts": ["evil"]}}),
            ),
        )
        .await
        .expect("status patch");
    assert_eq!(st.data["status"]["observedGeneration"], json!(1));
    assert_eq!(st.data["spec"]["hosts"], json!(["reviews"]));
    assert_eq!(st.metadata.generation, Some(1));

    // A main-resource write cannot change status.
    let mut main = api.get("reviews").await.expect("get");
    main.data["status"] = json!({"observedGeneration": 99});
    let after = api
        .replace("reviews", &PostParams::default(), &main)
        .await
        .expect("replace");
    assert_eq!(after.data["status"]["observedGeneration"], json!(1));

    // PUT /status with RV.
    let mut s = api.get_status("reviews").await.expect("get status");
    s.data["status"] = json!({"conditions": []});
    let put = api
        .replace_status("reviews", &PostParams::default(), &s)
        .await
        .expect("replace status");
    assert_eq!(put.data["status"], json!({"conditions": []}));
}

async fn collect_watch(
    api: &Api<DynamicObject>,
    wp: &WatchParams,
    from: &str,
    max: usize,
) -> Vec<WatchEvent<DynamicObject>> {
    let mut out = Vec::new();
    let stream = api.watch(wp, from).await.expect("watch");
    let mut stream = std::pin::pin!(stream);
    for _ in 0..max {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(ev))) => out.push(ev),
            Ok(Some(Err(e))) => panic!("watch error {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

fn event_names(events: &[WatchEvent<DynamicObject>]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => {
                format!("ADDED {}", o.metadata.name.clone().unwrap_or_default())
            }
            WatchEvent::Modified(o) => {
                format!("MODIFIED {}", o.metadata.name.clone().unwrap_or_default())
            }
            WatchEvent::Deleted(o) => {
                format!("DELETED {}", o.metadata.name.clone().unwrap_or_default())
            }
            WatchEvent::Bookmark(_) => "BOOKMARK".into(),
            WatchEvent::Error(s) => format!("ERROR {}", s.code),
        })
        .collect()
}

#[tokio::test]
async fn watch_replays_then_streams_live() {
    let fake = FakeApiServer::new();
    let start = fake.resource_version().to_string();
    fake.seed(vs("a", 0)).expect("seed");
    fake.update(
        "networking.istio.io",
        "virtualservices",
        "bookinfo",
        "a",
        |o| o["spec"]["hosts"] = json!(["b"]),
    )
    .expect("update");
    let api = vs_api(fake.client(), "v1");
    let wp = WatchParams::default().timeout(2).disable_bookmarks();

    let writer = fake.clone();
    let live = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = writer.delete("networking.istio.io", "virtualservices", "bookinfo", "a");
    });
    let events = collect_watch(&api, &wp, &start, 10).await;
    live.await.expect("writer");
    assert_eq!(event_names(&events), ["ADDED a", "MODIFIED a", "DELETED a"]);

    // From "0": current state as ADDED.
    fake.seed(vs("b", 0)).expect("seed");
    let events = collect_watch(
        &api,
        &WatchParams::default().timeout(1).disable_bookmarks(),
        "0",
        10,
    )
    .await;
    assert_eq!(event_names(&events), ["ADDED b"]);

    // Bookmark on timeout.
    let now = fake.resource_version().to_string();
    let writer = fake.clone();
    let live = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = writer.seed(vs("c", 0));
    });
    let events = collect_watch(&api, &WatchParams::default().timeout(1), &now, 10).await;
    live.await.expect("writer");
    assert_eq!(event_names(&events), ["ADDED c", "BOOKMARK"]);
}

#[tokio::test]
async fn watch_too_old_is_410_and_drop_ends_streams() {
    let fake = FakeApiServer::new();
    fake.seed(vs("a", 0)).expect("seed");
    fake.compact();
    let api = vs_api(fake.client(), "v1");
    let events = collect_watch(&api, &WatchParams::default().timeout(5), "1", 10).await;
    match events.as_slice() {
        [WatchEvent::Error(s)] => {
            assert_eq!(s.code, 410);
            assert_eq!(s.reason, "Expired");
        }
        other => panic!("expected one 410, got {:?}", event_names(other)),
    }

    // A bounded log forgets old events too.
    fake.set_event_log_capacity(1);
    fake.seed(vs("b", 0)).expect("seed");
    fake.seed(vs("c", 0)).expect("seed");
    let events = collect_watch(&api, &WatchParams::default().timeout(5), "2", 10).await;
    assert_eq!(event_names(&events), ["ERROR 410"]);

    let now = fake.resource_version().to_string();
    let dropper = fake.clone();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dropper.drop_watches();
    });
    let events = collect_watch(&api, &WatchParams::default().timeout(30), &now, 10).await;
    task.await.expect("dropper");
    assert!(events.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn faults_latency_and_recording() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let api = vs_api(fake.client(), "v1");
    fake.fail_next(Some("GET"), "/virtualservices/reviews", 2, 500);
    assert_eq!(
        status_code(api.get("reviews").await.expect_err("500")).0,
        500
    );
    assert_eq!(
        status_code(api.get("reviews").await.expect_err("500")).0,
        500
    );
    api.get("reviews").await.expect("third succeeds");

    fake.fail_next(Some("PUT"), "reviews", 1, 409);
    let cur = api.get("reviews").await.expect("get");
    let (code, reason, _) = status_code(
        api.replace("reviews", &PostParams::default(), &cur)
            .await
            .expect_err("409"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    fake.delay_next(None, "reviews", 1, Duration::from_millis(150));
    let t = tokio::time::Instant::now();
    api.get("reviews").await.expect("delayed get");
    assert!(t.elapsed() >= Duration::from_millis(150));

    fake.set_latency(Duration::from_millis(50));
    let t = tokio::time::Instant::now();
    api.get("reviews").await.expect("slow get");
    assert!(t.elapsed() >= Duration::from_millis(50));
    fake.set_latency(Duration::ZERO);

    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .all(|r| r.path.starts_with("/apis/networking.istio.io/v1/"))
    );
    let put = reqs
        .iter()
        .find(|r| r.method == "PUT")
        .expect("PUT recorded");
    assert!(put.body.contains("\"resourceVersion\""));
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn events_core_and_seed_errors() {
    let fake = FakeApiServer::new();
    let core: Api<DynamicObject> = Api::namespaced_with(
        fake.client(),
        "bookinfo",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Event")),
    );
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "reviews."},
                    "reason": "Started", "message": "hi", "involvedObject": {"kind": "Canary", "name": "reviews"}});
    let created = core
        .create(&PostParams::default(), &to_dynamic(ev))
        .await
        .expect("core event");
    assert!(
        created
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("reviews."))
    );
    assert_eq!(fake.events().len(), 1);
    assert!(matches!(
        fake.seed(json!({"kind": "VirtualService"})),
        Err(TestkitError::Malformed(_))
    ));
    assert!(
        matches!(fake.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})), Err(TestkitError::Api(e)) if e.code == 422)
    );
}

#[tokio::test]
async fn served_over_loopback() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let (addr, handle) = fake.serve().await.expect("serve");
    let client = http_client(addr).expect("client");
    let api = vs_api(client, "v1");
    let got = api.get("reviews").await.expect("get over http");
    let mut changed = got.clone();
    changed.data["spec"]["hosts"] = json!(["x"]);
    api.replace("reviews", &PostParams::default(), &changed)
        .await
        .expect("replace");
    let (code, _, _) = status_code(
        api.replace("reviews", &PostParams::default(), &changed)
            .await
            .expect_err("409"),
    );
    assert_eq!(code, 409);
    let events = collect_watch(
        &api,
        &WatchParams::default().timeout(1).disable_bookmarks(),
        "1",
        10,
    )
    .await;
    assert_eq!(event_names(&events), ["ADDED reviews", "MODIFIED reviews"]);
    handle.shutdown();
}

/// kubectl against the served fake; skipped (with a message) where kubectl is absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_and_patch() {
    let kubectl = std::path::Path::new("/usr/bin/kubectl");
    let kubectl = if kubectl.exists() {
        kubectl.to_path_buf()
    } else {
        match std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .find(|c| c.exists())
        }) {
            Some(p) => p,
            None => {
                eprintln!("SKIPPED kubectl_get_and_patch: kubectl not found");
                return;
            }
        }
    };
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let (addr, _handle) = fake.serve().await.expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(addr, &kubeconfig).expect("kubeconfig");
    let cache = dir.path().join("cache");
    let run = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(kubectl)
                .args(args)
                .arg(format!("--cache-dir={}", cache.display()))
                .arg("--request-timeout=20s")
                .env("KUBECONFIG", kubeconfig)
                .env("KUBECACHEDIR", cache)
                .env("HOME", "/nonexistent-home")
                .output()
        })
    };
    let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();

    let out = run(args("get vs reviews -n bookinfo -o json"))
        .await
        .expect("join")
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("kubectl json");
    assert_eq!(got["spec"]["hosts"], json!(["reviews"]));

    let mut patch = args("patch vs reviews -n bookinfo --type=merge -p");
    patch.push(r#"{"spec":{"gateways":["mesh"]}}"#.into());
    let out = run(patch).await.expect("join").expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl patch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = fake.virtual_service("bookinfo", "reviews").expect("stored");
    assert_eq!(stored["spec"]["gateways"], json!(["mesh"]));

    let out = run(args("get vs -n bookinfo"))
        .await
        .expect("join")
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl get list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reviews"));

    // A stale write shows up as a Conflict.
    fake.fail_next(Some("PATCH"), "/virtualservices/reviews", 1, 409);
    let mut patch = args("patch vs reviews -n bookinfo --type=merge -p");
    patch.push(r#"{"spec":{"gateways":["x"]}}"#.into());
    let out = run(patch).await.expect("join").expect("run kubectl");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Conflict"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn write_log_keeps_every_committed_change_with_the_version_it_replaced() {
    let fake = FakeApiServer::new();
    fake.seed(vs("before-recording", 0)).unwrap();
    fake.record_writes();
    let api = vs_api(fake.client(), "v1");
    let created = api
        .create(&PostParams::default(), &to_dynamic(vs("reviews", 0)))
        .await
        .unwrap();
    // A refused write (stale RV) and a no-op write are not changes.
    let mut stale = created.clone();
    stale.metadata.resource_version = Some("1".into());
    assert!(
        api.replace("reviews", &PostParams::default(), &stale)
            .await
            .is_err()
    );
    api.replace("reviews", &PostParams::default(), &created)
        .await
        .unwrap();
    fake.update(
        "networking.istio.io",
        "virtualservices",
        "bookinfo",
        "reviews",
        |o| {
            o["spec"]["http"][0]["route"][1]["weight"] = json!(30);
            o["spec"]["http"][0]["route"][0]["weight"] = json!(70);
        },
    )
    .unwrap();
    api.delete("reviews", &DeleteParams::default())
        .await
        .unwrap();

    let writes = fake.writes();
    let kinds: Vec<_> = writes.iter().map(|w| w.event_type).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{writes:#?}");
    assert!(writes.iter().all(|w| w.name == "reviews"
        && w.plural == "virtualservices"
        && w.namespace == "bookinfo"));
    assert_eq!(writes[0].before, None);
    let modified = &writes[1];
    assert_eq!(
        modified.before.as_ref().unwrap()["spec"]["http"][0]["route"][1]["weight"],
        0
    );
    assert_eq!(modified.after["spec"]["http"][0]["route"][1]["weight"], 30);
    assert_eq!(
        modified.after["metadata"]["resourceVersion"],
        modified.rv.to_string()
    );
    assert!(writes.windows(2).all(|w| w[0].rv < w[1].rv));
    assert_eq!(writes[2].before, None);
}

#[test]
fn write_log_is_off_by_default() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).unwrap();
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn clear_faults_forgets_pending_faults() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seed");
    let api = vs_api(fake.client(), "v1");
    fake.fail_next(None, "reviews", 5, 500);
    assert_eq!(
        status_code(api.get("reviews").await.expect_err("500")).0,
        500
    );
    fake.clear_faults();
    api.get("reviews").await.expect("no fault left");
}

#[tokio::test]
async fn observer_sees_every_answered_request() {
    let fake = FakeApiServer::new();
    fake.seed(vs("reviews", 0)).expect("seeded");
    let seen: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let sink = seen.clone();
    fake.set_observer(move |a| sink.lock().expect("lock").push(a.clone()));
    let api = vs_api(fake.client(), "v1");
    let mut obj = api.get("reviews").await.expect("get");
    obj.data["spec"]["http"][0]["route"][1]["weight"] = json!(20);
    api.replace("reviews", &PostParams::default(), &obj)
        .await
        .expect("replace");
    let _ = api.get("missing").await.expect_err("404");
    let seen = seen.lock().expect("lock");
    let summary: Vec<(&str, &str, u16)> = seen
        .iter()
        .map(|a| (a.method.as_str(), a.path.as_str(), a.status))
        .collect();
    let path = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices";
    assert_eq!(
        summary,
        vec![
            ("GET", &format!("{path}/reviews")[..], 200),
            ("PUT", &format!("{path}/reviews")[..], 200),
            ("GET", &format!("{path}/missing")[..], 404),
        ]
    );
    assert!(seen.iter().all(|a| a.answered >= a.received));
}

/// A raw GET through kube's client (its own parameter types refuse some of what is tried).
async fn raw_get(client: &kube::Client, path_and_query: &str) -> Result<Value, (u16, String)> {
    let req = axum::http::Request::get(path_and_query)
        .body(Vec::new())
        .expect("request");
    match client.request_text(req).await {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(s)) => Err((s.code, s.message.clone())),
        Err(e) => Err((0, e.to_string())),
    }
}

const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/bookinfo/virtualservices";

#[tokio::test]
async fn list_resource_version_parameters_follow_the_apiserver() {
    let fake = FakeApiServer::new();
    fake.seed(vs("a", 0)).expect("seed");
    let client = fake.client();
    let now = fake.resource_version();
    let list_rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string)
    };
    // Most recent, any, not older than a past version, exactly the current one.
    for q in [
        String::new(),
        "?resourceVersion=0".into(),
        "?resourceVersion=0&resourceVersionMatch=NotOlderThan".into(),
        "?resourceVersion=1&resourceVersionMatch=NotOlderThan".into(),
        format!("?resourceVersion={now}&resourceVersionMatch=Exact"),
    ] {
        let got = raw_get(&client, &format!("{VS_PATH}{q}")).await.expect(&q);
        assert_eq!(got["items"].as_array().map(Vec::len), Some(1), "{q}");
        assert_eq!(list_rv(&got), Some(now.to_string()), "{q}");
    }
    let refused = [
        (
            format!("?resourceVersion={}", now + 5),
            504,
            "Too large resource version",
        ),
        (
            "?resourceVersionMatch=NotOlderThan".into(),
            422,
            "unless resourceVersion is provided",
        ),
        (
            "?resourceVersion=0&resourceVersionMatch=Exact".into(),
            422,
            "forbidden for resourceVersion \"0\"",
        ),
        (
            "?resourceVersion=1&resourceVersionMatch=Newest".into(),
            422,
            "supported values",
        ),
        (
            "?resourceVersion=1&continue=abc".into(),
            400,
            "not allowed when using continue",
        ),
        (
            "?resourceVersion=0&resourceVersionMatch=NotOlderThan&continue=abc".into(),
            422,
            "when continue is provided",
        ),
        ("?resourceVersion=x".into(), 400, "invalid resource version"),
    ];
    for (q, code, message) in refused {
        let (got, text) = raw_get(&client, &format!("{VS_PATH}{q}"))
            .await
            .expect_err(&q);
        assert_eq!(got, code, "{q}: {text}");
        assert!(text.contains(message), "{q}: {text}");
    }
    // An Exact list of a compacted version is gone.
    fake.seed(vs("b", 0)).expect("seed");
    fake.compact();
    let (code, _) = raw_get(
        &client,
        &format!("{VS_PATH}?resourceVersion=1&resourceVersionMatch=Exact"),
    )
    .await
    .expect_err("410");
    assert_eq!(code, 410);
}

/// The pages of one list are at the first page's version, so a watch from the list's version
/// replays what changed while it was paged; a token older than the log is 410.
#[tokio::test]
async fn a_continued_list_is_at_its_first_pages_version() {
    let fake = FakeApiServer::new();
    for n in ["a", "b", "c"] {
        fake.seed(vs(n, 0)).expect("seed");
    }
    let api = vs_api(fake.client(), "v1");
    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    let at = first.metadata.resource_version.clone().expect("rv");
    let token = first.metadata.continue_.clone().expect("continue");
    // "a" (already listed) changes between the pages.
    fake.update(
        "networking.istio.io",
        "virtualservices",
        "bookinfo",
        "a",
        |o| o["spec"]["hosts"] = json!(["changed"]),
    )
    .expect("update");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(at.as_str())
    );
    assert_eq!(second.items.len(), 1);
    let events = collect_watch(
        &api,
        &WatchParams::default().timeout(1).disable_bookmarks(),
        &at,
        10,
    )
    .await;
    assert_eq!(event_names(&events), ["MODIFIED a"]);

    fake.compact();
    let (code, reason, _) = status_code(
        api.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .expect_err("410"),
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
}

/// A bookmark carries the newest version the watch has gone past, changes it filtered out
/// included, so a resumed watch does not fall behind a compaction for others' writes.
#[tokio::test]
async fn a_bookmark_carries_the_newest_version_seen() {
    let fake = FakeApiServer::new();
    fake.seed(vs("a", 0)).expect("seed");
    let api = vs_api(fake.client(), "v1");
    let from = fake.resource_version().to_string();
    let writer = fake.clone();
    let elsewhere = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut o = vs("x", 0);
        o["metadata"]["namespace"] = json!("other");
        writer.seed(o).expect("seed");
    });
    let events = collect_watch(&api, &WatchParams::default().timeout(1), &from, 10).await;
    elsewhere.await.expect("writer");
    match events.as_slice() {
        [WatchEvent::Bookmark(b)] => {
            assert_eq!(
                b.metadata.resource_version,
                fake.resource_version().to_string()
            );
        }
        other => panic!("expected one bookmark, got {:?}", event_names(other)),
    }
}

#[tokio::test]
async fn watch_streaming_list_parameters_are_checked() {
    let fake = FakeApiServer::new();
    fake.seed(vs("a", 0)).expect("seed");
    let client = fake.client();
    let watch = "?watch=true&timeoutSeconds=1";
    for (q, message) in [
        (
            "&sendInitialEvents=true&allowWatchBookmarks=true",
            "requires setting resourceVersionMatch",
        ),
        (
            "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            "requires setting allowWatchBookmarks",
        ),
        (
            "&resourceVersion=0&resourceVersionMatch=NotOlderThan",
            "unless sendInitialEvents",
        ),
    ] {
        let (code, text) = raw_get(&client, &format!("{VS_PATH}{watch}{q}"))
            .await
            .expect_err(q);
        assert_eq!(code, 422, "{q}: {text}");
        assert!(text.contains(message), "{q}: {text}");
    }
    let too_new = format!(
        "{VS_PATH}{watch}&resourceVersion={}",
        fake.resource_version() + 3
    );
    let (code, _) = raw_get(&client, &too_new).await.expect_err("504");
    assert_eq!(code, 504);
    // kube's streaming list: the state as ADDED, then the bookmark that ends it.
    let api = vs_api(client, "v1");
    let wp = WatchParams::default().timeout(1).initial_events();
    let events = collect_watch(&api, &wp, "0", 1).await;
    assert_eq!(event_names(&events), ["ADDED a"]);
    let stream = api.watch(&wp, "0").await.expect("watch");
    let mut stream = std::pin::pin!(stream);
    let mut end = None;
    while let Ok(Some(Ok(ev))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        if let WatchEvent::Bookmark(b) = ev {
            end = Some(b);
            break;
        }
    }
    let end = end.expect("a bookmark");
    assert!(
        end.metadata
            .annotations
            .contains_key("k8s.io/initial-events-end")
    );
}

/// Watch events are written as the apiserver writes them, `type` before `object`: a client
/// reading `object` first must buffer it whole (kube's `WatchEvent` does), which made the
/// daemon's CPU under the fake larger than under an apiserver.
#[tokio::test]
async fn watch_lines_name_their_type_before_the_object() {
    let fake = FakeApiServer::new();
    fake.seed(vs("a", 0)).expect("seed");
    let req = axum::http::Request::get(format!(
        "{VS_PATH}?watch=true&timeoutSeconds=1&resourceVersion=0"
    ))
    .body(Vec::new())
    .expect("request");
    let text = fake.client().request_text(req).await.expect("watch");
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "no events in {text:?}");
    for line in lines {
        assert!(line.starts_with(r#"{"type":"ADDED","object":{"#), "{line}");
    }
}

/// kube-runtime's watcher, in both initial-list strategies, sees the state and then changes.
#[tokio::test]
async fn kube_runtime_watcher_lists_then_watches() {
    use kube::runtime::watcher;
    for config in [
        watcher::Config::default().page_size(1),
        watcher::Config::default().any_semantic(),
        watcher::Config::default().streaming_lists(),
    ] {
        let fake = FakeApiServer::new();
        fake.seed(vs("a", 0)).expect("seed");
        let api = vs_api(fake.client(), "v1");
        let events = watcher::watcher(api, config.clone().timeout(5));
        let mut events = std::pin::pin!(events);
        let mut next =
            async || match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                Ok(Some(Ok(e))) => e.to_string(),
                other => panic!("{config:?}: {other:?}"),
            };
        let mut seen = vec![next().await];
        while seen.last().is_some_and(|s| s != "InitDone") {
            seen.push(next().await);
        }
        assert_eq!(seen, ["Init", "InitApply(a)", "InitDone"], "{config:?}");
        let name = format!("n{}", fake.resource_version());
        fake.seed(vs(&name, 0)).expect("seed");
        assert_eq!(next().await, format!("Apply({name})"), "{config:?}");
    }
}
