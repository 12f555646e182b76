//! Traffic routing on Istio: pure transforms over VirtualService/DestinationRule JSON (`istio`,
//! in `skycanary-core`), a generic router with optimistic concurrency over a manifest store
//! (`router.rs`), and the stores: Kubernetes (`kube.rs`) and a directory of YAML files (`file.rs`).

pub mod drift;
pub mod file;
/// The Kubernetes manifest store and Events, and the client layer reporting API requests, in
/// the `skycanary-kube` crate.
pub use skycanary_kube::{observe as kube_observe, traffic as kube};
/// The gate that orders a routing write after its status save, in the `skycanary-ports` crate.
pub use skycanary_ports::gate;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
/// The routing model, its resolution from a Canary's spec and the pure Istio transforms, in
/// the `skycanary-core` crate.
pub use skycanary_core::traffic::{istio, model, spec};
pub mod planner;
pub mod router;
pub mod sidecar;
pub mod standby;
/// The manifest store the router writes through, in the `skycanary-ports` crate (below the
/// Kubernetes adapters and the file store that implement it).
pub use skycanary_ports::manifest as store;

pub use model::*;
