//! `spec.notifications` of a Canary or ScheduledAnalysis: which lifecycle events go to which
//! of the daemon's named sinks. Only names live in the resource; URLs and secrets are in the
//! daemon's notifications file (`skycanary run --notifications`), never in a CR. The types are
//! `skycanary-api`'s (re-exported here); their validation is here, as it reports through the
//! loader's errors.

pub use skycanary_api::resources::notifications::*;

use super::error::{ConfigError, Origin};
use super::yaml::{child_path, index_path};

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
