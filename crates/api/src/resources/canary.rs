//! Canary: the serde shape of the resource (DESIGN §2). Rust types are the single source;
//! unknown fields are errors so a typo never silently changes a release.

use serde::{Deserialize, Serialize};

use super::template::{IntOrString, ObjectMeta};

/// Default `maxTrafficWeight`: a route's total weight when the spec names none. Validation,
/// the routing model and the state machine all read it, so it lives with the type.
pub const DEFAULT_MAX_WEIGHT: i64 = 100;

/// A whole Canary document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryDoc {
    /// `skycanary.io/v1alpha1`.
    pub api_version: String,
    /// Must be `Canary`: the kind this document is read as.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// Desired behaviour.
    pub spec: CanarySpec,
    /// Status written by the daemon is ignored when reading files.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// What a Canary wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.steps) || self.steps.all(s, !has(s.setWeight) || s.setWeight <= (has(self.trafficRouting.maxTrafficWeight) ? self.trafficRouting.maxTrafficWeight : 100))",
    "message": "setWeight must not exceed trafficRouting.maxTrafficWeight (default 100)",
    "fieldPath": ".steps",
    "reason": "FieldValueInvalid"
}, {
    "rule": "((has(self.workloadRef) && has(self.workloadRef.fromSubset) && self.workloadRef.fromSubset) || (has(self.stableWorkloadRef) && has(self.stableWorkloadRef.fromSubset) && self.stableWorkloadRef.fromSubset)) ? has(self.trafficRouting.istio.destinationRule) : true",
    "message": "fromSubset reads a DestinationRule subset's labels: it needs trafficRouting.istio.destinationRule (subset-level routing)"
}]))]
pub struct CanarySpec {
    /// The release; a change starts a new run from step 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Where traffic is shifted.
    pub traffic_routing: TrafficRoutingSpec,
    /// Background analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BackgroundAnalysis>,
    /// The release steps.
    #[serde(default)]
    #[schemars(length(max = crate::crd::MAX_STEPS))]
    pub steps: Vec<CanaryStep>,
    /// Alarms that roll the canary back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_on: Option<RollbackOn>,
    /// What an analysis Error does.
    #[serde(default)]
    pub on_analysis_error: OnAnalysisError,
    /// What happens to routes after promotion.
    #[serde(default)]
    pub on_success: OnSuccess,
    /// Keep watching after promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion: Option<PostPromotion>,
    /// What removing the Canary mid-release does to its traffic.
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Lifecycle notifications to the daemon's named sinks; absent: the daemon's defaults,
    /// `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::notifications::MAX_SUBSCRIPTIONS))]
    pub notifications: Option<Vec<super::notifications::Subscription>>,
    /// The canary side's workload: its readiness gates every step that exposes the canary,
    /// and a change of its pod template starts a new run (docs/workloads.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// The stable side's workload, read for `readiness.minReadyForWeight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_workload_ref: Option<WorkloadRef>,
    /// How ready the canary must be (used with `workloadRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessSpec>,
}

/// A workload in the Canary's namespace: a Deployment or StatefulSet by name, or the pods
/// matching a label selector (Argo-style). skycanary reads it, never scales or edits it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.fromSubset) && self.fromSubset) || (!has(self.kind) && !has(self.name))",
    "message": "fromSubset selects pods by the subset's labels: remove kind and name"
}, {
    "rule": "!(has(self.fromSubset) && self.fromSubset) || has(self.selector)",
    "message": "fromSubset needs selector.matchLabels with the host Service's selector labels (e.g. app: reviews)"
}]))]
pub struct WorkloadRef {
    /// `Deployment` or `StatefulSet` (with `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<WorkloadKind>,
    /// The workload's name (with `kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    /// Pods by label (instead of kind and name). With `fromSubset`, labels added to the
    /// subset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PodSelector>,
    /// The pods the DestinationRule subset of this side selects (`spec.subsets[].labels`);
    /// subset-level routing only. Read again while the canary runs, so a relabelled subset is
    /// followed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_subset: bool,
}

/// Kind of a referenced workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

/// A pod label selector (`matchLabels` only: every label must match).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSelector {
    /// Labels every selected pod carries.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// `spec.readiness`: how ready the canary workload must be before it takes more traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessSpec {
    /// Ready canary pods needed before any step exposes the canary (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_ready: Option<i64>,
    /// Also need `ceil(weight / maxTrafficWeight × stable ready)` ready canary pods before a
    /// weight (needs the stable side's readiness: `stableWorkloadRef`).
    #[serde(default)]
    pub min_ready_for_weight: bool,
    /// How long the canary may wait for readiness before the run aborts (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub progress_deadline: Option<String>,
    /// What losing every ready canary pod while the canary carries weight does.
    #[serde(default)]
    pub on_canary_unavailable: OnCanaryUnavailable,
}

