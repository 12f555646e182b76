//! HTTP transport emulating OAP's Armeria (9.x+) / Jetty (8.x) GraphQL handler,
//! plus graphql-java shaped error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, Request, Variables};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Map, Value as Json, json};

use super::faults::Fault;
use super::schema::{RESOLVER_PATH_EXT, select_operation};
use super::{Inner, RecordedRequest, Simulator};

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, body: &Json, content_type: &'static str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const GATEWAY_HTML: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The single fallback handler: every method and path lands here. Tells the observer, if one
/// is set, once the response is ready.
pub async fn handle(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = std::time::Instant::now();
    let observer = super::lock(&sim.inner.observer).clone();
    let Some(observer) = observer else {
        return answer(sim, method, uri, headers, body).await;
    };
    let response = answer(sim, method.clone(), uri.clone(), headers, body.clone()).await;
    observer(&super::Exchange {
        method: method.as_str(),
        path: uri.path(),
        body: &body,
        status: response.status().as_u16(),
        received,
        answered: std::time::Instant::now(),
    });
    response
}

async fn answer(
    sim: Simulator,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inner = sim.inner.clone();
    record(&inner, &method, &uri, &headers, &body);

    if let Some(token) = &inner.config.bearer_token {
        let expected = format!("Bearer {token}");
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(expected.as_str()) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "401 Unauthorized: missing or invalid token\n",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if uri.path() != "/graphql" {
        return text(StatusCode::NOT_FOUND, "404 Not Found");
    }
    if method != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }

    let mut truncate = false;
    let mut shift = None;
    let fault = inner.faults().take(Fault::is_transport);
    match fault {
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let reason = status.canonical_reason().unwrap_or("Error");
            return text(status, format!("{} {reason}", status.as_u16()));
        }
        Some(Fault::HtmlGateway) => {
            let mut r = Response::new(Body::from(GATEWAY_HTML));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return r;
        }
        Some(Fault::TruncatedJson) => truncate = true,
        Some(Fault::ShiftBuckets(secs)) => shift = Some(secs),
        Some(Fault::GraphqlError(msg)) => {
            let body = json!({"errors": [{"message": msg, "locations": [],
                              "extensions": {"classification": "DataFetchingException"}}], "data": null});
            return json_response(StatusCode::OK, &body, "application/json");
        }
        _ => {}
    }

    let resp = process(&sim, &headers, &body).await;
    if truncate {
        return cut_in_half(resp).await;
    }
    if let Some(secs) = shift {
        return shift_buckets(resp, secs).await;
    }
    resp
}

/// Moves every bucket id of a JSON answer by `secs` (see [`Fault::ShiftBuckets`]).
async fn shift_buckets(resp: Response, secs: i64) -> Response {
    fn shift_id(id: &str, secs: i64) -> Option<String> {
        if id.len() == 13 && id.bytes().all(|b| b.is_ascii_digit()) {
            let ms: i64 = id.parse().ok()?;
            return Some(ms.checked_add(secs.checked_mul(1000)?)?.to_string());
        }
        let (bucket, rest) = (id.get(..12)?, id.get(12..)?);
        if !(rest.is_empty() || rest.starts_with('_')) {
            return None;
        }
        let t = chrono::NaiveDateTime::parse_from_str(bucket, "%Y%m%d%H%M").ok()?;
        let moved = t.checked_add_signed(chrono::TimeDelta::try_seconds(secs)?)?;
        Some(format!("{}{rest}", moved.format("%Y%m%d%H%M")))
    }
    fn walk(v: &mut Json, secs: i64) {
        match v {
            Json::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match x {
                        Json::String(id) if k == "id" => {
                            if let Some(moved) = shift_id(id, secs) {
                                *id = moved;
                            }
                        }
                        _ => walk(x, secs),
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|x| walk(x, secs)),
            _ => {}
        }
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let Ok(mut v) = serde_json::from_slice::<Json>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    walk(&mut v, secs);
    let mut r = Response::from_parts(parts, Body::from(v.to_string()));
    r.headers_mut().remove(header::CONTENT_LENGTH);
    r
}

async fn cut_in_half(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let mut r = Response::from_parts(parts, Body::from(half));
    r.headers_mut().remove(header::CONTENT_LENGTH);
    r
}

fn record(inner: &Inner, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
    let raw = String::from_utf8_lossy(body).into_owned();
    let is_graphql = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| {
            c.trim()
                .to_ascii_lowercase()
                .starts_with("application/graphql")
        });
    let parsed = if is_graphql {
        Some(json!({ "query": raw }))
    } else {
        serde_json::from_slice(body).ok()
    };
    let rec = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed,
        raw_body: raw,
    };
    inner.log().push(rec);
}

