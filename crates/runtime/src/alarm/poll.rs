//! `getAlarm` polling: the fallback when OAP's webhook cannot reach the daemon. Every interval
//! the OAP is asked for the alarms since the earliest armed canary's run start (later: since
//! the previous poll, with an overlap for alarms persisted late), and each alarm goes through
//! the same matching and de-duplication as a webhook alarm. OAP errors never roll anything
//! back; they are logged and the next interval tries again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::skywalking::{Alarm, name_from_id};
use crate::provider::skywalking::{AlarmRecord, SkyWalkingClient};
use crate::runner::Clock;

/// Where polled alarms go (the daemon).
pub trait AlarmSink: Send + Sync {
    /// The earliest run start among the canaries a SkyWalking alarm could roll back now;
    /// `None` when there is none (or this replica is not the leader): nothing to poll for.
    fn poll_since(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>>;
    /// Handles polled alarms like webhook alarms; resolves once matched canaries have
    /// written their rollback. The value summarises what happened.
    fn deliver_polled(&self, alarms: Vec<Alarm>) -> BoxFuture<'static, serde_json::Value>;
}

/// Polling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    /// Time between polls.
    pub interval: Duration,
    /// How far each window reaches back before the end of the previous one.
    pub overlap: chrono::Duration,
    /// Records per page.
    pub page_size: u32,
    /// Pages per poll at most (bounded work if an OAP holds a flood of alarms).
    pub max_pages: u32,
}

impl PollConfig {
    /// Defaults for `interval`: 5 minutes of overlap, pages of 100, at most 20 pages.
    pub fn new(interval: Duration) -> Self {
        PollConfig {
            interval,
            overlap: chrono::Duration::minutes(5),
            page_size: 100,
            max_pages: 20,
        }
    }
}

/// The `[from, to]` to ask for now: from the earliest armed run start, or from the end of
/// the previous successful poll minus `overlap` when that is later. `None`: nothing to poll.
pub fn plan_window(
    since: Option<DateTime<Utc>>,
    last_end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    overlap: chrono::Duration,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let since = since?;
    let from = match last_end {
        Some(end) => since.max(end - overlap),
        None => since,
    };
    Some((from.min(now), now))
}

/// A `getAlarm` record as a matchable alarm. `getAlarm` has no rule name (a `ruleName`
/// criterion never matches a polled alarm); before 10.2 it has no entity name either, which
/// is rebuilt from the entity id for service, instance and endpoint scopes.
pub fn alarm_from_record(r: AlarmRecord) -> Alarm {
    let name = r.name.filter(|n| !n.is_empty()).or_else(|| {
        r.scope
            .as_deref()
            .and_then(|scope| name_from_id(scope, &r.id))
    });
    Alarm {
        rule_name: None,
        name,
        scope: r.scope,
        scope_id: None,
        id0: Some(r.id).filter(|s| !s.is_empty()),
        message: Some(r.message),
        tags: r.tags,
        start_time: Some(r.start_time),
        recovery_time: r.recovery_time,
        ..Alarm::default()
    }
}

/// Polls `client` every `config.interval` until `stop` resolves.
pub struct Poller {
    client: Arc<SkyWalkingClient>,
    sink: Arc<dyn AlarmSink>,
    clock: Arc<dyn Clock>,
    config: PollConfig,
    last_end: Option<DateTime<Utc>>,
}

impl Poller {
    /// A poller that has not polled yet.
    pub fn new(
        client: Arc<SkyWalkingClient>,
        sink: Arc<dyn AlarmSink>,
        clock: Arc<dyn Clock>,
        config: PollConfig,
    ) -> Self {
        Poller {
            client,
            sink,
            clock,
            config,
            last_end: None,
        }
    }

