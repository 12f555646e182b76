//! The shipped CRDs inside the fake API server: what they admit (every example and bundled
//! template) and the apiserver behaviours around them (pruning, strict field validation, CEL
//! compilation, Tables, the core Event view). That their schemas refuse only what the loader
//! refuses is checked where the loader is (`skycanary-runtime`'s `testkit` tests).

use serde_json::{Value, json};
use skycanary_api::crd::generate;
use skycanary_core::resources::yaml::parse_documents;

use super::store::core_event;
use super::table::lookup;
use super::*;

fn fake_with_crds() -> FakeApiServer {
    let fake = FakeApiServer::new();
    for crd in generate().expect("CRDs generate") {
        fake.seed(crd.value).expect("the shipped CRDs are accepted");
    }
    fake
}

fn canary() -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "Canary",
        "metadata": {"name": "reviews", "namespace": "bookinfo"},
        "spec": {
            "trafficRouting": {
                "managedRoutes": [{"name": "mirror"}],
                "istio": {
                    "virtualService": {"name": "reviews"},
                    "stableService": "reviews-stable", "canaryService": "reviews-canary",
                },
            },
            "steps": [
                {"setWeight": 10},
                {"analysis": {"templates": [{"templateName": "apdex"}],
                              "args": [{"name": "service", "value": "reviews.bookinfo"}]}},
                {"setMirrorRoute": {"name": "mirror", "percentage": 50,
                                    "match": [{"method": {"exact": "GET"}}]}},
                {"pause": {"duration": "1m"}},
                {"setWeight": 100},
            ],
            "postPromotion": {"watch": "10m"},
        },
    })
}

#[test]
fn shipped_crds_admit_every_example_and_bundled_template() {
    let fake = fake_with_crds();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![
        root.join("deploy/examples/bookinfo/canary.yaml"),
        root.join("deploy/examples/bookinfo/apdex.yaml"),
        root.join("deploy/examples/bookinfo/scheduled.yaml"),
    ];
    let mut templates: Vec<_> = std::fs::read_dir(root.join("analysis-templates"))
        .expect("analysis-templates")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    templates.sort();
    files.extend(templates);
    let mut admitted = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (i, doc) in parse_documents(&text)
            .expect("yaml")
            .into_iter()
            .enumerate()
        {
            let mut v = doc.value;
            if v["kind"].as_str().is_none_or(|k| {
                !k.contains("Template") && k != "Canary" && k != "ScheduledAnalysis"
            }) {
                continue;
            }
            // Argo's own CRD validates argoproj.io templates; the spec shape is the same.
            v["apiVersion"] = json!("skycanary.io/v1alpha1");
            v["metadata"]["name"] = json!(format!("doc-{admitted}-{i}"));
            fake.seed(v.clone())
                .unwrap_or_else(|e| panic!("{} refused: {e}", f.display()));
            admitted += 1;
        }
    }
    assert!(admitted >= 5, "only {admitted} documents checked");
}

#[test]
fn unknown_fields_are_pruned_or_refused_under_strict_validation() {
    let fake = fake_with_crds();
    let mut doc = canary();
    doc["spec"]["stepz"] = json!([]);
    doc["spec"]["trafficRouting"]["istio"]["virtualService"]["typo"] = json!(1);
    let stored = fake.seed(doc.clone()).expect("pruned, then stored");
    assert!(stored["spec"].get("stepz").is_none());
    assert!(
        stored["spec"]["trafficRouting"]["istio"]["virtualService"]
            .get("typo")
            .is_none()
    );
    let mut store = fake.lock();
    store.field_validation = Some("Strict".into());
    doc["metadata"]["name"] = json!("strict");
    let err = store
        .create(
            &ResourceRef::new("skycanary.io", "v1alpha1", "canaries"),
            "bookinfo",
            doc,
        )
        .expect_err("strict");
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("unknown field \"spec.stepz\"")
            && err
                .message
                .contains("spec.trafficRouting.istio.virtualService.typo"),
        "{}",
        err.message
    );
}

