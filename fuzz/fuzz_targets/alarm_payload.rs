//! Alarm webhook bodies: any bytes parse to alarm messages or a refusal; matching, identity and
//! de-duplication of whatever parsed never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skycanary::alarm::{AlarmMatchers, Deduper, Incoming, PatternCache, parse_payload};
use skycanary::resources::canary::AlarmMatcher;

fuzz_target!(|data: &[u8]| {
    let Ok(messages) = parse_payload(data) else {
        return;
    };
    let matchers = AlarmMatchers::compile(&[
        AlarmMatcher {
            rule_name: Some("service_(sla|resp_time)_rule".into()),
            name: Some("reviews.*".into()),
            ..AlarmMatcher::default()
        },
        AlarmMatcher {
            rule_name: Some("([".into()),
            ..AlarmMatcher::default()
        },
    ], &mut PatternCache::default());
    let mut dedup = Deduper::new(8);
    for m in messages {
        let _ = matchers.matches(&m);
        let _ = m.started();
        let _ = m.is_recovery();
        let keys = Incoming::Alarm(m).dedupe_keys();
        let first = dedup.first_time(&keys);
        assert!(!first || !dedup.first_time(&keys), "a delivery is new only once");
    }
});
