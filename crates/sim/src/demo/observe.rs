//! What happened, from successive canary statuses and the weight history (pure): the demo's
//! narration and the report's events are both made of these.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::sim::blend::{WeightHistory, Weights};
use skycanary_runtime::analysis::Phase;
use skycanary_runtime::canary::{CanaryPhase, CanaryStatus};
use skycanary_runtime::resources::canary::CanaryStep;
use skycanary_runtime::schedule::{ActionKind, ActionOutcome, ScheduleSummary, ScheduledRun};

/// Something worth a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// The VirtualService's weights changed.
    Weights(Weights),
    /// The canary started a step.
    Step {
        /// The step's index (0-based, as in the status).
        index: u32,
        /// Number of steps.
        total: usize,
        /// `setWeight 30`, `pause 1m`, `analysis apdex`.
        what: String,
    },
    /// A measurement finished.
    Measurement {
        /// Analysis run.
        run: String,
        /// The metric measured.
        metric: String,
        /// 1-based number within the metric.
        number: usize,
        /// Its verdict.
        phase: Phase,
        /// Measured value(s).
        value: Option<String>,
        /// The judge's explanation.
        message: String,
    },
    /// An analysis run finished.
    RunDone {
        /// The analysis run it belongs to.
        run: String,
        /// Its phase.
        phase: Phase,
        /// Why, when the status says.
        message: Option<String>,
    },
    /// The canary's phase changed.
    Phase {
        /// New phase.
        phase: CanaryPhase,
        /// Reason (abort evidence, pause reason, message).
        detail: String,
    },
    /// The demo (playing OAP's alarm module) posted an alarm.
    AlarmSent {
        /// The alarm rule that fired.
        rule: String,
        /// The metric's value that breached it.
        value: f64,
        /// The threshold the metric fell below.
        below: f64,
    },
    /// The daemon answered the alarm webhook.
    AlarmAnswered {
        /// Its answer.
        answer: String,
        /// Request → answer (the rollback is written before it answers).
        latency: Duration,
    },
    /// A run of a ScheduledAnalysis finished.
    ScheduledRun {
        /// The ScheduledAnalysis.
        schedule: String,
        /// The run.
        run: String,
        /// Its verdict.
        phase: Phase,
        /// Per metric, the deciding measurement: (metric, value).
        values: Vec<(String, Option<String>)>,
        /// The run's message.
        message: Option<String>,
        /// The actions taken on its result: `rollback bookinfo/reviews: canary is RolledBack`.
        actions: Vec<String>,
    },
}

impl Happening {
    /// A Kubernetes-Event-like kind for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Happening::Weights(_) => "TrafficWeightUpdated",
            Happening::Step { .. } => "RolloutStepStarted",
            Happening::Measurement { .. } => "Measurement",
            Happening::RunDone { .. } => "AnalysisRunCompleted",
            Happening::Phase { .. } => "CanaryPhaseChanged",
            Happening::AlarmSent { .. } => "AlarmSent",
            Happening::AlarmAnswered { .. } => "AlarmHandled",
            Happening::ScheduledRun { .. } => "ScheduledAnalysisRun",
        }
    }

    /// Shown as a warning.
    pub fn warning(&self) -> bool {
        match self {
            Happening::Measurement { phase, .. }
            | Happening::RunDone { phase, .. }
            | Happening::ScheduledRun { phase, .. } => *phase != Phase::Successful,
            Happening::Phase { phase, .. } => matches!(
                phase,
                CanaryPhase::Aborted | CanaryPhase::RolledBack | CanaryPhase::Degraded
            ),
            Happening::AlarmSent { .. } => true,
            _ => false,
        }
    }
}

