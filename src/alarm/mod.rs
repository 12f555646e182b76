//! Alarm intake: SkyWalking webhook payloads and `getAlarm` polling, Alertmanager webhook
//! payloads, matching against a Canary's `rollbackOn`, and de-duplication of repeated
//! deliveries.

pub mod accept;
pub mod alertmanager;
pub mod intake;
pub mod matcher;
pub mod poll;
pub mod skywalking;

pub use intake::{Batch, DedupeKey, Deduper, Incoming, Rejected, Verdict, verdict};
pub use matcher::{AlarmMatchers, AlertMatchers, PatternCache, RollbackRules, anchored};
pub use skywalking::{Alarm, AlarmMessage, ParseError, parse_batch, parse_payload};
