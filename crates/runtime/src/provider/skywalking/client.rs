//! The HTTP client: one per OAP address, caching the detected server info.

use std::collections::BTreeMap;
use std::error::Error as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, Offset as _, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::alarms::{
    ALARMS_OPERATION, AlarmPage, alarm_query, alarm_variables, alarm_window, decode_alarms,
};
use super::duration::{Aligned, Window, aligned_window, parse_timezone, window};
use super::queries::{
    Batch, exec_expression, get_service_instances, list_instances, read_metrics_values,
    read_metrics_values_empty, server_info_query, templates,
};
use super::response::{
    Check, Envelope, decode, excerpt, parse_mqe, parse_raw_value, parse_v2, parse_v2_empty,
    retain_window_points,
};
use super::version::{Features, Introspected, ServerInfo};
use super::{
    Auth, ClientOptions, DroppedPoints, EntitySpec, MetricQuery, OapVersion, ProviderError,
    QueryKind, Sample, SampleValue, Scope, Step,
};

/// Operation name of batched metric requests (shows up in OAP logs).
const BATCH_OPERATION: &str = "SkycanaryMetrics";
/// Operation name of the instance-listing batch.
const INSTANCES_OPERATION: &str = "SkycanaryInstances";

/// Feature probe; run once per client. Absent types come back as `null`.
const INTROSPECTION: &str = "query SkycanaryIntrospection { \
q: __type(name: \"Query\") { fields { name } } \
kv: __type(name: \"KVInt\") { fields { name } } \
mqe: __type(name: \"MQEValue\") { fields { name } } \
dur: __type(name: \"Duration\") { inputFields { name } } \
al: __type(name: \"AlarmMessage\") { fields { name } } }";

/// Fallback when `version` itself is rejected (very old OAP).
const TIME_INFO_ONLY: &str =
    "query SkycanaryTimeInfo { getTimeInfo { timezone currentTimestamp } }";

/// Async client for one OAP.
#[derive(Debug)]
pub struct SkyWalkingClient {
    http: reqwest::Client,
    url: String,
    timezone: Option<FixedOffset>,
    version_override: Option<OapVersion>,
    /// Detected once; a failed detection is not cached, so the next call retries.
    info: Mutex<Option<ServerInfo>>,
    address: String,
    observer: Option<std::sync::Arc<dyn super::RequestObserver>>,
    /// Requests in flight at once. Canaries share one client per OAP; without a bound, a
    /// thousand canaries due together open a thousand connections (and keep them pooled).
    in_flight: tokio::sync::Semaphore,
    /// Whole-request budget: waiting for a slot counts against it.
    timeout: std::time::Duration,
    /// Largest response body read.
    max_response_bytes: usize,
}

/// Default bound on one response body: a 500-point window of a few dozen aliases is
/// well under 1 MiB, and 4 MiB of JSON decodes in a few tens of MiB at most.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Environment variable overriding [`DEFAULT_MAX_RESPONSE_BYTES`] (bytes).
pub const MAX_RESPONSE_BYTES_ENV: &str = "SKYCANARY_MAX_RESPONSE_BYTES";

/// The response bound: the option, else the environment variable, else the default.
fn resolve_max_response_bytes(opt: Option<usize>) -> Result<usize, ProviderError> {
    let n = match opt {
        Some(n) => n,
        None => match std::env::var(MAX_RESPONSE_BYTES_ENV) {
            Ok(v) if !v.trim().is_empty() => v.trim().parse::<usize>().map_err(|_| {
                ProviderError::Config(format!(
                    "{MAX_RESPONSE_BYTES_ENV}={v:?}: expected a number of bytes"
                ))
            })?,
            _ => DEFAULT_MAX_RESPONSE_BYTES,
        },
    };
    if n == 0 {
        return Err(ProviderError::Config(
            "the response size bound must be positive".into(),
        ));
    }
    Ok(n)
}

/// Most requests one client has in flight (and connections it keeps) towards one OAP.
pub const MAX_IN_FLIGHT: usize = 32;

/// How metrics are read on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Mqe,
    V2,
    V2Empty,
}

impl Mode {
    fn of(f: &Features) -> Self {
        if f.mqe {
            Mode::Mqe
        } else if f.is_empty_value {
            Mode::V2Empty
        } else {
            Mode::V2
        }
    }
}

