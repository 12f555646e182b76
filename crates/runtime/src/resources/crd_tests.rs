use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::*;
use crate::analysis::{Measurement, MetricResult, Phase, RunState};
use crate::api::canary::{
    AbortStatus, AnalysisRunKind, AnalysisRunStatus, CanaryPhase, CanaryStatus, CommandAction,
    CommandOutcome, CommandRequest, PauseReason, PauseStatus, StatusCondition,
};
use crate::resources::yaml::parse_documents;
use crate::traffic::{
    DesiredRouting, DestinationWeight, HeaderMatch, HeaderRoute, MirrorMatch, MirrorRoute,
    RouteKind, RouteWeights, StringMatch,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crds() -> Vec<GeneratedCrd> {
    match generate() {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn crd(kind: &str) -> GeneratedCrd {
    crds()
        .into_iter()
        .find(|c| c.value["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

fn root_schema(kind: &str) -> Value {
    crd(kind).value["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn yaml_docs(text: &str) -> Vec<Value> {
    parse_documents(text)
        .expect("valid YAML")
        .into_iter()
        .map(|d| d.value)
        .collect()
}

const REGENERATE: &str = "run `cargo run -- crds --write deploy/crds` and commit the result";

#[test]
fn deploy_crds_match_the_rust_types() {
    let dir = repo().join(CRD_DIR);
    let generated = crds();
    for c in &generated {
        let path = dir.join(&c.file_name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == c.yaml,
            "{CRD_DIR}/{} is missing or differs from the CRD generated from the Rust types: {REGENERATE}",
            c.file_name
        );
    }
    let mut stale: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.ends_with(".yaml")
                        && n != KUSTOMIZATION_FILE
                        && !generated.iter().any(|c| &c.file_name == n)
                })
                .collect()
        })
        .unwrap_or_default();
    stale.sort();
    let on_disk = std::fs::read_to_string(dir.join(KUSTOMIZATION_FILE)).unwrap_or_default();
    assert!(
        on_disk == kustomization(&generated),
        "{CRD_DIR}/{KUSTOMIZATION_FILE} does not list exactly the generated CRDs: {REGENERATE}"
    );
    assert!(
        stale.is_empty(),
        "stale files in {CRD_DIR}: {stale:?}; delete them and {REGENERATE}"
    );
}

#[test]
fn names_scope_and_files() {
    let names: Vec<(String, String, Value)> = crds()
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.file_name.clone(),
                c.value["spec"]["scope"].clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "analysistemplates.skycanary.io".to_string(),
                "skycanary.io_analysistemplates.yaml".to_string(),
                json!("Namespaced")
            ),
            (
                "canaries.skycanary.io".to_string(),
                "skycanary.io_canaries.yaml".to_string(),
                json!("Namespaced")
            ),
            (
                "clusteranalysistemplates.skycanary.io".to_string(),
                "skycanary.io_clusteranalysistemplates.yaml".to_string(),
                json!("Cluster")
            ),
            (
                "scheduledanalyses.skycanary.io".to_string(),
                "skycanary.io_scheduledanalyses.yaml".to_string(),
                json!("Namespaced")
            ),
        ]
    );
    // Sorted by file name, so `cat deploy/crds/*.yaml` is the `skycanary crds` output.
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(sorted, names);
    let c = crd("Canary");
    assert_eq!(c.value["spec"]["names"]["shortNames"], json!(["skc"]));
    assert_eq!(c.value["spec"]["names"]["categories"], json!(["skycanary"]));
    assert_eq!(
        c.value["spec"]["versions"][0]["subresources"],
        json!({"status": {}})
    );
    for kind in ["AnalysisTemplate", "ClusterAnalysisTemplate"] {
        let v = &crd(kind).value["spec"]["versions"][0];
        assert!(v.get("subresources").is_none(), "{kind}");
        assert!(
            v["schema"]["openAPIV3Schema"]["properties"]
                .get("status")
                .is_none()
        );
    }
}

