//! The shipped CRDs inside the fake API server (`skycanary-testkit`) next to the loader: what
//! their schemas refuse is refused by the loader too, naming the field, so the schema never
//! turns away a spec the daemon would run.

use serde_json::{Value, json};

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
