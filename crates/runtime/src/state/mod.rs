//! Persistence of controller state: file mode writes one JSON document per object in
//! `--state-dir`, atomically, so a restarted daemon resumes where it stopped.

/// Kubernetes-style conditions derived from a status (pure, in core).
pub use skycanary_core::conditions;
pub mod file;
pub mod kube_status;
pub mod lease;
pub mod status;

pub use file::{FileStatusStore, StateError};
pub use status::StatusStore;
