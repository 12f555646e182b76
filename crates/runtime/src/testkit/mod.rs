//! The test kit of the crates above the runtime, in the `skycanary-testkit` crate: the fake
//! Kubernetes API server and Istio's VirtualService schema check, under the path the tests and
//! benchmarks have always used (`skycanary::testkit`).

pub use skycanary_testkit::*;

#[cfg(test)]
mod loader_parity_tests;
