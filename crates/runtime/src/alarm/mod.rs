//! Alarm intake: SkyWalking webhook payloads and `getAlarm` polling, Alertmanager webhook
//! payloads, matching against a Canary's `rollbackOn`, and de-duplication of repeated
//! deliveries. The payloads, their parsers, matching and the acceptance decision are pure and
//! live in `skycanary-core` (`skycanary_core::alarm`), re-exported here under their old
//! paths; polling the OAP (`poll`) is the runtime's.

/// The pure side, in the `skycanary-core` crate.
pub use skycanary_core::alarm::{accept, alertmanager, intake, matcher, skywalking};
pub mod poll;

pub use skycanary_core::alarm::{
    Alarm, AlarmMatchers, AlarmMessage, AlertMatchers, Batch, DedupeKey, Deduper, Incoming,
    ParseError, PatternCache, Rejected, RollbackRules, Verdict, anchored, parse_batch,
    parse_payload, verdict,
};

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
