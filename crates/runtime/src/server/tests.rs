//! Server tests over real HTTP on 127.0.0.1:0 against a fake [`Control`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, ready};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::auth::constant_time_matches;
use super::*;
use crate::analysis::Phase;
use crate::canary::{AbortStatus, CanaryPhase, CanaryStatus, Command};
use crate::traffic::{RouteKind, RouteWeights};

const TOKEN: &str = "s3cret-token_value";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// In-memory daemon: two canaries, one scheduled analysis, switchable readiness/leadership.
struct Fake {
    canaries: Mutex<Vec<CanarySummary>>,
    ready: AtomicBool,
    leader: AtomicBool,
    commands: Mutex<Vec<(String, String, Command)>>,
    alarms: Mutex<Vec<(AlarmSource, Bytes)>>,
}

fn summary(namespace: &str, name: &str, phase: CanaryPhase) -> CanarySummary {
    CanarySummary {
        namespace: namespace.to_string(),
        name: name.to_string(),
        steps: 4,
        status: CanaryStatus {
            phase,
            current_step_index: 1,
            desired_weight: 20,
            ..CanaryStatus::default()
        },
    }
}

impl Fake {
    fn new() -> Self {
        Fake {
            canaries: Mutex::new(vec![
                summary("prod", "web", CanaryPhase::Progressing),
                summary("prod", "api", CanaryPhase::Aborted),
            ]),
            ready: AtomicBool::new(false),
            leader: AtomicBool::new(true),
            commands: Mutex::new(Vec::new()),
            alarms: Mutex::new(Vec::new()),
        }
    }

    fn apply(
        &self,
        namespace: &str,
        name: &str,
        cmd: Command,
    ) -> Result<CanarySummary, ControlError> {
        if !self.leader.load(Ordering::SeqCst) {
            return Err(ControlError::Unavailable("not the leader".into()));
        }
        let mut canaries = lock(&self.canaries);
        let canary = canaries
            .iter_mut()
            .find(|c| c.namespace == namespace && c.name == name)
            .ok_or(ControlError::NotFound)?;
        match &cmd {
            Command::Retry if canary.status.phase != CanaryPhase::Aborted => {
                return Err(ControlError::Rejected(
                    "retry needs an aborted canary".into(),
                ));
            }
            Command::Retry | Command::Resume => canary.status.phase = CanaryPhase::Progressing,
            Command::Pause => canary.status.phase = CanaryPhase::Paused,
            Command::Promote { full: true } => canary.status.phase = CanaryPhase::Promoted,
            Command::Promote { full: false } => canary.status.current_step_index += 1,
            Command::Abort { reason } => {
                canary.status.phase = CanaryPhase::Aborted;
                canary.status.abort = Some(AbortStatus {
                    reason: reason.clone(),
                    ..AbortStatus::default()
                });
            }
        }
        lock(&self.commands).push((namespace.to_string(), name.to_string(), cmd));
        Ok(canary.clone())
    }
}

impl Control for Fake {
    fn canaries(&self) -> Vec<CanarySummary> {
        lock(&self.canaries).clone()
    }

    fn canary(&self, namespace: &str, name: &str) -> Option<CanarySummary> {
        lock(&self.canaries)
            .iter()
            .find(|c| c.namespace == namespace && c.name == name)
            .cloned()
    }

    fn command(
        &self,
        namespace: &str,
        name: &str,
        cmd: Command,
    ) -> BoxFuture<'static, Result<CanarySummary, ControlError>> {
        ready(self.apply(namespace, name, cmd)).boxed()
    }

    fn scheduled_analyses(&self) -> Vec<crate::schedule::ScheduleSummary> {
        vec![crate::schedule::ScheduleSummary {
            namespace: "prod".into(),
            name: "nightly".into(),
            schedule: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            concurrency_policy: crate::resources::scheduled::ConcurrencyPolicy::Forbid,
            suspend: false,
            templates: vec!["apdex".into()],
            status: crate::schedule::ScheduledAnalysisStatus {
                next_schedule_time: chrono::DateTime::from_timestamp(1_700_000_000, 0),
                skipped: 2,
                ..Default::default()
            },
        }]
    }

    fn run_scheduled(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Value, ControlError>> {
        let result = if (namespace, name) == ("prod", "nightly") {
            Ok(json!({"run": "nightly-1"}))
        } else {
            Err(ControlError::NotFound)
        };
        ready(result).boxed()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn alarm_webhook(
        &self,
        source: AlarmSource,
        body: Bytes,
    ) -> BoxFuture<'static, Result<AlarmReply, ControlError>> {
        // SkyWalking posts an array (elements that are not objects are refused alone); anything
        // else is the daemon's 400 to give.
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        let reply = |summary: Value, refused: usize| AlarmReply {
            pending: summary["rollbackPending"].as_array().map_or(0, Vec::len),
            summary,
            refused,
            reason: format!("{refused} not an object"),
        };
        let result = match (source, parsed) {
            (AlarmSource::Skywalking, Ok(Value::Array(items))) => {
                let refused = items.iter().filter(|i| !i.is_object()).count();
                // An alarm marked `stuck` stands for a canary whose rollback write failed.
                let stuck: Vec<Value> = items
                    .iter()
                    .filter(|i| i["stuck"] == true)
                    .map(|_| json!({"canary": "bookinfo/reviews", "reason": "rollback pending: 503 from the API server"}))
                    .collect();
                let mut summary = json!({"received": items.len()});
                if !stuck.is_empty() {
                    summary["rollbackPending"] = json!(stuck);
                }
                Ok(reply(summary, refused))
            }
            (AlarmSource::Skywalking | AlarmSource::SkywalkingPoll, _) => Err(
                ControlError::Invalid("expected an array of AlarmMessage".into()),
            ),
            (AlarmSource::Alertmanager, _) => Ok(reply(json!({"received": 1}), 0)),
        };
        lock(&self.alarms).push((source, body));
        ready(result).boxed()
    }
}

struct Harness {
    base: String,
    client: reqwest::Client,
    fake: Arc<Fake>,
    metrics: Metrics,
    _shutdown: oneshot::Sender<()>,
}

impl Harness {
    async fn start(auth: Auth) -> Harness {
        Harness::start_with(auth, ReadTimeouts::default()).await
    }

    async fn start_with(auth: Auth, timeouts: ReadTimeouts) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = Arc::new(Fake::new());
        let metrics = Metrics::new();
        let app = router(fake.clone(), metrics.clone(), auth);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve_on_with(
            listener,
            app,
            async move {
                let _ = rx.await;
            },
            timeouts,
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Harness {
            base: format!("http://{addr}"),
            client,
            fake,
            metrics,
            _shutdown: tx,
        }
    }

