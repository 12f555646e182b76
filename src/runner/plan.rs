//! Template + args → a runnable plan (pure): analysis specs with compiled conditions, provider
//! queries with args substituted per context, and one client per distinct OAP connection.
//! Every problem is reported with file, line and field, before anything is measured.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::analysis::{self, Condition, MetricSpec, NoDataPolicy, RunSpec};
use crate::provider::skywalking::{
    Auth, ClientOptions, EntitySpec, MetricQuery, QueryKind, Scope, Step,
};
use crate::resources::args::{ArgContext, substitute};
use crate::resources::duration::parse_duration;
use crate::resources::load::raw_query_aliases;
use crate::resources::yaml::{child_path, index_path};
use crate::resources::{
    ConfigError, ConfigErrors, IntOrString, LoadedTemplate, NoData, ScopeDef, StepDef,
};

/// Settings that templates may leave out.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// OAP address used when a template has none (`--skywalking`).
    pub skywalking: Option<String>,
    /// OAP timezone override (skips `getTimeInfo`).
    pub timezone: Option<chrono::FixedOffset>,
}

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

/// Builds the plan for `t` with `given` args.
pub fn plan(
    t: &LoadedTemplate,
    given: &BTreeMap<String, String>,
    defaults: &Defaults,
) -> Result<RunPlan, ConfigErrors> {
    let o = &t.origin;
    let spec = &t.doc.spec;
    let language = t.doc.condition_language();
    let mut errs: Vec<ConfigError> = Vec::new();

    // Args: declared defaults, overridden by given values; every one must end with a value.
    let mut args = BTreeMap::new();
    for (name, _) in given
        .iter()
        .filter(|(n, _)| !spec.args.iter().any(|a| &a.name == *n))
    {
        errs.push(o.error(
            "spec.args",
            format!("--arg {name}: the template declares no arg {name:?}"),
        ));
    }
    for (i, a) in spec.args.iter().enumerate() {
        let value = given.get(&a.name).cloned().or_else(|| a.value.clone());
        match value {
            Some(v) if v.chars().any(char::is_control) => errs.push(o.error(
                &index_path("spec.args", i),
                format!("args.{}: control characters are not allowed in values", a.name),
            )),
            Some(v) => {
                args.insert(a.name.clone(), v);
            }
            None if a.value_from.is_some() => errs.push(o.error(
                &index_path("spec.args", i),
                format!("args.{}: valueFrom.secretKeyRef is resolved in cluster mode only; pass --arg {}=...", a.name, a.name),
            )),
            None => errs.push(o.error(
                &index_path("spec.args", i),
                format!("args.{} was not resolved: no default and no --arg {}=...", a.name, a.name),
            )),
        }
    }
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }

    // Sized up front: a plan lives as long as its run, one per canary.
    let mut metrics = Vec::with_capacity(spec.metrics.len());
    let mut planned = Vec::with_capacity(spec.metrics.len());
    let mut clients: Vec<(String, ClientOptions)> = Vec::with_capacity(1);
    for (i, m) in spec.metrics.iter().enumerate() {
        let p = index_path("spec.metrics", i);
        let f = |name: &str| child_path(&p, name);
        let mut err = |path: String, msg: String| errs.push(o.error(&path, msg));

        let int = |v: &Option<IntOrString>,
                   field: &str,
                   default: i64,
                   err: &mut dyn FnMut(String, String)|
         -> i64 {
            match v {
                None => default,
                Some(IntOrString::Int(i)) => *i,
                Some(IntOrString::String(s)) => match substitute(s, &args, ArgContext::Plain)
                    .map_err(|e| e.to_string())
                    .and_then(|s| {
                        s.trim()
                            .parse::<i64>()
                            .map_err(|_| format!("{s:?} is not an integer"))
                    }) {
                    Ok(i) => i,
                    Err(e) => {
                        err(f(field), e);
                        default
                    }
                },
            }
        };
        let dur = |v: &Option<String>,
                   field: &str,
                   err: &mut dyn FnMut(String, String)|
         -> Option<Duration> {
            v.as_ref().and_then(|s| match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    err(f(field), e);
                    None
                }
            })
        };

        let mut ms = MetricSpec::new(m.name.clone());
        ms.interval = dur(&m.interval, "interval", &mut err);
        ms.initial_delay = dur(&m.initial_delay, "initialDelay", &mut err);
        if let Some(d) = dur(&m.error_retry_interval, "errorRetryInterval", &mut err) {
            ms.error_retry_interval = d;
        }
        let count = int(&m.count, "count", 0, &mut err);
        ms.count = (count > 0).then_some(count.clamp(0, u32::MAX as i64) as u32);
        ms.failure_limit =
            int(&m.failure_limit, "failureLimit", 0, &mut err).clamp(-1, i32::MAX as i64) as i32;
        ms.inconclusive_limit = int(&m.inconclusive_limit, "inconclusiveLimit", 0, &mut err)
            .clamp(0, i32::MAX as i64) as i32;
        ms.consecutive_error_limit = int(
            &m.consecutive_error_limit,
            "consecutiveErrorLimit",
            analysis::DEFAULT_CONSECUTIVE_ERROR_LIMIT as i64,
            &mut err,
        )
        .clamp(0, i32::MAX as i64) as i32;
        ms.consecutive_success_limit = int(
            &m.consecutive_success_limit,
            "consecutiveSuccessLimit",
            0,
            &mut err,
        )
        .clamp(0, i32::MAX as i64) as i32;
        ms.no_data = match m.no_data.unwrap_or_default() {
            NoData::Inconclusive => NoDataPolicy::Inconclusive,
            NoData::Failed => NoDataPolicy::Failed,
            NoData::Successful => NoDataPolicy::Successful,
            NoData::Error => NoDataPolicy::Error,
        };
        ms.dry_run = spec
            .dry_run
            .iter()
            .any(|r| regex::Regex::new(&r.metric_name).is_ok_and(|re| re.is_match(&m.name)));
        ms.retention_limit = retention_limit(&spec.measurement_retention, &m.name);

        // Provider.
        let Some(sw) = &m.provider.skywalking else {
            err(f("provider"), "no provider specified".into());
            continue;
        };
        let sp = child_path(&f("provider"), "skywalking");
        let g = |name: &str| child_path(&sp, name);
        let plain = |text: &str, path: String, err: &mut dyn FnMut(String, String)| -> String {
            substitute(text, &args, ArgContext::Plain).unwrap_or_else(|e| {
                err(path, e.to_string());
                String::new()
            })
        };
        let window = dur(
            &sw.window_duration(),
            &format!("provider.skywalking.{}", sw.window_field()),
            &mut err,
        )
        .unwrap_or(Duration::from_secs(300));
        let step = match sw.step.unwrap_or_default() {
            StepDef::Second => Step::Second,
            StepDef::Minute => Step::Minute,
            StepDef::Hour => Step::Hour,
            StepDef::Day => Step::Day,
        };
        let mut aliases: Vec<String> = Vec::new();
        let kind = if let Some(metric) = &sw.metric {
            QueryKind::Metric(plain(metric, g("metric"), &mut err))
        } else if let Some(e) = &sw.expression {
            match substitute(e, &args, ArgContext::Mqe) {
                Ok(s) => QueryKind::Expression(s),
                Err(e) => {
                    err(g("expression"), e.to_string());
                    continue;
                }
            }
        } else if let Some(q) = &sw.query {
            match substitute(q, &args, ArgContext::GraphQl) {
                Ok(s) => {
                    match raw_query_aliases(&s) {
                        Ok(a) => aliases = a,
                        Err(e) => err(g("query"), e),
                    }
                    QueryKind::Raw { query: s }
                }
                Err(e) => {
                    err(g("query"), e.to_string());
                    continue;
                }
            }
        } else {
            err(
                sp.clone(),
                "set exactly one of metric, expression or query".into(),
            );
            continue;
        };
        let entity = sw.entity.as_ref().map(|e| {
            let ep = g("entity");
            let opt = |v: &Option<String>, name: &str, err: &mut dyn FnMut(String, String)| {
                v.as_ref().map(|s| plain(s, child_path(&ep, name), err))
            };
            EntitySpec {
                scope: match e.scope {
                    ScopeDef::Service => Scope::Service,
                    ScopeDef::ServiceInstance => Scope::ServiceInstance,
                    ScopeDef::Endpoint => Scope::Endpoint,
                },
                service_name: opt(&e.service_name, "serviceName", &mut err).unwrap_or_default(),
                normal: e.normal.unwrap_or(true),
                service_instance_name: opt(
                    &e.service_instance_name,
                    "serviceInstanceName",
                    &mut err,
                ),
                endpoint_name: opt(&e.endpoint_name, "endpointName", &mut err),
                instance_pattern: sw.instances.as_ref().and_then(|inst| {
                    let ip = child_path(&g("instances"), "namePattern");
                    let pat = plain(&inst.name_pattern, ip.clone(), &mut err);
                    match regex::Regex::new(&pat) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            err(ip, format!("invalid regex: {e}"));
                            None
                        }
                    }
                }),
            }
        });

        // Conditions: compiled with this query's aliases.
        let alias_refs: Vec<&str> = aliases.iter().map(String::as_str).collect();
        let compile = |src: &Option<String>,
                       field: &str,
                       err: &mut dyn FnMut(String, String)|
         -> Option<Condition> {
            src.as_ref()
                .and_then(|s| match Condition::compile_as(language, s, &alias_refs) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        err(f(field), format!("condition does not compile: {e}"));
                        None
                    }
                })
        };
        ms.success_condition = compile(&m.success_condition, "successCondition", &mut err);
        ms.failure_condition = compile(&m.failure_condition, "failureCondition", &mut err);
        for problem in analysis::validate_metric(&ms) {
            err(p.clone(), problem);
        }

        // Connection.
        let address = match (&sw.address, &defaults.skywalking) {
            (Some(a), _) => match substitute(a, &args, ArgContext::Address) {
                Ok(a) => a,
                Err(e) => {
                    err(g("address"), e.to_string());
                    continue;
                }
            },
            (None, Some(d)) => d.clone(),
            (None, None) => {
                err(
                    g("address"),
                    "no OAP address: set provider.skywalking.address or pass --skywalking URL"
                        .into(),
                );
                continue;
            }
        };
        let mut opts = ClientOptions::new(address.trim_end_matches('/').to_string());
        opts.timezone = defaults.timezone;
        if let Some(t) = dur(&sw.timeout, "provider.skywalking.timeout", &mut err) {
            opts.timeout = t;
        }
        if let Some(a) = &sw.auth {
            opts.auth = match (&a.basic, &a.bearer) {
                (Some(b), None) => Some(Auth::Basic {
                    user: plain(&b.username, g("auth.basic.username"), &mut err),
                    pass: plain(&b.password, g("auth.basic.password"), &mut err),
                }),
                (None, Some(t)) => Some(Auth::Bearer(plain(t, g("auth.bearer"), &mut err))),
                _ => {
                    err(g("auth"), "set exactly one of basic or bearer".into());
                    None
                }
            };
        }
        for (hi, h) in sw.headers.iter().enumerate() {
            let v = plain(
                &h.value,
                child_path(&index_path(&g("headers"), hi), "value"),
                &mut err,
            );
            opts.headers.push((h.name.clone(), v));
        }
        if let Some(ca) = &sw.ca_file {
            match std::fs::read(ca) {
                Ok(pem) => opts.ca_pem = Some(pem),
                Err(e) => err(g("caFile"), format!("cannot read {ca}: {e}")),
            }
        }
        let key = client_key(&opts);
        let client = match clients.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                clients.push((key, opts));
                clients.len() - 1
            }
        };
        planned.push(PlannedMetric {
            args: args.clone(),
            query: MetricQuery {
                key: m.name.clone(),
                kind,
                entity,
                window,
                step,
                not_before: None,
            },
            client,
            align_to_step: sw.align_to_step(),
        });
        metrics.push(ms);
    }
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    Ok(RunPlan {
        name: t.doc.metadata.name.clone(),
        spec: RunSpec { metrics },
        metrics: planned,
        clients: clients.into_iter().map(|(_, c)| c).collect(),
        args,
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
        "{}|{:?}|{auth}|{:?}|{:?}",
        o.address, o.timeout, o.headers, o.ca_pem
    )
}

