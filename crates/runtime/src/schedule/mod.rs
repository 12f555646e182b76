//! Scheduled analyses (DESIGN §2 "ScheduledAnalysis", §6): cron translation on the `cron`
//! crate (`skycanary_core::resources::cron`, pure), scheduling decisions (`policy.rs`, pure), the status model
//! (`model.rs`), and the driver that runs them (`driver.rs`, I/O: one task per object).

/// Cron translation lives with the resource it validates (`resources::cron`), re-exported here.
pub use crate::resources::cron;
pub mod driver;
pub mod model;
pub mod policy;
pub mod store;

pub use cron::{CronError, CronSchedule};
pub use model::*;