    async fn secured() -> Harness {
        Harness::start(Auth::Bearer(Token::new(TOKEN, "test").expect("token"))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET")
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST")
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json::<Value>().await.expect("JSON body")
}

async fn error_of(response: reqwest::Response) -> String {
    let body = json_of(response).await;
    body.get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no error field in {body}"))
}

#[tokio::test]
async fn healthz_is_public_and_always_ok() {
    let h = Harness::secured().await;
    let response = h.client.get(h.url("/healthz")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_follows_control() {
    let h = Harness::secured().await;
    let response = h.client.get(h.url("/readyz")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(response).await, "not ready");

    h.fake.ready.store(true, Ordering::SeqCst);
    let response = h.client.get(h.url("/readyz")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn api_without_token_is_401_with_challenge() {
    let h = Harness::secured().await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/canaries"),
        (reqwest::Method::GET, "/api/v1/canaries/prod/web"),
        (reqwest::Method::POST, "/api/v1/canaries/prod/web/abort"),
        (reqwest::Method::GET, "/api/v1/scheduled-analyses"),
        (
            reqwest::Method::POST,
            "/api/v1/scheduled-analyses/prod/nightly/run",
        ),
        (reqwest::Method::POST, "/webhooks/skywalking"),
        (reqwest::Method::POST, "/webhooks/alertmanager"),
        // Unknown paths are protected too: no route discovery without a token.
        (reqwest::Method::GET, "/api/v2/nothing"),
    ] {
        let response = h
            .client
            .request(method.clone(), h.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_eq!(error_of(response).await, "missing bearer token");
    }
    assert!(lock(&h.fake.commands).is_empty());
    assert!(lock(&h.fake.alarms).is_empty());
}

#[tokio::test]
async fn the_root_redirects_to_the_dashboard_not_a_login_challenge() {
    let h = Harness::secured().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client.get(h.url("/")).send().await.expect("GET /");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/ui");
    assert!(response.headers().get("www-authenticate").is_none());
    // Under /api and /ui unknown paths stay protected.
    for path in ["/api/v1/nope", "/ui/nope"] {
        let response = h.client.get(h.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// The dashboard's page is static and public; its data, its actions and the API need the
/// token or a session cookie from a login, and cookie `POST`s need the session's CSRF token.
#[tokio::test]
async fn dashboard_login_sets_a_strict_cookie_and_csrf_guards_cookie_posts() {
    let h = Harness::secured().await;
    let page = h.client.get(h.url("/ui")).send().await.expect("GET /ui");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<script src="/ui/app.js" defer></script>"#),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset"
    );
    for asset in ["/ui/app.js", "/ui/app.css"] {
        let r = h.client.get(h.url(asset)).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
    }
    for path in ["/ui/state", "/ui/session", "/api/v1/canaries"] {
        let r = h.client.get(h.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    let login = |body: &'static str, content_type: &'static str| {
        h.client
            .post(h.url("/ui/login"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let wrong = login(r#"{"token":"nope"}"#, "application/json")
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    // A cross-site HTML form can only send form types: refused before the token is looked at.
    let form = login(
        "token=s3cret-token_value",
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The one body read before authentication is small.
    let big = h
        .client
        .post(h.url("/ui/login"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"token":"{}"}}"#, "x".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Streamed (no declared length), in process like `streamed_bodies_over_the_limit_are_413`.
    {
        use tower::ServiceExt;
        let app = router(
            h.fake.clone(),
            Metrics::new(),
            Auth::Bearer(Token::new(TOKEN, "test").expect("token")),
        );
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1000])));
        let request = axum::http::Request::post("/ui/login")
            .header("content-type", "application/json")
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }
    let ok = login(r#"{"token":"s3cret-token_value"}"#, "application/json")
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("skycanary_session="), "{cookie}");
    assert!(
        cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN));
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP keeps the cookie usable: {cookie}"
    );
    // Behind a TLS-terminating proxy the cookie is never sent over plain HTTP.
    let behind_tls = h
        .client
        .post(h.url("/ui/login"))
        .header("content-type", "application/json")
        .header("x-forwarded-proto", "https")
        .body(r#"{"token":"s3cret-token_value"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(behind_tls.status(), StatusCode::OK);
    let tls_cookie = behind_tls.headers()["set-cookie"].to_str().unwrap();
    assert!(tls_cookie.ends_with("; Secure"), "{tls_cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let csrf = json_of(ok).await["csrf"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 43);

    let with_cookie = |path: &str| h.client.get(h.url(path)).header("cookie", &session).send();
    let state = json_of(with_cookie("/ui/state").await.unwrap()).await;
    let names: Vec<&str> = state["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "api"], "{state:#}");
    assert_eq!(
        with_cookie("/api/v1/canaries").await.unwrap().status(),
        StatusCode::OK
    );
    let who = json_of(with_cookie("/ui/session").await.unwrap()).await;
    assert_eq!(who["csrf"], csrf.as_str());

    let promote = |csrf: Option<&str>| {
        let mut req = h
            .client
            .post(h.url("/api/v1/canaries/prod/web/promote"))
            .header("cookie", &session);
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        req.send()
    };
    for bad in [None, Some("wrong")] {
        let r = promote(bad).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad:?}");
        assert!(error_of(r).await.contains("X-CSRF-Token"));
    }
    assert!(lock(&h.fake.commands).is_empty(), "no command without CSRF");
    assert_eq!(promote(Some(&csrf)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(lock(&h.fake.commands).len(), 1);

    let unknown = h
        .client
        .get(h.url("/ui/state"))
        .header("cookie", "skycanary_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let out = h
        .client
        .post(h.url("/ui/logout"))
        .header("cookie", &session)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        with_cookie("/ui/state").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the session ended with the logout"
    );
}

#[tokio::test]
async fn dashboard_logins_are_rate_limited_after_failures() {
    let h = Harness::secured().await;
    let attempt = |token: &str| {
        h.client
            .post(h.url("/ui/login"))
            .header("content-type", "application/json")
            .body(json!({ "token": token }).to_string())
            .send()
    };
    for _ in 0..session::MAX_LOGIN_FAILURES {
        assert_eq!(
            attempt("wrong").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right token waits out the window: guessing cannot go faster.
    assert_eq!(
        attempt(TOKEN).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn insecure_mode_needs_no_dashboard_login() {
    let h = Harness::start(Auth::Insecure).await;
    let who = json_of(h.client.get(h.url("/ui/session")).send().await.unwrap()).await;
    assert_eq!(who["insecure"], true);
    let state = h.client.get(h.url("/ui/state")).send().await.unwrap();
    assert_eq!(state.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_tokens_are_401_and_right_token_passes() {
    let h = Harness::secured().await;
    let longer = format!("{TOKEN}x");
    let prefix = &TOKEN[..TOKEN.len() - 1];
    for header in [
        format!("Bearer {longer}"),
        format!("Bearer {prefix}"),
        "Bearer wrong".to_string(),
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        "Bearer ".to_string(),
    ] {
        let response = h
            .client
            .get(h.url("/api/v1/canaries"))
            .header("authorization", &header)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
        assert!(response.headers().contains_key("www-authenticate"));
        assert!(error_of(response).await.contains("bearer token"));
    }
    for header in [format!("Bearer {TOKEN}"), format!("bearer  {TOKEN} ")] {
        let response = h
            .client
            .get(h.url("/api/v1/canaries"))
            .header("authorization", &header)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{header}");
    }
}

#[test]
fn token_compare_is_constant_time_shaped() {
    let secret = b"abcdef";
    assert!(constant_time_matches(secret, b"abcdef"));
    assert!(!constant_time_matches(secret, b"abcdeg"));
    assert!(!constant_time_matches(secret, b"abcde"));
    assert!(!constant_time_matches(secret, b"abcdefabcdef"));
    assert!(!constant_time_matches(secret, b""));
    assert!(!constant_time_matches(b"", b""));
    let token = Token::new(" abcdef\n", "test").expect("token");
    assert!(token.matches(b"abcdef"));
    assert!(!token.matches(b" abcdef"));
    assert_eq!(format!("{token:?}"), "Token(<redacted>)");
}

#[test]
fn token_loading_trims_and_refuses_empty_or_odd_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    std::fs::write(&path, "  from-file\n").expect("write");
    let token = Token::from_file(&path).expect("load");
    assert!(token.matches(b"from-file"));
    let loaded = Token::load(Some(&path)).expect("load").expect("some");
    assert!(loaded.matches(b"from-file"));

    std::fs::write(&path, "\n \n").expect("write");
    assert!(matches!(
        Token::from_file(&path),
        Err(TokenError::Empty { .. })
    ));
    std::fs::write(&path, "two words").expect("write");
    assert!(matches!(
        Token::from_file(&path),
        Err(TokenError::Invalid { .. })
    ));
    assert!(matches!(
        Token::from_file(&dir.path().join("missing")),
        Err(TokenError::Read { .. })
    ));
    assert!(matches!(
        Token::from_env("SKYCANARY_TEST_VARIABLE_THAT_IS_NEVER_SET"),
        Ok(None)
    ));
}

#[test]
fn unauthenticated_api_must_be_asked_for() {
    assert!(matches!(
        Auth::from_config(None, false),
        Err(AuthError::NoToken)
    ));
    assert!(matches!(Auth::from_config(None, true), Ok(Auth::Insecure)));
    let token = Token::new("t", "test").expect("token");
    assert!(matches!(
        Auth::from_config(Some(token), true),
        Ok(Auth::Bearer(_))
    ));
}

#[tokio::test]
async fn insecure_mode_serves_api_without_token() {
    let h = Harness::start(Auth::Insecure).await;
    let response = h
        .client
        .get(h.url("/api/v1/canaries"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn lists_and_gets_canaries() {
    let h = Harness::secured().await;
    let response = h.get("/api/v1/canaries").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["namespace"], "prod");
    assert_eq!(items[0]["name"], "web");
    assert_eq!(items[0]["steps"], 4);
    assert_eq!(items[0]["status"]["phase"], "Progressing");
    assert_eq!(items[0]["status"]["currentStepIndex"], 1);

    let response = h.get("/api/v1/canaries/prod/api").await;
    assert_eq!(response.status(), StatusCode::OK);
    let one: CanarySummary = response.json().await.expect("summary");
    assert_eq!(one.status.phase, CanaryPhase::Aborted);

    let response = h.get("/api/v1/canaries/prod/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(response).await, "canary prod/nope not found");
}

#[tokio::test]
async fn promote_reads_full_from_the_query() {
    let h = Harness::secured().await;
    let response = h.post("/api/v1/canaries/prod/web/promote", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["status"]["currentStepIndex"], 2);

    let response = h
        .post("/api/v1/canaries/prod/web/promote?full=true", "")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["status"]["phase"], "Promoted");

    let response = h
        .post("/api/v1/canaries/prod/web/promote?full=maybe", "")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!error_of(response).await.is_empty());

    let commands = lock(&h.fake.commands).clone();
    assert_eq!(
        commands.iter().map(|c| c.2.clone()).collect::<Vec<_>>(),
        vec![
            Command::Promote { full: false },
            Command::Promote { full: true }
        ]
    );
}

#[tokio::test]
async fn abort_takes_an_optional_reason() {
    let h = Harness::secured().await;
    let response = h
        .post(
            "/api/v1/canaries/prod/web/abort",
            r#"{"reason": "p99 too high"}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["status"]["phase"], "Aborted");
    assert_eq!(body["status"]["abort"]["reason"], "p99 too high");

    let response = h.post("/api/v1/canaries/prod/api/abort", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        lock(&h.fake.commands).last().map(|c| c.2.clone()),
        Some(Command::Abort {
            reason: "aborted via API".into()
        })
    );

    let response = h
        .post("/api/v1/canaries/prod/web/abort", "{\"reason\": ")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(response).await.starts_with("invalid abort body"));

    let response = h
        .post("/api/v1/canaries/prod/web/abort", r#"{"reson": "typo"}"#)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(response).await.contains("reson"));
    assert_eq!(lock(&h.fake.commands).len(), 2);
}

#[tokio::test]
async fn retry_pause_resume_and_command_errors() {
    let h = Harness::secured().await;
    let response = h.post("/api/v1/canaries/prod/web/retry", "").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_of(response).await, "retry needs an aborted canary");

    let response = h.post("/api/v1/canaries/prod/api/retry", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = h.post("/api/v1/canaries/prod/web/pause", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["status"]["phase"], "Paused");
    let response = h.post("/api/v1/canaries/prod/web/resume", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["status"]["phase"], "Progressing");

    let response = h.post("/api/v1/canaries/prod/web/explode", "").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(error_of(response).await.contains("unknown action"));

    let response = h.post("/api/v1/canaries/prod/ghost/pause", "").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(response).await, "canary prod/ghost not found");

    h.fake.leader.store(false, Ordering::SeqCst);
    let response = h.post("/api/v1/canaries/prod/web/pause", "").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(response).await, "not the leader");

    let response = h.get("/api/v1/canaries/prod/web/pause").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(error_of(response).await.contains("not allowed"));
    assert_eq!(lock(&h.fake.commands).len(), 3);
}

#[tokio::test]
async fn scheduled_analyses_list_and_run() {
    let h = Harness::secured().await;
    let response = h.get("/api/v1/scheduled-analyses").await;
    assert_eq!(response.status(), StatusCode::OK);
    // The API's JSON, field by field (camelCase, empty status fields left out).
    assert_eq!(
        json_of(response).await,
        json!({"items": [{
            "namespace": "prod",
            "name": "nightly",
            "schedule": "0 3 * * *",
            "timeZone": "Europe/Berlin",
            "concurrencyPolicy": "Forbid",
            "suspend": false,
            "templates": ["apdex"],
            "status": {"nextScheduleTime": "2023-11-14T22:13:20Z", "skipped": 2},
        }]})
    );

    let response = h
        .post("/api/v1/scheduled-analyses/prod/nightly/run", "")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, json!({"run": "nightly-1"}));

    let response = h
        .post("/api/v1/scheduled-analyses/prod/other/run", "")
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        error_of(response).await,
        "scheduled analysis prod/other not found"
    );
}

#[tokio::test]
async fn webhooks_pass_the_body_through() {
    let h = Harness::secured().await;
    let payload = r#"[{"scopeId":1,"name":"web","alarmMessage":"p99 > 1s","startTime":1}]"#;
    let response = h.post("/webhooks/skywalking", payload).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, json!({"received": 1}));

    let response = h
        .post("/webhooks/alertmanager", r#"{"version":"4","alerts":[]}"#)
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Valid JSON the daemon refuses: its reason comes back as a 400.
    let response = h
        .post("/webhooks/skywalking", r#"{"not": "an array"}"#)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(response).await,
        "expected an array of AlarmMessage"
    );

    // Malformed JSON never reaches the daemon.
    let response = h.post("/webhooks/skywalking", "[{").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        error_of(response)
            .await
            .starts_with("invalid skywalking payload")
    );

    let alarms = lock(&h.fake.alarms).clone();
    assert_eq!(alarms.len(), 3);
    assert_eq!(alarms[0], (AlarmSource::Skywalking, Bytes::from(payload)));
    assert_eq!(alarms[1].0, AlarmSource::Alertmanager);
}

#[tokio::test]
async fn a_payload_with_refused_alarms_is_422_with_the_summary() {
    let h = Harness::secured().await;
    let response = h
        .post("/webhooks/skywalking", r#"[{"ruleName":"r"}, 3, "x"]"#)
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(response).await;
    assert_eq!(body["received"], 3, "{body}");
    assert_eq!(
        body["error"], "2 malformed alarm(s) refused: 2 not an object",
        "{body}"
    );
    assert_eq!(
        lock(&h.fake.alarms).len(),
        1,
        "handed to the daemon all the same"
    );
}

#[tokio::test]
async fn a_matched_alarm_whose_rollback_is_not_written_is_answered_503() {
    let h = Harness::secured().await;
    let response = h
        .post("/webhooks/skywalking", r#"[{"ruleName":"r","stuck":true}]"#)
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(response).await;
    assert_eq!(
        body["rollbackPending"][0]["canary"], "bookinfo/reviews",
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("not written yet"),
        "{body}"
    );
}

/// A client that half-closes its side once its request is sent (`shutdown(SHUT_WR)`, as `nc -N`
/// or a proxy may) still gets its answer, whatever the body's size.
#[tokio::test]
async fn half_closed_clients_get_an_answer() {
    use tokio::io::AsyncWriteExt;

    let h = Harness::secured().await;
    let addr = h.base.trim_start_matches("http://").to_string();
    for (size, status) in [
        (10, "200"),
        (300 * 1024, "200"),
        (MAX_BODY_BYTES, "200"),
        (MAX_BODY_BYTES + 1, "413"),
    ] {
        let mut body = vec![b' '; size];
        body[0] = b'[';
        body[size - 1] = b']';
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /webhooks/skywalking HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        );
        // The server may answer 413 before reading the body and close: writes may then fail.
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(&body).await;
        let _ = s.shutdown().await;
        let answer = read_until_closed(&mut s, Duration::from_secs(10))
            .await
            .expect("closed within the bound");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{size} bytes: {:?}",
            answer.get(..80)
        );
    }
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let h = Harness::secured().await;
    // Exactly at the limit is accepted.
    let mut at_limit = vec![b' '; MAX_BODY_BYTES];
    at_limit[0] = b'[';
    at_limit[MAX_BODY_BYTES - 1] = b']';
    let response = h.post("/webhooks/skywalking", at_limit).await;
    assert_eq!(response.status(), StatusCode::OK);

    let mut over = vec![b' '; MAX_BODY_BYTES + 1];
    over[0] = b'[';
    over[MAX_BODY_BYTES] = b']';
    for path in [
        "/webhooks/skywalking",
        "/webhooks/alertmanager",
        "/api/v1/canaries/prod/web/abort",
        "/api/v1/canaries/prod/web/promote",
    ] {
        let response = h.post(path, over.clone()).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert!(error_of(response).await.contains("exceeds"));
    }
    assert_eq!(lock(&h.fake.alarms).len(), 1);
    assert!(lock(&h.fake.commands).is_empty());
}

/// A chunked body declares no length; the extractor limit must still cut it. Driven in-process
/// because a server that stops reading mid-upload may reset a raw TCP client before it reads.
#[tokio::test]
async fn streamed_bodies_over_the_limit_are_413() {
    use axum::body::Body;
    use tower::ServiceExt;

    let fake = Arc::new(Fake::new());
    let app = router(fake.clone(), Metrics::new(), Auth::Insecure);
    let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 * 1024])));
    let request = axum::http::Request::post("/webhooks/skywalking")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    assert!(lock(&fake.alarms).is_empty());
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let h = Harness::secured().await;
    let response = h.get("/api/v1/nothing").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_of(response).await, "no route for GET /api/v1/nothing");
}

/// One parsed sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Minimal OpenMetrics text parser: enough to check names, labels, values and `# EOF`.
fn parse_openmetrics(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some("# EOF"),
        "exposition must end in # EOF"
    );
    assert!(text.ends_with("# EOF\n"));
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("label pair");
                        (key.to_string(), value.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            other => other.parse().expect("numeric value"),
        };
        assert!(
            name.starts_with("skycanary_") || name.starts_with("process_"),
            "{name}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, types)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels.len() == s.labels.len()
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

fn route_weights(vs: &str, route: &str, canary: i64) -> RouteWeights {
    RouteWeights {
        virtual_service: vs.to_string(),
        kind: RouteKind::Http,
        route: route.to_string(),
        stable: 100 - canary,
        canary,
        others: Vec::new(),
    }
}

fn record_everything(metrics: &Metrics) {
    metrics.set_canary_phase("prod", "web", CanaryPhase::Paused);
    metrics.set_canary_phase("prod", "web", CanaryPhase::Progressing);
    metrics.set_canary_weights(
        "prod",
        "web",
        &[
            route_weights("web-vs", "primary", 20),
            route_weights("web-vs", "#1", 20),
        ],
    );
    metrics.record_measurement(
        "prod",
        "web",
        "web-abc-0",
        "p99",
        Phase::Successful,
        Some(0.42),
    );
    metrics.record_measurement(
        "prod",
        "web",
        "web-abc-0",
        "p99",
        Phase::Successful,
        Some(0.5),
    );
    metrics.record_measurement("prod", "web", "web-abc-0", "sla", Phase::Inconclusive, None);
    metrics.analysis_run("prod", "web", Phase::Successful);
    metrics.decision("prod", "web", "TrafficWeightUpdated");
    metrics.provider_request(
        "http://oap:12800",
        "execExpression",
        Duration::from_millis(30),
    );
    metrics.provider_error("http://oap:12800", "timeout");
    metrics.kube_write_conflict("VirtualService");
    metrics.traffic_drift("prod", "web", "web-vs");
    metrics.traffic_drift("prod", "web", "web-vs");
    metrics.alarms_received(AlarmSource::Skywalking, 3);
    metrics.alarm_matched("prod", "web", AlarmSource::Skywalking);
    metrics.alarm_rollback_latency(Duration::from_millis(120));
}

#[tokio::test]
async fn metrics_scrape_is_openmetrics() {
    let h = Harness::secured().await;
    record_everything(&h.metrics);
    // Public: Prometheus scrapes without a token, and asks for OpenMetrics first.
    let response = h
        .client
        .get(h.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = response.text().await.expect("text");
    let (samples, types) = parse_openmetrics(&text);

    let expected_types = [
        ("skycanary_canary_phase", "gauge"),
        ("skycanary_canary_weight", "gauge"),
        ("skycanary_measurement_value", "gauge"),
        ("skycanary_measurements", "counter"),
        ("skycanary_analysis_runs", "counter"),
        ("skycanary_decisions", "counter"),
        ("skycanary_provider_request_duration_seconds", "histogram"),
        ("skycanary_provider_errors", "counter"),
        ("skycanary_kube_write_conflicts", "counter"),
        ("skycanary_traffic_drift", "counter"),
        ("skycanary_alarms_received", "counter"),
        ("skycanary_alarms_matched", "counter"),
        ("skycanary_alarm_rollback_duration_seconds", "histogram"),
    ];
    for (name, kind) in expected_types {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    let web = [("namespace", "prod"), ("name", "web")];
    let with = |extra: &[(&'static str, &'static str)]| {
        web.iter().chain(extra).copied().collect::<Vec<_>>()
    };
    assert_eq!(
        value_of(
            &samples,
            "skycanary_canary_phase",
            &with(&[("phase", "Progressing")])
        ),
        1.0
    );
    for phase in ["Pending", "Paused", "Promoted", "Aborted", "Degraded"] {
        let labels = [("namespace", "prod"), ("name", "web"), ("phase", phase)];
        assert_eq!(value_of(&samples, "skycanary_canary_phase", &labels), 0.0);
    }
    assert_eq!(
        value_of(
            &samples,
            "skycanary_canary_weight",
            &with(&[("virtual_service", "web-vs"), ("route", "primary")])
        ),
        20.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_measurement_value",
            &with(&[("run", "web-abc-0"), ("metric", "p99")])
        ),
        0.5
    );
    assert!(
        find(
            &samples,
            "skycanary_measurement_value",
            &with(&[("run", "web-abc-0"), ("metric", "sla")])
        )
        .is_none()
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_measurements_total",
            &with(&[("metric", "p99"), ("phase", "Successful")])
        ),
        2.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_measurements_total",
            &with(&[("metric", "sla"), ("phase", "Inconclusive")])
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_analysis_runs_total",
            &with(&[("phase", "Successful")])
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_decisions_total",
            &with(&[("reason", "TrafficWeightUpdated")])
        ),
        1.0
    );
    let provider = [("address", "http://oap:12800"), ("kind", "execExpression")];
    assert_eq!(
        value_of(
            &samples,
            "skycanary_provider_request_duration_seconds_count",
            &provider
        ),
        1.0
    );
    let provider_le = |le: &'static str| {
        provider
            .iter()
            .copied()
            .chain([("le", le)])
            .collect::<Vec<_>>()
    };
    assert_eq!(
        value_of(
            &samples,
            "skycanary_provider_request_duration_seconds_bucket",
            &provider_le("0.025")
        ),
        0.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_provider_request_duration_seconds_bucket",
            &provider_le("0.05")
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_provider_errors_total",
            &[("address", "http://oap:12800"), ("kind", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_kube_write_conflicts_total",
            &[("kind", "VirtualService")]
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_traffic_drift_total",
            &with(&[("virtual_service", "web-vs")])
        ),
        2.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_alarms_received_total",
            &[("source", "skywalking")]
        ),
        3.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_alarms_matched_total",
            &with(&[("source", "skywalking")])
        ),
        1.0
    );

    // alarm→rollback buckets span 1 ms .. 10 s, then +Inf.
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == "skycanary_alarm_rollback_duration_seconds_bucket")
        .map(|s| s.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY))
        .collect();
    assert_eq!(buckets.first().copied(), Some(0.001));
    assert_eq!(buckets.get(buckets.len() - 2).copied(), Some(10.0));
    assert_eq!(buckets.last().copied(), Some(f64::INFINITY));
    assert_eq!(
        value_of(
            &samples,
            "skycanary_alarm_rollback_duration_seconds_bucket",
            &[("le", "0.1")]
        ),
        0.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_alarm_rollback_duration_seconds_bucket",
            &[("le", "0.25")]
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "skycanary_alarm_rollback_duration_seconds_sum",
            &[]
        ),
        0.12
    );
}

#[test]
fn canary_gauges_are_replaced_and_removed() {
    let metrics = Metrics::new();
    record_everything(&metrics);
    metrics.set_canary_weights("prod", "web", &[route_weights("web-vs", "primary", 50)]);
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    let weights: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "skycanary_canary_weight")
        .collect();
    assert_eq!(weights.len(), 1);
    assert_eq!(weights[0].labels["route"], "primary");
    assert_eq!(weights[0].value, 50.0);

    metrics.forget_run("prod", "web", "web-abc-0");
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "skycanary_measurement_value")
    );

    metrics.record_measurement("prod", "web", "web-abc-1", "p99", Phase::Failed, Some(2.0));
    metrics.remove_canary("prod", "web");
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    for gauge in [
        "skycanary_canary_phase",
        "skycanary_canary_weight",
        "skycanary_measurement_value",
    ] {
        assert!(
            !samples.iter().any(|s| s.name == gauge),
            "{gauge} left behind"
        );
    }
    // Counters are cumulative and survive.
    assert!(
        samples
            .iter()
            .any(|s| s.name == "skycanary_decisions_total")
    );
}

/// `skycanary_measurement_threshold{condition}` beside the value: set per condition that has
/// a threshold, replaced by the next measurement (a condition without one loses its series),
/// dropped with the run and with the canary.
#[test]
fn threshold_gauges_follow_the_last_measurement() {
    use crate::analysis::ConditionKind::{Failure, Success};
    let metrics = Metrics::new();
    let thresholds = |m: &Metrics| {
        let (samples, _) = parse_openmetrics(&m.encode().expect("encode"));
        let mut out: Vec<(String, String, f64)> = samples
            .iter()
            .filter(|s| s.name == "skycanary_measurement_threshold")
            .map(|s| {
                (
                    s.labels["run"].clone(),
                    s.labels["condition"].clone(),
                    s.value,
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    };
    metrics.set_measurement_thresholds(
        "prod",
        "web",
        "r0",
        "apdex",
        &[(Success, 9900.0), (Failure, 9500.0)],
    );
    metrics.set_measurement_thresholds("prod", "web", "r1", "apdex", &[(Success, 0.95)]);
    assert_eq!(
        thresholds(&metrics),
        vec![
            ("r0".into(), "failure".into(), 9500.0),
            ("r0".into(), "success".into(), 9900.0),
            ("r1".into(), "success".into(), 0.95),
        ]
    );
    let (samples, types) = parse_openmetrics(&metrics.encode().expect("encode"));
    assert_eq!(
        types
            .get("skycanary_measurement_threshold")
            .map(String::as_str),
        Some("gauge")
    );
    let s = find(
        &samples,
        "skycanary_measurement_threshold",
        &[
            ("namespace", "prod"),
            ("name", "web"),
            ("run", "r0"),
            ("metric", "apdex"),
            ("condition", "success"),
        ],
    );
    assert!(
        s.is_some(),
        "labels follow the value gauge's plus condition"
    );
    metrics.set_measurement_thresholds("prod", "web", "r0", "apdex", &[(Failure, 9400.0)]);
    metrics.forget_run("prod", "web", "r1");
    assert_eq!(
        thresholds(&metrics),
        vec![("r0".into(), "failure".into(), 9400.0)]
    );
    metrics.remove_canary("prod", "web");
    assert_eq!(thresholds(&metrics), vec![]);
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new();
    metrics.decision("prod", "web", "quote\"and\\slash");
    let text = metrics.encode().expect("encode");
    assert!(text.contains(r#"reason="quote\"and\\slash""#), "{text}");
}

/// Every family the daemon registers, by its OpenMetrics name and type: listed by a fresh
/// daemon before anything happened (process metrics aside: they are Linux-only).
pub(crate) const FAMILIES: [(&str, &str); 27] = [
    ("skycanary_build", "info"),
    ("skycanary_canary_phase", "gauge"),
    ("skycanary_canary_weight", "gauge"),
    ("skycanary_measurement_value", "gauge"),
    ("skycanary_measurement_threshold", "gauge"),
    ("skycanary_measurements", "counter"),
    ("skycanary_analysis_runs", "counter"),
    ("skycanary_decisions", "counter"),
    ("skycanary_provider_request_duration_seconds", "histogram"),
    ("skycanary_provider_errors", "counter"),
    ("skycanary_provider_requests", "counter"),
    ("skycanary_kube_requests", "counter"),
    ("skycanary_kube_request_duration_seconds", "histogram"),
    ("skycanary_canary_duration_seconds", "histogram"),
    ("skycanary_kube_write_conflicts", "counter"),
    ("skycanary_traffic_drift", "counter"),
    ("skycanary_alarms_received", "counter"),
    ("skycanary_alarms_matched", "counter"),
    ("skycanary_alarm_rollback_duration_seconds", "histogram"),
    ("skycanary_scheduled_runs", "counter"),
    ("skycanary_scheduled_actions", "counter"),
    ("skycanary_state_save_failures", "counter"),
    ("skycanary_notifications_sent", "counter"),
    ("skycanary_notifications_failed", "counter"),
    ("skycanary_notifications_dropped", "counter"),
    ("process_cpu_seconds", "counter"),
    ("process_resident_memory_bytes", "gauge"),
];

#[test]
fn a_fresh_registry_lists_every_family() {
    let text = Metrics::new().encode().expect("encode");
    let (samples, types) = parse_openmetrics(&text);
    for (name, kind) in FAMILIES {
        if name.starts_with("process_") && !cfg!(target_os = "linux") {
            continue;
        }
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help"
        );
    }
    // Nothing else is registered without being listed above (process extras aside).
    let unlisted: Vec<&String> = types
        .keys()
        .filter(|k| !k.starts_with("process_") && !FAMILIES.iter().any(|(n, _)| n == k))
        .collect();
    assert!(unlisted.is_empty(), "{unlisted:?}");
    // Labelled families have no series yet: the samples are the build, the unlabelled alarm
    // histogram (zero) and the process' own.
    let build = find(
        &samples,
        "skycanary_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", crate::build_info::GIT_COMMIT),
            ("target", crate::build_info::TARGET),
        ],
    );
    assert_eq!(build.map(|s| s.value), Some(1.0), "{text}");
    assert!(
        samples.iter().all(|s| s.name == "skycanary_build_info"
            || s.name
                .starts_with("skycanary_alarm_rollback_duration_seconds_")
            || s.name.starts_with("process_")),
        "{text}"
    );
}

#[test]
fn accept_negotiates_openmetrics_or_the_classic_format() {
    let cases = [
        (None, Format::Classic),
        (Some("*/*"), Format::Classic),
        (Some("text/plain"), Format::Classic),
        (Some("application/openmetrics-text"), Format::OpenMetrics),
        (
            Some("text/plain;version=0.0.4;q=0.5, Application/OpenMetrics-Text; version=1.0.0"),
            Format::OpenMetrics,
        ),
        (Some("application/openmetrics-text;q=0"), Format::Classic),
        (Some("application/openmetrics-text-x"), Format::Classic),
    ];
    for (accept, want) in cases {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
    assert_eq!(Format::Classic.content_type(), CLASSIC_CONTENT_TYPE);
    assert_eq!(Format::OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
}

#[test]
fn the_classic_format_names_counters_and_info_by_their_samples() {
    let om = "# HELP skycanary_decisions Controller decisions.\n\
        # TYPE skycanary_decisions counter\n\
        skycanary_decisions_total{reason=\"a\"} 2\n\
        # HELP skycanary_build The build.\n\
        # TYPE skycanary_build info\n\
        skycanary_build_info{version=\"1\"} 1\n\
        # HELP skycanary_x_seconds Latency.\n\
        # TYPE skycanary_x_seconds histogram\n\
        # UNIT skycanary_x_seconds seconds\n\
        skycanary_x_seconds_sum 0.5\n\
        skycanary_x_seconds_count 1\n\
        skycanary_x_seconds_bucket{le=\"+Inf\"} 1\n\
        # HELP skycanary_g A gauge.\n\
        # TYPE skycanary_g gauge\n\
        # HELP skycanary_u Unknown.\n\
        # TYPE skycanary_u unknown\n\
        skycanary_u 3\n\
        # EOF\n";
    let classic = "# HELP skycanary_decisions_total Controller decisions.\n\
        # TYPE skycanary_decisions_total counter\n\
        skycanary_decisions_total{reason=\"a\"} 2\n\
        # HELP skycanary_build_info The build.\n\
        # TYPE skycanary_build_info gauge\n\
        skycanary_build_info{version=\"1\"} 1\n\
        # HELP skycanary_x_seconds Latency.\n\
        # TYPE skycanary_x_seconds histogram\n\
        skycanary_x_seconds_sum 0.5\n\
        skycanary_x_seconds_count 1\n\
        skycanary_x_seconds_bucket{le=\"+Inf\"} 1\n\
        # HELP skycanary_g A gauge.\n\
        # TYPE skycanary_g gauge\n\
        # HELP skycanary_u Unknown.\n\
        # TYPE skycanary_u untyped\n\
        skycanary_u 3\n";
    assert_eq!(openmetrics_to_classic(om), classic);
}

#[tokio::test]
async fn a_plain_scrape_gets_the_classic_format_with_help_for_every_sample() {
    let h = Harness::secured().await;
    record_everything(&h.metrics);
    let response = h.client.get(h.url("/metrics")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(CLASSIC_CONTENT_TYPE)
    );
    let text = response.text().await.expect("text");
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    let mut helped = std::collections::BTreeSet::new();
    let mut typed = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.insert(name.to_string(), kind.to_string());
        } else {
            // The classic parser finds a sample's family by its name (histograms by the name
            // without _bucket/_sum/_count).
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(name);
            assert!(helped.contains(family), "{name} has no help\n{text}");
            assert!(typed.contains_key(family), "{name} has no type\n{text}");
        }
    }
    assert_eq!(
        typed.get("skycanary_decisions_total").map(String::as_str),
        Some("counter")
    );
    assert!(text.contains("skycanary_decisions_total{namespace=\"prod\",name=\"web\",reason=\"TrafficWeightUpdated\"} 1"));
}

#[test]
fn canary_duration_is_recorded_when_a_release_ends() {
    let metrics = Metrics::new();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let later = |secs| start + chrono::TimeDelta::seconds(secs);
    metrics.canary_event("RolloutCompleted", Some(start), later(90));
    metrics.canary_event("RolloutAborted", Some(start), later(45));
    metrics.canary_event("RolloutAborted", Some(start), later(4000));
    // Not an end, or no start: nothing.
    metrics.canary_event("RolloutStepCompleted", Some(start), later(10));
    metrics.canary_event("RolloutCompleted", None, later(10));
    // A clock that went backwards counts as zero.
    metrics.canary_event("RolloutCompleted", Some(start), later(-5));
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    let count = |outcome| {
        value_of(
            &samples,
            "skycanary_canary_duration_seconds_count",
            &[("outcome", outcome)],
        )
    };
    let sum = |outcome| {
        value_of(
            &samples,
            "skycanary_canary_duration_seconds_sum",
            &[("outcome", outcome)],
        )
    };
    assert_eq!((count("Promoted"), sum("Promoted")), (2.0, 90.0));
    assert_eq!((count("Aborted"), sum("Aborted")), (2.0, 4045.0));
    let bucket = |outcome, le| {
        value_of(
            &samples,
            "skycanary_canary_duration_seconds_bucket",
            &[("outcome", outcome), ("le", le)],
        )
    };
    assert_eq!(bucket("Aborted", "60.0"), 1.0);
    assert_eq!(bucket("Aborted", "7200.0"), 2.0);
}

#[test]
fn client_requests_are_counted_by_outcome_and_timed() {
    use crate::provider::skywalking::{ProviderError, RequestObserver};
    use crate::traffic::kube_observe::KubeRequestObserver;
    let metrics = Metrics::new();
    let oap = "http://oap:12800";
    let ms = Duration::from_millis(20);
    RequestObserver::observe(&metrics, oap, "metrics", ms, None);
    RequestObserver::observe(&metrics, oap, "metrics", ms, None);
    let unavailable = ProviderError::Http {
        status: 503,
        body_excerpt: String::new(),
    };
    RequestObserver::observe(&metrics, oap, "metrics", ms, Some(&unavailable));
    RequestObserver::observe(&metrics, oap, "alarms", ms, Some(&ProviderError::Timeout));
    KubeRequestObserver::observe(&metrics, "patch", "virtualservices", "2xx", ms);
    KubeRequestObserver::observe(&metrics, "patch", "virtualservices", "4xx", ms);
    KubeRequestObserver::observe(&metrics, "watch", "canaries", "error", ms);
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    let oap_count = |kind, status| {
        value_of(
            &samples,
            "skycanary_provider_requests_total",
            &[("address", oap), ("kind", kind), ("status", status)],
        )
    };
    assert_eq!(oap_count("metrics", "ok"), 2.0);
    assert_eq!(oap_count("metrics", "5xx"), 1.0);
    assert_eq!(oap_count("alarms", "timeout"), 1.0);
    let kube = |verb, resource, status| {
        value_of(
            &samples,
            "skycanary_kube_requests_total",
            &[("verb", verb), ("resource", resource), ("status", status)],
        )
    };
    assert_eq!(kube("patch", "virtualservices", "2xx"), 1.0);
    assert_eq!(kube("patch", "virtualservices", "4xx"), 1.0);
    assert_eq!(kube("watch", "canaries", "error"), 1.0);
    assert_eq!(
        value_of(
            &samples,
            "skycanary_kube_request_duration_seconds_count",
            &[("verb", "patch"), ("resource", "virtualservices")]
        ),
        2.0
    );
}

#[test]
fn process_metrics_are_encoded_from_a_snapshot_and_absent_when_unreadable() {
    use super::process::{ProcessCollector, ProcessStats};
    use prometheus_client::registry::Registry;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector::with_reader(|| {
        Ok(ProcessStats {
            cpu_seconds: 1.5,
            resident_bytes: 4096,
            virtual_bytes: 8192,
            open_fds: 9,
            max_fds: Some(1024),
            start_time_seconds: 1_700_000_000.25,
        })
    })));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "# TYPE process_cpu_seconds counter",
        "process_cpu_seconds_total 1.5",
        "process_resident_memory_bytes 4096.0",
        "process_virtual_memory_bytes 8192.0",
        "process_start_time_seconds 1700000000.25",
        "process_open_fds 9",
        "process_max_fds 1024",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let mut broken = Registry::default();
    broken.register_collector(Box::new(ProcessCollector::with_reader(|| {
        Err("no /proc".into())
    })));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &broken).unwrap();
    assert_eq!(text, "# EOF\n");
}

// ---- Hostile input (issue 8, part 3): every case gets its status and reaches no handler. ----

#[tokio::test]
async fn token_variants_are_refused_and_the_scheme_is_case_insensitive() {
    let h = Harness::secured().await;
    let upper = TOKEN.to_uppercase();
    assert_ne!(upper, TOKEN, "the test token must have lowercase letters");
    for header in [
        format!("Bearer {upper}"),          // wrong case of the token itself
        format!("Bearer {TOKEN}{TOKEN}"),   // the token twice
        format!("Bearer x{TOKEN}"),         // a prefix added
        format!("Bearer {TOKEN} x"),        // a suffix after a space
        format!("Bearer {} ", &TOKEN[..4]), // a short prefix
        TOKEN.to_string(),                  // no scheme
        format!("Token {TOKEN}"),           // another scheme
        format!("Bearer\t{TOKEN}"),         // tab instead of the space
        format!("Bearer {TOKEN}\u{0}"),     // refused by the HTTP layer or by us
    ] {
        let Ok(response) = h
            .client
            .post(h.url("/api/v1/canaries/prod/web/abort"))
            .header("authorization", &header)
            .send()
            .await
        else {
            continue; // reqwest refused to send an invalid header value: fine
        };
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
    }
    // Credentials anywhere but the Authorization header do not count.
    let response = h
        .client
        .post(h.url(&format!(
            "/api/v1/canaries/prod/web/abort?token={TOKEN}&access_token={TOKEN}"
        )))
        .header("x-api-key", TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Two Authorization headers: only the first is read; a wrong first one fails.
    let response = h
        .client
        .post(h.url("/api/v1/canaries/prod/web/abort"))
        .header("authorization", "Bearer wrong")
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(lock(&h.fake.commands).is_empty());

    // RFC 7235: the scheme is case-insensitive.
    for scheme in ["BEARER", "bearer", "bEaReR"] {
        let response = h
            .client
            .get(h.url("/api/v1/canaries"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415() {
    let h = Harness::secured().await;
    let alarm = r#"[{"scopeId":1,"name":"web","alarmMessage":"x","startTime":1}]"#;
    for path in [
        "/webhooks/skywalking",
        "/webhooks/alertmanager",
        "/api/v1/canaries/prod/web/abort",
    ] {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/jsonx",
            "text/json",
        ] {
            let body = if path.ends_with("abort") {
                r#"{"reason": "x"}"#
            } else {
                alarm
            };
            let response = h
                .client
                .post(h.url(path))
                .bearer_auth(TOKEN)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .expect("POST");
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {ct}"
            );
            assert!(error_of(response).await.contains("application/json"));
        }
    }
    assert!(lock(&h.fake.alarms).is_empty());
    assert!(lock(&h.fake.commands).is_empty());

    // JSON types with parameters, +json types, and no header at all are accepted.
    for ct in [
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
        Some("application/vnd.skywalking.alarm+json"),
        None,
    ] {
        let mut request = h
            .client
            .post(h.url("/webhooks/skywalking"))
            .bearer_auth(TOKEN)
            .body(alarm);
        if let Some(ct) = ct {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.expect("POST");
        assert_eq!(response.status(), StatusCode::OK, "{ct:?}");
    }
    // A body-less command needs no content type.
    let response = h
        .client
        .post(h.url("/api/v1/canaries/prod/web/pause"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let h = Harness::secured().await;
    let depth = 200_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // serde_json stops at 128 levels: the reason field is not a string, and the Fake daemon's
    // payload parser (a Value, as the real one) refuses it.
    let abort = format!(r#"{{"reason": {nested}}}"#);
    let response = h.post("/api/v1/canaries/prod/web/abort", abort).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_of(response).await.starts_with("invalid abort body"));
    let objects = format!("{}{}", r#"{"a":"#.repeat(depth / 2), "}".repeat(depth / 2));
    for body in [nested.clone(), objects, format!("[{nested}")] {
        let response = h.post("/webhooks/skywalking", body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    assert!(lock(&h.fake.commands).is_empty());
    // The server is still there.
    assert_eq!(h.get("/api/v1/canaries").await.status(), StatusCode::OK);
}

/// A chunked abort body over the limit: 413 and no command (the webhook case is above).
#[tokio::test]
async fn streamed_command_bodies_over_the_limit_are_413() {
    use axum::body::Body;
    use tower::ServiceExt;

    let fake = Arc::new(Fake::new());
    let app = router(fake.clone(), Metrics::new(), Auth::Insecure);
    let chunks = (0..20).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 * 1024])));
    let request = axum::http::Request::post("/api/v1/canaries/prod/web/abort")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    assert!(lock(&fake.commands).is_empty());
}

/// Reads what the server sends until it closes the connection (or `limit` passes: a bound that
/// keeps a broken server from hanging the test, not a timing assertion).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn slow_bodies_get_408_and_slow_headers_are_cut_off() {
    use tokio::io::AsyncWriteExt;

    let timeouts = ReadTimeouts::both(Duration::from_millis(300));
    let h = Harness::start_with(
        Auth::Bearer(Token::new(TOKEN, "test").expect("token")),
        timeouts,
    )
    .await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let bound = Duration::from_secs(10);

    // A body that stops after 10 of its declared 100 bytes: 408, then the connection closes.
    let mut slow_body = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /webhooks/skywalking HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n[{{\"scope\":"
    );
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut slow_body, bound)
        .await
        .expect("the server answers and closes within the bound");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");

    // A chunked body trickled one byte at a time, each well within any per-read timeout: the
    // deadline is for the whole body, so it is cut too.
    let mut trickle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/canaries/prod/web/abort HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    trickle.write_all(head.as_bytes()).await.expect("write");
    let (mut reader, mut writer) = trickle.into_split();
    let writing = tokio::spawn(async move {
        for _ in 0..200 {
            if writer.write_all(b"1\r\n \r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(bound, read)
        .await
        .expect("answered within the bound");
    writing.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Headers that never end, trickled or stalled: the connection is closed without a request
    // reaching any handler.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(b"POST /api/v1/canaries/prod/web/abort HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        stalled.push(s);
    }
    // Meanwhile a well-behaved client is served.
    assert_eq!(h.get("/api/v1/canaries").await.status(), StatusCode::OK);
    for mut s in stalled {
        let rest = read_until_closed(&mut s, bound)
            .await
            .expect("closed within the bound");
        assert!(!rest.contains("200 OK"), "{rest}");
    }
    // A connection that sends nothing at all is closed as well.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert!(read_until_closed(&mut silent, bound).await.is_some());

    assert!(lock(&h.fake.alarms).is_empty());
    assert!(lock(&h.fake.commands).is_empty());
}

#[tokio::test]
async fn readyz_is_503_naming_each_unsaved_status_until_its_save_lands() {
    let h = Harness::secured().await;
    h.fake.ready.store(true, Ordering::SeqCst);
    h.metrics
        .state_save_failed(StateKind::Canary, "prod", "web", "disk full");
    h.metrics
        .state_save_failed(StateKind::Canary, "prod", "web", "still full");
    h.metrics.state_save_failed(
        StateKind::Scheduled,
        "ops",
        "nightly",
        "status subresource refused",
    );
    let response = h.client.get(h.url("/readyz")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(response).await;
    assert_eq!(
        body["error"],
        "status cannot be saved: canary prod/web (2 failed save(s): still full); \
         scheduled ops/nightly (1 failed save(s): status subresource refused)"
    );
    assert_eq!(
        body["unsaved"][0],
        json!({"kind": "canary", "namespace": "prod", "name": "web", "failures": 2, "error": "still full"})
    );

    // The shipped probes leave the state check out: the pod keeps taking alarms.
    let response = h
        .client
        .get(h.url("/readyz?exclude=state"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);

    // One save lands: still not ready while the other does not.
    h.metrics.state_saved(StateKind::Canary, "prod", "web");
    let response = h.client.get(h.url("/readyz")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(response).await;
    assert_eq!(body["unsaved"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["unsaved"][0]["name"], "nightly");

    h.metrics
        .state_saved(StateKind::Scheduled, "ops", "nightly");
    let response = h.client.get(h.url("/readyz")).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn state_save_failures_are_counted_per_object_and_forgotten_with_the_canary() {
    let metrics = Metrics::new();
    metrics.state_save_failed(StateKind::Canary, "prod", "web", "disk full");
    metrics.state_save_failed(StateKind::Canary, "prod", "web", "disk full");
    metrics.state_save_failed(StateKind::Scheduled, "prod", "web", "refused");
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    let count = |kind: &str| {
        samples
            .iter()
            .find(|s| {
                s.name == "skycanary_state_save_failures_total"
                    && s.labels.get("kind").map(String::as_str) == Some(kind)
                    && s.labels.get("namespace").map(String::as_str) == Some("prod")
                    && s.labels.get("name").map(String::as_str) == Some("web")
            })
            .map(|s| s.value)
    };
    assert_eq!(count("canary"), Some(2.0));
    assert_eq!(count("scheduled"), Some(1.0));
    // The error text is no label: one series per object, whatever the errors say.
    assert!(
        samples
            .iter()
            .filter(|s| s.name == "skycanary_state_save_failures_total")
            .all(|s| s.labels.len() == 3)
    );
    assert_eq!(metrics.unsaved_states().len(), 2);

    // A canary no longer declared cannot hold readiness back (its task is gone); the
    // scheduled analysis of the same name is another object.
    metrics.set_canary_phase("prod", "web", CanaryPhase::Aborted);
    metrics.retain_canaries(|_, _| false);
    let left = metrics.unsaved_states();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kind, StateKind::Scheduled);
    // The counter is cumulative and stays.
    let (samples, _) = parse_openmetrics(&metrics.encode().expect("encode"));
    assert!(
        samples
            .iter()
            .any(|s| s.name == "skycanary_state_save_failures_total"
                && s.labels.get("kind").map(String::as_str) == Some("canary"))
    );
}

/// The OpenAPI document lists exactly the routes the router serves: a route added without its
/// documentation (or documented and removed) fails here.
#[test]
fn openapi_documents_exactly_the_served_routes() {
    let doc = openapi::document();
    let documented = openapi::documented_routes(&doc);
    let mut served: Vec<(String, String)> = routes::served_routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_string(), path.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    assert!(served.len() >= 11, "{served:?}");
}

/// Every `$ref` of `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_of_the_openapi_document_resolves() {
    let doc = openapi::document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "{found:?}");
    for r in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external {r}"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    // Each operation answers JSON errors, and every operation but the public ones needs the token.
    for (method, path) in openapi::documented_routes(&doc) {
        let op = &doc["paths"][&path][method.to_ascii_lowercase()];
        let public = op.get("security") == Some(&json!([]));
        assert_eq!(
            public,
            ["/healthz", "/readyz", "/metrics", OPENAPI_PATH].contains(&path.as_str()),
            "{method} {path}"
        );
        assert_eq!(
            op["responses"].get("401").is_some(),
            !public,
            "{method} {path}"
        );
    }
}

/// A validator of `instance` against the document's component `name`.
fn component_validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"].clone(),
    });
    jsonschema::draft202012::new(&schema).expect("component schema compiles")
}

fn assert_conforms(doc: &Value, name: &str, instance: &Value) {
    let validator = component_validator(doc, name);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{instance}");
}

/// The document is served without a token, and real answers of each kind conform to the
/// schemas it names (the fuller check is schemathesis against a live daemon: tests/it/openapi.rs).
#[tokio::test]
async fn openapi_is_public_and_answers_conform_to_it() {
    let h = Harness::secured().await;
    let response = h.client.get(h.url(OPENAPI_PATH)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/json")
    );
    let doc = json_of(response).await;
    assert_eq!(doc, openapi::document());
    assert_eq!(doc["openapi"], "3.1.0");

    let mut busy = summary("prod", "web", CanaryPhase::Paused);
    busy.status.abort = Some(AbortStatus {
        reason: "apdex below 0.9".into(),
        metric: Some("apdex".into()),
        value: Some("[0.8]".into()),
        condition: Some("result[0] >= 0.9".into()),
        alarm: None,
        not_ready: None,
        at: chrono::Utc::now(),
    });
    busy.status.weights = vec![route_weights("reviews", "primary", 20)];
    lock(&h.fake.canaries)[0] = busy;

    let list = json_of(h.get("/api/v1/canaries").await).await;
    assert_conforms(&doc, "CanaryList", &list);
    let one = json_of(h.get("/api/v1/canaries/prod/web").await).await;
    assert_conforms(&doc, "CanarySummary", &one);
    let scheduled = json_of(h.get("/api/v1/scheduled-analyses").await).await;
    assert_conforms(&doc, "ScheduleList", &scheduled);
    let missing = h.get("/api/v1/canaries/prod/nope").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_conforms(&doc, "ErrorBody", &json_of(missing).await);
    let refused = h
        .post("/webhooks/skywalking", r#"[{"ruleName":"r"}, 3]"#)
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_conforms(&doc, "AlarmSummary", &json_of(refused).await);
    let health = h.client.get(h.url("/healthz")).send().await.expect("GET");
    assert_conforms(&doc, "ProbeBody", &json_of(health).await);
    // A wrong shape is caught: the check can fail.
    let validator = component_validator(&doc, "CanarySummary");
    assert!(!validator.is_valid(&json!({"namespace": "prod", "name": 3})));
}

/// Each documented operation reaches its handler (never the 404/405 fallbacks), and a method
/// the document does not list on a path is 405.
#[tokio::test]
async fn every_documented_operation_is_routed_and_others_are_405() {
    let h = Harness::secured().await;
    lock(&h.fake.canaries)[0] = summary("prod", "web", CanaryPhase::Paused);
    let doc = openapi::document();
    h.fake.ready.store(true, Ordering::SeqCst);
    let concrete = |path: &str| {
        let name = if path.contains("scheduled") {
            "nightly"
        } else {
            "web"
        };
        path.replace("{namespace}", "prod")
            .replace("{name}", name)
            .replace("{action}", "resume")
    };
    for (method, path) in openapi::documented_routes(&doc) {
        let url = h.url(&concrete(&path));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = h.client.request(method.clone(), &url).bearer_auth(TOKEN);
        if path.starts_with("/webhooks/") {
            let body = if path.ends_with("alertmanager") {
                r#"{"version":"4","alerts":[]}"#
            } else {
                "[]"
            };
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(
            !text.contains("no route for") && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status} {text}"
        );
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        for other in [reqwest::Method::DELETE, reqwest::Method::PUT] {
            let response = h
                .client
                .request(other.clone(), &url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {path}"
            );
        }
    }
}
