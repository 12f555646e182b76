//! A scenario's run as a report section (pure): weights from the followed history, every
//! metric across the canary's analysis runs (and the scheduled analyses' runs) against its
//! thresholds, verdicts, events.

use std::collections::BTreeMap;

use super::ScenarioRun;
use super::narrate::{Style, describe};
use super::observe::Happening;
use skycanary_runtime::report::{Event, MetricSeries, Section, Tone, Verdict, WeightSeries};

/// Weight series per version from a history of changes.
pub fn weight_series(run: &ScenarioRun) -> Vec<WeightSeries> {
    let changes = run.history.changes();
    let mut names: Vec<String> = vec![
        super::scenario::STABLE.to_string(),
        run.spec.canary.to_string(),
    ];
    for (_, w) in changes {
        for k in w.keys() {
            if !names.contains(k) && w.get(k).is_some_and(|v| *v > 0.0) {
                names.push(k.clone());
            }
        }
    }
    names.dedup();
    names
        .into_iter()
        .map(|name| WeightSeries {
            points: changes
                .iter()
                .map(|(t, w)| (*t, w.get(&name).copied().unwrap_or(0.0)))
                .collect(),
            name,
        })
        .collect()
}

/// The section of one scenario.
pub fn section(run: &ScenarioRun) -> Section {
    // One chart per metric across every analysis run (the canary's and the scheduled
    // analyses'), in time order.
    let mut metrics: BTreeMap<String, MetricSeries> = BTreeMap::new();
    let mut verdicts = Vec::new();
    let canary_runs = run
        .status
        .iter()
        .flat_map(|s| &s.analysis_runs)
        .map(|r| (&r.name, &r.status));
    let scheduled_runs = run.scheduled_runs.iter().map(|r| (&r.name, &r.status));
    for (name, state) in canary_runs.chain(scheduled_runs) {
        for s in skycanary_runtime::report::metric_series(state, &run.info, None) {
            let entry = metrics
                .entry(s.name.clone())
                .or_insert_with(|| MetricSeries {
                    name: s.name.clone(),
                    conditions: s.conditions.clone(),
                    thresholds: s.thresholds.clone(),
                    points: Vec::new(),
                });
            entry.points.extend(s.points);
        }
        verdicts.extend(skycanary_runtime::report::verdicts_of_run(name, state));
    }
    if let Some(status) = &run.status
        && let Some(a) = &status.abort
    {
        verdicts.push(Verdict {
            at: a.at,
            run: "canary".into(),
            metric: a.metric.clone().unwrap_or_default(),
            // Aborted, or RolledBack after a promotion.
            phase: format!("{:?}", status.phase),
            value: a.value.clone(),
            reason: match (&a.alarm, &a.condition) {
                (Some(alarm), _) => format!("{}: alarm {alarm}", a.reason),
                (None, Some(c)) => format!("{}: {c}", a.reason),
                _ => a.reason.clone(),
            },
        });
    }
    for m in metrics.values_mut() {
        m.points.sort_by_key(|p| p.at);
    }
    verdicts.sort_by_key(|v| v.at);
    let style = Style { color: false };
    let events = run
        .happenings
        .iter()
        .filter(|(_, h)| !matches!(h, Happening::Measurement { .. }))
        .map(|(at, h)| Event {
            at: *at,
            kind: h.kind().to_string(),
            message: describe(h, &run.info, style)
                .split_once(char::is_whitespace)
                .map(|(_, rest)| rest.trim().to_string())
                .unwrap_or_default(),
            warning: h.warning(),
        })
        .collect();
    let name = run.spec.scenario.name();
    Section {
        title: format!(
            "{name}: reviews {} → {}",
            super::scenario::STABLE,
            run.spec.canary
        ),
        outcome: if run.outcome.ok {
            run.outcome.summary.clone()
        } else {
            format!(
                "{} — unexpected: {}",
                run.outcome.summary,
                run.outcome.problems.join("; ")
            )
        },
        tone: if !run.outcome.ok {
            Tone::Bad
        } else if run.status.as_ref().map(|s| s.phase)
            == Some(skycanary_runtime::canary::CanaryPhase::Promoted)
        {
            Tone::Good
        } else {
            Tone::Neutral
        },
        description: Some(format!(
            "{} Simulated {} min in {:.1} s.",
            run.spec.story,
            run.simulated.num_seconds() / 60,
            run.real.as_secs_f64()
        )),
        weights: weight_series(run),
        metrics: metrics.into_values().collect(),
        verdicts,
        events,
    }
}
