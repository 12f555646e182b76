//! The scheduler (I/O): one task per ScheduledAnalysis. It sleeps on the injected clock until
//! the next fire time, asks the pure policy what is due, runs the templates through the
//! analysis runner against SkyWalking, keeps the status (persisted after every change), and
//! performs the actions on a run's result: rollback of a canary (awaited, in the same loop)
//! and webhooks (delivered in the background with bounded retries, never blocking the
//! schedule).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::cron::CronSchedule;
use super::model::*;
use super::policy::{self, Admission, Delivery, Due};
use super::store::ScheduleStatusStore;
use crate::analysis::{Phase, RunSpec, RunState};
use crate::canary::{AbortStatus, CanaryPhase, CanaryStatus};
use crate::resources::LoadedScheduled;
use crate::resources::load::LoadedTemplate;
use crate::resources::scheduled::{ScheduledAnalysisDoc, WebhookAction, canary_ref};
use crate::runner::{self, Clock, Defaults, RunEvent, StartError};
use crate::task::{self, ObjectId, SaveMetrics, Saver, StateKind, TaskHandle, TaskMsg};

/// What a schedule task reports to `/metrics` (the server's `Metrics` implements it); status
/// save outcomes go through [`SaveMetrics`], shared with the canary tasks.
pub trait ScheduleMetrics: SaveMetrics {
    /// A fire time's or run's outcome (`Successful`, `Failed`, `Skipped`, `Missed`, ...).
    fn scheduled_run(&self, namespace: &str, name: &str, outcome: &str);
    /// An action on a run's result (`rollback`, `webhook`) and how it went.
    fn scheduled_action(&self, namespace: &str, name: &str, action: &str, outcome: &str);
}

/// Rolls canaries back on a scheduled analysis' verdict (the daemon's canary tasks).
pub trait CanaryRollback: Send + Sync {
    /// Sends the rollback to canary `namespace/name`; resolves to its status once handled
    /// (weights written), or why it could not be delivered.
    fn rollback(
        &self,
        namespace: &str,
        name: &str,
        why: AbortStatus,
    ) -> BoxFuture<'static, Result<CanaryStatus, String>>;
}

/// Everything a schedule task needs besides its ScheduledAnalysis.
#[derive(Clone)]
pub struct ScheduleTaskContext {
    /// The templates the analyses are planned from (file and cluster ones merged).
    pub templates: Arc<Vec<LoadedTemplate>>,
    /// Status persistence.
    pub state: ScheduleStatusStore,
    /// The daemon's clock: fire times and run windows are computed on it.
    pub clock: Arc<dyn Clock>,
    /// Default OAP and timezone.
    pub defaults: Defaults,
    /// Where the task's metrics go (the server's `Metrics` in the daemon).
    pub metrics: Arc<dyn ScheduleMetrics>,
    /// Canary rollbacks.
    pub canaries: Arc<dyn CanaryRollback>,
    /// Webhook client.
    pub http: reqwest::Client,
    /// SkyWalking clients, shared with the canary tasks (and their request observer).
    pub clients: runner::ClientCache,
    /// Run notifications (enqueued; delivered beside the task).
    pub notifier: crate::notify::Notifier,
}

impl ScheduleTaskContext {
    /// A webhook client (rustls, no redirects to other hosts).
    pub fn webhook_client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }
}

/// Why a run could not be started now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNowError {
    /// concurrencyPolicy Forbid and these runs are going.
    #[error("concurrencyPolicy is Forbid and run(s) {} are still going", .0.join(", "))]
    Busy(Vec<String>),
    /// The task has stopped.
    #[error("the scheduler task has stopped")]
    Stopped,
}

/// Messages to a schedule task.
#[derive(Debug)]
pub enum ScheduleTaskMsg {
    /// Start a run now (respecting concurrencyPolicy).
    RunNow(oneshot::Sender<Result<RunStarted, RunNowError>>),
    /// Progress of a run: a measurement (`done` false) or its final state.
    Progress {
        /// Run name.
        run: String,
        /// Its state.
        state: Box<RunState>,
        /// The run ended.
        done: bool,
    },
    /// A webhook delivery ended (or made an attempt).
    Webhook {
        /// Run name.
        run: String,
        /// The action's index in the run's `actions`.
        index: usize,
        /// Its record.
        record: ActionRecord,
    },
    /// Stop the task (daemon shutdown or reload); runs are stopped, their state kept.
    Stop,
}

