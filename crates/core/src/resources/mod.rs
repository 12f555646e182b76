//! Resources as far as they are pure: the helpers (YAML with positions and its in-place edits,
//! durations, CronJob schedules, template argument substitution), loading text into typed
//! documents with every problem located (`load`, `error`), the validators of each kind and the
//! template compiler. Reading files (directory walks, `caFile`) is the runtime's
//! (`skycanary::resources::load_paths`); the resource types are `skycanary-api`'s.

pub mod args;
pub mod canary_validate;
pub mod compile;
pub mod cron;
pub mod duration;
pub mod error;
pub mod load;
pub mod notifications;
pub mod route_claims;
pub mod scheduled_validate;
pub mod yaml;
pub mod yaml_edit;

/// The resource types, in the `skycanary-api` crate (under the paths the validators use).
pub use skycanary_api::resources::{canary, scheduled, template};

pub use error::{ConfigError, ConfigErrors, Origin};
pub use load::{LoadResult, LoadedCanary, LoadedScheduled, LoadedTemplate, load_str};
