use super::*;

const GOOD: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex}
spec:
  args:
  - name: service
  - name: min-apdex
    value: "9900"
  metrics:
  - name: apdex
    interval: 1m
    count: 5
    successCondition: "min(result) >= args.min_apdex"
    provider:
      skywalking:
        window: 5m
        metric: service_apdex
        entity: {scope: Service, serviceName: "{{args.service}}"}
"#;

#[test]
fn valid_template_loads() {
    let r = load_str("good.yaml", GOOD);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.templates.len(), 1);
    assert_eq!(r.templates[0].doc.spec.metrics[0].name, "apdex");
}

#[test]
fn unknown_field_names_file_line_and_path() {
    let src = GOOD.replace("    interval: 1m", "    intervall: 1m");
    let r = load_str("t.yaml", &src);
    // The semantics are checked in the same pass: without `interval`, `count: 5` is wrong too.
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert_eq!(r.errors[1].path, "spec.metrics[0].count");
    let e = &r.errors[0];
    assert_eq!(e.line, Some(11));
    assert_eq!(e.path, "spec.metrics[0].intervall");
    assert!(
        e.message.contains("unknown field `intervall`"),
        "{}",
        e.message
    );
    assert!(
        e.to_string()
            .starts_with("t.yaml:11: spec.metrics[0].intervall: ")
    );
}

#[test]
fn all_errors_of_a_file_are_reported() {
    let src = GOOD
        .replace("    interval: 1m", "    intervall: 1m")
        .replace("        window: 5m", "        window: 5 minutes")
        .replace("    count: 5", "    count: 5\n    colour: red");
    let r = load_str("t.yaml", &src);
    let paths: Vec<_> = r.errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"spec.metrics[0].intervall"), "{paths:?}");
    assert!(paths.contains(&"spec.metrics[0].colour"), "{paths:?}");
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let src = GOOD
        .replace("        window: 5m", "        window: 5 minutes")
        .replace("{{args.service}}", "{{args.svc}}");
    let r = load_str("t.yaml", &src);
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert!(
        r.errors
            .iter()
            .any(|e| e.path.ends_with("skywalking.window") && e.line == Some(16))
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("undeclared arg"))
    );
}

#[test]
fn yaml_syntax_error_has_line() {
    let r = load_str("t.yaml", "apiVersion: [\nkind: x\n");
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].line.is_some());
    assert!(r.errors[0].message.starts_with("YAML syntax error"));
}

#[test]
fn argo_template_with_skywalking_is_accepted() {
    let src = r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: apdex
spec:
  args:
  - name: service-name
  metrics:
  - name: apdex
    interval: 5m
    successCondition: "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})"
    failureLimit: 3
    provider:
      skywalking:
        interval: 3m
        address: http://skywalking-oap.istio-system:12800
        query: |
          query queryData($duration: Duration!) {
            service_apdex: readMetricsValues(
              condition: { name: "service_apdex", entity: { scope: Service, serviceName: "{{ args.service-name }}", normal: true } },
              duration: $duration) { label values { values { value } } } }
"#;
    // The Argo docs' condition, unchanged: argoproj.io templates default to Argo's language.
    let r = load_str("argo.yaml", src);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // In evalexpr it is refused at load time, naming the language and the way out.
    let as_evalexpr = src.replace(
        "  metrics:\n",
        "  conditionLanguage: evalexpr\n  metrics:\n",
    );
    let r = load_str("argo.yaml", &as_evalexpr);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].path.ends_with("successCondition"),
        "{:?}",
        r.errors
    );
    let msg = &r.errors[0].message;
    assert!(
        msg.contains("evalexpr") && msg.contains("conditionLanguage: expr"),
        "{msg}"
    );
    // The rewritten condition is evalexpr.
    let fixed = as_evalexpr.replace(
        "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})",
        "min(service_apdex) >= 9900",
    );
    let r = load_str("argo.yaml", &fixed);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // An expr syntax error names the language and the column.
    let broken = src.replace(">= 9900}", ">= }");
    let r = load_str("argo.yaml", &broken);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let msg = &r.errors[0].message;
    assert!(
        msg.contains("not valid expr (Argo's condition language)"),
        "{msg}"
    );
    assert!(msg.contains("column 61"), "{msg}");
}

