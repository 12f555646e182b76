//! Persistence of controller state: file mode writes one JSON document per object in
//! `--state-dir`, atomically, so a restarted daemon resumes where it stopped.

/// Kubernetes-style conditions derived from a status (pure, in core).
pub use skycanary_core::conditions;
pub mod file;
pub mod journal;
/// The `.status` store and the leader Lease, in the `skycanary-kube` crate.
pub use skycanary_kube::{lease, status as kube_status};
pub mod status;

pub use file::{FileStatusStore, StateError};
pub use status::StatusStore;
