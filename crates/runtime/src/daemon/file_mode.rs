//! File mode (`skycanary run --config --manifests --state-dir`): resources from files
//! (reloaded when they change), Istio objects in the manifests directory, state files. Canaries
//! walk their steps on their own; the HTTP API serves status, commands, metrics and alarm
//! webhooks.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::assembly::{
    Outcome, PollSetup, RunConfig, Serving, alarm_poller, api_auth, bind, daemon_clock,
    notify_config, schedule_context, shutdown_signal, start_notifier,
};
use crate::canary::driver::{self, CanaryTaskContext};
use crate::daemon::TaskRegistry;
use crate::daemon::invalid::{Invalid, InvalidKind, InvalidReports, InvalidSinks};
use crate::daemon::reload::{reconcile_canaries, reconcile_schedules};
use crate::daemon::simulated_oap::{SimulatedOap, SimulatedOapSetup};
use crate::resources::{LoadResult, load_paths};
use crate::runner::Defaults;
use crate::schedule::driver as schedule_driver;
use crate::schedule::store::ScheduleStatusStore;
use crate::server::{self, Metrics};
use crate::state::{FileStatusStore, StatusStore};
use crate::traffic::drift::DriftSignals;
use crate::traffic::file::FileManifestStore;
use crate::traffic::router::Router;

