use super::*;
use crate::resources::load::load_str;

fn rule(metric_name: &str, limit: u32) -> RetentionRule {
    RetentionRule {
        metric_name: metric_name.into(),
        limit,
    }
}

#[test]
fn retention_limit_zero_is_the_default_and_the_last_matching_rule_wins() {
    assert_eq!(retention_limit(&[], "apdex"), 10);
    assert_eq!(retention_limit(&[rule("apdex", 0)], "apdex"), 10);
    assert_eq!(retention_limit(&[rule("apdex", 3)], "apdex"), 3);
    assert_eq!(retention_limit(&[rule("sla", 3)], "apdex"), 10);
    // Argo fills its map rule by rule, so a later match overrides an earlier one.
    assert_eq!(
        retention_limit(&[rule(".*", 20), rule("apd", 5)], "apdex"),
        5
    );
    assert_eq!(
        retention_limit(&[rule("apd", 5), rule(".*", 0)], "apdex"),
        10
    );
}

/// A one-metric template; `args` and `fields` are YAML lines at the template's and the
/// metric's indentation.
fn doc(args: &str, fields: &str) -> crate::resources::LoadResult {
    let src = format!(
        "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: t}}\nspec:\n  args:\n  - name: service\n    value: reviews\n{args}  metrics:\n  - name: m\n    successCondition: \"min(result) >= 1\"\n{fields}    provider:\n      skywalking:\n        metric: service_apdex\n        entity: {{serviceName: \"{{{{args.service}}}}\"}}\n"
    );
    load_str("t.yaml", &src)
}

fn compiled(
    r: &crate::resources::LoadResult,
    given: &[(&str, &str)],
    defaults: &Defaults,
) -> Result<CompiledTemplate, ConfigErrors> {
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let t = &r.templates[0];
    let given = given
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    compile(&t.doc, &t.origin, &given, defaults)
}

fn oap() -> Defaults {
    Defaults {
        skywalking: Some("http://oap:12800/".into()),
        timezone: None,
    }
}

/// The one error of a compile that must fail.
fn only_error(r: Result<CompiledTemplate, ConfigErrors>) -> ConfigError {
    let e = r.expect_err("must not compile").0;
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().expect("one error")
}

#[test]
fn compiles_to_a_typed_plan_with_args_substituted() {
    let r = doc(
        "  - name: n\n    value: \"5\"\n",
        "    interval: 1m\n    count: \"{{args.n}}\"\n    failureLimit: 2\n",
    );
    let c = compiled(&r, &[("service", "ratings")], &oap()).expect("compiles");
    assert_eq!(c.name, "t");
    assert_eq!(c.args["service"], "ratings");
    assert_eq!(c.args["n"], "5");
    let m = &c.metrics[0];
    assert_eq!(m.spec.count, Some(5));
    assert_eq!(m.spec.failure_limit, 2);
    assert_eq!(m.spec.interval, Some(Duration::from_secs(60)));
    assert!(m.spec.success_condition.is_some());
    assert!(matches!(&m.query.kind, QueryKind::Metric(n) if n == "service_apdex"));
    let entity = m.query.entity.as_ref().expect("typed query has an entity");
    assert_eq!(entity.service_name, "ratings");
    assert_eq!(m.query.window, Duration::from_secs(300));
    // The default address, without its trailing slash.
    assert_eq!(m.connection.address, "http://oap:12800");
    assert!(m.align_to_step);
}

#[test]
fn a_field_known_only_at_run_time_validates_and_is_checked_with_its_value() {
    // Validation cannot know n: it passes, and the value is judged by the same rules (in
    // Argo's wording, at the field) when the run compiles with it.
    let r = doc(
        "  - name: n\n",
        "    interval: 1m\n    count: \"{{args.n}}\"\n    failureLimit: 2\n",
    );
    let e = only_error(compiled(&r, &[("n", "-3")], &oap()));
    assert_eq!(e.path, "spec.metrics[0].count");
    assert_eq!(e.message, "count must be >= 0, got -3");
    assert_eq!(e.line, Some(13));
    let e = only_error(compiled(&r, &[("n", "lots")], &oap()));
    assert_eq!(e.message, "\"lots\" is not an integer");
    let e = only_error(compiled(&r, &[("n", "1")], &oap()));
    assert_eq!(
        e.message,
        "count (1) must be >= failureLimit + consecutiveSuccessLimit (2 + 0) if both >= 0"
    );
    assert!(compiled(&r, &[("n", "2")], &oap()).is_ok());
}

