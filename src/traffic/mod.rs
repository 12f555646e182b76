//! Traffic routing on Istio: pure transforms over VirtualService/DestinationRule JSON
//! (`istio.rs`), a generic router with optimistic concurrency over a manifest store
//! (`router.rs`), and the stores: Kubernetes (`kube.rs`) and a directory of YAML files (`file.rs`).

pub mod kube;
pub mod model;
pub mod store;

pub use model::*;
