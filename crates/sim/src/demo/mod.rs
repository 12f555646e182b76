//! `skycanary demo`: the whole job on loopback. Per scenario: the SkyWalking simulator
//! serving Bookinfo's `reviews`, whose metrics blend its versions by the weights actually
//! written in the VirtualService file (closed loop); the file traffic backend holding the
//! Bookinfo manifests; and the real daemon (`skycanary run` in file mode, a child process of
//! this binary) driving the Canary. Time is compressed by one scaled clock that the
//! simulator and the daemon share (`--speed`); nothing in the daemon is special-cased.

pub mod daemon;
pub mod narrate;
pub mod observe;
pub mod report;
pub mod scenario;
pub mod weights;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};

use crate::sim::blend::{BlendedService, WeightHistory, Weights};
use crate::sim::{OapProfile, SimConfig, Simulator};
use skycanary_runtime::canary::{CanaryPhase, CanaryStatus};
use skycanary_runtime::report::MetricInfo;
use skycanary_runtime::resources::canary::CanaryStep;
use skycanary_runtime::runner::{Clock, Defaults, WallScaledClock};
use skycanary_runtime::schedule::{ActionKind, ScheduleSummary, ScheduledRun};
use skycanary_runtime::traffic::file::FileManifestStore;

use daemon::{Daemon, DaemonConfig};
use narrate::{Narrator, describe};
use observe::{Happening, Observer};
use scenario::{AlarmRule, NAME, NAMESPACE, Outcome, ROUTE, SERVICE, ScenarioSpec};
use weights::VirtualServiceWeights;

/// The demo could not run (as opposed to a scenario ending unexpectedly).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Files of the scenario.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The scenario's configuration did not load (a bug in the demo).
    #[error("the demo configuration is invalid: {0}")]
    Config(String),
    /// The simulator.
    #[error("simulator: {0}")]
    Sim(#[from] crate::sim::SimError),
    /// The daemon.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// The manifests.
    #[error("manifests: {0}")]
    Store(String),
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Time compression: one real second is `speed` simulated seconds.
    pub speed: f64,
    /// The skycanary executable started as the daemon.
    pub program: PathBuf,
    /// A scenario that has not ended after this much simulated time fails.
    pub deadline: chrono::Duration,
    /// How often the daemon's status is read (real time).
    pub poll: Duration,
    /// Keep each scenario's files under `DIR/<scenario>` instead of a temporary directory.
    pub work_dir: Option<PathBuf>,
}

impl DemoOptions {
    /// Defaults for `speed`, with this executable as the daemon.
    pub fn new(speed: f64, program: PathBuf) -> Self {
        DemoOptions {
            speed,
            program,
            deadline: chrono::Duration::minutes(30),
            poll: Duration::from_millis(40),
            work_dir: None,
        }
    }
}

/// Everything one scenario produced.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    /// What was run.
    pub spec: ScenarioSpec,
    /// How it ended.
    pub outcome: Outcome,
    /// The canary's last status.
    pub status: Option<CanaryStatus>,
    /// The route's weights read from the VirtualService file at the end.
    pub final_weights: Option<Weights>,
    /// Every weight change the simulator followed (simulated time).
    pub history: WeightHistory,
    /// What happened, with simulated times.
    pub happenings: Vec<(DateTime<Utc>, Happening)>,
    /// Conditions and args of the measured metrics.
    pub info: BTreeMap<String, MetricInfo>,
    /// Simulated start.
    pub started: DateTime<Utc>,
    /// Simulated time it took.
    pub simulated: chrono::Duration,
    /// Real time it took.
    pub real: Duration,
    /// Alarm webhook round trip (the rollback is written before the answer).
    pub alarm_latency: Option<Duration>,
    /// Every run of the scenario's scheduled analyses, in its last state seen, oldest first
    /// (kept here even after the daemon trims its history).
    pub scheduled_runs: Vec<ScheduledRun>,
}

