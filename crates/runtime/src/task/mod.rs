//! The lifecycle every object task shares (one task per Canary, one per ScheduledAnalysis):
//! spawn with a handle, read the persisted status with retry before anything is driven, save
//! the status with retry and backoff (a failed save is never counted as done, and is reported
//! to `/metrics` and `/readyz` until one lands), and stop — flushing a status not saved yet —
//! with the last in-memory status handed over to a successor.
//!
//! What an object does with its status (the canary's state machine and routing, the
//! schedule's policy and runs) stays in its driver: the driver passes the closure that runs
//! the task once its status is known, and calls [`Saver::save`] wherever its status changes.

pub mod ports;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

pub use ports::{SaveMetrics, StateKind};

use crate::backoff::Backoff;
use crate::state::status::{LoadError, PersistedStatus, StatusStore, WriteLane};
use crate::traffic::gate::GateOpener;

/// First wait before reading a persisted status again after a transient error; doubles up to
/// [`LOAD_RETRY_MAX`].
pub const LOAD_RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two tries to read a persisted status.
pub const LOAD_RETRY_MAX: Duration = Duration::from_secs(30);
/// First wait before writing a status again after a failed write; doubles up to
/// [`SAVE_RETRY_MAX`]. Short: a rollback whose status is not saved yet would be undone by a
/// restart in that window.
pub const SAVE_RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between two tries to write the status.
pub const SAVE_RETRY_MAX: Duration = Duration::from_secs(10);
/// How long [`TaskHandle::stop`] waits for the task to end (its last save included).
pub const STOP_WAIT: Duration = Duration::from_secs(15);

