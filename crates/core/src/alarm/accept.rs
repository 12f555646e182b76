//! Whether an alarm acts on a canary: the one decision behind every way an alarm arrives (the
//! SkyWalking and Alertmanager webhooks, `getAlarm` polling, and an alarm a standby replica
//! matched and forwarded to the leader through `status.command`).
//!
//! Pure: the inputs are what is known of the alarm (recovery, match against `rollbackOn`,
//! start time), of the canary (when its current run started) and of the past (whether the
//! alarm was seen before); the output is a [`Verdict`] with its reason. The order is part of
//! the contract:
//! 1. a recovery (SkyWalking `recoveryTime`, a resolved alert) never rolls back, whatever the
//!    matchers say;
//! 2. an alarm that does not match is not for this canary;
//! 3. a matching alarm that started before the canary's run is about an earlier release;
//!    an unknown or implausible start time cannot show that, so such an alarm acts;
//! 4. only then is the de-duplication memory asked, so alarms for other services and stale
//!    ones neither grow nor flush it.
//!
//! Whether the canary is armed (rollback possible in its phase) is the state machine's
//! decision (`canary::machine::alarm_armed`), taken when the alarm reaches it.

use chrono::{DateTime, Utc};

use super::intake::{Incoming, plausible_start};
use super::matcher::RollbackRules;
use skycanary_api::canary::{CommandAction, CommandRequest};

/// What is known of one alarm when deciding for one canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmFacts {
    /// A recovery notice or a resolved alert.
    pub recovery: bool,
    /// It matches the canary's `rollbackOn` (checked by this replica, or by the standby that
    /// forwarded it).
    pub matched: bool,
    /// When it started, as the sender said it; a time before
    /// [`super::intake::EARLIEST_PLAUSIBLE_START_MS`] counts as unknown.
    pub started: Option<DateTime<Utc>>,
}

impl AlarmFacts {
    /// The facts of an incoming alarm for a canary with `rules`; the matchers run only for an
    /// alarm that is not a recovery (a recovery never acts, matched or not).
    pub fn of(item: &Incoming, rules: &RollbackRules) -> Self {
        let recovery = item.is_recovery();
        let matched = !recovery
            && match item {
                Incoming::Alarm(a) => rules.alarms.matches(a),
                Incoming::Alert(a) => rules.alerts.matches(a),
            };
        AlarmFacts {
            recovery,
            matched,
            started: item.started(),
        }
    }
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
    /// Would roll back, but was handled before (a re-delivery, or seen by the webhook and
    /// again by polling).
    Duplicate,
}

/// A [`Verdict`] with what it was decided from, so the reason can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The alarm's start time, if plausible.
    pub started: Option<DateTime<Utc>>,
    /// When the canary's current run started, if known.
    pub run_started: Option<DateTime<Utc>>,
}

impl Decision {
    /// True when the alarm rolls the canary back.
    pub fn acts(&self) -> bool {
        self.verdict == Verdict::Trigger
    }

    /// Why, for logs, webhook replies and `status.lastCommand.message`; `rule` names the alarm.
    pub fn reason(&self, rule: &str) -> String {
        match (self.verdict, self.started, self.run_started) {
            (Verdict::Trigger, _, _) => format!("alarm {rule} matched rollbackOn"),
            (Verdict::Recovered, _, _) => format!("alarm {rule} is a recovery"),
            (Verdict::NoMatch, _, _) => format!("alarm {rule} does not match rollbackOn"),
            (Verdict::Duplicate, _, _) => format!("alarm {rule} was handled before"),
            (Verdict::OlderThanRun, Some(at), Some(run)) => {
                format!("alarm {rule} started at {at}, before this run ({run})")
            }
            (Verdict::OlderThanRun, _, _) => format!("alarm {rule} started before this run"),
        }
    }
}

/// The decision for one alarm and one canary whose current run started at `run_started`.
/// `first_time` is the de-duplication memory: asked (at most once) only for an alarm that
/// would otherwise act, it says whether the alarm is new and remembers it.
pub fn accept(
    facts: &AlarmFacts,
    run_started: Option<DateTime<Utc>>,
    first_time: impl FnOnce() -> bool,
) -> Decision {
    let started = plausible_start(facts.started);
    let verdict = if facts.recovery {
        Verdict::Recovered
    } else if !facts.matched {
        Verdict::NoMatch
    } else if matches!((started, run_started), (Some(at), Some(run)) if at < run) {
        Verdict::OlderThanRun
    } else if first_time() {
        Verdict::Trigger
    } else {
        Verdict::Duplicate
    };
    Decision {
        verdict,
        started,
        run_started,
    }
}

