//! `skycanary run`: the daemon. Canaries walk their steps on their own; the HTTP API serves
//! status, commands, metrics and alarm webhooks.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::alarm::poll::{AlarmSink, PollConfig, Poller};
use crate::canary::driver::{self, DriverContext};
use crate::daemon::DaemonControl;
use crate::daemon::invalid::{Invalid, InvalidKind, InvalidReports, InvalidSinks};
use crate::daemon::reload::{reconcile_canaries, reconcile_schedules};
use crate::provider::skywalking::{ClientOptions, SkyWalkingClient};
use crate::resources::{LoadResult, load_paths};
use crate::runner::{Clock, Defaults, SystemClock, WallScaledClock};
use crate::schedule::driver::{self as schedule_driver, SchedulerContext};
use crate::schedule::store::ScheduleStore;
use crate::server::{self, Auth, Metrics, Token};
use crate::state::{FileStateStore, StatusStore};
use crate::traffic::drift::DriftSignals;
use crate::traffic::file::FileStore;
use crate::traffic::router::Router;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directories (or files) with Canaries, ScheduledAnalyses and AnalysisTemplates (recursive,
    /// multi-document). With --kube: templates only (e.g. the bundled ones), read at start; CRDs
    /// of the same kind/namespace/name override them.
    #[arg(long = "config", value_name = "DIR", required_unless_present = "kube")]
    pub config: Vec<PathBuf>,
    /// Directory of Istio manifests the canaries route traffic in (file backend).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    pub manifests: Option<PathBuf>,
    /// Where state is kept (one JSON file per Canary and per ScheduledAnalysis).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    pub state_dir: Option<PathBuf>,
    /// Cluster mode: Canaries and templates from CRDs, routing through the API server,
    /// state in `.status`, one leader among replicas (Lease).
    #[arg(long)]
    pub kube: bool,
    /// Cluster mode: watch this namespace only (default: all).
    #[arg(long, value_name = "NS", requires = "kube")]
    pub namespace: Option<String>,
    /// Cluster mode: this replica's identity in the Lease (default: HOSTNAME).
    #[arg(long, requires = "kube")]
    pub identity: Option<String>,
    /// Cluster mode: the Lease, `namespace/name`.
    #[arg(long, default_value = "skycanary/skycanary-leader", requires = "kube")]
    pub lease: String,
    /// Cluster mode: Lease duration in seconds (a standby takes over within it).
    #[arg(long, default_value_t = 15, requires = "kube",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_duration: u64,
    /// Cluster mode: Istio API version.
    #[arg(long, default_value = "v1", value_name = "VERSION")]
    pub istio_api_version: crate::traffic::kube::IstioApiVersion,
    /// SkyWalking OAP for templates without `provider.skywalking.address`.
    #[arg(long, env = "SKYCANARY_SKYWALKING", value_name = "URL")]
    pub skywalking: Option<String>,
    /// Try the daemon without an OAP: serve this scenario file (see `skycanary simulator`)
    /// from an in-process simulated OAP on loopback, used instead of --skywalking; its
    /// `weightsFrom` follows the VirtualServices of --manifests.
    #[arg(long, value_name = "SCENARIO", conflicts_with = "kube")]
    #[cfg_attr(not(feature = "demo"), arg(hide = true))]
    pub simulator: Option<PathBuf>,
    /// OAP timezone (`+0800`); by default read from the OAP.
    #[arg(long, value_name = "OFFSET", value_parser = super::parse_timezone_arg)]
    pub timezone: Option<chrono::FixedOffset>,
    /// HTTP listen address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// File holding the API bearer token (else SKYCANARY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve /api and /webhooks without authentication (only for local experiments).
    #[arg(long)]
    pub insecure_api: bool,
    /// Demos and tests: run the daemon's clock this many times faster than real time.
    #[arg(long, hide = true, default_value_t = 1.0, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// Demos and tests: the wall-clock instant (RFC 3339) where the scaled clock starts; a
    /// simulator given the same origin and scale agrees on the time (default: now).
    #[arg(long, hide = true, value_name = "RFC3339")]
    pub clock_origin: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds a client has to send a request's headers, and then as long for its body; slower
    /// clients are disconnected or answered 408 (slowloris guard).
    #[arg(long, default_value_t = 10, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: u64,
    /// Also poll the `--skywalking` OAP's `getAlarm` at this interval (e.g. `30s`), for
    /// when OAP's alarm webhook cannot reach the daemon. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_poll_interval)]
    pub alarm_poll_interval: Option<std::time::Duration>,
    /// Lifecycle notifications: a YAML file of named sinks (signed webhooks, Slack), the
    /// default subscriptions and delivery bounds (docs/notifications.md). Read at start.
    #[arg(long, value_name = "FILE", env = "SKYCANARY_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
}