/// Which object a task drives; its `Display` is `namespace/name`, as logs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// Canary or ScheduledAnalysis.
    pub kind: StateKind,
    /// The object's namespace (its status is read and written there).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectId {
    /// The task's span, which every line the task logs (its analysis runs, webhooks and
    /// measurements included) is inside: the object's identity as `namespace` and `canary` or
    /// `scheduledanalysis`. A root span, since the reload that spawns a successor is not its
    /// parent.
    pub fn span(&self) -> tracing::Span {
        let (ns, name) = (&self.namespace, &self.name);
        match self.kind {
            StateKind::Canary => {
                tracing::info_span!(parent: None, "canary", namespace = %ns, canary = %name, kind = "Canary")
            }
            StateKind::Scheduled => {
                tracing::info_span!(parent: None, "scheduledanalysis", namespace = %ns, scheduledanalysis = %name, kind = "ScheduledAnalysis")
            }
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Logs about the object. Its identity (`namespace`, `canary` or `scheduledanalysis`) comes
/// from the task's span, which every line of the task is inside (see [`spawn`]).
macro_rules! log_for {
    ($level:ident, $id:expr, $($rest:tt)+) => {{
        let _: &ObjectId = &$id;
        tracing::$level!($($rest)+)
    }};
}

/// A task's message type: the lifecycle needs to make and recognise the stop message.
pub trait TaskMsg: Sized + Send + 'static {
    /// The message that ends the task (daemon shutdown, reload, deletion): a variant without
    /// fields, so that comparing variants recognises it.
    const STOP: Self;

    /// A new stop message.
    fn stop() -> Self {
        Self::STOP
    }

    /// Whether this is the stop message (same variant as [`TaskMsg::STOP`]).
    fn is_stop(&self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(&Self::STOP)
    }
}

/// What the lifecycle hands the object's task once its status is known.
pub struct Started<M, St> {
    /// The task's inbox (messages that came while the status was read are in it, in order).
    pub rx: mpsc::UnboundedReceiver<M>,
    /// Sender to its own inbox, for work it spawns.
    pub tx: mpsc::UnboundedSender<M>,
    /// Where the task publishes its latest status.
    pub status_tx: watch::Sender<St>,
    /// The status to continue from: the predecessor's in-memory one, else the persisted one
    /// ([`PersistedStatus::resumed`]), else the default.
    pub status: St,
    /// True when `status` was taken over from a predecessor: it may never have been saved, so
    /// the task writes it before exposing anything.
    pub inherited: bool,
    /// The object's status writes, nothing pending yet.
    pub saver: Saver<St>,
}

/// Handle on a running object task, one type for every kind of object: which object it drives,
/// the document it was spawned from (a reload compares it with the new one), and the task's
/// channels. A kind adds what it shows or asks for in an inherent `impl` on its instance.
#[derive(Debug)]
pub struct TaskHandle<D, M, St> {
    /// The object's namespace; with the name, the registry's key.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The object as loaded, for the API and to tell whether a reload changed it.
    pub doc: Arc<D>,
    /// Send messages.
    pub tx: mpsc::UnboundedSender<M>,
    /// Latest status.
    pub status: watch::Receiver<St>,
    /// Becomes true when the task has ended (after the stop message).
    pub finished: watch::Receiver<bool>,
    /// The task's last in-memory status, left here when it ends after having driven the
    /// object (not when it never read its persisted status). A successor takes it over, so a
    /// status whose save failed (an abort) is not lost to a reload (issue 14).
    pub handover: Arc<Mutex<Option<St>>>,
}

impl<D, M, St> Clone for TaskHandle<D, M, St> {
    fn clone(&self) -> Self {
        TaskHandle {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            doc: self.doc.clone(),
            tx: self.tx.clone(),
            status: self.status.clone(),
            finished: self.finished.clone(),
            handover: self.handover.clone(),
        }
    }
}

impl<D, M: TaskMsg, St> TaskHandle<D, M, St> {
    /// Asks the task to stop and waits (bounded by [`STOP_WAIT`]) until it has — its last
    /// status save included — so a replacement task never overlaps with it.
    pub async fn stop(&self) {
        let _ = self.tx.send(M::stop());
        let mut fin = self.finished.clone();
        let _ = tokio::time::timeout(STOP_WAIT, fin.wait_for(|f| *f)).await;
    }
}

/// Starts the task of one object. The handle takes messages at once (they wait in its queue)
/// while the task first stops `predecessor` (a reload replaced it) and takes over its
/// in-memory status, or else reads the persisted status — again and again with backoff while
/// the store is unavailable (only a stop message ends that wait). A status that does not parse
/// is never replaced by a fresh one: the task publishes why and ends without driving. Then
/// `run` drives the object; the status it returns is handed over to a successor. Every line
/// the task logs is inside [`ObjectId::span`]; its status writes go through the [`Saver`] it
/// is started with (`store`, outcomes to `metrics`).
pub fn spawn<D, M, St, F, Fut>(
    id: ObjectId,
    doc: Arc<D>,
    store: StatusStore<St>,
    metrics: Arc<dyn SaveMetrics>,
    predecessor: Option<TaskHandle<D, M, St>>,
    run: F,
) -> TaskHandle<D, M, St>
where
    D: Send + Sync + 'static,
    M: TaskMsg,
    St: PersistedStatus,
    F: FnOnce(Started<M, St>) -> Fut + Send + 'static,
    Fut: Future<Output = Option<St>> + Send + 'static,
{
    let (task, handle) = prepare(id, doc, store, metrics, predecessor, run);
    tokio::spawn(task);
    handle
}

/// [`spawn`]'s task, not spawned yet, and its handle.
fn prepare<D, M, St, F, Fut>(
    id: ObjectId,
    doc: Arc<D>,
    store: StatusStore<St>,
    metrics: Arc<dyn SaveMetrics>,
    predecessor: Option<TaskHandle<D, M, St>>,
    run: F,
) -> (
    impl Future<Output = ()> + Send + 'static,
    TaskHandle<D, M, St>,
)
where
    D: Send + Sync + 'static,
    M: TaskMsg,
    St: PersistedStatus,
    F: FnOnce(Started<M, St>) -> Fut + Send + 'static,
    Fut: Future<Output = Option<St>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(St::default());
    let (fin_tx, fin_rx) = watch::channel(false);
    let handover = Arc::new(Mutex::new(None));
    let handover_out = handover.clone();
    let task_tx = tx.clone();
    let (namespace, name) = (id.namespace.clone(), id.name.clone());
    let span = id.span();
    let saver = Saver::new(id.clone(), store.clone(), metrics);
    // Everything the task's future starts from, in one box: what an `async` block captures
    // keeps its room in the future for as long as the future lives (here: as long as the
    // task runs), while what it takes out of the box only takes room while it is in use.
    let parts = Box::new((
        rx,
        predecessor,
        id,
        store,
        task_tx,
        status_tx,
        saver,
        run,
        fin_tx,
        handover_out,
    ));
    let outer = async move {
        let (mut rx, predecessor, id, store, task_tx, status_tx, saver, run, fin_tx, handover_out) =
            *parts;
        // Built in a block of its own, so the status on its way into `run` keeps no room in
        // this future once the task runs; the start-up steps are boxed for the same reason.
        let task = {
            let loaded = Box::pin(starting_status(
                predecessor,
                &id,
                &store,
                &mut rx,
                &task_tx,
                &status_tx,
            ))
            .await;
            loaded.map(|(status, inherited)| {
                run(Started {
                    rx,
                    tx: task_tx,
                    status_tx,
                    status,
                    inherited,
                    saver,
                })
            })
        };
        if let Some(task) = task
            && let Some(last) = task.await
            && let Ok(mut h) = handover_out.lock()
        {
            *h = Some(last);
        }
        let _ = fin_tx.send(true);
    };
    let handle = TaskHandle {
        namespace,
        name,
        doc,
        tx,
        status: status_rx,
        finished: fin_rx,
        handover,
    };
    (outer.instrument(span), handle)
}

