//! `skycanary simulator SCENARIO`: a simulated SkyWalking OAP on an address of your choice,
//! serving a scenario file (services, versions' behaviour, faults) until SIGINT/SIGTERM. The
//! simulator is started by `crate::sim::launch`, as in `skycanary run --simulator SCENARIO`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::runner::Clock;
use crate::sim::launch::{SimSetup, start};

/// Arguments of `simulator`.
#[derive(Debug, clap::Args)]
pub struct SimulatorArgs {
    /// The scenario file (YAML: services, versions, faults; see deploy/examples/bookinfo/
    /// simulator.yaml).
    pub scenario: PathBuf,
    /// Address to serve on (GraphQL at /graphql).
    #[arg(long, default_value = "127.0.0.1:12800")]
    pub listen: SocketAddr,
    /// OAP release to emulate (8.9, 9.4, 9.7, 10.2, 10.4); default: the file's, else 10.4.
    #[arg(long, value_name = "VERSION")]
    pub oap_version: Option<String>,
    /// The OAP's time zone (`+0800`); default: the file's, else UTC.
    #[arg(long, value_name = "OFFSET", value_parser = super::parse_timezone_arg)]
    pub timezone: Option<chrono::FixedOffset>,
    /// Directory of Istio manifests whose VirtualService weights `weightsFrom` follows (the
    /// daemon's `--manifests`).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
}

/// Serves until SIGINT/SIGTERM: exit 0, 4 on an invalid scenario, 3 when the address is taken.
pub async fn run(
    args: &SimulatorArgs,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let clock: Arc<dyn Clock> = Arc::new(crate::runner::SystemClock);
    let started = start(SimSetup {
        scenario: &args.scenario,
        listen: args.listen,
        oap_version: args.oap_version.as_deref(),
        timezone: args.timezone,
        manifests: args.manifests.as_deref(),
        clock,
    })
    .await;
    let sim = match started {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                writeln!(err, "error: {e}")?;
            }
            let bind = errors.iter().any(|e| e.contains("failed to bind"));
            return Ok(if bind { 3 } else { 4 });
        }
    };
    writeln!(
        out,
        "SkyWalking simulator (OAP {}) serving {} service(s) of {} on {} (GraphQL: {}); Ctrl-C stops it",
        sim.profile,
        sim.services,
        args.scenario.display(),
        sim.running.url(),
        sim.running.graphql_url()
    )?;
    out.flush()?;
    crate::daemon::assembly::shutdown_signal().await;
    sim.running.shutdown().await;
    Ok(0)
}
