//! Per-object reloads (issue 14): a new set of Canaries and ScheduledAnalyses replaces only the
//! tasks whose object — or a template it uses — changed. Unchanged ones keep their task (and
//! their analyses in flight); the handle map is swapped in one step, so an alarm that arrives
//! during a reload always finds a canary's rollback rules and a queue that takes it.

use crate::canary::driver::{CanaryHandle, CanaryTaskMsg};
use crate::canary::{AbortStatus, CanaryPhase};
use crate::resources::canary::{CanaryDoc, CanaryStep, OnDelete, TemplateRef};
use crate::resources::scheduled::ScheduledAnalysisDoc;
use crate::resources::template::AnalysisTemplateDoc;
use crate::resources::{LoadedCanary, LoadedScheduled, LoadedTemplate};
use crate::schedule::driver::ScheduleHandle;

use super::TaskRegistry;

/// The templates `refs` name, found as the drivers find them (`None` for a missing one).
fn referenced<'a>(
    refs: impl Iterator<Item = &'a TemplateRef>,
    namespace: &str,
    templates: &'a [LoadedTemplate],
) -> Vec<Option<&'a AnalysisTemplateDoc>> {
    refs.map(|r| {
        templates
            .iter()
            .find(|t| t.answers(r, namespace))
            .map(|t| &t.doc)
    })
    .collect()
}

fn canary_refs(doc: &CanaryDoc) -> impl Iterator<Item = &TemplateRef> {
    let background = doc.spec.analysis.iter().flat_map(|a| a.templates.iter());
    let steps = doc.spec.steps.iter().flat_map(|s| match s {
        CanaryStep::Analysis(a) => a.templates.as_slice(),
        _ => &[],
    });
    background.chain(steps)
}

/// Whether the running task of `old` (with the templates it was started with) may go on
/// driving `new`: same object, same templates.
pub fn canary_unchanged(
    old: &CanaryDoc,
    new: &LoadedCanary,
    old_templates: &[LoadedTemplate],
    new_templates: &[LoadedTemplate],
) -> bool {
    let ns = new.namespace();
    *old == new.doc
        && referenced(canary_refs(old), ns, old_templates)
            == referenced(canary_refs(&new.doc), ns, new_templates)
}

/// Whether the running task of `old` may go on running `new`.
pub fn schedule_unchanged(
    old: &ScheduledAnalysisDoc,
    new: &LoadedScheduled,
    old_templates: &[LoadedTemplate],
    new_templates: &[LoadedTemplate],
) -> bool {
    let ns = new.namespace();
    *old == new.doc
        && referenced(old.spec.templates.iter(), ns, old_templates)
            == referenced(new.doc.spec.templates.iter(), ns, new_templates)
}

/// What a reload did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Tasks kept as they were.
    pub kept: usize,
    /// Tasks started (new objects, or successors of changed ones).
    pub started: usize,
    /// Tasks stopped because their object is gone.
    pub stopped: usize,
}

/// Brings the canary tasks in line with `wanted`. A changed canary gets a successor through
/// `spawn(canary, Some(predecessor))`, which stops the predecessor itself and takes over its
/// in-memory status. A removed one is stopped after the swap — first rolled back when its
/// release runs and `onDelete` says so; `invalid(namespace, name)` tells a Canary that is
/// still there but failed validation (cluster mode) from a deleted one: it is only stopped.
pub async fn reconcile_canaries(
    registry: &TaskRegistry,
    wanted: &[LoadedCanary],
    old_templates: &[LoadedTemplate],
    new_templates: &[LoadedTemplate],
    invalid: &dyn Fn(&str, &str) -> bool,
    spawn: impl Fn(&LoadedCanary, Option<CanaryHandle>) -> CanaryHandle,
) -> Reconciled {
    let running = registry.handles();
    let mut done = Reconciled::default();
    let next: Vec<CanaryHandle> = wanted
        .iter()
        .map(|c| {
            let prev = running
                .iter()
                .find(|h| h.namespace == c.namespace() && h.name == c.doc.metadata.name);
            match prev {
                Some(h) if canary_unchanged(&h.doc, c, old_templates, new_templates) => {
                    done.kept += 1;
                    h.clone()
                }
                _ => {
                    done.started += 1;
                    spawn(c, prev.cloned())
                }
            }
        })
        .collect();
    for old in registry.replace_handles(next) {
        let still_wanted = wanted
            .iter()
            .any(|c| c.namespace() == old.namespace && c.doc.metadata.name == old.name);
        if !still_wanted {
            done.stopped += 1;
            if !invalid(&old.namespace, &old.name) {
                roll_back_removed(&old).await;
            }
            old.stop().await;
        }
    }
    done
}

