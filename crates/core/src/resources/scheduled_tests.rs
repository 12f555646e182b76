use crate::resources::{LoadResult, load_str};

const SCHEDULED: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {name: nightly, namespace: bookinfo}
spec:
  schedule: "0 2 * * 1-5"
  timeZone: Asia/Shanghai
  concurrencyPolicy: Replace
  startingDeadlineSeconds: 60
  templates: [{templateName: apdex}]
  args: [{name: service, value: reviews.bookinfo}]
  onFailure:
    rollback: {canary: reviews}
    webhook: {url: "https://hooks.example.com/x", headers: [{name: X-Token, value: abc}], timeout: 3s}
  onInconclusive: {webhook: {url: "http://127.0.0.1:9/y"}}
  onError: {rollback: {canary: bookinfo/reviews}}
  historyLimit: {successful: 5, failed: 2}
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

const CANARY: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  trafficRouting:
    istio:
      virtualService: {name: reviews}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps: [{setWeight: 10}]
"#;

fn all(scheduled: &str) -> LoadResult {
    load_str(
        "s.yaml",
        &format!("{scheduled}---\n{TEMPLATE}---\n{CANARY}"),
    )
}

fn has(r: &LoadResult, path: &str, line: Option<usize>, text: &str) -> bool {
    r.errors
        .iter()
        .any(|e| e.path == path && e.message.contains(text) && (line.is_none() || e.line == line))
}

#[test]
fn full_scheduled_analysis_loads() {
    let r = all(SCHEDULED);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.scheduled.len(), 1);
    let s = &r.scheduled[0];
    assert_eq!(s.namespace(), "bookinfo");
    assert_eq!(s.doc.spec.history_limits(), (5, 2));
}

#[test]
fn schedule_and_zone_errors_name_line_and_field() {
    let r = all(&SCHEDULED.replace("\"0 2 * * 1-5\"", "\"0 2 * * 8\""));
    assert!(
        has(&r, "spec.schedule", Some(5), "day-of-week field"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("Asia/Shanghai", "Asia/Atlantis"));
    assert!(
        has(&r, "spec.timeZone", Some(6), "unknown time zone"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("\"0 2 * * 1-5\"", "\"0 2 * *\""));
    assert!(
        has(&r, "spec.schedule", Some(5), "expected 5 fields"),
        "{:?}",
        r.errors
    );
}

#[test]
fn unknown_fields_and_policies_are_errors() {
    let r = all(&SCHEDULED.replace("concurrencyPolicy: Replace", "concurrencyPolicy: Sometimes"));
    assert!(
        has(&r, "spec.concurrencyPolicy", Some(7), "unknown variant"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("  historyLimit", "  histryLimit"));
    assert!(
        has(&r, "spec.histryLimit", Some(16), "unknown field"),
        "{:?}",
        r.errors
    );
}

#[test]
fn references_are_checked() {
    let r = all(&SCHEDULED.replace("templateName: apdex", "templateName: apdexx"));
    assert!(
        has(
            &r,
            "spec.templates[0].templateName",
            Some(9),
            "\"apdexx\" not found in namespace bookinfo"
        ),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("  args: [{name: service, value: reviews.bookinfo}]\n", ""));
    assert!(
        has(&r, "spec.args", None, "requires arg \"service\""),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("rollback: {canary: reviews}", "rollback: {canary: ratings}"));
    assert!(
        has(
            &r,
            "spec.onFailure.rollback.canary",
            None,
            "Canary bookinfo/ratings not found"
        ),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("canary: bookinfo/reviews", "canary: other/reviews"));
    assert!(
        has(
            &r,
            "spec.onError.rollback.canary",
            None,
            "other/reviews not found"
        ),
        "{:?}",
        r.errors
    );
    // Without any Canary loaded the rollback target cannot be checked: a note, not an error.
    let r = load_str("s.yaml", &format!("{SCHEDULED}---\n{TEMPLATE}"));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(
        r.notes.iter().any(|n| n.contains("rollback targets")),
        "{:?}",
        r.notes
    );
}

#[test]
fn actions_are_checked() {
    let r = all(&SCHEDULED.replace("https://hooks.example.com/x", "ftp://hooks.example.com/x"));
    assert!(
        has(&r, "spec.onFailure.webhook.url", Some(13), "only http"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("https://hooks.example.com/x", "not a url"));
    assert!(
        has(&r, "spec.onFailure.webhook.url", Some(13), "is not a URL"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("name: X-Token", "name: \"X Token\""));
    assert!(
        has(
            &r,
            "spec.onFailure.webhook.headers[0].name",
            None,
            "not a valid header name"
        ),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("timeout: 3s", "timeout: 3 parsecs"));
    assert!(
        has(&r, "spec.onFailure.webhook.timeout", None, ""),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace(
        "onError: {rollback: {canary: bookinfo/reviews}}",
        "onError: {}",
    ));
    assert!(
        has(&r, "spec.onError", Some(15), "set rollback and/or webhook"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("canary: bookinfo/reviews", "canary: a/b/c"));
    assert!(
        has(
            &r,
            "spec.onError.rollback.canary",
            None,
            "expected NAME or NAMESPACE/NAME"
        ),
        "{:?}",
        r.errors
    );
}

#[test]
fn other_fields_are_checked() {
    let r = all(&SCHEDULED.replace("startingDeadlineSeconds: 60", "startingDeadlineSeconds: 0"));
    assert!(
        has(&r, "spec.startingDeadlineSeconds", Some(8), "at least 1"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("templates: [{templateName: apdex}]", "templates: []"));
    assert!(
        has(&r, "spec.templates", Some(9), "at least one template"),
        "{:?}",
        r.errors
    );
    let r = all(&SCHEDULED.replace("name: nightly,", "name: Nightly_Check,"));
    assert!(
        has(&r, "metadata.name", Some(3), "not a valid name"),
        "{:?}",
        r.errors
    );
    let twice = format!("{SCHEDULED}---\n{SCHEDULED}---\n{TEMPLATE}---\n{CANARY}");
    let r = load_str("s.yaml", &twice);
    assert!(
        r.errors.iter().any(|e| e
            .message
            .contains("duplicate ScheduledAnalysis bookinfo/nightly")),
        "{:?}",
        r.errors
    );
}
