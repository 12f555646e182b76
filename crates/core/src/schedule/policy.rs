//! Scheduling decisions as plain functions over data (pure): which fire time is due, what the
//! concurrency policy allows, which actions a result triggers, history trimming, names, the
//! webhook body and its retry policy. The driver only performs what these decide.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::model::{RunTrigger, ScheduledAnalysisStatus, ScheduledRun};
use crate::analysis::{Phase, RunState};
use crate::canary::machine::evidence;
use crate::canary::model::AbortStatus;
use crate::resources::cron::CronSchedule;
use crate::resources::scheduled::{ActionsSpec, ConcurrencyPolicy, ScheduledAnalysisSpec};

/// Missed fire times counted at most (CronJob stops counting at 100 too).
pub const MISSED_COUNT_CAP: u32 = 100;

/// What the schedule wants now.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// Nothing due; wake at `next` (`None`: suspended, or the schedule has no future time).
    Wait {
        /// Next fire time.
        next: Option<DateTime<Utc>>,
    },
    /// Run the fire time `scheduled`, the latest one not dealt with; the `missed` earlier
    /// ones since the last are dropped (CronJob runs only the latest missed time).
    Run {
        /// The fire time.
        scheduled: DateTime<Utc>,
        /// Earlier fire times dropped (at most `MISSED_COUNT_CAP + 1`).
        missed: u32,
        /// The fire time after now.
        next: Option<DateTime<Utc>>,
    },
    /// The latest fire time is older than `startingDeadlineSeconds`: nothing runs, it is
    /// recorded as missed.
    TooLate {
        /// The fire time.
        scheduled: DateTime<Utc>,
        /// Earlier fire times dropped too.
        missed: u32,
        /// The fire time after now.
        next: Option<DateTime<Utc>>,
    },
}

/// Decides what is due at `now`. Fire times are counted after `lastScheduleTime` (or, never
/// scheduled, after `trackingSince`, the first time the daemon saw the object): a fresh object
/// never runs for fire times before it existed, and a restarted daemon runs the latest fire
/// time it missed (within the deadline) exactly once.
pub fn due(
    schedule: &CronSchedule,
    spec: &ScheduledAnalysisSpec,
    status: &ScheduledAnalysisStatus,
    now: DateTime<Utc>,
) -> Due {
    if spec.suspend {
        return Due::Wait { next: None };
    }
    let next = schedule.next_after(now);
    let cursor = status
        .last_schedule_time
        .or(status.tracking_since)
        .unwrap_or(now);
    let Some(latest) = schedule.latest_between(cursor, now) else {
        return Due::Wait { next };
    };
    let missed = schedule
        .count_between(cursor, latest, MISSED_COUNT_CAP + 1)
        .saturating_sub(1);
    let deadline = spec
        .starting_deadline_seconds
        .filter(|d| *d > 0)
        .map(TimeDelta::seconds);
    match deadline {
        Some(d) if latest + d < now => Due::TooLate {
            scheduled: latest,
            missed,
            next,
        },
        _ => Due::Run {
            scheduled: latest,
            missed,
            next,
        },
    }
}

/// What the concurrency policy allows for a new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start it.
    Start,
    /// Stop these runs, then start it (Replace).
    Replace(Vec<String>),
    /// Do not start it (Forbid while these run).
    Skip(Vec<String>),
}

/// Forbid skips while a run is active, Replace stops the active runs, Allow starts anyway.
pub fn admit(policy: ConcurrencyPolicy, active: &[ScheduledRun]) -> Admission {
    let running: Vec<String> = active.iter().map(|r| r.name.clone()).collect();
    if running.is_empty() {
        return Admission::Start;
    }
    match policy {
        ConcurrencyPolicy::Forbid => Admission::Skip(running),
        ConcurrencyPolicy::Replace => Admission::Replace(running),
        ConcurrencyPolicy::Allow => Admission::Start,
    }
}

/// Unix seconds, for run names.
fn stamp(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// A run's name: `<name>-<unix seconds of the fire time>` for scheduled runs (so a fire time
/// maps to one name, and a run already recorded is recognised after a restart), and
/// `<name>-manual-<unix seconds>` (then `-2`, `-3`… when taken) for runs started by hand.
pub fn run_name(
    name: &str,
    trigger: RunTrigger,
    at: DateTime<Utc>,
    status: &ScheduledAnalysisStatus,
) -> String {
    let base = match trigger {
        RunTrigger::Schedule => format!("{name}-{}", stamp(at)),
        RunTrigger::Manual => format!("{name}-manual-{}", stamp(at)),
    };
    if trigger == RunTrigger::Schedule || !is_recorded(status, &base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !is_recorded(status, n))
        .unwrap_or(base)
}

/// A run of that name is active or in the history.
pub fn is_recorded(status: &ScheduledAnalysisStatus, run: &str) -> bool {
    status
        .active
        .iter()
        .chain(status.history.iter())
        .any(|r| r.name == run)
}

/// The actions for a finished run: by its phase, and never for a run we stopped ourselves
/// (replaced, or stopped by hand) nor for a Successful one.
pub fn actions_for<'a>(spec: &'a ScheduledAnalysisSpec, run: &RunState) -> Option<&'a ActionsSpec> {
    if run.terminate_reason.is_some() {
        return None;
    }
    match run.phase {
        Phase::Failed => spec.on_failure.as_ref(),
        Phase::Inconclusive => spec.on_inconclusive.as_ref(),
        Phase::Error => spec.on_error.as_ref(),
        _ => None,
    }
}

