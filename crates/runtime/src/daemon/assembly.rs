//! What both daemon modes assemble the same way: the configuration, the clock, the API's
//! authentication and listener, lifecycle notifications, the `getAlarm` poller, the HTTP
//! server with its shutdown, and the schedule tasks' context. File mode (`file_mode.rs`) and
//! cluster mode (`cluster_mode.rs`) add their sources of resources, routing and status.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alarm::poll::{AlarmSink, PollConfig, Poller};
use crate::canary::driver::CanaryTaskContext;
use crate::provider::skywalking::{ClientOptions, SkyWalkingClient};
use crate::runner::{Clock, SystemClock, WallScaledClock};
use crate::schedule::driver::ScheduleTaskContext;
use crate::schedule::store::ScheduleStatusStore;
use crate::server::{self, Auth, Metrics, ServerError, Token};
use crate::traffic::store::ManifestStore;

use super::TaskRegistry;

/// What `skycanary run` asks of the daemon, as plain data: the CLI fills it from its flags
/// (each field names its flag; errors about a field name the flag too).
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// `--config`: files and directories of resources (file mode) or of templates only
    /// (cluster mode, overridden by CRDs of the same identity).
    pub config: Vec<PathBuf>,
    /// `--manifests`: the Istio manifests directory file mode routes in.
    pub manifests: Option<PathBuf>,
    /// `--state-dir`: where file mode keeps one status file per object.
    pub state_dir: Option<PathBuf>,
    /// `--kube`: cluster mode (CRDs, the API server, `.status`, a Lease).
    pub kube: bool,
    /// `--namespace`: the one namespace cluster mode watches (default: all).
    pub namespace: Option<String>,
    /// `--identity`: this replica in the Lease (default: HOSTNAME).
    pub identity: Option<String>,
    /// `--lease`: the Lease as `namespace/name`, checked when cluster mode starts.
    pub lease: String,
    /// `--lease-duration`, in seconds.
    pub lease_duration: u64,
    /// `--istio-api-version`: the `networking.istio.io` version cluster mode writes.
    pub istio_api_version: crate::traffic::kube::IstioApiVersion,
    /// `--skywalking`: the OAP of templates without an address of their own.
    pub skywalking: Option<String>,
    /// `--simulator`: a scenario served by an in-process simulated OAP (file mode; the
    /// binary passes the simulator in builds with the `demo` feature and refuses it in others).
    pub simulator: Option<PathBuf>,
    /// `--timezone`: the OAP's offset, instead of asking the OAP.
    pub timezone: Option<chrono::FixedOffset>,
    /// `--listen`: the HTTP address.
    pub listen: SocketAddr,
    /// `--token-file`: the API bearer token (else `SKYCANARY_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// `--insecure-api`: serve /api and /webhooks without authentication.
    pub insecure_api: bool,
    /// `--time-scale`: how much faster than real time the daemon's clock runs.
    pub time_scale: f64,
    /// `--clock-origin`: where the scaled clock starts (default: now).
    pub clock_origin: Option<chrono::DateTime<chrono::Utc>>,
    /// `--read-timeout`, in seconds, for a request's headers and again for its body.
    pub read_timeout: u64,
    /// `--alarm-poll-interval`: poll the OAP's `getAlarm` this often (off when `None`).
    pub alarm_poll_interval: Option<std::time::Duration>,
    /// `--notifications`: the lifecycle notifications file.
    pub notifications: Option<PathBuf>,
}

/// How a daemon run ended; the CLI turns it into the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on SIGINT/SIGTERM, everything flushed.
    Stopped,
    /// The configuration was refused before anything ran (already reported).
    Invalid,
    /// It could not start (no cluster to talk to) or its HTTP server failed (reported).
    Failed,
}

/// Reads `--notifications`; None after reporting its problems (file, line, field) to `err`.
pub fn notify_config(
    args: &RunConfig,
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
    args: &RunConfig,
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

/// The daemon's clock: real time, or wall-scaled time for demos and tests.
pub fn daemon_clock(args: &RunConfig) -> Arc<dyn Clock> {
    if args.time_scale == 1.0 && args.clock_origin.is_none() {
        return Arc::new(SystemClock);
    }
    let origin = args.clock_origin.unwrap_or_else(chrono::Utc::now);
    Arc::new(WallScaledClock::new(origin, args.time_scale))
}

/// The API's authentication from `--token-file` / `SKYCANARY_TOKEN` / `--insecure-api`;
/// `None` after printing why it is invalid.
pub fn api_auth(args: &RunConfig, err: &mut dyn Write) -> std::io::Result<Option<Auth>> {
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
pub fn read_timeouts(args: &RunConfig) -> server::ReadTimeouts {
    server::ReadTimeouts::both(std::time::Duration::from_secs(args.read_timeout))
}

/// Binds `--listen`; `None` after printing why it failed.
pub async fn bind(
    args: &RunConfig,
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

/// The lifecycle notifier of `--notifications`; a disabled one when the file is not given.
pub fn start_notifier(
    config: Option<&crate::notify::NotifyConfig>,
    metrics: &Metrics,
) -> crate::notify::Notifier {
    match config {
        Some(c) => crate::notify::Notifier::start(c, Arc::new(metrics.clone())),
        None => crate::notify::Notifier::disabled(),
    }
}

/// The context of the schedule tasks: the canary tasks' templates, clock, defaults, OAP
/// clients and notifier, with their own status store; their rollbacks go to the canary
/// tasks through `canaries`.
pub fn schedule_context<S: ManifestStore + 'static>(
    canary: &CanaryTaskContext<S>,
    state: ScheduleStatusStore,
    metrics: &Metrics,
    canaries: Arc<TaskRegistry>,
) -> ScheduleTaskContext {
    ScheduleTaskContext {
        templates: canary.templates.clone(),
        state,
        clock: canary.clock.clone(),
        defaults: canary.defaults.clone(),
        metrics: Arc::new(metrics.clone()),
        canaries,
        http: ScheduleTaskContext::webhook_client(),
        clients: canary.clients.clone(),
        notifier: canary.notifier.clone(),
    }
}

/// The HTTP server and the `getAlarm` poller, running until [`Serving::stop`]; what else
/// must stop with them (the leader election) waits on [`Serving::stopped`].
pub struct Serving {
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), ServerError>>,
    poller: Option<JoinHandle<()>>,
}

impl Serving {
    /// Serves `app` on `listener` (with `--read-timeout`) and starts `poller`, if any.
    pub fn start(
        args: &RunConfig,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        poller: Option<Poller>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(server::serve_on_with(
            listener,
            app,
            stop_signal(stop_rx.clone()),
            read_timeouts(args),
        ));
        let poller = poller.map(|p| tokio::spawn(p.run(stop_signal(stop_rx))));
        Serving {
            stop,
            server,
            poller,
        }
    }

    /// Resolves once [`Serving::stop`] was called.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        stop_signal(self.stop.subscribe())
    }

    /// Tells the server (which finishes its in-flight requests), the poller and whatever
    /// waits on [`Serving::stopped`] to stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the poller and the server to end (after [`Serving::stop`]); the server's
    /// failure, if it failed.
    pub async fn finished(self) -> Result<(), ServerError> {
        if let Some(t) = self.poller {
            let _ = t.await;
        }
        self.server.await.unwrap_or(Ok(()))
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stop_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
