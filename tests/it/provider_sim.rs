//! The analysis end to end against the simulator: verdicts, no data, faults, time zones,
//! OAP versions and injection attempts.

use std::time::Duration;

use chrono::FixedOffset;
use skycanary::analysis::Phase;
use skycanary::sim::{Fault, OapProfile, SimEntity};

use crate::support::{Sim, apdex, last_message, template};

const MIN_9900: &str = r#"successCondition: "min(result) >= 9900""#;

#[tokio::test]
async fn healthy_apdex_is_successful() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let r = s.analyze(&apdex(MIN_9900), &[]).await;
    assert_eq!(r.phase, Phase::Successful, "{r:?}");
    let msg = last_message(&r);
    assert!(
        msg.contains("9950") && msg.contains("min(result) >= 9900"),
        "{msg}"
    );
}

#[tokio::test]
async fn failing_apdex_is_failed_and_explained() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 8000.0);
    let r = s.analyze(&apdex(MIN_9900), &[]).await;
    assert_eq!(r.phase, Phase::Failed);
    assert!(last_message(&r).contains("8000"), "{}", last_message(&r));
}

#[tokio::test]
async fn boundary_exactly_9900_passes_ge_and_fails_gt() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9900.0);
    assert_eq!(
        s.analyze(&apdex(MIN_9900), &[]).await.phase,
        Phase::Successful
    );
    let gt = apdex(r#"successCondition: "min(result) > 9900""#);
    assert_eq!(s.analyze(&gt, &[]).await.phase, Phase::Failed);
}

#[tokio::test]
async fn no_traffic_is_inconclusive_never_successful() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| None,
    );
    let r = s.analyze(&apdex(MIN_9900), &[]).await;
    assert_eq!(r.phase, Phase::Inconclusive);
    assert!(last_message(&r).contains("no data"), "{}", last_message(&r));
    // Even a condition that would pass on anything never sees no data.
    let r = s.analyze(&apdex(r#"successCondition: "true""#), &[]).await;
    assert_eq!(r.phase, Phase::Inconclusive);
    // Only an explicit opt-in makes no data pass.
    let r = s
        .analyze(
            &apdex("noData: Successful\n    successCondition: \"false\""),
            &[],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful);
    let r = s.analyze(&apdex("noData: Failed"), &[]).await;
    assert_eq!(r.phase, Phase::Failed);
}

#[tokio::test]
async fn unknown_service_is_no_data() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let r = s
        .analyze(&apdex(MIN_9900), &[("service", "ratings.bookinfo")])
        .await;
    assert_eq!(r.phase, Phase::Inconclusive);
}

#[tokio::test]
async fn partial_nulls_are_ignored_by_aggregations() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |t| {
            use chrono::Timelike;
            (t.minute() % 2 == 0).then_some(9950.0)
        },
    );
    let r = s.analyze(&apdex(MIN_9900), &[]).await;
    assert_eq!(r.phase, Phase::Successful, "{}", last_message(&r));
    let value = r.metric_results[0].measurements[0]
        .value
        .clone()
        .unwrap_or_default();
    assert!(value.contains('—') && value.contains("9950"), "{value}");
}

async fn fault_gives_error(fault: Fault) -> (Phase, String) {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    // Detect the version first so the fault hits the measurement itself.
    let warm = s.analyze(&apdex(MIN_9900), &[]).await;
    assert_eq!(warm.phase, Phase::Successful);
    s.sim.inject_fault(fault, None);
    let yaml = apdex("successCondition: \"min(result) >= 9900\"\n    consecutiveErrorLimit: 0");
    let yaml = yaml.replace("window: 5m", "window: 5m\n        timeout: 1s");
    let r = s.analyze(&yaml, &[]).await;
    (r.phase, last_message(&r))
}

#[tokio::test]
async fn http_5xx_is_error() {
    let (p, m) = fault_gives_error(Fault::Status(503)).await;
    assert_eq!(p, Phase::Error);
    assert!(m.contains("503"), "{m}");
}

#[tokio::test]
async fn html_gateway_page_is_error() {
    let (p, m) = fault_gives_error(Fault::HtmlGateway).await;
    assert_eq!(p, Phase::Error);
    assert!(m.contains("502"), "{m}");
}

#[tokio::test]
async fn timeout_is_error() {
    let (p, m) = fault_gives_error(Fault::Delay(Duration::from_secs(3))).await;
    assert_eq!(p, Phase::Error);
    assert!(m.to_lowercase().contains("timed out"), "{m}");
}

