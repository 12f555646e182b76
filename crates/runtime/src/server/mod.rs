//! The daemon's HTTP edge (DESIGN §6): health, readiness, OpenMetrics, the control API, the
//! alarm webhooks and the live dashboard (`/ui`). The server owns no canary state: it authenticates, bounds and translates
//! requests into calls on [`Control`], which the daemon implements.

mod auth;
mod metrics;
mod openapi;
mod process;
mod routes;
pub mod session;
#[cfg(test)]
mod tests;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::canary::{CanaryStatus, Command};

pub use auth::{Auth, AuthError, TOKEN_ENV, Token, TokenError};
pub use metrics::{
    CLASSIC_CONTENT_TYPE, Format, Metrics, OPENMETRICS_CONTENT_TYPE, StateKind, UnsavedState,
    openmetrics_to_classic,
};
pub use openapi::{PATH as OPENAPI_PATH, document as openapi_document};
use routes::BodyDeadline;
pub use routes::{MAX_BODY_BYTES, router};

/// What the API shows of a canary: enough for `skycanary status` without the full resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanarySummary {
    /// Namespace (`default` in file mode unless the manifest says otherwise).
    pub namespace: String,
    /// Canary name.
    pub name: String,
    /// Number of steps in the spec, so clients can show `step 2/5`.
    pub steps: usize,
    /// The canary's `.status`.
    pub status: CanaryStatus,
}

/// A canary's traffic split as the dashboard's weight chart samples it: read from the
/// status in place, because the chart samples every canary every second and a whole status
/// (its measurements and evidence) is far larger than these few numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryWeights {
    /// Namespace.
    pub namespace: String,
    /// Canary name.
    pub name: String,
    /// Percent of traffic to the stable version.
    pub stable: i64,
    /// Percent of traffic to the canary.
    pub canary: i64,
    /// When the routing last changed (`status.routingChangedAt`).
    pub changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl CanaryWeights {
    /// The weights written for the canary (the last successful write, else what it wants).
    pub fn of(namespace: &str, name: &str, status: &CanaryStatus) -> Self {
        let canary = status
            .applied
            .as_ref()
            .map_or(status.desired_weight, |a| a.canary_weight)
            .clamp(0, 100);
        CanaryWeights {
            namespace: namespace.to_string(),
            name: name.to_string(),
            stable: 100 - canary,
            canary,
            changed_at: status.routing_changed_at,
        }
    }
}

/// Where an alarm payload came from (defined with the alarm intake, which the canary tasks
/// also hear it from).
pub use crate::alarm::AlarmSource;

/// Why the daemon refused or could not carry out a request; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such canary or scheduled analysis (404).
    #[error("not found")]
    NotFound,
    /// The command does not apply in the current state, e.g. retry while progressing (409).
    #[error("rejected: {0}")]
    Rejected(String),
    /// This replica cannot act now, typically because it is not the leader (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request content is invalid, e.g. an alarm payload that does not parse (400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The daemon as the server sees it. Reads are synchronous snapshots of in-memory state;
/// actions are futures because they may wait for the canary's driver task or the cluster.
pub trait Control: Send + Sync + 'static {
    /// Every known canary.
    fn canaries(&self) -> Vec<CanarySummary>;
    /// Every known canary's weights, in the order of [`Control::canaries`]. The default
    /// derives them from it; a daemon reads them without copying the statuses.
    fn canary_weights(&self) -> Vec<CanaryWeights> {
        self.canaries()
            .iter()
            .map(|c| CanaryWeights::of(&c.namespace, &c.name, &c.status))
            .collect()
    }
    /// One canary, `None` when unknown.
    fn canary(&self, namespace: &str, name: &str) -> Option<CanarySummary>;
    /// Applies a user command; resolves to the canary after the command was accepted.
    fn command(
        &self,
        namespace: &str,
        name: &str,
        cmd: Command,
    ) -> BoxFuture<'static, Result<CanarySummary, ControlError>>;
    /// Scheduled analyses: spec summary and status of each (`GET /api/v1/scheduled-analyses`).
    fn scheduled_analyses(&self) -> Vec<crate::schedule::ScheduleSummary>;
    /// Starts a scheduled analysis now.
    fn run_scheduled(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<serde_json::Value, ControlError>>;
    /// True once sources are loaded and (in cluster mode) the leader is known.
    fn ready(&self) -> bool;
    /// Alarm intake. The server has checked auth, the size limit and that the body is JSON;
    /// parsing the payload is the daemon's job. A payload of the wrong shape is an error; a
    /// payload with some malformed alarms is not: the valid ones are acted on and the reply
    /// says which were refused.
    fn alarm_webhook(
        &self,
        source: AlarmSource,
        body: Bytes,
    ) -> BoxFuture<'static, Result<AlarmReply, ControlError>>;
}

/// What the daemon made of an alarm payload.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmReply {
    /// What was received, matched, de-duplicated and refused (the response body).
    pub summary: serde_json::Value,
    /// Alarms of the payload refused as malformed; when any, the answer is 422 (the valid
    /// ones were still acted on), so the sender's logs show the problem.
    pub refused: usize,
    /// Why they were refused (the first few reasons), for the `error` field.
    pub reason: String,
    /// Matched canaries whose rollback write was not acknowledged (`rollbackPending` in the
    /// summary): the answer is then 503, never a 2xx that claims the traffic moved.
    pub pending: usize,
}

/// Failure to run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Why the bind failed (address in use, permission).
        source: std::io::Error,
    },
    /// The accept loop failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Binds `addr` and serves `app` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    addr: SocketAddr,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    serve_on(listener, app, shutdown).await
}

/// How long a client may take to send a request, so slow or stalled clients (slowloris) cannot
/// hold the daemon's connections: first its headers, then, from there, its whole body. A client
/// too slow with its headers is disconnected; one too slow with its body gets 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTimeouts {
    /// From the connection's start (or the previous response) to the end of the headers.
    pub headers: Duration,
    /// From the end of the headers to the end of the body.
    pub body: Duration,
}

impl ReadTimeouts {
    /// The same limit for headers and body.
    pub fn both(limit: Duration) -> Self {
        ReadTimeouts {
            headers: limit,
            body: limit,
        }
    }
}

impl Default for ReadTimeouts {
    /// 10 s each: far beyond any real client on a cluster network, short enough that idle
    /// connections cannot pile up.
    fn default() -> Self {
        ReadTimeouts::both(Duration::from_secs(10))
    }
}

/// Like [`serve`] on an already bound listener (tests bind port 0 and read the address), with
/// the default [`ReadTimeouts`].
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_on_with(listener, app, shutdown, ReadTimeouts::default()).await
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then stops accepting and lets every
/// connection finish its in-flight request. Accept errors (e.g. too many open files) are logged
/// and retried, never fatal.
pub async fn serve_on_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: ReadTimeouts,
) -> Result<(), ServerError> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "HTTP server listening");
    }
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            timeouts,
            closing_rx.clone(),
        ));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: axum::Router,
    timeouts: ReadTimeouts,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    use tower::ServiceExt;

    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut()
            .insert(BodyDeadline(tokio::time::Instant::now() + timeouts.body));
        app.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // half_close: a client that shuts its writing side once the request is sent (`nc -N`,
    // some proxies) is still answered; without it, hyper drops a connection whose read side
    // ends while a large body's request is being handled, and the client gets nothing.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.headers)
        .half_close(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("HTTP connection ended: {e}");
            }
        }
        () = async { let _ = closing.wait_for(|c| *c).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
