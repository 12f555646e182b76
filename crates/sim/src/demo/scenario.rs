//! The demo's scenarios as plain data: the Canary each one deploys, how each version of
//! Bookinfo's `reviews` behaves, the alarm rule OAP would evaluate, and the expected outcome.
//!
//! Adding a scenario is additive: a variant in [`Scenario`] (and in [`Scenario::ALL`]) and an
//! arm in [`Scenario::spec`] — its config documents (any kind the daemon loads from
//! `--config`, e.g. a ScheduledAnalysis), its versions' behaviour and its [`Expectation`].
//! The runner, narration, report and summary need no change.

use std::collections::BTreeMap;

use crate::sim::blend::{BlendMetric, VersionBehaviour, VersionValues, Weights};
use skycanary_runtime::canary::{AbortStatus, CanaryPhase, CanaryStatus};

/// Namespace and name of the demo's Canary, VirtualService and DestinationRule.
pub const NAMESPACE: &str = "bookinfo";
/// The Canary's and the VirtualService's name.
pub const NAME: &str = "reviews";
/// The route carrying the split.
pub const ROUTE: &str = "primary";
/// SkyWalking service name of `reviews` (OAP 10 mesh naming: name.namespace).
pub const SERVICE: &str = "reviews.bookinfo";
/// Stable subset.
pub const STABLE: &str = "v1";
/// Calls per minute to `reviews`.
pub const TOTAL_CPM: f64 = 120.0;

/// The bundled Bookinfo template (deploy/examples/bookinfo/apdex.yaml), used as it is.
pub const APDEX_TEMPLATE: &str = include_str!("../../../../deploy/examples/bookinfo/apdex.yaml");
/// Bookinfo's `reviews` VirtualService and DestinationRule (subsets v1, v2, v3), as shipped.
pub const ISTIO_MANIFESTS: &str =
    include_str!("../../../../deploy/examples/bookinfo/istio/reviews.yaml");

