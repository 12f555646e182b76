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

use super::queries::{exec_expression, read_metrics_values, read_metrics_values_empty};
use super::{ProviderError, SampleValue};

/// Longest body excerpt kept in an error.
const EXCERPT_CHARS: usize = 200;

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

fn excerpt(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if collapsed.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

fn messages(errors: &[GqlError]) -> Vec<String> {
    errors.iter().map(|e| e.message.clone()).collect()
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
    pub fn field(&self, alias: &str) -> Result<Value, ProviderError> {
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
            Some((_, v)) => Ok(v.clone()),
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

/// One MQE label set, reduced to what we keep.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MqeSeries {
    pub labels: Vec<(String, String)>,
    pub values: Vec<Option<f64>>,
}

/// A main value plus named extra values.
pub(crate) type Parsed = (SampleValue, BTreeMap<String, SampleValue>);

/// Shared MQE interpretation for typed and raw responses.
///
/// - `error` set → `Err(Mqe)`.
/// - no result (e.g. `UNKNOWN` for an invalid entity) → no data.
/// - `SINGLE_VALUE` → `Single` of the first value.
/// - otherwise a series; with several label sets (percentiles) the *first* is
///   the main value and every labeled set is also in `named`, keyed `p=99`.
pub(crate) fn mqe_core(
    kind: &str,
    error: Option<&str>,
    series: Vec<MqeSeries>,
) -> Result<Parsed, ProviderError> {
    if let Some(e) = error.filter(|e| !e.is_empty()) {
        return Err(ProviderError::Mqe(e.to_string()));
    }
    let single = kind == "SINGLE_VALUE";
    let shape = |values: &[Option<f64>]| {
        if single {
            SampleValue::Single(values.first().copied().flatten())
        } else {
            SampleValue::Series(values.to_vec())
        }
    };
    let mut named = BTreeMap::new();
    for s in &series {
        if !s.labels.is_empty() {
            let key = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            named.insert(key, shape(&s.values));
        }
    }
    let main = match series.first() {
        Some(s) => shape(&s.values),
        None if single => SampleValue::Single(None),
        None => SampleValue::Series(Vec::new()),
    };
    Ok((main, named))
}

/// Typed MQE result → sample value.
pub(crate) fn parse_mqe(
    r: &exec_expression::ExecExpressionResult,
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
            values: s
                .values
                .iter()
                .map(|v| parse_mqe_value(v.value.as_deref()))
                .collect(),
        })
        .collect();
    mqe_core(kind, r.error.as_deref(), series)
}

/// v2 without `isEmptyValue` (OAP < 9.5): a 0 is indistinguishable from no
/// data there, so it is kept as a real 0.
pub(crate) fn parse_v2(r: &read_metrics_values::ReadMetricsValuesResult) -> SampleValue {
    SampleValue::Series(
        r.values
            .as_ref()
            .map(|v| v.values.iter().map(|kv| Some(kv.value as f64)).collect())
            .unwrap_or_default(),
    )
}

