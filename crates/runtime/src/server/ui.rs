//! The live dashboard (`/ui`): a static page (HTML, CSS and plain JS compiled into the binary,
//! no external asset) that logs in with the API token, polls [`STATE_PATH`] and calls the
//! `/api/v1` actions. The data is built here as plain functions over the daemon's summaries:
//! [`WeightHistory`] remembers the weights each canary showed, [`view`] shapes what the page
//! draws, with the weight chart rendered by the HTML reports' SVG code.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Auth, SessionAuth};
use super::routes::ApiError;
use super::session::{Sessions, clear_cookie, reached_over_https, set_cookie};
use super::{CanarySummary, CanaryWeights, Control};
use crate::analysis::{Phase, fmt_num};
use crate::report::WeightSeries;
use crate::report::svg::{Span, weights_chart};
use crate::schedule::ScheduleSummary;

/// Where the page reads its data.
pub const STATE_PATH: &str = "/ui/state";
/// The data is rebuilt at most this often, however many pages poll (the page polls every
/// 1.5 s): a bound on the work any number of open dashboards cause.
pub const STATE_REFRESH: Duration = Duration::from_secs(1);
/// How often the weights are sampled for the chart when no page asks.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Weight changes remembered per canary (oldest dropped first).
pub const MAX_WEIGHT_POINTS: usize = 240;
/// Measurements shown per canary (newest first).
pub const MAX_MEASUREMENTS: usize = 40;
/// Canaries and scheduled analyses shown at most (the page says how many were left out).
pub const MAX_OBJECTS: usize = 200;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Scripts and styles from this origin only, no inline script, no framing, no form posting
/// elsewhere: the page needs nothing else (works offline, no CDN).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the dashboard's handlers share.
pub(crate) struct Dashboard {
    control: Arc<dyn Control>,
    auth: Auth,
    sessions: Arc<Sessions>,
    history: Mutex<WeightHistory>,
    cache: Mutex<Option<(Instant, Bytes)>>,
}

impl Dashboard {
    pub(crate) fn new(control: Arc<dyn Control>, auth: Auth, sessions: Arc<Sessions>) -> Self {
        Dashboard {
            control,
            auth,
            sessions,
            history: Mutex::new(WeightHistory::default()),
            cache: Mutex::new(None),
        }
    }

    /// Records the canaries' weights now (also done by every state rebuild).
    fn sample(&self) {
        let weights = self.control.canary_weights();
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(&weights, Utc::now());
    }

    /// Samples the weights every [`SAMPLE_EVERY`] while the dashboard (its router) lives, so
    /// the chart starts with the daemon, not with the first page opened. Without a runtime
    /// (a router built outside one) the page's own polls are the only samples.
    pub(crate) fn spawn_sampler(dashboard: &Arc<Dashboard>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(dashboard);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(dashboard) = weak.upgrade() else {
                    break;
                };
                dashboard.sample();
            }
        });
    }

    /// The state document, rebuilt when older than [`STATE_REFRESH`].
    fn state(&self) -> Result<Bytes, serde_json::Error> {
        let now = Instant::now();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, body)) = cache.as_ref()
            && now.saturating_duration_since(*at) < STATE_REFRESH
        {
            return Ok(body.clone());
        }
        let canaries = self.control.canaries();
        let scheduled = self.control.scheduled_analyses();
        let wall = Utc::now();
        let view = {
            let mut history = self
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let weights: Vec<CanaryWeights> = canaries
                .iter()
                .map(|c| CanaryWeights::of(&c.namespace, &c.name, &c.status))
                .collect();
            history.observe(&weights, wall);
            view(&canaries, &scheduled, &history, wall)
        };
        let body = Bytes::from(serde_json::to_vec(&view)?);
        *cache = Some((now, body.clone()));
        Ok(body)
    }
}

/// The dashboard's routes (public ones are listed in the auth module).
pub(crate) fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/session", get(session))
        .route(STATE_PATH, get(state))
        .with_state(dashboard)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

