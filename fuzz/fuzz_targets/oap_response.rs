//! OAP response decoding: the first byte picks the HTTP status and content type, the rest is
//! the body. Every decoding path ends in a value or an error; a value never holds a
//! non-finite number (NaN/∞ are no-data points, never "healthy").
#![no_main]

use libfuzzer_sys::fuzz_target;
use skycanary_skywalking::{SampleValue, decode_response};

const STATUSES: [u16; 8] = [200, 200, 200, 400, 404, 500, 502, 503];
const TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    None,
    Some("text/html; charset=utf-8"),
    Some("application/graphql-response+json"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(selector) % STATUSES.len()];
    let content_type = TYPES[usize::from(selector >> 3) % TYPES.len()];
    for result in decode_response(status, content_type, body) {
        if let Ok(value) = result {
            let points: Vec<f64> = match value {
                SampleValue::Series(p) => p.into_iter().flatten().collect(),
                SampleValue::Single(v) => v.into_iter().collect(),
            };
            assert!(
                points.iter().all(|v| v.is_finite()),
                "a non-finite point was decoded: {points:?}"
            );
            assert!(
                (200..300).contains(&status),
                "a value was decoded from an HTTP {status} answer"
            );
        }
    }
});
