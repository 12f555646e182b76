//! Evidence at the current weight (issue 13, item 11): a canary's analysis that runs after a
//! routing change reads only buckets that began after it, and waits until such a window
//! exists; `window: {alignToStep: false}` restores the old window.
//!
//! The simulator serves apdex 9950 for every bucket that began before the change (the canary
//! at 10 % was fine) and 5000 after it (at 30 % it is not), and records every `duration` it
//! was asked for. Simulated time runs 600x faster than the wall clock. The last test runs the
//! real daemon (`skycanary run --time-scale`) through a canary's steps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use skycanary::analysis::{Phase, RunState, start_run};
use skycanary::resources::load_str;
use skycanary::runner::{self, Clock, Defaults, RunEvent, ScaledClock};
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};

fn template(window: &str) -> String {
    format!(
        r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: apdex}}
spec:
  metrics:
  - name: apdex
    count: 2
    interval: 1m
    successCondition: "min(result) >= 9900"
    provider:
      skywalking:
        window: {window}
        metric: service_apdex
        entity: {{serviceName: reviews.bookinfo}}
"#
    )
}

struct Outcome {
    state: RunState,
    /// `duration.start` of every metrics request, as sent.
    starts: Vec<NaiveDateTime>,
    /// Messages the run published while it waited.
    waiting: Vec<String>,
}

/// Runs the template as a canary's analysis right after a routing change at "now".
async fn run_after_change(window: &str) -> (Outcome, DateTime<Utc>) {
    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(Utc::now(), 600.0));
    let c = clock.clone();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4).with_clock(move || c.now()));
    // The change time is set right before the run starts (setup time must not count: the
    // clock runs 600x); buckets that began before it hold the 10 % traffic.
    let change_ms = Arc::new(AtomicI64::new(i64::MAX));
    let cm = change_ms.clone();
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        move |bucket| {
            let before = bucket.timestamp_millis() < cm.load(Ordering::SeqCst);
            Some(if before { 9950.0 } else { 5000.0 })
        },
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let loaded = load_str("apdex.yaml", &template(window));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let defaults = Defaults {
        skywalking: Some(running.url()),
        timezone: None,
    };
    let plan = runner::plan(&loaded.templates[0], &BTreeMap::new(), &defaults).unwrap();
    let clients = runner::connect(&plan).unwrap();
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(None);
    // setWeight 30 is confirmed now; the bucket holding this instant is mixed.
    let changed = clock.now();
    change_ms.store(changed.timestamp_millis(), Ordering::SeqCst);
    let (_routing_tx, routing) = tokio::sync::watch::channel(Some(changed));
    let mut waiting = Vec::new();
    let mut on_event = |ev: RunEvent<'_>| {
        if let RunEvent::Waiting(s) = ev {
            waiting.push(s.message.clone().unwrap_or_default());
        }
    };
    let state = runner::run_canary_analysis(
        &plan,
        &clients,
        clock.as_ref(),
        start_run(&plan.spec, clock.now()),
        &mut on_event,
        &mut stop,
        routing,
    )
    .await;
    let starts = sim
        .requests()
        .iter()
        .filter_map(|r| r.variables()?.as_object().cloned())
        // Batched requests share durations as `$d0`, `$d1`, ...
        .flat_map(|vars| vars.into_values())
        .filter_map(|v| v.get("start")?.as_str().map(str::to_string))
        .map(|s| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H%M").expect("MINUTE bucket"))
        .collect();
    (
        Outcome {
            state,
            starts,
            waiting,
        },
        changed,
    )
}

/// The first minute bucket that begins at or after `t` (UTC, the simulator's zone).
fn first_bucket_after(t: DateTime<Utc>) -> NaiveDateTime {
    let floor = t.timestamp().div_euclid(60) * 60;
    let first = if floor == t.timestamp() && t.timestamp_subsec_nanos() == 0 {
        floor
    } else {
        floor + 60
    };
    DateTime::from_timestamp(first, 0).unwrap().naive_utc()
}

#[tokio::test]
async fn after_set_weight_30_no_measurement_reads_a_bucket_from_before_the_change() {
    let (out, changed) = run_after_change("3m").await;
    let first = first_bucket_after(changed);
    assert!(!out.starts.is_empty(), "the OAP was asked");
    for s in &out.starts {
        assert!(
            *s >= first,
            "window start {s} is before the change's first bucket {first}"
        );
    }
    // Only 30 % buckets were judged: the canary that is bad at 30 % fails.
    assert_eq!(out.state.phase, Phase::Failed, "{:?}", out.state);
    let m = &out.state.metric_results[0].measurements[0];
    assert_eq!(
        m.metadata.get("windowStart"),
        Some(first.format("%Y-%m-%d %H%M").to_string().as_str()),
        "the measurement records the window it used: {m:?}"
    );
    assert!(m.metadata.contains_key("windowEnd"), "{m:?}");
    assert_eq!(
        m.metadata.get("alignedAfter"),
        Some(changed.to_rfc3339().as_str()),
        "{m:?}"
    );
    // It did not measure at once: it waited, said why and until when.
    assert!(
        m.started_at >= changed + TimeDelta::minutes(1),
        "measured at {} for a change at {changed}",
        m.started_at
    );
    assert_eq!(out.waiting.len(), 1, "{:?}", out.waiting);
    assert!(
        out.waiting[0].contains("waiting until")
            && out.waiting[0].contains("no complete bucket since the routing change"),
        "{}",
        out.waiting[0]
    );
}

