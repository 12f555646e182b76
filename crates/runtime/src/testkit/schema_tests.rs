//! The shipped CRDs inside the fake API server: what their schemas refuse (each refusal also
//! refused by the loader, so the schema never turns away a spec the daemon would run), what
//! they admit (every example and bundled template), and the apiserver behaviours around them
//! (pruning, strict field validation, CEL compilation, Tables, the core Event view).

use serde_json::{Value, json};

use super::store::core_event;
use super::table::lookup;
use super::*;
use crate::resources::crd::generate;
use crate::resources::load::load_str;

fn fake_with_crds() -> FakeApiServer {
    let fake = FakeApiServer::new();
    for crd in generate().expect("CRDs generate") {
        fake.seed(crd.value).expect("the shipped CRDs are accepted");
    }
    fake
}

fn template() -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "apdex", "namespace": "bookinfo"},
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [{
                "name": "apdex", "interval": "1m", "count": 3,
                "successCondition": "min(result) >= 9900",
                "provider": {"skywalking": {
                    "window": "3m", "metric": "service_apdex",
                    "entity": {"scope": "Service", "serviceName": "{{args.service}}"},
                }},
            }],
        },
    })
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

fn scheduled() -> Value {
    json!({
        "apiVersion": "skycanary.io/v1alpha1", "kind": "ScheduledAnalysis",
        "metadata": {"name": "nightly", "namespace": "bookinfo"},
        "spec": {
            "schedule": "0 2 * * *",
            "startingDeadlineSeconds": 600,
            "templates": [{"templateName": "apdex"}],
            "args": [{"name": "service", "value": "reviews.bookinfo"}],
            "onFailure": {"webhook": {"url": "http://relay:8080/x", "timeout": "5s"}},
        },
    })
}

