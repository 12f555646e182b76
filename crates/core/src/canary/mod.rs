//! The Canary controller's decisions: the pure state machine (`machine.rs`) over the status
//! model (`model.rs`), which revision a canary is for (`revision.rs`), and what its workloads'
//! readiness says (`readiness.rs`). The driver that feeds the machine and performs its
//! effects, and the readiness sources, are in the runtime (`canary::driver`, `::readiness`).

pub mod invalid;
pub mod machine;
pub mod model;
pub mod readiness;
pub mod revision;

pub use model::*;