#[tokio::test]
async fn align_to_step_false_reads_the_window_as_before() {
    let (out, changed) = run_after_change("{duration: 3m, alignToStep: false}").await;
    let first = first_bucket_after(changed);
    // Measured at once, over buckets that began before the change: the stale 10 % evidence
    // is judged (and can pass a canary that is bad at 30 %).
    assert!(
        out.starts.first().is_some_and(|s| *s < first),
        "{:?} vs {first}",
        out.starts
    );
    assert!(out.waiting.is_empty(), "{:?}", out.waiting);
    let m = &out.state.metric_results[0].measurements[0];
    assert!(
        m.value.as_deref().unwrap_or_default().contains("9950"),
        "minutes at 10 % were judged: {m:?}"
    );
    assert!(m.metadata.contains_key("windowStart"), "{m:?}");
    assert!(!m.metadata.contains_key("alignedAfter"), "{m:?}");
}

/// The background analysis runs across steps: a weight change while it runs moves the start of
/// its next windows (and holds them) without restarting it.
#[tokio::test]
async fn a_change_during_a_run_moves_its_next_windows() {
    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(Utc::now(), 600.0));
    let c = clock.clone();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4).with_clock(move || c.now()));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let loaded = load_str(
        "apdex.yaml",
        &template("3m").replace("count: 2", "count: 3"),
    );
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let defaults = Defaults {
        skywalking: Some(running.url()),
        timezone: None,
    };
    let plan = runner::plan(&loaded.templates[0], &BTreeMap::new(), &defaults).unwrap();
    let clients = runner::connect(&plan).unwrap();
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(None);
    // The last change was long ago: the first measurement is taken at once.
    let old = clock.now() - TimeDelta::hours(1);
    let (routing_tx, routing) = tokio::sync::watch::channel(Some(old));
    let mut moved: Option<DateTime<Utc>> = None;
    let ev_clock = clock.clone();
    let mut on_event = |ev: RunEvent<'_>| {
        if let RunEvent::Measured { number: 1, .. } = ev {
            // setWeight 30 lands right after the first measurement.
            let now = ev_clock.now();
            moved = Some(now);
            let _ = routing_tx.send(Some(now));
        }
    };
    let state = runner::run_canary_analysis(
        &plan,
        &clients,
        clock.as_ref(),
        start_run(&plan.spec, clock.now()),
        &mut on_event,
        &mut stop,
        routing,
    )
    .await;
    assert_eq!(state.phase, Phase::Successful, "{state:?}");
    let moved = moved.expect("the first measurement was reported");
    let first = first_bucket_after(moved)
        .format("%Y-%m-%d %H%M")
        .to_string();
    let ms = &state.metric_results[0].measurements;
    assert_eq!(ms.len(), 3);
    assert_eq!(
        ms[0].metadata.get("alignedAfter"),
        Some(old.to_rfc3339().as_str())
    );
    for m in &ms[1..] {
        assert_eq!(
            m.metadata.get("alignedAfter"),
            Some(moved.to_rfc3339().as_str()),
            "{m:?}"
        );
        // Bucket strings of one format compare as times.
        assert!(
            m.metadata
                .get("windowStart")
                .is_some_and(|s| s >= first.as_str()),
            "{m:?} vs {first}"
        );
    }
    // The second measurement waited for two buckets after the change (not just the interval).
    let ready = first_bucket_after(moved).and_utc() + TimeDelta::minutes(2);
    assert!(ms[1].started_at >= ready, "{:?} before {ready}", ms[1]);
}

