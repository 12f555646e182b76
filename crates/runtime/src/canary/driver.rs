//! The canary driver (I/O): one task per Canary that feeds the pure state machine and performs
//! its effects — routing writes through the router, analysis runs against SkyWalking, status
//! persistence, events and metrics.
//!
//! The iteration that receives a failing measurement runs the machine and performs the abort
//! write before it waits for anything else, so a rollback never waits for a "next reconcile".

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::machine::{self, Effect, Input};
use super::model::{
    AnalysisRunKind, CanaryEvent, CanaryStatus, Command, CommandAction, CommandOutcome,
    CommandRequest, step_label,
};
use super::readiness::{self, ReadinessQuery, ReadinessSource, SubsetRefs};
use super::revision::{self, Resolution};
use crate::alarm::AlarmSource;
use crate::analysis::{ConditionKind, MeasurementEvidence, Phase, RunSpec, RunState};
use crate::backoff::Backoff;
use crate::resources::canary::{ArgValue, CanaryDoc, TemplateRef};
use crate::resources::{LoadedCanary, LoadedTemplate};
use crate::runner::{self, Clock, Defaults, RunEvent};
use crate::state::StatusStore;
use crate::state::status::WriteLane;
use crate::task::{self, ObjectId, SaveMetrics, Saver, StateKind, TaskHandle, TaskMsg};
use crate::traffic::drift::{self, DriftSignals, Intended};
use crate::traffic::gate::{CommitGate, GateOpener};
use crate::traffic::istio::{self, Restore};
use crate::traffic::planner::{DesiredPlanner, MarkedPlanner, MarkerOp};
use crate::traffic::router::Router;
use crate::traffic::spec::{destination_rule_key, routing_of, virtual_service_keys};
use crate::traffic::store::{ManifestStore, ObjectKey};
use crate::traffic::{DesiredRouting, IstioRouting, RouteWeights};

/// An exposing write refused because the routes carry this run's rollback marker (fed to the
/// machine as [`Input::RolledBackMarker`], not as a failed write).
const ROLLED_BACK_REFUSAL: &str = "refused: the routes carry a rollback marker for this run";

/// First wait before probing an OAP that has not answered yet; doubles up to
/// [`OAP_PROBE_RETRY_MAX`].
pub(crate) const OAP_PROBE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest wait between two version probes of an OAP that has never answered.
pub(crate) const OAP_PROBE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// What a canary task reports to `/metrics` (the server's `Metrics` implements it); status
/// save outcomes go through [`SaveMetrics`], shared with the schedule tasks.
pub trait CanaryMetrics: SaveMetrics {
    /// The canary's phase now.
    fn set_canary_phase(&self, namespace: &str, name: &str, phase: super::model::CanaryPhase);
    /// The managed routes' weights now.
    fn set_canary_weights(&self, namespace: &str, name: &str, weights: &[RouteWeights]);
    /// One measurement of `metric` in `run`, with its last number when it has one.
    fn record_measurement(
        &self,
        namespace: &str,
        name: &str,
        run: &str,
        metric: &str,
        phase: Phase,
        value: Option<f64>,
    );
    /// The numeric thresholds of `metric`'s conditions at its last measurement (none drops
    /// the series).
    fn set_measurement_thresholds(
        &self,
        namespace: &str,
        name: &str,
        run: &str,
        metric: &str,
        thresholds: &[(ConditionKind, f64)],
    );
    /// The status no longer keeps `run`: its series go.
    fn forget_run(&self, namespace: &str, name: &str, run: &str);
    /// An analysis run reached its verdict `phase` (counted once, when persisted).
    fn analysis_run(&self, namespace: &str, name: &str, phase: Phase);
    /// An event of the canary: a release's end (`RolloutCompleted`, `RolloutAborted`) records
    /// its duration since `started_at`.
    fn canary_event(&self, reason: &str, started_at: Option<DateTime<Utc>>, now: DateTime<Utc>);
    /// A decision of the state machine, by its event reason.
    fn decision(&self, namespace: &str, name: &str, reason: &str);
    /// A routing write of `kind` met a conflict and was retried.
    fn kube_write_conflict(&self, kind: &str);
    /// Someone else changed a managed VirtualService.
    fn traffic_drift(&self, namespace: &str, name: &str, virtual_service: &str);
    /// An alarm from `source` matched this canary's `rollbackOn`.
    fn alarm_matched(&self, namespace: &str, name: &str, source: AlarmSource);
    /// How long an alarm took from receipt to its rollback write.
    fn alarm_rollback_latency(&self, elapsed: std::time::Duration);
}

/// Messages to a canary task.
#[derive(Debug)]
pub enum CanaryTaskMsg {
    /// A user command; the reply is the status after it was handled, or why it was refused.
    Command(Command, oneshot::Sender<Result<CanaryStatus, String>>),
    /// A matching alarm.
    Alarm(Box<AlarmMsg>),
    /// Progress of one of this canary's analysis runs.
    Analysis {
        /// Run name.
        name: String,
        /// Its state.
        state: Box<RunState>,
        /// The metric just measured, if this update is a measurement.
        measured: Option<String>,
    },
    /// A command request read from `status.command` (`skycanary <action> --kube`); handled
    /// once per id, its outcome recorded in `status.lastCommand`.
    Request(Box<CommandRequest>),
    /// Weights to stable now on a scheduled analysis' verdict (Aborted, or RolledBack when
    /// promoted); answered once handled, the rollback write included.
    Rollback(
        Box<super::model::AbortStatus>,
        oneshot::Sender<CanaryStatus>,
    ),
    /// The outcome of a version probe of the OAPs the canary's analyses query: how many of
    /// the connections still waiting answered (in order), and why the next one did not.
    OapProbed {
        /// Connections that answered, from the front of the waiting list.
        answered: usize,
        /// `waiting for SkyWalking OAP at <url>: <why>` for the first that did not.
        failed: Option<String>,
    },
    /// A changed readiness of the canary's workloads (from the [`ReadinessSource`]).
    Readiness(Box<super::model::ReadinessStatus>),
    /// Stop the task (daemon shutdown).
    Stop,
}

impl TaskMsg for CanaryTaskMsg {
    const STOP: Self = CanaryTaskMsg::Stop;
}

/// A matching alarm, for its canary's task. (Boxed in [`CanaryTaskMsg`]: every canary's
/// channel holds a block of 32 messages, so the message's size counts a thousandfold.)
#[derive(Debug)]
pub struct AlarmMsg {
    /// Where it came from.
    pub source: AlarmSource,
    /// Rule name.
    pub rule: String,
    /// Entity name.
    pub entity: String,
    /// The alarm's text, as its sender wrote it.
    pub message: String,
    /// When skycanary received it (for the alarm→rollback latency).
    pub received: std::time::Instant,
    /// Told once the alarm was handled (the rollback write included).
    pub done: Option<oneshot::Sender<CanaryStatus>>,
}

/// Handle on a running canary task: the object task handle every kind shares.
pub type CanaryHandle = TaskHandle<CanaryDoc, CanaryTaskMsg, CanaryStatus>;

impl CanaryHandle {
    /// Number of steps of the Canary as loaded (the API shows it with the current step).
    pub fn steps(&self) -> usize {
        self.doc.spec.steps.len()
    }
}

/// How often a canary with `fromSubset` references reads its DestinationRule again: a
/// relabelled or removed subset is followed within this (one GET, not a watch).
pub const SUBSET_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// The DestinationRule that `fromSubset` references read, as last read through the router's
/// store (the same read the router checks the subsets with before a write).
struct SubsetLabels<S: ManifestStore + 'static> {
    router: Arc<Router<S>>,
    key: ObjectKey,
    refs: SubsetRefs,
    dr: Result<serde_json::Value, String>,
    read_at: Option<tokio::time::Instant>,
}

impl<S: ManifestStore + 'static> SubsetLabels<S> {
    fn new(router: Arc<Router<S>>, key: ObjectKey, refs: SubsetRefs) -> Self {
        SubsetLabels {
            router,
            key,
            refs,
            dr: Err("not read yet".into()),
            read_at: None,
        }
    }

    /// Reads the DestinationRule when it was never read or [`SUBSET_REFRESH`] has passed.
    async fn refresh(&mut self) {
        if self.read_at.is_some_and(|t| t.elapsed() < SUBSET_REFRESH) {
            return;
        }
        self.dr = match self.router.store().get(&self.key).await {
            Ok(v) => Ok(v.object),
            Err(e) => Err(e.to_string()),
        };
        self.read_at = Some(tokio::time::Instant::now());
    }
}

