//! Resources: serde types of the YAML/CRD objects (`skycanary-api`), their validation and the
//! template compiler (pure, `skycanary-core`), and the file loader (`load_paths`).

/// The resource types, in the `skycanary-api` crate.
pub use skycanary_api::resources::{canary, scheduled, template};

#[cfg(test)]
mod layer_tests;
pub mod load;

/// The pure helpers, loading text, the validators and the template compiler, in the
/// `skycanary-core` crate.
pub use skycanary_core::resources::{
    args, canary_validate, compile, duration, error, notifications, route_claims,
    scheduled_validate, yaml, yaml_edit,
};

pub use load::{
    ConfigError, ConfigErrors, LoadResult, LoadedCanary, LoadedScheduled, LoadedTemplate, Origin,
    load_paths, load_str,
};
pub use template::*;
pub mod crd;
/// CronJob schedules, in the `skycanary-core` crate.
pub use skycanary_core::resources::cron;
