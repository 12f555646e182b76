//! skycanary's simulator and demo (the root package's `demo` feature): a SkyWalking-compatible
//! OAP on loopback (`sim`), and `skycanary demo` (`demo`), which drives the real daemon against
//! it. It sits over `skycanary-runtime` and nothing in the runtime depends on it, so a build
//! without the feature (the container image's) links neither the GraphQL server nor the demo.

pub mod demo;
pub mod sim;
