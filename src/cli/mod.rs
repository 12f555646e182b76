//! The command line: one file per command; `main.rs` only parses and dispatches.

pub mod analyze;
pub mod control;
pub mod control_kube;
pub mod crds;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod output;
pub mod route;
pub mod schedules;
#[cfg(feature = "demo")]
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

/// The subcommands; each runs from its own file in `cli/`.
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
    Run(daemon::RunArgs),
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
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Not in this build (it needs the `demo` feature); kept so that asking for it says so.
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo(NotBuilt),
    /// Serve a simulated SkyWalking OAP (GraphQL) from a scenario file until stopped, for
    /// trying the daemon and templates without an OAP.
    #[cfg(feature = "demo")]
    Simulator(simulator::SimulatorArgs),
    /// Not in this build (it needs the `demo` feature); kept so that asking for it says so.
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Simulator(NotBuilt),
    /// Print a shell completion script (bash, zsh, fish).
    Completion(version::CompletionArgs),
    /// Print the version, git commit, build date and target.
    Version(version::VersionArgs),
}

/// The arguments of a command this build leaves out: anything is accepted, so that the user
/// learns which feature is missing instead of a parse error about the arguments.
#[cfg(not(feature = "demo"))]
#[derive(Debug, clap::Args)]
pub struct NotBuilt {
    /// Whatever was given after the command.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<std::ffi::OsString>,
}

/// Why `cli` cannot run in this build, if it cannot: the simulator and the demo are compiled
/// only with the `demo` cargo feature (`demo_built`: whether this binary has it), and the
/// container image is built without it. Usage error (exit 4), so scripts see it is not a
/// failed run.
pub fn missing_feature(cli: &Cli, demo_built: bool) -> Option<String> {
    if demo_built {
        return None;
    }
    let what = match &cli.command {
        Command::Demo(_) => "`demo`",
        Command::Simulator(_) => "`simulator`",
        Command::Run(r) if r.simulator.is_some() => "`run --simulator`",
        Command::Analyze(a) if a.simulator.is_some() => "`analyze --simulator`",
        _ => return None,
    };
    Some(format!(
        "{what} needs a build with the `demo` cargo feature (the SkyWalking simulator); this \
         binary was built without it (`--no-default-features`, as the container image is): \
         use a default build (`cargo install --path .`) for the simulator and the demo"
    ))
}

/// The name this binary answers to: `kubectl skycanary` when installed as the kubectl plugin
/// `kubectl-skycanary` (same binary; kubectl runs it with the plugin name as `argv[0]`).
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
    if let Some(why) = missing_feature(&cli, cfg!(feature = "demo")) {
        writeln!(stderr, "error: {why}")?;
        return Ok(analyze::EXIT_INVALID);
    }
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
        Command::Run(r) => daemon::run(r, &mut stdout, &mut stderr).await?,
        Command::Route { command } => route::run(command, &mut stdout, &mut stderr).await?,
        Command::Crds(c) => crds::run(c, &mut stdout)?,
        Command::Schedules(s) => schedules::run(s, &mut stdout, &mut stderr).await?,
        #[cfg(feature = "demo")]
        Command::Demo(d) => demo::run(d, &mut stdout, &mut stderr).await?,
        #[cfg(feature = "demo")]
        Command::Simulator(s) => simulator::run(s, &mut stdout, &mut stderr).await?,
        // Refused by `missing_feature` above.
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) | Command::Simulator(_) => analyze::EXIT_INVALID,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, missing_feature};

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }

    /// The command lines that need the simulator parse in every build (a build without the
    /// `demo` feature keeps them so it can say what is missing) and are refused without it.
    #[test]
    fn simulator_commands_need_the_demo_feature() {
        let needs_demo: [(&[&str], &str); 4] = [
            (&["skycanary", "demo"], "`demo` needs"),
            (
                &["skycanary", "simulator", "scenario.yaml"],
                "`simulator` needs",
            ),
            (
                &[
                    "skycanary",
                    "run",
                    "--config",
                    "c",
                    "--manifests",
                    "m",
                    "--state-dir",
                    "s",
                    "--simulator",
                    "sc.yaml",
                ],
                "`run --simulator` needs",
            ),
            (
                &["skycanary", "analyze", "t.yaml", "--simulator", "healthy"],
                "`analyze --simulator` needs",
            ),
        ];
        for (argv, says) in needs_demo {
            let cli = parse(argv);
            assert_eq!(missing_feature(&cli, true), None, "{argv:?}");
            let why =
                missing_feature(&cli, false).unwrap_or_else(|| panic!("{argv:?} not refused"));
            assert!(why.starts_with(says), "{argv:?}: {why}");
            assert!(why.contains("`demo` cargo feature"), "{why}");
        }
        // Whether this build runs them is decided by the feature it was compiled with.
        let demo = parse(&["skycanary", "demo"]);
        assert_eq!(
            missing_feature(&demo, cfg!(feature = "demo")).is_none(),
            cfg!(feature = "demo")
        );
    }

    /// Everything else runs in a build without the simulator.
    #[test]
    fn other_commands_do_not_need_the_demo_feature() {
        for argv in [
            &[
                "skycanary",
                "analyze",
                "t.yaml",
                "--skywalking",
                "http://oap:12800",
            ][..],
            &["skycanary", "run", "--kube"],
            &[
                "skycanary",
                "run",
                "--config",
                "c",
                "--manifests",
                "m",
                "--state-dir",
                "s",
            ],
            &["skycanary", "status"],
            &["skycanary", "crds"],
            &["skycanary", "version"],
        ] {
            assert_eq!(missing_feature(&parse(argv), false), None, "{argv:?}");
        }
    }
}
