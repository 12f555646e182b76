//! The daemon's OpenMetrics (`skycanary_*`). Typed methods keep label names and values in one
//! place, so the daemon cannot emit the same metric with two label spellings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::AlarmSource;
use crate::analysis::{ConditionKind, Phase};
use crate::canary::CanaryPhase;
use crate::traffic::RouteWeights;

/// Content type of `GET /metrics` when the scraper asks for OpenMetrics (Prometheus does).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of `GET /metrics` otherwise: the classic text format (0.0.4), which `curl`,
/// `promtool check metrics` and older scrapers read.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`# EOF`, counter families named without `_total`, `# UNIT`).
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Classic,
}

impl Format {
    /// Negotiated from an `Accept` header: OpenMetrics when it is accepted (q > 0), as
    /// Prometheus asks for it first; the classic format for everyone else, as the official
    /// client libraries do.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let wanted = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
        });
        if wanted {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Classic => CLASSIC_CONTENT_TYPE,
        }
    }
}

/// Rewrites this registry's OpenMetrics text as the classic format: counter families take
/// their samples' `_total` name (the classic parser matches `# HELP`/`# TYPE` by sample name,
/// so without it a counter has no help text), info families become `_info` gauges, and the
/// OpenMetrics-only `# UNIT` and `# EOF` lines go. Sample lines are the same in both formats.
pub fn openmetrics_to_classic(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = help.take() {
                push_help(&mut out, name, h);
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (classic_name, classic_kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            match help.take() {
                Some((help_name, h)) if help_name == name => push_help(&mut out, &classic_name, h),
                Some((help_name, h)) => push_help(&mut out, help_name, h),
                None => {}
            }
            out.push_str("# TYPE ");
            out.push_str(&classic_name);
            out.push(' ');
            out.push_str(classic_kind);
            out.push('\n');
            continue;
        }
        if let Some((name, h)) = help.take() {
            push_help(&mut out, name, h);
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((name, h)) = help {
        push_help(&mut out, name, h);
    }
    out
}

fn push_help(out: &mut String, name: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push('\n');
}

/// Every canary phase, so setting one phase can zero the others (a state-set gauge).
const CANARY_PHASES: [CanaryPhase; 8] = [
    CanaryPhase::Pending,
    CanaryPhase::Progressing,
    CanaryPhase::Paused,
    CanaryPhase::Promoted,
    CanaryPhase::Aborted,
    CanaryPhase::RolledBack,
    CanaryPhase::Degraded,
    CanaryPhase::Invalid,
];

/// SkyWalking queries are usually tens of milliseconds; the tail matters up to the timeout.
const PROVIDER_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Kubernetes API requests: a few ms in-cluster; watches answer their headers at once.
const KUBE_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A canary release, start to Promoted/Aborted: a minute to a day.
const CANARY_DURATION_BUCKETS: [f64; 12] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];

/// From alarm receipt to rollback written: 1 ms to 10 s.
const ROLLBACK_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn canary_phase_name(phase: CanaryPhase) -> &'static str {
    match phase {
        CanaryPhase::Pending => "Pending",
        CanaryPhase::Progressing => "Progressing",
        CanaryPhase::Paused => "Paused",
        CanaryPhase::Promoted => "Promoted",
        CanaryPhase::Aborted => "Aborted",
        CanaryPhase::RolledBack => "RolledBack",
        CanaryPhase::Degraded => "Degraded",
        CanaryPhase::Invalid => "Invalid",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CanaryPhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WeightLabels {
    namespace: String,
    name: String,
    virtual_service: String,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MeasurementLabels {
    namespace: String,
    name: String,
    run: String,
    metric: String,
}

/// A measured value's labels plus which condition (`success` / `failure`) a threshold is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ThresholdLabels {
    namespace: String,
    name: String,
    run: String,
    metric: String,
    condition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MeasurementPhaseLabels {
    namespace: String,
    name: String,
    metric: String,
    phase: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    namespace: String,
    name: String,
    reason: String,
}

/// A canary and one of its VirtualServices: bounded by the configured objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    namespace: String,
    name: String,
    virtual_service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    address: String,
    kind: String,
}

/// One OAP request: its operation and how it ended (`ok`, `4xx`, `5xx` or the error kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderRequestLabels {
    address: String,
    kind: String,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Verb and resource come from API paths the daemon builds (never object names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KubeRequestLabels {
    verb: String,
    resource: String,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KubeLatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
    target: String,
}

/// Only the canary's own names and the (fixed) source: nothing from an alarm's payload, whose
/// rules, entities and labels are unbounded (Alertmanager sends every label of every alert).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlarmMatchLabels {
    namespace: String,
    name: String,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// Sink names come from the daemon's notifications file: bounded by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScheduledActionLabels {
    namespace: String,
    name: String,
    action: String,
    outcome: String,
}

pub use crate::task::StateKind;

/// An object whose latest status could not be saved (until a save of it lands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsavedState {
    /// Canary or scheduled analysis.
    pub kind: StateKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why the last save failed.
    pub error: String,
    /// Failed saves in a row.
    pub failures: u64,
}

/// Labels bounded by the configured objects: nothing from the error text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateSaveLabels {
    kind: String,
    namespace: String,
    name: String,
}

