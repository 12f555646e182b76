//! Cluster mode (`skycanary run --kube`): Canaries and templates from CRDs, routing through
//! the API server, status in `.status`, Events on the Canary; only the Lease holder drives
//! canaries.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::assembly::{
    Outcome, PollSetup, RunConfig, Serving, alarm_poller, api_auth, bind, notify_config,
    schedule_context, shutdown_signal, start_notifier,
};
use crate::canary::driver::{self, CanaryTaskContext};
use crate::daemon::TaskRegistry;
use crate::daemon::invalid::{Invalid, InvalidKind, InvalidReports, InvalidSinks};
use crate::daemon::kube_source::{KubeSource, Snapshot, SourceEvent, SourceKind};
use crate::daemon::registry::Forwarder;
use crate::daemon::reload::{reconcile_canaries, reconcile_schedules};
use crate::resources::{LoadedTemplate, load_paths};
use crate::runner::{Clock, Defaults, SystemClock};
use crate::schedule::driver::{self as schedule_driver, ScheduleTaskContext};
use crate::schedule::store::ScheduleStatusStore;
use crate::server::{self, Metrics};
use crate::state::StatusStore;
use crate::state::kube_status::KubeStatusStore;
use crate::state::lease::{LeaderElector, LeaseLock, LeaseTiming};
use crate::traffic::drift::DriftSignals;
use crate::traffic::kube::KubeManifestStore;
use crate::traffic::router::Router;

