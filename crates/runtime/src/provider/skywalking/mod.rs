//! SkyWalking OAP provider: the async I/O edge that turns metric queries into
//! GraphQL requests against an OAP and returns per-bucket samples.
//!
//! Everything version-dependent (MQE vs `readMetricsValues`, `isEmptyValue`,
//! the OAP's timezone) is detected once per client and cached, because the
//! server's schema decides which fields may be selected and which input fields
//! may be sent (see the protocol reference, §0 and §6).

mod alarms;
mod client;
mod duration;
mod queries;
mod response;
mod version;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use alarms::{AlarmPage, AlarmRecord};
pub use client::{
    DEFAULT_MAX_RESPONSE_BYTES, MAX_IN_FLIGHT, MAX_RESPONSE_BYTES_ENV, SkyWalkingClient,
    decode_response,
};
pub use duration::{Aligned, MAX_POINTS, Window, aligned_window, parse_timezone, window};
pub use version::{Features, OapVersion, ServerInfo};

/// Bucket size of a query; also decides the `Duration` string format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Second,
    Minute,
    Hour,
    Day,
}

impl Step {
    /// Bucket length in seconds (a fixed offset zone has no DST, so a day is 86400 s).
    pub fn seconds(self) -> i64 {
        match self {
            Step::Second => 1,
            Step::Minute => 60,
            Step::Hour => 3600,
            Step::Day => 86_400,
        }
    }

    /// The GraphQL enum value.
    pub fn as_graphql(self) -> &'static str {
        match self {
            Step::Second => "SECOND",
            Step::Minute => "MINUTE",
            Step::Hour => "HOUR",
            Step::Day => "DAY",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_graphql())
    }
}

/// Entity scope. Always sent: it is required on OAP 8.0–9.3 and harmless later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Service,
    ServiceInstance,
    Endpoint,
}

/// Which entity a metric is read for.
#[derive(Debug, Clone)]
pub struct EntitySpec {
    pub scope: Scope,
    pub service_name: String,
    /// `true` for agent and mesh services; without it the OAP silently returns no data.
    pub normal: bool,
    pub service_instance_name: Option<String>,
    pub endpoint_name: Option<String>,
    /// Aggregate over the service's instances whose name matches. Canary and
    /// stable pods are one SkyWalking service by default (same canonical name),
    /// so the canary can only be told apart by its instances (pod names).
    pub instance_pattern: Option<regex::Regex>,
}

impl EntitySpec {
    /// A service-scoped entity with `normal: true`.
    pub fn service(name: impl Into<String>) -> Self {
        EntitySpec {
            scope: Scope::Service,
            service_name: name.into(),
            normal: true,
            service_instance_name: None,
            endpoint_name: None,
            instance_pattern: None,
        }
    }
}

/// What to ask the OAP.
#[derive(Debug, Clone)]
pub enum QueryKind {
    /// A stored metric by name (e.g. `service_apdex`): MQE on OAP >= 9.5, `readMetricsValues` before.
    Metric(String),
    /// An MQE expression; needs OAP >= 9.5.
    Expression(String),
    /// A user GraphQL document sent verbatim with only `$duration` injected.
    /// The caller has already substituted its args (see `resources::args`, which escapes values inside string literals).
    Raw { query: String },
}

/// One metric to measure.
#[derive(Debug, Clone)]
pub struct MetricQuery {
    /// Metric name in the analysis; unique within one `measure` call.
    pub key: String,
    pub kind: QueryKind,
    /// `None` only for raw queries.
    pub entity: Option<EntitySpec>,
    /// Length of the look-back window (rounded up to whole steps).
    pub window: Duration,
    pub step: Step,
    /// The canary's last routing change: the window starts at the first bucket after it
    /// (see [`aligned_window`]). `None`: not aligned.
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Gateway credentials (OAP itself has no auth).
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Basic { user: String, pass: String },
    Bearer(String),
}

