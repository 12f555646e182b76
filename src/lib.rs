//! skycanary: self-driving canary releases on Istio, judged by Apache SkyWalking metrics.
//!
//! This package is the binary and its command line (`cli`); everything it drives lives in the
//! workspace's crates (README "Development"): `skycanary-runtime` (tasks, adapters, server,
//! daemon assembly), `skycanary-core` (pure logic), `skycanary-api` (resource and status
//! types) and, with the `demo` feature, `skycanary-sim` (the simulator and the demo). Their
//! modules are re-exported here under their old paths (`skycanary::sim`, `skycanary::demo`).

pub use skycanary_runtime::*;
#[cfg(feature = "demo")]
pub use skycanary_sim::{demo, sim};

pub mod cli;