/// Runs until SIGINT/SIGTERM; a configuration refused before anything runs is reported to
/// `err` ([`Outcome::Invalid`]), as is a cluster that cannot be reached ([`Outcome::Failed`]).
pub async fn run(
    args: &RunConfig,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<Outcome> {
    let Some(auth) = api_auth(args, err)? else {
        return Ok(Outcome::Invalid);
    };
    let file_templates = match config_templates(&args.config) {
        Ok(t) => t,
        Err(errors) => {
            for e in errors {
                writeln!(err, "error: {e}")?;
            }
            return Ok(Outcome::Invalid);
        }
    };
    let Some((lease_ns, lease_name)) = args.lease.split_once('/') else {
        writeln!(
            err,
            "error: --lease {:?}: expected NAMESPACE/NAME",
            args.lease
        )?;
        return Ok(Outcome::Invalid);
    };
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| format!("skycanary-{}", std::process::id()));
    let d = args.lease_duration.max(2);
    let timing = LeaseTiming {
        duration: Duration::from_secs(d),
        renew_every: Duration::from_millis(d * 1000 / 4),
        clock_skew: Duration::from_millis(d * 1000 / 5),
    };
    // Read before anything connects: a broken file is a configuration error (exit 4).
    let Some(notify_cfg) = notify_config(args, err)? else {
        return Ok(Outcome::Invalid);
    };
    let metrics = Metrics::new();
    let notifier = start_notifier(notify_cfg.as_ref(), &metrics);
    let observer: Arc<dyn crate::traffic::kube_observe::KubeRequestObserver> =
        Arc::new(metrics.clone());
    let store = match KubeManifestStore::from_default_config_observed(
        args.istio_api_version,
        Some(observer),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(Outcome::Failed);
        }
    };
    let client = store.client().clone();
    let forward_client = client.clone();
    let lock = match LeaseLock::new(client.clone(), lease_ns, lease_name, identity.clone())
        .with_timing(timing)
    {
        Ok(l) => l,
        Err(e) => {
            writeln!(err, "error: --lease-duration: {e}")?;
            return Ok(Outcome::Invalid);
        }
    };
    let Some(listener) = bind(args, err).await? else {
        return Ok(Outcome::Invalid);
    };
    let local = listener.local_addr()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Foreign edits of the managed weights: every replica watches the VirtualServices; the
    // leader's canary tasks re-read those that changed.
    let drift = DriftSignals::watched();
    let drift_watch = tokio::spawn(crate::daemon::drift_watch::watch_virtual_services(
        client.clone(),
        store.version(),
        args.namespace.clone(),
        drift.clone(),
    ));
    // Readiness of the canaries' workloads (`spec.workloadRef`): every replica watches the
    // Deployments, StatefulSets and Service EndpointSlices, so a new leader knows at once.
    let (readiness, readiness_watches) = crate::daemon::readiness_watch::ClusterReadiness::start(
        client.clone(),
        args.namespace.clone(),
    );
    // One status store for Canaries and ScheduledAnalyses: its in-flight bound covers both.
    let status_writes = KubeStatusStore::new(client.clone());
    let ctx = CanaryTaskContext {
        router: Arc::new(Router::new(store)),
        templates: Arc::new(Vec::new()),
        state: StatusStore::kube(status_writes.clone()),
        events: Some(crate::traffic::kube::EventRecorder::new(client.clone())),
        clock: clock.clone(),
        defaults: Defaults {
            skywalking: args.skywalking.clone(),
            timezone: args.timezone,
        },
        metrics: Arc::new(metrics.clone()),
        clients: crate::runner::ClientCache::observed(Arc::new(metrics.clone())),
        drift,
        notifier: notifier.clone(),
        readiness: Some(readiness),
    };
    let registry = Arc::new(TaskRegistry::new(Vec::new(), metrics.clone()));
    registry.set_standby(Some("this replica is not the leader".into()));
    let sched_ctx = schedule_context(
        &ctx,
        ScheduleStatusStore::kube(status_writes),
        &metrics,
        registry.clone(),
    );
    // Every replica runs the poller; it polls only while this replica leads (a standby has
    // no canary to roll back and `poll_since` is `None`).
    let poller = match alarm_poller(args, registry.clone(), clock.clone(), err)? {
        PollSetup::Invalid => return Ok(Outcome::Invalid),
        PollSetup::Off => None,
        PollSetup::On(p) => Some(p),
    };
    // Best effort, as in file mode: a closed stdout does not stop the daemon.
    let _ = writeln!(
        out,
        "skycanary running in cluster mode as {identity}; listening on http://{local}"
    );
    let _ = out.flush();

    let metrics_of = metrics.clone();
    let app = server::router(registry.clone(), metrics, auth);
    let serving = Serving::start(args, listener, app, poller);
    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(false);
    let elector = LeaderElector::new(lock, clock);
    let elector_task = tokio::spawn(elector.run(leader_tx, serving.stopped()));
    let mut source = KubeSource::new(client, args.namespace.clone()).watch();

    let mut snapshot: Option<Snapshot> = None;
    let mut invalid_reports = InvalidReports::default();
    let mut leading = false;
    // The templates the running tasks were started with (to tell what a change touched).
    let mut running_templates: Arc<Vec<LoadedTemplate>> = Arc::new(Vec::new());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let mut restart = false;
        tokio::select! {
            () = &mut shutdown => break,
            changed = leader_rx.changed() => {
                if changed.is_err() { break; }
                let now = *leader_rx.borrow_and_update();
                if now != leading {
                    leading = now;
                    tracing::info!(identity = %identity, leading, "leadership changed");
                    restart = true;
                }
            }
            ev = source.recv() => match ev {
                Some(SourceEvent::Changed(s)) => {
                    for (id, errs) in &s.errors {
                        let span = crate::daemon::invalid::object_span(
                            id.kind.kind(),
                            id.namespace.as_deref().unwrap_or_default(),
                            &id.name,
                        );
                        for e in errs {
                            tracing::error!(parent: &span, "invalid resource, not driven until fixed: {e}");
                        }
                    }
                    // Only command requests changed: the drivers keep running and hear them.
                    restart = s.specs_changed || snapshot.is_none();
                    if !restart && leading {
                        registry.deliver_requests(s.command_requests());
                    }
                    snapshot = Some(*s);
                }
                Some(SourceEvent::Error(e)) => tracing::warn!("resource watch: {e}"),
                None => break,
            },
        }
        if !restart {
            continue;
        }
        // A standby drives nothing. The leader replaces only what changed: a changed canary's
        // successor stops its predecessor before it drives, so two never drive one canary.
        if !leading {
            registry.stop_tasks().await;
        }
        if leading {
            if let Some(s) = snapshot.as_mut() {
                let namespaces = s
                    .canaries
                    .iter()
                    .map(|c| c.canary.namespace().to_string())
                    .collect();
                let old_templates = running_templates.clone();
                running_templates =
                    Arc::new(merge_templates(&file_templates, &s.templates, &namespaces));
                // Never driven (so never exposed) before every analysis can be planned.
                crate::daemon::kube_source::refuse_unplannable(
                    s,
                    &running_templates,
                    &ctx.defaults,
                    notify_cfg.as_ref(),
                );
                let s = &*s;
                let ctx = CanaryTaskContext {
                    templates: running_templates.clone(),
                    ..ctx.clone()
                };
                let wanted: Vec<_> = s.canaries.iter().map(|c| c.canary.clone()).collect();
                reconcile_canaries(
                    &registry,
                    &wanted,
                    &old_templates,
                    &running_templates,
                    &|ns, name| {
                        s.errors.iter().any(|(id, _)| {
                            id.kind == SourceKind::Canary
                                && id.name == name
                                && id.namespace.as_deref() == Some(ns)
                        })
                    },
                    |c, prev| driver::spawn_successor(c, ctx.clone(), prev),
                )
                .await;
                metrics_of.retain_canaries(|ns, n| {
                    s.canaries
                        .iter()
                        .any(|c| c.canary.namespace() == ns && c.canary.doc.metadata.name == n)
                });
                // Only the leader runs schedules.
                let sched_ctx = ScheduleTaskContext {
                    templates: ctx.templates.clone(),
                    ..sched_ctx.clone()
                };
                reconcile_schedules(
                    &registry,
                    &s.scheduled,
                    &old_templates,
                    &running_templates,
                    |x| schedule_driver::spawn(x, sched_ctx.clone()),
                )
                .await;
                // Refused Canaries and ScheduledAnalyses (their tasks stopped above) say so
                // in their status and in an Event.
                let refused: Vec<Invalid> = s
                    .errors
                    .iter()
                    .filter_map(|(id, errs)| {
                        let kind = match id.kind {
                            SourceKind::Canary => InvalidKind::Canary,
                            SourceKind::ScheduledAnalysis => InvalidKind::ScheduledAnalysis,
                            _ => return None,
                        };
                        Some(Invalid {
                            kind,
                            namespace: id.namespace.clone()?,
                            name: id.name.clone(),
                            message: crate::daemon::invalid::message(errs),
                            generation: s.refused_generations.get(id).copied(),
                            uid: s.refused_uids.get(id).cloned(),
                        })
                    })
                    .collect();
                let sinks = InvalidSinks {
                    canaries: &ctx.state,
                    schedules: &sched_ctx.state,
                    events: ctx.events.as_ref(),
                    registry: &registry,
                    notifier: &ctx.notifier,
                };
                crate::daemon::invalid::report(
                    &mut invalid_reports,
                    &refused,
                    &sinks,
                    ctx.clock.now(),
                )
                .await;
                registry.set_standby(None);
                registry.set_forwarder(None);
                registry.set_ready(true);
                // Requests written while no driver ran (or before this restart); a driver
                // ignores one it already handled (`lastCommand.id`).
                registry.deliver_requests(s.command_requests());
            }
        } else {
            // A new leader reports every refusal again.
            invalid_reports = InvalidReports::default();
            registry.set_standby(Some("this replica is not the leader".into()));
            // Alarms that reach this standby are handed to the leader, not refused.
            registry.set_forwarder(snapshot.as_ref().map(|s| {
                Forwarder::new(
                    forward_client.clone(),
                    identity.clone(),
                    s.canaries.iter().map(|c| {
                        (
                            c.canary.namespace().to_string(),
                            c.canary.doc.metadata.name.clone(),
                            c.canary.doc.spec.rollback_on.clone(),
                        )
                    }),
                )
            }));
            registry.set_ready(snapshot.is_some());
        }
    }
    registry.set_forwarder(None);
    registry.set_ready(false);
    registry.set_standby(Some("shutting down".into()));
    registry.stop_tasks().await;
    drift_watch.abort();
    for w in &readiness_watches {
        w.abort();
    }
    serving.stop();
    let _ = elector_task.await;
    let _ = serving.finished().await;
    let _ = writeln!(out, "skycanary stopped");
    Ok(Outcome::Stopped)
}