/// Runs until SIGINT/SIGTERM; a configuration refused before anything runs is reported to
/// `err` ([`Outcome::Invalid`]). `simulator` starts the OAP of `--simulator` (refused without).
pub async fn run(
    args: &RunConfig,
    simulator: Option<&dyn SimulatedOap>,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<Outcome> {
    let (Some(manifests), Some(state_dir)) = (&args.manifests, &args.state_dir) else {
        writeln!(
            err,
            "error: file mode needs --manifests and --state-dir (or use --kube)"
        )?;
        return Ok(Outcome::Invalid);
    };
    let loaded = load_paths(&args.config);
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            writeln!(err, "error: {e}")?;
        }
        return Ok(Outcome::Invalid);
    }
    let timezone = args.timezone;
    let mut defaults = Defaults {
        skywalking: args.skywalking.clone(),
        timezone,
    };
    // Kept until the daemon stops: dropping it stops the simulated OAP.
    let mut sim = None;
    if let (Some(_), Some(oap)) = (&args.simulator, &args.skywalking) {
        // One of the two would be ignored silently; a user who set both meant one of them.
        writeln!(
            err,
            "error: --simulator serves its own OAP and cannot be combined with --skywalking \
             {oap} (or SKYCANARY_SKYWALKING): give one"
        )?;
        return Ok(Outcome::Invalid);
    }
    if let Some(scenario) = &args.simulator {
        // The binary passes a simulator when it is built with one (and refuses the flag
        // before the daemon starts otherwise); a caller that passed none is told so here.
        let Some(simulator) = simulator else {
            writeln!(
                err,
                "error: --simulator: this daemon was started without a simulator (a build \
                 with the `demo` cargo feature serves one)"
            )?;
            return Ok(Outcome::Invalid);
        };
        let started = simulator
            .start(SimulatedOapSetup {
                scenario,
                manifests,
                timezone,
                clock: daemon_clock(args),
            })
            .await;
        match started {
            Ok(s) => {
                defaults.skywalking = Some(s.url());
                sim = Some(s);
            }
            Err(errors) => {
                for e in &errors {
                    writeln!(err, "error: --simulator: {e}")?;
                }
                return Ok(Outcome::Invalid);
            }
        }
    }
    let unplannable = unplannable_analyses(&loaded, &defaults);
    if !unplannable.is_empty() {
        for e in &unplannable {
            writeln!(err, "error: {e}")?;
        }
        return Ok(Outcome::Invalid);
    }
    let Some(notify_cfg) = notify_config(args, err)? else {
        return Ok(Outcome::Invalid);
    };
    let unknown_sinks = crate::notify::config::check_subscribers(&loaded, notify_cfg.as_ref());
    if !unknown_sinks.is_empty() {
        for e in &unknown_sinks {
            writeln!(err, "error: {e}")?;
        }
        return Ok(Outcome::Invalid);
    }
    let Some(auth) = api_auth(args, err)? else {
        return Ok(Outcome::Invalid);
    };
    let store = match FileManifestStore::open(manifests) {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: --manifests {}: {e}", manifests.display())?;
            return Ok(Outcome::Invalid);
        }
    };
    let state = match FileStatusStore::open(state_dir) {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: --state-dir: {e}")?;
            return Ok(Outcome::Invalid);
        }
    };
    let Some(listener) = bind(args, err).await? else {
        return Ok(Outcome::Invalid);
    };
    let local = listener.local_addr()?;

    let metrics = Metrics::new();
    let clock = daemon_clock(args);
    let schedule_state = ScheduleStatusStore::file(state.clone());
    // Foreign edits of the managed weights are looked for on a short poll (and before each
    // decision); the poller only says which VirtualService changed.
    let drift = DriftSignals::polled();
    let drift_poll = tokio::spawn(crate::daemon::drift_watch::poll_manifests(
        store.clone(),
        drift.clone(),
        crate::daemon::drift_watch::MANIFEST_POLL,
    ));
    let notifier = start_notifier(notify_cfg.as_ref(), &metrics);
    let mut ctx = CanaryTaskContext {
        router: Arc::new(Router::new(store)),
        templates: Arc::new(loaded.templates.clone()),
        state: StatusStore::file(state),
        events: None,
        clock,
        defaults,
        metrics: Arc::new(metrics.clone()),
        clients: crate::runner::ClientCache::observed(Arc::new(metrics.clone())),
        drift,
        notifier: notifier.clone(),
        // Workload readiness from the same directory, at the drift poll's cadence.
        readiness: Some(Arc::new(crate::canary::readiness_file::FileReadiness::new(
            manifests.clone(),
            crate::daemon::drift_watch::MANIFEST_POLL,
        ))),
    };
    let handles: Vec<_> = loaded
        .canaries
        .iter()
        .map(|c| driver::spawn(c, ctx.clone()))
        .collect();
    let registry = Arc::new(TaskRegistry::new(handles, metrics.clone()));
    let poller = match alarm_poller(args, registry.clone(), ctx.clock.clone(), err)? {
        PollSetup::Invalid => return Ok(Outcome::Invalid),
        PollSetup::Off => None,
        PollSetup::On(p) => Some(p),
    };
    let mut sched_ctx = schedule_context(&ctx, schedule_state, &metrics, registry.clone());
    registry.replace_schedules(
        loaded
            .scheduled
            .iter()
            .map(|s| schedule_driver::spawn(s, sched_ctx.clone()))
            .collect(),
    );
    registry.set_ready(true);
    // Announcements are best effort: a daemon whose stdout was closed (a supervisor that read
    // the first line, `| head -1`) keeps running; its log goes to stderr.
    let _ = writeln!(
        out,
        "skycanary running: {} canary(ies), {} scheduled analysis(es), {} template(s); listening on http://{local}",
        loaded.canaries.len(),
        loaded.scheduled.len(),
        loaded.templates.len()
    );
    if let (Some(s), Some(scenario)) = (&sim, &args.simulator) {
        let _ = writeln!(
            out,
            "simulated SkyWalking OAP {} on {} (scenario {})",
            s.release(),
            s.url(),
            scenario.display()
        );
    }
    let _ = out.flush();

    let metrics_of = metrics.clone();
    let app = server::router(registry.clone(), metrics, auth);
    let serving = Serving::start(args, listener, app, poller);

    // Reload on change: the config files are checked every 2 s; a valid new set replaces the
    // running tasks (each stopped, with its state persisted, before the new one starts); an
    // invalid one is reported and the running set is kept.
    // A fingerprint that could not be taken (out of file descriptors, say) is never "seen":
    // the next one would differ and trigger a reload of what did not change (issue 14).
    let mut seen = config_fingerprint(&args.config).unwrap_or_default();
    let mut invalid_reports = InvalidReports::default();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let now = match config_fingerprint(&args.config) {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!("cannot check the configuration for changes, trying again: {e}");
                continue;
            }
        };
        if now == seen {
            continue;
        }
        seen = now;
        let reloaded = load_paths(&args.config);
        let refused = refused_objects(&reloaded, &registry);
        let sinks = InvalidSinks {
            canaries: &ctx.state,
            schedules: &sched_ctx.state,
            events: None,
            registry: &registry,
            notifier: &notifier,
        };
        crate::daemon::invalid::report(&mut invalid_reports, &refused, &sinks, ctx.clock.now())
            .await;
        if !reloaded.errors.is_empty() {
            for e in &reloaded.errors {
                tracing::error!("config reload refused, keeping the running canaries: {e}");
            }
            continue;
        }
        let mut unplannable = unplannable_analyses(&reloaded, &ctx.defaults);
        unplannable.extend(
            crate::notify::config::check_subscribers(&reloaded, notify_cfg.as_ref())
                .iter()
                .map(ToString::to_string),
        );
        if !unplannable.is_empty() {
            for e in &unplannable {
                tracing::error!("config reload refused, keeping the running canaries: {e}");
            }
            continue;
        }
        // Only what changed is replaced; the handle map is swapped in one step, so rollback
        // rules are never empty while a reload runs.
        let old_templates = ctx.templates.clone();
        ctx.templates = Arc::new(reloaded.templates.clone());
        sched_ctx.templates = ctx.templates.clone();
        let canaries = reconcile_canaries(
            &registry,
            &reloaded.canaries,
            &old_templates,
            &ctx.templates,
            &|_, _| false,
            |c, prev| driver::spawn_successor(c, ctx.clone(), prev),
        )
        .await;
        metrics_of.retain_canaries(|ns, n| {
            reloaded
                .canaries
                .iter()
                .any(|c| c.namespace() == ns && c.doc.metadata.name == n)
        });
        let schedules = reconcile_schedules(
            &registry,
            &reloaded.scheduled,
            &old_templates,
            &ctx.templates,
            |s| schedule_driver::spawn(s, sched_ctx.clone()),
        )
        .await;
        tracing::info!(
            canaries_kept = canaries.kept,
            canaries_started = canaries.started,
            canaries_stopped = canaries.stopped,
            schedules_kept = schedules.kept,
            schedules_started = schedules.started,
            schedules_stopped = schedules.stopped,
            templates = reloaded.templates.len(),
            "configuration changed; replaced what changed"
        );
    }
    registry.set_ready(false);
    registry.stop_tasks().await;
    drift_poll.abort();
    serving.stop();
    match serving.finished().await {
        Ok(()) => {
            let _ = writeln!(out, "skycanary stopped");
            Ok(Outcome::Stopped)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(Outcome::Failed)
        }
    }
}

