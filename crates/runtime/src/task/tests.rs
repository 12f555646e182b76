use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::oneshot;

use super::*;
use crate::canary::{CanaryPhase, CanaryStatus};
use crate::state::FileStatusStore;

/// Records what the saver reports, in order.
#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl SaveMetrics for Recorded {
    fn state_save_failed(&self, kind: StateKind, namespace: &str, name: &str, _error: &str) {
        let mut r = self.0.lock().unwrap();
        r.push(format!("failed {} {namespace}/{name}", kind.as_str()));
    }
    fn state_saved(&self, kind: StateKind, namespace: &str, name: &str) {
        let mut r = self.0.lock().unwrap();
        r.push(format!("saved {} {namespace}/{name}", kind.as_str()));
    }
}

impl Recorded {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Debug, PartialEq)]
enum TestMsg {
    Hello(u32),
    Stop,
}

impl TaskMsg for TestMsg {
    const STOP: Self = TestMsg::Stop;
}

fn id(name: &str) -> ObjectId {
    ObjectId {
        kind: StateKind::Canary,
        namespace: "ns".into(),
        name: name.into(),
    }
}

/// Save outcomes for a task whose reports the test does not look at.
fn metrics() -> Arc<dyn SaveMetrics> {
    Arc::new(Recorded::default())
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn store() -> (tempfile::TempDir, StatusStore<CanaryStatus>) {
    let dir = tempfile::tempdir().unwrap();
    let store = StatusStore::file(FileStatusStore::open(dir.path()).unwrap());
    (dir, store)
}

/// Makes the object's state file unreadable and unwritable (a directory stands where it
/// goes); the returned path, removed, makes the store work again.
fn block(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let path = dir
        .path()
        .join("canary")
        .join("ns")
        .join(format!("{name}.json"));
    std::fs::create_dir_all(path.join("blocker")).unwrap();
    path
}

#[test]
fn status_write_retries_back_off_from_a_quarter_second_to_ten_seconds() {
    let mut b = Backoff::new(SAVE_RETRY_FIRST, SAVE_RETRY_MAX);
    let mut ms = || b.next_delay().as_millis();
    assert_eq!(
        [(); 7].map(|()| ms()),
        [250, 500, 1_000, 2_000, 4_000, 8_000, 10_000]
    );
    assert_eq!((0..40).map(|_| ms()).last(), Some(10_000));
}

#[tokio::test]
async fn a_failed_save_stays_pending_with_backoff_until_one_lands() {
    let (dir, store) = store();
    let metrics = Arc::new(Recorded::default());
    let mut saver = Saver::new(id("c"), store.clone(), metrics.clone());
    let mut status = CanaryStatus::default();
    let blocked = block(&dir, "c");

    assert!(!saver.save(&mut status, None, t0()).await);
    let u = saver.unsaved().expect("pending").clone();
    assert_eq!(u.attempts, 1);
    assert_eq!(u.retry_at, t0() + TimeDelta::milliseconds(250));
    assert!(!saver.due(t0()));
    assert!(saver.due(u.retry_at));
    assert_eq!(metrics.take(), ["failed canary ns/c"]);

    let later = u.retry_at;
    assert!(!saver.save(&mut status, None, later).await);
    let u = saver.unsaved().expect("still pending").clone();
    assert_eq!(u.attempts, 2);
    assert_eq!(u.retry_at, later + TimeDelta::milliseconds(500));

    std::fs::remove_dir_all(&blocked).unwrap();
    status.phase = CanaryPhase::Paused;
    assert!(saver.save(&mut status, None, u.retry_at).await);
    assert_eq!(saver.unsaved(), None);
    assert_eq!(saver.retry_at(), None);
    assert_eq!(metrics.take(), ["failed canary ns/c", "saved canary ns/c"]);
    assert_eq!(
        store.load_raw("ns", "c").await.unwrap().map(|s| s.phase),
        Some(CanaryPhase::Paused)
    );
    // The backoff starts over after a success.
    std::fs::remove_file(dir.path().join("canary/ns/c.json")).unwrap();
    let blocked = block(&dir, "c");
    assert!(!saver.save(&mut status, None, t0()).await);
    assert_eq!(saver.retry_at(), Some(t0() + TimeDelta::milliseconds(250)));
    std::fs::remove_dir_all(&blocked).unwrap();
}

#[test]
fn a_status_marked_unsaved_is_due_at_once() {
    let (_dir, store) = store();
    let mut saver = Saver::new(id("c"), store, Arc::new(Recorded::default()));
    assert!(!saver.due(t0()));
    saver.mark_unsaved("taken over", t0());
    assert!(saver.due(t0()));
    assert_eq!(saver.unsaved().map(|u| u.attempts), Some(0));
}

/// The run closure of these tests: reports what it started with, then echoes messages until
/// a stop, and returns its status with the count of messages seen as `currentStepIndex`.
fn echo(
    seen: oneshot::Sender<(CanaryStatus, bool)>,
    got: mpsc::UnboundedSender<u32>,
) -> impl FnOnce(Started<TestMsg, CanaryStatus>) -> BoxedRun + Send + 'static {
    move |mut s| {
        Box::pin(async move {
            let _ = seen.send((s.status.clone(), s.inherited));
            let mut status = s.status;
            while let Some(m) = s.rx.recv().await {
                match m {
                    TestMsg::Hello(n) => {
                        status.current_step_index += 1;
                        let _ = got.send(n);
                    }
                    TestMsg::Stop => break,
                }
            }
            Some(status)
        })
    }
}