/// Registers a family so it is listed (`# HELP`/`# TYPE`) before its first series:
/// prometheus-client leaves empty families out, and then a dashboard or an `absent()` alert
/// cannot tell "never happened" from "not exported".
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

type F64Gauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn provider_histogram() -> Histogram {
    Histogram::new(PROVIDER_BUCKETS)
}

fn kube_histogram() -> Histogram {
    Histogram::new(KUBE_BUCKETS)
}

fn canary_duration_histogram() -> Histogram {
    Histogram::new(CANARY_DURATION_BUCKETS)
}

/// Per-canary gauge series with free-form labels, remembered so they can be dropped when the
/// canary goes away (a gauge left behind would keep reporting a weight that no longer exists).
#[derive(Default)]
struct CanarySeries {
    weights: HashSet<WeightLabels>,
    values: HashSet<MeasurementLabels>,
    thresholds: HashSet<ThresholdLabels>,
}

struct Inner {
    registry: Registry,
    canary_phase: Family<CanaryPhaseLabels, Gauge>,
    canary_weight: Family<WeightLabels, Gauge>,
    measurement_value: Family<MeasurementLabels, F64Gauge>,
    measurement_threshold: Family<ThresholdLabels, F64Gauge>,
    measurements: Family<MeasurementPhaseLabels, Counter>,
    analysis_runs: Family<CanaryPhaseLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    provider_latency: HistogramFamily<ProviderLabels>,
    provider_errors: Family<ProviderLabels, Counter>,
    provider_requests: Family<ProviderRequestLabels, Counter>,
    kube_requests: Family<KubeRequestLabels, Counter>,
    kube_latency: HistogramFamily<KubeLatencyLabels>,
    canary_duration: HistogramFamily<OutcomeLabels>,
    kube_conflicts: Family<KindLabels, Counter>,
    traffic_drift: Family<DriftLabels, Counter>,
    alarms_received: Family<SourceLabels, Counter>,
    alarms_matched: Family<AlarmMatchLabels, Counter>,
    alarm_rollback_latency: Histogram,
    scheduled_runs: Family<CanaryPhaseLabels, Counter>,
    scheduled_actions: Family<ScheduledActionLabels, Counter>,
    state_save_failures: Family<StateSaveLabels, Counter>,
    notifications_sent: Family<SinkLabels, Counter>,
    notifications_failed: Family<SinkLabels, Counter>,
    notifications_dropped: Family<SinkLabels, Counter>,
    /// Objects whose last status save failed, for `/readyz`.
    unsaved: Mutex<BTreeMap<(StateKind, String, String), UnsavedState>>,
    series: Mutex<HashMap<(String, String), CanarySeries>>,
}

