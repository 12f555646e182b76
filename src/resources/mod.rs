//! Resources: serde types of the YAML/CRD objects and their validation (pure).

pub mod args;
pub mod canary;
pub mod canary_validate;
pub mod compile;
pub mod duration;
pub mod load;
pub mod notifications;
pub mod route_claims;
pub mod scheduled;
pub mod scheduled_validate;
pub mod template;
pub mod yaml;
pub mod yaml_edit;

pub use load::{
    ConfigError, ConfigErrors, LoadResult, LoadedCanary, LoadedScheduled, LoadedTemplate, Origin,
    load_paths, load_str,
};
pub use template::*;
pub mod crd;
pub mod cron;
