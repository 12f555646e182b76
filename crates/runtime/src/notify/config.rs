//! The daemon's notifications file (`skycanary run --notifications FILE`): named sinks with
//! their URLs and secrets (read from files or the environment, never from a CR), the default
//! subscriptions of objects that name none, and delivery bounds. Every problem is reported
//! with file, line and field, before the daemon starts.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::resources::load::{ConfigError, Origin, deserialize_all};
use crate::resources::notifications::{
    MAX_SUBSCRIPTIONS, SubscriberKind, Subscription, check_subscriptions, is_sink_name,
};
use crate::resources::yaml::{self, child_path, index_path};
use crate::resources::{LoadResult, duration::parse_duration};

/// Largest notifications file.
pub const MAX_FILE_BYTES: u64 = 256 << 10;
/// Largest secret or URL file.
pub const MAX_SECRET_BYTES: u64 = 4 << 10;
/// Most sinks.
pub const MAX_SINKS: usize = 32;
/// Longest URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Bounds of `delivery.queueSize` (per sink).
pub const QUEUE_SIZE_RANGE: (usize, usize) = (1, 10_000);
/// Bounds of `delivery.maxAttempts`.
pub const MAX_ATTEMPTS_RANGE: (u32, u32) = (1, 20);

/// Defaults of the `delivery` block.
pub const DEFAULT_QUEUE_SIZE: usize = 256;
/// Attempts per notification by default (the first plus 5 retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// First retry delay by default; doubled per retry.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Per-attempt timeout by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sinks: Vec<RawSink>,
    #[serde(default)]
    defaults: Vec<Subscription>,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSink {
    name: String,
    #[serde(rename = "type")]
    kind: SinkKind,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_file: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDelivery {
    #[serde(default)]
    queue_size: Option<usize>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    initial_backoff: Option<String>,
    #[serde(default)]
    max_backoff: Option<String>,
}

/// What a sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SinkKind {
    /// The generic, signed JSON webhook.
    Webhook,
    /// A Slack-compatible incoming webhook (`text` + `blocks`).
    Slack,
}

/// One validated sink.
#[derive(Clone)]
pub struct SinkConfig {
    /// Name subscriptions refer to.
    pub name: String,
    /// Webhook or Slack.
    pub kind: SinkKind,
    /// Where to POST.
    pub url: reqwest::Url,
    /// HMAC key of a webhook.
    pub secret: Option<Vec<u8>>,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for SinkConfig {
    // The secret and the URL (a Slack URL is a credential) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("host", &self.url.host_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The validated notifications file.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Sinks by name (unique).
    pub sinks: Vec<SinkConfig>,
    /// Subscriptions of objects without `spec.notifications`.
    pub defaults: Vec<Subscription>,
    /// Notifications queued per sink; past it the oldest is dropped (and counted).
    pub queue_size: usize,
    /// Attempts per notification.
    pub max_attempts: u32,
    /// First retry delay (doubled per retry).
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            sinks: Vec::new(),
            defaults: Vec::new(),
            queue_size: DEFAULT_QUEUE_SIZE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl NotifyConfig {
    /// The sink named `name`.
    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.name == name)
    }
}

/// Reads and validates the notifications file; `env` looks up environment variables.
pub fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NotifyConfig, Vec<ConfigError>> {
    let file = path.display().to_string();
    let at_file = |message: String| ConfigError::whole_file(file.clone(), message);
    let text = yaml::read_file(path, MAX_FILE_BYTES).map_err(|e| vec![at_file(e.to_string())])?;
    parse(&file, &text, env)
}

