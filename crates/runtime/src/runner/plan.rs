//! Template + args → a runnable plan (pure): the template compiled with its args
//! ([`crate::resources::compile`]: analysis specs with compiled conditions, provider queries
//! with args substituted per context), its metrics' connections merged into one client per
//! distinct OAP connection. Every problem is reported with file, line and field, before
//! anything is measured; no file is read (a `caFile` is read when its client is built).

use std::collections::BTreeMap;

use crate::analysis::RunSpec;
use crate::provider::skywalking::{Auth, ClientOptions, MetricQuery};
use crate::resources::compile;
pub use crate::resources::compile::Defaults;
use crate::resources::{ConfigError, ConfigErrors, LoadedTemplate};

/// One metric's query and the client that runs it.
#[derive(Debug, Clone)]
pub struct PlannedMetric {
    /// What to ask.
    pub query: MetricQuery,
    /// Index into [`RunPlan::clients`].
    pub client: usize,
    /// Resolved args of the metric's template (bound as `args.*` in its conditions).
    pub args: BTreeMap<String, String>,
    /// `window.alignToStep` (default true): in a canary's analyses, the window starts after
    /// the last routing change.
    pub align_to_step: bool,
}

/// Everything needed to run one analysis.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Template name.
    pub name: String,
    /// The analysis (pure) side.
    pub spec: RunSpec,
    /// Queries, in the order of `spec.metrics`.
    pub metrics: Vec<PlannedMetric>,
    /// Distinct OAP connections.
    pub clients: Vec<ClientOptions>,
    /// Resolved args (template defaults overridden by given values).
    pub args: BTreeMap<String, String>,
}

/// Why an analysis cannot be planned. Returned to the driver before any run is spawned; the
/// driver records the run as an Error with this message ([`StartError::failed_run`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `templateName` that no loaded template answers.
    #[error("analysis template {0:?} not found")]
    TemplateNotFound(String),
    /// An arg given as `valueFrom.secretKeyRef`, which this version does not resolve.
    #[error("arg {0:?}: valueFrom.secretKeyRef is not resolved by this version; give `value`")]
    SecretArg(String),
    /// The templates do not compile with these args and defaults.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

/// Why an analysis run did not start: its plan, or its clients (an unreadable `caFile`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The analysis cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A client cannot be built from the plan's connection settings.
    #[error(transparent)]
    Connect(#[from] crate::provider::skywalking::ProviderError),
}

impl StartError {
    /// The run as its driver records it: an Error at `now` that says why, measured nothing.
    pub fn failed_run(&self, now: chrono::DateTime<chrono::Utc>) -> crate::analysis::RunState {
        let mut failed = crate::analysis::start_run(&RunSpec::default(), now);
        failed.phase = crate::analysis::Phase::Error;
        failed.message = Some(self.to_string());
        failed
    }
}

