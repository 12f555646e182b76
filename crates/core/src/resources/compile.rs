//! The template compiler: one pure pass from an analysis template (with its args and the
//! settings it may leave out) to a typed plan — durations parsed, limits checked, one-ofs
//! resolved, the provider query chosen and conditions compiled — or every problem, each with
//! file, line and field path.
//!
//! Validation and planning are the same pass: `skycanary validate` compiles with args known
//! only at run time ([`validate`]; fields that use one are checked as far as they can be
//! without its value, and the result is dropped); a run compiles with the real args
//! ([`compile`]) and keeps the result. No file is read here: `caFile` stays a path, read
//! where the client is built (and checked once when the files are loaded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::args::{self, ArgContext};
use super::duration::parse_duration;
use super::error::{ConfigError, ConfigErrors, Origin};
use super::load::raw_query_aliases;
use super::template::*;
use super::yaml::{child_path, index_path};
use crate::analysis::{self, Condition, ConditionLanguage, MetricSpec, NoDataPolicy};
use crate::skywalking::{Auth, ClientOptions, EntitySpec, MetricQuery, QueryKind, Scope, Step};

/// Settings that templates may leave out.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// OAP address used when a template has none (`--skywalking`).
    pub skywalking: Option<String>,
    /// OAP timezone override (skips `getTimeInfo`).
    pub timezone: Option<chrono::FixedOffset>,
}

/// A template compiled with its args: what one analysis of it runs.
#[derive(Debug, Clone)]
pub struct CompiledTemplate {
    /// `metadata.name`.
    pub name: String,
    /// Resolved args (template defaults overridden by given values).
    pub args: BTreeMap<String, String>,
    /// The metrics, in the template's order.
    pub metrics: Vec<CompiledMetric>,
}

/// One metric, ready to measure and judge.
#[derive(Debug, Clone)]
pub struct CompiledMetric {
    /// The analysis (pure) side: limits, timing, compiled conditions.
    pub spec: MetricSpec,
    /// What to ask the OAP.
    pub query: MetricQuery,
    /// How to reach the OAP; `ca_file` is a path the client reads when it is built.
    pub connection: ClientOptions,
    /// `window.alignToStep` (default true): in a canary's analyses, the window starts after
    /// the last routing change.
    pub align_to_step: bool,
}

/// Every problem of `t`'s spec, with args known only at run time (each is a placeholder).
/// The metadata is checked by the loader ([`super::load::validate_template`]).
pub fn validate(t: &AnalysisTemplateDoc, o: &Origin) -> Vec<ConfigError> {
    let declared = declared_args(&t.spec);
    let placeholders = declared
        .iter()
        .map(|n| (n.clone(), "x".to_string()))
        .collect();
    let mut c = Compiler {
        o,
        declared,
        values: placeholders,
        planning: None,
        errs: Vec::new(),
    };
    c.template(t);
    c.errs
}

/// Compiles `t` with `given` args (over the template's defaults) and `defaults`.
pub fn compile(
    t: &AnalysisTemplateDoc,
    o: &Origin,
    given: &BTreeMap<String, String>,
    defaults: &Defaults,
) -> Result<CompiledTemplate, ConfigErrors> {
    let args = resolve_args(&t.spec, o, given)?;
    let mut c = Compiler {
        o,
        declared: declared_args(&t.spec),
        values: args,
        planning: Some(defaults),
        errs: Vec::new(),
    };
    let metrics = c.template(t);
    if !c.errs.is_empty() {
        return Err(ConfigErrors(c.errs));
    }
    Ok(CompiledTemplate {
        name: t.metadata.name.clone(),
        args: c.values,
        metrics,
    })
}

fn declared_args(spec: &AnalysisTemplateSpec) -> BTreeSet<String> {
    spec.args
        .iter()
        .filter(|a| !a.name.is_empty())
        .map(|a| a.name.clone())
        .collect()
}

