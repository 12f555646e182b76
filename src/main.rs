//! skycanary binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::FromArgMatches;
use skycanary::cli::{Cli, command, invoked_as, run};

#[tokio::main]
async fn main() -> ExitCode {
    let name = invoked_as(std::env::args_os().next().as_deref());
    // Usage errors exit 4 ("invalid input"), never 2, which `analyze` uses for Inconclusive.
    let parsed = command(name)
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(4),
            };
        }
    };
    skycanary::telemetry::init(cli.log_format, &cli.log_level);
    match run(cli, name).await {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`skycanary status | head -1`): what it wanted was printed.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// Whether a write to stdout failed because its reader closed the pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
