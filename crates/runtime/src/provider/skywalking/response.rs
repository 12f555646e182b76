//! Decoding OAP responses: the HTTP/GraphQL envelope, per-alias results, and
//! the value shapes (MQE, v2 `readMetricsValues`, raw user queries).
//!
//! Every failure mode (non-2xx, HTML from a gateway, `errors`, `data: null`,
//! MQE `error`, malformed JSON) becomes an `Err`, never a value: a verdict must
//! not be computed from an error page.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::duration::{MAX_POINTS, Window};
use super::queries::{exec_expression, read_metrics_values, read_metrics_values_empty};
use super::{DroppedPoints, ProviderError, SampleValue};

/// Longest body excerpt kept in an error.
const EXCERPT_CHARS: usize = 200;
/// Most GraphQL error messages kept in one error (each cut to [`EXCERPT_CHARS`]).
const MAX_MESSAGES: usize = 5;
/// Most JSON values (objects, arrays, scalars) one response may hold. A decoded point costs
/// about 1 KiB, so this caps a decoded response near 20 MiB whatever its byte size;
/// legitimate answers hold 3 values per point (20 aliases of 500-point windows fit).
pub const MAX_JSON_VALUES: usize = 32_768;

/// Counts the JSON values of a document without building it, stopping past `limit`.
/// `Ok(false)`: over the limit; `Err`: not JSON (left to the real decoder to report).
fn within_value_budget(body: &[u8], limit: usize) -> Result<bool, serde_json::Error> {
    use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess};
    use std::cell::Cell;

    struct Budget<'a> {
        left: &'a Cell<usize>,
        over: &'a Cell<bool>,
    }
    impl Budget<'_> {
        fn tick<E: serde::de::Error>(&self) -> Result<(), E> {
            match self.left.get().checked_sub(1) {
                Some(n) => {
                    self.left.set(n);
                    Ok(())
                }
                None => {
                    self.over.set(true);
                    Err(E::custom("too many JSON values"))
                }
            }
        }
        fn again(&self) -> Budget<'_> {
            Budget {
                left: self.left,
                over: self.over,
            }
        }
    }
    impl<'de> DeserializeSeed<'de> for Budget<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Budget<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
            self.tick()
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
            self.tick()
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
            self.tick()
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
            self.tick()
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
            self.tick()
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.tick()?;
            while seq.next_element_seed(self.again())?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.tick()?;
            while map.next_key::<IgnoredAny>()?.is_some() {
                map.next_value_seed(self.again())?;
            }
            Ok(())
        }
    }
    let left = Cell::new(limit);
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    match (Budget {
        left: &left,
        over: &over,
    })
    .deserialize(&mut de)
    {
        Ok(()) => Ok(true),
        Err(_) if over.get() => Ok(false),
        Err(e) => Err(e),
    }
}

/// One GraphQL error; only `message` and `path` matter to us.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct GqlError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub path: Option<Vec<Value>>,
}

/// `data`'s top-level fields in document (response) order; serde_json's map
/// would sort them, but raw queries bind the *first* alias as the main value.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OrderedData(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedData;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedData, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(OrderedData(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A decoded GraphQL response body.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct Envelope {
    #[serde(default)]
    pub data: Option<OrderedData>,
    #[serde(default)]
    pub errors: Option<Vec<GqlError>>,
}

/// The first [`EXCERPT_CHARS`] characters with whitespace runs collapsed; it never
/// copies more of `text` than it keeps, however long the text is.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    let mut words = text.split_whitespace();
    for word in words.by_ref() {
        if kept > 0 {
            out.push(' ');
            kept += 1;
        }
        for c in word.chars() {
            if kept >= EXCERPT_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            kept += 1;
        }
        if kept >= EXCERPT_CHARS {
            if words.next().is_some() {
                out.push('…');
            }
            return out;
        }
    }
    out
}

/// Server messages, bounded in count and length: an error is stored in the run's status.
fn messages(errors: &[GqlError]) -> Vec<String> {
    let mut out: Vec<String> = errors
        .iter()
        .take(MAX_MESSAGES)
        .map(|e| excerpt(&e.message))
        .collect();
    if errors.len() > MAX_MESSAGES {
        out.push(format!("… and {} more", errors.len() - MAX_MESSAGES));
    }
    out
}

/// How a point's `id` names its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdKind {
    /// MQE: epoch milliseconds of the bucket start.
    EpochMs,
    /// v2 `KVInt`: the bucket (`yyyyMMddHHmm`) inside a storage-specific id.
    Bucket,
}