/// The same through `skycanary run --time-scale` (file mode, the real binary): after
/// `setWeight: 30` the step analysis reads only buckets that began after the canary's
/// `status.routingChangedAt`, and judges the canary on them.
///
/// The simulator and the daemon share one scaled clock (120x: a minute bucket is half a real
/// second). A poller stamps the moment the manifest's canary weight becomes 30; apdex is 9950
/// for buckets that ended before it (10 % was fine) and 5000 from then on (30 % is not). An
/// analysis over the 3-minute window the step would read unaligned passes on 10 % minutes;
/// aligned, it can only see 30 % minutes, and the canary is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_time_scale_judges_only_buckets_after_routing_changed_at() {
    use crate::daemon::{phase, setup, start_with, vs_weights, wait_for};
    use skycanary::runner::WallScaledClock;
    use std::time::Duration;

    const SCALE: f64 = 120.0;
    let origin = Utc::now();
    let clock = Arc::new(WallScaledClock::new(origin, SCALE));
    let sim_clock = clock.clone();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4).with_clock(move || sim_clock.now()));
    // When (simulated) the manifest first held canary weight 30; i64::MAX: not yet.
    let at_30 = Arc::new(AtomicI64::new(i64::MAX));
    let seen = at_30.clone();
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        move |bucket| {
            let ended = (bucket + TimeDelta::minutes(1)).timestamp_millis();
            Some(if ended <= seen.load(Ordering::SeqCst) {
                9950.0
            } else {
                5000.0
            })
        },
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let canary = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    istio:
      virtualService: {name: reviews, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 10
  - pause: {duration: 5m}
  - setWeight: 30
  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}
  - setWeight: 60
---
apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex, namespace: bookinfo}
spec:
  args: [{name: service}]
  metrics:
  - name: apdex
    consecutiveErrorLimit: 0
    successCondition: "min(result) >= 9900"
    provider:
      skywalking:
        window: 3m
        metric: service_apdex
        entity: {serviceName: "{{args.service}}"}
"#;
    let origin_arg = origin.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let d = start_with(
        setup(canary),
        &running.url(),
        &[
            "--time-scale",
            &SCALE.to_string(),
            "--clock-origin",
            &origin_arg,
        ],
    );
    // Stamp the change to 30 % as soon as the manifest shows it.
    let manifests = d.manifests.clone();
    let (stamp, poll) = (at_30.clone(), clock.clone());
    let poller = tokio::spawn(async move {
        loop {
            if vs_weights(&manifests).1 == 30 {
                stamp.store(poll.now().timestamp_millis(), Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // The analysis step after setWeight 30: the routing change it must align to.
    let at_step = wait_for(&d, "the analysis step", Duration::from_secs(60), |s| {
        s["status"]["currentStepIndex"].as_i64().unwrap_or(0) >= 3
    })
    .await;
    let changed_text = at_step["status"]["routingChangedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("no routingChangedAt: {at_step:#}"))
        .to_string();
    let changed = DateTime::parse_from_rfc3339(&changed_text)
        .expect("RFC 3339")
        .with_timezone(&Utc);
    let done = wait_for(&d, "the verdict", Duration::from_secs(60), |s| {
        matches!(phase(s), "Aborted" | "Promoted")
    })
    .await;
    poller.abort();
    assert_eq!(phase(&done), "Aborted", "{done:#}");
    assert_eq!(
        done["status"]["abort"]["metric"], "apdex",
        "the step analysis failed it: {done:#}"
    );

    // Every window the OAP was asked for starts at or after the first bucket that began after
    // the change (the simulator's zone is UTC).
    let first = first_bucket_after(changed);
    let starts: Vec<NaiveDateTime> = sim
        .requests()
        .iter()
        .filter_map(|r| r.variables()?.as_object().cloned())
        .flat_map(|vars| vars.into_values())
        .filter_map(|v| v.get("start")?.as_str().map(str::to_string))
        .map(|s| NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H%M").expect("MINUTE bucket"))
        .collect();
    assert!(!starts.is_empty(), "the OAP was asked");
    for s in &starts {
        assert!(
            *s >= first,
            "window start {s} is before {first} (change at {changed})"
        );
    }
    // The measurement says so itself.
    let runs = done["status"]["analysisRuns"].as_array().expect("runs");
    let m = &runs.last().expect("a run")["status"]["metricResults"][0]["measurements"][0];
    assert_eq!(m["phase"], "Failed", "{m:#}");
    let meta = &m["metadata"];
    assert_eq!(
        meta["alignedAfter"].as_str().map(|a| {
            DateTime::parse_from_rfc3339(a)
                .expect("RFC 3339")
                .with_timezone(&Utc)
        }),
        Some(changed),
        "{m:#}"
    );
    assert_eq!(
        meta["windowStart"],
        first.format("%Y-%m-%d %H%M").to_string(),
        "{m:#}"
    );
    assert_eq!(meta["droppedPoints"], "0", "{m:#}");
    // It waited for complete buckets after the change instead of measuring at once (when a
    // 3-minute window would have reached back to 10 % minutes).
    let started = DateTime::parse_from_rfc3339(m["startedAt"].as_str().expect("startedAt"))
        .expect("RFC 3339")
        .with_timezone(&Utc);
    assert!(
        started >= first.and_utc() + TimeDelta::minutes(1),
        "it waited for a complete bucket after the change: measured at {started}"
    );
}
