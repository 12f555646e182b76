//! Applies one routing change to all VirtualServices of a Canary over any [`ManifestStore`]:
//! read and plan everything first, write only what changes, retry conflicts from a fresh read
//! (so a concurrent writer's change is never lost), and undo earlier writes when a later one
//! fails (DESIGN.md §1 principle 3, §5). The transform itself is injected as a [`Planner`], so
//! this file knows nothing about Istio's shape.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::gate::CommitGate;
use super::store::{ManifestStore, ManifestStoreError, ObjectKey, Versioned};

/// The pure transform, injected (an adapter around `istio::apply` implements it).
pub trait Planner: Send + Sync {
    /// New content for one VirtualService (`index` into the targets, i.e. into
    /// `IstioRouting.virtual_services`), or an error that names the problem.
    fn plan_virtual_service(&self, index: usize, current: &Value) -> Result<Value, String>;

    /// Validates the DestinationRule (subset backend); `Ok` when not applicable.
    fn check_destination_rule(&self, current: &Value) -> Result<(), String>;
}

/// Waits between retries; injected so tests neither sleep nor depend on timing.
pub trait Sleeper: Send + Sync {
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Sleeps with `tokio::time` (honours paused time in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Bounds for retrying version conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOptions {
    /// Replace attempts per object, the first included (values below 1 count as 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with every retry.
    pub base_backoff: Duration,
    /// Upper bound of a wait.
    pub max_backoff: Duration,
    /// Fraction (0..=1) of a wait that is randomly taken off, so competing writers spread out.
    pub jitter: f64,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_attempts: 5,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            jitter: 0.5,
        }
    }
}

impl RetryOptions {
    /// The wait before retry number `retry` (1-based), `unit` in `[0, 1)` drawing the jitter.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let full = self
            .base_backoff
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        full.mul_f64(1.0 - jitter * unit)
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// VirtualServices written, in order.
    pub changed: Vec<ObjectKey>,
    /// VirtualServices already in the wanted state (not written).
    pub unchanged: Vec<ObjectKey>,
    /// Version conflicts (409s) met and retried; for metrics.
    pub conflicts_retried: u32,
    /// Every target VirtualService as this apply left it (written or already so), in the
    /// order of the targets; complete only when the apply succeeded.
    pub objects: Vec<(ObjectKey, Value)>,
}

/// Why an apply or read failed. Every variant names the object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    /// The same object is listed twice among the targets.
    #[error("{0} is listed more than once")]
    DuplicateTarget(ObjectKey),
    /// Reading failed (not found, duplicate definition, backend failure...).
    #[error("{}", store_message("reading", key, source))]
    Read {
        /// The VirtualService or DestinationRule concerned.
        key: ObjectKey,
        /// Store error (boxed: keeps `Result`s small).
        source: Box<ManifestStoreError>,
    },
    /// The planner refused the VirtualService.
    #[error("{key}: {message}")]
    Plan {
        /// The VirtualService or DestinationRule concerned.
        key: ObjectKey,
        /// Planner message.
        message: String,
    },
    /// The DestinationRule check failed.
    #[error("{key}: {message}")]
    DestinationRule {
        /// The VirtualService or DestinationRule concerned.
        key: ObjectKey,
        /// Check message.
        message: String,
    },
    /// A write failed with an error that is not a version conflict.
    #[error("{}", store_message("writing", key, source))]
    Write {
        /// The VirtualService or DestinationRule concerned.
        key: ObjectKey,
        /// Store error (boxed: keeps `Result`s small).
        source: Box<ManifestStoreError>,
    },
    /// Version conflicts on every attempt.
    #[error("{key}: still modified concurrently after {attempts} attempts")]
    ConflictRetriesExhausted {
        /// The VirtualService or DestinationRule concerned.
        key: ObjectKey,
        /// Attempts made.
        attempts: u32,
    },
    /// A rollback ([`Router::apply_each`]) wrote what it could; these failed. Retried as a
    /// whole (written objects are then unchanged, so only the rest is written).
    #[error("{}", incomplete_message(written, failed))]
    Incomplete {
        /// Objects written by this attempt.
        written: Vec<ObjectKey>,
        /// What failed, each naming its object.
        failed: Vec<RouterError>,
    },
    /// A later VirtualService failed after earlier ones were written; the earlier writes were
    /// undone where that was safe. `not_undone` empty means the objects are back as before.
    #[error("{cause}; {}", undo_message(written, undone, not_undone))]
    PartialWrite {
        /// VirtualServices this apply wrote before the failure.
        written: Vec<ObjectKey>,
        /// Those restored to their previous content.
        undone: Vec<ObjectKey>,
        /// Those left as they are, and why (typically: changed by someone else since).
        not_undone: Vec<(ObjectKey, String)>,
        /// The failure that stopped the apply.
        cause: Box<RouterError>,
    },
}

