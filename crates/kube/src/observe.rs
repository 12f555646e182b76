//! A tower layer for the kube client that reports every API request (verb, resource, status
//! class, latency) to an observer — the daemon's `/metrics` — without the client depending on
//! the metrics registry.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::{Method, Request, Response};
use tower::{Layer, Service};

/// Hears about every request the kube client sends.
pub trait KubeRequestObserver: Send + Sync + std::fmt::Debug {
    /// One request: `verb` (`get`, `list`, `watch`, `create`, `replace`, `patch`, `delete`),
    /// `resource` (plural, `/status` for the subresource), `status` (`2xx`…`5xx`, or `error`
    /// when no response came) and the time to the response headers.
    fn observe(&self, verb: &str, resource: &str, status: &str, elapsed: Duration);
}

/// The verb and resource of a request, from its method, path and query: bounded by the API
/// paths the daemon builds, never by object names.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    // rest = [resource] | [resource, name] | [resource, name, subresource]
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watching =
        query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "replace",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// The status label of a response code: its class.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Wraps a kube client's service stack with [`ObserveService`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    observer: Arc<dyn KubeRequestObserver>,
}

impl ObserveLayer {
    /// Reports to `observer`.
    pub fn new(observer: Arc<dyn KubeRequestObserver>) -> Self {
        ObserveLayer { observer }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// Times each request to its response headers and reports it.
#[derive(Clone, Debug)]
pub struct ObserveService<S> {
    inner: S,
    observer: Arc<dyn KubeRequestObserver>,
}

impl<S, B, RB> Service<Request<B>> for ObserveService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query());
        let observer = self.observer.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let status = match &result {
                Ok(response) => status_class(response.status().as_u16()),
                Err(_) => "error",
            };
            observer.observe(verb, &resource, status, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn verbs_and_resources_follow_the_api_paths() {
        let vs = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices";
        /// Method, path, query and the expected (verb, resource).
        type Case = (
            Method,
            String,
            Option<&'static str>,
            (&'static str, &'static str),
        );
        let cases: [Case; 12] = [
            (Method::GET, vs.into(), None, ("list", "virtualservices")),
            (
                Method::GET,
                vs.into(),
                Some("watch=true&resourceVersion=1"),
                ("watch", "virtualservices"),
            ),
            (
                Method::GET,
                format!("{vs}/web"),
                None,
                ("get", "virtualservices"),
            ),
            (
                Method::PUT,
                format!("{vs}/web"),
                None,
                ("replace", "virtualservices"),
            ),
            (
                Method::PATCH,
                format!("{vs}/web"),
                None,
                ("patch", "virtualservices"),
            ),
            (
                Method::DELETE,
                format!("{vs}/web"),
                None,
                ("delete", "virtualservices"),
            ),
            (
                Method::DELETE,
                vs.into(),
                None,
                ("deletecollection", "virtualservices"),
            ),
            (
                Method::PATCH,
                "/apis/skycanary.io/v1alpha1/namespaces/shop/canaries/web/status".into(),
                None,
                ("patch", "canaries/status"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/shop/events".into(),
                None,
                ("create", "events"),
            ),
            (
                Method::GET,
                "/apis/skycanary.io/v1alpha1/canaries".into(),
                Some("watch=1"),
                ("watch", "canaries"),
            ),
            // A namespace itself is a resource.
            (
                Method::GET,
                "/api/v1/namespaces/shop".into(),
                None,
                ("get", "namespaces"),
            ),
            (Method::OPTIONS, "/version".into(), None, ("other", "other")),
        ];
        for (method, path, query, (verb, resource)) in cases {
            assert_eq!(
                classify(&method, &path, query),
                (verb, resource.to_string()),
                "{method} {path} {query:?}"
            );
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(201), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(409), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(99), "other");
    }

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(String, String, String)>>);

    impl KubeRequestObserver for Seen {
        fn observe(&self, verb: &str, resource: &str, status: &str, _elapsed: Duration) {
            self.0
                .lock()
                .unwrap()
                .push((verb.into(), resource.into(), status.into()));
        }
    }

    #[tokio::test]
    async fn every_answer_and_every_failure_is_reported() {
        use tower::ServiceExt;
        let seen = Arc::new(Seen::default());
        let answer = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path().ends_with("/missing") {
                return Err("connection reset");
            }
            Ok(Response::builder().status(409).body(()).unwrap())
        });
        let svc = ObserveLayer::new(seen.clone()).layer(answer);
        let conflict = Request::put("https://k8s/api/v1/namespaces/a/configmaps/x")
            .body(())
            .unwrap();
        let response = svc.clone().oneshot(conflict).await.unwrap();
        assert_eq!(response.status(), 409);
        let lost = Request::get("https://k8s/api/v1/namespaces/a/configmaps/missing")
            .body(())
            .unwrap();
        assert!(svc.oneshot(lost).await.is_err());
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![
                ("replace".into(), "configmaps".into(), "4xx".into()),
                ("get".into(), "configmaps".into(), "error".into()),
            ]
        );
    }
}