impl TaskMsg for ScheduleTaskMsg {
    const STOP: Self = ScheduleTaskMsg::Stop;
}

/// Handle on a running schedule task: the object task handle every kind shares.
pub type ScheduleHandle =
    TaskHandle<ScheduledAnalysisDoc, ScheduleTaskMsg, ScheduledAnalysisStatus>;

impl ScheduleHandle {
    /// What the API shows.
    pub fn summary(&self) -> ScheduleSummary {
        let spec = &self.doc.spec;
        ScheduleSummary {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            schedule: spec.schedule.clone(),
            time_zone: spec.time_zone.clone().unwrap_or_else(|| "UTC".into()),
            concurrency_policy: spec.concurrency_policy,
            suspend: spec.suspend,
            templates: spec
                .templates
                .iter()
                .map(|t| t.template_name.clone())
                .collect(),
            status: self.status.borrow().clone(),
        }
    }

    /// Starts a run now.
    pub async fn run_now(&self) -> Result<RunStarted, RunNowError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(ScheduleTaskMsg::RunNow(tx))
            .map_err(|_| RunNowError::Stopped)?;
        rx.await.map_err(|_| RunNowError::Stopped)?
    }
}

/// Starts the task of one ScheduledAnalysis; it resumes from its persisted status (read
/// again with backoff while the store is unavailable). The schedule was validated at load
/// time; should it not parse, the task reports why and idles.
pub fn spawn(s: &LoadedScheduled, ctx: ScheduleTaskContext) -> ScheduleHandle {
    let namespace = s.namespace().to_string();
    let name = s.doc.metadata.name.clone();
    let doc = Arc::new(s.doc.clone());
    let schedule = CronSchedule::parse(&doc.spec.schedule, doc.spec.time_zone.as_deref());
    let task_doc = doc.clone();
    let id = ObjectId {
        kind: StateKind::Scheduled,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let (store, metrics) = (ctx.state.clone(), ctx.metrics.clone());
    // The task is built before its future exists (nothing is awaited on the way): the future
    // holds the task and its inbox, not `started` as well (see the canary driver's).
    let run = move |started: task::Started<ScheduleTaskMsg, ScheduledAnalysisStatus>| {
        let schedule = match schedule {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("invalid schedule, not scheduling: {e}");
                let _ = started.status_tx.send(ScheduledAnalysisStatus {
                    message: Some(format!("invalid schedule: {e}")),
                    ..Default::default()
                });
                return futures_util::future::Either::Left(std::future::ready(None));
            }
        };
        let task = ScheduleTask {
            namespace,
            name,
            doc: task_doc,
            schedule,
            ctx,
            tx: started.tx,
            // The spec is valid again (this task runs it): a refusal recorded while it
            // was not is cleared by the first write.
            status: ScheduledAnalysisStatus {
                invalid_spec: None,
                ..started.status
            },
            published: None,
            status_tx: started.status_tx,
            stops: HashMap::new(),
            saver: started.saver,
        };
        let rx = started.rx;
        futures_util::future::Either::Right(async move { Some(task.run(rx).await) })
    };
    task::spawn(id, doc, store, metrics, None, run)
}

/// One running schedule task: the ScheduledAnalysis, its cron schedule and in-memory status,
/// and its runs in flight. Only the task's loop touches it; the rest of the daemon talks
/// through its [`ScheduleHandle`].
struct ScheduleTask {
    namespace: String,
    name: String,
    doc: Arc<ScheduledAnalysisDoc>,
    schedule: CronSchedule,
    ctx: ScheduleTaskContext,
    tx: mpsc::UnboundedSender<ScheduleTaskMsg>,
    status: ScheduledAnalysisStatus,
    published: Option<ScheduledAnalysisStatus>,
    status_tx: watch::Sender<ScheduledAnalysisStatus>,
    /// Stop switches of running runs.
    stops: HashMap<String, watch::Sender<Option<String>>>,
    /// Status writes, retried until they land.
    saver: Saver<ScheduledAnalysisStatus>,
}