    /// Polls at once, then every interval, until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(stop);
        loop {
            self.poll_once().await;
            let next = self.clock.now()
                + chrono::Duration::from_std(self.config.interval)
                    .unwrap_or(chrono::Duration::seconds(60));
            let clock = self.clock.clone();
            tokio::select! {
                () = &mut stop => return,
                () = clock.sleep_until(next) => {}
            }
        }
    }

    /// One poll. Returns the delivery summary, or `None` when nothing was polled or the OAP
    /// failed (logged; the window is kept so the next poll covers it).
    pub async fn poll_once(&mut self) -> Option<serde_json::Value> {
        let now = self.clock.now();
        let since = self.sink.poll_since(now);
        let (from, to) = plan_window(since, self.last_end, now, self.config.overlap)?;
        let page = match self
            .client
            .alarms(from, to, self.config.page_size, self.config.max_pages)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(url = %self.client.url(), error = %e,
                    "alarm poll failed; retrying at the next interval");
                return None;
            }
        };
        if page.truncated {
            tracing::warn!(url = %self.client.url(), start = %page.window.0, end = %page.window.1,
                records = page.records.len(),
                "alarm poll stopped at its page bound; older alarms of the window were not read");
        }
        let alarms: Vec<Alarm> = page.records.into_iter().map(alarm_from_record).collect();
        let count = alarms.len();
        let summary = self.sink.deliver_polled(alarms).await;
        self.last_end = Some(to);
        tracing::debug!(start = %page.window.0, end = %page.window.1, count, %summary, "alarms polled");
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn first_window_starts_at_the_run() {
        let now = t("2024-07-01T12:10:00Z");
        assert_eq!(
            plan_window(
                Some(t("2024-07-01T12:00:00Z")),
                None,
                now,
                chrono::Duration::minutes(5)
            ),
            Some((t("2024-07-01T12:00:00Z"), now))
        );
        assert_eq!(
            plan_window(None, None, now, chrono::Duration::minutes(5)),
            None
        );
    }

    #[test]
    fn later_windows_overlap_the_previous_one() {
        let now = t("2024-07-01T13:00:00Z");
        let o = chrono::Duration::minutes(5);
        assert_eq!(
            plan_window(
                Some(t("2024-07-01T12:00:00Z")),
                Some(t("2024-07-01T12:59:30Z")),
                now,
                o
            ),
            Some((t("2024-07-01T12:54:30Z"), now))
        );
        assert_eq!(
            plan_window(
                Some(t("2024-07-01T12:58:00Z")),
                Some(t("2024-07-01T12:59:30Z")),
                now,
                o
            ),
            Some((t("2024-07-01T12:58:00Z"), now)),
            "never before the earliest run start"
        );
        assert_eq!(
            plan_window(Some(t("2024-07-01T14:00:00Z")), None, now, o),
            Some((now, now)),
            "a run start in the future (clock skew) is clamped"
        );
    }

    #[test]
    fn records_become_alarms_with_what_each_version_has() {
        let r = AlarmRecord {
            start_time: 1_719_835_380_000,
            scope: Some("Service".into()),
            id: "cmV2aWV3cy5ib29raW5mbw==.1".into(),
            name: None,
            message: "slow".into(),
            tags: vec![("level".into(), "WARNING".into())],
            recovery_time: None,
        };
        let a = alarm_from_record(r.clone());
        assert_eq!(
            a.name.as_deref(),
            Some("reviews.bookinfo"),
            "rebuilt from the id"
        );
        assert_eq!(a.rule_name, None);
        assert_eq!(a.scope_spellings(), vec!["Service", "SERVICE"]);
        assert_eq!(a.dedupe_keys().len(), 1);
        let named = alarm_from_record(AlarmRecord {
            name: Some("given".into()),
            recovery_time: Some(2),
            ..r.clone()
        });
        assert_eq!(named.name.as_deref(), Some("given"));
        assert!(named.is_recovery());
        let relation = alarm_from_record(AlarmRecord {
            scope: Some("ServiceRelation".into()),
            ..r
        });
        assert_eq!(relation.name, None);
        assert_eq!(relation.entity_label(), "cmV2aWV3cy5ib29raW5mbw==.1");
    }
}
