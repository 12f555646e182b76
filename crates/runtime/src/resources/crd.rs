//! CustomResourceDefinitions generated from the Rust types (DESIGN §2, §7): `skycanary-api`'s
//! `crd`, next to the types it reads, re-exported here for `skycanary crds` and the other
//! callers. The tests that read the repository's files (`deploy/crds/`, the examples) or
//! parse with the core's YAML and duration parsers stay with the root package.

pub use skycanary_api::crd::*;

#[cfg(test)]
#[path = "crd_tests.rs"]
mod tests;
