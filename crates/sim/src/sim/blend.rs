//! Closed-loop traffic: a service whose metrics blend the behaviour of its versions by the
//! traffic weights actually routed to each of them.
//!
//! A canary controller that moves weights then sees the consequences in its measurements —
//! nothing is scripted per step. Calls are split by weight; the service's apdex, SLA and
//! response time are the call-weighted means of its versions' values (Σ shareᵢ × valueᵢ);
//! a minute bucket averages every weight that was in effect during that minute, up to now.
//! A version may degrade above a share of traffic (an overload), so a regression can show
//! only once the canary carries enough traffic.
//!
//! Weights come from a [`WeightsProvider`] polled by [`BlendedService::follow`] (the demo
//! reads the VirtualService through the file store), or are recorded directly.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Timelike, Utc};

use super::{Clock, SimEntity, Simulator};

/// Traffic weight per version (any scale: only the shares matter).
pub type Weights = BTreeMap<String, f64>;

/// Values of one version at some traffic share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VersionValues {
    /// Apdex, 10000 = 1.0.
    pub apdex: f64,
    /// Successful calls, 10000 = 100 %.
    pub sla: f64,
    /// Mean response time, ms.
    pub resp_time_ms: f64,
}

impl VersionValues {
    /// A healthy version: apdex 0.995, SLA 99.9 %, 80 ms.
    pub const HEALTHY: VersionValues = VersionValues {
        apdex: 9950.0,
        sla: 9990.0,
        resp_time_ms: 80.0,
    };
}

/// A degradation that sets in when a version carries more than `above_share` of the calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overload {
    /// Share of all calls (0..1) above which the version is overloaded.
    pub above_share: f64,
    /// Its values when overloaded.
    pub values: VersionValues,
}

/// How one version behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VersionBehaviour {
    /// Values under normal load.
    pub normal: VersionValues,
    /// Optional degradation under load.
    pub overload: Option<Overload>,
}

impl VersionBehaviour {
    /// A version with these values whatever its share.
    pub fn steady(values: VersionValues) -> Self {
        VersionBehaviour {
            normal: values,
            overload: None,
        }
    }

    /// A version that degrades to `values` above `above_share` of the traffic.
    pub fn overloaded_above(mut self, above_share: f64, values: VersionValues) -> Self {
        self.overload = Some(Overload {
            above_share,
            values,
        });
        self
    }

    /// Its values when it carries `share` (0..1) of the calls.
    pub fn at(&self, share: f64) -> VersionValues {
        match self.overload {
            Some(o) if share > o.above_share => o.values,
            _ => self.normal,
        }
    }
}

/// Metrics a blended service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlendMetric {
    /// `service_apdex`.
    Apdex,
    /// `service_sla` / `service_instance_sla`.
    Sla,
    /// `service_resp_time` / `service_instance_resp_time`.
    RespTime,
    /// `service_cpm` / `service_instance_cpm`: calls per minute.
    Cpm,
}

impl BlendMetric {
    fn of(self, v: &VersionValues) -> f64 {
        match self {
            BlendMetric::Apdex => v.apdex,
            BlendMetric::Sla => v.sla,
            BlendMetric::RespTime => v.resp_time_ms,
            BlendMetric::Cpm => 0.0,
        }
    }

    /// Relative amplitude of the per-minute wobble (never enough to cross a threshold).
    fn wobble_amplitude(self) -> f64 {
        match self {
            BlendMetric::Apdex | BlendMetric::Sla => 0.0008,
            BlendMetric::RespTime | BlendMetric::Cpm => 0.05,
        }
    }
}

/// When which weights were in effect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightHistory {
    changes: Vec<(DateTime<Utc>, Weights)>,
}

impl WeightHistory {
    /// Records the weights seen at `at`; returns whether they differ from the last ones.
    /// An observation older than the last one is taken as happening at the last one's time.
    pub fn record(&mut self, at: DateTime<Utc>, weights: Weights) -> bool {
        match self.changes.last() {
            Some((_, last)) if *last == weights => false,
            Some((t, _)) => {
                let at = at.max(*t);
                self.changes.push((at, weights));
                true
            }
            None => {
                self.changes.push((at, weights));
                true
            }
        }
    }

