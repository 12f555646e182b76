//! The analysis run as a pure state machine: scheduling, recording, assessment.
//!
//! The status types (`skycanary-api`, re-exported here) serialize like Argo's
//! `AnalysisRun.status` (camelCase). Time is always passed in (`now`); nothing here reads a
//! clock or does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub use skycanary_api::analysis::{Measurement, MeasurementMetadata, MetricResult, RunState};

use super::judge::{Observation, judge};
use super::spec::{MetricSpec, Phase, RunSpec};

/// Judges an observation into a finished measurement (value = the observation's display,
/// evidence = the judge's).
pub fn measure(
    spec: &MetricSpec,
    obs: &Observation,
    args: &BTreeMap<String, String>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
) -> Measurement {
    let verdict = judge(spec, obs, args);
    Measurement {
        phase: verdict.phase,
        value: obs.display(),
        message: Some(verdict.message),
        started_at,
        finished_at: Some(finished_at),
        metadata: Default::default(),
        evidence: verdict.evidence,
    }
}

/// Misuse of [`record`] / [`record_batch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no metric with index {0}")]
    UnknownMetric(usize),
    #[error("the run is already completed")]
    RunCompleted,
    #[error("metric {0:?} is already completed")]
    MetricCompleted(String),
    #[error("metric {0:?} appears twice in one batch")]
    TwiceInBatch(String),
}

/// A fresh run of `spec` started at `now` (Argo's `AnalysisRun.status` at creation). A run
/// without metrics is an Error right away.
pub fn start_run(spec: &RunSpec, now: DateTime<Utc>) -> RunState {
    let mut state = RunState {
        phase: Phase::Running,
        message: None,
        metric_results: spec.metrics.iter().map(new_metric_result).collect(),
        started_at: now,
        completed_at: None,
        terminated: false,
        terminate_reason: None,
    };
    if spec.metrics.is_empty() {
        state.phase = Phase::Error;
        state.message = Some("no metrics specified".into());
        state.completed_at = Some(now);
    }
    state
}

