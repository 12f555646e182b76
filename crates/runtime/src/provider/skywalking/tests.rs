//! Client tests against a tiny in-process HTTP server with canned answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::*;

/// One recorded request.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    raw: String,
    body: Value,
}

impl Seen {
    fn query(&self) -> &str {
        self.body["query"].as_str().unwrap_or_default()
    }
}

type Responder = dyn Fn(&Value) -> (u16, &'static str, String) + Send + Sync;

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Arc<Responder>,
    delay: Duration,
}

async fn handle(State(f): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let raw = String::from_utf8_lossy(&body).to_string();
    let parsed: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    if let Ok(mut seen) = f.seen.lock() {
        seen.push(Seen {
            headers,
            raw,
            body: parsed.clone(),
        });
    }
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    let (status, ct, text) = (f.responder)(&parsed);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, ct)], text).into_response()
}

/// Starts the fake on 127.0.0.1:0; returns its address and the request log.
async fn serve(
    delay: Duration,
    responder: impl Fn(&Value) -> (u16, &'static str, String) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        seen: seen.clone(),
        responder: Arc::new(responder),
        delay,
    };
    let app = Router::new()
        .route("/graphql", post(handle))
        .with_state(fake);
    (serve_app(app).await, seen)
}

/// Serves `app` on 127.0.0.1:0 until the test ends; its base URL.
async fn serve_app(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn ok(v: Value) -> (u16, &'static str, String) {
    (200, "application/json", v.to_string())
}

/// Answers detection like an OAP of `version` in `tz`; `introspection` false
/// emulates a server that refuses it.
fn detection(
    body: &Value,
    version: &str,
    tz: &str,
    introspection: bool,
) -> Option<(u16, &'static str, String)> {
    let q = body["query"].as_str().unwrap_or_default();
    if q.contains("ServerInfoQuery") {
        return Some(ok(
            json!({"data": {"version": version, "getTimeInfo": {"timezone": tz, "currentTimestamp": 1719835500000_i64}}}),
        ));
    }
    if q.contains("SkycanaryIntrospection") {
        if !introspection {
            return Some(ok(
                json!({"errors": [{"message": "introspection disabled"}]}),
            ));
        }
        let modern = OapVersion::parse(version).is_some_and(|v| v >= OapVersion::new(9, 5, 0));
        let names = |ns: &[&str]| ns.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
        let q_fields = if modern {
            names(&["version", "execExpression", "listInstances"])
        } else {
            names(&["version", "listInstances"])
        };
        return Some(ok(json!({"data": {
            "q": {"fields": q_fields},
            "kv": {"fields": if modern { names(&["id", "value", "isEmptyValue"]) } else { names(&["id", "value"]) }},
            "mqe": if modern { json!({"fields": names(&["id", "value", "traceID", "owner"])}) } else { Value::Null },
            "dur": {"inputFields": names(&["start", "end", "step", "coldStage"])}
        }})));
    }
    None
}

/// Epoch ms of the last closed MINUTE bucket at [`now`] (12:04 UTC, whatever the OAP zone).
const LAST_BUCKET_MS: i64 = 1_719_835_440_000;

/// An MQE series whose points are the *last* `values.len()` buckets of the window at [`now`].
fn mqe_series(values: &[Option<&str>]) -> Value {
    let n = values.len() as i64;
    json!({"type": "TIME_SERIES_VALUES", "error": null, "results": [{"metric": {"labels": []},
        "values": values.iter().enumerate().map(|(i, v)| json!({
            "id": (LAST_BUCKET_MS - (n - 1 - i as i64) * 60_000).to_string(), "value": v}))
            .collect::<Vec<_>>()}]})
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 7, 1, 12, 5, 42)
        .single()
        .expect("time")
}

fn metric(key: &str, name: &str) -> MetricQuery {
    MetricQuery {
        key: key.into(),
        kind: QueryKind::Metric(name.into()),
        entity: Some(EntitySpec::service("reviews.bookinfo")),
        window: Duration::from_secs(300),
        step: Step::Minute,
        not_before: None,
    }
}

fn client(address: &str) -> SkyWalkingClient {
    let mut opts = ClientOptions::new(address);
    opts.auth = Some(Auth::Basic {
        user: "u".into(),
        pass: "p".into(),
    });
    opts.headers.push(("X-Tenant".into(), "t1".into()));
    SkyWalkingClient::new(opts).expect("client")
}

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().map(|s| s.clone()).unwrap_or_default()
}

