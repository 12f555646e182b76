//! Scripted metric data, metadata and alarms held by a simulator.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::duration::Points;

/// A value source: the metric value for the minute bucket starting at the instant (None = no data).
pub type SeriesFn = Arc<dyn Fn(DateTime<Utc>) -> Option<f64> + Send + Sync>;

/// An entity the simulator holds data for. Always a "normal" (real) service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SimEntity {
    Service { name: String },
    Instance { service: String, instance: String },
    Endpoint { service: String, endpoint: String },
}

/// `base64(name).1`, OAP's id of a normal service.
pub fn service_id(name: &str) -> String {
    format!("{}.1", b64(name))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

impl SimEntity {
    pub fn service(name: impl Into<String>) -> Self {
        SimEntity::Service { name: name.into() }
    }

    pub fn instance(service: impl Into<String>, instance: impl Into<String>) -> Self {
        SimEntity::Instance {
            service: service.into(),
            instance: instance.into(),
        }
    }

    pub fn endpoint(service: impl Into<String>, endpoint: impl Into<String>) -> Self {
        SimEntity::Endpoint {
            service: service.into(),
            endpoint: endpoint.into(),
        }
    }

    /// OAP's entity id (`serviceId`, `serviceId_base64(instance)`, `serviceId_base64(endpoint)`).
    pub fn id(&self) -> String {
        match self {
            SimEntity::Service { name } => service_id(name),
            SimEntity::Instance { service, instance } => {
                format!("{}_{}", service_id(service), b64(instance))
            }
            SimEntity::Endpoint { service, endpoint } => {
                format!("{}_{}", service_id(service), b64(endpoint))
            }
        }
    }

    /// The service this entity belongs to.
    pub fn service_name(&self) -> &str {
        match self {
            SimEntity::Service { name } => name,
            SimEntity::Instance { service, .. } | SimEntity::Endpoint { service, .. } => service,
        }
    }

    /// The GraphQL `Scope` value.
    pub fn scope(&self) -> &'static str {
        match self {
            SimEntity::Service { .. } => "Service",
            SimEntity::Instance { .. } => "ServiceInstance",
            SimEntity::Endpoint { .. } => "Endpoint",
        }
    }

    /// The alarm `name` OAP renders for this entity.
    pub fn display_name(&self) -> String {
        match self {
            SimEntity::Service { name } => name.clone(),
            SimEntity::Instance { service, instance } => format!("{instance} of {service}"),
            SimEntity::Endpoint { service, endpoint } => format!("{endpoint} in {service}"),
        }
    }
}

/// A label of a labeled metric: `p=99` → (`p`, `99`); a bare `0` → (`_`, `0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl Label {
    pub fn parse(s: &str) -> Label {
        match s.split_once('=') {
            Some((k, v)) => Label {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            },
            None => Label {
                key: "_".to_string(),
                value: s.trim().to_string(),
            },
        }
    }
}

/// An alarm returned by `getAlarm`.
#[derive(Debug, Clone)]
pub struct SimAlarm {
    pub start_time: DateTime<Utc>,
    pub entity: SimEntity,
    pub rule_name: String,
    pub message: String,
    pub tags: Vec<(String, String)>,
    /// 10.4+: set once recovered.
    pub recovery_time: Option<DateTime<Utc>>,
    /// 10.2+: the MQE rule expression shown in `snapshot`.
    pub expression: String,
}

impl SimAlarm {
    /// A firing alarm with no tags.
    pub fn new(entity: SimEntity, start_time: DateTime<Utc>, message: impl Into<String>) -> Self {
        SimAlarm {
            start_time,
            entity,
            rule_name: "sim_rule".to_string(),
            message: message.into(),
            tags: Vec::new(),
            recovery_time: None,
            expression: String::new(),
        }
    }
}

/// Metrics OAP always knows about (so an unscripted one reads as "no data", not "unknown").
pub const BUILTIN_METRICS: &[&str] = &[
    "service_apdex",
    "service_sla",
    "service_resp_time",
    "service_cpm",
    "service_instance_sla",
    "service_instance_resp_time",
    "service_instance_cpm",
    "endpoint_cpm",
    "endpoint_resp_time",
    "endpoint_sla",
];

/// Labeled built-ins (percentiles).
pub const BUILTIN_LABELED: &[&str] = &[
    "service_percentile",
    "endpoint_percentile",
    "service_instance_percentile",
];

/// What the simulator serves: the scripted series (plain and labeled), the services and
/// instances that exist, and the alarms it reports.
#[derive(Default)]
pub struct SimData {
    pub series: Vec<(String, String, SeriesFn)>,
    pub labeled: Vec<(String, String, Label, SeriesFn)>,
    pub services: BTreeSet<String>,
    pub instances: Vec<(String, String)>,
    pub alarms: Vec<SimAlarm>,
}

/// What the store knows about a metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Unknown,
    Regular,
    Labeled,
}

impl SimData {
    pub fn metric_kind(&self, metric: &str) -> MetricKind {
        if BUILTIN_LABELED.contains(&metric) || self.labeled.iter().any(|(m, ..)| m == metric) {
            MetricKind::Labeled
        } else if BUILTIN_METRICS.contains(&metric) || self.series.iter().any(|(m, ..)| m == metric)
        {
            MetricKind::Regular
        } else {
            MetricKind::Unknown
        }
    }

    /// All known metric names, sorted.
    pub fn metric_names(&self) -> Vec<(String, MetricKind)> {
        let mut names: BTreeSet<String> = BUILTIN_METRICS.iter().map(|s| s.to_string()).collect();
        names.extend(BUILTIN_LABELED.iter().map(|s| s.to_string()));
        names.extend(self.series.iter().map(|(m, ..)| m.clone()));
        names.extend(self.labeled.iter().map(|(m, ..)| m.clone()));
        names
            .into_iter()
            .map(|n| {
                let k = self.metric_kind(&n);
                (n, k)
            })
            .collect()
    }

    pub fn find_series(&self, metric: &str, entity_id: &str) -> Option<SeriesFn> {
        self.series
            .iter()
            .rev()
            .find(|(m, e, _)| m == metric && e == entity_id)
            .map(|(.., f)| f.clone())
    }

    /// Labeled series for an entity, newest registration per label wins, sorted by label.
    pub fn find_labeled(&self, metric: &str, entity_id: &str) -> Vec<(Label, SeriesFn)> {
        let mut out: Vec<(Label, SeriesFn)> = Vec::new();
        for (m, e, l, f) in &self.labeled {
            if m == metric && e == entity_id {
                out.retain(|(x, _)| x != l);
                out.push((l.clone(), f.clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn knows_service(&self, name: &str) -> bool {
        self.services.contains(name)
    }
}

/// Evaluates a series over the query points: minute data, averaged for HOUR/DAY,
/// nothing for SECOND and nothing for buckets that start after `now`.
pub fn sample(f: Option<&SeriesFn>, pts: &Points, now: DateTime<Utc>) -> Vec<Option<f64>> {
    let minutes = pts.step.minutes();
    pts.points
        .iter()
        .map(|p| {
            let f = f?;
            if minutes == 0 || p.start > now {
                return None;
            }
            let mut sum = 0.0;
            let mut n = 0u32;
            for i in 0..minutes {
                let t = p.start + ChronoDuration::minutes(i);
                if t > now {
                    break;
                }
                if let Some(v) = f(t) {
                    sum += v;
                    n += 1;
                }
            }
            (n > 0).then(|| sum / f64::from(n))
        })
        .collect()
}