/// The status a task starts from, with whether it was taken over: its predecessor's, once that
/// one has stopped, else the persisted one ([`load_with_retry`]). None when it must not drive.
async fn starting_status<D, M: TaskMsg, St: PersistedStatus>(
    predecessor: Option<TaskHandle<D, M, St>>,
    id: &ObjectId,
    store: &StatusStore<St>,
    rx: &mut mpsc::UnboundedReceiver<M>,
    requeue: &mpsc::UnboundedSender<M>,
    status_tx: &watch::Sender<St>,
) -> Option<(St, bool)> {
    if let Some(p) = predecessor {
        p.stop().await;
        let handed = p.handover.lock().ok().and_then(|mut h| h.take());
        if let Some(st) = handed {
            return Some((st, true));
        }
    }
    load_with_retry(id, store, rx, requeue, status_tx)
        .await
        .map(|st| (st.unwrap_or_default(), false))
}

/// The persisted status, read again with backoff while the store is unavailable. None when
/// the task must not drive: stopped meanwhile, or the status does not parse (published with
/// the reason as its message; a human decides, fix or delete it).
async fn load_with_retry<M: TaskMsg, St: PersistedStatus>(
    id: &ObjectId,
    store: &StatusStore<St>,
    rx: &mut mpsc::UnboundedReceiver<M>,
    requeue: &mpsc::UnboundedSender<M>,
    status_tx: &watch::Sender<St>,
) -> Option<Option<St>> {
    let mut backoff = Backoff::new(LOAD_RETRY_FIRST, LOAD_RETRY_MAX);
    loop {
        match Box::pin(store.load(&id.namespace, &id.name)).await {
            Ok(persisted) => return Some(persisted),
            Err(LoadError::Corrupt(e)) => {
                log_for!(
                    error,
                    id,
                    "cannot read persisted status, not driving it: {e}"
                );
                let idle = St::idle(format!("cannot read persisted status: {e}"));
                let _ = status_tx.send(idle);
                return None;
            }
            Err(LoadError::Unavailable(e)) => {
                let delay = backoff.next_delay();
                // Nothing is known yet, so nothing may be driven: wait and read again.
                // Messages meanwhile go back in the queue, except Stop, which ends the task.
                log_for!(
                    warn,
                    id,
                    "cannot read persisted status, retrying in {delay:?}: {e}"
                );
                if crate::backoff::sleep_holding(rx, requeue, delay, M::is_stop).await {
                    return None;
                }
            }
        }
    }
}

/// A status not persisted yet: why its last write failed and when the next one is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsaved {
    /// Why (or since when) the status is not saved.
    pub error: String,
    /// Failed writes in a row.
    pub attempts: u32,
    /// When to write again.
    pub retry_at: DateTime<Utc>,
}

/// Status writes of one object task, to its status store: retried with capped backoff
/// ([`SAVE_RETRY_FIRST`] doubling to [`SAVE_RETRY_MAX`]) until one lands, each failure reported
/// to `/metrics` and `/readyz` and cleared by the next successful write. A failed save is
/// never counted as done.
pub struct Saver<St> {
    id: ObjectId,
    store: StatusStore<St>,
    metrics: Arc<dyn SaveMetrics>,
    unsaved: Option<Unsaved>,
    backoff: Backoff,
}