/// Trades the token (in the JSON body, never the URL) for a session cookie and its CSRF
/// token. JSON only: a cross-site HTML form cannot send it.
async fn login(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let token = match &d.auth {
        Auth::Insecure => return Ok(Json(json!({"csrf": "", "insecure": true})).into_response()),
        Auth::Bearer(token) => token,
    };
    let now = Instant::now();
    if !d.sessions.login_allowed(now) {
        return Err(ApiError::too_many(
            "too many failed logins: wait a minute and try again",
        ));
    }
    let parsed: LoginBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid login body: {e}")))?;
    if !token.matches(parsed.token.trim().as_bytes()) {
        d.sessions.login_failed(now);
        tracing::warn!("dashboard login refused: wrong token");
        return Err(ApiError::unauthorized("wrong token"));
    }
    let session = d.sessions.create(now).map_err(|e| {
        tracing::error!("cannot start a dashboard session: {e}");
        ApiError::from_control(super::ControlError::Internal(e.to_string()), "session")
    })?;
    tracing::info!("dashboard login");
    let mut response = Json(json!({ "csrf": session.csrf })).into_response();
    let secure = reached_over_https(&headers);
    if let Ok(cookie) = HeaderValue::from_str(&set_cookie(&session.id, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Ends the cookie's session (CSRF-checked like every cookie `POST`).
async fn logout(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    session: Option<Extension<SessionAuth>>,
) -> Response {
    if let Some(Extension(s)) = session {
        d.sessions.remove(&s.id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(cookie) = HeaderValue::from_str(&clear_cookie(reached_over_https(&headers))) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Who is asking: the session's CSRF token for a page reloaded while logged in.
async fn session(
    State(d): State<Arc<Dashboard>>,
    session: Option<Extension<SessionAuth>>,
) -> Json<serde_json::Value> {
    let insecure = matches!(d.auth, Auth::Insecure);
    let csrf = session.map(|Extension(s)| s.csrf).unwrap_or_default();
    Json(json!({ "csrf": csrf, "insecure": insecure }))
}

async fn state(State(d): State<Arc<Dashboard>>) -> Result<Response, ApiError> {
    let body = d.state().map_err(|e| {
        ApiError::from_control(super::ControlError::Internal(e.to_string()), "state")
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// A canary's (stable, canary) weights at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WeightPoint {
    at: DateTime<Utc>,
    stable: i64,
    canary: i64,
}

/// The weights each canary was seen with, in memory: a point per change, timed by the
/// status's `routingChangedAt` (so a change is placed when it was written, not when a page
/// asked). Starts when the daemon does; canaries that disappear are forgotten.
#[derive(Debug, Default)]
pub struct WeightHistory {
    series: HashMap<(String, String), VecDeque<WeightPoint>>,
}

impl WeightHistory {
    /// Adds a point for every canary whose weights changed since the last look, and forgets
    /// canaries that are gone.
    pub fn observe(&mut self, canaries: &[CanaryWeights], now: DateTime<Utc>) {
        let present: HashSet<(&str, &str)> = canaries
            .iter()
            .map(|c| (c.namespace.as_str(), c.name.as_str()))
            .collect();
        self.series
            .retain(|(ns, name), _| present.contains(&(ns.as_str(), name.as_str())));
        for c in canaries.iter().take(MAX_OBJECTS) {
            let (stable, canary) = (c.stable, c.canary);
            let points = self
                .series
                .entry((c.namespace.clone(), c.name.clone()))
                .or_default();
            let at = c.changed_at.unwrap_or(now);
            match points.back() {
                Some(last) if (last.stable, last.canary) == (stable, canary) => continue,
                Some(last) => points.push_back(WeightPoint {
                    at: at.max(last.at),
                    stable,
                    canary,
                }),
                None => points.push_back(WeightPoint { at, stable, canary }),
            }
            while points.len() > MAX_WEIGHT_POINTS {
                points.pop_front();
            }
        }
    }

    fn points(&self, namespace: &str, name: &str) -> Vec<WeightPoint> {
        self.series
            .get(&(namespace.to_string(), name.to_string()))
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Everything the page draws.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardView {
    /// Canaries, in the daemon's order.
    pub canaries: Vec<CanaryView>,
    /// Canaries beyond [`MAX_OBJECTS`], not shown.
    pub canaries_left_out: usize,
    /// Scheduled analyses.
    pub scheduled: Vec<ScheduledView>,
    /// Canaries aborted by an alarm (SkyWalking or Alertmanager).
    pub alarms: Vec<AlarmView>,
}

/// One canary card.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryView {
    /// The canary's namespace (file mode: `default` unless its manifest names one).
    pub namespace: String,
    /// The canary's name.
    pub name: String,
    /// Phase (`Progressing`, `Paused`, ...).
    pub phase: String,
    /// `step 3/7` (1-based; `step 7/7` once every step ran).
    pub step: String,
    /// Canary weight now (%).
    pub canary_weight: i64,
    /// Revision being rolled out.
    pub revision: Option<String>,
    /// The status's message.
    pub message: Option<String>,
    /// Why it is paused, when it is.
    pub paused: Option<String>,
    /// Why it was aborted, with the deciding measurement's evidence.
    pub abort: Option<crate::api::canary::AbortStatus>,
    /// Weight changes seen, oldest first.
    pub weights: Vec<WeightChange>,
    /// The weights chart (server-rendered SVG, the reports' drawing code; text escaped).
    pub weights_svg: String,
    /// Completed measurements, newest first (at most [`MAX_MEASUREMENTS`]).
    pub measurements: Vec<MeasurementView>,
}

/// A weight change.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightChange {
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Canary weight (%).
    pub canary: i64,
}

/// One measurement and how it was judged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementView {
    /// The analysis run.
    pub run: String,
    /// The metric.
    pub metric: String,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// `Successful`, `Failed`, `Inconclusive`, `Error`.
    pub phase: String,
    /// The measured value as displayed (`[9950, 9930]`).
    pub value: Option<String>,
    /// Each condition: expression, threshold and whether it held.
    pub conditions: Vec<ConditionView>,
    /// The judge's message.
    pub message: Option<String>,
}

/// A condition as judged on one measurement.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// `success` or `failure`.
    pub kind: &'static str,
    /// The expression as written.
    pub expression: String,
    /// `>= 9900` when the condition is one comparison with a number.
    pub threshold: Option<String>,
    /// Whether it held.
    pub holds: bool,
    /// Whether it decided the verdict.
    pub decided: bool,
}

/// A scheduled analysis row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledView {
    /// The scheduled analysis' namespace.
    pub namespace: String,
    /// The scheduled analysis' name.
    pub name: String,
    /// Cron expression.
    pub schedule: String,
    /// `spec.suspend`: no new runs start while true.
    pub suspend: bool,
    /// Next fire time.
    pub next: Option<DateTime<Utc>>,
    /// Runs going now.
    pub active: usize,
    /// The newest run: name and phase.
    pub last_run: Option<String>,
    /// Its phase.
    pub last_phase: Option<String>,
    /// The status's message or why the spec is refused.
    pub message: Option<String>,
}

/// A canary aborted by an alarm.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmView {
    /// Canary namespace.
    pub namespace: String,
    /// Canary name.
    pub name: String,
    /// The alarm.
    pub alarm: String,
    /// The abort reason.
    pub reason: String,
}

fn phase_name<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{value:?}"),
    }
}

/// `step i/n`, 1-based, `i` never past `n`.
pub fn step_label(index: u32, steps: usize) -> String {
    let shown = (index as usize + 1).min(steps.max(1));
    format!("step {shown}/{steps}")
}

fn measurements(c: &CanarySummary) -> Vec<MeasurementView> {
    let mut rows: Vec<MeasurementView> = Vec::new();
    for run in &c.status.analysis_runs {
        for mr in &run.status.metric_results {
            for m in mr.measurements.iter().filter(|m| m.phase.is_completed()) {
                let conditions = m
                    .evidence
                    .iter()
                    .flat_map(|e| &e.conditions)
                    .map(|cond| ConditionView {
                        kind: cond.kind.as_str(),
                        expression: cond.expression.clone(),
                        threshold: cond
                            .operator
                            .zip(cond.threshold)
                            .map(|(op, t)| format!("{} {}", op.as_str(), fmt_num(t))),
                        holds: cond.holds,
                        decided: cond.decided,
                    })
                    .collect();
                rows.push(MeasurementView {
                    run: run.name.clone(),
                    metric: mr.name.clone(),
                    at: m.finished_at.unwrap_or(m.started_at),
                    phase: phase_name(&m.phase),
                    value: m.value.clone(),
                    conditions,
                    message: m.message.clone(),
                });
            }
        }
    }
    rows.sort_by_key(|m| std::cmp::Reverse(m.at));
    rows.truncate(MAX_MEASUREMENTS);
    rows
}

fn weights_svg(id: &str, points: &[WeightPoint], now: DateTime<Utc>) -> String {
    let times = points.iter().map(|p| p.at).chain(std::iter::once(now));
    let Some(span) = Span::covering(times) else {
        return String::new();
    };
    let series = [
        WeightSeries {
            name: "stable".into(),
            points: points.iter().map(|p| (p.at, p.stable as f64)).collect(),
        },
        WeightSeries {
            name: "canary".into(),
            points: points.iter().map(|p| (p.at, p.canary as f64)).collect(),
        },
    ];
    weights_chart(id, &series, &span)
}

/// The page's data from the daemon's summaries (pure).
pub fn view(
    canaries: &[CanarySummary],
    scheduled: &[ScheduleSummary],
    history: &WeightHistory,
    now: DateTime<Utc>,
) -> DashboardView {
    let shown = &canaries[..canaries.len().min(MAX_OBJECTS)];
    let cards = shown
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let points = history.points(&c.namespace, &c.name);
            CanaryView {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                phase: phase_name(&c.status.phase),
                step: step_label(c.status.current_step_index, c.steps),
                canary_weight: CanaryWeights::of(&c.namespace, &c.name, &c.status).canary,
                revision: c.status.revision.clone(),
                message: c.status.message.clone(),
                paused: c.status.pause.as_ref().map(|p| {
                    let reason = phase_name(&p.reason);
                    match &p.message {
                        Some(m) => format!("{reason}: {m}"),
                        None => reason,
                    }
                }),
                abort: c.status.abort.clone(),
                weights: points
                    .iter()
                    .map(|p| WeightChange {
                        at: p.at,
                        canary: p.canary,
                    })
                    .collect(),
                weights_svg: weights_svg(&format!("weights-{i}"), &points, now),
                measurements: measurements(c),
            }
        })
        .collect();
    let alarms = shown
        .iter()
        .filter_map(|c| {
            let abort = c.status.abort.as_ref()?;
            Some(AlarmView {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                alarm: abort.alarm.clone()?,
                reason: abort.reason.clone(),
            })
        })
        .collect();
    let scheduled = scheduled
        .iter()
        .take(MAX_OBJECTS)
        .map(|s| {
            let last = s.status.active.first().or(s.status.history.first());
            ScheduledView {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                schedule: s.schedule.clone(),
                suspend: s.suspend,
                next: s.status.next_schedule_time,
                active: s.status.active.len(),
                last_run: last.map(|r| r.name.clone()),
                last_phase: last.map(|r| phase_name::<Phase>(&r.status.phase)),
                message: s
                    .status
                    .invalid_spec
                    .clone()
                    .or_else(|| s.status.message.clone()),
            }
        })
        .collect();
    DashboardView {
        canaries: cards,
        canaries_left_out: canaries.len().saturating_sub(MAX_OBJECTS),
        scheduled,
        alarms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(name: &str, status: serde_json::Value) -> CanarySummary {
        CanarySummary {
            namespace: "shop".into(),
            name: name.into(),
            steps: 7,
            status: serde_json::from_value(status).expect("status"),
        }
    }

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
    }

    #[test]
    fn steps_are_one_based_and_never_past_the_last() {
        assert_eq!(step_label(0, 7), "step 1/7");
        assert_eq!(step_label(2, 7), "step 3/7");
        assert_eq!(step_label(7, 7), "step 7/7");
        assert_eq!(step_label(0, 0), "step 1/0");
    }

    fn sampled(canaries: &[CanarySummary]) -> Vec<CanaryWeights> {
        canaries
            .iter()
            .map(|c| CanaryWeights::of(&c.namespace, &c.name, &c.status))
            .collect()
    }

    /// A daemon whose statuses are costly to copy: `canaries()` is counted, and the weights
    /// are answered on their own.
    struct CountingControl {
        copies: std::sync::atomic::AtomicUsize,
    }

    impl Control for CountingControl {
        fn canaries(&self) -> Vec<CanarySummary> {
            self.copies
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Vec::new()
        }
        fn canary_weights(&self) -> Vec<CanaryWeights> {
            vec![CanaryWeights {
                namespace: "shop".into(),
                name: "web".into(),
                stable: 80,
                canary: 20,
                changed_at: Some(at(3)),
            }]
        }
        fn canary(&self, _: &str, _: &str) -> Option<CanarySummary> {
            None
        }
        fn command(
            &self,
            _: &str,
            _: &str,
            _: crate::canary::Command,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<CanarySummary, super::super::ControlError>,
        > {
            Box::pin(async { Err(super::super::ControlError::NotFound) })
        }
        fn scheduled_analyses(&self) -> Vec<ScheduleSummary> {
            Vec::new()
        }
        fn run_scheduled(
            &self,
            _: &str,
            _: &str,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<serde_json::Value, super::super::ControlError>,
        > {
            Box::pin(async { Err(super::super::ControlError::NotFound) })
        }
        fn ready(&self) -> bool {
            true
        }
        fn alarm_webhook(
            &self,
            _: super::super::AlarmSource,
            _: bytes::Bytes,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<super::super::AlarmReply, super::super::ControlError>,
        > {
            Box::pin(async { Err(super::super::ControlError::NotFound) })
        }
    }

    #[test]
    fn the_background_sampler_reads_weights_without_copying_any_status() {
        let control = Arc::new(CountingControl {
            copies: std::sync::atomic::AtomicUsize::new(0),
        });
        let dashboard = Dashboard::new(control.clone(), Auth::Insecure, Arc::default());
        dashboard.sample();
        dashboard.sample();
        assert_eq!(
            control.copies.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the once-a-second sample must not copy every canary's status"
        );
        let history = dashboard.history.lock().unwrap();
        let points = history.points("shop", "web");
        assert_eq!(
            points
                .iter()
                .map(|p| (p.at, p.stable, p.canary))
                .collect::<Vec<_>>(),
            [(at(3), 80, 20)]
        );
    }

    #[test]
    fn weight_history_keeps_changes_at_their_write_time_bounded() {
        let mut h = WeightHistory::default();
        let status = |w: i64, s: u32| {
            json!({"phase": "Progressing", "desiredWeight": w,
                   "applied": {"canaryWeight": w, "headerRoutes": [], "mirrorRoutes": []}, "routingChangedAt": at(s)})
        };
        h.observe(&sampled(&[canary("web", status(10, 5))]), at(6));
        h.observe(&sampled(&[canary("web", status(10, 5))]), at(7));
        // Seen late (at 40), placed when written (30).
        h.observe(&sampled(&[canary("web", status(30, 30))]), at(40));
        let points = h.points("shop", "web");
        assert_eq!(
            points
                .iter()
                .map(|p| (p.at, p.stable, p.canary))
                .collect::<Vec<_>>(),
            [(at(5), 90, 10), (at(30), 70, 30)]
        );
        // A write time before the last point (clock skew) never draws backwards.
        h.observe(&sampled(&[canary("web", status(60, 1))]), at(41));
        assert_eq!(h.points("shop", "web")[2].at, at(30));
        for i in 0..MAX_WEIGHT_POINTS as u32 + 5 {
            h.observe(
                &sampled(&[canary("web", status(i64::from(i % 2), 100 + i))]),
                at(100 + i),
            );
        }
        assert_eq!(h.points("shop", "web").len(), MAX_WEIGHT_POINTS);
        // Deleted canaries are forgotten.
        h.observe(&[], at(1000));
        assert!(h.points("shop", "web").is_empty());
    }

    #[test]
    fn the_view_shows_step_weights_evidence_thresholds_and_alarms() {
        let aborted = canary(
            "api",
            json!({
                "phase": "Aborted",
                "currentStepIndex": 2,
                "desiredWeight": 0,
                "applied": {"canaryWeight": 0, "headerRoutes": [], "mirrorRoutes": []},
                "abort": {"reason": "apdex failed", "at": at(2), "metric": "apdex", "value": "[7000, 7000]",
                          "condition": "min(result) >= 9900", "alarm": "Response time of service reviews"},
                "analysisRuns": [{
                    "name": "api-step-1", "kind": {"type": "step", "index": 1}, "templates": ["apdex"],
                    "status": {"phase": "Failed", "startedAt": at(0), "metricResults": [{
                        "name": "apdex", "phase": "Failed",
                        "measurements": [
                            {"phase": "Failed", "value": "[7000, 7000]", "startedAt": at(1),
                             "finishedAt": at(2), "evidence": {"values": [7000.0, 7000.0],
                             "conditions": [{"kind": "success", "expression": "min(result) >= 9900",
                               "holds": false, "decided": true, "operator": ">=", "threshold": 9900.0}]}},
                            {"phase": "Running", "startedAt": at(3)}
                        ]}]}
                }]
            }),
        );
        let mut history = WeightHistory::default();
        history.observe(&sampled(std::slice::from_ref(&aborted)), at(10));
        let v = view(&[aborted], &[], &history, at(11));
        let c = &v.canaries[0];
        assert_eq!((c.phase.as_str(), c.step.as_str()), ("Aborted", "step 3/7"));
        assert_eq!(
            c.measurements.len(),
            1,
            "running measurements are not shown"
        );
        let m = &c.measurements[0];
        assert_eq!(
            (m.phase.as_str(), m.value.as_deref()),
            ("Failed", Some("[7000, 7000]"))
        );
        assert_eq!(m.conditions[0].threshold.as_deref(), Some(">= 9900"));
        assert!(!m.conditions[0].holds && m.conditions[0].decided);
        assert!(
            c.weights_svg
                .starts_with(r#"<svg id="weights-0" class="chart weights""#)
        );
        assert_eq!(
            c.weights_svg
                .matches(r#"<path class="series weight""#)
                .count(),
            2
        );
        assert_eq!(v.alarms.len(), 1);
        assert_eq!(v.alarms[0].alarm, "Response time of service reviews");
        let text = serde_json::to_string(&v).unwrap();
        assert!(text.contains(r#""canaryWeight":0"#), "{text}");
    }

    #[test]
    fn the_view_is_bounded() {
        let many: Vec<CanarySummary> = (0..MAX_OBJECTS + 3)
            .map(|i| canary(&format!("c{i}"), json!({"phase": "Pending"})))
            .collect();
        let v = view(&many, &[], &WeightHistory::default(), at(0));
        assert_eq!(v.canaries.len(), MAX_OBJECTS);
        assert_eq!(v.canaries_left_out, 3);
    }
}