/// A demo scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// v2 is promoted 10 → 30 → 60 → 100 % on healthy apdex.
    Healthy,
    /// v3 degrades under load: its apdex drops at 30 %; the analysis rolls it back to v1.
    Regression,
    /// v2 fails requests; OAP's SLA alarm reaches the webhook; rollback at once.
    Alarm,
    /// v2 is promoted, then saturates carrying all the calls: a cron analysis of production
    /// (a ScheduledAnalysis) fails and rolls the promoted canary back.
    Scheduled,
    /// v2's pods become ready only after three minutes: the canary waits, Paused with reason
    /// CanaryNotReady and no traffic, then is promoted on healthy apdex.
    LateReady,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: &'static [Scenario] = &[
        Scenario::Healthy,
        Scenario::Regression,
        Scenario::Alarm,
        Scenario::Scheduled,
        Scenario::LateReady,
    ];

    /// Its name on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::Regression => "regression",
            Scenario::Alarm => "alarm",
            Scenario::Scheduled => "scheduled",
            Scenario::LateReady => "late-ready",
        }
    }

    /// What it deploys and expects.
    pub fn spec(self) -> ScenarioSpec {
        let healthy = VersionBehaviour::steady(VersionValues::HEALTHY);
        match self {
            Scenario::Healthy => ScenarioSpec {
                scenario: self,
                canary: "v2",
                story: "v2 is as good as v1: every apdex measurement passes, and the canary is promoted 10 → 30 → 60 → 100 %.",
                config: vec![canary_yaml("v2", &analysis_steps())],
                versions: BTreeMap::from([
                    (STABLE.to_string(), healthy),
                    (
                        "v2".to_string(),
                        VersionBehaviour::steady(VersionValues {
                            apdex: 9960.0,
                            sla: 9995.0,
                            resp_time_ms: 70.0,
                        }),
                    ),
                ]),
                alarm: None,
                workload: None,
                expect: Expectation {
                    phase: CanaryPhase::Promoted,
                    cause: None,
                    weights: vec![(STABLE, 0), ("v2", 100)],
                },
            },
            Scenario::Regression => ScenarioSpec {
                scenario: self,
                canary: "v3",
                story: "v3 is fine with a little traffic but saturates above 20 % of the calls: at 30 % the service's apdex drops below 0.99, the step analysis fails, and the canary is rolled back to v1.",
                config: vec![canary_yaml("v3", &analysis_steps())],
                versions: BTreeMap::from([
                    (STABLE.to_string(), healthy),
                    (
                        "v3".to_string(),
                        VersionBehaviour::steady(VersionValues {
                            apdex: 9940.0,
                            sla: 9990.0,
                            resp_time_ms: 95.0,
                        })
                        .overloaded_above(
                            0.2,
                            VersionValues {
                                apdex: 7200.0,
                                sla: 9900.0,
                                resp_time_ms: 1400.0,
                            },
                        ),
                    ),
                ]),
                alarm: None,
                workload: None,
                expect: Expectation {
                    phase: CanaryPhase::Aborted,
                    cause: Some(AbortCause::Analysis),
                    weights: vec![(STABLE, 100), ("v3", 0)],
                },
            },
            Scenario::Alarm => ScenarioSpec {
                scenario: self,
                canary: "v2",
                story: "v2 answers 5 % of its requests with errors. Its apdex is fine, but at 30 % the service's SLA drops below 99 %: OAP's alarm rule fires, its webhook reaches skycanary, and the canary is rolled back while the webhook request is handled.",
                config: vec![canary_yaml("v2", &alarm_steps())],
                versions: BTreeMap::from([
                    (STABLE.to_string(), healthy),
                    (
                        "v2".to_string(),
                        VersionBehaviour::steady(VersionValues {
                            apdex: 9930.0,
                            sla: 9500.0,
                            resp_time_ms: 75.0,
                        }),
                    ),
                ]),
                workload: None,
                alarm: Some(AlarmRule {
                    name: "service_sla_rule",
                    metric: BlendMetric::Sla,
                    below: 9900.0,
                    message: "Successful rate of service reviews.bookinfo is lower than 99% in the last minute",
                }),
                expect: Expectation {
                    phase: CanaryPhase::Aborted,
                    cause: Some(AbortCause::Alarm),
                    weights: vec![(STABLE, 100), ("v2", 0)],
                },
            },
            Scenario::Scheduled => ScenarioSpec {
                scenario: self,
                canary: "v2",
                story: "v2 is healthy with up to 90 % of the calls, and the release promotes it after an analysis at 50 %. Carrying all of them it saturates: the cron analysis of production (a ScheduledAnalysis every 30 s) sees the service's apdex drop below 0.99 and rolls the promoted canary back to v1.",
                config: vec![
                    canary_yaml("v2", &scheduled_steps()),
                    PRODUCTION_TEMPLATE.to_string(),
                    SCHEDULED_ANALYSIS.to_string(),
                ],
                versions: BTreeMap::from([
                    (STABLE.to_string(), healthy),
                    (
                        "v2".to_string(),
                        VersionBehaviour::steady(VersionValues {
                            apdex: 9950.0,
                            sla: 9995.0,
                            resp_time_ms: 72.0,
                        })
                        .overloaded_above(
                            0.9,
                            VersionValues {
                                apdex: 7600.0,
                                sla: 9950.0,
                                resp_time_ms: 1200.0,
                            },
                        ),
                    ),
                ]),
                alarm: None,
                workload: None,
                expect: Expectation {
                    phase: CanaryPhase::RolledBack,
                    cause: Some(AbortCause::Scheduled),
                    weights: vec![(STABLE, 100), ("v2", 0)],
                },
            },
            Scenario::LateReady => ScenarioSpec {
                scenario: self,
                canary: "v2",
                story: "v2's Deployment is rolled out but its pods take three minutes to become ready. The canary names it in workloadRef: it waits, Paused with reason CanaryNotReady and no traffic to v2, until the Deployment's manifest reports ready replicas, then v2 is promoted 10 → 30 → 60 → 100 %.",
                config: vec![canary_yaml("v2", &analysis_steps()).replace(
                    "  steps:\n",
                    "  workloadRef: {kind: Deployment, name: reviews-v2}\n  readiness: {progressDeadline: 30m}\n  steps:\n",
                )],
                versions: BTreeMap::from([
                    (STABLE.to_string(), healthy),
                    (
                        "v2".to_string(),
                        VersionBehaviour::steady(VersionValues {
                            apdex: 9960.0,
                            sla: 9995.0,
                            resp_time_ms: 70.0,
                        }),
                    ),
                ]),
                alarm: None,
                workload: Some(LateWorkload {
                    name: "reviews-v2",
                    replicas: 2,
                    ready_after: chrono::Duration::minutes(3),
                }),
                expect: Expectation {
                    phase: CanaryPhase::Promoted,
                    cause: None,
                    weights: vec![(STABLE, 0), ("v2", 100)],
                },
            },
        }
    }
}

