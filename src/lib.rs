//! skycanary: self-driving canary releases on Istio, judged by Apache SkyWalking metrics.
//!
//! The crate is a pure core (resources, analysis, conditions) with thin I/O edges
//! (the SkyWalking provider, the simulator, the CLI). See DESIGN.md §8 for the layout. The
//! workspace's crates `skycanary-core` (pure logic) and `skycanary-api` (resource and status
//! types, CRD generation) are re-exported under their old paths (`analysis`, `api`, and modules
//! of `resources` and `traffic`), so callers keep their imports.

pub mod alarm;
pub use skycanary_api as api;
pub use skycanary_core::analysis;
pub mod backoff;
pub mod canary;
pub mod cli;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod notify;
pub mod provider;
pub mod report;
pub mod resources;
pub mod runner;
pub mod schedule;
pub mod server;
#[cfg(feature = "demo")]
pub mod sim;
pub mod state;
pub mod task;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod traffic;