/// The readiness of `query` now, `fromSubset` references read from their DestinationRule.
async fn read_readiness<S: ManifestStore + 'static>(
    source: &dyn ReadinessSource,
    query: &ReadinessQuery,
    subsets: &mut Option<SubsetLabels<S>>,
    now: chrono::DateTime<chrono::Utc>,
) -> super::model::ReadinessStatus {
    if let Some(s) = subsets.as_mut() {
        s.refresh().await;
    }
    let subsets = subsets.as_ref().map(|s| (&s.refs, &s.dr));
    readiness::read(source, query, subsets, now).await
}

/// Everything a canary task needs besides its Canary.
pub struct CanaryTaskContext<S: ManifestStore + 'static> {
    /// Routing writes.
    pub router: Arc<Router<S>>,
    /// Templates by namespace/name.
    pub templates: Arc<Vec<LoadedTemplate>>,
    /// Status persistence.
    pub state: StatusStore,
    /// Kubernetes Events on the Canary (cluster mode); repeats become series.
    pub events: Option<crate::traffic::kube::EventRecorder>,
    /// The daemon's clock (scaled in demos and tests), for every wait and timestamp.
    pub clock: Arc<dyn Clock>,
    /// Default OAP and timezone.
    pub defaults: Defaults,
    /// Where the task's metrics go (the server's `Metrics` in the daemon).
    pub metrics: Arc<dyn CanaryMetrics>,
    /// SkyWalking clients shared by every analysis run; build it with
    /// [`runner::ClientCache::observed`] so their requests reach `/metrics`.
    pub clients: runner::ClientCache,
    /// Notices of changed VirtualServices, on which a task re-reads its own for drift.
    pub drift: DriftSignals,
    /// Lifecycle notifications (the task only enqueues; delivery runs beside it).
    pub notifier: crate::notify::Notifier,
    /// Where canaries with `spec.workloadRef` learn their ready pods. Without one such a
    /// canary is not started (it would wait for readiness forever).
    pub readiness: Option<Arc<dyn ReadinessSource>>,
}

impl<S: ManifestStore + 'static> Clone for CanaryTaskContext<S> {
    fn clone(&self) -> Self {
        CanaryTaskContext {
            router: self.router.clone(),
            templates: self.templates.clone(),
            state: self.state.clone(),
            events: self.events.clone(),
            clock: self.clock.clone(),
            defaults: self.defaults.clone(),
            metrics: self.metrics.clone(),
            clients: self.clients.clone(),
            drift: self.drift.clone(),
            notifier: self.notifier.clone(),
            readiness: self.readiness.clone(),
        }
    }
}

/// Starts the task of one Canary; it resumes from its persisted status.
pub fn spawn<S: ManifestStore + 'static>(
    canary: &LoadedCanary,
    ctx: CanaryTaskContext<S>,
) -> CanaryHandle {
    spawn_successor(canary, ctx, None)
}

/// Starts the task of one Canary that replaces `predecessor` (a reload changed the Canary or
/// its templates). The new handle takes messages at once — they wait in its queue — while the
/// task first stops the predecessor and then continues from the predecessor's in-memory status
/// (saved again at once), or from the persisted one when the predecessor never drove.
pub fn spawn_successor<S: ManifestStore + 'static>(
    canary: &LoadedCanary,
    ctx: CanaryTaskContext<S>,
    predecessor: Option<CanaryHandle>,
) -> CanaryHandle {
    let namespace = canary.namespace().to_string();
    let name = canary.doc.metadata.name.clone();
    let doc = Arc::new(canary.doc.clone());
    let oap = OapGate::new(super::preflight::oap_connections(
        &canary.doc,
        &namespace,
        &ctx.templates,
        &ctx.defaults,
    ));
    let id = ObjectId {
        kind: StateKind::Canary,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let routing = routing_of(&canary.doc, &namespace);
    let (store, metrics) = (ctx.state.clone(), ctx.metrics.clone());
    // What the task is built from, boxed: the closure below lives inside the task's future
    // (held per canary for as long as it runs), so it carries one pointer, not the parts.
    let parts = Box::new(TaskParts {
        namespace,
        name,
        doc: doc.clone(),
        routing,
        ctx,
        oap,
    });
    // The task is built before its future exists (nothing is awaited on the way), so the
    // future holds the boxed task and its inbox only, not `started` or the parts as well.
    let run = move |started: task::Started<CanaryTaskMsg, CanaryStatus>| {
        let TaskParts {
            namespace,
            name,
            doc: mut task_doc,
            routing,
            ctx,
            oap,
        } = *parts;
        let now = ctx.clock.now();
        // Without spec.revision the revision comes from the workload's template: until
        // the first observation says otherwise, the status' own.
        let automatic = revision::automatic(&task_doc.spec);
        if automatic {
            Arc::make_mut(&mut task_doc).spec.revision = started.status.revision.clone();
        }
        // Boxed: the task's state lives on the heap once, not inside every future below.
        let mut task = Box::new(CanaryTask {
            namespace,
            name,
            routing,
            doc: task_doc,
            automatic,
            ctx,
            tx: started.tx,
            status: started.status,
            status_tx: started.status_tx,
            stops: HashMap::new(),
            routing_changes: watch::channel(None).0,
            wake: None,
            saver: started.saver,
            oap,
            drift_seen: HashMap::new(),
            alarm_reply: None,
        });
        if started.inherited {
            // Saved again before anything is exposed: the predecessor's last save may
            // have failed.
            task.saver
                .mark_unsaved("taken over from the task this reload replaced", now);
        } else if crate::state::conditions::is_true(&task.status.conditions, "InvalidSpec") {
            // The spec is valid again: the status says so at once (written before
            // anything is exposed), not at the canary's next change.
            task.saver.mark_unsaved("the spec is valid again", now);
        }
        let _ = task.status_tx.send(task.status.clone());
        // /metrics shows the resumed state before anything changes.
        let m = &task.ctx.metrics;
        m.set_canary_phase(&task.namespace, &task.name, task.status.phase);
        m.set_canary_weights(&task.namespace, &task.name, &task.status.weights);
        let rx = started.rx;
        async move { Some(task.run(rx).await) }
    };
    task::spawn(id, doc, store, metrics, predecessor, run)
}

/// What [`spawn_successor`] builds a [`CanaryTask`] from, with what the task module hands over.
struct TaskParts<S: ManifestStore + 'static> {
    namespace: String,
    name: String,
    doc: Arc<CanaryDoc>,
    routing: IstioRouting,
    ctx: CanaryTaskContext<S>,
    oap: OapGate,
}

/// One running canary task: the Canary it drives, its in-memory status and what it waits for.
/// Only the task's loop touches it; the rest of the daemon talks through its [`CanaryHandle`].
struct CanaryTask<S: ManifestStore + 'static> {
    namespace: String,
    name: String,
    /// The Canary, its `spec.revision` the effective one when [`Self::automatic`].
    doc: Arc<CanaryDoc>,
    /// The revision comes from the canary workload's pod template ([`revision::automatic`]):
    /// resolved before every [`Input::Spec`].
    automatic: bool,
    routing: IstioRouting,
    ctx: CanaryTaskContext<S>,
    tx: mpsc::UnboundedSender<CanaryTaskMsg>,
    status: CanaryStatus,
    status_tx: watch::Sender<CanaryStatus>,
    /// Stop switches of running analysis runs.
    stops: HashMap<String, watch::Sender<Option<String>>>,
    /// `status.routingChangedAt`, for the running analyses' window alignment.
    routing_changes: watch::Sender<Option<DateTime<Utc>>>,
    wake: Option<DateTime<Utc>>,
    /// Status writes, retried until they land. While the current status is not persisted
    /// ([`Saver::unsaved`]), routing that exposes the canary is held (rollbacks still go
    /// through): a restarted daemon resumes from the persisted status and writes its weights,
    /// so routes ahead of it would be lowered.
    saver: Saver<CanaryStatus>,
    /// Routing that exposes the canary waits until its OAPs have answered.
    oap: OapGate,
    /// Per VirtualService, the version last reported as drift: one foreign change is one
    /// drift, however often it is looked at. Cleared by our own writes.
    drift_seen: HashMap<ObjectKey, String>,
    /// The alarm being handled, answered once its rollback write is acknowledged.
    alarm_reply: Option<AlarmReply>,
}

