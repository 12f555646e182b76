//! Alarm intake: SkyWalking webhook payloads, matching against a Canary's `rollbackOn`, and
//! de-duplication of repeated deliveries.

mod matcher;
pub mod skywalking;

pub use matcher::AlarmMatchers;

pub use skywalking::{AlarmMessage, Deduper, ParseError, matches, parse_payload};