type BoxedRun = std::pin::Pin<Box<dyn Future<Output = Option<CanaryStatus>> + Send>>;

type EchoHandle = TaskHandle<&'static str, TestMsg, CanaryStatus>;

/// Spawns the task of `ns/c` (spawned from `doc`) running [`echo`]: its handle, what it
/// started with, and the messages it saw.
fn spawn_echo(
    store: StatusStore<CanaryStatus>,
    doc: &'static str,
    predecessor: Option<EchoHandle>,
) -> (
    EchoHandle,
    oneshot::Receiver<(CanaryStatus, bool)>,
    mpsc::UnboundedReceiver<u32>,
) {
    let (seen_tx, seen) = oneshot::channel();
    let (got_tx, got) = mpsc::unbounded_channel();
    let run = echo(seen_tx, got_tx);
    let handle = spawn(id("c"), Arc::new(doc), store, metrics(), predecessor, run);
    (handle, seen, got)
}

/// The task's future is held for as long as the object is driven (per canary, for the
/// daemon's life): it keeps no room for the status it starts from (the run has it) nor for the
/// steps before the run, which would make every task's future several KiB larger.
#[tokio::test]
async fn the_task_future_keeps_no_room_for_the_status_it_started_from() {
    let (_dir, store) = store();
    let (seen_tx, _seen) = oneshot::channel();
    let (got_tx, _got) = mpsc::unbounded_channel();
    let (task, handle) = prepare(
        id("c"),
        Arc::new("spec"),
        store,
        metrics(),
        None,
        echo(seen_tx, got_tx),
    );
    let size = std::mem::size_of_val(&task);
    let status = std::mem::size_of::<CanaryStatus>();
    assert!(
        size < status,
        "the task's future takes {size} bytes, more than the {status} of a status"
    );
    drop(task);
    drop(handle);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_store_is_read_again_and_messages_wait_in_order() {
    let (dir, store) = store();
    let mut persisted = CanaryStatus {
        phase: CanaryPhase::Paused,
        ..Default::default()
    };
    store
        .save("ns", "c", &mut persisted, None, t0())
        .await
        .unwrap();
    let path = dir.path().join("canary/ns/c.json");
    let saved = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let blocked = block(&dir, "c");

    let (handle, seen, mut got) = spawn_echo(store, "spec", None);
    handle.tx.send(TestMsg::Hello(1)).unwrap();
    handle.tx.send(TestMsg::Hello(2)).unwrap();
    // Several read attempts fail (backoff 0.5 s, 1 s, 2 s ...): nothing is driven meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(got.try_recv().is_err());
    assert!(!*handle.finished.borrow());

    std::fs::remove_dir_all(&blocked).unwrap();
    std::fs::write(&path, saved).unwrap();
    let (status, inherited) = seen.await.unwrap();
    assert_eq!(status.phase, CanaryPhase::Paused);
    assert!(!inherited);
    assert_eq!(got.recv().await, Some(1));
    assert_eq!(got.recv().await, Some(2));
    handle.stop().await;
    assert!(*handle.finished.borrow());
    let last = handle.handover.lock().unwrap().clone().unwrap();
    assert_eq!(last.current_step_index, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_a_task_still_waiting_for_its_status() {
    let (dir, store) = store();
    let _blocked = block(&dir, "c");
    let (handle, mut seen, _got) = spawn_echo(store, "spec", None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.stop().await;
    assert!(*handle.finished.borrow());
    assert!(seen.try_recv().is_err(), "never driven");
    assert!(handle.handover.lock().unwrap().is_none());
}

#[tokio::test]
async fn a_status_that_does_not_parse_is_never_replaced() {
    let (dir, store) = store();
    let path = dir.path().join("canary/ns/c.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{not json").unwrap();
    let (handle, mut seen, _got) = spawn_echo(store, "spec", None);
    let mut fin = handle.finished.clone();
    fin.wait_for(|f| *f).await.unwrap();
    assert!(seen.try_recv().is_err(), "never driven");
    let message = handle.status.borrow().message.clone().unwrap_or_default();
    assert!(
        message.starts_with("cannot read persisted status"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
}

#[tokio::test]
async fn a_successor_takes_over_the_last_in_memory_status() {
    let (_dir, store) = store();
    let (first, seen, mut got) = spawn_echo(store.clone(), "spec v1", None);
    seen.await.unwrap();
    first.tx.send(TestMsg::Hello(7)).unwrap();
    assert_eq!(got.recv().await, Some(7));

    let (second, seen, mut got) = spawn_echo(store, "spec v2", Some(first.clone()));
    // Taken at once, handled after the predecessor stopped.
    second.tx.send(TestMsg::Hello(8)).unwrap();
    let (status, inherited) = seen.await.unwrap();
    assert!(inherited);
    assert_eq!(
        status.current_step_index, 1,
        "the predecessor's, never saved"
    );
    assert!(*first.finished.borrow());
    assert_eq!(got.recv().await, Some(8));
    // The handle names the object and carries the document it was spawned from.
    assert_eq!(
        (second.namespace.as_str(), second.name.as_str(), *second.doc),
        ("ns", "c", "spec v2")
    );
}

#[test]
fn the_stop_message_is_recognised_by_its_variant() {
    assert!(TestMsg::stop().is_stop());
    assert!(!TestMsg::Hello(0).is_stop());
}