    /// Every change, oldest first.
    pub fn changes(&self) -> &[(DateTime<Utc>, Weights)] {
        &self.changes
    }

    /// The weights in effect at `t`. Before the first observation the first one is assumed
    /// (the routing was in place before it was first read); `None` before any observation.
    pub fn at(&self, t: DateTime<Utc>) -> Option<&Weights> {
        let first = self.changes.first()?;
        Some(
            self.changes
                .iter()
                .rev()
                .find(|(at, _)| *at <= t)
                .map_or(&first.1, |(_, w)| w),
        )
    }

    /// `[from, to)` cut into pieces of constant weights: (seconds, weights).
    pub fn segments(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(f64, Weights)> {
        let mut out = Vec::new();
        if to <= from {
            return out;
        }
        let Some(mut current) = self.at(from) else {
            return out;
        };
        let mut start = from;
        for (at, w) in &self.changes {
            if *at <= from {
                continue;
            }
            if *at >= to {
                break;
            }
            out.push((seconds(*at - start), current.clone()));
            start = *at;
            current = w;
        }
        out.push((seconds(to - start), current.clone()));
        out.retain(|(s, _)| *s > 0.0);
        out
    }
}

fn seconds(d: ChronoDuration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// Shares (0..1) of the weights; empty when nothing carries traffic.
fn shares(w: &Weights) -> BTreeMap<&str, f64> {
    let total: f64 = w.values().filter(|v| v.is_finite() && **v > 0.0).sum();
    if total <= 0.0 {
        return BTreeMap::new();
    }
    w.iter()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(k, v)| (k.as_str(), v / total))
        .collect()
}

/// A small deterministic per-minute wobble in [-1, 1], so charts do not look flat.
fn wobble(minute: DateTime<Utc>) -> f64 {
    let n = minute.timestamp().div_euclid(60);
    (n.wrapping_mul(7919).rem_euclid(11)) as f64 / 5.0 - 1.0
}

/// Where the routed weights come from.
pub trait WeightsProvider: Send + Sync + 'static {
    /// The weights routed now, per version.
    fn weights(&self) -> Pin<Box<dyn Future<Output = Result<Weights, String>> + Send + '_>>;
}

/// A service of several versions whose metrics follow the routed weights.
#[derive(Clone)]
pub struct BlendedService {
    service: String,
    pod_prefix: String,
    total_cpm: f64,
    versions: Arc<BTreeMap<String, VersionBehaviour>>,
    history: Arc<Mutex<WeightHistory>>,
    clock: Clock,
}

