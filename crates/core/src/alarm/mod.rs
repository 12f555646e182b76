//! Alarms, as far as they are pure: the SkyWalking and Alertmanager payloads and their
//! parsers (`skywalking`, `alertmanager`), what every channel shares (`intake`: bounded
//! batches, identities, de-duplication memory), `rollbackOn` matching (`matcher`) and the
//! decision whether an alarm acts on a canary (`accept`). The webhooks and `getAlarm` polling
//! that feed them are I/O and stay in the runtime (`skycanary::alarm`).
//!
//! `rollbackOn` patterns are fully anchored, like Prometheus label matchers, so `reviews`
//! never matches `reviews-v2`; validation and matching compile them the same way
//! ([`anchored`]).

pub mod accept;
pub mod alertmanager;
pub mod intake;
pub mod matcher;
pub mod skywalking;

pub use intake::{Batch, DedupeKey, Deduper, Incoming, Rejected, Verdict, verdict};
pub use matcher::{AlarmMatchers, AlertMatchers, PatternCache, RollbackRules};
pub use skywalking::{Alarm, AlarmMessage, ParseError, parse_batch, parse_payload};

use regex::Regex;

/// Compiles `re` so it must match the whole text.
pub fn anchored(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

#[cfg(test)]
mod tests {
    use super::anchored;

    #[test]
    fn a_pattern_matches_the_whole_text_only() {
        let re = anchored("reviews|ratings").unwrap();
        assert!(re.is_match("reviews"));
        assert!(re.is_match("ratings"));
        assert!(!re.is_match("reviews-v2"));
        assert!(!re.is_match("my-ratings"));
        assert!(anchored("(").is_err());
    }
}
