use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::analysis::{
    CompareOp, Condition, Measurement, MetricResult, MetricSpec, Observation, Phase, ResultValue,
    RunState, measure,
};

fn t(min: u32, sec: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, min, sec)
        .single()
        .unwrap_or_default()
}

fn point(at: DateTime<Utc>, values: &[f64], phase: &str) -> MetricPoint {
    MetricPoint {
        at,
        values: values.to_vec(),
        summary: summary_value(values, &[threshold(9900.0)]),
        phase: phase.into(),
        message: format!("min(result) >= 9900 → {phase}"),
    }
}

fn threshold(v: f64) -> Threshold {
    Threshold {
        value: v,
        kind: ThresholdKind::Success,
        op: CompareOp::Ge,
    }
}

fn section() -> Section {
    Section {
        title: "healthy: reviews v1 → v2".into(),
        outcome: "Promoted (v2 at 100 %)".into(),
        tone: Tone::Good,
        description: Some("v2 is promoted on healthy apdex".into()),
        weights: vec![
            WeightSeries {
                name: "v1".into(),
                points: vec![(t(0, 0), 100.0), (t(1, 0), 90.0), (t(4, 0), 0.0)],
            },
            WeightSeries {
                name: "v2".into(),
                points: vec![(t(0, 0), 0.0), (t(1, 0), 10.0), (t(4, 0), 100.0)],
            },
        ],
        metrics: vec![MetricSeries {
            name: "apdex".into(),
            conditions: vec!["success: min(result) >= args.min_apdex".into()],
            thresholds: vec![threshold(9900.0)],
            points: vec![
                point(t(2, 0), &[9950.0, 9940.0, f64::NAN], "Successful"),
                point(t(3, 0), &[9950.0, 9960.0, 9955.0], "Successful"),
            ],
        }],
        verdicts: vec![Verdict {
            at: t(2, 0),
            run: "reviews-v2-step2".into(),
            metric: "apdex".into(),
            phase: "Successful".into(),
            value: Some("[9950, 9940, —]".into()),
            reason: "min(result) >= args.min_apdex with result=[9950, 9940] → true: Successful"
                .into(),
        }],
        events: vec![Event {
            at: t(1, 0),
            kind: "TrafficWeightUpdated".into(),
            message: "v1 90 % · v2 10 %".into(),
            warning: false,
        }],
    }
}

fn report(sections: Vec<Section>) -> Report {
    Report {
        title: "skycanary demo".into(),
        subtitle: Some("generated".into()),
        sections,
    }
}