/// Validates the text of a notifications file named `file`.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NotifyConfig, Vec<ConfigError>> {
    let docs = yaml::parse_documents(text).map_err(|e| {
        vec![ConfigError {
            file: file.into(),
            line: Some(e.line),
            path: ".".into(),
            message: e.message,
        }]
    })?;
    let [doc] = docs.as_slice() else {
        return Err(vec![ConfigError::whole_file(
            file,
            format!("expected one YAML document, found {}", docs.len()),
        )]);
    };
    let o = Origin {
        file: file.into(),
        lines: doc.lines.clone(),
    };
    let (raw, mut errs) = deserialize_all::<RawConfig>(&doc.value, &o);
    let Some(raw) = raw else {
        return Err(errs);
    };
    let mut cfg = NotifyConfig::default();
    if raw.sinks.len() > MAX_SINKS {
        errs.push(o.error(
            "sinks",
            format!("at most {MAX_SINKS} sinks, got {}", raw.sinks.len()),
        ));
        return Err(errs);
    }
    for (i, s) in raw.sinks.iter().enumerate() {
        let p = index_path("sinks", i);
        if let Some(sink) = sink(s, &p, &o, env, &mut errs) {
            if cfg.sink(&sink.name).is_some() {
                errs.push(o.error(
                    &child_path(&p, "name"),
                    format!("sink {:?} is defined twice", sink.name),
                ));
            } else {
                cfg.sinks.push(sink);
            }
        }
    }
    if raw.defaults.len() > MAX_SUBSCRIPTIONS {
        errs.push(o.error(
            "defaults",
            format!(
                "at most {MAX_SUBSCRIPTIONS} subscriptions, got {}",
                raw.defaults.len()
            ),
        ));
    } else {
        // Defaults serve both kinds: any event is allowed, each kind sends its own.
        check_subscriptions(
            &raw.defaults,
            SubscriberKind::Any,
            "defaults",
            &o,
            &mut errs,
        );
        for (i, d) in raw.defaults.iter().enumerate() {
            if is_sink_name(&d.sink)
                && cfg.sink(&d.sink).is_none()
                && !raw.sinks.iter().any(|s| s.name == d.sink)
            {
                errs.push(o.error(
                    &child_path(&index_path("defaults", i), "sink"),
                    format!("no sink named {:?} in sinks", d.sink),
                ));
            }
        }
    }
    cfg.defaults = raw.defaults;
    let d = &raw.delivery;
    if let Some(q) = d.queue_size {
        if !(QUEUE_SIZE_RANGE.0..=QUEUE_SIZE_RANGE.1).contains(&q) {
            errs.push(o.error(
                "delivery.queueSize",
                format!(
                    "must be between {} and {}, got {q}",
                    QUEUE_SIZE_RANGE.0, QUEUE_SIZE_RANGE.1
                ),
            ));
        }
        cfg.queue_size = q;
    }
    if let Some(a) = d.max_attempts {
        if !(MAX_ATTEMPTS_RANGE.0..=MAX_ATTEMPTS_RANGE.1).contains(&a) {
            errs.push(o.error(
                "delivery.maxAttempts",
                format!(
                    "must be between {} and {}, got {a}",
                    MAX_ATTEMPTS_RANGE.0, MAX_ATTEMPTS_RANGE.1
                ),
            ));
        }
        cfg.max_attempts = a;
    }
    let bounded =
        |field: &str, v: &Option<String>, default: Duration, errs: &mut Vec<ConfigError>| {
            let Some(v) = v else { return default };
            match duration_within(v, Duration::from_millis(10), Duration::from_secs(3600)) {
                Ok(d) => d,
                Err(e) => {
                    errs.push(o.error(field, e));
                    default
                }
            }
        };
    cfg.initial_backoff = bounded(
        "delivery.initialBackoff",
        &d.initial_backoff,
        DEFAULT_INITIAL_BACKOFF,
        &mut errs,
    );
    cfg.max_backoff = bounded(
        "delivery.maxBackoff",
        &d.max_backoff,
        DEFAULT_MAX_BACKOFF,
        &mut errs,
    );
    if cfg.max_backoff < cfg.initial_backoff {
        errs.push(o.error(
            "delivery.maxBackoff",
            format!(
                "must not be shorter than initialBackoff ({:?} < {:?})",
                cfg.max_backoff, cfg.initial_backoff
            ),
        ));
    }
    if errs.is_empty() { Ok(cfg) } else { Err(errs) }
}

fn duration_within(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < min || d > max {
        return Err(format!("{v:?} must be between {min:?} and {max:?}"));
    }
    Ok(d)
}

/// Where a value may come from: inline, a file or an environment variable (`what` names the
/// fields, for the error).
struct Source<'a> {
    inline: Option<&'a str>,
    file: Option<&'a str>,
    var: Option<&'a str>,
    what: &'a str,
}

/// Exactly one of a value given inline, in a file or in an environment variable.
fn one_of(
    src: Source<'_>,
    p: &str,
    o: &Origin,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
) -> Option<String> {
    let Source {
        inline,
        file,
        var,
        what,
    } = src;
    let given = [inline.is_some(), file.is_some(), var.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        errs.push(o.error(p, format!("give exactly one of {what}, got {given}")));
        return None;
    }
    if let Some(v) = inline {
        return Some(v.to_string());
    }
    if let Some(f) = file {
        let field = p.to_string();
        return match yaml::read_file(Path::new(f), MAX_SECRET_BYTES) {
            Ok(t) => Some(t.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                errs.push(o.error(&field, format!("{f}: {e}")));
                None
            }
        };
    }
    let var = var?;
    match env(var) {
        Some(v) if v.len() as u64 <= MAX_SECRET_BYTES => Some(v),
        Some(_) => {
            errs.push(o.error(
                p,
                format!("environment variable {var} is longer than {MAX_SECRET_BYTES} bytes"),
            ));
            None
        }
        None => {
            errs.push(o.error(p, format!("environment variable {var} is not set")));
            None
        }
    }
}