fn write_file(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|e| DemoError::Io(path.display().to_string(), e))
}

fn mkdir(path: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(path).map_err(|e| DemoError::Io(path.display().to_string(), e))
}

/// A random token for the daemon's API (only the demo knows it).
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::from("demo-");
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The minute bucket before the one `now` is in (the last complete minute).
fn last_complete_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    let m = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    m - chrono::Duration::minutes(1)
}

/// The OAP alarm webhook payload (OAP 10.4 field set) for a rule firing on the service.
pub fn alarm_payload(rule: &AlarmRule, at: DateTime<Utc>, value: f64) -> serde_json::Value {
    let id = crate::sim::service_id(SERVICE);
    serde_json::json!([{
        "scopeId": 1,
        "scope": "SERVICE",
        "name": SERVICE,
        "id0": id,
        "id1": "",
        "ruleName": rule.name,
        "alarmMessage": rule.message,
        "startTime": at.timestamp_millis(),
        "tags": [{"key": "level", "value": "CRITICAL"}],
        "hooks": ["webhook.default"],
        "expression": format!("sum(service_sla < {}) >= 1", skycanary_runtime::analysis::fmt_num(rule.below)),
        "mqeMetricsSnapshot": {"service_sla": skycanary_runtime::analysis::fmt_num(value)},
        "uuid": format!("demo-{}-{}", rule.name, at.timestamp_millis()),
    }])
}