/// Measurements kept for metric `name`, as Argo's `garbageCollectMeasurements`: the last
/// matching rule wins, and its limit 0 means the default (10).
fn retention_limit(rules: &[crate::resources::RetentionRule], name: &str) -> usize {
    rules
        .iter()
        .rev()
        .find(|r| regex::Regex::new(&r.metric_name).is_ok_and(|re| re.is_match(name)))
        .and_then(|r| usize::try_from(r.limit).ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(analysis::DEFAULT_RETENTION_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RetentionRule;

    fn rule(metric_name: &str, limit: u32) -> RetentionRule {
        RetentionRule {
            metric_name: metric_name.into(),
            limit,
        }
    }

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

    #[test]
    fn retention_limit_zero_is_the_default_and_the_last_matching_rule_wins() {
        assert_eq!(retention_limit(&[], "apdex"), 10);
        assert_eq!(retention_limit(&[rule("apdex", 0)], "apdex"), 10);
        assert_eq!(retention_limit(&[rule("apdex", 3)], "apdex"), 3);
        assert_eq!(retention_limit(&[rule("sla", 3)], "apdex"), 10);
        // Argo fills its map rule by rule, so a later match overrides an earlier one.
        assert_eq!(
            retention_limit(&[rule(".*", 20), rule("apd", 5)], "apdex"),
            5
        );
        assert_eq!(
            retention_limit(&[rule("apd", 5), rule(".*", 0)], "apdex"),
            10
        );
    }
}
