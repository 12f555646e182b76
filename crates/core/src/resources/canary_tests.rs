use crate::resources::canary::{OnCanaryUnavailable, WorkloadKind};
use crate::resources::{LoadResult, load_str};

const CANARY: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    managedRoutes: [{name: canary-header}, {name: mirror}]
    istio:
      virtualService: {name: reviews, routes: [primary]}
      destinationRule: {name: reviews, stableSubsetName: v1, canarySubsetName: v2}
  analysis:
    templates: [{templateName: apdex}]
    startingStep: 1
    args: [{name: service, value: reviews.bookinfo}]
  steps:
  - setWeight: 10
  - pause: {duration: 5m}
  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}
  - setHeaderRoute: {name: canary-header, match: [{headerName: end-user, headerValue: {exact: jason}}]}
  - setMirrorRoute: {name: mirror, percentage: 20, match: [{method: {exact: GET}}]}
  - setWeight: 50
  - pause: {}
  rollbackOn:
    alarms: [{ruleName: "service_(sla|resp_time)_rule", name: "reviews.*"}]
  onAnalysisError: Hold
  onSuccess: Restore
  postPromotion: {watch: 30m}
"#;

const TEMPLATE: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex, namespace: bookinfo}
spec:
  args: [{name: service}]
  metrics:
  - name: apdex
    successCondition: "min(result) >= 9900"
    provider: {skywalking: {window: 5m, metric: service_apdex, entity: {serviceName: "{{args.service}}"}}}
"#;

fn both(canary: &str) -> LoadResult {
    load_str("c.yaml", &format!("{canary}---\n{TEMPLATE}"))
}

#[test]
fn full_canary_loads() {
    let r = both(CANARY);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.canaries.len(), 1);
    assert_eq!(r.canaries[0].doc.spec.steps.len(), 7);
}

#[test]
fn unknown_step_kind_is_an_error_with_line() {
    let r = both(&CANARY.replace("  - setWeight: 50", "  - setWieght: 50"));
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("setWieght") && e.line == Some(21)),
        "{:?}",
        r.errors
    );
}

#[test]
fn weights_outside_max_are_errors() {
    let r = both(&CANARY.replace("  - setWeight: 50", "  - setWeight: 150"));
    assert!(
        r.errors.iter().any(|e| e.path == "spec.steps[5].setWeight"),
        "{:?}",
        r.errors
    );
}

#[test]
fn header_route_must_be_managed() {
    let r = both(&CANARY.replace(
        "setHeaderRoute: {name: canary-header",
        "setHeaderRoute: {name: other",
    ));
    assert!(
        r.errors.iter().any(|e| e
            .message
            .contains("not listed in spec.trafficRouting.managedRoutes")),
        "{:?}",
        r.errors
    );
}

#[test]
fn header_listed_twice_in_one_header_route_is_refused_at_load() {
    let twice = "match: [{headerName: end-user, headerValue: {exact: jason}}, \
                 {headerName: End-User, headerValue: {exact: anna}}]}";
    let r = both(&CANARY.replace(
        "match: [{headerName: end-user, headerValue: {exact: jason}}]}",
        twice,
    ));
    let e = r
        .errors
        .iter()
        .find(|e| e.path == "spec.steps[3].setHeaderRoute.match[1].headerName")
        .unwrap_or_else(|| panic!("{:?}", r.errors));
    assert!(e.message.contains("\"End-User\" is listed twice"), "{e}");
    assert_eq!(e.line, Some(19), "{e}");
    // Two different headers are two alternatives: fine.
    let r = both(&CANARY.replace(
        "match: [{headerName: end-user, headerValue: {exact: jason}}]}",
        "match: [{headerName: end-user, headerValue: {exact: jason}}, {headerName: x-beta, headerValue: {exact: '1'}}]}",
    ));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn routing_mode_must_be_one() {
    let r = both(&CANARY.replace(
        "      destinationRule: {name: reviews, stableSubsetName: v1, canarySubsetName: v2}",
        "      stableService: reviews-stable",
    ));
    assert!(
        r.errors.iter().any(|e| e
            .message
            .contains("set both stableService and canaryService")),
        "{:?}",
        r.errors
    );
}

#[test]
fn missing_template_reference_is_an_error() {
    let r = both(&CANARY.replace(
        "templates: [{templateName: apdex}], args",
        "templates: [{templateName: p99}], args",
    ));
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("AnalysisTemplate \"p99\" not found")),
        "{:?}",
        r.errors
    );
}

#[test]
fn required_template_arg_must_be_supplied() {
    let r = both(&CANARY.replace(
        "  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}",
        "  - analysis: {templates: [{templateName: apdex}]}",
    ));
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("requires arg \"service\"")),
        "{:?}",
        r.errors
    );
}

#[test]
fn references_are_not_checked_without_templates() {
    let r = load_str("c.yaml", CANARY);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.notes.len(), 1);
}

