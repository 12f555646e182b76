//! Running an analysis: turns a loaded template into a plan (pure), then drives the pure
//! analysis state machine against SkyWalking clients on an injected clock (the I/O loop).

pub mod clients;
/// The injected clocks, in the `skycanary-ports` crate (the Lease takes one too).
pub use skycanary_ports::clock;
pub mod observe;
pub mod plan;
pub mod run;
pub mod spawn;

pub use clients::ClientCache;
pub use clock::{Clock, ScaledClock, SystemClock, WallScaledClock};
pub use observe::observation_from;
pub use plan::{Defaults, PlanError, PlannedMetric, RunPlan, StartError, plan, plan_many};
pub use run::{
    RoutingChanges, RunEvent, alignment_wait, connect, connect_observed, run_analysis,
    run_analysis_from, run_canary_analysis,
};
pub use spawn::{RunStart, RunStops, spawn_run};
