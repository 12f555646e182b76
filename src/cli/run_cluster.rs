//! `skycanary run --kube`: Canaries and templates from CRDs, routing through the API server,
//! status in `.status`, Events on the Canary; only the Lease holder drives canaries.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::run::{RunArgs, api_auth, bind, shutdown_signal};
use crate::canary::driver::{self, DriverContext};
use crate::daemon::DaemonControl;
use crate::daemon::kube_source::{KubeSource, Snapshot, SourceEvent};
use crate::runner::{Clock, Defaults, SystemClock};
use crate::server::{self, Metrics};
use crate::state::StatusStore;
use crate::state::kube_status::KubeStatusStore;
use crate::state::lease::{LeaderElector, LeaseLock, LeaseTiming};
use crate::traffic::kube::KubeStore;
use crate::traffic::router::Router;

/// Runs until SIGINT/SIGTERM.
pub async fn run(
    args: &RunArgs,
    out: &mut (dyn Write + Send),
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some(auth) = api_auth(args, err)? else {
        return Ok(4);
    };
    let Some((lease_ns, lease_name)) = args.lease.split_once('/') else {
        writeln!(
            err,
            "error: --lease {:?}: expected NAMESPACE/NAME",
            args.lease
        )?;
        return Ok(4);
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
    let store = match KubeStore::from_default_config(args.istio_api_version).await {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(1);
        }
    };
    let client = store.client().clone();
    let lock = match LeaseLock::new(client.clone(), lease_ns, lease_name, identity.clone())
        .with_timing(timing)
    {
        Ok(l) => l,
        Err(e) => {
            writeln!(err, "error: --lease-duration: {e}")?;
            return Ok(4);
        }
    };
    let Some(listener) = bind(args, err).await? else {
        return Ok(4);
    };
    let local = listener.local_addr()?;
    let metrics = Metrics::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = DriverContext {
        router: Arc::new(Router::new(store)),
        templates: Arc::new(Vec::new()),
        state: StatusStore::Kube(KubeStatusStore::new(client.clone())),
        events: Some(client.clone()),
        clock: clock.clone(),
        defaults: Defaults {
            skywalking: args.skywalking.clone(),
            timezone: args.timezone,
        },
        metrics: metrics.clone(),
        clients: crate::runner::ClientCache::new(),
    };
    let control = Arc::new(DaemonControl::new(Vec::new(), metrics.clone()));
    control.set_standby(Some("this replica is not the leader".into()));
    writeln!(
        out,
        "skycanary running in cluster mode as {identity}; listening on http://{local}"
    )?;
    out.flush()?;

    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let elector = LeaderElector::new(lock, clock);
    let mut stop_elector = stop_rx.clone();
    let elector_task = tokio::spawn(elector.run(leader_tx, async move {
        let _ = stop_elector.wait_for(|s| *s).await;
    }));
    let mut source = KubeSource::new(client, args.namespace.clone()).watch();

    let app = server::router(control.clone(), metrics, auth);
    let mut stop_server = stop_rx.clone();
    let server_task = tokio::spawn(server::serve_on(listener, app, async move {
        let _ = stop_server.wait_for(|s| *s).await;
    }));

    let mut snapshot: Option<Snapshot> = None;
    let mut leading = false;
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
                        for e in errs {
                            tracing::error!(object = ?id, "invalid resource, ignored: {e}");
                        }
                    }
                    snapshot = Some(s);
                    restart = true;
                }
                Some(SourceEvent::Error(e)) => tracing::warn!("resource watch: {e}"),
                None => break,
            },
        }
        if !restart {
            continue;
        }
        // Stop the current tasks before starting new ones, so two never drive one canary.
        control.stop_tasks().await;
        if leading {
            if let Some(s) = &snapshot {
                let ctx = DriverContext {
                    templates: Arc::new(s.templates.clone()),
                    ..ctx.clone()
                };
                let handles = s
                    .canaries
                    .iter()
                    .map(|c| driver::spawn(&c.canary, ctx.clone()))
                    .collect();
                control.replace_handles(handles);
                control.set_standby(None);
                control.set_ready(true);
            }
        } else {
            control.set_standby(Some("this replica is not the leader".into()));
            control.set_ready(snapshot.is_some());
        }
    }
    control.set_ready(false);
    control.set_standby(Some("shutting down".into()));
    control.stop_tasks().await;
    let _ = stop_tx.send(true);
    let _ = elector_task.await;
    let _ = server_task.await;
    writeln!(out, "skycanary stopped")?;
    Ok(0)
}
