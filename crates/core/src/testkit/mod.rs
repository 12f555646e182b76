//! Test support shared with the crates above (feature `testkit`; always on in this crate's
//! tests): Istio's VirtualService schema, which every VirtualService a test writes must satisfy.

pub mod vs_schema;
