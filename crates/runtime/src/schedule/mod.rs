//! Scheduled analyses (DESIGN §2 "ScheduledAnalysis", §6): the driver that runs them
//! (`driver.rs`, I/O: one task per object) and their status store. The pure parts are in the
//! `skycanary-core` crate and re-exported here: cron translation (`resources::cron`), the
//! scheduling decisions (`schedule::policy`) and the status model (`schedule::model`).

/// Cron translation lives with the resource it validates (`resources::cron`), re-exported here.
pub use crate::resources::cron;
pub mod driver;
/// The scheduling decisions and the status model, in `skycanary-core`.
pub use skycanary_core::schedule::{model, policy};
pub mod store;

pub use cron::{CronError, CronSchedule};
pub use model::*;
