//! Alarm webhook bodies: any bytes parse to alarm messages or a refusal; matching, identity and
//! de-duplication of whatever parsed never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skycanary::alarm::{Deduper, matches, parse_payload};
use skycanary::resources::canary::AlarmMatcher;

fuzz_target!(|data: &[u8]| {
    let Ok(messages) = parse_payload(data) else {
        return;
    };
    let matchers = [
        AlarmMatcher {
            rule_name: Some("service_(sla|resp_time)_rule".into()),
            name: Some("reviews.*".into()),
        },
        AlarmMatcher {
            rule_name: Some("([".into()),
            name: None,
        },
    ];
    let mut dedup = Deduper::new(8);
    for m in &messages {
        let _ = matches(&matchers, m);
        let _ = m.identity();
        let _ = m.started();
        let _ = m.is_recovery();
        let first = dedup.first_time(m);
        assert!(!first || !dedup.first_time(m), "a delivery is new only once");
    }
});
