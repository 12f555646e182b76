//! skycanary's pure core: decisions as plain functions over data, with no tokio, kube or
//! reqwest (a test of the root package, `it layers`, runs `cargo tree` to keep it so).
//!
//! The module paths are the root package's (`analysis`, `traffic::{model, istio}`, `resources::yaml`,
//! ...), which re-exports them, so code moves here without its callers changing. `skywalking` is
//! the provider's query model; the root's `provider::skywalking` re-exports it with the client
//! of the `skycanary-skywalking` crate.

pub mod alarm;
pub mod analysis;
pub mod canary;
pub mod conditions;
pub mod resources;
pub mod schedule;
pub mod skywalking;
pub mod status;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod traffic;
