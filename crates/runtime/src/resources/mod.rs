//! Resources: serde types of the YAML/CRD objects and their validation (pure).

/// The resource types, in the `skycanary-api` crate.
pub use skycanary_api::resources::{canary, scheduled, template};

pub mod canary_validate;
pub mod compile;
#[cfg(test)]
mod layer_tests;
pub mod load;
pub mod notifications;
pub mod route_claims;
pub mod scheduled_validate;

/// The pure helpers, in the `skycanary-core` crate.
pub use skycanary_core::resources::{args, duration, yaml, yaml_edit};

pub use load::{
    ConfigError, ConfigErrors, LoadResult, LoadedCanary, LoadedScheduled, LoadedTemplate, Origin,
    load_paths, load_str,
};
pub use template::*;
pub mod crd;
/// CronJob schedules, in the `skycanary-core` crate.
pub use skycanary_core::resources::cron;
