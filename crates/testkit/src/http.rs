//! HTTP edge of the fake: one fallback handler parses the Kubernetes URL scheme itself, so any
//! group/version/plural works without registering routes.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::FakeApiServer;
use super::discovery;
use super::store::{
    ApiError, CRD_GROUP, CRD_PLURAL, FaultAction, ListQuery, RecordedRequest, ResourceRef, Signal,
    Store, WatchRecord, crd_version, matches_selectors, present, reason_for, record_matches,
};
use super::table;

/// Largest request body accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Watch duration when the client gives no `timeoutSeconds`, and the cap when it does.
const DEFAULT_WATCH_SECS: u64 = 300;
const MAX_WATCH_SECS: u64 = 3600;

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_status())
}

fn result_response(result: Result<Value, ApiError>, ok: u16) -> Response {
    match result {
        Ok(v) => json_response(ok, &v),
        Err(e) => error_response(&e),
    }
}

/// Entry point for every request: handles it and tells the observer, if one is set.
pub(crate) async fn handle(State(server): State<FakeApiServer>, req: Request) -> Response {
    let received = std::time::Instant::now();
    let Some(observer) = server.lock().observer.clone() else {
        return handle_request(server, req).await;
    };
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let response = handle_request(server, req).await;
    observer(&super::Answered {
        method,
        path,
        query,
        status: response.status().as_u16(),
        received,
        answered: std::time::Instant::now(),
    });
    response
}

async fn handle_request(server: FakeApiServer, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return error_response(&ApiError::new(413, "request body too large")),
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query_str = parts.uri.query().map(str::to_string);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let target = match &query_str {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };

    let (fault, delay) = {
        let mut store = server.lock();
        store.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: query_str.clone(),
            content_type: content_type.clone(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
        let mut fault = None;
        let mut delay = store.latency;
        for f in store.faults.iter_mut() {
            let method_ok = f
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()));
            if f.remaining > 0 && method_ok && target.contains(&f.path_contains) {
                match f.action {
                    FaultAction::Delay(d) => delay += d,
                    FaultAction::Status(s) if fault.is_none() => fault = Some(s),
                    FaultAction::Status(_) => continue,
                }
                f.remaining -= 1;
            }
        }
        store.faults.retain(|f| f.remaining > 0);
        (fault, delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = fault {
        let mut err = ApiError::new(
            code,
            format!("injected fault: {} {target}", reason_for(code)),
        );
        if code == 409 {
            err.message =
                "Operation cannot be fulfilled: the object has been modified; please apply your \
                           changes to the latest version and try again (injected)"
                    .into();
        }
        return error_response(&err);
    }

    let params: Vec<(String, String)> = Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let ctx = Ctx {
        server: &server,
        method: &method,
        content_type: content_type.as_deref().unwrap_or_default(),
        accept: &accept,
        body: &bytes,
        param: &param,
    };
    let crds = || server.list(CRD_GROUP, CRD_PLURAL);
    match segs.as_slice() {
        ["version"] => json_response(200, &discovery::version()),
        ["healthz" | "readyz" | "livez"] => (StatusCode::OK, "ok").into_response(),
        ["api"] => json_response(200, &discovery::api_versions()),
        ["apis"] => json_response(200, &discovery::group_list(&crds())),
        ["apis", g] => match discovery::group(g, &crds()) {
            Some(doc) => json_response(200, &doc),
            None => error_response(&ApiError::new(
                404,
                "the server could not find the requested resource",
            )),
        },
        ["api", v] => discovery_resources("", v, &[]),
        ["apis", g, v] => discovery_resources(g, v, &crds()),
        ["api", v, rest @ ..] => resource(&ctx, ResourceRef::new("", v, ""), rest),
        ["apis", g, v, rest @ ..] => resource(&ctx, ResourceRef::new(g, v, ""), rest),
        _ => error_response(&ApiError::new(
            404,
            "the server could not find the requested resource",
        )),
    }
}

fn discovery_resources(group: &str, version: &str, crds: &[Value]) -> Response {
    match discovery::resources(group, version, crds) {
        Some(doc) => json_response(200, &doc),
        None => error_response(&ApiError::new(
            404,
            "the server could not find the requested resource",
        )),
    }
}

/// Everything a resource handler needs from the request.
struct Ctx<'a> {
    server: &'a FakeApiServer,
    method: &'a Method,
    content_type: &'a str,
    accept: &'a str,
    body: &'a Bytes,
    param: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    /// Runs a write with the request's `fieldValidation` in force.
    fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.server.lock();
        store.field_validation = (self.param)("fieldValidation");
        let out = f(&mut store);
        store.field_validation = None;
        out
    }

    /// The answer to a GET: the object(s), or a Table of them when asked for one and a CRD
    /// gives the columns.
    fn read_response(&self, res: &ResourceRef, result: Result<Value, ApiError>) -> Response {
        let value = match result {
            Ok(v) => v,
            Err(e) => return error_response(&e),
        };
        if !table::wants_table(self.accept) {
            return json_response(200, &value);
        }
        let store = self.server.lock();
        let Some(version) = store.crd(res).and_then(|c| crd_version(c, &res.version)) else {
            return json_response(200, &value);
        };
        let (objects, rv) = match value.get("items").and_then(Value::as_array) {
            Some(items) => (
                items.clone(),
                value
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => (vec![value.clone()], store.resource_version().to_string()),
        };
        let include = (self.param)("includeObject");
        let mut t = table::table(
            version,
            &objects,
            include.as_deref(),
            &rv,
            chrono::Utc::now(),
        );
        if let Some(c) = value.pointer("/metadata/continue")
            && let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut)
        {
            m.insert("continue".into(), c.clone());
        }
        json_response(200, &t)
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::new(400, format!("error decoding request body as JSON: {e}")))
    }
}