/// An alarm's answer. Given as soon as the machine has its rollback write's result, before the
/// status that records the result is saved: the status saved before the write (Aborted, the
/// write pending) already makes a restarted daemon re-send it first, so the sender waits for
/// no second save.
struct AlarmReply {
    done: Option<oneshot::Sender<CanaryStatus>>,
    received: std::time::Instant,
}

/// The OAPs a canary's analyses query, until each has answered one version probe. Nothing
/// that exposes the canary (weight > 0, header or mirror route) is written before: a canary
/// that cannot be measured is never given traffic (issue 14). A new run waits Pending with
/// the reason as its message; probes are retried with capped backoff.
struct OapGate {
    /// Connections not answered yet, in order; empty once all have.
    waiting: Vec<crate::provider::skywalking::ClientOptions>,
    /// A probe is in flight.
    probing: bool,
    /// When to probe again after a failed probe.
    retry_at: Option<DateTime<Utc>>,
    /// `waiting for SkyWalking OAP at <url>: <why>` after a failed probe.
    why: Option<String>,
    backoff: Backoff,
    /// The `Input::Spec` that would start a run, held until every connection answered.
    held_spec: bool,
}

impl OapGate {
    fn new(waiting: Vec<crate::provider::skywalking::ClientOptions>) -> Self {
        OapGate {
            waiting,
            probing: false,
            retry_at: None,
            why: None,
            backoff: Backoff::new(OAP_PROBE_RETRY_FIRST, OAP_PROBE_RETRY_MAX),
            held_spec: false,
        }
    }

