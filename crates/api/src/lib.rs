//! The resources' status types: what the daemon writes into `.status` of a Canary and of a
//! ScheduledAnalysis, and what the CLI, the HTTP API and the CRD schemas read, with the data
//! they embed (analysis runs in `analysis`, routes and weights in `routing`). Plain data at the
//! bottom of the crate graph: it depends on no other skycanary crate, so `skycanary-core`
//! (the logic over these types) and everything above can use it, and it cannot import them.
//! The root package re-exports it as `skycanary::api`, `skycanary-core` the embedded types
//! under their old paths (`analysis::RunState`, `traffic::DesiredRouting`, ...).

pub mod analysis;
pub mod canary;
pub mod crd;
pub mod resources;
pub mod routing;
pub mod scheduled;
