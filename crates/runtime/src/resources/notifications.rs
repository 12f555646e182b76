//! `spec.notifications` of a Canary or ScheduledAnalysis: which lifecycle events go to which
//! of the daemon's named sinks. Only names live in the resource; URLs and secrets are in the
//! daemon's notifications file (`skycanary run --notifications`), never in a CR.

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, Origin};
use super::yaml::{child_path, index_path};

/// Most subscriptions one object may list.
pub const MAX_SUBSCRIPTIONS: usize = 8;
/// Longest sink name (a DNS label).
pub const MAX_SINK_NAME: usize = 63;

/// A lifecycle event a notification reports.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    /// Canary: a run started for a revision.
    Started,
    /// Canary: a new step was reached.
    StepReached,
    /// Canary: paused (timed pause step, Inconclusive analysis, analysis error, manual, drift).
    Paused,
    /// Canary: a pause step without duration waits for `promote`/`resume`.
    WaitingForPromotion,
    /// Canary: aborted, the rollback written; carries the evidence.
    Aborted,
    /// Canary: all steps done.
    Promoted,
    /// Canary: rolled back after promotion (a scheduled analysis' verdict), the write landed.
    RolledBack,
    /// Canary or ScheduledAnalysis: the spec was refused; not driven until fixed.
    InvalidSpec,
    /// ScheduledAnalysis: a run ended Successful.
    RunSucceeded,
    /// ScheduledAnalysis: a run ended Failed.
    RunFailed,
    /// ScheduledAnalysis: a run ended in Error.
    RunError,
    /// ScheduledAnalysis: a run ended Inconclusive.
    RunInconclusive,
}

impl NotifyEvent {
    /// Every event, in declaration order.
    pub const ALL: [NotifyEvent; 12] = [
        NotifyEvent::Started,
        NotifyEvent::StepReached,
        NotifyEvent::Paused,
        NotifyEvent::WaitingForPromotion,
        NotifyEvent::Aborted,
        NotifyEvent::Promoted,
        NotifyEvent::RolledBack,
        NotifyEvent::InvalidSpec,
        NotifyEvent::RunSucceeded,
        NotifyEvent::RunFailed,
        NotifyEvent::RunError,
        NotifyEvent::RunInconclusive,
    ];

    /// The wire name (`stepReached`), as in subscriptions and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::StepReached => "stepReached",
            NotifyEvent::Paused => "paused",
            NotifyEvent::WaitingForPromotion => "waitingForPromotion",
            NotifyEvent::Aborted => "aborted",
            NotifyEvent::Promoted => "promoted",
            NotifyEvent::RolledBack => "rolledBack",
            NotifyEvent::InvalidSpec => "invalidSpec",
            NotifyEvent::RunSucceeded => "runSucceeded",
            NotifyEvent::RunFailed => "runFailed",
            NotifyEvent::RunError => "runError",
            NotifyEvent::RunInconclusive => "runInconclusive",
        }
    }

    /// Whether a Canary produces it.
    pub fn for_canary(self) -> bool {
        !matches!(
            self,
            NotifyEvent::RunSucceeded
                | NotifyEvent::RunFailed
                | NotifyEvent::RunError
                | NotifyEvent::RunInconclusive
        )
    }

    /// Whether a ScheduledAnalysis produces it.
    pub fn for_scheduled(self) -> bool {
        !self.for_canary() || self == NotifyEvent::InvalidSpec
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One subscription: the events of this object that go to a sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// A sink named in the daemon's notifications file.
    #[schemars(length(min = 1, max = 63))]
    pub sink: String,
    /// The events sent; empty or absent: every event of the object's kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 12))]
    pub events: Vec<NotifyEvent>,
}

impl Subscription {
    /// Whether `event` goes to this sink.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

/// Which kind of object a subscription list belongs to (the events it may name differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberKind {
    /// A Canary.
    Canary,
    /// A ScheduledAnalysis.
    ScheduledAnalysis,
    /// The daemon's defaults, which serve both kinds.
    Any,
}

impl SubscriberKind {
    fn allows(self, e: NotifyEvent) -> bool {
        match self {
            SubscriberKind::Canary => e.for_canary(),
            SubscriberKind::ScheduledAnalysis => e.for_scheduled(),
            SubscriberKind::Any => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SubscriberKind::Canary => "Canary",
            SubscriberKind::ScheduledAnalysis => "ScheduledAnalysis",
            SubscriberKind::Any => "subscriber",
        }
    }
}

/// A sink name: a DNS label (lowercase letters, digits, `-`), at most 63 characters.
pub fn is_sink_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SINK_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks a subscription list at `path` (`spec.notifications`): bounded count, sink names
/// well formed and not repeated, events of the object's kind and not repeated.
pub fn check_subscriptions(
    subs: &[Subscription],
    kind: SubscriberKind,
    path: &str,
    o: &Origin,
    errs: &mut Vec<ConfigError>,
) {
    if subs.len() > MAX_SUBSCRIPTIONS {
        errs.push(o.error(
            path,
            format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions, got {}",
                subs.len()
            ),
        ));
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, s) in subs.iter().enumerate() {
        let p = index_path(path, i);
        if !is_sink_name(&s.sink) {
            errs.push(o.error(
                &child_path(&p, "sink"),
                format!(
                    "{:?} is not a sink name (lowercase letters, digits and '-', at most {MAX_SINK_NAME})",
                    clip(&s.sink)
                ),
            ));
        } else if seen.contains(&s.sink.as_str()) {
            errs.push(o.error(
                &child_path(&p, "sink"),
                format!("sink {:?} is subscribed twice", s.sink),
            ));
        } else {
            seen.push(&s.sink);
        }
        let mut events: Vec<NotifyEvent> = Vec::new();
        for (j, e) in s.events.iter().enumerate() {
            let ep = index_path(&child_path(&p, "events"), j);
            if !kind.allows(*e) {
                errs.push(o.error(&ep, format!("a {} never sends {e}", kind.name())));
            } else if events.contains(e) {
                errs.push(o.error(&ep, format!("{e} is listed twice")));
            } else {
                events.push(*e);
            }
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}