/// The canary's Deployment, written to the manifests directory (file mode reads readiness
/// there): no ready replica until `ready_after` (simulated), then all of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LateWorkload {
    /// Deployment name (the Canary's `workloadRef`).
    pub name: &'static str,
    /// `spec.replicas`.
    pub replicas: i64,
    /// When its pods become ready, from the scenario's start.
    pub ready_after: chrono::Duration,
}

impl LateWorkload {
    /// Its manifest with `ready` ready replicas.
    pub fn manifest(&self, ready: i64) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {}, namespace: {NAMESPACE}}}\n\
             spec: {{replicas: {}}}\nstatus: {{replicas: {}, readyReplicas: {ready}}}\n",
            self.name, self.replicas, self.replicas
        )
    }
}

/// Everything one scenario deploys and expects.
#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    /// The scenario these settings belong to.
    pub scenario: Scenario,
    /// The canary's subset.
    pub canary: &'static str,
    /// What it shows, in a sentence or three.
    pub story: &'static str,
    /// YAML documents written to the daemon's `--config` directory (besides the template).
    pub config: Vec<String>,
    /// How each version behaves (the simulator blends them by the routed weights).
    pub versions: BTreeMap<String, VersionBehaviour>,
    /// An OAP alarm rule the demo evaluates, posting the webhook when it fires.
    pub alarm: Option<AlarmRule>,
    /// The canary's Deployment, ready late (its manifest is edited when it becomes ready).
    pub workload: Option<LateWorkload>,
    /// What must happen.
    pub expect: Expectation,
}

/// An OAP alarm rule: fires when the service's metric of the last complete minute is below
/// a threshold (no data never fires, as in OAP).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlarmRule {
    /// Rule name (matched by the Canary's `rollbackOn.alarms`).
    pub name: &'static str,
    /// The blended metric the alarm watches.
    pub metric: BlendMetric,
    /// The alarm fires while the metric is below this.
    pub below: f64,
    /// Rendered message.
    pub message: &'static str,
}

impl AlarmRule {
    /// Whether a minute's value breaches the rule.
    pub fn fires(&self, value: Option<f64>) -> bool {
        value.is_some_and(|v| v.is_finite() && v < self.below)
    }
}

/// Why a canary is expected to be rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    /// A failed analysis of the canary's (the abort names a metric).
    Analysis,
    /// An alarm (the abort names it).
    Alarm,
    /// A failed run of a ScheduledAnalysis (the abort names the ScheduledAnalysis and the
    /// failing metric).
    Scheduled,
}

/// The expected end of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Final phase.
    pub phase: CanaryPhase,
    /// For aborts: what must have caused it.
    pub cause: Option<AbortCause>,
    /// Final weights of the route, per subset.
    pub weights: Vec<(&'static str, i64)>,
}