#[test]
fn canary_printer_columns() {
    let c = crd("Canary");
    let cols = c.value["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<(&str, &str, &str)> = cols
        .iter()
        .filter(|c| c.get("priority").is_none())
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or_default(),
                c["jsonPath"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("Phase", "string", ".status.phase"),
            // The CLI's `3/7`, not the 0-based index (issue 18: one step numbering).
            ("Step", "string", ".status.step"),
            ("Weight", "integer", ".status.desiredWeight"),
            ("Message", "string", ".status.message"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
    // Every status path a column reads exists in the schema.
    let status = &root_schema("Canary")["properties"]["status"]["properties"];
    for col in &cols {
        if let Some(field) = col["jsonPath"]
            .as_str()
            .and_then(|p| p.strip_prefix(".status."))
        {
            assert!(
                status.get(field).is_some(),
                "column reads missing .status.{field}"
            );
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for c in crds() {
        let schema = &c.value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let v = structural_violations(schema);
        assert!(v.is_empty(), "{}: {v:#?}", c.name);
        let text = c.value.to_string();
        for banned in [
            "\"$ref\"",
            "\"$defs\"",
            "\"definitions\"",
            "\"anyOf\"",
            "\"oneOf\"",
            "\"allOf\"",
            "\"const\"",
            "\"default\"",
            "x-skycanary",
        ] {
            assert!(!text.contains(banned), "{} contains {banned}", c.name);
        }
    }
}

#[test]
fn crds_are_valid_apiextensions_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    for c in crds() {
        // Unknown or misspelt keywords would be dropped by the typed round trip.
        let typed: CustomResourceDefinition =
            serde_json::from_value(c.value.clone()).expect("deserializes as a CRD");
        let back = serde_json::to_value(&typed).expect("serializes");
        // k8s-openapi keeps `minimum` as f64; compare numbers by value.
        assert_eq!(
            floats(back),
            floats(c.value.clone()),
            "{} does not survive the k8s-openapi round trip",
            c.name
        );
    }
}

fn floats(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(floats).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, floats(v))).collect()),
        other => other,
    }
}

