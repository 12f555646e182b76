//! The routing model: the Istio objects a Canary routes through and the weights and routes it
//! asks for (plain data), how a Canary's spec resolves to them (`spec.rs`), the objects'
//! identities (`key.rs`), and the pure transforms of VirtualService/DestinationRule JSON that
//! realise them (`istio.rs`). The router and the stores are in the runtime.

pub mod istio;
pub mod key;
pub mod model;
pub mod spec;

pub use model::*;
