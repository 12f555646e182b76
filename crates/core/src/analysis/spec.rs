//! Validated metric specs and Argo's `ValidateMetric` rules (the [`Phase`] they end in is
//! status data, in `skycanary-api`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::expr::Condition;
pub use skycanary_api::analysis::Phase;

/// What a measurement without data becomes. Default Inconclusive: no data is never healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NoDataPolicy {
    #[default]
    Inconclusive,
    Failed,
    Successful,
    Error,
}

impl NoDataPolicy {
    pub fn phase(self) -> Phase {
        match self {
            NoDataPolicy::Inconclusive => Phase::Inconclusive,
            NoDataPolicy::Failed => Phase::Failed,
            NoDataPolicy::Successful => Phase::Successful,
            NoDataPolicy::Error => Phase::Error,
        }
    }
}

/// One metric of a run, already parsed (durations resolved, conditions compiled).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    /// Time between measurements, from the previous `finishedAt`.
    pub interval: Option<Duration>,
    /// `None` or `Some(0)`: see [`MetricSpec::effective_count`].
    pub count: Option<u32>,
    /// Wait from the run's start before the first measurement.
    pub initial_delay: Option<Duration>,
    /// Failed when `failed > failure_limit`; `-1` disables.
    pub failure_limit: i32,
    pub inconclusive_limit: i32,
    pub consecutive_error_limit: i32,
    /// `0` = off.
    pub consecutive_success_limit: i32,
    pub success_condition: Option<Condition>,
    pub failure_condition: Option<Condition>,
    pub no_data: NoDataPolicy,
    pub dry_run: bool,
    /// Measurements kept in status (counters still count trimmed ones).
    pub retention_limit: usize,
    /// Delay before retrying after an Error measurement, instead of `interval`.
    pub error_retry_interval: Duration,
}

/// Argo's `DefaultConsecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// Argo's `DefaultMeasurementHistoryLimit`.
pub const DEFAULT_RETENTION_LIMIT: usize = 10;
/// Argo's `DefaultErrorRetryInterval`.
pub const DEFAULT_ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

impl MetricSpec {
    /// A metric with Argo's defaults: one measurement, no conditions.
    pub fn new(name: impl Into<String>) -> Self {
        MetricSpec {
            name: name.into(),
            interval: None,
            count: None,
            initial_delay: None,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: DEFAULT_CONSECUTIVE_ERROR_LIMIT,
            consecutive_success_limit: 0,
            success_condition: None,
            failure_condition: None,
            no_data: NoDataPolicy::default(),
            dry_run: false,
            retention_limit: DEFAULT_RETENTION_LIMIT,
            error_retry_interval: DEFAULT_ERROR_RETRY_INTERVAL,
        }
    }

    /// Argo's `EffectiveCount`: `count` when > 0; otherwise 1 without interval, and
    /// `None` (indefinite) with an interval.
    pub fn effective_count(&self) -> Option<u32> {
        match (self.count, self.interval) {
            (Some(c), _) if c > 0 => Some(c),
            (_, None) => Some(1),
            (_, Some(_)) => None,
        }
    }
}

/// The metrics of one run, in order; indices into it name metrics in the run API.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunSpec {
    pub metrics: Vec<MetricSpec>,
}

/// Argo's `ValidateMetric` rules, in its wording (values added where Argo gives none), plus
/// three of ours (positive `interval`, positive `error_retry_interval`, `retention_limit >= 1`:
/// zero would busy-loop or lose the measurement that scheduling needs). Returns every
/// problem, not just the first.
pub fn validate_metric(m: &MetricSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let name = &m.name;
    let mut bad = |msg: String| problems.push(format!("metric {name:?}: {msg}"));
    if name.is_empty() {
        bad("name must not be empty".into());
    }
    let (fl, csl, il) = (
        i64::from(m.failure_limit),
        i64::from(m.consecutive_success_limit),
        i64::from(m.inconclusive_limit),
    );
    if csl < 0 {
        bad(format!("consecutiveSuccessLimit must be >= 0, got {csl}"));
    }
    if fl < -1 {
        bad(format!(
            "failureLimit must be >= 0, or -1 to be disabled, got {fl}"
        ));
    }
    if csl == 0 && fl == -1 {
        bad("failureLimit and consecutiveSuccessLimit cannot both be disabled".into());
    }
    if il < 0 {
        bad(format!("inconclusiveLimit must be >= 0, got {il}"));
    }
    if m.consecutive_error_limit < 0 {
        bad(format!(
            "consecutiveErrorLimit must be >= 0, got {}",
            m.consecutive_error_limit
        ));
    }
    let count = i64::from(m.count.unwrap_or(0));
    if count > 0 {
        if csl >= 0 && fl >= 0 {
            if count < fl + csl {
                bad(format!(
                    "count ({count}) must be >= failureLimit + consecutiveSuccessLimit ({fl} + {csl}) if both >= 0"
                ));
            }
        } else if csl >= 0 && fl < 0 && count < csl {
            // With failures disabled only consecutive successes end the metric early, and
            // count ends it Failed first: it could never succeed.
            bad(format!(
                "count must be >= consecutiveSuccessLimit (count {count}, consecutiveSuccessLimit {csl})"
            ));
        }
        if count < il {
            bad(format!(
                "count must be >= inconclusiveLimit (count {count}, inconclusiveLimit {il})"
            ));
        }
    }
    if count > 1 && m.interval.is_none() {
        bad("interval must be specified when count > 1".into());
    }
    if m.interval.is_some_and(|d| d.is_zero()) {
        bad("interval must be > 0".into());
    }
    if m.error_retry_interval.is_zero() {
        bad("errorRetryInterval must be > 0".into());
    }
    if m.retention_limit == 0 {
        bad("measurement retention limit must be >= 1".into());
    }
    problems
}