/// v2 with `isEmptyValue` (OAP >= 9.5): empty points are no data.
pub(crate) fn parse_v2_empty(
    r: &read_metrics_values_empty::ReadMetricsValuesEmptyResult,
) -> SampleValue {
    SampleValue::Series(
        r.values
            .as_ref()
            .map(|v| {
                v.values
                    .iter()
                    .map(|kv| (!kv.is_empty_value).then_some(kv.value as f64))
                    .collect()
            })
            .unwrap_or_default(),
    )
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

/// Interprets one top-level alias of a raw query's `data`.
///
/// v2 shape (`values.values[].value`) → series; MQE shape (`results[]`) →
/// series/single with MQE rules; a number (or numeric string, or null) →
/// single; `{value, isEmptyValue}` → single; otherwise every `value` leaf in
/// order → series.
pub(crate) fn parse_raw_value(v: &Value) -> Result<SampleValue, ProviderError> {
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
        return Ok(SampleValue::Series(values.iter().map(v2_point).collect()));
    }
    if let Some(results) = v.get("results").and_then(Value::as_array) {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("TIME_SERIES_VALUES");
        let error = v.get("error").and_then(Value::as_str);
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
                values: r
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .map(|x| x.get("value").and_then(json_number))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        return mqe_core(kind, error, series).map(|(main, _)| main);
    }
    if let Some(obj) = v.as_object()
        && obj.contains_key("value")
        && obj.values().all(|x| !x.is_array() && !x.is_object())
    {
        return Ok(SampleValue::Single(v2_point(v)));
    }
    let mut leaves = Vec::new();
    collect_value_leaves(v, &mut leaves);
    Ok(SampleValue::Series(leaves))
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

    fn mqe(v: Value) -> Result<Parsed, ProviderError> {
        let r: exec_expression::ExecExpressionResult =
            serde_json::from_value(v).expect("typed MQE result");
        parse_mqe(&r)
    }

    #[test]
    fn mqe_healthy_series() {
        let (main, named) = mqe(json!({"type":"TIME_SERIES_VALUES","error":null,"results":[
            {"metric":{"labels":[]},"values":[{"id":"1719835200000","value":"9950"},{"id":"1719835260000","value":"0.995"}]}]}))
        .expect("ok");
        assert_eq!(main, SampleValue::Series(vec![Some(9950.0), Some(0.995)]));
        assert!(named.is_empty());
    }

    #[test]
    fn mqe_null_nan_infinity_are_no_data() {
        let (main, _) = mqe(json!({"type":"TIME_SERIES_VALUES","error":null,"results":[
            {"metric":null,"values":[{"id":"1","value":null},{"id":"2","value":"NaN"},{"id":"3","value":"∞"},
             {"id":"4","value":"-∞"},{"id":"5","value":"0,995"},{"id":"6","value":"-5"}]}]}))
        .expect("ok");
        assert_eq!(
            main,
            SampleValue::Series(vec![None, None, None, None, None, Some(-5.0)])
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
        let (main, named) = mqe(json!({"type":"TIME_SERIES_VALUES","error":null,"results":[
            {"metric":{"labels":[{"key":"p","value":"50"}]},"values":[{"id":"1","value":"120"}]},
            {"metric":{"labels":[{"key":"p","value":"99"}]},"values":[{"id":"1","value":"480"}]}]}))
        .expect("ok");
        assert_eq!(main, SampleValue::Series(vec![Some(120.0)]));
        assert_eq!(
            named.get("p=50"),
            Some(&SampleValue::Series(vec![Some(120.0)]))
        );
        assert_eq!(
            named.get("p=99"),
            Some(&SampleValue::Series(vec![Some(480.0)]))
        );
    }

    #[test]
    fn v2_with_and_without_is_empty_value() {
        let r: read_metrics_values_empty::ReadMetricsValuesEmptyResult = serde_json::from_value(json!(
            {"label":null,"values":{"values":[{"id":"a","value":9950,"isEmptyValue":false},{"id":"b","value":0,"isEmptyValue":true}]}}
        )).expect("typed");
        assert_eq!(
            parse_v2_empty(&r),
            SampleValue::Series(vec![Some(9950.0), None])
        );
        let r: read_metrics_values::ReadMetricsValuesResult = serde_json::from_value(json!(
            {"label":null,"values":{"values":[{"id":"a","value":9950},{"id":"b","value":0}]}}
        ))
        .expect("typed");
        assert_eq!(
            parse_v2(&r),
            SampleValue::Series(vec![Some(9950.0), Some(0.0)])
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
        assert_eq!(e.field("m1"), Ok(json!({"x":1})));
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
            "aaa_mqe":{"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},"values":[{"id":"1","value":"1.5"},{"id":"2","value":null}]}]},
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
        let parsed: Vec<SampleValue> = data
            .iter()
            .map(|(_, v)| parse_raw_value(v).expect("parse"))
            .collect();
        assert_eq!(parsed[0], SampleValue::Series(vec![Some(9950.0), None]));
        assert_eq!(parsed[1], SampleValue::Series(vec![Some(1.5), None]));
        assert_eq!(parsed[2], SampleValue::Single(Some(42.0)));
        assert_eq!(parsed[3], SampleValue::Single(Some(7.0)));
        assert_eq!(parsed[4], SampleValue::Single(None));
        assert_eq!(
            parsed[5],
            SampleValue::Series(vec![Some(1.0), Some(2.0), None])
        );
        let err = parse_raw_value(
            &json!({"type":"UNKNOWN","results":[],"error":"line 1:13 mismatched input"}),
        );
        assert!(matches!(err, Err(ProviderError::Mqe(_))));
    }
}