/// Handle to the daemon's metrics; clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every `skycanary_` metric registered (families start empty, yet
    /// each is listed with its help and type from the first scrape), the build info, and on
    /// Linux the `process_*` metrics.
    pub fn new() -> Self {
        let mut root = Registry::default();
        if let Some(process) = super::process::ProcessCollector::for_self() {
            root.register_collector(Box::new(process));
        }
        let registry = root.sub_registry_with_prefix("skycanary");
        registry.register(
            "build",
            "The running build: version, git commit and target triple (value 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                commit: crate::build_info::GIT_COMMIT.to_string(),
                target: crate::build_info::TARGET.to_string(),
            }),
        );
        let canary_phase = Family::<CanaryPhaseLabels, Gauge>::default();
        registry.register(
            "canary_phase",
            "1 for the canary's current phase, 0 for the others",
            Listed(canary_phase.clone()),
        );
        let canary_weight = Family::<WeightLabels, Gauge>::default();
        registry.register(
            "canary_weight",
            "Canary weight (percent) read back per VirtualService route",
            Listed(canary_weight.clone()),
        );
        let measurement_value = Family::<MeasurementLabels, F64Gauge>::default();
        registry.register(
            "measurement_value",
            "Last measured value per analysis run and metric",
            Listed(measurement_value.clone()),
        );
        let measurement_threshold = Family::<ThresholdLabels, F64Gauge>::default();
        registry.register(
            "measurement_threshold",
            "Threshold of the last measurement's success or failure condition, per analysis run and metric, when the condition is one comparison with a number or arg",
            Listed(measurement_threshold.clone()),
        );
        let measurements = Family::<MeasurementPhaseLabels, Counter>::default();
        registry.register(
            "measurements",
            "Measurements taken, by resulting phase",
            Listed(measurements.clone()),
        );
        let analysis_runs = Family::<CanaryPhaseLabels, Counter>::default();
        registry.register(
            "analysis_runs",
            "Analysis runs completed, by phase",
            Listed(analysis_runs.clone()),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Controller decisions, by reason",
            Listed(decisions.clone()),
        );
        let provider_latency: HistogramFamily<ProviderLabels> =
            Family::new_with_constructor(provider_histogram);
        registry.register_with_unit(
            "provider_request_duration",
            "Metric provider request latency",
            Unit::Seconds,
            Listed(provider_latency.clone()),
        );
        let provider_errors = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Metric provider request failures, by error kind",
            Listed(provider_errors.clone()),
        );
        let provider_requests = Family::<ProviderRequestLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Metric provider (OAP) requests, by operation and outcome (ok, 4xx, 5xx or the error kind)",
            Listed(provider_requests.clone()),
        );
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Kubernetes API requests, by verb, resource and status class (error: no response)",
            Listed(kube_requests.clone()),
        );
        let kube_latency: HistogramFamily<KubeLatencyLabels> =
            Family::new_with_constructor(kube_histogram);
        registry.register_with_unit(
            "kube_request_duration",
            "Kubernetes API request latency to the response headers, by verb and resource",
            Unit::Seconds,
            Listed(kube_latency.clone()),
        );
        let canary_duration: HistogramFamily<OutcomeLabels> =
            Family::new_with_constructor(canary_duration_histogram);
        registry.register_with_unit(
            "canary_duration",
            "Canary releases from start to Promoted or Aborted, by outcome",
            Unit::Seconds,
            Listed(canary_duration.clone()),
        );
        let kube_conflicts = Family::<KindLabels, Counter>::default();
        registry.register(
            "kube_write_conflicts",
            "Kubernetes writes refused with 409 Conflict, by resource kind",
            Listed(kube_conflicts.clone()),
        );
        let traffic_drift = Family::<DriftLabels, Counter>::default();
        registry.register(
            "traffic_drift",
            "Foreign changes of a canary's managed weights or routes, by VirtualService",
            Listed(traffic_drift.clone()),
        );
        let alarms_received = Family::<SourceLabels, Counter>::default();
        registry.register(
            "alarms_received",
            "Alarm messages received, by source",
            Listed(alarms_received.clone()),
        );
        let alarms_matched = Family::<AlarmMatchLabels, Counter>::default();
        registry.register(
            "alarms_matched",
            "Alarm messages that matched a canary",
            Listed(alarms_matched.clone()),
        );
        let alarm_rollback_latency = Histogram::new(ROLLBACK_BUCKETS);
        registry.register_with_unit(
            "alarm_rollback_duration",
            "Time from alarm receipt to the rollback being written",
            Unit::Seconds,
            Listed(alarm_rollback_latency.clone()),
        );
        let scheduled_runs = Family::<CanaryPhaseLabels, Counter>::default();
        registry.register(
            "scheduled_runs",
            "Scheduled analysis fire times, by outcome: the run's phase, Skipped (Forbid) or Missed",
            Listed(scheduled_runs.clone()),
        );
        let scheduled_actions = Family::<ScheduledActionLabels, Counter>::default();
        registry.register(
            "scheduled_actions",
            "Actions on scheduled analysis results (rollback, webhook), by outcome",
            Listed(scheduled_actions.clone()),
        );
        let state_save_failures = Family::<StateSaveLabels, Counter>::default();
        registry.register(
            "state_save_failures",
            "Failed saves of a canary's or scheduled analysis' status (state directory or status subresource)",
            Listed(state_save_failures.clone()),
        );
        let notifications_sent = Family::<SinkLabels, Counter>::default();
        registry.register(
            "notifications_sent",
            "Lifecycle notifications delivered (2xx), by sink",
            Listed(notifications_sent.clone()),
        );
        let notifications_failed = Family::<SinkLabels, Counter>::default();
        registry.register(
            "notifications_failed",
            "Lifecycle notifications given up (attempts exhausted, refused, or an undefined sink), by sink",
            Listed(notifications_failed.clone()),
        );
        let notifications_dropped = Family::<SinkLabels, Counter>::default();
        registry.register(
            "notifications_dropped",
            "Lifecycle notifications dropped unsent from a full queue (the oldest goes), by sink",
            Listed(notifications_dropped.clone()),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: root,
                canary_phase,
                canary_weight,
                measurement_value,
                measurement_threshold,
                measurements,
                analysis_runs,
                decisions,
                provider_latency,
                provider_errors,
                provider_requests,
                kube_requests,
                kube_latency,
                canary_duration,
                kube_conflicts,
                traffic_drift,
                alarms_received,
                alarms_matched,
                alarm_rollback_latency,
                scheduled_runs,
                scheduled_actions,
                state_save_failures,
                notifications_sent,
                notifications_failed,
                notifications_dropped,
                unsaved: Mutex::new(BTreeMap::new()),
                series: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The OpenMetrics exposition, ending in `# EOF`.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> Result<String, fmt::Error> {
        let text = self.encode()?;
        Ok(match format {
            Format::OpenMetrics => text,
            Format::Classic => openmetrics_to_classic(&text),
        })
    }

    fn series(&self) -> MutexGuard<'_, HashMap<(String, String), CanarySeries>> {
        // The map only caches label sets; a panic elsewhere cannot leave it inconsistent.
        self.inner
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `skycanary_canary_phase`: 1 for `phase`, 0 for every other phase of this canary.
    pub fn set_canary_phase(&self, namespace: &str, name: &str, phase: CanaryPhase) {
        for candidate in CANARY_PHASES {
            let labels = CanaryPhaseLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                phase: canary_phase_name(candidate).to_string(),
            };
            let value = i64::from(candidate == phase);
            self.inner.canary_phase.get_or_create(&labels).set(value);
        }
        // Known from now on, so `retain_canaries` can drop it when it is no longer declared.
        self.series()
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
    }

    /// Drops every series of canaries for which `keep(namespace, name)` is false (deleted
    /// or no longer declared), so /metrics does not report canaries that are gone.
    pub fn retain_canaries(&self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<(String, String)> = self
            .series()
            .keys()
            .filter(|(ns, n)| !keep(ns, n))
            .cloned()
            .collect();
        for (ns, n) in gone {
            self.remove_canary(&ns, &n);
        }
        self.unsaved()
            .retain(|(kind, ns, n), _| *kind != StateKind::Canary || keep(ns, n));
    }

    /// `skycanary_canary_weight`: the canary weight per VirtualService route, replacing this
    /// canary's previous set (routes no longer selected disappear).
    pub fn set_canary_weights(&self, namespace: &str, name: &str, weights: &[RouteWeights]) {
        let mut series = self.series();
        let entry = series
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        let mut current = HashSet::new();
        for weight in weights {
            let labels = WeightLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                virtual_service: weight.virtual_service.clone(),
                route: weight.route.clone(),
            };
            self.inner
                .canary_weight
                .get_or_create(&labels)
                .set(weight.canary);
            current.insert(labels);
        }
        for stale in entry.weights.difference(&current) {
            self.inner.canary_weight.remove(stale);
        }
        entry.weights = current;
    }

    /// One measurement: counts it in `skycanary_measurements_total{phase}` and, when it has a
    /// value, sets `skycanary_measurement_value` for the run and metric.
    pub fn record_measurement(
        &self,
        namespace: &str,
        name: &str,
        run: &str,
        metric: &str,
        phase: Phase,
        value: Option<f64>,
    ) {
        let counted = MeasurementPhaseLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            metric: metric.to_string(),
            phase: phase.to_string(),
        };
        self.inner.measurements.get_or_create(&counted).inc();
        if let Some(value) = value {
            let labels = MeasurementLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                run: run.to_string(),
                metric: metric.to_string(),
            };
            self.inner
                .measurement_value
                .get_or_create(&labels)
                .set(value);
            self.series()
                .entry((namespace.to_string(), name.to_string()))
                .or_default()
                .values
                .insert(labels);
        }
    }

    /// `skycanary_measurement_threshold{condition}`: the thresholds of the last measurement of
    /// the run and metric, by condition, replacing the previous ones (a condition without a
    /// numeric threshold this time has none).
    pub fn set_measurement_thresholds(
        &self,
        namespace: &str,
        name: &str,
        run: &str,
        metric: &str,
        thresholds: &[(ConditionKind, f64)],
    ) {
        let mut series = self.series();
        let entry = series
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        let labels = |kind: ConditionKind| ThresholdLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            run: run.to_string(),
            metric: metric.to_string(),
            condition: kind.as_str().to_string(),
        };
        for kind in [ConditionKind::Success, ConditionKind::Failure] {
            let l = labels(kind);
            match thresholds.iter().find(|(k, _)| *k == kind) {
                Some((_, value)) => {
                    self.inner
                        .measurement_threshold
                        .get_or_create(&l)
                        .set(*value);
                    entry.thresholds.insert(l);
                }
                None => {
                    if entry.thresholds.remove(&l) {
                        self.inner.measurement_threshold.remove(&l);
                    }
                }
            }
        }
    }

    /// Drops the measurement values and thresholds of a finished run once it is no longer
    /// interesting, so series do not pile up one run after another.
    pub fn forget_run(&self, namespace: &str, name: &str, run: &str) {
        let mut series = self.series();
        if let Some(entry) = series.get_mut(&(namespace.to_string(), name.to_string())) {
            entry.values.retain(|labels| {
                let keep = labels.run != run;
                if !keep {
                    self.inner.measurement_value.remove(labels);
                }
                keep
            });
            entry.thresholds.retain(|labels| {
                let keep = labels.run != run;
                if !keep {
                    self.inner.measurement_threshold.remove(labels);
                }
                keep
            });
        }
    }

    /// `skycanary_analysis_runs_total`: a run of this canary ended in `phase`.
    pub fn analysis_run(&self, namespace: &str, name: &str, phase: Phase) {
        let labels = CanaryPhaseLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            phase: phase.to_string(),
        };
        self.inner.analysis_runs.get_or_create(&labels).inc();
    }

    /// `skycanary_decisions_total`: the controller acted, for `reason` (the Argo-compatible
    /// event reason, e.g. `RolloutAborted`, keeps cardinality bounded).
    pub fn decision(&self, namespace: &str, name: &str, reason: &str) {
        let labels = DecisionLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason: reason.to_string(),
        };
        self.inner.decisions.get_or_create(&labels).inc();
    }

    /// `skycanary_provider_request_duration_seconds`: one request to `address` of `kind`
    /// (e.g. `execExpression`, `readMetricsValues`), success or not.
    pub fn provider_request(&self, address: &str, kind: &str, elapsed: Duration) {
        let labels = ProviderLabels {
            address: address.to_string(),
            kind: kind.to_string(),
        };
        self.inner
            .provider_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// `skycanary_provider_errors_total`: a failed request to `address`; `kind` is the error
    /// kind (e.g. `timeout`, `http`, `graphql`, `decode`).
    pub fn provider_error(&self, address: &str, kind: &str) {
        let labels = ProviderLabels {
            address: address.to_string(),
            kind: kind.to_string(),
        };
        self.inner.provider_errors.get_or_create(&labels).inc();
    }

    /// `skycanary_kube_requests_total` and `skycanary_kube_request_duration_seconds`: one
    /// Kubernetes API request (see [`crate::traffic::kube_observe::classify`]).
    pub fn kube_request(&self, verb: &str, resource: &str, status: &str, elapsed: Duration) {
        let counted = KubeRequestLabels {
            verb: verb.to_string(),
            resource: resource.to_string(),
            status: status.to_string(),
        };
        self.inner.kube_requests.get_or_create(&counted).inc();
        let timed = KubeLatencyLabels {
            verb: verb.to_string(),
            resource: resource.to_string(),
        };
        self.inner
            .kube_latency
            .get_or_create(&timed)
            .observe(elapsed.as_secs_f64());
    }

    /// `skycanary_canary_duration_seconds`: on a canary's `RolloutCompleted` (Promoted) or
    /// `RolloutAborted` (Aborted) event, the time since its run started; other events, or a
    /// canary without a start time, record nothing.
    pub fn canary_event(
        &self,
        reason: &str,
        started_at: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let outcome = match reason {
            "RolloutCompleted" => "Promoted",
            "RolloutAborted" => "Aborted",
            _ => return,
        };
        let Some(started) = started_at else {
            return;
        };
        // A clock that went backwards counts as zero, not as a negative duration.
        let seconds = (now - started).to_std().unwrap_or_default().as_secs_f64();
        self.inner
            .canary_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .observe(seconds);
    }

    /// `skycanary_kube_write_conflicts_total`: a write to a `kind` object got 409 Conflict.
    pub fn kube_write_conflict(&self, kind: &str) {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.inner.kube_conflicts.get_or_create(&labels).inc();
    }

    /// `skycanary_traffic_drift_total`: someone else changed the weights or managed routes
    /// this canary holds in `virtual_service` (counted once per foreign change).
    pub fn traffic_drift(&self, namespace: &str, name: &str, virtual_service: &str) {
        let labels = DriftLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            virtual_service: virtual_service.to_string(),
        };
        self.inner.traffic_drift.get_or_create(&labels).inc();
    }

    /// `skycanary_alarms_received_total`: `count` alarm messages parsed from one payload.
    pub fn alarms_received(&self, source: AlarmSource, count: u64) {
        let labels = SourceLabels {
            source: source.as_str().to_string(),
        };
        self.inner
            .alarms_received
            .get_or_create(&labels)
            .inc_by(count);
    }

    /// `skycanary_alarms_matched_total`: an alarm from `source` matched this canary's rollback
    /// rules. The alarm's rule and entity are in logs, status and Events, not in labels: at
    /// most one series per canary and source.
    pub fn alarm_matched(&self, namespace: &str, name: &str, source: AlarmSource) {
        let labels = AlarmMatchLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: source.as_str().to_string(),
        };
        self.inner.alarms_matched.get_or_create(&labels).inc();
    }

    /// `skycanary_alarm_rollback_duration_seconds`: alarm receipt to rollback written.
    pub fn alarm_rollback_latency(&self, elapsed: Duration) {
        self.inner
            .alarm_rollback_latency
            .observe(elapsed.as_secs_f64());
    }

    /// `skycanary_scheduled_runs_total`: a fire time of scheduled analysis `namespace/name`
    /// ended as `outcome` (a run phase, `Skipped` or `Missed`).
    pub fn scheduled_run(&self, namespace: &str, name: &str, outcome: &str) {
        let labels = CanaryPhaseLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            phase: outcome.to_string(),
        };
        self.inner.scheduled_runs.get_or_create(&labels).inc();
    }

    /// `skycanary_scheduled_actions_total`: an `action` (`rollback`, `webhook`) on a scheduled
    /// analysis' result ended `outcome` (`Succeeded`, `Failed`).
    pub fn scheduled_action(&self, namespace: &str, name: &str, action: &str, outcome: &str) {
        let labels = ScheduledActionLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            action: action.to_string(),
            outcome: outcome.to_string(),
        };
        self.inner.scheduled_actions.get_or_create(&labels).inc();
    }

    /// `skycanary_notifications_{sent,failed,dropped}_total` for `sink`.
    fn notification(&self, family: &Family<SinkLabels, Counter>, sink: &str) {
        family
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .inc();
    }

    fn unsaved(&self) -> MutexGuard<'_, BTreeMap<(StateKind, String, String), UnsavedState>> {
        // Each entry is replaced whole; a panic elsewhere cannot leave one half-written.
        self.inner
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A status save of `kind` `namespace/name` failed: counts it in
    /// `skycanary_state_save_failures_total` and keeps the object in [`Metrics::unsaved_states`]
    /// (so `/readyz` says not ready) until [`Metrics::state_saved`].
    pub fn state_save_failed(&self, kind: StateKind, namespace: &str, name: &str, error: &str) {
        let labels = StateSaveLabels {
            kind: kind.as_str().to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.inner.state_save_failures.get_or_create(&labels).inc();
        let mut unsaved = self.unsaved();
        let entry = unsaved
            .entry((kind, namespace.to_string(), name.to_string()))
            .or_insert_with(|| UnsavedState {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
                error: String::new(),
                failures: 0,
            });
        entry.error = error.to_string();
        entry.failures = entry.failures.saturating_add(1);
    }

    /// A status save of `kind` `namespace/name` landed: it no longer holds `/readyz` back.
    pub fn state_saved(&self, kind: StateKind, namespace: &str, name: &str) {
        self.unsaved()
            .remove(&(kind, namespace.to_string(), name.to_string()));
    }

    /// Objects whose latest status is not saved, ordered by kind, namespace and name.
    pub fn unsaved_states(&self) -> Vec<UnsavedState> {
        self.unsaved().values().cloned().collect()
    }

    /// Drops every gauge series of a deleted canary (counters stay: they are cumulative), and
    /// its unsaved status: its task is gone, and nothing will save it again.
    pub fn remove_canary(&self, namespace: &str, name: &str) {
        self.state_saved(StateKind::Canary, namespace, name);
        for phase in CANARY_PHASES {
            self.inner.canary_phase.remove(&CanaryPhaseLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                phase: canary_phase_name(phase).to_string(),
            });
        }
        let removed = self
            .series()
            .remove(&(namespace.to_string(), name.to_string()));
        if let Some(entry) = removed {
            for labels in &entry.weights {
                self.inner.canary_weight.remove(labels);
            }
            for labels in &entry.values {
                self.inner.measurement_value.remove(labels);
            }
            for labels in &entry.thresholds {
                self.inner.measurement_threshold.remove(labels);
            }
        }
    }
}