/// Puts dated points into the window's buckets: a point whose id names no bucket of the
/// window is dropped (and counted), so data from another time never becomes evidence.
/// More points than buckets is refused outright: the OAP sends one per bucket.
pub(crate) fn place<'a>(
    what: &str,
    points: impl ExactSizeIterator<Item = (Option<&'a str>, Option<f64>)>,
    w: &Window,
    kind: IdKind,
    dropped: &mut DroppedPoints,
) -> Result<Vec<Option<f64>>, ProviderError> {
    let buckets = w.points as usize;
    if points.len() > buckets {
        return Err(ProviderError::TooManyPoints {
            what: what.to_string(),
            got: points.len(),
            buckets: w.points,
        });
    }
    let mut slots: Vec<Option<Option<f64>>> = vec![None; buckets];
    for (id, value) in points {
        let Some(id) = id else {
            dropped.undated += 1;
            continue;
        };
        let slot = match kind {
            IdKind::EpochMs => w.slot_of_epoch_ms(id),
            IdKind::Bucket => w.slot_of_bucket_id(id),
        };
        match slot.and_then(|i| slots.get_mut(i)) {
            None => dropped.outside += 1,
            Some(Some(_)) => dropped.duplicate += 1,
            Some(s @ None) => *s = Some(value),
        }
    }
    Ok(slots.into_iter().map(Option::flatten).collect())
}

/// Undated points of a raw query (the query did not select `id`): kept in order, bounded
/// by the window's bucket count.
fn positional(
    what: &str,
    values: Vec<Option<f64>>,
    w: &Window,
) -> Result<Vec<Option<f64>>, ProviderError> {
    if values.len() > w.points as usize {
        return Err(ProviderError::TooManyPoints {
            what: what.to_string(),
            got: values.len(),
            buckets: w.points,
        });
    }
    Ok(values)
}

/// Turns an HTTP response into an envelope or the matching error.
pub(crate) fn decode(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Envelope, ProviderError> {
    let text = String::from_utf8_lossy(body);
    let html = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("html"))
        || text.trim_start().starts_with('<');
    if html {
        return Err(ProviderError::Http {
            status,
            body_excerpt: format!(
                "HTML response (a proxy or gateway page?): {}",
                excerpt(&text)
            ),
        });
    }
    // Counted before anything is built: a decoded tree is ~100x the bytes of dense JSON.
    if let Ok(false) = within_value_budget(body, MAX_JSON_VALUES) {
        return Err(ProviderError::ResponseTooComplex {
            limit: MAX_JSON_VALUES,
        });
    }
    let parsed = serde_json::from_slice::<Envelope>(body);
    if !(200..300).contains(&status) {
        // OAP 9.x+ answers validation errors with 400 and a GraphQL body.
        if let Ok(Envelope {
            errors: Some(errors),
            ..
        }) = &parsed
            && !errors.is_empty()
        {
            return Err(ProviderError::GraphQl(messages(errors)));
        }
        return Err(ProviderError::Http {
            status,
            body_excerpt: excerpt(&text),
        });
    }
    parsed.map_err(|e| ProviderError::Decode(format!("{e}; body: {}", excerpt(&text))))
}

impl Envelope {
    fn errors(&self) -> &[GqlError] {
        self.errors.as_deref().unwrap_or(&[])
    }

    /// The value of one alias of a batch. An error whose `path[0]` is another
    /// alias does not fail this one (if `data` survived); an error without a
    /// path fails every alias.
    pub fn field(&self, alias: &str) -> Result<&Value, ProviderError> {
        let errors = self.errors();
        let Some(data) = &self.data else {
            return Err(if errors.is_empty() {
                ProviderError::NoDataField
            } else {
                ProviderError::GraphQl(messages(errors))
            });
        };
        let relevant: Vec<GqlError> = errors
            .iter()
            .filter(|e| match e.path.as_deref().and_then(|p| p.first()) {
                Some(Value::String(first)) => first == alias,
                _ => true,
            })
            .cloned()
            .collect();
        if !relevant.is_empty() {
            return Err(ProviderError::GraphQl(messages(&relevant)));
        }
        match data.0.iter().find(|(k, _)| k == alias) {
            Some((_, Value::Null)) | None => Err(ProviderError::NoDataField),
            Some((_, v)) => Ok(v),
        }
    }

    /// All of `data` for a raw query: any error fails the whole measurement.
    pub fn into_data(self) -> Result<Vec<(String, Value)>, ProviderError> {
        if !self.errors().is_empty() {
            return Err(ProviderError::GraphQl(messages(self.errors())));
        }
        match self.data {
            Some(d) if !d.0.is_empty() => Ok(d.0),
            _ => Err(ProviderError::NoDataField),
        }
    }
}

/// An MQE value string → f64. `null`, `"NaN"`, `"∞"`, `"-∞"` and anything
/// unparsable (e.g. a locale's `"0,995"`) are no-data points.
pub(crate) fn parse_mqe_value(s: Option<&str>) -> Option<f64> {
    s.and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// One MQE label set, reduced to what we keep: each point's id (its bucket) and value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MqeSeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(Option<String>, Option<f64>)>,
}

/// A main value plus named extra values.
pub(crate) type Parsed = (SampleValue, BTreeMap<String, SampleValue>);

/// Where the points of a response are checked: the requested window, whether the points
/// carry ids (a raw query may not select them), and the tally of dropped points.
pub(crate) struct Check<'a> {
    pub window: &'a Window,
    pub dated: bool,
    pub dropped: &'a mut DroppedPoints,
}

