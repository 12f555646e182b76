//! The one decision every alarm channel shares (SkyWalking webhook, `getAlarm` polling,
//! Alertmanager webhook): does this alarm roll this canary back, and has it been seen before.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};

use super::alertmanager::Alert;
use super::matcher::RollbackRules;
use super::skywalking::Alarm;

/// An alarm from any channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A SkyWalking alarm (webhook or polled).
    Alarm(Alarm),
    /// An Alertmanager alert.
    Alert(Alert),
}

/// What an alarm means for one canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Roll back now.
    Trigger,
    /// A recovery notice or a resolved alert: never a reason to roll back.
    Recovered,
    /// Matches, but started before this canary's run: it is about an earlier release.
    OlderThanRun,
    /// Not for this canary.
    NoMatch,
}

impl Incoming {
    /// A recovery (SkyWalking 10.4 `recoveryTime`) or a resolved alert.
    pub fn is_recovery(&self) -> bool {
        match self {
            Incoming::Alarm(a) => a.is_recovery(),
            Incoming::Alert(a) => a.is_resolved(),
        }
    }

    /// When it started.
    pub fn started(&self) -> Option<DateTime<Utc>> {
        match self {
            Incoming::Alarm(a) => a.started(),
            Incoming::Alert(a) => a.starts_at,
        }
    }

    /// Rule (SkyWalking rule name / Alertmanager `alertname`) for status, events and metrics.
    pub fn rule(&self) -> String {
        match self {
            Incoming::Alarm(a) => a.rule_label(),
            Incoming::Alert(a) => a.rule_label(),
        }
    }

    /// Entity for status, events and metrics.
    pub fn entity(&self) -> String {
        match self {
            Incoming::Alarm(a) => a.entity_label(),
            Incoming::Alert(a) => a.entity_label(),
        }
    }

    /// Human message.
    pub fn message(&self) -> String {
        match self {
            Incoming::Alarm(a) => a.message.clone().unwrap_or_default(),
            Incoming::Alert(a) => a.message(),
        }
    }

    /// De-duplication identities (seen if any of them was seen).
    pub fn dedupe_keys(&self) -> Vec<String> {
        match self {
            Incoming::Alarm(a) => a.dedupe_keys(),
            Incoming::Alert(a) => a.dedupe_keys(),
        }
    }
}

/// Decides what `item` means for a canary with `rules` whose run started at `run_start`.
/// Recoveries are checked first so a recovery never counts, whatever the matchers say.
pub fn verdict(
    item: &Incoming,
    rules: &RollbackRules,
    run_start: Option<DateTime<Utc>>,
) -> Verdict {
    if item.is_recovery() {
        return Verdict::Recovered;
    }
    let matched = match item {
        Incoming::Alarm(a) => rules.alarms.matches(a),
        Incoming::Alert(a) => rules.alerts.matches(a),
    };
    if !matched {
        return Verdict::NoMatch;
    }
    match (run_start, item.started()) {
        (Some(run), Some(at)) if at < run => Verdict::OlderThanRun,
        _ => Verdict::Trigger,
    }
}

/// Remembers the identities of the last `capacity` alarms, so a re-delivered alarm (or one
/// seen by the webhook and again by polling) is handled once.
#[derive(Debug)]
pub struct Deduper {
    seen: HashSet<String>,
    order: VecDeque<Vec<String>>,
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
    pub fn first_time(&mut self, keys: &[String]) -> bool {
        let first = !keys.iter().any(|k| self.seen.contains(k));
        let new: Vec<String> = keys
            .iter()
            .filter(|k| !self.seen.contains(*k))
            .cloned()
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
        self.seen.extend(new.iter().cloned());
        self.order.push_back(new);
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::canary::{AlarmMatcher, RollbackOn};

    fn keys(ks: &[&str]) -> Vec<String> {
        ks.iter().map(|s| s.to_string()).collect()
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
