//! Persistence of controller state: file mode writes one JSON document per object in
//! `--state-dir`, atomically, so a restarted daemon resumes where it stopped.

pub mod file;
pub mod lease;

pub use file::{FileStateStore, StateError};
