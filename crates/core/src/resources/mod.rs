//! The pure helpers the resource loader builds on: YAML with positions and its in-place edits,
//! durations, CronJob schedules, template argument substitution. The resource types are
//! `skycanary-api`'s (re-exported here); loading and validation are in the runtime.

/// The resource types, in the `skycanary-api` crate, under the paths the runtime uses.
pub use skycanary_api::resources::{canary, scheduled, template};

pub mod args;
pub mod cron;
pub mod duration;
pub mod yaml;
pub mod yaml_edit;
