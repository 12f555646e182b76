//! Persistence of controller state: file mode keeps one status file per object in
//! `--state-dir` (its JSON in two checksummed slots, saved in place so a crash leaves the old
//! or the new status), so a restarted daemon resumes where it stopped.

pub mod conditions;
pub mod file;
pub mod kube_status;
pub mod lease;
pub(crate) mod slots;
pub mod status;

pub use file::{FileStatusStore, MAX_STATUS_BYTES, StateError, read_status_json};
pub use status::StatusStore;