fn sink(
    s: &RawSink,
    p: &str,
    o: &Origin,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
) -> Option<SinkConfig> {
    let before = errs.len();
    if !is_sink_name(&s.name) {
        errs.push(o.error(
            &child_path(p, "name"),
            format!(
                "{:?} is not a sink name (lowercase letters, digits and '-', at most 63)",
                s.name.chars().take(80).collect::<String>()
            ),
        ));
    }
    let url_field = if s.url_file.is_some() {
        "urlFile"
    } else if s.url_env.is_some() {
        "urlEnv"
    } else {
        "url"
    };
    let url_text = one_of(
        Source {
            inline: s.url.as_deref(),
            file: s.url_file.as_deref(),
            var: s.url_env.as_deref(),
            what: "url, urlFile, urlEnv",
        },
        &child_path(p, url_field),
        o,
        env,
        errs,
    );
    let url = url_text.and_then(|u| {
        let up = child_path(p, "url");
        if u.chars().count() > MAX_URL_CHARS {
            errs.push(o.error(&up, format!("URL longer than {MAX_URL_CHARS} characters")));
            return None;
        }
        match reqwest::Url::parse(u.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                Some(url)
            }
            // The URL may be a credential (Slack): the message does not repeat it.
            Ok(_) => {
                errs.push(o.error(&up, "must be an http:// or https:// URL with a host"));
                None
            }
            Err(e) => {
                errs.push(o.error(&up, format!("not a URL: {e}")));
                None
            }
        }
    });
    let secret = match s.kind {
        SinkKind::Webhook => one_of(
            Source {
                inline: None,
                file: s.secret_file.as_deref(),
                var: s.secret_env.as_deref(),
                what: "secretFile, secretEnv (webhooks are signed)",
            },
            &child_path(
                p,
                if s.secret_env.is_some() {
                    "secretEnv"
                } else {
                    "secretFile"
                },
            ),
            o,
            env,
            errs,
        )
        .and_then(|v| {
            if v.is_empty() {
                errs.push(o.error(&child_path(p, "secretFile"), "the secret is empty"));
                None
            } else {
                Some(v.into_bytes())
            }
        }),
        SinkKind::Slack => {
            if s.secret_file.is_some() || s.secret_env.is_some() {
                errs.push(o.error(
                    &child_path(p, "secretFile"),
                    "Slack incoming webhooks are not signed: no secret (keep the URL secret with urlFile or urlEnv)",
                ));
            }
            None
        }
    };
    let timeout = match &s.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => match duration_within(t, Duration::from_millis(10), Duration::from_secs(300)) {
            Ok(d) => d,
            Err(e) => {
                errs.push(o.error(&child_path(p, "timeout"), e));
                DEFAULT_TIMEOUT
            }
        },
    };
    if errs.len() > before {
        return None;
    }
    Some(SinkConfig {
        name: s.name.clone(),
        kind: s.kind,
        url: url?,
        secret,
        timeout,
    })
}

/// The objects' subscriptions that name a sink the notifications file does not define (each
/// with the object's file, line and field); `config` None: no file was given.
pub fn check_subscribers(loaded: &LoadResult, config: Option<&NotifyConfig>) -> Vec<ConfigError> {
    let objects = loaded
        .canaries
        .iter()
        .map(|c| (c.doc.spec.notifications.as_deref(), &c.origin))
        .chain(
            loaded
                .scheduled
                .iter()
                .map(|s| (s.doc.spec.notifications.as_deref(), &s.origin)),
        );
    objects
        .flat_map(|(subs, origin)| {
            unknown_sinks(subs, config)
                .into_iter()
                .map(move |(path, why)| origin.error(&path, why))
        })
        .collect()
}

/// One object's subscriptions that name a sink `config` does not define: `(field path, why)`.
/// File mode refuses them at start; cluster mode refuses the object (phase Invalid).
pub fn unknown_sinks(
    subs: Option<&[Subscription]>,
    config: Option<&NotifyConfig>,
) -> Vec<(String, String)> {
    subs.unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, s)| config.and_then(|c| c.sink(&s.sink)).is_none())
        .map(|(i, s)| {
            let why = match config {
                None => format!(
                    "no sink {:?}: the daemon has no --notifications file",
                    s.sink
                ),
                Some(_) => format!("no sink {:?} in the daemon's --notifications file", s.sink),
            };
            (
                child_path(&index_path("spec.notifications", i), "sink"),
                why,
            )
        })
        .collect()
}
