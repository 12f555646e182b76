//! The daemon side of the HTTP API: canary handles, commands, alarm intake.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::oneshot;

use crate::alarm::{Deduper, parse_payload};
use crate::canary::Command;
use crate::canary::driver::{CanaryHandle, Msg};
use crate::server::{AlarmSource, CanarySummary, Control, ControlError, Metrics};

/// Canaries the daemon drives, keyed by namespace/name.
pub struct DaemonControl {
    canaries: RwLock<BTreeMap<(String, String), CanaryHandle>>,
    /// Why commands are refused now (a standby replica is not the leader).
    standby: RwLock<Option<String>>,
    ready: AtomicBool,
    dedupe: Mutex<Deduper>,
    metrics: Metrics,
}

impl DaemonControl {
    /// Wraps the running canary tasks.
    pub fn new(handles: Vec<CanaryHandle>, metrics: Metrics) -> Self {
        DaemonControl {
            canaries: RwLock::new(
                handles
                    .into_iter()
                    .map(|h| ((h.namespace.clone(), h.name.clone()), h))
                    .collect(),
            ),
            standby: RwLock::new(None),
            ready: AtomicBool::new(false),
            dedupe: Mutex::new(Deduper::new(4096)),
            metrics,
        }
    }

    /// Marks the daemon ready (sources loaded, tasks started).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Stops every running canary task and waits until each has ended (its state saved).
    pub async fn stop_tasks(&self) {
        for h in self.replace_handles(Vec::new()) {
            h.stop().await;
        }
    }

    /// The running canary tasks.
    pub fn handles(&self) -> Vec<CanaryHandle> {
        self.canaries
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Replaces the set of running tasks (cluster mode: after a source change or a leadership
    /// change); returns the previous handles so the caller can stop them.
    pub fn replace_handles(&self, handles: Vec<CanaryHandle>) -> Vec<CanaryHandle> {
        let new: BTreeMap<_, _> = handles
            .into_iter()
            .map(|h| ((h.namespace.clone(), h.name.clone()), h))
            .collect();
        match self.canaries.write() {
            Ok(mut m) => std::mem::replace(&mut *m, new).into_values().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Commands are refused with this reason while set (not the leader).
    pub fn set_standby(&self, reason: Option<String>) {
        if let Ok(mut s) = self.standby.write() {
            *s = reason;
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<CanaryHandle> {
        self.canaries
            .read()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn summary(h: &CanaryHandle) -> CanarySummary {
        CanarySummary {
            namespace: h.namespace.clone(),
            name: h.name.clone(),
            steps: h.steps,
            status: h.status.borrow().clone(),
        }
    }

    /// Routes a SkyWalking webhook body to every canary whose `rollbackOn` matches. The answer
    /// comes once every matched canary has handled the alarm (its rollback written), so the
    /// sender knows the rollback happened.
    fn take_skywalking(
        &self,
        body: &[u8],
    ) -> Result<
        (
            serde_json::Value,
            Vec<oneshot::Receiver<crate::canary::CanaryStatus>>,
        ),
        ControlError,
    > {
        let alarms = parse_payload(body).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let received = std::time::Instant::now();
        self.metrics
            .alarms_received(AlarmSource::Skywalking, alarms.len() as u64);
        let mut matched = Vec::new();
        let mut handled = Vec::new();
        let (mut duplicates, mut recoveries, mut stale) = (0, 0, 0);
        for a in &alarms {
            if a.is_recovery() {
                recoveries += 1;
                continue;
            }
            let first = self
                .dedupe
                .lock()
                .map(|mut d| d.first_time(a))
                .unwrap_or(true);
            if !first {
                duplicates += 1;
                continue;
            }
            for h in self.handles() {
                if !h.alarms.matches(a) {
                    continue;
                }
                // Alarms older than this canary's run are about an earlier release.
                let started = h.status.borrow().started_at;
                if let (Some(run), Some(at)) = (started, a.started())
                    && at < run
                {
                    stale += 1;
                    continue;
                }
                let (done, wait) = oneshot::channel();
                handled.push(wait);
                let _ = h.tx.send(Msg::Alarm {
                    done: Some(done),
                    rule: a.rule_name.clone(),
                    entity: a.name.clone(),
                    message: a.alarm_message.clone().unwrap_or_default(),
                    received,
                });
                matched.push(format!("{}/{}", h.namespace, h.name));
            }
        }
        let summary = json!({
            "received": alarms.len(),
            "matched": matched,
            "duplicates": duplicates,
            "recoveries": recoveries,
            "olderThanRun": stale,
        });
        Ok((summary, handled))
    }
}

impl Control for DaemonControl {
    fn canaries(&self) -> Vec<CanarySummary> {
        self.handles().iter().map(Self::summary).collect()
    }

    fn canary(&self, namespace: &str, name: &str) -> Option<CanarySummary> {
        self.get(namespace, name).as_ref().map(Self::summary)
    }

    fn command(
        &self,
        namespace: &str,
        name: &str,
        cmd: Command,
    ) -> BoxFuture<'static, Result<CanarySummary, ControlError>> {
        let standby = self.standby.read().ok().and_then(|s| s.clone());
        let handle = self.get(namespace, name);
        Box::pin(async move {
            if let Some(why) = standby {
                return Err(ControlError::Unavailable(why));
            }
            let h = handle.ok_or(ControlError::NotFound)?;
            let (tx, rx) = oneshot::channel();
            h.tx.send(Msg::Command(cmd, tx))
                .map_err(|_| ControlError::Unavailable("the canary task has stopped".into()))?;
            let status = rx
                .await
                .map_err(|_| ControlError::Unavailable("the canary task has stopped".into()))?
                .map_err(ControlError::Rejected)?;
            Ok(CanarySummary {
                namespace: h.namespace.clone(),
                name: h.name.clone(),
                steps: h.steps,
                status,
            })
        })
    }

    fn scheduled_analyses(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// No scheduled analyses exist in this version: every name is unknown.
    fn run_scheduled(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> BoxFuture<'static, Result<serde_json::Value, ControlError>> {
        Box::pin(async move { Err(ControlError::NotFound) })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn alarm_webhook(
        &self,
        source: AlarmSource,
        body: Bytes,
    ) -> BoxFuture<'static, Result<serde_json::Value, ControlError>> {
        let taken = match source {
            AlarmSource::Skywalking => self.take_skywalking(&body),
            AlarmSource::Alertmanager => Err(ControlError::Invalid(
                "Alertmanager payloads are not supported by this version; use /webhooks/skywalking"
                    .into(),
            )),
        };
        Box::pin(async move {
            let (summary, handled) = taken?;
            for wait in handled {
                // Bounded: a stuck routing write must not hold the sender (OAP times out at 12 s).
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
            }
            Ok(summary)
        })
    }
}

/// Shared handle type used by the server.
pub type SharedControl = Arc<DaemonControl>;
