//! The task registry: the handles of the running canary and schedule tasks, keyed by
//! namespace/name, and what reaches them through it — the control API's commands and reads
//! (it implements [`crate::server::Control`]), the alarm intake, and on a standby the
//! forwarding of alarms to the leader.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::json;
use tokio::sync::oneshot;

use chrono::{DateTime, Utc};

use crate::alarm::poll::AlarmSink;
use crate::alarm::{Alarm, Batch, Deduper, Incoming, PatternCache, RollbackRules};
use crate::canary::driver::{AlarmMsg, CanaryHandle, CanaryTaskMsg};
use crate::canary::machine::alarm_armed;
use crate::canary::{
    AbortStatus, CanaryStatus, Command, CommandAction, CommandRequest, ForwardedAlarm,
};
use crate::schedule::driver::{CanaryRollback, RunNowError, ScheduleHandle};
use crate::server::{
    AlarmReply, AlarmSource, CanarySummary, CanaryWeights, Control, ControlError, Metrics,
};
use crate::state::kube_status::write_request;

/// A canary or schedule: (namespace, name).
pub type Key = (String, String);
type Waiter = oneshot::Receiver<crate::canary::CanaryStatus>;

/// Why a canary's answer to a matched alarm does not show its rollback written (`None` when it
/// does, or when the alarm rolled nothing back: the canary was not armed).
fn rollback_not_written(
    outcome: Result<
        Result<crate::canary::CanaryStatus, oneshot::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
) -> Option<String> {
    match outcome {
        Err(_) => Some("no answer from the canary task within 10 s".into()),
        Ok(Err(_)) => Some("the canary task stopped before it answered".into()),
        Ok(Ok(st)) => st
            .routing_write
            .filter(|w| w.routing.canary_weight == 0)
            .map(|w| {
                format!(
                    "rollback pending: {}",
                    w.error.as_deref().unwrap_or("write not acknowledged yet")
                )
            }),
    }
}

/// Each canary's `rollbackOn`, compiled once per (re)load.
fn compile_rules(handles: &[CanaryHandle]) -> BTreeMap<Key, Arc<RollbackRules>> {
    let mut cache = PatternCache::default();
    handles
        .iter()
        .map(|h| {
            let rules = RollbackRules::compile_cached(h.doc.spec.rollback_on.as_ref(), &mut cache);
            ((h.namespace.clone(), h.name.clone()), Arc::new(rules))
        })
        .collect()
}

/// What a standby replica needs to hand matching alarms to the leader: OAP and Alertmanager do
/// not retry a webhook, so an alarm that reaches a standby must not be lost.
pub struct Forwarder {
    /// Writes the requests (`status.command` of the Canary).
    pub client: kube::Client,
    /// This replica, named in `requestedBy`.
    pub identity: String,
    /// Every valid Canary with its compiled `rollbackOn`.
    pub targets: Vec<(Key, Arc<RollbackRules>)>,
}

impl Forwarder {
    /// Targets from the canaries a standby sees in its snapshot.
    pub fn new(
        client: kube::Client,
        identity: String,
        canaries: impl IntoIterator<
            Item = (String, String, Option<crate::resources::canary::RollbackOn>),
        >,
    ) -> Self {
        let mut cache = PatternCache::default();
        let targets = canaries
            .into_iter()
            .map(|(ns, name, rb)| {
                let rules = RollbackRules::compile_cached(rb.as_ref(), &mut cache);
                ((ns, name), Arc::new(rules))
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        Forwarder {
            client,
            identity,
            targets,
        }
    }
}

/// The daemon's running tasks, keyed by namespace/name: canaries (with their compiled
/// `rollbackOn`), scheduled analyses, and the refused canaries the API still lists. Reloads
/// swap its maps in one step; the HTTP API and the alarm intake reach the tasks through it.
pub struct TaskRegistry {
    /// Set on a standby in cluster mode: matching alarms become `status.command` requests.
    forwarder: RwLock<Option<Arc<Forwarder>>>,
    canaries: RwLock<BTreeMap<Key, CanaryHandle>>,
    rules: RwLock<BTreeMap<Key, Arc<RollbackRules>>>,
    schedules: RwLock<BTreeMap<Key, ScheduleHandle>>,
    /// Canaries refused by validation that no task drives, as their status says (phase
    /// Invalid): the API lists them so `skycanary status` shows why they do nothing.
    invalid: RwLock<BTreeMap<Key, CanarySummary>>,
    /// Why commands are refused now (a standby replica is not the leader).
    standby: RwLock<Option<String>>,
    ready: AtomicBool,
    dedupe: Mutex<Deduper>,
    metrics: Metrics,
}

impl TaskRegistry {
    /// Wraps the running canary tasks.
    pub fn new(handles: Vec<CanaryHandle>, metrics: Metrics) -> Self {
        TaskRegistry {
            forwarder: RwLock::new(None),
            rules: RwLock::new(compile_rules(&handles)),
            canaries: RwLock::new(
                handles
                    .into_iter()
                    .map(|h| ((h.namespace.clone(), h.name.clone()), h))
                    .collect(),
            ),
            schedules: RwLock::new(BTreeMap::new()),
            invalid: RwLock::new(BTreeMap::new()),
            standby: RwLock::new(None),
            ready: AtomicBool::new(false),
            dedupe: Mutex::new(Deduper::new(16_384)),
            metrics,
        }
    }

    /// Replaces the refused Canaries the API lists besides the driven ones (a driven canary
    /// of the same name wins).
    pub fn set_invalid(&self, items: Vec<CanarySummary>) {
        let map = items
            .into_iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s))
            .collect();
        if let Ok(mut m) = self.invalid.write() {
            *m = map;
        }
    }