#[test]
fn status_writes_are_validated_and_spec_updates_too() {
    let fake = fake_with_crds();
    fake.seed(canary()).expect("canary");
    // A status the schema refuses (phase is an enum) is refused on the status subresource.
    let res = ResourceRef::new("skycanary.io", "v1alpha1", "canaries");
    let mut obj = fake
        .get("skycanary.io", "canaries", "bookinfo", "reviews")
        .expect("stored");
    obj["status"] = json!({"phase": "Exploded"});
    let err = fake
        .lock()
        .replace(&res, "bookinfo", "reviews", obj.clone(), true)
        .expect_err("bad phase");
    assert!(
        err.message.contains("status.phase: Unsupported value"),
        "{}",
        err.message
    );
    obj["status"] = json!({"phase": "Progressing", "currentStepIndex": 1});
    fake.lock()
        .replace(&res, "bookinfo", "reviews", obj, true)
        .expect("good status");
    let err = fake
        .update("skycanary.io", "canaries", "bookinfo", "reviews", |c| {
            c["spec"]["steps"][0]["setWeight"] = json!(101);
        })
        .expect_err("spec update refused");
    assert!(matches!(err, TestkitError::Api(e) if e.code == 422));
}

#[test]
fn a_crd_whose_rule_does_not_compile_is_refused() {
    let fake = FakeApiServer::new();
    let mut crd = generate().expect("CRDs").remove(1).value;
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
        json!([{"rule": "self.steps.all(s, ", "message": "x"}]);
    let err = fake.seed(crd).expect_err("bad rule");
    assert!(
        matches!(&err, TestkitError::Api(e) if e.code == 422 && e.message.contains("compilation failed")),
        "{err}"
    );
}

#[test]
fn tables_follow_the_printer_columns() {
    let fake = fake_with_crds();
    fake.seed(canary()).expect("canary");
    let crd = fake
        .get(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "canaries.skycanary.io",
        )
        .expect("crd");
    let mut obj = fake
        .get("skycanary.io", "canaries", "bookinfo", "reviews")
        .expect("stored");
    obj["status"] = json!({"phase": "Paused", "currentStepIndex": 3, "step": "4/7", "desiredWeight": 30,
                           "message": "paused", "conditions": [
                               {"type": "Ready", "status": "False"}, {"type": "Paused", "status": "True"}]});
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T02:30:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let t = table::table(&crd["spec"]["versions"][0], &[obj], None, "7", now);
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Name", "Phase", "Step", "Weight", "Revision", "Message", "Age"
        ]
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!(["reviews", "Paused", "4/7", 30, null, "paused", "2h"])
    );
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "reviews");
    assert!(table::wants_table(
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    ));
    assert!(!table::wants_table("application/json"));
}

#[test]
fn jsonpath_subset() {
    let o = json!({"status": {"conditions": [{"type": "Ready", "status": "False"},
                                             {"type": "Promoted", "status": "True"}],
                              "list": [5, 6]}});
    assert_eq!(
        lookup(&o, ".status.conditions[?(@.type==\"Promoted\")].status"),
        Some(&json!("True"))
    );
    assert_eq!(lookup(&o, "{.status.list[1]}"), Some(&json!(6)));
    assert_eq!(lookup(&o, ".status.missing"), None);
    assert_eq!(lookup(&o, ".status.list[9]"), None);
    assert_eq!(
        lookup(&o, ".status.conditions[?(@.type=='Nope')].status"),
        None
    );
}

#[test]
fn events_k8s_io_events_are_listed_as_core_events() {
    let fake = FakeApiServer::new();
    let ev = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "reviews.1", "namespace": "bookinfo"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "AnalysisRunFailed",
        "note": "apdex 0.71 < 0.9", "type": "Warning", "action": "Analyze",
        "reportingController": "skycanary.io/controller", "reportingInstance": "x",
        "series": {"count": 4, "lastObservedTime": "2026-01-01T00:03:00.000000Z"},
        "regarding": {"kind": "Canary", "name": "reviews", "namespace": "bookinfo", "uid": "u1"},
    });
    fake.seed(ev.clone()).expect("event");
    let core = core_event(&ev);
    assert_eq!(core["involvedObject"]["uid"], "u1");
    assert_eq!(core["message"], "apdex 0.71 < 0.9");
    assert_eq!(core["count"], 4);
    assert_eq!(core["lastTimestamp"], "2026-01-01T00:03:00.000000Z");
    assert_eq!(core["reportingComponent"], "skycanary.io/controller");
    let store = fake.lock();
    let q = store::ListQuery {
        field_selector: Some("involvedObject.name=reviews,involvedObject.uid=u1".into()),
        ..Default::default()
    };
    let list = store
        .list(&ResourceRef::new("", "v1", "events"), Some("bookinfo"), &q)
        .expect("list");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0]["apiVersion"], "v1");
    let none = store
        .list(
            &ResourceRef::new("", "v1", "events"),
            Some("other"),
            &store::ListQuery::default(),
        )
        .expect("list");
    assert_eq!(none["items"], json!([]));
}