/// The Canaries and ScheduledAnalyses of a refused reload that failed validation and that no
/// task drives (a running one keeps its previous spec, and its own status writes).
fn refused_objects(loaded: &LoadResult, registry: &TaskRegistry) -> Vec<Invalid> {
    let canaries = registry.handles();
    let schedules = registry.schedules();
    loaded
        .invalid
        .iter()
        .filter_map(|o| {
            let kind = match o.kind {
                "Canary" => InvalidKind::Canary,
                _ => InvalidKind::ScheduledAnalysis,
            };
            let running = match kind {
                InvalidKind::Canary => canaries
                    .iter()
                    .any(|h| h.namespace == o.namespace && h.name == o.name),
                InvalidKind::ScheduledAnalysis => schedules
                    .iter()
                    .any(|h| h.namespace == o.namespace && h.name == o.name),
            };
            if running {
                let span = crate::daemon::invalid::object_span(o.kind, &o.namespace, &o.name);
                tracing::warn!(parent: &span, "the changed spec is refused; the previous one still drives it");
                return None;
            }
            Some(Invalid {
                kind,
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                message: crate::daemon::invalid::message(&o.errors),
                generation: None,
                uid: None,
            })
        })
        .collect()
}

/// Every analysis of the loaded Canaries and ScheduledAnalyses that cannot be planned with
/// these defaults (a template without an address while `--skywalking` is missing, say): `run`
/// refuses such a configuration before any canary is exposed.
fn unplannable_analyses(loaded: &LoadResult, defaults: &Defaults) -> Vec<String> {
    let canaries = loaded.canaries.iter().flat_map(|c| {
        crate::canary::preflight::unplannable(&c.doc, c.namespace(), &loaded.templates, defaults)
            .into_iter()
            .map(move |(path, why)| {
                let what = format!("Canary {}/{}", c.namespace(), c.doc.metadata.name);
                c.origin
                    .error(&path, format!("{what}: this analysis cannot run: {why}"))
                    .to_string()
            })
    });
    let scheduled = loaded.scheduled.iter().filter_map(|s| {
        schedule_driver::plan(&s.doc, s.namespace(), &loaded.templates, defaults)
            .err()
            .map(|why| {
                let what = format!(
                    "ScheduledAnalysis {}/{}",
                    s.namespace(),
                    s.doc.metadata.name
                );
                s.origin
                    .error("spec.templates", format!("{what}: {why}"))
                    .to_string()
            })
    });
    canaries.chain(scheduled).collect()
}

