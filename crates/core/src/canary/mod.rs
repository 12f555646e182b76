//! The Canary controller's decisions: the pure state machine (`machine.rs`) over the status
//! model (`model.rs`), and which revision a canary is for (`revision.rs`). The driver that
//! feeds the machine and performs its effects is in the runtime (`canary::driver`).

pub mod invalid;
pub mod machine;
pub mod model;
pub mod revision;

pub use model::*;