/// What losing every ready canary pod under weight does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum OnCanaryUnavailable {
    /// Roll back to stable at once.
    #[default]
    Rollback,
    /// Keep the weight, pause with reason CanaryNotReady until the pods are ready again.
    Hold,
}

/// `spec.trafficRouting`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRoutingSpec {
    /// Total weight of a route (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_traffic_weight: Option<i64>,
    /// Routes skycanary creates and removes (header/mirror), in precedence order.
    #[serde(default)]
    pub managed_routes: Vec<ManagedRoute>,
    /// Istio settings.
    pub istio: IstioSpec,
}

/// A managed route name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedRoute {
    /// Route name.
    pub name: String,
}

/// `spec.trafficRouting.istio`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.virtualService) != has(self.virtualServices)",
        "message": "set either virtualService or virtualServices (exactly one)"
    },
    {
        "rule": "has(self.destinationRule) ? !has(self.stableService) && !has(self.canaryService) : has(self.stableService) && has(self.canaryService)",
        "message": "set both stableService and canaryService (host-level split) or destinationRule (subset-level split), not both"
    },
    {
        "rule": "!has(self.stableService) || !has(self.canaryService) || self.stableService != self.canaryService",
        "message": "canaryService must differ from stableService"
    }
]))]
pub struct IstioSpec {
    /// One VirtualService (Argo's single form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<VirtualServiceSpec>,
    /// Several VirtualServices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_services: Vec<VirtualServiceSpec>,
    /// Stable Service (host-level split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// Canary Service (host-level split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// Subset-level split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<DestinationRuleSpec>,
    /// Other destinations that share managed routes and keep their weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_destinations: Vec<AdditionalDestinationSpec>,
}

/// A VirtualService and the routes that carry the split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// `name` or `name.namespace`.
    pub name: String,
    /// Named HTTP routes; optional when there is exactly one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// TLS routes by port and SNI hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRouteSpec>,
    /// TCP routes by port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRouteSpec>,
}

/// TLS route selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRouteSpec {
    /// The port of the VirtualService TLS route to manage (its match's `port`).
    #[schemars(description = "Port.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// SNI hosts (as a set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
}

/// TCP route selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteSpec {
    /// The port of the VirtualService TCP route to manage (its match's `port`).
    #[schemars(description = "Port.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// Subset-level split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.stableSubsetName != self.canarySubsetName",
    "message": "canary and stable subsets must differ"
}]))]
pub struct DestinationRuleSpec {
    /// `name` or `name.namespace`.
    pub name: String,
    /// Subset of the stable version.
    pub stable_subset_name: String,
    /// Subset of the canary version.
    pub canary_subset_name: String,
}

/// A destination that keeps its weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.host) || has(self.subset)",
    "message": "set host and/or subset"
}]))]
pub struct AdditionalDestinationSpec {
    /// The destination's `host`, as the route writes it.
    #[schemars(description = "Host.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The destination's `subset`, as the route writes it.
    #[schemars(description = "Subset.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

/// A reference to an analysis template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateRef {
    /// Template name.
    pub template_name: String,
    /// A ClusterAnalysisTemplate instead of a namespaced one.
    #[serde(default)]
    pub cluster_scope: bool,
}

/// An arg passed to templates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.value) != has(self.valueFrom)",
    "message": "set exactly one of value or valueFrom"
}]))]
pub struct ArgValue {
    /// Arg name.
    pub name: String,
    /// The arg's value, given inline (the alternative to `valueFrom`).
    #[schemars(description = "Value.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// From a Secret (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<super::template::ArgValueFrom>,
}

/// Background analysis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackgroundAnalysis {
    /// Templates run together as one analysis run.
    pub templates: Vec<TemplateRef>,
    /// First step (index) at which it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_step: Option<u32>,
    /// Args for the templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgValue>,
}