/// What `item` means for a canary with `rules` whose run started at `run_start`, before
/// de-duplication (every alarm counts as new): [`accept`] without the memory.
pub fn verdict(
    item: &Incoming,
    rules: &RollbackRules,
    run_start: Option<DateTime<Utc>>,
) -> Verdict {
    accept(&AlarmFacts::of(item, rules), run_start, || true).verdict
}

/// One alarm against several canaries: which ones it rolls back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<K> {
    /// The canaries it rolls back, in the order given (empty for a recovery, a duplicate or an
    /// alarm for none of them).
    pub act_on: Vec<K>,
    /// A recovery notice or a resolved alert (no canary was asked).
    pub recovery: bool,
    /// Canaries it matched whose run started after it.
    pub older_than_run: usize,
    /// It would have rolled back at least one canary, but was handled before.
    pub duplicate: bool,
}

/// [`accept`] for `item` and each canary (`key`, its `rollbackOn`, the start of its run),
/// asking the de-duplication memory once per alarm, not once per canary: a payload is
/// handled once whichever canaries it concerns. A standby, which does not know the runs,
/// gives `None` as their start (the leader checks the age again, see [`forwarded`]).
pub fn route<'r, K>(
    item: &Incoming,
    canaries: impl IntoIterator<Item = (K, &'r RollbackRules, Option<DateTime<Utc>>)>,
    first_time: impl FnOnce() -> bool,
) -> Routed<K> {
    let mut routed = Routed {
        act_on: Vec::new(),
        recovery: item.is_recovery(),
        older_than_run: 0,
        duplicate: false,
    };
    if routed.recovery {
        return routed;
    }
    let mut ask = Some(first_time);
    let mut answer: Option<bool> = None;
    for (key, rules, run_started) in canaries {
        let facts = AlarmFacts::of(item, rules);
        let decision = accept(&facts, run_started, || {
            *answer.get_or_insert_with(|| ask.take().is_none_or(|f| f()))
        });
        match decision.verdict {
            Verdict::Trigger => routed.act_on.push(key),
            Verdict::OlderThanRun => routed.older_than_run += 1,
            Verdict::Duplicate => routed.duplicate = true,
            Verdict::NoMatch | Verdict::Recovered => {}
        }
    }
    routed
}

