//! `skycanary simulator SCENARIO`: a simulated SkyWalking OAP on an address of your choice,
//! serving a scenario file (services, versions' behaviour, faults) until SIGINT/SIGTERM; and
//! the same simulator started inside `skycanary run --simulator SCENARIO`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::demo::weights::VirtualServiceWeights;
use crate::runner::Clock;
use crate::sim::blend::{BlendedService, FollowHandle};
use crate::sim::scenario_file::{self, ScenarioPlan, ServicePlan};
use crate::sim::{OapProfile, RunningSim, SimConfig, Simulator};
use crate::traffic::file::FileStore;

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

/// A started simulator; dropping it stops the server and the weight followers.
pub struct StartedSim {
    /// The server.
    pub running: RunningSim,
    /// Emulated OAP release.
    pub profile: OapProfile,
    /// Services served.
    pub services: usize,
    _follow: Vec<FollowHandle>,
}

/// How to start a scenario.
pub struct SimSetup<'a> {
    /// Scenario file.
    pub scenario: &'a Path,
    /// Listen address.
    pub listen: SocketAddr,
    /// `--oap-version`, overriding the file's.
    pub oap_version: Option<&'a str>,
    /// `--timezone`, overriding the file's.
    pub timezone: Option<chrono::FixedOffset>,
    /// Where followed VirtualServices live.
    pub manifests: Option<&'a Path>,
    /// The simulator's "now" (shared with a daemon running scaled time).
    pub clock: Arc<dyn Clock>,
}

/// Loads the scenario and serves it; errors are ready to print (one per line).
pub async fn start(setup: SimSetup<'_>) -> Result<StartedSim, Vec<String>> {
    let plan = scenario_file::load(setup.scenario)
        .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let profile = match setup.oap_version {
        Some(v) => v
            .parse::<OapProfile>()
            .map_err(|e| vec![format!("--oap-version: {e}")])?,
        None => plan.profile.unwrap_or(OapProfile::V10_4),
    };
    let mut config = SimConfig::new(profile);
    if let Some(tz) = setup.timezone.or(plan.timezone) {
        config = config.with_tz(tz);
    }
    let clock = setup.clock.clone();
    let sim = Simulator::new(config.with_clock(move || clock.now()));
    let follow = install(&sim, &plan, setup.manifests, setup.scenario).await?;
    let running = sim
        .serve(setup.listen)
        .await
        .map_err(|e| vec![e.to_string()])?;
    Ok(StartedSim {
        running,
        profile,
        services: plan.services.len(),
        _follow: follow,
    })
}

/// Scripts every service and fault of `plan` into `sim`.
async fn install(
    sim: &Simulator,
    plan: &ScenarioPlan,
    manifests: Option<&Path>,
    scenario: &Path,
) -> Result<Vec<FollowHandle>, Vec<String>> {
    let mut follow = Vec::new();
    let store = match manifests {
        Some(dir) => Some(
            FileStore::open(dir)
                .map_err(|e| vec![format!("--manifests {}: {e}", dir.display())])?,
        ),
        None => None,
    };
    for (name, service) in &plan.services {
        match service {
            ServicePlan::Profile(p) => {
                p.install_services(sim, &[name.clone()].into(), sim.profile());
            }
            ServicePlan::Blended {
                cpm,
                versions,
                follow: from,
                weights,
            } => {
                let blend = BlendedService::new(
                    name.clone(),
                    *cpm,
                    versions.clone(),
                    sim.config().clock.clone(),
                );
                blend.install(sim);
                let now = (sim.config().clock)();
                match (from, &store) {
                    (None, _) => {
                        blend.record(now, weights.clone());
                    }
                    (Some(f), Some(store)) => {
                        let provider = VirtualServiceWeights::new(
                            store.clone(),
                            &f.namespace,
                            &f.virtual_service,
                            &f.route,
                        );
                        let initial = provider.read().await.map_err(|e| {
                            vec![format!(
                                "{}: service {name}: weightsFrom VirtualService {}/{} route {}: {e}",
                                scenario.display(),
                                f.namespace,
                                f.virtual_service,
                                f.route
                            )]
                        })?;
                        blend.record(now, initial);
                        follow.push(blend.follow(provider, Duration::from_millis(500)));
                    }
                    (Some(_), None) => {
                        return Err(vec![format!(
                            "{}: service {name} follows a VirtualService (weightsFrom): give the \
                             manifests directory with --manifests",
                            scenario.display()
                        )]);
                    }
                }
            }
        }
    }
    for (fault, times) in &plan.faults {
        sim.inject_fault(fault.clone(), *times);
    }
    Ok(follow)
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
    super::run::shutdown_signal().await;
    sim.running.shutdown().await;
    Ok(0)
}