impl ScheduleTask {
    /// The task's loop; returns the last in-memory status.
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<ScheduleTaskMsg>,
    ) -> ScheduledAnalysisStatus {
        if self.status.tracking_since.is_none() {
            self.status.tracking_since = Some(self.ctx.clock.now());
        }
        self.resume_active().await;
        loop {
            let now = self.ctx.clock.now();
            let wake = match policy::due(&self.schedule, &self.doc.spec, &self.status, now) {
                Due::Wait { next } => next,
                Due::Run {
                    scheduled,
                    missed,
                    next,
                } => {
                    self.fire(scheduled, missed).await;
                    next
                }
                Due::TooLate {
                    scheduled,
                    missed,
                    next,
                } => {
                    self.status.last_schedule_time = Some(scheduled);
                    self.status.missed = self.status.missed.saturating_add(missed + 1);
                    let message = format!(
                        "missed the fire time {scheduled}: more than startingDeadlineSeconds ({}s) ago",
                        self.doc.spec.starting_deadline_seconds.unwrap_or_default()
                    );
                    tracing::warn!("{message}");
                    self.ctx
                        .metrics
                        .scheduled_run(&self.namespace, &self.name, "Missed");
                    self.status.message = Some(message);
                    next
                }
            };
            self.status.next_schedule_time = wake;
            self.publish().await;
            let wake = wake.into_iter().chain(self.saver.retry_at()).min();
            let clock = self.ctx.clock.clone();
            let msg = tokio::select! {
                m = rx.recv() => m,
                () = async {
                    match wake {
                        Some(t) => clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => continue,
            };
            match msg {
                None | Some(ScheduleTaskMsg::Stop) => break,
                Some(ScheduleTaskMsg::RunNow(reply)) => {
                    let r = self.run_now().await;
                    self.publish().await;
                    let _ = reply.send(r);
                }
                Some(ScheduleTaskMsg::Progress { run, state, done }) => {
                    if done {
                        self.finished(&run, *state).await;
                    } else if let Some(r) = self.status.active.iter_mut().find(|r| r.name == run) {
                        r.status = *state;
                    }
                }
                Some(ScheduleTaskMsg::Webhook { run, index, record }) => {
                    let slot = self
                        .status
                        .history
                        .iter_mut()
                        .find(|r| r.name == run)
                        .and_then(|r| r.actions.get_mut(index));
                    if let Some(slot) = slot {
                        *slot = record;
                    }
                }
            }
        }
        // Runs stop here; their persisted state lets the next task resume them.
        for (_, stop) in self.stops.drain() {
            let _ = stop.send(Some("daemon stopping".into()));
        }
        // One last try when the status is not persisted, so the next task does not resume
        // from an older one (and run a fire time again).
        self.publish().await;
        // Nothing saves this status any more: a successor (reload) reports its own failures.
        self.ctx
            .metrics
            .state_saved(StateKind::Scheduled, &self.namespace, &self.name);
        self.status
    }

    /// Saves the status when it changed since the last successful save; a failed save is
    /// tried again (backoff 0.25 s doubling to 10 s) until it lands — never counted as done.
    async fn publish(&mut self) {
        let _ = self.status_tx.send(self.status.clone());
        if self.published.as_ref() == Some(&self.status) {
            return;
        }
        let saved = self
            .saver
            .save(
                &mut self.status,
                crate::state::conditions::generation_of(&self.doc.metadata),
                self.ctx.clock.now(),
            )
            .await;
        if saved {
            self.published = Some(self.status.clone());
        }
    }

    /// A fire time is due: record it first (so a restart never runs it again), then start
    /// the run as concurrencyPolicy allows.
    async fn fire(&mut self, scheduled: DateTime<Utc>, missed: u32) {
        self.status.last_schedule_time = Some(scheduled);
        if missed > 0 {
            self.status.missed = self.status.missed.saturating_add(missed);
            let count = if missed > policy::MISSED_COUNT_CAP {
                format!("more than {}", policy::MISSED_COUNT_CAP)
            } else {
                missed.to_string()
            };
            tracing::warn!(
                "{count} earlier fire time(s) were missed; running only the latest ({scheduled})"
            );
            for _ in 0..missed.min(policy::MISSED_COUNT_CAP) {
                self.ctx
                    .metrics
                    .scheduled_run(&self.namespace, &self.name, "Missed");
            }
        }
        let run = policy::run_name(&self.name, RunTrigger::Schedule, scheduled, &self.status);
        if policy::is_recorded(&self.status, &run) {
            return;
        }
        match policy::admit(self.doc.spec.concurrency_policy, &self.status.active) {
            Admission::Skip(running) => {
                self.status.skipped = self.status.skipped.saturating_add(1);
                let message = format!(
                    "skipped the fire time {scheduled}: run(s) {} still going (concurrencyPolicy Forbid)",
                    running.join(", ")
                );
                tracing::info!("{message}");
                self.ctx
                    .metrics
                    .scheduled_run(&self.namespace, &self.name, "Skipped");
                self.status.message = Some(message);
            }
            Admission::Replace(running) => {
                self.stop_runs(&running, &run);
                self.start_run(run, RunTrigger::Schedule, Some(scheduled))
                    .await;
            }
            Admission::Start => {
                self.start_run(run, RunTrigger::Schedule, Some(scheduled))
                    .await
            }
        }
    }

    async fn run_now(&mut self) -> Result<RunStarted, RunNowError> {
        let now = self.ctx.clock.now();
        let run = policy::run_name(&self.name, RunTrigger::Manual, now, &self.status);
        let replaced = match policy::admit(self.doc.spec.concurrency_policy, &self.status.active) {
            Admission::Skip(running) => return Err(RunNowError::Busy(running)),
            Admission::Replace(running) => {
                self.stop_runs(&running, &run);
                running
            }
            Admission::Start => Vec::new(),
        };
        self.start_run(run.clone(), RunTrigger::Manual, None).await;
        Ok(RunStarted {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            run,
            replaced,
        })
    }

    fn stop_runs(&mut self, runs: &[String], by: &str) {
        for r in runs {
            if let Some(stop) = self.stops.remove(r) {
                tracing::info!(run = %r, "replaced by {by} (concurrencyPolicy Replace)");
                let _ = stop.send(Some(format!("replaced by {by}")));
            }
        }
    }

    /// Restarts the runs that were going when the daemon stopped, from their persisted state.
    async fn resume_active(&mut self) {
        let runs: Vec<(String, RunState)> = self
            .status
            .active
            .iter()
            .map(|r| (r.name.clone(), r.status.clone()))
            .collect();
        for (name, state) in runs {
            if let Err(e) = self.launch(name.clone(), Some(state)) {
                self.not_started(name, e).await;
            }
        }
    }

    async fn start_run(
        &mut self,
        name: String,
        trigger: RunTrigger,
        scheduled: Option<DateTime<Utc>>,
    ) {
        let now = self.ctx.clock.now();
        let mut state = crate::analysis::start_run(&RunSpec::default(), now);
        state.phase = Phase::Pending;
        state.message = None;
        tracing::info!(run = %name, ?trigger, "starting run");
        self.status.active.push(ScheduledRun {
            name: name.clone(),
            trigger,
            scheduled_time: scheduled,
            status: state,
            actions: Vec::new(),
        });
        self.status.message = Some(format!("run {name} started"));
        if let Err(e) = self.launch(name.clone(), None) {
            self.not_started(name, e).await;
        }
    }

    /// Spawns the analysis of run `name`; a run that cannot be planned or connected is
    /// returned as an error before anything is spawned (the caller ends it in Error).
    fn launch(&mut self, name: String, resume: Option<RunState>) -> Result<(), StartError> {
        let plan = plan(
            &self.doc,
            &self.namespace,
            &self.ctx.templates,
            &self.ctx.defaults,
        )?;
        let tx = self.tx.clone();
        let (events, run) = (tx.clone(), name.clone());
        let start = runner::RunStart {
            name: name.clone(),
            plan,
            clock: self.ctx.clock.clone(),
            // A run that had measured nothing starts afresh.
            resume: resume.filter(|s| !s.metric_results.is_empty()),
            routing: None,
            // A child of the task's span: the run's measurement lines carry its name.
            span: tracing::info_span!("run", run = %name),
            on_event: move |ev: RunEvent<'_>| {
                if let RunEvent::Measured { state, .. } = ev {
                    let _ = events.send(ScheduleTaskMsg::Progress {
                        run: run.clone(),
                        state: Box::new(state.clone()),
                        done: false,
                    });
                }
            },
            done: move |done: RunState| {
                let _ = tx.send(ScheduleTaskMsg::Progress {
                    run: name,
                    state: Box::new(done),
                    done: true,
                });
            },
        };
        runner::spawn_run(start, &self.ctx.clients, &mut self.stops)
    }

    /// A run that could not start ends in Error at once, with its actions (as any Error).
    async fn not_started(&mut self, run: String, e: StartError) {
        let now = self.ctx.clock.now();
        let mut failed = e.failed_run(now);
        failed.completed_at = Some(now);
        self.finished(&run, failed).await;
    }

    /// A run ended: into the history, then its actions.
    async fn finished(&mut self, run: &str, state: RunState) {
        self.stops.remove(run);
        let now = self.ctx.clock.now();
        let limits = self.doc.spec.history_limits();
        let Some(done) = policy::finish(&mut self.status, run, state, limits, now) else {
            return;
        };
        let phase = done.status.phase;
        let detail = done.status.message.clone().unwrap_or_default();
        let message = format!("run {run} {phase}: {detail}");
        match phase {
            Phase::Successful => tracing::info!("{message}"),
            _ => tracing::warn!("{message}"),
        }
        self.status.message = Some(message);
        self.ctx
            .metrics
            .scheduled_run(&self.namespace, &self.name, &phase.to_string());
        self.act(&done).await;
        self.publish().await;
        // After the rollback it asked for was handled and the status saved.
        if let Some(n) = crate::notify::scheduled_run_finished(
            &self.namespace,
            &self.name,
            &done,
            self.ctx.clock.now(),
        ) {
            self.ctx
                .notifier
                .notify(self.doc.spec.notifications.as_deref(), &n);
        }
    }

    /// The run's actions: the rollback is awaited (the weights go to stable in this loop);
    /// the webhook is delivered in the background.
    async fn act(&mut self, run: &ScheduledRun) {
        let Some(actions) = policy::actions_for(&self.doc.spec, &run.status).cloned() else {
            return;
        };
        let mut records = Vec::new();
        if let Some(rb) = &actions.rollback {
            let (ns, name) = canary_ref(&rb.canary, &self.namespace);
            let target = format!("{ns}/{name}");
            let why =
                policy::rollback_abort(&self.namespace, &self.name, run, self.ctx.clock.now());
            tracing::warn!(namespace = %ns, canary = %name, "rolling back: {}", why.reason);
            let answer = tokio::time::timeout(
                Duration::from_secs(15),
                self.ctx.canaries.rollback(&ns, &name, why),
            )
            .await
            .unwrap_or_else(|_| Err("the canary did not answer within 15 s".into()));
            let (outcome, message) = match answer {
                Ok(s) if matches!(s.phase, CanaryPhase::Aborted | CanaryPhase::RolledBack) => {
                    (ActionOutcome::Succeeded, format!("canary is {:?}", s.phase))
                }
                Ok(s) => (
                    ActionOutcome::Failed,
                    format!("canary not rolled back: it is {:?}", s.phase),
                ),
                Err(e) => (ActionOutcome::Failed, e),
            };
            if outcome == ActionOutcome::Failed {
                tracing::error!(namespace = %ns, canary = %name, "rollback failed: {message}");
            }
            self.ctx.metrics.scheduled_action(
                &self.namespace,
                &self.name,
                "rollback",
                outcome_label(outcome),
            );
            records.push(ActionRecord {
                kind: ActionKind::Rollback,
                target,
                outcome,
                message: Some(message),
                attempts: 0,
                at: self.ctx.clock.now(),
            });
        }
        if let Some(w) = &actions.webhook {
            let index = records.len();
            records.push(ActionRecord {
                kind: ActionKind::Webhook,
                target: w.url.clone(),
                outcome: ActionOutcome::Pending,
                message: None,
                attempts: 0,
                at: self.ctx.clock.now(),
            });
            self.deliver(w.clone(), run, index);
        }
        if let Some(h) = self.status.history.iter_mut().find(|r| r.name == run.name) {
            h.actions = records;
        }
    }

    /// Posts the result in the background; the outcome comes back as `ScheduleTaskMsg::Webhook`.
    fn deliver(&self, w: WebhookAction, run: &ScheduledRun, index: usize) {
        let body = policy::webhook_body(&self.namespace, &self.name, run);
        let http = self.ctx.http.clone();
        let clock = self.ctx.clock.clone();
        let tx = self.tx.clone();
        let metrics = self.ctx.metrics.clone();
        let (ns, name, run_name) = (self.namespace.clone(), self.name.clone(), run.name.clone());
        let timeout = w
            .timeout
            .as_deref()
            .and_then(|t| crate::resources::duration::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(10));
        let span = tracing::info_span!("webhook", run = %run_name, url = %w.url);
        let delivery = async move {
            let mut attempt = 0u32;
            let record = loop {
                attempt += 1;
                let mut req = http.post(&w.url).timeout(timeout).json(&body);
                for h in &w.headers {
                    req = req.header(h.name.as_str(), h.value.as_str());
                }
                let result = match req.send().await {
                    Ok(r) => Delivery::Status(r.status().as_u16()),
                    Err(e) => Delivery::Network(e.to_string()),
                };
                let ok = matches!(result, Delivery::Status(s) if (200..300).contains(&s));
                let message = match &result {
                    Delivery::Status(s) => format!("HTTP {s}"),
                    Delivery::Network(e) => e.clone(),
                };
                if ok {
                    break (ActionOutcome::Succeeded, message);
                }
                match policy::webhook_retry(attempt, &result) {
                    Some(delay) => {
                        tracing::warn!(
                            attempt,
                            "webhook failed ({message}); retrying in {delay:?}"
                        );
                        let at = clock.now()
                            + chrono::TimeDelta::from_std(delay)
                                .unwrap_or(chrono::TimeDelta::zero());
                        clock.sleep_until(at).await;
                    }
                    None => break (ActionOutcome::Failed, message),
                }
            };
            let (outcome, message) = record;
            match outcome {
                ActionOutcome::Succeeded => {
                    tracing::info!(attempt, "webhook delivered ({message})")
                }
                _ => {
                    tracing::error!(attempt, "webhook not delivered: {message}")
                }
            }
            metrics.scheduled_action(&ns, &name, "webhook", outcome_label(outcome));
            let _ = tx.send(ScheduleTaskMsg::Webhook {
                run: run_name,
                index,
                record: ActionRecord {
                    kind: ActionKind::Webhook,
                    target: w.url.clone(),
                    outcome,
                    message: Some(message),
                    attempts: attempt,
                    at: clock.now(),
                },
            });
        };
        tokio::spawn(delivery.instrument(span));
    }
}

fn outcome_label(o: ActionOutcome) -> &'static str {
    match o {
        ActionOutcome::Pending => "Pending",
        ActionOutcome::Succeeded => "Succeeded",
        ActionOutcome::Failed => "Failed",
    }
}

/// The run plan of a ScheduledAnalysis: its templates (found like a Canary's, in its
/// namespace or cluster-scoped) with its args.
pub fn plan(
    doc: &ScheduledAnalysisDoc,
    namespace: &str,
    templates: &[LoadedTemplate],
    defaults: &Defaults,
) -> Result<runner::RunPlan, runner::PlanError> {
    crate::canary::preflight::plan_analysis(
        templates,
        namespace,
        &doc.spec.templates,
        &doc.spec.args,
        defaults,
    )
}