/// `--config` in cluster mode: templates shipped as files (e.g. the bundled
/// `analysis-templates/` in the image), read once at start. Canaries come only from the CRD, so
/// a Canary in these files is an error rather than silently ignored.
fn config_templates(paths: &[std::path::PathBuf]) -> Result<Vec<LoadedTemplate>, Vec<String>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let loaded = load_paths(paths);
    let mut errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    for c in &loaded.canaries {
        errors.push(format!(
            "{}: Canary {:?}: in cluster mode Canaries come from the Canary CRD (kubectl apply); \
             --config supplies AnalysisTemplates and ClusterAnalysisTemplates only",
            c.origin.file, c.doc.metadata.name
        ));
    }
    if errors.is_empty() {
        Ok(loaded.templates)
    } else {
        Err(errors)
    }
}

/// File templates plus the cluster's for canaries in `namespaces`. A file AnalysisTemplate
/// without a namespace serves every namespace (files have no namespace of their own); a cluster
/// object of the same kind, namespace and name replaces the file's, so a team can override a
/// bundled template without a restart.
pub fn merge_templates(
    files: &[LoadedTemplate],
    cluster: &[LoadedTemplate],
    namespaces: &std::collections::BTreeSet<String>,
) -> Vec<LoadedTemplate> {
    let key = |t: &LoadedTemplate| {
        (
            t.doc.kind.clone(),
            if t.cluster_scoped() {
                None
            } else {
                Some(
                    t.doc
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                )
            },
            t.doc.metadata.name.clone(),
        )
    };
    let expanded = files.iter().flat_map(|t| {
        if t.cluster_scoped() || t.doc.metadata.namespace.is_some() {
            vec![t.clone()]
        } else {
            namespaces
                .iter()
                .map(|ns| {
                    let mut t = t.clone();
                    t.doc.metadata.namespace = Some(ns.clone());
                    t
                })
                .collect()
        }
    });
    let overridden: std::collections::BTreeSet<_> = cluster.iter().map(key).collect();
    expanded
        .filter(|t| !overridden.contains(&key(t)))
        .chain(cluster.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::load_str;

    fn templates(src: &str) -> Vec<LoadedTemplate> {
        let r = load_str("t.yaml", src);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r.templates
    }

    const METRIC: &str = "  metrics:\n  - name: m\n    successCondition: result >= 1\n    provider: {skywalking: {metric: service_apdex, entity: {serviceName: s}}}\n";

    #[test]
    fn cluster_objects_override_files_of_the_same_identity_only() {
        let files = templates(&format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: ClusterAnalysisTemplate\nmetadata: {{name: apdex}}\nspec:\n{METRIC}---\napiVersion: skycanary.io/v1alpha1\nkind: ClusterAnalysisTemplate\nmetadata: {{name: sla}}\nspec:\n{METRIC}---\napiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: apdex, namespace: bookinfo}}\nspec:\n{METRIC}"
        ));
        let cluster = templates(&format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: ClusterAnalysisTemplate\nmetadata: {{name: apdex}}\nspec:\n{}",
            METRIC.replace(">= 1", ">= 2")
        ));
        let merged = merge_templates(&files, &cluster, &Default::default());
        assert_eq!(merged.len(), 3);
        let apdex: Vec<_> = merged
            .iter()
            .filter(|t| t.cluster_scoped() && t.doc.metadata.name == "apdex")
            .collect();
        assert_eq!(apdex.len(), 1);
        assert_eq!(
            apdex[0].doc.spec.metrics[0].success_condition.as_deref(),
            Some("result >= 2")
        );
        assert!(
            merged
                .iter()
                .any(|t| !t.cluster_scoped() && t.doc.metadata.name == "apdex")
        );
    }

    #[test]
    fn namespaceless_file_templates_serve_every_canary_namespace_unless_overridden() {
        let files = templates(&format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: apdex}}\nspec:\n{METRIC}"
        ));
        let cluster = templates(&format!(
            "apiVersion: skycanary.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: apdex, namespace: shop}}\nspec:\n{}",
            METRIC.replace(">= 1", ">= 2")
        ));
        let namespaces = ["bookinfo", "shop"].map(String::from).into_iter().collect();
        let merged = merge_templates(&files, &cluster, &namespaces);
        let r = crate::resources::canary::TemplateRef {
            template_name: "apdex".into(),
            ..Default::default()
        };
        let cond = |ns: &str| {
            let t: Vec<_> = merged.iter().filter(|t| t.answers(&r, ns)).collect();
            assert_eq!(t.len(), 1, "{ns}");
            t[0].doc.spec.metrics[0].success_condition.clone()
        };
        assert_eq!(cond("bookinfo").as_deref(), Some("result >= 1"));
        assert_eq!(cond("shop").as_deref(), Some("result >= 2"));
        assert!(!merged.iter().any(|t| t.answers(&r, "default")));
    }

    #[test]
    fn canaries_in_config_files_are_refused_in_cluster_mode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("c.yaml"),
            "apiVersion: skycanary.io/v1alpha1\nkind: Canary\nmetadata: {name: reviews}\nspec:\n  trafficRouting: {istio: {virtualService: {name: reviews}, stableService: a, canaryService: b}}\n  steps: [{setWeight: 10}]\n",
        )
        .unwrap();
        let e = config_templates(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            e[0].contains("c.yaml") && e[0].contains("Canary CRD"),
            "{e:?}"
        );
        assert!(config_templates(&[]).unwrap().is_empty());
    }
}
