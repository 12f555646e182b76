//! Bearer-token authentication for everything except the probe and scrape endpoints.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

use super::routes::ApiError;
use super::session::{CSRF_HEADER, Sessions, session_cookie};

/// Environment variable holding the API token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "SKYCANARY_TOKEN";

/// Paths reachable without a token: kubelet probes and Prometheus scrapes carry none; `/` only
/// redirects to the dashboard, whose page, script and stylesheet are static (no data: all it
/// shows comes from authenticated endpoints), and whose login takes the token in its body; the OpenAPI document describes the API and
/// grants nothing, and API tools load it before they are given a token.
const PUBLIC_PATHS: [&str; 9] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/ui",
    "/ui/app.js",
    "/ui/app.css",
    "/ui/login",
    super::openapi::PATH,
];

/// The dashboard's login, whose body (the token) is read without a token.
const LOGIN_PATH: &str = "/ui/login";
/// Largest login body accepted.
pub(crate) const MAX_LOGIN_BODY: usize = 4096;

/// A token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file is unreadable.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// File asked for.
        path: PathBuf,
        /// The I/O error reading it (missing file, permissions).
        source: std::io::Error,
    },
    /// Nothing left after trimming: almost certainly a deployment mistake, never "no auth".
    #[error("token from {origin} is empty")]
    Empty {
        /// File path or variable name.
        origin: String,
    },
    /// Characters that cannot travel in an `Authorization` header.
    #[error("token from {origin} contains whitespace or non-printable characters")]
    Invalid {
        /// File path or variable name.
        origin: String,
    },
}

/// The shared API secret. Never printed: `Debug` is redacted.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from a string; surrounding whitespace (a trailing newline in a file) is trimmed.
    pub fn new(value: &str, origin: &str) -> Result<Self, TokenError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(TokenError::Empty {
                origin: origin.to_string(),
            });
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid {
                origin: origin.to_string(),
            });
        }
        Ok(Token(Arc::from(value.as_bytes())))
    }

    /// Reads `--token-file` (typically a mounted Secret).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Token::new(&text, &path.display().to_string())
    }

    /// Reads the variable `var`; `None` when unset, an error when set but empty.
    pub fn from_env(var: &str) -> Result<Option<Self>, TokenError> {
        match std::env::var(var) {
            Ok(value) => Token::new(&value, var).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(TokenError::Invalid {
                origin: var.to_string(),
            }),
        }
    }

    /// The secret, for a client sending it (`Authorization: Bearer ...`). Only ASCII graphic
    /// characters are accepted at construction, so this is always valid UTF-8.
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The CLI's rule: `--token-file` wins, else [`TOKEN_ENV`], else none.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, TokenError> {
        match file {
            Some(path) => Token::from_file(path).map(Some),
            None => Token::from_env(TOKEN_ENV),
        }
    }

    /// Constant-time comparison with a presented credential.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_matches(&self.0, presented)
    }
}

/// Compares without leaking, through timing, how much of `presented` is right. The work depends
/// only on the presented length (which the caller knows anyway), not on the secret's length or
/// content, so lengths are compared in constant time too instead of returning early.
pub(crate) fn constant_time_matches(expected: &[u8], presented: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut same: Choice = presented.len().ct_eq(&expected.len());
    for (i, byte) in presented.iter().enumerate() {
        let want = expected.get(i % expected.len()).copied().unwrap_or(0);
        same &= byte.ct_eq(&want);
    }
    same.into()
}

/// No token configured and no explicit opt-out.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Refusing to expose the control API unauthenticated by accident.
    #[error(
        "no API token configured: pass --token-file FILE, set {TOKEN_ENV}, or --insecure-api to serve the API without authentication (local experiments only)"
    )]
    NoToken,
}

/// How the API authenticates. An unauthenticated API exists only as [`Auth::Insecure`], which a
/// caller has to name; a missing token otherwise is an error ([`Auth::from_config`]).
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>` required under `/api` and `/webhooks`.
    Bearer(Token),
    /// Anyone may call the API (local development only).
    Insecure,
}

impl Auth {
    /// From CLI settings: a token if there is one; otherwise insecure only when asked for.
    pub fn from_config(token: Option<Token>, allow_insecure: bool) -> Result<Self, AuthError> {
        match (token, allow_insecure) {
            (Some(token), _) => Ok(Auth::Bearer(token)),
            (None, true) => Ok(Auth::Insecure),
            (None, false) => Err(AuthError::NoToken),
        }
    }
}

/// What the auth middleware needs: the mode and the dashboard's sessions.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) auth: Auth,
    pub(crate) sessions: Arc<Sessions>,
}

/// A request authenticated by a session cookie (not by the bearer token): which session, and
/// its CSRF token (for `GET /ui/session`, which hands it to a reloaded page).
#[derive(Debug, Clone)]
pub(crate) struct SessionAuth {
    pub(crate) id: String,
    pub(crate) csrf: String,
}

/// Middleware: everything but [`PUBLIC_PATHS`] needs the token, including unknown paths, so a
/// route added later is protected by default. A browser may instead present the session
/// cookie of a dashboard login; then any method but `GET`/`HEAD` must also carry the
/// session's CSRF token in `X-CSRF-Token` (the cookie is SameSite=Strict as well).
pub(crate) async fn require_token(
    State(gate): State<Gate>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = match &gate.auth {
        Auth::Insecure => return next.run(req).await,
        Auth::Bearer(token) => token,
    };
    if req.uri().path() == LOGIN_PATH {
        // The one body read before authentication: a few bytes of JSON, so cap it far below
        // the API's limit (a declared oversize is refused unread, a streamed one cut off).
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_LOGIN_BODY as u64) {
            return ApiError::payload_too_large(MAX_LOGIN_BODY).into_response();
        }
        let req = req
            .map(|body| axum::body::Body::new(http_body_util::Limited::new(body, MAX_LOGIN_BODY)));
        return next.run(req).await;
    }
    if PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let authorization = req.headers().get(header::AUTHORIZATION);
    if authorization.is_none()
        && let Some(id) = session_cookie(req.headers())
    {
        let Some(csrf) = gate.sessions.csrf(id, std::time::Instant::now()) else {
            return unauthorized("session expired or unknown: log in again", None);
        };
        let safe = req.method() == Method::GET || req.method() == Method::HEAD;
        let echoed = req
            .headers()
            .get(CSRF_HEADER)
            .is_some_and(|v| constant_time_matches(csrf.as_bytes(), v.as_bytes()));
        if !safe && !echoed {
            return ApiError::forbidden("missing or wrong X-CSRF-Token for this session")
                .into_response();
        }
        let auth = SessionAuth {
            id: id.to_string(),
            csrf,
        };
        req.extensions_mut().insert(auth);
        return next.run(req).await;
    }
    let presented = authorization.and_then(|value| bearer_credential(value.as_bytes()));
    match presented {
        None => unauthorized("missing bearer token", None),
        Some(credential) if token.matches(credential) => next.run(req).await,
        Some(_) => unauthorized("invalid bearer token", Some("invalid_token")),
    }
}

/// The credential of `Bearer <credential>`; the scheme is case-insensitive (RFC 7235).
fn bearer_credential(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = value.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let credential = value.get(SCHEME.len()..)?.trim_ascii();
    (!credential.is_empty()).then_some(credential)
}

fn unauthorized(message: &str, error_code: Option<&str>) -> Response {
    let challenge = match error_code {
        Some(code) => format!("Bearer realm=\"skycanary\", error=\"{code}\""),
        None => "Bearer realm=\"skycanary\"".to_string(),
    };
    let mut response = ApiError::unauthorized(message).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