/// Declared defaults overridden by `given`; every arg must end with a value.
fn resolve_args(
    spec: &AnalysisTemplateSpec,
    o: &Origin,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigErrors> {
    let mut errs = Vec::new();
    let mut args = BTreeMap::new();
    for name in given
        .keys()
        .filter(|n| !spec.args.iter().any(|a| &a.name == *n))
    {
        errs.push(o.error(
            "spec.args",
            format!("--arg {name}: the template declares no arg {name:?}"),
        ));
    }
    for (i, a) in spec.args.iter().enumerate() {
        let p = index_path("spec.args", i);
        match given.get(&a.name).or(a.value.as_ref()) {
            Some(v) if v.chars().any(char::is_control) => errs.push(o.error(
                &p,
                format!("args.{}: control characters are not allowed in values", a.name),
            )),
            Some(v) => {
                args.insert(a.name.clone(), v.clone());
            }
            None if a.value_from.is_some() => errs.push(o.error(
                &p,
                format!("args.{}: valueFrom.secretKeyRef is resolved in cluster mode only; pass --arg {}=...", a.name, a.name),
            )),
            None => errs.push(o.error(
                &p,
                format!("args.{} was not resolved: no default and no --arg {}=...", a.name, a.name),
            )),
        }
    }
    if errs.is_empty() {
        Ok(args)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// A field's text with args substituted.
struct Text {
    value: String,
    /// False when the text used an arg known only at run time (validation): `value` holds a
    /// placeholder then, and checks of the value itself wait for the run.
    known: bool,
}

struct Compiler<'a> {
    o: &'a Origin,
    declared: BTreeSet<String>,
    /// Arg values: the real ones when planning, placeholders when validating.
    values: BTreeMap<String, String>,
    /// The defaults when planning; `None` when validating (the OAP address may come at run
    /// time from `--skywalking`).
    planning: Option<&'a Defaults>,
    errs: Vec<ConfigError>,
}

impl Compiler<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errs.push(self.o.error(path, message));
    }

    fn template(&mut self, t: &AnalysisTemplateDoc) -> Vec<CompiledMetric> {
        let spec = &t.spec;
        for (i, a) in spec.args.iter().enumerate() {
            let p = index_path("spec.args", i);
            if a.name.is_empty() {
                self.err(&child_path(&p, "name"), "missing arg name");
            } else if spec.args[..i].iter().any(|b| b.name == a.name) {
                self.err(
                    &child_path(&p, "name"),
                    format!("duplicate arg {:?}", a.name),
                );
            }
            if a.value.is_some() && a.value_from.is_some() {
                self.err(&p, "set either value or valueFrom, not both");
            }
        }
        if spec.metrics.is_empty() {
            self.err("spec.metrics", "no metrics specified");
        }
        let argo = t.api_version == ARGO_API_VERSION;
        let language = t.condition_language();
        let mut names = BTreeSet::new();
        let mut metrics = Vec::with_capacity(spec.metrics.len());
        for (i, m) in spec.metrics.iter().enumerate() {
            let p = index_path("spec.metrics", i);
            if m.name.is_empty() {
                self.err(&child_path(&p, "name"), "missing metric name");
            } else if !names.insert(m.name.clone()) {
                self.err(
                    &child_path(&p, "name"),
                    format!("duplicate name '{}'", m.name),
                );
            }
            if let Some(mut c) = self.metric(m, &p, argo, language) {
                c.spec.dry_run = spec.dry_run.iter().any(|r| {
                    regex::Regex::new(&r.metric_name).is_ok_and(|re| re.is_match(&m.name))
                });
                c.spec.retention_limit = retention_limit(&spec.measurement_retention, &m.name);
                metrics.push(c);
            }
        }
        for (i, r) in spec.dry_run.iter().enumerate() {
            self.name_rule(&r.metric_name, &index_path("spec.dryRun", i), &names);
        }
        // limit 0 (or absent in Argo's Go struct) means the default, 10, as Argo documents.
        for (i, r) in spec.measurement_retention.iter().enumerate() {
            let p = index_path("spec.measurementRetention", i);
            self.name_rule(&r.metric_name, &p, &names);
        }
        metrics
    }

    fn name_rule(&mut self, rule: &str, p: &str, names: &BTreeSet<String>) {
        let fp = child_path(p, "metricName");
        match regex::Regex::new(rule) {
            Ok(re) => {
                if !names.iter().any(|n| re.is_match(n)) {
                    self.err(&fp, format!("rule {rule:?} didn't match any metric name"));
                }
            }
            Err(e) => self.err(&fp, format!("invalid regex: {e}")),
        }
    }

    /// `text` with its args substituted for `ctx`; `None` (with the problem recorded) when
    /// it names an undeclared arg, uses another template or a value unsafe there.
    fn text(&mut self, text: &str, path: &str, ctx: ArgContext) -> Option<Text> {
        let before = self.errs.len();
        let referenced = args::referenced_args(text);
        for a in &referenced {
            if !self.declared.contains(a) {
                self.err(
                    path,
                    format!(
                        "{{{{args.{a}}}}} refers to an undeclared arg (declare it under spec.args)"
                    ),
                );
            }
        }
        for t in args::unsupported_templates(text) {
            self.err(
                path,
                format!("unsupported template {t}: only {{{{args.NAME}}}} is supported"),
            );
        }
        if self.errs.len() > before {
            return None;
        }
        match args::substitute(text, &self.values, ctx) {
            Ok(value) => Some(Text {
                value,
                known: self.planning.is_some() || referenced.is_empty(),
            }),
            Err(e) => {
                self.err(path, e.to_string());
                None
            }
        }
    }

    /// A plain text field: its value when planning (empty after a problem, which fails the
    /// compile anyway).
    fn plain(&mut self, text: &str, path: &str) -> String {
        self.text(text, path, ArgContext::Plain)
            .map(|t| t.value)
            .unwrap_or_default()
    }

    fn duration(&mut self, v: &Option<String>, path: &str) -> Option<Duration> {
        let s = v.as_ref()?;
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    /// A duration that must be greater than zero.
    fn positive(&mut self, v: &Option<String>, path: &str) -> Option<Duration> {
        let d = self.duration(v, path)?;
        if d.is_zero() {
            self.err(path, "must be greater than 0");
            return None;
        }
        Some(d)
    }

    /// An integer field; below `min` it is refused with `below_min` (Argo's wording) and the
    /// value. `None` when absent, wrong, or known only at run time.
    fn int(
        &mut self,
        v: &Option<IntOrString>,
        path: &str,
        min: i64,
        below_min: &str,
    ) -> Option<i64> {
        let i = match v.as_ref()? {
            IntOrString::Int(i) => *i,
            IntOrString::String(s) => {
                let t = self.text(s, path, ArgContext::Plain)?;
                if !t.known {
                    return None;
                }
                match t.value.trim().parse::<i64>() {
                    Ok(i) => i,
                    Err(_) => {
                        self.err(path, format!("{:?} is not an integer", t.value));
                        return None;
                    }
                }
            }
        };
        if i < min {
            self.err(path, format!("{below_min}, got {i}"));
        }
        Some(i)
    }

    fn metric(
        &mut self,
        m: &MetricDef,
        p: &str,
        argo: bool,
        language: ConditionLanguage,
    ) -> Option<CompiledMetric> {
        let f = |name: &str| child_path(p, name);
        let before = self.errs.len();
        let mut ms = MetricSpec::new(m.name.clone());
        ms.interval = self.positive(&m.interval, &f("interval"));
        ms.initial_delay = self.duration(&m.initial_delay, &f("initialDelay"));
        if let Some(d) = self.positive(&m.error_retry_interval, &f("errorRetryInterval")) {
            ms.error_retry_interval = d;
        }
        // Argo's `ValidateMetric` rules, in its wording (values added where Argo gives none).
        let count = self.int(&m.count, &f("count"), 0, "count must be >= 0");
        let failure = self.int(
            &m.failure_limit,
            &f("failureLimit"),
            -1,
            "failureLimit must be >= 0, or -1 to be disabled",
        );
        let inconclusive = self.int(
            &m.inconclusive_limit,
            &f("inconclusiveLimit"),
            0,
            "inconclusiveLimit must be >= 0",
        );
        let errors = self.int(
            &m.consecutive_error_limit,
            &f("consecutiveErrorLimit"),
            0,
            "consecutiveErrorLimit must be >= 0",
        );
        let successes = self.int(
            &m.consecutive_success_limit,
            &f("consecutiveSuccessLimit"),
            0,
            "consecutiveSuccessLimit must be >= 0",
        );
        let to_u32 = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        let to_i32 = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
        ms.count = count.filter(|c| *c > 0).map(to_u32);
        ms.failure_limit = failure.map_or(0, to_i32);
        ms.inconclusive_limit = inconclusive.map_or(0, to_i32);
        ms.consecutive_error_limit =
            errors.map_or(analysis::DEFAULT_CONSECUTIVE_ERROR_LIMIT, to_i32);
        ms.consecutive_success_limit = successes.map_or(0, to_i32);
        self.limits(m, p, count, failure, inconclusive, successes);
        ms.no_data = match m.no_data.unwrap_or_default() {
            NoData::Inconclusive => NoDataPolicy::Inconclusive,
            NoData::Failed => NoDataPolicy::Failed,
            NoData::Successful => NoDataPolicy::Successful,
            NoData::Error => NoDataPolicy::Error,
        };

        // Provider.
        let pp = f("provider");
        let Some(sw) = &m.provider.skywalking else {
            self.err(
                &pp,
                "no provider specified: skycanary supports provider.skywalking",
            );
            return None;
        };
        let sp = child_path(&pp, "skywalking");
        let g = |name: &str| child_path(&sp, name);
        match [&sw.metric, &sw.expression, &sw.query]
            .iter()
            .filter(|v| v.is_some())
            .count()
        {
            0 => self.err(&sp, "set exactly one of metric, expression or query"),
            1 => {}
            _ => self.err(&sp, "set only one of metric, expression or query"),
        }
        // Argo cannot build its SkyWalking client without `interval` (every measurement is an
        // Error); refusing it here is better than a silent default window.
        if argo && sw.window_duration().is_none() {
            self.err(
                &g("interval"),
                "missing: an argoproj.io/v1alpha1 template must set the query window; add \
                 `interval: 5m` (or the window you want) under provider.skywalking \
                 (Argo would make every measurement of this metric an Error)",
            );
        }
        if sw.window.as_ref().and_then(|w| w.duration()).is_some() && sw.interval.is_some() {
            self.err(
                &g("interval"),
                "interval is Argo's name for window: set only one",
            );
        }
        let window_path = g(sw.window_field());
        let window = self.duration(&sw.window_duration(), &window_path);
        let step_def = sw.step.unwrap_or_default();
        let (step, step_secs) = match step_def {
            StepDef::Second => (Step::Second, 1),
            StepDef::Minute => (Step::Minute, 60),
            StepDef::Hour => (Step::Hour, 3600),
            StepDef::Day => (Step::Day, 86400),
        };
        if let Some(w) = window {
            let points = w.as_secs() / step_secs;
            if points < 1 {
                self.err(
                    &window_path,
                    format!("window is shorter than one {step_def:?} step"),
                );
            } else if points > 500 {
                self.err(
                    &window_path,
                    format!("window covers {points} points; SkyWalking allows at most 500"),
                );
            }
        }
        let window = window.unwrap_or(Duration::from_secs(300));
        let kind = self.query_kind(sw, &g);
        let aliases = match &kind {
            Some(QueryKind::Raw { query }) => match raw_query_aliases(query) {
                Ok(a) => a,
                Err(e) => {
                    self.err(&g("query"), e);
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        let entity = self.entity(sw, &g);
        let connection = self.connection(sw, &g);

        // Conditions compile now, not at the first measurement.
        let alias_refs: Vec<&str> = aliases.iter().map(String::as_str).collect();
        for (field, src) in [
            ("successCondition", &m.success_condition),
            ("failureCondition", &m.failure_condition),
        ] {
            let Some(src) = src else { continue };
            match Condition::compile_as(language, src, &alias_refs) {
                Ok(c) => {
                    for a in c.arg_names() {
                        let known = self
                            .declared
                            .iter()
                            .any(|d| d == &a || d.replace('-', "_") == a);
                        if !known {
                            self.err(&f(field), format!("args.{a} is not a declared arg"));
                        }
                    }
                    match field {
                        "successCondition" => ms.success_condition = Some(c),
                        _ => ms.failure_condition = Some(c),
                    }
                }
                Err(e) => self.err(&f(field), format!("condition does not compile: {e}")),
            }
        }
        if self.errs.len() > before {
            return None;
        }
        Some(CompiledMetric {
            spec: ms,
            query: MetricQuery {
                key: m.name.clone(),
                kind: kind?,
                entity,
                window,
                step,
                not_before: None,
            },
            connection: connection?,
            align_to_step: sw.align_to_step(),
        })
    }

    /// Argo's rules between count and the limits; a limit known only at run time is checked
    /// then (absent ones take Argo's default, 0).
    fn limits(
        &mut self,
        m: &MetricDef,
        p: &str,
        count: Option<i64>,
        failure: Option<i64>,
        inconclusive: Option<i64>,
        successes: Option<i64>,
    ) {
        let f = |name: &str| child_path(p, name);
        let known = |raw: &Option<IntOrString>, v: Option<i64>| match raw {
            None => Some(0),
            Some(_) => v,
        };
        let (count, failure, inconclusive, csl) = (
            known(&m.count, count),
            known(&m.failure_limit, failure),
            known(&m.inconclusive_limit, inconclusive),
            known(&m.consecutive_success_limit, successes),
        );
        if failure == Some(-1) && csl == Some(0) {
            self.err(
                &f("failureLimit"),
                "failureLimit and consecutiveSuccessLimit cannot both be disabled (failureLimit -1 \
                 needs consecutiveSuccessLimit > 0, or the metric can never end)",
            );
        }
        if let Some(c) = count.filter(|c| *c > 0) {
            match (failure, csl) {
                (Some(fl), Some(sl)) if fl >= 0 && sl >= 0 && c < fl.saturating_add(sl) => {
                    self.err(
                        &f("count"),
                        format!(
                            "count ({c}) must be >= failureLimit + consecutiveSuccessLimit ({fl} + {sl}) if both >= 0"
                        ),
                    );
                }
                (Some(fl), Some(sl)) if fl < 0 && sl >= 0 && c < sl => {
                    self.err(
                        &f("count"),
                        format!(
                            "count must be >= consecutiveSuccessLimit (count {c}, consecutiveSuccessLimit {sl}): \
                             with failureLimit -1 the metric could never succeed"
                        ),
                    );
                }
                _ => {}
            }
            if let Some(il) = inconclusive
                && c < il
            {
                self.err(
                    &f("count"),
                    format!(
                        "count must be >= inconclusiveLimit (count {c}, inconclusiveLimit {il})"
                    ),
                );
            }
        }
        if count.is_some_and(|c| c > 1) && m.interval.is_none() {
            self.err(&f("count"), "interval must be specified when count > 1");
        }
    }

    /// The one query form set (the first, after a one-of problem already recorded).
    fn query_kind(&mut self, sw: &SkyWalkingDef, g: &dyn Fn(&str) -> String) -> Option<QueryKind> {
        if let Some(metric) = &sw.metric {
            let t = self.text(metric, &g("metric"), ArgContext::Plain)?;
            if t.known
                && !t
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.err(
                    &g("metric"),
                    format!(
                        "{:?} is not a metric name (letters, digits, '_'); use expression for MQE",
                        t.value
                    ),
                );
            }
            Some(QueryKind::Metric(t.value))
        } else if let Some(e) = &sw.expression {
            let t = self.text(e, &g("expression"), ArgContext::Mqe)?;
            if t.value.trim().is_empty() {
                self.err(&g("expression"), "empty expression");
            }
            Some(QueryKind::Expression(t.value))
        } else if let Some(q) = &sw.query {
            let t = self.text(q, &g("query"), ArgContext::GraphQl)?;
            Some(QueryKind::Raw { query: t.value })
        } else {
            None
        }
    }

    /// The entity of a typed query (`None` for a raw query, which names its own).
    fn entity(&mut self, sw: &SkyWalkingDef, g: &dyn Fn(&str) -> String) -> Option<EntitySpec> {
        if sw.query.is_some() {
            if sw.entity.is_some() || sw.instances.is_some() {
                self.err(&g("entity"), "entity and instances apply to metric/expression; a raw query names its entity itself");
            }
            return None;
        }
        let instance_pattern = self.instances(sw, g);
        let ep = g("entity");
        let Some(e) = &sw.entity else {
            if sw.metric.is_some() || sw.expression.is_some() {
                self.err(
                    &ep,
                    "missing entity (e.g. {scope: Service, serviceName: \"{{args.service}}\"})",
                );
            }
            return None;
        };
        let field = |c: &mut Self, v: &Option<String>, name: &str, needed: bool| match v {
            None => {
                if needed {
                    c.err(&ep, format!("scope {:?} needs {name}", e.scope));
                }
                None
            }
            Some(v) => Some(c.plain(v, &child_path(&ep, name))),
        };
        let service_name = field(self, &e.service_name, "serviceName", true).unwrap_or_default();
        let service_instance_name = field(
            self,
            &e.service_instance_name,
            "serviceInstanceName",
            e.scope == ScopeDef::ServiceInstance,
        );
        let endpoint_name = field(
            self,
            &e.endpoint_name,
            "endpointName",
            e.scope == ScopeDef::Endpoint,
        );
        if e.scope != ScopeDef::ServiceInstance && e.service_instance_name.is_some() {
            self.err(
                &child_path(&ep, "serviceInstanceName"),
                "only used with scope ServiceInstance",
            );
        }
        if e.scope != ScopeDef::Endpoint && e.endpoint_name.is_some() {
            self.err(
                &child_path(&ep, "endpointName"),
                "only used with scope Endpoint",
            );
        }
        Some(EntitySpec {
            scope: match e.scope {
                ScopeDef::Service => Scope::Service,
                ScopeDef::ServiceInstance => Scope::ServiceInstance,
                ScopeDef::Endpoint => Scope::Endpoint,
            },
            service_name,
            normal: e.normal.unwrap_or(true),
            service_instance_name,
            endpoint_name,
            instance_pattern,
        })
    }

    /// `instances.namePattern`, compiled once its value is known.
    fn instances(
        &mut self,
        sw: &SkyWalkingDef,
        g: &dyn Fn(&str) -> String,
    ) -> Option<regex::Regex> {
        let inst = sw.instances.as_ref()?;
        let ip = child_path(&g("instances"), "namePattern");
        let t = self.text(&inst.name_pattern, &ip, ArgContext::Plain);
        let pattern = match t {
            Some(t) if t.known => regex::Regex::new(&t.value)
                .map_err(|e| self.err(&ip, format!("invalid regex: {e}")))
                .ok(),
            _ => None,
        };
        if sw
            .entity
            .as_ref()
            .is_some_and(|e| e.scope != ScopeDef::Service)
        {
            self.err(
                &g("instances"),
                "instances aggregates over a Service's instances: entity.scope must be Service",
            );
        }
        pattern
    }

    /// How to reach the OAP. When validating, an absent address is fine (`--skywalking` may
    /// give it at run time); planning needs one.
    fn connection(
        &mut self,
        sw: &SkyWalkingDef,
        g: &dyn Fn(&str) -> String,
    ) -> Option<ClientOptions> {
        let address = match (&sw.address, self.planning) {
            (Some(a), _) => {
                let t = self.text(a, &g("address"), ArgContext::Address);
                t.filter(|t| {
                    let http = t.value.starts_with("http://") || t.value.starts_with("https://");
                    if !http {
                        self.err(&g("address"), "address must start with http:// or https://");
                    }
                    http
                })
                .map(|t| t.value)
            }
            (
                None,
                Some(Defaults {
                    skywalking: Some(d),
                    ..
                }),
            ) => Some(d.clone()),
            (None, Some(_)) => {
                self.err(
                    &g("address"),
                    "no OAP address: set provider.skywalking.address or pass --skywalking URL",
                );
                None
            }
            (None, None) => Some(String::new()),
        };
        let mut opts = ClientOptions::new(address.unwrap_or_default().trim_end_matches('/'));
        opts.timezone = self.planning.and_then(|d| d.timezone);
        if let Some(t) = self.positive(&sw.timeout, &g("timeout")) {
            opts.timeout = t;
        }
        if let Some(a) = &sw.auth {
            opts.auth = match (&a.basic, &a.bearer) {
                (Some(b), None) => Some(Auth::Basic {
                    user: self.plain(&b.username, &g("auth.basic.username")),
                    pass: self.plain(&b.password, &g("auth.basic.password")),
                }),
                (None, Some(t)) => Some(Auth::Bearer(self.plain(t, &g("auth.bearer")))),
                _ => {
                    self.err(&g("auth"), "set exactly one of basic or bearer");
                    None
                }
            };
        }
        for (i, h) in sw.headers.iter().enumerate() {
            let hp = index_path(&g("headers"), i);
            if http::header::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                self.err(
                    &child_path(&hp, "name"),
                    format!("{:?} is not a valid header name", h.name),
                );
            }
            let v = self.plain(&h.value, &child_path(&hp, "value"));
            opts.headers.push((h.name.clone(), v));
        }
        opts.ca_file = sw.ca_file.as_ref().map(PathBuf::from);
        Some(opts)
    }
}

/// Measurements kept for metric `name`, as Argo's `garbageCollectMeasurements`: the last
/// matching rule wins, and its limit 0 means the default (10).
fn retention_limit(rules: &[RetentionRule], name: &str) -> usize {
    rules
        .iter()
        .rev()
        .find(|r| regex::Regex::new(&r.metric_name).is_ok_and(|re| re.is_match(name)))
        .and_then(|r| usize::try_from(r.limit).ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(analysis::DEFAULT_RETENTION_LIMIT)
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