/// Builds one plan for several templates run together (a Canary's analysis): metrics are
/// merged in order, each keeps its template's args; `given` args may name args that only some
/// templates declare. Metric names must be unique across the templates.
pub fn plan_many(
    templates: &[&LoadedTemplate],
    given: &BTreeMap<String, String>,
    defaults: &Defaults,
) -> Result<RunPlan, ConfigErrors> {
    let mut errs = Vec::new();
    let mut merged: Option<RunPlan> = None;
    for t in templates {
        let own: BTreeMap<String, String> = given
            .iter()
            .filter(|(k, _)| t.doc.spec.args.iter().any(|a| &a.name == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match plan(t, &own, defaults) {
            Err(e) => errs.extend(e.0),
            Ok(p) => match &mut merged {
                None => merged = Some(p),
                Some(m) => {
                    for (ms, pm) in p.spec.metrics.into_iter().zip(p.metrics) {
                        if m.spec.metrics.iter().any(|x| x.name == ms.name) {
                            errs.push(t.origin.error(
                                "spec.metrics",
                                format!("two metrics have the same name {:?} across the templates of one analysis", ms.name),
                            ));
                            continue;
                        }
                        let opts = &p.clients[pm.client];
                        let key = client_key(opts);
                        let client = match m.clients.iter().position(|c| client_key(c) == key) {
                            Some(i) => i,
                            None => {
                                m.clients.push(opts.clone());
                                m.clients.len() - 1
                            }
                        };
                        m.spec.metrics.push(ms);
                        m.metrics.push(PlannedMetric { client, ..pm });
                    }
                    m.name = format!("{}+{}", m.name, p.name);
                }
            },
        }
    }
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    merged.ok_or_else(|| {
        ConfigErrors(vec![ConfigError {
            file: "<analysis>".into(),
            line: None,
            path: "templates".into(),
            message: "no templates".into(),
        }])
    })
}

/// Builds the plan for `t` with `given` args: compiles it and gives metrics with the same
/// connection settings one client.
pub fn plan(
    t: &LoadedTemplate,
    given: &BTreeMap<String, String>,
    defaults: &Defaults,
) -> Result<RunPlan, ConfigErrors> {
    let compiled = compile::compile(&t.doc, &t.origin, given, defaults)?;
    // Sized up front: a plan lives as long as its run, one per canary.
    let mut metrics = Vec::with_capacity(compiled.metrics.len());
    let mut planned = Vec::with_capacity(compiled.metrics.len());
    let mut clients: Vec<(String, ClientOptions)> = Vec::with_capacity(1);
    for m in compiled.metrics {
        let key = client_key(&m.connection);
        let client = match clients.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                clients.push((key, m.connection));
                clients.len() - 1
            }
        };
        planned.push(PlannedMetric {
            args: compiled.args.clone(),
            query: m.query,
            client,
            align_to_step: m.align_to_step,
        });
        metrics.push(m.spec);
    }
    Ok(RunPlan {
        name: compiled.name,
        spec: RunSpec { metrics },
        metrics: planned,
        clients: clients.into_iter().map(|(_, c)| c).collect(),
        args: compiled.args,
    })
}

/// Metrics share a client (and so a batched request) only when every connection setting matches.
fn client_key(o: &ClientOptions) -> String {
    let auth = match &o.auth {
        None => String::new(),
        Some(Auth::Basic { user, pass }) => format!("basic:{user}:{pass}"),
        Some(Auth::Bearer(t)) => format!("bearer:{t}"),
    };
    format!(
        "{}|{:?}|{auth}|{:?}|{:?}|{:?}",
        o.address, o.timeout, o.headers, o.ca_pem, o.ca_file
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn template(window: &str) -> crate::resources::LoadResult {
        let src = format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: apdex}}\nspec:\n  metrics:\n  - name: apdex\n    successCondition: \"min(result) >= 9900\"\n    provider:\n      skywalking:\n        address: http://oap:12800\n        metric: service_apdex\n        entity: {{serviceName: s}}\n{window}"
        );
        crate::resources::load::load_str("t.yaml", &src)
    }

    fn planned(window: &str) -> (Duration, bool) {
        let r = template(window);
        assert!(r.errors.is_empty(), "{window}: {:?}", r.errors);
        let p = plan(&r.templates[0], &BTreeMap::new(), &Defaults::default()).expect("plan");
        (p.metrics[0].query.window, p.metrics[0].align_to_step)
    }

    #[test]
    fn window_is_a_duration_or_an_object_and_aligned_unless_opted_out() {
        let m = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(planned("        window: 3m\n"), (m(3), true));
        assert_eq!(planned(""), (m(5), true));
        assert_eq!(planned("        window: {duration: 3m}\n"), (m(3), true));
        assert_eq!(
            planned("        window: {duration: 3m, alignToStep: true}\n"),
            (m(3), true)
        );
        assert_eq!(
            planned("        window: {duration: 3m, alignToStep: false}\n"),
            (m(3), false)
        );
        // The object may only opt out; the span then comes from Argo's `interval`.
        assert_eq!(
            planned("        window: {alignToStep: false}\n        interval: 2m\n"),
            (m(2), false)
        );
        assert_eq!(
            planned("        window: {alignToStep: false}\n"),
            (m(5), false)
        );
    }

    #[test]
    fn window_mistakes_name_the_field() {
        let errs = |w: &str| template(w).errors;
        let e = errs("        window: {duration: 5 minutes}\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].path.ends_with("skywalking.window.duration"), "{e:?}");
        assert_eq!(e[0].line, Some(13), "{e:?}");
        let e = errs("        window: {alignTo: false}\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("unknown field `alignTo`"), "{e:?}");
        let e = errs("        window: 300\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("a duration such as 5m"), "{e:?}");
        let e = errs("        window: {duration: 3m}\n        interval: 2m\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("set only one"), "{e:?}");
    }
}