    fn answered(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Why exposing routing is held now, None when it may go out.
    fn hold(&self) -> Option<String> {
        let first = self.waiting.first()?;
        Some(self.why.clone().unwrap_or_else(|| {
            format!(
                "waiting for SkyWalking OAP at {}: no answer yet",
                first.address
            )
        }))
    }

    /// A probe should start now: something is waiting, none in flight, the retry is due.
    fn due(&self, now: DateTime<Utc>) -> bool {
        !self.answered() && !self.probing && self.retry_at.is_none_or(|t| now >= t)
    }
}

impl<S: ManifestStore + 'static> CanaryTask<S> {
    /// The task's loop. Every step below it is boxed (`Box::pin`): this future is held per
    /// canary for as long as the canary runs, and unboxed it would carry the largest step's
    /// state (status write, routing write, event) the whole time.
    /// Returns the last in-memory status, for a successor.
    async fn run(
        mut self: Box<Self>,
        mut rx: mpsc::UnboundedReceiver<CanaryTaskMsg>,
    ) -> CanaryStatus {
        let unresumed = self.resume_analyses();
        // `Resumed` first: a pending write (a rollback saved just before a crash) goes out
        // before anything the spec or the clock may start.
        let mut queue = VecDeque::from([Input::Resumed, Input::Spec, Input::Tick]);
        queue.extend(unresumed);
        // Read once before the spec is looked at, so a run does not start on a stale or
        // missing observation; then watched beside the task.
        if let Some(first) = Box::pin(self.watch_readiness()).await {
            queue.insert(1, Input::Readiness(first));
        }
        self.probe_oap();
        // The routes as they are now: an exposed status over withdrawn routes is not resumed.
        match Box::pin(self.observe()).await {
            Ok((routes, markers)) => {
                queue.push_front(Input::Observed(routes));
                // A rollback marker for this run aborts it even when no exposure was saved.
                for run in markers {
                    queue.push_front(Input::RolledBackMarker(run));
                }
            }
            Err(e) => {
                tracing::warn!("cannot read the routes at start: {e}")
            }
        }
        let mut drift_rx = self.ctx.drift.subscribe();
        Box::pin(self.process(&mut queue)).await;
        if self
            .status
            .applied
            .as_ref()
            .is_some_and(|a| a.exposes_canary())
        {
            // Resumed exposed: the rollback is prepared as after any exposing write.
            let targets = virtual_service_keys(&self.routing, &self.namespace);
            Box::pin(stand_by_rollback(&self.ctx, &self.routing, &targets)).await;
        }
        // A foreign change made while no task watched is found at once.
        let mut check_drift = true;
        loop {
            if std::mem::take(&mut check_drift) {
                Box::pin(self.check_drift(&mut queue)).await;
            }
            Box::pin(self.process(&mut queue)).await;
            self.wake = machine::next_wake(&self.status)
                .into_iter()
                .chain(self.wake)
                .chain(self.saver.retry_at())
                .chain(self.oap.retry_at.filter(|_| !self.oap.probing))
                .min();
            let sleep_until = self.wake;
            let clock = self.ctx.clock.clone();
            let msg = tokio::select! {
                m = rx.recv() => m,
                notice = drift_rx.recv() => {
                    check_drift = match notice {
                        Ok(key) => self.targets().0.contains(&key),
                        // Notices were lost: any of ours may have changed.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                    };
                    continue;
                }
                () = async {
                    match sleep_until {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.wake = None;
                    queue.push_back(Input::Tick);
                    check_drift = self.ctx.drift.before_decisions();
                    continue;
                }
            };
            // Polled signals may be up to one poll old: the routes are re-read before a
            // decision, so it is not taken over a foreign change nobody reported yet. Not
            // before a rollback: it writes every managed weight anyway, and must not wait.
            let decision = !matches!(
                msg,
                None | Some(
                    CanaryTaskMsg::Stop | CanaryTaskMsg::Alarm(_) | CanaryTaskMsg::Rollback(..)
                )
            );
            if decision && self.ctx.drift.before_decisions() {
                Box::pin(self.check_drift(&mut queue)).await;
                Box::pin(self.process(&mut queue)).await;
            }
            match msg {
                None | Some(CanaryTaskMsg::Stop) => break,
                Some(CanaryTaskMsg::OapProbed { answered, failed }) => {
                    self.oap_probed(answered, failed, &mut queue)
                }
                Some(CanaryTaskMsg::Readiness(r)) => {
                    // A new pod template is a new revision: the spec is looked at again
                    // once the machine has the observation.
                    let template = self.automatic
                        && self.status.readiness.as_ref().map(|p| &p.template_hash)
                            != Some(&r.template_hash);
                    queue.push_back(Input::Readiness(*r));
                    if template {
                        queue.push_back(Input::Spec);
                    }
                }
                Some(CanaryTaskMsg::Command(cmd, reply)) => {
                    let result =
                        Box::pin(self.command(Input::Command(cmd), None, &mut queue)).await;
                    let _ = reply.send(result);
                }
                Some(CanaryTaskMsg::Request(req)) => {
                    let handled = self.status.last_command.as_ref().map(|c| &c.id) == Some(&req.id);
                    if !handled && let Some(why) = stale_forwarded_alarm(&self.status, &req) {
                        tracing::info!(id = %req.id, "forwarded alarm ignored: {why}");
                        self.status.last_command = Some(CommandOutcome {
                            id: req.id.clone(),
                            action: req.action,
                            accepted: false,
                            message: Some(why),
                            at: self.ctx.clock.now(),
                        });
                        Box::pin(self.publish()).await;
                    } else if !handled {
                        let input = match &req.alarm {
                            Some(a) if req.action == CommandAction::Alarm => Input::Alarm {
                                source: a.source.clone(),
                                rule: a.rule.clone(),
                                entity: a.entity.clone(),
                                message: a.message.clone(),
                            },
                            _ => Input::Command(req.command()),
                        };
                        match Box::pin(self.command(input, Some(&req), &mut queue)).await {
                            Ok(_) => {
                                tracing::info!(id = %req.id, action = req.action.as_str(), "command request carried out")
                            }
                            Err(why) => {
                                tracing::warn!(id = %req.id, action = req.action.as_str(), "command request refused: {why}")
                            }
                        }
                    }
                }
                Some(CanaryTaskMsg::Analysis {
                    name,
                    state,
                    measured,
                }) => {
                    if let Some(metric) = measured {
                        self.observe_measurement(&name, &metric, &state);
                    }
                    queue.push_back(Input::Analysis {
                        name,
                        status: *state,
                    });
                }
                Some(CanaryTaskMsg::Rollback(why, done)) => {
                    queue.push_back(Input::Rollback(*why));
                    Box::pin(self.process(&mut queue)).await;
                    let _ = done.send(self.status.clone());
                }
                Some(CanaryTaskMsg::Alarm(alarm)) => {
                    let AlarmMsg {
                        source,
                        rule,
                        entity,
                        message,
                        received,
                        done,
                    } = *alarm;
                    // A canary already rolled back is not rolled back again: not a match
                    // worth counting.
                    if !matches!(
                        self.status.phase,
                        super::model::CanaryPhase::Aborted | super::model::CanaryPhase::RolledBack
                    ) {
                        self.ctx
                            .metrics
                            .alarm_matched(&self.namespace, &self.name, source);
                    }
                    queue.push_back(Input::Alarm {
                        source: source.display_name().to_string(),
                        rule,
                        entity,
                        message,
                    });
                    self.alarm_reply = Some(AlarmReply { done, received });
                    Box::pin(self.process(&mut queue)).await;
                    // No write acknowledged (none asked, or it failed): answered as it is now.
                    let status = self.status.clone();
                    self.answer_alarm(&status);
                }
            }
            Box::pin(self.process(&mut queue)).await;
        }
        for (_, stop) in self.stops.drain() {
            let _ = stop.send(Some("daemon stopping".into()));
        }
        if self.saver.unsaved().is_some() {
            // One last try before the task ends: a successor in this process takes the
            // status over anyway, but a daemon that stops for good has only the store.
            Box::pin(self.publish()).await;
        }
        std::mem::take(&mut self.status)
    }

    /// Runs the machine over queued inputs, performing effects as they come (a routing
    /// result is fed back at once).
    async fn process(&mut self, queue: &mut VecDeque<Input>) {
        if self.saver.due(self.ctx.clock.now()) {
            self.publish().await;
        }
        if self.oap.due(self.ctx.clock.now()) {
            self.probe_oap();
        }
        while let Some(input) = queue.pop_front() {
            if input == Input::Spec
                && self.automatic
                && self.ctx.readiness.is_some()
                && self.resolve_revision(queue).await
            {
                continue;
            }
            // Without a readiness source nothing feeds `Input::Readiness`: a run that would
            // wait for it forever (and abort at its deadline) is not started; the status says
            // why (docs/workloads.md).
            if input == Input::Spec
                && self.ctx.readiness.is_none()
                && let Some(w) = &self.doc.spec.workload_ref
                && machine::starts_run(&self.doc.spec, &self.status)
            {
                let why = machine::workload_unwatched(w);
                self.handle(&Input::Waiting(why), None, queue).await;
                continue;
            }
            if input == Input::Spec
                && let Some(why) = self.oap.hold()
                && machine::starts_run(&self.doc.spec, &self.status)
            {
                // Fed again once the OAP answered; meanwhile the status says why.
                self.oap.held_spec = true;
                if self.oap.why.is_some() {
                    self.handle(&Input::Waiting(why), None, queue).await;
                }
                continue;
            }
            if input == Input::Spec
                && let Some(why) = Box::pin(self.next_release_refusal()).await
            {
                // Fed again with the next spec change; meanwhile the status says why.
                tracing::warn!("{why}");
                self.handle(&Input::Waiting(why), None, queue).await;
                continue;
            }
            self.handle(&input, None, queue).await;
        }
    }

    /// Sets the effective revision of an automatic canary from the last observed template
    /// ([`revision::resolve`]); true when no run can start (the status says why).
    async fn resolve_revision(&mut self, queue: &mut VecDeque<Input>) -> bool {
        let resolution = revision::resolve(&self.status);
        let rev = revision::effective(&resolution, &self.status);
        if self.doc.spec.revision != rev {
            Arc::make_mut(&mut self.doc).spec.revision = rev;
        }
        match resolution {
            Resolution::Wait(why) => {
                self.handle(&Input::Waiting(why), None, queue).await;
                true
            }
            Resolution::Adopt(hash) => {
                self.handle(&Input::TemplateAdopted(hash), None, queue)
                    .await;
                false
            }
            Resolution::Template(_) | Resolution::Keep => false,
        }
    }

    /// Reads the canary's readiness once and starts polling it beside the task: every
    /// change is sent as [`CanaryTaskMsg::Readiness`] until the task ends. `None` without a
    /// source or without `spec.workloadRef`.
    async fn watch_readiness(&self) -> Option<super::model::ReadinessStatus> {
        let source = self.ctx.readiness.clone()?;
        let query = ReadinessQuery::of(&self.doc, &self.namespace)?;
        let mut subsets = SubsetRefs::of(&self.doc, &self.namespace)
            .zip(destination_rule_key(&self.routing, &self.namespace))
            .map(|(refs, key)| SubsetLabels::new(self.ctx.router.clone(), key, refs));
        let first = read_readiness(&*source, &query, &mut subsets, self.ctx.clock.now()).await;
        let (tx, clock) = (self.tx.clone(), self.ctx.clock.clone());
        let mut last = first.clone();
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(source.interval()).await;
                    if tx.is_closed() {
                        break;
                    }
                    let now = read_readiness(&*source, &query, &mut subsets, clock.now()).await;
                    if readiness::changed(Some(&last), &now) {
                        tracing::info!(
                            canary_ready = ?now.canary_ready,
                            stable_ready = ?now.stable_ready,
                            message = now.message.as_deref().unwrap_or(""),
                            "workload readiness changed"
                        );
                        if tx
                            .send(CanaryTaskMsg::Readiness(Box::new(now.clone())))
                            .is_err()
                        {
                            break;
                        }
                        last = now;
                    }
                }
            }
            .in_current_span(),
        );
        Some(first)
    }

    /// [`machine::next_release_refusal`] over the routes as they are now, read with the
    /// spec's roles. Routes that cannot be read refuse nothing: the run's first write reads
    /// them again and reports why.
    async fn next_release_refusal(&self) -> Option<String> {
        if self.status.phase != super::model::CanaryPhase::Promoted
            || !machine::starts_run(&self.doc.spec, &self.status)
        {
            return None;
        }
        let routes = match self.observe_routes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("next release: cannot read the routes now: {e}");
                return None;
            }
        };
        machine::next_release_refusal(&self.doc.spec, &self.status, &routes)
    }

    /// Starts a version probe of the connections still waiting, unless one is in flight.
    /// It runs beside the task (a slow OAP never delays an alarm) and reports
    /// [`CanaryTaskMsg::OapProbed`].
    fn probe_oap(&mut self) {
        if self.oap.answered() || self.oap.probing {
            return;
        }
        self.oap.probing = true;
        self.oap.retry_at = None;
        let targets = self.oap.waiting.clone();
        let clients = self.ctx.clients.clone();
        let tx = self.tx.clone();
        tokio::spawn(
            async move {
                let mut answered = 0;
                let mut failed = None;
                for o in targets {
                    let plan = runner::RunPlan {
                        name: "preflight".into(),
                        spec: RunSpec::default(),
                        metrics: Vec::new(),
                        clients: vec![o.clone()],
                        args: Default::default(),
                    };
                    let probed = match clients.connect(&plan) {
                        Ok(c) => match c.first() {
                            Some(c) => c.server_info().await.map(|_| ()),
                            None => Ok(()),
                        },
                        Err(e) => Err(e),
                    };
                    match probed {
                        Ok(()) => answered += 1,
                        Err(e) => {
                            failed =
                                Some(format!("waiting for SkyWalking OAP at {}: {e}", o.address));
                            break;
                        }
                    }
                }
                let _ = tx.send(CanaryTaskMsg::OapProbed { answered, failed });
            }
            .in_current_span(),
        );
    }

    /// A probe's outcome: the held run starts once everything answered; otherwise the
    /// status says why and the next probe is scheduled.
    fn oap_probed(&mut self, answered: usize, failed: Option<String>, queue: &mut VecDeque<Input>) {
        self.oap.probing = false;
        let n = answered.min(self.oap.waiting.len());
        self.oap.waiting.drain(..n);
        match failed {
            None if self.oap.answered() => {
                if self.oap.why.take().is_some() {
                    tracing::info!("SkyWalking OAP answered; starting");
                }
                self.oap.backoff.reset();
                if std::mem::take(&mut self.oap.held_spec) {
                    queue.push_back(Input::Spec);
                }
            }
            // More to probe (cannot happen: a probe stops only at a failure); probe again.
            None => self.oap.retry_at = Some(self.ctx.clock.now()),
            Some(why) => {
                let delay = self.oap.backoff.next_delay();
                tracing::warn!("not exposing the canary yet, probing again in {delay:?}: {why}");
                self.oap.retry_at = Some(
                    self.ctx.clock.now()
                        + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX),
                );
                self.oap.why = Some(why.clone());
                if self.oap.held_spec {
                    queue.push_back(Input::Waiting(why));
                }
            }
        }
    }

    /// A user command, handled before anything queued so its reply reflects it; Err(why) when
    /// the machine refused it in the canary's current state. A `request` from
    /// `status.command` is handled once: its outcome is stored with the same status write.
    async fn command(
        &mut self,
        input: Input,
        request: Option<&CommandRequest>,
        queue: &mut VecDeque<Input>,
    ) -> Result<CanaryStatus, String> {
        let refused = self.handle(&input, request, queue).await;
        self.process(queue).await;
        match refused {
            Some(why) => Err(why),
            None => Ok(self.status.clone()),
        }
    }

    /// One machine step with its effects (routing results are queued). Returns the refusal
    /// message when the input was a command the machine refused.
    async fn handle(
        &mut self,
        input: &Input,
        request: Option<&CommandRequest>,
        queue: &mut VecDeque<Input>,
    ) -> Option<String> {
        let now = self.ctx.clock.now();
        let (mut next, effects) = machine::step(&self.doc.spec, &self.status, input, now);
        let refused = effects.iter().find_map(|e| match e {
            Effect::CommandRejected(why) => Some(why.clone()),
            _ => None,
        });
        if let Some(req) = request {
            next.last_command = Some(CommandOutcome {
                id: req.id.clone(),
                action: req.action,
                accepted: refused.is_none(),
                message: refused.clone(),
                at: now,
            });
        }
        if matches!(input, Input::Routing(_)) {
            if next.routing_write.is_none() {
                self.answer_alarm(&next);
            }
            // A rollback's status left in the journal goes to its JSON file now, after the
            // write and its answer (the save below would make it otherwise).
            self.saver.release();
        }
        // A rollback's write is prepared while the status is saved, renamed once it is.
        let mut overlapped = None;
        if next != self.status {
            let verdicts = newly_completed(&self.status, &next);
            let dropped = dropped_runs(&self.status, &next);
            let prev = std::mem::replace(&mut self.status, next);
            self.routing_changes
                .send_if_modified(|c| replace_if_changed(c, self.status.routing_changed_at));
            match overlappable_rollback(&effects) {
                Some(desired) => {
                    let result = self.publish_with_rollback(&desired).await;
                    overlapped = Some((desired, result));
                }
                None => self.publish().await,
            }
            // After the save: what is announced is written (a rollback's weights included:
            // Aborted is announced once its routing write landed).
            self.notify(&prev);
            for phase in verdicts {
                self.ctx
                    .metrics
                    .analysis_run(&self.namespace, &self.name, phase);
            }
            // A run the status no longer keeps (new revision, retry) leaves /metrics too, so
            // measurement series do not pile up release after release.
            for run in dropped {
                self.ctx
                    .metrics
                    .forget_run(&self.namespace, &self.name, &run);
            }
        }
        // Events go last (a stable sort keeps each group's order): they only report, and a
        // rollback must not wait for their writes.
        let mut effects = effects;
        effects.sort_by_key(|e| matches!(e, Effect::Event(_)));
        {
            for effect in effects {
                match effect {
                    Effect::ApplyRouting(desired) => {
                        let result = match self.saver.unsaved() {
                            // Fed back as a routing failure: the machine retries it later and
                            // says why; the status (and its retry) gets saved meanwhile.
                            Some(u) if desired.exposes_canary() => Err(format!(
                                "the status could not be saved, so the canary's traffic is \
                                 held until it is: {}",
                                u.error
                            )),
                            // Same for a canary whose OAP never answered (a resumed run or a
                            // command; a new run waits Pending before any write).
                            _ if desired.exposes_canary() && !self.oap.answered() => {
                                Err(self.oap.hold().unwrap_or_default())
                            }
                            _ => match overlapped.take() {
                                Some((done, result)) if done == desired => result,
                                _ => self.apply_routing(&desired).await,
                            },
                        };
                        // The routes say this run was rolled back: the machine aborts it
                        // (and asks for the rollback) instead of retrying the exposure.
                        if matches!(&result, Err(e) if e == ROLLED_BACK_REFUSAL) {
                            queue.push_back(Input::RolledBackMarker(machine::run_marker(
                                &self.status,
                            )));
                        }
                        if result.is_ok() {
                            // The routes hold ours now: a foreign version seen before, if
                            // written again, is a new drift.
                            self.drift_seen.clear();
                        }
                        queue.push_back(Input::Routing(result));
                    }
                    Effect::RestoreRoutes => self.restore_routes().await,
                    Effect::StartAnalysis {
                        name,
                        kind,
                        templates,
                        args,
                    } => {
                        // The machine must hear about it: an analysis that cannot run is an Error.
                        if let Err(e) =
                            self.start_analysis(name.clone(), kind, &templates, &args, None)
                        {
                            let status = e.failed_run(self.ctx.clock.now());
                            queue.push_back(Input::Analysis { name, status });
                        }
                    }
                    Effect::TerminateAnalysis { name, reason } => {
                        if let Some(stop) = self.stops.remove(&name) {
                            let _ = stop.send(Some(reason));
                        }
                    }
                    Effect::Event(ev) => self.event(&ev).await,
                    Effect::WakeAt(t) => self.wake = Some(self.wake.map_or(t, |w| w.min(t))),
                    // Taken as `refused` above; its Event is among the effects.
                    Effect::CommandRejected(_) => {}
                }
            }
        }
        refused
    }

    /// Saves the status (a failed save is retried by [`Saver`] until it lands), then shows
    /// it in `/metrics` and to the API.
    async fn publish(&mut self) {
        machine::stamp_unstarted_revision(&self.doc.spec, &mut self.status);
        machine::stamp_step_label(&self.doc.spec, &mut self.status);
        let generation = crate::state::conditions::generation_of(&self.doc.metadata);
        let now = self.ctx.clock.now();
        save_after_routing(
            &mut self.saver,
            &mut self.status,
            (generation, now),
            None,
            self.ctx.router.store(),
        )
        .await;
        self.published();
    }

    /// [`publish`](Self::publish) together with the rollback write `desired`: the write reads,
    /// plans and prepares while the status is saved, and becomes visible only once the save
    /// is over ([`CommitGate`]). Failed or not, the save opens the gate: a rollback never waits
    /// for a status that cannot be saved (RELIABILITY.md, the rollback invariant).
    async fn publish_with_rollback(
        &mut self,
        desired: &DesiredRouting,
    ) -> Result<(DesiredRouting, Vec<RouteWeights>), String> {
        machine::stamp_unstarted_revision(&self.doc.spec, &mut self.status);
        machine::stamp_step_label(&self.doc.spec, &mut self.status);
        let op = self.marker_op(desired);
        let generation = crate::state::conditions::generation_of(&self.doc.metadata);
        let now = self.ctx.clock.now();
        let (opener, gate) = CommitGate::closed();
        let (saver, status, ctx) = (&mut self.saver, &mut self.status, &self.ctx);
        let save = async move {
            let when = (generation, now);
            save_after_routing(saver, status, when, Some(opener), ctx.router.store()).await;
        };
        let write = write_routing(ctx, &self.routing, &self.namespace, desired, op, &gate);
        let ((), result) = tokio::join!(save, write);
        self.published();
        result
    }

    /// Shows the status just saved in `/metrics` and to the API. The phase and weight gauges
    /// are set only when they differ from the status shown before (most saves record a
    /// measurement and change neither); the task's start sets them once.
    fn published(&self) {
        let (phase_changed, weights_changed) = {
            let shown = self.status_tx.borrow();
            (
                shown.phase != self.status.phase,
                shown.weights != self.status.weights,
            )
        };
        if phase_changed {
            self.ctx
                .metrics
                .set_canary_phase(&self.namespace, &self.name, self.status.phase);
        }
        if weights_changed {
            self.ctx
                .metrics
                .set_canary_weights(&self.namespace, &self.name, &self.status.weights);
        }
        let _ = self.status_tx.send(self.status.clone());
    }

    /// Queues the notifications of the change `prev` → the current status; never waits.
    fn notify(&self, prev: &CanaryStatus) {
        let found = crate::notify::canary_transitions(
            &self.namespace,
            &self.name,
            self.doc.spec.steps.len(),
            prev,
            &self.status,
            self.ctx.clock.now(),
        );
        for n in &found {
            self.ctx
                .notifier
                .notify(self.doc.spec.notifications.as_deref(), n);
        }
    }

    async fn event(&self, ev: &CanaryEvent) {
        let step = step_label(ev.step, self.doc.spec.steps.len());
        if ev.warning {
            tracing::warn!(reason = %ev.reason, %step, "{}", ev.message);
        } else {
            tracing::info!(reason = %ev.reason, %step, "{}", ev.message);
        }
        self.ctx
            .metrics
            .decision(&self.namespace, &self.name, &ev.reason);
        self.ctx
            .metrics
            .canary_event(&ev.reason, self.status.started_at, self.ctx.clock.now());
        if let Some(client) = &self.ctx.events {
            use crate::traffic::kube::{EventType, emit_event};
            let involved = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(crate::resources::API_VERSION.to_string()),
                kind: Some("Canary".into()),
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                // `kubectl describe` lists an object's Events by its uid.
                uid: self
                    .doc
                    .metadata
                    .server_fields
                    .get("uid")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string),
                ..Default::default()
            };
            let kind = if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            if let Err(e) = emit_event(
                client,
                &self.namespace,
                &involved,
                &ev.reason,
                &ev.message,
                kind,
            )
            .await
            {
                tracing::warn!("could not record event {}: {e}", ev.reason);
            }
        }
    }

    fn targets(&self) -> (Vec<ObjectKey>, Option<ObjectKey>) {
        (
            virtual_service_keys(&self.routing, &self.namespace),
            destination_rule_key(&self.routing, &self.namespace),
        )
    }

    async fn apply_routing(
        &self,
        desired: &DesiredRouting,
    ) -> Result<(DesiredRouting, Vec<RouteWeights>), String> {
        let op = self.marker_op(desired);
        write_routing(
            &self.ctx,
            &self.routing,
            &self.namespace,
            desired,
            op,
            &CommitGate::open(),
        )
        .await
    }

    /// The rollback marker: written with a rollback, checked by exposing writes.
    fn marker_op(&self, desired: &DesiredRouting) -> MarkerOp {
        let run = machine::run_marker(&self.status);
        if desired.exposes_canary() {
            MarkerOp::Guard { run }
        } else if matches!(
            self.status.phase,
            super::model::CanaryPhase::Aborted | super::model::CanaryPhase::RolledBack
        ) {
            MarkerOp::Set {
                run,
                at: self
                    .ctx
                    .clock
                    .now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }
        } else {
            MarkerOp::Keep
        }
    }

    /// Answers the alarm being handled, if any, with `status`.
    fn answer_alarm(&mut self, status: &CanaryStatus) {
        if let Some(AlarmReply { done, received }) = self.alarm_reply.take() {
            self.ctx.metrics.alarm_rollback_latency(received.elapsed());
            if let Some(done) = done {
                let _ = done.send(status.clone());
            }
        }
    }

    /// Re-reads this canary's VirtualServices and queues one [`Input::Drift`] first when
    /// someone else changed what the canary holds there (DESIGN §5: corrected, counted, and
    /// paused when repeated). Nothing is judged while a write of ours is pending, and a
    /// VirtualService that cannot be read now is left to the next write to report.
    async fn check_drift(&mut self, queue: &mut VecDeque<Input>) {
        let Some(desired) = machine::defended_routing(&self.doc.spec, &self.status).cloned() else {
            return;
        };
        let (targets, _) = self.targets();
        let mut found = Vec::new();
        for (key, vs_ref) in targets.iter().zip(&self.routing.virtual_services) {
            let current = match self.ctx.router.store().get(key).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("drift check: cannot read {key}: {e}");
                    continue;
                }
            };
            if self.drift_seen.get(key) == Some(&current.version) {
                continue;
            }
            let intended = Intended {
                routing: &self.routing,
                vs_ref,
                desired: &desired,
            };
            match drift::detect_drift(&intended, &current.object) {
                Some(d) => {
                    self.ctx
                        .metrics
                        .traffic_drift(&self.namespace, &self.name, &vs_ref.name);
                    self.drift_seen.insert(key.clone(), current.version);
                    found.push(d.to_string());
                }
                None => {
                    self.drift_seen.remove(key);
                }
            }
        }
        if !found.is_empty() {
            queue.push_front(Input::Drift {
                detail: found.join("; "),
            });
        }
    }

    /// The weights of every managed route as the VirtualServices hold them now.
    async fn observe_routes(&self) -> Result<Vec<RouteWeights>, String> {
        Ok(self.observe().await?.0)
    }

    /// The weights, and the runs the VirtualServices' rollback markers name.
    async fn observe(&self) -> Result<(Vec<RouteWeights>, Vec<String>), String> {
        observe(&self.ctx, &self.routing, &self.namespace).await
    }

    /// onSuccess: Restore. A VirtualService a user edited since our last write is kept and
    /// reported (drift), never overwritten.
    async fn restore_routes(&self) {
        let (targets, _) = self.targets();
        for key in targets {
            let restored = async {
                let current = self
                    .ctx
                    .router
                    .store()
                    .get(&key)
                    .await
                    .map_err(|e| e.to_string())?;
                match istio::restore(&current.object).map_err(|e| e.to_string())? {
                    Restore::Restored(v) => {
                        self.ctx
                            .router
                            .store()
                            .replace(&key, &v, &current.version)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>("original routes restored".to_string())
                    }
                    Restore::NothingRecorded => Ok("nothing to restore".to_string()),
                    Restore::Drift { reason } => {
                        Err(format!("not restored, edited since: {reason}"))
                    }
                }
            }
            .await;
            let ev = match restored {
                Ok(m) => CanaryEvent {
                    warning: false,
                    reason: "TrafficRoutingRestored".into(),
                    message: format!("{key}: {m}"),
                    step: self.status.current_step_index,
                },
                Err(m) => CanaryEvent {
                    warning: true,
                    reason: "TrafficRoutingDrift".into(),
                    message: format!("{key}: {m}"),
                    step: self.status.current_step_index,
                },
            };
            self.event(&ev).await;
        }
    }

    /// Restarts the runs that were in flight when the daemon stopped, from their persisted
    /// state (same counts, same measurements).
    /// Returns the Error results of runs that cannot start again, for the machine.
    fn resume_analyses(&mut self) -> Vec<Input> {
        let runs: Vec<_> = self
            .status
            .analysis_runs
            .iter()
            .filter(|r| !r.status.phase.is_completed())
            .filter(|r| {
                Some(&r.name) == self.status.step_analysis_run.as_ref()
                    || Some(&r.name) == self.status.background_analysis_run.as_ref()
            })
            .map(|r| (r.name.clone(), r.kind.clone(), r.status.clone()))
            .collect();
        let mut failed = Vec::new();
        for (name, kind, state) in runs {
            let (templates, args) = self.analysis_spec(&kind);
            if let Err(e) = self.start_analysis(name.clone(), kind, &templates, &args, Some(state))
            {
                let status = e.failed_run(self.ctx.clock.now());
                failed.push(Input::Analysis { name, status });
            }
        }
        failed
    }

    fn analysis_spec(&self, kind: &AnalysisRunKind) -> (Vec<TemplateRef>, Vec<ArgValue>) {
        use crate::resources::canary::CanaryStep;
        match kind {
            AnalysisRunKind::Background => self
                .doc
                .spec
                .analysis
                .as_ref()
                .map(|a| (a.templates.clone(), a.args.clone()))
                .unwrap_or_default(),
            AnalysisRunKind::Step { index } => match self.doc.spec.steps.get(*index as usize) {
                Some(CanaryStep::Analysis(a)) => (a.templates.clone(), a.args.clone()),
                _ => (Vec::new(), Vec::new()),
            },
        }
    }

    /// Spawns the analysis run `name`; an analysis that cannot be planned or connected is
    /// returned as an error before anything is spawned (the caller records it as an Error).
    fn start_analysis(
        &mut self,
        name: String,
        kind: AnalysisRunKind,
        templates: &[TemplateRef],
        args: &[ArgValue],
        resume: Option<RunState>,
    ) -> Result<(), runner::StartError> {
        let plan = self.plan_analysis(templates, args)?;
        self.routing_changes
            .send_if_modified(|c| replace_if_changed(c, self.status.routing_changed_at));
        let routing_changes = self.routing_changes.subscribe();
        let tx = self.tx.clone();
        // The run's step, 1-based as everywhere shown (`3/7`; the run's name keeps the index).
        let step = match kind {
            AnalysisRunKind::Background => None,
            AnalysisRunKind::Step { index } => Some(step_label(index, self.doc.spec.steps.len())),
        };
        let kind_label = step
            .as_ref()
            .map_or_else(|| "background".to_string(), |s| format!("step {s}"));
        let template_names = templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        // A child of the canary's span: its measurements' lines carry the run, its templates
        // and (a step's run) the step.
        let span = tracing::info_span!(
            "analysis",
            run = %name,
            templates = %template_names,
            step = step.as_deref()
        );
        span.in_scope(|| {
            tracing::info!(
                "starting {kind_label} analysis ({} metric(s))",
                plan.spec.metrics.len()
            );
        });
        let (events, run) = (tx.clone(), name.clone());
        let on_event = move |ev: RunEvent<'_>| match ev {
            RunEvent::Measured { state, metric, .. } => {
                let _ = events.send(CanaryTaskMsg::Analysis {
                    name: run.clone(),
                    state: Box::new(state.clone()),
                    measured: Some(metric.to_string()),
                });
            }
            // The status says why nothing is measured yet, and until when.
            RunEvent::Waiting(state) => {
                let _ = events.send(CanaryTaskMsg::Analysis {
                    name: run.clone(),
                    state: Box::new(state.clone()),
                    measured: None,
                });
            }
            RunEvent::Finished(_) => {}
        };
        let start = runner::RunStart {
            name: name.clone(),
            plan,
            clock: self.ctx.clock.clone(),
            resume,
            routing: Some(routing_changes),
            span,
            on_event,
            done: move |done: RunState| {
                let _ = tx.send(CanaryTaskMsg::Analysis {
                    name,
                    state: Box::new(done),
                    measured: None,
                });
            },
        };
        runner::spawn_run(start, &self.ctx.clients, &mut self.stops)
    }

    fn plan_analysis(
        &self,
        templates: &[TemplateRef],
        args: &[ArgValue],
    ) -> Result<runner::RunPlan, runner::PlanError> {
        super::preflight::plan_analysis(
            &self.ctx.templates,
            &self.namespace,
            templates,
            args,
            &self.ctx.defaults,
        )
    }

    fn observe_measurement(&self, run: &str, metric: &str, state: &RunState) {
        let last = state
            .metric_results
            .iter()
            .find(|m| m.name == metric)
            .and_then(|m| m.measurements.last());
        if let Some(m) = last {
            let evidence = m.evidence.as_ref();
            self.ctx.metrics.record_measurement(
                &self.namespace,
                &self.name,
                run,
                metric,
                m.phase,
                evidence.and_then(MeasurementEvidence::last_value),
            );
            let thresholds: Vec<(ConditionKind, f64)> =
                [ConditionKind::Success, ConditionKind::Failure]
                    .into_iter()
                    .filter_map(|kind| Some((kind, evidence?.threshold(kind)?.1)))
                    .collect();
            self.ctx.metrics.set_measurement_thresholds(
                &self.namespace,
                &self.name,
                run,
                metric,
                &thresholds,
            );
        }
    }
}