/// Runs one scenario end to end, narrating as it goes.
pub async fn run_scenario(
    spec: ScenarioSpec,
    opts: &DemoOptions,
    narrator: &mut Narrator,
) -> Result<ScenarioRun, DemoError> {
    let style = narrator.style();
    let _temp;
    let root_buf = match &opts.work_dir {
        Some(w) => {
            let r = w.join(spec.scenario.name());
            if r.exists() {
                std::fs::remove_dir_all(&r)
                    .map_err(|e| DemoError::Io(r.display().to_string(), e))?;
            }
            mkdir(&r)?;
            r
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("skycanary-demo-")
                .tempdir()
                .map_err(|e| DemoError::Io("temporary directory".into(), e))?;
            let p = t.path().to_path_buf();
            _temp = t;
            p
        }
    };
    let root = root_buf.as_path();
    let (config, istio, state) = (root.join("config"), root.join("istio"), root.join("state"));
    for d in [&config, &istio, &state] {
        mkdir(d)?;
    }
    write_file(&config.join("apdex.yaml"), scenario::APDEX_TEMPLATE)?;
    write_file(&config.join("canary.yaml"), &spec.config.join("---\n"))?;
    write_file(&istio.join("reviews.yaml"), &spec.manifests())?;
    // The canary's Deployment, not ready yet: file mode reads its readiness from there.
    let workload_file = spec
        .workload
        .map(|w| istio.join(format!("{}.yaml", w.name)));
    if let (Some(w), Some(f)) = (&spec.workload, &workload_file) {
        write_file(f, &w.manifest(0))?;
    }
    let mut workload_ready = spec.workload.is_none();
    let mut saw_not_ready = false;
    let mut exposed_before_ready = false;
    let token = token();
    let token_file = root.join("token");
    write_file(&token_file, &format!("{token}\n"))?;

    let loaded = skycanary_runtime::resources::load_paths(std::slice::from_ref(&config));
    if !loaded.errors.is_empty() {
        let errs: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(DemoError::Config(errs.join("; ")));
    }
    let steps: Vec<CanaryStep> = loaded
        .canaries
        .first()
        .map(|c| c.doc.spec.steps.clone())
        .unwrap_or_default();

    // One clock for the simulator and the daemon.
    let origin = Utc::now();
    let clock = WallScaledClock::new(origin, opts.speed);
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4).with_clock(move || clock.now()));
    let blend = BlendedService::new(
        SERVICE,
        scenario::TOTAL_CPM,
        spec.versions.clone(),
        sim.config().clock.clone(),
    );
    blend.install(&sim);
    let running = sim
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let info = metric_info(&loaded.templates, &running.url());

    let store = FileManifestStore::open(&istio).map_err(|e| DemoError::Store(e.to_string()))?;
    let provider = VirtualServiceWeights::new(store, NAMESPACE, NAME, ROUTE);
    let initial = provider.read().await.map_err(DemoError::Store)?;
    blend.record(clock.now(), initial);
    let follow = blend.follow(provider.clone(), Duration::from_millis(15));

    let mut versions: Vec<String> = vec![scenario::STABLE.to_string(), spec.canary.to_string()];
    versions.dedup();
    narrator.line(&format!(
        "{} {}",
        style.bold(&format!("▶ scenario {}:", spec.scenario.name())),
        spec.story
    ));
    narrator.line(&style.dim(&format!(
        "  reviews {} → {} · simulator {} · time ×{}",
        scenario::STABLE,
        spec.canary,
        running.url(),
        skycanary_runtime::analysis::fmt_num(opts.speed)
    )));

    let daemon = Daemon::start(&DaemonConfig {
        program: opts.program.clone(),
        config: config.clone(),
        manifests: istio.clone(),
        state_dir: state.clone(),
        skywalking: running.url(),
        token_file,
        token,
        time_scale: opts.speed,
        clock_origin: origin,
        log_file: root.join("daemon.log"),
    })
    .await?;
    narrator.line(&style.dim(&format!(
        "  daemon: skycanary run (file mode) on {}",
        daemon.url()
    )));
    for s in &loaded.scheduled {
        narrator.line(&style.dim(&format!(
            "  ScheduledAnalysis {}: schedule \"{}\" ({})",
            s.doc.metadata.name,
            s.doc.spec.schedule,
            s.doc.spec.time_zone.as_deref().unwrap_or("UTC")
        )));
    }
    let has_schedules = !loaded.scheduled.is_empty();
    let mut scheduled_runs: BTreeMap<String, ScheduledRun> = BTreeMap::new();
    let mut rollback_seen = false;
    let mut held: Vec<(DateTime<Utc>, Happening)> = Vec::new();
    narrator.start_bars(&versions);

    let started = clock.now();
    let real_start = Instant::now();
    let mut observer = Observer::default();
    let mut happenings: Vec<(DateTime<Utc>, Happening)> = Vec::new();
    let mut last_status: Option<CanaryStatus> = None;
    let mut api_failures = 0u32;
    let mut alarm_sent = false;
    let mut alarm_latency = None;
    let mut timed_out = false;
    let emit = |narrator: &mut Narrator,
                happenings: &mut Vec<(DateTime<Utc>, Happening)>,
                at: DateTime<Utc>,
                h: Happening| {
        if let Happening::Weights(w) = &h {
            narrator.set_weights(w);
        }
        let rel = at - started;
        let stamp = format!(
            "+{:02}:{:02}",
            rel.num_minutes().max(0),
            rel.num_seconds().max(0) % 60
        );
        narrator.line(&format!(
            "  {}  {}",
            style.dim(&stamp),
            describe(&h, &info, style)
        ));
        happenings.push((at, h));
    };
    // Weight changes (and alarms) seen after a status was fetched wait for the next round,
    // so the decision that caused or followed them (in the next status) is told in order.
    let mut pending: Vec<(DateTime<Utc>, Happening)> = Vec::new();
    loop {
        let now = clock.now();
        let mut batch: Vec<(DateTime<Utc>, Happening)> = Vec::new();
        match daemon.canary(NAMESPACE, NAME).await {
            Ok(summary) => {
                api_failures = 0;
                batch.extend(observer.status(&summary.status, &steps, clock.now()));
                last_status = Some(summary.status);
            }
            Err(e) => {
                api_failures += 1;
                if api_failures >= 25 {
                    narrator.finish_bars();
                    drop(follow);
                    daemon.stop().await;
                    return Err(e.into());
                }
            }
        }
        if let (Some(w), Some(f)) = (&spec.workload, &workload_file)
            && !workload_ready
        {
            saw_not_ready |= last_status.as_ref().is_some_and(|s| {
                s.pause.as_ref().is_some_and(|p| {
                    p.reason == skycanary_runtime::canary::PauseReason::CanaryNotReady
                })
            });
            exposed_before_ready |= provider
                .read()
                .await
                .ok()
                .and_then(|ws| ws.get(spec.canary).copied())
                .is_some_and(|x| x > 0.0);
            // The pods become ready once `ready_after` has passed and the canary was seen
            // waiting for them: on a loaded machine the daemon may reach its first step later
            // than `ready_after`, and the story is the wait. Never waiting is still caught
            // (ready after four times as long, then reported as a problem below).
            if now - started >= w.ready_after
                && (saw_not_ready || now - started >= w.ready_after * 4)
            {
                write_file(f, &w.manifest(w.replicas))?;
                workload_ready = true;
                let rel = now - started;
                narrator.line(&format!(
                    "  {}  Deployment {}: {} of {} pods ready now (manifest updated)",
                    style.dim(&format!(
                        "+{:02}:{:02}",
                        rel.num_minutes().max(0),
                        rel.num_seconds().max(0) % 60
                    )),
                    w.name,
                    w.replicas,
                    w.replicas
                ));
            }
        }
        let mut done = workload_ready
            && last_status
                .as_ref()
                .is_some_and(|s| finished(s, spec.expect.phase));
        if has_schedules {
            // After the status, so a run's result is not older than the canary status seen.
            if let Ok(items) = daemon.scheduled_analyses().await {
                rollback_seen |= rollback_recorded(&items);
                remember_runs(&mut scheduled_runs, &items);
                batch.extend(observer.scheduled(&items, clock.now()));
            }
            // The scheduler records its rollback once the canary has answered: until then the
            // canary's RolledBack waits, so the run that caused it is told first, and the
            // scenario is not over.
            if rollback_seen {
                batch.append(&mut held);
            } else {
                let (rolled_back, rest): (Vec<_>, Vec<_>) = batch.drain(..).partition(|(_, h)| {
                    matches!(
                        h,
                        Happening::Phase {
                            phase: CanaryPhase::RolledBack,
                            ..
                        }
                    )
                });
                held.extend(rolled_back);
                batch = rest;
                done = done
                    && last_status
                        .as_ref()
                        .is_none_or(|s| s.phase != CanaryPhase::RolledBack);
            }
        }
        pending.extend(observer.weights(&blend.weight_history()));
        let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(t, _)| *t <= now);
        pending = later;
        batch.extend(due);
        batch.sort_by_key(|(t, _)| *t);
        for (at, h) in batch {
            emit(narrator, &mut happenings, at, h);
        }
        // Playing OAP's alarm module: the rule reads the last complete minute.
        if let Some(rule) = &spec.alarm
            && !alarm_sent
        {
            let value = blend.service_value(rule.metric, last_complete_minute(now));
            if rule.fires(value) {
                alarm_sent = true;
                let value = value.unwrap_or(f64::NAN);
                pending.push((
                    now,
                    Happening::AlarmSent {
                        rule: rule.name.to_string(),
                        value,
                        below: rule.below,
                    },
                ));
                let sent = Instant::now();
                let answer = daemon
                    .skywalking_alarm(&alarm_payload(rule, now, value))
                    .await;
                let latency = sent.elapsed();
                alarm_latency = Some(latency);
                let answer = match answer {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("error: {e}"),
                };
                pending.push((clock.now(), Happening::AlarmAnswered { answer, latency }));
            }
        }
        if done {
            break;
        }
        // Simulated time is the budget; a loaded machine gets at least a real minute.
        if clock.now() - started > opts.deadline && real_start.elapsed() > Duration::from_secs(60) {
            timed_out = true;
            break;
        }
        tokio::time::sleep(opts.poll).await;
    }
    // The last weights as written in the file.
    let final_weights = provider.read().await.ok();
    if let Some(w) = &final_weights {
        blend.record(clock.now(), w.clone());
    }
    pending.extend(observer.weights(&blend.weight_history()));
    pending.append(&mut held);
    pending.sort_by_key(|(t, _)| *t);
    for (at, h) in pending {
        emit(narrator, &mut happenings, at, h);
    }
    drop(follow);
    narrator.finish_bars();
    daemon.stop().await;
    let mut outcome = scenario::judge_outcome(
        &spec,
        last_status.as_ref(),
        final_weights.as_ref(),
        timed_out,
    );
    if spec.workload.is_some() {
        if !saw_not_ready {
            outcome
                .problems
                .push("the canary was never seen waiting with reason CanaryNotReady".into());
        }
        if exposed_before_ready {
            outcome
                .problems
                .push("the canary got traffic before its pods were ready".into());
        }
        outcome.ok = outcome.ok && saw_not_ready && !exposed_before_ready;
    }
    let verdict = if outcome.ok {
        style.good(&format!("✔ {}: {}", spec.scenario.name(), outcome.summary))
    } else {
        style.bad(&format!(
            "✘ {}: {} — {}",
            spec.scenario.name(),
            outcome.summary,
            outcome.problems.join("; ")
        ))
    };
    narrator.line(&verdict);
    narrator.line("");
    if !outcome.ok && opts.work_dir.is_none() {
        // Keep the evidence: the daemon's log outlives the temporary directory.
        let kept = std::env::temp_dir().join(format!(
            "skycanary-demo-{}-daemon.log",
            spec.scenario.name()
        ));
        if std::fs::copy(root.join("daemon.log"), &kept).is_ok() {
            narrator.line(&format!("  daemon log: {}", kept.display()));
        }
    }
    Ok(ScenarioRun {
        history: blend.weight_history(),
        spec,
        outcome,
        status: last_status,
        final_weights,
        happenings,
        info,
        started,
        simulated: clock.now() - started,
        real: real_start.elapsed(),
        alarm_latency,
        scheduled_runs: {
            let mut runs: Vec<ScheduledRun> = scheduled_runs.into_values().collect();
            runs.sort_by_key(|r| (r.status.started_at, r.name.clone()));
            runs
        },
    })
}