impl RouterError {
    /// True when objects may be left in a mixed state (some written, not undone).
    pub fn left_partial_state(&self) -> bool {
        matches!(self, RouterError::PartialWrite { not_undone, .. } if !not_undone.is_empty())
    }
}

/// Store errors that already name the object are shown as they are.
fn store_message(verb: &str, key: &ObjectKey, source: &ManifestStoreError) -> String {
    match source {
        ManifestStoreError::Backend(_) => format!("{verb} {key}: {source}"),
        _ => source.to_string(),
    }
}

fn incomplete_message(written: &[ObjectKey], failed: &[RouterError]) -> String {
    let failed: Vec<String> = failed.iter().map(ToString::to_string).collect();
    let mut msg = format!("not written: {}", failed.join("; "));
    if !written.is_empty() {
        let written: Vec<String> = written.iter().map(ToString::to_string).collect();
        msg.push_str(&format!(" (written: {})", written.join(", ")));
    }
    msg
}

fn undo_message(
    written: &[ObjectKey],
    undone: &[ObjectKey],
    not_undone: &[(ObjectKey, String)],
) -> String {
    let list = |keys: &[ObjectKey]| {
        keys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut msg = format!("earlier writes: {}", list(written));
    if !undone.is_empty() {
        msg.push_str(&format!("; undone: {}", list(undone)));
    }
    if !not_undone.is_empty() {
        let items: Vec<String> = not_undone
            .iter()
            .map(|(k, why)| format!("{k} ({why})"))
            .collect();
        msg.push_str(&format!("; NOT undone: {}", items.join(", ")));
    }
    msg
}

/// A write this apply made, kept to undo it.
struct Written {
    key: ObjectKey,
    before: Value,
    written: Value,
}

/// Applies planned changes to a store with optimistic concurrency.
pub struct Router<S: ManifestStore> {
    store: S,
    options: RetryOptions,
    sleeper: Arc<dyn Sleeper>,
    rng: AtomicU64,
}

impl<S: ManifestStore> std::fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("store", &self.store.describe())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: ManifestStore> Router<S> {
    /// A router with default retry options, tokio sleeps and a time-seeded jitter.
    pub fn new(store: S) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        Router {
            store,
            options: RetryOptions::default(),
            sleeper: Arc::new(TokioSleeper),
            rng: AtomicU64::new(seed),
        }
    }

    /// Replaces the retry options.
    pub fn with_options(mut self, options: RetryOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the sleeper (tests).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Fixes the jitter seed, so backoffs are reproducible.
    pub fn with_jitter_seed(self, seed: u64) -> Self {
        self.rng.store(seed, Ordering::Relaxed);
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The retry options.
    pub fn options(&self) -> &RetryOptions {
        &self.options
    }

    /// Reads the targets, in order.
    pub async fn read(&self, targets: &[ObjectKey]) -> Result<Vec<Versioned>, RouterError> {
        let mut out = Vec::with_capacity(targets.len());
        for key in targets {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Plans every target VirtualService (and checks the DestinationRule) before writing
    /// anything, writes those that change, retries conflicts from a fresh read, and undoes
    /// earlier writes when a later one fails.
    pub async fn apply(
        &self,
        targets: &[ObjectKey],
        destination_rule: Option<&ObjectKey>,
        planner: &dyn Planner,
    ) -> Result<ApplyReport, RouterError> {
        for (i, key) in targets.iter().enumerate() {
            if targets[..i].contains(key) {
                return Err(RouterError::DuplicateTarget(key.clone()));
            }
        }
        if let Some(dr) = destination_rule {
            let current = self.get(dr).await?;
            planner
                .check_destination_rule(&current.object)
                .map_err(|message| RouterError::DestinationRule {
                    key: dr.clone(),
                    message,
                })?;
        }
        let mut plans = Vec::with_capacity(targets.len());
        for (index, key) in targets.iter().enumerate() {
            let current = self.get(key).await?;
            let planned = plan(planner, index, key, &current.object)?;
            plans.push((index, key, current, planned));
        }

        let mut report = ApplyReport::default();
        let mut written: Vec<Written> = Vec::new();
        for (index, key, current, planned) in plans {
            match self
                .write_one(
                    (index, key),
                    current,
                    planned,
                    planner,
                    &CommitGate::open(),
                    &mut report,
                )
                .await
            {
                Ok(Some(w)) => {
                    report.changed.push(key.clone());
                    written.push(w);
                }
                Ok(None) => report.unchanged.push(key.clone()),
                Err(cause) if written.is_empty() => return Err(cause),
                Err(cause) => return Err(self.undo(written, cause).await),
            }
        }
        Ok(report)
    }

    /// A rollback: unlike [`Router::apply`], every VirtualService that can be read, planned
    /// and written is written, whatever happens to the others, and nothing is undone. Moving
    /// traffic back to stable is safe object by object, and a VirtualService that is missing or
    /// unwritable must not hold the others on the canary (issue 15 item 5). The failures are
    /// returned together as [`RouterError::Incomplete`]; the caller retries the whole call,
    /// which then writes only what is still not rolled back. A DestinationRule that fails its
    /// check is reported the same way but blocks nothing.
    pub async fn apply_each(
        &self,
        targets: &[ObjectKey],
        destination_rule: Option<&ObjectKey>,
        planner: &dyn Planner,
    ) -> Result<ApplyReport, RouterError> {
        self.apply_each_after(targets, destination_rule, planner, &CommitGate::open())
            .await
    }

    /// [`Router::apply_each`] whose writes become visible only once `gate` is open (the
    /// status that explains the rollback saved); reading, planning and whatever a store can
    /// prepare invisibly go ahead meanwhile.
    pub async fn apply_each_after(
        &self,
        targets: &[ObjectKey],
        destination_rule: Option<&ObjectKey>,
        planner: &dyn Planner,
        gate: &CommitGate,
    ) -> Result<ApplyReport, RouterError> {
        for (i, key) in targets.iter().enumerate() {
            if targets[..i].contains(key) {
                return Err(RouterError::DuplicateTarget(key.clone()));
            }
        }
        let mut failed = Vec::new();
        if let Some(dr) = destination_rule {
            match self.get(dr).await {
                Ok(current) => {
                    if let Err(message) = planner.check_destination_rule(&current.object) {
                        failed.push(RouterError::DestinationRule {
                            key: dr.clone(),
                            message,
                        });
                    }
                }
                Err(e) => failed.push(e),
            }
        }
        let mut report = ApplyReport::default();
        for (index, key) in targets.iter().enumerate() {
            let outcome = async {
                let current = self.get(key).await?;
                let planned = plan(planner, index, key, &current.object)?;
                self.write_one((index, key), current, planned, planner, gate, &mut report)
                    .await
            }
            .await;
            match outcome {
                Ok(Some(_)) => report.changed.push(key.clone()),
                Ok(None) => report.unchanged.push(key.clone()),
                Err(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            Ok(report)
        } else {
            tracing::warn!(
                written = report.changed.len(),
                failed = failed.len(),
                "rollback written only in part; the rest is retried"
            );
            Err(RouterError::Incomplete {
                written: report.changed,
                failed,
            })
        }
    }

    /// Has the store prepare, invisibly, the write `planner` would make to each target now
    /// ([`ManifestStore::stand_by`]): a rollback planned ahead, so that when it comes it only
    /// has to become visible. Nothing is written; a target that cannot be read or planned is
    /// skipped (the write, if it comes, reports it).
    pub async fn stand_by_each(&self, targets: &[ObjectKey], planner: &dyn Planner) {
        if !self.store.prepares_ahead() {
            return;
        }
        for (index, key) in targets.iter().enumerate() {
            let Ok(current) = self.store.get(key).await else {
                continue;
            };
            let Ok(planned) = planner.plan_virtual_service(index, &current.object) else {
                continue;
            };
            if !same_content(&planned, &current.object) {
                self.store.stand_by(key, &planned, &current.version).await;
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Versioned, RouterError> {
        self.store
            .get(key)
            .await
            .map_err(|source| RouterError::Read {
                key: key.clone(),
                source: Box::new(source),
            })
    }

    /// Writes one VirtualService; `Ok(None)` when it already has the wanted content.
    async fn write_one(
        &self,
        (index, key): (usize, &ObjectKey),
        mut current: Versioned,
        mut planned: Value,
        planner: &dyn Planner,
        gate: &CommitGate,
        report: &mut ApplyReport,
    ) -> Result<Option<Written>, RouterError> {
        let max = self.options.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            if same_content(&planned, &current.object) {
                report.objects.push((key.clone(), current.object));
                return Ok(None);
            }
            match self
                .store
                .replace_after(key, &planned, &current.version, gate)
                .await
            {
                Ok(_) => {
                    report.objects.push((key.clone(), planned.clone()));
                    return Ok(Some(Written {
                        key: key.clone(),
                        before: current.object,
                        written: planned,
                    }));
                }
                Err(ManifestStoreError::Conflict(_)) => {
                    report.conflicts_retried += 1;
                    if attempt >= max {
                        return Err(RouterError::ConflictRetriesExhausted {
                            key: key.clone(),
                            attempts: attempt,
                        });
                    }
                    self.backoff(attempt).await;
                    attempt += 1;
                    // Re-plan from the fresh object: the other writer's change survives.
                    current = self.get(key).await?;
                    planned = plan(planner, index, key, &current.object)?;
                }
                Err(source) => {
                    return Err(RouterError::Write {
                        key: key.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// Undoes `written` (latest first) where the object still holds what we wrote.
    async fn undo(&self, written: Vec<Written>, cause: RouterError) -> RouterError {
        let keys: Vec<ObjectKey> = written.iter().map(|w| w.key.clone()).collect();
        let mut undone = Vec::new();
        let mut not_undone = Vec::new();
        for w in written.into_iter().rev() {
            match self.undo_one(&w).await {
                Ok(()) => undone.push(w.key),
                Err(why) => not_undone.push((w.key, why)),
            }
        }
        undone.reverse();
        not_undone.reverse();
        tracing::warn!(
            cause = %cause,
            undone = undone.len(),
            not_undone = not_undone.len(),
            "routing change failed part-way; undid earlier writes"
        );
        RouterError::PartialWrite {
            written: keys,
            undone,
            not_undone,
            cause: Box::new(cause),
        }
    }

    async fn undo_one(&self, w: &Written) -> Result<(), String> {
        let max = self.options.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let fresh = self
                .store
                .get(&w.key)
                .await
                .map_err(|e| format!("re-reading failed: {e}"))?;
            if same_content(&fresh.object, &w.before) {
                return Ok(());
            }
            if !same_content(&fresh.object, &w.written) {
                return Err("changed by someone else since our write; left as is".into());
            }
            let restore = with_version_of(&w.before, &fresh.object);
            match self.store.replace(&w.key, &restore, &fresh.version).await {
                Ok(_) => return Ok(()),
                Err(ManifestStoreError::Conflict(_)) if attempt < max => {
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(ManifestStoreError::Conflict(_)) => {
                    return Err(format!(
                        "still modified concurrently after {attempt} attempts"
                    ));
                }
                Err(e) => return Err(format!("restoring failed: {e}")),
            }
        }
    }

    async fn backoff(&self, retry: u32) {
        let delay = self.options.backoff(retry, self.next_unit());
        self.sleeper.sleep(delay).await;
    }

    /// SplitMix64 over an atomic counter: deterministic for a seed, no dependency.
    fn next_unit(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn plan(
    planner: &dyn Planner,
    index: usize,
    key: &ObjectKey,
    current: &Value,
) -> Result<Value, RouterError> {
    planner
        .plan_virtual_service(index, current)
        .map_err(|message| RouterError::Plan {
            key: key.clone(),
            message,
        })
}

/// Metadata the server maintains; it changes on every write and says nothing about content.
const SERVER_METADATA: [&str; 6] = [
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// Equal apart from server-maintained metadata and `status`.
fn same_content(a: &Value, b: &Value) -> bool {
    comparable(a) == comparable(b)
}

fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SERVER_METADATA {
                meta.remove(field);
            }
        }
    }
    v
}

/// `content` carrying the `resourceVersion` of `fresh`, so a store that reads it from the body
/// sees the version we checked.
fn with_version_of(content: &Value, fresh: &Value) -> Value {
    let mut out = content.clone();
    let version = fresh
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .cloned();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        match version {
            Some(v) => {
                meta.insert("resourceVersion".into(), v);
            }
            None => {
                meta.remove("resourceVersion");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::memory::{LogEntry, MemoryManifestStore, Op, Target};
    use serde_json::json;
    use std::sync::Mutex;

    /// Sets `spec.weight`; can fail for one index or the DestinationRule.
    struct WeightPlanner {
        weight: i64,
        fail_index: Option<usize>,
        dr_error: Option<String>,
    }

    impl WeightPlanner {
        fn new(weight: i64) -> Self {
            WeightPlanner {
                weight,
                fail_index: None,
                dr_error: None,
            }
        }
    }

    impl Planner for WeightPlanner {
        fn plan_virtual_service(&self, index: usize, current: &Value) -> Result<Value, String> {
            if self.fail_index == Some(index) {
                return Err("route primary not found".into());
            }
            let mut out = current.clone();
            out["spec"]["weight"] = json!(self.weight);
            Ok(out)
        }

        fn check_destination_rule(&self, _current: &Value) -> Result<(), String> {
            match &self.dr_error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }
        }
    }

    /// Records waits; optionally runs an action on each (to play a concurrent writer).
    #[derive(Default)]
    struct TestSleeper {
        slept: Mutex<Vec<Duration>>,
        action: Option<Box<dyn Fn() + Send + Sync>>,
    }

    impl Sleeper for TestSleeper {
        fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            if let Ok(mut s) = self.slept.lock() {
                s.push(duration);
            }
            if let Some(a) = &self.action {
                a();
            }
            Box::pin(std::future::ready(()))
        }
    }

    fn vs(name: &str, weight: i64) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"weight": weight, "hosts": [name]}
        })
    }

    fn setup(store: &MemoryManifestStore) -> (ObjectKey, ObjectKey, ObjectKey) {
        let a = ObjectKey::virtual_service("ns", "a");
        let b = ObjectKey::virtual_service("ns", "b");
        let dr = ObjectKey::destination_rule("ns", "dr");
        store.insert(a.clone(), vs("a", 0));
        store.insert(b.clone(), vs("b", 0));
        store.insert(dr.clone(), json!({"kind": "DestinationRule"}));
        (a, b, dr)
    }

    fn router(
        store: &MemoryManifestStore,
        sleeper: Arc<TestSleeper>,
    ) -> Router<MemoryManifestStore> {
        Router::new(store.clone())
            .with_sleeper(sleeper)
            .with_jitter_seed(7)
    }

    fn replaces(store: &MemoryManifestStore) -> usize {
        store
            .log()
            .iter()
            .filter(|e| matches!(e, LogEntry::Replace { .. }))
            .count()
    }

    #[tokio::test]
    async fn writes_every_changed_virtual_service() {
        let store = MemoryManifestStore::new();
        let (a, b, dr) = setup(&store);
        let r = router(&store, Arc::default());
        let report = r
            .apply(&[a.clone(), b.clone()], Some(&dr), &WeightPlanner::new(10))
            .await
            .unwrap();
        assert_eq!(report.changed, vec![a.clone(), b.clone()]);
        assert!(report.unchanged.is_empty());
        assert_eq!(report.conflicts_retried, 0);
        assert_eq!(store.object(&a).unwrap()["spec"]["weight"], json!(10));
        assert_eq!(store.object(&b).unwrap()["spec"]["weight"], json!(10));
        let read = r.read(&[a.clone(), b.clone()]).await.unwrap();
        assert_eq!(read.len(), 2);
        // What the report says each target holds is what a read returns.
        let held: Vec<(ObjectKey, Value)> =
            vec![(a, read[0].object.clone()), (b, read[1].object.clone())];
        assert_eq!(report.objects, held);
    }

    #[tokio::test]
    async fn no_write_when_nothing_changes() {
        let store = MemoryManifestStore::new();
        let (a, b, _) = setup(&store);
        let r = router(&store, Arc::default());
        let report = r
            .apply(&[a.clone(), b.clone()], None, &WeightPlanner::new(0))
            .await
            .unwrap();
        assert_eq!(report.unchanged, vec![a.clone(), b.clone()]);
        assert!(report.changed.is_empty());
        assert_eq!(replaces(&store), 0);
        assert_eq!(
            report.objects,
            vec![
                (a.clone(), store.object(&a).unwrap()),
                (b.clone(), store.object(&b).unwrap())
            ]
        );
    }

    #[tokio::test]
    async fn validates_everything_before_the_first_write() {
        let store = MemoryManifestStore::new();
        let (a, b, dr) = setup(&store);
        let r = router(&store, Arc::default());

        // A plan error on the second VS.
        let mut p = WeightPlanner::new(10);
        p.fail_index = Some(1);
        let e = r
            .apply(&[a.clone(), b.clone()], None, &p)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RouterError::Plan { key, .. } if *key == b),
            "{e}"
        );
        assert!(e.to_string().contains("VirtualService ns/b"), "{e}");

        // A missing VS.
        let missing = ObjectKey::virtual_service("ns", "missing");
        let e = r
            .apply(&[a.clone(), missing.clone()], None, &WeightPlanner::new(10))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            RouterError::Read {
                key: missing.clone(),
                source: Box::new(ManifestStoreError::NotFound(missing))
            }
        );

        // The DestinationRule check fails.
        let mut p = WeightPlanner::new(10);
        p.dr_error = Some("subset v2 not defined".into());
        let e = r
            .apply(&[a.clone(), b.clone()], Some(&dr), &p)
            .await
            .unwrap_err();
        assert!(matches!(&e, RouterError::DestinationRule { key, .. } if *key == dr));
        assert!(
            e.to_string().contains("DestinationRule ns/dr: subset v2"),
            "{e}"
        );

        // The DestinationRule is missing.
        let no_dr = ObjectKey::destination_rule("ns", "nope");
        let e = r
            .apply(
                std::slice::from_ref(&a),
                Some(&no_dr),
                &WeightPlanner::new(10),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RouterError::Read { key, .. } if key == no_dr));

        // A backend failure while reading names the object.
        store.inject(
            Op::Get,
            &b,
            ManifestStoreError::Backend("timeout".into()),
            1,
        );
        let e = r
            .apply(&[a.clone(), b.clone()], None, &WeightPlanner::new(10))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "reading VirtualService ns/b: timeout");

        // Listed twice.
        let e = r
            .apply(&[a.clone(), a.clone()], None, &WeightPlanner::new(10))
            .await
            .unwrap_err();
        assert_eq!(e, RouterError::DuplicateTarget(a));

        assert_eq!(replaces(&store), 0);
    }

    #[tokio::test]
    async fn conflict_replans_from_the_fresh_object() {
        let store = MemoryManifestStore::new();
        let (a, _, _) = setup(&store);
        store.on_next_replace(&a, |o| o["spec"]["theirs"] = json!("kept"));
        let sleeper = Arc::new(TestSleeper::default());
        let r = router(&store, sleeper.clone());
        let report = r
            .apply(std::slice::from_ref(&a), None, &WeightPlanner::new(30))
            .await
            .unwrap();
        assert_eq!(report.conflicts_retried, 1);
        assert_eq!(report.changed, vec![a.clone()]);
        let o = store.object(&a).unwrap();
        assert_eq!(o["spec"]["weight"], json!(30));
        assert_eq!(o["spec"]["theirs"], json!("kept"));
        // The object as re-planned after the conflict, the other writer's change included.
        assert_eq!(report.objects, vec![(a.clone(), o.clone())]);
        let slept = sleeper.slept.lock().unwrap().clone();
        assert_eq!(slept.len(), 1);
        assert!(slept[0] <= Duration::from_millis(50) && slept[0] >= Duration::from_millis(25));
    }

    #[tokio::test]
    async fn conflict_that_makes_the_change_unnecessary_writes_nothing() {
        let store = MemoryManifestStore::new();
        let (a, _, _) = setup(&store);
        store.on_next_replace(&a, |o| o["spec"]["weight"] = json!(30));
        let r = router(&store, Arc::default());
        let report = r
            .apply(std::slice::from_ref(&a), None, &WeightPlanner::new(30))
            .await
            .unwrap();
        assert_eq!(report.unchanged, vec![a]);
        assert_eq!(report.conflicts_retried, 1);
        assert!(store.writes().is_empty());
    }

    #[tokio::test]
    async fn conflict_retries_are_bounded_with_growing_backoff() {
        let store = MemoryManifestStore::new();
        let (a, _, _) = setup(&store);
        store.inject(
            Op::Replace,
            &a,
            ManifestStoreError::Conflict(a.clone()),
            100,
        );
        let sleeper = Arc::new(TestSleeper::default());
        let options = RetryOptions {
            max_attempts: 6,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            jitter: 0.5,
        };
        let r = router(&store, sleeper.clone()).with_options(options.clone());
        let e = r
            .apply(std::slice::from_ref(&a), None, &WeightPlanner::new(30))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            RouterError::ConflictRetriesExhausted {
                key: a.clone(),
                attempts: 6
            }
        );
        assert_eq!(replaces(&store), 6);
        let slept = sleeper.slept.lock().unwrap().clone();
        assert_eq!(slept.len(), 5);
        for (i, d) in slept.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_millis(500));
            assert!(*d <= full && *d >= full / 2, "retry {i}: {d:?}");
        }

        // Same seed, same waits.
        let store2 = MemoryManifestStore::new();
        let (a2, _, _) = setup(&store2);
        store2.inject(
            Op::Replace,
            Target::Any,
            ManifestStoreError::Conflict(a2.clone()),
            100,
        );
        let sleeper2 = Arc::new(TestSleeper::default());
        let r2 = router(&store2, sleeper2.clone()).with_options(options);
        let _ = r2.apply(&[a2], None, &WeightPlanner::new(30)).await;
        assert_eq!(*sleeper2.slept.lock().unwrap(), slept);
    }

    #[tokio::test]
    async fn later_failure_undoes_earlier_writes() {
        let store = MemoryManifestStore::new();
        let (a, b, _) = setup(&store);
        let original = store.object(&a).unwrap();
        store.inject(
            Op::Replace,
            &b,
            ManifestStoreError::Backend("forbidden".into()),
            1,
        );
        let r = router(&store, Arc::default());
        let e = r
            .apply(&[a.clone(), b.clone()], None, &WeightPlanner::new(10))
            .await
            .unwrap_err();
        match &e {
            RouterError::PartialWrite {
                written,
                undone,
                not_undone,
                cause,
            } => {
                assert_eq!(written, &vec![a.clone()]);
                assert_eq!(undone, &vec![a.clone()]);
                assert!(not_undone.is_empty());
                assert!(matches!(**cause, RouterError::Write { ref key, .. } if *key == b));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!e.left_partial_state());
        assert_eq!(store.object(&a).unwrap(), original);
        assert_eq!(store.object(&b).unwrap()["spec"]["weight"], json!(0));
    }

    /// Issue 15 item 5: a rollback with one VirtualService missing and one unwritable writes
    /// the third and reports both; `apply` (a forward move) writes nothing in the same case.
    #[tokio::test]
    async fn a_rollback_writes_every_virtual_service_it_can() {
        let store = MemoryManifestStore::new();
        let (a, b, dr) = setup(&store);
        let c = ObjectKey::virtual_service("ns", "c");
        let missing = ObjectKey::virtual_service("ns", "missing");
        store.insert(c.clone(), vs("c", 50));
        store.insert(a.clone(), vs("a", 50));
        store.insert(b.clone(), vs("b", 50));
        store.inject(
            Op::Replace,
            &b,
            ManifestStoreError::Backend("forbidden".into()),
            1,
        );
        let r = router(&store, Arc::default());
        let targets = [missing.clone(), a.clone(), b.clone(), c.clone()];
        let forward = r
            .apply(&targets, Some(&dr), &WeightPlanner::new(0))
            .await
            .unwrap_err();
        assert!(matches!(forward, RouterError::Read { .. }), "{forward:?}");
        assert_eq!(replaces(&store), 0);

        let e = r
            .apply_each(&targets, Some(&dr), &WeightPlanner::new(0))
            .await
            .unwrap_err();
        let RouterError::Incomplete { written, failed } = &e else {
            panic!("unexpected {e:?}");
        };
        assert_eq!(written, &vec![a.clone(), c.clone()]);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(matches!(&failed[0], RouterError::Read { key, .. } if *key == missing));
        assert!(matches!(&failed[1], RouterError::Write { key, .. } if *key == b));
        let msg = e.to_string();
        assert!(
            msg.contains("ns/missing") && msg.contains("forbidden"),
            "{msg}"
        );
        for (key, weight) in [(&a, 0), (&b, 50), (&c, 0)] {
            assert_eq!(store.object(key).unwrap()["spec"]["weight"], json!(weight));
        }
        // The retry once the missing one exists writes what is still not rolled back.
        store.insert(missing.clone(), vs("missing", 50));
        let report = r
            .apply_each(&targets, Some(&dr), &WeightPlanner::new(0))
            .await
            .unwrap();
        assert_eq!(report.changed, vec![missing.clone(), b.clone()]);
        assert_eq!(report.unchanged, vec![a, c]);
        // A failing DestinationRule check is reported but blocks no rollback write.
        store.insert(missing.clone(), vs("missing", 50));
        let mut p = WeightPlanner::new(0);
        p.dr_error = Some("subset v2 missing".into());
        let e = r.apply_each(&targets, Some(&dr), &p).await.unwrap_err();
        assert!(
            matches!(&e, RouterError::Incomplete { written, failed } if written == &vec![missing.clone()] && failed.len() == 1),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn undo_works_with_server_managed_metadata() {
        let store = MemoryManifestStore::kube_like();
        let (a, b, _) = setup(&store);
        let original = store.object(&a).unwrap();
        store.inject(
            Op::Replace,
            &b,
            ManifestStoreError::Conflict(b.clone()),
            100,
        );
        let r = router(&store, Arc::default());
        let e = r
            .apply(&[a.clone(), b.clone()], None, &WeightPlanner::new(10))
            .await
            .unwrap_err();
        assert!(matches!(&e, RouterError::PartialWrite { undone, cause, .. }
            if *undone == vec![a.clone()]
            && matches!(**cause, RouterError::ConflictRetriesExhausted { .. })));
        assert_eq!(store.object(&a).unwrap(), original);
    }

    #[tokio::test]
    async fn undo_never_clobbers_a_concurrent_change() {
        let store = MemoryManifestStore::new();
        let (a, b, _) = setup(&store);
        store.inject(
            Op::Replace,
            &b,
            ManifestStoreError::Conflict(b.clone()),
            100,
        );
        // While we back off on b, someone edits a.
        let other = store.clone();
        let a2 = a.clone();
        let sleeper = Arc::new(TestSleeper {
            slept: Mutex::default(),
            action: Some(Box::new(move || {
                if let Some(mut o) = other.object(&a2) {
                    o["spec"]["weight"] = json!(77);
                    other.insert(a2.clone(), o);
                }
            })),
        });
        let r = router(&store, sleeper);
        let e = r
            .apply(&[a.clone(), b.clone()], None, &WeightPlanner::new(10))
            .await
            .unwrap_err();
        assert!(e.left_partial_state());
        match &e {
            RouterError::PartialWrite {
                undone, not_undone, ..
            } => {
                assert!(undone.is_empty());
                assert_eq!(not_undone.len(), 1);
                assert_eq!(not_undone[0].0, a);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            e.to_string().contains("NOT undone: VirtualService ns/a"),
            "{e}"
        );
        assert_eq!(store.object(&a).unwrap()["spec"]["weight"], json!(77));
    }

    #[test]
    fn apply_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store = MemoryManifestStore::new();
        let r = Router::new(store);
        let p = WeightPlanner::new(1);
        let f = r.apply(&[], None, &p);
        assert_send(&f);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let o = RetryOptions::default();
        assert_eq!(o.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(o.backoff(2, 0.0), Duration::from_millis(100));
        assert_eq!(o.backoff(40, 0.0), Duration::from_secs(1));
        let j = o.backoff(1, 0.999);
        assert!(
            j >= Duration::from_millis(25) && j < Duration::from_millis(26),
            "{j:?}"
        );
    }
}