#[tokio::test]
async fn truncated_json_is_error() {
    let (p, _) = fault_gives_error(Fault::TruncatedJson).await;
    assert_eq!(p, Phase::Error);
}

#[tokio::test]
async fn graphql_error_is_error_with_server_message() {
    let (p, m) = fault_gives_error(Fault::GraphqlError("storage is down".into())).await;
    assert_eq!(p, Phase::Error);
    assert!(m.contains("storage is down"), "{m}");
}

#[tokio::test]
async fn mqe_error_is_error_with_server_message() {
    let (p, m) = fault_gives_error(Fault::MqeError(
        "Internal IO exception, query metrics error.".into(),
    ))
    .await;
    assert_eq!(p, Phase::Error);
    assert!(m.contains("Internal IO exception"), "{m}");
}

#[tokio::test]
async fn provider_outage_never_succeeds() {
    // Nothing listens on this port: connection refused on every try.
    let s = Sim::start(OapProfile::V10_4).await;
    let yaml = apdex("successCondition: \"true\"\n    consecutiveErrorLimit: 0");
    let r = s
        .analyze_with(
            &yaml,
            &[],
            skycanary::runner::Defaults {
                skywalking: Some("http://127.0.0.1:9".into()),
                timezone: None,
            },
        )
        .await;
    assert_eq!(r.phase, Phase::Error);
}

#[tokio::test]
async fn unknown_metric_is_error_with_server_message() {
    let s = Sim::start(OapProfile::V10_4).await;
    let yaml = apdex(MIN_9900).replace("metric: service_apdex", "metric: service_apdexx");
    let yaml = yaml.replace(
        "    successCondition",
        "    consecutiveErrorLimit: 0\n    successCondition",
    );
    let r = s.analyze(&yaml, &[]).await;
    assert_eq!(r.phase, Phase::Error);
    assert!(
        last_message(&r).contains("does not exist"),
        "{}",
        last_message(&r)
    );
}

#[tokio::test]
async fn server_timezone_is_honoured_including_half_hours() {
    for tz in [8 * 3600, 5 * 3600 + 1800, -(3 * 3600 + 1800)] {
        let s = Sim::start_with(OapProfile::V10_4, FixedOffset::east_opt(tz).unwrap()).await;
        s.constant("service_apdex", "reviews.bookinfo", 9950.0);
        let r = s.analyze(&apdex(MIN_9900), &[]).await;
        assert_eq!(r.phase, Phase::Successful, "tz {tz}: {}", last_message(&r));
    }
}

#[tokio::test]
async fn wrong_timezone_override_finds_no_data() {
    // Data exists only for the last ten minutes; a client formatting buckets 8 h off misses it.
    let s = Sim::start_with(OapProfile::V10_4, FixedOffset::east_opt(8 * 3600).unwrap()).await;
    let clock = s.clock.clone();
    s.sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        move |t| (clock.now() - t < chrono::Duration::minutes(10)).then_some(9950.0),
    );
    let defaults = skycanary::runner::Defaults {
        skywalking: Some(s.url()),
        timezone: FixedOffset::east_opt(0),
    };
    let r = s.analyze_with(&apdex(MIN_9900), &[], defaults).await;
    assert_eq!(r.phase, Phase::Inconclusive, "{}", last_message(&r));
}