/// Paths, sizes and modification times of the config files: cheap change detection. The
/// files are the ones `load_paths` reads, found by the same walk (symlink loops not followed).
/// Size and modification time of every config file; Err(why) when the walk or a file could
/// not be read, so a failed read is never taken for "these files are gone".
fn config_fingerprint(paths: &[PathBuf]) -> Result<Fingerprint, String> {
    let mut errors = Vec::new();
    let files = crate::resources::load::config_files(paths, &mut errors);
    // Read failures ("cannot read", "cannot list directory") only: a symlink loop is reported
    // the same way on every walk and changes nothing here.
    if let Some(e) = errors.iter().find(|e| e.message.starts_with("cannot ")) {
        return Err(e.to_string());
    }
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let modified = meta.modified().ok();
            Ok((p, meta.len(), modified))
        })
        .collect()
}

/// What the reload watcher compares: each config file with its size and modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{Outcome, RunConfig};
    use crate::daemon::simulated_oap::{SimulatedOap, SimulatedOapSetup, Started};

    /// File mode over empty `config`, `manifests` and `state` directories of `dir`.
    fn file_mode(dir: &Path, simulator: Option<PathBuf>) -> RunConfig {
        for d in ["config", "manifests", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        RunConfig {
            config: vec![dir.join("config")],
            manifests: Some(dir.join("manifests")),
            state_dir: Some(dir.join("state")),
            kube: false,
            namespace: None,
            identity: None,
            lease: "skycanary/skycanary-leader".into(),
            lease_duration: 15,
            istio_api_version: Default::default(),
            skywalking: None,
            simulator,
            timezone: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: None,
            insecure_api: true,
            time_scale: 1.0,
            clock_origin: None,
            read_timeout: 10,
            alarm_poll_interval: None,
            notifications: None,
        }
    }

    /// A simulator that refuses every scenario, recording what it was asked to serve.
    struct Refusing(std::sync::Mutex<Vec<(PathBuf, PathBuf)>>);

    impl SimulatedOap for Refusing {
        fn start<'a>(&'a self, setup: SimulatedOapSetup<'a>) -> Started<'a> {
            self.0
                .lock()
                .unwrap()
                .push((setup.scenario.to_path_buf(), setup.manifests.to_path_buf()));
            Box::pin(async { Err(vec!["no such scenario".to_string(), "second".to_string()]) })
        }
    }

    /// `--simulator` without a simulator to serve it (the runtime does not link one) is a
    /// refused configuration, never a daemon silently running without its OAP.
    #[tokio::test]
    async fn the_simulator_flag_without_a_simulator_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = file_mode(dir.path(), Some(dir.path().join("s.yaml")));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = super::run(&config, None, &mut out, &mut err).await.unwrap();
        assert_eq!(outcome, Outcome::Invalid);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with("error: --simulator: "), "{err}");
        assert!(err.contains("`demo` cargo feature"), "{err}");
        assert!(out.is_empty());
    }

    /// The injected simulator is given the scenario and the manifests its `weightsFrom`
    /// follows; each of its errors is reported on a line of its own, naming the flag.
    #[tokio::test]
    async fn the_injected_simulator_serves_the_scenario_and_its_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("s.yaml");
        let config = file_mode(dir.path(), Some(scenario.clone()));
        let sim = Refusing(Default::default());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = super::run(&config, Some(&sim), &mut out, &mut err)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Invalid);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "error: --simulator: no such scenario\nerror: --simulator: second\n"
        );
        assert_eq!(
            *sim.0.lock().unwrap(),
            [(scenario, dir.path().join("manifests"))]
        );
    }
    /// The reload watcher's fingerprint walks like the loader: a symlink loop (which used to
    /// hang it) is not followed, and each file counts once.
    #[cfg(unix)]
    #[test]
    fn config_fingerprint_does_not_follow_symlink_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("b")).unwrap();
        let fp = super::config_fingerprint(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(fp.len(), 1, "{fp:?}");
        assert_eq!(fp[0].0, dir.path().join("c.yaml"));
        assert_eq!(fp[0].1, 5);
    }

    /// A walk that fails is an error, never an empty fingerprint: the watcher would take it
    /// as "every file removed", then reload when the files "come back".
    #[test]
    fn a_config_that_cannot_be_read_has_no_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), "a: 1\n").unwrap();
        let paths = [dir.path().to_path_buf(), dir.path().join("gone")];
        let e = super::config_fingerprint(&paths).unwrap_err();
        assert!(e.contains("gone"), "{e}");
        assert!(super::config_fingerprint(&paths[..1]).is_ok());
    }
}
