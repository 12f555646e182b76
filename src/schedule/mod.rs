//! Scheduled analyses (DESIGN §2 "ScheduledAnalysis", §6): cron translation on the `cron`
//! crate (`cron.rs`, pure), scheduling decisions (`policy.rs`, pure), the status model
//! (`model.rs`), and the driver that runs them (`driver.rs`, I/O: one task per object).

pub mod cron;
pub mod driver;
pub mod model;
pub mod policy;
pub mod store;

pub use cron::{CronError, CronSchedule};
pub use model::*;
