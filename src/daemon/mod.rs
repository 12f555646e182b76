//! The daemon (`skycanary run`): loads resources, starts one driver task per Canary, serves
//! the HTTP API, takes alarms, and stops cleanly on SIGTERM/SIGINT.
//!
//! This version runs in file mode: resources from `--config` directories, Istio objects from
//! a `--manifests` directory, state in `--state-dir`.

pub mod control;
pub mod drift_watch;
pub mod invalid;
pub mod kube_source;
pub mod readiness_watch;
pub mod reload;

pub use control::DaemonControl;
