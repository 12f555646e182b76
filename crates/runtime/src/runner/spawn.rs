//! Starting an analysis run beside the task that owns it: the one place both object tasks (a
//! Canary's and a ScheduledAnalysis') connect a run's clients, keep its stop channel and run it
//! as a tokio task of its own, so the two cannot drift apart in how a run starts or ends.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::clients::ClientCache;
use super::clock::Clock;
use super::plan::{RunPlan, StartError};
use super::run::{RoutingChanges, RunEvent, run_canary_analysis};
use crate::analysis::{RunState, start_run};

/// Stop channels of a task's running analyses, by run name: a value sent stops the run with
/// that reason (terminated, measured no more).
pub type RunStops = HashMap<String, watch::Sender<Option<String>>>;

/// How a run is started and where its progress goes.
pub struct RunStart<E, D> {
    /// The run's name (the key of its stop channel).
    pub name: String,
    /// What it measures and how it decides.
    pub plan: RunPlan,
    /// The daemon's clock.
    pub clock: Arc<dyn Clock>,
    /// The state to continue from (a run resumed after a restart); `None` starts afresh.
    pub resume: Option<RunState>,
    /// A canary's routing changes, which its aligned windows follow; `None` for a run that
    /// moves no traffic (a scheduled analysis).
    pub routing: Option<RoutingChanges>,
    /// The run's span, a child of its task's: every measurement line carries the run.
    pub span: tracing::Span,
    /// Each event while it runs (measurements, waits).
    pub on_event: E,
    /// The final state, once stopped or decided.
    pub done: D,
}

/// Connects the plan's clients (an error before anything is spawned, so the caller can end
/// the run at once), registers the run's stop channel in `stops` and spawns it.
pub fn spawn_run<E, D>(
    start: RunStart<E, D>,
    clients: &ClientCache,
    stops: &mut RunStops,
) -> Result<(), StartError>
where
    E: FnMut(RunEvent<'_>) + Send + 'static,
    D: FnOnce(RunState) + Send + 'static,
{
    let clients = clients.connect(&start.plan)?;
    let (stop_tx, mut stop_rx) = watch::channel(None);
    stops.insert(start.name, stop_tx);
    let RunStart {
        plan,
        clock,
        resume,
        routing,
        span,
        mut on_event,
        done,
        ..
    } = start;
    let run = async move {
        let state = resume.unwrap_or_else(|| start_run(&plan.spec, clock.now()));
        // A run without routing changes sees a channel that never changes.
        let (_unchanging, never) = watch::channel(None);
        let finished = run_canary_analysis(
            &plan,
            &clients,
            clock.as_ref(),
            state,
            &mut on_event,
            &mut stop_rx,
            routing.unwrap_or(never),
        )
        .await;
        done(finished);
    };
    tokio::spawn(run.instrument(span));
    Ok(())
}
