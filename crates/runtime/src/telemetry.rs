//! Logging setup: `tracing` to stderr, plain or JSON.
//!
//! JSON lines are flat, as Kubernetes structured logs are: `ts`, `level`, `msg`, then the fields
//! of every span the event is in (a canary task's `namespace`, `canary` and `kind`, an analysis
//! run's `run`, ..., identity first), then the event's own fields, then `target`. A field
//! set again by an inner span or by the event replaces the outer value in place, so every key
//! appears once. Log collectors can then filter on `canary` without knowing which call site
//! wrote the line. Colour only when stderr is a terminal, so a log redirected to a file or
//! collected by a container runtime holds no escape bytes.

use std::fmt;
use std::io::IsTerminal;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_level`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = match format {
        LogFormat::Plain => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => {
            tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stderr))
                .map_err(Into::into)
        }
    };
}

/// The JSON subscriber over any writer (stderr in the daemon, a buffer in tests).
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        // Span fields are kept as JSON objects, so the formatter can lift them to the top.
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .finish()
}

/// Keys the line itself owns; a field of that name is written as `field.<name>` instead of
/// replacing them.
const RESERVED: [&str; 4] = ["ts", "level", "msg", "target"];

/// Span fields written first, in this order, when present.
const IDENTITY: [&str; 5] = ["namespace", "canary", "scheduledanalysis", "kind", "run"];

/// The flat JSON line format (see the module doc).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(stored) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                // Written by `JsonFields`: one JSON object (empty when the span has no fields).
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<Value>(stored.fields.as_str())
                {
                    for (k, v) in map {
                        fields.set(k, v);
                    }
                }
            }
        }
        // Span fields arrive sorted by name; the object's identity goes first, as a reader
        // scans for it (the rest keep their order: the sort is stable).
        fields.0.sort_by_key(|(k, _)| {
            IDENTITY
                .iter()
                .position(|i| i == k)
                .unwrap_or(IDENTITY.len())
        });
        let mut visitor = EventVisitor {
            message: None,
            fields,
        };
        event.record(&mut visitor);
        let meta = event.metadata();
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut out = String::with_capacity(256);
        out.push('{');
        push_pair(&mut out, "ts", &Value::String(ts));
        out.push(',');
        push_pair(&mut out, "level", &Value::String(meta.level().to_string()));
        out.push(',');
        push_pair(
            &mut out,
            "msg",
            &Value::String(visitor.message.unwrap_or_default()),
        );
        for (k, v) in visitor.fields.0 {
            out.push(',');
            push_pair(&mut out, &k, &v);
        }
        out.push(',');
        push_pair(
            &mut out,
            "target",
            &Value::String(meta.target().to_string()),
        );
        out.push('}');
        writeln!(writer, "{out}")
    }
}

/// Appends `"key":value` (both JSON-escaped).
fn push_pair(out: &mut String, key: &str, value: &Value) {
    out.push_str(&Value::String(key.to_string()).to_string());
    out.push(':');
    out.push_str(&value.to_string());
}

/// Fields in first-seen order; setting a key again replaces its value in place.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn set(&mut self, key: String, value: Value) {
        let key = if RESERVED.contains(&key.as_str()) {
            format!("field.{key}")
        } else {
            key
        };
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

/// Collects an event's message and fields as JSON values (numbers and booleans stay typed).
struct EventVisitor {
    message: Option<String>,
    fields: Fields,
}

impl EventVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.set(field.name().to_string(), value);
        }
    }
}

impl Visit for EventVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those are written as strings ("NaN", "inf").
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    /// Every line `f` logs, parsed.
    fn lines(f: impl FnOnce()) -> (Vec<Value>, String) {
        let buf = Buf::default();
        let sub = json_subscriber(EnvFilter::new("debug"), buf.clone());
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let parsed = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (parsed, text)
    }

    #[test]
    fn span_fields_are_top_level_fields_of_every_line_inside() {
        let (v, text) = lines(|| {
            let canary = tracing::info_span!(
                "canary",
                namespace = "bookinfo",
                canary = "reviews",
                kind = "Canary"
            );
            let _c = canary.enter();
            tracing::info!(
                reason = "RolloutStepCompleted",
                step = "2/6",
                "Rollout step 2/6 completed"
            );
            let run = tracing::info_span!("analysis", run = "v2-step-1", templates = "apdex");
            let _r = run.enter();
            tracing::warn!(
                metric = "apdex",
                value = 0.5,
                count = 3u64,
                ok = false,
                "measured"
            );
        });
        assert_eq!(v.len(), 2, "{text}");
        assert_eq!(v[0]["namespace"], "bookinfo");
        assert_eq!(v[0]["canary"], "reviews");
        assert_eq!(v[0]["kind"], "Canary");
        assert_eq!(v[0]["step"], "2/6");
        assert_eq!(v[0]["msg"], "Rollout step 2/6 completed");
        assert_eq!(v[0]["level"], "INFO");
        assert!(v[0].get("run").is_none(), "{text}");
        assert_eq!(v[1]["canary"], "reviews");
        assert_eq!(v[1]["run"], "v2-step-1");
        assert_eq!(v[1]["metric"], "apdex");
        assert_eq!(v[1]["value"], 0.5);
        assert_eq!(v[1]["count"], 3);
        assert_eq!(v[1]["ok"], false);
        assert_eq!(v[1]["level"], "WARN");
        for line in &v {
            assert!(
                line.get("span").is_none() && line.get("spans").is_none(),
                "{text}"
            );
            assert!(line.get("fields").is_none(), "{text}");
            assert!(
                chrono::DateTime::parse_from_rfc3339(line["ts"].as_str().unwrap()).is_ok(),
                "{text}"
            );
            assert_eq!(line["target"], module_path!());
        }
        // The keys come in the documented order: ts, level, msg, span fields, event fields.
        let first = text.lines().next().unwrap();
        let at = |k: &str| first.find(&format!("\"{k}\":")).unwrap();
        assert!(at("ts") < at("level") && at("level") < at("msg"), "{first}");
        assert!(at("msg") < at("namespace"), "{first}");
        assert!(
            at("namespace") < at("canary") && at("canary") < at("kind"),
            "{first}"
        );
        assert!(at("kind") < at("reason"), "{first}");
    }

    #[test]
    fn inner_values_replace_outer_ones_and_each_key_appears_once() {
        let (v, text) = lines(|| {
            let outer = tracing::info_span!("canary", canary = "reviews", run = "outer");
            let _o = outer.enter();
            let inner = tracing::info_span!("analysis", run = "inner");
            let _i = inner.enter();
            tracing::info!(canary = "ratings", "overridden");
        });
        assert_eq!(v[0]["run"], "inner", "{text}");
        assert_eq!(v[0]["canary"], "ratings", "{text}");
        assert_eq!(text.matches("\"run\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"canary\"").count(), 1, "{text}");
    }

    #[test]
    fn fields_recorded_later_on_a_span_are_shown() {
        let (v, text) = lines(|| {
            let span = tracing::info_span!("run", run = tracing::field::Empty);
            span.record("run", "late");
            let _s = span.enter();
            tracing::info!("x");
        });
        assert_eq!(v[0]["run"], "late", "{text}");
    }

    #[test]
    fn reserved_names_non_finite_numbers_and_escapes_stay_valid_json() {
        let (v, text) = lines(|| {
            tracing::info!(
                msg = "field",
                level = 3,
                value = f64::NAN,
                quote = "a \"b\"\n\u{1b}[31m",
                "line \"one\"\nline two"
            );
        });
        assert_eq!(v[0]["msg"], "line \"one\"\nline two", "{text}");
        assert_eq!(v[0]["level"], "INFO");
        assert_eq!(v[0]["field.msg"], "field");
        assert_eq!(v[0]["field.level"], 3);
        assert_eq!(v[0]["value"], "NaN");
        assert_eq!(v[0]["quote"], "a \"b\"\n\u{1b}[31m");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.as_bytes().contains(&0x1b), "{text}");
    }
}
