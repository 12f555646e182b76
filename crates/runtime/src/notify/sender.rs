//! Delivery (I/O): one bounded queue and one worker per sink. [`Notifier::notify`] only
//! enqueues (a short lock, no await), so the canary task that calls it — and the rollback it
//! is writing — never waits for a receiver. A full queue drops its oldest notification and
//! counts it; each notification is tried up to `maxAttempts` times with doubling backoff and a
//! per-attempt timeout, the same bytes, signature and id on every attempt.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::Instrument;

use super::config::{NotifyConfig, SinkConfig, SinkKind};
use super::payload::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, delivery_id, sign,
    slack_message, webhook_body,
};
use super::{Notification, Subscription};
use crate::backoff::Backoff;

/// Label of notifications for a sink nobody defined (a CR naming an unknown sink in cluster
/// mode), so CR content cannot mint metric series.
pub const UNKNOWN_SINK: &str = "(unknown)";

/// Where delivery outcomes are counted (the server's `Metrics` implements it).
pub trait NotifyMetrics: Send + Sync {
    /// A notification reached `sink` (2xx).
    fn notification_sent(&self, sink: &str);
    /// A notification for `sink` was given up (attempts exhausted, refused, or unknown sink).
    fn notification_failed(&self, sink: &str);
    /// A notification for `sink` was dropped from its full queue, unsent.
    fn notification_dropped(&self, sink: &str);
}

/// Delivery bounds shared by every sink.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

struct SinkQueue {
    config: SinkConfig,
    capacity: usize,
    queue: Mutex<VecDeque<Notification>>,
    wake: Notify,
    /// 1 while the worker holds a notification (attempting or waiting to retry).
    in_flight: AtomicUsize,
}

impl SinkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Notification>> {
        // Entries are pushed and popped whole: a panic elsewhere leaves the queue usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends; returns true when the oldest had to make room.
    fn push(&self, n: Notification) -> bool {
        let mut q = self.lock();
        let dropped = if q.len() >= self.capacity {
            q.pop_front();
            true
        } else {
            false
        };
        q.push_back(n);
        drop(q);
        self.wake.notify_one();
        dropped
    }
}

struct Inner {
    sinks: Vec<Arc<SinkQueue>>,
    defaults: Vec<Subscription>,
    metrics: Arc<dyn NotifyMetrics>,
}

/// Handle the drivers enqueue through; clones share the queues. The default sends nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sinks", &self.inner.as_ref().map_or(0, |i| i.sinks.len()))
            .finish()
    }
}

impl Notifier {
    /// Sends nothing (no notifications file).
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// Starts one worker per sink of `config` on the current Tokio runtime.
    pub fn start(config: &NotifyConfig, metrics: Arc<dyn NotifyMetrics>) -> Self {
        let http = crate::schedule::driver::ScheduleTaskContext::webhook_client();
        let policy = RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff.max(config.initial_backoff),
        };
        let sinks: Vec<Arc<SinkQueue>> = config
            .sinks
            .iter()
            .map(|s| {
                Arc::new(SinkQueue {
                    config: s.clone(),
                    capacity: config.queue_size.max(1),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect();
        for q in &sinks {
            let span = tracing::info_span!(parent: None, "notify", sink = %q.config.name);
            tokio::spawn(worker(q.clone(), http.clone(), policy, metrics.clone()).instrument(span));
        }
        Notifier {
            inner: Some(Arc::new(Inner {
                sinks,
                defaults: config.defaults.clone(),
                metrics,
            })),
        }
    }

    /// Queues `n` for every subscription of `subs` (the object's `spec.notifications`, or
    /// the daemon's defaults when None) that wants its event. Never waits.
    pub fn notify(&self, subs: Option<&[Subscription]>, n: &Notification) {
        let Some(inner) = &self.inner else {
            return;
        };
        let subs = subs.unwrap_or(&inner.defaults);
        for s in subs.iter().filter(|s| s.wants(n.event)) {
            match inner.sinks.iter().find(|q| q.config.name == s.sink) {
                Some(q) => {
                    if q.push(n.clone()) {
                        tracing::warn!(sink = %s.sink, "notification queue full: dropped the oldest");
                        inner.metrics.notification_dropped(&s.sink);
                    }
                }
                None => {
                    tracing::warn!(sink = %s.sink, id = %n.id, "notification for an undefined sink not sent");
                    inner.metrics.notification_failed(UNKNOWN_SINK);
                }
            }
        }
    }

    /// Notifications queued or being attempted, over all sinks.
    pub fn pending(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| {
            i.sinks
                .iter()
                .map(|q| q.lock().len() + q.in_flight.load(Ordering::SeqCst))
                .sum()
        })
    }
}

async fn worker(
    q: Arc<SinkQueue>,
    http: reqwest::Client,
    policy: RetryPolicy,
    metrics: Arc<dyn NotifyMetrics>,
) {
    loop {
        let n = loop {
            // Marked in flight under the queue's lock, so `pending` never misses it.
            let popped = {
                let mut guard = q.lock();
                let n = guard.pop_front();
                if n.is_some() {
                    q.in_flight.store(1, Ordering::SeqCst);
                }
                n
            };
            match popped {
                Some(n) => break n,
                // A push in between left a permit: this returns at once.
                None => q.wake.notified().await,
            }
        };
        match deliver(&q.config, &http, policy, &n).await {
            Ok(attempts) => {
                tracing::info!(id = %n.id, event = %n.event, attempts, "notification sent");
                metrics.notification_sent(&q.config.name);
            }
            Err((attempts, why)) => {
                tracing::warn!(id = %n.id, event = %n.event, attempts, "notification not sent: {why}");
                metrics.notification_failed(&q.config.name);
            }
        }
        q.in_flight.store(0, Ordering::SeqCst);
    }
}

/// Whether an HTTP status is worth another attempt (timeouts, throttling, server errors).
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || status >= 500
}

/// Attempts until a 2xx, a status not worth retrying, or the attempts run out. Ok(attempts),
/// or Err((attempts, why)).
async fn deliver(
    sink: &SinkConfig,
    http: &reqwest::Client,
    policy: RetryPolicy,
    n: &Notification,
) -> Result<u32, (u32, String)> {
    let body = match sink.kind {
        SinkKind::Webhook => webhook_body(n),
        SinkKind::Slack => serde_json::to_vec(&slack_message(n)).unwrap_or_default(),
    };
    let signature = sink.secret.as_deref().map(|s| sign(s, &body));
    let delivery = delivery_id(&n.id);
    let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
    let mut why = String::new();
    for attempt in 1..=policy.max_attempts {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut req = http
            .post(sink.url.clone())
            .timeout(sink.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("skycanary/", env!("CARGO_PKG_VERSION")),
            )
            .header(EVENT_HEADER, n.event.as_str())
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(DELIVERY_HEADER, delivery.as_str())
            .body(body.clone());
        if let Some(sig) = &signature {
            req = req.header(SIGNATURE_HEADER, sig.as_str());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(attempt),
            Ok(r) => {
                let status = r.status().as_u16();
                why = format!("HTTP {status}");
                if !retryable_status(status) {
                    return Err((attempt, why));
                }
            }
            // No URL in the message: a Slack URL is a credential.
            Err(e) => why = e.without_url().to_string(),
        }
        if attempt < policy.max_attempts {
            let delay = backoff.next_delay();
            tracing::debug!(id = %n.id, attempt, "notification attempt failed ({why}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }
    Err((policy.max_attempts, why))
}
