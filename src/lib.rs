//! skycanary: self-driving canary releases on Istio, judged by Apache SkyWalking metrics.
//!
//! This package is the binary and its command line (`cli`); everything it drives lives in the
//! workspace's crates (README "Development"): `skycanary-runtime` (tasks, adapters, server,
//! daemon assembly), `skycanary-core` (pure logic) and `skycanary-api` (resource and status
//! types). The runtime's modules are re-exported here under their old paths.

pub use skycanary_runtime::*;

pub mod cli;
