//! What every alarm channel shares (SkyWalking webhook, `getAlarm` polling, Alertmanager
//! webhook): parsing payloads element by element, the alarm's identity and de-duplication
//! memory; whether an alarm acts on a canary is decided in `accept.rs`.
//!
//! Everything here is bounded in bytes whatever the sender does: a payload holds at most
//! [`MAX_ALARMS_PER_PAYLOAD`] alarms, a malformed one is refused alone (its index and reason
//! reported, at most [`MAX_REPORTED_REJECTIONS`] reasons kept), the text kept for status,
//! Events, logs and forwarding is cut to [`MAX_KEPT_TEXT_BYTES`], and de-duplication keeps
//! fixed-size hashes, not the alarms' text.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::alertmanager::Alert;
use super::skywalking::Alarm;

/// Most alarms one payload may carry; the ones past it are refused (reported like malformed
/// ones). A full OAP or Alertmanager batch is far smaller; the limit keeps the memory one
/// request can take (≈ 300 bytes per parsed alarm) bounded.
pub const MAX_ALARMS_PER_PAYLOAD: usize = 10_000;

/// Refusal reasons listed in a reply; past it only the count grows.
pub const MAX_REPORTED_REJECTIONS: usize = 20;

/// Longest rule, entity or message text kept (status `abort.alarm`, Events, logs, requests
/// forwarded to the leader), in bytes; longer text is cut at a character boundary with a
/// marker. Matching always sees the whole field.
pub const MAX_KEPT_TEXT_BYTES: usize = 1024;

/// Alarms that started before this (2000-01-01T00:00:00Z, epoch ms) carry no usable time:
/// OAP and Alertmanager never send one, so `0`, `-1` or `i64::MIN` mean "unknown".
pub const EARLIEST_PLAUSIBLE_START_MS: i64 = 946_684_800_000;

/// `text` cut to at most [`MAX_KEPT_TEXT_BYTES`] bytes (plus a marker saying how much was
/// dropped), never inside a character.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_KEPT_TEXT_BYTES {
        return text.to_string();
    }
    let mut end = MAX_KEPT_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

/// A start time that can be compared with a run's start: `None` for one before
/// [`EARLIEST_PLAUSIBLE_START_MS`] (a sender's placeholder or garbage), which therefore can
/// never make a matching alarm "older than the run".
pub fn plausible_start(at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let floor = Utc
        .timestamp_millis_opt(EARLIEST_PLAUSIBLE_START_MS)
        .single()?;
    at.filter(|t| *t >= floor)
}

/// One element of a payload that was refused, by its index in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Position in the payload's array (0-based).
    pub index: usize,
    /// Why, as the parser said it.
    pub error: String,
}

/// What a payload's elements parsed to: the valid ones, and the refused ones (the first
/// [`MAX_REPORTED_REJECTIONS`] with their reason, all of them counted).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// Elements that parsed, in payload order.
    pub items: Vec<T>,
    /// The first refused elements, with their reasons.
    pub rejected: Vec<Rejected>,
    /// How many elements were refused in all.
    pub rejected_total: usize,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            items: Vec::new(),
            rejected: Vec::new(),
            rejected_total: 0,
        }
    }
}

impl<T> Batch<T> {
    /// Counts a refused element; its reason is kept (cut to [`MAX_KEPT_TEXT_BYTES`]: a
    /// parser's message may quote the offending value) while fewer than
    /// [`MAX_REPORTED_REJECTIONS`] are.
    fn reject(&mut self, index: usize, error: String) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_REPORTED_REJECTIONS {
            self.rejected.push(Rejected {
                index,
                error: clip(&error),
            });
        }
    }

    /// The same batch with each parsed element turned into `f(element)`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Batch<U> {
        Batch {
            items: self.items.into_iter().map(f).collect(),
            rejected: self.rejected,
            rejected_total: self.rejected_total,
        }
    }

    /// `alarms[3]: missing field ruleName; ...` for the reported refusals.
    pub fn rejection_summary(&self, what: &str) -> String {
        let mut parts: Vec<String> = self
            .rejected
            .iter()
            .map(|r| format!("{what}[{}]: {}", r.index, r.error))
            .collect();
        if self.rejected_total > self.rejected.len() {
            parts.push(format!(
                "and {} more",
                self.rejected_total - self.rejected.len()
            ));
        }
        parts.join("; ")
    }

    /// Each raw element parsed on its own, so one bad element costs only itself; `convert`
    /// may refuse a parsed element too. Elements past [`MAX_ALARMS_PER_PAYLOAD`] are refused.
    pub(crate) fn parse<W: DeserializeOwned>(
        elements: &[&RawValue],
        convert: impl Fn(W) -> Result<T, String>,
    ) -> Self {
        let mut batch = Batch::default();
        for (index, raw) in elements.iter().enumerate() {
            if index >= MAX_ALARMS_PER_PAYLOAD {
                batch.reject(
                    index,
                    format!("more than {MAX_ALARMS_PER_PAYLOAD} alarms in one payload"),
                );
                continue;
            }
            match serde_json::from_str::<W>(raw.get())
                .map_err(|e| e.to_string())
                .and_then(&convert)
            {
                Ok(item) => batch.items.push(item),
                Err(e) => batch.reject(index, e),
            }
        }
        batch
    }
}

