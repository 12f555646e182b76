//! Starting a scenario file's simulated OAP: for `skycanary simulator` and inside
//! `skycanary run --simulator` (the daemon's file mode), where `weightsFrom` follows the
//! VirtualServices of the daemon's manifests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use skycanary_runtime::daemon::simulated_oap::{
    RunningOap, SimulatedOap, SimulatedOapSetup, Started,
};
use skycanary_runtime::runner::Clock;
use skycanary_runtime::traffic::file::FileManifestStore;

use crate::demo::weights::VirtualServiceWeights;
use crate::sim::blend::{BlendedService, FollowHandle};
use crate::sim::scenario_file::{self, ScenarioPlan, ServicePlan};
use crate::sim::{OapProfile, RunningSim, SimConfig, Simulator};

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

/// The daemon's `run --simulator` (file mode): the scenario served on a loopback port, its
/// `weightsFrom` following the daemon's manifests, on the daemon's clock. The binary hands it to
/// `skycanary_runtime::daemon::run`, which does not link the simulator.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScenarioOap;

impl SimulatedOap for ScenarioOap {
    fn start<'a>(&'a self, setup: SimulatedOapSetup<'a>) -> Started<'a> {
        Box::pin(async move {
            let started = start(SimSetup {
                scenario: setup.scenario,
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                oap_version: None,
                timezone: setup.timezone,
                manifests: Some(setup.manifests),
                clock: setup.clock,
            })
            .await?;
            Ok(Box::new(started) as Box<dyn RunningOap>)
        })
    }
}

impl RunningOap for StartedSim {
    fn url(&self) -> String {
        self.running.url()
    }

    fn release(&self) -> String {
        self.profile.to_string()
    }
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
            FileManifestStore::open(dir)
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