    /// Marks the daemon ready (sources loaded, tasks started).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Stops every running schedule and canary task and waits until each has ended (its
    /// state saved). Schedules first: they may still be rolling a canary back.
    pub async fn stop_tasks(&self) {
        for h in self.replace_schedules(Vec::new()) {
            h.stop().await;
        }
        for h in self.replace_handles(Vec::new()) {
            h.stop().await;
        }
    }

    /// Replaces the set of running schedule tasks; returns the previous ones to stop.
    pub fn replace_schedules(&self, handles: Vec<ScheduleHandle>) -> Vec<ScheduleHandle> {
        let new: BTreeMap<_, _> = handles
            .into_iter()
            .map(|h| ((h.namespace.clone(), h.name.clone()), h))
            .collect();
        match self.schedules.write() {
            Ok(mut m) => std::mem::replace(&mut *m, new).into_values().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The running schedule tasks.
    pub fn schedules(&self) -> Vec<ScheduleHandle> {
        self.schedules
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
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
        if let Ok(mut r) = self.rules.write() {
            *r = compile_rules(&handles);
        }
        let new: BTreeMap<_, _> = handles
            .into_iter()
            .map(|h| ((h.namespace.clone(), h.name.clone()), h))
            .collect();
        match self.canaries.write() {
            Ok(mut m) => std::mem::replace(&mut *m, new).into_values().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Hands `status.command` requests (namespace, name, request) to their canaries' drivers;
    /// a request for a canary without a running driver waits in the status for the next start.
    pub fn deliver_requests(&self, requests: Vec<(String, String, CommandRequest)>) {
        for (namespace, name, req) in requests {
            match self.get(&namespace, &name) {
                Some(h) => {
                    if h.tx.send(CanaryTaskMsg::Request(Box::new(req))).is_err() {
                        tracing::warn!(%namespace, canary = %name, "command request not delivered: the canary task has stopped");
                    }
                }
                None => {
                    tracing::debug!(%namespace, canary = %name, "command request for a canary without a driver")
                }
            }
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
            steps: h.steps(),
            status: h.status.borrow().clone(),
        }
    }

    /// Hands `items` to every canary whose `rollbackOn` matches them (the first match per
    /// canary; later matches of the same payload change nothing). The receivers resolve
    /// once each matched canary has handled its alarm (the rollback written), so the sender
    /// can be told the rollback happened.
    fn take(&self, source: AlarmSource, items: Vec<Incoming>) -> (serde_json::Value, Vec<Waiter>) {
        let received = std::time::Instant::now();
        self.metrics.alarms_received(source, items.len() as u64);
        let rules = self.rules.read().map(|r| r.clone()).unwrap_or_default();
        let handles = self.handles();
        let mut sent = vec![false; handles.len()];
        let mut matched = Vec::new();
        let mut handled = Vec::new();
        let (mut duplicates, mut recoveries, mut stale) = (0, 0, 0);
        for item in &items {
            // Verdicts first, de-duplication second (`alarm::accept`): only an alarm that
            // would roll a canary back is remembered.
            let canaries = handles.iter().enumerate().filter_map(|(i, h)| {
                let r = rules.get(&(h.namespace.clone(), h.name.clone()))?;
                Some((i, &**r, h.status.borrow().started_at))
            });
            let routed = crate::alarm::accept::route(item, canaries, || self.first_time(item));
            recoveries += usize::from(routed.recovery);
            stale += routed.older_than_run;
            duplicates += usize::from(routed.duplicate);
            let mut targets = routed.act_on;
            // One message per canary per payload: the first matching alarm rolls it back and
            // later ones of the same payload find it in the same state (acted on or not
            // armed), so a payload of thousands of matching alerts costs a few messages.
            targets.retain(|&i| !sent[i]);
            if targets.is_empty() {
                continue;
            }
            let (rule, entity, message) = (item.rule(), item.entity(), item.message());
            for i in targets {
                sent[i] = true;
                let h = &handles[i];
                tracing::info!(namespace = %h.namespace, canary = %h.name, source = source.as_str(),
                    %rule, %entity, %message, "alarm matched rollbackOn");
                let (done, wait) = oneshot::channel();
                handled.push(wait);
                let _ = h.tx.send(CanaryTaskMsg::Alarm(Box::new(AlarmMsg {
                    source,
                    rule: rule.clone(),
                    entity: entity.clone(),
                    message: message.clone(),
                    received,
                    done: Some(done),
                })));
                matched.push(format!("{}/{}", h.namespace, h.name));
            }
        }
        let recovered_key = match source {
            AlarmSource::Alertmanager => "resolved",
            AlarmSource::Skywalking | AlarmSource::SkywalkingPoll => "recoveries",
        };
        let mut summary = json!({
            "received": items.len(),
            "matched": matched,
            "duplicates": duplicates,
            "olderThanRun": stale,
        });
        summary[recovered_key] = json!(recoveries);
        (summary, handled)
    }

    /// True the first time this alarm is seen (a poisoned lock lets it through: acting twice
    /// on an alarm is safe, missing one is not).
    fn first_time(&self, item: &Incoming) -> bool {
        self.dedupe
            .lock()
            .map(|mut d| d.first_time(&item.dedupe_keys()))
            .unwrap_or(true)
    }

    /// Sets (standby) or clears (leader, file mode) alarm forwarding.
    pub fn set_forwarder(&self, f: Option<Forwarder>) {
        if let Ok(mut w) = self.forwarder.write() {
            *w = f.map(Arc::new);
        }
    }

    /// On a standby: matches alarms like the leader would (rules, recovery, duplicates) and
    /// turns each match into a request for the leader; the run-start and armed checks are the
    /// leader's, which knows the current status.
    fn forward_take(
        &self,
        source: AlarmSource,
        items: Vec<Incoming>,
        f: &Forwarder,
    ) -> (serde_json::Value, Vec<(Key, CommandRequest)>) {
        self.metrics.alarms_received(source, items.len() as u64);
        let mut requests: Vec<(Key, CommandRequest)> = Vec::new();
        let (mut duplicates, mut recoveries) = (0, 0);
        for item in &items {
            // The standby does not know the runs: their start is the leader's to check.
            let canaries = f.targets.iter().map(|(key, rules)| (key, &**rules, None));
            let routed = crate::alarm::accept::route(item, canaries, || self.first_time(item));
            recoveries += usize::from(routed.recovery);
            duplicates += usize::from(routed.duplicate);
            for key in routed.act_on {
                if requests.iter().any(|(k, _)| k == key) {
                    continue;
                }
                requests.push((
                    key.clone(),
                    CommandRequest {
                        id: CommandRequest::new_id(),
                        action: CommandAction::Alarm,
                        full: false,
                        reason: None,
                        requested_at: Some(Utc::now()),
                        requested_by: Some(format!("standby replica {}", f.identity)),
                        alarm: Some(ForwardedAlarm {
                            source: source.display_name().to_string(),
                            rule: item.rule(),
                            entity: item.entity(),
                            message: item.message(),
                            started_at: item.started(),
                        }),
                    },
                ));
            }
        }
        let summary = json!({
            "received": items.len(),
            "forwarded": requests.iter().map(|((ns, n), _)| format!("{ns}/{n}")).collect::<Vec<_>>(),
            "duplicates": duplicates,
            "recoveries": recoveries,
            "replica": "standby: matches are handed to the leader through the Canary's status.command",
        });
        (summary, requests)
    }

    /// Delivers alarms and waits (bounded) until every matched canary wrote its rollback.
    pub fn deliver(
        &self,
        source: AlarmSource,
        items: Vec<Incoming>,
    ) -> BoxFuture<'static, serde_json::Value> {
        let (mut summary, handled) = self.take(source, items);
        let matched: Vec<String> = summary["matched"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move {
            let mut pending = Vec::new();
            for (canary, wait) in matched.into_iter().zip(handled) {
                // Bounded: a stuck routing write must not hold the sender (OAP times out at 12 s).
                let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
                if let Some(reason) = rollback_not_written(outcome) {
                    pending.push(json!({"canary": canary, "reason": reason}));
                }
            }
            if !pending.is_empty() {
                // Only a written rollback is reported as done: the sender sees 503 and why.
                summary["rollbackPending"] = json!(pending);
            }
            summary
        })
    }

    /// The payload's alarms, each parsed on its own (a malformed one is refused alone); a body
    /// of the wrong shape is refused whole.
    fn parse(source: AlarmSource, body: &[u8]) -> Result<Batch<Incoming>, ControlError> {
        let invalid = |e: &dyn std::fmt::Display| ControlError::Invalid(e.to_string());
        match source {
            AlarmSource::Skywalking => Ok(crate::alarm::parse_batch(body)
                .map_err(|e| invalid(&e))?
                .map(Incoming::Alarm)),
            AlarmSource::Alertmanager => Ok(crate::alarm::alertmanager::parse_payload(body)
                .map_err(|e| invalid(&e))?
                .into_batch()
                .map(Incoming::Alert)),
            AlarmSource::SkywalkingPoll => {
                Err(ControlError::Invalid("polled alarms are not posted".into()))
            }
        }
    }
}

impl AlarmSink for TaskRegistry {
    fn poll_since(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.standby.read().ok().is_none_or(|s| s.is_some()) {
            return None;
        }
        let rules = self.rules.read().ok()?;
        self.handles()
            .iter()
            .filter(|h| {
                rules
                    .get(&(h.namespace.clone(), h.name.clone()))
                    .is_some_and(|r| r.has_alarms())
            })
            .filter_map(|h| {
                let st = h.status.borrow();
                alarm_armed(&st, now).then(|| st.started_at.unwrap_or(now))
            })
            .min()
    }

    fn deliver_polled(&self, alarms: Vec<Alarm>) -> BoxFuture<'static, serde_json::Value> {
        self.deliver(
            AlarmSource::SkywalkingPoll,
            alarms.into_iter().map(Incoming::Alarm).collect(),
        )
    }
}

impl Control for TaskRegistry {
    fn canaries(&self) -> Vec<CanarySummary> {
        let mut all: BTreeMap<Key, CanarySummary> =
            self.invalid.read().map(|m| m.clone()).unwrap_or_default();
        for h in self.handles() {
            all.insert((h.namespace.clone(), h.name.clone()), Self::summary(&h));
        }
        all.into_values().collect()
    }

    /// Read in place under the registry's and each status' lock, copying neither handles
    /// nor statuses (the dashboard samples this every second).
    fn canary_weights(&self) -> Vec<CanaryWeights> {
        let mut all: BTreeMap<(&str, &str), CanaryWeights> = BTreeMap::new();
        let invalid = self.invalid.read();
        if let Ok(invalid) = &invalid {
            for ((ns, name), c) in invalid.iter() {
                all.insert((ns, name), CanaryWeights::of(ns, name, &c.status));
            }
        }
        let running = self.canaries.read();
        if let Ok(running) = &running {
            for h in running.values() {
                let weights = CanaryWeights::of(&h.namespace, &h.name, &h.status.borrow());
                all.insert((&h.namespace, &h.name), weights);
            }
        }
        all.into_values().collect()
    }

    fn canary(&self, namespace: &str, name: &str) -> Option<CanarySummary> {
        self.get(namespace, name)
            .as_ref()
            .map(Self::summary)
            .or_else(|| {
                let key = (namespace.to_string(), name.to_string());
                self.invalid.read().ok()?.get(&key).cloned()
            })
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
            h.tx.send(CanaryTaskMsg::Command(cmd, tx))
                .map_err(|_| ControlError::Unavailable("the canary task has stopped".into()))?;
            let status = rx
                .await
                .map_err(|_| ControlError::Unavailable("the canary task has stopped".into()))?
                .map_err(ControlError::Rejected)?;
            Ok(CanarySummary {
                namespace: h.namespace.clone(),
                name: h.name.clone(),
                steps: h.steps(),
                status,
            })
        })
    }