/// Per-query plan inside one `measure` call.
enum Plan {
    Done(Result<Sample, ProviderError>),
    Raw(String, Window),
    /// A batched metric; `instances` is set when aggregating over instances.
    Batched {
        window: Window,
        instances: Option<Vec<String>>,
    },
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ProviderError> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| ProviderError::Config(format!("invalid header name {name:?}: {e}")))?;
    let mut v = HeaderValue::from_str(value)
        .map_err(|e| ProviderError::Config(format!("invalid value for header {name:?}: {e}")))?;
    if n == AUTHORIZATION {
        v.set_sensitive(true);
    }
    Ok((n, v))
}

/// Flattens a reqwest error and its causes ("connection refused" sits deep in the chain),
/// leaving out causes that add nothing (hyper's bare "Error", repeats), and tells an OAP
/// that cannot be reached at all apart from a transient failure.
fn map_reqwest(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    let mut msg = e.to_string();
    let mut causes = Vec::new();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !text.is_empty() && text != "Error" && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        causes.push(s);
        src = s.source();
    }
    if e.is_body() || e.is_decode() {
        return ProviderError::Decode(msg);
    }
    let io_kind = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>().map(std::io::Error::kind));
    let lower = msg.to_ascii_lowercase();
    let hint = if lower.contains("dns error") || lower.contains("failed to lookup address") {
        Some("the OAP host name does not resolve: check the address")
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused)
        || lower.contains("connection refused")
    {
        Some(
            "nothing listens there: check the OAP address and port (the GraphQL port is usually 12800)",
        )
    } else if lower.contains("invalid http version")
        || lower.contains("invalid status")
        || lower.contains("invalid header")
        || lower.contains("invalidcontenttype")
        || lower.contains("corrupt message")
    {
        Some(
            "the server does not speak plain HTTP/1.1 there: if it is a TLS port use https://, and the reverse",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => ProviderError::Unreachable {
            detail: msg,
            hint: hint.to_string(),
        },
        None => ProviderError::Transport(msg),
    }
}

/// A body that says a TLS server received plain HTTP (Go's and nginx's wording).
fn plain_http_to_tls(body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    head.contains("http request to an https server")
        || head.contains("plain http request was sent to https port")
}

/// SkyWalking service id: `base64(name)` + `.1` (normal) or `.0`.
pub(crate) fn service_id(name: &str, normal: bool) -> String {
    format!(
        "{}.{}",
        BASE64.encode(name.as_bytes()),
        if normal { 1 } else { 0 }
    )
}

/// The instance-level counterpart of a service metric (`service_cpm` →
/// `service_instance_cpm`). On OAP >= 9.4 the entity's scope is derived from the
/// metric name, so querying `service_cpm` with an instance entity would silently
/// return the whole service.
pub(crate) fn instance_metric(name: &str) -> String {
    match name.strip_prefix("service_") {
        Some(rest) if !rest.starts_with("instance_") && !rest.starts_with("relation_") => {
            format!("service_instance_{rest}")
        }
        _ => name.to_string(),
    }
}

/// Per-point mean over the instances that have data at that point.
pub(crate) fn mean_combine(values: &[SampleValue]) -> SampleValue {
    let mean = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    if values.iter().all(|v| matches!(v, SampleValue::Single(_))) {
        let xs = values
            .iter()
            .filter_map(|v| match v {
                SampleValue::Single(x) => *x,
                SampleValue::Series(_) => None,
            })
            .collect();
        return SampleValue::Single(mean(xs));
    }
    let len = values
        .iter()
        .map(|v| match v {
            SampleValue::Series(p) => p.len(),
            SampleValue::Single(_) => 1,
        })
        .max()
        .unwrap_or(0);
    let points = (0..len)
        .map(|i| {
            mean(
                values
                    .iter()
                    .filter_map(|v| match v {
                        SampleValue::Series(p) => p.get(i).copied().flatten(),
                        SampleValue::Single(x) if i == 0 => *x,
                        SampleValue::Single(_) => None,
                    })
                    .collect(),
            )
        })
        .collect();
    SampleValue::Series(points)
}

fn check_entity(e: &EntitySpec) -> Result<(), ProviderError> {
    if e.service_name.is_empty() {
        return Err(ProviderError::Config("entity needs a service name".into()));
    }
    match e.scope {
        Scope::ServiceInstance if e.service_instance_name.is_none() => Err(ProviderError::Config(
            "ServiceInstance scope needs a service instance name".into(),
        )),
        Scope::Endpoint if e.endpoint_name.is_none() => Err(ProviderError::Config(
            "Endpoint scope needs an endpoint name".into(),
        )),
        _ if e.instance_pattern.is_some() && e.scope != Scope::Service => Err(
            ProviderError::Config("instance_pattern only applies to Service-scoped metrics".into()),
        ),
        _ => Ok(()),
    }
}

