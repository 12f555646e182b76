//! The SkyWalking provider under its old path: the query model of `skycanary_core::skywalking`
//! and the client of the `skycanary-skywalking` crate (which re-exports the model), so callers
//! keep their `provider::skywalking::…` imports.

pub use skycanary_skywalking::*;
