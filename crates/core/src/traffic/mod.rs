//! The routing model: the Istio objects a Canary routes through and the weights and routes it
//! asks for (plain data), and the pure transforms of VirtualService/DestinationRule JSON that
//! realise them (`istio.rs`). The router and the stores are still in the root package.

pub mod istio;
pub mod model;

pub use model::*;