impl SkyWalkingClient {
    /// Builds the HTTP client; no request is made yet.
    pub fn new(opts: ClientOptions) -> Result<Self, ProviderError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let opts = opts.read_ca_file()?;
        let address = opts.address.trim().trim_end_matches('/');
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(ProviderError::Config(format!(
                "OAP address {address:?} must start with http:// or https://"
            )));
        }
        let url = format!("{address}/graphql");
        reqwest::Url::parse(&url)
            .map_err(|e| ProviderError::Config(format!("invalid OAP address {address:?}: {e}")))?;
        if opts.timeout.is_zero() {
            return Err(ProviderError::Config("timeout must be positive".into()));
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(auth) = &opts.auth {
            let value = match auth {
                Auth::Basic { user, pass } => {
                    format!("Basic {}", BASE64.encode(format!("{user}:{pass}")))
                }
                Auth::Bearer(token) => format!("Bearer {token}"),
            };
            let (n, v) = header("authorization", &value)?;
            headers.insert(n, v);
        }
        for (name, value) in &opts.headers {
            let (n, v) = header(name, value)?;
            headers.insert(n, v);
        }
        let max_response_bytes = resolve_max_response_bytes(opts.max_response_bytes)?;
        // No redirect is followed: the Authorization and custom headers (API keys) are
        // default headers, and must never reach another origin; a redirect is an error
        // naming the target instead.
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.timeout)
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .default_headers(headers);
        if let Some(pem) = &opts.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ProviderError::Config(format!("invalid CA PEM: {e}")))?;
            if certs.is_empty() {
                return Err(ProviderError::Config("CA PEM holds no certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(SkyWalkingClient {
            http,
            url,
            timezone: opts.timezone,
            version_override: opts.version_override,
            info: Mutex::new(None),
            address: opts.address.clone(),
            observer: opts.observer.clone(),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            timeout: opts.timeout,
            max_response_bytes,
        })
    }

    /// The `/graphql` URL requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn post(&self, kind: &str, body: &Value) -> Result<Envelope, ProviderError> {
        let started = std::time::Instant::now();
        let result = self.send(body).await;
        if let Some(o) = &self.observer {
            o.observe(
                &self.address,
                kind,
                started.elapsed(),
                result.as_ref().err(),
            );
        }
        result
    }

    async fn send(&self, body: &Value) -> Result<Envelope, ProviderError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Internal(format!("serialize request: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _slot = tokio::time::timeout_at(deadline, self.in_flight.acquire())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(|_| ProviderError::Internal("request slots closed".into()))?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(ProviderError::Timeout);
        }
        let mut resp = self
            .http
            .post(&self.url)
            .timeout(left)
            .body(bytes)
            .send()
            .await
            .map_err(map_reqwest)?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| excerpt(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_default();
            return Err(ProviderError::Redirect { status, location });
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit = self.max_response_bytes;
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(ProviderError::ResponseTooLarge { limit });
        }
        // Read chunk by chunk and stop past the bound: never buffer more than `limit`
        // (sized up front when announced, so growing never doubles past it).
        let announced = resp
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let mut body = Vec::with_capacity(announced.min(limit));
        while let Some(chunk) = resp.chunk().await.map_err(map_reqwest)? {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(ProviderError::ResponseTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        if status == 400 && plain_http_to_tls(&body) {
            return Err(ProviderError::Unreachable {
                detail: format!("HTTP 400: {}", excerpt(&String::from_utf8_lossy(&body))),
                hint: "the OAP port speaks TLS: use an https:// address".into(),
            });
        }
        decode(status, content_type.as_deref(), &body)
    }

    /// Server version, features and timezone; detected once and cached.
    pub async fn server_info(&self) -> Result<ServerInfo, ProviderError> {
        let mut guard = self.info.lock().await;
        if let Some(info) = guard.as_ref() {
            return Ok(info.clone());
        }
        let info = self.detect().await?;
        tracing::debug!(url = %self.url, version = %info.version_label(), features = ?info.features,
            timezone = %info.timezone, "detected SkyWalking OAP");
        *guard = Some(info.clone());
        Ok(info)
    }

    async fn detect(&self) -> Result<ServerInfo, ProviderError> {
        let (version, time) = if self.version_override.is_some() && self.timezone.is_some() {
            (None, None)
        } else {
            let body = json!({"query": server_info_query::QUERY, "operationName": server_info_query::OPERATION_NAME});
            match self.post("info", &body).await.and_then(|e| e.into_data()) {
                Ok(data) => {
                    let obj: serde_json::Map<String, Value> = data.into_iter().collect();
                    let typed: server_info_query::ResponseData =
                        serde_json::from_value(Value::Object(obj))
                            .map_err(|e| ProviderError::Decode(format!("server info: {e}")))?;
                    (typed.version, typed.get_time_info)
                }
                Err(ProviderError::GraphQl(msgs)) => {
                    tracing::debug!(?msgs, "version query rejected; assuming an old OAP");
                    let data = self
                        .post("info", &json!({"query": TIME_INFO_ONLY}))
                        .await?
                        .into_data()?;
                    let t = data
                        .into_iter()
                        .find(|(k, _)| k == "getTimeInfo")
                        .map(|(_, v)| v)
                        .unwrap_or(Value::Null);
                    let t: Option<server_info_query::ServerInfoQueryGetTimeInfo> =
                        serde_json::from_value(t)
                            .map_err(|e| ProviderError::Decode(format!("getTimeInfo: {e}")))?;
                    (None, t)
                }
                Err(e) => return Err(e),
            }
        };
        let parsed = match self.version_override {
            Some(v) => Some(v),
            None => version.as_deref().and_then(OapVersion::parse),
        };
        let mut features = Features::from_version(parsed);
        if self.version_override.is_none() {
            match self.introspect().await {
                Ok(seen) => features = features.refine(&seen),
                Err(e) => tracing::debug!(error = %e, "introspection unavailable; using version"),
            }
        }
        let server_tz = time.as_ref().and_then(|t| t.timezone.as_deref());
        // Never guessed: a wrong zone reads buckets from hours away as if they were now.
        let timezone = match (self.timezone, server_tz) {
            (Some(tz), _) => tz,
            (None, Some(s)) => parse_timezone(s).ok_or_else(|| {
                ProviderError::UnknownTimezone(format!(
                    "getTimeInfo.timezone is {:?}, expected an offset like +0800",
                    excerpt(s)
                ))
            })?,
            (None, None) => {
                return Err(ProviderError::UnknownTimezone(
                    "the OAP did not report one: getTimeInfo is null or missing".into(),
                ));
            }
        };
        Ok(ServerInfo {
            version: version.or_else(|| self.version_override.map(|v| v.to_string())),
            parsed,
            features,
            timezone,
            server_time_ms: time.and_then(|t| t.current_timestamp),
        })
    }

    async fn introspect(&self) -> Result<Introspected, ProviderError> {
        let data = self
            .post("introspection", &json!({"query": INTROSPECTION}))
            .await?
            .into_data()?;
        let names = |alias: &str, list: &str| -> Option<Vec<String>> {
            let (_, v) = data.iter().find(|(k, _)| k == alias)?;
            let items = v.get(list)?.as_array()?;
            Some(
                items
                    .iter()
                    .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect(),
            )
        };
        Ok(Introspected {
            query_fields: names("q", "fields"),
            kvint_fields: names("kv", "fields"),
            mqe_value_fields: names("mqe", "fields"),
            duration_fields: names("dur", "inputFields"),
            alarm_fields: names("al", "fields"),
        })
    }

    /// The alarms that started in `[from, to]` (minute precision in the OAP zone), with the
    /// fields the server's version has, fetched `page_size` at a time until a page comes back
    /// short or `max_pages` pages were read.
    pub async fn alarms(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page_size: u32,
        max_pages: u32,
    ) -> Result<AlarmPage, ProviderError> {
        let info = self.server_info().await?;
        let query = alarm_query(&info.features);
        let window = alarm_window(from, to, info.timezone);
        let page_size = page_size.max(1);
        let mut out = AlarmPage {
            window: window.clone(),
            ..AlarmPage::default()
        };
        for page in 1..=max_pages.max(1) {
            let body = json!({
                "query": query,
                "variables": alarm_variables(&window, page, page_size),
                "operationName": ALARMS_OPERATION,
            });
            let env = self.post("alarms", &body).await?;
            let records = decode_alarms(env.field("getAlarm")?.clone())?;
            let full = records.len() >= page_size as usize;
            out.records.extend(records);
            if !full {
                return Ok(out);
            }
        }
        out.truncated = true;
        Ok(out)
    }

    /// Measures all `queries` at `now`: one GraphQL request for every metric
    /// and expression (aliases `m0`, `m1`, …; `m3_0`, `m3_1`, … for the
    /// instances of an aggregated query), preceded by one instance-listing
    /// request when a query aggregates over instances. Raw queries are sent as
    /// their own requests. Results are in input order.
    pub async fn measure(
        &self,
        queries: &[MetricQuery],
        now: DateTime<Utc>,
    ) -> Vec<Result<Sample, ProviderError>> {
        let info = match self.server_info().await {
            Ok(i) => i,
            Err(e) => return queries.iter().map(|_| Err(e.clone())).collect(),
        };
        let mode = Mode::of(&info.features);
        let mut plans: Vec<Plan> = queries
            .iter()
            .map(|q| self.plan(q, &info, mode, now))
            .collect();
        self.resolve_instances(queries, &mut plans, &info).await;
        let batched = self.run_batch(queries, &plans, mode).await;
        let mut out = Vec::with_capacity(queries.len());
        for (i, plan) in plans.into_iter().enumerate() {
            let r = match plan {
                Plan::Done(r) => r,
                Plan::Raw(text, w) => self.run_raw(text, &w).await,
                Plan::Batched { .. } => batched.get(&i).cloned().unwrap_or_else(|| {
                    Err(ProviderError::Internal("query missing from batch".into()))
                }),
            };
            out.push(r);
        }
        out
    }

    fn plan(&self, q: &MetricQuery, info: &ServerInfo, mode: Mode, now: DateTime<Utc>) -> Plan {
        let w = match aligned_window(now, info.timezone, q.window, q.step, q.not_before) {
            Ok(Aligned::Ready(w)) => w,
            // The runner waits for this time first; asked anyway, the answer is an Error,
            // never a window reaching back before the change.
            Ok(Aligned::WaitUntil(t)) => {
                return Plan::Done(Err(ProviderError::Config(format!(
                    "no complete {} bucket since the routing change at {} yet (one exists from {t})",
                    q.step,
                    q.not_before.map(|c| c.to_rfc3339()).unwrap_or_default()
                ))));
            }
            Err(e) => return Plan::Done(Err(e)),
        };
        if w.clamped {
            tracing::debug!(key = %q.key, start = %w.start, "window clamped to 500 points");
        }
        match (&q.kind, &q.entity) {
            (QueryKind::Raw { query }, _) => Plan::Raw(query.clone(), w),
            (_, None) => Plan::Done(Err(ProviderError::Config(format!(
                "metric {:?} needs an entity",
                q.key
            )))),
            (kind, Some(e)) => {
                if let Err(err) = check_entity(e) {
                    return Plan::Done(Err(err));
                }
                if matches!(kind, QueryKind::Expression(_)) && mode != Mode::Mqe {
                    return Plan::Done(Err(ProviderError::Config(format!(
                        "MQE needs OAP >= 9.5, server is {}",
                        info.version_label()
                    ))));
                }
                Plan::Batched {
                    window: w,
                    instances: None,
                }
            }
        }
    }

    /// Lists the instances of every service aggregated by a pattern (one
    /// request), keeping the matching names. Canary and stable pods are one
    /// SkyWalking service by default, so the pod (instance) name is what
    /// tells them apart.
    async fn resolve_instances(
        &self,
        queries: &[MetricQuery],
        plans: &mut [Plan],
        info: &ServerInfo,
    ) {
        let t = match templates() {
            Ok(t) => t,
            Err(e) => {
                fail_aggregated(queries, plans, &e);
                return;
            }
        };
        let mut batch = Batch::default();
        let mut keys: Vec<(String, &Window)> = Vec::new();
        let mut alias_of: BTreeMap<usize, String> = BTreeMap::new();
        for (i, (q, plan)) in queries.iter().zip(plans.iter()).enumerate() {
            let (Plan::Batched { window, .. }, Some(e)) = (plan, &q.entity) else {
                continue;
            };
            if e.instance_pattern.is_none() {
                continue;
            }
            let sid = service_id(&e.service_name, e.normal);
            let key = format!("{sid}|{}|{}|{}", window.start, window.end, window.step);
            if let Some(k) = keys.iter().position(|(k, _)| *k == key) {
                alias_of.insert(i, format!("i{k}"));
                continue;
            }
            let alias = format!("i{}", keys.len());
            let added = if info.features.list_instances {
                batch.add(
                    &alias,
                    &t.list_instances,
                    &list_instances::Variables {
                        duration: list_instances::Duration::from_window(window),
                        service_id: sid,
                    },
                )
            } else {
                batch.add(
                    &alias,
                    &t.get_service_instances,
                    &get_service_instances::Variables {
                        duration: get_service_instances::Duration::from_window(window),
                        service_id: sid,
                    },
                )
            };
            if let Err(e) = added {
                fail_aggregated(queries, plans, &e);
                return;
            }
            keys.push((key, window));
            alias_of.insert(i, alias);
        }
        if batch.is_empty() {
            return;
        }
        let (doc, vars) = batch.finish(INSTANCES_OPERATION);
        let env = self
            .post(
                "instances",
                &json!({"query": doc, "variables": vars, "operationName": INSTANCES_OPERATION}),
            )
            .await;
        for (i, alias) in alias_of {
            let (Some(q), Some(plan)) = (queries.get(i), plans.get_mut(i)) else {
                continue;
            };
            let Some(e) = &q.entity else { continue };
            let Some(pattern) = &e.instance_pattern else {
                continue;
            };
            let names = env.as_ref().map_err(Clone::clone).and_then(|env| {
                let v = env.field(&alias)?;
                // listInstances and getServiceInstances select the same `{ id name }`.
                let list: Vec<list_instances::ListInstancesResult> = Deserialize::deserialize(v)
                    .map_err(|e| ProviderError::Decode(format!("instance list: {e}")))?;
                Ok(list.into_iter().map(|i| i.name).collect::<Vec<_>>())
            });
            let result = names.and_then(|names| {
                let matching: Vec<String> =
                    names.into_iter().filter(|n| pattern.is_match(n)).collect();
                if matching.is_empty() {
                    Err(ProviderError::NoMatchingInstances {
                        service: e.service_name.clone(),
                        pattern: pattern.as_str().to_string(),
                    })
                } else {
                    Ok(matching)
                }
            });
            match (result, plan) {
                (Ok(m), Plan::Batched { instances, .. }) => *instances = Some(m),
                (Err(err), plan) => *plan = Plan::Done(Err(err)),
                (Ok(_), _) => {}
            }
        }
    }

    /// Adds one metric read to the batch under `alias`.
    fn add_metric(
        batch: &mut Batch,
        mode: Mode,
        alias: &str,
        q: &MetricQuery,
        e: &EntitySpec,
        instance: Option<&str>,
        w: &Window,
    ) -> Result<(), ProviderError> {
        let t = templates()?;
        let scope = if instance.is_some() {
            Scope::ServiceInstance
        } else {
            e.scope
        };
        let name = match (&q.kind, instance) {
            (QueryKind::Metric(m), Some(_)) => instance_metric(m),
            (QueryKind::Metric(m), None) | (QueryKind::Expression(m), _) => m.clone(),
            (QueryKind::Raw { .. }, _) => {
                return Err(ProviderError::Internal("raw query in batch".into()));
            }
        };
        match mode {
            Mode::Mqe => batch.add(
                alias,
                &t.mqe,
                &exec_expression::Variables {
                    expression: name,
                    entity: exec_expression::Entity::from_spec(e, scope, instance),
                    duration: exec_expression::Duration::from_window(w),
                },
            ),
            Mode::V2 => batch.add(
                alias,
                &t.v2,
                &read_metrics_values::Variables {
                    condition: read_metrics_values::MetricsCondition {
                        name,
                        entity: read_metrics_values::Entity::from_spec(e, scope, instance),
                    },
                    duration: read_metrics_values::Duration::from_window(w),
                },
            ),
            Mode::V2Empty => batch.add(
                alias,
                &t.v2_empty,
                &read_metrics_values_empty::Variables {
                    condition: read_metrics_values_empty::MetricsCondition {
                        name,
                        entity: read_metrics_values_empty::Entity::from_spec(e, scope, instance),
                    },
                    duration: read_metrics_values_empty::Duration::from_window(w),
                },
            ),
        }
    }

    /// Sends every batched query in one request; returns results by query index.
    async fn run_batch(
        &self,
        queries: &[MetricQuery],
        plans: &[Plan],
        mode: Mode,
    ) -> BTreeMap<usize, Result<Sample, ProviderError>> {
        let mut out = BTreeMap::new();
        let mut batch = Batch::default();
        // (query index, aliases, aggregated?, window)
        let mut members: Vec<(usize, Vec<String>, bool, &Window)> = Vec::new();
        for (i, (q, plan)) in queries.iter().zip(plans).enumerate() {
            let (Plan::Batched { window, instances }, Some(e)) = (plan, &q.entity) else {
                continue;
            };
            let added: Result<Vec<String>, ProviderError> = match instances {
                None => {
                    let alias = format!("m{i}");
                    Self::add_metric(&mut batch, mode, &alias, q, e, None, window)
                        .map(|()| vec![alias])
                }
                Some(names) => names
                    .iter()
                    .enumerate()
                    .map(|(j, n)| {
                        let alias = format!("m{i}_{j}");
                        Self::add_metric(&mut batch, mode, &alias, q, e, Some(n), window)
                            .map(|()| alias)
                    })
                    .collect(),
            };
            match added {
                Ok(aliases) => members.push((i, aliases, instances.is_some(), window)),
                Err(err) => {
                    out.insert(i, Err(err));
                }
            }
        }
        if batch.is_empty() {
            return out;
        }
        let (doc, vars) = batch.finish(BATCH_OPERATION);
        tracing::debug!(url = %self.url, query = %doc, "SkyWalking batch");
        let env = self
            .post(
                "metrics",
                &json!({"query": doc, "variables": vars, "operationName": BATCH_OPERATION}),
            )
            .await;
        for (i, aliases, aggregated, w) in members {
            let r = env.as_ref().map_err(Clone::clone).and_then(|env| {
                let mut parts = Vec::with_capacity(aliases.len());
                let mut named = BTreeMap::new();
                let mut dropped = DroppedPoints::default();
                for alias in &aliases {
                    let mut check = Check {
                        window: w,
                        dated: true,
                        dropped: &mut dropped,
                    };
                    let (v, n) = parse_alias(env, alias, mode, &mut check)?;
                    parts.push(v);
                    named = n;
                }
                report_dropped(
                    queries.get(i).map_or("metric", |q| q.key.as_str()),
                    w,
                    &dropped,
                );
                let value = if aggregated {
                    named.clear();
                    mean_combine(&parts)
                } else {
                    parts.pop().unwrap_or(SampleValue::Series(Vec::new()))
                };
                Ok(Sample {
                    value,
                    named,
                    query: doc.clone(),
                    window: (w.start.clone(), w.end.clone()),
                    dropped,
                    data: None,
                })
            });
            out.insert(i, r);
        }
        out
    }

    /// Sends a user query verbatim with only `$duration` injected.
    async fn run_raw(&self, text: String, w: &Window) -> Result<Sample, ProviderError> {
        let duration = serde_json::to_value(exec_expression::Duration::from_window(w))
            .map_err(|e| ProviderError::Internal(format!("serialize duration: {e}")))?;
        let mut data = self
            .post(
                "metrics",
                &json!({"query": text, "variables": {"duration": duration}}),
            )
            .await?
            .into_data()?;
        let mut named = BTreeMap::new();
        let mut main = None;
        let mut dropped = DroppedPoints::default();
        for (alias, v) in &mut data {
            let value = parse_raw_value(alias, v, w, &mut dropped)?;
            retain_window_points(v, w);
            if main.is_none() {
                main = Some(value.clone());
            }
            named.insert(alias.clone(), value);
        }
        report_dropped("raw query", w, &dropped);
        Ok(Sample {
            value: main.ok_or(ProviderError::NoDataField)?,
            named,
            query: text,
            window: (w.start.clone(), w.end.clone()),
            dropped,
            data: Some(serde_json::Value::Object(data.into_iter().collect())),
        })
    }
}

/// Logs points that were not evidence: the user must see that the OAP answered with data
/// from another time (a wrong zone, clock skew, a misbehaving proxy).
fn report_dropped(key: &str, w: &Window, dropped: &DroppedPoints) {
    if dropped.total() > 0 {
        tracing::warn!(metric = key, start = %w.start, end = %w.end, %dropped,
            "OAP returned points that are not in the requested window");
    }
}

fn fail_aggregated(queries: &[MetricQuery], plans: &mut [Plan], e: &ProviderError) {
    for (q, plan) in queries.iter().zip(plans.iter_mut()) {
        if q.entity
            .as_ref()
            .is_some_and(|e| e.instance_pattern.is_some())
            && matches!(plan, Plan::Batched { .. })
        {
            *plan = Plan::Done(Err(e.clone()));
        }
    }
}

/// Reads one OAP response every way the client can: the envelope (status, content type,
/// body), then each top-level alias of `data` as an MQE, a v2 and a v2-with-`isEmptyValue`
/// result, and the whole `data` as a raw query's. Each path ends in a value or a
/// [`ProviderError`]: the entry point of the response-decoding fuzz target.
pub fn decode_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<Result<SampleValue, ProviderError>> {
    let env = match decode(status, content_type, body) {
        Ok(env) => env,
        Err(e) => return vec![Err(e)],
    };
    let mut aliases: Vec<String> = env
        .data
        .as_ref()
        .map(|d| d.0.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    aliases.push("m0".into());
    // A fixed five-minute window (2024-07-01 12:00..12:04 UTC) to check points against.
    let w = match DateTime::from_timestamp(1_719_835_542, 0)
        .ok_or_else(|| ProviderError::Internal("fixed time".into()))
        .and_then(|now| {
            window(
                now,
                Utc.fix(),
                std::time::Duration::from_secs(300),
                Step::Minute,
            )
        }) {
        Ok(w) => w,
        Err(e) => return vec![Err(e)],
    };
    let mut dropped = DroppedPoints::default();
    let mut out = Vec::new();
    for alias in &aliases {
        for mode in [Mode::Mqe, Mode::V2, Mode::V2Empty] {
            let mut check = Check {
                window: &w,
                dated: true,
                dropped: &mut dropped,
            };
            out.push(parse_alias(&env, alias, mode, &mut check).map(|(v, _)| v));
        }
    }
    out.push(env.into_data().and_then(|data| {
        let mut first = None;
        for (alias, v) in &data {
            let value = parse_raw_value(alias, v, &w, &mut dropped)?;
            first.get_or_insert(value);
        }
        first.ok_or(ProviderError::NoDataField)
    }));
    out
}

/// Decodes one alias with the generated response type of `mode`.
fn parse_alias(
    env: &Envelope,
    alias: &str,
    mode: Mode,
    check: &mut Check<'_>,
) -> Result<(SampleValue, BTreeMap<String, SampleValue>), ProviderError> {
    let v = env.field(alias)?;
    let bad = |e: serde_json::Error| ProviderError::Decode(format!("{alias}: {e}"));
    match mode {
        Mode::Mqe => {
            let r: exec_expression::ExecExpressionResult =
                Deserialize::deserialize(v).map_err(bad)?;
            parse_mqe(&r, check)
        }
        Mode::V2 => {
            let r: read_metrics_values::ReadMetricsValuesResult =
                Deserialize::deserialize(v).map_err(bad)?;
            Ok((parse_v2(&r, check)?, BTreeMap::new()))
        }
        Mode::V2Empty => {
            let r: read_metrics_values_empty::ReadMetricsValuesEmptyResult =
                Deserialize::deserialize(v).map_err(bad)?;
            Ok((parse_v2_empty(&r, check)?, BTreeMap::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_response_turns_every_shape_into_a_value_or_an_error() {
        let html = decode_response(502, Some("text/html"), b"<html>bad gateway</html>");
        assert!(matches!(
            html.as_slice(),
            [Err(ProviderError::Http { status: 502, .. })]
        ));
        let mqe = br#"{"data":{"m0":{"type":"TIME_SERIES_VALUES","error":null,
            "results":[{"metric":{"labels":[]},"values":[{"id":"1719835200000","value":"9950"},{"id":"1719835260000","value":null}]}]}}}"#;
        let got = decode_response(200, Some("application/json"), mqe);
        assert_eq!(
            got[0],
            Ok(SampleValue::Series(vec![
                Some(9950.0),
                None,
                None,
                None,
                None
            ])),
            "{got:?}"
        );
        // A v2 reading of an MQE body finds no point (no data), never an invented value.
        assert!(
            got[1].as_ref().is_ok_and(SampleValue::is_empty) || got[1].is_err(),
            "{got:?}"
        );
        let garbage = decode_response(200, None, b"{\"data\": {\"m0\": [1, {}]");
        assert!(matches!(
            garbage.as_slice(),
            [Err(ProviderError::Decode(_))]
        ));
    }

    #[test]
    fn service_ids() {
        assert_eq!(
            service_id("reviews.bookinfo", true),
            "cmV2aWV3cy5ib29raW5mbw==.1"
        );
        assert!(service_id("x", false).ends_with(".0"));
    }

    #[test]
    fn instance_metric_names() {
        assert_eq!(instance_metric("service_cpm"), "service_instance_cpm");
        assert_eq!(
            instance_metric("service_instance_sla"),
            "service_instance_sla"
        );
        assert_eq!(
            instance_metric("service_relation_server_cpm"),
            "service_relation_server_cpm"
        );
        assert_eq!(instance_metric("meter_x"), "meter_x");
    }

    #[test]
    fn mean_of_instances_with_data() {
        let v = mean_combine(&[
            SampleValue::Series(vec![Some(10.0), None, None]),
            SampleValue::Series(vec![Some(20.0), Some(4.0), None]),
        ]);
        assert_eq!(v, SampleValue::Series(vec![Some(15.0), Some(4.0), None]));
        let v = mean_combine(&[SampleValue::Single(Some(1.0)), SampleValue::Single(None)]);
        assert_eq!(v, SampleValue::Single(Some(1.0)));
    }
}