#[test]
fn values_are_checked_where_validation_saw_placeholders() {
    let with_fields = |extra: &str| {
        let src = format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: t}}\nspec:\n  args:\n  - name: v\n  metrics:\n  - name: m\n    provider:\n      skywalking:\n        metric: service_apdex\n        entity: {{serviceName: s}}\n{extra}"
        );
        load_str("t.yaml", &src)
    };
    let r = with_fields("        instances: {namePattern: \"{{args.v}}\"}\n");
    let e = only_error(compiled(&r, &[("v", "(")], &oap()));
    assert_eq!(
        e.path,
        "spec.metrics[0].provider.skywalking.instances.namePattern"
    );
    assert!(e.message.starts_with("invalid regex"), "{e}");
    assert!(compiled(&r, &[("v", "^reviews-v2-")], &oap()).is_ok());

    let r = with_fields("        address: \"http://{{args.v}}:12800\"\n        timeout: 2s\n");
    let e = only_error(compiled(&r, &[("v", "evil.com/x?")], &oap()));
    assert_eq!(e.path, "spec.metrics[0].provider.skywalking.address");
    assert!(e.message.contains("is not allowed here"), "{e}");
    let c = compiled(&r, &[("v", "oap.skywalking")], &Defaults::default()).expect("compiles");
    assert_eq!(
        c.metrics[0].connection.address,
        "http://oap.skywalking:12800"
    );
    assert_eq!(c.metrics[0].connection.timeout, Duration::from_secs(2));
}

#[test]
fn an_address_is_needed_to_plan_not_to_validate() {
    let r = doc("", "");
    let e = only_error(compiled(&r, &[], &Defaults::default()));
    assert_eq!(e.path, "spec.metrics[0].provider.skywalking.address");
    assert!(e.message.starts_with("no OAP address"), "{e}");
}

#[test]
fn args_must_be_declared_resolved_and_free_of_control_characters() {
    let r = doc("  - name: n\n", "");
    let e = compiled(&r, &[("typo", "1")], &oap())
        .expect_err("refused")
        .0;
    let messages: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "--arg typo: the template declares no arg \"typo\"",
            "args.n was not resolved: no default and no --arg n=...",
        ]
    );
    let e = only_error(compiled(&r, &[("n", "a\nb")], &oap()));
    assert_eq!(e.path, "spec.args[1]");
    assert!(e.message.contains("control characters"), "{e}");
}

#[test]
fn compiling_reads_no_file() {
    // The CA file is a path in the plan; the client reads it when it is built.
    let r = doc("", "");
    let mut t = r.templates[0].clone();
    t.doc.spec.metrics[0]
        .provider
        .skywalking
        .as_mut()
        .expect("skywalking")
        .ca_file = Some("/nonexistent/ca.pem".into());
    let c = compile(&t.doc, &t.origin, &BTreeMap::new(), &oap()).expect("compiles");
    assert_eq!(
        c.metrics[0].connection.ca_file.as_deref(),
        Some(std::path::Path::new("/nonexistent/ca.pem"))
    );
    assert!(c.metrics[0].connection.ca_pem.is_none());
}

#[test]
fn validation_reports_what_planning_would_refuse_without_args() {
    // The same compiler: a literal problem is reported by `validate` already.
    let r = doc("", "    count: -1\n    interval: 0s\n");
    let messages: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "t.yaml:12: spec.metrics[0].interval: must be greater than 0",
            "t.yaml:11: spec.metrics[0].count: count must be >= 0, got -1",
        ],
    );
}
