//! skycanary's runtime: everything that does I/O — the object tasks and their drivers, the
//! analysis runner, the manifest and status stores (files, Kubernetes), the HTTP server and
//! metrics, alarm intake, notifications, and the daemon's assembly (DESIGN.md §8). Decisions
//! are `skycanary-core`'s and data `skycanary-api`'s; both are re-exported under the module
//! paths callers have always used (`analysis`, `api`, and modules of `resources`, `traffic`,
//! `canary`, `schedule`, `alarm`).

pub mod alarm;
pub use skycanary_api as api;
pub use skycanary_core::analysis;
pub mod backoff;
pub mod build_info;
pub mod canary;
pub mod daemon;
pub mod notify;
pub mod provider;
pub mod report;
pub mod resources;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod state;
pub mod task;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod traffic;
