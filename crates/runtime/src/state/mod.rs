//! Persistence of controller state: file mode writes one JSON document per object in
//! `--state-dir`, atomically, so a restarted daemon resumes where it stopped.

pub mod conditions;
pub mod file;
pub mod kube_status;
pub mod lease;
pub mod status;

pub use file::{FileStatusStore, StateError};
pub use status::StatusStore;
