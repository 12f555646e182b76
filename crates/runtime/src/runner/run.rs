//! The analysis loop (I/O): measure what is due, judge, record, sleep until the next due time.
//!
//! Metrics due at the same moment for the same OAP go in one request; the loop sleeps exactly
//! until the next due time computed by the pure state machine (no polling, no drift: intervals
//! are measured from each measurement's `finishedAt`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use super::observe::observation_from;
use super::plan::RunPlan;
use crate::analysis::{self, Measurement, MeasurementMetadata, Phase, RunState};
use crate::provider::skywalking::{
    Aligned, MetricQuery, ProviderError, RequestObserver, SkyWalkingClient, aligned_window,
};

/// Something that happened during a run, for live output.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// One measurement was judged and recorded.
    Measured {
        /// Metric name.
        metric: &'a str,
        /// 1-based number of this metric's measurement.
        number: usize,
        /// The measurement.
        measurement: &'a Measurement,
        /// The metric's phase after recording it.
        metric_phase: Phase,
        /// The whole run after recording it (for persistence).
        state: &'a RunState,
    },
    /// Metrics are held back until their window has a complete bucket since the canary's
    /// last routing change (`state.message` says why and until when).
    Waiting(&'a RunState),
    /// The run ended.
    Finished(&'a RunState),
}

/// The canary's last routing change (weight, header or mirror route), as the driver last
/// saw it; `None` outside canaries (scheduled analyses, `analyze`): windows are not aligned.
pub type RoutingChanges = tokio::sync::watch::Receiver<Option<DateTime<Utc>>>;

/// Builds one client per planned connection.
pub fn connect(plan: &RunPlan) -> Result<Vec<Arc<SkyWalkingClient>>, ProviderError> {
    plan.clients
        .iter()
        .map(|o| SkyWalkingClient::new(o.clone()).map(Arc::new))
        .collect()
}

/// Like [`connect`], with every client reporting its requests to `observer` (`/metrics`).
pub fn connect_observed(
    plan: &RunPlan,
    observer: Arc<dyn RequestObserver>,
) -> Result<Vec<Arc<SkyWalkingClient>>, ProviderError> {
    plan.clients
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.observer = Some(observer.clone());
            SkyWalkingClient::new(o).map(Arc::new)
        })
        .collect()
}