impl std::fmt::Debug for BlendedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlendedService")
            .field("service", &self.service)
            .field("total_cpm", &self.total_cpm)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl BlendedService {
    /// `service` (e.g. `reviews.bookinfo`) receiving `total_cpm` calls per minute, its
    /// versions, and the clock that says "now" (use the simulator's).
    pub fn new(
        service: impl Into<String>,
        total_cpm: f64,
        versions: BTreeMap<String, VersionBehaviour>,
        clock: Clock,
    ) -> Self {
        let service = service.into();
        let pod_prefix = service.split('.').next().unwrap_or_default().to_string();
        BlendedService {
            service,
            pod_prefix,
            total_cpm,
            versions: Arc::new(versions),
            history: Arc::new(Mutex::new(WeightHistory::default())),
            clock,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The simulated pod (instance) name of a version: `reviews-v2-sim`.
    pub fn instance_name(&self, version: &str) -> String {
        format!("{}-{version}-sim", self.pod_prefix)
    }

    fn history(&self) -> std::sync::MutexGuard<'_, WeightHistory> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the weights routed at `at`; returns whether they changed.
    pub fn record(&self, at: DateTime<Utc>, weights: Weights) -> bool {
        self.history().record(at, weights)
    }

    /// A copy of the weight history.
    pub fn weight_history(&self) -> WeightHistory {
        self.history().clone()
    }

    /// Polls `provider` every `every` (real time) and records what it reads at the clock's
    /// now. A failed read keeps the last known weights: traffic keeps flowing as last routed.
    pub fn follow(&self, provider: impl WeightsProvider, every: Duration) -> FollowHandle {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match provider.weights().await {
                    Ok(w) => {
                        me.record((me.clock)(), w);
                    }
                    Err(e) => {
                        tracing::warn!(service = %me.service, "cannot read routed weights: {e}")
                    }
                }
            }
        });
        FollowHandle { task }
    }

    /// The per-segment call shares of the minute bucket starting at `minute`, up to now.
    fn minute_segments(&self, minute: DateTime<Utc>) -> Vec<(f64, Weights)> {
        let now = (self.clock)();
        let end = (minute + ChronoDuration::minutes(1)).min(now);
        self.history().segments(minute, end)
    }

    /// The service's value of `metric` for the minute starting at `minute` (None: no data —
    /// no traffic, or a minute not started yet).
    pub fn service_value(&self, metric: BlendMetric, minute: DateTime<Utc>) -> Option<f64> {
        let segs = self.minute_segments(minute);
        let span: f64 = segs.iter().map(|(s, _)| s).sum();
        if span <= 0.0 {
            return None;
        }
        let mut weighted = 0.0;
        let mut calls = 0.0;
        for (secs, w) in &segs {
            for (version, share) in shares(w) {
                let Some(b) = self.versions.get(version) else {
                    continue;
                };
                weighted += secs * share * metric.of(&b.at(share));
                calls += secs * share;
            }
        }
        if calls <= 0.0 {
            return None;
        }
        let value = match metric {
            BlendMetric::Cpm => self.total_cpm * calls / span,
            _ => weighted / calls,
        };
        Some(self.finish(metric, value, minute))
    }

    /// One version's (pod's) value of `metric` for the minute starting at `minute`; None
    /// when it had no calls.
    pub fn instance_value(
        &self,
        version: &str,
        metric: BlendMetric,
        minute: DateTime<Utc>,
    ) -> Option<f64> {
        let b = self.versions.get(version)?;
        let segs = self.minute_segments(minute);
        let span: f64 = segs.iter().map(|(s, _)| s).sum();
        let mut weighted = 0.0;
        let mut calls = 0.0;
        for (secs, w) in &segs {
            if let Some(share) = shares(w).get(version).copied() {
                weighted += secs * share * metric.of(&b.at(share));
                calls += secs * share;
            }
        }
        if calls <= 0.0 || span <= 0.0 {
            return None;
        }
        let value = match metric {
            BlendMetric::Cpm => self.total_cpm * calls / span,
            _ => weighted / calls,
        };
        Some(self.finish(metric, value, minute))
    }

    /// Wobble, OAP's integer rounding, and the 10000 cap of ratios.
    fn finish(&self, metric: BlendMetric, value: f64, minute: DateTime<Utc>) -> f64 {
        let v = (value * (1.0 + metric.wobble_amplitude() * wobble(minute))).round();
        match metric {
            BlendMetric::Apdex | BlendMetric::Sla => v.clamp(0.0, 10000.0),
            _ => v.max(0.0),
        }
    }

    /// Serves the service's `service_apdex`, `service_sla`, `service_resp_time` and
    /// `service_cpm`, and per version a pod with `service_instance_sla`,
    /// `service_instance_resp_time` and `service_instance_cpm`.
    pub fn install(&self, sim: &Simulator) {
        let svc = SimEntity::service(self.service.clone());
        for (name, metric) in [
            ("service_apdex", BlendMetric::Apdex),
            ("service_sla", BlendMetric::Sla),
            ("service_resp_time", BlendMetric::RespTime),
            ("service_cpm", BlendMetric::Cpm),
        ] {
            let me = self.clone();
            sim.set_series(name, svc.clone(), move |t| {
                me.service_value(metric, minute_of(t))
            });
        }
        for version in self.versions.keys() {
            let instance = self.instance_name(version);
            sim.add_instance(&self.service, &instance);
            let entity = SimEntity::instance(self.service.clone(), instance);
            for (name, metric) in [
                ("service_instance_sla", BlendMetric::Sla),
                ("service_instance_resp_time", BlendMetric::RespTime),
                ("service_instance_cpm", BlendMetric::Cpm),
            ] {
                let me = self.clone();
                let version = version.clone();
                sim.set_series(name, entity.clone(), move |t| {
                    me.instance_value(&version, metric, minute_of(t))
                });
            }
        }
    }
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// The polling task of [`BlendedService::follow`]; stops when dropped.
#[derive(Debug)]
pub struct FollowHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FollowHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(min: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 10, min, sec)
            .single()
            .unwrap_or_default()
    }

    fn w(pairs: &[(&str, f64)]) -> Weights {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn values(apdex: f64, sla: f64, resp: f64) -> VersionValues {
        VersionValues {
            apdex,
            sla,
            resp_time_ms: resp,
        }
    }

    /// v1 apdex 9000, v2 apdex 8000 (round numbers; wobble is checked separately).
    fn service(now: DateTime<Utc>) -> BlendedService {
        let versions = BTreeMap::from([
            (
                "v1".to_string(),
                VersionBehaviour::steady(values(9000.0, 9900.0, 100.0)),
            ),
            (
                "v2".to_string(),
                VersionBehaviour::steady(values(8000.0, 9000.0, 300.0))
                    .overloaded_above(0.25, values(5000.0, 8000.0, 900.0)),
            ),
        ]);
        BlendedService::new("reviews.bookinfo", 100.0, versions, Arc::new(move || now))
    }

    /// The value without the wobble of its minute.
    fn unwobbled(metric: BlendMetric, v: f64, minute: DateTime<Utc>) -> f64 {
        v / (1.0 + metric.wobble_amplitude() * wobble(minute))
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn history_records_changes_only() {
        let mut h = WeightHistory::default();
        assert!(h.record(t(0, 0), w(&[("v1", 100.0)])));
        assert!(!h.record(t(0, 5), w(&[("v1", 100.0)])));
        assert!(h.record(t(0, 10), w(&[("v1", 90.0), ("v2", 10.0)])));
        assert_eq!(h.changes().len(), 2);
        // An out-of-order observation is placed at the last change's time, not before it.
        assert!(h.record(t(0, 1), w(&[("v1", 70.0), ("v2", 30.0)])));
        assert_eq!(h.changes()[2].0, t(0, 10));
    }

    #[test]
    fn history_at_and_segments() {
        let mut h = WeightHistory::default();
        assert_eq!(h.at(t(0, 0)), None);
        assert!(h.segments(t(0, 0), t(1, 0)).is_empty());
        h.record(t(0, 30), w(&[("v1", 100.0)]));
        h.record(t(1, 15), w(&[("v1", 90.0), ("v2", 10.0)]));
        // Before the first observation, the first weights are assumed.
        assert_eq!(h.at(t(0, 0)), Some(&w(&[("v1", 100.0)])));
        assert_eq!(h.at(t(1, 15)), Some(&w(&[("v1", 90.0), ("v2", 10.0)])));
        let segs = h.segments(t(1, 0), t(2, 0));
        assert_eq!(
            segs,
            vec![
                (15.0, w(&[("v1", 100.0)])),
                (45.0, w(&[("v1", 90.0), ("v2", 10.0)]))
            ]
        );
        assert!(h.segments(t(2, 0), t(1, 0)).is_empty());
    }

    #[test]
    fn service_value_blends_by_share() {
        let s = service(t(5, 0));
        s.record(t(0, 0), w(&[("v1", 80.0), ("v2", 20.0)]));
        let m = t(1, 0);
        let apdex = s.service_value(BlendMetric::Apdex, m).unwrap();
        assert!(close(
            unwobbled(BlendMetric::Apdex, apdex, m),
            0.8 * 9000.0 + 0.2 * 8000.0,
            1.0
        ));
        let cpm = s.service_value(BlendMetric::Cpm, m).unwrap();
        assert!(close(unwobbled(BlendMetric::Cpm, cpm, m), 100.0, 1.0));
        // Calls split by weight.
        let v2 = s.instance_value("v2", BlendMetric::Cpm, m).unwrap();
        assert!(close(unwobbled(BlendMetric::Cpm, v2, m), 20.0, 1.0));
        let v2_rt = s.instance_value("v2", BlendMetric::RespTime, m).unwrap();
        assert!(close(
            unwobbled(BlendMetric::RespTime, v2_rt, m),
            300.0,
            1.0
        ));
    }

    #[test]
    fn overload_degrades_above_its_share() {
        let s = service(t(5, 0));
        s.record(t(0, 0), w(&[("v1", 70.0), ("v2", 30.0)]));
        let m = t(1, 0);
        let apdex = s.service_value(BlendMetric::Apdex, m).unwrap();
        assert!(close(
            unwobbled(BlendMetric::Apdex, apdex, m),
            0.7 * 9000.0 + 0.3 * 5000.0,
            1.0
        ));
    }

    #[test]
    fn a_weight_change_mid_minute_is_time_weighted() {
        let s = service(t(5, 0));
        s.record(t(0, 0), w(&[("v1", 100.0)]));
        s.record(t(1, 30), w(&[("v1", 50.0), ("v2", 50.0)]));
        let m = t(1, 0);
        let apdex = s.service_value(BlendMetric::Apdex, m).unwrap();
        // Half the minute all v1 (9000), half 50/50 with v2 overloaded (5000): 9000*0.5 + 7000*0.5.
        assert!(close(unwobbled(BlendMetric::Apdex, apdex, m), 8000.0, 1.0));
        // v2 served calls for half the minute only: 50 % of 100 cpm over 30 of 60 s.
        let v2 = s.instance_value("v2", BlendMetric::Cpm, m).unwrap();
        assert!(close(unwobbled(BlendMetric::Cpm, v2, m), 25.0, 1.0));
    }

    #[test]
    fn the_open_minute_counts_only_up_to_now() {
        let s = service(t(1, 30));
        s.record(t(0, 0), w(&[("v1", 100.0)]));
        s.record(t(1, 15), w(&[("v2", 100.0)]));
        let m = t(1, 0);
        // 15 s of v1 and 15 s of v2 so far (the rest of the minute has not happened).
        let apdex = s.service_value(BlendMetric::Apdex, m).unwrap();
        // v2 at 100 % share is overloaded: 5000.
        assert!(close(unwobbled(BlendMetric::Apdex, apdex, m), 7000.0, 1.0));
        assert_eq!(s.service_value(BlendMetric::Apdex, t(2, 0)), None);
    }

    #[test]
    fn no_traffic_is_no_data() {
        let s = service(t(5, 0));
        // Nothing observed yet: unknown, not healthy.
        assert_eq!(s.service_value(BlendMetric::Apdex, t(1, 0)), None);
        s.record(t(0, 0), w(&[("v1", 100.0), ("v2", 0.0)]));
        assert_eq!(s.instance_value("v2", BlendMetric::Sla, t(1, 0)), None);
        assert_eq!(s.instance_value("v3", BlendMetric::Sla, t(1, 0)), None);
        s.record(t(2, 0), w(&[("v1", 0.0), ("v2", 0.0)]));
        assert_eq!(s.service_value(BlendMetric::Apdex, t(3, 0)), None);
        // NaN weights never count as traffic.
        s.record(t(3, 0), w(&[("v1", f64::NAN)]));
        assert_eq!(s.service_value(BlendMetric::Sla, t(4, 0)), None);
    }

    #[test]
    fn unknown_versions_carry_no_values() {
        let s = service(t(5, 0));
        s.record(t(0, 0), w(&[("v1", 50.0), ("v9", 50.0)]));
        let m = t(1, 0);
        // Only v1's calls have values; the mean is v1's.
        let apdex = s.service_value(BlendMetric::Apdex, m).unwrap();
        assert!(close(unwobbled(BlendMetric::Apdex, apdex, m), 9000.0, 1.0));
    }

    #[test]
    fn wobble_is_small_and_ratios_are_capped() {
        for m in 0..60 {
            let x = wobble(t(m, 0));
            assert!((-1.0..=1.0).contains(&x), "{x}");
        }
        let versions = BTreeMap::from([(
            "v1".to_string(),
            VersionBehaviour::steady(values(10000.0, 10000.0, 1.0)),
        )]);
        let now = t(9, 0);
        let s = BlendedService::new("svc", 10.0, versions, Arc::new(move || now));
        s.record(t(0, 0), w(&[("v1", 1.0)]));
        for m in 0..8 {
            let v = s.service_value(BlendMetric::Apdex, t(m, 0)).unwrap();
            assert!((9990.0..=10000.0).contains(&v), "{v}");
        }
    }

    struct Fixed(Mutex<Vec<Result<Weights, String>>>);

    impl WeightsProvider for Fixed {
        fn weights(&self) -> Pin<Box<dyn Future<Output = Result<Weights, String>> + Send + '_>> {
            let next = {
                let mut v = self.0.lock().unwrap();
                if v.len() > 1 {
                    v.remove(0)
                } else {
                    v[0].clone()
                }
            };
            Box::pin(async move { next })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follow_records_what_the_provider_reads() {
        let s = service(t(5, 0));
        let provider = Fixed(Mutex::new(vec![
            Ok(w(&[("v1", 100.0)])),
            Err("file unreadable".into()),
            Ok(w(&[("v1", 90.0), ("v2", 10.0)])),
        ]));
        let handle = s.follow(provider, Duration::from_millis(10));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(handle);
        let h = s.weight_history();
        // The failed read kept the last weights; both successful reads are there.
        assert_eq!(
            h.changes()
                .iter()
                .map(|(_, w)| w.clone())
                .collect::<Vec<_>>(),
            vec![w(&[("v1", 100.0)]), w(&[("v1", 90.0), ("v2", 10.0)])]
        );
    }

    #[tokio::test]
    async fn served_over_graphql_the_series_follow_the_weights() {
        let now = t(10, 0);
        let sim = Simulator::new(
            super::super::SimConfig::new(super::super::OapProfile::V10_4).with_clock(move || now),
        );
        let s = BlendedService::new(
            "reviews.bookinfo",
            100.0,
            service(now).versions.as_ref().clone(),
            sim.config().clock.clone(),
        );
        s.install(&sim);
        s.record(t(0, 0), w(&[("v1", 100.0)]));
        s.record(t(8, 0), w(&[("v1", 70.0), ("v2", 30.0)]));
        let running = sim.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let body = serde_json::json!({
            "query": "query($e: String!, $entity: Entity!, $d: Duration!) { result: execExpression(expression: $e, entity: $entity, duration: $d) { error results { values { id value } } } }",
            "variables": {
                "e": "service_apdex",
                "entity": {"serviceName": "reviews.bookinfo", "normal": true},
                "d": {"start": "2025-03-01 1006", "end": "2025-03-01 1009", "step": "MINUTE"}
            }
        });
        let resp: serde_json::Value = reqwest::Client::new()
            .post(running.graphql_url())
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let values: Vec<f64> = resp["data"]["result"]["results"][0]["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{resp}"))
            .iter()
            .map(|v| v["value"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(values.len(), 4, "{resp}");
        // 10:06 and 10:07 all v1 (9000); 10:08 and 10:09 blend v2 overloaded at 30 %.
        for (i, v) in values.iter().enumerate() {
            let m = t(6 + i as u32, 0);
            let expected = if i < 2 {
                9000.0
            } else {
                0.7 * 9000.0 + 0.3 * 5000.0
            };
            assert!(
                close(unwobbled(BlendMetric::Apdex, *v, m), expected, 1.0),
                "{i}: {v}"
            );
        }
        let pods = sim.requests().len();
        assert_eq!(pods, 1);
    }
}
