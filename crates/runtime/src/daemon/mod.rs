//! The daemon (`skycanary run`): loads resources, starts one task per Canary and per
//! ScheduledAnalysis, serves the HTTP API, takes alarms, and stops cleanly on SIGTERM/SIGINT.
//!
//! It is assembled here from a plain [`RunConfig`] (the CLI only turns flags into one and the
//! [`Outcome`] into an exit code), in one of two modes:
//! - file mode ([`file_mode`]): resources from `--config` files, reloaded when they change;
//!   Istio objects in a `--manifests` directory; state files in `--state-dir`;
//! - cluster mode ([`cluster_mode`], `--kube`): resources from CRDs, routing through the API
//!   server, status in `.status`, one leader among replicas (Lease).
//!
//! What both build the same way (clock, API auth and listener, notifications, alarm poller,
//! HTTP server and shutdown, the schedule tasks' context) is in [`assembly`]. The OAP of
//! `run --simulator` is handed in by the binary ([`simulated_oap`]): the simulator crate sits
//! over this one.

pub mod assembly;
pub mod cluster_mode;
pub mod drift_watch;
pub mod file_mode;
pub mod invalid;
pub mod kube_source;
pub mod readiness_watch;
pub mod registry;
pub mod reload;
pub mod simulated_oap;

use std::io::Write;

pub use assembly::{Outcome, RunConfig};
pub use registry::TaskRegistry;
pub use simulated_oap::SimulatedOap;

/// Runs the daemon in the mode `config` asks for until SIGINT/SIGTERM. Announcements go to
/// `out`; a refused configuration is reported to `err`, naming the flag. `simulator` serves
/// `--simulator` (file mode); without one the flag is refused.
pub async fn run(
    config: &RunConfig,
    simulator: Option<&dyn SimulatedOap>,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<Outcome> {
    if config.kube {
        cluster_mode::run(config, out, err).await
    } else {
        file_mode::run(config, simulator, out, err).await
    }
}
