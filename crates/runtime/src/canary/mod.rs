//! Canary controller: the driver that performs the effects of the pure state machine, its
//! readiness sources and preflight checks. The machine, its status model and the revision
//! resolution are in the `skycanary-core` crate, re-exported here under their old paths.

pub mod driver;
/// The pure state machine, its status model and revision resolution, in `skycanary-core`.
pub use skycanary_core::canary::{machine, model, revision};
pub mod preflight;
pub mod readiness;
pub mod readiness_file;

pub use model::*;