/// Sets `slot` to `value`; true (receivers are told) only when it changed.
/// The one rollback (a routing write that exposes nothing) among `effects` that may be
/// written while the status is saved; `None` when there is none or when routes are also
/// restored (that goes in the order the machine asked).
fn overlappable_rollback(effects: &[Effect]) -> Option<DesiredRouting> {
    let mut writes = effects.iter().filter_map(|e| match e {
        Effect::ApplyRouting(d) => Some(d),
        _ => None,
    });
    let desired = writes.next()?;
    let restores = effects.iter().any(|e| matches!(e, Effect::RestoreRoutes));
    (!desired.exposes_canary() && writes.next().is_none() && !restores).then(|| desired.clone())
}

/// Saves `status` once every routing write answered so far is durable
/// ([`ManifestStore::sync_written`]): a status that records a write as applied never reaches
/// the disk before the write, so after a power loss the saved status still has it pending and
/// a restart sends it again. A write that cannot be made durable fails the save, retried.
/// `rollback`: the opener of the gate a rollback's routing write waits on; the save goes in
/// [`WriteLane::Rollback`] and opens it as saved the moment the status is durable, or
/// unsaved (dropped) when it fails. True when the status landed.
async fn save_after_routing<S: ManifestStore>(
    saver: &mut Saver<CanaryStatus>,
    status: &mut CanaryStatus,
    (generation, now): (Option<i64>, DateTime<Utc>),
    rollback: Option<GateOpener>,
    routes: &S,
) -> bool {
    match routes.sync_written().await {
        Ok(()) => match rollback {
            Some(opener) => saver.save_rollback(status, generation, now, opener).await,
            None => {
                saver
                    .save_in(WriteLane::Routine, status, generation, now)
                    .await
            }
        },
        Err(e) => {
            saver.failed(
                format!("not saved until the routing written before it is on disk: {e}"),
                now,
            );
            false
        }
    }
}