impl fmt::Debug for Auth {
    // Never print secrets in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// Connection settings for one OAP address.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http(s)://host:12800`; requests go to `{address}/graphql`.
    pub address: String,
    pub timeout: Duration,
    pub auth: Option<Auth>,
    pub headers: Vec<(String, String)>,
    /// Extra trusted root certificate(s), PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM file with more trusted roots (a template's `caFile`): read when the client is
    /// built ([`ClientOptions::read_ca_file`]), so a rotated file is used by the next client.
    pub ca_file: Option<std::path::PathBuf>,
    /// Overrides the OAP timezone from `getTimeInfo`.
    pub timezone: Option<chrono::FixedOffset>,
    /// Skips version detection and introspection.
    pub version_override: Option<OapVersion>,
    /// Told about every request (the daemon's `/metrics`); None in the CLI.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Largest response body read; a longer one is an error, never buffered whole.
    /// `None`: `SKYCANARY_MAX_RESPONSE_BYTES` if set, else [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub max_response_bytes: Option<usize>,
}

/// Hears about every request a client sends, so the daemon can export provider latency and
/// errors without the client depending on it.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    /// One request to `address` of `kind` (`info`, `introspection`, `metrics`, `instances`,
    /// `alarms`) took `elapsed`; `error` when it failed (transport, HTTP status, or body).
    fn observe(&self, address: &str, kind: &str, elapsed: Duration, error: Option<&ProviderError>);
}

impl ClientOptions {
    /// Defaults: 10 s timeout, no auth, detected version and timezone.
    pub fn new(address: impl Into<String>) -> Self {
        ClientOptions {
            address: address.into(),
            timeout: Duration::from_secs(10),
            auth: None,
            headers: Vec::new(),
            ca_pem: None,
            ca_file: None,
            timezone: None,
            version_override: None,
            observer: None,
            max_response_bytes: None,
        }
    }
}

/// Largest CA file read: a bundle of every public root is about 200 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Reads and checks a PEM file of trusted roots: it must be readable, at most
/// [`MAX_CA_FILE_BYTES`], and hold at least one certificate.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, ProviderError> {
    use std::io::Read as _;
    let shown = path.display();
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| ProviderError::Config(format!("cannot read CA file {shown}: {e}")))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(ProviderError::Config(format!(
            "cannot read CA file {shown}: larger than {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| ProviderError::Config(format!("CA file {shown} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ProviderError::Config(format!(
            "CA file {shown} holds no certificate"
        )));
    }
    Ok(pem)
}

impl ClientOptions {
    /// These options with `ca_file` read into `ca_pem` (after any PEM already there): what
    /// a client is built from, and what tells two clients apart once the file changed.
    pub fn read_ca_file(mut self) -> Result<Self, ProviderError> {
        if let Some(path) = self.ca_file.take() {
            let pem = read_ca_file(&path)?;
            let mut all = self.ca_pem.take().unwrap_or_default();
            if !all.is_empty() {
                all.push(b'\n');
            }
            all.extend(pem);
            self.ca_pem = Some(all);
        }
        Ok(self)
    }
}

/// A measured value: one point per bucket (`None` = no data) or a single value.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValue {
    Series(Vec<Option<f64>>),
    Single(Option<f64>),
}

impl SampleValue {
    /// True when there is no data point at all (all buckets empty).
    pub fn is_empty(&self) -> bool {
        match self {
            SampleValue::Series(points) => points.iter().all(Option::is_none),
            SampleValue::Single(v) => v.is_none(),
        }
    }
}

/// Points the OAP returned that are not evidence for the requested window. They are
/// dropped before any condition sees them, and counted so the user sees it happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedPoints {
    /// Dated outside the requested buckets (another day, 1970, the future, a wrong zone).
    pub outside: usize,
    /// Without a bucket id that could be read, so their time is unknown.
    pub undated: usize,
    /// A second point for a bucket that already had one.
    pub duplicate: usize,
}

impl DroppedPoints {
    /// All dropped points.
    pub fn total(&self) -> usize {
        self.outside
            .saturating_add(self.undated)
            .saturating_add(self.duplicate)
    }
}

impl fmt::Display for DroppedPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.outside > 0 {
            parts.push(format!(
                "{} outside the requested window (is the OAP time zone right?)",
                self.outside
            ));
        }
        if self.undated > 0 {
            parts.push(format!("{} without a readable bucket id", self.undated));
        }
        if self.duplicate > 0 {
            parts.push(format!("{} duplicate bucket(s)", self.duplicate));
        }
        write!(f, "{} point(s) dropped: {}", self.total(), parts.join(", "))
    }
}

