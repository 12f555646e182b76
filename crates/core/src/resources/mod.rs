//! The pure helpers the resource loader builds on: YAML with positions and its in-place edits,
//! durations, CronJob schedules, template argument substitution. The resource types, loading
//! and validation are still in the root package (`skycanary::resources`).

pub mod args;
pub mod cron;
pub mod duration;
pub mod yaml;
pub mod yaml_edit;