#[tokio::test]
async fn every_oap_profile_measures_without_validation_errors() {
    for profile in [
        OapProfile::V8_9,
        OapProfile::V9_4,
        OapProfile::V9_7,
        OapProfile::V10_2,
        OapProfile::V10_4,
    ] {
        let s = Sim::start(profile).await;
        s.constant("service_apdex", "reviews.bookinfo", 9950.0);
        let r = s.analyze(&apdex(MIN_9900), &[]).await;
        assert_eq!(
            r.phase,
            Phase::Successful,
            "{profile:?}: {}",
            last_message(&r)
        );
        for req in s.sim.requests() {
            let body = req.raw_body.clone();
            assert!(
                !body.contains("coldStage") && !body.contains("processName"),
                "{profile:?} sent {body}"
            );
            if !profile.has_empty_flag() {
                assert!(
                    !body.contains("isEmptyValue"),
                    "{profile:?} selected isEmptyValue: {body}"
                );
            }
            if !profile.has_mqe() {
                assert!(
                    !body.contains("execExpression"),
                    "{profile:?} sent MQE: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn mqe_expression_on_old_oap_is_a_clear_error() {
    let s = Sim::start(OapProfile::V9_4).await;
    let yaml = template(
        r#"    consecutiveErrorLimit: 0
    successCondition: "max(result) < 500"
    provider:
      skywalking:
        window: 5m
        expression: "service_percentile{p='99'}"
        entity: {serviceName: "{{args.service}}"}"#,
    );
    let r = s.analyze(&yaml, &[]).await;
    assert_eq!(r.phase, Phase::Error);
    assert!(last_message(&r).contains("9.5"), "{}", last_message(&r));
}

#[tokio::test]
async fn injection_through_an_arg_reaches_oap_as_data() {
    let s = Sim::start(OapProfile::V10_4).await;
    let evil = r#"reviews.bookinfo", normal: false}) { x } #"#;
    s.constant("service_apdex", evil, 9950.0);
    let r = s.analyze(&apdex(MIN_9900), &[("service", evil)]).await;
    assert_eq!(r.phase, Phase::Successful, "{}", last_message(&r));
    let req = s
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.raw_body.contains("entity"))
        .expect("a metrics request");
    // The value travels as a variable; the document never contains it.
    let query = req.query().unwrap_or_default().to_string();
    assert!(!query.contains("reviews.bookinfo"), "{query}");
    assert!(
        req.variables()
            .map(|v| v.to_string())
            .unwrap_or_default()
            .contains("normal: false"),
        "{}",
        req.raw_body
    );
}

#[tokio::test]
async fn injection_through_a_raw_query_arg_is_escaped() {
    let s = Sim::start(OapProfile::V10_4).await;
    let evil = r#"x", normal: false } }) { label } y: readMetricsValues(condition: {name: "service_sla", entity: {scope: Service, serviceName: "x"#;
    s.constant("service_apdex", evil, 9950.0);
    let yaml = r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: raw}
spec:
  args: [{name: service-name}]
  metrics:
  - name: apdex
    successCondition: "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})"
    provider:
      skywalking:
        interval: 5m
        query: |
          query q($duration: Duration!) {
            service_apdex: readMetricsValues(condition: {name: "service_apdex", entity: {scope: Service, serviceName: "{{ args.service-name }}", normal: true}}, duration: $duration) { label values { values { value } } }
          }
"#;
    let r = s.analyze(yaml, &[("service-name", evil)]).await;
    assert_eq!(r.phase, Phase::Successful, "{}", last_message(&r));
    let req = s
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.raw_body.contains("readMetricsValues"))
        .expect("request");
    let query = req.query().unwrap_or_default().to_string();
    // Still exactly one root field: the injected alias `y` is string content, not syntax.
    let roots =
        skycanary::resources::load::raw_query_aliases(&query).expect("the sent query parses");
    assert_eq!(roots, vec!["service_apdex".to_string()], "{query}");
}

#[tokio::test]
async fn metrics_due_together_share_one_request() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    s.constant("service_sla", "reviews.bookinfo", 9990.0);
    let yaml = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: two}
spec:
  args: [{name: service, value: reviews.bookinfo}]
  metrics:
  - name: apdex
    successCondition: "min(result) >= 9900"
    provider: {skywalking: {window: 5m, metric: service_apdex, entity: {serviceName: "{{args.service}}"}}}
  - name: sla
    successCondition: "avg(result) >= 9950"
    provider: {skywalking: {window: 5m, metric: service_sla, entity: {serviceName: "{{args.service}}"}}}
"#;
    let before = s.sim.requests().len();
    let r = s.analyze(yaml, &[]).await;
    assert_eq!(r.phase, Phase::Successful);
    let metric_requests: Vec<_> = s.sim.requests()[before..]
        .iter()
        .filter(|r| r.raw_body.contains("execExpression"))
        .cloned()
        .collect();
    assert_eq!(metric_requests.len(), 1, "{metric_requests:?}");
}

#[tokio::test]
async fn interval_and_count_take_the_configured_number_of_measurements() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let r = s
        .analyze(
            &apdex("interval: 1m\n    count: 3\n    successCondition: \"min(result) >= 9900\""),
            &[],
        )
        .await;
    assert_eq!(r.phase, Phase::Successful);
    let ms = &r.metric_results[0].measurements;
    assert_eq!(ms.len(), 3);
    // One simulated minute apart (from the previous measurement's end).
    for w in ms.windows(2) {
        let gap = w[1].started_at - w[0].finished_at.unwrap();
        assert!(
            gap >= chrono::Duration::seconds(59) && gap < chrono::Duration::seconds(75),
            "{gap:?}"
        );
    }
}