/// Writes `desired` to the canary's VirtualServices, visible once `gate` is open, and returns
/// the weights they now hold: read back, or taken from what was written when the store reads
/// back exactly that ([`ManifestStore::reads_back_as_written`]). Forward moves are all-or-nothing; a move back to stable writes every
/// VirtualService it can and reports the rest, which the machine retries (rollback pending).
async fn write_routing<S: ManifestStore + 'static>(
    ctx: &CanaryTaskContext<S>,
    routing: &IstioRouting,
    namespace: &str,
    desired: &DesiredRouting,
    op: MarkerOp,
    gate: &CommitGate,
) -> Result<(DesiredRouting, Vec<RouteWeights>), String> {
    let targets = virtual_service_keys(routing, namespace);
    let dr = destination_rule_key(routing, namespace);
    let desired_planner = DesiredPlanner { routing, desired };
    let planner = MarkedPlanner::new(&desired_planner, op);
    let applied = if desired.exposes_canary() {
        gate.wait().await;
        ctx.router.apply(&targets, dr.as_ref(), &planner).await
    } else {
        ctx.router
            .apply_each_after(&targets, dr.as_ref(), &planner, gate)
            .await
    };
    if planner.refused() {
        return Err(ROLLED_BACK_REFUSAL.to_string());
    }
    let report = applied.map_err(|e| e.to_string())?;
    if desired.exposes_canary() {
        stand_by_rollback(ctx, routing, &targets).await;
    }
    for _ in 0..report.conflicts_retried {
        ctx.metrics.kube_write_conflict("VirtualService");
    }
    let weights =
        if ctx.router.store().reads_back_as_written() && report.objects.len() == targets.len() {
            // What was just written is what a read would return: no second read on the
            // rollback's path.
            let objects: Vec<&serde_json::Value> = report.objects.iter().map(|(_, o)| o).collect();
            weights_of(routing, &objects)?
        } else {
            observe(ctx, routing, namespace).await?.0
        };
    Ok((desired.clone(), weights))
}

