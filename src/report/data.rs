//! From analysis status to report data (pure): thresholds read from conditions, measured
//! values parsed from their display, verdicts of a run.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;

use super::{Event, MetricPoint, MetricSeries, Section, Threshold, ThresholdKind, Tone, Verdict};
use crate::analysis::expr::normalize_arg_name;
use crate::analysis::{Phase, RunState};

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

/// A threshold operand: `{{args.x}}`, `args.x` or a number.
const OPERAND: &str = r"(?:\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}|args\.([A-Za-z0-9_]+)|(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?))";

/// `OP operand` (the threshold on the right).
fn right() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&format!(r"(>=|<=|>|<)\s*{OPERAND}")).expect("static regex"))
}

/// `operand OP` (the threshold on the left: `9900 <= min(result)`).
fn left() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&format!(r"{OPERAND}\s*(>=|<=|>|<)")).expect("static regex"))
}

/// The operator seen from the other side.
fn mirrored(op: &str) -> &'static str {
    match op {
        ">=" => "<=",
        "<=" => ">=",
        ">" => "<",
        _ => ">",
    }
}

/// The threshold of each comparison `… OP number` / `number OP …` (or `args.x`, resolved) in
/// a condition, in the order written; comparisons against anything else are not drawn.
pub fn thresholds_of(
    condition: &str,
    kind: ThresholdKind,
    args: &BTreeMap<String, String>,
) -> Vec<Threshold> {
    let normalized: BTreeMap<String, &String> = args
        .iter()
        .map(|(k, v)| (normalize_arg_name(k), v))
        .collect();
    let value = |c: &regex::Captures<'_>, first: usize| -> Option<f64> {
        let text = if let Some(name) = c.get(first).or_else(|| c.get(first + 1)) {
            normalized
                .get(&normalize_arg_name(name.as_str()))?
                .trim()
                .to_string()
        } else {
            c.get(first + 2)?.as_str().to_string()
        };
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    };
    let mut found: Vec<(usize, Threshold)> = Vec::new();
    for c in right().captures_iter(condition) {
        let (Some(op), Some(v)) = (c.get(1), value(&c, 2)) else {
            continue;
        };
        let op = op.as_str().to_string();
        found.push((
            c.get(0).map_or(0, |m| m.start()),
            Threshold { value: v, kind, op },
        ));
    }
    for c in left().captures_iter(condition) {
        let (Some(op), Some(v)) = (c.get(4), value(&c, 1)) else {
            continue;
        };
        let op = mirrored(op.as_str()).to_string();
        found.push((
            c.get(0).map_or(0, |m| m.start()),
            Threshold { value: v, kind, op },
        ));
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, t)| t).collect()
}

/// The numbers of a measurement's display value: `[9950, —, 9930]` → [9950, NaN, 9930];
/// `42.5` → [42.5]; empty buckets and unparsable parts are NaN.
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
            let mut thresholds = Vec::new();
            let mut conditions = Vec::new();
            if let Some(s) = &i.success {
                thresholds.extend(thresholds_of(s, ThresholdKind::Success, &i.args));
                conditions.push(format!("success: {s}"));
            }
            if let Some(f) = &i.failure {
                thresholds.extend(thresholds_of(f, ThresholdKind::Failure, &i.args));
                conditions.push(format!("failure: {f}"));
            }
            let points = mr
                .measurements
                .iter()
                .filter(|m| m.phase.is_completed())
                .map(|m| {
                    let values = m.value.as_deref().map(parse_values).unwrap_or_default();
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
