//! Condition compile + eval, in both languages (evalexpr, and Argo's expr): the first line is
//! a condition, the rest are numbers bound to `result` (a series, or a scalar when there is
//! one; for expr also as a raw query's `data`, `{"a": {"values": {"values": [{"value": n}]}}}`).
//! Compiling or evaluating anything gives a bool or an error, never a panic (nor a stack
//! overflow: expr's bounds hold); evaluation is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skycanary::analysis::{Bindings, Condition, ConditionLanguage, ResultValue};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, rest) = text.split_once('\n').unwrap_or((text, ""));
    let numbers: Vec<f64> = rest
        .split([',', ' ', '\n'])
        .filter_map(|s| s.trim().parse::<f64>().ok())
        .take(64)
        .collect();
    let result = match numbers.as_slice() {
        [one] => ResultValue::Scalar(*one),
        _ => ResultValue::Series(numbers.clone()),
    };
    let args = [("min-apdex".to_string(), "9900".to_string())]
        .into_iter()
        .collect();
    let plain = Bindings::new(result).with_args(args);
    let mut raw = plain.clone();
    let points: Vec<serde_json::Value> = numbers
        .iter()
        .filter_map(|n| serde_json::Number::from_f64(*n))
        .map(|n| serde_json::json!({ "value": n }))
        .collect();
    raw.data = Some(serde_json::json!({"a": {"values": {"values": points}}}));
    for (language, bindings) in [
        (ConditionLanguage::Evalexpr, &plain),
        (ConditionLanguage::Expr, &plain),
        (ConditionLanguage::Expr, &raw),
    ] {
        let Ok(condition) = Condition::compile_as(language, source, &[]) else {
            continue;
        };
        let first = condition.eval(bindings);
        let second = condition.eval(bindings);
        assert_eq!(first, second, "evaluation must be deterministic: {source:?}");
    }
});
