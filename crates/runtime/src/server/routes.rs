//! Routes and handlers. Every failure is JSON `{"error": "..."}`, including extractor
//! rejections, unknown routes and wrong methods, so clients parse one shape.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Auth, Gate, require_token};
use super::metrics::{Format, Metrics};
use super::session::Sessions;
use super::ui::Dashboard;
use super::{AlarmSource, CanarySummary, Control, ControlError};
use crate::canary::Command;
use crate::schedule::ScheduleSummary;

/// Largest request body accepted (DESIGN §6).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Body read limit for requests that did not come through [`super::serve_on_with`] (which sets
/// [`BodyDeadline`] per request), e.g. in-process tests.
const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// When the request's body must be complete, set by the connection that read its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyDeadline(pub tokio::time::Instant);

/// Reason recorded when `abort` comes without one.
const DEFAULT_ABORT_REASON: &str = "aborted via API";

/// An HTTP error with a JSON body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    pub(crate) fn forbidden(message: &str) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn too_many(message: &str) -> Self {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unsupported_media_type(found: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {found:?}: send application/json"),
        )
    }

    pub(crate) fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        )
    }

    fn too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        )
    }

    /// `what` names the object for 404s, which [`ControlError::NotFound`] does not carry.
    pub(crate) fn from_control(err: ControlError, what: &str) -> Self {
        match err {
            ControlError::NotFound => {
                ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            ControlError::Rejected(reason) => ApiError::new(StatusCode::CONFLICT, reason),
            ControlError::Unavailable(reason) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason)
            }
            ControlError::Invalid(reason) => ApiError::bad_request(reason),
            ControlError::Internal(reason) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, reason)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "API request failed");
        }
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::too_large();
        }
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

#[derive(Clone)]
struct AppState {
    control: Arc<dyn Control>,
    metrics: Metrics,
}

/// One route: its method, its path template and its handler. The router is built from
/// [`routes`], and the OpenAPI document is checked against the same list, so a route cannot be
/// served without being documented (or documented without being served).
struct Route {
    #[cfg_attr(not(test), allow(dead_code))] // The handler filters on it; tests read it.
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
}

/// A [`Route`] whose handler answers `method` only.
fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    // Every method named below is a standard one, which a filter exists for.
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

/// Every route the daemon serves (DESIGN §6).
fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/healthz", healthz),
        route(Method::GET, "/readyz", readyz),
        route(Method::GET, "/metrics", metrics_text),
        route(Method::GET, super::openapi::PATH, openapi_json),
        route(Method::GET, "/api/v1/canaries", list_canaries),
        route(
            Method::GET,
            "/api/v1/canaries/{namespace}/{name}",
            get_canary,
        ),
        route(
            Method::POST,
            "/api/v1/canaries/{namespace}/{name}/{action}",
            canary_command,
        ),
        route(Method::GET, "/api/v1/scheduled-analyses", list_scheduled),
        route(
            Method::POST,
            "/api/v1/scheduled-analyses/{namespace}/{name}/run",
            run_scheduled,
        ),
        route(Method::POST, "/webhooks/skywalking", skywalking_webhook),
        route(Method::POST, "/webhooks/alertmanager", alertmanager_webhook),
    ]
}

/// `(method, path template)` of every served route, for the OpenAPI coverage test.
#[cfg(test)]
pub(crate) fn served_routes() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|r| (r.method, r.path)).collect()
}

