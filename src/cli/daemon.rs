//! `skycanary run`: the daemon's command line. The flags become a [`RunConfig`]; the daemon
//! (`crate::daemon`, file or cluster mode) is assembled and run from it; its outcome becomes
//! the exit code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::daemon::{Outcome, RunConfig};

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

fn parse_time_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 3600.0 => Ok(f),
        _ => Err(format!("{s:?}: expected a number in (0, 3600]")),
    }
}

impl RunArgs {
    /// The daemon's configuration: the flags as plain data, nothing checked yet (the daemon
    /// reports what is wrong, naming the flag).
    pub fn config(&self) -> RunConfig {
        RunConfig {
            config: self.config.clone(),
            manifests: self.manifests.clone(),
            state_dir: self.state_dir.clone(),
            kube: self.kube,
            namespace: self.namespace.clone(),
            identity: self.identity.clone(),
            lease: self.lease.clone(),
            lease_duration: self.lease_duration,
            istio_api_version: self.istio_api_version,
            skywalking: self.skywalking.clone(),
            simulator: self.simulator.clone(),
            timezone: self.timezone,
            listen: self.listen,
            token_file: self.token_file.clone(),
            insecure_api: self.insecure_api,
            time_scale: self.time_scale,
            clock_origin: self.clock_origin,
            read_timeout: self.read_timeout,
            alarm_poll_interval: self.alarm_poll_interval,
            notifications: self.notifications.clone(),
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM. Exit 0 on a clean stop, 4 on invalid configuration,
/// 1 when it could not start (no cluster) or its HTTP server failed.
pub async fn run(
    args: &RunArgs,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let outcome = crate::daemon::run(&args.config(), simulator(), out, err).await?;
    Ok(exit_code(outcome))
}

/// The OAP of `run --simulator`: the simulator crate's, in builds that link it (the runtime
/// does not; a build without the `demo` feature refuses the flag before the daemon starts).
fn simulator() -> Option<&'static dyn crate::daemon::SimulatedOap> {
    #[cfg(feature = "demo")]
    return Some(&crate::sim::launch::ScenarioOap);
    #[cfg(not(feature = "demo"))]
    None
}

/// The exit code of a daemon run.
fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Stopped => 0,
        Outcome::Invalid => super::analyze::EXIT_INVALID,
        Outcome::Failed => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::Parser;

    use crate::daemon::Outcome;

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

    /// Every flag reaches the daemon's configuration (a flag dropped here would be silently
    /// ignored), and the outcomes keep their documented exit codes.
    #[test]
    fn flags_become_the_daemon_configuration() {
        let args = run_args(&[
            "--skywalking",
            "http://oap:12800",
            "--timezone",
            "+0800",
            "--listen",
            "127.0.0.1:9090",
            "--token-file",
            "t",
            "--insecure-api",
            "--time-scale",
            "60",
            "--clock-origin",
            "2026-01-02T03:04:05Z",
            "--read-timeout",
            "7",
            "--alarm-poll-interval",
            "30s",
            "--notifications",
            "n.yaml",
            "--simulator",
            "sc.yaml",
            "--istio-api-version",
            "v1beta1",
        ])
        .unwrap();
        let c = args.config();
        assert_eq!(c.config, [PathBuf::from("c")]);
        assert_eq!(c.manifests, Some(PathBuf::from("m")));
        assert_eq!(c.state_dir, Some(PathBuf::from("s")));
        assert!(!c.kube);
        assert_eq!(c.skywalking.as_deref(), Some("http://oap:12800"));
        assert_eq!(c.timezone, chrono::FixedOffset::east_opt(8 * 3600));
        assert_eq!(c.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.token_file, Some(PathBuf::from("t")));
        assert!(c.insecure_api);
        assert_eq!(c.time_scale, 60.0);
        assert_eq!(
            c.clock_origin.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-01-02T03:04:05+00:00")
        );
        assert_eq!(c.read_timeout, 7);
        assert_eq!(c.alarm_poll_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.notifications, Some(PathBuf::from("n.yaml")));
        assert_eq!(c.simulator, Some(PathBuf::from("sc.yaml")));
        assert_eq!(
            c.istio_api_version,
            crate::traffic::kube::IstioApiVersion::V1beta1
        );

        let argv = [
            "skycanary",
            "run",
            "--kube",
            "--namespace",
            "shop",
            "--identity",
            "pod-1",
            "--lease",
            "ops/leader",
            "--lease-duration",
            "30",
        ];
        let Command::Run(kube) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not run");
        };
        let c = kube.config();
        assert!(c.kube);
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.identity.as_deref(), Some("pod-1"));
        assert_eq!(c.lease, "ops/leader");
        assert_eq!(c.lease_duration, 30);

        assert_eq!(super::exit_code(Outcome::Stopped), 0);
        assert_eq!(super::exit_code(Outcome::Invalid), 4);
        assert_eq!(super::exit_code(Outcome::Failed), 1);
    }
}