/// One MQE label set's values, each checked against the window.
fn mqe_values(
    kind: &str,
    what: &str,
    points: &[(Option<String>, Option<f64>)],
    check: &mut Check<'_>,
) -> Result<Vec<Option<f64>>, ProviderError> {
    match kind {
        // avg/sum/count have no id (an aggregate of the requested window); latest/max/min
        // carry the chosen point's bucket, which must be one of the window's.
        "SINGLE_VALUE" => Ok(match points.first() {
            Some((Some(id), v)) if check.dated => {
                if check.window.slot_of_epoch_ms(id).is_some() {
                    vec![*v]
                } else {
                    check.dropped.outside += 1;
                    vec![None]
                }
            }
            Some((_, v)) => vec![*v],
            None => Vec::new(),
        }),
        // Ids of lists name entities, not buckets.
        "SORTED_LIST" | "RECORD_LIST" => {
            if points.len() > MAX_POINTS as usize {
                return Err(ProviderError::TooManyPoints {
                    what: what.to_string(),
                    got: points.len(),
                    buckets: MAX_POINTS,
                });
            }
            Ok(points.iter().map(|(_, v)| *v).collect())
        }
        _ if check.dated => place(
            what,
            points.iter().map(|(id, v)| (id.as_deref(), *v)),
            check.window,
            IdKind::EpochMs,
            check.dropped,
        ),
        _ => positional(what, points.iter().map(|(_, v)| *v).collect(), check.window),
    }
}

/// Shared MQE interpretation for typed and raw responses.
///
/// - `error` set → `Err(Mqe)`.
/// - no result (e.g. `UNKNOWN` for an invalid entity) → no data.
/// - `SINGLE_VALUE` → `Single` of the first value.
/// - otherwise a series, one slot per bucket of the window (points from other times
///   dropped); with several label sets (percentiles) the *first* is the main value and
///   every labeled set is also in `named`, keyed `p=99`.
pub(crate) fn mqe_core(
    kind: &str,
    error: Option<&str>,
    series: Vec<MqeSeries>,
    check: &mut Check<'_>,
) -> Result<Parsed, ProviderError> {
    if let Some(e) = error.filter(|e| !e.is_empty()) {
        return Err(ProviderError::Mqe(excerpt(e)));
    }
    let single = kind == "SINGLE_VALUE";
    let shape = |values: Vec<Option<f64>>| {
        if single {
            SampleValue::Single(values.first().copied().flatten())
        } else {
            SampleValue::Series(values)
        }
    };
    let mut named = BTreeMap::new();
    let mut main = None;
    for s in &series {
        let key = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let what = if key.is_empty() {
            "MQE series".to_string()
        } else {
            format!("MQE series {{{key}}}")
        };
        let value = shape(mqe_values(kind, &what, &s.points, check)?);
        if main.is_none() {
            main = Some(value.clone());
        }
        if !s.labels.is_empty() {
            named.insert(key, value);
        }
    }
    let main = match main {
        Some(m) => m,
        None if single => SampleValue::Single(None),
        None => SampleValue::Series(Vec::new()),
    };
    Ok((main, named))
}

/// Typed MQE result → sample value.
pub(crate) fn parse_mqe(
    r: &exec_expression::ExecExpressionResult,
    check: &mut Check<'_>,
) -> Result<Parsed, ProviderError> {
    use exec_expression::ExpressionResultType as T;
    let kind = match &r.type_ {
        T::UNKNOWN => "UNKNOWN",
        T::SINGLE_VALUE => "SINGLE_VALUE",
        T::TIME_SERIES_VALUES => "TIME_SERIES_VALUES",
        T::SORTED_LIST => "SORTED_LIST",
        T::RECORD_LIST => "RECORD_LIST",
        T::Other(s) => s.as_str(),
    };
    let series = r
        .results
        .iter()
        .map(|s| MqeSeries {
            labels: s
                .metric
                .as_ref()
                .map(|m| {
                    m.labels
                        .iter()
                        .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
            points: s
                .values
                .iter()
                .map(|v| (v.id.clone(), parse_mqe_value(v.value.as_deref())))
                .collect(),
        })
        .collect();
    mqe_core(kind, r.error.as_deref(), series, check)
}

/// v2 without `isEmptyValue` (OAP < 9.5): a 0 is indistinguishable from no
/// data there, so it is kept as a real 0.
pub(crate) fn parse_v2(
    r: &read_metrics_values::ReadMetricsValuesResult,
    check: &mut Check<'_>,
) -> Result<SampleValue, ProviderError> {
    let values = r
        .values
        .as_ref()
        .map(|v| v.values.as_slice())
        .unwrap_or(&[]);
    place(
        "readMetricsValues",
        values
            .iter()
            .map(|kv| (Some(kv.id.as_str()), Some(kv.value as f64))),
        check.window,
        IdKind::Bucket,
        check.dropped,
    )
    .map(SampleValue::Series)
}

/// v2 with `isEmptyValue` (OAP >= 9.5): empty points are no data.
pub(crate) fn parse_v2_empty(
    r: &read_metrics_values_empty::ReadMetricsValuesEmptyResult,
    check: &mut Check<'_>,
) -> Result<SampleValue, ProviderError> {
    let values = r
        .values
        .as_ref()
        .map(|v| v.values.as_slice())
        .unwrap_or(&[]);
    place(
        "readMetricsValues",
        values.iter().map(|kv| {
            (
                Some(kv.id.as_str()),
                (!kv.is_empty_value).then_some(kv.value as f64),
            )
        }),
        check.window,
        IdKind::Bucket,
        check.dropped,
    )
    .map(SampleValue::Series)
}

/// A JSON number or numeric string → f64 (non-finite → None).
fn json_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => parse_mqe_value(Some(s)),
        _ => None,
    }
}