/// `setWeight 30`, `pause 1m`, `analysis apdex`.
pub fn describe_step(step: &CanaryStep) -> String {
    match step {
        CanaryStep::SetWeight(w) => format!("setWeight {w}"),
        CanaryStep::Pause(p) => match &p.duration {
            Some(d) => format!("pause {}", int_or_string(d)),
            None => "pause (until promoted)".to_string(),
        },
        CanaryStep::Analysis(a) => format!(
            "analysis {}",
            a.templates
                .iter()
                .map(|t| t.template_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        CanaryStep::SetHeaderRoute(h) => format!("setHeaderRoute {}", h.name),
        CanaryStep::SetMirrorRoute(m) => format!("setMirrorRoute {}", m.name),
    }
}

fn int_or_string(v: &skycanary_runtime::resources::IntOrString) -> String {
    match v {
        skycanary_runtime::resources::IntOrString::Int(i) => format!("{i}s"),
        skycanary_runtime::resources::IntOrString::String(s) => s.clone(),
    }
}

/// Turns statuses and weight histories into happenings, each reported once.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<CanaryStatus>,
    measurements: BTreeSet<(String, String, DateTime<Utc>)>,
    runs_done: BTreeSet<String>,
    weight_changes: usize,
    scheduled_done: BTreeSet<(String, String)>,
}

impl Observer {
    /// What changed since the previous status, each with the (daemon's) time it happened;
    /// `now` stands in where the status records none.
    pub fn status(
        &mut self,
        s: &CanaryStatus,
        steps: &[CanaryStep],
        now: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Happening)> {
        let mut out = Vec::new();
        let prev = self.last.take();
        for run in &s.analysis_runs {
            for mr in &run.status.metric_results {
                for (i, m) in mr.measurements.iter().enumerate() {
                    if !m.phase.is_completed() {
                        continue;
                    }
                    let key = (run.name.clone(), mr.name.clone(), m.started_at);
                    if self.measurements.insert(key) {
                        let trimmed = (mr.count + mr.error) as usize;
                        let number = trimmed.saturating_sub(mr.measurements.len()) + i + 1;
                        let at = m.finished_at.unwrap_or(m.started_at);
                        out.push((
                            at,
                            Happening::Measurement {
                                run: run.name.clone(),
                                metric: mr.name.clone(),
                                number,
                                phase: m.phase,
                                value: m.value.clone(),
                                message: m.message.clone().unwrap_or_default(),
                            },
                        ));
                    }
                }
            }
            if run.status.phase.is_completed() && self.runs_done.insert(run.name.clone()) {
                let at = run.status.completed_at.unwrap_or(now);
                out.push((
                    at,
                    Happening::RunDone {
                        run: run.name.clone(),
                        phase: run.status.phase,
                        message: run.status.message.clone(),
                    },
                ));
            }
        }
        // Steps after the measurements that ended the previous one; steps that came and went
        // between two statuses are reported too.
        let step_changed = prev.as_ref().is_none_or(|p| {
            p.current_step_index != s.current_step_index || p.step_started_at != s.step_started_at
        });
        if step_changed && s.phase != CanaryPhase::Pending {
            let from = match &prev {
                Some(p) if p.current_step_index < s.current_step_index => p.current_step_index + 1,
                Some(_) => s.current_step_index,
                None => 0,
            };
            for index in from..=s.current_step_index {
                if let Some(step) = steps.get(index as usize) {
                    let at = s.step_started_at.unwrap_or(now);
                    out.push((
                        at,
                        Happening::Step {
                            index,
                            total: steps.len(),
                            what: describe_step(step),
                        },
                    ));
                }
            }
        }
        let phase_changed = prev.as_ref().is_none_or(|p| {
            p.phase != s.phase
                || p.pause.as_ref().map(|x| x.reason) != s.pause.as_ref().map(|x| x.reason)
        });
        if phase_changed && s.phase != CanaryPhase::Pending {
            let at = match s.phase {
                CanaryPhase::Aborted | CanaryPhase::RolledBack => s.abort.as_ref().map(|a| a.at),
                CanaryPhase::Promoted => s.promoted_at,
                CanaryPhase::Paused => s.pause.as_ref().map(|p| p.since),
                _ => None,
            };
            out.push((
                at.unwrap_or(now),
                Happening::Phase {
                    phase: s.phase,
                    detail: phase_detail(s),
                },
            ));
        }
        self.last = Some(s.clone());
        out
    }

    /// Runs of scheduled analyses that finished since the last call, each once, at the time
    /// it finished (`now` where none is recorded). A run is reported once it is in the
    /// history: its actions (the rollback, awaited by the scheduler) are recorded by then.
    pub fn scheduled(
        &mut self,
        schedules: &[ScheduleSummary],
        now: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Happening)> {
        let mut out = Vec::new();
        for sched in schedules {
            // History is newest first: report the oldest first.
            for run in sched.status.history.iter().rev() {
                if !self
                    .scheduled_done
                    .insert((sched.name.clone(), run.name.clone()))
                {
                    continue;
                }
                out.push((
                    run.status.completed_at.unwrap_or(now),
                    scheduled_happening(&sched.name, run),
                ));
            }
        }
        out
    }

    /// Weight changes not reported yet, with the (virtual) time they were seen.
    pub fn weights(&mut self, history: &WeightHistory) -> Vec<(DateTime<Utc>, Happening)> {
        let changes = history.changes();
        let new: Vec<_> = changes
            .iter()
            .skip(self.weight_changes)
            .map(|(t, w)| (*t, Happening::Weights(w.clone())))
            .collect();
        self.weight_changes = changes.len();
        new
    }
}

/// A finished scheduled run as a happening: per metric the measurement that decided (the
/// last one of the metric's verdict), and its actions.
pub fn scheduled_happening(schedule: &str, run: &ScheduledRun) -> Happening {
    let values = run
        .status
        .metric_results
        .iter()
        .map(|mr| {
            let deciding = mr
                .measurements
                .iter()
                .rev()
                .find(|m| m.phase == mr.phase)
                .or_else(|| mr.measurements.last());
            (mr.name.clone(), deciding.and_then(|m| m.value.clone()))
        })
        .collect();
    let actions = run
        .actions
        .iter()
        .map(|a| {
            let kind = match a.kind {
                ActionKind::Rollback => "rollback",
                ActionKind::Webhook => "webhook",
            };
            let detail = match (a.outcome, &a.message) {
                (ActionOutcome::Succeeded, Some(m)) => m.clone(),
                (o, Some(m)) => format!("{o:?}: {m}"),
                (o, None) => format!("{o:?}"),
            };
            format!("{kind} {}: {detail}", a.target)
        })
        .collect();
    Happening::ScheduledRun {
        schedule: schedule.to_string(),
        run: run.name.clone(),
        phase: run.status.phase,
        values,
        message: run.status.message.clone(),
        actions,
    }
}

/// The ScheduledAnalysis (`ns/name`) that decided an abort, from its reason
/// (`schedule::policy::rollback_abort`).
pub fn scheduled_by(a: &skycanary_runtime::canary::AbortStatus) -> Option<&str> {
    a.reason
        .strip_prefix(skycanary_runtime::schedule::policy::ROLLBACK_REASON_PREFIX)
        .and_then(|rest| rest.split_whitespace().next())
}

/// Why the canary is in its phase.
pub fn phase_detail(s: &CanaryStatus) -> String {
    match s.phase {
        CanaryPhase::Aborted | CanaryPhase::RolledBack => match &s.abort {
            Some(a) => match (&a.alarm, &a.metric) {
                (Some(alarm), _) => format!("rolled back on alarm {alarm}"),
                (None, Some(m)) => format!(
                    "rolled back{}: {m} = {} failed {}",
                    scheduled_by(a)
                        .map(|s| format!(" by ScheduledAnalysis {s}"))
                        .unwrap_or_default(),
                    a.value.as_deref().unwrap_or("?"),
                    a.condition.as_deref().unwrap_or(&a.reason)
                ),
                _ => format!("rolled back: {}", a.reason),
            },
            None => "rolled back".to_string(),
        },
        CanaryPhase::Paused => match &s.pause {
            Some(p) if p.reason == skycanary_runtime::canary::PauseReason::Step => match p.until {
                Some(u) => format!("pause step until {}", u.format("%H:%M:%S")),
                None => "pause step: waiting for promote".to_string(),
            },
            Some(p) => format!(
                "paused ({:?}){}",
                p.reason,
                p.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            None => "paused".to_string(),
        },
        CanaryPhase::Promoted | CanaryPhase::Degraded | CanaryPhase::Invalid => {
            s.message.clone().unwrap_or_default()
        }
        // The message of a running canary is often about the step it just left.
        CanaryPhase::Progressing | CanaryPhase::Pending => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use skycanary_runtime::analysis::{Measurement, MetricResult, RunState};
    use skycanary_runtime::canary::{AbortStatus, AnalysisRunKind, AnalysisRunStatus};
    use skycanary_runtime::schedule::ActionRecord;

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, s)
            .single()
            .unwrap_or_default()
    }

    fn steps() -> Vec<CanaryStep> {
        let docs = crate::demo::scenario::Scenario::Healthy.spec().config;
        let loaded = skycanary_runtime::resources::load_str("c.yaml", &docs[0]);
        loaded.canaries[0].doc.spec.steps.clone()
    }

    fn run(phase: Phase, measurements: Vec<Measurement>) -> AnalysisRunStatus {
        AnalysisRunStatus {
            name: "reviews-v2-step2".into(),
            kind: AnalysisRunKind::Step { index: 2 },
            templates: vec!["apdex".into()],
            status: RunState {
                phase,
                message: Some("done".into()),
                metric_results: vec![MetricResult {
                    name: "apdex".into(),
                    phase,
                    count: measurements.len() as u32,
                    measurements: measurements.into_iter().map(Into::into).collect(),
                    message: None,
                    successful: 0,
                    failed: 0,
                    inconclusive: 0,
                    error: 0,
                    consecutive_error: 0,
                    consecutive_success: 0,
                    dry_run: false,
                }],
                started_at: t(0),
                completed_at: None,
                terminated: false,
                terminate_reason: None,
            },
        }
    }

    fn m(phase: Phase, s: u32) -> Measurement {
        Measurement {
            phase,
            value: Some("[9950]".into()),
            message: Some("ok".into()),
            started_at: t(s),
            finished_at: Some(t(s)),
            metadata: Default::default(),
            evidence: None,
        }
    }

    #[test]
    fn steps_measurements_and_phases_are_reported_once() {
        let steps = steps();
        let mut o = Observer::default();
        let mut s = CanaryStatus {
            phase: CanaryPhase::Progressing,
            current_step_index: 0,
            step_started_at: Some(t(0)),
            ..Default::default()
        };
        let h: Vec<Happening> = o
            .status(&s, &steps, t(59))
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(
            h,
            vec![
                Happening::Step {
                    index: 0,
                    total: 7,
                    what: "setWeight 10".into()
                },
                Happening::Phase {
                    phase: CanaryPhase::Progressing,
                    detail: String::new()
                }
            ]
        );
        assert!(o.status(&s, &steps, t(59)).is_empty());
        s.current_step_index = 2;
        s.step_started_at = Some(t(5));
        s.analysis_runs = vec![run(Phase::Running, vec![m(Phase::Successful, 6)])];
        let h: Vec<Happening> = o
            .status(&s, &steps, t(59))
            .into_iter()
            .map(|x| x.1)
            .collect();
        // The measurement first; then every step since the last status, the skipped one too.
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(matches!(
            &h[0],
            Happening::Measurement {
                number: 1,
                phase: Phase::Successful,
                ..
            }
        ));
        assert!(matches!(&h[1], Happening::Step { index: 1, what, .. } if what == "pause 1m"));
        assert!(
            matches!(&h[2], Happening::Step { index: 2, what, .. } if what == "analysis apdex")
        );
        s.analysis_runs = vec![run(
            Phase::Failed,
            vec![m(Phase::Successful, 6), m(Phase::Failed, 7)],
        )];
        s.phase = CanaryPhase::Aborted;
        s.abort = Some(AbortStatus {
            not_ready: None,
            reason: "analysis failed".into(),
            metric: Some("apdex".into()),
            value: Some("[9120]".into()),
            condition: Some("min(result) >= 9900".into()),
            alarm: None,
            at: t(8),
        });
        let timed = o.status(&s, &steps, t(59));
        // Times come from the status: the measurement's end, the abort.
        assert_eq!(
            timed.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![t(7), t(59), t(8)]
        );
        let h: Vec<Happening> = timed.into_iter().map(|x| x.1).collect();
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(matches!(
            &h[0],
            Happening::Measurement {
                number: 2,
                phase: Phase::Failed,
                ..
            }
        ));
        assert!(matches!(
            &h[1],
            Happening::RunDone {
                phase: Phase::Failed,
                ..
            }
        ));
        assert_eq!(
            h[2],
            Happening::Phase {
                phase: CanaryPhase::Aborted,
                detail: "rolled back: apdex = [9120] failed min(result) >= 9900".into()
            }
        );
        assert!(h.iter().all(Happening::warning));
        assert!(o.status(&s, &steps, t(59)).is_empty());
    }

    fn sched_run(name: &str, phase: Phase, s: u32, actions: Vec<ActionRecord>) -> ScheduledRun {
        let mut status = run(phase, vec![m(Phase::Successful, s), m(phase, s + 1)]).status;
        status.completed_at = Some(t(s + 1));
        ScheduledRun {
            name: name.into(),
            trigger: skycanary_runtime::schedule::RunTrigger::Schedule,
            scheduled_time: Some(t(s)),
            status,
            actions,
        }
    }

    fn summary(active: Vec<ScheduledRun>, history: Vec<ScheduledRun>) -> ScheduleSummary {
        ScheduleSummary {
            namespace: "bookinfo".into(),
            name: "production-apdex".into(),
            schedule: "*/30 * * * * *".into(),
            time_zone: "UTC".into(),
            concurrency_policy: skycanary_runtime::resources::scheduled::ConcurrencyPolicy::Forbid,
            suspend: false,
            templates: vec!["production-apdex".into()],
            status: skycanary_runtime::schedule::ScheduledAnalysisStatus {
                active,
                history,
                ..Default::default()
            },
        }
    }

    #[test]
    fn finished_scheduled_runs_are_reported_once_with_values_and_actions() {
        let mut o = Observer::default();
        let going = sched_run("p-30", Phase::Running, 30, vec![]);
        let ok = sched_run("p-0", Phase::Successful, 0, vec![]);
        // Runs under way are not reported; finished ones oldest first.
        let h = o.scheduled(&[summary(vec![going], vec![ok.clone()])], t(59));
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0, t(1));
        assert!(!h[0].1.warning());
        let rollback = ActionRecord {
            kind: ActionKind::Rollback,
            target: "bookinfo/reviews".into(),
            outcome: ActionOutcome::Succeeded,
            message: Some("canary is RolledBack".into()),
            attempts: 0,
            at: t(32),
        };
        let webhook = ActionRecord {
            kind: ActionKind::Webhook,
            target: "http://127.0.0.1:9/hook".into(),
            outcome: ActionOutcome::Failed,
            message: Some("connection refused".into()),
            attempts: 4,
            at: t(40),
        };
        let failed = sched_run("p-30", Phase::Failed, 30, vec![rollback, webhook]);
        let h = o.scheduled(&[summary(vec![], vec![failed, ok])], t(59));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].0, t(31));
        assert!(h[0].1.warning());
        assert_eq!(h[0].1.kind(), "ScheduledAnalysisRun");
        assert_eq!(
            h[0].1,
            Happening::ScheduledRun {
                schedule: "production-apdex".into(),
                run: "p-30".into(),
                phase: Phase::Failed,
                values: vec![("apdex".into(), Some("[9950]".into()))],
                message: Some("done".into()),
                actions: vec![
                    "rollback bookinfo/reviews: canary is RolledBack".into(),
                    "webhook http://127.0.0.1:9/hook: Failed: connection refused".into()
                ],
            }
        );
        assert!(o.scheduled(&[summary(vec![], vec![])], t(59)).is_empty());
    }

    #[test]
    fn a_scheduled_rollback_names_its_scheduled_analysis() {
        let s = CanaryStatus {
            phase: CanaryPhase::RolledBack,
            abort: Some(AbortStatus {
                not_ready: None,
                reason: "ScheduledAnalysis bookinfo/production-apdex run p-30 ended Failed: metric apdex".into(),
                metric: Some("apdex".into()),
                value: Some("[8120]".into()),
                condition: Some("min(result) >= 9900".into()),
                alarm: None,
                at: t(8),
            }),
            ..Default::default()
        };
        assert_eq!(
            phase_detail(&s),
            "rolled back by ScheduledAnalysis bookinfo/production-apdex: apdex = [8120] failed min(result) >= 9900"
        );
        let mut o = Observer::default();
        let h = o.status(&s, &steps(), t(59));
        // The phase change is dated by the abort.
        assert!(h.iter().any(|(at, x)| *at == t(8)
            && matches!(
                x,
                Happening::Phase {
                    phase: CanaryPhase::RolledBack,
                    ..
                }
            )
            && x.warning()));
    }

    #[test]
    fn weight_changes_are_reported_once() {
        let mut h = WeightHistory::default();
        let mut o = Observer::default();
        h.record(t(0), Weights::from([("v1".into(), 100.0)]));
        assert_eq!(o.weights(&h).len(), 1);
        assert!(o.weights(&h).is_empty());
        h.record(
            t(3),
            Weights::from([("v1".into(), 90.0), ("v2".into(), 10.0)]),
        );
        let new = o.weights(&h);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].0, t(3));
    }

    #[test]
    fn steps_are_described() {
        let d: Vec<String> = steps().iter().map(describe_step).collect();
        assert_eq!(
            d,
            vec![
                "setWeight 10",
                "pause 1m",
                "analysis apdex",
                "setWeight 30",
                "analysis apdex",
                "setWeight 60",
                "analysis apdex"
            ]
        );
    }
}
