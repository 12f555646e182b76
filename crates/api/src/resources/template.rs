//! AnalysisTemplate / ClusterAnalysisTemplate: the serde shape of the resource.
//!
//! Argo's shape, with `provider.skywalking` extended (typed metric / MQE / raw query, entity,
//! instances, auth). Unknown fields are errors everywhere so a typo never silently changes a
//! verdict.

use serde::{Deserialize, Serialize};

/// API group/version of our own resources.
pub const API_VERSION: &str = "skycanary.io/v1alpha1";
/// Argo Rollouts' API group/version; templates using `provider.skywalking` are accepted as-is.
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

/// The subset of Kubernetes ObjectMeta a template carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name (DNS-1123 subdomain).
    #[serde(default)]
    pub name: String,
    /// Namespace; absent for cluster-scoped kinds and file mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels, kept as given.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations, kept as given.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Fields Kubernetes adds (uid, resourceVersion, ...) are accepted and ignored.
    #[serde(flatten, skip_serializing)]
    pub server_fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// A whole AnalysisTemplate or ClusterAnalysisTemplate document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplateDoc {
    /// `skycanary.io/v1alpha1` or `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `AnalysisTemplate` or `ClusterAnalysisTemplate`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The template itself.
    pub spec: AnalysisTemplateSpec,
    /// Status written by a cluster is ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// The analysis template body (Argo `AnalysisTemplateSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplateSpec {
    /// Declared arguments, with optional defaults.
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    /// The metrics to measure.
    #[serde(default)]
    pub metrics: Vec<MetricDef>,
    /// Metrics (by unanchored regex on the name) whose verdicts never change the run's phase.
    #[serde(default)]
    pub dry_run: Vec<MetricNameRule>,
    /// How many measurements to keep per metric (by regex on the name).
    #[serde(default)]
    pub measurement_retention: Vec<RetentionRule>,
    /// Language of the metrics' conditions. Default: `expr` (Argo's, conditions run unchanged)
    /// for `argoproj.io/v1alpha1` templates, `evalexpr` for `skycanary.io/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_language: Option<ConditionLanguageDef>,
}

/// `spec.conditionLanguage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConditionLanguageDef {
    /// Argo Rollouts' expr, with Argo's bindings and functions.
    #[serde(rename = "expr")]
    Expr,
    /// evalexpr 11.3, with skycanary's bindings and helpers.
    #[serde(rename = "evalexpr")]
    Evalexpr,
}

impl AnalysisTemplateDoc {
    /// The language its conditions are compiled in: explicit, else by API group.
    pub fn condition_language(&self) -> crate::analysis::ConditionLanguage {
        use crate::analysis::ConditionLanguage;
        match self.spec.condition_language {
            Some(ConditionLanguageDef::Expr) => ConditionLanguage::Expr,
            Some(ConditionLanguageDef::Evalexpr) => ConditionLanguage::Evalexpr,
            None if self.api_version == ARGO_API_VERSION => ConditionLanguage::Expr,
            None => ConditionLanguage::Evalexpr,
        }
    }
}

/// A template argument.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgSpec {
    /// Argument name, referenced as `{{args.name}}` or `args.name` in conditions.
    pub name: String,
    /// Default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value from a Secret (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgValueFrom>,
}

/// Where an argument's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgValueFrom {
    /// A key of a Secret in the template's namespace.
    pub secret_key_ref: SecretKeyRef,
}

/// Reference to a key in a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

/// `dryRun` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricNameRule {
    /// Unanchored regex on metric names (Argo semantics).
    pub metric_name: String,
}

/// `measurementRetention` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionRule {
    /// Unanchored regex on metric names.
    pub metric_name: String,
    /// Measurements kept per matching metric.
    pub limit: u32,
}

/// An integer that may also be given as a string, possibly an `{{args.x}}` template (Argo's
/// `IntOrString`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A literal integer.
    Int(i64),
    /// A string: a number or a template resolved when args are known.
    String(String),
}

/// What a measurement with no data counts as. Never silently "healthy" unless asked for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum NoData {
    /// Default: the measurement is Inconclusive.
    #[default]
    Inconclusive,
    /// The measurement is Failed.
    Failed,
    /// The measurement is Successful (explicit opt-in only).
    Successful,
    /// The measurement is an Error.
    Error,
}

/// One metric of a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricDef {
    /// Unique metric name.
    pub name: String,
    /// Time between measurements (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Number of measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrString>,
    /// Delay before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub initial_delay: Option<String>,
    /// Failed measurements tolerated (default 0; -1 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<IntOrString>,
    /// Inconclusive measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<IntOrString>,
    /// Consecutive errors tolerated (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<IntOrString>,
    /// Consecutive successes that end the metric early (default 0 = off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_success_limit: Option<IntOrString>,
    /// Condition for Successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// Condition for Failed (wins over success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// What a measurement without data counts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoData>,
    /// Delay before retrying after an Error measurement (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub error_retry_interval: Option<String>,
    /// The metric provider.
    pub provider: ProviderDef,
}