/// The result of metric `spec` before its first measurement.
fn new_metric_result(spec: &MetricSpec) -> MetricResult {
    MetricResult {
        name: spec.name.clone(),
        phase: Phase::Pending,
        measurements: Vec::new(),
        message: None,
        count: 0,
        successful: 0,
        failed: 0,
        inconclusive: 0,
        error: 0,
        consecutive_error: 0,
        consecutive_success: 0,
        dry_run: spec.dry_run,
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// When metric `m` may next be measured; `None` when it never will by time alone
/// (completed, in flight, or its count reached).
fn due_at(m: &MetricSpec, r: &MetricResult, run_started: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if r.phase.is_completed() || r.last_in_flight() {
        return None;
    }
    let Some(last) = r.measurements.last() else {
        return run_started.checked_add_signed(delta(m.initial_delay.unwrap_or_default()));
    };
    if m.effective_count().is_some_and(|c| r.count >= c) {
        return None;
    }
    let gap = if last.phase == Phase::Error {
        m.error_retry_interval
    } else {
        m.interval.unwrap_or_default()
    };
    last.finished_at
        .unwrap_or(last.started_at)
        .checked_add_signed(delta(gap))
}

fn schedulable(spec: &RunSpec, state: &RunState) -> bool {
    !state.terminated
        && !state.phase.is_completed()
        && spec.metrics.len() == state.metric_results.len()
}

/// Indices of the metrics to measure now (due time ≤ `now`). Empty once the run is
/// completed or terminating.
pub fn due_metrics(spec: &RunSpec, state: &RunState, now: DateTime<Utc>) -> Vec<usize> {
    if !schedulable(spec, state) {
        return Vec::new();
    }
    spec.metrics
        .iter()
        .zip(&state.metric_results)
        .enumerate()
        .filter(|(_, (m, r))| due_at(m, r, state.started_at).is_some_and(|t| t <= now))
        .map(|(i, _)| i)
        .collect()
}

/// The earliest time at which [`due_metrics`] becomes non-empty by time alone: `now` if
/// something is due already. `None` when the run is completed or terminating, or when
/// every unfinished metric has a measurement in flight (its [`record`] comes first).
pub fn next_due(spec: &RunSpec, state: &RunState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_due_held(spec, state, now, &[])
}

/// [`next_due`] with some metrics held back: metric `i` in `held` is not due before its
/// time (a canary's window that has no complete bucket since the last routing change yet).
pub fn next_due_held(
    spec: &RunSpec,
    state: &RunState,
    now: DateTime<Utc>,
    held: &[(usize, DateTime<Utc>)],
) -> Option<DateTime<Utc>> {
    if !schedulable(spec, state) {
        return None;
    }
    spec.metrics
        .iter()
        .zip(&state.metric_results)
        .enumerate()
        .filter_map(|(i, (m, r))| {
            let due = due_at(m, r, state.started_at)?;
            let hold = held.iter().filter(|(h, _)| *h == i).map(|(_, t)| *t).max();
            Some(hold.map_or(due, |h| due.max(h)))
        })
        .min()
        .map(|t| t.max(now))
}

/// Records a measurement of metric `index` and reassesses metric and run: a batch of one
/// (see [`record_batch`]).
///
/// A measurement whose phase is Pending/Running marks the metric in flight (not counted);
/// the next measurement recorded for that metric replaces it. A completed measurement
/// without `finished_at` gets `now`.
pub fn record(
    spec: &RunSpec,
    state: &mut RunState,
    index: usize,
    measurement: Measurement,
    now: DateTime<Utc>,
) -> Result<(), RecordError> {
    record_batch(spec, state, vec![(index, measurement)], now)
}

/// Records every measurement taken at one moment, then reassesses the run once, as Argo's
/// reconcile does. Recording one by one would let the first measurement that ends the run
/// shut out the others, so the metrics' order in the template would decide the verdict
/// (Inconclusive listed before Failed → Inconclusive); here the worst phase wins whatever
/// the order, and no measurement of the batch is lost (dry-run ones included).
///
/// All-or-nothing: the batch is checked first and nothing is recorded if any entry is
/// refused (unknown index, completed run or metric, a metric named twice).
pub fn record_batch(
    spec: &RunSpec,
    state: &mut RunState,
    batch: Vec<(usize, Measurement)>,
    now: DateTime<Utc>,
) -> Result<(), RecordError> {
    for (index, _) in &batch {
        if spec.metrics.get(*index).is_none() || state.metric_results.get(*index).is_none() {
            return Err(RecordError::UnknownMetric(*index));
        }
    }
    if state.phase.is_completed() || state.terminated {
        return Err(RecordError::RunCompleted);
    }
    let mut seen = BTreeSet::new();
    for (index, _) in &batch {
        let r = &state.metric_results[*index];
        if r.phase.is_completed() {
            return Err(RecordError::MetricCompleted(r.name.clone()));
        }
        if !seen.insert(*index) {
            return Err(RecordError::TwiceInBatch(r.name.clone()));
        }
    }
    for (index, measurement) in batch {
        push_measurement(
            &spec.metrics[index],
            &mut state.metric_results[index],
            measurement,
            now,
        );
    }
    reassess(spec, state, now);
    Ok(())
}

/// Stores one measurement: replaces an in-flight one, counts a completed one, trims to the
/// retention limit (counters keep counting trimmed measurements).
fn push_measurement(
    m: &MetricSpec,
    r: &mut MetricResult,
    mut measurement: Measurement,
    now: DateTime<Utc>,
) {
    if r.last_in_flight() {
        r.measurements.pop();
    }
    if measurement.phase.is_completed() {
        measurement.finished_at.get_or_insert(now);
        count(r, measurement.phase);
    } else {
        measurement.finished_at = None;
    }
    r.measurements.push(std::sync::Arc::new(measurement));
    let keep = m.retention_limit.max(1);
    if r.measurements.len() > keep {
        let excess = r.measurements.len() - keep;
        r.measurements.drain(..excess);
    }
}

/// Ends a run with Error when its driver cannot go on (a refused [`record_batch`] means the
/// state no longer matches the spec): never left Running, never Successful. Returns false
/// if the run was already completed.
pub fn fail_run(state: &mut RunState, message: impl Into<String>, now: DateTime<Utc>) -> bool {
    if state.phase.is_completed() {
        return false;
    }
    state.terminated = true;
    state.phase = Phase::Error;
    state.message = Some(message.into());
    state.completed_at = Some(now);
    true
}

/// Stops the run from outside (e.g. background analysis when the canary completes): no new
/// measurements, in-flight ones are dropped (they never produced evidence), and every
/// unfinished metric is assessed as terminated. Returns false if the run was already completed.
pub fn terminate(
    spec: &RunSpec,
    state: &mut RunState,
    reason: impl Into<String>,
    now: DateTime<Utc>,
) -> bool {
    if state.phase.is_completed() {
        return false;
    }
    state.terminated = true;
    state.terminate_reason = Some(reason.into());
    reassess(spec, state, now);
    true
}

/// Counters for one completed measurement (Argo's semantics; an Error breaks a success streak).
fn count(r: &mut MetricResult, phase: Phase) {
    match phase {
        Phase::Successful => {
            r.successful += 1;
            r.count += 1;
            r.consecutive_success += 1;
            r.consecutive_error = 0;
        }
        Phase::Failed | Phase::Inconclusive => {
            if phase == Phase::Failed {
                r.failed += 1;
            } else {
                r.inconclusive += 1;
            }
            r.count += 1;
            r.consecutive_success = 0;
            r.consecutive_error = 0;
        }
        Phase::Error => {
            r.error += 1;
            r.consecutive_error += 1;
            r.consecutive_success = 0;
        }
        Phase::Pending | Phase::Running => {}
    }
}

fn reassess(spec: &RunSpec, state: &mut RunState, now: DateTime<Utc>) {
    assess_open_metrics(spec, state);
    if !state.terminated {
        let tripped = spec
            .metrics
            .iter()
            .zip(&state.metric_results)
            .any(|(m, r)| !m.dry_run && r.phase.is_unsuccessful_end());
        if tripped {
            state.terminated = true;
            assess_open_metrics(spec, state);
        }
    }
    assess_run(spec, state, now);
}

fn assess_open_metrics(spec: &RunSpec, state: &mut RunState) {
    let terminating = state.terminated;
    for (m, r) in spec.metrics.iter().zip(state.metric_results.iter_mut()) {
        if r.phase.is_completed() {
            continue;
        }
        if terminating && r.last_in_flight() {
            r.measurements.pop();
        }
        let (phase, message) = assess_metric(m, r, terminating);
        r.phase = phase;
        r.message = message;
    }
}

/// Argo's `assessMetricStatus` with the #4479 fix (see step 6).
fn assess_metric(m: &MetricSpec, r: &MetricResult, terminating: bool) -> (Phase, Option<String>) {
    let name = &m.name;
    let said = |phase: Phase, why: String| {
        (
            phase,
            Some(format!("Metric {name:?} assessed {phase} {why}")),
        )
    };

    // 1. Nothing measured.
    if r.measurements.is_empty() {
        return if terminating {
            said(
                Phase::Inconclusive,
                "because the run was terminated before any measurement".into(),
            )
        } else {
            (Phase::Pending, None)
        };
    }
    // 2. In flight.
    if r.last_in_flight() {
        return (Phase::Running, None);
    }
    // 3. Limits, in Argo's wording (`assessMetricFailureInconclusiveOrError`: alert rules
    //    match on it); later overrides earlier, so Error > Inconclusive > Failed.
    let mut tripped = None;
    if m.failure_limit >= 0 && i64::from(r.failed) > i64::from(m.failure_limit) {
        tripped = Some((
            Phase::Failed,
            format!("failed ({}) > failureLimit ({})", r.failed, m.failure_limit),
        ));
    }
    if i64::from(r.inconclusive) > i64::from(m.inconclusive_limit) {
        tripped = Some((
            Phase::Inconclusive,
            format!(
                "inconclusive ({}) > inconclusiveLimit ({})",
                r.inconclusive, m.inconclusive_limit
            ),
        ));
    }
    if i64::from(r.consecutive_error) > i64::from(m.consecutive_error_limit) {
        tripped = Some((
            Phase::Error,
            format!(
                "consecutiveErrors ({}) > consecutiveErrorLimit ({})",
                r.consecutive_error, m.consecutive_error_limit
            ),
        ));
    }
    if let Some((phase, why)) = tripped {
        // Argo's run message: `Metric "m" assessed <phase> due to <limit>`, followed by the
        // last measurement's message when it has one.
        let last = r.measurements.last().and_then(|x| x.message.as_deref());
        return match last.filter(|l| !l.is_empty()) {
            Some(l) => said(phase, format!("due to {why}: \"Error Message: {l}\"")),
            None => said(phase, format!("due to {why}")),
        };
    }
    // 4. Early success.
    let csl = m.consecutive_success_limit;
    if csl > 0 && i64::from(r.consecutive_success) >= i64::from(csl) {
        return said(
            Phase::Successful,
            format!(
                "due to consecutiveSuccess ({}) >= consecutiveSuccessLimit ({csl})",
                r.consecutive_success
            ),
        );
    }
    // 5. Effective count reached.
    let effective = m.effective_count();
    if let Some(c) = effective.filter(|c| r.count >= *c) {
        return if m.failure_limit >= 0 && csl > 0 {
            said(
                Phase::Inconclusive,
                format!(
                    "due to count ({c}) reached with neither failureLimit ({}) nor consecutiveSuccessLimit ({csl}) reached",
                    m.failure_limit
                ),
            )
        } else if csl > 0 {
            said(
                Phase::Failed,
                format!("due to count ({c}) reached without consecutiveSuccessLimit ({csl})"),
            )
        } else {
            said(
                Phase::Successful,
                format!(
                    "after count ({c}) reached: successful ({}), failed ({}), inconclusive ({}), error ({})",
                    r.successful, r.failed, r.inconclusive, r.error
                ),
            )
        };
    }
    // 6. Not done. Argo reports every terminated metric Successful here (#4479); we only do
    //    so for indefinite metrics with counted measurements. A bounded metric that never
    //    reached its count has not shown what it was asked to show: Inconclusive.
    if !terminating {
        return (Phase::Running, None);
    }
    match effective {
        None if r.count > 0 => said(
            Phase::Successful,
            format!("when the run was terminated after {} measurements", r.count),
        ),
        None => said(
            Phase::Inconclusive,
            "because the run was terminated before any counted measurement".into(),
        ),
        Some(c) => said(
            Phase::Inconclusive,
            format!(
                "because the run was terminated before count was reached ({}/{c})",
                r.count
            ),
        ),
    }
}

/// Run phase: Running until every metric is completed (or the run terminates), then the
/// worst of the non-dry-run metrics (Successful if there are none).
fn assess_run(spec: &RunSpec, state: &mut RunState, now: DateTime<Utc>) {
    let all_done = state.metric_results.iter().all(|r| r.phase.is_completed());
    if !all_done {
        state.phase = Phase::Running;
        return;
    }
    let worst = spec
        .metrics
        .iter()
        .zip(&state.metric_results)
        .filter(|(m, _)| !m.dry_run)
        .map(|(_, r)| r)
        .fold(None::<&MetricResult>, |acc, r| match acc {
            Some(a) if a.phase.worst(r.phase) == a.phase => Some(a),
            _ => Some(r),
        });
    let phase = worst.map_or(Phase::Successful, |r| r.phase);
    let metric_message = worst
        .filter(|r| r.phase != Phase::Successful)
        .and_then(|r| r.message.clone());
    let prefix = state
        .terminate_reason
        .as_ref()
        .map(|reason| format!("Run Terminated: {reason}"));
    state.phase = phase;
    state.message = match (prefix, metric_message) {
        (Some(p), Some(m)) => Some(format!("{p}; {m}")),
        (p, m) => p.or(m),
    };
    state.completed_at.get_or_insert(now);
}

#[cfg(test)]
mod argo_cases;
#[cfg(test)]
mod tests;
