//! Criterion micro-benchmarks of the daemon's hot pure paths (see BENCHMARKS.md):
//! condition evaluation, the analysis state update, the VirtualService transform on a
//! 50-route VirtualService, and alarm intake (payload parse + match against 1,000 canaries).
//!
//! `cargo bench --bench hot_paths` (CI runs it with `-- --warm-up-time 1 --measurement-time 2`).

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

use skycanary::alarm::{Incoming, RollbackRules, Verdict, parse_payload, verdict};
use skycanary::analysis::{
    Bindings, Condition, Measurement, MetricSpec, Observation, Phase, ResultValue, RunSpec,
    due_metrics, measure, next_due, record, start_run, terminate,
};
use skycanary::resources::canary::{AlarmMatcher, RollbackOn};
use skycanary::traffic::istio;
use skycanary::traffic::{
    Backend, DesiredRouting, HeaderMatch, HeaderRoute, IstioRouting, StringMatch, VirtualServiceRef,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid time")
}

/// A 5-point apdex window, as a MINUTE-step query over 5 minutes returns it.
fn window() -> ResultValue {
    ResultValue::Series(vec![9950.0, 9930.0, 9910.0, 9970.0, 9940.0])
}

fn args() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("service".to_string(), "reviews.bookinfo".to_string()),
        ("min-apdex".to_string(), "9900".to_string()),
    ])
}

fn conditions(c: &mut Criterion) {
    let mut g = c.benchmark_group("condition");
    let simple = Condition::compile("min(result) >= args.min_apdex").expect("compiles");
    let complex = Condition::compile(
        "len(result) >= 3 && avg(result) >= args.min_apdex && percentile(result, 90) > 9000 \
         && last(result) >= default(first(result), 0) - 100",
    )
    .expect("compiles");
    let bindings = Bindings::new(window()).with_args(args());
    g.bench_function("eval min(result) >= arg", |b| {
        b.iter(|| black_box(&simple).eval(black_box(&bindings)))
    });
    g.bench_function("eval 4-clause condition", |b| {
        b.iter(|| black_box(&complex).eval(black_box(&bindings)))
    });
    let mut spec = MetricSpec::new("apdex");
    spec.success_condition = Some(simple.clone());
    spec.failure_condition = Some(Condition::compile("min(result) < 9000").expect("compiles"));
    let obs = Observation::value(window());
    let a = args();
    g.bench_function("judge success+failure with message", |b| {
        b.iter(|| measure(&spec, black_box(&obs), &a, t0(), t0()))
    });
    g.bench_function("compile", |b| {
        b.iter(|| Condition::compile(black_box("min(result) >= args.min_apdex")))
    });
    g.finish();
}

/// A background metric (interval 5 s, indefinite) with `retention` measurements kept.
fn run_spec() -> RunSpec {
    let mut m = MetricSpec::new("apdex");
    m.interval = Some(std::time::Duration::from_secs(5));
    m.success_condition = Some(Condition::compile("min(result) >= 9900").expect("compiles"));
    let mut latency = MetricSpec::new("p99");
    latency.interval = Some(std::time::Duration::from_secs(5));
    RunSpec {
        metrics: vec![m, latency],
    }
}

fn measurement(phase: Phase, at: DateTime<Utc>) -> Measurement {
    Measurement {
        phase,
        value: Some("[9950, 9930, 9910, 9970, 9940]".into()),
        message: Some(
            "min(result) >= 9900 with result=[9950, 9930, 9910, 9970, 9940] → true: Successful"
                .into(),
        ),
        started_at: at,
        finished_at: Some(at),
        metadata: Default::default(),
        evidence: None,
    }
}

