//! Condition compile + eval: the first line is a condition, the rest are numbers bound to
//! `result` (a series, or a scalar when there is one). Compiling or evaluating anything gives a
//! bool or an error, never a panic; evaluation is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skycanary::analysis::{Bindings, Condition, ResultValue};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, rest) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(condition) = Condition::compile(source) else {
        return;
    };
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
    let bindings = Bindings::new(result).with_args(args);
    let first = condition.eval(&bindings);
    let second = condition.eval(&bindings);
    assert_eq!(
        first.is_ok(),
        second.is_ok(),
        "evaluation must be deterministic: {source:?}"
    );
    if let (Ok(a), Ok(b)) = (first, second) {
        assert_eq!(a, b, "evaluation must be deterministic: {source:?}");
    }
});