/// Every `d`, `x*`, `y*`, `cx`, `cy` attribute of the SVG is a finite number list.
fn assert_coordinates_finite(html: &str) {
    let re = regex::Regex::new(r#" (d|x|y|x1|x2|y1|y2|cx|cy|width|height)="([^"]*)""#).unwrap();
    for c in re.captures_iter(html) {
        let v = &c[2];
        assert!(
            !v.contains("NaN") && !v.contains("inf"),
            "non-finite {}={v}",
            &c[1]
        );
        if &c[1] != "d" {
            assert!(v.parse::<f64>().is_ok_and(f64::is_finite), "{}={v}", &c[1]);
        }
    }
}

#[test]
fn a_report_has_charts_thresholds_verdicts_and_events() {
    let html = render(&report(vec![section()]));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains(r#"id="s0-healthy-reviews-v1-v2-weights""#),
        "{html}"
    );
    assert!(html.contains(r#"class="chart weights""#));
    assert!(html.contains(r#"class="chart metric""#));
    assert!(html.contains(r#"id="s0-healthy-reviews-v1-v2-metric-0-apdex""#));
    assert_eq!(html.matches(r#"<path class="series weight""#).count(), 2);
    assert!(html.contains(r#"data-version="v2""#));
    assert_eq!(
        html.matches(r#"<line class="threshold success""#).count(),
        1
    );
    assert!(html.contains("success ≥ 9900"));
    assert_eq!(
        html.matches(r#"<circle class="verdict successful""#)
            .count(),
        2
    );
    assert!(html.contains(r#"<path class="series metric""#));
    assert!(html.contains("Promoted (v2 at 100 %)"));
    assert!(html.contains("TrafficWeightUpdated"));
    assert!(html.contains("min(result) &gt;= args.min_apdex with result=[9950, 9940]"));
    assert_coordinates_finite(&html);
}

#[test]
fn the_report_is_self_contained() {
    let html = render(&report(vec![section()]));
    for needle in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(needle), "{needle} found");
    }
    // The only URLs are the SVG namespace.
    let urls: Vec<_> = html.match_indices("http").collect();
    assert!(
        urls.iter()
            .all(|(i, _)| html[*i..].starts_with("http://www.w3.org/2000/svg")),
        "{urls:?}"
    );
}

#[test]
fn names_and_messages_cannot_inject_html() {
    let evil = r#"<script>alert("x")</script>' onload='x"#;
    let mut s = section();
    s.title = evil.into();
    s.outcome = evil.into();
    s.description = Some(evil.into());
    s.weights[0].name = evil.into();
    s.metrics[0].name = evil.into();
    s.metrics[0].conditions = vec![evil.into()];
    s.metrics[0].points[0].message = evil.into();
    s.metrics[0].points[0].phase = evil.into();
    s.verdicts[0].run = evil.into();
    s.verdicts[0].reason = evil.into();
    s.verdicts[0].phase = evil.into();
    s.events[0].message = evil.into();
    s.events[0].kind = evil.into();
    let mut r = report(vec![s]);
    r.title = evil.into();
    let html = render(&r);
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("' onload='"));
    assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onload=&#39;x"));
    // Ids and classes derived from names stay plain.
    let ids = regex::Regex::new(r#" (id|class)="([^"]*)""#).unwrap();
    for c in ids.captures_iter(&html) {
        assert!(
            c[2].chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == ' '),
            "{}",
            &c[2]
        );
    }
}

#[test]
fn control_characters_are_replaced() {
    assert_eq!(html::esc("a\u{0}b\u{1b}[31m\n"), "a\u{fffd}b\u{fffd}[31m\n");
}

#[test]
fn nan_and_infinity_never_reach_the_svg() {
    let mut s = section();
    s.metrics[0].points = vec![
        point(t(1, 0), &[f64::NAN, f64::INFINITY], "Inconclusive"),
        point(t(2, 0), &[f64::NEG_INFINITY], "Error"),
        MetricPoint {
            summary: Some(f64::NAN),
            ..point(t(3, 0), &[9950.0], "Successful")
        },
    ];
    s.metrics[0].thresholds.push(Threshold {
        value: f64::NAN,
        kind: ThresholdKind::Failure,
        op: CompareOp::Lt,
    });
    s.weights[0].points.push((t(5, 0), f64::NAN));
    let html = render(&report(vec![s]));
    assert_coordinates_finite(&html);
    assert!(html.contains(r#"class="verdict inconclusive""#));
    assert!(html.contains(r#"class="verdict error""#));
}

#[test]
fn empty_series_and_sections_render() {
    let mut s = section();
    s.metrics[0].points.clear();
    s.metrics[0].thresholds.clear();
    s.metrics.push(MetricSeries {
        name: "no-data".into(),
        conditions: vec![],
        thresholds: vec![],
        points: vec![MetricPoint {
            at: t(2, 0),
            values: vec![],
            summary: None,
            phase: "Inconclusive".into(),
            message: "no data in the window".into(),
        }],
    });
    s.weights[1].points.clear();
    let html = render(&report(vec![s]));
    assert_eq!(html.matches(r#"class="no-data""#).count(), 2);
    // The no-data measurement still shows when it happened.
    assert!(html.contains(r#"class="verdict inconclusive""#));
    assert_eq!(html.matches(r#"<path class="series weight""#).count(), 1);
    assert_coordinates_finite(&html);

    // A section without any time at all.
    let bare = Section {
        title: "bare".into(),
        outcome: "?".into(),
        metrics: vec![MetricSeries {
            name: "m".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let html = render(&report(vec![bare]));
    assert!(html.contains("no measurements"));
    assert!(html.contains("no verdicts"));
    assert!(html.contains("no events"));
    let html = render(&report(vec![]));
    assert!(html.contains("Nothing to report."));
}

/// A run of metric `apdex` whose measurements were judged by these conditions (evalexpr,
/// `args.min_apdex = 9900`) over these values.
fn judged_run(success: Option<&str>, failure: Option<&str>, values: &[&[f64]]) -> RunState {
    let mut spec = MetricSpec::new("apdex");
    spec.success_condition = success.map(|c| Condition::compile(c).expect("compiles"));
    spec.failure_condition = failure.map(|c| Condition::compile(c).expect("compiles"));
    let args = BTreeMap::from([("min-apdex".to_string(), "9900".to_string())]);
    let mut run = run_state();
    run.metric_results[0].measurements = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let obs = Observation::value(ResultValue::Series(v.to_vec()));
            let at = t(i as u32 + 1, 0);
            measure(&spec, &obs, &args, at, at).into()
        })
        .collect();
    run
}

#[test]
fn thresholds_are_read_from_the_typed_evidence() {
    let run = judged_run(Some("min(result) >= args.min_apdex"), None, &[&[9950.0]]);
    let ts = thresholds_of(&run.metric_results[0]);
    assert_eq!(ts, vec![threshold(9900.0)]);
    assert!(ts[0].is_lower_bound());
    // Reversed operands, both conditions: oriented from the measured side.
    let run = judged_run(
        Some("{{ args.min-apdex }} <= min(result)"),
        Some("max(result) > 9990"),
        &[&[9950.0]],
    );
    let ts = thresholds_of(&run.metric_results[0]);
    assert_eq!(
        ts.iter()
            .map(|t| (t.kind, t.op, t.value))
            .collect::<Vec<_>>(),
        vec![
            (ThresholdKind::Success, CompareOp::Ge, 9900.0),
            (ThresholdKind::Failure, CompareOp::Gt, 9990.0)
        ]
    );
    assert!(ts[0].is_lower_bound());
    assert!(!ts[1].is_lower_bound());
    // Not one comparison, or an equality: nothing drawn.
    for c in [
        "max(result) > 500 || avg(result) < -1.5e2",
        "len(result) == 3",
    ] {
        let run = judged_run(Some(c), None, &[&[9950.0]]);
        assert!(thresholds_of(&run.metric_results[0]).is_empty(), "{c}");
    }
    // A status saved before typed evidence: no threshold is guessed from the text.
    let mut run = judged_run(Some("min(result) >= 9900"), None, &[&[9950.0]]);
    std::sync::Arc::make_mut(&mut run.metric_results[0].measurements[0]).evidence = None;
    assert!(thresholds_of(&run.metric_results[0]).is_empty());
}

#[test]
fn series_draw_typed_thresholds_and_values() {
    let run = judged_run(
        Some("min(result) >= args.min_apdex"),
        Some("min(result) < 9500"),
        &[&[9950.0, 9940.0], &[9950.0, 9100.0]],
    );
    let series = metric_series(&run, &BTreeMap::new(), None);
    assert_eq!(
        series[0]
            .thresholds
            .iter()
            .map(|t| t.label())
            .collect::<Vec<_>>(),
        vec!["success ≥ 9900", "failure < 9500"]
    );
    assert_eq!(series[0].points[1].values, vec![9950.0, 9100.0]);
    assert_eq!(series[0].points[1].summary, Some(9100.0));
    let html = render(&report(vec![Section {
        title: "s".into(),
        metrics: series,
        ..Default::default()
    }]));
    assert_eq!(
        html.matches(r#"<line class="threshold success""#).count(),
        1
    );
    assert_eq!(
        html.matches(r#"<line class="threshold failure""#).count(),
        1
    );
}

#[test]
fn values_and_summaries() {
    let v = parse_values("[9950, —, 9930]");
    assert_eq!(v.len(), 3);
    assert!(v[1].is_nan());
    assert_eq!(parse_values("42.5"), vec![42.5]);
    assert!(parse_values("[]").is_empty());
    assert!(parse_values("").is_empty());
    assert_eq!(summary_value(&v, &[threshold(9900.0)]), Some(9930.0));
    let upper = Threshold {
        value: 500.0,
        kind: ThresholdKind::Success,
        op: CompareOp::Le,
    };
    assert_eq!(summary_value(&v, &[upper]), Some(9950.0));
    assert_eq!(summary_value(&v, &[]), Some(9930.0));
    assert_eq!(summary_value(&[f64::NAN], &[]), None);
}

fn run_state() -> RunState {
    let m = |phase, value: Option<&str>, min| Measurement {
        phase,
        value: value.map(str::to_string),
        message: Some(format!("{phase:?} because")),
        started_at: t(min, 0),
        finished_at: Some(t(min, 1)),
        metadata: Default::default(),
        evidence: None,
    };
    RunState {
        phase: Phase::Failed,
        message: Some("metric apdex failed".into()),
        metric_results: vec![MetricResult {
            name: "apdex".into(),
            phase: Phase::Failed,
            measurements: vec![
                m(Phase::Successful, Some("[9950, 9950]"), 1).into(),
                m(Phase::Failed, Some("[9950, 9100]"), 2).into(),
                std::sync::Arc::new(Measurement {
                    phase: Phase::Running,
                    value: None,
                    message: None,
                    started_at: t(3, 0),
                    finished_at: None,
                    metadata: Default::default(),
                    evidence: None,
                }),
            ],
            message: Some("failed 1 > failureLimit 0".into()),
            count: 2,
            successful: 1,
            failed: 1,
            inconclusive: 0,
            error: 0,
            consecutive_error: 0,
            consecutive_success: 0,
            dry_run: false,
        }],
        started_at: t(1, 0),
        completed_at: Some(t(2, 2)),
        terminated: true,
        terminate_reason: None,
    }
}

#[test]
fn series_and_verdicts_from_a_run() {
    let info = BTreeMap::from([(
        "apdex".to_string(),
        MetricInfo {
            success: Some("min(result) >= args.min_apdex".into()),
            failure: None,
            args: BTreeMap::from([("min-apdex".to_string(), "9900".to_string())]),
        },
    )]);
    let run = run_state();
    let series = metric_series(&run, &info, Some("step 2"));
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].name, "step 2 · apdex");
    // The in-flight measurement is not a point.
    assert_eq!(series[0].points.len(), 2);
    // Saved without typed evidence: values from the display, no threshold guessed.
    assert_eq!(series[0].points[1].values, vec![9950.0, 9100.0]);
    assert_eq!(series[0].points[1].summary, Some(9100.0));
    assert_eq!(series[0].thresholds, vec![]);
    let verdicts = verdicts_of_run("reviews-v3-step2", &run);
    let phases: Vec<_> = verdicts
        .iter()
        .map(|v| (v.metric.as_str(), v.phase.as_str()))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("apdex", "Successful"),
            ("apdex", "Failed"),
            ("apdex", "Failed"),
            ("", "Failed")
        ]
    );
    assert_eq!(verdicts[3].reason, "metric apdex failed");
}