    fn scheduled_analyses(&self) -> Vec<crate::schedule::ScheduleSummary> {
        self.schedules().iter().map(|h| h.summary()).collect()
    }

    /// Starts a run now, as concurrencyPolicy allows (Forbid with a run going → 409).
    fn run_scheduled(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<serde_json::Value, ControlError>> {
        let standby = self.standby.read().ok().and_then(|s| s.clone());
        let handle = self
            .schedules
            .read()
            .ok()
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())).cloned());
        Box::pin(async move {
            if let Some(why) = standby {
                return Err(ControlError::Unavailable(why));
            }
            let h = handle.ok_or(ControlError::NotFound)?;
            match h.run_now().await {
                Ok(started) => {
                    serde_json::to_value(started).map_err(|e| ControlError::Internal(e.to_string()))
                }
                Err(e @ RunNowError::Busy(_)) => Err(ControlError::Rejected(e.to_string())),
                Err(e @ RunNowError::Stopped) => Err(ControlError::Unavailable(e.to_string())),
            }
        })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Parses the body (400 with the reason, nothing changed, when it is not a payload), then
    /// rolls back every canary its valid alarms match before answering; malformed alarms are
    /// listed in the reply. A standby replica drives no canary, so it answers 503 and the
    /// sender sees the alarm was not acted on.
    fn alarm_webhook(
        &self,
        source: AlarmSource,
        body: Bytes,
    ) -> BoxFuture<'static, Result<AlarmReply, ControlError>> {
        let standby = self.standby.read().ok().and_then(|s| s.clone());
        let forwarder = self.forwarder.read().ok().and_then(|f| f.clone());
        let batch = match Self::parse(source, &body) {
            Ok(batch) => batch,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        // The body is no longer needed: a large one is not held while rollbacks are awaited.
        drop(body);
        let refused = batch.rejected_total;
        let reason = batch.rejection_summary("alarms");
        let rejected = json!(
            batch
                .rejected
                .iter()
                .map(|r| json!({"index": r.index, "error": r.error}))
                .collect::<Vec<_>>()
        );
        let reply = move |mut summary: serde_json::Value| {
            if refused > 0 {
                summary["rejected"] = rejected;
                summary["rejectedTotal"] = json!(refused);
            }
            let pending = summary["rollbackPending"].as_array().map_or(0, Vec::len);
            AlarmReply {
                summary,
                refused,
                reason,
                pending,
            }
        };
        let items = batch.items;
        match (standby, forwarder) {
            (None, _) => {
                let delivered = self.deliver(source, items);
                Box::pin(async move { Ok(reply(delivered.await)) })
            }
            (Some(why), None) => Box::pin(async move { Err(ControlError::Unavailable(why)) }),
            (Some(_), Some(f)) => {
                let (summary, requests) = self.forward_take(source, items, &f);
                Box::pin(async move {
                    for ((ns, name), req) in requests {
                        if let Err(e) = write_request(&f.client, &ns, &name, &req).await {
                            // Not written: the sender must learn it (a 503 it may retry).
                            tracing::error!(namespace = %ns, canary = %name, "cannot forward alarm to the leader: {e}");
                            return Err(ControlError::Unavailable(format!(
                                "cannot hand the alarm for {ns}/{name} to the leader: {e}"
                            )));
                        }
                        tracing::info!(namespace = %ns, canary = %name, id = %req.id, "alarm forwarded to the leader");
                    }
                    Ok(reply(summary))
                })
            }
        }
    }
}