/// Run-level checks (at least one metric, unique names) plus every metric's.
pub fn validate_run(spec: &RunSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.metrics.is_empty() {
        problems.push("no metrics specified".to_string());
    }
    let mut seen = BTreeSet::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        if !seen.insert(m.name.as_str()) {
            problems.push(format!("metrics[{i}]: duplicate name '{}'", m.name));
        }
        problems.extend(validate_metric(m));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_count_rules() {
        let mut m = MetricSpec::new("m");
        assert_eq!(m.effective_count(), Some(1));
        m.count = Some(0);
        assert_eq!(m.effective_count(), Some(1));
        m.interval = Some(Duration::from_secs(60));
        assert_eq!(m.effective_count(), None);
        m.count = Some(5);
        assert_eq!(m.effective_count(), Some(5));
    }

    #[test]
    fn validate_metric_accepts_defaults() {
        assert!(validate_metric(&MetricSpec::new("m")).is_empty());
    }

    #[test]
    fn validate_metric_reports_every_problem() {
        let mut m = MetricSpec::new("m");
        m.consecutive_success_limit = -1;
        m.failure_limit = -2;
        m.inconclusive_limit = -1;
        m.consecutive_error_limit = -1;
        m.count = Some(3);
        let p = validate_metric(&m);
        assert!(
            p.iter()
                .any(|p| p.contains("consecutiveSuccessLimit must be >= 0"))
        );
        assert!(
            p.iter()
                .any(|p| p.contains("failureLimit must be >= 0, or -1 to be disabled"))
        );
        assert!(
            p.iter()
                .any(|p| p.contains("inconclusiveLimit must be >= 0"))
        );
        assert!(
            p.iter()
                .any(|p| p.contains("consecutiveErrorLimit must be >= 0"))
        );
        assert!(
            p.iter()
                .any(|p| p.contains("interval must be specified when count > 1"))
        );
    }

    #[test]
    fn validate_metric_failure_and_success_limits_not_both_disabled() {
        let mut m = MetricSpec::new("m");
        m.failure_limit = -1;
        assert_eq!(validate_metric(&m).len(), 1);
        m.consecutive_success_limit = 1;
        assert!(validate_metric(&m).is_empty());
    }

    #[test]
    fn validate_metric_count_covers_limits() {
        let mut m = MetricSpec::new("m");
        m.interval = Some(Duration::from_secs(1));
        m.count = Some(3);
        m.failure_limit = 2;
        m.consecutive_success_limit = 2;
        assert_eq!(
            validate_metric(&m),
            vec![
                "metric \"m\": count (3) must be >= failureLimit + consecutiveSuccessLimit (2 + 2) if both >= 0"
            ]
        );
        m.failure_limit = 1;
        assert!(validate_metric(&m).is_empty());
        m.inconclusive_limit = 4;
        assert!(
            validate_metric(&m)[0]
                .contains("count must be >= inconclusiveLimit (count 3, inconclusiveLimit 4)")
        );
    }

    #[test]
    fn validate_metric_count_below_success_limit_with_failures_disabled_can_never_succeed() {
        // Argo's rule: with failureLimit -1 the metric ends Failed at count unless
        // consecutiveSuccessLimit was reached first, impossible when count < the limit.
        let mut m = MetricSpec::new("m");
        m.interval = Some(Duration::from_secs(1));
        m.failure_limit = -1;
        m.consecutive_success_limit = 3;
        m.count = Some(2);
        assert_eq!(
            validate_metric(&m),
            vec![
                "metric \"m\": count must be >= consecutiveSuccessLimit (count 2, consecutiveSuccessLimit 3)"
            ]
        );
        m.count = Some(3);
        assert!(validate_metric(&m).is_empty());
    }

    #[test]
    fn validate_metric_disabled_limits_in_argo_wording() {
        let mut m = MetricSpec::new("m");
        m.failure_limit = -1;
        assert_eq!(
            validate_metric(&m),
            vec!["metric \"m\": failureLimit and consecutiveSuccessLimit cannot both be disabled"]
        );
    }

    #[test]
    fn validate_metric_our_extra_rules() {
        let mut m = MetricSpec::new("m");
        m.interval = Some(Duration::ZERO);
        m.error_retry_interval = Duration::ZERO;
        m.retention_limit = 0;
        assert_eq!(validate_metric(&m).len(), 3);
    }

    #[test]
    fn validate_run_rules() {
        assert_eq!(
            validate_run(&RunSpec::default()),
            vec!["no metrics specified"]
        );
        let spec = RunSpec {
            metrics: vec![MetricSpec::new("a"), MetricSpec::new("a")],
        };
        assert_eq!(validate_run(&spec), vec!["metrics[1]: duplicate name 'a'"]);
    }
}
