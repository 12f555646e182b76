//! Alarm webhook bodies (SkyWalking and Alertmanager): any bytes parse to alarms plus refused
//! elements, or a refusal; matching, identity, de-duplication and the text kept of whatever
//! parsed never panic, and everything kept is bounded whatever the fields hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skycanary::alarm::intake::{
    MAX_ALARMS_PER_PAYLOAD, MAX_KEPT_TEXT_BYTES, MAX_REPORTED_REJECTIONS,
};
use skycanary::alarm::{
    AlarmMatchers, Deduper, Incoming, PatternCache, RollbackRules, alertmanager, parse_batch,
    verdict,
};
use skycanary::resources::canary::{AlarmMatcher, AlertMatcher, RollbackOn};

fuzz_target!(|data: &[u8]| {
    let mut cache = PatternCache::default();
    let matchers = AlarmMatchers::compile(
        &[
            AlarmMatcher {
                rule_name: Some("service_(sla|resp_time)_rule".into()),
                name: Some("reviews.*".into()),
                ..AlarmMatcher::default()
            },
            AlarmMatcher {
                rule_name: Some("([".into()),
                ..AlarmMatcher::default()
            },
        ],
        &mut cache,
    );
    let rules = RollbackRules::compile(Some(&RollbackOn {
        alarms: vec![AlarmMatcher {
            name: Some(".*".into()),
            ..AlarmMatcher::default()
        }],
        alerts: vec![AlertMatcher {
            labels: [("alertname".to_string(), ".*".to_string())].into(),
        }],
    }));
    let mut items = Vec::new();
    if let Ok(batch) = parse_batch(data) {
        check_refusals(
            batch.items.len(),
            batch.rejected_total,
            batch.rejected.len(),
        );
        for r in &batch.rejected {
            assert!(r.error.len() <= MAX_KEPT_TEXT_BYTES + 64);
        }
        for m in batch.items {
            let _ = matchers.matches(&m);
            let _ = m.started();
            let _ = m.is_recovery();
            items.push(Incoming::Alarm(m));
        }
    }
    if let Ok(p) = alertmanager::parse_payload(data) {
        check_refusals(p.alerts.len(), p.rejected_total, p.rejected.len());
        items.extend(p.alerts.into_iter().map(Incoming::Alert));
    }
    let mut dedup = Deduper::new(8);
    for item in items {
        for kept in [item.rule(), item.entity(), item.message()] {
            assert!(
                kept.len() <= MAX_KEPT_TEXT_BYTES + 64,
                "kept text is bounded"
            );
        }
        let _ = verdict(&item, &rules, None);
        let _ = item.started();
        let keys = item.dedupe_keys();
        assert!(!keys.is_empty() && keys.len() <= 3);
        let first = dedup.first_time(&keys);
        assert!(
            !first || !dedup.first_time(&keys),
            "a delivery is new only once"
        );
    }
});

/// Counts stay within the limits: parsed ones at most the per-payload limit, reasons kept at
/// most the reported limit.
fn check_refusals(parsed: usize, refused: usize, reported: usize) {
    assert!(parsed <= MAX_ALARMS_PER_PAYLOAD);
    assert!(reported <= MAX_REPORTED_REJECTIONS && reported <= refused);
}