/// Which response content type the Accept header allows (None → 406).
fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some("application/json");
    };
    let mut graphql_response = false;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                == Some(0.0)
        });
        if q_zero {
            continue;
        }
        match mime.as_str() {
            "" | "*/*" | "application/*" | "application/json" => return Some("application/json"),
            "application/graphql-response+json" => graphql_response = true,
            _ => {}
        }
    }
    graphql_response.then_some("application/graphql-response+json")
}

async fn process(sim: &Simulator, headers: &HeaderMap, body: &Bytes) -> Response {
    let inner = &sim.inner;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let raw_graphql = ctype == "application/graphql";
    let is_json = ctype == "application/json"
        || (ctype.starts_with("application/") && ctype.ends_with("+json"));
    if !raw_graphql && !is_json {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 Unsupported Media Type",
        );
    }
    let Some(out_type) = negotiate(headers) else {
        return text(StatusCode::NOT_ACCEPTABLE, "406 Not Acceptable");
    };
    if body.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing request body");
    }
    let (query, variables, op_name) = if raw_graphql {
        (String::from_utf8_lossy(body).into_owned(), Map::new(), None)
    } else {
        let doc: Json = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to parse a JSON document: {e}"),
                );
            }
        };
        let Some(q) = doc
            .get("query")
            .and_then(Json::as_str)
            .filter(|q| !q.trim().is_empty())
        else {
            return text(StatusCode::BAD_REQUEST, "Missing query");
        };
        let vars = match doc.get("variables") {
            Some(Json::Object(m)) => m.clone(),
            // Some clients send variables as a JSON string.
            Some(Json::String(s)) => {
                serde_json::from_str::<Map<String, Json>>(s).unwrap_or_default()
            }
            _ => Map::new(),
        };
        let op = doc
            .get("operationName")
            .and_then(Json::as_str)
            .map(str::to_string);
        (q.to_string(), vars, op)
    };
    let (status, body) = execute(sim, &query, variables, op_name).await;
    let body = if inner.config.profile.is_jetty() {
        jetty_shape(body)
    } else {
        body
    };
    let status = if inner.config.profile.is_jetty() {
        StatusCode::OK
    } else {
        status
    };
    json_response(status, &body, out_type)
}

/// 8.x's Jetty handler only kept the `message` of each error.
fn jetty_shape(mut body: Json) -> Json {
    if let Some(errs) = body.get_mut("errors").and_then(Json::as_array_mut) {
        for e in errs.iter_mut() {
            let msg = e.get("message").cloned().unwrap_or(Json::Null);
            *e = json!({ "message": msg });
        }
    }
    body
}

fn error_obj(message: String, locations: &[Pos], classification: &str) -> Json {
    let locs: Vec<Json> = locations
        .iter()
        .map(|p| json!({"line": p.line, "column": p.column}))
        .collect();
    let mut e = json!({"message": message});
    if !locs.is_empty() {
        e["locations"] = Json::Array(locs);
    }
    e["extensions"] = json!({"classification": classification});
    e
}

async fn execute(
    sim: &Simulator,
    query: &str,
    variables: Map<String, Json>,
    op_name: Option<String>,
) -> (StatusCode, Json) {
    let doc = match async_graphql::parser::parse_query(query) {
        Ok(d) => d,
        Err(e) => {
            let locs = e.positions().collect::<Vec<_>>();
            let msg = format!("Invalid Syntax : {e}");
            return (
                StatusCode::OK,
                json!({"errors": [error_obj(msg, &locs, "InvalidSyntax")]}),
            );
        }
    };
    if let Some(op) = select_operation(&doc, op_name.as_deref())
        && let Err(msg) = sim.model.check_variables(&op.node, &variables)
    {
        return (
            StatusCode::OK,
            json!({"errors": [error_obj(msg, &[], "ValidationError")]}),
        );
    }
    let mut req = Request::new(query)
        .variables(Variables::from_json(Json::Object(variables)))
        .data(Arc::clone(&sim.inner));
    if let Some(op) = op_name {
        req = req.operation_name(op);
    }
    let resp = sim.schema.execute(req).await;
    let data = resp.data.into_json().unwrap_or(Json::Null);
    if resp.errors.is_empty() {
        return (StatusCode::OK, json!({ "data": data }));
    }
    let as_json: Vec<Json> = resp
        .errors
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Json::Null))
        .collect();
    let resolver_path = |e: &Json| {
        e.get("extensions")
            .and_then(|x| x.get(RESOLVER_PATH_EXT))
            .cloned()
    };
    let validation = as_json.iter().all(|e| resolver_path(e).is_none()) && data.is_null();
    if validation {
        let paths = field_paths(&doc);
        let errs: Vec<Json> = resp
            .errors
            .iter()
            .map(|e| {
                let path = e
                    .locations
                    .iter()
                    .find_map(|p| paths.get(&(p.line, p.column)))
                    .cloned()
                    .unwrap_or_default();
                error_obj(
                    java_validation_message(&e.message, &path),
                    &e.locations,
                    "ValidationError",
                )
            })
            .collect();
        return (StatusCode::BAD_REQUEST, json!({ "errors": errs }));
    }
    let errs: Vec<Json> = resp
        .errors
        .iter()
        .zip(&as_json)
        .map(|(e, j)| {
            let mut o = json!({"message": e.message});
            if !e.locations.is_empty() {
                o["locations"] = j.get("locations").cloned().unwrap_or(Json::Null);
            }
            let path = match resolver_path(j) {
                Some(p) => json!([p]),
                None => j.get("path").cloned().unwrap_or(json!([])),
            };
            o["path"] = path;
            o["extensions"] = json!({"classification": "DataFetchingException"});
            o
        })
        .collect();
    (StatusCode::OK, json!({"errors": errs, "data": data}))
}