/// Runs the plan to completion and returns the final state.
pub async fn run_analysis(
    plan: &RunPlan,
    clients: &[Arc<SkyWalkingClient>],
    clock: &dyn Clock,
    on_event: &mut (dyn FnMut(RunEvent<'_>) + Send),
) -> RunState {
    let state = analysis::start_run(&plan.spec, clock.now());
    let (_keep, mut stop) = tokio::sync::watch::channel(None);
    run_analysis_from(plan, clients, clock, state, on_event, &mut stop).await
}

/// Continues a run from `state` (a fresh one, or one persisted before a restart) until it
/// completes, or until `stop` carries a reason: then the run is terminated with that reason
/// (terminated bounded metrics are never reported Successful).
pub async fn run_analysis_from(
    plan: &RunPlan,
    clients: &[Arc<SkyWalkingClient>],
    clock: &dyn Clock,
    state: RunState,
    on_event: &mut (dyn FnMut(RunEvent<'_>) + Send),
    stop: &mut tokio::sync::watch::Receiver<Option<String>>,
) -> RunState {
    let (_keep, routing) = tokio::sync::watch::channel(None);
    run_canary_analysis(plan, clients, clock, state, on_event, stop, routing).await
}

/// [`run_analysis_from`] for a canary's analysis: metrics with `window.alignToStep` (the
/// default) read only buckets that began after the last routing change in `routing`, and
/// wait until such a window exists (an automatic initialDelay, explained in the run's message).
pub async fn run_canary_analysis(
    plan: &RunPlan,
    clients: &[Arc<SkyWalkingClient>],
    clock: &dyn Clock,
    mut state: RunState,
    on_event: &mut (dyn FnMut(RunEvent<'_>) + Send),
    stop: &mut tokio::sync::watch::Receiver<Option<String>>,
    routing: RoutingChanges,
) -> RunState {
    let mut announced: Option<String> = None;
    loop {
        if let Some(reason) = stop.borrow_and_update().clone() {
            analysis::terminate(&plan.spec, &mut state, &reason, clock.now());
            break;
        }
        let now = clock.now();
        let changed = *routing.borrow();
        let mut due = analysis::due_metrics(&plan.spec, &state, now);
        let held = hold_back(plan, clients, &due, changed, now).await;
        due.retain(|i| !held.iter().any(|(h, _)| h == i));
        if let Some((_, until)) = held.iter().max_by_key(|(_, t)| *t) {
            let names: Vec<&str> = held
                .iter()
                .map(|(i, _)| plan.spec.metrics[*i].name.as_str())
                .collect();
            let why = format!(
                "waiting until {} to measure {}: no complete bucket since the routing change at {} yet (window.alignToStep)",
                until.to_rfc3339(),
                names.join(", "),
                changed.map(|c| c.to_rfc3339()).unwrap_or_default(),
            );
            if announced.as_deref() != Some(why.as_str()) {
                tracing::info!(template = %plan.name, "{why}");
                state.message = Some(why.clone());
                on_event(RunEvent::Waiting(&state));
                announced = Some(why);
            }
        } else if announced.take().is_some() {
            state.message = None;
        }
        if !due.is_empty() {
            let results = measure_due(plan, clients, &due, now, changed).await;
            let finished = clock.now();
            let batch: Vec<(usize, Measurement)> = due
                .iter()
                .zip(results)
                .map(|(idx, result)| {
                    let spec = &plan.spec.metrics[*idx];
                    let obs = observation_from(&result);
                    let mut m =
                        analysis::measure(spec, &obs, &plan.metrics[*idx].args, now, finished);
                    if let Ok(sample) = &result {
                        let aligned = changed.filter(|_| plan.metrics[*idx].align_to_step);
                        m.metadata = window_metadata(sample, aligned);
                    }
                    log_measurement(&spec.name, &m);
                    (*idx, m)
                })
                .collect();
            // One moment, one assessment: every measurement is recorded before the run is
            // reassessed, so the worst phase wins whatever the metrics' order.
            match analysis::record_batch(&plan.spec, &mut state, batch.clone(), finished) {
                Ok(()) => {
                    for (idx, m) in &batch {
                        let mr = &state.metric_results[*idx];
                        on_event(RunEvent::Measured {
                            metric: &plan.spec.metrics[*idx].name,
                            number: mr.count.saturating_add(mr.error) as usize,
                            measurement: m,
                            metric_phase: mr.phase,
                            state: &state,
                        });
                    }
                }
                Err(e) => {
                    // Cannot happen while the state matches the plan; if it does, the run
                    // ends as Error instead of re-measuring the same metrics forever.
                    tracing::error!(template = %plan.name, "could not record measurements: {e}");
                    analysis::fail_run(
                        &mut state,
                        format!("could not record measurements: {e}"),
                        finished,
                    );
                }
            }
        }
        if state.phase.is_completed() {
            break;
        }
        match analysis::next_due_held(&plan.spec, &state, clock.now(), &held) {
            Some(t) => {
                tokio::select! {
                    () = clock.sleep_until(t) => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            // The stopper is gone: nobody can stop us any more; keep running.
                            clock.sleep_until(t).await;
                        }
                    }
                }
            }
            None => break,
        }
    }
    on_event(RunEvent::Finished(&state));
    state
}

/// The window a measurement read, as sent (OAP wall-clock time), the routing change it was
/// aligned to, and how many returned points were not evidence for it (`droppedPoints`, always
/// present, so "0" says the check ran; by cause when any were): the status and `analyze
/// --output json` show which buckets were judged and what was thrown away.
fn window_metadata(
    sample: &crate::provider::skywalking::Sample,
    aligned: Option<DateTime<Utc>>,
) -> MeasurementMetadata {
    let mut meta = MeasurementMetadata::new();
    meta.insert("windowStart", sample.window.0.clone());
    meta.insert("windowEnd", sample.window.1.clone());
    if let Some(c) = aligned {
        meta.insert("alignedAfter", c.to_rfc3339());
    }
    let d = &sample.dropped;
    meta.insert("droppedPoints", d.total().to_string());
    for (key, n) in [
        ("droppedOutsideWindow", d.outside),
        ("droppedUndated", d.undated),
        ("droppedDuplicate", d.duplicate),
    ] {
        if n > 0 {
            meta.insert(key, n.to_string());
        }
    }
    meta
}

fn log_measurement(metric: &str, m: &Measurement) {
    let value = m.value.as_deref().unwrap_or("-");
    let message = m.message.as_deref().unwrap_or("");
    tracing::info!(metric, phase = ?m.phase, value, "{message}");
}

/// Due metrics whose aligned window does not exist yet, with the time it will. The OAP's
/// zone decides where its buckets begin; when it cannot be read the metric is measured and
/// the provider's error becomes the measurement (never a window before the change).
async fn hold_back(
    plan: &RunPlan,
    clients: &[Arc<SkyWalkingClient>],
    due: &[usize],
    changed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<(usize, DateTime<Utc>)> {
    let Some(changed) = changed else {
        return Vec::new();
    };
    let mut held = Vec::new();
    for &i in due {
        let m = &plan.metrics[i];
        if !m.align_to_step {
            continue;
        }
        let Some(client) = clients.get(m.client) else {
            continue;
        };
        let Ok(info) = client.server_info().await else {
            continue;
        };
        if let Some(until) = alignment_wait(&m.query, info.timezone, changed, now) {
            held.push((i, until));
        }
    }
    held
}

/// When `q`, aligned to a routing change at `changed`, can first be measured; `None` if now.
pub fn alignment_wait(
    q: &MetricQuery,
    tz: chrono::FixedOffset,
    changed: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match aligned_window(now, tz, q.window, q.step, Some(changed)) {
        Ok(Aligned::WaitUntil(t)) => Some(t),
        Ok(Aligned::Ready(_)) | Err(_) => None,
    }
}

/// Measures the due metrics: one batched call per client, clients in parallel. Metrics
/// aligned to the step get the routing change as their window's lower bound.
async fn measure_due(
    plan: &RunPlan,
    clients: &[Arc<SkyWalkingClient>],
    due: &[usize],
    now: DateTime<Utc>,
    changed: Option<DateTime<Utc>>,
) -> Vec<Result<crate::provider::skywalking::Sample, ProviderError>> {
    let mut by_client: Vec<(usize, Vec<usize>)> = Vec::new();
    for &idx in due {
        let c = plan.metrics[idx].client;
        match by_client.iter_mut().find(|(k, _)| *k == c) {
            Some((_, v)) => v.push(idx),
            None => by_client.push((c, vec![idx])),
        }
    }
    let calls = by_client.iter().map(|(c, idxs)| {
        let queries: Vec<MetricQuery> = idxs
            .iter()
            .map(|i| {
                let m = &plan.metrics[*i];
                let mut q = m.query.clone();
                q.not_before = changed.filter(|_| m.align_to_step);
                q
            })
            .collect();
        let client = clients.get(*c).cloned();
        async move {
            match client {
                Some(client) => client.measure(&queries, now).await,
                None => queries
                    .iter()
                    .map(|_| Err(ProviderError::Internal("no client for this metric".into())))
                    .collect(),
            }
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut out: Vec<Option<Result<_, ProviderError>>> = due.iter().map(|_| None).collect();
    for ((_, idxs), results) in by_client.iter().zip(answers) {
        let mut results = results.into_iter();
        for idx in idxs {
            let pos = due.iter().position(|d| d == idx).unwrap_or(0);
            out[pos] = Some(results.next().unwrap_or_else(|| {
                Err(ProviderError::Internal(
                    "provider returned too few results".into(),
                ))
            }));
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(ProviderError::Internal("metric was not measured".into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::skywalking::{DroppedPoints, Sample, SampleValue};

    fn sample(dropped: DroppedPoints) -> Sample {
        Sample {
            value: SampleValue::Series(vec![Some(9950.0)]),
            named: Default::default(),
            query: String::new(),
            window: ("2026-11-21 1200".into(), "2026-11-21 1204".into()),
            dropped,
            data: None,
        }
    }

    fn entries(meta: &MeasurementMetadata) -> Vec<(&str, &str)> {
        meta.iter().collect()
    }

    #[test]
    fn metadata_counts_dropped_points_next_to_the_window() {
        let clean = window_metadata(&sample(DroppedPoints::default()), None);
        assert_eq!(
            entries(&clean),
            [
                ("droppedPoints", "0"),
                ("windowEnd", "2026-11-21 1204"),
                ("windowStart", "2026-11-21 1200"),
            ]
        );
        let dropped = DroppedPoints {
            outside: 3,
            undated: 0,
            duplicate: 1,
        };
        let changed = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 21, 11, 58, 30)
            .single()
            .expect("valid time");
        let meta = window_metadata(&sample(dropped), Some(changed));
        assert_eq!(
            entries(&meta),
            [
                ("alignedAfter", "2026-11-21T11:58:30+00:00"),
                ("droppedDuplicate", "1"),
                ("droppedOutsideWindow", "3"),
                ("droppedPoints", "4"),
                ("windowEnd", "2026-11-21 1204"),
                ("windowStart", "2026-11-21 1200"),
            ]
        );
    }
}
