//! The command line: one file per command; `main.rs` only parses and dispatches.

pub mod analyze;
pub mod control;
pub mod control_kube;
pub mod crds;
pub mod demo;
pub mod route;
pub mod run;
pub mod run_cluster;
pub mod schedules;
pub mod validate;

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// skycanary: self-driving canary releases on Istio, judged by Apache SkyWalking metrics.
#[derive(Debug, Parser)]
#[command(name = "skycanary", version, about, long_about = None)]
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
    Promote(control::ActionArgs),
    /// Roll a canary back to stable.
    Abort(control::ActionArgs),
    /// Start an aborted canary again from step 0.
    Retry(control::ActionArgs),
    /// Pause a canary (weights kept).
    Pause(control::ActionArgs),
    /// Resume a paused canary.
    Resume(control::ActionArgs),
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
}

/// `--timezone` values: `+0800`, `-03:30`, `UTC`.
pub fn parse_timezone_arg(s: &str) -> Result<chrono::FixedOffset, String> {
    crate::provider::skywalking::parse_timezone(s)
        .ok_or_else(|| format!("{s:?}: expected an offset like +0800 or -0330"))
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let code = match &cli.command {
        Command::Analyze(a) => analyze::run(a, &mut stdout, &mut stderr).await?,
        Command::Validate(v) => validate::run(v, &mut stdout)?,
        Command::Status(a) => control::status(a, &mut stdout, &mut stderr).await?,
        Command::Promote(a) => {
            control::action(control::Action::Promote, a, &mut stdout, &mut stderr).await?
        }
        Command::Abort(a) => {
            control::action(control::Action::Abort, a, &mut stdout, &mut stderr).await?
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
    };
    stdout.flush()?;
    Ok(code)
}