#[test]
fn yaml_round_trips() {
    let all = crds();
    for c in &all {
        assert!(c.yaml.starts_with("---\n"));
        assert_eq!(yaml_docs(&c.yaml), vec![c.value.clone()], "{}", c.name);
    }
    let stream = yaml_docs(&render_all(&all));
    assert_eq!(
        stream,
        all.iter().map(|c| c.value.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn yaml_scalars_quote_what_is_ambiguous() {
    let v = json!({
        "plain": "Canary weight on every route (default 100).",
        "path": ".status.phase",
        "bool": "true",
        "yes": "Yes",
        "num": "1.5",
        "empty": "",
        "colon": "a: b",
        "hash": "a #b",
        "dash": "-x",
        "multi": "a\nb",
        "unicode": "µs",
        "list": [1, "two", {"k": [true, null]}, [], {}],
        "nested": [[1, 2], [{"a": 1, "b": 2}]],
    });
    let text = to_yaml(&v);
    assert_eq!(yaml_docs(&text), vec![v], "{text}");
    assert!(text.contains("plain: Canary weight on every route (default 100).\n"));
    assert!(text.contains("bool: \"true\"\n"));
    assert!(text.contains("path: .status.phase\n"));
}

#[test]
fn enums_and_int_or_string_have_kubernetes_shapes() {
    let spec = &root_schema("Canary")["properties"]["spec"];
    let step = &spec["properties"]["steps"]["items"];
    assert_eq!(step["type"], "object");
    assert_eq!(step["minProperties"], 1);
    assert_eq!(step["maxProperties"], 1);
    let keys: Vec<&String> = step["properties"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(step.get("required").is_none());
    assert_eq!(
        step["properties"]["pause"]["properties"]["duration"],
        json!({"x-kubernetes-int-or-string": true,
               "description": "Seconds (int) or a duration string; absent = until promoted."})
    );
    assert_eq!(
        spec["properties"]["onAnalysisError"]["enum"],
        json!(["Abort", "Hold"])
    );
    let d = spec["properties"]["onAnalysisError"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(d.contains("`Hold`: Keep the weight"), "{d}");

    let status = &root_schema("Canary")["properties"]["status"];
    let kind = &status["properties"]["analysisRuns"]["items"]["properties"]["kind"];
    assert_eq!(
        kind["properties"]["type"]["enum"],
        json!(["step", "background"])
    );
    assert_eq!(kind["required"], json!(["type"]));
    assert!(kind.get("maxProperties").is_none());

    let metric =
        &root_schema("AnalysisTemplate")["properties"]["spec"]["properties"]["metrics"]["items"];
    assert_eq!(
        metric["properties"]["count"]["x-kubernetes-int-or-string"],
        true
    );
    assert_eq!(metric["required"], json!(["name", "provider"]));
    for kind in ["AnalysisTemplate", "ClusterAnalysisTemplate"] {
        let lang = &root_schema(kind)["properties"]["spec"]["properties"]["conditionLanguage"];
        assert_eq!(lang["enum"], json!(["expr", "evalexpr"]), "{kind}: {lang}");
    }
}

/// Only the string-or-object `window` is left unchecked by the API server; the status's
/// header matchers and destination weights were `[name, match]` / `[host, weight]` tuples with
/// unchecked items (5 in the canaries CRD before issue 18's closure, 0 now).
#[test]
fn preserve_unknown_fields_only_for_the_window() {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.contains_key("x-kubernetes-preserve-unknown-fields") {
                    out.push(path.to_string());
                }
                for (k, c) in o {
                    walk(c, &format!("{path}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for c in crds() {
        walk(&c.value, &c.name, &mut found);
    }
    assert!(!found.is_empty());
    for p in &found {
        assert!(
            p.ends_with("/skywalking/properties/window"),
            "unexpected preserve-unknown-fields at {p}"
        );
    }
    let canaries = crds()
        .into_iter()
        .find(|c| c.name == "canaries.skycanary.io")
        .expect("canaries CRD");
    let yaml = canaries.yaml;
    assert_eq!(
        yaml.matches("x-kubernetes-preserve-unknown-fields").count(),
        0,
        "the canaries CRD keeps no unchecked field"
    );
    assert!(!yaml.contains("tuple"), "no tuple left in the canaries CRD");
}

/// Every skycanary.io resource in the repository validates against its CRD.
#[test]
fn examples_and_bundled_templates_validate() {
    let mut files = vec![
        repo().join("deploy/examples/bookinfo/canary.yaml"),
        repo().join("deploy/examples/bookinfo/apdex.yaml"),
        repo().join("deploy/examples/bookinfo/scheduled.yaml"),
    ];
    let mut templates: Vec<PathBuf> = std::fs::read_dir(repo().join("analysis-templates"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    templates.sort();
    files.extend(templates);
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for doc in yaml_docs(&text) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            if doc["apiVersion"] != "skycanary.io/v1alpha1" {
                // Argo's own CRD validates argoproj.io objects; the spec shape is the same.
                let errs = validate(&root_schema(&kind)["properties"]["spec"], &doc["spec"]);
                assert!(errs.is_empty(), "{}: {errs:#?}", f.display());
                continue;
            }
            let errs = validate(&root_schema(&kind), &doc);
            assert!(errs.is_empty(), "{}: {errs:#?}", f.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} documents checked");
}

#[test]
fn scheduled_analysis_crd_has_a_status_subresource_and_a_status_schema() {
    let c = crd("ScheduledAnalysis");
    let v = &c.value["spec"]["versions"][0];
    assert_eq!(v["subresources"]["status"], json!({}));
    assert_eq!(c.value["spec"]["names"]["shortNames"], json!(["sksa"]));
    let status = &root_schema("ScheduledAnalysis")["properties"]["status"]["properties"];
    for field in [
        "lastScheduleTime",
        "nextScheduleTime",
        "lastSuccessfulTime",
        "active",
        "history",
    ] {
        assert!(status.get(field).is_some(), "{field}");
    }
    let spec = &root_schema("ScheduledAnalysis")["properties"]["spec"];
    assert_eq!(
        spec["properties"]["concurrencyPolicy"]["enum"],
        json!(["Forbid", "Replace", "Allow"])
    );
}

#[test]
fn validator_reports_what_the_api_server_would() {
    let schema = root_schema("Canary");
    let text = std::fs::read_to_string(repo().join("deploy/examples/bookinfo/canary.yaml"))
        .expect("example");
    let good = yaml_docs(&text).remove(0);

    let mut no_routing = good.clone();
    if let Some(spec) = no_routing["spec"].as_object_mut() {
        spec.remove("trafficRouting");
    }
    let e = validate(&schema, &no_routing);
    assert_eq!(
        e,
        vec![".spec: missing required field \"trafficRouting\"".to_string()]
    );

    let mut no_spec = good.clone();
    if let Some(o) = no_spec.as_object_mut() {
        o.remove("spec");
    }
    assert_eq!(
        validate(&schema, &no_spec),
        vec!["(root): missing required field \"spec\"".to_string()]
    );

    let mut two_keys = good.clone();
    two_keys["spec"]["steps"][1] = json!({"setWeight": 10, "pause": {}});
    let e = validate(&schema, &two_keys);
    assert!(
        e.iter()
            .any(|m| m.starts_with(".spec.steps[1]: has 2 fields")),
        "{e:?}"
    );

    let mut bad_types = good.clone();
    bad_types["spec"]["steps"][1] = json!({"setWeight": "ten"});
    bad_types["spec"]["steps"][2] = json!({"pause": {"duration": true}});
    bad_types["spec"]["onSuccess"] = json!("Forget");
    bad_types["spec"]["trafficRouting"]["istio"]["typo"] = json!(1);
    let e = validate(&schema, &bad_types);
    for needle in [
        ".spec.steps[1].setWeight: expected integer",
        ".spec.steps[2].pause.duration: expected an integer or a string",
        ".spec.onSuccess: \"Forget\" is not one of",
        ".spec.trafficRouting.istio.typo: unknown field",
    ] {
        assert!(
            e.iter().any(|m| m.starts_with(needle)),
            "{needle} not in {e:#?}"
        );
    }

    let mut int_pause = good;
    int_pause["spec"]["steps"][2] = json!({"pause": {"duration": 120}});
    if let Some(steps) = int_pause["spec"]["steps"].as_array_mut() {
        steps.push(json!({"pause": {}}));
    }
    assert_eq!(validate(&schema, &int_pause), Vec::<String>::new());
}

#[test]
fn serialized_spec_validates() {
    let text = std::fs::read_to_string(repo().join("deploy/examples/bookinfo/canary.yaml"))
        .expect("example");
    let doc = yaml_docs(&text).remove(0);
    let spec: crate::resources::canary::CanarySpec =
        serde_json::from_value(doc["spec"].clone()).expect("typed spec");
    let back = serde_json::to_value(&spec).expect("serializes");
    let schema = &root_schema("Canary")["properties"]["spec"];
    assert_eq!(validate(schema, &back), Vec::<String>::new());
}

fn t(s: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + s, 0)
        .single()
        .unwrap_or_default()
}

fn full_status() -> CanaryStatus {
    let exact = StringMatch::Exact("jason".into());
    CanaryStatus {
        readiness: None,
        template_hash: Some("abc0123456".into()),
        phase: CanaryPhase::Paused,
        revision: Some("v2".into()),
        current_step_index: 3,
        step: Some("4/7".into()),
        step_started_at: Some(t(10)),
        desired_weight: 30,
        routing_changed_at: Some(t(9)),
        applied: Some(DesiredRouting {
            canary_weight: 30,
            header_routes: vec![HeaderRoute {
                name: "canary-header".into(),
                headers: vec![HeaderMatch::new("end-user", exact.clone())],
            }],
            mirror_routes: vec![MirrorRoute {
                name: "mirror".into(),
                percentage: None,
                matches: vec![
                    MirrorMatch {
                        method: Some(StringMatch::Prefix("GE".into())),
                        path: None,
                        headers: vec![HeaderMatch::new("x", StringMatch::Regex(".*".into()))],
                    },
                    MirrorMatch::default(),
                ],
            }],
        }),
        weights: vec![RouteWeights {
            virtual_service: "reviews".into(),
            kind: RouteKind::Http,
            route: "primary".into(),
            stable: 70,
            canary: 30,
            others: vec![DestinationWeight::new("other/v3", 0)],
        }],
        pause: Some(PauseStatus {
            reason: PauseReason::Inconclusive,
            since: t(20),
            until: None,
            message: Some("apdex inconclusive".into()),
        }),
        abort: Some(AbortStatus {
            not_ready: None,
            reason: "apdex failed".into(),
            metric: Some("apdex".into()),
            value: Some("[8000, 8100]".into()),
            condition: Some("min(result) >= 9000".into()),
            alarm: None,
            at: t(30),
        }),
        analysis_runs: vec![
            AnalysisRunStatus {
                name: "reviews-v2-step-4".into(),
                kind: AnalysisRunKind::Step { index: 4 },
                templates: vec!["apdex".into()],
                status: RunState {
                    phase: Phase::Inconclusive,
                    message: None,
                    metric_results: vec![MetricResult {
                        name: "apdex".into(),
                        phase: Phase::Inconclusive,
                        measurements: vec![
                            std::sync::Arc::new(Measurement {
                                phase: Phase::Inconclusive,
                                value: None,
                                message: Some("no data".into()),
                                started_at: t(40),
                                finished_at: Some(t(41)),
                                metadata: Default::default(),
                                evidence: None,
                            }),
                            std::sync::Arc::new(Measurement {
                                phase: Phase::Running,
                                value: None,
                                message: None,
                                started_at: t(50),
                                finished_at: None,
                                metadata: Default::default(),
                                evidence: None,
                            }),
                        ],
                        message: None,
                        count: 1,
                        successful: 0,
                        failed: 0,
                        inconclusive: 1,
                        error: 0,
                        consecutive_error: 0,
                        consecutive_success: 0,
                        dry_run: false,
                    }],
                    started_at: t(40),
                    completed_at: Some(t(60)),
                    terminated: true,
                    terminate_reason: None,
                },
            },
            AnalysisRunStatus {
                name: "reviews-v2-bg".into(),
                kind: AnalysisRunKind::Background,
                templates: vec![],
                status: RunState {
                    phase: Phase::Running,
                    message: Some("m".into()),
                    metric_results: vec![],
                    started_at: t(5),
                    completed_at: None,
                    terminated: false,
                    terminate_reason: Some("r".into()),
                },
            },
        ],
        conditions: vec![StatusCondition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: "RolloutPaused".into(),
            message: "paused".into(),
            last_transition_time: t(20),
            observed_generation: Some(7),
        }],
        observed_generation: Some(7),
        phase_before_invalid: Some(CanaryPhase::Progressing),
        started_at: Some(t(0)),
        promoted_at: None,
        watch_until: Some(t(3600)),
        message: Some("waiting".into()),
        routing_write: Some(crate::api::canary::RoutingWrite {
            routing: DesiredRouting::weight(10),
            requested_at: t(10),
            retry_at: Some(t(20)),
            error: Some("conflict".into()),
            failures: 1,
        }),
        step_analysis_run: Some("v2-step-2".into()),
        background_analysis_run: Some("v2-bg".into()),
        step_drifts: 1,
        drifts: 2,
        command: Some(CommandRequest {
            id: "17a-1".into(),
            action: CommandAction::Abort,
            full: false,
            reason: Some("latency".into()),
            requested_at: Some(t(40)),
            requested_by: Some("ops@laptop".into()),
            alarm: None,
        }),
        last_command: Some(CommandOutcome {
            id: "17a-0".into(),
            action: CommandAction::Promote,
            accepted: false,
            message: Some("cannot promote".into()),
            at: t(41),
        }),
    }
}

/// The request `skycanary <action> --kube` writes is accepted by the status schema (a real API
/// server would prune it otherwise).
#[test]
fn command_request_validates() {
    let schema = &root_schema("Canary")["properties"]["status"];
    let req = full_status().command.expect("set");
    let v = json!({ "command": req });
    assert_eq!(validate(schema, &v), Vec::<String>::new(), "{v:#}");
}

/// What the daemon writes to `.status` is accepted by the status schema.
#[test]
fn serialized_status_validates() {
    let schema = &root_schema("Canary")["properties"]["status"];
    for status in [full_status(), CanaryStatus::default()] {
        let v = serde_json::to_value(&status).expect("serializes");
        assert_eq!(validate(schema, &v), Vec::<String>::new(), "{v:#}");
    }
}

#[test]
fn duration_pattern_agrees_with_the_loader() {
    let re = regex::Regex::new(DURATION_PATTERN).expect("pattern compiles");
    // Accepted by both (the loader may still refuse an out-of-range value the pattern admits).
    for ok in [
        "0", "30", "5m", "1h30m", "1.5s", "250ms", "10us", "3µs", "2ns", "+5m", ".5s", "5.m",
        " 5m ",
    ] {
        assert!(re.is_match(ok), "pattern refuses {ok:?}");
        assert!(
            super::super::duration::parse_duration(ok).is_ok(),
            "loader refuses {ok:?}"
        );
    }
    // Refused by both.
    for bad in [
        "", "5x", "-5m", "5 m", "m", "1d", "5m-", "five", "1h+5m", "5M", "1.5",
    ] {
        assert!(!re.is_match(bad), "pattern admits {bad:?}");
        assert!(
            super::super::duration::parse_duration(bad).is_err(),
            "loader accepts {bad:?}"
        );
    }
    // A lone sign: the loader reads it as zero; the schema refuses it (stricter is safe).
    assert!(!re.is_match("+"));
}

#[test]
fn crds_carry_labels_bounds_and_rules() {
    for c in crds() {
        let labels = &c.value["metadata"]["labels"];
        for (k, v) in CRD_LABELS {
            assert_eq!(labels[*k], *v, "{}", c.name);
        }
    }
    let spec = &root_schema("Canary")["properties"]["spec"];
    let steps = &spec["properties"]["steps"];
    assert_eq!(steps["maxItems"], MAX_STEPS);
    assert_eq!(
        steps["items"]["properties"]["setWeight"]["minimum"],
        json!(0)
    );
    let rules = spec["x-kubernetes-validations"].as_array().expect("rules");
    assert!(
        rules[0]["rule"]
            .as_str()
            .is_some_and(|r| r.contains("maxTrafficWeight"))
    );
    let template = &root_schema("AnalysisTemplate")["properties"]["spec"]["properties"]["metrics"]
        ["items"]["properties"]["provider"];
    assert_eq!(template["required"], json!(["skywalking"]));
    assert!(
        template["properties"]["skywalking"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .is_some_and(|r| r.contains("has(self.query)"))
    );
    // Every rule carries a message (the apiserver would otherwise print the rule itself).
    fn walk(v: &Value, n: &mut usize) {
        if let Some(rules) = v.get("x-kubernetes-validations").and_then(Value::as_array) {
            for r in rules {
                assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
                *n += 1;
            }
        }
        match v {
            Value::Object(o) => o.values().for_each(|c| walk(c, n)),
            Value::Array(a) => a.iter().for_each(|c| walk(c, n)),
            _ => {}
        }
    }
    let mut n = 0;
    for c in crds() {
        walk(&c.value["spec"]["versions"][0]["schema"], &mut n);
    }
    assert!(n >= 10, "{n} rules");
}
