//! The command line: one file per command; `main.rs` only parses and dispatches.

pub mod analyze;
pub mod control;
pub mod control_kube;
pub mod crds;
pub mod demo;
pub mod output;
pub mod route;
pub mod run;
pub mod run_cluster;
pub mod schedules;
pub mod simulator;
pub mod target;
pub mod validate;
pub mod version;

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// skycanary: self-driving canary releases on Istio, judged by Apache SkyWalking metrics.
#[derive(Debug, Parser)]
#[command(
    name = "skycanary",
    version,
    long_version = version::LONG_VERSION,
    about,
    long_about = None
)]
pub struct Cli {
    /// Log format (logs go to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// Log level filter (RUST_LOG syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "warn", global = true)]
    pub log_level: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one analysis now; exit 0 Successful, 1 Failed, 2 Inconclusive, 3 Error, 4 invalid input.
    Analyze(analyze::AnalyzeArgs),
    /// Check resource files; exit 0 valid, 1 invalid (every error listed with file:line).
    Validate(validate::ValidateArgs),
    /// Canaries of a running daemon: phase, step, weight, last verdict.
    Status(control::StatusArgs),
    /// Go to the next step (`--full`: skip all remaining steps).
    Promote(control::PromoteArgs),
    /// Roll a canary back to stable.
    Abort(control::AbortArgs),
    /// Start an aborted canary again from its first step.
    Retry(control::ActionCommon),
    /// Pause a canary (weights kept).
    Pause(control::ActionCommon),
    /// Resume a paused canary.
    Resume(control::ActionCommon),
    /// The daemon: drive every Canary on its own (file mode: --config, --manifests, --state-dir).
    Run(run::RunArgs),
    /// Manual traffic control on the VirtualServices of a Canary.
    Route {
        /// What to do.
        #[command(subcommand)]
        command: route::RouteCommand,
    },
    /// Print the CRDs generated from the Rust types (or write/check `deploy/crds`).
    Crds(crds::CrdsArgs),
    /// Scheduled analyses of a running daemon: next fire time, recent results; `run NS/NAME`
    /// starts one now.
    Schedules(schedules::SchedulesArgs),
    /// Canary releases of Bookinfo's reviews on loopback (simulator, file routing, the real
    /// daemon), narrated live; exit 0 when every scenario ends as expected.
    Demo(demo::DemoArgs),
    /// Serve a simulated SkyWalking OAP (GraphQL) from a scenario file until stopped, for
    /// trying the daemon and templates without an OAP.
    Simulator(simulator::SimulatorArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(version::CompletionArgs),
    /// Print the version, git commit, build date and target.
    Version(version::VersionArgs),
}

/// The name this binary answers to: `kubectl skycanary` when installed as the kubectl plugin
/// `kubectl-skycanary` (same binary; kubectl runs it with the plugin name as argv[0]).
pub fn invoked_as(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let base = argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("skycanary");
    if base == "kubectl-skycanary" {
        "kubectl skycanary"
    } else {
        "skycanary"
    }
}

/// The command-line definition, named as invoked (see [`invoked_as`]).
pub fn command(name: &'static str) -> clap::Command {
    use clap::CommandFactory;
    let cmd = Cli::command();
    if name == "skycanary" {
        cmd
    } else {
        cmd.bin_name(name).display_name(name)
    }
}

/// `--timezone` values: `+0800`, `-03:30`, `UTC`.
pub fn parse_timezone_arg(s: &str) -> Result<chrono::FixedOffset, String> {
    crate::provider::skywalking::parse_timezone(s)
        .ok_or_else(|| format!("{s:?}: expected an offset like +0800 or -0330"))
}

/// Runs a parsed command; returns the process exit code. `name` is how the binary was invoked.
pub async fn run(cli: Cli, name: &'static str) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let code = match &cli.command {
        Command::Analyze(a) => analyze::run(a, &mut stdout, &mut stderr).await?,
        Command::Validate(v) => validate::run(v, &mut stdout)?,
        Command::Status(a) => control::status(a, &mut stdout, &mut stderr).await?,
        Command::Promote(a) => {
            let action = control::Action::Promote { full: a.full };
            control::action(action, &a.common, &mut stdout, &mut stderr).await?
        }
        Command::Abort(a) => {
            let action = control::Action::Abort {
                reason: a.reason.clone(),
            };
            control::action(action, &a.common, &mut stdout, &mut stderr).await?
        }
        Command::Retry(a) => {
            control::action(control::Action::Retry, a, &mut stdout, &mut stderr).await?
        }
        Command::Pause(a) => {
            control::action(control::Action::Pause, a, &mut stdout, &mut stderr).await?
        }
        Command::Resume(a) => {
            control::action(control::Action::Resume, a, &mut stdout, &mut stderr).await?
        }
        Command::Run(r) => run::run(r, &mut stdout, &mut stderr).await?,
        Command::Route { command } => route::run(command, &mut stdout, &mut stderr).await?,
        Command::Crds(c) => crds::run(c, &mut stdout)?,
        Command::Schedules(s) => schedules::run(s, &mut stdout, &mut stderr).await?,
        Command::Demo(d) => demo::run(d, &mut stdout, &mut stderr).await?,
        Command::Simulator(s) => simulator::run(s, &mut stdout, &mut stderr).await?,
        Command::Completion(c) => {
            let bin = if name == "skycanary" {
                "skycanary"
            } else {
                "kubectl-skycanary"
            };
            version::completion(c, &mut command(name), bin, &mut stdout)?
        }
        Command::Version(v) => version::version(v, &mut stdout)?,
    };
    stdout.flush()?;
    Ok(code)
}