#[tokio::test]
async fn batch_of_two_metrics_is_one_request() {
    let (addr, log) = serve(Duration::ZERO, |body| {
        detection(body, "10.2.0-abc1234", "+0800", true).unwrap_or_else(|| {
            ok(json!({"data": {
                "m0": mqe_series(&[Some("9950"), None, Some("NaN"), Some("∞"), Some("10000")]),
                "m1": mqe_series(&[Some("1"), Some("2"), Some("3"), Some("4"), Some("5")])
            }}))
        })
    })
    .await;
    let c = client(&addr);
    let qs = [
        metric("apdex", "service_apdex"),
        metric("sla", "service_sla"),
    ];
    let out = c.measure(&qs, now()).await;
    let first = out[0].as_ref().expect("m0");
    assert_eq!(
        first.value,
        SampleValue::Series(vec![Some(9950.0), None, None, None, Some(10000.0)])
    );
    assert_eq!(
        first.window,
        ("2024-07-01 2000".to_string(), "2024-07-01 2004".to_string())
    );
    assert!(out[1].is_ok());

    // Detection happens once; a second measure is a single request.
    let _ = c.measure(&qs, now()).await;
    let reqs = seen(&log);
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    let batches: Vec<&Seen> = reqs
        .iter()
        .filter(|s| s.query().contains("SkycanaryMetrics"))
        .collect();
    assert_eq!(batches.len(), 2);
    let b = batches[0];
    assert!(
        b.query()
            .contains("m0: execExpression(expression: $ex0, entity: $e0, duration: $d0)")
    );
    assert!(b.query().contains("m1: execExpression("));
    assert!(
        !b.query().contains("reviews"),
        "user text must not be spliced into the document"
    );
    assert!(!b.query().contains("owner"));
    let vars = &b.body["variables"];
    assert_eq!(
        vars["e0"],
        json!({"scope": "Service", "serviceName": "reviews.bookinfo", "normal": true})
    );
    assert_eq!(vars["ex0"], "service_apdex");
    assert_eq!(
        vars["d0"],
        json!({"start": "2024-07-01 2000", "end": "2024-07-01 2004", "step": "MINUTE"})
    );
    for r in &reqs {
        assert!(
            !r.raw.contains("coldStage") && !r.raw.contains("processName"),
            "{}",
            r.raw
        );
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Basic dTpw")
        );
        assert_eq!(
            r.headers.get("x-tenant").and_then(|v| v.to_str().ok()),
            Some("t1")
        );
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(
            r.headers.get("accept").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
    let info = c.server_info().await.expect("info");
    assert_eq!(info.parsed, Some(OapVersion::new(10, 2, 0)));
    assert!(info.features.mqe && info.features.mqe_owner && info.features.cold_stage);
    assert_eq!(info.timezone.local_minus_utc(), 8 * 3600);
}

#[tokio::test]
async fn old_server_uses_v2_without_is_empty_value() {
    let (addr, log) = serve(Duration::ZERO, |body| {
        detection(body, "9.4.0-abc1234", "+0530", false).unwrap_or_else(|| {
            ok(json!({"data": {"m0": {"label": null, "values": {"values": [{"id": "202407011733_cmV2.1", "value": 0}, {"id": "202407011734_cmV2.1", "value": 9900}]}}}}))
        })
    })
    .await;
    let c = client(&addr);
    let mut expr = metric("e", "avg(service_apdex)");
    expr.kind = QueryKind::Expression("avg(service_apdex)".into());
    let out = c
        .measure(&[metric("apdex", "service_apdex"), expr], now())
        .await;
    let s = out[0].as_ref().expect("v2");
    assert_eq!(
        s.value,
        SampleValue::Series(vec![None, None, None, Some(0.0), Some(9900.0)])
    );
    assert_eq!(s.window.1, "2024-07-01 1734");
    assert_eq!(
        out[1],
        Err(ProviderError::Config(
            "MQE needs OAP >= 9.5, server is 9.4.0".into()
        ))
    );
    let reqs = seen(&log);
    let b = reqs
        .iter()
        .find(|s| s.query().contains("SkycanaryMetrics"))
        .expect("batch");
    assert!(
        b.query()
            .contains("m0: readMetricsValues(condition: $c0, duration: $d0)")
    );
    assert!(!b.query().contains("isEmptyValue"));
    assert_eq!(b.body["variables"]["c0"]["name"], "service_apdex");
    assert_eq!(b.body["variables"]["c0"]["entity"]["normal"], true);
}

#[tokio::test]
async fn v2_with_is_empty_value_when_server_has_it() {
    // A 9.5+ server whose introspection lacks execExpression (hypothetical) still gets isEmptyValue.
    let (addr, log) = serve(Duration::ZERO, |body| {
        let q = body["query"].as_str().unwrap_or_default();
        if q.contains("SkycanaryIntrospection") {
            return ok(json!({"data": {"q": {"fields": [{"name": "readMetricsValues"}]},
                "kv": {"fields": [{"name": "isEmptyValue"}]}, "mqe": null, "dur": {"inputFields": []}}}));
        }
        detection(body, "9.5.0", "+0000", true).unwrap_or_else(|| {
            ok(json!({"data": {"m0": {"label": null, "values": {"values": [{"id": "202407011204_cmV2.1", "value": 0, "isEmptyValue": true}]}}}}))
        })
    })
    .await;
    let out = client(&addr)
        .measure(&[metric("apdex", "service_apdex")], now())
        .await;
    assert_eq!(
        out[0].as_ref().map(|s| s.value.clone()),
        Ok(SampleValue::Series(vec![None; 5]))
    );
    let reqs = seen(&log);
    assert!(reqs.iter().any(|s| s.query().contains("isEmptyValue")));
}

#[tokio::test]
async fn per_alias_error_and_html_gateway() {
    let (addr, _log) = serve(Duration::ZERO, |body| {
        detection(body, "10.4.0", "+0000", true).unwrap_or_else(|| {
            ok(json!({"errors": [{"message": "boom", "path": ["m1"]}],
                "data": {"m0": mqe_series(&[Some("1"), Some("2")]), "m1": null}}))
        })
    })
    .await;
    let out = client(&addr)
        .measure(
            &[metric("a", "service_cpm"), metric("b", "service_sla")],
            now(),
        )
        .await;
    assert!(out[0].is_ok());
    assert_eq!(out[1], Err(ProviderError::GraphQl(vec!["boom".into()])));

    let (addr, _log) = serve(Duration::ZERO, |body| {
        detection(body, "10.4.0", "+0000", true).unwrap_or_else(|| {
            (
                502,
                "text/html",
                "<html><title>502 Bad Gateway</title></html>".into(),
            )
        })
    })
    .await;
    let out = client(&addr)
        .measure(
            &[metric("a", "service_cpm"), metric("b", "service_sla")],
            now(),
        )
        .await;
    for r in out {
        assert!(
            matches!(r, Err(ProviderError::Http { status: 502, ref body_excerpt }) if body_excerpt.contains("HTML"))
        );
    }
}

#[tokio::test]
async fn mqe_error_is_an_error() {
    let (addr, _log) = serve(Duration::ZERO, |body| {
        detection(body, "10.2.0", "+0000", true).unwrap_or_else(|| {
            ok(json!({"data": {"m0": {"type": "UNKNOWN", "results": [], "error": "Metric: [nope] does not exist."}}}))
        })
    })
    .await;
    let out = client(&addr).measure(&[metric("a", "nope")], now()).await;
    assert_eq!(
        out[0],
        Err(ProviderError::Mqe("Metric: [nope] does not exist.".into()))
    );
}

#[tokio::test]
async fn timeout_is_an_error_and_detection_is_retried() {
    let (addr, log) = serve(Duration::from_millis(800), |body| {
        detection(body, "10.2.0", "+0000", true).unwrap_or_else(|| ok(json!({"data": {}})))
    })
    .await;
    let mut opts = ClientOptions::new(&addr);
    opts.timeout = Duration::from_millis(100);
    let c = SkyWalkingClient::new(opts).expect("client");
    let out = c.measure(&[metric("a", "service_cpm")], now()).await;
    assert_eq!(out[0], Err(ProviderError::Timeout));
    assert_eq!(c.server_info().await, Err(ProviderError::Timeout));
    // Both calls tried detection: failures are not cached.
    assert_eq!(
        seen(&log)
            .iter()
            .filter(|s| s.query().contains("ServerInfoQuery"))
            .count(),
        2
    );
}

#[tokio::test]
async fn connection_refused_is_unreachable_with_a_hint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let c = SkyWalkingClient::new(ClientOptions::new(format!("http://{addr}"))).expect("client");
    let out = c.measure(&[metric("a", "service_cpm")], now()).await;
    match &out[0] {
        Err(e @ ProviderError::Unreachable { hint, .. }) => {
            assert!(hint.contains("nothing listens there"), "{e}");
            // Dashboards keep counting it as a transport error.
            assert_eq!(e.kind(), "transport");
            // Every cause once, and no bare trailing ": Error".
            let text = e.to_string();
            assert!(!text.contains(": Error"), "{text}");
            assert!(text.contains("Connection refused"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn overrides_skip_detection() {
    let (addr, log) = serve(Duration::ZERO, |_| {
        ok(json!({"data": {"m0": mqe_series(&[Some("5"), Some("7")])}}))
    })
    .await;
    let mut opts = ClientOptions::new(&addr);
    opts.version_override = Some(OapVersion::new(10, 0, 0));
    opts.timezone = chrono::FixedOffset::east_opt(-(3 * 3600 + 1800));
    opts.auth = Some(Auth::Bearer("tok".into()));
    let c = SkyWalkingClient::new(opts).expect("client");
    let out = c.measure(&[metric("a", "service_cpm")], now()).await;
    assert_eq!(
        out[0].as_ref().map(|s| s.window.1.clone()),
        Ok("2024-07-01 0834".to_string())
    );
    let reqs = seen(&log);
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer tok")
    );
}

#[tokio::test]
async fn instance_aggregation() {
    let (addr, log) = serve(Duration::ZERO, |body| {
        let q = body["query"].as_str().unwrap_or_default();
        if q.contains("SkycanaryInstances") {
            return ok(json!({"data": {"i0": [
                {"id": "x_1", "name": "reviews-canary-abc"},
                {"id": "x_2", "name": "reviews-stable-def"},
                {"id": "x_3", "name": "reviews-canary-ghi"}]}}));
        }
        detection(body, "10.2.0", "+0000", true).unwrap_or_else(|| {
            ok(json!({"data": {
                "m0_0": mqe_series(&[Some("10"), None]),
                "m0_1": mqe_series(&[Some("20"), Some("4")]),
                "m1": mqe_series(&[Some("1"), Some("1")])
            }}))
        })
    })
    .await;
    let c = client(&addr);
    let mut canary = metric("canary_cpm", "service_cpm");
    if let Some(e) = canary.entity.as_mut() {
        e.instance_pattern = regex::Regex::new("canary").ok();
    }
    let mut none = canary.clone();
    if let Some(e) = none.entity.as_mut() {
        e.instance_pattern = regex::Regex::new("^nothing$").ok();
    }
    let out = c
        .measure(&[canary, metric("all", "service_cpm"), none], now())
        .await;
    assert_eq!(
        out[0].as_ref().map(|s| s.value.clone()),
        Ok(SampleValue::Series(vec![
            None,
            None,
            None,
            Some(15.0),
            Some(4.0)
        ]))
    );
    assert!(out[1].is_ok());
    assert!(
        matches!(&out[2], Err(ProviderError::NoMatchingInstances { pattern, .. }) if pattern == "^nothing$")
    );
    let reqs = seen(&log);
    let list: Vec<&Seen> = reqs
        .iter()
        .filter(|s| s.query().contains("SkycanaryInstances"))
        .collect();
    assert_eq!(list.len(), 1, "one listing for both aggregated queries");
    assert!(
        list[0]
            .query()
            .contains("i0: listInstances(duration: $d0, serviceId: $s0)")
    );
    assert_eq!(
        list[0].body["variables"]["s0"],
        "cmV2aWV3cy5ib29raW5mbw==.1"
    );
    let b = reqs
        .iter()
        .find(|s| s.query().contains("SkycanaryMetrics"))
        .expect("batch");
    assert_eq!(
        b.body["variables"]["e0"]["serviceInstanceName"],
        "reviews-canary-abc"
    );
    assert_eq!(b.body["variables"]["e0"]["scope"], "ServiceInstance");
    assert_eq!(b.body["variables"]["ex0"], "service_instance_cpm");
    assert_eq!(
        b.body["variables"]["e1"]["serviceInstanceName"],
        "reviews-canary-ghi"
    );
}

#[tokio::test]
async fn raw_query_is_sent_verbatim_with_duration() {
    let raw = "query ($duration: Duration!) { service_apdex: readMetricsValues(condition: {name: \"service_apdex\", entity: {scope: Service, serviceName: \"r\", normal: true}}, duration: $duration) { values { values { value } } } cpm: readMetricsValue(condition: {name: \"service_cpm\", entity: {serviceName: \"r\", normal: true}}, duration: $duration) }";
    let (addr, log) = serve(Duration::ZERO, |body| {
        detection(body, "9.7.0", "+0000", true).unwrap_or_else(|| {
            (200, "application/json", r#"{"data":{"service_apdex":{"values":{"values":[{"value":9950},{"value":9800}]}},"cpm":12}}"#.into())
        })
    })
    .await;
    let c = client(&addr);
    let q = MetricQuery {
        key: "raw".into(),
        kind: QueryKind::Raw { query: raw.into() },
        entity: None,
        window: Duration::from_secs(120),
        step: Step::Minute,
        not_before: None,
    };
    let out = c.measure(&[q], now()).await;
    let s = out[0].as_ref().expect("raw");
    assert_eq!(
        s.value,
        SampleValue::Series(vec![Some(9950.0), Some(9800.0)])
    );
    assert_eq!(s.named.get("cpm"), Some(&SampleValue::Single(Some(12.0))));
    assert_eq!(s.named.len(), 2);
    let reqs = seen(&log);
    let sent = reqs.last().expect("raw request");
    assert_eq!(sent.body["query"], raw);
    assert_eq!(
        sent.body["variables"],
        json!({"duration": {"start": "2024-07-01 1203", "end": "2024-07-01 1204", "step": "MINUTE"}})
    );
}

#[tokio::test]
async fn http_400_graphql_body_is_graphql_error() {
    let (addr, _log) = serve(Duration::ZERO, |body| {
        detection(body, "10.1.0", "+0000", true).unwrap_or_else(|| {
            (400, "application/json", r#"{"errors":[{"message":"Validation error (FieldUndefined@[m0/results/values/owner]) : Field 'owner' in type 'MQEValue' is undefined"}]}"#.into())
        })
    })
    .await;
    let out = client(&addr)
        .measure(&[metric("a", "service_cpm")], now())
        .await;
    assert!(matches!(&out[0], Err(ProviderError::GraphQl(m)) if m[0].contains("owner")));
}

#[test]
fn bad_options_are_config_errors() {
    assert!(matches!(
        SkyWalkingClient::new(ClientOptions::new("oap:12800")),
        Err(ProviderError::Config(_))
    ));
    let mut o = ClientOptions::new("http://oap:12800/");
    o.headers.push(("bad header".into(), "x".into()));
    assert!(matches!(
        SkyWalkingClient::new(o),
        Err(ProviderError::Config(_))
    ));
    let mut o = ClientOptions::new("https://oap:12800");
    o.ca_pem = Some(b"not a pem".to_vec());
    assert!(matches!(
        SkyWalkingClient::new(o),
        Err(ProviderError::Config(_))
    ));
    let c = SkyWalkingClient::new(ClientOptions::new("http://oap:12800/")).expect("client");
    assert_eq!(c.url(), "http://oap:12800/graphql");
}

/// Serves MQE answers after `delay`, counting the most requests it ever had in flight.
async fn serve_counting(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let state = (now, max.clone());
    let app = Router::new()
        .route(
            "/graphql",
            post(
                move |State((now, max)): State<(Arc<AtomicUsize>, Arc<AtomicUsize>)>| async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let body = json!({"data": {"m0": mqe_series(&[Some("5")])}});
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                },
            ),
        )
        .with_state(state);
    (serve_app(app).await, max)
}

fn pinned_client(addr: &str, timeout: Duration) -> Arc<SkyWalkingClient> {
    let mut opts = ClientOptions::new(addr);
    opts.version_override = Some(OapVersion::new(10, 2, 0));
    opts.timezone = chrono::FixedOffset::east_opt(0);
    opts.timeout = timeout;
    Arc::new(SkyWalkingClient::new(opts).expect("client"))
}

#[tokio::test]
async fn a_burst_of_measurements_keeps_at_most_the_bounded_requests_in_flight() {
    let (addr, max) = serve_counting(Duration::from_millis(20)).await;
    let c = pinned_client(&addr, Duration::from_secs(30));
    let calls = (0..3 * MAX_IN_FLIGHT).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.measure(&[metric("a", "service_cpm")], now()).await })
    });
    for call in calls.collect::<Vec<_>>() {
        let out = call.await.expect("task");
        assert!(out[0].is_ok(), "{out:?}");
    }
    let max = max.load(std::sync::atomic::Ordering::SeqCst);
    assert!(max <= MAX_IN_FLIGHT, "{max} requests were in flight");
    assert!(max > 1, "requests were not concurrent at all");
}

#[tokio::test]
async fn waiting_for_a_request_slot_counts_against_the_timeout() {
    // Each answer takes 600 ms and the budget is 1 s: the first MAX_IN_FLIGHT requests fit,
    // the ones queued behind them have at most 400 ms left and time out instead of waiting.
    let (addr, _) = serve_counting(Duration::from_millis(600)).await;
    let c = pinned_client(&addr, Duration::from_secs(1));
    let calls = (0..2 * MAX_IN_FLIGHT)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.measure(&[metric("a", "service_cpm")], now()).await })
        })
        .collect::<Vec<_>>();
    let mut timeouts = 0;
    for call in calls {
        let out = call.await.expect("task");
        if out[0] == Err(ProviderError::Timeout) {
            timeouts += 1;
        }
    }
    assert!(timeouts >= MAX_IN_FLIGHT, "only {timeouts} timed out");
}