/// The loader's errors for `doc` next to the template (JSON is YAML).
fn loader_errors(doc: &Value) -> Vec<String> {
    let mut src = template().to_string();
    if doc["kind"] != "AnalysisTemplate" {
        src = format!("{src}\n---\n{doc}");
    } else {
        src = doc.to_string();
    }
    load_str("case.yaml", &src)
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

type Change = fn(&mut Value);

/// (what, base, change, field the fake names, field the loader names).
type Case = (
    &'static str,
    fn() -> Value,
    Change,
    &'static str,
    &'static str,
);

fn refused_cases() -> Vec<Case> {
    vec![
        (
            "setWeight above maxTrafficWeight",
            canary,
            |c| c["spec"]["steps"][0]["setWeight"] = json!(150),
            "spec.steps: Invalid value",
            "spec.steps[0].setWeight",
        ),
        (
            "setWeight above a raised maxTrafficWeight",
            canary,
            |c| {
                c["spec"]["trafficRouting"]["maxTrafficWeight"] = json!(200);
                c["spec"]["steps"][0]["setWeight"] = json!(201);
            },
            "spec.steps: Invalid value",
            "spec.steps[0].setWeight",
        ),
        (
            "negative setWeight",
            canary,
            |c| c["spec"]["steps"][0]["setWeight"] = json!(-1),
            "spec.steps[0].setWeight: Invalid value: -1",
            "spec.steps[0].setWeight",
        ),
        (
            "maxTrafficWeight 0",
            canary,
            |c| c["spec"]["trafficRouting"]["maxTrafficWeight"] = json!(0),
            "spec.trafficRouting.maxTrafficWeight",
            "spec.trafficRouting.maxTrafficWeight",
        ),
        (
            "virtualService and virtualServices",
            canary,
            |c| {
                c["spec"]["trafficRouting"]["istio"]["virtualServices"] = json!([{"name": "other"}])
            },
            "spec.trafficRouting.istio: Invalid value: \"object\": set either virtualService or virtualServices",
            "spec.trafficRouting.istio",
        ),
        (
            "services and destinationRule",
            canary,
            |c| {
                c["spec"]["trafficRouting"]["istio"]["destinationRule"] =
                    json!({"name": "reviews", "stableSubsetName": "a", "canarySubsetName": "b"})
            },
            "spec.trafficRouting.istio: Invalid value: \"object\": set both stableService",
            "spec.trafficRouting.istio",
        ),
        (
            "no split at all",
            canary,
            |c| {
                let istio = c["spec"]["trafficRouting"]["istio"]
                    .as_object_mut()
                    .unwrap();
                istio.remove("stableService");
            },
            "spec.trafficRouting.istio",
            "spec.trafficRouting.istio",
        ),
        (
            "same stable and canary service",
            canary,
            |c| c["spec"]["trafficRouting"]["istio"]["canaryService"] = json!("reviews-stable"),
            "canaryService must differ",
            "spec.trafficRouting.istio.canaryService",
        ),
        (
            "same subsets",
            canary,
            |c| {
                let istio = c["spec"]["trafficRouting"]["istio"]
                    .as_object_mut()
                    .unwrap();
                istio.remove("stableService");
                istio.remove("canaryService");
                istio.insert(
                    "destinationRule".into(),
                    json!({"name": "reviews", "stableSubsetName": "a", "canarySubsetName": "a"}),
                );
            },
            "spec.trafficRouting.istio.destinationRule",
            "spec.trafficRouting.istio.destinationRule",
        ),
        (
            "empty additional destination",
            canary,
            |c| c["spec"]["trafficRouting"]["istio"]["additionalDestinations"] = json!([{}]),
            "spec.trafficRouting.istio.additionalDestinations[0]",
            "spec.trafficRouting.istio.additionalDestinations[0]",
        ),
        (
            "mirror percentage 150",
            canary,
            |c| c["spec"]["steps"][2]["setMirrorRoute"]["percentage"] = json!(150),
            "spec.steps[2].setMirrorRoute.percentage",
            "spec.steps[2].setMirrorRoute.percentage",
        ),
        (
            "watch not a duration",
            canary,
            |c| c["spec"]["postPromotion"]["watch"] = json!("10 minutes"),
            "spec.postPromotion.watch: Invalid value: \"10 minutes\"",
            "spec.postPromotion.watch",
        ),
        (
            "negative watch",
            canary,
            |c| c["spec"]["postPromotion"]["watch"] = json!("-5m"),
            "spec.postPromotion.watch",
            "spec.postPromotion.watch",
        ),
        (
            "arg with value and valueFrom",
            canary,
            |c| {
                c["spec"]["steps"][1]["analysis"]["args"][0]["valueFrom"] =
                    json!({"secretKeyRef": {"name": "s", "key": "k"}})
            },
            "spec.steps[1].analysis.args[0]",
            "spec.steps[1].analysis.args[0]",
        ),
        (
            "analysis step without templates",
            canary,
            |c| c["spec"]["steps"][1]["analysis"]["templates"] = json!([]),
            "spec.steps[1].analysis.templates",
            "spec.steps[1].analysis.templates",
        ),
        (
            "unknown onSuccess",
            canary,
            |c| c["spec"]["onSuccess"] = json!("Bogus"),
            "spec.onSuccess: Unsupported value: \"Bogus\"",
            "onSuccess",
        ),
        (
            "two queries in one metric",
            template,
            |t| {
                t["spec"]["metrics"][0]["provider"]["skywalking"]["expression"] =
                    json!("service_apdex")
            },
            "spec.metrics[0].provider.skywalking: Invalid value: \"object\": set exactly one of metric",
            "spec.metrics[0].provider.skywalking",
        ),
        (
            "no query",
            template,
            |t| {
                t["spec"]["metrics"][0]["provider"]["skywalking"]
                    .as_object_mut()
                    .unwrap()
                    .remove("metric");
            },
            "set exactly one of metric, expression or query",
            "spec.metrics[0].provider.skywalking",
        ),
        (
            "no provider",
            template,
            |t| t["spec"]["metrics"][0]["provider"] = json!({}),
            "spec.metrics[0].provider.skywalking: Required value",
            "spec.metrics[0].provider",
        ),
        (
            "interval not a duration",
            template,
            |t| t["spec"]["metrics"][0]["interval"] = json!("5x"),
            "spec.metrics[0].interval: Invalid value: \"5x\"",
            "spec.metrics[0].interval",
        ),
        (
            "basic and bearer auth",
            template,
            |t| {
                t["spec"]["metrics"][0]["provider"]["skywalking"]["auth"] =
                    json!({"bearer": "x", "basic": {"username": "u", "password": "p"}})
            },
            "spec.metrics[0].provider.skywalking.auth",
            "spec.metrics[0].provider.skywalking.auth",
        ),
        (
            "schedule without templates",
            scheduled,
            |s| s["spec"]["templates"] = json!([]),
            "spec.templates",
            "spec.templates",
        ),
        (
            "empty actions",
            scheduled,
            |s| s["spec"]["onFailure"] = json!({}),
            "spec.onFailure: Invalid value: \"object\": set rollback and/or webhook",
            "spec.onFailure",
        ),
        (
            "webhook not http",
            scheduled,
            |s| s["spec"]["onFailure"]["webhook"]["url"] = json!("ftp://relay/x"),
            "spec.onFailure.webhook.url",
            "spec.onFailure.webhook.url",
        ),
        (
            "webhook timeout not a duration",
            scheduled,
            |s| s["spec"]["onFailure"]["webhook"]["timeout"] = json!("soon"),
            "spec.onFailure.webhook.timeout",
            "spec.onFailure.webhook.timeout",
        ),
        (
            "startingDeadlineSeconds 0",
            scheduled,
            |s| s["spec"]["startingDeadlineSeconds"] = json!(0),
            "spec.startingDeadlineSeconds",
            "spec.startingDeadlineSeconds",
        ),
    ]
}

#[test]
fn the_bases_pass_both_the_schema_and_the_loader() {
    let fake = fake_with_crds();
    for doc in [template(), canary(), scheduled()] {
        assert_eq!(loader_errors(&doc), Vec::<String>::new(), "{doc}");
        fake.seed(doc.clone())
            .unwrap_or_else(|e| panic!("{doc}: {e}"));
    }
}

#[test]
fn schemas_refuse_what_the_loader_refuses_naming_the_field() {
    let fake = fake_with_crds();
    fake.seed(template()).expect("template");
    for (what, base, change, fake_field, loader_field) in refused_cases() {
        let mut doc = base();
        change(&mut doc);
        doc["metadata"]["name"] = json!("case");
        let err = match fake.seed(doc.clone()) {
            Err(TestkitError::Api(e)) => e,
            other => panic!("{what}: the schema admitted it: {other:?}"),
        };
        assert_eq!(
            (err.code, err.reason.as_str()),
            (422, "Invalid"),
            "{what}: {err:?}"
        );
        assert!(
            err.message.contains(fake_field),
            "{what}: {:?} does not name {fake_field:?}",
            err.message
        );
        let loader = loader_errors(&doc);
        assert!(
            loader.iter().any(|e| e.contains(loader_field)),
            "{what}: the loader accepts what the schema refuses (or names another field): {loader:?}"
        );
    }
}

#[test]
fn rules_do_not_refuse_what_the_loader_accepts() {
    let fake = fake_with_crds();
    let mut raised = canary();
    raised["spec"]["trafficRouting"]["maxTrafficWeight"] = json!(1000);
    raised["spec"]["steps"][0]["setWeight"] = json!(500);
    let mut subsets = canary();
    let istio = subsets["spec"]["trafficRouting"]["istio"]
        .as_object_mut()
        .expect("istio");
    istio.remove("stableService");
    istio.remove("canaryService");
    istio.insert(
        "destinationRule".into(),
        json!({"name": "reviews", "stableSubsetName": "v1", "canarySubsetName": "v2"}),
    );
    let mut durations = template();
    durations["spec"]["metrics"][0]["interval"] = json!("1h30m");
    durations["spec"]["metrics"][0]["initialDelay"] = json!("90");
    durations["spec"]["metrics"][0]["errorRetryInterval"] = json!("1.5s");
    durations["metadata"]["name"] = json!("durations");
    let mut expression = template();
    let sw = &mut expression["spec"]["metrics"][0]["provider"]["skywalking"];
    sw.as_object_mut().expect("sw").remove("metric");
    sw["expression"] = json!("service_apdex");
    sw["auth"] = json!({"bearer": "{{args.token}}"});
    // The bearer is an arg like any other field's: it must be declared.
    expression["spec"]["args"]
        .as_array_mut()
        .expect("args")
        .push(json!({"name": "token"}));
    expression["metadata"]["name"] = json!("expression");
    let mut schedule = scheduled();
    schedule["spec"]["onFailure"]["webhook"]["url"] = json!("HTTPS://relay.example:8443/x");
    for (i, doc) in [raised, subsets, durations, expression, schedule]
        .into_iter()
        .enumerate()
    {
        let loader = loader_errors(&doc);
        assert!(loader.is_empty(), "case {i}: {loader:?}");
        let mut doc = doc;
        if doc["kind"] != "AnalysisTemplate" {
            doc["metadata"]["name"] = json!(format!("case-{i}"));
        }
        fake.seed(doc.clone())
            .unwrap_or_else(|e| panic!("case {i} refused by the schema: {e}\n{doc}"));
    }
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
        for (i, doc) in crate::resources::yaml::parse_documents(&text)
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