/// The whole HTTP surface. Auth applies to everything except `/healthz`, `/readyz`,
/// `/metrics`, the OpenAPI document, `/` (a redirect) and the dashboard's static page and
/// login; take [`Auth::Insecure`] only on purpose.
pub fn router(control: Arc<dyn Control>, metrics: Metrics, auth: Auth) -> Router {
    if matches!(auth, Auth::Insecure) {
        tracing::warn!("the control API is unauthenticated (insecure mode)");
    }
    let sessions = Arc::new(Sessions::default());
    let dashboard = Arc::new(Dashboard::new(
        control.clone(),
        auth.clone(),
        sessions.clone(),
    ));
    Dashboard::spawn_sampler(&dashboard);
    let gate = Gate { auth, sessions };
    let state = AppState { control, metrics };
    // `/` only redirects to the dashboard (whose routes are merged below): neither is part of
    // the API the OpenAPI document describes.
    let mut router = Router::new().route("/", axum::routing::get(root));
    for r in routes() {
        router = router.route(r.path, r.handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(super::ui::router(dashboard))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(read_body_in_time))
        .layer(middleware::from_fn(reject_declared_oversize))
        .layer(middleware::from_fn_with_state(gate, require_token))
}

/// Refuses a declared oversize body before any handler runs, including handlers that never
/// read their body (a streamed body is still cut by [`DefaultBodyLimit`] when read).
async fn reject_declared_oversize(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => ApiError::too_large().into_response(),
        _ => next.run(req).await,
    }
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`], before [`BodyDeadline`]: a client that
/// trickles its body (slowloris) gets 408 instead of holding the request open, and an
/// undeclared (chunked) body over the limit gets 413 however it is sent. Handlers then see a
/// complete body. Runs after authentication, so nobody without the token makes us read a body
/// (but for the dashboard's login, whose body the auth layer caps at 4 KiB).
async fn read_body_in_time(req: Request, next: Next) -> Response {
    use http_body_util::{BodyExt, LengthLimitError, Limited};

    let deadline = req
        .extensions()
        .get::<BodyDeadline>()
        .map(|d| d.0)
        .unwrap_or_else(|| tokio::time::Instant::now() + DEFAULT_BODY_READ_TIMEOUT);
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::too_large().into_response();
        }
        // A tighter limit set by an earlier layer (the login's), wrapped in the body's error.
        Ok(Err(e)) if limited_below(e.as_ref()) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                .into_response();
        }
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("cannot read the request body: {e}"))
                .into_response();
        }
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
            .into_response();
            // The rest of the body may still be on its way: this connection is done.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Whether a body error is, somewhere in its chain, a length limit.
fn limited_below(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// Bodies are JSON: a declared `Content-Type` must say so (`application/json`, or a
/// `+json` type, parameters allowed). A request without the header is accepted (hand-written
/// clients often send none); any other type is 415 before the body is looked at.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("<not text>");
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(text))
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed on {}", uri.path()),
    )
}

/// Every failure's body.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for a human.
    pub(crate) error: String,
}

/// `/healthz` and `/readyz` when all is well.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ProbeBody {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub(crate) status: String,
}

/// `/readyz` when a status cannot be saved (503).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct NotReadyBody {
    /// Every object whose status cannot be saved, in one sentence.
    pub(crate) error: String,
    /// The same, one entry per object.
    pub(crate) unsaved: Vec<UnsavedBody>,
}

/// One object whose status the daemon cannot save.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct UnsavedBody {
    /// `Canary` or `ScheduledAnalysis`.
    pub(crate) kind: String,
    /// Its namespace.
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
    /// Failed saves in a row.
    pub(crate) failures: u64,
    /// Why the last save failed.
    pub(crate) error: String,
}

/// `GET /api/v1/canaries`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct CanaryList {
    /// Every known canary.
    pub(crate) items: Vec<CanarySummary>,
}

/// `GET /api/v1/scheduled-analyses`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ScheduleList {
    /// Every known scheduled analysis.
    pub(crate) items: Vec<ScheduleSummary>,
}

/// A browser pointed at the daemon's address lands on the dashboard (public: the redirect
/// reveals nothing, and no authentication challenge is sent for it).
async fn root() -> axum::response::Redirect {
    axum::response::Redirect::to("/ui")
}

async fn healthz() -> Json<ProbeBody> {
    Json(ProbeBody {
        status: "ok".into(),
    })
}

/// The OpenAPI document, built once: it depends only on the types.
async fn openapi_json() -> Json<&'static Value> {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(super::openapi::document))
}

/// Ready once the daemon says so and while every status save lands: a daemon that cannot save
/// state would lose what it decides on its next restart, so it must not look healthy (the
/// failing objects and errors are in the body; the drivers keep retrying meanwhile).
///
/// `?exclude=state` leaves the state check out (the kube-apiserver convention): the shipped
/// Deployments probe that way, since a pod taken out of its Service during a state outage
/// could no longer take the alarms that roll canaries back.
async fn readyz(State(state): State<AppState>, Query(q): Query<ReadyzQuery>) -> Response {
    if !state.control.ready() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
    }
    let unsaved = state.metrics.unsaved_states();
    let excluded = q.exclude.as_deref() == Some("state");
    if unsaved.is_empty() || excluded {
        return Json(ProbeBody {
            status: "ready".into(),
        })
        .into_response();
    }
    let named: Vec<String> = unsaved
        .iter()
        .map(|u| {
            format!(
                "{} {}/{} ({} failed save(s): {})",
                u.kind.as_str(),
                u.namespace,
                u.name,
                u.failures,
                u.error
            )
        })
        .collect();
    let objects: Vec<UnsavedBody> = unsaved
        .iter()
        .map(|u| UnsavedBody {
            kind: u.kind.as_str().to_string(),
            namespace: u.namespace.clone(),
            name: u.name.clone(),
            failures: u.failures,
            error: u.error.clone(),
        })
        .collect();
    // Not an ApiError: probes poll this, and the drivers already log every failed save.
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(NotReadyBody {
            error: format!("status cannot be saved: {}", named.join("; ")),
            unsaved: objects,
        }),
    )
        .into_response()
}

/// OpenMetrics for scrapers that ask for it (Prometheus), the classic text format otherwise.
async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match state.metrics.encode_as(format) {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics")
            .into_response(),
    }
}

async fn list_canaries(State(state): State<AppState>) -> Json<CanaryList> {
    Json(CanaryList {
        items: state.control.canaries(),
    })
}

async fn get_canary(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<CanarySummary>, ApiError> {
    let Path((namespace, name)) = path?;
    state
        .control
        .canary(&namespace, &name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::from_control(
                ControlError::NotFound,
                &format!("canary {namespace}/{name}"),
            )
        })
}

/// `GET /readyz?exclude=state`.
#[derive(Debug, Deserialize)]
struct ReadyzQuery {
    /// A check to leave out (`state`).
    exclude: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PromoteQuery {
    #[serde(default)]
    full: bool,
}

/// `POST .../abort` body (optional).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortBody {
    /// Why, shown in the status; `aborted via API` when absent or blank.
    #[serde(default)]
    reason: Option<String>,
}

/// The abort reason from an optional JSON body; an empty body means "no reason given".
fn abort_reason(body: &[u8]) -> Result<String, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(DEFAULT_ABORT_REASON.to_string());
    }
    let parsed: AbortBody = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid abort body: {err}")))?;
    Ok(parsed
        .reason
        .map(|reason| reason.trim().to_string())
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| DEFAULT_ABORT_REASON.to_string()))
}

async fn canary_command(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    query: Result<Query<PromoteQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CanarySummary>, ApiError> {
    let Path((namespace, name, action)) = path?;
    let body = body?;
    if !body.trim_ascii().is_empty() {
        require_json(&headers)?;
    }
    let cmd = match action.as_str() {
        "promote" => Command::Promote { full: query?.full },
        "abort" => Command::Abort {
            reason: abort_reason(&body)?,
        },
        "retry" => Command::Retry,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown action {other:?}: expected promote, abort, retry, pause or resume"
                ),
            ));
        }
    };
    tracing::info!(%namespace, canary = %name, command = ?cmd, "API command");
    state
        .control
        .command(&namespace, &name, cmd)
        .await
        .map(Json)
        .map_err(|err| ApiError::from_control(err, &format!("canary {namespace}/{name}")))
}

async fn list_scheduled(State(state): State<AppState>) -> Json<ScheduleList> {
    Json(ScheduleList {
        items: state.control.scheduled_analyses(),
    })
}

async fn run_scheduled(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((namespace, name)) = path?;
    state
        .control
        .run_scheduled(&namespace, &name)
        .await
        .map(Json)
        .map_err(|err| {
            ApiError::from_control(err, &format!("scheduled analysis {namespace}/{name}"))
        })
}

async fn skywalking_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    alarm(state, AlarmSource::Skywalking, body?).await
}

async fn alertmanager_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    alarm(state, AlarmSource::Alertmanager, body?).await
}

/// Checks only that the body is JSON (one clear 400 for both sources), then hands the raw
/// bytes to the daemon, which owns the payload schemas. 200 with the summary when every alarm
/// parsed; 422 with the same summary plus `error` when some were refused (the valid ones were
/// acted on all the same).
async fn alarm(state: AppState, source: AlarmSource, body: Bytes) -> Result<Response, ApiError> {
    serde_json::from_slice::<IgnoredAny>(&body).map_err(|err| {
        ApiError::bad_request(format!("invalid {} payload: {err}", source.as_str()))
    })?;
    let reply = state
        .control
        .alarm_webhook(source, body)
        .await
        .map_err(|err| ApiError::from_control(err, "alarm target"))?;
    if reply.pending > 0 {
        tracing::error!(source = source.as_str(), pending = reply.pending, summary = %reply.summary,
            "matched alarm(s) answered 503: rollback not written yet (retried until it lands)");
        let mut body = reply.summary;
        if let Some(obj) = body.as_object_mut() {
            obj.insert(
                "error".into(),
                Value::String(format!(
                    "{} canary rollback(s) not written yet; they are retried until they land",
                    reply.pending
                )),
            );
        }
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    if reply.refused == 0 {
        return Ok(Json(reply.summary).into_response());
    }
    tracing::warn!(source = source.as_str(), refused = reply.refused, reason = %reply.reason,
        "malformed alarms refused; the valid ones of the payload were handled");
    let mut body = reply.summary;
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "error".into(),
            Value::String(format!(
                "{} malformed alarm(s) refused: {}",
                reply.refused, reply.reason
            )),
        );
    }
    Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
}