/// The leader's decision on a request a standby wrote into `status.command`: an alarm
/// (action `alarm`) the standby matched against `rollbackOn` and de-duplicated, checked here
/// against the run the leader knows (`run_started`). `None` for every other request.
pub fn forwarded(req: &CommandRequest, run_started: Option<DateTime<Utc>>) -> Option<Decision> {
    let alarm = req
        .alarm
        .as_ref()
        .filter(|_| req.action == CommandAction::Alarm)?;
    let facts = AlarmFacts {
        recovery: false,
        matched: true,
        started: alarm.started_at,
    };
    // Requests are de-duplicated by id (`status.lastCommand`) before they get here.
    Some(accept(&facts, run_started, || true))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use chrono::TimeZone;

    use super::*;
    use crate::alarm::skywalking::Alarm;
    use skycanary_api::canary::ForwardedAlarm;
    use skycanary_api::resources::canary::{AlarmMatcher, RollbackOn};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn rules(name: &str) -> RollbackRules {
        RollbackRules::compile(Some(&RollbackOn {
            alarms: vec![AlarmMatcher {
                name: Some(name.into()),
                ..AlarmMatcher::default()
            }],
            alerts: Vec::new(),
        }))
    }

    fn alarm(name: &str, started: Option<DateTime<Utc>>) -> Incoming {
        Incoming::Alarm(Alarm {
            rule_name: Some("latency".into()),
            name: Some(name.into()),
            message: Some("p99 > 1s".into()),
            start_time: started.map(|s| s.timestamp_millis()),
            ..Alarm::default()
        })
    }

    fn facts(recovery: bool, matched: bool, started: Option<DateTime<Utc>>) -> AlarmFacts {
        AlarmFacts {
            recovery,
            matched,
            started,
        }
    }

    /// Every combination of the inputs, against the rules of the module doc, in order.
    #[test]
    fn every_combination_of_the_inputs() {
        let run = Some(t(100));
        for recovery in [false, true] {
            for matched in [false, true] {
                for started in [None, Some(t(0)), Some(t(100)), Some(t(200))] {
                    for run_started in [None, run] {
                        for seen_before in [false, true] {
                            let asked = Cell::new(0);
                            let d = accept(&facts(recovery, matched, started), run_started, || {
                                asked.set(asked.get() + 1);
                                !seen_before
                            });
                            let older =
                                matches!((started, run_started), (Some(a), Some(r)) if a < r);
                            let expected = if recovery {
                                Verdict::Recovered
                            } else if !matched {
                                Verdict::NoMatch
                            } else if older {
                                Verdict::OlderThanRun
                            } else if seen_before {
                                Verdict::Duplicate
                            } else {
                                Verdict::Trigger
                            };
                            let case = format!(
                                "recovery {recovery}, matched {matched}, started {started:?}, \
                                 run {run_started:?}, seen {seen_before}"
                            );
                            assert_eq!(d.verdict, expected, "{case}");
                            assert_eq!(d.acts(), expected == Verdict::Trigger, "{case}");
                            let memory_asked = !recovery && matched && !older;
                            assert_eq!(asked.get(), usize::from(memory_asked), "{case}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_implausible_start_cannot_make_an_alarm_older_than_the_run() {
        let epoch = Utc.timestamp_opt(0, 0).single();
        let d = accept(&facts(false, true, epoch), Some(t(100)), || true);
        assert_eq!(d.verdict, Verdict::Trigger);
        assert_eq!(d.started, None);
    }

    #[test]
    fn reasons_name_the_alarm_and_the_times() {
        let d = accept(&facts(false, true, Some(t(0))), Some(t(100)), || true);
        assert_eq!(
            d.reason("latency"),
            "alarm latency started at 2023-11-14 22:13:20 UTC, before this run \
             (2023-11-14 22:15:00 UTC)"
        );
        let d = accept(&facts(false, true, None), None, || false);
        assert_eq!(d.reason("latency"), "alarm latency was handled before");
        let d = accept(&facts(true, true, None), None, || true);
        assert_eq!(d.reason("latency"), "alarm latency is a recovery");
    }

    #[test]
    fn routing_asks_the_memory_once_per_alarm() {
        let (web, api) = (rules("web"), rules("api"));
        let asked = Cell::new(0);
        let first = || {
            asked.set(asked.get() + 1);
            true
        };
        // Two canaries for the same service, one more for another; the second's run is newer.
        let canaries = [
            ("a", &web, Some(t(0))),
            ("b", &web, Some(t(500))),
            ("c", &api, None),
            ("d", &web, None),
        ];
        let routed = route(&alarm("web", Some(t(100))), canaries, first);
        assert_eq!(routed.act_on, vec!["a", "d"]);
        assert_eq!(routed.older_than_run, 1);
        assert!(!routed.duplicate && !routed.recovery);
        assert_eq!(asked.get(), 1);

        let routed = route(&alarm("web", Some(t(100))), canaries, || false);
        assert!(routed.act_on.is_empty());
        assert!(routed.duplicate);
        assert_eq!(routed.older_than_run, 1);

        // For nobody: the memory is not asked (it neither grows nor is flushed).
        let routed = route(&alarm("db", None), canaries, || panic!("asked"));
        assert_eq!(
            routed,
            Routed {
                act_on: vec![],
                recovery: false,
                older_than_run: 0,
                duplicate: false
            }
        );
    }

    #[test]
    fn a_recovery_is_routed_nowhere() {
        let web = rules("web");
        let Incoming::Alarm(mut a) = alarm("web", None) else {
            unreachable!()
        };
        a.recovery_time = Some(1);
        let routed = route(&Incoming::Alarm(a), [(0, &web, None)], || panic!("asked"));
        assert!(routed.recovery && routed.act_on.is_empty());
    }

    fn request(action: CommandAction, started_at: Option<DateTime<Utc>>) -> CommandRequest {
        CommandRequest {
            id: "1".into(),
            action,
            full: false,
            reason: None,
            requested_at: None,
            requested_by: None,
            alarm: Some(ForwardedAlarm {
                source: "SkyWalking".into(),
                rule: "latency".into(),
                entity: "web".into(),
                message: "p99 > 1s".into(),
                started_at,
            }),
        }
    }

    /// The leader applies the same age rule to an alarm a standby forwarded as to one it
    /// received itself, implausible start times included.
    #[test]
    fn forwarded_alarms_follow_the_same_rules() {
        let run = Some(t(100));
        let older = forwarded(&request(CommandAction::Alarm, Some(t(0))), run).unwrap();
        assert_eq!(older.verdict, Verdict::OlderThanRun);
        assert!(older.reason("latency").contains("before this run"));
        for started in [
            Some(t(100)),
            Some(t(200)),
            None,
            Utc.timestamp_opt(0, 0).single(),
        ] {
            let d = forwarded(&request(CommandAction::Alarm, started), run).unwrap();
            assert_eq!(d.verdict, Verdict::Trigger, "{started:?}");
        }
        assert_eq!(
            forwarded(&request(CommandAction::Alarm, Some(t(0))), None)
                .unwrap()
                .verdict,
            Verdict::Trigger,
            "unknown run start: cannot be shown to be older"
        );
        assert_eq!(
            forwarded(&request(CommandAction::Abort, Some(t(0))), run),
            None
        );
    }
}