/// Reads `--notifications`; None after reporting its problems (file, line, field) to `err`.
pub fn notify_config(
    args: &RunArgs,
    err: &mut dyn Write,
) -> std::io::Result<Option<Option<crate::notify::NotifyConfig>>> {
    let Some(path) = &args.notifications else {
        return Ok(Some(None));
    };
    match crate::notify::config::load(path, &|k| std::env::var(k).ok()) {
        Ok(c) => Ok(Some(Some(c))),
        Err(errors) => {
            for e in &errors {
                writeln!(err, "error: --notifications: {e}")?;
            }
            Ok(None)
        }
    }
}

/// `--alarm-poll-interval`: between 100ms and a day (the next poll's time is computed by
/// adding it to the clock, which must not overflow).
fn parse_poll_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::resources::duration::parse_duration(s)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s:?} is too short (at least 100ms)"));
    }
    if d > std::time::Duration::from_secs(86_400) {
        return Err(format!("{s:?} is too long (at most 24h)"));
    }
    Ok(d)
}

/// The `getAlarm` poller asked for by `--alarm-poll-interval`.
pub enum PollSetup {
    /// Not asked for.
    Off,
    /// Ready to run.
    On(Poller),
    /// Misconfigured (already reported).
    Invalid,
}

/// Builds the poller of `--alarm-poll-interval` against `--skywalking`.
pub fn alarm_poller(
    args: &RunArgs,
    sink: Arc<dyn AlarmSink>,
    clock: Arc<dyn Clock>,
    err: &mut dyn Write,
) -> std::io::Result<PollSetup> {
    let Some(interval) = args.alarm_poll_interval else {
        return Ok(PollSetup::Off);
    };
    let Some(address) = &args.skywalking else {
        writeln!(
            err,
            "error: --alarm-poll-interval needs --skywalking (the OAP to poll)"
        )?;
        return Ok(PollSetup::Invalid);
    };
    let mut opts = ClientOptions::new(address.clone());
    opts.timezone = args.timezone;
    match SkyWalkingClient::new(opts) {
        Ok(client) => Ok(PollSetup::On(Poller::new(
            Arc::new(client),
            sink,
            clock,
            PollConfig::new(interval),
        ))),
        Err(e) => {
            writeln!(err, "error: --skywalking: {e}")?;
            Ok(PollSetup::Invalid)
        }
    }
}

fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 3600.0 => Ok(f),
        _ => Err(format!("{s:?}: expected a number in (0, 3600]")),
    }
}

/// The daemon's clock: real time, or wall-scaled time for demos and tests.
pub fn daemon_clock(args: &RunArgs) -> Arc<dyn Clock> {
    if args.time_scale == 1.0 && args.clock_origin.is_none() {
        return Arc::new(SystemClock);
    }
    let origin = args.clock_origin.unwrap_or_else(chrono::Utc::now);
    Arc::new(WallScaledClock::new(origin, args.time_scale))
}