/// One step of a release (exactly one key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CanaryStep {
    /// Canary weight on every managed route (at most `maxTrafficWeight`, a rule of the spec).
    SetWeight(#[schemars(range(min = 0))] i64),
    /// Wait: a duration, or until promoted when empty.
    Pause(PauseStep),
    /// A blocking analysis.
    Analysis(StepAnalysis),
    /// Route requests with matching headers to the canary.
    SetHeaderRoute(SetHeaderRouteStep),
    /// Mirror matching requests to the canary.
    SetMirrorRoute(SetMirrorRouteStep),
}

/// The `pause` step: holds the current weights for a while, or until promoted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseStep {
    /// Seconds (int) or a duration string; absent = until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<IntOrString>,
}

/// `analysis` step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepAnalysis {
    /// The templates whose metrics this step's analysis run measures together.
    #[schemars(description = "Templates.")]
    #[schemars(length(min = 1))]
    pub templates: Vec<TemplateRef>,
    /// Values for the templates' args, by name.
    #[schemars(description = "Args.")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgValue>,
}

/// Istio string match (exactly one of the three).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct StringMatchSpec {
    /// Exact value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this string.
    #[schemars(description = "Prefix.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The `setHeaderRoute` step: a managed route sending requests with matching headers to the canary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetHeaderRouteStep {
    /// Managed route name.
    pub name: String,
    /// Header matches; empty removes the route.
    #[serde(default, rename = "match")]
    pub matches: Vec<HeaderMatchSpec>,
}

/// One header match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// Header name.
    pub header_name: String,
    /// How the value matches.
    pub header_value: StringMatchSpec,
}

/// The `setMirrorRoute` step: a managed route mirroring matching requests to the canary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetMirrorRouteStep {
    /// Managed route name.
    pub name: String,
    /// Percentage mirrored (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percentage: Option<f64>,
    /// Match entries; empty removes the route.
    #[serde(default, rename = "match")]
    pub matches: Vec<RouteMatchSpec>,
}

/// A mirror route match entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatchSpec {
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatchSpec>,
    /// How the request's URI path matches.
    #[schemars(description = "Path.")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatchSpec>,
    /// Header name to how its value matches; every one must match.
    #[schemars(description = "Headers.")]
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, StringMatchSpec>,
}

/// `rollbackOn`: what rolls the canary back at once while it is Progressing, Paused or in
/// its `postPromotion.watch`. Every regex is fully anchored (`reviews` matches only
/// `reviews`; write `reviews.*` for a prefix), like Prometheus label matchers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackOn {
    /// SkyWalking alarm matchers (webhook `POST /webhooks/skywalking` and `getAlarm` polling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<AlarmMatcher>,
    /// Prometheus Alertmanager alert matchers (`POST /webhooks/alertmanager`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertMatcher>,
}

/// One SkyWalking alarm matcher; every criterion it sets must match. A criterion on a field
/// the alarm does not carry (polled alarms have no `ruleName`, and no `name` for relation
/// scopes before OAP 10.2) does not match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlarmMatcher {
    /// Regex on the alarm rule name (`service_resp_time_rule`); webhook alarms only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    /// Regex on the alarm's entity name (`reviews.bookinfo`, `inst of svc`, `ep in svc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Regex on the scope, as OAP spells it in webhooks (`SERVICE`, `SERVICE_INSTANCE`) or
    /// in GraphQL (`Service`, `ServiceInstance`); either spelling matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Regex on the rendered alarm message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Regexes on tag values by tag key (OAP 8.6+); a missing tag reads as "".
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// One Alertmanager alert matcher: every label regex must match the alert's label value
/// (a missing label reads as "", as in Prometheus).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertMatcher {
    /// Regexes on label values by label name, e.g. `{alertname: HighErrorRate, service: "reviews.*"}`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What an analysis Error does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum OnAnalysisError {
    /// Roll back (Argo).
    #[default]
    Abort,
    /// Keep the weight, pause, alert.
    Hold,
}

/// What happens after promotion.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum OnSuccess {
    /// The canary stays at maxTrafficWeight.
    #[default]
    Keep,
    /// The original routes are written back.
    Restore,
}

/// What removing a Canary does while its release runs (Progressing, Paused, Degraded).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum OnDelete {
    /// Roll back: stable 100 %, managed routes removed, then the task ends. A canary that
    /// nothing judges any more must not keep its traffic.
    #[default]
    Rollback,
    /// Leave the routes as they are.
    Keep,
}

/// `postPromotion`: how long a promoted release is still watched, and what rolls it back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostPromotion {
    /// How long alarms and background analysis still roll back after promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::crd::DURATION_PATTERN))]
    pub watch: Option<String>,
}
