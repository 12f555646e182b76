//! Canned data sets for trying templates offline (`skycanary analyze --simulator SCENARIO`).
//!
//! A scenario serves the usual service metrics for every entity a plan queries, so any
//! bundled or user template can be exercised without an OAP.

use std::collections::BTreeSet;

use chrono::{DateTime, Timelike, Utc};

use super::{OapProfile, SimEntity, Simulator};

/// What the simulated service looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Apdex ~9950, SLA 99.9 %, p99 180 ms, 120 calls/min.
    Healthy,
    /// Apdex ~8600, SLA 96 %, p99 1.4 s: a regression.
    Degraded,
    /// No traffic at all: every bucket is empty.
    NoTraffic,
    /// Healthy values, but every third minute is missing.
    Partial,
}

/// Base values of one scenario for a metric, before per-minute wobble.
fn base(scenario: Scenario, metric: &str) -> Option<f64> {
    let healthy = matches!(scenario, Scenario::Healthy | Scenario::Partial);
    Some(match (metric, healthy) {
        ("service_apdex" | "service_instance_apdex", true) => 9950.0,
        ("service_apdex" | "service_instance_apdex", false) => 8600.0,
        ("service_sla" | "service_instance_sla" | "endpoint_sla", true) => 9990.0,
        ("service_sla" | "service_instance_sla" | "endpoint_sla", false) => 9600.0,
        ("service_cpm" | "service_instance_cpm" | "endpoint_cpm", _) => 120.0,
        ("service_resp_time" | "service_instance_resp_time" | "endpoint_resp_time", true) => 80.0,
        ("service_resp_time" | "service_instance_resp_time" | "endpoint_resp_time", false) => 640.0,
        _ => return None,
    })
}

/// Percentiles (p50, p75, p90, p95, p99) in ms.
fn percentiles(scenario: Scenario) -> [f64; 5] {
    match scenario {
        Scenario::Degraded => [420.0, 610.0, 880.0, 1100.0, 1400.0],
        _ => [40.0, 60.0, 90.0, 120.0, 180.0],
    }
}

/// A small deterministic wobble so series do not look flat (never crosses a threshold).
fn wobble(t: DateTime<Utc>, amplitude: f64) -> f64 {
    let m = (t.minute() % 5) as f64;
    (m - 2.0) * amplitude / 2.0
}

fn value_at(scenario: Scenario, base: f64, t: DateTime<Utc>, cap: Option<f64>) -> Option<f64> {
    match scenario {
        Scenario::NoTraffic => None,
        Scenario::Partial if t.minute().is_multiple_of(3) => None,
        _ => {
            let v = (base + wobble(t, base * 0.002)).round();
            Some(cap.map_or(v, |c| v.min(c)))
        }
    }
}

impl Scenario {
    /// Serves this scenario for every entity in `services` (service names).
    pub fn install_services(
        self,
        sim: &Simulator,
        services: &BTreeSet<String>,
        profile: OapProfile,
    ) {
        const METRICS: [&str; 5] = [
            "service_apdex",
            "service_sla",
            "service_cpm",
            "service_resp_time",
            "service_percentile",
        ];
        for svc in services {
            for metric in METRICS {
                let entity = SimEntity::service(svc.clone());
                if metric == "service_percentile" {
                    let labels: Vec<String> = match profile.percentile_label_key() {
                        "p" => ["50", "75", "90", "95", "99"]
                            .iter()
                            .map(|p| format!("p={p}"))
                            .collect(),
                        key => (0..5).map(|i| format!("{key}={i}")).collect(),
                    };
                    for (i, label) in labels.iter().enumerate() {
                        let b = percentiles(self)[i];
                        sim.set_labeled_series(metric, entity.clone(), label, move |t| {
                            value_at(self, b, t, None)
                        });
                    }
                } else if let Some(b) = base(self, metric) {
                    let cap = matches!(metric, "service_apdex" | "service_sla").then_some(10000.0);
                    sim.set_series(metric, entity, move |t| value_at(self, b, t, cap));
                }
            }
        }
    }
}