impl CanaryRollback for TaskRegistry {
    fn rollback(
        &self,
        namespace: &str,
        name: &str,
        why: AbortStatus,
    ) -> BoxFuture<'static, Result<CanaryStatus, String>> {
        let id = format!("{namespace}/{name}");
        let handle = self.get(namespace, name);
        Box::pin(async move {
            let h = handle.ok_or_else(|| format!("canary {id} is not running here"))?;
            let (tx, rx) = oneshot::channel();
            h.tx.send(CanaryTaskMsg::Rollback(Box::new(why), tx))
                .map_err(|_| format!("canary {id}: its task has stopped"))?;
            rx.await
                .map_err(|_| format!("canary {id}: its task has stopped"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::{CanaryPhase, CanaryStatus};
    use crate::resources::canary::{AlarmMatcher, CanaryDoc, CanarySpec, RollbackOn};
    use crate::resources::template::ObjectMeta;
    use chrono::TimeZone;
    use tokio::sync::{mpsc, watch};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_719_835_000 + secs, 0).single().unwrap()
    }

    /// A canary task stand-in: its handle, status sender and inbox.
    struct Fake {
        handle: CanaryHandle,
        status: watch::Sender<CanaryStatus>,
        rx: mpsc::UnboundedReceiver<CanaryTaskMsg>,
    }

    fn fake(name: &str, rollback: Option<RollbackOn>, st: CanaryStatus) -> Fake {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status, status_rx) = watch::channel(st);
        let (_fin, finished) = watch::channel(false);
        let doc = CanaryDoc {
            api_version: "skycanary.io/v1alpha1".into(),
            kind: "Canary".into(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("bookinfo".into()),
                ..ObjectMeta::default()
            },
            spec: CanarySpec {
                rollback_on: rollback,
                ..CanarySpec::default()
            },
            status: None,
        };
        Fake {
            handle: CanaryHandle {
                namespace: "bookinfo".into(),
                name: name.into(),
                doc: Arc::new(doc),
                tx,
                status: status_rx,
                finished,
                handover: Arc::default(),
            },
            status,
            rx,
        }
    }

    fn reviews_rule() -> Option<RollbackOn> {
        Some(RollbackOn {
            alarms: vec![AlarmMatcher {
                name: Some("reviews\\.bookinfo".into()),
                ..AlarmMatcher::default()
            }],
            alerts: Vec::new(),
        })
    }

    fn running(started: i64) -> CanaryStatus {
        CanaryStatus {
            phase: CanaryPhase::Progressing,
            started_at: Some(t(started)),
            ..CanaryStatus::default()
        }
    }

    fn alarm(start: i64, msg: &str) -> Alarm {
        Alarm {
            name: Some("reviews.bookinfo".into()),
            id0: Some("cmV2aWV3cy5ib29raW5mbw==.1".into()),
            message: Some(msg.into()),
            start_time: Some(t(start).timestamp_millis()),
            ..Alarm::default()
        }
    }

    #[test]
    fn weights_read_in_place_match_the_listed_canaries_in_order() {
        let with_weight = |w: i64, at: i64| CanaryStatus {
            desired_weight: w,
            routing_changed_at: Some(t(at)),
            ..running(0)
        };
        let a = fake("reviews", None, with_weight(30, 5));
        let b = fake("details", None, with_weight(0, 6));
        let registry = TaskRegistry::new(vec![a.handle.clone(), b.handle.clone()], Metrics::new());
        registry.set_invalid(vec![
            CanarySummary {
                namespace: "bookinfo".into(),
                name: "broken".into(),
                steps: 0,
                status: with_weight(10, 1),
            },
            // A driven canary of the same name wins, as in the list.
            CanarySummary {
                namespace: "bookinfo".into(),
                name: "reviews".into(),
                steps: 0,
                status: with_weight(90, 2),
            },
        ]);
        a.status.send_replace(with_weight(50, 9));
        let listed: Vec<CanaryWeights> = registry
            .canaries()
            .iter()
            .map(|c| CanaryWeights::of(&c.namespace, &c.name, &c.status))
            .collect();
        let read = registry.canary_weights();
        assert_eq!(read, listed);
        assert_eq!(
            read.iter()
                .map(|w| (w.name.as_str(), w.stable, w.canary, w.changed_at))
                .collect::<Vec<_>>(),
            [
                ("broken", 90, 10, Some(t(1))),
                ("details", 100, 0, Some(t(6))),
                ("reviews", 50, 50, Some(t(9))),
            ]
        );
    }

    #[test]
    fn only_a_leader_with_armed_alarm_canaries_polls() {
        let a = fake("reviews", reviews_rule(), running(100));
        let b = fake("ratings", reviews_rule(), running(50));
        let c = fake("details", None, running(10));
        let registry = TaskRegistry::new(
            vec![a.handle.clone(), b.handle.clone(), c.handle.clone()],
            Metrics::new(),
        );
        assert_eq!(
            registry.poll_since(t(200)),
            Some(t(50)),
            "earliest armed run"
        );
        b.status.send_replace(CanaryStatus {
            phase: CanaryPhase::Aborted,
            ..running(50)
        });
        assert_eq!(registry.poll_since(t(200)), Some(t(100)));
        a.status.send_replace(CanaryStatus {
            phase: CanaryPhase::Promoted,
            watch_until: Some(t(300)),
            ..running(100)
        });
        assert_eq!(
            registry.poll_since(t(200)),
            Some(t(100)),
            "within the watch"
        );
        assert_eq!(registry.poll_since(t(300)), None, "watch over");
        registry.set_standby(Some("not the leader".into()));
        assert_eq!(registry.poll_since(t(200)), None);
    }

    #[tokio::test]
    async fn polled_alarms_share_matching_and_dedupe_with_webhooks() {
        let Fake {
            handle,
            status: _status,
            mut rx,
        } = fake("reviews", reviews_rule(), running(100));
        let registry = Arc::new(TaskRegistry::new(vec![handle], Metrics::new()));
        // The task ends when the registry drops the last sender.
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(msg) = rx.recv().await {
                if let CanaryTaskMsg::Alarm(alarm) = msg {
                    let AlarmMsg {
                        source,
                        rule,
                        entity,
                        done,
                        ..
                    } = *alarm;
                    seen.push((source, rule, entity));
                    if let Some(d) = done {
                        let _ = d.send(CanaryStatus::default());
                    }
                }
            }
            seen
        });
        let webhook = Alarm {
            rule_name: Some("service_resp_time_rule".into()),
            uuid: Some("u-1".into()),
            ..alarm(150, "slow")
        };
        let summary = registry
            .deliver(AlarmSource::Skywalking, vec![Incoming::Alarm(webhook)])
            .await;
        assert_eq!(summary["matched"], json!(["bookinfo/reviews"]), "{summary}");
        // The same alarm polled later, plus one older than the run and a recovered one.
        let mut recovered = alarm(160, "recovered");
        recovered.recovery_time = Some(1);
        let summary = registry
            .deliver_polled(vec![alarm(150, "slow"), alarm(90, "old"), recovered])
            .await;
        assert_eq!(summary["duplicates"], 1, "{summary}");
        assert_eq!(summary["olderThanRun"], 1, "{summary}");
        assert_eq!(summary["recoveries"], 1, "{summary}");
        assert_eq!(summary["matched"], json!([]), "{summary}");
        let summary = registry.deliver_polled(vec![alarm(170, "new")]).await;
        assert_eq!(summary["matched"], json!(["bookinfo/reviews"]), "{summary}");
        registry.replace_handles(Vec::new());
        let seen = task.await.unwrap();
        assert_eq!(
            seen,
            vec![
                (
                    AlarmSource::Skywalking,
                    "service_resp_time_rule".to_string(),
                    "reviews.bookinfo".to_string()
                ),
                (
                    AlarmSource::SkywalkingPoll,
                    "new".to_string(),
                    "reviews.bookinfo".to_string()
                ),
            ]
        );
    }

    /// Drains a fake canary's inbox, answering each alarm; returns how many it got.
    fn drain_alarms(rx: &mut mpsc::UnboundedReceiver<CanaryTaskMsg>) -> usize {
        let mut n = 0;
        while let Ok(msg) = rx.try_recv() {
            if let CanaryTaskMsg::Alarm(alarm) = msg {
                n += 1;
                if let Some(d) = alarm.done {
                    let _ = d.send(CanaryStatus::default());
                }
            }
        }
        n
    }

    #[tokio::test]
    async fn only_alarms_that_trigger_are_remembered_and_one_message_per_payload() {
        let Fake {
            handle,
            status: _status,
            mut rx,
        } = fake("reviews", reviews_rule(), running(100));
        let registry = TaskRegistry::new(vec![handle], Metrics::new());
        let matching = Incoming::Alarm(alarm(150, "slow"));
        let (summary, _waits) = registry.take(AlarmSource::Skywalking, vec![matching.clone()]);
        assert_eq!(summary["matched"], json!(["bookinfo/reviews"]), "{summary}");
        assert_eq!(drain_alarms(&mut rx), 1);
        // More alarms for other services than the de-dup memory holds: none is remembered, so
        // the matched one is still known when it is delivered again.
        let others: Vec<Incoming> = (0..20_000)
            .map(|i| {
                Incoming::Alarm(Alarm {
                    name: Some(format!("other-{i}.bookinfo")),
                    ..alarm(150, "slow")
                })
            })
            .collect();
        let (summary, _) = registry.take(AlarmSource::Skywalking, others);
        assert_eq!(summary["matched"], json!([]), "{summary}");
        assert_eq!(summary["duplicates"], 0, "{summary}");
        let (summary, _) = registry.take(AlarmSource::Skywalking, vec![matching]);
        assert_eq!(summary["duplicates"], 1, "{summary}");
        assert_eq!(drain_alarms(&mut rx), 0);
        // A payload of many distinct matching alarms: one message to the canary.
        let many: Vec<Incoming> = (0..1_000)
            .map(|i| Incoming::Alarm(alarm(200 + i, "slow")))
            .collect();
        let (summary, _) = registry.take(AlarmSource::Skywalking, many);
        assert_eq!(summary["matched"], json!(["bookinfo/reviews"]), "{summary}");
        assert_eq!(drain_alarms(&mut rx), 1);
    }

    #[tokio::test]
    async fn a_malformed_alarm_is_refused_alone_and_reported() {
        let Fake {
            handle,
            status: _status,
            mut rx,
        } = fake("reviews", reviews_rule(), running(100));
        let registry = Arc::new(TaskRegistry::new(vec![handle], Metrics::new()));
        let body = format!(
            r#"[{{"name": "reviews.bookinfo"}}, {{"ruleName": "r", "name": "reviews.bookinfo", "startTime": {}}}]"#,
            t(150).timestamp_millis()
        );
        let answering = tokio::spawn(tokio::time::timeout(
            std::time::Duration::from_secs(5),
            async move {
                while drain_alarms(&mut rx) == 0 {
                    tokio::task::yield_now().await;
                }
            },
        ));
        let reply = registry
            .alarm_webhook(AlarmSource::Skywalking, Bytes::from(body))
            .await
            .unwrap();
        answering
            .await
            .unwrap()
            .expect("the valid alarm reached the canary");
        assert_eq!(reply.refused, 1);
        assert!(
            reply
                .reason
                .starts_with("alarms[0]: missing field `ruleName`"),
            "{}",
            reply.reason
        );
        assert_eq!(reply.summary["matched"], json!(["bookinfo/reviews"]));
        assert_eq!(reply.summary["received"], 1);
        assert_eq!(reply.summary["rejectedTotal"], 1);
        assert_eq!(reply.summary["rejected"][0]["index"], 0);
    }

    #[tokio::test]
    async fn webhooks_are_refused_while_standby_and_when_malformed() {
        let a = fake("reviews", reviews_rule(), running(100));
        let registry = TaskRegistry::new(vec![a.handle.clone()], Metrics::new());
        let bad = registry
            .alarm_webhook(AlarmSource::Alertmanager, Bytes::from_static(b"[]"))
            .await;
        assert!(matches!(bad, Err(ControlError::Invalid(_))), "{bad:?}");
        registry.set_standby(Some("this replica is not the leader".into()));
        let body = Bytes::from_static(br#"[{"ruleName": "r", "name": "reviews.bookinfo"}]"#);
        let r = registry.alarm_webhook(AlarmSource::Skywalking, body).await;
        assert!(matches!(r, Err(ControlError::Unavailable(_))), "{r:?}");
    }

    #[test]
    fn only_a_written_rollback_counts_as_done() {
        use crate::canary::RoutingWrite;
        use crate::traffic::DesiredRouting;
        let written = CanaryStatus {
            phase: CanaryPhase::Aborted,
            ..Default::default()
        };
        assert_eq!(rollback_not_written(Ok(Ok(written.clone()))), None);
        let pending = CanaryStatus {
            routing_write: Some(RoutingWrite {
                routing: DesiredRouting::weight(0),
                requested_at: t(0),
                retry_at: Some(t(1)),
                error: Some("409 twice".into()),
                failures: 1,
            }),
            ..written.clone()
        };
        assert_eq!(
            rollback_not_written(Ok(Ok(pending))).as_deref(),
            Some("rollback pending: 409 twice")
        );
        // A forward write in flight is not a rollback (the alarm found the canary not armed).
        let forward = CanaryStatus {
            phase: CanaryPhase::Progressing,
            routing_write: Some(RoutingWrite {
                routing: DesiredRouting::weight(30),
                requested_at: t(0),
                retry_at: None,
                error: None,
                failures: 0,
            }),
            ..Default::default()
        };
        assert_eq!(rollback_not_written(Ok(Ok(forward))), None);
        let (tx, rx) = oneshot::channel::<CanaryStatus>();
        drop(tx);
        let stopped = futures_util::FutureExt::now_or_never(rx).expect("closed");
        assert!(rollback_not_written(Ok(stopped)).is_some());
    }
}