/// Metric provider; only SkyWalking is supported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("required" = ["skywalking"]))]
pub struct ProviderDef {
    /// Apache SkyWalking OAP GraphQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<SkyWalkingDef>,
}

/// Time bucket size of a query.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum StepDef {
    /// Per second (OAL metrics are not stored per second: always empty on real OAPs).
    Second,
    /// Per minute (default).
    #[default]
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

/// `provider.skywalking`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
        "rule": "(has(self.metric) ? 1 : 0) + (has(self.expression) ? 1 : 0) + (has(self.query) ? 1 : 0) == 1",
        "message": "set exactly one of metric, expression or query"
}]))]
pub struct SkyWalkingDef {
    /// OAP base URL (`http://oap:12800`); defaults to the CLI/daemon `--skywalking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Query window: a Go duration (`5m`), or `{duration: 5m, alignToStep: false}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowDef>,
    /// Argo's name for the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Bucket size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepDef>,
    /// A metric name (`service_apdex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// An MQE expression (OAP >= 9.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// A raw GraphQL query (Argo-compatible); `$duration` is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The entity measured (typed queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityDef>,
    /// Aggregate over the service's instances whose name matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstancesDef>,
    /// Request timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Authentication, for an OAP behind a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthDef>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderDef>,
    /// PEM file with extra CA certificates for https addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// `provider.skywalking.window`: the look-back span, and whether it starts after the canary's
/// last routing change (default) so every bucket judged was served at the current weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WindowDef {
    /// `window: 5m`: a duration, aligned to the step.
    Duration(String),
    /// `window: {duration: 5m, alignToStep: false}`.
    Spec(WindowSpec),
}

/// The object form of [`WindowDef`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowSpec {
    /// Go duration; defaults to `interval`, else 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// `false`: the window may reach back before the last routing change (evidence partly
    /// from the previous weight). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align_to_step: Option<bool>,
}

/// By hand rather than `untagged`: a mistyped key must be named (`unknown field alignTo`),
/// not reported as "did not match any variant".
impl<'de> Deserialize<'de> for WindowDef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WindowDef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as 5m, or {duration: 5m, alignToStep: false}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WindowDef, E> {
                Ok(WindowDef::Duration(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<WindowDef, A::Error> {
                WindowSpec::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(WindowDef::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

impl WindowDef {
    /// The span as written, if any.
    pub fn duration(&self) -> Option<&String> {
        match self {
            WindowDef::Duration(d) => Some(d),
            WindowDef::Spec(s) => s.duration.as_ref(),
        }
    }

    /// Whether the window starts no earlier than the last routing change (default: yes).
    pub fn align_to_step(&self) -> bool {
        match self {
            WindowDef::Duration(_) => true,
            WindowDef::Spec(s) => s.align_to_step.unwrap_or(true),
        }
    }
}

impl SkyWalkingDef {
    /// The window span as written: `window` (either form) or Argo's `interval`.
    pub fn window_duration(&self) -> Option<String> {
        self.window
            .as_ref()
            .and_then(WindowDef::duration)
            .or(self.interval.as_ref())
            .cloned()
    }

    /// Field path of the span: `window`, `window.duration` or `interval`.
    pub fn window_field(&self) -> &'static str {
        match &self.window {
            Some(WindowDef::Duration(_)) => "window",
            Some(WindowDef::Spec(s)) if s.duration.is_some() => "window.duration",
            _ if self.interval.is_some() => "interval",
            _ => "window",
        }
    }

    /// See [`WindowDef::align_to_step`]; no `window` means aligned.
    pub fn align_to_step(&self) -> bool {
        self.window.as_ref().is_none_or(WindowDef::align_to_step)
    }
}

/// The entity of a typed query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityDef {
    /// Scope; defaults to Service.
    #[serde(default)]
    pub scope: ScopeDef,
    /// SkyWalking service name (`reviews.bookinfo` on OAP 10 ALS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Real (agent/mesh) service: true. Defaults to true; false only for conjectured peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<bool>,
    /// Instance name (scope ServiceInstance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_instance_name: Option<String>,
    /// Endpoint name (scope Endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
}

/// Entity scope.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ScopeDef {
    /// A service.
    #[default]
    Service,
    /// One instance (pod) of a service.
    ServiceInstance,
    /// One endpoint of a service.
    Endpoint,
}

/// Instance aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstancesDef {
    /// Regex on instance (pod) names, e.g. `reviews-v2-.*`.
    pub name_pattern: String,
}

/// Authentication for an OAP behind a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.basic) != has(self.bearer)",
    "message": "set exactly one of basic or bearer"
}]))]
pub struct AuthDef {
    /// HTTP basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuthDef>,
    /// Bearer token (use `{{args.token}}` with a secret-backed arg).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<String>,
}

/// Basic auth credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthDef {
    /// User name.
    pub username: String,
    /// Sent with `username` as HTTP basic auth.
    #[schemars(description = "Password.")]
    pub password: String,
}

/// An extra header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderDef {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}