impl crate::provider::skywalking::RequestObserver for Metrics {
    fn observe(
        &self,
        address: &str,
        kind: &str,
        elapsed: Duration,
        error: Option<&crate::provider::skywalking::ProviderError>,
    ) {
        self.provider_request(address, kind, elapsed);
        let status = match error {
            None => "ok",
            Some(crate::provider::skywalking::ProviderError::Http { status, .. }) => {
                crate::traffic::kube_observe::status_class(*status)
            }
            Some(e) => e.kind(),
        };
        self.inner
            .provider_requests
            .get_or_create(&ProviderRequestLabels {
                address: address.to_string(),
                kind: kind.to_string(),
                status: status.to_string(),
            })
            .inc();
        if let Some(e) = error {
            self.provider_error(address, e.kind());
        }
    }
}

impl crate::task::SaveMetrics for Metrics {
    fn state_save_failed(&self, kind: StateKind, namespace: &str, name: &str, error: &str) {
        Metrics::state_save_failed(self, kind, namespace, name, error);
    }
    fn state_saved(&self, kind: StateKind, namespace: &str, name: &str) {
        Metrics::state_saved(self, kind, namespace, name);
    }
}

impl crate::canary::driver::CanaryMetrics for Metrics {
    fn set_canary_phase(&self, namespace: &str, name: &str, phase: CanaryPhase) {
        Metrics::set_canary_phase(self, namespace, name, phase);
    }
    fn set_canary_weights(&self, namespace: &str, name: &str, weights: &[RouteWeights]) {
        Metrics::set_canary_weights(self, namespace, name, weights);
    }
    fn record_measurement(
        &self,
        namespace: &str,
        name: &str,
        run: &str,
        metric: &str,
        phase: Phase,
        value: Option<f64>,
    ) {
        Metrics::record_measurement(self, namespace, name, run, metric, phase, value);
    }
    fn set_measurement_thresholds(
        &self,
        namespace: &str,
        name: &str,
        run: &str,
        metric: &str,
        thresholds: &[(crate::analysis::ConditionKind, f64)],
    ) {
        Metrics::set_measurement_thresholds(self, namespace, name, run, metric, thresholds);
    }
    fn forget_run(&self, namespace: &str, name: &str, run: &str) {
        Metrics::forget_run(self, namespace, name, run);
    }
    fn analysis_run(&self, namespace: &str, name: &str, phase: Phase) {
        Metrics::analysis_run(self, namespace, name, phase);
    }
    fn canary_event(
        &self,
        reason: &str,
        started_at: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        Metrics::canary_event(self, reason, started_at, now);
    }
    fn decision(&self, namespace: &str, name: &str, reason: &str) {
        Metrics::decision(self, namespace, name, reason);
    }
    fn kube_write_conflict(&self, kind: &str) {
        Metrics::kube_write_conflict(self, kind);
    }
    fn traffic_drift(&self, namespace: &str, name: &str, virtual_service: &str) {
        Metrics::traffic_drift(self, namespace, name, virtual_service);
    }
    fn alarm_matched(&self, namespace: &str, name: &str, source: AlarmSource) {
        Metrics::alarm_matched(self, namespace, name, source);
    }
    fn alarm_rollback_latency(&self, elapsed: Duration) {
        Metrics::alarm_rollback_latency(self, elapsed);
    }
}

impl crate::schedule::driver::ScheduleMetrics for Metrics {
    fn scheduled_run(&self, namespace: &str, name: &str, outcome: &str) {
        Metrics::scheduled_run(self, namespace, name, outcome);
    }
    fn scheduled_action(&self, namespace: &str, name: &str, action: &str, outcome: &str) {
        Metrics::scheduled_action(self, namespace, name, action, outcome);
    }
}

impl crate::traffic::kube_observe::KubeRequestObserver for Metrics {
    fn observe(&self, verb: &str, resource: &str, status: &str, elapsed: Duration) {
        self.kube_request(verb, resource, status, elapsed);
    }
}

impl crate::notify::NotifyMetrics for Metrics {
    fn notification_sent(&self, sink: &str) {
        self.notification(&self.inner.notifications_sent, sink);
    }

    fn notification_failed(&self, sink: &str) {
        self.notification(&self.inner.notifications_failed, sink);
    }

    fn notification_dropped(&self, sink: &str) {
        self.notification(&self.inner.notifications_dropped, sink);
    }
}