fn method_not_allowed(method: &Method) -> Response {
    error_response(&ApiError::new(
        405,
        format!("the server does not allow this method ({method}) on the requested resource"),
    ))
}

fn resource(ctx: &Ctx<'_>, mut res: ResourceRef, rest: &[&str]) -> Response {
    // `namespaces/{ns}/{plural}...`, except the Namespace object's own subresources.
    let namespaced = rest.len() >= 3
        && rest.first() == Some(&"namespaces")
        && !(rest.len() == 3 && matches!(rest.get(2), Some(&"status" | &"finalize")));
    let (ns, rest) = if namespaced {
        (rest.get(1).copied(), rest.get(2..).unwrap_or_default())
    } else {
        (None, rest)
    };
    let ns_str = ns.unwrap_or_default();
    match rest {
        [plural] => {
            res.plural = (*plural).to_string();
            match *ctx.method {
                Method::GET => {
                    if (ctx.param)("watch").is_some_and(|w| w == "true" || w == "1") {
                        watch(ctx, &res, ns)
                    } else {
                        list(ctx, &res, ns)
                    }
                }
                Method::POST => {
                    let result = ctx
                        .json_body()
                        .and_then(|body| ctx.write(|s| s.create(&res, ns_str, body)));
                    result_response(result, 201)
                }
                _ => method_not_allowed(ctx.method),
            }
        }
        [plural, name] => {
            res.plural = (*plural).to_string();
            object(ctx, &res, ns_str, name, false)
        }
        [plural, name, "status"] => {
            res.plural = (*plural).to_string();
            object(ctx, &res, ns_str, name, true)
        }
        _ => error_response(&ApiError::new(
            404,
            "the server could not find the requested resource",
        )),
    }
}

fn object(ctx: &Ctx<'_>, res: &ResourceRef, ns: &str, name: &str, status: bool) -> Response {
    match *ctx.method {
        Method::GET => {
            let result = ctx.server.lock().get(res, ns, name);
            ctx.read_response(res, result)
        }
        Method::PUT => {
            let result = ctx
                .json_body()
                .and_then(|body| ctx.write(|s| s.replace(res, ns, name, body, status)));
            result_response(result, 200)
        }
        Method::PATCH => {
            let manager = (ctx.param)("fieldManager");
            let result = ctx.write(|s| {
                s.patch(
                    res,
                    ns,
                    name,
                    ctx.content_type,
                    ctx.body,
                    manager.as_deref(),
                    status,
                )
            });
            result_response(result, 200)
        }
        Method::DELETE if !status => result_response(ctx.server.lock().delete(res, ns, name), 200),
        _ => method_not_allowed(ctx.method),
    }
}

fn list_query(ctx: &Ctx<'_>) -> Result<ListQuery, ApiError> {
    let limit = match (ctx.param)("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::new(400, format!("invalid limit {l:?}")))?,
        ),
        _ => None,
    };
    Ok(ListQuery {
        label_selector: (ctx.param)("labelSelector"),
        field_selector: (ctx.param)("fieldSelector"),
        limit,
        continue_token: (ctx.param)("continue"),
        resource_version: (ctx.param)("resourceVersion"),
        resource_version_match: (ctx.param)("resourceVersionMatch"),
    })
}

fn list(ctx: &Ctx<'_>, res: &ResourceRef, ns: Option<&str>) -> Response {
    let result = list_query(ctx).and_then(|q| ctx.server.lock().list(res, ns, &q));
    ctx.read_response(res, result)
}