/// Moves run `name` from `active` to the front of `history` with its final state, records
/// `lastSuccessfulTime`, and trims the history. Returns the finished run; `None` when no such
/// run is active (a late or repeated report).
pub fn finish(
    status: &mut ScheduledAnalysisStatus,
    name: &str,
    state: RunState,
    limits: (u32, u32),
    now: DateTime<Utc>,
) -> Option<ScheduledRun> {
    let idx = status.active.iter().position(|r| r.name == name)?;
    let mut run = status.active.remove(idx);
    run.status = state;
    if run.status.completed_at.is_none() {
        run.status.completed_at = Some(now);
    }
    if run.status.phase == Phase::Successful {
        let at = run.status.completed_at.unwrap_or(now);
        status.last_successful_time = Some(status.last_successful_time.map_or(at, |t| t.max(at)));
    }
    status.history.insert(0, run.clone());
    trim_history(&mut status.history, limits.0, limits.1);
    Some(run)
}

/// Keeps the newest `successful` Successful runs and the newest `failed` other runs (history
/// is newest first).
pub fn trim_history(history: &mut Vec<ScheduledRun>, successful: u32, failed: u32) {
    let (mut ok, mut bad) = (0u32, 0u32);
    history.retain(|r| {
        if r.status.phase == Phase::Successful {
            ok += 1;
            ok <= successful
        } else {
            bad += 1;
            bad <= failed
        }
    });
}

/// How the reason of a scheduled rollback begins (`ScheduledAnalysis ns/name run … ended …`).
pub const ROLLBACK_REASON_PREFIX: &str = "ScheduledAnalysis ";

/// Why the canary is rolled back: the scheduled analysis, the run, and the failing metric's
/// value and condition.
pub fn rollback_abort(
    namespace: &str,
    name: &str,
    run: &ScheduledRun,
    at: DateTime<Utc>,
) -> AbortStatus {
    let ev = evidence(&run.status);
    let mut reason = format!(
        "{ROLLBACK_REASON_PREFIX}{namespace}/{name} run {} ended {}",
        run.name, run.status.phase
    );
    if let Some(m) = &ev.metric {
        reason.push_str(&format!(": metric {m}"));
        if let Some(v) = &ev.value {
            reason.push_str(&format!(" value {v}"));
        }
        if let Some(c) = &ev.condition {
            reason.push_str(&format!(" condition {c}"));
        }
        if let Some(t) = ev.threshold_text() {
            reason.push_str(&format!(" threshold {t}"));
        }
    } else if let Some(msg) = ev.message.as_ref().or(run.status.message.as_ref()) {
        reason.push_str(&format!(": {msg}"));
    }
    AbortStatus {
        not_ready: None,
        reason,
        metric: ev.metric,
        value: ev.value,
        condition: ev.condition,
        alarm: None,
        at,
    }
}

/// The JSON a webhook receives: who, which run, and its result in Argo's shape.
pub fn webhook_body(namespace: &str, name: &str, run: &ScheduledRun) -> Value {
    json!({
        "kind": "ScheduledAnalysisRun",
        "scheduledAnalysis": {"namespace": namespace, "name": name},
        "run": run.name,
        "trigger": run.trigger,
        "scheduledTime": run.scheduled_time,
        "phase": run.status.phase,
        "message": run.status.message,
        "startedAt": run.status.started_at,
        "finishedAt": run.status.completed_at,
        "metricResults": run.status.metric_results,
    })
}

/// Webhook attempts at most.
pub const WEBHOOK_ATTEMPTS: u32 = 4;

/// The result of one webhook attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer (connection refused, timeout, TLS...).
    Network(String),
}

/// After attempt `attempt` (1-based) gave `result`: `None` to stop (delivered, refused for
/// good, or out of attempts), else the delay before the next attempt (1 s, 2 s, 4 s…).
/// Retried: network errors, 5xx, 408 and 429.
pub fn webhook_retry(attempt: u32, result: &Delivery) -> Option<Duration> {
    let retryable = match result {
        Delivery::Network(_) => true,
        Delivery::Status(s) => *s >= 500 || *s == 408 || *s == 429,
    };
    (retryable && attempt < WEBHOOK_ATTEMPTS)
        .then(|| Duration::from_secs(1u64 << (attempt.saturating_sub(1)).min(6)))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