/// A fixed-size (128-bit) identity of an alarm, whatever the size of the fields it is made of.
pub type DedupeKey = u128;

/// Hashes `parts` into a [`DedupeKey`] with two SipHash keys drawn at random once per process:
/// equal parts give equal keys within the process, and nobody outside can aim for a collision.
pub fn dedupe_key(parts: &impl Hash) -> DedupeKey {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    (u128::from(a.hash_one(parts)) << 64) | u128::from(b.hash_one(parts))
}

/// An alarm from any channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A SkyWalking alarm (webhook or polled).
    Alarm(Alarm),
    /// An Alertmanager alert.
    Alert(Alert),
}

/// What an alarm means for a canary, decided in one place (`accept.rs`) for every channel.
pub use super::accept::{Verdict, verdict};

impl Incoming {
    /// A recovery (SkyWalking 10.4 `recoveryTime`) or a resolved alert.
    pub fn is_recovery(&self) -> bool {
        match self {
            Incoming::Alarm(a) => a.is_recovery(),
            Incoming::Alert(a) => a.is_resolved(),
        }
    }

    /// When it started, if the sender gave a plausible time (see [`plausible_start`]).
    pub fn started(&self) -> Option<DateTime<Utc>> {
        plausible_start(match self {
            Incoming::Alarm(a) => a.started(),
            Incoming::Alert(a) => a.starts_at,
        })
    }

    /// Rule (SkyWalking rule name / Alertmanager `alertname`) for status, events and logs,
    /// cut to [`MAX_KEPT_TEXT_BYTES`].
    pub fn rule(&self) -> String {
        clip(&match self {
            Incoming::Alarm(a) => a.rule_label(),
            Incoming::Alert(a) => a.rule_label(),
        })
    }

    /// Entity for status, events and logs, cut to [`MAX_KEPT_TEXT_BYTES`].
    pub fn entity(&self) -> String {
        clip(&match self {
            Incoming::Alarm(a) => a.entity_label(),
            Incoming::Alert(a) => a.entity_label(),
        })
    }

    /// Human message, cut to [`MAX_KEPT_TEXT_BYTES`].
    pub fn message(&self) -> String {
        match self {
            Incoming::Alarm(a) => clip(a.message.as_deref().unwrap_or_default()),
            Incoming::Alert(a) => clip(&a.message()),
        }
    }

    /// De-duplication identities (seen if any of them was seen), fixed-size hashes.
    pub fn dedupe_keys(&self) -> Vec<DedupeKey> {
        match self {
            Incoming::Alarm(a) => a.dedupe_keys(),
            Incoming::Alert(a) => a.dedupe_keys(),
        }
    }
}

/// Remembers the identities of the last `capacity` alarms, so a re-delivered alarm (or one
/// seen by the webhook and again by polling) is handled once. Identities are 16-byte hashes,
/// so its memory is bounded by `capacity` whatever the alarms carry (about 100 bytes each).
#[derive(Debug)]
pub struct Deduper {
    seen: HashSet<DedupeKey>,
    order: VecDeque<Vec<DedupeKey>>,
    capacity: usize,
}