impl ScenarioSpec {
    /// The Bookinfo manifests as shipped, with the VirtualService's zero-weight `v2`
    /// destination pointing at this scenario's canary subset (the router adds weight to the
    /// canary's destination; it never invents one next to another version's).
    pub fn manifests(&self) -> String {
        if self.canary == "v2" {
            return ISTIO_MANIFESTS.to_string();
        }
        ISTIO_MANIFESTS.replace(
            "        subset: v2\n      weight: 0",
            &format!("        subset: {}\n      weight: 0", self.canary),
        )
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// It ended as expected.
    pub ok: bool,
    /// `Promoted (v2 at 100 %)`, `Aborted by analysis: …`.
    pub summary: String,
    /// What was wrong, when not ok.
    pub problems: Vec<String>,
}

fn weight_text(w: &Weights, order: &[(&str, i64)]) -> String {
    let mut names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
    for k in w.keys() {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    names
        .iter()
        .map(|n| format!("{n} {} %", fmt_weight(w.get(*n).copied().unwrap_or(0.0))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_weight(v: f64) -> String {
    skycanary_runtime::analysis::fmt_num(v)
}

/// Judges how a scenario ended from the canary's final status and the weights read from
/// the VirtualService file (pure).
pub fn judge_outcome(
    spec: &ScenarioSpec,
    status: Option<&CanaryStatus>,
    weights: Option<&Weights>,
    timed_out: bool,
) -> Outcome {
    let mut problems = Vec::new();
    let canary = spec.canary;
    let phase = status.map(|s| s.phase);
    let summary = match (status, weights) {
        (None, _) => {
            problems.push("the daemon never reported the canary".to_string());
            "no status".to_string()
        }
        (Some(s), w) => {
            let empty = Weights::new();
            let w = w.unwrap_or(&empty);
            let canary_w = fmt_weight(w.get(canary).copied().unwrap_or(0.0));
            match s.phase {
                CanaryPhase::Promoted => format!("Promoted ({canary} at {canary_w} %)"),
                CanaryPhase::Aborted | CanaryPhase::RolledBack => {
                    format!(
                        "{:?} ({}; {})",
                        s.phase,
                        abort_text(s.abort.as_ref()),
                        weight_text(w, &spec.expect.weights)
                    )
                }
                other => format!("{other:?} ({})", weight_text(w, &spec.expect.weights)),
            }
        }
    };
    if timed_out {
        problems.push("did not finish in time".to_string());
    }
    if let Some(p) = phase
        && p != spec.expect.phase
    {
        problems.push(format!("ended {p:?}, expected {:?}", spec.expect.phase));
    }
    if let (Some(cause), Some(s)) = (spec.expect.cause, status)
        && matches!(s.phase, CanaryPhase::Aborted | CanaryPhase::RolledBack)
    {
        let abort = s.abort.as_ref();
        let right = match cause {
            AbortCause::Analysis => {
                abort.is_some_and(|a| a.metric.is_some() && a.alarm.is_none() && !scheduled(a))
            }
            AbortCause::Alarm => abort.is_some_and(|a| a.alarm.is_some()),
            AbortCause::Scheduled => {
                abort.is_some_and(|a| a.metric.is_some() && a.alarm.is_none() && scheduled(a))
            }
        };
        if !right {
            problems.push(format!(
                "aborted for the wrong reason ({}), expected {cause:?}",
                abort_text(abort)
            ));
        }
    }
    match weights {
        None => problems.push("the VirtualService could not be read".to_string()),
        Some(w) => {
            for (subset, want) in &spec.expect.weights {
                let got = w.get(*subset).copied().unwrap_or(0.0);
                if got != *want as f64 {
                    problems.push(format!(
                        "{subset} carries {} %, expected {want} %",
                        fmt_weight(got)
                    ));
                }
            }
        }
    }
    Outcome {
        ok: problems.is_empty(),
        summary,
        problems,
    }
}

/// The abort was decided by a ScheduledAnalysis.
fn scheduled(a: &AbortStatus) -> bool {
    super::observe::scheduled_by(a).is_some()
}

fn abort_text(a: Option<&AbortStatus>) -> String {
    let Some(a) = a else {
        return "no reason recorded".to_string();
    };
    if let Some(alarm) = &a.alarm {
        return format!("alarm {alarm}");
    }
    let what = match (&a.metric, &a.value, &a.condition) {
        (Some(m), Some(v), Some(c)) => format!("{m} = {v} failed {c}"),
        (Some(m), _, _) => format!("metric {m}: {}", a.reason),
        _ => return a.reason.clone(),
    };
    // A scheduled rollback names its ScheduledAnalysis first.
    match super::observe::scheduled_by(a) {
        Some(scheduled) => format!("ScheduledAnalysis {scheduled}: {what}"),
        None => what,
    }
}

/// 10 % → pause → analysis → 30 % → analysis → 60 % → analysis → promoted (100 %).
fn analysis_steps() -> String {
    let analysis = "  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}\n";
    format!(
        "  - setWeight: 10\n  - pause: {{duration: 1m}}\n{analysis}  - setWeight: 30\n{analysis}  - setWeight: 60\n{analysis}"
    )
}

/// Like [`analysis_steps`] but a long pause at 30 %: the alarm, not an analysis, decides.
fn alarm_steps() -> String {
    let analysis = "  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}\n";
    format!(
        "  - setWeight: 10\n  - pause: {{duration: 1m}}\n{analysis}  - setWeight: 30\n  - pause: {{duration: 4m}}\n  - setWeight: 60\n{analysis}"
    )
}

/// 20 % → pause → 50 % → analysis → promoted (100 %): a short release.
fn scheduled_steps() -> String {
    "  - setWeight: 20\n  - pause: {duration: 30s}\n  - setWeight: 50\n  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}\n".to_string()
}

/// A production check of one measurement: the service's apdex over the last 3 minutes.
pub const PRODUCTION_TEMPLATE: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: production-apdex
  namespace: bookinfo
spec:
  args:
  - name: service
  - name: min-apdex
    value: "9900"
  metrics:
  - name: apdex
    count: 1
    successCondition: "min(result) >= args.min_apdex"
    provider:
      skywalking:
        window: 3m
        metric: service_apdex
        entity: {scope: Service, serviceName: "{{args.service}}"}
"#;

/// The cron analysis of production: every 30 s (seconds field), roll `reviews` back on a
/// failed check.
pub const SCHEDULED_ANALYSIS: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata:
  name: production-apdex
  namespace: bookinfo
spec:
  schedule: "*/30 * * * * *"
  concurrencyPolicy: Forbid
  templates: [{templateName: production-apdex}]
  args: [{name: service, value: reviews.bookinfo}]
  onFailure:
    rollback: {canary: reviews}
  historyLimit: {successful: 3, failed: 3}
"#;

/// The Canary of Bookinfo's `reviews` (subset split, as in deploy/examples/bookinfo) for
/// `canary` with `steps`.
fn canary_yaml(canary: &str, steps: &str) -> String {
    format!(
        r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
spec:
  revision: {canary}
  trafficRouting:
    maxTrafficWeight: 100
    istio:
      virtualService:
        name: {NAME}
        routes: [{ROUTE}]
      destinationRule:
        name: {NAME}
        stableSubsetName: {STABLE}
        canarySubsetName: {canary}
  steps:
{steps}  rollbackOn:
    alarms: [{{ruleName: "service_(apdex|sla|resp_time)_rule", name: "^reviews\\.bookinfo$"}}]
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use skycanary_runtime::resources::load_str;

    #[test]
    fn every_scenario_loads_without_errors() {
        for s in Scenario::ALL {
            let spec = s.spec();
            let mut docs = spec.config.clone();
            docs.push(APDEX_TEMPLATE.to_string());
            let loaded = load_str("demo.yaml", &docs.join("\n---\n"));
            assert!(
                loaded.errors.is_empty(),
                "{}: {:?}",
                s.name(),
                loaded.errors
            );
            assert_eq!(loaded.canaries.len(), 1);
            assert!(
                loaded
                    .templates
                    .iter()
                    .any(|t| t.doc.metadata.name == "apdex")
            );
            let scheduled = usize::from(*s == Scenario::Scheduled);
            assert_eq!(loaded.scheduled.len(), scheduled, "{}", s.name());
            assert!(spec.versions.contains_key(STABLE));
            assert!(spec.versions.contains_key(spec.canary));
            // The route holds the canary's subset at weight 0.
            let manifests = spec.manifests();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("reviews.yaml"), &manifests).unwrap();
            let store =
                skycanary_runtime::traffic::file::FileManifestStore::open(dir.path()).unwrap();
            let w = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(
                    super::super::weights::VirtualServiceWeights::new(
                        store, NAMESPACE, NAME, ROUTE,
                    )
                    .read(),
                )
                .unwrap();
            assert_eq!(w.get(spec.canary), Some(&0.0), "{}: {manifests}", s.name());
            assert_eq!(w.get(STABLE), Some(&100.0));
        }
    }

    #[test]
    fn the_alarm_rule_never_fires_on_no_data() {
        let rule = Scenario::Alarm.spec().alarm.unwrap();
        assert!(!rule.fires(None));
        assert!(!rule.fires(Some(f64::NAN)));
        assert!(!rule.fires(Some(9941.0)));
        assert!(rule.fires(Some(9843.0)));
    }

    fn status(phase: CanaryPhase, abort: Option<AbortStatus>) -> CanaryStatus {
        CanaryStatus {
            phase,
            abort,
            ..Default::default()
        }
    }

    fn w(pairs: &[(&str, f64)]) -> Weights {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn abort(metric: Option<&str>, alarm: Option<&str>) -> AbortStatus {
        AbortStatus {
            not_ready: None,
            reason: "analysis failed".into(),
            metric: metric.map(str::to_string),
            value: Some("[9950, 9120]".into()),
            condition: Some("min(result) >= 9900".into()),
            alarm: alarm.map(str::to_string),
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn outcomes_are_judged_on_phase_cause_and_weights() {
        let healthy = Scenario::Healthy.spec();
        let o = judge_outcome(
            &healthy,
            Some(&status(CanaryPhase::Promoted, None)),
            Some(&w(&[("v1", 0.0), ("v2", 100.0)])),
            false,
        );
        assert!(o.ok, "{o:?}");
        assert_eq!(o.summary, "Promoted (v2 at 100 %)");

        // Promoted in status but the file says otherwise: not ok.
        let o = judge_outcome(
            &healthy,
            Some(&status(CanaryPhase::Promoted, None)),
            Some(&w(&[("v1", 40.0), ("v2", 60.0)])),
            false,
        );
        assert!(!o.ok);
        assert!(
            o.problems.iter().any(|p| p.contains("v2 carries 60 %")),
            "{o:?}"
        );

        let regression = Scenario::Regression.spec();
        let back = w(&[("v1", 100.0), ("v2", 0.0), ("v3", 0.0)]);
        let o = judge_outcome(
            &regression,
            Some(&status(
                CanaryPhase::Aborted,
                Some(abort(Some("apdex"), None)),
            )),
            Some(&back),
            false,
        );
        assert!(o.ok, "{o:?}");
        assert!(
            o.summary.starts_with(
                "Aborted (apdex = [9950, 9120] failed min(result) >= 9900; v1 100 %, v3 0 %"
            ),
            "{}",
            o.summary
        );

        // Aborted by an alarm where the analysis was expected: wrong reason.
        let o = judge_outcome(
            &regression,
            Some(&status(
                CanaryPhase::Aborted,
                Some(abort(None, Some("service_sla_rule"))),
            )),
            Some(&back),
            false,
        );
        assert!(!o.ok);

        let alarm = Scenario::Alarm.spec();
        let o = judge_outcome(
            &alarm,
            Some(&status(
                CanaryPhase::Aborted,
                Some(abort(None, Some("service_sla_rule: x"))),
            )),
            Some(&w(&[("v1", 100.0), ("v2", 0.0)])),
            false,
        );
        assert!(o.ok, "{o:?}");

        // A scheduled rollback of the promoted canary: RolledBack, named by its
        // ScheduledAnalysis, back at v1.
        let scheduled = Scenario::Scheduled.spec();
        let sched_abort = AbortStatus {
            reason: "ScheduledAnalysis bookinfo/production-apdex run production-apdex-1740823230 ended Failed: metric apdex value [9950, 9120]".into(),
            ..abort(Some("apdex"), None)
        };
        let back = w(&[("v1", 100.0), ("v2", 0.0)]);
        let o = judge_outcome(
            &scheduled,
            Some(&status(CanaryPhase::RolledBack, Some(sched_abort.clone()))),
            Some(&back),
            false,
        );
        assert!(o.ok, "{o:?}");
        assert_eq!(
            o.summary,
            "RolledBack (ScheduledAnalysis bookinfo/production-apdex: apdex = [9950, 9120] failed min(result) >= 9900; v1 100 %, v2 0 %)"
        );
        // The same weights reached by the canary's own analysis, or still promoted: not ok.
        let o = judge_outcome(
            &scheduled,
            Some(&status(
                CanaryPhase::Aborted,
                Some(abort(Some("apdex"), None)),
            )),
            Some(&back),
            false,
        );
        assert!(!o.ok);
        assert!(
            o.problems.iter().any(|p| p.contains("wrong reason")),
            "{o:?}"
        );
        assert!(o.problems.iter().any(|p| p.contains("expected RolledBack")));
        let o = judge_outcome(
            &scheduled,
            Some(&status(CanaryPhase::Promoted, None)),
            Some(&w(&[("v1", 0.0), ("v2", 100.0)])),
            false,
        );
        assert!(!o.ok);
        assert!(o.problems.iter().any(|p| p.contains("v1 carries 0 %")));
        // A scheduled rollback where a step analysis was expected: wrong reason.
        let o = judge_outcome(
            &regression,
            Some(&status(CanaryPhase::Aborted, Some(sched_abort))),
            Some(&w(&[("v1", 100.0), ("v3", 0.0)])),
            false,
        );
        assert!(!o.ok, "{o:?}");

        // Promoted when an abort was expected; timeouts; no status; unreadable file.
        let o = judge_outcome(
            &alarm,
            Some(&status(CanaryPhase::Promoted, None)),
            Some(&w(&[("v1", 0.0), ("v2", 100.0)])),
            false,
        );
        assert!(!o.ok);
        let o = judge_outcome(
            &healthy,
            Some(&status(CanaryPhase::Progressing, None)),
            Some(&w(&[("v1", 70.0), ("v2", 30.0)])),
            true,
        );
        assert!(!o.ok);
        assert!(o.problems.iter().any(|p| p.contains("in time")));
        assert!(!judge_outcome(&healthy, None, None, false).ok);
        assert!(
            !judge_outcome(
                &healthy,
                Some(&status(CanaryPhase::Promoted, None)),
                None,
                false
            )
            .ok
        );
    }
}
