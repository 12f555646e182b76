//! Canary controller: the pure state machine (`machine.rs`) over the status model
//! (`model.rs`), and later the driver that performs its effects.

pub mod driver;
pub mod machine;
pub mod model;
pub mod preflight;
pub mod readiness;
pub mod readiness_file;
pub mod revision;

pub use model::*;
