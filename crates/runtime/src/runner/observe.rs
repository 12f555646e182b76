//! Provider samples → analysis observations (pure).
//!
//! This is where "no data" is decided, so it never reaches the conditions: a window whose
//! points are all empty, an empty single value, or (raw queries) any alias without data.

use std::collections::BTreeMap;

use crate::analysis::{Observation, ResultValue};
use crate::provider::skywalking::{ProviderError, Sample, SampleValue};

/// Shows at most this many values in a measurement's `value`.
const DISPLAY_LIMIT: usize = 12;

/// Converts one provider result into what the analysis judges.
pub fn observation_from(result: &Result<Sample, ProviderError>) -> Observation {
    let sample = match result {
        Ok(s) => s,
        Err(e) => {
            return Observation::Error {
                message: e.to_string(),
            };
        }
    };
    let window = format!("[{} .. {}]", sample.window.0, sample.window.1);
    // Points from another time were dropped by the provider; say so wherever the value shows.
    let dropped = if sample.dropped.total() > 0 {
        format!("; {}", sample.dropped)
    } else {
        String::new()
    };
    let Some(result) = to_result(&sample.value) else {
        return Observation::NoData {
            reason: format!(
                "no data points in window {window} ({}{dropped})",
                describe_empty(&sample.value)
            ),
        };
    };
    let mut named = BTreeMap::new();
    for (k, v) in &sample.named {
        match to_result(v) {
            Some(r) => {
                named.insert(k.clone(), r);
            }
            None if is_identifier(k) => {
                return Observation::NoData {
                    reason: format!(
                        "{k} has no data points in window {window} ({})",
                        describe_empty(v)
                    ),
                };
            }
            None => {}
        }
    }
    let mut display = display(&sample.value, &result);
    if !dropped.is_empty() {
        display.push_str(&format!(" ({})", sample.dropped));
    }
    Observation::Value {
        result,
        named,
        display,
        data: sample.data.clone(),
    }
}

fn is_identifier(k: &str) -> bool {
    k.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn to_result(v: &SampleValue) -> Option<ResultValue> {
    match v {
        SampleValue::Single(Some(x)) if !x.is_nan() => Some(ResultValue::Scalar(*x)),
        SampleValue::Single(_) => None,
        SampleValue::Series(points) => {
            let vals: Vec<f64> = points
                .iter()
                .flatten()
                .copied()
                .filter(|x| !x.is_nan())
                .collect();
            (!vals.is_empty()).then_some(ResultValue::Series(vals))
        }
    }
}

fn describe_empty(v: &SampleValue) -> String {
    match v {
        SampleValue::Single(_) => "the value is empty".into(),
        SampleValue::Series(p) => format!("{} bucket(s), all empty", p.len()),
    }
}

/// `[9950, 9930, —, 9910]`: the window as measured, empty buckets shown as `—`.
fn display(v: &SampleValue, r: &ResultValue) -> String {
    match v {
        SampleValue::Series(points) => {
            let shown: Vec<String> = points
                .iter()
                .rev()
                .take(DISPLAY_LIMIT)
                .rev()
                .map(|p| {
                    p.map(crate::analysis::fmt_num)
                        .unwrap_or_else(|| "—".into())
                })
                .collect();
            let more = points.len().saturating_sub(DISPLAY_LIMIT);
            if more > 0 {
                format!("[… {more} more, {}]", shown.join(", "))
            } else {
                format!("[{}]", shown.join(", "))
            }
        }
        SampleValue::Single(_) => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: SampleValue) -> Sample {
        Sample {
            value,
            named: BTreeMap::new(),
            query: String::new(),
            window: ("2026-11-21 1200".into(), "2026-11-21 1204".into()),
            dropped: Default::default(),
            data: None,
        }
    }

    #[test]
    fn dropped_points_are_shown_in_the_value_and_the_no_data_reason() {
        let mut s = sample(SampleValue::Series(vec![Some(9950.0), None]));
        s.dropped.outside = 3;
        match observation_from(&Ok(s.clone())) {
            Observation::Value { display, .. } => {
                assert!(
                    display.starts_with("[9950, —] (3 point(s) dropped: 3 outside"),
                    "{display}"
                )
            }
            other => panic!("{other:?}"),
        }
        s.value = SampleValue::Series(vec![None, None]);
        assert!(matches!(
            observation_from(&Ok(s)),
            Observation::NoData { ref reason } if reason.contains("all empty; 3 point(s) dropped")
        ));
    }

    #[test]
    fn all_empty_points_are_no_data() {
        let o = observation_from(&Ok(sample(SampleValue::Series(vec![None, None]))));
        assert!(
            matches!(o, Observation::NoData { ref reason } if reason.contains("2 bucket(s), all empty"))
        );
    }

    #[test]
    fn partial_nulls_are_removed_but_shown() {
        let o = observation_from(&Ok(sample(SampleValue::Series(vec![
            Some(9950.0),
            None,
            Some(9900.0),
        ]))));
        match o {
            Observation::Value {
                result, display, ..
            } => {
                assert_eq!(result, ResultValue::Series(vec![9950.0, 9900.0]));
                assert_eq!(display, "[9950, —, 9900]");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nan_points_are_no_data() {
        let o = observation_from(&Ok(sample(SampleValue::Single(Some(f64::NAN)))));
        assert!(matches!(o, Observation::NoData { .. }));
    }

    #[test]
    fn provider_errors_are_errors() {
        let o = observation_from(&Err(ProviderError::Timeout));
        assert!(matches!(o, Observation::Error { .. }));
    }

    #[test]
    fn empty_alias_is_no_data() {
        let mut s = sample(SampleValue::Series(vec![Some(1.0)]));
        s.named
            .insert("a".into(), SampleValue::Series(vec![Some(1.0)]));
        s.named.insert("b".into(), SampleValue::Series(vec![None]));
        assert!(
            matches!(observation_from(&Ok(s)), Observation::NoData { ref reason } if reason.starts_with("b "))
        );
    }
}
