//! From analysis status to report data (pure): thresholds and measured values read from the
//! measurements' typed evidence, verdicts of a run.

use std::collections::BTreeMap;

use super::{Event, MetricPoint, MetricSeries, Section, Threshold, ThresholdKind, Tone, Verdict};
use crate::analysis::{CompareOp, ConditionKind, MetricResult, Phase, RunState};

/// What a report needs to know about a metric besides its measurements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricInfo {
    /// `successCondition`, as written.
    pub success: Option<String>,
    /// `failureCondition`, as written.
    pub failure: Option<String>,
    /// Resolved args of its template (declared names).
    pub args: BTreeMap<String, String>,
}

impl MetricInfo {
    /// The conditions and args of every metric of a plan, by metric name.
    pub fn of_plan(plan: &crate::runner::RunPlan) -> BTreeMap<String, MetricInfo> {
        plan.spec
            .metrics
            .iter()
            .zip(&plan.metrics)
            .map(|(spec, planned)| {
                (
                    spec.name.clone(),
                    MetricInfo {
                        success: spec
                            .success_condition
                            .as_ref()
                            .map(|c| c.source().to_string()),
                        failure: spec
                            .failure_condition
                            .as_ref()
                            .map(|c| c.source().to_string()),
                        args: planned.args.clone(),
                    },
                )
            })
            .collect()
    }
}

/// A section for one analysis run: its metrics, verdicts, and start/end events.
pub fn run_section(title: &str, run: &RunState, info: &BTreeMap<String, MetricInfo>) -> Section {
    let mut events = vec![Event {
        at: run.started_at,
        kind: "AnalysisRunStarted".into(),
        message: format!("{} metric(s)", run.metric_results.len()),
        warning: false,
    }];
    if run.phase.is_completed() {
        events.push(Event {
            at: run.completed_at.unwrap_or(run.started_at),
            kind: format!("AnalysisRun{:?}", run.phase),
            message: run
                .message
                .clone()
                .unwrap_or_else(|| format!("{:?}", run.phase)),
            warning: run.phase != Phase::Successful,
        });
    }
    Section {
        title: title.to_string(),
        outcome: format!("{:?}", run.phase),
        tone: match run.phase {
            Phase::Successful => Tone::Good,
            Phase::Failed | Phase::Error => Tone::Bad,
            _ => Tone::Neutral,
        },
        description: None,
        weights: Vec::new(),
        metrics: metric_series(run, info, None),
        verdicts: verdicts_of_run(title, run),
        events,
    }
}

/// The threshold lines of a metric: for each condition, the typed threshold of the newest
/// completed measurement that has one (a condition that is one ordering comparison of the
/// measured value with a number or an arg; see [`crate::analysis::Condition::comparison`]).
/// Equality comparisons are not drawn: a line says nothing about which side is healthy.
pub fn thresholds_of(mr: &MetricResult) -> Vec<Threshold> {
    [
        (ConditionKind::Success, ThresholdKind::Success),
        (ConditionKind::Failure, ThresholdKind::Failure),
    ]
    .into_iter()
    .filter_map(|(condition, kind)| {
        let (op, value) = mr
            .measurements
            .iter()
            .rev()
            .filter(|m| m.phase.is_completed())
            .find_map(|m| m.evidence.as_ref()?.threshold(condition))?;
        (!matches!(op, CompareOp::Eq | CompareOp::Ne)).then_some(Threshold { value, kind, op })
    })
    .collect()
}

/// The numbers of a measurement's display value: `[9950, —, 9930]` → [9950, NaN, 9930];
/// `42.5` → [42.5]; empty buckets and unparsable parts are NaN. Only for measurements saved
/// before they carried typed evidence (`Measurement::evidence`).
pub fn parse_values(display: &str) -> Vec<f64> {
    let inner = display.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|p| p.trim().parse::<f64>().unwrap_or(f64::NAN))
        .collect()
}

/// The value the conditions judge: the minimum against a lower bound, the maximum against
/// an upper bound, else the last finite value. `None` when no value is finite.
pub fn summary_value(values: &[f64], thresholds: &[Threshold]) -> Option<f64> {
    let mut finite = values.iter().copied().filter(|v| v.is_finite());
    match thresholds.first() {
        Some(t) if t.is_lower_bound() => finite.reduce(f64::min),
        Some(_) => finite.reduce(f64::max),
        None => finite.next_back(),
    }
}

/// One series per metric of `run` (named `prefix` + metric when `prefix` is set).
pub fn metric_series(
    run: &RunState,
    info: &BTreeMap<String, MetricInfo>,
    prefix: Option<&str>,
) -> Vec<MetricSeries> {
    run.metric_results
        .iter()
        .map(|mr| {
            let i = info.get(&mr.name).cloned().unwrap_or_default();
            let thresholds = thresholds_of(mr);
            let mut conditions = Vec::new();
            if let Some(s) = &i.success {
                conditions.push(format!("success: {s}"));
            }
            if let Some(f) = &i.failure {
                conditions.push(format!("failure: {f}"));
            }
            let points = mr
                .measurements
                .iter()
                .filter(|m| m.phase.is_completed())
                .map(|m| {
                    let values = match &m.evidence {
                        Some(e) => e.values.clone(),
                        None => m.value.as_deref().map(parse_values).unwrap_or_default(),
                    };
                    MetricPoint {
                        at: m.finished_at.unwrap_or(m.started_at),
                        summary: summary_value(&values, &thresholds),
                        values,
                        phase: format!("{:?}", m.phase),
                        message: m.message.clone().unwrap_or_default(),
                    }
                })
                .collect();
            MetricSeries {
                name: match prefix {
                    Some(p) => format!("{p} · {}", mr.name),
                    None => mr.name.clone(),
                },
                conditions,
                thresholds,
                points,
            }
        })
        .collect()
}

/// Every measurement verdict of `run`, then the metrics' and the run's final verdicts.
pub fn verdicts_of_run(run_name: &str, run: &RunState) -> Vec<Verdict> {
    let mut out = Vec::new();
    for mr in &run.metric_results {
        for m in mr.measurements.iter().filter(|m| m.phase.is_completed()) {
            out.push(Verdict {
                at: m.finished_at.unwrap_or(m.started_at),
                run: run_name.to_string(),
                metric: mr.name.clone(),
                phase: format!("{:?}", m.phase),
                value: m.value.clone(),
                reason: m.message.clone().unwrap_or_default(),
            });
        }
    }
    out.sort_by_key(|v| v.at);
    if run.phase.is_completed() {
        let at = run
            .completed_at
            .or_else(|| out.last().map(|v| v.at))
            .unwrap_or(run.started_at);
        for mr in run.metric_results.iter().filter(|m| m.phase.is_completed()) {
            if let Some(msg) = &mr.message {
                out.push(Verdict {
                    at,
                    run: run_name.to_string(),
                    metric: mr.name.clone(),
                    phase: format!("{:?}", mr.phase),
                    value: None,
                    reason: msg.clone(),
                });
            }
        }
        out.push(Verdict {
            at,
            run: run_name.to_string(),
            metric: String::new(),
            phase: format!("{:?}", run.phase),
            value: None,
            reason: run
                .message
                .clone()
                .unwrap_or_else(|| "analysis run completed".to_string()),
        });
    }
    out
}