/// Prepares the rollback from the routes as they are now (weight 0, managed routes removed;
/// [`Router::stand_by_each`]), so an alarm only has to make it visible. The rollback marker
/// it also writes goes to the file store's sidecar, not into the prepared text.
async fn stand_by_rollback<S: ManifestStore + 'static>(
    ctx: &CanaryTaskContext<S>,
    routing: &IstioRouting,
    targets: &[ObjectKey],
) {
    let back = DesiredRouting::weight(0);
    let rollback = DesiredPlanner {
        routing,
        desired: &back,
    };
    ctx.router.stand_by_each(targets, &rollback).await;
}

/// The weights of every managed route as the VirtualServices hold them now, and the runs
/// their rollback markers name.
async fn observe<S: ManifestStore + 'static>(
    ctx: &CanaryTaskContext<S>,
    routing: &IstioRouting,
    namespace: &str,
) -> Result<(Vec<RouteWeights>, Vec<String>), String> {
    let targets = virtual_service_keys(routing, namespace);
    let objects = ctx.router.read(&targets).await.map_err(|e| e.to_string())?;
    let weights = weights_of(
        routing,
        &objects.iter().map(|o| &o.object).collect::<Vec<_>>(),
    )?;
    let mut markers = Vec::new();
    for o in &objects {
        if let Some(run) = istio::rollback_marker(&o.object)
            && !markers.iter().any(|m| m == run)
        {
            markers.push(run.to_string());
        }
    }
    Ok((weights, markers))
}

/// The weights of every managed route of `objects`, the routing's VirtualServices in order.
fn weights_of(
    routing: &IstioRouting,
    objects: &[&serde_json::Value],
) -> Result<Vec<RouteWeights>, String> {
    let mut weights = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let mut w = istio::read_weights(o, &routing.virtual_services[i], routing)
            .map_err(|e| e.to_string())?;
        weights.append(&mut w);
    }
    Ok(weights)
}