/// Runs until SIGINT/SIGTERM. Exit 0 on a clean stop, 4 on invalid configuration.
pub async fn run(
    args: &RunArgs,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    if args.kube {
        return super::run_cluster::run(args, out, err).await;
    }
    let (Some(manifests), Some(state_dir)) = (&args.manifests, &args.state_dir) else {
        writeln!(
            err,
            "error: file mode needs --manifests and --state-dir (or use --kube)"
        )?;
        return Ok(4);
    };
    let loaded = load_paths(&args.config);
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            writeln!(err, "error: {e}")?;
        }
        return Ok(4);
    }
    let timezone = args.timezone;
    // Without the `demo` feature nothing replaces the OAP (`--simulator` is refused earlier).
    #[cfg_attr(not(feature = "demo"), allow(unused_mut))]
    let mut defaults = Defaults {
        skywalking: args.skywalking.clone(),
        timezone,
    };
    #[cfg(feature = "demo")]
    let mut _sim = None;
    if let (Some(_), Some(oap)) = (&args.simulator, &args.skywalking) {
        // One of the two would be ignored silently; a user who set both meant one of them.
        writeln!(
            err,
            "error: --simulator serves its own OAP and cannot be combined with --skywalking \
             {oap} (or SKYCANARY_SKYWALKING): give one"
        )?;
        return Ok(4);
    }
    #[cfg(feature = "demo")]
    if let Some(scenario) = &args.simulator {
        let started = super::simulator::start(super::simulator::SimSetup {
            scenario,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            oap_version: None,
            timezone,
            manifests: Some(manifests),
            clock: daemon_clock(args),
        })
        .await;
        match started {
            Ok(s) => {
                defaults.skywalking = Some(s.running.url());
                _sim = Some(s);
            }
            Err(errors) => {
                for e in &errors {
                    writeln!(err, "error: --simulator: {e}")?;
                }
                return Ok(4);
            }
        }
    }
    let unplannable = unplannable_analyses(&loaded, &defaults);
    if !unplannable.is_empty() {
        for e in &unplannable {
            writeln!(err, "error: {e}")?;
        }
        return Ok(4);
    }
    let Some(notify_cfg) = notify_config(args, err)? else {
        return Ok(4);
    };
    let unknown_sinks = crate::notify::config::check_subscribers(&loaded, notify_cfg.as_ref());
    if !unknown_sinks.is_empty() {
        for e in &unknown_sinks {
            writeln!(err, "error: {e}")?;
        }
        return Ok(4);
    }
    let Some(auth) = api_auth(args, err)? else {
        return Ok(4);
    };
    let store = match FileStore::open(manifests) {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: --manifests {}: {e}", manifests.display())?;
            return Ok(4);
        }
    };
    let state = match FileStateStore::open(state_dir) {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: --state-dir: {e}")?;
            return Ok(4);
        }
    };
    let Some(listener) = bind(args, err).await? else {
        return Ok(4);
    };
    let local = listener.local_addr()?;

    let metrics = Metrics::new();
    let clock = daemon_clock(args);
    let schedule_state = ScheduleStore::file(state.clone());
    // Foreign edits of the managed weights are looked for on a short poll (and before each
    // decision); the poller only says which VirtualService changed.
    let drift = DriftSignals::polled();
    let drift_poll = tokio::spawn(crate::daemon::drift_watch::poll_manifests(
        store.clone(),
        drift.clone(),
        crate::daemon::drift_watch::MANIFEST_POLL,
    ));
    let notifier = match &notify_cfg {
        Some(c) => crate::notify::Notifier::start(c, Arc::new(metrics.clone())),
        None => crate::notify::Notifier::disabled(),
    };
    let mut ctx = DriverContext {
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
    let control = Arc::new(DaemonControl::new(handles, metrics.clone()));
    let poller = match alarm_poller(args, control.clone(), ctx.clock.clone(), err)? {
        PollSetup::Invalid => return Ok(4),
        PollSetup::Off => None,
        PollSetup::On(p) => Some(p),
    };
    let mut sched_ctx = SchedulerContext {
        templates: ctx.templates.clone(),
        state: schedule_state,
        clock: ctx.clock.clone(),
        defaults: ctx.defaults.clone(),
        metrics: Arc::new(metrics.clone()),
        canaries: control.clone(),
        http: SchedulerContext::webhook_client(),
        clients: ctx.clients.clone(),
        notifier: notifier.clone(),
    };
    control.replace_schedules(
        loaded
            .scheduled
            .iter()
            .map(|s| schedule_driver::spawn(s, sched_ctx.clone()))
            .collect(),
    );
    control.set_ready(true);
    // Announcements are best effort: a daemon whose stdout was closed (a supervisor that read
    // the first line, `| head -1`) keeps running; its log goes to stderr.
    let _ = writeln!(
        out,
        "skycanary running: {} canary(ies), {} scheduled analysis(es), {} template(s); listening on http://{local}",
        loaded.canaries.len(),
        loaded.scheduled.len(),
        loaded.templates.len()
    );
    #[cfg(feature = "demo")]
    if let (Some(s), Some(scenario)) = (&_sim, &args.simulator) {
        let _ = writeln!(
            out,
            "simulated SkyWalking OAP {} on {} (scenario {})",
            s.profile,
            s.running.url(),
            scenario.display()
        );
    }
    let _ = out.flush();

    let metrics_of = metrics.clone();
    let app = server::router(control.clone(), metrics, auth);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_poll = stop_rx.clone();
    let server_task = tokio::spawn(server::serve_on_with(
        listener,
        app,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
        read_timeouts(args),
    ));
    let poll_task = poller.map(|p| {
        tokio::spawn(p.run(async move {
            let _ = stop_poll.wait_for(|s| *s).await;
        }))
    });

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
        let refused = refused_objects(&reloaded, &control);
        let sinks = InvalidSinks {
            canaries: &ctx.state,
            schedules: &sched_ctx.state,
            events: None,
            control: &control,
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
            &control,
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
            &control,
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
    control.set_ready(false);
    control.stop_tasks().await;
    drift_poll.abort();
    let _ = stop_tx.send(true);
    if let Some(t) = poll_task {
        let _ = t.await;
    }
    let served = server_task.await.unwrap_or(Ok(()));
    match served {
        Ok(()) => {
            let _ = writeln!(out, "skycanary stopped");
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(1)
        }
    }
}

/// The Canaries and ScheduledAnalyses of a refused reload that failed validation and that no
/// task drives (a running one keeps its previous spec, and its own status writes).
fn refused_objects(loaded: &LoadResult, control: &DaemonControl) -> Vec<Invalid> {
    let canaries = control.handles();
    let schedules = control.schedules();
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

/// The API's authentication from `--token-file` / `SKYCANARY_TOKEN` / `--insecure-api`;
/// `None` after printing why it is invalid.
pub fn api_auth(args: &RunArgs, err: &mut dyn Write) -> std::io::Result<Option<Auth>> {
    let token = match Token::load(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(None);
        }
    };
    match Auth::from_config(token, args.insecure_api) {
        Ok(a) => Ok(Some(a)),
        Err(e) => {
            writeln!(err, "error: {e}")?;
            Ok(None)
        }
    }
}

/// `--read-timeout` for the HTTP server.
pub fn read_timeouts(args: &RunArgs) -> server::ReadTimeouts {
    server::ReadTimeouts::both(std::time::Duration::from_secs(args.read_timeout))
}

/// Binds `--listen`; `None` after printing why it failed.
pub async fn bind(
    args: &RunArgs,
    err: &mut dyn Write,
) -> std::io::Result<Option<tokio::net::TcpListener>> {
    match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            writeln!(err, "error: cannot listen on {}: {e}", args.listen)?;
            Ok(None)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
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
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn run_args(extra: &[&str]) -> Result<super::RunArgs, clap::Error> {
        let mut argv = vec!["skycanary", "run", "--config", "c", "--manifests", "m"];
        argv.extend(["--state-dir", "s"]);
        argv.extend(extra);
        Cli::try_parse_from(argv).map(|c| match c.command {
            Command::Run(r) => r,
            other => panic!("parsed as {other:?}"),
        })
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

    /// Durations on the command line are bounded where they are parsed: the poller adds its
    /// interval to the clock, the lease multiplies its duration.
    #[test]
    fn cli_durations_are_bounded() {
        for bad in ["9000000000000000", "87601h", "25h", "50ms"] {
            let e = run_args(&["--alarm-poll-interval", bad]).unwrap_err();
            assert!(
                e.to_string().contains("--alarm-poll-interval"),
                "{bad}: {e}"
            );
        }
        let ok = run_args(&["--alarm-poll-interval", "24h"]).unwrap();
        assert_eq!(
            ok.alarm_poll_interval,
            Some(std::time::Duration::from_secs(86_400))
        );
        for bad in ["9000000000000000", "18446744073709551615", "0", "3601"] {
            let argv = ["skycanary", "run", "--kube", "--lease-duration", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
        assert!(
            Cli::try_parse_from(["skycanary", "run", "--kube", "--lease-duration", "3600"]).is_ok()
        );
    }
}