/// The result of one [`MetricQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The main value (for raw queries: the first top-level alias of `data`).
    pub value: SampleValue,
    /// Raw queries: every top-level alias of `data`. MQE labeled results: every
    /// label set keyed like `p=99` (`value` then holds the first label set).
    pub named: BTreeMap<String, SampleValue>,
    /// The GraphQL document sent, for explanations.
    pub query: String,
    /// `Duration.start` and `Duration.end` as sent.
    pub window: (String, String),
    /// Returned points that were not used (wrong time, no id, duplicates).
    pub dropped: DroppedPoints,
    /// Raw queries: the GraphQL `data` object (what Argo binds as `result`), with the
    /// dropped points already removed. `None` for metrics and expressions.
    pub data: Option<serde_json::Value>,
}

/// Everything that can go wrong talking to an OAP. Display gives the server's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("transport error: {0}")]
    Transport(String),
    #[error("request timed out")]
    Timeout,
    #[error("HTTP {status}: {body_excerpt}")]
    Http { status: u16, body_excerpt: String },
    #[error("GraphQL error: {}", .0.join("; "))]
    GraphQl(Vec<String>),
    #[error("response has no data for the query")]
    NoDataField,
    #[error("MQE error: {0}")]
    Mqe(String),
    #[error("cannot decode response: {0}")]
    Decode(String),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("no instance of service {service:?} matches /{pattern}/")]
    NoMatchingInstances { service: String, pattern: String },
    #[error("internal error: {0}")]
    Internal(String),
    /// The OAP could not be reached at all; `hint` says what to check.
    #[error("{detail} ({hint})")]
    Unreachable { detail: String, hint: String },
    #[error(
        "HTTP {status} redirect to {location:?} not followed: credentials and headers never leave the configured origin; set the OAP address to the final URL"
    )]
    Redirect { status: u16, location: String },
    #[error(
        "response body exceeds {limit} bytes (raise the bound with {MAX_RESPONSE_BYTES_ENV} if the OAP really answers that much)"
    )]
    ResponseTooLarge { limit: usize },
    #[error(
        "response holds more than {limit} JSON values; refusing to decode it (an OAP answers a few per point)"
    )]
    ResponseTooComplex { limit: usize },
    #[error("{what}: {got} points for a window of {buckets} buckets; refusing the response")]
    TooManyPoints {
        what: String,
        got: usize,
        buckets: u32,
    },
    /// Buckets are wall-clock times in the OAP's zone: guessing it reads data from another time.
    #[error(
        "the OAP time zone is unknown ({0}); set it explicitly with --timezone (e.g. --timezone +0800)"
    )]
    UnknownTimezone(String),
}

impl ProviderError {
    /// A short, bounded label for metrics (`skycanary_provider_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            // An unreachable OAP is a transport failure to dashboards; only the hint differs.
            ProviderError::Transport(_) | ProviderError::Unreachable { .. } => "transport",
            ProviderError::Timeout => "timeout",
            ProviderError::Http { .. } => "http",
            ProviderError::GraphQl(_) => "graphql",
            ProviderError::NoDataField => "no_data_field",
            ProviderError::Mqe(_) => "mqe",
            ProviderError::Decode(_) => "decode",
            ProviderError::Config(_) => "config",
            ProviderError::NoMatchingInstances { .. } => "no_matching_instances",
            ProviderError::Internal(_) => "internal",
            ProviderError::Redirect { .. } => "redirect",
            ProviderError::ResponseTooLarge { .. } | ProviderError::ResponseTooComplex { .. } => {
                "too_large"
            }
            ProviderError::TooManyPoints { .. } => "too_many_points",
            ProviderError::UnknownTimezone(_) => "timezone",
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn error_display_carries_server_message() {
        let e = ProviderError::GraphQl(vec!["a".into(), "b".into()]);
        assert_eq!(e.to_string(), "GraphQL error: a; b");
        let e = ProviderError::Mqe("Metric: [x] does not exist.".into());
        assert!(e.to_string().contains("Metric: [x] does not exist."));
    }
}
