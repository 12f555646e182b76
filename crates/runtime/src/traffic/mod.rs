//! Traffic routing on Istio: pure transforms over VirtualService/DestinationRule JSON (`istio`,
//! in `skycanary-core`), a generic router with optimistic concurrency over a manifest store
//! (`router.rs`), and the stores: Kubernetes (`kube.rs`) and a directory of YAML files (`file.rs`).

pub mod drift;
pub mod file;
pub mod gate;
pub mod kube;
pub mod kube_observe;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
/// The routing model, its resolution from a Canary's spec and the pure Istio transforms, in
/// the `skycanary-core` crate.
pub use skycanary_core::traffic::{istio, model, spec};
pub mod planner;
pub mod router;
pub mod sidecar;
pub mod store;

pub use model::*;