#[test]
fn skycanary_templates_may_choose_expr() {
    let src = GOOD.replace("  metrics:\n", "  conditionLanguage: expr\n  metrics:\n");
    let r = load_str("t.yaml", &src);
    // GOOD's evalexpr condition (`min(result)`, `args.min_apdex`) is not expr.
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("not valid expr")),
        "{:?}",
        r.errors
    );
    let src = src.replace(
        "min(result) >= args.min_apdex",
        "all(result, {# >= {{args.min-apdex}}})",
    );
    let r = load_str("t.yaml", &src);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let r = load_str(
        "t.yaml",
        &GOOD.replace("  metrics:\n", "  conditionLanguage: lisp\n  metrics:\n"),
    );
    assert!(!r.errors.is_empty());
}

#[test]
fn other_providers_are_rejected() {
    let src = GOOD.replace("      skywalking:\n", "      prometheus:\n");
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors.iter().any(|e| e.message.contains("prometheus")),
        "{:?}",
        r.errors
    );
}

#[test]
fn exactly_one_query_mode() {
    let src = GOOD.replace(
        "        metric: service_apdex",
        "        metric: service_apdex\n        expression: avg(service_sla)",
    );
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("only one of metric")),
        "{:?}",
        r.errors
    );
}

#[test]
fn window_limits() {
    let src = GOOD.replace("window: 5m", "window: 10h");
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors.iter().any(|e| e.message.contains("at most 500")),
        "{:?}",
        r.errors
    );
    let src = GOOD.replace("window: 5m", "window: 30s");
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("shorter than one")),
        "{:?}",
        r.errors
    );
}

#[test]
fn argo_metric_rules() {
    let src = GOOD.replace("    count: 5", "    count: 2\n    failureLimit: 3");
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("must be >= failureLimit")),
        "{:?}",
        r.errors
    );
    let src = GOOD.replace("    interval: 1m\n", "");
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors
            .iter()
            .any(|e| e.message == "interval must be specified when count > 1"),
        "{:?}",
        r.errors
    );
}

#[test]
fn raw_query_must_be_one_query_operation() {
    assert_eq!(
        raw_query_aliases("query q($duration: Duration!) { a: version b: version }").unwrap(),
        vec!["a", "b"]
    );
    assert!(raw_query_aliases("mutation { x }").is_err());
    assert!(raw_query_aliases("query { a(").is_err());
}

#[test]
fn dry_run_rule_must_match() {
    let src = GOOD.replace(
        "  metrics:\n",
        "  dryRun: [{metricName: nothing}]\n  metrics:\n",
    );
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors.iter().any(|e| e.message.contains("didn't match")),
        "{:?}",
        r.errors
    );
}

#[test]
fn duplicate_templates_are_errors() {
    let src = format!("{GOOD}---\n{GOOD}");
    let r = load_str("t.yaml", &src);
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("duplicate AnalysisTemplate")),
        "{:?}",
        r.errors
    );
}

