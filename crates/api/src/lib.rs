//! The resources' status types: what the daemon writes into `.status` of a Canary and of a
//! ScheduledAnalysis, and what the CLI, the HTTP API and the CRD schemas read. Plain data over
//! `skycanary_core`'s run states (`analysis`) and routes (`traffic::model`); a crate of its own,
//! so importing a controller, the runtime or an edge is a compile error. The root package
//! re-exports it as `skycanary::api`, and the controllers these types from their old paths
//! (`crate::canary::CanaryStatus`, ...).

pub mod canary;
pub mod scheduled;
