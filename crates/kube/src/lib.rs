//! skycanary's Kubernetes adapters, on kube-rs (`Api`, `runtime::events::Recorder`): everything
//! that speaks to an API server, between the pure layers (`skycanary-core`, `skycanary-api`)
//! and the interfaces they implement (`skycanary-ports`) below and the runtime's tasks above.
//!
//! - [`traffic`]: the Istio manifest store (VirtualServices, DestinationRules) and the Events
//!   of a Canary's progress, through one bounded client;
//! - [`status`]: the one `.status` store of Canaries and ScheduledAnalyses (a conditional PUT of
//!   the status subresource);
//! - [`lease`]: leader election among replicas over a `coordination.k8s.io/v1` Lease;
//! - [`observe`]: the client layer that reports every API request to the daemon's metrics;
//! - [`watch`]: kube-runtime watchers as streams of what changed (VirtualServices, a relisting
//!   watch for the readiness index, skycanary's own kinds listed and watched);
//! - [`backoff`]: the watches' (and the tasks') capped doubling retry delay.
//!
//! The runtime re-exports each under the path it has always had (`traffic::kube`,
//! `state::kube_status`, `state::lease`, `traffic::kube_observe`, `backoff`,
//! `daemon::kube_source::SourceKind`) and keeps what the watch events mean to it.

pub mod backoff;
pub mod lease;
pub mod observe;
pub mod status;
pub mod traffic;
pub mod watch;
