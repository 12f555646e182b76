//! Browser sessions for the dashboard: a login that trades the API token for a random session
//! id in an HttpOnly, SameSite=Strict cookie, so the token never travels in a URL, a page or a
//! log. Each session has its own CSRF token, which every state-changing request authenticated
//! by the cookie must echo in [`CSRF_HEADER`]. The store is in memory, bounded in count and
//! lifetime; a restart logs everyone out (the token logs them back in).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header;

/// The session cookie's name.
pub const COOKIE: &str = "skycanary_session";
/// The header carrying the session's CSRF token on `POST`s authenticated by the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Live sessions at most; a login past it ends the session closest to expiry, so a token
/// holder is never locked out.
pub const MAX_SESSIONS: usize = 256;
/// A session's lifetime from login (absolute, not sliding: a stolen cookie dies on its own).
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Failed logins allowed per [`FAILURE_WINDOW`], over all clients; past it logins answer 429.
pub const MAX_LOGIN_FAILURES: usize = 20;
/// The window [`MAX_LOGIN_FAILURES`] counts over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The operating system's random source failed: no predictable id is ever issued instead.
    #[error("no randomness for a session id: {0}")]
    Random(String),
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    failures: VecDeque<Instant>,
}

/// The session store (shared by the auth middleware and the dashboard's handlers).
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

/// A new session: the cookie value and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Goes in the cookie only.
    pub id: String,
    /// Handed to the page, echoed in [`CSRF_HEADER`].
    pub csrf: String,
}

/// 256 random bits, URL-safe.
fn random_id() -> Result<String, SessionError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SessionError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session at `now`, dropping expired ones first and, when [`MAX_SESSIONS`] are
    /// live, the one that would expire first.
    pub fn create(&self, now: Instant) -> Result<NewSession, SessionError> {
        let session = NewSession {
            id: random_id()?,
            csrf: random_id()?,
        };
        let mut inner = self.lock();
        inner.sessions.retain(|_, s| s.expires > now);
        while inner.sessions.len() >= MAX_SESSIONS {
            let oldest = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => inner.sessions.remove(&id),
                None => break,
            };
        }
        inner.sessions.insert(
            session.id.clone(),
            Session {
                csrf: session.csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Ok(session)
    }

    /// The CSRF token of a live session, `None` when unknown or expired (an expired one is
    /// removed).
    pub fn csrf(&self, id: &str, now: Instant) -> Option<String> {
        let mut inner = self.lock();
        match inner.sessions.get(id) {
            Some(s) if s.expires > now => Some(s.csrf.clone()),
            Some(_) => {
                inner.sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logout).
    pub fn remove(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    /// Live sessions (for tests and bounds).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether another login attempt may be judged at `now`: false once
    /// [`MAX_LOGIN_FAILURES`] failed within [`FAILURE_WINDOW`].
    pub fn login_allowed(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        while inner
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
        {
            inner.failures.pop_front();
        }
        inner.failures.len() < MAX_LOGIN_FAILURES
    }

    /// Records a failed login at `now` (bounded: only the window's worth is kept).
    pub fn login_failed(&self, now: Instant) {
        let mut inner = self.lock();
        if inner.failures.len() >= MAX_LOGIN_FAILURES {
            inner.failures.pop_front();
        }
        inner.failures.push_back(now);
    }
}

/// The session id in the request's `Cookie` header(s), if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` for a new session: not readable by scripts, never sent cross-site, and with
/// `secure` (the page was reached over HTTPS: [`reached_over_https`]) never sent over plain HTTP.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        secure_attribute(secure)
    )
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_attribute(secure)
    )
}

fn secure_attribute(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

/// Whether the request reached the proxy in front of the daemon over HTTPS
/// (`X-Forwarded-Proto: https` or `Forwarded: proto=https`, first hop). The daemon serves
/// plain HTTP itself, so without such a proxy the cookie stays usable on `http://127.0.0.1`.
/// A client that sends the header on plain HTTP only makes its own cookie stricter.
pub fn reached_over_https(headers: &HeaderMap) -> bool {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let forwarded_proto = first("forwarded").and_then(|hop| {
        hop.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("proto")
                .then(|| v.trim().trim_matches('"'))
        })
    });
    [first("x-forwarded-proto"), forwarded_proto]
        .into_iter()
        .flatten()
        .any(|proto| proto.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_expire_and_are_bounded() {
        let store = Sessions::default();
        let t0 = Instant::now();
        let a = store.create(t0).unwrap();
        let b = store.create(t0).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.id, a.csrf);
        assert_eq!(a.id.len(), 43);
        assert_eq!(store.csrf(&a.id, t0), Some(a.csrf.clone()));
        assert_eq!(store.csrf("nope", t0), None);
        // Absolute expiry.
        assert_eq!(store.csrf(&a.id, t0 + SESSION_TTL), None);
        assert_eq!(store.len(), 1, "the expired session is gone");
        store.remove(&b.id);
        assert!(store.is_empty());

        let first = store.create(t0).unwrap();
        for i in 1..MAX_SESSIONS + 10 {
            store.create(t0 + Duration::from_millis(i as u64)).unwrap();
        }
        assert_eq!(store.len(), MAX_SESSIONS);
        assert_eq!(
            store.csrf(&first.id, t0 + Duration::from_secs(1)),
            None,
            "the session closest to expiry made room"
        );
    }

    #[test]
    fn failed_logins_are_limited_per_window() {
        let store = Sessions::default();
        let t0 = Instant::now();
        for _ in 0..MAX_LOGIN_FAILURES {
            assert!(store.login_allowed(t0));
            store.login_failed(t0);
        }
        assert!(!store.login_allowed(t0 + Duration::from_secs(1)));
        assert!(store.login_allowed(t0 + FAILURE_WINDOW));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; skycanary_session=abc ; b=2".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "skycanary_sessionx=1".parse().unwrap());
        headers.append(header::COOKIE, "skycanary_session=".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
        assert!(set_cookie("x", false).contains("HttpOnly; SameSite=Strict"));
        assert!(!set_cookie("x", false).contains("Secure"));
        assert!(set_cookie("x", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert!(clear_cookie(true).ends_with("Max-Age=0; Secure"));
    }

    #[test]
    fn https_is_told_by_the_first_hops_forwarding_headers() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            reached_over_https(&h)
        };
        assert!(!with(&[]));
        assert!(with(&[("x-forwarded-proto", "https")]));
        assert!(with(&[("x-forwarded-proto", "HTTPS, http")]));
        assert!(!with(&[("x-forwarded-proto", "http, https")]));
        assert!(with(&[("forwarded", "for=1.2.3.4;proto=https;by=x")]));
        assert!(with(&[("forwarded", "Proto=\"https\", proto=http")]));
        assert!(!with(&[("forwarded", "proto=http, proto=https")]));
        assert!(!with(&[("forwarded", "for=https")]));
    }
}