/// A bare TCP server: reads one request (head and `Content-Length` body) per connection
/// and writes `answer` back as is, then closes. For answers no HTTP framework would send.
async fn serve_bytes(answer: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// Answers every metric read with MQE points at `ids` (epoch ms), all healthy (10000).
fn serve_points(
    tz: Option<&'static str>,
    ids: Vec<i64>,
) -> impl Fn(&Value) -> (u16, &'static str, String) {
    move |body| {
        let q = body["query"].as_str().unwrap_or_default();
        if q.contains("ServerInfoQuery") {
            return ok(
                json!({"data": {"version": "10.2.0", "getTimeInfo": tz.map(|tz| json!({"timezone": tz, "currentTimestamp": 1719835500000_i64}))}}),
            );
        }
        if q.contains("SkycanaryIntrospection") {
            return ok(json!({"errors": [{"message": "introspection disabled"}]}));
        }
        let values: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id.to_string(), "value": "10000"}))
            .collect();
        ok(
            json!({"data": {"m0": {"type": "TIME_SERIES_VALUES", "error": null,
            "results": [{"metric": {"labels": []}, "values": values}]}}}),
        )
    }
}

#[tokio::test]
async fn points_from_another_time_never_become_values() {
    let window: Vec<i64> = (0..5).map(|k| LAST_BUCKET_MS - (4 - k) * 60_000).collect();
    let day = 86_400_000;
    let cases: Vec<(&str, Vec<i64>, Option<f64>)> = vec![
        ("in the window", window.clone(), Some(10000.0)),
        (
            "shifted 24 h back",
            window.iter().map(|t| t - day).collect(),
            None,
        ),
        ("dated 1970", vec![0, 60_000, 120_000], None),
        ("far past", vec![LAST_BUCKET_MS - 400 * day], None),
        (
            "far future",
            vec![LAST_BUCKET_MS + 3650 * day, 253_402_300_740_000],
            None,
        ),
        ("the still-open bucket", vec![LAST_BUCKET_MS + 60_000], None),
    ];
    for (name, ids, expect) in cases {
        let n = ids.len();
        let (addr, _log) = serve(Duration::ZERO, serve_points(Some("+0000"), ids)).await;
        let out = client(&addr)
            .measure(&[metric("a", "service_apdex")], now())
            .await;
        let s = out[0].as_ref().expect(name);
        match expect {
            Some(v) => {
                assert_eq!(s.value, SampleValue::Series(vec![Some(v); 5]), "{name}");
                assert_eq!(s.dropped, DroppedPoints::default(), "{name}");
            }
            None => {
                assert!(s.value.is_empty(), "{name}: {:?}", s.value);
                assert_eq!(s.dropped.outside, n, "{name}");
            }
        }
    }
    // Extra points next to real ones are dropped, the real ones kept in their buckets.
    let mut ids = window[3..].to_vec();
    ids.insert(0, 0);
    let (addr, _log) = serve(Duration::ZERO, serve_points(Some("+0000"), ids)).await;
    let out = client(&addr)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    let s = out[0].as_ref().expect("extra");
    assert_eq!(
        s.value,
        SampleValue::Series(vec![None, None, None, Some(10000.0), Some(10000.0)])
    );
    assert_eq!(s.dropped.outside, 1);
    // More points than the window has buckets: refused, not trimmed.
    let ids: Vec<i64> = (0..6).map(|k| LAST_BUCKET_MS - k * 60_000).collect();
    let (addr, _log) = serve(Duration::ZERO, serve_points(Some("+0000"), ids)).await;
    let out = client(&addr)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    assert!(
        matches!(
            &out[0],
            Err(ProviderError::TooManyPoints {
                got: 6,
                buckets: 5,
                ..
            })
        ),
        "{out:?}"
    );
}