/// Keeps the latest state of every run seen (the daemon trims its history).
fn remember_runs(runs: &mut BTreeMap<String, ScheduledRun>, items: &[ScheduleSummary]) {
    for s in items {
        for r in s.status.active.iter().chain(&s.status.history) {
            runs.insert(format!("{}/{}/{}", s.namespace, s.name, r.name), r.clone());
        }
    }
}

/// A finished run of a scheduled analysis has recorded a rollback.
fn rollback_recorded(items: &[ScheduleSummary]) -> bool {
    items.iter().any(|s| {
        s.status
            .history
            .iter()
            .any(|r| r.actions.iter().any(|a| a.kind == ActionKind::Rollback))
    })
}

/// A scenario is over when the canary is promoted or rolled back with its routing written,
/// or stuck in a state only a human would leave. A promoted canary is not the end of a
/// scenario that expects it rolled back afterwards (by a scheduled analysis).
fn finished(s: &CanaryStatus, expected: CanaryPhase) -> bool {
    match s.phase {
        CanaryPhase::Promoted => s.routing_write.is_none() && expected != CanaryPhase::RolledBack,
        CanaryPhase::Aborted | CanaryPhase::RolledBack => s.routing_write.is_none(),
        CanaryPhase::Degraded => true,
        CanaryPhase::Paused => s.pause.as_ref().is_some_and(|p| {
            // Waiting for the canary's pods resumes by itself.
            !matches!(
                p.reason,
                skycanary_runtime::canary::PauseReason::Step
                    | skycanary_runtime::canary::PauseReason::CanaryNotReady
            ) || (p.until.is_none() && p.reason == skycanary_runtime::canary::PauseReason::Step)
        }),
        _ => false,
    }
}