impl Deduper {
    /// Keeps the identities of up to `capacity` alarms.
    pub fn new(capacity: usize) -> Self {
        Deduper {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time an alarm is seen (none of its identities known). Its identities
    /// are remembered either way, so a later copy carrying only one of them is caught too.
    pub fn first_time(&mut self, keys: &[DedupeKey]) -> bool {
        let first = !keys.iter().any(|k| self.seen.contains(k));
        let new: Vec<DedupeKey> = keys
            .iter()
            .filter(|k| !self.seen.contains(*k))
            .copied()
            .collect();
        if new.is_empty() {
            return first;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            for k in old {
                self.seen.remove(&k);
            }
        }
        self.seen.extend(new.iter().copied());
        self.order.push_back(new);
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::matcher::RollbackRules;
    use skycanary_api::resources::canary::{AlarmMatcher, RollbackOn};

    fn keys(ks: &[&str]) -> Vec<DedupeKey> {
        ks.iter().map(dedupe_key).collect()
    }

    #[test]
    fn duplicates_are_handled_once() {
        let mut d = Deduper::new(2);
        assert!(d.first_time(&keys(&["a", "a2"])));
        assert!(!d.first_time(&keys(&["a", "a2"])));
        assert!(
            !d.first_time(&keys(&["a2"])),
            "one shared identity is enough"
        );
        assert!(d.first_time(&keys(&["b"])));
        assert!(d.first_time(&keys(&["c"])));
        assert!(d.first_time(&keys(&["a"])), "forgotten after capacity");
    }

    #[test]
    fn a_polled_copy_of_a_webhook_alarm_is_a_duplicate() {
        let hook = Alarm {
            rule_name: Some("r".into()),
            id0: Some("aWQ=.1".into()),
            message: Some("m".into()),
            start_time: Some(5),
            uuid: Some("u".into()),
            ..Alarm::default()
        };
        let polled = Alarm {
            rule_name: None,
            uuid: None,
            ..hook.clone()
        };
        let mut d = Deduper::new(10);
        assert!(d.first_time(&hook.dedupe_keys()));
        assert!(!d.first_time(&polled.dedupe_keys()));
        let mut d = Deduper::new(10);
        assert!(d.first_time(&polled.dedupe_keys()), "polled first");
        assert!(!d.first_time(&hook.dedupe_keys()));
    }

    #[test]
    fn kept_text_is_cut_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let exact = "a".repeat(MAX_KEPT_TEXT_BYTES);
        assert_eq!(clip(&exact), exact);
        // 'é' is two bytes: the cut must not split it.
        let long = format!("a{}", "é".repeat(MAX_KEPT_TEXT_BYTES));
        let cut = clip(&long);
        assert!(cut.starts_with('a'));
        assert!(
            cut.ends_with(&format!(
                "… [{} more bytes]",
                long.len() - MAX_KEPT_TEXT_BYTES + 1
            )),
            "{cut}"
        );
        assert!(cut.len() < MAX_KEPT_TEXT_BYTES + 40);
        let item = Incoming::Alarm(Alarm {
            rule_name: Some("r".repeat(900_000)),
            name: Some("n".repeat(900_000)),
            message: Some("m".repeat(900_000)),
            ..Alarm::default()
        });
        for kept in [item.rule(), item.entity(), item.message()] {
            assert!(kept.len() < MAX_KEPT_TEXT_BYTES + 40, "{}", kept.len());
        }
        let alert = Incoming::Alert(Alert {
            labels: (0..10_000)
                .map(|i| (format!("label{i}"), "v".repeat(50)))
                .collect(),
            ..Alert::default()
        });
        assert!(alert.entity().len() < MAX_KEPT_TEXT_BYTES + 40);
    }

    #[test]
    fn recoveries_win_over_matching() {
        let rules = RollbackRules::compile(Some(&RollbackOn {
            alarms: vec![AlarmMatcher {
                name: Some(".*".into()),
                ..AlarmMatcher::default()
            }],
            alerts: Vec::new(),
        }));
        let a = Alarm {
            name: Some("svc".into()),
            recovery_time: Some(1),
            ..Alarm::default()
        };
        assert_eq!(
            verdict(&Incoming::Alarm(a.clone()), &rules, None),
            Verdict::Recovered
        );
        let firing = Alarm {
            recovery_time: None,
            ..a
        };
        assert_eq!(
            verdict(&Incoming::Alarm(firing.clone()), &rules, None),
            Verdict::Trigger
        );
        let no_start = Alarm {
            start_time: None,
            ..firing
        };
        assert_eq!(
            verdict(
                &Incoming::Alarm(no_start),
                &rules,
                Some(DateTime::<Utc>::MAX_UTC)
            ),
            Verdict::Trigger,
            "no start time: cannot be shown to be older"
        );
    }
}
