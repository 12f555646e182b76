//! skycanary binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use skycanary::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit 4 ("invalid input"), never 2, which `analyze` uses for Inconclusive.
    let cli = match Cli::try_parse() {
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
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}