/// One watch event as the apiserver writes it: `type` before `object` (Go's field order).
/// A client that reads `object` first has to buffer it whole before it knows what it is
/// (kube's `WatchEvent` does), so the order is part of being faithful.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    object: &'a Value,
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&EventLine { event_type, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(res: &ResourceRef, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end && let Some(m) = meta.as_object_mut() {
        m.insert(
            "annotations".into(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": res.kind(), "apiVersion": res.api_version(), "metadata": meta}),
    )
}

/// `?watch=true`: replay from the event log, then live events, as chunked NDJSON until
/// `timeoutSeconds`, a dropped watch, or the client going away.
fn watch(ctx: &Ctx<'_>, res: &ResourceRef, ns: Option<&str>) -> Response {
    let q = match list_query(ctx) {
        Ok(q) => q,
        Err(e) => return error_response(&e),
    };
    let param = ctx.param;
    let timeout = param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(DEFAULT_WATCH_SECS)
        .min(MAX_WATCH_SECS);
    let bookmarks = param("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = param("sendInitialEvents").is_some_and(|v| v == "true");
    let rv_param = param("resourceVersion").unwrap_or_default();
    if let Err(e) = validate_watch(&q, send_initial, bookmarks) {
        return error_response(&e);
    }

    let mut lines: Vec<Bytes> = Vec::new();
    let (rx, current) = {
        let store = ctx.server.lock();
        let current = store.resource_version();
        let filter = |o: &Value| {
            matches_selectors(o, q.label_selector.as_deref(), q.field_selector.as_deref())
        };
        let from_state = rv_param.is_empty() || rv_param == "0" || send_initial;
        if from_state {
            for obj in store.all(res, ns) {
                match filter(&obj) {
                    Ok(true) => lines.push(event_line("ADDED", &obj)),
                    Ok(false) => {}
                    Err(e) => return error_response(&e),
                }
            }
            if send_initial && bookmarks {
                lines.push(bookmark(res, current, true));
            }
        } else {
            let since = match rv_param.parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    return error_response(&ApiError::new(
                        400,
                        format!("invalid resourceVersion {rv_param:?}"),
                    ));
                }
            };
            if since > current {
                // The apiserver waits a few seconds for its cache to catch up, then gives up.
                return error_response(&ApiError::new(
                    504,
                    format!("Too large resource version: {since}, current: {current}"),
                ));
            }
            match store.replay(res, ns, since) {
                Ok(records) => {
                    for r in records {
                        let obj = present(res, &r.object);
                        if filter(&obj).unwrap_or(false) {
                            lines.push(event_line(r.event_type, &obj));
                        }
                    }
                }
                Err(e) => {
                    // The apiserver answers 200 and reports expiry inside the stream.
                    let line = event_line("ERROR", &e.to_status());
                    return stream_response(
                        vec![line],
                        None,
                        res.clone(),
                        ns,
                        q,
                        timeout,
                        false,
                        current,
                    );
                }
            }
        }
        (store.tx.subscribe(), current)
    };
    stream_response(
        lines,
        Some(rx),
        res.clone(),
        ns,
        q,
        timeout,
        bookmarks,
        current,
    )
}

/// The apiserver's checks of a WATCH's streaming-list parameters: `sendInitialEvents` needs
/// `resourceVersionMatch=NotOlderThan` and bookmarks (its end is a bookmark), and
/// `resourceVersionMatch` means nothing on a watch without it.
fn validate_watch(q: &ListQuery, send_initial: bool, bookmarks: bool) -> Result<(), ApiError> {
    let invalid = |m: &str| Err(ApiError::new(422, format!("ListOptions is invalid: {m}")));
    let rv_match = q.resource_version_match.as_deref().unwrap_or_default();
    if send_initial {
        if rv_match != "NotOlderThan" {
            return invalid(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            );
        }
        if !bookmarks {
            return invalid(
                "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
            );
        }
    } else if !rv_match.is_empty() {
        return invalid(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn stream_response(
    initial: Vec<Bytes>,
    rx: Option<broadcast::Receiver<Signal>>,
    res: ResourceRef,
    ns: Option<&str>,
    q: ListQuery,
    timeout_secs: u64,
    bookmarks: bool,
    start_rv: u64,
) -> Response {
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    let ns = ns.map(str::to_string);
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let Some(mut rx) = rx else { return };
        let deadline = Instant::now() + Duration::from_secs(timeout_secs);
        let mut last_rv = start_rv;
        loop {
            let line = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(bookmark(&res, last_rv, false)).await;
                    }
                    break;
                }
                _ = tx.closed() => break,
                msg = rx.recv() => match msg {
                    Ok(Signal::Event(rec)) => {
                        // A bookmark says "everything up to here was seen", filtered out or
                        // not: a later re-watch need not replay the others' changes.
                        last_rv = last_rv.max(rec.rv);
                        live_line(&rec, &res, ns.as_deref(), &q)
                    }
                    Ok(Signal::DropWatches) | Err(broadcast::error::RecvError::Closed) => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let err = ApiError::new(410, "watch fell behind the event log");
                        let _ = tx.send(event_line("ERROR", &err.to_status())).await;
                        break;
                    }
                },
            };
            if let Some((rv, line)) = line {
                last_rv = rv;
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn live_line(
    rec: &WatchRecord,
    res: &ResourceRef,
    ns: Option<&str>,
    q: &ListQuery,
) -> Option<(u64, Bytes)> {
    if !record_matches(rec, res, ns) {
        return None;
    }
    let obj = present(res, &rec.object);
    matches_selectors(
        &obj,
        q.label_selector.as_deref(),
        q.field_selector.as_deref(),
    )
    .unwrap_or(false)
    .then(|| (rec.rv, event_line(rec.event_type, &obj)))
}
