//! `run --simulator SCENARIO` in file mode: an OAP served in-process from a scenario file,
//! used instead of `--skywalking`. The simulator lives in `skycanary-sim`, a crate over this
//! one (its demo drives the daemon), so the runtime only declares what it needs and the binary
//! hands a starter in when it is built with the `demo` feature; a daemon without one refuses
//! the flag instead of ignoring it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::runner::Clock;

/// What file mode gives the simulator: the scenario, the manifests its `weightsFrom` follows,
/// and the daemon's own clock and `--timezone`, so both agree on "now" under `--time-scale`.
#[derive(Clone)]
pub struct SimulatedOapSetup<'a> {
    /// `--simulator`: the scenario file.
    pub scenario: &'a Path,
    /// `--manifests`: the VirtualServices the scenario's blended services follow.
    pub manifests: &'a Path,
    /// `--timezone`, overriding the scenario's.
    pub timezone: Option<chrono::FixedOffset>,
    /// The daemon's clock (scaled for demos and tests).
    pub clock: Arc<dyn Clock>,
}

/// A started OAP on loopback; dropping it stops it (file mode keeps it until the daemon stops).
pub trait RunningOap: Send + Sync {
    /// The base URL file mode uses as its `--skywalking`.
    fn url(&self) -> String;
    /// The OAP release it emulates (`10.4`), for the start-up announcement.
    fn release(&self) -> String;
}

/// The result of [`SimulatedOap::start`]: the running OAP, or errors ready to print (one per
/// line, each reported after `error: --simulator: `).
pub type Started<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn RunningOap>, Vec<String>>> + Send + 'a>>;

/// Starts the OAP of a scenario file; implemented by the simulator crate.
pub trait SimulatedOap: Send + Sync {
    /// Loads `setup.scenario` and serves it on a loopback port.
    fn start<'a>(&'a self, setup: SimulatedOapSetup<'a>) -> Started<'a>;
}