/// Longest wait for the rollback of a removed canary before its task is stopped anyway.
const REMOVED_ROLLBACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Rolls a removed canary back when `onDelete: Rollback` (the default) and its release runs.
async fn roll_back_removed(h: &CanaryHandle) {
    let phase = h.status.borrow().phase;
    let running = matches!(
        phase,
        CanaryPhase::Progressing | CanaryPhase::Paused | CanaryPhase::Degraded
    );
    let id = format!("{}/{}", h.namespace, h.name);
    if !running {
        return;
    }
    if h.doc.spec.on_delete == OnDelete::Keep {
        tracing::warn!(namespace = %h.namespace, canary = %h.name, ?phase, "Canary removed mid-release; routes kept (onDelete: Keep)");
        return;
    }
    let why = AbortStatus {
        not_ready: None,
        reason: format!("Canary {id} was removed mid-release (onDelete: Rollback)"),
        metric: None,
        value: None,
        condition: None,
        alarm: None,
        at: chrono::Utc::now(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if h.tx
        .send(CanaryTaskMsg::Rollback(Box::new(why), tx))
        .is_err()
    {
        tracing::error!(namespace = %h.namespace, canary = %h.name, "Canary removed mid-release, but its task has ended: routes not rolled back");
        return;
    }
    match tokio::time::timeout(REMOVED_ROLLBACK_WAIT, rx).await {
        Ok(Ok(st)) if st.routing_write.is_none() => {
            tracing::warn!(namespace = %h.namespace, canary = %h.name, "Canary removed mid-release: rolled back to stable (onDelete: Rollback)")
        }
        Ok(Ok(st)) => {
            let error = st.routing_write.and_then(|w| w.error).unwrap_or_default();
            tracing::error!(namespace = %h.namespace, canary = %h.name, "Canary removed mid-release: the rollback write did not land: {error}")
        }
        _ => {
            tracing::error!(namespace = %h.namespace, canary = %h.name, "Canary removed mid-release: no answer to the rollback")
        }
    }
}

/// Brings the schedule tasks in line with `wanted`: unchanged ones are kept; a changed one is
/// stopped (its state saved) before its successor starts; removed ones are stopped.
pub async fn reconcile_schedules(
    registry: &TaskRegistry,
    wanted: &[LoadedScheduled],
    old_templates: &[LoadedTemplate],
    new_templates: &[LoadedTemplate],
    spawn: impl Fn(&LoadedScheduled) -> ScheduleHandle,
) -> Reconciled {
    let running = registry.schedules();
    let mut done = Reconciled::default();
    let mut next = Vec::new();
    for s in wanted {
        let prev = running
            .iter()
            .find(|h| h.namespace == s.namespace() && h.name == s.doc.metadata.name);
        match prev {
            Some(h) if schedule_unchanged(&h.doc, s, old_templates, new_templates) => {
                done.kept += 1;
                next.push(h.clone());
            }
            _ => {
                if let Some(h) = prev {
                    h.stop().await;
                }
                done.started += 1;
                next.push(spawn(s));
            }
        }
    }
    for old in registry.replace_schedules(next) {
        let still_wanted = wanted
            .iter()
            .any(|s| s.namespace() == old.namespace && s.doc.metadata.name == old.name);
        if !still_wanted {
            done.stopped += 1;
            old.stop().await;
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::CanaryStatus;
    use crate::resources::{LoadResult, load_str};
    use std::sync::Arc;

    const TEMPLATES: &str = r#"
apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex, namespace: bookinfo}
spec:
  metrics:
  - name: apdex
    successCondition: "min(result) >= 9900"
    provider: {skywalking: {metric: service_apdex, entity: {serviceName: reviews.bookinfo}}}
---
apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: unused, namespace: bookinfo}
spec:
  metrics:
  - name: sla
    successCondition: "min(result) >= 9900"
    provider: {skywalking: {metric: service_sla, entity: {serviceName: reviews.bookinfo}}}
"#;

    const CANARY: &str = r#"
apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    istio:
      virtualService: {name: reviews, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 10
  - analysis: {templates: [{templateName: apdex}]}
"#;

    const SCHEDULED: &str = r#"
apiVersion: skycanary.io/v1alpha1
kind: ScheduledAnalysis
metadata: {name: nightly, namespace: bookinfo}
spec:
  schedule: "0 2 * * *"
  templates: [{templateName: apdex}]
"#;

    fn load(templates: &str, objects: &str) -> LoadResult {
        let r = load_str("t.yaml", &format!("{templates}---{objects}"));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r
    }

    #[test]
    fn a_canary_is_unchanged_only_with_the_same_object_and_the_same_templates_it_uses() {
        let old = load(TEMPLATES, CANARY);
        let same = load(TEMPLATES, CANARY);
        let unchanged = |new: &LoadResult| {
            canary_unchanged(
                &old.canaries[0].doc,
                &new.canaries[0],
                &old.templates,
                &new.templates,
            )
        };
        assert!(unchanged(&same));
        // A template it does not use changed: still the same task.
        assert!(unchanged(&load(
            &TEMPLATES.replace("service_sla", "service_sla_v2"),
            CANARY
        )));
        // Its own template changed, or the object did: a new task.
        assert!(!unchanged(&load(
            &TEMPLATES.replace(
                ">= 9900\"\n    provider: {skywalking: {metric: service_apdex",
                ">= 9800\"\n    provider: {skywalking: {metric: service_apdex"
            ),
            CANARY
        )));
        assert!(!unchanged(&load(
            TEMPLATES,
            &CANARY.replace("setWeight: 10", "setWeight: 20")
        )));
    }

    #[test]
    fn a_schedule_is_unchanged_only_with_the_same_object_and_the_same_templates_it_uses() {
        let old = load(TEMPLATES, SCHEDULED);
        let unchanged = |new: &LoadResult| {
            schedule_unchanged(
                &old.scheduled[0].doc,
                &new.scheduled[0],
                &old.templates,
                &new.templates,
            )
        };
        assert!(unchanged(&load(TEMPLATES, SCHEDULED)));
        assert!(unchanged(&load(
            &TEMPLATES.replace("service_sla", "service_sla_v2"),
            SCHEDULED
        )));
        assert!(!unchanged(&load(
            &TEMPLATES.replace("metric: service_apdex", "metric: service_apdex_v2"),
            SCHEDULED
        )));
        assert!(!unchanged(&load(
            TEMPLATES,
            &SCHEDULED.replace("0 2 * * *", "0 3 * * *")
        )));
    }

    /// What a stand-in task was sent, in order.
    type Inbox = Arc<std::sync::Mutex<Vec<&'static str>>>;

    /// A canary task stand-in in `phase`: it answers a rollback as written and ends on stop,
    /// recording each message.
    fn stand_in(c: &LoadedCanary, phase: CanaryPhase) -> (CanaryHandle, Inbox) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (status_tx, status) = tokio::sync::watch::channel(CanaryStatus {
            phase,
            ..CanaryStatus::default()
        });
        let (fin_tx, finished) = tokio::sync::watch::channel(false);
        let inbox = Inbox::default();
        let seen = inbox.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let what = match m {
                    CanaryTaskMsg::Rollback(_, done) => {
                        let _ = done.send(CanaryStatus {
                            phase: CanaryPhase::Aborted,
                            ..CanaryStatus::default()
                        });
                        "rollback"
                    }
                    CanaryTaskMsg::Stop => "stop",
                    _ => "other",
                };
                seen.lock().unwrap().push(what);
                if what == "stop" {
                    let _ = fin_tx.send(true);
                    break;
                }
            }
            drop(status_tx);
        });
        let handle = CanaryHandle {
            namespace: c.namespace().into(),
            name: c.doc.metadata.name.clone(),
            doc: Arc::new(c.doc.clone()),
            tx,
            status,
            finished,
            handover: Arc::default(),
        };
        (handle, inbox)
    }

    fn running(registry: &TaskRegistry, name: &str) -> CanaryHandle {
        registry
            .handles()
            .into_iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("{name} has no task"))
    }

    /// Issue 14, item 5: a reload replaces only what changed. An unchanged canary keeps its
    /// very task (nothing is sent to it), a changed one gets a successor handed its
    /// predecessor, and a removed one mid-release is rolled back before it is stopped —
    /// unless `onDelete: Keep`, it is not running, or it is only invalid now.
    #[tokio::test]
    async fn a_reload_keeps_unchanged_tasks_and_replaces_only_changed_and_removed_ones() {
        let ratings = CANARY.replace("reviews", "ratings");
        let both = load(TEMPLATES, &format!("{CANARY}---{ratings}"));
        let (reviews, reviews_seen) = stand_in(&both.canaries[0], CanaryPhase::Progressing);
        let registry = TaskRegistry::new(vec![reviews.clone()], crate::server::Metrics::new());
        let spawned: std::sync::Mutex<Vec<(String, Option<CanaryHandle>, Inbox)>> =
            Default::default();
        let spawn = |c: &LoadedCanary, prev: Option<CanaryHandle>| {
            let (h, seen) = stand_in(c, CanaryPhase::Progressing);
            spawned
                .lock()
                .unwrap()
                .push((c.doc.metadata.name.clone(), prev, seen));
            h
        };
        let never_invalid = |_: &str, _: &str| false;

        // A new canary beside an unchanged one: only the new one is started.
        let done = reconcile_canaries(
            &registry,
            &both.canaries,
            &both.templates,
            &both.templates,
            &never_invalid,
            spawn,
        )
        .await;
        assert_eq!(
            done,
            Reconciled {
                kept: 1,
                started: 1,
                stopped: 0
            }
        );
        assert!(running(&registry, "reviews").tx.same_channel(&reviews.tx));
        {
            let s = spawned.lock().unwrap();
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].0, "ratings");
            assert!(s[0].1.is_none());
        }

        // reviews changed: its successor is handed the running task; ratings is kept.
        let changed = load(
            TEMPLATES,
            &format!(
                "{}---{ratings}",
                CANARY.replace("setWeight: 10", "setWeight: 20")
            ),
        );
        let ratings_task = running(&registry, "ratings");
        let done = reconcile_canaries(
            &registry,
            &changed.canaries,
            &both.templates,
            &changed.templates,
            &never_invalid,
            spawn,
        )
        .await;
        assert_eq!(
            done,
            Reconciled {
                kept: 1,
                started: 1,
                stopped: 0
            }
        );
        assert!(
            running(&registry, "ratings")
                .tx
                .same_channel(&ratings_task.tx)
        );
        let successor = running(&registry, "reviews");
        assert!(!successor.tx.same_channel(&reviews.tx));
        {
            let s = spawned.lock().unwrap();
            assert_eq!(s.len(), 2);
            assert_eq!(s[1].0, "reviews");
            let prev = s[1]
                .1
                .as_ref()
                .expect("the successor is handed its predecessor");
            assert!(prev.tx.same_channel(&reviews.tx));
        }
        // The reload itself never messages a task it keeps (the successor stops its
        // predecessor when it starts).
        assert!(reviews_seen.lock().unwrap().is_empty());

        // ratings removed mid-release: rolled back, then stopped; the map holds reviews only.
        let ratings_seen = spawned.lock().unwrap()[0].2.clone();
        let only_reviews = load(TEMPLATES, &CANARY.replace("setWeight: 10", "setWeight: 20"));
        let done = reconcile_canaries(
            &registry,
            &only_reviews.canaries,
            &changed.templates,
            &only_reviews.templates,
            &never_invalid,
            spawn,
        )
        .await;
        assert_eq!(
            done,
            Reconciled {
                kept: 1,
                started: 0,
                stopped: 1
            }
        );
        assert_eq!(*ratings_seen.lock().unwrap(), ["rollback", "stop"]);
        let names: Vec<String> = registry.handles().into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["reviews"]);

        // Removed but only stopped: onDelete Keep, a release that is not running, or an
        // object that is still there but invalid now.
        let keep = load(
            TEMPLATES,
            &ratings.replace("  revision: v2", "  revision: v2\n  onDelete: Keep"),
        );
        for (canary, phase, invalid) in [
            (&keep.canaries[0], CanaryPhase::Paused, false),
            (&both.canaries[1], CanaryPhase::Promoted, false),
            (&both.canaries[1], CanaryPhase::Progressing, true),
        ] {
            let (h, seen) = stand_in(canary, phase);
            let mut handles = registry.handles();
            handles.push(h);
            registry.replace_handles(handles);
            let is_invalid = |_: &str, name: &str| invalid && name == "ratings";
            let done = reconcile_canaries(
                &registry,
                &only_reviews.canaries,
                &only_reviews.templates,
                &only_reviews.templates,
                &is_invalid,
                spawn,
            )
            .await;
            assert_eq!(
                done,
                Reconciled {
                    kept: 1,
                    started: 0,
                    stopped: 1
                }
            );
            assert_eq!(
                *seen.lock().unwrap(),
                ["stop"],
                "{phase:?}, invalid {invalid}"
            );
        }
    }
}