/// Maps positions of fields and arguments to graphql-java's `a/b/c` query path.
fn field_paths(doc: &ExecutableDocument) -> HashMap<(usize, usize), String> {
    fn walk(
        set: &SelectionSet,
        prefix: &str,
        doc: &ExecutableDocument,
        out: &mut HashMap<(usize, usize), String>,
        depth: usize,
    ) {
        if depth > 64 {
            return;
        }
        for sel in &set.items {
            match &sel.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    let path = if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}/{name}")
                    };
                    out.insert((f.pos.line, f.pos.column), path.clone());
                    out.insert((f.node.name.pos.line, f.node.name.pos.column), path.clone());
                    for (arg, _) in &f.node.arguments {
                        out.insert((arg.pos.line, arg.pos.column), path.clone());
                    }
                    walk(&f.node.selection_set.node, &path, doc, out, depth + 1);
                }
                Selection::InlineFragment(fr) => {
                    walk(&fr.node.selection_set.node, prefix, doc, out, depth + 1)
                }
                Selection::FragmentSpread(sp) => {
                    if let Some(fr) = doc.fragments.get(&sp.node.fragment_name.node) {
                        walk(&fr.node.selection_set.node, prefix, doc, out, depth + 1);
                    }
                }
            }
        }
    }
    let mut out = HashMap::new();
    for (_, op) in doc.operations.iter() {
        walk(&op.node.selection_set.node, "", doc, &mut out, 0);
    }
    out
}

/// Rewrites async-graphql validation messages into graphql-java's wording.
fn java_validation_message(msg: &str, path: &str) -> String {
    let caps = |re: &str| regex::Regex::new(re).ok().and_then(|r| r.captures(msg));
    let group = |c: &regex::Captures, i: usize| {
        c.get(i).map(|m| m.as_str().to_string()).unwrap_or_default()
    };
    let (kind, text) = if let Some(c) = caps(r#"^Unknown field "([^"]+)" on type "([^"]+)""#) {
        (
            "FieldUndefined",
            format!(
                "Field '{}' in type '{}' is undefined",
                group(&c, 1),
                group(&c, 2)
            ),
        )
    } else if let Some(c) = caps(r#"^Unknown argument "([^"]+)" on field"#) {
        (
            "UnknownArgument",
            format!("Unknown field argument '{}'", group(&c, 1)),
        )
    } else if let Some(c) = caps(r#"^Field "[^"]+" argument "([^"]+)" of type "[^"]+" is required"#)
    {
        (
            "MissingFieldArgument",
            format!("Missing field argument '{}'", group(&c, 1)),
        )
    } else if let Some(c) = caps(r#"^Field "([^"]+)" of type "([^"]+)" must have a selection"#) {
        (
            "SubselectionRequired",
            format!(
                "Subselection required for type '{}' of field '{}'",
                group(&c, 2),
                group(&c, 1)
            ),
        )
    } else if let Some(c) =
        caps(r#"^Field "([^"]+)" must not have a selection since type "([^"]+)""#)
    {
        (
            "SubselectionNotAllowed",
            format!(
                "Subselection not allowed on leaf type '{}' of field '{}'",
                group(&c, 2),
                group(&c, 1)
            ),
        )
    } else if let Some(c) = caps(r#"^Invalid value for argument "([^".]+)[^"]*", (.*)$"#) {
        (
            "WrongType",
            format!(
                "argument '{}' with value is not a valid input: {}",
                group(&c, 1),
                group(&c, 2)
            ),
        )
    } else if let Some(c) = caps(r#"^Unknown type "([^"]+)""#) {
        ("UnknownType", format!("Unknown type '{}'", group(&c, 1)))
    } else {
        ("ValidationError", msg.trim_end_matches('.').to_string())
    };
    format!("Validation error ({kind}@[{path}]) : {text}")
}
