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

use serde::{Deserialize, Serialize};

/// Where an alarm payload came from; the payload shapes differ, the intake path does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlarmSource {
    /// `POST /webhooks/skywalking`: a JSON array of SkyWalking `AlarmMessage`.
    Skywalking,
    /// `POST /webhooks/alertmanager`: a Prometheus Alertmanager webhook payload.
    Alertmanager,
    /// SkyWalking alarms polled through `getAlarm` (`run --alarm-poll-interval`).
    SkywalkingPoll,
}

impl AlarmSource {
    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmSource::Skywalking => "skywalking",
            AlarmSource::Alertmanager => "alertmanager",
            AlarmSource::SkywalkingPoll => "skywalking-poll",
        }
    }

    /// How status and events name the sender.
    pub fn display_name(self) -> &'static str {
        match self {
            AlarmSource::Skywalking | AlarmSource::SkywalkingPoll => "SkyWalking",
            AlarmSource::Alertmanager => "Alertmanager",
        }
    }
}