/// One v2 KVInt-like object → point.
fn v2_point(kv: &Value) -> Option<f64> {
    if kv.get("isEmptyValue").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    kv.get("value").and_then(json_number)
}

/// A point's `id` as text (a JSON string or number; null/absent → None).
fn json_id(p: &Value) -> Option<String> {
    match p.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Interprets one top-level alias of a raw query's `data`.
///
/// v2 shape (`values.values[].value`) → series; MQE shape (`results[]`) →
/// series/single with MQE rules; a number (or numeric string, or null) →
/// single; `{value, isEmptyValue}` → single; otherwise every `value` leaf in
/// order → series. When the query selected `id`, points are checked against the
/// window like typed results; without ids they are kept in order (never more than
/// the window's buckets).
pub(crate) fn parse_raw_value(
    alias: &str,
    v: &Value,
    window: &Window,
    dropped: &mut DroppedPoints,
) -> Result<SampleValue, ProviderError> {
    match v {
        Value::Null => return Ok(SampleValue::Single(None)),
        Value::Number(_) | Value::String(_) => return Ok(SampleValue::Single(json_number(v))),
        _ => {}
    }
    if let Some(values) = v
        .get("values")
        .and_then(|x| x.get("values"))
        .and_then(Value::as_array)
    {
        let dated = values.iter().any(|p| p.get("id").is_some());
        let ids: Vec<Option<String>> = values.iter().map(json_id).collect();
        let points = ids
            .iter()
            .map(Option::as_deref)
            .zip(values.iter().map(v2_point));
        let what = alias.to_string();
        return if dated {
            place(&what, points, window, IdKind::Bucket, dropped)
        } else {
            positional(&what, values.iter().map(v2_point).collect(), window)
        }
        .map(SampleValue::Series);
    }
    if let Some(results) = v.get("results").and_then(Value::as_array) {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("TIME_SERIES_VALUES");
        let error = v.get("error").and_then(Value::as_str);
        let values_of = |r: &Value| -> Vec<Value> {
            r.get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let dated = results
            .iter()
            .any(|r| values_of(r).iter().any(|p| p.get("id").is_some()));
        let series = results
            .iter()
            .map(|r| MqeSeries {
                labels: r
                    .get("metric")
                    .and_then(|m| m.get("labels"))
                    .and_then(Value::as_array)
                    .map(|ls| {
                        ls.iter()
                            .map(|l| {
                                let s = |k| {
                                    l.get(k)
                                        .and_then(Value::as_str)
                                        .unwrap_or_default()
                                        .to_string()
                                };
                                (s("key"), s("value"))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                points: r
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .map(|x| (json_id(x), x.get("value").and_then(json_number)))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        let mut check = Check {
            window,
            dated,
            dropped,
        };
        return mqe_core(kind, error, series, &mut check).map(|(main, _)| main);
    }
    if let Some(obj) = v.as_object()
        && obj.contains_key("value")
        && obj.values().all(|x| !x.is_array() && !x.is_object())
    {
        return Ok(SampleValue::Single(v2_point(v)));
    }
    let mut leaves = Vec::new();
    collect_value_leaves(v, &mut leaves);
    if leaves.len() > MAX_POINTS as usize {
        return Err(ProviderError::TooManyPoints {
            what: alias.to_string(),
            got: leaves.len(),
            buckets: MAX_POINTS,
        });
    }
    Ok(SampleValue::Series(leaves))
}

/// Removes from one alias of a raw query's `data` the points [`parse_raw_value`] drops
/// (dated outside the window, undated among dated ones, repeated buckets), so whoever binds
/// the raw `data` itself (Argo's `result`) sees the same evidence as the parsed values.
pub(crate) fn retain_window_points(v: &mut Value, w: &Window) {
    fn retain_dated(values: &mut Vec<Value>, slot: impl Fn(&str) -> Option<usize>) {
        let mut seen = std::collections::BTreeSet::new();
        values.retain(|p| {
            json_id(p)
                .and_then(|id| slot(&id))
                .is_some_and(|i| seen.insert(i))
        });
    }
    if let Some(values) = v
        .get_mut("values")
        .and_then(|x| x.get_mut("values"))
        .and_then(Value::as_array_mut)
    {
        if values.iter().any(|p| p.get("id").is_some()) {
            retain_dated(values, |id| w.slot_of_bucket_id(id));
        }
        return;
    }
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("TIME_SERIES_VALUES")
        .to_string();
    if matches!(kind.as_str(), "SORTED_LIST" | "RECORD_LIST") {
        return;
    }
    let Some(results) = v.get_mut("results").and_then(Value::as_array_mut) else {
        return;
    };
    let dated = results.iter().any(|r| {
        r.get("values")
            .and_then(Value::as_array)
            .is_some_and(|vs| vs.iter().any(|p| p.get("id").is_some()))
    });
    if !dated {
        return;
    }
    for values in results
        .iter_mut()
        .filter_map(|r| r.get_mut("values").and_then(Value::as_array_mut))
    {
        if kind == "SINGLE_VALUE" {
            // avg/sum/count have no id; a named bucket must be one of the window's.
            values.retain(|p| json_id(p).is_none_or(|id| w.slot_of_epoch_ms(&id).is_some()));
        } else {
            retain_dated(values, |id| w.slot_of_epoch_ms(id));
        }
    }
}

fn collect_value_leaves(v: &Value, out: &mut Vec<Option<f64>>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| collect_value_leaves(x, out)),
        Value::Object(map) => {
            if let Some(leaf) = map.get("value")
                && !leaf.is_array()
                && !leaf.is_object()
            {
                out.push(v2_point(v));
            }
            for (k, x) in map {
                if k != "value" || x.is_array() || x.is_object() {
                    collect_value_leaves(x, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(body: &str) -> Envelope {
        decode(200, Some("application/json"), body.as_bytes()).expect("decodes")
    }

    /// A MINUTE window of `n` buckets starting 2024-07-01 12:00 UTC.
    fn win(n: u32) -> Window {
        let now = chrono::DateTime::from_timestamp(1_719_835_200 + i64::from(n) * 60 + 10, 0)
            .expect("time");
        let tz = chrono::FixedOffset::east_opt(0).expect("utc");
        super::super::duration::window(
            now,
            tz,
            std::time::Duration::from_secs(u64::from(n) * 60),
            super::super::Step::Minute,
        )
        .expect("window")
    }

    /// MQE id (epoch ms) of bucket `k` of [`win`].
    fn ms(k: i64) -> String {
        (1_719_835_200_000_i64 + k * 60_000).to_string()
    }

    fn mqe_in(v: Value, w: &Window) -> Result<(Parsed, DroppedPoints), ProviderError> {
        let r: exec_expression::ExecExpressionResult =
            serde_json::from_value(v).expect("typed MQE result");
        let mut dropped = DroppedPoints::default();
        let mut check = Check {
            window: w,
            dated: true,
            dropped: &mut dropped,
        };
        let parsed = parse_mqe(&r, &mut check)?;
        Ok((parsed, dropped))
    }

    fn mqe(v: Value) -> Result<Parsed, ProviderError> {
        mqe_in(v, &win(6)).map(|(p, _)| p)
    }

    #[test]
    fn mqe_healthy_series() {
        let (main, named) = mqe(json!({"type":"TIME_SERIES_VALUES","error":null,"results":[
            {"metric":{"labels":[]},"values":[{"id":"1719835200000","value":"9950"},{"id":"1719835260000","value":"0.995"}]}]}))
        .expect("ok");
        assert_eq!(
            main,
            SampleValue::Series(vec![Some(9950.0), Some(0.995), None, None, None, None])
        );
        assert!(named.is_empty());
    }

    #[test]
    fn mqe_null_nan_infinity_are_no_data() {
        let (main, _) = mqe(json!({"type":"TIME_SERIES_VALUES","error":null,"results":[
            {"metric":null,"values":[{"id":ms(0),"value":null},{"id":ms(1),"value":"NaN"},{"id":ms(2),"value":"∞"},
             {"id":ms(3),"value":"-∞"},{"id":ms(4),"value":"0,995"},{"id":ms(5),"value":"-5"}]}]}))
        .expect("ok");
        assert_eq!(
            main,
            SampleValue::Series(vec![None, None, None, None, None, Some(-5.0)])
        );
    }

    #[test]
    fn mqe_points_from_another_time_are_dropped_and_counted() {
        let w = win(3);
        let day = 86_400_000_i64;
        let shifted = |k: i64| (1_719_835_200_000_i64 + k * 60_000 - day).to_string();
        // Shifted 24 h back: nothing is evidence.
        let ((main, _), dropped) = mqe_in(
            json!({"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},
                "values":[{"id":shifted(0),"value":"9999"},{"id":shifted(1),"value":"9999"},{"id":shifted(2),"value":"9999"}]}]}),
            &w,
        )
        .expect("ok");
        assert!(main.is_empty(), "{main:?}");
        assert_eq!(dropped.outside, 3);
        // 1970, the far future, no id, a duplicate: dropped; the real point stays in its bucket.
        let ((main, _), dropped) = mqe_in(
            json!({"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},
                "values":[{"id":"0","value":"10000"},{"id":ms(1),"value":"5000"},{"id":ms(1),"value":"10000"}]}]}),
            &w,
        )
        .expect("ok");
        assert_eq!(main, SampleValue::Series(vec![None, Some(5000.0), None]));
        assert_eq!((dropped.outside, dropped.duplicate), (1, 1));
        let ((main, _), dropped) = mqe_in(
            json!({"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},
                "values":[{"id":"4102444800000","value":"10000"},{"id":null,"value":"10000"}]}]}),
            &w,
        )
        .expect("ok");
        assert!(main.is_empty());
        assert_eq!((dropped.outside, dropped.undated), (1, 1));
        assert_eq!(
            dropped.to_string(),
            "2 point(s) dropped: 1 outside the requested window (is the OAP time zone right?), 1 without a readable bucket id"
        );
        // latest() names its bucket: one from another time is no value.
        let ((main, _), dropped) = mqe_in(
            json!({"type":"SINGLE_VALUE","error":null,"results":[{"metric":{"labels":[]},
                "values":[{"id":shifted(2),"value":"10000"}]}]}),
            &w,
        )
        .expect("ok");
        assert_eq!(main, SampleValue::Single(None));
        assert_eq!(dropped.outside, 1);
    }

    #[test]
    fn more_points_than_buckets_is_an_error() {
        let values: Vec<Value> = (0..4).map(|k| json!({"id": ms(k), "value": "1"})).collect();
        let e = mqe_in(
            json!({"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},"values":values}]}),
            &win(3),
        );
        assert!(
            matches!(
                e,
                Err(ProviderError::TooManyPoints {
                    got: 4,
                    buckets: 3,
                    ..
                })
            ),
            "{e:?}"
        );
        let many: Vec<Value> = (0..600).map(|_| json!({"value": 1})).collect();
        let mut d = DroppedPoints::default();
        let e = parse_raw_value("a", &json!({"values": {"values": many}}), &win(3), &mut d);
        assert!(
            matches!(e, Err(ProviderError::TooManyPoints { .. })),
            "{e:?}"
        );
        let e = parse_raw_value("a", &json!({"list": many}), &win(3), &mut d);
        assert!(
            matches!(e, Err(ProviderError::TooManyPoints { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn mqe_error_and_unknown() {
        let e =
            mqe(json!({"type":"UNKNOWN","results":[],"error":"Metric: [foo_bar] does not exist."}));
        assert_eq!(
            e,
            Err(ProviderError::Mqe(
                "Metric: [foo_bar] does not exist.".into()
            ))
        );
        let (main, _) = mqe(json!({"type":"UNKNOWN","results":[],"error":null})).expect("ok");
        assert_eq!(main, SampleValue::Series(vec![]));
        assert!(main.is_empty());
    }

    #[test]
    fn mqe_single_value() {
        let (main, _) = mqe(json!({"type":"SINGLE_VALUE","error":null,"results":[
            {"metric":{"labels":[]},"values":[{"id":null,"value":"10000"}]}]}))
        .expect("ok");
        assert_eq!(main, SampleValue::Single(Some(10000.0)));
        let (main, _) = mqe(json!({"type":"SINGLE_VALUE","error":null,"results":[]})).expect("ok");
        assert_eq!(main, SampleValue::Single(None));
    }

    #[test]
    fn mqe_labeled_first_is_main_all_named() {
        let (main, named) = mqe_in(json!({"type":"TIME_SERIES_VALUES","error":null,"results":[
            {"metric":{"labels":[{"key":"p","value":"50"}]},"values":[{"id":ms(1),"value":"120"}]},
            {"metric":{"labels":[{"key":"p","value":"99"}]},"values":[{"id":ms(1),"value":"480"}]}]}), &win(2))
        .expect("ok").0;
        assert_eq!(main, SampleValue::Series(vec![None, Some(120.0)]));
        assert_eq!(
            named.get("p=50"),
            Some(&SampleValue::Series(vec![None, Some(120.0)]))
        );
        assert_eq!(
            named.get("p=99"),
            Some(&SampleValue::Series(vec![None, Some(480.0)]))
        );
    }

    #[test]
    fn v2_with_and_without_is_empty_value() {
        let w = win(3);
        let mut dropped = DroppedPoints::default();
        let mut check = Check {
            window: &w,
            dated: true,
            dropped: &mut dropped,
        };
        let r: read_metrics_values_empty::ReadMetricsValuesEmptyResult = serde_json::from_value(json!(
            {"label":null,"values":{"values":[{"id":"202407011200_cmV2.1","value":9950,"isEmptyValue":false},
                {"id":"202407011201_cmV2.1","value":0,"isEmptyValue":true},
                {"id":"202406301202_cmV2.1","value":10000,"isEmptyValue":false}]}}
        )).expect("typed");
        assert_eq!(
            parse_v2_empty(&r, &mut check),
            Ok(SampleValue::Series(vec![Some(9950.0), None, None]))
        );
        let r: read_metrics_values::ReadMetricsValuesResult = serde_json::from_value(json!(
            {"label":null,"values":{"values":[{"id":"service_apdex_202407011200_x","value":9950},
                {"id":"202407011201_ILLEGAL_ENTITY","value":0},{"id":"a","value":10000}]}}
        ))
        .expect("typed");
        assert_eq!(
            parse_v2(&r, &mut check),
            Ok(SampleValue::Series(vec![Some(9950.0), Some(0.0), None]))
        );
        assert_eq!((dropped.outside, dropped.undated), (2, 0));
    }

    #[test]
    fn error_texts_are_bounded() {
        let many: Vec<Value> = (0..1000)
            .map(|i| json!({"message": format!("{i} {}", "y".repeat(10_000))}))
            .collect();
        let body = json!({"errors": many, "data": null}).to_string();
        let envelope = env(&body);
        match envelope.field("m0") {
            Err(ProviderError::GraphQl(m)) => {
                assert_eq!(m.len(), MAX_MESSAGES + 1);
                assert!(m.iter().all(|x| x.chars().count() <= EXCERPT_CHARS + 1));
                assert_eq!(m[MAX_MESSAGES], "… and 995 more");
            }
            other => panic!("{other:?}"),
        }
        let e = mqe(json!({"type":"UNKNOWN","results":[],"error": "z".repeat(100_000)}));
        assert!(matches!(e, Err(ProviderError::Mqe(m)) if m.chars().count() == EXCERPT_CHARS + 1));
        assert_eq!(excerpt("  a \n b  "), "a b");
    }

    #[test]
    fn responses_with_too_many_values_are_refused_before_decoding() {
        let ok = format!(
            "{{\"data\":{{\"m0\":[{}]}}}}",
            vec!["{\"id\":\"1\",\"value\":\"2\"}"; 100].join(",")
        );
        // 3 containers + 100 objects of 2 scalars each.
        assert_eq!(within_value_budget(ok.as_bytes(), 303).ok(), Some(true));
        assert_eq!(within_value_budget(ok.as_bytes(), 302).ok(), Some(false));
        assert!(within_value_budget(b"{\"a\":", 10).is_err());
        let dense = format!(
            "{{\"data\":{{\"m0\":[{}]}}}}",
            vec!["1"; MAX_JSON_VALUES].join(",")
        );
        assert_eq!(
            decode(200, Some("application/json"), dense.as_bytes()),
            Err(ProviderError::ResponseTooComplex {
                limit: MAX_JSON_VALUES
            })
        );
        // Junk is still reported as junk.
        assert!(matches!(
            decode(200, None, b"{\"data\": [1, {}"),
            Err(ProviderError::Decode(_))
        ));
        assert_eq!(
            excerpt(&"w ".repeat(300)).chars().count(),
            EXCERPT_CHARS + 1
        );
    }

    #[test]
    fn graphql_errors_without_data_fail_every_alias() {
        let e = env(
            r#"{"errors":[{"message":"Exception while fetching data (/m0) : boom","path":["m0"]}],"data":null}"#,
        );
        assert_eq!(
            e.field("m1"),
            Err(ProviderError::GraphQl(vec![
                "Exception while fetching data (/m0) : boom".into()
            ]))
        );
        let e = env(
            r#"{"errors":[{"message":"The variables input contains a field name 'coldStage' that is not defined for input object type 'Duration' "}]}"#,
        );
        assert!(
            matches!(e.field("m0"), Err(ProviderError::GraphQl(m)) if m[0].contains("coldStage"))
        );
    }

    #[test]
    fn graphql_error_with_data_fails_only_its_alias() {
        let e = env(
            r#"{"errors":[{"message":"bad m0","path":["m0"]}],"data":{"m0":null,"m1":{"x":1}}}"#,
        );
        assert_eq!(
            e.field("m0"),
            Err(ProviderError::GraphQl(vec!["bad m0".into()]))
        );
        assert_eq!(e.field("m1"), Ok(&json!({"x":1})));
        let e = env(r#"{"errors":[{"message":"global"}],"data":{"m1":{"x":1}}}"#);
        assert!(e.field("m1").is_err());
        let e = env(r#"{"data":{"m1":{"x":1}}}"#);
        assert_eq!(e.field("m2"), Err(ProviderError::NoDataField));
        let e = env(r#"{"data":null}"#);
        assert_eq!(e.field("m0"), Err(ProviderError::NoDataField));
        assert_eq!(env("{}").into_data(), Err(ProviderError::NoDataField));
    }

    #[test]
    fn http_400_with_graphql_body() {
        let body = r#"{"errors":[{"message":"Validation error (FieldUndefined@[execExpression/results/values/owner]) : Field 'owner' in type 'MQEValue' is undefined","locations":[{"line":1,"column":2}],"extensions":{"classification":"ValidationError"}}]}"#;
        let e = decode(400, Some("application/json"), body.as_bytes());
        assert!(matches!(e, Err(ProviderError::GraphQl(m)) if m[0].contains("Field 'owner'")));
    }

    #[test]
    fn http_errors_and_html() {
        let e = decode(
            502,
            Some("text/html"),
            b"<html><head><title>502 Bad Gateway</title></head></html>",
        );
        match e {
            Err(ProviderError::Http {
                status,
                body_excerpt,
            }) => {
                assert_eq!(status, 502);
                assert!(body_excerpt.starts_with("HTML response"));
                assert!(body_excerpt.contains("502 Bad Gateway"));
            }
            other => panic!("unexpected {other:?}"),
        }
        // HTML with a 200 and no content type is still an error.
        assert!(matches!(
            decode(200, None, b"  <!DOCTYPE html><p>login</p>"),
            Err(ProviderError::Http { status: 200, .. })
        ));
        assert_eq!(
            decode(415, Some("text/plain"), b"Unsupported Media Type"),
            Err(ProviderError::Http {
                status: 415,
                body_excerpt: "Unsupported Media Type".into()
            })
        );
        let long = "x".repeat(1000);
        match decode(401, None, long.as_bytes()) {
            Err(ProviderError::Http { body_excerpt, .. }) => {
                assert!(body_excerpt.chars().count() <= EXCERPT_CHARS + 1)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_json_is_decode_error() {
        let e = decode(
            200,
            Some("application/json"),
            br#"{"data":{"m0":{"type":"TIME_SERIES_VALUES","resu"#,
        );
        assert!(matches!(e, Err(ProviderError::Decode(_))));
        assert!(matches!(
            decode(200, None, b""),
            Err(ProviderError::Decode(_))
        ));
    }

    #[test]
    fn raw_shapes() {
        let data = env(r#"{"data":{
            "service_apdex":{"label":null,"values":{"values":[{"value":9950},{"value":0,"isEmptyValue":true}]}},
            "aaa_mqe":{"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},"values":[{"id":"1719835200000","value":"1.5"},{"id":"1719835260000","value":null}]}]},
            "avg":{"type":"SINGLE_VALUE","error":null,"results":[{"metric":null,"values":[{"id":null,"value":"42"}]}]},
            "n":7,
            "nullable":{"value":0,"isEmptyValue":true},
            "other":{"items":[{"value":1},{"nested":{"value":"2"}},{"value":null}]}
        }}"#).into_data().expect("data");
        let keys: Vec<&str> = data.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["service_apdex", "aaa_mqe", "avg", "n", "nullable", "other"]
        );
        let w = win(3);
        let mut dropped = DroppedPoints::default();
        let parsed: Vec<SampleValue> = data
            .iter()
            .map(|(k, v)| parse_raw_value(k, v, &w, &mut dropped).expect("parse"))
            .collect();
        assert_eq!(parsed[0], SampleValue::Series(vec![Some(9950.0), None]));
        assert_eq!(parsed[1], SampleValue::Series(vec![Some(1.5), None, None]));
        assert_eq!(dropped, DroppedPoints::default());
        // With ids selected, a raw query's points are checked like typed ones.
        let shifted = json!({"values": {"values": [{"id": "202406301200_x", "value": 10000},
            {"id": "202407011201_x", "value": 10}]}});
        assert_eq!(
            parse_raw_value("s", &shifted, &w, &mut dropped),
            Ok(SampleValue::Series(vec![None, Some(10.0), None]))
        );
        assert_eq!(dropped.outside, 1);
        let mut kept = shifted.clone();
        retain_window_points(&mut kept, &w);
        assert_eq!(
            kept,
            json!({"values": {"values": [{"id": "202407011201_x", "value": 10}]}})
        );
        let mut mqe = json!({"type": "TIME_SERIES_VALUES", "results": [{"values": [
            {"id": "0", "value": "1"}, {"id": "1719835260000", "value": "2"},
            {"id": "1719835260000", "value": "3"}, {"id": null, "value": "4"}]}]});
        retain_window_points(&mut mqe, &w);
        assert_eq!(
            mqe["results"][0]["values"],
            json!([{"id": "1719835260000", "value": "2"}])
        );
        // Undated raw answers cannot be checked and are left as they are.
        let mut undated = json!({"values": {"values": [{"value": 1}, {"value": 2}]}});
        let before = undated.clone();
        retain_window_points(&mut undated, &w);
        assert_eq!(undated, before);
        assert_eq!(parsed[2], SampleValue::Single(Some(42.0)));
        assert_eq!(parsed[3], SampleValue::Single(Some(7.0)));
        assert_eq!(parsed[4], SampleValue::Single(None));
        assert_eq!(
            parsed[5],
            SampleValue::Series(vec![Some(1.0), Some(2.0), None])
        );
        let err = parse_raw_value(
            "x",
            &json!({"type":"UNKNOWN","results":[],"error":"line 1:13 mismatched input"}),
            &w,
            &mut dropped,
        );
        assert!(matches!(err, Err(ProviderError::Mqe(_))));
    }
}
