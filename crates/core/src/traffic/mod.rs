//! The routing model: the Istio objects a Canary routes through and the weights and routes it
//! asks for (plain data; the transforms and the stores are still in the root package).

pub mod model;

pub use model::*;