#[test]
fn other_api_groups_are_skipped() {
    let r = load_str(
        "t.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert!(r.errors.is_empty());
    assert_eq!(r.skipped.len(), 1);
}

/// The error list of `src` as `path: message` lines.
fn errors_of(src: &str) -> Vec<String> {
    load_str("t.yaml", src)
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

#[test]
fn argo_validate_metric_rules_in_argo_wording() {
    let with = |fields: &str| GOOD.replace("    count: 5\n", fields);
    let cases: [(&str, &str); 7] = [
        (
            "    count: 2\n    failureLimit: -1\n    consecutiveSuccessLimit: 3\n",
            "spec.metrics[0].count: count must be >= consecutiveSuccessLimit (count 2, consecutiveSuccessLimit 3): with failureLimit -1 the metric could never succeed",
        ),
        (
            "    count: 2\n    failureLimit: 3\n",
            "spec.metrics[0].count: count (2) must be >= failureLimit + consecutiveSuccessLimit (3 + 0) if both >= 0",
        ),
        (
            "    count: 2\n    inconclusiveLimit: 3\n",
            "spec.metrics[0].count: count must be >= inconclusiveLimit (count 2, inconclusiveLimit 3)",
        ),
        (
            "    failureLimit: -1\n    consecutiveSuccessLimit: 0\n",
            "spec.metrics[0].failureLimit: failureLimit and consecutiveSuccessLimit cannot both be disabled (failureLimit -1 needs consecutiveSuccessLimit > 0, or the metric can never end)",
        ),
        (
            "    failureLimit: -2\n",
            "spec.metrics[0].failureLimit: failureLimit must be >= 0, or -1 to be disabled, got -2",
        ),
        (
            "    consecutiveErrorLimit: -1\n",
            "spec.metrics[0].consecutiveErrorLimit: consecutiveErrorLimit must be >= 0, got -1",
        ),
        (
            "    consecutiveSuccessLimit: -1\n",
            "spec.metrics[0].consecutiveSuccessLimit: consecutiveSuccessLimit must be >= 0, got -1",
        ),
    ];
    for (fields, want) in cases {
        assert_eq!(errors_of(&with(fields)), vec![want.to_string()], "{fields}");
    }
    // The same limits that can end: accepted.
    for fields in [
        "    count: 3\n    failureLimit: -1\n    consecutiveSuccessLimit: 3\n",
        "    count: 5\n    failureLimit: 2\n    consecutiveSuccessLimit: 3\n",
        "    failureLimit: -1\n    consecutiveSuccessLimit: 1\n",
    ] {
        assert_eq!(errors_of(&with(fields)), Vec::<String>::new(), "{fields}");
    }
}

#[test]
fn measurement_retention_limit_zero_means_the_default() {
    let src = GOOD.replace(
        "  metrics:\n",
        "  measurementRetention: [{metricName: apdex, limit: 0}]\n  metrics:\n",
    );
    assert_eq!(errors_of(&src), Vec::<String>::new());
}

const ARGO_RAW: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex}
spec:
  metrics:
  - name: apdex
    successCondition: "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})"
    provider:
      skywalking:
        address: http://oap:12800
        query: |
          query q($duration: Duration!) {
            service_apdex: readMetricsValues(
              condition: { name: "service_apdex", entity: { scope: Service, serviceName: "s", normal: true } },
              duration: $duration) { label values { values { value } } } }
"#;

#[test]
fn argo_raw_query_without_interval_is_refused_with_what_to_add() {
    let r = load_str("argo.yaml", ARGO_RAW);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let e = &r.errors[0];
    assert_eq!(e.path, "spec.metrics[0].provider.skywalking.interval");
    assert_eq!(e.file, "argo.yaml");
    assert_eq!(e.line, Some(9), "the line of provider.skywalking: {e:?}");
    assert!(
        e.message.contains("add `interval: 5m`") && e.message.contains("under provider.skywalking"),
        "{}",
        e.message
    );
    let fixed = ARGO_RAW.replace(
        "        address: http://oap:12800\n",
        "        address: http://oap:12800\n        interval: 5m\n",
    );
    assert_eq!(errors_of(&fixed), Vec::<String>::new());
    // skycanary's own templates keep their default window (the condition stays in expr).
    let ours = ARGO_RAW
        .replace("argoproj.io/v1alpha1", "skycanary.io/v1alpha1")
        .replace("spec:\n", "spec:\n  conditionLanguage: expr\n");
    assert_eq!(errors_of(&ours), Vec::<String>::new());
}

#[test]
fn duplicate_metric_name_in_argo_wording() {
    let src = GOOD.replace(
        "  metrics:\n",
        "  metrics:\n  - name: apdex\n    provider: {skywalking: {window: 5m, metric: service_apdex, entity: {serviceName: s}}}\n",
    );
    assert_eq!(
        errors_of(&src),
        vec!["spec.metrics[1].name: duplicate name 'apdex'".to_string()]
    );
}