fn replace_if_changed(slot: &mut Option<DateTime<Utc>>, value: Option<DateTime<Utc>>) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// Phases of the runs that reached a verdict between two statuses. Counted when the verdict
/// is persisted, so `skycanary_analysis_runs_total` sees each run once, also across restarts
/// (a resumed daemon reads completed runs back as completed).
fn newly_completed(before: &CanaryStatus, after: &CanaryStatus) -> Vec<Phase> {
    after
        .analysis_runs
        .iter()
        .filter(|r| r.status.phase.is_completed())
        .filter(|r| {
            !before
                .analysis_runs
                .iter()
                .any(|b| b.name == r.name && b.status.phase.is_completed())
        })
        .map(|r| r.status.phase)
        .collect()
}

/// Why a forwarded alarm must not act: it started before the canary's current run (an alarm
/// about the previous release). None for every other request.
fn stale_forwarded_alarm(status: &CanaryStatus, req: &CommandRequest) -> Option<String> {
    let decision = crate::alarm::accept::forwarded(req, status.started_at)?;
    let rule = req.alarm.as_ref().map_or("", |a| a.rule.as_str());
    (!decision.acts()).then(|| decision.reason(rule))
}

/// Names of the runs `before` kept that `after` no longer has.
fn dropped_runs(before: &CanaryStatus, after: &CanaryStatus) -> Vec<String> {
    before
        .analysis_runs
        .iter()
        .filter(|b| !after.analysis_runs.iter().any(|a| a.name == b.name))
        .map(|b| b.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{CanaryStatus, Phase, dropped_runs, newly_completed};
    use crate::analysis::{RunSpec, start_run};
    use crate::canary::model::{AnalysisRunKind, AnalysisRunStatus};

    fn with_runs(runs: &[(&str, Phase)]) -> CanaryStatus {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        CanaryStatus {
            analysis_runs: runs
                .iter()
                .map(|(name, phase)| {
                    let mut status = start_run(&RunSpec::default(), now);
                    status.phase = *phase;
                    AnalysisRunStatus {
                        name: name.to_string(),
                        kind: AnalysisRunKind::Background,
                        templates: vec!["apdex".into()],
                        status,
                    }
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_is_counted_once_when_its_verdict_appears() {
        let running = with_runs(&[("a", Phase::Successful), ("b", Phase::Running)]);
        let failed = with_runs(&[("a", Phase::Successful), ("b", Phase::Failed)]);
        assert_eq!(newly_completed(&running, &failed), vec![Phase::Failed]);
        // Later writes (or a restarted daemon reading it back) do not count it again.
        assert_eq!(newly_completed(&failed, &failed), Vec::<Phase>::new());
        // A measurement that does not end the run is no verdict.
        assert_eq!(newly_completed(&running, &running), Vec::<Phase>::new());
        // A run that appears already decided (e.g. it could not start) counts.
        let none = with_runs(&[]);
        let error = with_runs(&[("c", Phase::Error)]);
        assert_eq!(newly_completed(&none, &error), vec![Phase::Error]);
    }

    #[test]
    fn runs_the_status_no_longer_keeps_are_dropped() {
        let old = with_runs(&[("v1-bg", Phase::Failed), ("v1-step-1", Phase::Successful)]);
        let new = with_runs(&[("v2-bg", Phase::Running)]);
        assert_eq!(dropped_runs(&old, &new), vec!["v1-bg", "v1-step-1"]);
        assert!(dropped_runs(&new, &new).is_empty());
        assert!(dropped_runs(&with_runs(&[]), &new).is_empty());
    }

    /// `fromSubset` follows a relabelled or removed subset: the DestinationRule is read again
    /// once [`super::SUBSET_REFRESH`] has passed, not on every readiness poll.
    #[tokio::test(start_paused = true)]
    async fn subset_labels_are_read_again_after_the_refresh_interval() {
        use crate::canary::readiness::{SubsetRefs, resolve_ref};
        use crate::resources::canary::WorkloadRef;
        use crate::traffic::memory::MemoryManifestStore;
        use crate::traffic::store::ObjectKey;
        let store = MemoryManifestStore::new();
        let key = ObjectKey::destination_rule("bookinfo", "reviews");
        let dr = |v: &str| serde_json::json!({"spec": {"subsets": [{"name": "v2", "labels": {"version": v}}]}});
        store.insert(key.clone(), dr("v2"));
        let refs = SubsetRefs {
            destination_rule: key.to_string(),
            canary: "v2".into(),
            stable: "v1".into(),
        };
        let router = std::sync::Arc::new(crate::traffic::router::Router::new(store.clone()));
        let mut s = super::SubsetLabels::new(router, key.clone(), refs);
        let r = WorkloadRef {
            from_subset: true,
            ..WorkloadRef::default()
        };
        let version = |s: &super::SubsetLabels<MemoryManifestStore>| {
            resolve_ref(&r, "v2", &s.refs, &s.dr)
                .map(|w| w.selector.unwrap().match_labels["version"].clone())
        };
        s.refresh().await;
        assert_eq!(version(&s), Ok("v2".to_string()));
        store.insert(key.clone(), dr("v2b"));
        tokio::time::advance(super::SUBSET_REFRESH / 2).await;
        s.refresh().await;
        assert_eq!(version(&s), Ok("v2".to_string()), "not read again yet");
        tokio::time::advance(super::SUBSET_REFRESH / 2).await;
        s.refresh().await;
        assert_eq!(version(&s), Ok("v2b".to_string()));
        store.remove(&key);
        tokio::time::advance(super::SUBSET_REFRESH).await;
        s.refresh().await;
        let e = version(&s).unwrap_err();
        assert!(
            e.contains("DestinationRule bookinfo/reviews not found"),
            "{e}"
        );
    }

    /// The barrier before every status save: while the routing written before it is not on
    /// disk (`sync_written` fails), the status is not saved, the save is reported and
    /// retried; once the routing is durable, the same call saves it.
    #[tokio::test]
    async fn a_status_is_saved_only_once_the_routing_written_before_it_is_on_disk() {
        use super::save_after_routing;
        use crate::canary::CanaryPhase;
        use crate::state::{FileStatusStore, StatusStore};
        use crate::task::{ObjectId, SaveMetrics, Saver, StateKind};
        use crate::traffic::gate::CommitGate;
        use crate::traffic::memory::{MemoryManifestStore, Op, Target};
        use crate::traffic::store::ManifestStoreError;
        use std::sync::Mutex;

        #[derive(Default)]
        struct Failures(Mutex<Vec<String>>);
        impl SaveMetrics for Failures {
            fn state_save_failed(&self, _: StateKind, _: &str, _: &str, error: &str) {
                self.0.lock().unwrap().push(error.to_string());
            }
            fn state_saved(&self, _: StateKind, _: &str, _: &str) {}
        }

        let dir = tempfile::tempdir().unwrap();
        let state: StatusStore = StatusStore::file(FileStatusStore::open(dir.path()).unwrap());
        let routes = MemoryManifestStore::new();
        routes.inject(
            Op::Sync,
            Target::Any,
            ManifestStoreError::Backend("manifests/reviews.yaml's directory: EIO".into()),
            1,
        );
        let metrics = std::sync::Arc::new(Failures::default());
        let mut saver = Saver::new(
            ObjectId {
                kind: StateKind::Canary,
                namespace: "bookinfo".into(),
                name: "reviews".into(),
            },
            state.clone(),
            metrics.clone(),
        );
        let mut status = CanaryStatus {
            phase: CanaryPhase::Aborted,
            ..Default::default()
        };
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();

        // The first save meets the failing sync, the second a durable write.
        for durable in [false, true] {
            let (opener, gate) = CommitGate::closed();
            let landed =
                save_after_routing(&mut saver, &mut status, (None, now), Some(opener), &routes)
                    .await;
            assert_eq!(landed, durable);
            assert!(gate.is_open(), "a save that ended holds no rollback");
            assert_eq!(
                gate.saved(),
                durable,
                "the outcome a rollback's gate is opened with"
            );
            let saved = state.load_raw("bookinfo", "reviews").await.unwrap();
            if durable {
                assert_eq!(saved.map(|s| s.phase), Some(CanaryPhase::Aborted));
                assert!(saver.unsaved().is_none());
            } else {
                assert_eq!(saved, None);
                let unsaved = saver.unsaved().expect("the save is pending");
                assert!(
                    unsaved.error.contains("on disk") && unsaved.error.contains("EIO"),
                    "{}",
                    unsaved.error
                );
            }
            assert_eq!(metrics.0.lock().unwrap().len(), 1);
        }
    }
}