fn state_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("analysis_state");
    let spec = run_spec();
    // A run in steady state: retention (10) full on both metrics.
    let mut steady = start_run(&spec, t0());
    for k in 0..10 {
        let at = t0() + TimeDelta::seconds(5 * (k + 1));
        for i in 0..2 {
            record(
                &spec,
                &mut steady,
                i,
                measurement(Phase::Successful, at),
                at,
            )
            .expect("record");
        }
    }
    let next = t0() + TimeDelta::seconds(55);
    g.bench_function("record (retention full) + next_due", |b| {
        b.iter_batched_ref(
            || steady.clone(),
            |s| {
                record(&spec, s, 0, measurement(Phase::Successful, next), next).expect("record");
                next_due(&spec, s, next)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("due_metrics", |b| {
        b.iter(|| due_metrics(&spec, black_box(&steady), next))
    });
    g.bench_function("record failing measurement (run terminates)", |b| {
        b.iter_batched_ref(
            || steady.clone(),
            |s| record(&spec, s, 0, measurement(Phase::Failed, next), next),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("terminate", |b| {
        b.iter_batched_ref(
            || steady.clone(),
            |s| terminate(&spec, s, "canary promoted", next),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A VirtualService with 50 named http routes, each with a match, retries and a split, plus
/// fields skycanary never touches.
fn big_virtual_service() -> Value {
    let routes: Vec<Value> = (0..50)
        .map(|i| {
            json!({
                "name": format!("route-{i:02}"),
                "match": [{"uri": {"prefix": format!("/api/v{i}/")}, "headers": {"x-tenant": {"exact": format!("t{i}")}}}],
                "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,reset"},
                "timeout": "10s",
                "route": [
                    {"destination": {"host": "reviews-stable", "port": {"number": 9080}}, "weight": 100},
                    {"destination": {"host": "reviews-canary", "port": {"number": 9080}}, "weight": 0}
                ]
            })
        })
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "42",
                     "labels": {"app": "reviews"}, "annotations": {"team": "books"}},
        "spec": {"hosts": ["reviews", "reviews.example.com"], "gateways": ["mesh", "public"], "http": routes}
    })
}

fn routing(managed: &[&str]) -> IstioRouting {
    IstioRouting {
        namespace: "bookinfo".into(),
        max_weight: 100,
        managed_routes: managed.iter().map(|s| s.to_string()).collect(),
        virtual_services: Vec::new(),
        backend: Backend::Host {
            stable: "reviews-stable".into(),
            canary: "reviews-canary".into(),
        },
        additional_destinations: Vec::new(),
    }
}

fn vs_ref(routes: Vec<String>) -> VirtualServiceRef {
    VirtualServiceRef {
        name: "reviews".into(),
        namespace: Some("bookinfo".into()),
        http_routes: routes,
        tls_routes: Vec::new(),
        tcp_routes: Vec::new(),
    }
}

fn desired(weight: i64) -> DesiredRouting {
    DesiredRouting {
        canary_weight: weight,
        header_routes: Vec::new(),
        mirror_routes: Vec::new(),
    }
}

fn vs_transform(c: &mut Criterion) {
    let mut g = c.benchmark_group("virtual_service_50_routes");
    let vs = big_virtual_service();
    let r = routing(&[]);
    let one = vs_ref(vec!["route-25".into()]);
    let all = vs_ref((0..50).map(|i| format!("route-{i:02}")).collect());
    g.bench_function("apply setWeight 20 (1 of 50 routes)", |b| {
        b.iter(|| istio::apply(black_box(&vs), &one, &r, &desired(20)).expect("applies"))
    });
    g.bench_function("apply setWeight 20 (all 50 routes)", |b| {
        b.iter(|| istio::apply(black_box(&vs), &all, &r, &desired(20)).expect("applies"))
    });
    // Abort: from 20 back to 0 on a VS that carries the original-routes annotation.
    let at20 = istio::apply(&vs, &all, &r, &desired(20)).expect("applies");
    g.bench_function("apply rollback to 0 (all 50 routes)", |b| {
        b.iter(|| istio::apply(black_box(&at20), &all, &r, &desired(0)).expect("applies"))
    });
    let hr = routing(&["canary-header"]);
    let with_header = DesiredRouting {
        header_routes: vec![HeaderRoute {
            name: "canary-header".into(),
            headers: vec![HeaderMatch::new(
                "end-user",
                StringMatch::Exact("jason".into()),
            )],
        }],
        ..desired(20)
    };
    g.bench_function("apply setHeaderRoute (1 of 50 routes)", |b| {
        b.iter(|| istio::apply(black_box(&vs), &one, &hr, &with_header).expect("applies"))
    });
    g.bench_function("apply no-op (already at weight)", |b| {
        b.iter(|| istio::apply(black_box(&at20), &all, &r, &desired(20)).expect("applies"))
    });
    g.finish();
}

/// An OAP 10.4 webhook body: `n` AlarmMessages with every field set.
fn alarm_payload(n: usize, target: usize) -> Vec<u8> {
    let msgs: Vec<Value> = (0..n)
        .map(|i| {
            let svc = format!("svc-{:04}.bench", (target + i) % 1000);
            json!({
                "scopeId": 1, "scope": "SERVICE", "name": svc,
                "id0": format!("{}.1", svc), "id1": "",
                "ruleName": "service_resp_time_rule",
                "alarmMessage": format!("Response time of service {svc} is more than 1000ms in 3 minutes of last 10 minutes."),
                "startTime": 1_767_225_600_000_i64 + i as i64,
                "tags": [{"key": "level", "value": "WARNING"}],
                "hooks": ["webhook.default"],
                "expression": "sum(service_resp_time > 1000) >= 3",
                "mqeMetricsSnapshot": {"service_resp_time": "[{\"id\":\"202601010000\",\"value\":\"1200\"}]"},
                "uuid": format!("6f1c0a8e-0000-4000-8000-{i:012}")
            })
        })
        .collect();
    serde_json::to_vec(&msgs).expect("serializes")
}

/// The `rollbackOn` of 1,000 canaries, each matching its own service, compiled as the
/// daemon compiles them (once per load).
fn canary_matchers() -> Vec<RollbackRules> {
    (0..1000)
        .map(|i| {
            RollbackRules::compile(Some(&RollbackOn {
                alarms: vec![AlarmMatcher {
                    rule_name: Some("service_(sla|resp_time)_rule".into()),
                    name: Some(format!("svc-{i:04}\\.bench")),
                    ..Default::default()
                }],
                ..Default::default()
            }))
        })
        .collect()
}

/// How many canaries `alarm` rolls back (the daemon's decision, run start unknown).
fn triggered(canaries: &[RollbackRules], alarm: &Incoming) -> usize {
    canaries
        .iter()
        .filter(|r| verdict(alarm, r, None) == Verdict::Trigger)
        .count()
}

fn alarm_intake(c: &mut Criterion) {
    let mut g = c.benchmark_group("alarm");
    let one = alarm_payload(1, 500);
    let ten = alarm_payload(10, 500);
    let canaries = canary_matchers();
    g.bench_function("parse 1 message", |b| {
        b.iter(|| parse_payload(black_box(&one)).expect("parses"))
    });
    g.bench_function("parse 1 + match against 1000 canaries", |b| {
        b.iter(|| {
            let msgs = parse_payload(black_box(&one)).expect("parses");
            let mut hits = 0;
            for m in msgs {
                hits += triggered(&canaries, &Incoming::Alarm(m));
            }
            assert_eq!(hits, 1);
            hits
        })
    });
    g.bench_function("parse 10 + match against 1000 canaries", |b| {
        b.iter(|| {
            let msgs = parse_payload(black_box(&ten)).expect("parses");
            let mut hits = 0;
            for m in msgs {
                hits += triggered(&canaries, &Incoming::Alarm(m));
            }
            assert_eq!(hits, 10);
            hits
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    conditions,
    state_update,
    vs_transform,
    alarm_intake
);
criterion_main!(benches);