#[tokio::test]
async fn failure_mid_run_fails_at_once() {
    let s = Sim::start(OapProfile::V10_4).await;
    let clock = s.clock.clone();
    let start = clock.now();
    // Healthy for the first simulated minutes, then a regression.
    s.sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        move |t| {
            Some(if t < start + chrono::Duration::seconds(60) {
                9950.0
            } else {
                7000.0
            })
        },
    );
    let r = s
        .analyze(
            &apdex("interval: 1m\n    count: 5\n    successCondition: \"min(result) >= 9900\""),
            &[],
        )
        .await;
    assert_eq!(r.phase, Phase::Failed);
    assert!(r.metric_results[0].measurements.len() < 5);
}

#[tokio::test]
async fn bearer_auth_reaches_a_gateway_and_its_absence_is_an_error() {
    use skycanary::sim::{SimConfig, Simulator};
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4).with_bearer("s3cret"));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let s = Sim::start(OapProfile::V10_4).await;
    let defaults = || skycanary::runner::Defaults {
        skywalking: Some(running.url()),
        timezone: None,
    };
    let with_auth =
        apdex(MIN_9900).replace("window: 5m", "window: 5m\n        auth: {bearer: s3cret}");
    let r = s.analyze_with(&with_auth, &[], defaults()).await;
    assert_eq!(r.phase, Phase::Successful, "{}", last_message(&r));
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer s3cret"))
    );
    let without = apdex("successCondition: \"true\"\n    consecutiveErrorLimit: 0");
    let r = s.analyze_with(&without, &[], defaults()).await;
    assert_eq!(r.phase, Phase::Error);
    assert!(last_message(&r).contains("401"), "{}", last_message(&r));
}

#[tokio::test]
async fn extra_headers_are_sent() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let yaml = apdex(MIN_9900).replace(
        "window: 5m",
        "window: 5m\n        headers: [{name: X-Tenant, value: blue}]",
    );
    let r = s.analyze(&yaml, &[]).await;
    assert_eq!(r.phase, Phase::Successful);
    assert!(
        s.sim
            .requests()
            .iter()
            .all(|r| r.header("x-tenant") == Some("blue"))
    );
}

#[tokio::test]
async fn instances_matching_a_pattern_are_averaged_per_minute() {
    let s = Sim::start(OapProfile::V10_4).await;
    let svc = "reviews.bookinfo";
    for (pod, sla) in [
        ("reviews-v1-aaa", 10000.0),
        ("reviews-v2-bbb", 9000.0),
        ("reviews-v2-ccc", 9400.0),
    ] {
        s.sim.add_instance(svc, pod);
        s.sim.set_series(
            "service_instance_sla",
            SimEntity::instance(svc, pod),
            move |_| Some(sla),
        );
    }
    let yaml = template(
        r#"    successCondition: "max(result) <= 9200 && min(result) >= 9200"
    provider:
      skywalking:
        window: 3m
        metric: service_instance_sla
        entity: {serviceName: "{{args.service}}"}
        instances: {namePattern: "^reviews-v2-"}"#,
    );
    let r = s.analyze(&yaml, &[]).await;
    // Only the two v2 pods count: (9000 + 9400) / 2 = 9200; the v1 pod's 10000 is left out.
    assert_eq!(r.phase, Phase::Successful, "{}", last_message(&r));
    let none = yaml.replace("^reviews-v2-", "^reviews-v3-");
    let r = s
        .analyze(
            &none.replace(
                "    successCondition",
                "    consecutiveErrorLimit: 0\n    successCondition",
            ),
            &[],
        )
        .await;
    assert_eq!(r.phase, Phase::Error);
    assert!(
        last_message(&r).contains("reviews-v3"),
        "{}",
        last_message(&r)
    );
}

#[tokio::test]
async fn infinite_and_nan_mqe_values_are_no_data() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_cpm", "reviews.bookinfo", 120.0);
    s.constant("service_sla", "reviews.bookinfo", 0.0);
    for expr in ["service_cpm / 0", "service_sla / 0"] {
        let yaml = template(&format!(
            r#"    successCondition: "true"
    provider:
      skywalking:
        window: 3m
        expression: "{expr}"
        entity: {{serviceName: "{{{{args.service}}}}"}}"#
        ));
        let r = s.analyze(&yaml, &[]).await;
        assert_eq!(r.phase, Phase::Inconclusive, "{expr}: {}", last_message(&r));
    }
}