impl<St> fmt::Debug for Saver<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saver")
            .field("id", &self.id)
            .field("unsaved", &self.unsaved)
            .finish_non_exhaustive()
    }
}

impl<St: PersistedStatus> Saver<St> {
    /// Nothing pending yet; writes go to `store`, their outcomes to `metrics`.
    pub fn new(id: ObjectId, store: StatusStore<St>, metrics: Arc<dyn SaveMetrics>) -> Self {
        Saver {
            id,
            store,
            metrics,
            unsaved: None,
            backoff: Backoff::new(SAVE_RETRY_FIRST, SAVE_RETRY_MAX),
        }
    }

    /// The object.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// Set while the current status is not persisted.
    pub fn unsaved(&self) -> Option<&Unsaved> {
        self.unsaved.as_ref()
    }

    /// When the pending write is due; None when nothing is pending.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        self.unsaved.as_ref().map(|u| u.retry_at)
    }

    /// A pending write is due at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.retry_at().is_some_and(|t| now >= t)
    }

    /// Marks the status as not persisted, written at the next chance (`now`): a status taken
    /// over from a predecessor, or one that must say something at once.
    pub fn mark_unsaved(&mut self, why: &str, now: DateTime<Utc>) {
        self.unsaved = Some(Unsaved {
            error: why.to_string(),
            attempts: 0,
            retry_at: now,
        });
    }

    /// Writes `status` (deriving its conditions first). True when it landed; otherwise the
    /// next try is scheduled ([`Saver::retry_at`]) and the failure reported.
    pub async fn save(
        &mut self,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> bool {
        self.save_in(WriteLane::Routine, status, generation, now)
            .await
    }

    /// [`save`](Self::save) in `lane` ([`WriteLane::Rollback`] for the save before a
    /// rollback's routing write).
    pub async fn save_in(
        &mut self,
        lane: WriteLane,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
    ) -> bool {
        let (ns, name) = (&self.id.namespace, &self.id.name);
        let result = self
            .store
            .save_in(lane, ns, name, status, generation, now)
            .await;
        self.landed(result, now)
    }

    /// The save a rollback's routing write waits on ([`StatusStore::save_rollback`]):
    /// `opener` opens the moment the status is durable, before this returns.
    pub async fn save_rollback(
        &mut self,
        status: &mut St,
        generation: Option<i64>,
        now: DateTime<Utc>,
        opener: GateOpener,
    ) -> bool {
        let (ns, name) = (&self.id.namespace, &self.id.name);
        let result = self
            .store
            .save_rollback(ns, name, status, generation, now, opener)
            .await;
        self.landed(result, now)
    }

    /// Lets the store finish in the background what [`save_rollback`](Self::save_rollback)
    /// left for later ([`StatusStore::release`]).
    pub fn release(&self) {
        self.store.release(&self.id.namespace, &self.id.name);
    }

    /// Records how a save ended; true when it landed.
    fn landed(&mut self, result: Result<(), String>, now: DateTime<Utc>) -> bool {
        let (ns, name) = (&self.id.namespace, &self.id.name);
        match result {
            Ok(()) => {
                self.backoff.reset();
                self.metrics.state_saved(self.id.kind, ns, name);
                if let Some(u) = self.unsaved.take() {
                    log_for!(info, self.id, failed = u.attempts, "status persisted again");
                }
                true
            }
            Err(e) => {
                self.failed(e, now);
                false
            }
        }
    }

    /// A save that could not be attempted (`error` says why): reported and retried like a
    /// failed write.
    pub fn failed(&mut self, error: String, now: DateTime<Utc>) {
        let (ns, name) = (&self.id.namespace, &self.id.name);
        let attempts = self.unsaved.as_ref().map_or(0, |u| u.attempts) + 1;
        let delay = self.backoff.next_delay();
        log_for!(
            error,
            self.id,
            attempts,
            "cannot persist status, retrying in {delay:?}: {error}"
        );
        self.metrics
            .state_save_failed(self.id.kind, ns, name, &error);
        self.unsaved = Some(Unsaved {
            error,
            attempts,
            retry_at: now + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX),
        });
    }
}

#[cfg(test)]
mod tests;