#[tokio::test]
async fn an_unknown_oap_time_zone_is_an_error_unless_configured() {
    let ids: Vec<i64> = (0..5).map(|k| LAST_BUCKET_MS - k * 60_000).collect();
    for tz in [None, Some("GMT+08:00"), Some("Asia/Shanghai"), Some("")] {
        let (addr, _log) = serve(Duration::ZERO, serve_points(tz, ids.clone())).await;
        let out = client(&addr)
            .measure(&[metric("a", "service_apdex")], now())
            .await;
        match &out[0] {
            Err(e @ ProviderError::UnknownTimezone(_)) => {
                assert!(e.to_string().contains("--timezone"), "{e}");
                if let Some(tz) = tz {
                    assert!(e.to_string().contains(tz), "{e}");
                }
            }
            other => panic!("{tz:?}: {other:?}"),
        }
        // An explicit zone is used instead (and the OAP's is not needed).
        let mut opts = ClientOptions::new(&addr);
        opts.timezone = chrono::FixedOffset::east_opt(0);
        let c = SkyWalkingClient::new(opts).expect("client");
        let out = c.measure(&[metric("a", "service_apdex")], now()).await;
        assert!(out[0].is_ok(), "{tz:?}: {out:?}");
    }
    // The reported forms real OAPs use, minutes included.
    let (addr, _log) = serve(Duration::ZERO, serve_points(Some("+0530"), ids.clone())).await;
    let c = client(&addr);
    assert_eq!(
        c.server_info().await.map(|i| i.timezone.local_minus_utc()),
        Ok(5 * 3600 + 1800)
    );
    // A configured zone that is wrong shows up as points outside the window, not as data:
    // told +0800, the client asks for 20:00..20:04, which a UTC OAP reads as 20:00Z...
    let eight: Vec<i64> = ids.iter().map(|t| t + 8 * 3_600_000).collect();
    let (addr, _log) = serve(Duration::ZERO, serve_points(Some("+0000"), eight)).await;
    let mut opts = ClientOptions::new(&addr);
    opts.timezone = chrono::FixedOffset::east_opt(8 * 3600);
    let c = SkyWalkingClient::new(opts).expect("client");
    let out = c.measure(&[metric("a", "service_apdex")], now()).await;
    let s = out[0].as_ref().expect("sample");
    assert!(s.value.is_empty());
    assert_eq!(s.dropped.outside, 5);
}