#[test]
fn bad_regexes_and_durations_are_errors() {
    let r = both(
        &CANARY
            .replace(
                "ruleName: \"service_(sla|resp_time)_rule\"",
                "ruleName: \"service_(sla\"",
            )
            .replace("watch: 30m", "watch: soon"),
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.path.ends_with("alarms[0].ruleName")),
        "{:?}",
        r.errors
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.path == "spec.postPromotion.watch"),
        "{:?}",
        r.errors
    );
}

const ROLLBACK_ON: &str = "  rollbackOn:\n    alarms: [{ruleName: \"service_(sla|resp_time)_rule\", name: \"reviews.*\"}]\n";

fn with_rollback_on(block: &str) -> String {
    CANARY.replace(ROLLBACK_ON, block)
}

#[test]
fn rollback_on_takes_alarm_and_alert_matchers() {
    let r = both(&with_rollback_on(
        "  rollbackOn:\n    alarms:\n    - {scope: SERVICE, tags: {level: \"WARNING|CRITICAL\"}}\n    - {message: \"Response time of .*\"}\n    alerts:\n    - labels: {alertname: HighErrorRate, service: \"reviews.*\"}\n",
    ));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let rb = r.canaries[0]
        .doc
        .spec
        .rollback_on
        .clone()
        .unwrap_or_default();
    assert_eq!(rb.alarms[0].tags["level"], "WARNING|CRITICAL");
    assert_eq!(rb.alerts[0].labels["service"], "reviews.*");
}

#[test]
fn an_invalid_alert_label_regex_names_file_line_and_field() {
    let r = both(&with_rollback_on(
        "  rollbackOn:\n    alerts:\n    - labels:\n        alertname: HighErrorRate\n        service: \"reviews(\"\n",
    ));
    let e = r
        .errors
        .iter()
        .find(|e| e.path == "spec.rollbackOn.alerts[0].labels.service")
        .unwrap_or_else(|| panic!("{:?}", r.errors));
    assert!(e.message.contains("invalid regex"), "{e}");
    assert_eq!(e.line, Some(27), "{e}");
    assert!(
        e.to_string()
            .starts_with("c.yaml:27: spec.rollbackOn.alerts[0].labels.service"),
        "{e}"
    );
}

#[test]
fn empty_or_misnamed_matchers_are_errors() {
    let r = both(&with_rollback_on(
        "  rollbackOn:\n    alarms: [{}]\n    alerts: [{labels: {}}, {labels: {\"bad-name\": x}}]\n",
    ));
    let paths: Vec<&str> = r.errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"spec.rollbackOn.alarms[0]"), "{paths:?}");
    assert!(
        paths.contains(&"spec.rollbackOn.alerts[0].labels"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"spec.rollbackOn.alerts[1].labels.bad-name"),
        "{paths:?}"
    );
    let r = both(&with_rollback_on(
        "  rollbackOn:\n    alarms: [{tags: {level: \"(\"}, scope: \"[\"}]\n",
    ));
    let paths: Vec<&str> = r.errors.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"spec.rollbackOn.alarms[0].tags.level"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"spec.rollbackOn.alarms[0].scope"),
        "{paths:?}"
    );
}

#[test]
fn unknown_matcher_fields_are_errors() {
    let r = both(&with_rollback_on(
        "  rollbackOn:\n    alerts: [{lables: {alertname: X}}]\n",
    ));
    assert!(!r.errors.is_empty());
}

fn with_workload(extra: &str) -> String {
    format!("{CANARY}{extra}")
}

#[test]
fn workload_ref_and_readiness_load() {
    let r = both(&with_workload(
        "  workloadRef: {kind: Deployment, name: reviews-v2}\n  \
         stableWorkloadRef: {selector: {matchLabels: {app: reviews, version: v1}}}\n  \
         readiness: {minReady: 2, minReadyForWeight: true, progressDeadline: 5m, onCanaryUnavailable: Hold}\n",
    ));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let spec = &r.canaries[0].doc.spec;
    let w = spec.workload_ref.as_ref().expect("workloadRef");
    assert_eq!(w.kind, Some(WorkloadKind::Deployment));
    assert_eq!(w.name.as_deref(), Some("reviews-v2"));
    let rd = spec.readiness.as_ref().expect("readiness");
    assert_eq!(rd.min_ready, Some(2));
    assert!(rd.min_ready_for_weight);
    assert_eq!(rd.on_canary_unavailable, OnCanaryUnavailable::Hold);
}

#[test]
fn from_subset_refs_load_with_a_destination_rule() {
    let r = both(&with_workload(
        "  workloadRef: {fromSubset: true, selector: {matchLabels: {app: reviews}}}\n  \
         stableWorkloadRef: {fromSubset: true, selector: {matchLabels: {app: reviews}}}\n",
    ));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let spec = &r.canaries[0].doc.spec;
    let w = spec.workload_ref.as_ref().expect("workloadRef");
    assert!(w.from_subset);
    assert_eq!(w.kind, None);
    assert!(
        spec.stable_workload_ref
            .as_ref()
            .is_some_and(|s| s.from_subset)
    );
}

