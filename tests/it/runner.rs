//! The runner pieces the canary controller uses: several templates in one run, resume from a
//! persisted state, and stopping a run.

use std::collections::BTreeMap;

use skycanary::analysis::{Phase, start_run};
use skycanary::resources::load_str;
use skycanary::runner::{self, Defaults};
use skycanary::sim::OapProfile;

use crate::support::Sim;

fn tmpl(name: &str, metric: &str, cond_arg: &str, default: &str) -> String {
    format!(
        r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: {name}}}
spec:
  args:
  - name: service
  - name: {cond_arg}
    value: "{default}"
  metrics:
  - name: {name}
    interval: 1m
    count: 3
    successCondition: "min(result) >= args.{cond}"
    provider: {{skywalking: {{window: 3m, metric: {metric}, entity: {{serviceName: "{{{{args.service}}}}"}}}}}}
"#,
        cond = cond_arg.replace('-', "_")
    )
}

#[tokio::test]
async fn several_templates_run_as_one_analysis_with_their_own_args() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    s.constant("service_sla", "reviews.bookinfo", 9990.0);
    let a = load_str("a.yaml", &tmpl("apdex", "service_apdex", "min", "9900"));
    let b = load_str("b.yaml", &tmpl("sla", "service_sla", "min", "9980"));
    let given: BTreeMap<String, String> =
        [("service".to_string(), "reviews.bookinfo".to_string())].into();
    let defaults = Defaults {
        skywalking: Some(s.url()),
        timezone: None,
    };
    let plan = runner::plan_many(&[&a.templates[0], &b.templates[0]], &given, &defaults).unwrap();
    assert_eq!(plan.spec.metrics.len(), 2);
    assert_eq!(
        plan.clients.len(),
        1,
        "same OAP: one client, batched requests"
    );
    assert_eq!(plan.metrics[1].args["min"], "9980");
    let clients = runner::connect(&plan).unwrap();
    let state = runner::run_analysis(&plan, &clients, s.clock.as_ref(), &mut |_| {}).await;
    assert_eq!(state.phase, Phase::Successful, "{state:?}");
}

#[test]
fn duplicate_metric_names_across_templates_are_refused() {
    let a = load_str("a.yaml", &tmpl("apdex", "service_apdex", "min", "9900"));
    let b = load_str(
        "b.yaml",
        &tmpl("apdex", "service_sla", "min", "9980").replace("name: apdex}", "name: other}"),
    );
    let given: BTreeMap<String, String> = [("service".to_string(), "x".to_string())].into();
    let defaults = Defaults {
        skywalking: Some("http://127.0.0.1:1".into()),
        timezone: None,
    };
    let err =
        runner::plan_many(&[&a.templates[0], &b.templates[0]], &given, &defaults).unwrap_err();
    assert!(err.to_string().contains("same name"), "{err}");
}

#[tokio::test]
async fn a_run_resumes_from_a_persisted_state_and_can_be_stopped() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let a = load_str("a.yaml", &tmpl("apdex", "service_apdex", "min", "9900"));
    let given: BTreeMap<String, String> =
        [("service".to_string(), "reviews.bookinfo".to_string())].into();
    let defaults = Defaults {
        skywalking: Some(s.url()),
        timezone: None,
    };
    let plan = runner::plan(&a.templates[0], &given, &defaults).unwrap();
    let clients = runner::connect(&plan).unwrap();

    // First life: one measurement, then "the daemon dies" (we stop after the first event).
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let mut seen = 0;
    let mut count = |_: runner::RunEvent<'_>| seen += 1;
    let state = runner::run_analysis_from(
        &plan,
        &clients,
        s.clock.as_ref(),
        start_run(&plan.spec, s.clock.now()),
        &mut count,
        &mut rx,
    );
    let stopper = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = tx.send(Some("daemon stopping".into()));
    };
    let (stopped, ()) = tokio::join!(state, stopper);
    assert!(seen >= 1);
    assert_ne!(
        stopped.phase,
        Phase::Successful,
        "a bounded metric stopped early is not Successful"
    );

    // A persisted mid-run state (first measurement only) resumes and completes the count.
    let mut persisted = stopped.clone();
    persisted.phase = Phase::Running;
    persisted.terminated = false;
    persisted.completed_at = None;
    persisted.message = None;
    let mr = &mut persisted.metric_results[0];
    mr.phase = Phase::Running;
    mr.message = None;
    mr.measurements.truncate(1);
    mr.count = 1;
    mr.successful = 1;
    mr.consecutive_success = 1;
    let (_tx2, mut rx2) = tokio::sync::watch::channel(None);
    let done = runner::run_analysis_from(
        &plan,
        &clients,
        s.clock.as_ref(),
        persisted,
        &mut |_| {},
        &mut rx2,
    )
    .await;
    assert_eq!(done.phase, Phase::Successful, "{done:?}");
    assert_eq!(done.metric_results[0].count, 3);
}

/// A template whose metrics (one measurement each, so all due at the same moment) are listed
/// in `order`: each metric reads the apdex of the service of the same name.
fn ordered_template(order: &[&str]) -> String {
    let mut y = String::from(
        "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: order}\nspec:\n  dryRun: [{metricName: \"^dry$\"}]\n  metrics:\n",
    );
    for name in order {
        y.push_str(&format!(
            "  - name: {name}\n    successCondition: \"min(result) >= 9900\"\n    failureCondition: \"min(result) < 9000\"\n    provider: {{skywalking: {{window: 3m, metric: service_apdex, entity: {{serviceName: {name}}}}}}}\n"
        ));
    }
    y
}

#[tokio::test]
async fn measurements_of_one_moment_are_all_recorded_and_the_worst_wins_in_any_order() {
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "ok", 9950.0); // Successful
    s.constant("service_apdex", "mid", 9500.0); // Inconclusive
    s.constant("service_apdex", "bad", 5000.0); // Failed
    s.constant("service_apdex", "dry", 5000.0); // Failed, but dry-run
    let defaults = Defaults {
        skywalking: Some(s.url()),
        timezone: None,
    };
    for order in [
        ["mid", "bad", "ok", "dry"],
        ["dry", "ok", "bad", "mid"],
        ["bad", "mid", "dry", "ok"],
    ] {
        let t = load_str("order.yaml", &ordered_template(&order));
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        let plan = runner::plan(&t.templates[0], &BTreeMap::new(), &defaults).unwrap();
        let clients = runner::connect(&plan).unwrap();
        let state = runner::run_analysis(&plan, &clients, s.clock.as_ref(), &mut |_| {}).await;
        assert_eq!(state.phase, Phase::Failed, "order {order:?}: {state:?}");
        for r in &state.metric_results {
            let want = match r.name.as_str() {
                "ok" => Phase::Successful,
                "mid" => Phase::Inconclusive,
                _ => Phase::Failed,
            };
            assert_eq!(r.measurements.len(), 1, "{} in {order:?}", r.name);
            assert_eq!(r.phase, want, "{} in {order:?}", r.name);
        }
    }
}