#[tokio::test]
async fn credentials_never_follow_a_redirect() {
    let (target, target_log) = serve(Duration::ZERO, serve_points(Some("+0000"), vec![])).await;
    let location = format!("{target}/graphql");
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let addr = serve_bytes(redirect.into_bytes()).await;
    let mut opts = ClientOptions::new(&addr);
    opts.headers.push(("X-Api-Key".into(), "secret".into()));
    opts.auth = Some(Auth::Bearer("tok".into()));
    let c = SkyWalkingClient::new(opts).expect("client");
    let out = c.measure(&[metric("a", "service_apdex")], now()).await;
    match &out[0] {
        Err(
            e @ ProviderError::Redirect {
                status: 307,
                location: l,
            },
        ) => {
            assert_eq!(l, &location);
            assert!(e.to_string().contains("not followed"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        seen(&target_log).is_empty(),
        "the redirect target was contacted"
    );
}

fn pinned(addr: &str, max: usize) -> SkyWalkingClient {
    let mut opts = ClientOptions::new(addr);
    opts.version_override = Some(OapVersion::new(10, 2, 0));
    opts.timezone = chrono::FixedOffset::east_opt(0);
    opts.max_response_bytes = Some(max);
    SkyWalkingClient::new(opts).expect("client")
}

#[tokio::test]
async fn response_bodies_are_bounded() {
    // Announced too long: refused before reading.
    let big = "x".repeat(10_000);
    let announced = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let addr = serve_bytes(announced.into_bytes()).await;
    let out = pinned(&addr, 4096)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    assert_eq!(out[0], Err(ProviderError::ResponseTooLarge { limit: 4096 }));
    // Chunked with no length: read until the bound, then refused.
    let mut chunked = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..10 {
        chunked.push_str(&format!("{:x}\r\n{}\r\n", 1000, "y".repeat(1000)));
    }
    chunked.push_str("0\r\n\r\n");
    let addr = serve_bytes(chunked.clone().into_bytes()).await;
    let out = pinned(&addr, 4096)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    assert_eq!(out[0], Err(ProviderError::ResponseTooLarge { limit: 4096 }));
    assert!(
        out[0]
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains(MAX_RESPONSE_BYTES_ENV))
    );
    // Under the bound the same body is read (and is junk).
    let out = pinned(&addr, 1 << 20)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    assert!(matches!(&out[0], Err(ProviderError::Decode(_))), "{out:?}");
    let mut o = ClientOptions::new("http://oap:12800");
    o.max_response_bytes = Some(0);
    assert!(matches!(
        SkyWalkingClient::new(o),
        Err(ProviderError::Config(_))
    ));
}

#[tokio::test]
async fn plain_http_to_a_tls_port_says_so() {
    // What a TLS server answers to a plain-HTTP request: a TLS alert record.
    let addr = serve_bytes(b"\x15\x03\x03\x00\x02\x02\x46".to_vec()).await;
    let out = pinned(&addr, 1 << 20)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    match &out[0] {
        Err(ProviderError::Unreachable { hint, .. }) => {
            assert!(hint.contains("https://"), "{hint}")
        }
        other => panic!("{other:?}"),
    }
    // Go's and nginx's TLS servers answer with a 400 saying it.
    let body = "Client sent an HTTP request to an HTTPS server.\n";
    let go = format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let addr = serve_bytes(go.into_bytes()).await;
    let out = pinned(&addr, 1 << 20)
        .measure(&[metric("a", "service_apdex")], now())
        .await;
    match &out[0] {
        Err(ProviderError::Unreachable { hint, .. }) => assert!(hint.contains("TLS"), "{hint}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn raw_query_data_keeps_only_the_window_points() {
    // A raw v2 query that selects `id`: one point from yesterday among today's two.
    let (addr, _log) = serve(Duration::ZERO, |body| {
        detection(body, "9.7.0", "+0000", true).unwrap_or_else(|| {
            ok(json!({"data": {"service_apdex": {"values": {"values": [
                {"id": "202406301203_x", "value": 10000},
                {"id": "202407011203_x", "value": 9000},
                {"id": "202407011204_x", "value": 9100}]}}}}))
        })
    })
    .await;
    let q = MetricQuery {
        key: "raw".into(),
        kind: QueryKind::Raw {
            query: "query ($duration: Duration!) { service_apdex: readMetricsValues(condition: {name: \"service_apdex\", entity: {serviceName: \"r\", normal: true}}, duration: $duration) { values { values { id value } } } }".into(),
        },
        entity: None,
        window: Duration::from_secs(180),
        step: Step::Minute,
        not_before: None,
    };
    let out = client(&addr).measure(&[q], now()).await;
    let s = out[0].as_ref().expect("raw");
    assert_eq!(
        s.value,
        SampleValue::Series(vec![None, Some(9000.0), Some(9100.0)])
    );
    assert_eq!(s.dropped.outside, 1);
    let data = s.data.as_ref().expect("raw data");
    assert_eq!(
        data["service_apdex"]["values"]["values"],
        json!([{"id": "202407011203_x", "value": 9000}, {"id": "202407011204_x", "value": 9100}])
    );
}
