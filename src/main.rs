//! skycanary binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use skycanary::cli::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    skycanary::telemetry::init(cli.log_format, &cli.log_level);
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}
