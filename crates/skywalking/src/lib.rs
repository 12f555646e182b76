//! SkyWalking OAP provider: the async I/O edge that turns metric queries into
//! GraphQL requests against an OAP and returns per-bucket samples.
//!
//! Everything version-dependent (MQE vs `readMetricsValues`, `isEmptyValue`,
//! the OAP's timezone) is detected once per client and cached, because the
//! server's schema decides which fields may be selected and which input fields
//! may be sent (see the protocol reference, §0 and §6).
//!
//! The query model it sends (metric queries, connection options, samples, errors) is pure
//! data in `skycanary_core::skywalking`, re-exported here, so the template compiler builds it
//! without this crate's HTTP stack.

mod alarms;
mod ca;
mod client;
mod features;
mod queries;
mod response;

#[cfg(test)]
mod tests;

pub use skycanary_core::skywalking::*;

pub use alarms::{AlarmPage, AlarmRecord};
pub use ca::{MAX_CA_FILE_BYTES, ReadCaFile, read_ca_file};
pub use client::{MAX_IN_FLIGHT, SkyWalkingClient, decode_response};
pub use features::{Features, ServerInfo};