#[test]
fn from_subset_needs_a_destination_rule_and_no_kind_or_name() {
    // (canary text, field path, message part)
    let host = CANARY.replace(
        "      destinationRule: {name: reviews, stableSubsetName: v1, canarySubsetName: v2}\n",
        "      stableService: reviews-stable\n      canaryService: reviews-canary\n",
    );
    assert!(both(&host).errors.is_empty());
    let cases = [
        (
            format!("{host}  workloadRef: {{fromSubset: true}}\n"),
            "spec.workloadRef.fromSubset",
            "needs trafficRouting.istio.destinationRule",
        ),
        (
            format!(
                "{host}  workloadRef: {{kind: Deployment, name: v2}}\n  \
                 stableWorkloadRef: {{fromSubset: true}}\n"
            ),
            "spec.stableWorkloadRef.fromSubset",
            "needs trafficRouting.istio.destinationRule",
        ),
        (
            with_workload("  workloadRef: {fromSubset: true, kind: Deployment, name: v2}\n"),
            "spec.workloadRef.fromSubset",
            "remove kind and name",
        ),
        (
            with_workload("  workloadRef: {fromSubset: true, selector: {matchLabels: {}}}\n"),
            "spec.workloadRef.selector.matchLabels",
            "at least one label",
        ),
        (
            // Without the host's labels a subset's `version: v2` would count other apps' pods.
            with_workload("  workloadRef: {fromSubset: true}\n"),
            "spec.workloadRef.selector",
            "host Service's selector labels",
        ),
        (
            with_workload("  workloadRef: {fromSubset: false}\n"),
            "spec.workloadRef",
            "or fromSubset: true",
        ),
    ];
    for (text, path, part) in cases {
        let r = both(&text);
        let e = r
            .errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {:?}", r.errors));
        assert!(e.message.contains(part), "{e}");
        assert!(e.line.is_some_and(|l| l >= 28), "{e}");
        assert_eq!(e.file, "c.yaml", "{e}");
    }
}

#[test]
fn bad_workload_refs_and_readiness_are_errors_with_field_and_line() {
    // (extra spec, field path, message part)
    let cases = [
        (
            "  workloadRef: {kind: Deployment}\n",
            "spec.workloadRef.name",
            "missing name",
        ),
        (
            "  workloadRef: {name: reviews-v2}\n",
            "spec.workloadRef.kind",
            "missing kind",
        ),
        (
            "  workloadRef: {}\n",
            "spec.workloadRef",
            "set kind and name",
        ),
        (
            "  workloadRef: {kind: Deployment, name: x, selector: {matchLabels: {a: b}}}\n",
            "spec.workloadRef",
            "not both",
        ),
        (
            "  workloadRef: {kind: Deployment, name: Reviews_V2}\n",
            "spec.workloadRef.name",
            "not a valid object name",
        ),
        (
            "  workloadRef: {selector: {matchLabels: {}}}\n",
            "spec.workloadRef.selector.matchLabels",
            "at least one label",
        ),
        (
            "  workloadRef: {selector: {matchLabels: {app: 'not ok'}}}\n",
            "spec.workloadRef.selector.matchLabels.app",
            "not a Kubernetes label value",
        ),
        (
            "  readiness: {minReady: 1}\n",
            "spec.readiness",
            "readiness needs workloadRef",
        ),
        (
            "  stableWorkloadRef: {kind: Deployment, name: reviews-v1}\n",
            "spec.stableWorkloadRef",
            "needs workloadRef",
        ),
        (
            "  workloadRef: {kind: Deployment, name: r}\n  readiness: {minReady: 0}\n",
            "spec.readiness.minReady",
            "outside 1..=100000",
        ),
        (
            "  workloadRef: {kind: Deployment, name: r}\n  readiness: {minReadyForWeight: true}\n",
            "spec.readiness.minReadyForWeight",
            "set stableWorkloadRef",
        ),
        (
            "  workloadRef: {kind: Deployment, name: r}\n  readiness: {progressDeadline: 0s}\n",
            "spec.readiness.progressDeadline",
            "greater than 0",
        ),
        (
            "  workloadRef: {kind: Deployment, name: r}\n  readiness: {progressDeadline: 200h}\n",
            "spec.readiness.progressDeadline",
            "at most 168h",
        ),
    ];
    for (extra, path, part) in cases {
        let r = both(&with_workload(extra));
        let e = r
            .errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{extra}: no error at {path}: {:?}", r.errors));
        assert!(e.message.contains(part), "{extra}: {e}");
        assert!(e.line.is_some_and(|l| l >= 28), "{extra}: {e}");
    }
    // An unknown kind or option is a parse error naming it.
    for (extra, word) in [
        ("  workloadRef: {kind: DaemonSet, name: r}\n", "DaemonSet"),
        (
            "  workloadRef: {kind: Deployment, name: r}\n  readiness: {onCanaryUnavailable: Ignore}\n",
            "Ignore",
        ),
    ] {
        let r = both(&with_workload(extra));
        assert!(
            r.errors.iter().any(|e| e.to_string().contains(word)),
            "{extra}: {:?}",
            r.errors
        );
    }
}