/// Conditions and args of every metric of the loaded templates (args as the demo's
/// Canary passes them).
fn metric_info(
    templates: &[skycanary_runtime::resources::LoadedTemplate],
    sim_url: &str,
) -> BTreeMap<String, MetricInfo> {
    let given = BTreeMap::from([("service".to_string(), SERVICE.to_string())]);
    let defaults = Defaults {
        skywalking: Some(sim_url.to_string()),
        timezone: None,
    };
    let mut out = BTreeMap::new();
    for t in templates {
        if let Ok(plan) = skycanary_runtime::runner::plan(t, &given, &defaults) {
            out.extend(MetricInfo::of_plan(&plan));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_alarm_payload_is_what_oap_sends() {
        let rule = scenario::Scenario::Alarm.spec().alarm.unwrap();
        let at = Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).single().unwrap();
        let p = alarm_payload(&rule, at, 9843.0);
        let msgs =
            skycanary_runtime::alarm::skywalking::parse_payload(p.to_string().as_bytes()).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].rule_name.as_deref(), Some("service_sla_rule"));
        assert_eq!(msgs[0].name.as_deref(), Some(SERVICE));
        assert_eq!(msgs[0].started(), Some(at));
        assert!(!msgs[0].is_recovery());
        // The demo Canary's rollbackOn matches it.
        let docs = scenario::Scenario::Alarm.spec().config;
        let loaded = skycanary_runtime::resources::load_str("c.yaml", &docs[0]);
        let rb = loaded.canaries[0].doc.spec.rollback_on.clone().unwrap();
        assert!(
            skycanary_runtime::alarm::AlarmMatchers::compile(&rb.alarms, &mut Default::default())
                .matches(&msgs[0])
        );
    }

    #[test]
    fn last_complete_minute_is_the_previous_bucket() {
        let t = Utc
            .with_ymd_and_hms(2025, 3, 1, 10, 7, 42)
            .single()
            .unwrap();
        assert_eq!(
            last_complete_minute(t),
            Utc.with_ymd_and_hms(2025, 3, 1, 10, 6, 0).single().unwrap()
        );
    }

    #[test]
    fn finished_states() {
        let mut s = CanaryStatus {
            phase: CanaryPhase::Promoted,
            ..Default::default()
        };
        assert!(finished(&s, CanaryPhase::Promoted));
        assert!(
            !finished(&s, CanaryPhase::RolledBack),
            "a scheduled analysis is still to roll it back"
        );
        s.phase = CanaryPhase::RolledBack;
        assert!(finished(&s, CanaryPhase::RolledBack));
        s.phase = CanaryPhase::Promoted;
        s.routing_write = Some(skycanary_runtime::canary::RoutingWrite {
            routing: skycanary_runtime::traffic::DesiredRouting::weight(100),
            requested_at: Utc::now(),
            retry_at: None,
            error: None,
            failures: 0,
        });
        assert!(
            !finished(&s, CanaryPhase::Promoted),
            "the final write is still in flight"
        );
        s.phase = CanaryPhase::Progressing;
        s.routing_write = None;
        assert!(!finished(&s, CanaryPhase::Promoted));
        s.phase = CanaryPhase::Paused;
        s.pause = Some(skycanary_runtime::canary::PauseStatus {
            reason: skycanary_runtime::canary::PauseReason::Step,
            since: Utc::now(),
            until: Some(Utc::now()),
            message: None,
        });
        assert!(
            !finished(&s, CanaryPhase::Promoted),
            "a timed pause step ends by itself"
        );
        s.pause.as_mut().unwrap().reason = skycanary_runtime::canary::PauseReason::Inconclusive;
        assert!(finished(&s, CanaryPhase::Promoted));
    }
}
