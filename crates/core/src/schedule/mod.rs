//! Scheduled analyses' decisions (DESIGN §2 "ScheduledAnalysis", §6): what is due, what the
//! concurrency policy allows, which actions a result triggers (`policy.rs`), over the status
//! model (`model.rs`). Cron translation is `resources::cron`; the driver that runs the
//! schedules (one task per object, I/O) is in the runtime (`schedule::driver`).

pub mod model;
pub mod policy;

pub use model::*;
